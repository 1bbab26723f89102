"""Shared helpers for the deployment tests: the checkout, the Kubernetes tools, rendered manifests."""

import functools
import os
import pathlib
import shutil
import subprocess

import yaml

from skips import tool_missing

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOLS = pathlib.Path(os.environ.get("LCI_TOOLS", pathlib.Path.home() / ".cache" / "local-code-interpreter"))
TOOL_PATH = os.pathsep.join([str(TOOLS / "bin"), str(ROOT / ".venv" / "bin"), os.environ.get("PATH", "")])
OVERLAYS = ("dev", "prod")
# Which scripts/tools/ script installs each tool the deployment tests run.
INSTALLERS = {"kustomize": "k8s.sh", "kubeconform": "k8s.sh", "flux": "k8s.sh", "sops": "gitops.sh",
              "age": "gitops.sh", "age-keygen": "gitops.sh", "kube-score": "gitops.sh", "checkov": "gitops.sh",
              "just": "../lib.sh (ensure_venv requirements-dev.txt)"}


def tool(name: str) -> str:
    """The tool's path, or skip the test (fail under CI=true) naming what is missing and how to get it."""
    found = shutil.which(name, path=TOOL_PATH)
    if not found:
        tool_missing(f"{name} not found in {TOOLS / 'bin'} or PATH", INSTALLERS.get(name, "k8s.sh"))
    return found


def run(*args: str, cwd: pathlib.Path = ROOT, env: dict | None = None, check: bool = True):
    """Run a command with the tools on PATH; return the CompletedProcess (text)."""
    full_env = {**os.environ, "PATH": TOOL_PATH, "LCI_TOOLS": str(TOOLS), **(env or {})}
    result = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@functools.cache
def _render(target: str) -> tuple:
    return tuple(doc for doc in yaml.safe_load_all(run(tool("kustomize"), "build", target).stdout) if doc)


def render(target: str) -> list[dict]:
    """`kustomize build TARGET` (a folder relative to the checkout) as a list of objects."""
    return list(_render(target))


def find(objects: list[dict], kind: str, name: str = "local-code-interpreter") -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_spec(objects: list[dict]) -> dict:
    return find(objects, "Deployment")["spec"]["template"]["spec"]


def app_container(objects: list[dict]) -> dict:
    (container,) = [c for c in pod_spec(objects)["containers"] if c["name"] == "app"]
    return container
