"""What the lean path keeps, read back through the parts of the OpenAI API that read stored state, with the official
`openai` client: a response (plain or streamed) retrieved as it was sent, its input items, a conversation's items in
order and paged, an API client's own conversation; deleting a response; another caller's ids; bad list queries."""

import asyncio
import json

import httpx
import openai
import pytest

from asgi_call import call
from inprocess import app_client, devui_stand_in
from local_code_interpreter.identity import Caller
from local_code_interpreter.http.history import ConversationStore
from local_code_interpreter.http.stored import StoredResponses, render


def _openai(client: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://127.0.0.1:8090/v1", api_key="unused-on-loopback", max_retries=0,
                              http_client=client)


def test_an_api_client_reads_back_its_responses_and_its_conversations_items():
    async def go():
        async with app_client() as (http, _, _):
            client = _openai(http)
            plain = await client.responses.create(model="m", input="x = 41\nprint(x + 1)", conversation="conv_work")
            got = await client.responses.retrieve(plain.id)
            assert got.model_dump() == plain.model_dump()  # the very response the client got
            inputs = [item async for item in client.responses.input_items.list(plain.id)]
            assert [(i.type, i.role, i.content[0].type, i.content[0].text) for i in inputs] == [
                ("message", "user", "input_text", "x = 41\nprint(x + 1)")]

            events = [e async for e in await client.responses.create(
                model="m", input=[{"role": "user", "content": "print(41 * 2)"}], conversation="conv_work",
                stream=True)]
            streamed = events[-1].response
            assert events[-1].type == "response.completed" and "82" in streamed.output_text
            assert (await client.responses.retrieve(streamed.id)).model_dump() == streamed.model_dump()

            conversation = await client.conversations.retrieve("conv_work")  # never created: the lean path's own
            assert conversation.id == "conv_work" and conversation.object == "conversation"
            oldest_first = [i async for i in client.conversations.items.list("conv_work", order="asc", limit=3)]
            expected = [("message", "x = 41\nprint(x + 1)"), *[(o.type, None) for o in plain.output],
                        ("message", "print(41 * 2)"), *[(o.type, None) for o in streamed.output]]
            assert [i.type for i in oldest_first] == [kind for kind, _ in expected]
            second = 1 + len(plain.output)  # the second turn's input
            assert oldest_first[0].content[0].text == "x = 41\nprint(x + 1)"
            assert oldest_first[second].content[0].text == "print(41 * 2)"
            calls = [o for o in (*plain.output, *streamed.output) if o.type == "code_interpreter_call"]
            assert [o.model_dump()["outputs"] for o in oldest_first if o.type == "code_interpreter_call"] == [
                o.model_dump()["outputs"] for o in calls]
            ids = [i.id for i in oldest_first]
            assert len(set(ids)) == len(ids) == len(expected) == 6  # pages of 3 went through all, no item twice
            newest_first = [i.id async for i in client.conversations.items.list("conv_work")]
            assert newest_first == ids[::-1]  # the OpenAI default order, and the same ids on every read
            one = await client.conversations.items.retrieve(ids[second], conversation_id="conv_work")
            assert one.model_dump() == oldest_first[second].model_dump()
            with pytest.raises(openai.NotFoundError, match="no item"):
                await client.conversations.items.retrieve("item_nothing", conversation_id="conv_work")

    asyncio.run(go())


def test_a_deleted_response_is_gone_but_its_turn_stays_in_its_conversation():
    async def go():
        async with app_client() as (http, _, _):
            client = _openai(http)
            first = await client.responses.create(model="m", input="print(1)", conversation="conv_d")
            second = await client.responses.create(model="m", input="print(2)", previous_response_id=first.id)
            await client.responses.delete(first.id)
            with pytest.raises(openai.NotFoundError, match="not found"):
                await client.responses.retrieve(first.id)
            with pytest.raises(openai.NotFoundError):
                await client.responses.input_items.list(first.id)
            with pytest.raises(openai.NotFoundError):  # nor continued from
                await client.responses.create(model="m", input="print(3)", previous_response_id=first.id)
            with pytest.raises(openai.NotFoundError):  # a second delete finds nothing
                await client.responses.delete(first.id)
            assert (await client.responses.retrieve(second.id)).id == second.id
            items = [i async for i in client.conversations.items.list("conv_d", order="asc")]
            assert items[0].content[0].text == "print(1)" and len(items) == 6  # two turns: input, code, reply

            unstored = await client.responses.create(model="m", input="print(4)", store=False)
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(unstored.id)
            answer = await http.get("/v1/responses/resp_never")
            assert answer.status_code == 404 and answer.json()["error"]["code"] == "response_not_found"

    asyncio.run(go())


def _call(app, path: str, caller: Caller, method: str = "GET") -> tuple[int, bytes]:
    status, _, body = call(app, path, caller, method)
    return status, body


def _kept(store: ConversationStore, owner: str, conversation: str, response_id: str) -> None:
    continuation = store.resolve(owner, conversation, None)
    store.record(continuation, response_id, [], render(response_id, "print(1)",
                                                       {"id": response_id, "object": "response", "output": []}))


