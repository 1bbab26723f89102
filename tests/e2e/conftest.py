"""The loopback control plane, shared by the end-to-end suites; skipped, with the reason, when not built."""
import pytest

from controlplane import ControlPlane, missing_tools


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    missing = missing_tools()
    if missing:
        pytest.skip("control plane not built (run: bash scripts/tools/controlplane.sh); missing: "
                    + ", ".join(missing))
    with ControlPlane(tmp_path_factory.mktemp("controlplane")) as plane:
        yield plane
