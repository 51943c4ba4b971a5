"""wid_identity_binding_access against the lab's real kube-apiserver: the ClusterRole and ClusterRoleBinding that
let ServiceAccounts use a managed identity through an AKS identity binding, and the API server's own RBAC
authorizer answering SubjectAccessReviews about them.

Module runs go through ansible-playbook (tests/integration/runner.py), bad inputs in process
(tests/integration/inprocess.py). State is checked with the kubernetes client on the admin kubeconfig, never with
the module; requests are counted from the API server's audit log (every get, list and write, dry runs marked).
"""

from __future__ import annotations

import collections
import json
import uuid

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import identity_binding_access as iba
from tests.integration.inprocess import run_inprocess
from tests.integration.runner import run_module

pytestmark = pytest.mark.lab

MODULE = "wid_identity_binding_access"
OURS = {"app.kubernetes.io/managed-by": "aks.workload_identity"}
RBAC = "rbac.authorization.k8s.io"


# --- Helpers ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rbac(lab) -> k8s.RbacAuthorizationV1Api:
    return k8s.RbacAuthorizationV1Api(k8s_config.new_client_from_config(config_file=str(lab.admin_kubeconfig)))


def new_client_id() -> str:
    return str(uuid.uuid4())


def role_name(client_id: str) -> str:
    return f"azure-wi-identity-binding-{client_id}"


def accounts(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"namespace": namespace, "name": name} for namespace, name in pairs]


