"""DevUI files, fast: the download route (auth, scoping, traversal, exact bytes and headers), the attachment
step (DevUI's own input conversion → the conversation's session directory) and the reply's images and links.

The session engine is replaced by `MemoryStore` (a dict per key honouring the `FileStore` contract) and, for the
reply tests, by `ScriptedSandbox` (returns a given ExecutionResult and records the code): these tests are about
the DevUI side; tests/e2e/test_devui_files.py runs the real engine in a real browser."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from urllib.parse import quote

import pytest
from agent_framework_devui._executor import AgentFrameworkExecutor
from agent_framework_devui._mapper import MessageMapper
from agent_framework_devui.models import AgentFrameworkRequest

from asgi_call import call
from local_code_interpreter.agent import build_agent
from local_code_interpreter.artifacts import DISPLAY_PROPERTY, ShowArtifacts, inline_images
from local_code_interpreter.attachments import NOTE_PROPERTY, SaveAttachments
from local_code_interpreter.conversation import in_conversation
from local_code_interpreter.devui_output import install
from local_code_interpreter.http.files import PREFIX, LinkSigner, build_files_app
from local_code_interpreter.http.guard import Guard, token_verifier
from local_code_interpreter.server import Router
from local_code_interpreter.identity import SCOPE_KEY, Caller
from local_code_interpreter.offline import EmbeddedChatClient
from opened import opened
from local_code_interpreter.sandbox.types import ExecutionResult, FileInfo, Image, InvalidFileName, QuotaExceeded

ALICE, BOB = Caller("entra:t/alice", "entra"), Caller("entra:t/bob", "entra")
CSV = b"month,sales\r\njan,3\nfeb,\xff5\n"  # CRLF and a non-UTF-8 byte: the download must not touch them
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


class MemoryStore:
    """The FileStore contract in memory: names checked like the engine does, a read never creates a session."""

    def __init__(self, cap: int = 1 << 20):
        self.sessions: dict[tuple[str, str], dict[str, bytes]] = {}
        self.cap = cap

    async def upload(self, key, name, data):
        if name.startswith("/") or ".." in name.split("/") or "\0" in name:
            raise InvalidFileName(f"invalid file name: {name!r}")
        if len(data) > self.cap:
            raise QuotaExceeded(f"the upload is larger than the {self.cap}-byte cap")
        self.sessions.setdefault(key, {})[name] = bytes(data)
        return FileInfo(name, len(data), 0.0, "text/csv")

    async def read(self, key, name):
        if name.startswith("/") or ".." in name.split("/") or "\0" in name:
            raise InvalidFileName(f"invalid file name: {name!r}")
        try:
            return self.sessions[key][name]
        except KeyError:
            raise FileNotFoundError(name) from None

    async def open_file(self, key, name):
        return opened(await self.read(key, name))


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def files():
    store, clock = MemoryStore(), Clock()
    signer = LinkSigner(b"s" * 32, lifetime=3600, clock=clock)
    store.sessions[(ALICE.id, "conv_a")] = {"result.csv": CSV, "out/page.html": b"<script>alert(1)</script>",
                                            "r\u00e9sum\u00e9 \"1\".txt": b"x"}
    store.sessions[(BOB.id, "conv_a")] = {"result.csv": b"bob's"}  # same conversation id, another owner
    return mounted(build_files_app(store, signer)), signer, clock


async def _elsewhere(scope, receive, send):  # DevUI, the lean /v1/responses and the probes, as far as routing goes
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def mounted(files_app):
    """The download app where the server puts it: a mount of the serving router."""
    return Router(_elsewhere, _elsewhere, _elsewhere, mounts=[(PREFIX, files_app)])


# --- the download route ---------------------------------------------------------------------------------------

def test_a_signed_link_downloads_the_exact_bytes_as_an_attachment(files):
    app, signer, _ = files
    status, headers, body = call(app, signer.url((ALICE.id, "conv_a"), "result.csv"))
    assert status == 200 and body == CSV
    assert headers["content-type"] == "text/csv"  # no charset claimed for bytes that are not UTF-8
    assert headers["content-length"] == str(len(CSV))
    assert headers["content-disposition"] == "attachment; filename=\"result.csv\"; filename*=UTF-8''result.csv"
    assert headers["x-content-type-options"] == "nosniff" and "sandbox" in headers["content-security-policy"]
    assert "no-store" in headers["cache-control"]
    status, headers, body = call(app, signer.url((ALICE.id, "conv_a"), "result.csv"), method="HEAD")
    assert (status, body, headers["content-length"]) == (200, b"", str(len(CSV)))


def test_the_authenticated_caller_reads_only_their_own_conversations(files):
    app, _, _ = files
    assert call(app, "/files/conv_a/result.csv", ALICE)[::2] == (200, CSV)
    assert call(app, "/files/conv_a/result.csv", BOB)[::2] == (200, b"bob's")  # same id, own session
    status, _, body = call(app, "/files/conv_b/result.csv", ALICE)  # a conversation Alice has no session in
    assert status == 404 and b"file_not_found" in body
    assert call(app, "/files/conv_a/result.csv")[0] == 401  # no caller, no link


def test_a_link_grants_one_file_of_one_conversation_of_one_owner_until_it_expires(files):
    app, signer, clock = files
    link = signer.url((ALICE.id, "conv_a"), "result.csv")
    token = link.split("?t=")[1]
    assert call(app, f"/files/conv_a/out/page.html?t={token}")[0] == 403  # another file
    assert call(app, f"/files/conv_b/result.csv?t={token}")[0] == 403  # another conversation
    expires, owner, mac = token.split(".")
    forged = f"{expires}.{base64.urlsafe_b64encode(BOB.id.encode()).rstrip(b'=').decode()}.{mac}"
    assert call(app, f"/files/conv_a/result.csv?t={forged}")[0] == 403  # another owner
    assert call(app, f"/files/conv_a/result.csv?t={int(expires) + 1}.{owner}.{mac}")[0] == 403  # longer life
    assert call(app, "/files/conv_a/result.csv?t=garbage")[0] == 403
    assert call(app, link, BOB)[::2] == (200, CSV)  # the link decides, whoever follows it
    other = LinkSigner(b"t" * 32, clock=clock).url((ALICE.id, "conv_a"), "result.csv")
    assert call(app, other)[0] == 403  # minted with another secret
    clock.now += 3601
    status, _, body = call(app, link)
    assert status == 403 and b"expired" in body


@pytest.mark.parametrize("path", ["/files/conv_a/../conv_a/result.csv", "/files/conv_a/%2e%2e/x",
                                  "/files/conv_a/a/..%2F..%2Fetc/passwd", "/files/conv_a/%2Fetc%2Fpasswd",
                                  "/files/conv_a/result.csv%00.png", "/files/conv_a/a//b", "/files/conv_a/./x",
                                  "/files/conv_a/a%5C..%5Cb"])
def test_traversal_and_odd_names_are_refused_before_the_store(files, path):
    app, _, _ = files
    status, _, body = call(app, path, ALICE)
    assert status in (400, 404), (path, status)
    assert status == 400 or b"file_not_found" in body


def test_active_content_is_never_served_as_a_page_and_names_keep_their_letters(files):
    app, signer, _ = files
    status, headers, body = call(app, signer.url((ALICE.id, "conv_a"), "out/page.html"))
    assert status == 200 and body == b"<script>alert(1)</script>"
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"].startswith('attachment; filename="page.html"')
    name = "r\u00e9sum\u00e9 \"1\".txt"
    status, headers, _ = call(app, signer.url((ALICE.id, "conv_a"), name))
    assert status == 200
    assert headers["content-disposition"] == (
        "attachment; filename=\"r_sum_ _1_.txt\"; filename*=UTF-8''" + quote(name, safe=""))


def test_behind_the_guard_a_link_needs_no_bearer_token_but_everything_else_does(files):
    app, signer, _ = files
    guarded = Guard(app, verifiers=[token_verifier("secret-token")], self_authenticating=(PREFIX + "/",))
    link = signer.url((ALICE.id, "conv_a"), "result.csv")
    assert call(guarded, link)[::2] == (200, CSV)
    assert call(guarded, "/files/conv_a/result.csv")[0] == 401  # no link, no token: the route refuses
    assert call(guarded, link, method="POST")[0] == 401  # only GET/HEAD skip the guard's own check
    assert call(guarded, "/v1/conversations")[0] == 401  # the exemption covers the download prefix only
    assert call(guarded, "/filesystem")[0] == 401
    assert call(guarded, "/v1/conversations", headers=[(b"authorization", b"Bearer secret-token")])[0] == 204


# --- attachments: what DevUI's paperclip sends lands in the session directory -----------------------------------

class ScriptedSandbox:
    """Stands in for the engine: returns `result` for every run and records the code it was given."""

    name = "scripted"

    def __init__(self, result: ExecutionResult | None = None):
        self.result = result or ExecutionResult(stdout="ran\n", stderr="", exit_code=0, sandbox="scripted")
        self.codes: list[str] = []

    async def run(self, code, language=None):
        self.codes.append(code)
        return self.result


def devui_message(*contents):
    """The Message DevUI's own executor makes from a /v1/responses input (the paperclip's JSON).

    Its conversion only, without `__init__`: constructing an executor installs a global OpenTelemetry tracer
    provider, which would take the place of the server's own (telemetry.py) for the rest of the test session."""
    executor = object.__new__(AgentFrameworkExecutor)
    return executor._convert_input_to_chat_message([{"type": "message", "role": "user", "content": list(contents)}])


