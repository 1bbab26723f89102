"""The lean `/v1/responses` path with the official openai client (plain and streaming), conversation continuity
and the conversation key the `execute_code` tool reads, on the lean path and on DevUI's; bounded history."""

import asyncio

import openai
import pytest
from agent_framework import Content, Message

from inprocess import app_client, app_with_sessions, devui_entity, sse_events
from local_code_interpreter.conversation import conversation_key
from local_code_interpreter.http.history import Bounds, ConversationStore, HistoryError
from local_code_interpreter.sandbox import Limits, create_sandbox
from service import clean_env, running_service


@pytest.fixture(scope="module")
def service():
    with running_service() as (base, process, _seconds):
        yield base


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused-on-loopback", max_retries=0)


def test_openai_client_plain(service):
    reply = client(service).responses.create(model="local-code-interpreter", input="print(6 * 7)")
    assert reply.status == "completed" and reply.id.startswith("resp_")
    assert "42" in reply.output_text and "exit code 0" in reply.output_text
    assert [item.type for item in reply.output] == ["code_interpreter_call", "message"]  # tool_items.py
    assert reply.output[0].code == "print(6 * 7)" and "42" in reply.output[0].outputs[0].logs


def test_openai_client_streaming(service):
    events = list(client(service).responses.create(model="local-code-interpreter", input="print(6 * 7)",
                                                     stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "42" in "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert "42" in events[-1].response.output_text


def test_openai_client_continuity(service):
    c = client(service)
    first = c.responses.create(model="m", input="print(1)")
    second = c.responses.create(model="m", input="print(2)", previous_response_id=first.id)
    assert second.status == "completed" and "2" in second.output_text
    in_conversation = c.responses.create(model="m", input="print(3)", conversation="conv_lean_test")
    assert in_conversation.conversation.id == "conv_lean_test"



def test_openai_client_stateless_turns_send_the_output_back(service):
    """The OpenAI API's stateless multi-turn: the client keeps the context, appending each response's output (here
    the code interpreter call and the message) and the next message; nothing is stored."""
    c = client(service)
    context: list = [{"role": "user", "content": "print(6 * 7)"}]
    first = c.responses.create(model="m", input=context, store=False)
    context += first.output
    context.append({"role": "user", "content": "print(7 * 8)"})
    second = c.responses.create(model="m", input=context, store=False)
    assert second.status == "completed" and "56" in second.output_text
    events = list(c.responses.create(model="m", input=context, store=False, stream=True))
    assert events[-1].type == "response.completed" and "56" in events[-1].response.output_text



def test_agent_framework_client_without_store_sends_its_history_and_is_served(service):
    """Agent Framework's own Responses client as an outer agent's model: with `store: false` it keeps the session's
    history itself and sends it whole, our code interpreter calls included, on every turn."""
    from agent_framework import Agent
    from agent_framework.openai import OpenAIChatClient

    async def turns() -> list[str]:
        outer = Agent(client=OpenAIChatClient(model="local-code-interpreter", base_url=f"{service}/v1",
                                              api_key="unused-on-loopback"), name="outer")
        session = outer.create_session()
        return [(await outer.run(code, session=session, options={"store": False})).text
                for code in ("print(6 * 7)", "print(7 * 8)", "print(2 ** 10)")]

    texts = asyncio.run(turns())
    assert ["42" in texts[0], "56" in texts[1], "1024" in texts[2]] == [True, True, True], texts


class Recording:
    """The real monty back end, noting which conversation key each execution ran under."""

    def __init__(self):
        self.inner = create_sandbox("monty", Limits(), "python", 4)
        self.name = self.inner.name
        self.keys: list = []

    async def start(self):
        await self.inner.start()

    async def run(self, code, language=None):
        self.keys.append(conversation_key.get())
        return await self.inner.run(code, language)

    async def close(self):
        await self.inner.close()


def test_runs_happen_in_their_conversation_on_both_paths():
    recording = Recording()

    async def run():
        async with app_client(sandbox=recording) as (c, _s, _sb):
            first = (await c.post("/v1/responses", json={"input": "print(1)"})).json()
            await c.post("/v1/responses", json={"input": "print(2)", "previous_response_id": first["id"]})
            await c.post("/v1/responses", json={"input": "print(3)", "conversation": "conv_a"})
            await c.post("/v1/responses", json={"input": "print(4)", "conversation": {"id": "conv_a"}, "stream": True})
            await c.post("/v1/responses", json={"input": "print(5)", "store": False})
            # DevUI's page: its own conversation, named in the body
            created = (await c.post("/v1/conversations", json={"metadata": {}})).json()
            entity = await devui_entity(c)
            page = await c.post("/v1/responses", json={"input": "print(6)", "stream": True, "conversation": created["id"],
                                                       "metadata": {"entity_id": entity}})
            assert "6" in "".join(str(e.get("delta", "")) for e in sse_events(page.text))
            return created["id"]

    devui_conversation = asyncio.run(run())
    keys = recording.keys[-6:]
    chain = keys[0]
    assert chain is not None and chain[0] == "local"
    assert keys[1] == chain  # previous_response_id continues the chain's conversation (same sandbox session)
    assert keys[2] == keys[3] == ("local", "conv_a")
    assert keys[4] is not None and keys[4] != chain  # a fresh, unkept conversation
    assert keys[5] == ("local", devui_conversation)


def test_history_reaches_the_model_on_continuation(monkeypatch):
    from local_code_interpreter import offline

    seen: list[list[str]] = []
    original = offline._reply

    def recording_reply(messages):
        seen.append([m.text for m in messages if m.role == "user"])
        return original(messages)

    monkeypatch.setattr(offline, "_reply", recording_reply)

    async def run():
        async with app_client() as (c, _s, _sb):
            first = (await c.post("/v1/responses", json={"input": "print(11)", "conversation": "conv_h"})).json()
            second = (await c.post("/v1/responses", json={"input": "print(22)", "conversation": "conv_h"})).json()
            seen.clear()
            forked = await c.post("/v1/responses", json={"input": "print(33)", "previous_response_id": first["id"]})
            return first, second, forked

    first, second, forked = asyncio.run(run())
    assert first["conversation"]["id"] == second["conversation"]["id"] == "conv_h"
    assert forked.status_code == 200
    # continuing from the first response: the model sees the first turn and the new input, not the second turn
    assert seen[0] == ["print(11)", "print(33)"]


def _message(text: str) -> Message:
    return Message("user", [Content.from_text(text)])


def test_store_bounds_items_bytes_count():
    store = ConversationStore(Bounds(max_items=4, item_max_bytes=1000, max_bytes=10_000, max_conversations=3))
    with pytest.raises(HistoryError) as caught:
        store.check_input([_message("x" * 2000)])
    assert caught.value.status == 413
    c = store.resolve("me", "conv_1", None)
    for i in range(5):
        c = store.resolve("me", "conv_1", None)
        store.record(c, f"resp_{i}", [_message(f"in {i}"), _message(f"out {i}")])
    kept = store.resolve("me", "conv_1", None)
    assert [m.text for m in kept.history] == ["in 3", "out 3", "in 4", "out 4"]  # oldest turns dropped
    with pytest.raises(HistoryError):  # a response older than the kept history is a clear 404
        store.resolve("me", None, "resp_0")
    with pytest.raises(HistoryError):  # another caller cannot continue it
        store.resolve("someone-else", None, "resp_4")
    assert store.resolve("someone-else", "conv_1", None).history == []  # the same id, another caller's own
    for n in range(2, 6):
        store.record(store.resolve("me", f"conv_{n}", None), f"r{n}", [_message("hi")])
    assert len(store) == 3  # the least recently used were evicted
    with pytest.raises(HistoryError):
        store.resolve("me", None, "resp_4")  # its conversation was evicted
    big = ConversationStore(Bounds(max_items=100, item_max_bytes=5000, max_bytes=12_000, max_conversations=100))
    for n in range(10):
        big.record(big.resolve("me", f"c{n}", None), f"r{n}", [_message("y" * 4000)])
    assert big.total_bytes <= 12_000 and len(big) == 2


def test_response_index_is_bounded_by_live_conversations():
    """Responses of evicted conversations (and past a conversation's kept history) leave the index: what the
    store holds does not grow with the number of responses ever served."""
    store = ConversationStore(Bounds(max_items=6, max_conversations=3))
    for n in range(2000):
        store.record(store.resolve("me", None, None), f"one_{n}", [_message("in"), _message("out")])
    assert len(store) == 3 and len(store._responses) == 3
    c = store.resolve("me", "long", None)
    for n in range(500):
        c = store.resolve("me", "long", None)
        store.record(c, f"long_{n}", [_message(f"in {n}"), _message(f"out {n}")])
    assert len(store._responses) <= 2 + 6
    assert store.resolve("me", None, "long_499").history[-1].text == "out 499"


def test_a_caller_passing_a_bound_evicts_its_own_conversations_not_other_callers():
    """Each of the store's three bounds (conversations, bytes, indexed responses) makes room at the expense of the
    caller holding the most: Mallory's traffic ends her own oldest conversations and responses, and Alice's
    conversation and its first response stay continuable (least recently used across callers ended them)."""
    def alice_first(store: ConversationStore) -> str:
        store.record(store.resolve("alice", "conv_alice", None), "resp_alice", [_message("secret")])
        return "resp_alice"

    count = ConversationStore(Bounds(max_conversations=4))
    alice_first(count)
    for n in range(10):
        count.record(count.resolve("mallory", None, None), f"m{n}", [_message("spam")])
    assert len(count) == 4 and count.resolve("alice", None, "resp_alice").history[0].text == "secret"
    assert count.resolve("mallory", None, "m9").history  # her latest stays...
    with pytest.raises(HistoryError):
        count.resolve("mallory", None, "m0")  # ...her oldest went

    size = ConversationStore(Bounds(item_max_bytes=5000, max_bytes=12_000))
    alice_first(size)
    for n in range(10):
        size.record(size.resolve("mallory", None, None), f"m{n}", [_message("y" * 4000)])
    assert size.total_bytes <= 12_000 and size.resolve("alice", None, "resp_alice").history

    indexed = ConversationStore(Bounds(max_items=1000, max_conversations=2))  # at most 2 * 64 indexed responses
    alice_first(indexed)
    for n in range(300):
        indexed.record(indexed.resolve("mallory", "conv_m", None), f"m{n}", [_message(f"{n}")])
    assert len(indexed._responses) <= 128 and indexed.resolve("alice", None, "resp_alice").history
    assert indexed.resolve("mallory", None, "m299").history
    with pytest.raises(HistoryError):
        indexed.resolve("mallory", None, "m0")


def test_an_evicted_conversation_is_a_404_not_a_fresh_start():
    """A conversation the store evicted, continued by its id, is a 404 `conversation_not_found` (the client learns
    its history is gone), as a `previous_response_id` of it is; an id never seen still starts a conversation (a
    client may name its own), one deleted by its owner may be used again, and what is remembered is bounded."""
    store = ConversationStore(Bounds(max_conversations=2))
    store.record(store.resolve("me", "conv_old", None), "resp_old", [_message("remember me")])
    for n in range(2):
        store.record(store.resolve("me", f"conv_{n}", None), f"r{n}", [_message("later")])
    with pytest.raises(HistoryError) as caught:
        store.resolve("me", "conv_old", None)
    assert (caught.value.status, caught.value.code) == (404, "conversation_not_found")
    assert "evicted" in str(caught.value)
    with pytest.raises(HistoryError):
        store.resolve("me", None, "resp_old")
    assert store.resolve("someone-else", "conv_old", None).history == []  # another caller's id of the same name
    assert store.resolve("me", "conv_new", None).history == []  # never seen: a client's own id
    store.forget("me", "conv_old")  # deleted by its owner: theirs to use again
    assert store.resolve("me", "conv_old", None).history == []
    for n in range(100):
        store.record(store.resolve("me", None, None), f"m{n}", [_message("spam")])
    assert len(store._evicted) <= 2  # remembered ids are bounded like the conversations


def test_the_openai_client_learns_that_its_conversation_was_evicted():
    with running_service(env=clean_env(LCI_CONVERSATIONS_MAX="2")) as (base, _process, _seconds):
        api = client(base)
        created = api.conversations.create().id
        first = api.responses.create(model="local-code-interpreter", input="x = 6 * 7\nprint(x)", conversation=created)
        assert "42" in first.output_text
        for n in range(2):  # two more conversations: the first one is evicted
            api.responses.create(model="local-code-interpreter", input=f"print({n})")
        with pytest.raises(openai.NotFoundError) as caught:
            api.responses.create(model="local-code-interpreter", input="print(x)", conversation=created)
    assert caught.value.code == "conversation_not_found" and "evicted" in str(caught.value), caught.value


def test_devui_conversations_are_bounded_too():
    async def run():
        async with app_client(env={"LCI_CONVERSATIONS_MAX": "3"}) as (c, _s, _sb):
            ids = [(await c.post("/v1/conversations", json={"metadata": {}})).json()["id"] for _ in range(5)]
            return ids, [(await c.get(f"/v1/conversations/{i}")).status_code for i in ids]

    ids, statuses = asyncio.run(run())
    assert statuses[:2] == [404, 404] and statuses[2:] == [200, 200, 200]


def test_an_unstored_response_leaves_no_session_behind():
    """`store: false` with nothing to continue: nobody can continue it, so its session ends with the reply instead
    of idling (and displacing a conversation someone will continue). A stored one keeps its session."""

    async def run():
        async with app_with_sessions() as (c, sessions):
            for stream in (False, True):
                answer = await c.post("/v1/responses", json={"input": "x = 6\nprint(x * 7)", "store": False,
                                                             "stream": stream})
                assert answer.status_code == 200 and "42" in answer.text
            for _ in range(100):
                if sessions.stats()["live"] == 0:
                    break
                await asyncio.sleep(0.01)
            unstored = sessions.stats()
            kept = (await c.post("/v1/responses", json={"input": "y = 1\nprint(y)"})).json()
            stored = sessions.stats()
            again = await c.post("/v1/responses", json={"input": "print(y + 1)",
                                                        "previous_response_id": kept["id"]})
            assert "2" in again.json()["output"][-1]["content"][0]["text"]
            return unstored, stored

    unstored, stored = asyncio.run(run())
    assert (unstored["live"], unstored["created"], unstored["closed"]) == (0, 2, 2), unstored
    assert stored["live"] == 1, stored


def test_openai_client_lists_the_model_the_server_answers_as(service):
    c = client(service)
    assert [model.id for model in c.models.list()] == ["local-code-interpreter"]
    assert c.models.retrieve("local-code-interpreter").owned_by == "local-code-interpreter"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        c.models.retrieve("gpt-4o")


def test_streamed_the_call_is_shown_running_while_the_code_runs(service):
    """Through the real server (uvicorn, the guard, the subprocess sandbox): the call's code and `interpreting`
    reach the client while the cell still runs, not with its result (`http/tool_stream.py`)."""
    import time

    import httpx

    body = {"input": "import time\ntime.sleep(1.5)\nprint('slept')", "stream": True}
    seen: dict[str, float] = {}
    with httpx.stream("POST", f"{service}/v1/responses", json=body, timeout=30) as answer:
        started = time.monotonic()
        for line in answer.iter_lines():
            if line.startswith("event: "):
                seen.setdefault(line[7:], time.monotonic() - started)
    assert seen["response.code_interpreter_call.interpreting"] < 1.0, seen
    assert seen["response.code_interpreter_call.completed"] - seen["response.code_interpreter_call.interpreting"] > 1.2
    assert seen["response.completed"] >= seen["response.code_interpreter_call.completed"]


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "plain"])
def test_a_client_that_leaves_mid_cell_keeps_the_cell_and_its_session_and_no_model_call_follows(service, stream):
    """Through uvicorn: the client closes its connection while the cell runs (`stopping.py`). The cell finishes in
    the conversation's session (its state is there next turn), the response keeps the call, and the model is not
    asked again (the embedded model's answer, which says no model is configured, is not in it)."""
    import json
    import socket
    import time

    import httpx

    from local_code_interpreter.offline import NO_MODEL_NOTE

    conversation = f"conv_left_{stream}"
    body = json.dumps({"input": "import time\ntime.sleep(1)\nx = 6 * 7\nprint('set')", "stream": stream,
                       "conversation": conversation}).encode()
    port = httpx.URL(service).port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        if stream:
            seen = b""
            while b"code_interpreter_call.interpreting" not in seen:
                seen += s.recv(65536)
        else:
            time.sleep(0.5)  # the cell is running
    with httpx.Client(base_url=service, timeout=30) as http:
        for _ in range(100):  # the cell ends about a second after the client left
            items = http.get(f"/v1/conversations/{conversation}/items").json()["data"]
            if any(item["type"] == "code_interpreter_call" for item in items):
                break
            time.sleep(0.05)
        assert sorted((item["type"], item.get("role", "")) for item in items) == \
            [("code_interpreter_call", ""), ("message", "user")], items  # no answer of the model's
        assert "set" in json.dumps(items) and NO_MODEL_NOTE not in json.dumps(items)
        again = http.post("/v1/responses", json={"input": "print(x)", "conversation": conversation})
        assert again.status_code == 200 and "42" in again.text, again.text


