"""Items an API client puts into a conversation (`http/conversation_items.py`): kept with the lean path's history,
seen by the next response, listed in order; a bad item adds nothing; a deleted one leaves what the model is sent;
the DevUI page's conversations stay DevUI's."""

import asyncio

import openai
import pytest

from inprocess import app_client
from service import running_service


@pytest.fixture(scope="module")
def service():
    with running_service() as (base, process, _seconds):
        yield base


def _kinds(items) -> list[tuple[str, str | None]]:
    return [(item.type, getattr(item, "role", None)) for item in items]


def test_openai_client_creates_adds_lists_and_continues(service):
    c = openai.OpenAI(base_url=f"{service}/v1", api_key="unused-on-loopback", max_retries=0)
    conversation = c.conversations.create(items=[{"type": "message", "role": "user", "content": "x = 5"}],
                                          metadata={"topic": "test"})
    assert c.conversations.retrieve(conversation.id).metadata == {"topic": "test"}
    assert _kinds(c.conversations.items.list(conversation.id).data) == [("message", "user")]
    c.responses.create(model="m", input="print(6 * 7)", conversation=conversation.id)
    added = c.conversations.items.create(conversation.id, items=[{"role": "user", "content": "y = 6"}])
    assert [item.content[0].text for item in added.data] == ["y = 6"] and added.first_id == added.data[0].id
    c.responses.create(model="m", input="print(7 * 8)", conversation=conversation.id)
    items = c.conversations.items.list(conversation.id, order="asc", limit=100).data
    turn = [("message", "user"), ("code_interpreter_call", None), ("message", "assistant")]
    assert _kinds(items) == [("message", "user"), *turn, ("message", "user"), *turn]
    texts = [item.content[0].text for item in items if item.type == "message" and item.role == "user"]
    assert texts == ["x = 5", "print(6 * 7)", "y = 6", "print(7 * 8)"]
    assert c.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id).id == added.data[0].id


def test_the_next_response_sees_the_added_items_and_bad_items_add_nothing(monkeypatch):
    from local_code_interpreter import offline

    seen: list = []
    original = offline._reply

    def recording_reply(messages):
        seen.append([(m.role, m.text) for m in messages])
        return original(messages)

    monkeypatch.setattr(offline, "_reply", recording_reply)

    async def run():
        async with app_client() as (c, _s, _sb):
            created = (await c.post("/v1/conversations", json={"items": [{"role": "user", "content": "a = 1"}]}))
            cid = created.json()["id"]
            added = await c.post(f"/v1/conversations/{cid}/items", json={"items": [
                {"role": "user", "content": "b = 2"},
                {"type": "function_call", "call_id": "call_1", "name": "execute_code", "arguments": '{"code": "1"}'},
                {"type": "function_call_output", "call_id": "call_1", "output": "1"}]})
            refused = [await c.post(f"/v1/conversations/{cid}/items", json=body) for body in (
                {"items": [{"role": "user", "content": "c = 3"}, {"type": "function_call_output", "call_id": "x",
                                                                  "output": "1"}]},
                {"items": [{"role": "user", "content": str(n)} for n in range(21)]},
                {"items": []}, {"items": "a = 1"}, {})]
            bad_create = await c.post("/v1/conversations", json={"items": [{"role": "robot", "content": "x"}]})
            listed = (await c.get(f"/v1/conversations/{cid}/items", params={"order": "asc"})).json()
            seen.clear()
            await c.post("/v1/responses", json={"input": "print(3)", "conversation": cid})
            return created, added, refused, bad_create, listed

    created, added, refused, bad_create, listed = asyncio.run(run())
    assert created.status_code == 200 and added.status_code == 200
    assert [item["type"] for item in added.json()["data"]] == ["message", "function_call", "function_call_output"]
    assert [answer.status_code for answer in refused] == [400] * 5
    assert "call_id 'x' has no function_call before it" in refused[0].json()["error"]["message"]
    assert "at most 20 items" in refused[1].json()["error"]["message"]
    assert bad_create.status_code == 400 and "role" in bad_create.json()["error"]["message"]
    assert [item.get("role", item["type"]) for item in listed["data"]] == [
        "user", "user", "function_call", "function_call_output"]  # the refused requests added nothing
    assert seen[0] == [("user", "a = 1"), ("user", "b = 2"), ("assistant", ""), ("tool", ""), ("user", "print(3)")]


