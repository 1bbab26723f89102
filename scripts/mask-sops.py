#!/usr/bin/env python3
"""Filter a YAML stream as `flux build kustomization` shows it: a SOPS-encrypted Secret loses its `sops` metadata
and each encrypted value becomes the mask "**SOPS**" (base64 under data). Other documents pass unchanged.
kubeconform then checks the Secret as the API server will see it after kustomize-controller decrypts it.
A Secret with ENC[...] values but no sops metadata is an error (it could never be decrypted)."""
import base64
import sys

import yaml

MASK = "**SOPS**"


def mask(doc: dict) -> dict:
    if not isinstance(doc, dict) or doc.get("kind") != "Secret":
        return doc
    encrypted = any(isinstance(v, str) and v.startswith("ENC[")
                    for field in ("data", "stringData") for v in (doc.get(field) or {}).values())
    if "sops" not in doc:
        if encrypted:
            sys.exit(f"mask-sops: Secret {doc['metadata'].get('name')} has ENC[...] values but no sops metadata")
        return doc
    del doc["sops"]
    for key in doc.get("data") or {}:
        doc["data"][key] = base64.b64encode(MASK.encode()).decode()
    for key in doc.get("stringData") or {}:
        doc["stringData"][key] = MASK
    return doc


if __name__ == "__main__":
    docs = [mask(doc) for doc in yaml.safe_load_all(sys.stdin) if doc is not None]
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
