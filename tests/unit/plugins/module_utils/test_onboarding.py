"""The onboarding domain: the policy's rules, the request's form, what the policy refuses, and the plan of one
reconcile over ServiceAccounts and the registry (module_utils/onboarding.py, pure)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.aks.workload_identity.plugins.module_utils import onboarding as ob

SUB = "00000000-0000-4000-8000-000000000001"
VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-app/providers/Microsoft.KeyVault/vaults/kv-orders"
GROUP = f"/subscriptions/{SUB}/resourceGroups/rg-app"
POLICY = {
    "identity_resource_group": "rg-ids",
    "scopes": {"orders-vault": VAULT, "app-group": GROUP},
    "namespaces": {
        "orders": {
            "identities": ["id-orders", "id-orders-*"],
            "grants": ["Key Vault Secrets User@orders-vault", "Reader@app-group"],
        },
        "payments": {"identities": ["id-payments"], "federations": ["federated_credential", "identity_binding"]},
    },
}


def policy(**changes) -> ob.Policy:
    parsed, errors = ob.parse_policy({**POLICY, **changes})
    assert errors == [] and parsed is not None
    return parsed


def account(namespace: str, name: str, annotations: dict[str, str] | None = None, uid: str = "u-1") -> dict:
    return {"metadata": {"namespace": namespace, "name": name, "uid": uid, "annotations": annotations or {}}}


def asking(namespace: str, name: str, identity: str, grants: str = "", **extra: str) -> dict:
    notes = {ob.REQUEST_IDENTITY: identity, **({ob.REQUEST_GRANTS: grants} if grants else {}), **extra}
    return account(namespace, name, notes)


# --- policy -----------------------------------------------------------------------------------------------------
def test_policy_parsed_with_defaults():
    parsed = policy()
    assert parsed.create_identities is True and parsed.delete_identities is False
    assert parsed.namespaces["orders"].federations == ("federated_credential",)
    assert ("key vault secrets user", "orders-vault") in parsed.namespaces["orders"].grants


def test_policy_names_every_broken_rule():
    _parsed, errors = ob.parse_policy(
        {
            "identity_resource_group": "rg/x",
            "scopes": {"Bad_Alias": "nowhere"},
            "namespaces": {
                "Not_A_Namespace": {"identities": ["ok"]},
                "orders": {"identities": [], "grants": ["Reader", "Reader@missing"], "federations": ["magic"]},
            },
        }
    )
    text = "\n".join(errors)
    for expected in (
        "policy.identity_resource_group",
        "policy.scopes.Bad_Alias: an alias is",
        "policy.scopes.Bad_Alias",  # and the scope
        "policy.namespaces.Not_A_Namespace",
        "policy.namespaces.orders.identities: must allow at least one identity",
        "policy.namespaces.orders.grants[0]: must read 'Role name@scope alias'",
        "policy.namespaces.orders.grants[1]: scope alias 'missing' is not defined",
        "policy.namespaces.orders.federations[0]: must be one of",
    ):
        assert expected in text, text


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("not a dict", "policy: must be a dictionary, got str"),
        ({"namespaces": {}}, "identity_resource_group"),
        ({"identity_resource_group": "rg", "namespaces": {}}, "policy.namespaces: must allow at least one namespace"),
        ({"identity_resource_group": "rg", "namespaces": {"a": {"identities": ["bad name!"]}}}, "identities[0]"),
    ],
)
def test_policy_shapes_refused(raw, expected):
    parsed, errors = ob.parse_policy(raw)
    assert parsed is None and any(expected in e for e in errors), errors


# --- requests ---------------------------------------------------------------------------------------------------
def test_no_request_annotation_is_no_request():
    assert ob.read_request(account("orders", "api", {ob.STATUS_ANNOTATION: "onboarded", "other": "x"})) is None


def test_request_parsed():
    request = ob.read_request(
        asking("orders", "api", "id-orders", "Key Vault Secrets User@orders-vault;\n Reader@app-group,")
    )
    assert request is not None and request.problems == []
    assert request.grants == [("Key Vault Secrets User", "orders-vault"), ("Reader", "app-group")]
    assert request.federation == "federated_credential" and request.key == "orders.api"


def test_request_form_problems():
    request = ob.read_request(
        account(
            "orders",
            "api",
            {ob.REQUEST_GRANTS: "Reader", ob.REQUEST_FEDERATION: "magic", ob.REQUEST_PREFIX + "owner": "me"},
        )
    )
    text = "; ".join(request.problems)
    assert "request-identity: is required" in text
    assert "each grant reads 'Role name@scope alias', got 'Reader'" in text
    assert "request-federation: must be one of" in text
    assert "unknown request annotation aks.workload-identity/request-owner" in text


def test_digest_follows_the_request_only():
    first = ob.read_request(asking("orders", "api", "id-orders"))
    status = account("orders", "api", {ob.REQUEST_IDENTITY: "id-orders", ob.STATUS_ANNOTATION: "refused"})
    assert first.digest == ob.read_request(status).digest
    assert first.digest != ob.read_request(asking("orders", "api", "id-orders", "Reader@app-group")).digest


@pytest.mark.parametrize(
    "sa, reasons",
    [
        (asking("orders", "api", "id-orders-eu", "reader@app-group"), []),  # glob; role matched case-insensitively
        (asking("billing", "api", "id-orders"), ["namespace billing is not open to self-service onboarding"]),
        (asking("orders", "api", "id-payments"), ["identity id-payments is not allowed in namespace orders"]),
        (asking("orders", "api", "id-orders", "Owner@orders-vault"), ["grant Owner@orders-vault is not allowed"]),
        (asking("orders", "api", "id-orders", "Reader@elsewhere"), ["no scope is called 'elsewhere'"]),
        (
            asking("orders", "api", "id-orders", **{ob.REQUEST_FEDERATION: "identity_binding"}),
            ["federation identity_binding is not allowed in namespace orders"],
        ),
        (asking("payments", "api", "id-payments", **{ob.REQUEST_FEDERATION: "identity_binding"}), []),
    ],
)
def test_refusals(sa, reasons):
    found = ob.refusals(ob.read_request(sa), policy())
    assert len(found) == len(reasons) and all(r in f for r, f in zip(reasons, found, strict=True)), found


def test_every_refusal_is_named():
    request = ob.read_request(asking("orders", "api", "id-x", "Owner@orders-vault, Contributor@app-group"))
    assert len(ob.refusals(request, policy())) == 3


def test_item_for_maps_aliases_and_dedupes():
    request = ob.read_request(asking("orders", "api", "id-orders", "Reader@app-group, reader@app-group"))
    item = ob.item_for(request, policy(identity_location="westeurope", create_identities=False))
    assert item == {
        "name": "orders.api",
        "namespace": "orders",
        "service_account": "api",
        "identity": {"name": "id-orders", "resource_group": "rg-ids", "create": False, "location": "westeurope"},
        "federation": "federated_credential",
        "grants": [{"role": "Reader", "scope": GROUP}],
    }


# --- registry and plan --------------------------------------------------------------------------------------------
def recorded(sa: dict, status: str = ob.ONBOARDED) -> dict:
    request = ob.read_request(sa)
    return ob.record_for(ob.item_for(request, policy()), request, status)


def test_registry_entries_that_are_not_records_are_reported():
    good = recorded(asking("orders", "api", "id-orders"))
    records, problems = ob.parse_registry({"orders.api": json.dumps(good), "x": "{not json", "y": "[1]"})
    assert list(records) == ["orders.api"] and len(problems) == 2


def test_plan_new_unchanged_refused():
    new = asking("orders", "new", "id-orders")
    same = asking("orders", "same", "id-orders", "Reader@app-group")
    bad = asking("orders", "bad", "id-payments")
    decisions = {d.key: d for d in ob.plan([new, same, bad], {"orders.same": recorded(same)}, policy())}
    assert decisions["orders.new"].action == ob.APPLY and decisions["orders.new"].prove
    assert decisions["orders.same"].action == ob.APPLY and not decisions["orders.same"].prove
    assert decisions["orders.same"].replaced is None and decisions["orders.same"].revoked == []
    assert decisions["orders.bad"].action == ob.REFUSE and decisions["orders.bad"].item is None


def test_plan_failed_record_is_proven_again():
    same = asking("orders", "same", "id-orders")
    (decision,) = ob.plan([same], {"orders.same": recorded(same, ob.FAILED)}, policy())
    assert decision.prove


def test_plan_grants_dropped_are_revoked():
    before = asking("orders", "api", "id-orders", "Reader@app-group, Key Vault Secrets User@orders-vault")
    after = asking("orders", "api", "id-orders", "reader@app-group")
    (decision,) = ob.plan([after], {"orders.api": recorded(before)}, policy())
    assert decision.replaced is None and decision.prove
    assert decision.revoked == [{"role": "Key Vault Secrets User", "scope": VAULT}]


def test_plan_other_identity_replaces_the_chain():
    before = asking("orders", "api", "id-orders")
    after = asking("orders", "api", "id-orders-eu")
    (decision,) = ob.plan([after], {"orders.api": recorded(before)}, policy())
    assert decision.replaced["identity"] == {"name": "id-orders", "resource_group": "rg-ids", "create": False}


def test_plan_withdrawn_and_deleted_are_offboarded():
    withdrawn = asking("orders", "gone", "id-orders")
    records = {"orders.gone": recorded(withdrawn), "orders.deleted": recorded(asking("orders", "deleted", "id-orders"))}
    decisions = {d.key: d for d in ob.plan([account("orders", "gone")], records, policy())}
    assert decisions["orders.gone"].action == ob.OFFBOARD and decisions["orders.gone"].exists
    assert decisions["orders.gone"].reasons == ["the request was withdrawn"]
    assert decisions["orders.deleted"].action == ob.OFFBOARD and not decisions["orders.deleted"].exists
    assert decisions["orders.deleted"].item["service_account"] == "deleted"


def test_refused_change_keeps_the_applied_chain():
    before = asking("orders", "api", "id-orders")
    after = asking("orders", "api", "id-payments")
    decisions = ob.plan([after], {"orders.api": recorded(before)}, policy())
    assert [d.action for d in decisions] == [ob.REFUSE]
    assert ob.staying_items(decisions)[0]["identity"]["name"] == "id-orders"
    assert "The onboarding applied earlier (identity id-orders) stays" in ob.message(decisions[0], ob.REFUSED)


def test_registry_key_splits_back():
    assert ob.registry_key("orders", "api.v2") == "orders.api.v2"
    assert ob.item_of_record("orders.api.v2", recorded(asking("orders", "api.v2", "id-orders")))["service_account"] == (
        "api.v2"
    )


def test_event_name_is_stable_and_message_bounded():
    assert ob.event_name("api", "u", "refused", "m") == ob.event_name("api", "u", "refused", "m")
    assert ob.event_name("api", "u", "refused", "m") != ob.event_name("api", "u", "refused", "n")
    assert len(ob.event_name("a" * 253, "u", "refused", "m")) <= 253
    decision = ob.plan([asking("orders", "api", "id-x")], {}, policy())[0]
    decision.reasons = ["x" * 2000]
    assert len(ob.message(decision, ob.REFUSED)) == ob.MAX_MESSAGE


def test_event_body_names_the_service_account():
    sa = account("orders", "api", uid="u-9")
    body = ob.event_body("orders", sa, ob.REFUSED, "no", "2026-12-06T00:00:00Z", "api.onboarding.x")
    assert body["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "namespace": "orders",
        "name": "api",
        "uid": "u-9",
        "resourceVersion": None,
    }
    assert (body["type"], body["reason"]) == ("Warning", "OnboardingRefused")


def test_event_name_cut_is_a_dns_subdomain():
    name = ob.event_name("a" * 228 + ".b" * 10, "u", "refused", "m")
    assert len(name) <= 253 and ".." not in name and "-." not in name


def test_onboarded_message_says_what_the_pods_need():
    plain = ob.plan([asking("orders", "api", "id-orders")], {}, policy())[0]
    assert "label the pods azure.workload.identity/use=true." in ob.message(plain, ob.ONBOARDED)
    bound = asking("payments", "api", "id-payments", **{ob.REQUEST_FEDERATION: "identity_binding"})
    decision = ob.plan([bound], {}, policy())[0]
    assert "annotate them azure.workload.identity/use-identity-binding=true" in ob.message(decision, ob.ONBOARDED)