def test_the_devui_pages_conversations_stay_devuis():
    async def run():
        async with app_client() as (c, _s, _sb):
            entity = (await c.get("/v1/entities")).json()["entities"][0]["id"]
            page = (await c.post("/v1/conversations", json={"metadata": {"agent_id": entity}})).json()
            added = await c.post(f"/v1/conversations/{page['id']}/items",
                                 json={"items": [{"type": "message", "role": "user", "content": "hello"}]})
            listed = (await c.get(f"/v1/conversations/{page['id']}/items")).json()
            unknown = await c.post("/v1/conversations/conv_nobody_made/items",
                                   json={"items": [{"role": "user", "content": "x"}]})
            return c, page, added, listed, unknown

    _c, page, added, listed, unknown = asyncio.run(run())
    assert page["metadata"] == {"agent_id": page["metadata"]["agent_id"]}
    # DevUI's own store took the item: its shape (content `text`, where the lean path keeps `input_text` as sent)
    assert added.status_code == 200 and added.json()["data"][0]["content"][0]["type"] == "text"
    assert [item["content"][0]["type"] for item in listed["data"]] == ["text"]
    assert unknown.status_code == 404


@pytest.mark.parametrize("path, body, words", [
    ("/v1/conversations", b'{"items": [{"role": "user", "content": 5}]}', "content"),
    ("/v1/conversations", b'{"metadata": ["a"]}', "metadata"),
    ("/v1/conversations", b'{"metadata": {"k": 1}}', "metadata"),
    ("/v1/conversations", b'{"items": [1]}', "object"),
    ("/v1/conversations", b"not json", "JSON object"),
    ("/v1/conversations", b'{"items": [{"role": "user", "content": "x"}], "x": NaN}', "NaN"),
    ("/v1/conversations", b'{"metadata": {"k": "\\udc00"}}', "surrogate"),  # DevUI's answer: a 500
    ("/v1/conversations/{page}/items", b'{"items": "a = 1"}', "non-empty array"),  # DevUI's own answer: a 500
    ("/v1/conversations/{page}/items", b'{"items": [{"type": "input_text", "text": 5}]}', "text"),
    ("/v1/conversations/{page}/items", b"[]", "JSON object"),
])
def test_malformed_items_are_400_in_openai_shape_on_either_store(path, body, words):
    async def run():
        async with app_client() as (c, _s, _sb):
            entity = (await c.get("/v1/entities")).json()["entities"][0]["id"]
            page = (await c.post("/v1/conversations", json={"metadata": {"agent_id": entity}})).json()
            return await c.post(path.format(page=page["id"]), content=body,
                                headers={"content-type": "application/json"})

    answer = asyncio.run(run())
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert {"message", "type", "code"} <= set(error) and words in error["message"], error


def test_another_caller_cannot_add_to_a_conversation_under_the_same_id():
    from inprocess import devui_stand_in
    from local_code_interpreter.http.conversation_items import ConversationItems
    from local_code_interpreter.http.history import ConversationStore
    from local_code_interpreter.identity import SCOPE_KEY, Caller

    alice, bob = Caller("entra:t/alice", "entra"), Caller("entra:t/bob", "entra")
    store = ConversationStore()
    store.resolve(alice.id, "conv_same", None)
    app = ConversationItems(devui_stand_in, store)

    def post(caller: Caller) -> int:
        body = b'{"items": [{"role": "user", "content": "import os; os.system(\\"rm -rf ~\\")"}]}'
        scope = {"type": "http", "method": "POST", "path": "/v1/conversations/conv_same/items", "headers": [],
                 SCOPE_KEY: caller}
        sent = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        asyncio.run(app(scope, receive, send))
        return sent[0]["status"]

    assert post(bob) == 418  # not Bob's on the lean path: on to DevUI (its own store), nothing kept here
    assert store.conversation(alice.id, "conv_same").items == 0 and store.conversation(bob.id, "conv_same") is None
    assert post(alice) == 200 and store.conversation(alice.id, "conv_same").items == 1


def test_a_conversation_created_with_no_items_is_the_lean_paths_from_the_start():
    """`conversations.create(items=[])`, as the OpenAI Agents SDK's conversation session starts one: later items
    and turns go to the lean path's history, in order."""
    async def run():
        async with app_client() as (c, _s, _sb):
            created = await c.post("/v1/conversations", json={"items": []})
            cid = created.json()["id"]
            empty = (await c.get(f"/v1/conversations/{cid}/items")).json()
            await c.post(f"/v1/conversations/{cid}/items", json={"items": [{"role": "user", "content": "x = 1"}]})
            await c.post("/v1/responses", json={"input": "print(2)", "conversation": cid})
            listed = (await c.get(f"/v1/conversations/{cid}/items", params={"order": "asc"})).json()
            return created, empty, listed

    created, empty, listed = asyncio.run(run())
    assert created.status_code == 200 and empty["data"] == []
    assert [item["type"] for item in listed["data"]] == ["message", "message", "code_interpreter_call", "message"]


