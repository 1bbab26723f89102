"""The serving settings: defaults, environment variables, clear errors naming the variable."""

import pytest

from local_code_interpreter.http.connections import default_max_connections
from local_code_interpreter.settings import ConfigError, load


def test_defaults_and_environment():
    default = load({}, environ={}).serving
    assert (default.log_format, default.access_log, default.max_body_bytes, default.read_timeout,
            default.write_timeout) == ("text", True, 1024 * 1024, 10.0, 30.0)
    assert default.event_loop == "auto" and load({}, environ={"LCI_EVENT_LOOP": "asyncio"}).serving.event_loop \
        == "asyncio"
    s = load({}, environ={"LCI_LOG_FORMAT": "json", "LCI_ACCESS_LOG": "off", "LCI_MAX_BODY_BYTES": "2048",
                          "LCI_READ_TIMEOUT_SECONDS": "2.5", "LCI_WRITE_TIMEOUT_SECONDS": "4", "LCI_ALLOWED_HOSTS": "Interp.Example.com, b",
                          "LCI_CONVERSATIONS_MAX": "7", "LCI_CONVERSATION_MAX_ITEMS": "9"}).serving
    assert (s.log_format, s.access_log, s.max_body_bytes, s.read_timeout, s.write_timeout) == \
        ("json", False, 2048, 2.5, 4.0)
    assert s.allowed_hosts == ("interp.example.com", "b") and s.conversations_max == 7
    assert s.conversation_max_items == 9


@pytest.mark.parametrize("env, variable", [
    ({"LCI_LOG_FORMAT": "xml"}, "LCI_LOG_FORMAT"),
    ({"LCI_ACCESS_LOG": "maybe"}, "LCI_ACCESS_LOG"),
    ({"LCI_EVENT_LOOP": "tokio"}, "LCI_EVENT_LOOP"),
    ({"LCI_MAX_BODY_BYTES": "ten"}, "LCI_MAX_BODY_BYTES"),
    ({"LCI_READ_TIMEOUT_SECONDS": "0"}, "LCI_READ_TIMEOUT_SECONDS"),
    ({"LCI_WRITE_TIMEOUT_SECONDS": "never"}, "LCI_WRITE_TIMEOUT_SECONDS"),
    ({"LCI_CONVERSATIONS_MAX": "-1"}, "LCI_CONVERSATIONS_MAX"),
])
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(ConfigError, match=variable):
        load({}, environ=env)


def test_connection_cap_is_below_the_file_limit():
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert default_max_connections() < soft


def test_connection_cap_leaves_room_for_every_sessions_descriptors():
    from local_code_interpreter.sandbox import sandbox_descriptors

    held = sandbox_descriptors("subprocess", 100, 4)
    assert held >= 5 * (100 + 4)  # four pipe ends and a directory per session child and per run in flight
    # More runs at once hold more children: LCI_MAX_CONCURRENCY=64 must not eat into the connections' room.
    assert sandbox_descriptors("subprocess", 100, 64) - held >= 5 * 60
    assert sandbox_descriptors("monty", 100, 4) == 0  # its sessions are in-process state
    assert default_max_connections(held) == max(16, default_max_connections() - held)


def test_the_event_loop_is_uvloop_where_installed_and_asyncio_on_request_or_without_it(monkeypatch):
    import asyncio
    import sys

    import uvloop

    from local_code_interpreter.server import runner

    assert (runner("auto"), runner("uvloop"), runner("asyncio")) == (uvloop.run, uvloop.run, asyncio.run)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # not installed (Windows, say): import fails
    assert runner("auto") is asyncio.run
    with pytest.raises(ConfigError, match="LCI_EVENT_LOOP=asyncio"):
        runner("uvloop")