def sa(namespace: str, name: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def read(call, name: str) -> dict | None:
    """The object as the API server's JSON (camelCase), None when absent."""
    try:
        return json.loads(call(name, _preload_content=False).data)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def stored_role(rbac, client_id: str) -> dict | None:
    return read(rbac.read_cluster_role, role_name(client_id))


def stored_binding(rbac, client_id: str) -> dict | None:
    return read(rbac.read_cluster_role_binding, role_name(client_id))


def _resource(uri: str) -> str:
    parts = uri.split("?", 1)[0].strip("/").split("/")
    return parts[3] if parts[0] == "apis" else parts[2]


def requests(lab, since: int) -> collections.Counter:
    """``"<verb> <resource>"`` -> count for the lab admin's requests after ``since`` (dry runs marked)."""
    return collections.Counter(
        f"{e['verb']} {_resource(e['uri'])}" + (" (dry run)" if e["dry_run"] else "") for e in lab.kube_requests(since)
    )


def run(lab, args, **kwargs):
    """The module through ansible-playbook, and the API requests it made."""
    mark = lab.kube_mark()
    result = run_module(MODULE, args, env=lab.env, **kwargs)
    return result, requests(lab, mark)


def cleanup(rbac, client_id: str) -> None:
    for call in (rbac.delete_cluster_role_binding, rbac.delete_cluster_role):
        try:
            call(role_name(client_id))
        except ApiException as exc:
            if exc.status != 404:
                raise


READS = {"get clusterroles": 1, "get clusterrolebindings": 1}


# --- The lifecycle ----------------------------------------------------------------------------------------------
def test_create_check_mode_rerun_and_verify(lab, rbac):
    client_id = new_client_id()
    name = role_name(client_id)
    args = {"client_id": client_id, "service_accounts": accounts(("orders", "api")), "labels": {"team": "orders"}}
    try:
        # check mode: changed, the two reads and nothing else (not even a dry run), nothing stored
        checked, calls = run(lab, args, check=True, diff=True)
        assert not checked.failed, checked.output
        assert checked.changed
        assert calls == READS
        assert stored_role(rbac, client_id) is None and stored_binding(rbac, client_id) is None
        assert checked["diff"]["before"] == {"cluster_role": {}, "cluster_role_binding": {}}
        assert checked["diff"]["after"]["cluster_role_binding"]["subjects"] == [sa("orders", "api")]
        assert checked["cluster_role"]["uid"] is None
        assert [s["allowed"] for s in checked["service_accounts"]] == [None]

        # apply: the ClusterRole, then the ClusterRoleBinding, as the how-to writes them
        mark = lab.kube_mark()
        applied, calls = run(lab, args, diff=True)
        assert applied.changed, applied.output
        assert calls == {**READS, "create clusterroles": 1, "create clusterrolebindings": 1}
        writes = [_resource(e["uri"]) for e in lab.kube_writes(mark)]
        assert writes == ["clusterroles", "clusterrolebindings"]
        role = stored_role(rbac, client_id)
        assert role["rules"] == [
            {"apiGroups": ["cid.wi.aks.azure.com"], "resources": [client_id], "verbs": ["use-managed-identity"]}
        ]
        assert role["metadata"]["labels"] == {"team": "orders", **OURS}
        binding = stored_binding(rbac, client_id)
        assert binding["roleRef"] == {"apiGroup": RBAC, "kind": "ClusterRole", "name": name}
        assert binding["subjects"] == [sa("orders", "api")]
        assert binding["metadata"]["labels"] == {"team": "orders", **OURS}
        assert applied["cluster_role"]["uid"] == role["metadata"]["uid"]
        assert applied["cluster_role_binding"]["subjects"] == [sa("orders", "api")]
        assert applied["diff"]["before"] == {"cluster_role": {}, "cluster_role_binding": {}}
        assert applied["diff"]["after"]["cluster_role"]["rules"] == applied["cluster_role"]["rules"]

        # again: no change, exactly the two reads
        again, calls = run(lab, args)
        assert not again.changed, again.output
        assert calls == READS
        assert again["api_calls"] == {"kubernetes.clusterroles.get": 1, "kubernetes.clusterrolebindings.get": 1}

        # verify: one SubjectAccessReview, which the API server's RBAC authorizer answers from our objects
        verified, calls = run(lab, {**args, "verify": True})
        assert not verified.changed
        assert calls == {**READS, "create subjectaccessreviews": 1}
        [review] = verified["service_accounts"]
        assert review["allowed"] is True, review
        assert review["subject"] == "system:serviceaccount:orders:api"
        assert name in review["reason"]
    finally:
        cleanup(rbac, client_id)


def test_adding_a_service_account_keeps_what_others_added(lab, rbac):
    client_id = new_client_id()
    group = {"apiGroup": RBAC, "kind": "Group", "name": "system:serviceaccounts:billing"}
    extra_rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
    try:
        first, _calls = run(lab, {"client_id": client_id, "service_accounts": accounts(("orders", "api"))})
        assert first.changed, first.output
        # a person adds a group subject and a ServiceAccount by hand, and a rule to the role
        rbac.patch_cluster_role_binding(
            role_name(client_id), {"subjects": [sa("orders", "api"), group, sa("ops", "debug")]}
        )
        role = stored_role(rbac, client_id)
        rbac.patch_cluster_role(role_name(client_id), {"rules": [extra_rule, *role["rules"]]})

        args = {"client_id": client_id, "service_accounts": accounts(("orders", "api"), ("orders", "worker"))}
        preview, calls = run(lab, args, check=True, diff=True)
        assert preview.changed and calls == READS
        assert preview["diff"]["before"]["cluster_role_binding"]["subjects"][1] == {
            "kind": "Group",
            "name": "system:serviceaccounts:billing",
            "api_group": RBAC,
        }
        added, calls = run(lab, args, diff=True)
        assert added.changed, added.output
        assert calls == {**READS, "patch clusterrolebindings": 1}  # the role already grants the identity
        assert stored_binding(rbac, client_id)["subjects"] == [
            sa("orders", "api"),
            group,
            sa("ops", "debug"),
            sa("orders", "worker"),
        ]
        assert stored_role(rbac, client_id)["rules"][0] == extra_rule

        # absent removes only ours; the hand-added subjects keep the binding and so the role
        removed, calls = run(lab, {**args, "state": "absent"}, diff=True)
        assert removed.changed, removed.output
        assert calls == {**READS, "patch clusterrolebindings": 1}
        assert stored_binding(rbac, client_id)["subjects"] == [group, sa("ops", "debug")]
        assert stored_role(rbac, client_id) is not None
        assert removed["diff"]["after"]["cluster_role"] == removed["diff"]["before"]["cluster_role"]
    finally:
        cleanup(rbac, client_id)


def test_absent_deletes_both_objects_when_no_subject_is_left(lab, rbac):
    client_id = new_client_id()
    both = accounts(("orders", "api"), ("orders", "worker"))
    try:
        created, _calls = run(lab, {"client_id": client_id, "service_accounts": both})
        assert created.changed, created.output

        one, calls = run(lab, {"client_id": client_id, "service_accounts": both[:1], "state": "absent"})
        assert one.changed and calls == {**READS, "patch clusterrolebindings": 1}
        assert stored_binding(rbac, client_id)["subjects"] == [sa("orders", "worker")]

        last = {"client_id": client_id, "service_accounts": both[1:], "state": "absent"}
        checked, calls = run(lab, last, check=True, diff=True)
        assert checked.changed and calls == READS
        assert checked["diff"]["after"] == {"cluster_role": {}, "cluster_role_binding": {}}
        assert stored_binding(rbac, client_id) is not None

        mark = lab.kube_mark()
        gone, calls = run(lab, {**last, "verify": True})
        assert gone.changed, gone.output
        # a review the authorizer answers before its watch cache saw the delete is asked again: at least one
        assert calls.pop("create subjectaccessreviews") >= 1
        assert calls == {**READS, "delete clusterrolebindings": 1, "delete clusterroles": 1}
        # the binding goes before the role it binds
        assert [_resource(e["uri"]) for e in lab.kube_writes(mark) if e["verb"] == "delete"] == [
            "clusterrolebindings",
            "clusterroles",
        ]
        assert stored_binding(rbac, client_id) is None and stored_role(rbac, client_id) is None
        assert gone["cluster_role"] == {} and gone["cluster_role_binding"] == {}
        assert gone["service_accounts"][0]["allowed"] is False

        again, calls = run(lab, last)
        assert not again.changed and calls == READS
    finally:
        cleanup(rbac, client_id)


def test_objects_this_module_did_not_create_are_never_deleted(lab, rbac):
    client_id = new_client_id()
    name = role_name(client_id)
    try:
        rbac.create_cluster_role({"metadata": {"name": name}, "rules": []})
        rbac.create_cluster_role_binding(
            {"metadata": {"name": name}, "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": name}}
        )
        args = {"client_id": client_id, "service_accounts": accounts(("orders", "api"))}
        added, calls = run(lab, args)
        assert added.changed and calls == {**READS, "patch clusterroles": 1, "patch clusterrolebindings": 1}
        assert "not created by this collection" in " ".join(added.output.split())
        assert stored_role(rbac, client_id)["metadata"].get("labels") is None  # not claimed

        removed, calls = run(lab, {**args, "state": "absent"})
        assert removed.changed and calls == {**READS, "patch clusterrolebindings": 1}
        assert stored_binding(rbac, client_id).get("subjects") is None
        assert stored_role(rbac, client_id) is not None
    finally:
        cleanup(rbac, client_id)