def test_a_deleted_item_leaves_the_listing_and_what_the_model_is_sent(monkeypatch):
    """`conversations.items.delete` (the Agents SDK's `pop_item`): the item is no longer listed, and the next
    response's model no longer reads it; the rest of its turn stays. An unknown item is a 404 in the OpenAI shape; a
    conversation the lean path does not keep goes to DevUI (which deletes no message items: 501)."""
    from local_code_interpreter import offline

    seen: list = []
    original = offline._reply

    def recording_reply(messages):
        seen.append([(m.role, [c.type for c in m.contents], m.text) for m in messages])
        return original(messages)

    monkeypatch.setattr(offline, "_reply", recording_reply)

    async def run():
        async with app_client() as (c, _s, _sb):
            cid = (await c.post("/v1/conversations", json={})).json()["id"]
            for code in ("x = 1", "print(x + 41)"):
                await c.post("/v1/responses", json={"input": code, "conversation": cid})
            before = (await c.get(f"/v1/conversations/{cid}/items", params={"order": "asc"})).json()["data"]
            last_call, last_answer = before[-2], before[-1]
            deleted = [await c.delete(f"/v1/conversations/{cid}/items/{item['id']}")
                       for item in (last_answer, last_call)]
            again = await c.delete(f"/v1/conversations/{cid}/items/{last_answer['id']}")
            elsewhere = await c.delete(f"/v1/conversations/conv_nobody/items/{before[0]['id']}")
            after = (await c.get(f"/v1/conversations/{cid}/items", params={"order": "asc"})).json()["data"]
            seen.clear()
            await c.post("/v1/responses", json={"input": "print(x)", "conversation": cid})
            return before, deleted, again, elsewhere, after, last_call

    before, deleted, again, elsewhere, after, last_call = asyncio.run(run())
    assert [item["type"] for item in before] == ["message", "code_interpreter_call", "message"] * 2
    assert [answer.status_code for answer in deleted] == [200, 200]
    assert deleted[0].json()["object"] == "conversation"
    assert again.status_code == 404 and again.json()["error"]["code"] == "item_not_found"
    assert elsewhere.status_code == 501 and "error" in elsewhere.json()  # DevUI's: it deletes no message items
    assert after == before[:4]  # the first turn whole, the second's user message; the rest gone
    history = seen[0]
    assert [(role, kinds) for role, kinds, _ in history] == [
        ("user", ["text"]), ("assistant", ["function_call"]), ("tool", ["function_result"]), ("assistant", ["text"]),
        ("user", ["text"]), ("user", ["text"])]  # the second turn's call, result and answer are gone
    assert history[-2][2] == "print(x + 41)" and all(last_call["code"] not in text for _, _, text in history[:4])


def test_a_call_whose_output_a_later_item_holds_is_deleted_after_it(model_calls_lookup):
    """A client's own function call answered in a later request: deleting the call first would leave an output
    without its call (a model's service refuses such a history), so that is a 400 saying what to delete first;
    after the output, the call goes too."""
    lookup = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}

    async def run():
        async with app_client() as (c, _s, _sb):
            cid = (await c.post("/v1/conversations", json={})).json()["id"]
            await c.post("/v1/responses", json={"input": "please look up k", "conversation": cid, "tools": [lookup]})
            await c.post("/v1/responses", json={"conversation": cid, "tools": [lookup], "input": [
                {"type": "function_call_output", "call_id": "call_lookup", "output": "v"}]})
            items = (await c.get(f"/v1/conversations/{cid}/items", params={"order": "asc"})).json()["data"]
            call = next(i for i in items if i["type"] == "function_call")
            output = next(i for i in items if i["type"] == "function_call_output")
            first = await c.delete(f"/v1/conversations/{cid}/items/{call['id']}")
            then = [await c.delete(f"/v1/conversations/{cid}/items/{i['id']}") for i in (output, call)]
            left = (await c.get(f"/v1/conversations/{cid}/items", params={"order": "asc"})).json()["data"]
            answer = await c.post("/v1/responses", json={"input": "print(1)", "conversation": cid})
            return first, then, left, answer

    first, then, left, answer = asyncio.run(run())
    assert first.status_code == 400 and "delete that output first" in first.json()["error"]["message"]
    assert [answer.status_code for answer in then] == [200, 200]
    assert [i["type"] for i in left] == ["message", "message"]  # the question, and the answer after the lookup
    assert answer.status_code == 200 and "1" in answer.text  # the history the model gets still holds together
