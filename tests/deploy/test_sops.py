"""The SOPS mechanism with the real sops and age binaries (scripts/tools/gitops.sh), through the real recipes:
the cluster key, the Secret handed to kustomize-controller, idempotence, rotation, and a Secret that still decrypts
after kustomize has renamed its namespace and added labels. kubectl `apply` is replaced by a recorder here (no
cluster); tests/e2e/test_flux_loop.py runs the same recipes against a real API server and kustomize-controller."""
import base64
import os
import shutil
import stat
import subprocess

import pytest
import yaml

from conftest import ROOT, TOOLS, run, tool

pytestmark = pytest.mark.slow
TOKEN = "token-from-a-file-" + os.urandom(6).hex()


@pytest.fixture
def clone(tmp_path):
    """The files the recipes touch, copied; kubectl apply records what it is given."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("justfile", ".sops.yaml"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("scripts", "base", "overlays", "components", "infrastructure"):
        shutil.copytree(ROOT / folder, repo / folder)
    (repo / ".venv").symlink_to(ROOT / ".venv")
    shim = tmp_path / "shim"
    shim.mkdir()
    real = shutil.which("kubectl")
    (shim / "kubectl").write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "$1" = apply ]; then cat >> "{tmp_path}/applied.yaml"; echo --- >> "{tmp_path}/applied.yaml"; exit 0; fi\n'
        f'if [ "$1" = get ]; then exit 0; fi\nexec {real} "$@"\n')
    (shim / "kubectl").chmod(0o755)
    return repo, shim, tmp_path


def just(clone, *args, env=None):
    repo, shim, tmp = clone
    for name in ("sops", "age-keygen", "kustomize"):
        tool(name)
    path = os.pathsep.join([str(shim), str(TOOLS / "bin"), str(ROOT / ".venv" / "bin"), os.environ["PATH"]])
    return run(str(ROOT / ".venv" / "bin" / "just"), "--justfile", str(repo / "justfile"), *args, cwd=repo,
               env={"PATH": path, "SOPS_AGE_KEY_FILE": str(tmp / "keys" / "cluster.agekey"), "DRY_RUN": "",
                    **(env or {})})


def decrypt(clone, path) -> dict:
    repo, _, tmp = clone
    out = run(tool("sops"), "--decrypt", str(path), cwd=repo, env={"SOPS_AGE_KEY_FILE": str(tmp / "keys" / "cluster.agekey")})
    return yaml.safe_load(out.stdout)


def test_the_cluster_key_is_made_once_and_handed_to_flux(clone):
    repo, _, tmp = clone
    just(clone, "sops-age-key")
    key = tmp / "keys" / "cluster.agekey"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    recipient = run(tool("age-keygen"), "-y", str(key)).stdout.strip()
    assert yaml.safe_load((repo / ".sops.yaml").read_text())["creation_rules"][0]["age"] == recipient
    applied = [d for d in yaml.safe_load_all((tmp / "applied.yaml").read_text()) if d]
    assert [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in applied] == [
        ("Namespace", None, "flux-system"), ("Secret", "flux-system", "sops-age")]
    assert base64.b64decode(applied[1]["data"]["age.agekey"]) == key.read_bytes()
    before = key.read_bytes(), (repo / ".sops.yaml").read_text()
    just(clone, "sops-age-key")
    assert (key.read_bytes(), (repo / ".sops.yaml").read_text()) == before, "a second run changes nothing"


def test_the_devui_token_is_encrypted_kept_and_rotated(clone):
    repo, _, tmp = clone
    just(clone, "sops-age-key")
    secret_file = repo / "overlays/prod/devui-auth.sops.yaml"
    placeholder = secret_file.read_bytes()
    (tmp / "token").write_text(TOKEN + "\n")
    out = just(clone, "ENV=prod", "k8s-auth-secret", env={"SECRET_VALUE_FILE": str(tmp / "token")})
    assert "does not decrypt with your key" in out.stderr  # the committed placeholder
    written = secret_file.read_bytes()
    assert written != placeholder and TOKEN.encode() not in written
    assert decrypt(clone, secret_file)["stringData"] == {"token": TOKEN}

    out = just(clone, "ENV=prod", "k8s-auth-secret")
    assert "kept overlays/prod/devui-auth.sops.yaml" in out.stdout
    assert secret_file.read_bytes() == written, "idempotent: an existing token is kept"

    just(clone, "ENV=prod", "k8s-auth-secret", env={"ROTATE": "1"})
    rotated = decrypt(clone, secret_file)["stringData"]["token"]
    assert rotated != TOKEN and len(rotated) == 64


def test_a_rendered_secret_still_decrypts_after_kustomize_changed_it(clone):
    """kustomize sets the namespace and adds labels; with mac_only_encrypted the MAC covers only the values, so
    kustomize-controller's decryption of the rendered Secret succeeds."""
    repo, _, tmp = clone
    just(clone, "sops-age-key")
    (tmp / "token").write_text(TOKEN)
    just(clone, "ENV=prod", "k8s-auth-secret", env={"SECRET_VALUE_FILE": str(tmp / "token")})
    rendered = run(tool("kustomize"), "build", str(repo / "overlays/prod")).stdout
    (secret,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Secret"]
    assert secret["metadata"]["labels"]["app.kubernetes.io/part-of"] == "local-code-interpreter"
    (tmp / "rendered.sops.yaml").write_text(yaml.safe_dump(secret))
    assert decrypt(clone, tmp / "rendered.sops.yaml")["stringData"] == {"token": TOKEN}
    # And a value changed after encryption is caught.
    secret["stringData"]["token"] = secret["stringData"]["token"].replace("data:", "data:A", 1)
    (tmp / "tampered.sops.yaml").write_text(yaml.safe_dump(secret))
    result = subprocess.run([tool("sops"), "--decrypt", str(tmp / "tampered.sops.yaml")], capture_output=True,
                            env={**os.environ, "SOPS_AGE_KEY_FILE": str(tmp / "keys" / "cluster.agekey")})
    assert result.returncode != 0


def test_the_receiver_token_is_encrypted_the_same_way(clone):
    repo, _, tmp = clone
    just(clone, "sops-age-key")
    just(clone, "flux-receiver-secret")
    secret = decrypt(clone, repo / "infrastructure/flux-notifications/receiver-token.sops.yaml")
    assert (secret["metadata"]["namespace"], secret["metadata"]["name"]) == ("flux-system", "flux-receiver-token")
    assert len(secret["stringData"]["token"]) == 64
