"""LCI_ENTRA_*: the sessions API's Microsoft Entra ID settings, validated at start-up with the variable named."""
import pytest

from local_code_interpreter.settings import ConfigError, load

TENANT = "72F988BF-0000-4000-8000-000000000001"
OID = "0c7a1b2e-3d4f-4a5b-8c6d-7e8f9a0b1c2d"


def test_off_without_a_tenant():
    assert load({}, {}).entra is None


def test_full_configuration():
    entra = load({}, {"LCI_ENTRA_TENANT_ID": TENANT, "LCI_ENTRA_ALLOWED_OBJECT_IDS": f" {OID.upper()} ,",
                      "LCI_ENTRA_ALLOWED_ROLES": "Sessions.Execute", "LCI_ENTRA_AUDIENCE": "api://lci,https://x",
                      "LCI_ENTRA_AUTHORITY": "https://login.example/"}).entra
    assert entra.tenant_id == TENANT.lower() and entra.allowed_object_ids == {OID}
    assert entra.allowed_roles == {"Sessions.Execute"} and entra.audiences == ("api://lci", "https://x")
    assert entra.authority == "https://login.example"
    assert entra.issuers[0] == f"https://login.example/{TENANT.lower()}/v2.0"
    assert f"https://sts.windows.net/{TENANT.lower()}/" in entra.issuers


def test_defaults():
    entra = load({}, {"LCI_ENTRA_TENANT_ID": TENANT, "LCI_ENTRA_ALLOWED_OBJECT_IDS": "*"}).entra
    assert entra.audiences == ("https://dynamicsessions.io",) and entra.authority == "https://login.microsoftonline.com"
    assert entra.allows_everyone()


@pytest.mark.parametrize("env, named", [
    ({"LCI_ENTRA_TENANT_ID": "contoso.onmicrosoft.com", "LCI_ENTRA_ALLOWED_OBJECT_IDS": "*"}, "LCI_ENTRA_TENANT_ID"),
    ({"LCI_ENTRA_TENANT_ID": TENANT}, "LCI_ENTRA_ALLOWED_OBJECT_IDS"),
    ({"LCI_ENTRA_TENANT_ID": TENANT, "LCI_ENTRA_ALLOWED_OBJECT_IDS": "alice"}, "LCI_ENTRA_ALLOWED_OBJECT_IDS"),
    ({"LCI_ENTRA_TENANT_ID": TENANT, "LCI_ENTRA_ALLOWED_OBJECT_IDS": "*", "LCI_ENTRA_AUTHORITY": "http://login"},
     "LCI_ENTRA_AUTHORITY"),
    ({"LCI_ENTRA_ALLOWED_ROLES": "x"}, "LCI_ENTRA_ALLOWED_ROLES"),
])
def test_mistakes_are_named(env, named):
    with pytest.raises(ConfigError, match=named):
        load({}, env)
