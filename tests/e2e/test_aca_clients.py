"""The sessions API proven with the real Azure Container Apps clients, unchanged, each in its own virtual
environment (scripts/tools/aca-clients.sh), against the real service process and its session engine.

The service runs on loopback behind a TLS front (as behind an ingress: Semantic Kernel accepts only https
endpoints). LangChain and Semantic Kernel pass the DevUI bearer token through their token callbacks. LlamaIndex
and azure-dynamic-sessions-code-interpreter have no callback: their DefaultAzureCredential takes the workload
identity path (federated token file → client assertion) to the local TLS stand-in for Entra ID, which signs
an access token for https://dynamicsessions.io with a key it publishes in its JWKS; the service validates that
token against the stand-in's OpenID configuration and keys. A token signed with another key is refused.

Each client: state survives between two calls, a file uploaded then downloaded is byte-identical, a matplotlib
chart comes back as the image result, an exception and a timeout come back as results the client hands its
agent (no HTTP error). Not reached: real Entra ID, the hosted service itself.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from fake_entra import Entra, EntraHandler, Signer
from service import clean_env, running_service
from tls import https_server, make_ca, tls_front

pytestmark = pytest.mark.slow
TENANT = "72f988bf-0000-4000-8000-000000000001"
CLIENT_ID = "0c7a1b2e-3d4f-4a5b-8c6d-7e8f9a0b1c2d"  # the calling workload's managed identity (client ID)
TOKEN = "devui-" + uuid.uuid4().hex
SERVER_TIMEOUT = 3  # LCI_TIMEOUT_SECONDS: the timeout case sleeps 60 s
UPLOAD_CAP_MB = 4  # LCI_MAX_UPLOAD_MB: above the DevUI's 1 MB body limit, small enough to test quickly
TOOLS = Path(os.environ.get("LCI_TOOLS", Path.home() / ".cache" / "local-code-interpreter"))
DRIVER = Path(__file__).parent / "clients" / "drive.py"
CLIENTS = {  # driver name -> (package, how it authenticates)
    "langchain": ("langchain-azure-dynamic-sessions", "token"),
    "semantic-kernel": ("semantic-kernel", "token"),
    "llama-index": ("llama-index-tools-azure-code-interpreter", "entra"),
    "azure-dynamic-sessions": ("azure-dynamic-sessions-code-interpreter", "entra"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """PKI, the Entra stand-in (signing), the service (Entra + token) and its TLS front."""
    directory = tmp_path_factory.mktemp("aca")
    pki = make_ca(directory / "pki")
    entra = Entra(TENANT, CLIENT_ID, scope="https://dynamicsessions.io/.default", signer=Signer())
    token_file = directory / "azure-identity-token"
    assertion = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YWdlbnQifQ.sig"
    entra.assertions.add(assertion)
    token_file.write_text(assertion)
    with https_server(EntraHandler, pki) as entra_server:
        entra_server.state = entra
        env = clean_env(DEVUI_AUTH_TOKEN=TOKEN, LCI_ENTRA_TENANT_ID=TENANT, LCI_ENTRA_AUTHORITY=entra_server.url,
                        LCI_ENTRA_ALLOWED_OBJECT_IDS=entra.signer.object_id, LCI_TIMEOUT_SECONDS=str(SERVER_TIMEOUT),
                        LCI_MAX_UPLOAD_MB=str(UPLOAD_CAP_MB),
                        SSL_CERT_FILE=str(pki["ca.pem"]), HOME=str(directory))
        with running_service(env) as (base, process, _):
            with tls_front(int(base.rsplit(":", 1)[1]), pki) as front:
                probe = httpx.post(f"{base}/sessions/code/execute", params={"api-version": "2024-02-02-preview",
                                   "identifier": "probe"}, headers={"authorization": f"Bearer {TOKEN}"},
                                   json={"properties": {"code": "1"}}, timeout=60)
                if probe.status_code == 503:  # the engine cannot keep sessions on this host/back end
                    pytest.skip(f"the session engine is unavailable: {probe.json()['error']['message']}")
                assert probe.status_code == 200, probe.text
                yield {"base": base, "front": front, "entra": entra, "entra_url": entra_server.url, "pki": pki,
                       "token_file": token_file, "directory": directory, "process": process}
                assert process.poll() is None


def venv_python(package: str) -> Path:
    python = TOOLS / "aca-clients" / package / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{package} is not installed (run: bash scripts/tools/aca-clients.sh)")
    return python


def drive(world, client: str, identifier: str, *extra: str) -> dict:
    package, auth = CLIENTS[client]
    workdir = world["directory"] / f"{client}-{identifier}"
    workdir.mkdir(exist_ok=True)
    ca = str(world["pki"]["ca.pem"])
    env = clean_env(SSL_CERT_FILE=ca, REQUESTS_CA_BUNDLE=ca, HOME=str(workdir), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    if auth == "token":
        env["LCI_TEST_TOKEN"] = TOKEN
    else:  # what the workload identity webhook injects into the calling pod
        env.update(AZURE_CLIENT_ID=CLIENT_ID, AZURE_TENANT_ID=TENANT, AZURE_AUTHORITY_HOST=world["entra_url"] + "/",
                   AZURE_FEDERATED_TOKEN_FILE=str(world["token_file"]))
    command = [str(venv_python(package)), str(DRIVER), client, f"{world['front']}/sessions", identifier,
               str(workdir), *extra]
    done = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def view(client: str, raw) -> dict:
    """The status/result/stdout/stderr a client's answer carries, whatever its form."""
    assert not (isinstance(raw, dict) and "raised" in raw), raw
    if isinstance(raw, str) and raw.startswith("Status:"):  # Semantic Kernel's string
        match = re.match(r"Status:\n(.*?)\nResult:\n(.*?)\nStdout:\n(.*?)\nStderr:\n(.*)$", raw, re.S)
        assert match, raw
        return dict(zip(("status", "result", "stdout", "stderr"), match.groups()))
    if isinstance(raw, str):  # LangChain's / azure-dynamic's tool content: JSON of result, stdout, stderr
        return json.loads(raw)
    return raw.get("properties", raw)


