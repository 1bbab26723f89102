"""The loopback control plane, shared by the end-to-end suites; skipped, with the reason, when not built."""
import pytest

from controlplane import ControlPlane, missing_tools
from skips import tool_missing


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    missing = missing_tools()
    if missing:
        tool_missing("control plane not built; missing: " + ", ".join(missing), "controlplane.sh")
    with ControlPlane(tmp_path_factory.mktemp("controlplane")) as plane:
        yield plane