def paperclip_file(name: str, data: bytes, media_type: str = "text/csv") -> dict:
    encoded = base64.b64encode(data).decode()
    return {"type": "input_file", "file_data": encoded, "file_url": f"data:{media_type};base64,{encoded}",
            "filename": name}


def run_agent(sandbox, store, message, conversation: str | None = "conv_a", caller=ALICE, stream=True,
              links: LinkSigner | None = None, session=None, inline: bool = True):
    """Run the agent as the DevUI path does (`inline`: its page renders images) within `conversation`."""
    agent = build_agent(EmbeddedChatClient(), sandbox,
                        middleware=[SaveAttachments(store), ShowArtifacts(links)])

    async def go():
        async def run():
            if not stream:
                return await agent.run(message, session=session), []
            response = agent.run(message, stream=True, session=session)
            updates = [update async for update in response]
            return await response.get_final_response(), updates
        token = inline_images.set(inline)
        try:
            if conversation is None:
                return await run()
            with in_conversation(conversation, caller):
                return await run()
        finally:
            inline_images.reset(token)
    return asyncio.run(go())


def test_a_paperclip_csv_lands_in_the_conversation_and_the_code_runs_unchanged():
    store, sandbox = MemoryStore(), ScriptedSandbox()
    code = "import pandas as pd\nprint(pd.read_csv('sales.csv'))"
    message = devui_message({"type": "input_text", "text": code}, paperclip_file("sales.csv", CSV))
    session = build_agent(EmbeddedChatClient(), sandbox).create_session()
    response, updates = run_agent(sandbox, store, message, session=session)
    assert store.sessions == {(ALICE.id, "conv_a"): {"sales.csv": CSV}}
    # The person sees where the file went, first thing in the reply (display only: not in the history).
    assert updates[0].text == "Saved in this conversation's working directory: `sales.csv`\n\n"
    assert not any("Saved in" in m.text for m in session.state["in_memory"]["messages"])
    assert sandbox.codes == [code]  # the whole message is the code: the note about the file is not part of it
    assert "ran" in response.text
    notes = [c for c in message.contents if (c.additional_properties or {}).get(NOTE_PROPERTY)]
    assert len(notes) == 1 and "`sales.csv`" in notes[0].text
    assert not any(c.type == "data" for c in message.contents)  # the model gets the note, not a CSV input_file


