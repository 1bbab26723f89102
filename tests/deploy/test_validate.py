"""scripts/validate-manifests with the real tools: every target renders and passes kubeconform -strict with no
resource skipped, flux build renders the app, and broken manifests are rejected."""

import copy
import importlib.util
import re
import shutil

import pytest
import yaml

from conftest import ROOT, TOOLS, render, run, tool
from skips import tool_missing

pytestmark = pytest.mark.slow
_spec = importlib.util.spec_from_file_location("mask_sops", ROOT / "scripts" / "mask-sops.py")
mask_sops = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mask_sops)
SUMMARY = re.compile(r"Summary: (\d+) resources? found .* - Valid: (\d+), Invalid: (\d+), Errors: (\d+), Skipped: (\d+)")
MANIFEST_FOLDERS = ("base", "overlays", "components", "infrastructure", "clusters")


def validate(repo=ROOT, check=True):
    for name in ("kustomize", "kubeconform", "flux"):
        tool(name)
    for schemas, installer in (("kubernetes", "k8s.sh"), ("flux", "k8s.sh"), ("flux-notification", "gitops.sh"),
                               ("cilium", "gitops.sh")):
        if not (TOOLS / "schemas" / schemas).is_dir():
            tool_missing(f"{TOOLS / 'schemas' / schemas} is missing", installer)
    return run(str(ROOT / "scripts" / "validate-manifests"), str(repo), check=check)


def sections(output: str) -> dict[str, str]:
    """The output split by its '== title' headers."""
    parts = re.split(r"^== (.*)$", output, flags=re.M)[1:]
    return dict(zip(parts[::2], parts[1::2]))


def copy_manifests(tmp_path):
    for folder in MANIFEST_FOLDERS:
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


def edit(repo, relative: str, old: str, new: str) -> None:
    """Replace `old` (which must be there) by `new` in file `relative` of the copy `repo`."""
    path = repo / relative
    text = path.read_text()
    assert old in text, f"{relative} no longer holds {old!r}: the breakage would test nothing"
    path.write_text(text.replace(old, new))


def test_every_target_is_valid_with_nothing_skipped():
    out = sections(validate().stdout)
    expected = {
        "kustomize build base": 6,
        "kustomize build overlays/dev": 6,
        "kustomize build overlays/prod": 9,
        "kustomize build overlays/prod-cilium": 10,  # the CiliumNetworkPolicy, against Cilium's CRD schema
        "kustomize build infrastructure/flux-notifications": 5,  # Provider, Alert, Receiver: notification CRDs
        "clusters/aks-prod/apps.yaml": 1,
        "clusters/aks-prod/infrastructure.yaml": 1,
        "clusters/aks-prod/notifications.yaml": 1,
        "flux build kustomization local-code-interpreter --path ./overlays/prod": 9,
        "flux build kustomization flux-notifications --path ./infrastructure/flux-notifications": 5,
    }
    for title, count in expected.items():
        found, valid, invalid, errors, skipped = map(int, SUMMARY.search(out[title]).groups())
        assert (found, valid, invalid, errors, skipped) == (count, count, 0, 0, 0), (title, out[title])
    for title in ("kustomize build clusters/aks-prod/flux-system",
                  "kustomize build infrastructure/hyperlight-device-plugin",
                  "flux build kustomization infrastructure --path ./infrastructure/hyperlight-device-plugin",
                  # The root: everything the flux-system Kustomization applies from clusters/aks-prod at once.
                  "flux build kustomization flux-system --path ./clusters/aks-prod"):
        found, valid, invalid, errors, skipped = map(int, SUMMARY.search(out[title]).groups())
        assert found >= 2 and valid == found and (invalid, errors, skipped) == (0, 0, 0), (title, out[title])
    root = SUMMARY.search(out["flux build kustomization flux-system --path ./clusters/aks-prod"]).groups()
    components = SUMMARY.search(out["kustomize build clusters/aks-prod/flux-system"]).groups()
    assert int(root[0]) == int(components[0]) + 3, "flux-system's objects plus the three Flux Kustomizations"
    for folder in ("base", "overlays", "components", "infrastructure", "clusters"):
        assert "no custom resources found that require migration" in out[f"flux migrate --path {folder} --dry-run"]