@pytest.fixture(scope="module")
def reports(world):
    return {}


@pytest.mark.parametrize("client", list(CLIENTS))
def test_client_round_trip(world, reports, client):
    ident = f"{client}-{uuid.uuid4().hex[:8]}"
    seen = len(world["entra"].issued)
    report = reports[client] = drive(world, client, ident)
    print(f"\n{report['package']}=={report['version']}")

    first, second = (view(client, r) for r in report["state"])
    assert str(first["result"]) == "21" and str(second["result"]) == "42", report["state"]

    sent = report["sent"]
    assert report["upload"] == {"filename": "data.bin", "size": sent["size"]}, report["upload"]
    assert ["data.bin", sent["size"]] in report["listing"], report["listing"]
    assert report["download"] == sent, report["download"]
    assert str(view(client, report["file_in_code"])["result"]) == str(sent["size"])

    image = view(client, report["image"])
    assert image["status"] == "Success", image
    if client == "semantic-kernel":  # it prints the result dict into its string
        assert "'type': 'image'" in image["result"] and "'format': 'png'" in image["result"], image["result"][:200]
        assert len(image["result"]) > 1000  # the base64 PNG is there
    elif client == "llama-index":  # saves the image, reports where, and drops the base64 data
        assert image["result"]["type"] == "image" and image["result"]["saved_to_local_path"] is True
        assert [entry["png"] for entry in report["saved_images"]] == [True], report["saved_images"]
    else:
        assert image["result"]["type"] == "image" and image["result"]["format"] == "png"
        assert image["result"]["png"] is True and image["result"]["bytes"] > 1000

    failure = view(client, report["exception"])
    assert "before" in failure["stdout"] and "ZeroDivisionError" in failure["stderr"], failure
    timeout = view(client, report["timeout"])
    assert "started" in timeout["stdout"] and re.search(r"time(d)? ?out", timeout["stderr"], re.I), timeout
    if "status" in failure:
        assert failure["status"] == "Failure" and timeout["status"] == "Failure"
    # The timeout interrupted the cell (KeyboardInterrupt), not the session: its variables are still there.
    assert str(view(client, report["after_timeout"])["result"]) == "21", report["after_timeout"]

    if CLIENTS[client][1] == "entra":  # the client's DefaultAzureCredential got its token from the stand-in
        assert len(world["entra"].issued) > seen and not world["entra"].refused, world["entra"].refused