def test_an_image_is_saved_under_a_generated_name_and_kept_for_the_model():
    store = MemoryStore()
    message = devui_message({"type": "input_text", "text": "print(1)"},
                            {"type": "input_image", "detail": "auto",
                             "image_url": "data:image/png;base64," + base64.b64encode(PNG).decode()})
    run_agent(ScriptedSandbox(), store, message)
    (name, data), = store.sessions[(ALICE.id, "conv_a")].items()
    assert data == PNG and name.startswith("image-") and name.endswith(".png")
    assert [c.type for c in message.contents] == ["text", "data", "text"]


def test_an_image_kept_for_the_model_is_saved_when_it_arrives_not_again_with_the_history():
    """The image stays in its message (the model sees it on later turns too), beside its note. A later turn carries
    that message again in its history: the image is not saved a second time (it would overwrite what the code has
    made of the file since), and the message gets no second note."""
    store = MemoryStore()
    uploads = []
    upload = store.upload

    async def counted(key, name, data):
        uploads.append(name)
        return await upload(key, name, data)

    store.upload = counted
    first = devui_message({"type": "input_text", "text": "print(1)"},
                          {"type": "input_image", "detail": "auto",
                           "image_url": "data:image/png;base64," + base64.b64encode(PNG).decode()})
    saver = SaveAttachments(store)

    async def turns():
        with in_conversation("conv_a", ALICE):
            saved = await saver.save_all([first])
            store.sessions[(ALICE.id, "conv_a")][saved[0]] = b"changed by the code"
            later = devui_message({"type": "input_text", "text": "print(2)"})
            return saved, await saver.save_all([first, later])

    saved, again = asyncio.run(turns())
    assert len(saved) == 1 and again == [] and uploads == saved
    assert store.sessions[(ALICE.id, "conv_a")][saved[0]] == b"changed by the code"
    assert [c.type for c in first.contents] == ["text", "data", "text"]  # still one note


