"""Copy the strict Kubernetes JSON schemas that the kubernetes-validate package ships into a kubeconform schema folder.

Usage: kubernetes-schemas.py KUBERNETES_VERSION OUT_DIR

The package's files are already named as kubeconform looks them up ({kind}-{group}-{version}.json), but each has a
web $id and reaches the shared definitions through it (/api/_definitions.json#...). Without the $id, and with
sibling-relative references, kubeconform's file loader resolves the definitions next to each schema, offline.
"""

import json
import pathlib
import sys

import kubernetes_validate


def main(version: str, out: pathlib.Path) -> None:
    src = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{version}-local-strict"
    if not src.is_dir():
        sys.exit(f"kubernetes-validate ships no schemas for Kubernetes {version} ({src} is missing)")
    out.mkdir(parents=True, exist_ok=True)
    for schema in src.glob("*.json"):
        data = json.loads(schema.read_text())
        data.pop("$id", None)
        text = json.dumps(data).replace('"/api/_definitions.json#', '"_definitions.json#')
        (out / schema.name).write_text(text)


if __name__ == "__main__":
    main(sys.argv[1], pathlib.Path(sys.argv[2]))
