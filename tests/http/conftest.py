"""In-process apps for the HTTP layer's tests: the real composition (`server.build_app`) with a real back end."""

import os
import sys

import pytest
from agent_framework import Content

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def model_calls_lookup(monkeypatch):
    """The embedded default as a model that calls the client's `lookup` when asked to, then reads its output."""
    from local_code_interpreter import offline

    original = offline._reply

    def reply(messages):
        last = messages[-1]
        if last.role == "user" and "look up" in last.text:
            return [Content.from_function_call(call_id="call_lookup", name="lookup", arguments={"key": "k"})]
        if last.role == "tool" and any(c.call_id == "call_lookup" for c in last.contents):
            return [Content.from_text(f"the client's lookup said {last.contents[0].result}")]
        return original(messages)

    monkeypatch.setattr(offline, "_reply", reply)
