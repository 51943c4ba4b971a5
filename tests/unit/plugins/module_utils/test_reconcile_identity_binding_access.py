"""reconcile/identity_binding_access.py: input rules, and the pure plans of the ClusterRole and ClusterRoleBinding
that let ServiceAccounts use a managed identity through an AKS identity binding. No network."""

from __future__ import annotations

import typing as t

import pytest

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.kubernetes import (
    normalize_cluster_role,
    normalize_cluster_role_binding,
    normalize_rbac_subject,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import CREATE, DELETE, NONE, UPDATE
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import identity_binding_access as iba

CLIENT = "6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c"
NAME = f"azure-wi-identity-binding-{CLIENT}"
OURS = {"app.kubernetes.io/managed-by": "aks.workload_identity"}
OUR_RULE = {"apiGroups": ["cid.wi.aks.azure.com"], "resources": [CLIENT], "verbs": ["use-managed-identity"]}
OTHER_RULE = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["orders"]}
ROLE_REF = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME}
GROUP = {"kind": "Group", "name": "system:serviceaccounts:billing", "apiGroup": "rbac.authorization.k8s.io"}


def desired(*service_accounts: tuple[str, str], **overrides: t.Any) -> iba.DesiredBindingAccess:
    values: dict[str, t.Any] = {"client_id": CLIENT, "service_accounts": service_accounts or (("orders", "api"),)}
    values.update(overrides)
    return iba.DesiredBindingAccess(**values)


def sa(namespace: str, name: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def role(rules: list[dict], labels: dict | None = None, **extra: t.Any) -> dict[str, t.Any]:
    metadata = {"name": NAME, "uid": "uid-r", "resourceVersion": "11", "labels": OURS if labels is None else labels}
    return normalize_cluster_role({"metadata": metadata, "rules": rules, **extra})


def binding(subjects: list[dict], labels: dict | None = None, role_ref: dict | None = None) -> dict[str, t.Any]:
    metadata = {"name": NAME, "uid": "uid-b", "resourceVersion": "12", "labels": OURS if labels is None else labels}
    return normalize_cluster_role_binding({"metadata": metadata, "roleRef": role_ref or ROLE_REF, "subjects": subjects})


# --- Inputs -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"client_id": "not-a-guid"}, "client_id:"),
        ({"service_accounts": ()}, "service_accounts:"),
        ({"service_accounts": (("Orders", "api"),)}, "service_accounts[0].namespace:"),
        ({"service_accounts": (("orders", "a/b"),)}, "service_accounts[0].name:"),
        (
            {"service_accounts": (("orders", "api"), ("billing", "x"), ("orders", "api"))},
            "service_accounts[2]: repeats",
        ),
        ({"labels": {"team": "a b"}}, "labels"),
        ({"labels": {"app.kubernetes.io/managed-by": "helm"}}, "labels: key"),
        ({"state": "gone"}, "state:"),
    ],
)
def test_bad_inputs_are_named(overrides, field):
    errors = iba.validate(
        iba.DesiredBindingAccess(**{"client_id": CLIENT, "service_accounts": (("orders", "api"),), **overrides})
    )
    assert any(error.startswith(field) for error in errors), errors


def test_good_input_passes():
    assert iba.validate(desired(("orders", "api"), ("billing", "invoices"), labels={"team": "platform"})) == []


def test_names_and_rule_follow_the_how_to():
    wanted = desired(client_id=CLIENT.upper())
    assert wanted.name == NAME
    assert wanted.rule == {
        "api_groups": ["cid.wi.aks.azure.com"],
        "resources": [CLIENT],
        "verbs": ["use-managed-identity"],
    }
    assert wanted.role_ref == {"api_group": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME}


