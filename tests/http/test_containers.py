"""The OpenAI Containers API's file routes over a conversation's sandbox session (`http/containers.py`), driven by
the official `openai` client against the real service on the subprocess sandbox: the files a response's code made
are listed, read and deleted through the `container_id` its `code_interpreter_call` names; a file the client
uploads is there for the next response's code. Bad requests get the OpenAI error shape; another caller's
container is a 404."""

import json

import openai
import pytest

from asgi_call import call as asgi_call
from local_code_interpreter.http.containers import build_containers_app, file_id, file_name
from local_code_interpreter.identity import Caller
from local_code_interpreter.sandbox.types import FileInfo
from opened import opened
from service import running_service


@pytest.fixture(scope="module")
def client():
    with running_service() as (base, _process, _seconds):
        yield openai.OpenAI(base_url=f"{base}/v1", api_key="unused-on-loopback", max_retries=0)


def _container(response) -> str:
    calls = [item for item in response.output if item.type == "code_interpreter_call"]
    assert calls, response.output
    return calls[0].container_id


def test_the_files_the_code_made_are_listed_read_and_deleted_through_its_container(client):
    made = client.responses.create(model="local-code-interpreter", input=(
        "open('table.csv', 'w').write('a,b\\n1,2\\n')\nimport os; os.makedirs('out', exist_ok=True)\n"
        "open('out/chart.bin', 'wb').write(bytes(range(256)))"))
    container = _container(made)
    listed = client.containers.files.list(container)
    assert sorted((f.path, f.bytes, f.source, f.container_id) for f in listed.data) == [
        ("out/chart.bin", 256, "assistant", container), ("table.csv", 8, "assistant", container)]
    chart = next(f for f in listed.data if f.path == "out/chart.bin")
    assert client.containers.files.content.retrieve(chart.id, container_id=container).read() == bytes(range(256))
    assert client.containers.files.retrieve(chart.id, container_id=container).bytes == 256
    page = client.containers.files.list(container, limit=1)
    assert len(page.data) == 1 and page.has_more
    client.containers.files.delete(chart.id, container_id=container)
    assert [f.path for f in client.containers.files.list(container).data] == ["table.csv"]
    with pytest.raises(openai.NotFoundError, match="no such file in it"):
        client.containers.files.content.retrieve(chart.id, container_id=container)
    # the code sees the same directory: the deleted file is gone for it too
    after = client.responses.create(model="local-code-interpreter", previous_response_id=made.id,
                                    input="import os; print(sorted(os.listdir('out')), open('table.csv').read())")
    assert "[] a,b" in after.output_text


def test_a_file_uploaded_to_a_conversations_container_is_there_for_its_code(client):
    conversation = client.conversations.create()
    uploaded = client.containers.files.create(conversation.id, file=("data.csv", b"x,y\n3,4\n"))
    assert (uploaded.path, uploaded.bytes, uploaded.source) == ("data.csv", 8, "user")
    answer = client.responses.create(model="local-code-interpreter", conversation=conversation.id,
                                     input="print(open('data.csv').read().split()[1])")
    assert "3,4" in answer.output_text and _container(answer) == conversation.id
    big = bytes(range(256)) * 8192  # 2 MiB: past the 1 MiB JSON body limit, within the upload cap
    assert client.containers.files.create(conversation.id, file=("big.bin", big)).bytes == len(big)
    assert client.containers.files.content.retrieve(file_id("big.bin"), container_id=conversation.id).read() == big


def test_bad_requests_get_the_openai_error_shape_and_lose_nothing(client):
    made = client.responses.create(model="local-code-interpreter", input="open('keep.txt', 'w').write('kept')")
    container = _container(made)
    with pytest.raises(openai.NotFoundError):
        client.containers.files.retrieve("cfile_%%%", container_id=container)
    with pytest.raises(openai.NotFoundError):
        client.containers.files.retrieve("file-123", container_id=container)
    with pytest.raises(openai.BadRequestError, match="'limit'"):
        client.containers.files.list(container, limit=0)
    with pytest.raises(openai.BadRequestError, match="multipart"):
        client.containers.files.create(container, file_id="file-123")
    with pytest.raises(openai.BadRequestError, match="'..' component"):
        client.containers.files.create(container, file=("..", b"x"))
    with pytest.raises(openai.NotFoundError):
        client.get(f"/containers/{container}/nothing", cast_to=object)
    assert [f.path for f in client.containers.files.list(container).data] == ["keep.txt"]
    assert client.containers.files.list("conv_nobody_has").data == []  # reading starts no session
    too_long = "c" * 257  # no session can be keyed by it: not found, whatever is asked of it
    for call in (lambda: client.containers.files.list(too_long), lambda: client.containers.retrieve(too_long),
                 lambda: client.containers.delete(too_long),
                 lambda: client.containers.files.create(too_long, file=("a.txt", b"a"))):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.BadRequestError, match="'conversation' must be a conversation id"):
        client.responses.create(model="local-code-interpreter", input="print(1)", conversation=too_long)