def test_another_callers_responses_and_conversations_are_not_found_even_under_the_same_ids():
    alice, bob = Caller("entra:t/alice", "entra"), Caller("entra:t/bob", "entra")
    store = ConversationStore()
    _kept(store, alice.id, "conv_same", "resp_alices")
    app = StoredResponses(devui_stand_in, store)
    assert _call(app, "/v1/responses/resp_alices", alice)[0] == 200
    assert _call(app, "/v1/responses/resp_alices", bob)[0] == 404
    assert _call(app, "/v1/responses/resp_alices/input_items", bob)[0] == 404
    assert _call(app, "/v1/responses/resp_alices", bob, "DELETE")[0] == 404
    assert _call(app, "/v1/responses/resp_alices", alice)[0] == 200  # Bob's delete deleted nothing
    assert _call(app, "/v1/conversations/conv_same/items", alice)[0] == 200
    assert _call(app, "/v1/conversations/conv_same/items", bob)[0] == 418  # not the lean path's: on to DevUI
    _kept(store, bob.id, "conv_same", "resp_bobs")  # the same conversation id, Bob's own
    status, body = _call(app, "/v1/conversations/conv_same/items", bob)
    assert status == 200 and "resp_alices".removeprefix("resp_") not in body.decode()
    assert [i["id"] for i in json.loads(body)["data"]] == ["item_bobs_in0"]


@pytest.mark.parametrize("query, complaint", [
    ("limit=0", "'limit'"), ("limit=101", "'limit'"), ("limit=ten", "'limit'"), ("order=newest", "'order'"),
    ("after=item_nothing", "'after'"),
])
def test_a_bad_list_query_gets_a_400_naming_the_parameter(query, complaint):
    me = Caller("local", "local")
    store = ConversationStore()
    _kept(store, me.id, "conv_q", "resp_q")
    app = StoredResponses(devui_stand_in, store)
    for path in ("/v1/conversations/conv_q/items", "/v1/responses/resp_q/input_items"):
        status, body = _call(app, f"{path}?{query}", me)
        assert status == 400, body
        assert complaint in json.loads(body)["error"]["message"]
    assert _call(app, "/v1/conversations/conv_q/items?limit=100&order=asc", me)[0] == 200


def test_a_deleted_conversation_takes_its_stored_responses_and_items_with_it():
    async def go():
        async with app_client() as (http, _, _):
            client = _openai(http)
            kept = await client.responses.create(model="m", input="print(1)", conversation="conv_gone")
            other = await client.responses.create(model="m", input="print(2)", conversation="conv_stays")
            await client.conversations.delete("conv_gone")
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(kept.id)
            with pytest.raises(openai.NotFoundError):  # no longer the lean path's: DevUI does not know it either
                await client.conversations.items.list("conv_gone")
            assert (await client.responses.retrieve(other.id)).id == other.id
            assert len([i async for i in client.conversations.items.list("conv_stays")]) == 3

    asyncio.run(go())


def test_a_stream_that_ended_without_its_final_event_has_input_items_but_no_body_to_return():
    me = Caller("local", "local")
    store = ConversationStore()
    store.record(store.resolve(me.id, "conv_cut", None), "resp_cut", [], render("resp_cut", "print(1)", None))
    app = StoredResponses(devui_stand_in, store)
    status, body = _call(app, "/v1/responses/resp_cut", me)
    assert status == 404 and b"no stored body" in body  # never a 200 with an empty body
    assert _call(app, "/v1/responses/resp_cut/input_items", me)[0] == 200
    status, body = _call(app, "/v1/conversations/conv_cut/items", me)
    assert status == 200 and [i["type"] for i in json.loads(body)["data"]] == ["message"]


def test_reading_back_copies_the_stored_json_and_never_parses_it(monkeypatch):
    """A read's work is the page it returns: a conversation can hold many megabytes, and parsing all of it on every
    list call would block the event loop for every other caller. Items are rendered once, when the turn is kept."""
    me = Caller("local", "local")
    store = ConversationStore()
    for n in range(30):
        _kept(store, me.id, "conv_big", f"resp_{n}")
    app = StoredResponses(devui_stand_in, store)

    def no_parsing(*args, **kwargs):
        raise AssertionError("a read parsed stored JSON")

    monkeypatch.setattr(json, "loads", no_parsing)
    monkeypatch.setattr(json.JSONDecoder, "decode", no_parsing)
    listed = _call(app, "/v1/conversations/conv_big/items?limit=2&order=asc&after=item_3_in0", me)
    one = _call(app, "/v1/conversations/conv_big/items/item_7_in0", me)
    inputs = _call(app, "/v1/responses/resp_9/input_items", me)
    whole = _call(app, "/v1/responses/resp_9", me)
    monkeypatch.undo()
    assert [i["id"] for i in json.loads(listed[1])["data"]] == ["item_4_in0", "item_5_in0"]
    assert json.loads(listed[1])["has_more"] is True and json.loads(listed[1])["last_id"] == "item_5_in0"
    assert json.loads(one[1])["content"] == [{"type": "input_text", "text": "print(1)"}]
    assert [i["id"] for i in json.loads(inputs[1])["data"]] == ["item_9_in0"]
    assert json.loads(whole[1])["id"] == "resp_9"
