"""scripts/crd-to-jsonschema.py: CRDs become strict kubeconform schemas, laid out as kubeconform looks them up."""

import importlib.util
import json

from conftest import ROOT

spec = importlib.util.spec_from_file_location("crd_to_jsonschema", ROOT / "scripts" / "crd-to-jsonschema.py")
crd_to_jsonschema = importlib.util.module_from_spec(spec)
spec.loader.exec_module(crd_to_jsonschema)

CRD = {
    "kind": "CustomResourceDefinition",
    "spec": {
        "group": "example.toolkit.io",
        "names": {"kind": "Widget"},
        "versions": [
            {"name": "v1beta1", "served": False, "schema": {"openAPIV3Schema": {"type": "object"}}},
            {
                "name": "v1",
                "served": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "port": {"x-kubernetes-int-or-string": True},
                                    "note": {"type": "string", "nullable": True},
                                    "values": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                                               "properties": {"a": {"type": "string"}}},
                                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                },
                            }
                        },
                    }
                },
            },
        ],
    },
}


def test_served_versions_are_written_where_kubeconform_looks(tmp_path):
    written = crd_to_jsonschema.convert(CRD, tmp_path)
    assert written == [tmp_path / "example.toolkit.io" / "widget_v1.json"]


def test_objects_with_properties_reject_unknown_fields_unless_the_crd_preserves_them(tmp_path):
    (path,) = crd_to_jsonschema.convert(CRD, tmp_path)
    schema = json.loads(path.read_text())
    spec_schema = schema["properties"]["spec"]
    assert schema["additionalProperties"] is False and spec_schema["additionalProperties"] is False
    fields = spec_schema["properties"]
    assert "additionalProperties" not in fields["values"]
    assert fields["labels"]["additionalProperties"] == {"type": "string"}
    assert fields["port"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert fields["note"]["type"] == ["string", "null"]


def test_logic_branches_only_constrain_and_stay_open(tmp_path):
    """Cilium's CRD: spec must have one of endpointSelector/nodeSelector (oneOf of `required`, with empty
    properties). Closing those branches would reject every real policy."""
    crd = {"kind": "CustomResourceDefinition", "spec": {"group": "cilium.io", "names": {"kind": "Policy"}, "versions": [
        {"name": "v2", "served": True, "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
            "type": "object",
            "properties": {"endpointSelector": {"type": "object"}, "nodeSelector": {"type": "object"}},
            "oneOf": [{"properties": {"endpointSelector": {}}, "required": ["endpointSelector"]},
                      {"properties": {"nodeSelector": {}}, "required": ["nodeSelector"]}]}}}}}]}}
    (path,) = crd_to_jsonschema.convert(crd, tmp_path)
    spec = json.loads(path.read_text())["properties"]["spec"]
    assert spec["additionalProperties"] is False
    assert all("additionalProperties" not in branch for branch in spec["oneOf"])
