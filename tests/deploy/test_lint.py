"""scripts/lint-manifests: kube-score and checkov over the rendered overlays; every ignored check has a reason, and
a finding that is not ignored fails the lint."""
import re
import shutil

import pytest
import yaml

from conftest import ROOT, run, tool

MANIFEST_FOLDERS = ("base", "overlays", "components", "infrastructure", "clusters", "lint")


def test_every_kube_score_ignore_names_a_target_and_gives_a_reason():
    lines = [l for l in (ROOT / "lint/kube-score-ignores.txt").read_text().splitlines() if l and l[0] != "#"]
    assert lines
    for line in lines:
        match = re.fullmatch(r"(\S+) ([a-z0-9-]+) +# (.{20,})", line)
        assert match, f"not `TARGET TEST-ID  # reason`: {line}"
        assert match.group(1) == "*" or (ROOT / match.group(1)).is_dir(), line


def test_every_checkov_skip_gives_a_reason():
    text = (ROOT / "lint/checkov.yaml").read_text()
    skipped = yaml.safe_load(text)["skip-check"]
    for check in skipped:
        assert re.search(rf"- {check} +# .{{20,}}", text), f"{check} is skipped without a reason"


def lint(repo=ROOT, check=True):
    for name in ("kustomize", "kube-score", "checkov"):
        tool(name)
    return run(str(ROOT / "scripts" / "lint-manifests"), str(repo), check=check)


@pytest.mark.slow
def test_the_rendered_overlays_pass_kube_score_and_checkov():
    out = lint().stdout
    for target in ("overlays/dev", "overlays/prod", "overlays/prod-cilium", "infrastructure/flux-notifications"):
        assert f"== kube-score {target}\nno findings" in out, out
    assert "Failed checks: 0" in out or "Failed checks" not in out, out


@pytest.mark.slow
def test_a_finding_that_is_not_ignored_fails_the_lint(tmp_path):
    for folder in MANIFEST_FOLDERS:
        shutil.copytree(ROOT / folder, tmp_path / folder)
    deployment = tmp_path / "base" / "deployment.yaml"
    deployment.write_text(deployment.read_text().replace("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"))
    result = lint(tmp_path, check=False)
    assert result.returncode == 1
    assert "container-security-context-readonlyrootfilesystem" in result.stdout or \
        "read-only" in result.stdout.lower(), result.stdout
