"""DevUI's own API routes as an API client meets them (`http/devui_api.py`): its `{"detail"}` errors also carry the
OpenAI `error` (the page keeps reading `detail`), and an entity it does not serve is a 404, not DevUI's 500."""

import asyncio
import json

import openai
import pytest

from inprocess import app_client, devui_entity
from local_code_interpreter.http.devui_api import MAX_ERROR_BYTES, DevUIApi


def test_devuis_errors_reach_an_openai_client_in_its_shape():
    async def run():
        async with app_client() as (c, _s, _sb):
            entity = await devui_entity(c)
            client = openai.AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:8090/v1", http_client=c)
            with pytest.raises(openai.NotFoundError) as missing:
                await client.conversations.retrieve("conv_nobody")
            answers = [await c.get(path) for path in ("/v1/conversations/conv_nobody/items", "/v1/nothing",
                                                      "/v1/entities/nope/info", f"/v1/entities/{entity}/info")]
            return missing.value, answers

    missing, (items, nothing, unknown, known) = asyncio.run(run())
    assert missing.message == "Error code: 404 - Conversation not found" and missing.body["type"] == "not_found_error"
    for answer in (items, nothing, unknown):
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", answer.text
    assert items.json()["detail"] == "Conversation conv_nobody not found"  # what the DevUI page's scripts read
    assert "no entity 'nope'" in unknown.json()["error"]["message"]
    assert known.status_code == 200 and known.json()["id"]


def _through(status: int, chunks: list[bytes], content_type: bytes = b"application/json"):
    """What DevUIApi sends for an app answering `status` with `chunks`."""
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type), (b"content-length", b"999")]})
        for n, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": n < len(chunks) - 1})

    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(DevUIApi(app, lambda: "agent")({"type": "http", "path": "/v1/x"}, None, send))
    headers = dict(sent[0]["headers"])
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def test_only_json_errors_with_a_detail_change_and_their_length_with_them():
    validation = {"detail": [{"loc": ["body", "items", 0], "msg": "Field required", "type": "missing"}]}
    status, headers, body = _through(422, [json.dumps(validation)[:20].encode(), json.dumps(validation)[20:].encode()])
    value = json.loads(body)
    assert status == 422 and value["error"]["message"] == "body.items.0: Field required"
    assert value["detail"] == validation["detail"] and headers[b"content-length"] == str(len(body)).encode()
    for case in ((200, [b'{"detail": "fine"}']), (404, [b"<html>no</html>"], b"text/html"),
                 (400, [b'{"error": {"message": "already"}}']), (500, [b"not json"])):
        assert _through(*case)[2] == b"".join(case[1])
    big = [b'{"detail": "' + b"x" * MAX_ERROR_BYTES, b'"}']  # larger than it holds back: passed on as it came
    status, headers, body = _through(500, big)
    assert body == b"".join(big) and b"content-length" not in headers


def test_a_page_input_devui_cannot_read_is_a_400_and_what_the_page_sends_is_served():
    """DevUI answers an input it cannot read with a 200 whose response failed (`server_error`); the same request
    naming the page's entity gets a 400 in the OpenAI shape. The check is DevUI's own reading of the input, so what
    the page sends still runs."""
    page = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "print(6*7)"}]}
    good = ["print(6*7)", [page]]
    bad = [[], [{"type": "message", "role": "user", "content": 7}],
           [{"type": "message", "role": "robot", "content": "print(1)"}]]

    async def run():
        async with app_client() as (c, _s, _sb):
            entity = await devui_entity(c)
            client = openai.AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:8090/v1", http_client=c)
            refused = []
            for value in bad:
                with pytest.raises(openai.BadRequestError) as error:
                    await client.responses.create(model="agent", input=value, metadata={"entity_id": entity})
                refused.append(error.value)
            conversation = (await c.post("/v1/conversations", json={"metadata": {"agent_id": entity}})).json()["id"]
            served = [await c.post("/v1/responses", json={"input": value, "metadata": {"entity_id": entity},
                                                          "conversation": conversation}) for value in good]
            return refused, served

    refused, served = asyncio.run(run())
    for error in refused:
        assert error.code == "invalid_input", error.body
        assert error.body["message"].startswith("'input' cannot be read: "), error.body
    assert "role" in refused[2].body["message"]
    for answer in served:
        assert answer.status_code == 200 and answer.json()["status"] == "completed", answer.text[:500]
        assert "42" in answer.text


