"""The CI workflow: a fast manifest job apart from the slow suites, actions pinned by commit SHA, a read-only
token."""
import re

import yaml

from conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))


def _load(path):
    workflow = yaml.safe_load(path.read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as true
    return workflow


def test_every_action_is_pinned_by_commit_sha_with_its_tag_in_a_comment():
    assert WORKFLOWS
    for path in WORKFLOWS:
        uses = re.findall(r"uses:\s*(\S+)(.*)", path.read_text())
        assert uses, path
        for action, comment in uses:
            if action.startswith("./"):
                continue
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", action), f"{path.name}: {action} is not pinned"
            assert re.search(r"#\s*v\d", comment), f"{path.name}: {action} has no tag comment"


def test_the_token_can_only_read():
    for path in WORKFLOWS:
        workflow = _load(path)
        assert workflow.get("permissions") == {"contents": "read"}, path.name
        for name, job in workflow["jobs"].items():
            assert job.get("permissions", {"contents": "read"}) == {"contents": "read"}, (path.name, name)
            for step in job["steps"]:
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step.get("with", {}).get("persist-credentials") is False, (path.name, name)


def test_a_fast_manifest_job_runs_apart_from_the_slow_suites():
    jobs = _load(ROOT / ".github" / "workflows" / "ci.yml")["jobs"]
    manifests = "\n".join(step.get("run", "") for step in jobs["manifests"]["steps"])
    for command in ("scripts/tools/k8s.sh", "scripts/tools/gitops.sh", "scripts/validate-manifests",
                    "scripts/lint-manifests", "pytest tests/deploy"):
        assert command in manifests, command
    assert "scripts/tools/controlplane.sh" not in manifests and "./scripts/test" not in manifests
    assert "needs" not in jobs["manifests"] and "needs" not in jobs["test"], "neither waits for the other"
    assert jobs["manifests"]["timeout-minutes"] <= 30
    assert any(step.get("run") == "./scripts/test" for step in jobs["test"]["steps"])
    # What the manifest job validates includes the root build and the deprecated-API check.
    validate = (ROOT / "scripts" / "validate-manifests").read_text()
    assert "flux build kustomization flux-system" in validate and "flux migrate" in validate