def test_a_binding_of_our_name_with_another_role_ref_is_refused_with_no_write(lab, rbac):
    client_id = new_client_id()
    name = role_name(client_id)
    try:
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "view"},
                "subjects": [sa("orders", "api")],
            }
        )
        for state in ("present", "absent"):
            mark = lab.kube_mark()
            refused, calls = run(
                lab, {"client_id": client_id, "service_accounts": accounts(("orders", "api")), "state": state}
            )
            assert refused.failed
            assert "roleRef" in refused["msg"] and "'view'" in refused["msg"], refused["msg"]
            assert calls == READS
            assert lab.kube_writes(mark, include_dry_run=True) == []
        assert stored_role(rbac, client_id) is None
        assert stored_binding(rbac, client_id)["roleRef"]["name"] == "view"
    finally:
        cleanup(rbac, client_id)


# --- The API server's RBAC answers ------------------------------------------------------------------------------
def test_access_reviews_allow_the_listed_service_account_and_deny_others(lab, rbac):
    client_id = new_client_id()
    try:
        granted, _calls = run(
            lab, {"client_id": client_id, "service_accounts": accounts(("orders", "api")), "verify": True}
        )
        assert granted.changed, granted.output
        assert granted["service_accounts"][0]["allowed"] is True
        assert "[WARNING]" not in granted.output

        # never bound: the same name in another namespace, another name in the same one (absent changes nothing)
        others = accounts(("billing", "api"), ("orders", "worker"))
        denied, calls = run(
            lab, {"client_id": client_id, "service_accounts": others, "state": "absent", "verify": True}
        )
        assert not denied.changed, denied.output
        assert calls == {**READS, "create subjectaccessreviews": 2}
        assert [s["allowed"] for s in denied["service_accounts"]] == [False, False]

        # the listed one, asked about another identity, is denied too
        elsewhere, _calls = run(
            lab,
            {
                "client_id": new_client_id(),
                "service_accounts": accounts(("orders", "api")),
                "state": "absent",
                "verify": True,
            },
        )
        assert elsewhere["service_accounts"][0]["allowed"] is False
    finally:
        cleanup(rbac, client_id)


