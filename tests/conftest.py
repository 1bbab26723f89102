"""Make tests/ helpers importable (`from service import ...`), and, under CI=true, fail the skips that hide a broken
install (see tests/skips.py)."""

import asyncio
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from skips import ci_failure_message, in_ci, is_tool_missing  # noqa: E402

from local_code_interpreter.server import runner  # noqa: E402

# In-process tests run on the event loop the service picks (`server.runner`: uvloop where installed); the service
# tests cover the asyncio one as well. LCI_TEST_EVENT_LOOP=asyncio runs them all on that.
if runner(os.environ.get("LCI_TEST_EVENT_LOOP", "auto")) is not asyncio.run:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and in_ci():
        reason = _skip_reason(report)
        if is_tool_missing(reason):
            report.outcome = "failed"
            report.longrepr = ci_failure_message(reason.removeprefix("Skipped: "))