def test_a_path_in_the_file_name_keeps_only_the_base_name():
    store = MemoryStore()
    run_agent(ScriptedSandbox(), store, devui_message({"type": "input_text", "text": "print(1)"},
                                                      paperclip_file("../../etc/passwd", b"root:x")))
    assert store.sessions == {(ALICE.id, "conv_a"): {"passwd": b"root:x"}}


@pytest.mark.parametrize("case", ["no-conversation", "over-the-cap", "bad-base64", "no-sessions"])
def test_an_attachment_that_cannot_be_saved_runs_nothing_and_says_why(case):
    store, sandbox = MemoryStore(cap=4), ScriptedSandbox()
    item = paperclip_file("big.csv", b"12345" if case == "over-the-cap" else b"12")
    if case == "bad-base64":
        item["file_data"] = "!!not base64!!"
    message = devui_message({"type": "input_text", "text": "print(1)"}, item)
    response, _ = run_agent(sandbox, None if case == "no-sessions" else store, message,
                            conversation=None if case == "no-conversation" else "conv_a")
    assert sandbox.codes == [] and store.sessions == {}
    expected = {"no-conversation": "conversation", "over-the-cap": "4-byte cap", "bad-base64": "base64",
                "no-sessions": "keeps no sessions"}[case]
    assert "big.csv" in response.text and expected in response.text and "Nothing was run" in response.text


# --- the reply: images inline, files as links --------------------------------------------------------------

def produced_result():
    return ExecutionResult(stdout="done\n", stderr="", exit_code=0, sandbox="scripted",
                           images=[Image("image/png", PNG)],
                           files=[FileInfo("chart data.csv", len(CSV), 0.0, "text/csv")])


def test_the_streamed_reply_shows_the_image_and_links_the_file_and_devui_maps_them():
    store, clock = MemoryStore(), Clock()
    store.sessions[(ALICE.id, "conv_a")] = {"chart data.csv": CSV}
    links = LinkSigner(b"k" * 32, clock=clock)
    session = build_agent(EmbeddedChatClient(), ScriptedSandbox()).create_session()
    final, updates = run_agent(ScriptedSandbox(produced_result()), store, "print(1)", links=links, session=session)
    kinds = [[c.type for c in u.contents] for u in updates]
    at = next(i for i, k in enumerate(kinds) if "function_result" in k)
    shown = updates[at + 1].contents  # right after the tool result
    assert [c.type for c in shown] == ["data", "text"]
    assert shown[0].media_type == "image/png" and shown[0].uri == "data:image/png;base64," + base64.b64encode(
        PNG).decode()
    assert "`chart data.csv`: [download](" in shown[1].text
    url = shown[1].text.split("](")[1].split(")")[0]
    assert url.startswith("/files/conv_a/chart%20data.csv?t=")
    assert call(mounted(build_files_app(store, links)), url)[::2] == (200, CSV)  # the link in the reply downloads it
    result_text = next(c.result for u in updates for c in u.contents if c.type == "function_result")
    assert "images: 1 captured" in result_text and "chart data.csv" in result_text
    # Display only: the conversation's history (what a model reads next turn) keeps the tool's text, no image.
    history = session.state["in_memory"]["messages"]
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
    assert not any(c.type == "data" or (c.additional_properties or {}).get(DISPLAY_PROPERTY)
                   for m in history for c in m.contents)

    # DevUI's mapper, with our image mapping installed, turns the image into an `output_image` item (the page
    # renders it as <img>) and the link line into text deltas; nothing becomes an error event.
    mapper = MessageMapper()
    install(mapper)
    request = AgentFrameworkRequest(metadata={"entity_id": "agent"}, input="print(1)", stream=True)
    events = [e if isinstance(e, dict) else e.model_dump()
              for u in updates for e in asyncio.run(mapper.convert_event(u, request))]
    assert not [e for e in events if e["type"] == "error"], events
    images = [e["item"] for e in events if e["type"] == "response.output_item.added"
              and e["item"]["type"] == "output_image"]
    assert [(i["image_url"], i["mime_type"]) for i in images] == [(shown[0].uri, "image/png")]
    assert url in "".join(e.get("delta") or "" for e in events)


def test_the_non_streamed_reply_carries_them_after_the_tool_result():
    links = LinkSigner(b"k" * 32)
    response, _ = run_agent(ScriptedSandbox(produced_result()), MemoryStore(), "print(1)", stream=False,
                            links=links)
    roles = [(m.role, [c.type for c in m.contents]) for m in response.messages]
    at = next(i for i, (_, types) in enumerate(roles) if "function_result" in types)
    assert roles[at + 1] == ("assistant", ["data", "text"]), roles


