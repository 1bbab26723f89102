"""A Responses `input` that carries an earlier response's output items (`http/input_items.py`): what the agent
receives from them, and the 400 a client's mistake gets, naming the item."""

import asyncio
import base64

import pytest

from inprocess import app_client
from local_code_interpreter.http.input_items import messages_from_input

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def _call(call_id: str, code: str = "print(1)") -> dict:
    return {"type": "function_call", "call_id": call_id, "name": "execute_code", "arguments": f'{{"code": "{code}"}}',
            "status": "completed"}


def _output(call_id: str, output) -> dict:
    return {"id": f"fcout_{call_id}", "type": "function_call_output", "call_id": call_id, "output": output,
            "status": "completed"}


def _shape(messages) -> list[tuple[str, list[str]]]:
    return [(m.role, [c.type for c in m.contents]) for m in messages]


def test_an_earlier_response_becomes_the_turn_the_agent_keeps():
    messages = messages_from_input([
        {"role": "user", "content": "draw it"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        _call("call_a"), _call("call_b", "print(2)"),
        _output("call_a", [{"type": "input_text", "text": "stdout:\n1\n"},
                           {"type": "input_image", "image_url": PNG, "detail": "auto"}]),
        _output("call_b", "stdout:\n2\n"),
        {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "done", "annotations": []}]},
        {"role": "user", "content": "and again"},
    ])
    assert _shape(messages) == [("user", ["text"]), ("assistant", ["function_call", "function_call"]),
                                ("tool", ["function_result", "function_result"]), ("assistant", ["text"]),
                                ("user", ["text"])]
    call, result = messages[1].contents[0], messages[2].contents[0]
    assert (call.call_id, call.name, call.arguments) == ("call_a", "execute_code", '{"code": "print(1)"}')
    assert result.call_id == "call_a" and result.result == "stdout:\n1\n"
    assert [item.type for item in result.items] == ["text", "data"] and result.items[1].uri == PNG
    assert messages[2].contents[1].result == "stdout:\n2\n"


def test_without_output_items_the_helper_parses_alone():
    assert _shape(messages_from_input("print(1)")) == [("user", ["text"])]
    assert _shape(messages_from_input([{"type": "input_text", "text": "a"}, {"role": "user", "content": "b"}])) == [
        ("user", ["text"]), ("user", ["text"])]


@pytest.mark.parametrize("items, words", [
    ([_output("call_x", "1")], "call_id 'call_x' has no function_call before it"),
    ([_call("call_x")], "function_call with call_id 'call_x' has no function_call_output"),
    ([_call("call_x"), _call("call_x"), _output("call_x", "1")], "two function_call items with call_id 'call_x'"),
    ([_call("call_x"), _output("call_x", "1"), _output("call_x", "2")], "two function_call_output items"),
    ([dict(_call("c"), call_id=5), _output("c", "1")], "function_call requires a non-empty string `call_id`"),
    ([dict(_call("c"), name=""), _output("c", "1")], "function_call requires a non-empty string `name`"),
    ([dict(_call("c"), arguments={"code": "1"}), _output("c", "1")], "`arguments` must be a string"),
    ([_call("c"), _output("c", 7)], "`output` must be a string or a non-empty list"),
    ([_call("c"), _output("c", [])], "`output` must be a string or a non-empty list"),
    ([_call("c"), _output("c", [{"type": "bogus"}])], "function_call_output `output`: Unsupported"),
    ([{"type": "code_interpreter_call", "code": "1"}], "code_interpreter_call requires a non-empty string `id`"),
    ([{"type": "code_interpreter_call", "id": "ci", "code": 5}], "`code` must be a string"),
    ([{"type": "code_interpreter_call", "id": "ci", "outputs": "1"}], "`outputs` must be a list"),
    ([{"type": "code_interpreter_call", "id": "ci", "outputs": [{"type": "files"}]}], "must be `logs`"),
    ([{"type": "code_interpreter_call", "id": "ci"}, {"type": "code_interpreter_call", "id": "ci"}], "two items"),
    ([{"type": "reasoning", "summary": []}], "produced no messages"),
    ([_call("c"), _output("c", "1"), {"type": "item_reference", "id": "x"}], "Unsupported"),
])
def test_a_clients_mistake_names_the_item(items, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")) as raised:
        messages_from_input(items)
    assert words in str(raised.value)


def test_over_http_the_agent_sees_the_earlier_turn_and_mistakes_are_400(monkeypatch):
    from local_code_interpreter import offline

    seen: list = []
    original = offline._reply

    def recording_reply(messages):
        seen.append(_shape(messages))
        return original(messages)

    monkeypatch.setattr(offline, "_reply", recording_reply)

    async def run():
        async with app_client() as (c, _s, _sb):
            first = (await c.post("/v1/responses", json={"input": "print(6 * 7)", "store": False})).json()
            context = [{"role": "user", "content": "print(6 * 7)"}, *first["output"],
                       {"role": "user", "content": "print(7 * 8)"}]
            seen.clear()
            second = await c.post("/v1/responses", json={"input": context, "store": False})
            wrong = await c.post("/v1/responses", json={"input": [
                {"type": "function_call_output", "call_id": "call_x", "output": "1"}, *context[1:]]})
            return second, wrong

    second, wrong = asyncio.run(run())
    assert second.status_code == 200 and "56" in second.text
    assert seen[0] == [("user", ["text"]), ("assistant", ["function_call"]), ("tool", ["function_result"]),
                       ("assistant", ["text"]), ("user", ["text"])]
    assert wrong.status_code == 400
    error = wrong.json()["error"]
    assert error["type"] == "invalid_request_error" and "has no function_call before it" in error["message"]