def test_a_devui_page_that_leaves_mid_cell_keeps_what_the_cell_did(service):
    """The DevUI page's requests go through DevUI, which would cancel the run when the page goes away, the cell
    with it: the next turn found nothing of it (NameError). `Stop` watches the page instead (`_to_devui`): the cell
    finishes in the conversation's session, and the next turn sees its variable."""
    import json
    import socket
    import time

    import httpx

    with httpx.Client(base_url=service, timeout=30) as http:
        entity = http.get("/v1/entities").json()["entities"][0]["id"]
        conversation = http.post("/v1/conversations", json={"metadata": {"entity_id": entity}}).json()["id"]
        page = {"model": entity, "metadata": {"entity_id": entity}, "conversation": conversation, "stream": True}
        body = json.dumps(dict(page, input="import time\ntime.sleep(1)\nx = 6 * 7\nprint('set')")).encode()
        with socket.create_connection(("127.0.0.1", httpx.URL(service).port), timeout=10) as s:
            s.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            time.sleep(0.5)  # the cell is running; the page goes away
        time.sleep(1)
        again = http.post("/v1/responses", json=dict(page, input="print(x + 1)"))
        printed = "43\\n" in again.text  # the cell's output, in the events' JSON
        assert again.status_code == 200 and printed and "NameError" not in again.text, again.text[-800:]