def test_a_consumer_that_renders_no_images_gets_only_the_links():
    _, updates = run_agent(ScriptedSandbox(produced_result()), MemoryStore(), "print(1)", inline=False,
                           links=LinkSigner(b"k" * 32))
    shown = [c for u in updates for c in u.contents if (c.additional_properties or {}).get(DISPLAY_PROPERTY)]
    assert [c.type for c in shown] == ["text"] and "[download](/files/conv_a/" in shown[0].text


def test_one_shot_runs_show_images_but_link_no_files():
    final, updates = run_agent(ScriptedSandbox(produced_result()), MemoryStore(), "print(1)", conversation=None,
                               links=LinkSigner(b"k" * 32))
    shown = [c for u in updates for c in u.contents if (c.additional_properties or {}).get(DISPLAY_PROPERTY)]
    assert [c.type for c in shown] == ["data"]  # no session, so no file outlives the run: nothing to link


def test_runs_without_artifacts_are_unchanged():
    final, updates = run_agent(ScriptedSandbox(), MemoryStore(), "print(1)", links=LinkSigner(b"k" * 32))
    assert not any((c.additional_properties or {}).get(DISPLAY_PROPERTY) for u in updates for c in u.contents)
    assert "ran" in final.text


# --- the whole application, in process: guard → router → DevUI or the lean path → agent → download mount ----

class ScriptedSessions(MemoryStore):
    """MemoryStore that also runs code like SessionManager.run: records (key, code), returns `result`."""

    def __init__(self, result: ExecutionResult):
        super().__init__()
        self.result, self.runs, self.closes = result, [], []

    async def run(self, key, code):
        self.runs.append((key, code))
        self.sessions.setdefault(key, {})["chart data.csv"] = CSV
        return self.result

    async def close(self, key, interrupt=False):
        self.closes.append((key, interrupt))
        return self.sessions.pop(key, None) is not None


def whole_app(token: str = "app-token"):
    from local_code_interpreter.server import build_app
    from local_code_interpreter.settings import Settings

    sessions = ScriptedSessions(produced_result())
    return build_app(Settings(auth_token=token), ScriptedSandbox(), sessions=sessions), sessions


@contextlib.asynccontextmanager
async def app_client(app, token: str = "app-token"):
    """An HTTP client of the whole app in process, holding the bearer token."""
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1",
                                 headers={"authorization": f"Bearer {token}"}) as client:
        yield client


async def page_conversation(client) -> tuple[str, str]:
    """(the agent's entity id, a new conversation) made as DevUI's page makes them."""
    entity = (await client.get("/v1/entities")).json()["entities"][0]["id"]
    created = await client.post("/v1/conversations", json={"metadata": {"agent_id": entity}})
    return entity, created.json()["id"]