def test_flux_build_renders_the_prod_overlay_for_the_app_kustomization():
    rendered = run(tool("flux"), "build", "kustomization", "local-code-interpreter", "--path", "./overlays/prod",
                   "--kustomization-file", "./clusters/aks-prod/apps.yaml", "--dry-run").stdout
    flux_objects = [o for o in yaml.safe_load_all(rendered) if o]
    for obj in flux_objects:
        labels = obj["metadata"]["labels"]
        assert labels.pop("kustomize.toolkit.fluxcd.io/name") == "local-code-interpreter"
        assert labels.pop("kustomize.toolkit.fluxcd.io/namespace") == "flux-system"
        if not labels:
            del obj["metadata"]["labels"]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    # flux build masks SOPS Secrets (values "**SOPS**", no sops metadata); scripts/mask-sops.py does the same.
    masked = [mask_sops.mask(copy.deepcopy(o)) for o in render("overlays/prod")]
    assert any(o["kind"] == "Secret" for o in masked)
    assert sorted(flux_objects, key=key) == sorted(masked, key=key)


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """Validation of a copy with three independent breakages, each in a different target."""
    repo = copy_manifests(tmp_path_factory.mktemp("broken"))
    edit(repo, "base/deployment.yaml", "readOnlyRootFilesystem", "readOnlyRootFileSystem")
    (repo / "clusters" / "aks-prod" / "unknown.yaml").write_text(
        "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: x\n")
    edit(repo, "clusters/aks-prod/apps.yaml", "  prune: true", "  prune: yes-please")
    return validate(repo, check=False)


def test_a_broken_copy_fails_validation(broken):
    assert broken.returncode == 1


def test_a_misspelled_field_is_rejected(broken):
    assert "additional properties 'readOnlyRootFileSystem' not allowed" in broken.stdout
    for target in ("base", "overlays/dev", "overlays/prod"):
        assert "Invalid: 1" in sections(broken.stdout)[f"kustomize build {target}"]


def test_a_kind_without_a_schema_is_an_error_not_a_skip(broken):
    assert "could not find schema for Gadget" in broken.stdout
    assert "Errors: 1, Skipped: 0" in sections(broken.stdout)["clusters/aks-prod/unknown.yaml"]


def test_a_flux_kustomization_with_a_bad_field_is_rejected(broken):
    assert "Invalid: 1" in sections(broken.stdout)["clusters/aks-prod/apps.yaml"]


def test_a_misspelled_cilium_field_is_rejected(tmp_path):
    repo = copy_manifests(tmp_path)
    edit(repo, "components/cilium-egress/ciliumnetworkpolicy.yaml", "toEntities", "toEntitys")
    result = validate(repo, check=False)
    assert result.returncode == 1
    assert "additional properties 'toEntitys' not allowed" in sections(result.stdout)["kustomize build overlays/prod-cilium"]


def test_a_deprecated_flux_api_is_reported_by_flux_migrate(tmp_path):
    repo = copy_manifests(tmp_path)
    edit(repo, "infrastructure/flux-notifications/alert.yaml", "notification.toolkit.fluxcd.io/v1beta3",
         "notification.toolkit.fluxcd.io/v1beta2")
    result = validate(repo, check=False)
    assert result.returncode == 1
    out = sections(result.stdout)["flux migrate --path infrastructure --dry-run"]
    assert "no custom resources found that require migration" not in out and "v1beta2" in out, out


def test_a_plain_secret_in_a_target_is_checked_and_one_that_cannot_decrypt_is_an_error(tmp_path):
    repo = copy_manifests(tmp_path)
    secret = repo / "overlays" / "prod" / "devui-auth.sops.yaml"
    doc = yaml.safe_load(secret.read_text())
    del doc["sops"]  # ENC[...] values with no way to decrypt them
    secret.write_text(yaml.safe_dump(doc))
    result = validate(repo, check=False)
    assert result.returncode == 1
    assert "has ENC[...] values but no sops metadata" in result.stderr


def test_a_kustomization_that_does_not_build_fails(tmp_path):
    repo = copy_manifests(tmp_path)
    (repo / "overlays" / "dev" / "settings.yaml").unlink()
    assert validate(repo, check=False).returncode != 0


def test_flux_system_components_are_what_the_pinned_flux_bootstrap_writes():
    generated = run(tool("flux"), "install", "--export", "--components=source-controller,kustomize-controller")
    committed = (ROOT / "clusters" / "aks-prod" / "flux-system" / "gotk-components.yaml").read_text()
    assert committed == generated.stdout
    assert "# Flux Version: v2.9.5" in committed
