"""workload_items.py: the fleet's item schema (the workload role's, kept equal by a test), its defaults, every input
rule with the option and the rule named, and batching that never splits an identity."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from ansible_collections.aks.workload_identity.plugins.module_utils.workload_items import (
    ITEM_SPEC,
    batches,
    credentials_needed,
    parse_items,
    validate_fleet,
)

REPO = Path(__file__).resolve().parents[4]
ISSUER = "https://westeurope.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0328c7fa-e740-4752-af1c-182a774aacc7/"
SCOPE = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg1"


def item(name: str = "orders", **overrides) -> dict:
    base = {
        "name": name,
        "namespace": "orders",
        "service_account": f"{name}-api",
        "identity": {"name": f"id-{name}", "resource_group": "rg-apps"},
        "grants": [{"role": "Reader", "scope": SCOPE}],
    }
    base.update(overrides)
    return base


def errors_of(raw: list[dict], state: str = "present", issuer: str | None = ISSUER, tenant: str | None = None):
    items, errors = parse_items(raw, accept_results=state == "absent")
    return errors or validate_fleet(items, state=state, issuer=issuer, tenant_id=tenant)


def _spec_from_role(options: dict) -> dict:
    """The role's argument spec in ITEM_SPEC's shape (descriptions dropped)."""
    spec = {}
    for key, option in options.items():
        entry = {k: v for k, v in option.items() if k not in ("description", "options")}
        if "options" in option:
            entry["options"] = _spec_from_role(option["options"])
        spec[key] = entry
    return spec


def _normalise(spec: dict) -> dict:
    result = {}
    for key, option in spec.items():
        entry = {k: v for k, v in option.items() if k != "options" and not (k == "required" and v is False)}
        if "options" in option:
            entry["options"] = _normalise(option["options"])
        result[key] = entry
    return result


def test_the_item_schema_is_the_workload_roles():
    specs = yaml.safe_load((REPO / "roles" / "workload" / "meta" / "argument_specs.yml").read_text())
    role = specs["argument_specs"]["main"]["options"]["workload_items"]["options"]
    assert _normalise(_spec_from_role(role)) == _normalise(copy.deepcopy(ITEM_SPEC))


def test_defaults_are_the_roles():
    items, errors = parse_items([item(grants=[])])
    assert errors == []
    (parsed,) = items
    assert parsed.identity.create is True and parsed.identity.location is None
    assert parsed.tenant_annotation is True and parsed.create_namespace is False
    assert parsed.proxy_sidecar_port == 8000 and parsed.configmap is None and parsed.grants == ()
    assert parsed.subject == "system:serviceaccount:orders:orders-api"


def test_configmap_name_defaults_to_the_service_account_and_location_to_the_default():
    items, _errors = parse_items([item(configmap={"data": {"A": "b"}})], default_location="westeurope")
    assert items[0].configmap.name == "orders-api-azure-identity" and items[0].configmap.data == {"A": "b"}
    assert items[0].identity.location == "westeurope"


def test_a_valid_fleet_has_no_errors():
    assert errors_of([item("a"), item("b"), item("c", identity={"name": "id-a", "resource_group": "rg-apps"})]) == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"namespace": "Orders"}, "items[0] (orders): namespace: must be an RFC 1123 label"),
        ({"namespace": ""}, "items[0] (orders): namespace: must not be empty"),
        ({"service_account": "orders_api"}, "items[0] (orders): service_account: must be an RFC 1123 subdomain"),
        ({"identity": {"name": "x", "resource_group": "rg"}}, "identity.name: must be 3-128 letters"),
        ({"identity": {"name": "id-ok", "resource_group": "rg."}}, "identity.resource_group: 'rg.' is not a valid"),
        ({"identity": {"name": "id-ok", "resource_group": " "}}, "identity.resource_group: must not be empty"),
        ({"identity": {"name": "id-ok"}}, "missing required arguments: resource_group found in identity"),
        ({"identity": "id-orders"}, "argument 'identity' is of type str"),
        ({"token_expiration": 100}, "token_expiration: must be between 3600 and 86400 seconds"),
        ({"credential_name": "a b"}, "credential_name: must be letters, digits"),
        ({"grants": [{"role": "Reader", "scope": "subscriptions/x"}]}, "grants[0].scope: must be an ARM resource ID"),
        ({"grants": [{"role": "", "scope": SCOPE}]}, "grants[0].role: must not be empty"),
        ({"labels": {"bad key!": "x"}}, "labels: key 'bad key!'"),
        ({"configmap": {"data": {"AZURE_CLIENT_ID": "x"}}}, "configmap.data: key 'AZURE_CLIENT_ID' is set with"),
        ({"patch_workloads": [{"kind": "Job", "name": "x"}]}, "value of kind must be one of"),
        ({"proxy_sidecar_port": 70000}, "proxy_sidecar_port: must be a port number"),
        ({"unknown": 1}, "unknown. Supported parameters include"),
        # As written, before Ansible's conversion: none of these means what it would become.
        ({"name": True}, "items[0]: name: must be a string, got a boolean"),
        ({"namespace": 1.3}, "namespace: must be a string, got a number"),
        ({"identity": {"name": ["id"], "resource_group": "rg"}}, "identity.name: must be a string, got a list"),
        ({"grants": [{"role": {"a": 1}, "scope": SCOPE}]}, "grants[0].role: must be a string, got a dictionary"),
        ({"service_account": "orders-api "}, "service_account: must not start or end with whitespace"),
        ({"credential_name": "fic\n"}, "credential_name: must not start or end with whitespace"),
        ({"token_expiration": True}, "token_expiration: must be a number, got a boolean"),
        ({"service_account": None}, "service_account: is required"),
        ({"identity": {"name": "id-ok", "resource_group": "rg", "location": "west-europe"}}, "identity.location:"),
    ],
)
def test_each_rule_names_the_item_the_key_and_the_rule(overrides, expected):
    found = errors_of([item(**overrides)])
    assert any(expected in error for error in found), found


def test_an_empty_list_and_a_non_dictionary_item_are_refused():
    assert errors_of([]) == ["items: must list at least one workload"]
    assert errors_of(["orders"]) == ["items[0]: must be a dictionary, got str"]


def test_names_and_service_accounts_are_unique():
    found = errors_of([item("a"), item("a", service_account="other"), item("b", service_account="a-api")])
    assert "items[1] (a): name: repeats that of items[0] (a)" in found
    assert any(e.startswith("items[2] (b): service_account: repeats that of items[0] (a)") for e in found)


def test_items_sharing_an_identity_must_agree_and_fit_its_20_credentials():
    shared = {"name": "id-shared", "resource_group": "rg-apps"}
    found = errors_of([item("a", identity=shared), item("b", identity={**shared, "create": False})])
    assert found == ["items[1] (b): identity.create: differs from items[0] (a), which uses the same identity"]
    many = [item(f"w{i}", identity=shared) for i in range(21)]
    assert any("would need 21 federated credentials" in e and "at most 20" in e for e in errors_of(many))


def test_an_identity_binding_serves_any_number_of_service_accounts_with_one_credential():
    shared = {"name": "id-shared", "resource_group": "rg-apps"}
    bound = [item(f"w{i}", identity=shared, federation="identity_binding") for i in range(25)]
    assert errors_of(bound) == []
    assert credentials_needed(parse_items(bound)[0]) == 1
    # 19 of their own plus the binding's one fit; 20 of their own plus the binding's do not
    mixed = bound[:5] + [item(f"own{i}", identity=shared) for i in range(19)]
    assert errors_of(mixed) == []
    over = errors_of(bound[:5] + [item(f"own{i}", identity=shared) for i in range(20)])
    assert (
        len(over) == 1 and "would need 21 federated credentials" in over[0] and "1 for its identity binding" in over[0]
    )


def test_identity_binding_options_are_checked():
    found = errors_of([item("a", federation="identity_binding", identity_binding_name="Bad-Name")])
    assert found == [
        "items[0] (a): identity_binding_name: must be 1-63 lower-case letters or digits, starting with a letter"
    ]
    found = errors_of([item("a", identity_binding_name="ok")])
    assert found == ["items[0] (a): identity_binding_name: only applies with federation: identity_binding"]
    found = errors_of([item("a", federation="identity_binding", credential_name="fic-a")])
    assert found[0].startswith("items[0] (a): credential_name: only applies with federation: federated_credential")
    shared = {"name": "id-shared", "resource_group": "rg-apps"}
    found = errors_of(
        [
            item("a", identity=shared, federation="identity_binding"),
            item("b", identity=shared, federation="identity_binding", identity_binding_name="other"),
        ]
    )
    assert found == [
        "items[1] (b): identity_binding_name: differs from items[0] (a), which binds the same identity (one binding "
        "per identity and cluster)"
    ]
    assert errors_of([item("a", federation="nope")])[0].startswith("items[0] (a): value of federation must be one of")
    underscore = {"name": "id_orders", "resource_group": "rg.apps"}
    found = errors_of([item("a", identity=underscore, federation="identity_binding")])
    assert [e.split(": ")[1] for e in found] == ["identity.name", "identity.resource_group"]
    assert "use a federated credential for this identity" in found[0]


def test_binding_items_default_their_binding_name_from_the_identity():
    parsed, _errors = parse_items(
        [item("a", identity={"name": "Id_Orders-1", "resource_group": "rg"}, federation="identity_binding")]
    )
    assert parsed[0].binding_name == "idorders1"
    assert parsed[0].uses_binding


def test_the_issuer_and_tenant_are_checked():
    assert errors_of([item()], issuer="http://issuer/") == ["issuer_url: must be an https URL"]
    assert "issuer_url: must not start or end with whitespace" in " ".join(errors_of([item()], issuer=ISSUER + " "))
    assert errors_of([item()], tenant="contoso") == [
        "tenant_id: must be a GUID like 00000000-0000-0000-0000-000000000000, got 'contoso'"
    ]


def test_workload_results_entries_are_accepted_for_teardown():
    result = {
        "name": "orders",
        "namespace": "orders",
        "service_account": "orders-api",
        "identity_name": "id-orders",
        "identity_resource_group": "rg-apps",
        "client_id": "9bb715b3-e30d-4143-b4ab-e6d3603d9864",
        "issuer": ISSUER,
        "configmap": "orders-api-azure-identity",
        "patched_workloads": [{"kind": "Deployment", "name": "orders"}],
        "manifest_snippet": "...",
        "grants": [],
    }
    items, errors = parse_items([result], accept_results=True)
    assert errors == []
    (parsed,) = items
    assert (parsed.identity.name, parsed.identity.resource_group) == ("id-orders", "rg-apps")
    assert parsed.configmap.name == "orders-api-azure-identity"
    assert parsed.patch_workloads[0].kind == "Deployment"
    assert (parsed.expected_client_id, parsed.expected_issuer) == (result["client_id"], ISSUER)
    # Not as input of state present: those keys are outputs.
    assert parse_items([result])[1]


def test_a_check_mode_result_without_a_credential_name_is_accepted():
    # In check mode, before the cluster's issuer exists, the workload role publishes credential_name "" (not known
    # yet); the verify role then takes that result as its item. An item's own empty name is still refused.
    result = {
        "name": "demo",
        "namespace": "demo",
        "service_account": "sa",
        "identity_name": "id-demo",
        "identity_resource_group": "rg",
        "credential_name": "",
        "configmap": "",
    }
    items, errors = parse_items([result], accept_results=True)
    assert errors == []
    assert items[0].credential_name is None and items[0].configmap is None
    assert "credential_name: must not be empty" in " ".join(parse_items([item(credential_name="")])[1])


def test_batches_keep_order_and_never_split_an_identity():
    raw = [item(f"w{i}", identity={"name": f"id-{i // 3}", "resource_group": "rg"}) for i in range(9)]
    assert [[r["name"] for r in batch] for batch in batches(raw, 4)] == [
        ["w0", "w1", "w2"],
        ["w3", "w4", "w5"],
        ["w6", "w7", "w8"],
    ]
    assert [len(batch) for batch in batches(raw, 6)] == [6, 3]
    assert [len(batch) for batch in batches(raw, 2)] == [3, 3, 3]  # an identity larger than the size stays whole
    assert batches([], 5) == []
    with pytest.raises(ValueError, match="at least 1"):
        batches(raw, 0)


def test_identity_names_differing_in_case_are_one_identity_in_a_batch():
    raw = [
        item("a", identity={"name": "ID-X", "resource_group": "RG"}),
        item("b"),
        item("c", identity={"name": "id-x", "resource_group": "rg"}),
    ]
    assert [[r["name"] for r in batch] for batch in batches(raw, 2)] == [["a", "c"], ["b"]]
