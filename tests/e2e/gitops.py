"""This repository as Flux sees it, on loopback: a bare clone of its committed HEAD served over git smart HTTP,
and a working clone that the tests commit to and push from (never to the real history).

Flux applies clusters/aks-prod through `clusters/loopback`, a kustomization committed to the temporary clone
only: it lists clusters/aks-prod's Flux objects less what cannot exist here, and patches the GitRepository to
the loopback URL (without the deploy key secret) and the self-managing `flux-system` Kustomization to itself.
"""
import json
import os
import subprocess
from pathlib import Path

import yaml

from controlplane import BIN
from skips import tool_missing

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = "clusters/aks-prod"
LOOPBACK = "clusters/loopback"
PROD = "overlays/prod"
# gotk-components.yaml deploys the controllers as pods and their CRDs: here the harness runs the controllers and
# installs the CRDs of the same modules. Image automation needs an image registry, which loopback has none of.
NOT_HERE_FILES = {"gotk-components.yaml"}
NOT_HERE_API_GROUPS = {"image.toolkit.fluxcd.io"}


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]


def _api_group(document: dict) -> str:
    return document.get("apiVersion", "").rpartition("/")[0]


class GitOpsRepo:
    def __init__(self, workdir: Path, served_root: Path):
        self.served = served_root / "local-code-interpreter.git"
        self.work = workdir / "work"
        subprocess.run(["git", "clone", "--quiet", "--bare", str(ROOT), str(self.served)], check=True)
        subprocess.run(["git", "clone", "--quiet", str(self.served), str(self.work)], check=True)
        self.sync = self._flux_sync(self.work / CLUSTER)
        self.branch = self.sync["GitRepository"]["spec"]["ref"]["branch"]
        self.git("checkout", "--quiet", "-B", self.branch)
        self.git("push", "--quiet", "origin", f"HEAD:refs/heads/{self.branch}")
        self.git("config", "user.name", "e2e")
        self.git("config", "user.email", "e2e@localhost")

    # -- git ---------------------------------------------------------------------------------------------------
    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.work), *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    def commit(self, message: str) -> str:
        """Commit everything changed in the working clone, push it to the served repository, return its SHA."""
        self.git("add", "--all")
        self.git("commit", "--quiet", "--message", message)
        self.git("push", "--quiet", "origin", f"HEAD:refs/heads/{self.branch}")
        return self.git("rev-parse", "HEAD")

    # -- files -------------------------------------------------------------------------------------------------
    def read_yaml(self, path: str) -> dict:
        return yaml.safe_load((self.work / path).read_text())

    def write_yaml(self, path: str, data: dict) -> None:
        (self.work / path).parent.mkdir(parents=True, exist_ok=True)
        (self.work / path).write_text(yaml.safe_dump(data, sort_keys=False))

    # -- the cluster entry point -------------------------------------------------------------------------------
    @staticmethod
    def _flux_sync(cluster: Path) -> dict[str, dict]:
        """The GitRepository and Kustomization named flux-system, by kind, from the cluster's manifests."""
        found = {}
        for path in cluster.rglob("*.y*ml"):
            for doc in _documents(path):
                if doc.get("metadata", {}).get("name") == "flux-system" and doc.get("kind") in (
                        "GitRepository", "Kustomization") and _api_group(doc).endswith("toolkit.fluxcd.io"):
                    found[doc["kind"]] = doc
        return found

    def cluster_manifests(self) -> list[str]:
        """clusters/aks-prod's manifest files, as Flux's generated kustomization would take them, relative to
        clusters/loopback, less the files that cannot exist here."""
        cluster = self.work / CLUSTER
        kept = []
        for path in sorted(cluster.rglob("*.y*ml")):
            if path.name in NOT_HERE_FILES or path.name == "kustomization.yaml":
                continue
            docs = _documents(path)
            if docs and all("kind" in doc and _api_group(doc) not in NOT_HERE_API_GROUPS for doc in docs):
                kept.append(f"../aks-prod/{path.relative_to(cluster)}")
        return kept

    def write_loopback_cluster(self, url: str) -> None:
        """Write clusters/loopback: clusters/aks-prod with the source URL on loopback (JSON patches only)."""
        source_patch = [{"op": "replace", "path": "/spec/url", "value": url}]
        if "secretRef" in self.sync["GitRepository"]["spec"]:
            source_patch.append({"op": "remove", "path": "/spec/secretRef"})
        self.write_yaml(f"{LOOPBACK}/kustomization.yaml", {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": self.cluster_manifests(),
            "patches": [
                {"target": {"kind": "GitRepository", "name": "flux-system"}, "patch": json.dumps(source_patch)},
                {"target": {"kind": "Kustomization", "name": "flux-system"}, "patch": json.dumps(
                    [{"op": "replace", "path": "/spec/path", "value": f"./{LOOPBACK}"}])},
            ],
        })

    def render(self, path: str, load_restrictor: str = "LoadRestrictionsRootOnly") -> list[dict]:
        """`kubectl kustomize` of a directory of the working clone, as objects."""
        output = subprocess.run(["kubectl", "kustomize", f"--load-restrictor={load_restrictor}",
                                 str(self.work / path)], check=True, capture_output=True, text=True).stdout
        return [doc for doc in yaml.safe_load_all(output) if doc]


def just(repo: "GitOpsRepo", plane, key, *args: str, env: dict | None = None) -> str:
    """Run a recipe of the clone's justfile for real, against the control plane, with the tools on PATH."""
    path = os.pathsep.join([str(BIN), str(ROOT / ".venv" / "bin"), os.environ.get("PATH", "")])
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "just"), "--justfile", str(repo.work / "justfile"), *args],
                            cwd=repo.work, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PATH": path, "KUBECONFIG": str(plane.kubeconfig),
                                 "SOPS_AGE_KEY_FILE": str(key), "DRY_RUN": "", **(env or {})})
    assert result.returncode == 0, f"just {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def encrypt_secrets_for_this_cluster(repo: "GitOpsRepo", plane, workdir, devui_token: str) -> None:
    """The README's step 5, with the real recipes, sops and age: the cluster's age key into flux-system/sops-age,
    the Secrets re-encrypted for it in the clone (the committed ones are for a placeholder key)."""
    for name in ("sops", "age-keygen"):
        if not (BIN / name).exists():
            tool_missing(f"{name} not found in {BIN}", "gitops.sh")
    key = workdir / "cluster.agekey"
    just(repo, plane, key, "sops-age-key")
    token = workdir / "devui-token"
    token.write_text(devui_token)
    just(repo, plane, key, "ENV=prod", "k8s-auth-secret", env={"SECRET_VALUE_FILE": str(token)})
    just(repo, plane, key, "flux-receiver-secret")
    assert devui_token not in (repo.work / PROD / "devui-auth.sops.yaml").read_text()
