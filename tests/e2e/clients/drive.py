"""Drive one Azure Container Apps sessions client, unchanged, against a pool management endpoint; print what it
returned as one JSON object on the last line of stdout. Runs inside that client's own virtual environment
(scripts/tools/aca-clients.sh); tests/e2e/test_aca_clients.py starts it and judges the report.

    python drive.py CLIENT ENDPOINT IDENTIFIER WORKDIR [--only-execute]

The bearer token comes from LCI_TEST_TOKEN for the clients that take a token callback (LangChain's
`access_token_provider`, Semantic Kernel's `auth_callback`); the others use their built-in
DefaultAzureCredential, configured by the AZURE_* environment (workload identity).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.metadata
import io
import json
import os
import sys
import traceback

STATE = ["x = 20 + 1\nx", "x * 2"]
IMAGE = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.title('chart')\nplt.show()"
TIMEOUT = "import time\nprint('started', flush=True)\ntime.sleep(60)"
EXCEPTION = "print('before')\n1 / 0"
PNG = b"\x89PNG\r\n\x1a\n"


def blob() -> bytes:
    """Every byte value, then pseudo-random bytes: a byte-exact round trip shows no text mangling."""
    return bytes(range(256)) * 4 + hashlib.sha256(b"seed").digest() * 4096


class _DataFiles:
    """Files through `self.tool`'s upload_file(data=, remote_file_path=), list_files() and
    download_file(remote_file_path=): the LangChain tool and the azure-dynamic-sessions tool take the same."""

    def upload(self, name, data, workdir):
        meta = self.tool.upload_file(data=io.BytesIO(data), remote_file_path=name)
        return {"filename": meta.filename, "size": meta.size_in_bytes}

    def listing(self):
        return [(m.filename, m.size_in_bytes) for m in self.tool.list_files()]

    def download(self, name):
        return self.tool.download_file(remote_file_path=name).read()


def _local_copy(workdir, name, data) -> str:
    """`data` written to `workdir/name`, for the clients that upload a local file."""
    path = os.path.join(workdir, name)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


class LangChain(_DataFiles):
    package = "langchain-azure-dynamic-sessions"

    def __init__(self, endpoint, ident, workdir):
        from langchain_azure_dynamic_sessions import SessionsPythonREPLTool

        token = os.environ["LCI_TEST_TOKEN"]
        self.tool = SessionsPythonREPLTool(pool_management_endpoint=endpoint, session_id=ident,
                                           access_token_provider=lambda: token)

    def execute(self, code):  # the properties dict the tool's execute() returns
        return self.tool.execute(code)

    def tool_output(self, code):  # what an agent sees: the tool's content string
        return self.tool.invoke(code)


class SemanticKernel:
    package = "semantic-kernel"

    def __init__(self, endpoint, ident, workdir):
        from semantic_kernel.core_plugins.sessions_python_tool.sessions_python_plugin import SessionsPythonTool
        from semantic_kernel.core_plugins.sessions_python_tool.sessions_python_settings import SessionsPythonSettings

        token = os.environ["LCI_TEST_TOKEN"]
        self.tool = SessionsPythonTool(pool_management_endpoint=endpoint, auth_callback=lambda: token,
                                       settings=SessionsPythonSettings(identifier=ident),
                                       enable_dangerous_file_uploads=True, allowed_upload_directories=[workdir])
        self.loop = asyncio.new_event_loop()

    def execute(self, code):
        return self.loop.run_until_complete(self.tool.execute_code(code))

    tool_output = execute  # the kernel function's string is what the agent sees

    def upload(self, name, data, workdir):
        path = _local_copy(workdir, name, data)
        meta = self.loop.run_until_complete(self.tool.upload_file(local_file_path=path))
        return {"filename": meta.filename, "size": meta.size_in_bytes}

    def listing(self):
        return [(m.filename, m.size_in_bytes) for m in self.loop.run_until_complete(self.tool.list_files())]

    def download(self, name):
        return self.loop.run_until_complete(self.tool.download_file(remote_file_name=name)).read()


class LlamaIndex:
    package = "llama-index-tools-azure-code-interpreter"

    def __init__(self, endpoint, ident, workdir):
        from llama_index.tools.azure_code_interpreter import AzureCodeInterpreterToolSpec

        self.saved = os.path.join(workdir, "saved")
        os.makedirs(self.saved, exist_ok=True)
        self.tool = AzureCodeInterpreterToolSpec(pool_management_endpoint=endpoint, session_id=ident,
                                                 local_save_path=self.saved)

    def execute(self, code):  # the whole response JSON, image data saved under local_save_path
        return self.tool.code_interpreter(code)

    tool_output = execute

    def upload(self, name, data, workdir):
        path = _local_copy(workdir, name, data)
        metas = self.tool.upload_file(local_file_path=path)
        return {"filename": metas[0].filename, "size": metas[0].size_in_bytes}

    def listing(self):
        return [(m.filename, m.size_in_bytes) for m in self.tool.list_files()]

    def download(self, name):
        return self.tool.download_file_to_local(remote_file_path=name).read()

    def saved_images(self):
        out = []
        for entry in sorted(os.listdir(self.saved)):
            with open(os.path.join(self.saved, entry), "rb") as handle:
                out.append({"name": entry, "png": handle.read(8) == PNG})
        return out


class Visualiz3d(_DataFiles):
    package = "azure-dynamic-sessions-code-interpreter"

    def __init__(self, endpoint, ident, workdir):
        from azure_dynamic_sessions_code_interpreter import CodeInterpreterTool

        self.tool = CodeInterpreterTool(pool_management_endpoint=endpoint, session_id=ident, max_retries=0)

    def execute(self, code):
        return self.tool.execute(code)

    def tool_output(self, code):
        return self.tool._run(code)  # what its execute_tool_call hands the model


CLIENTS = {"langchain": LangChain, "semantic-kernel": SemanticKernel, "llama-index": LlamaIndex,
           "azure-dynamic-sessions": Visualiz3d}


def step(report: dict, name: str, action) -> None:
    try:
        report[name] = action()
    except Exception as error:  # noqa: BLE001 (the report says what the client raised)
        response = getattr(error, "response", None)
        report[name] = {"raised": type(error).__name__, "message": str(error)[:2000],
                        "status_code": getattr(response, "status_code", None),
                        "trace": traceback.format_exc()[-2000:]}


def image_summary(result):
    """The `result` of an execute response, with base64 data replaced by what it decodes to."""
    if isinstance(result, dict) and "base64_data" in result:
        data = base64.b64decode(result["base64_data"]) if result["base64_data"] else b""
        return dict({k: v for k, v in result.items() if k != "base64_data"}, png=data[:8] == PNG, bytes=len(data))
    return result


def main() -> int:
    client_name, endpoint, ident, workdir = sys.argv[1:5]
    only_execute = "--only-execute" in sys.argv
    client = CLIENTS[client_name](endpoint, ident, workdir)
    report = {"client": client_name, "package": client.package,
              "version": importlib.metadata.version(client.package)}
    if only_execute:
        step(report, "execute", lambda: client.execute("6 * 7"))
        print(json.dumps(report))
        return 0
    step(report, "state", lambda: [client.execute(code) for code in STATE])
    data = blob()
    report["sent"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    step(report, "upload", lambda: client.upload("data.bin", data, workdir))
    step(report, "listing", client.listing)
    step(report, "download", lambda: (lambda got: {"size": len(got), "sha256": hashlib.sha256(got).hexdigest()})(
        client.download("data.bin")))
    step(report, "file_in_code", lambda: client.execute("import os\nos.path.getsize('data.bin')"))

    def image():
        raw = client.execute(IMAGE)
        props = raw.get("properties", raw) if isinstance(raw, dict) else raw
        if isinstance(props, dict):
            return dict(props, result=image_summary(props.get("result")))
        return props

    step(report, "image", image)
    if isinstance(client, LlamaIndex):
        report["saved_images"] = client.saved_images()
    step(report, "exception", lambda: client.tool_output(EXCEPTION))
    step(report, "timeout", lambda: client.tool_output(TIMEOUT))
    step(report, "after_timeout", lambda: client.execute("x"))
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