# --- Concurrent writers (the reconciler in process, against the real API server) ---------------------------------
def test_a_subject_added_between_our_read_and_our_write_survives(lab, rbac):
    client_id = new_client_id()
    name = role_name(client_id)
    try:
        reconciler = iba.BindingAccessReconciler(rbac, dry_run=False)
        first = iba.DesiredBindingAccess(client_id, (("orders", "api"),))
        assert reconciler.reconcile(first).changed

        wanted = iba.DesiredBindingAccess(client_id, (("orders", "api"), ("orders", "worker")))
        role, binding = reconciler.read(client_id)
        decided = iba.plan(role, binding, wanted)
        rbac.patch_cluster_role_binding(name, {"subjects": [sa("orders", "api"), sa("ops", "debug")]})  # meanwhile
        mark = lab.kube_mark()
        outcome = reconciler.apply(role, binding, wanted, decided)
        assert outcome.changed
        # the stale patch is refused with 409 (resourceVersion), the objects read again, the patch sent again
        assert [(e["verb"], e["code"]) for e in lab.kube_requests(mark)] == [
            ("patch", 409),
            ("get", 200),
            ("get", 200),
            ("patch", 200),
        ]
        assert stored_binding(rbac, client_id)["subjects"] == [
            sa("orders", "api"),
            sa("ops", "debug"),
            sa("orders", "worker"),
        ]
    finally:
        cleanup(rbac, client_id)


def test_the_gateways_dry_run_persists_nothing(lab, rbac):
    client_id = new_client_id()
    try:
        real = iba.BindingAccessReconciler(rbac, dry_run=False)
        assert real.reconcile(iba.DesiredBindingAccess(client_id, (("orders", "api"),))).changed
        dry = iba.BindingAccessReconciler(rbac, dry_run=True)
        mark = lab.kube_mark()
        added = dry.reconcile(iba.DesiredBindingAccess(client_id, (("orders", "api"), ("orders", "b"))))
        assert added.cluster_role_binding["subjects"][-1] == sa("orders", "b")
        gone = dry.reconcile(iba.DesiredBindingAccess(client_id, (("orders", "api"),), state="absent"))
        assert gone.changed and gone.cluster_role is None
        writes = lab.kube_writes(mark, include_dry_run=True)
        assert [e["verb"] for e in writes] == ["patch", "delete", "delete"]
        assert all(e["dry_run"] for e in writes)
        assert stored_binding(rbac, client_id)["subjects"] == [sa("orders", "api")]
        assert stored_role(rbac, client_id) is not None
    finally:
        cleanup(rbac, client_id)


# --- Bad inputs -------------------------------------------------------------------------------------------------
GUID = "6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c"
BAD_INPUTS = [
    pytest.param({"client_id": "orders"}, "client_id", id="client-id-not-a-guid"),
    pytest.param({"client_id": 5}, "client_id", id="client-id-a-number"),
    pytest.param({"service_accounts": []}, "service_accounts", id="no-service-account"),
    pytest.param({"service_accounts": accounts(("Orders", "api"))}, "service_accounts[0].namespace", id="namespace"),
    pytest.param({"service_accounts": accounts(("a" * 64, "api"))}, "service_accounts[0].namespace", id="long-ns"),
    pytest.param({"service_accounts": accounts(("orders", "a/b"))}, "service_accounts[0].name", id="name"),
    pytest.param({"service_accounts": accounts(("orders", " api"))}, "service_accounts[0].name", id="padded-name"),
    pytest.param(
        {"service_accounts": accounts(("orders", "api"), ("orders", "api"))}, "service_accounts[1]", id="repeated"
    ),
    pytest.param({"labels": {"team": "a b"}}, "labels", id="label-value"),
    pytest.param({"labels": {"app.kubernetes.io/managed-by": "helm"}}, "labels", id="owned-label"),
]


@pytest.mark.parametrize(("overrides", "option"), BAD_INPUTS)
def test_bad_input_is_refused_before_any_request(lab, overrides, option):
    args = {"client_id": GUID, "service_accounts": accounts(("orders", "api")), **overrides}
    probed = run_inprocess(lab, MODULE, args)
    assert probed.failed, probed.result
    assert probed.msg.startswith("Invalid input: "), probed.msg
    assert any(error.startswith(option) for error in probed.result["errors"]), probed.result["errors"]
    assert "Traceback" not in probed.msg
    assert probed.requests == []
