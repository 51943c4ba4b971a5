"""The aad-pod-identity migration planner (module_utils/migration.py): pure functions over objects as the gateways
normalise them, no mocks."""

from __future__ import annotations

import pytest

from ansible_collections.aks.workload_identity.plugins.module_utils import migration
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_items import parse_items, validate_fleet

SUB = "00000000-0000-0000-0000-00000000aaaa"
RID = (
    f"/subscriptions/{SUB}/resourcegroups/rg-apps/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-orders"
)
CLIENT = "11111111-1111-1111-1111-111111111111"


def identity(name="app-id", namespace="orders", type_=0, resource_id=RID, annotations=None):
    spec = {"type": type_, "clientID": CLIENT, **({"resourceID": resource_id} if resource_id else {})}
    return {
        "kind": "AzureIdentity",
        "namespace": namespace,
        "name": name,
        "uid": f"u-{name}",
        "annotations": annotations or {},
        "spec": spec,
    }


def binding(name="app-binding", namespace="orders", target="app-id", selector="app"):
    return {
        "kind": "AzureIdentityBinding",
        "namespace": namespace,
        "name": name,
        "uid": f"u-{name}",
        "annotations": {},
        "spec": {"azureIdentity": target, "selector": selector},
    }


def workload(name, selector="app", namespace="orders", kind="Deployment", service_account=None, **extra):
    labels = {"app": name} if selector is None else {"app": name, "aadpodidbinding": selector}
    return {
        "kind": kind,
        "namespace": namespace,
        "name": name,
        "service_account": service_account,
        "labels": labels,
        "annotations": {},
        "workload_identity": False,
        **extra,
    }