def test_a_page_response_in_a_conversation_devui_does_not_hold_is_a_404_not_a_run_without_its_history():
    """DevUI runs a response naming a conversation it does not hold (never created, deleted, or dropped as the
    oldest of the `LCI_CONVERSATIONS_MAX` it keeps) without the conversation's history, and keeps nothing of it: the
    page's user would get an answer that forgot the conversation. A 404 in the OpenAI shape says so instead; a held
    conversation still runs."""

    async def run():
        async with app_client({"LCI_CONVERSATIONS_MAX": "2"}) as (c, _s, _sb):
            entity = await devui_entity(c)

            async def create() -> str:
                return (await c.post("/v1/conversations", json={"metadata": {"agent_id": entity}})).json()["id"]

            async def turn(conversation: str, code: str):  # as the page sends it
                return await c.post("/v1/responses", json={"input": code, "metadata": {"entity_id": entity},
                                                           "conversation": conversation, "stream": True})

            dropped, held = await create(), await create()
            first = await turn(held, "print(6 * 7)")
            await create()  # the third: `dropped`, the oldest, goes
            answers = [await turn(conversation, "print(7 * 8)") for conversation in ("conv_nobody", dropped, held)]
            return first, answers

    first, (nobody, dropped, held) = asyncio.run(run())
    assert first.status_code == 200 and "42" in first.text, first.text[:500]
    for answer in (nobody, dropped):
        assert answer.status_code == 404, answer.text[:500]
        error = answer.json()["error"]
        assert error["code"] == "not_found" and "not found" in error["message"], error
    assert held.status_code == 200 and "56" in held.text, held.text[:500]


def test_a_page_conversation_lists_its_turns_as_the_page_reads_them_after_a_reload():
    """DevUI lists a conversation's items from what was added through `POST .../items` alone, while its runs keep
    their turns in the conversation's session: the page, reloaded, showed the conversation empty. Its turns are
    listed now (each: the message, the call, its output, the reply), in order, paged as DevUI pages, each readable
    by its id, with an added item after them; and the conversation goes on."""

    async def run():
        async with app_client() as (c, _s, _sb):
            entity = await devui_entity(c)
            conversation = (await c.post("/v1/conversations", json={"metadata": {"agent_id": entity}})).json()["id"]
            for code in ("print(6 * 7)", "print(7 * 8)"):  # as the page sends it
                answer = await c.post("/v1/responses", json={"input": code, "metadata": {"entity_id": entity},
                                                             "conversation": conversation, "stream": True})
                assert answer.status_code == 200, answer.text[:500]
            path = f"/v1/conversations/{conversation}/items"
            listed = (await c.get(path)).json()
            first = (await c.get(path, params={"limit": 3})).json()
            last = first["data"][-1]["id"] if first["data"] else "item_2"
            rest = (await c.get(path, params={"limit": 100, "after": last})).json()
            added = await c.post(path, json={"items": [{"type": "message", "role": "user",
                                                        "content": [{"type": "input_text", "text": "a note"}]}]})
            after_adding = (await c.get(path)).json()["data"]
            read = [(await c.get(f"{path}/{item['id']}")).json() for item in listed["data"][:4]]
            third = await c.post("/v1/responses", json={"input": "print(8 * 9)", "metadata": {"entity_id": entity},
                                                        "conversation": conversation, "stream": True})
            return listed, first, rest, added, after_adding, read, third

    listed, first, rest, added, after_adding, read, third = asyncio.run(run())
    items = listed["data"]
    assert [item["type"] for item in items] == ["message", "function_call", "function_call_output", "message"] * 2
    assert [item["role"] for item in items if item["type"] == "message"] == ["user", "assistant"] * 2
    assert items[0]["content"][0]["text"] == "print(6 * 7)" and items[4]["content"][0]["text"] == "print(7 * 8)"
    assert json.loads(items[1]["arguments"]) == {"code": "print(6 * 7)"} and items[1]["name"] == "execute_code"
    assert "42" in items[2]["output"] and "56" in items[6]["output"] and "56" in items[7]["content"][0]["text"]
    assert items[2]["call_id"] == items[1]["call_id"] != items[5]["call_id"]
    assert first["has_more"] and [i["id"] for i in first["data"] + rest["data"]] == [i["id"] for i in items]
    assert added.status_code == 200, added.text
    assert after_adding[:8] == items and after_adding[8]["content"][0]["text"] == "a note"
    assert read == items[:4]  # each listed item read back by its id
    assert third.status_code == 200 and "72" in third.text, third.text[:500]