def test_a_file_id_or_a_link_that_points_out_of_the_session_reads_nothing(client):
    """A file id is a name: one that climbs out of the session's directory, or is absolute, is refused; a symlink
    the code planted is neither followed nor listed as a file."""
    made = client.responses.create(model="local-code-interpreter", input=(
        "import os\nos.symlink('/etc/passwd', 'passwd')\nos.symlink('..', 'up')\nopen('mine.txt', 'w').write('m')"))
    container = _container(made)
    for name in ("../../../../etc/passwd", "/etc/passwd", "up/etc/passwd"):
        with pytest.raises((openai.BadRequestError, openai.NotFoundError)) as refused:
            client.containers.files.content.retrieve(file_id(name), container_id=container)
        assert "root:" not in str(refused.value.body)
    with pytest.raises((openai.BadRequestError, openai.NotFoundError)):
        client.containers.files.content.retrieve(file_id("passwd"), container_id=container)
    assert [f.path for f in client.containers.files.list(container).data] == ["mine.txt"]
    with pytest.raises((openai.BadRequestError, openai.NotFoundError)):
        client.containers.files.delete(file_id("../" + container), container_id=container)
    assert client.containers.files.content.retrieve(file_id("mine.txt"), container_id=container).read() == b"m"


def test_another_callers_container_is_not_found_and_ids_round_trip():
    """The key is (caller, container): Bob reads, lists and deletes his own container of the same id (and its
    files), never Alice's."""

    class Store:
        def __init__(self):
            self.kept = {("entra:t/alice", "conv_1"): {"secret.txt": b"alice's"}}

        async def files(self, key):
            return [FileInfo(name, len(data), 1.0) for name, data in self.kept.get(key, {}).items()]

        async def read(self, key, name):
            try:
                return self.kept[key][name]
            except KeyError:
                raise FileNotFoundError(name) from None

        async def open_file(self, key, name):
            return opened(await self.read(key, name))

        async def delete(self, key, name):
            await self.read(key, name)
            del self.kept[key][name]

        async def upload(self, key, name, data):
            self.kept.setdefault(key, {})[name] = data
            return FileInfo(name, len(data), 2.0)

        def opened_at(self, key):
            return 1.0 if key in self.kept else None

        async def close(self, key, interrupt=False):
            return self.kept.pop(key, None) is not None

    store = Store()
    app = build_containers_app(store)
    secret = file_id("secret.txt")

    def call(caller: str, method: str, path: str) -> tuple[int, bytes]:
        status, _headers, body = asgi_call(app, path, Caller(caller, "entra"), method)
        return status, body

    assert call("entra:t/alice", "GET", f"/conv_1/files/{secret}/content") == (200, b"alice's")
    assert call("entra:t/bob", "GET", f"/conv_1/files/{secret}/content")[0] == 404
    assert call("entra:t/bob", "GET", f"/conv_1/files/{secret}")[0] == 404
    assert call("entra:t/bob", "DELETE", f"/conv_1/files/{secret}")[0] == 404
    assert call("entra:t/bob", "GET", "/conv_1")[0] == call("entra:t/bob", "DELETE", "/conv_1")[0] == 404
    assert call("entra:t/alice", "GET", "/conv_1")[0] == 200
    status, body = call("entra:t/bob", "GET", "/conv_1/files")
    assert status == 200 and json.loads(body)["data"] == []
    assert store.kept[("entra:t/alice", "conv_1")] == {"secret.txt": b"alice's"}
    for name in ("plain.txt", "dir/ü ñ.csv", "a" * 200):
        assert file_name(file_id(name)) == name


def test_a_client_that_keeps_the_conversation_itself_keeps_its_state_in_the_container_it_names(client):
    """`store: false` and the whole history sent back each time: the server cannot tell the requests belong
    together, unless the code interpreter tool names the container (as a response's `container_id` gave it); its
    variables and files are then there for the next request, and it is not ended with the reply."""
    def ask(history, code, tools):
        history = [*history, {"role": "user", "content": code}]
        answer = client.responses.create(model="local-code-interpreter", input=history, store=False, tools=tools)
        return [*history, *(item.model_dump(exclude_none=True) for item in answer.output)], answer

    named = [{"type": "code_interpreter", "container": "box-of-mine"}]
    history, first = ask([], "x = 41\nopen('kept.txt', 'w').write('k')", named)
    assert _container(first) == "box-of-mine"
    _, second = ask(history, "print(x + 1, open('kept.txt').read())", named)
    assert "42 k" in second.output_text
    assert [f.path for f in client.containers.files.list("box-of-mine").data] == ["kept.txt"]
    assert client.containers.retrieve("box-of-mine").status == "running"
    client.containers.delete("box-of-mine")  # done with it: its process and files end now, not at the idle expiry
    with pytest.raises(openai.NotFoundError):
        client.containers.retrieve("box-of-mine")
    assert client.containers.files.list("box-of-mine").data == []
    _, after = ask(history, "print(x)", named)
    assert "NameError" in after.output_text
    auto = [{"type": "code_interpreter", "container": {"type": "auto"}}]
    history, first = ask([], "y = 1", auto)
    _, second = ask(history, "print(y)", auto)
    assert "NameError" in second.output_text  # each unnamed, unstored request ran in a session of its own
    for bad in ({"type": "pool"}, "a/b", "", "x" * 257, 7):
        with pytest.raises(openai.BadRequestError, match="`container` must be a container id"):
            client.responses.create(model="local-code-interpreter", input="print(1)",
                                    tools=[{"type": "code_interpreter", "container": bad}])