def pod(name, selector="app", namespace="orders", owner=None):
    metadata = {"name": name, "namespace": namespace, "labels": {"aadpodidbinding": selector}}
    if owner:
        metadata["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    return {"metadata": metadata}


def plan(identities=None, bindings=None, workloads=(), pods=(), **options):
    return migration.plan(
        identities=[identity()] if identities is None else identities,
        bindings=[binding()] if bindings is None else bindings,
        workloads=list(workloads),
        pods=list(pods),
        subscription_id=SUB,
        **options,
    )


def statuses(result):
    return {w["name"]: w["status"] for w in result.workloads}


def test_own_service_account_kept_default_replaced_by_one_named_after_the_binding():
    result = plan(
        workloads=[
            workload("api", service_account="api-sa"),
            workload("worker"),
            workload("cron", kind="CronJob", service_account="default"),
        ]
    )
    assert statuses(result) == {"api": "planned", "worker": "planned", "cron": "planned"}
    assert result.items == [
        {
            "name": "orders/api-sa",
            "namespace": "orders",
            "service_account": "api-sa",
            "identity": {"name": "id-orders", "resource_group": "rg-apps", "create": False},
            "patch_workloads": [{"kind": "Deployment", "name": "api"}],
            "proxy_sidecar": True,
        },
        {
            "name": "orders/app-binding",
            "namespace": "orders",
            "service_account": "app-binding",
            "identity": {"name": "id-orders", "resource_group": "rg-apps", "create": False},
            "patch_workloads": [{"kind": "CronJob", "name": "cron"}, {"kind": "Deployment", "name": "worker"}],
            "proxy_sidecar": True,
        },
    ]
    by_name = {w["name"]: w for w in result.workloads}
    assert by_name["worker"]["service_account_new"] and not by_name["api"]["service_account_new"]
    assert by_name["worker"]["identity"]["client_id"] == CLIENT
    assert result.unsupported == []
    # The items pass the workload role's own rules.
    items, errors = parse_items(result.items)
    assert errors == [] and validate_fleet(items, state="present", issuer=None, tenant_id=None) == []


@pytest.mark.parametrize(("sdk", "expected"), [(False, True), (True, False)])
def test_proxy_sidecar_unless_the_sdk_supports_workload_identity(sdk, expected):
    result = plan(workloads=[workload("api")], sdk_supports_workload_identity=sdk, proxy_sidecar_port=9000)
    assert result.items[0]["proxy_sidecar"] is expected
    assert ("proxy_sidecar_port" in result.items[0]) is expected


@pytest.mark.parametrize(
    ("azure_identity", "reason"),
    [
        (identity(type_=1, resource_id=None), "service principal (type 1)"),
        (identity(type_=2, resource_id=None), "service principal (type 2)"),
        (
            identity(resource_id="/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"),
            "not the resource ID of a user-assigned",
        ),
        (
            identity(resource_id=RID.replace(SUB, "22222222-2222-2222-2222-222222222222")),
            "run it once per subscription",
        ),
        (identity(name="other"), "names AzureIdentity 'app-id', which does not exist"),
    ],
)
def test_identities_without_an_equivalent_are_unsupported(azure_identity, reason):
    result = plan(identities=[azure_identity], workloads=[workload("api")])
    assert statuses(result) == {"api": "unsupported"}
    assert result.items == []
    assert reason in result.workloads[0]["reason"]
    assert {u["object"] for u in result.unsupported} == {
        "Deployment orders/api",
        "AzureIdentityBinding orders/app-binding",
    }


def test_binding_identity_across_namespaces_unless_ambiguous():
    elsewhere = identity(namespace="shared")
    assert migration.binding_identity(binding(), [elsewhere]) == (elsewhere, None)
    own = identity()
    assert migration.binding_identity(binding(), [elsewhere, own]) == (own, None)
    found, why = migration.binding_identity(binding(), [elsewhere, identity(namespace="third")])
    assert found is None and "several namespaces" in why


def test_a_namespaced_identity_selects_only_its_own_namespace():
    namespaced = identity(annotations={"aadpodidentity.k8s.io/Behavior": "namespaced"})
    result = plan(identities=[namespaced], workloads=[workload("here"), workload("there", namespace="other")])
    assert statuses(result) == {"here": "planned", "there": "label_only"}


def test_two_bindings_selecting_one_workload():
    result = plan(bindings=[binding("a"), binding("b")], workloads=[workload("api")])
    assert statuses(result) == {"api": "unsupported"}
    assert "selected by 2 AzureIdentityBindings (orders/a, orders/b)" in result.workloads[0]["reason"]
    assert {b["status"] for b in result.bindings} == {"unsupported"}


def test_a_binding_that_selects_nothing_is_named_and_kept():
    result = plan(bindings=[binding(), binding("idle", selector="idle")], workloads=[workload("api")])
    idle = next(b for b in result.bindings if b["name"] == "idle")
    assert idle["status"] == "unsupported" and "selects no workload" in idle["reason"]
    migration.settle(result, {"orders/app-binding": {"changed": True}}, {"orders/app-binding": True})
    assert [b["name"] for b in migration.removal_order(result)] == ["app-binding"]  # app-id is idle's too


def test_a_service_account_two_identities_would_need():
    second = identity("other-id", resource_id=RID.replace("id-orders", "id-billing"))
    result = plan(
        identities=[identity(), second],
        bindings=[binding(), binding("other", target="other-id", selector="other")],
        workloads=[
            workload("api", service_account="shared"),
            workload("billing", selector="other", service_account="shared"),
        ],
    )
    assert statuses(result) == {"api": "unsupported", "billing": "unsupported"}
    assert "would carry 2 identities" in result.workloads[0]["reason"]
    assert result.items == []


@pytest.mark.parametrize(
    ("owner", "problem"),
    [
        (None, "has no owner workload"),
        (("Job", "once"), "owned by Job once"),
        (("ReplicaSet", "ghost-5d8f"), "owned by ReplicaSet ghost-5d8f"),
        (("ReplicaSet", "api-5d8f"), None),
        (("Job", "cron-2903"), None),
    ],
)
def test_pods_without_an_owner_workload_block_their_binding(owner, problem):
    workloads = [workload("api"), workload("cron", kind="CronJob")]
    result = plan(workloads=workloads, pods=[pod("p", owner=owner)])
    reasons = [u["reason"] for u in result.unsupported]
    if problem is None:
        assert reasons == [] and result.bindings[0]["status"] == "planned"
    else:
        assert problem in reasons[0] and result.bindings[0]["status"] == "unsupported"


def test_settle_removes_only_what_was_proven():
    result = plan(workloads=[workload("api", service_account="api-sa"), workload("worker")])
    outcomes = {"orders/api-sa": {"changed": True, "client_id": CLIENT}, "orders/app-binding": {"changed": True}}
    migration.settle(result, outcomes, {"orders/api-sa": True, "orders/app-binding": False})
    assert statuses(result) == {"api": "proven", "worker": "migrated"}
    assert migration.removal_order(result) == []
    migration.settle(result, outcomes, {"orders/api-sa": True, "orders/app-binding": True})
    # settle only moves planned workloads on: a fresh plan for the next run.
    result = plan(workloads=[workload("api", service_account="api-sa"), workload("worker")])
    migration.settle(result, outcomes, {"orders/api-sa": True, "orders/app-binding": True})
    assert [e["object"] for e in migration.removal_order(result)] == [
        "AzureIdentityBinding orders/app-binding",
        "AzureIdentity orders/app-id",
    ]


def test_settle_in_check_mode_plans_removal_and_reports_failures():
    result = plan(workloads=[workload("api")])
    migration.settle(result, {"orders/app-binding": {"changed": True}}, {}, check_mode=True)
    assert statuses(result) == {"api": "planned"} and len(migration.removal_order(result)) == 2
    result = plan(workloads=[workload("api")])
    failed = {"orders/app-binding": {"failed": True, "error": "identity missing", "failed_step": "identity"}}
    migration.settle(result, failed, {})
    assert statuses(result) == {"api": "failed"} and migration.removal_order(result) == []


def test_a_client_id_that_differs_is_warned_about():
    result = plan(workloads=[workload("api")])
    migration.settle(result, {"orders/app-binding": {"client_id": "22222222-2222-2222-2222-222222222222"}}, {})
    assert "is not the client ID" in result.workloads[0]["warnings"][0]


def test_workloads_without_the_label_are_not_listed_and_a_label_without_binding_is_label_only():
    result = plan(
        workloads=[workload("plain", selector=None), workload("stale", selector="gone", workload_identity=True)]
    )
    assert statuses(result) == {"stale": "label_only"}
    assert "uses workload identity already" in result.workloads[0]["reason"]


@pytest.mark.parametrize(
    ("resource_id", "expected"),
    [
        (RID, ("rg-apps", "id-orders")),
        (RID.upper().replace(SUB.upper(), SUB), ("RG-APPS", "ID-ORDERS")),
        (None, "is not the resource ID"),
        (RID + "/extra", "is not the resource ID"),
    ],
)
def test_parse_identity_resource_id(resource_id, expected):
    parsed = migration.parse_identity_resource_id(resource_id, SUB)
    assert parsed == expected if isinstance(expected, tuple) else expected in parsed
