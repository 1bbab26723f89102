"""Convert CustomResourceDefinitions into strict kubeconform JSON schemas.

Usage: crd-to-jsonschema.py OUT_DIR CRD.yaml...

Writes OUT_DIR/{group}/{kind}_{version}.json for every served version, the layout kubeconform finds with
-schema-location 'OUT_DIR/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json'. Strict means what
kubeconform's own openapi2jsonschema does: objects that list their properties reject any other property, unless
the CRD says x-kubernetes-preserve-unknown-fields. Inside anyOf/oneOf/allOf/not, `properties` only constrain
fields declared elsewhere (a structural schema's value validations, e.g. Cilium's "one of endpointSelector or
nodeSelector"), so those branches stay open.
"""

import json
import pathlib
import sys

import yaml


LOGIC = ("anyOf", "oneOf", "allOf", "not")


def strict(node, in_logic: bool = False):
    if isinstance(node, list):
        return [strict(item, in_logic) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: strict(value, in_logic or key in LOGIC) for key, value in node.items()}
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.pop("nullable", False) and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if "properties" in node and "additionalProperties" not in node and not in_logic:
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
    return node


def convert(crd: dict, out: pathlib.Path) -> list[pathlib.Path]:
    spec = crd["spec"]
    written = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        path = out / spec["group"] / f"{spec['names']['kind'].lower()}_{version['name']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(strict(version["schema"]["openAPIV3Schema"]), indent=1))
        written.append(path)
    return written


def main(out: pathlib.Path, files: list[str]) -> None:
    for name in files:
        with open(name) as f:
            for doc in yaml.safe_load_all(f):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    convert(doc, out)


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]), sys.argv[2:])
