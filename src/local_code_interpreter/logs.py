"""Logging for a service: at most one line per request at INFO (the access log), nothing per span, and a JSON
format for cluster log collectors.

    LCI_LOG_FORMAT=text|json   (text)
    LCI_ACCESS_LOG=on|off      (on): one line per HTTP request, written by the shared ASGI layer
"""

from __future__ import annotations

import json
import logging
import sys
import time

ACCESS = logging.getLogger("local_code_interpreter.access")

# Libraries that log per request or per span at INFO: only their warnings and errors are kept.
_CHATTY = ("agent_framework", "agent_framework_devui", "opentelemetry", "uvicorn.access", "httpx", "httpcore")
_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus any `extra=` fields (access log fields)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Install one handler on the root logger (replacing earlier ones) and quiet the per-request libraries."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    if level != "DEBUG":
        for name in _CHATTY:
            logging.getLogger(name).setLevel(logging.WARNING)


def uvicorn_log_config() -> dict:
    """Uvicorn's own loggers propagate to the root handler above (no second format, no access log of its own)."""
    return {"version": 1, "disable_existing_loggers": False,
            "loggers": {"uvicorn": {"propagate": True}, "uvicorn.error": {"propagate": True},
                        "uvicorn.access": {"propagate": False, "handlers": [], "level": "WARNING"}}}