def test_devui_path_saves_the_attachment_shows_the_image_and_the_link_downloads_without_the_token():
    import httpx

    app, sessions = whole_app()
    bearer = {"authorization": "Bearer app-token"}

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            entity = (await client.get("/v1/entities", headers=bearer)).json()["entities"][0]["id"]
            conversation = (await client.post("/v1/conversations", json={"metadata": {"agent_id": entity}},
                                              headers=bearer)).json()["id"]
            body = {"input": [{"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "print(1)"}, paperclip_file("sales.csv", CSV)]}],
                "metadata": {"entity_id": entity}, "conversation": conversation, "stream": True}
            async with client.stream("POST", "/v1/responses", json=body, headers=bearer) as response:
                assert response.status_code == 200
                events = [json.loads(line[6:]) async for line in response.aiter_lines()
                          if line.startswith("data: ") and line[6:].strip().startswith("{")]
            text = "".join(e.get("delta") or "" for e in events if e.get("type") == "response.output_text.delta")
            url = text.split("[download](")[1].split(")")[0]
            download = await client.get(url)  # no bearer token: the signed link is the grant
            bare = await client.get(url.split("?")[0])
            saved = dict(sessions.sessions[("token", conversation)])
            # Deleting the conversation in the page ends its session: the link finds nothing any more.
            deleted = await client.delete(f"/v1/conversations/{conversation}", headers=bearer)
            return conversation, events, url, download, bare, saved, deleted, await client.get(url)

    conversation, events, url, download, bare, saved, deleted, after = asyncio.run(go())
    assert saved["sales.csv"] == CSV  # the shared token's caller owns the session
    assert deleted.status_code == 200 and ("token", conversation) not in sessions.sessions
    assert after.status_code == 404
    assert sessions.runs == [(("token", conversation), "print(1)")]
    images = [e["item"] for e in events if e.get("type") == "response.output_item.added"
              and e["item"].get("type") == "output_image"]
    assert [i["image_url"] for i in images] == ["data:image/png;base64," + base64.b64encode(PNG).decode()]
    assert not [e for e in events if e.get("type") == "error"]
    assert (download.status_code, download.content) == (200, CSV)
    assert bare.status_code == 401  # the same path without the link needs the bearer token


def test_a_reloaded_page_shows_the_chart_and_the_file_link_again_after_their_call():
    """The page's chart and file link are display only (the history a model reads holds the tool's text), so the
    conversation listed again (a reload) showed the reply without them. DevUI's store keeps them beside the history
    and lists them right after the tool result they followed."""
    app, _ = whole_app()

    async def go():
        async with app_client(app) as client:
            entity, conversation = await page_conversation(client)
            for code in ("print(1)", "print(2)"):  # as the page sends it
                answer = await client.post("/v1/responses", json={
                    "input": code, "metadata": {"entity_id": entity}, "conversation": conversation, "stream": True})
                assert answer.status_code == 200, answer.text[:500]
            return (await client.get(f"/v1/conversations/{conversation}/items")).json()["data"]

    listed = asyncio.run(go())
    assert [item["type"] for item in listed] == ["message", "function_call", "function_call_output", "message",
                                                 "message"] * 2
    shown = listed[3]
    assert shown["role"] == "assistant" and listed[2]["call_id"] == listed[1]["call_id"]
    images = [part for part in shown["content"] if part["type"] == "input_image"]
    assert [image["image_url"] for image in images] == ["data:image/png;base64," + base64.b64encode(PNG).decode()]
    links = "".join(part.get("text") or "" for part in shown["content"] if part["type"] == "text")
    assert "chart data.csv" in links and "[download](" in links
    assert listed[8]["content"] and listed[4]["role"] == listed[9]["role"] == "assistant"
    assert "done" in listed[4]["content"][0]["text"]  # the reply's own text still follows


@pytest.mark.parametrize("form", ["file_data", "bare-base64", "file_url"])
def test_lean_path_saves_the_attachment_and_links_the_file_but_sends_no_standalone_image(form):
    import httpx

    app, sessions = whole_app()
    url = "data:text/csv;base64," + base64.b64encode(CSV).decode()
    attached = {"type": "input_file", "filename": "sales.csv",
                **{"file_data": {"file_data": url}, "bare-base64": {"file_data": url.split(",")[1]},
                   "file_url": {"file_url": url}}[form]}  # file_data: what the OpenAI SDK documents

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            body = {"model": "local-code-interpreter", "conversation": "conv_lean", "input": [
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "print(1)"}, attached]}]}
            response = await client.post("/v1/responses", json=body, headers={"authorization": "Bearer app-token"})
            return response

    response = asyncio.run(go())
    assert response.status_code == 200, response.text
    assert sessions.sessions[("token", "conv_lean")]["sales.csv"] == CSV
    output = response.json()["output"]
    texts = [c["text"] for item in output if item["type"] == "message" for c in item["content"]]
    assert any("`chart data.csv`: [download](/files/conv_lean/chart%20data.csv?t=" in t for t in texts)
    # The image reaches an API client in the tool's output, where the Responses format has a place for it.
    tool_output = next(item for item in output if item["type"] == "code_interpreter_call")["outputs"]
    assert [part["type"] for part in tool_output] == ["logs", "image"]


