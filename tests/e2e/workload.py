"""The pod's environment, rendered from overlays/dev, and the two Azure stand-ins it is pointed at."""
from __future__ import annotations

import shutil
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import yaml

from fake_aoai import Aoai, AoaiHandler
from fake_entra import Entra, EntraHandler
from service import ROOT, clean_env
from tls import https_server, make_ca

TENANT_ID = "72f988bf-0000-4000-8000-000000000001"  # the webhook's cluster-wide tenant; not in the overlay
# What a projected service-account token looks like (header.payload.signature); Entra only compares it here.
ASSERTION = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bGNpIn0.{}"


def render_overlay(name: str = "dev") -> list[dict]:
    """The overlay's objects, as `kubectl kustomize` (or `kustomize build`) renders them."""
    if shutil.which("kubectl"):
        command = ["kubectl", "kustomize", f"overlays/{name}"]
    elif shutil.which("kustomize"):
        command = ["kustomize", "build", f"overlays/{name}"]
    else:
        raise FileNotFoundError("neither kubectl nor kustomize is on PATH (run: bash scripts/tools/k8s.sh)")
    out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@dataclass
class Pod:
    """What the overlay says: the ConfigMap's data and the service account's client ID."""

    config: dict[str, str]
    client_id: str

    @classmethod
    def from_overlay(cls, objects: list[dict]) -> "Pod":
        config = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
        account = next(o for o in objects if o["kind"] == "ServiceAccount")
        return cls(dict(config), account["metadata"]["annotations"]["azure.workload.identity/client-id"])


class Azure(ExitStack):
    """Entra and Azure OpenAI stand-ins over TLS from a test CA, and a projected token file."""

    def __init__(self, directory: Path, pod: Pod):
        super().__init__()
        self.directory, self.pod = directory, pod
        self.token_file = directory / "azure-identity-token"

    def __enter__(self) -> "Azure":
        super().__enter__()
        self.pki = make_ca(self.directory / "pki")
        self.entra = Entra(TENANT_ID, self.pod.client_id)
        self.aoai = Aoai(self.pod.config["AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME"], self.entra.issued)
        self.entra_server = self.enter_context(https_server(EntraHandler, self.pki))
        self.entra_server.state = self.entra
        self.aoai_server = self.enter_context(https_server(AoaiHandler, self.pki))
        self.aoai_server.state = self.aoai
        self.rotate("v1")
        return self

    def rotate(self, version: str) -> str:
        """Write a new projected token, as the kubelet does before the old one expires; return it."""
        assertion = ASSERTION.format(version)
        self.entra.assertions.add(assertion)
        self.token_file.write_text(assertion)
        return assertion

    def endpoint(self) -> str:
        """The overlay's AZURE_OPENAI_ENDPOINT with only its host replaced by the stand-in's."""
        overlay = urlparse(self.pod.config["AZURE_OPENAI_ENDPOINT"])
        return overlay._replace(netloc=urlparse(self.aoai_server.url).netloc).geturl()

    def env(self, **extra: str) -> dict[str, str]:
        """The pod's environment: the ConfigMap, what the workload identity webhook injects, the test CA."""
        env = clean_env(**self.pod.config)
        env.update(AZURE_CLIENT_ID=self.pod.client_id, AZURE_TENANT_ID=TENANT_ID,
                   AZURE_FEDERATED_TOKEN_FILE=str(self.token_file), AZURE_AUTHORITY_HOST=self.entra_server.url + "/",
                   AZURE_OPENAI_ENDPOINT=self.endpoint(),
                   SSL_CERT_FILE=str(self.pki["ca.pem"]), REQUESTS_CA_BUNDLE=str(self.pki["ca.pem"]),
                   HOME=str(self.directory))
        env.update(extra)
        return env