# --- The ClusterRole ----------------------------------------------------------------------------------------------
def test_role_is_created_with_our_rule_and_label():
    decided = iba.plan_role(None, desired(labels={"team": "platform"}))
    assert decided.action == CREATE
    assert decided.after["rules"] == [desired().rule]
    assert decided.after["labels"] == {"team": "platform", **OURS}
    body = iba.role_create_body(decided.after)
    assert body["rules"] == [OUR_RULE]
    assert body["metadata"] == {"name": NAME, "labels": {"team": "platform", **OURS}}


def test_role_with_our_rule_is_left_alone():
    decided = iba.plan_role(role([OUR_RULE]), desired())
    assert decided.action == NONE and not decided.warnings


def test_role_with_other_rules_keeps_them_and_gets_ours_at_the_end():
    actual = role([OTHER_RULE], labels={"team": "x"})
    decided = iba.plan_role(actual, desired())
    assert decided.action == UPDATE
    assert decided.after["rules"] == [normalize_cluster_role({"rules": [OTHER_RULE]})["rules"][0], desired().rule]
    assert decided.after["labels"] == {"team": "x"}  # a role we did not make is not claimed
    assert "not created by this collection" in decided.warnings[0]
    patch = iba.patch_body(actual, decided.after, "rules")
    assert patch == {"metadata": {"resourceVersion": "11"}, "rules": [OTHER_RULE, OUR_RULE]}


def test_role_label_change_patches_only_the_label():
    actual = role([OUR_RULE], labels={**OURS, "team": "a", "keep": "me"})
    decided = iba.plan_role(actual, desired(labels={"team": "b", "gone": None}))
    assert decided.action == UPDATE
    patch = iba.patch_body(actual, decided.after, "rules")
    assert patch == {"metadata": {"resourceVersion": "11", "labels": {"team": "b"}}}


def test_aggregated_role_is_refused():
    with pytest.raises(WorkloadIdentityError, match="aggregationRule"):
        iba.plan_role(role([], aggregationRule={"clusterRoleSelectors": []}), desired())


@pytest.mark.parametrize(
    ("actual_binding", "labels", "action"),
    [
        (None, None, DELETE),  # no binding: nothing uses the role
        ("only-ours", None, DELETE),  # the binding empties
        ("ours-and-group", None, NONE),  # a hand-added group stays bound
        ("only-ours", {"team": "x"}, NONE),  # not our role
    ],
)
def test_absent_role_goes_only_when_nothing_is_bound_and_it_is_ours(actual_binding, labels, action):
    bindings = {
        None: None,
        "only-ours": binding([sa("orders", "api")]),
        "ours-and-group": binding([sa("orders", "api"), GROUP]),
    }
    decided = iba.plan_role(role([OUR_RULE], labels=labels), desired(state="absent"), bindings[actual_binding])
    assert decided.action == action


def test_absent_role_needs_the_binding():
    with pytest.raises(TypeError):
        iba.plan_role(role([OUR_RULE]), desired(state="absent"))
    assert iba.plan_role(None, desired(state="absent")).action == NONE  # nothing to decide without a role


# --- The ClusterRoleBinding ---------------------------------------------------------------------------------------
def test_binding_is_created_with_the_listed_subjects_in_order():
    decided = iba.plan_role_binding(None, desired(("orders", "api"), ("billing", "invoices")))
    assert decided.action == CREATE
    body = iba.binding_create_body(decided.after)
    assert body["roleRef"] == ROLE_REF
    assert body["subjects"] == [sa("orders", "api"), sa("billing", "invoices")]
    assert body["metadata"]["labels"] == OURS


def test_binding_with_every_subject_is_left_alone():
    assert iba.plan_role_binding(binding([GROUP, sa("orders", "api")]), desired()).action == NONE