def test_token_signed_by_another_key_is_refused(world):
    from cryptography.hazmat.primitives.asymmetric import rsa

    entra = world["entra"]
    entra.signer.forge = rsa.generate_private_key(65537, 2048)
    try:
        report = drive(world, "azure-dynamic-sessions", "forged-" + uuid.uuid4().hex[:6], "--only-execute")
    finally:
        entra.signer.forge = None
    assert report["execute"].get("status_code") == 401, report["execute"]
    ok = drive(world, "azure-dynamic-sessions", "genuine-" + uuid.uuid4().hex[:6], "--only-execute")
    assert ok["execute"]["result"] == 42, ok


def test_two_callers_with_one_identifier_do_not_share_a_session(world):
    entra, base = world["entra"], world["base"]
    token = entra.signer.token(f"{world['entra_url']}/{TENANT}/v2.0", TENANT, CLIENT_ID,
                               "https://dynamicsessions.io/.default", 600)
    params = {"api-version": "2024-02-02-preview", "identifier": "shared-name"}

    def run(bearer, code):
        response = httpx.post(f"{base}/sessions/code/execute", params=params, timeout=60,
                              headers={"authorization": f"Bearer {bearer}"}, json={"properties": {"code": code}})
        assert response.status_code == 200, response.text
        return response.json()["properties"]

    assert run(TOKEN, "secret = 'devui caller'\nsecret")["result"] == "devui caller"
    other = run(token, "secret")
    assert other["status"] == "Failure" and "NameError" in other["stderr"], other


def test_uploads_pass_the_devui_body_limit_up_to_the_cap_and_no_further(world):
    base = world["base"]
    params = {"api-version": "2024-02-02-preview", "identifier": "big-files"}
    headers = {"authorization": f"Bearer {TOKEN}"}
    data = os.urandom(3 * 1024 * 1024)  # over the DevUI's 1 MB, under the sessions cap
    up = httpx.post(f"{base}/sessions/files/upload", params=params, headers=headers, timeout=60,
                    files={"file": ("big.bin", data)})
    assert up.status_code == 200 and up.json()["value"][0]["properties"]["size"] == len(data), up.text
    assert httpx.get(f"{base}/sessions/files/content/big.bin", params=params, headers=headers, timeout=60).content == data
    over = httpx.post(f"{base}/sessions/files/upload", params=params, headers=headers, timeout=60,
                      files={"file": ("over.bin", b"x" * (UPLOAD_CAP_MB * 1024 * 1024 + 1))})
    assert over.status_code == 413 and over.json()["error"]["code"] == "RequestEntityTooLarge", over.text
    names = [e["properties"]["filename"] for e in httpx.get(f"{base}/sessions/files", params=params,
                                                             headers=headers, timeout=60).json()["value"]]
    assert names == ["big.bin"]  # nothing of the refused upload, the earlier file intact
    assert httpx.post(f"{base}/v1/responses", headers=headers, json={"input": "x" * (2 * 1024 * 1024)},
                      timeout=60).status_code == 413  # the DevUI's own limit still holds there