def test_lean_path_later_turns_do_not_save_an_earlier_image_again():
    """Over HTTP, as an API client continues a conversation (`previous_response_id`): the image attached on the
    first turn is saved once; the next turns neither say they saved it nor overwrite the file."""
    app, sessions = whole_app()
    uploads = []
    upload = sessions.upload

    async def counted(key, name, data):
        uploads.append((key, name))
        return await upload(key, name, data)

    sessions.upload = counted
    image = {"type": "input_image", "detail": "auto",
             "image_url": "data:image/png;base64," + base64.b64encode(PNG).decode()}

    async def go():
        async with app_client(app) as client:
            async def post(body):
                response = await client.post("/v1/responses", json={"model": "local-code-interpreter", **body})
                assert response.status_code == 200, response.text
                return response.json()

            first = await post({"input": [{"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "print(1)"}, image]}]})
            (key, name), = uploads
            sessions.sessions[key][name] = b"changed by the code"
            second = await post({"previous_response_id": first["id"], "input": "print(2)"})
            third = await post({"previous_response_id": second["id"], "input": "print(3)"})
            return key, name, [first, second, third]

    key, name, replies = asyncio.run(go())

    def texts(reply):
        return " ".join(c.get("text", "") for item in reply["output"] if item["type"] == "message"
                        for c in item["content"])

    assert "Saved in this conversation's working directory" in texts(replies[0])
    assert not any("Saved in" in texts(reply) for reply in replies[1:])
    assert len(uploads) == 1 and sessions.sessions[key][name] == b"changed by the code"
    assert [code for _, code in sessions.runs] == ["print(1)", "print(2)", "print(3)"]


@pytest.fixture
def model_inputs(monkeypatch) -> list[list]:
    """The messages each model call of the embedded default is given (the history a real model would be sent)."""
    from local_code_interpreter import offline

    seen: list[list] = []
    inner = offline._EmbeddedClient._inner_get_response

    def recording(self, *, messages, **kwargs):
        seen.append(list(messages))
        return inner(self, messages=messages, **kwargs)

    monkeypatch.setattr(offline._EmbeddedClient, "_inner_get_response", recording)
    return seen


@pytest.mark.parametrize("stream", [False, True])
def test_lean_path_keeps_display_only_lines_out_of_the_history_the_model_gets_next(stream, model_inputs):
    """What the reply shows the person only (the "Saved in ..." line, the file links with their signed grants) is
    not what the agent said: the next turn's history, sent to the model, has none of it, streamed or not."""
    seen = model_inputs
    app, sessions = whole_app()

    async def go():
        async with app_client(app) as client:
            body = {"model": "local-code-interpreter", "stream": stream, "input": [
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "print(1)"}, paperclip_file("sales.csv", CSV)]}]}
            first = await client.post("/v1/responses", json=body)
            assert first.status_code == 200, first.text
            if stream:
                done = [json.loads(line[6:]) for line in first.text.splitlines() if line.startswith("data: {")]
                first_id = next(e["response"]["id"] for e in done if e.get("type") == "response.completed")
                shown = "".join(e.get("delta") or "" for e in done if e.get("type") == "response.output_text.delta")
            else:
                first_id = first.json()["id"]
                shown = " ".join(c.get("text", "") for item in first.json()["output"] if item["type"] == "message"
                                 for c in item["content"])
            seen.clear()
            second = await client.post("/v1/responses", json={
                "model": "local-code-interpreter", "previous_response_id": first_id, "input": "print(2)"})
            assert second.status_code == 200, second.text
            return shown

    shown = asyncio.run(go())
    assert "Saved in this conversation's working directory" in shown and "[download](" in shown  # shown, once
    history = seen[0]  # the second turn's first model call
    said = " ".join(c.text or "" for m in history for c in m.contents if c.type == "text")
    assert "print(2)" in said
    assert "Saved in this conversation's working directory" not in said
    assert "[download](" not in said and "?t=" not in said
    assert not any((c.additional_properties or {}).get(DISPLAY_PROPERTY) for m in history for c in m.contents)


def test_deleting_a_conversation_ends_only_the_deleting_callers_session():
    from local_code_interpreter.http.conversations import DeletesConversations

    store = ScriptedSessions(produced_result())
    store.sessions = {(ALICE.id, "conv_a"): {"a": b"1"}, (BOB.id, "conv_a"): {"b": b"2"}}
    answer = {"status": 200}

    async def devui(scope, receive, send):
        await send({"type": "http.response.start", "status": answer["status"], "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = DeletesConversations(devui, store)
    assert call(app, "/v1/conversations/conv_a", BOB, method="GET")[0] == 200  # not a delete
    assert call(app, "/v1/conversations/conv_a/items", BOB, method="DELETE")[0] == 200  # not the conversation
    assert set(store.sessions) == {(ALICE.id, "conv_a"), (BOB.id, "conv_a")}
    answer["status"] = 404
    assert call(app, "/v1/conversations/conv_b", BOB, method="DELETE")[0] == 404  # nobody knows conv_b
    assert set(store.sessions) == {(ALICE.id, "conv_a"), (BOB.id, "conv_a")}
    answer["status"] = 200
    assert call(app, "/v1/conversations/conv_a", BOB, method="DELETE")[0] == 200
    assert set(store.sessions) == {(ALICE.id, "conv_a")}
    assert store.closes[-1] == ((BOB.id, "conv_a"), True)  # a running execution is stopped, not waited for


def test_an_api_clients_conversation_is_deleted_whole_though_the_devui_page_never_knew_it(model_inputs):
    """An API client names its conversation (`conversation: "conv_my_work"`, never created through DevUI) and deletes
    it as the OpenAI API does: its session ends, its history is forgotten (the next turn under that id starts
    afresh, an old response id no longer continues it), and the answer is OpenAI's deletion object, not a 404."""
    seen = model_inputs
    app, sessions = whole_app()

    async def go():
        async with app_client(app) as client:
            async def post(body):
                return await client.post("/v1/responses", json={"model": "local-code-interpreter", **body})

            first = await post({"conversation": "conv_my_work", "input": "print(1)"})
            assert first.status_code == 200, first.text
            alive = set(sessions.sessions)
            deleted = await client.delete("/v1/conversations/conv_my_work")
            gone = set(sessions.sessions)
            again = await client.delete("/v1/conversations/conv_my_work")
            old = await post({"previous_response_id": first.json()["id"], "input": "print(2)"})
            seen.clear()
            fresh = await post({"conversation": "conv_my_work", "input": "print(3)"})
            return alive, deleted, gone, again, old, fresh

    alive, deleted, gone, again, old, fresh = asyncio.run(go())
    assert alive == {("token", "conv_my_work")} and gone == set()
    assert deleted.status_code == 200
    assert deleted.json() == {"id": "conv_my_work", "object": "conversation.deleted", "deleted": True}
    assert again.status_code == 404  # nothing of it is left to delete
    assert old.status_code == 404 and old.json()["error"]["code"] == "previous_response_not_found"
    assert fresh.status_code == 200
    said = [c.text for m in seen[0] for c in m.contents if c.type == "text"]
    assert said == ["print(3)"]  # the model gets no history of the deleted conversation


def test_a_deleted_conversations_session_has_ended_before_the_client_hears_it_was_deleted():
    """A client that continues right after the delete's answer must find the old session gone: its answer (the
    status line, not only the body) is sent after the session ended, not before (a race found over HTTP: the
    next request still saw the old variables)."""
    from local_code_interpreter.http.conversations import DeletesConversations

    events: list[str] = []

    class Slow(ScriptedSessions):
        async def close(self, key, interrupt=False):
            await asyncio.sleep(0.05)  # ending a process takes a moment
            events.append("session ended")
            return await super().close(key, interrupt)

    store = Slow(produced_result())
    store.sessions = {(BOB.id, "conv_a"): {"b": b"2"}}

    async def devui(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"deleted": true}'})

    async def go():
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            events.append(message["type"])
            sent.append(message)

        scope = {"type": "http", "method": "DELETE", "path": "/v1/conversations/conv_a", "headers": [],
                 "query_string": b"", SCOPE_KEY: BOB}
        await DeletesConversations(devui, store)(scope, receive, send)
        return sent

    sent = asyncio.run(go())
    assert events == ["session ended", "http.response.start", "http.response.body"]
    assert sent[1]["body"] == b'{"deleted": true}' and store.sessions == {}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
def test_a_full_replica_during_an_upload_aborts_the_run_for_a_429(stream):
    from local_code_interpreter.replies import sandbox_busy
    from local_code_interpreter.sandbox.types import SandboxBusy

    class Full(MemoryStore):
        async def upload(self, key, name, data):
            raise SandboxBusy("all sessions are busy; retry")

    sandbox = ScriptedSandbox()
    with pytest.raises(Exception) as raised:
        run_agent(sandbox, Full(), devui_message({"type": "input_text", "text": "print(1)"},
                                                 paperclip_file("a.csv", b"1")), stream=stream)
    assert sandbox_busy(raised.value) and sandbox.codes == []


def test_devui_path_keeps_display_only_lines_out_of_the_history_the_model_gets_next(model_inputs):
    """The DevUI page's conversations too: its next turn's history (DevUI's session, sent to the model) has the
    earlier turn's code and result but not the "Saved in ..." line or the file links with their signed grants."""
    seen = model_inputs
    app, _ = whole_app()

    async def go():
        async with app_client(app) as client:
            entity, conversation = await page_conversation(client)
            shown = ""
            for content in ([{"type": "input_text", "text": "print(1)"}, paperclip_file("sales.csv", CSV)],
                            [{"type": "input_text", "text": "print(2)"}]):
                seen.clear()
                body = {"input": [{"type": "message", "role": "user", "content": content}],
                        "metadata": {"entity_id": entity}, "conversation": conversation, "stream": True}
                response = await client.post("/v1/responses", json=body)
                assert response.status_code == 200, response.text
                events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
                shown = shown or "".join(e.get("delta") or "" for e in events
                                         if e.get("type") == "response.output_text.delta")
            return shown

    shown = asyncio.run(go())
    assert "Saved in this conversation's working directory" in shown and "[download](" in shown
    said = " ".join(c.text or "" for m in seen[0] for c in m.contents if c.type == "text")
    assert "print(1)" in said and "print(2)" in said  # the earlier turn is in the history
    assert "Saved in this conversation's working directory" not in said
    assert "[download](" not in said and "?t=" not in said