def test_missing_subject_is_added_at_the_end_keeping_the_others_in_order():
    actual = binding([sa("billing", "x"), GROUP, sa("orders", "api")])
    decided = iba.plan_role_binding(actual, desired(("orders", "api"), ("orders", "worker")))
    assert decided.action == UPDATE and decided.reason == "adds orders/worker"
    assert decided.after["subjects"] == [*actual["subjects"], sa("orders", "worker")]
    patch = iba.patch_body(actual, decided.after, "subjects")
    assert patch == {
        "metadata": {"resourceVersion": "12"},
        "subjects": [
            {"kind": "ServiceAccount", "name": "x", "namespace": "billing"},
            {"kind": "Group", "name": "system:serviceaccounts:billing", "apiGroup": "rbac.authorization.k8s.io"},
            {"kind": "ServiceAccount", "name": "api", "namespace": "orders"},
            {"kind": "ServiceAccount", "name": "worker", "namespace": "orders"},
        ],
    }


def test_a_user_of_the_same_name_is_not_our_service_account():
    user = {"kind": "User", "name": "api", "apiGroup": "rbac.authorization.k8s.io"}
    decided = iba.plan_role_binding(binding([user]), desired())
    assert decided.after["subjects"] == [normalize_rbac_subject(user), sa("orders", "api")]


@pytest.mark.parametrize(
    "role_ref",
    [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
    ],
)
@pytest.mark.parametrize("state", ["present", "absent"])
def test_foreign_role_ref_is_refused(role_ref, state):
    with pytest.raises(WorkloadIdentityError, match="roleRef") as raised:
        iba.plan(role([OUR_RULE]), binding([sa("orders", "api")], role_ref=role_ref), desired(state=state))
    assert raised.value.code == "Conflict"


def test_absent_removes_only_the_listed_subjects():
    actual = binding([sa("orders", "api"), GROUP, sa("orders", "worker")])
    decided = iba.plan_role_binding(actual, desired(("orders", "api"), ("orders", "gone"), state="absent"))
    assert decided.action == UPDATE and decided.reason == "removes orders/api"
    assert decided.after["subjects"] == [normalize_rbac_subject(GROUP), sa("orders", "worker")]


@pytest.mark.parametrize(("labels", "action"), [(None, DELETE), ({"team": "x"}, UPDATE)])
def test_absent_deletes_an_emptied_binding_only_when_ours(labels, action):
    decided = iba.plan_role_binding(binding([sa("orders", "api")], labels=labels), desired(state="absent"))
    assert decided.action == action
    if action == UPDATE:
        assert decided.after["subjects"] == []


def test_absent_without_our_subjects_changes_nothing():
    assert iba.plan_role_binding(binding([GROUP]), desired(state="absent")).action == NONE
    assert iba.plan_role_binding(None, desired(state="absent")).action == NONE


# --- Both ---------------------------------------------------------------------------------------------------------
def test_full_teardown_plans_both_deletes():
    decided = iba.plan(role([OUR_RULE]), binding([sa("orders", "api")]), desired(state="absent"))
    assert (decided.binding.action, decided.role.action) == (DELETE, DELETE)
    assert decided.diff()["after"] == {"cluster_role": {}, "cluster_role_binding": {}}


def test_partial_teardown_keeps_the_role():
    decided = iba.plan(role([OUR_RULE]), binding([sa("orders", "api"), sa("orders", "b")]), desired(state="absent"))
    assert (decided.binding.action, decided.role.action) == (UPDATE, NONE)


def test_diff_leaves_out_server_fields():
    decided = iba.plan(role([OUR_RULE]), None, desired())
    assert decided.binding.action == CREATE
    assert "uid" not in decided.diff()["before"]["cluster_role"]
    assert "resource_version" not in decided.diff()["before"]["cluster_role"]


def test_access_warnings_name_the_disagreeing_service_accounts():
    results = [
        {"namespace": "orders", "name": "api", "allowed": True, "reason": ""},
        {"namespace": "orders", "name": "b", "allowed": False, "reason": ""},
    ]
    assert iba.access_warnings(desired(), results) == [
        f"ServiceAccount 'orders/b' may not use identity '{CLIENT}' although ClusterRoleBinding '{NAME}' binds it"
    ]
    still = iba.access_warnings(desired(state="absent"), results)
    assert len(still) == 1 and still[0].startswith("ServiceAccount 'orders/api' may still use")
