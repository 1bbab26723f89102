"""Under CI=true, a skip caused by a missing tool fails; a skip caused by the host stays a skip (tests/skips.py,
tests/conftest.py). Runs pytest on a small suite in a subprocess, with and without CI=true."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

TESTS = pathlib.Path(__file__).resolve().parent

SUITE = '''
import pytest
from skips import host_cannot, tool_missing

@pytest.fixture
def control_plane():
    tool_missing("kube-apiserver not built", "controlplane.sh")

def test_needs_a_tool(control_plane):
    pass

def test_needs_a_hypervisor():
    host_cannot("no /dev/kvm or /dev/mshv")

@pytest.mark.skipif(True, reason="podman is missing (run: bash scripts/tools/podman.sh)")
def test_skipif_naming_an_installer():
    pass

@pytest.mark.skipif(True, reason="Hyperlight cannot run here: nested KVM refused the guest")
def test_skipif_about_the_host():
    pass

def test_importorskip_naming_an_installer():
    pytest.importorskip("no_such_module_lci", reason="not installed (run: bash scripts/tools/browser.sh)")

@pytest.mark.xfail(reason="expected", strict=True)
def test_xfail_untouched():
    assert False

def test_passes():
    pass
'''


def run_suite(tmp_path, ci: str | None) -> tuple[dict, str]:
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    (tmp_path / "skips.py").write_text((TESTS / "skips.py").read_text())
    (tmp_path / "test_suite.py").write_text(SUITE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    result = subprocess.run([sys.executable, "-m", "pytest", "-v", "-rA", "-p", "no:cacheprovider", "-o",
                             "addopts=", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    outcomes = {}
    for line in result.stdout.splitlines():
        match = re.search(r"::(test_\w+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL)\b", line)
        if match:
            outcomes[match.group(1)] = match.group(2)
    return outcomes, result.stdout


def test_locally_every_missing_tool_is_a_skip(tmp_path):
    outcomes, out = run_suite(tmp_path, ci=None)
    assert outcomes == {
        "test_needs_a_tool": "SKIPPED", "test_needs_a_hypervisor": "SKIPPED",
        "test_skipif_naming_an_installer": "SKIPPED", "test_skipif_about_the_host": "SKIPPED",
        "test_importorskip_naming_an_installer": "SKIPPED", "test_xfail_untouched": "XFAIL",
        "test_passes": "PASSED",
    }, out
    assert "run: bash scripts/tools/controlplane.sh" in out


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_a_missing_tool_fails_and_a_host_limit_stays_a_skip(tmp_path, ci):
    outcomes, out = run_suite(tmp_path, ci=ci)
    assert outcomes == {
        "test_needs_a_tool": "ERROR",  # the fixture failed during setup
        "test_needs_a_hypervisor": "SKIPPED",
        "test_skipif_naming_an_installer": "ERROR",  # skipif is evaluated during setup
        "test_skipif_about_the_host": "SKIPPED",
        "test_importorskip_naming_an_installer": "FAILED",
        "test_xfail_untouched": "XFAIL",
        "test_passes": "PASSED",
    }, out
    assert "CI=true: a tool the project installs is missing" in out