def test_a_page_conversation_is_bounded_like_the_lean_paths():
    """DevUI keeps every message of a page conversation for the life of the process, so the page could grow the
    server's memory at will. With LCI_CONVERSATION_MAX_ITEMS=8 the conversation keeps its last two whole turns
    (4 messages each); with LCI_CONVERSATIONS_MAX_BYTES at 1 MiB,
    two conversations of ~0.8 MiB do not both stay: the one used least recently goes (its next response is a 404)."""

    async def run():
        env = {"LCI_CONVERSATION_MAX_ITEMS": "8", "LCI_CONVERSATIONS_MAX_BYTES": str(1024 * 1024)}
        async with app_client(env) as (c, _s, _sb):
            entity = await devui_entity(c)

            async def page_turns(codes):
                conversation = (await c.post("/v1/conversations", json={"metadata": {"agent_id": entity}})).json()
                for code in codes:
                    answer = await c.post("/v1/responses", json={
                        "input": code, "metadata": {"entity_id": entity}, "conversation": conversation["id"],
                        "stream": True})
                    assert answer.status_code == 200, answer.text[:500]
                return conversation["id"]

            short = await page_turns([f"print({n} * 3)" for n in range(6)])
            listed = (await c.get(f"/v1/conversations/{short}/items", params={"limit": 100})).json()["data"]
            wide = f"x = '{'a' * 200_000}'\nprint(len(x))"  # ~0.4 MB a turn: in the message and the call
            first = await page_turns([wide, wide])
            second = await page_turns([wide, wide])
            again = await c.post("/v1/responses", json={"input": "print(1)", "metadata": {"entity_id": entity},
                                                        "conversation": first, "stream": True})
            kept = await c.post("/v1/responses", json={"input": "print(2)", "metadata": {"entity_id": entity},
                                                       "conversation": second, "stream": True})
            return listed, again, kept

    listed, again, kept = asyncio.run(run())
    assert len(listed) == 8 and listed[0]["type"] == "message" and listed[0]["role"] == "user"
    assert listed[0]["content"][0]["text"] == "print(4 * 3)" and "15" in listed[-1]["content"][0]["text"]
    assert again.status_code == 404, again.text[:300]  # evicted to keep the bytes within the bound
    assert kept.status_code == 200 and "2" in kept.text


def test_the_page_and_the_lean_path_share_one_byte_budget():
    """LCI_CONVERSATIONS_MAX_BYTES holds all kept conversations together: with an API client's conversation holding
    ~0.8 of its 1 MiB, a page conversation of two ~0.4 MB turns keeps only its newest (alone over what is left)."""
    wide = f"x = '{'a' * 200_000}'\nprint(len(x))"

    async def run():
        async with app_client({"LCI_CONVERSATIONS_MAX_BYTES": str(1024 * 1024)}) as (c, _s, _sb):
            for _ in range(2):
                lean = await c.post("/v1/responses", json={"input": wide, "conversation": "conv_api"})
                assert lean.status_code == 200, lean.text[:300]
            before = (await c.get("/v1/conversations/conv_api/items", params={"limit": 100})).json()["data"]
            entity = await devui_entity(c)
            conversation = (await c.post("/v1/conversations", json={"metadata": {"agent_id": entity}})).json()["id"]
            for _ in range(2):
                answer = await c.post("/v1/responses", json={"input": wide, "metadata": {"entity_id": entity},
                                                             "conversation": conversation, "stream": True})
                assert answer.status_code == 200, answer.text[:300]
            page = (await c.get(f"/v1/conversations/{conversation}/items", params={"limit": 100})).json()["data"]
            after = (await c.get("/v1/conversations/conv_api/items", params={"limit": 100})).json()["data"]
            return page, before, after

    page, before, after = asyncio.run(run())
    assert [item["type"] for item in page] == ["message", "function_call", "function_call_output", "message"]
    assert len(before) == 6 and after == before  # the API client's conversation is the lean path's to evict


@pytest.mark.parametrize("metadata, complaint", [
    ({"note": "a" * 513}, "'metadata.note' is 513 characters long: at most 512"),
    ({f"k{n}": "v" for n in range(17)}, "pairs: at most 16"),
    ({"k" * 65: "v"}, "characters long: at most 64"),
    ({"note": 5}, "'metadata' must be an object of string values"),
])
def test_metadata_beyond_the_openai_apis_bounds_is_a_400_on_every_route_that_keeps_it(metadata, complaint):
    """A conversation or a response keeps its metadata for as long as it is kept: unbounded, each of the thousand
    conversations a server keeps could hold a whole request body of it (900 KB was taken as it came). The OpenAI API's
    bounds (16 pairs, keys of 64 characters, values of 512) hold on the page's routes and the API clients' alike; the
    page's own metadata (its entity and agent ids) passes."""

    async def run():
        async with app_client() as (c, _s, _sb):
            entity = await devui_entity(c)
            page = (await c.post("/v1/conversations", json={"metadata": {"agent_id": entity}})).json()["id"]
            answers = [
                await c.post("/v1/responses", json={"input": "print(1)", "metadata": metadata}),
                await c.post("/v1/responses", json={"input": "print(1)", "metadata": {**metadata, "entity_id": entity},
                                                    "stream": True}),
                await c.post("/v1/conversations", json={"metadata": metadata}),
                await c.post("/v1/conversations", json={"metadata": {**metadata, "agent_id": entity}}),
                await c.post(f"/v1/conversations/{page}", json={"metadata": metadata}),
            ]
            kept = await c.post("/v1/responses", json={"input": "print(6 * 7)", "metadata": {"entity_id": entity},
                                                       "conversation": page, "stream": True})
            return answers, kept

    answers, kept = asyncio.run(run())
    for answer in answers:
        assert answer.status_code == 400, (answer.request.url, answer.text[:300])
        assert complaint in answer.json()["error"]["message"], answer.text[:300]
    assert kept.status_code == 200 and "42" in kept.text
