"""workloads (the fleet module) with identity bindings, on the lab: 25 ServiceAccounts in three namespaces share one
identity through one binding (which 20 federated credentials cannot do), mixed with workloads that keep their own
credential on the same identity; check mode writes nothing; a second run changes nothing with an exact request
budget; the real kube-apiserver's RBAC lets exactly the listed ServiceAccounts use the identity; a partial
teardown takes only its ServiceAccounts out; the last one removes RBAC, binding, AKS's credential and the identity.
State is checked through the emulator's state and the kubernetes client, never through the module under test."""

from __future__ import annotations

import collections
import uuid

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from ansible_collections.aks.workload_identity.plugins.module_utils import workload_identity as wi
from tests.integration.runner import run_module

pytestmark = pytest.mark.lab

MODULE = "workloads"
MSI = "/providers/microsoft.managedidentity/userassignedidentities/"


@pytest.fixture(scope="module")
def kube(lab) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=str(lab.admin_kubeconfig))


def items_for(lab, tag: str, count: int, *, own: int = 0) -> list[dict]:
    """``count`` workloads bound to one identity across three namespaces, then ``own`` with their own credential on
    the same identity; the first bound workload also opts a Deployment in."""
    identity = {"name": f"id-{tag}", "resource_group": lab.seed["resource_group"]}
    items = []
    for index in range(count + own):
        bound = index < count
        item = {
            "name": f"{tag}-{index:02d}",
            "namespace": f"{tag}-ns{index % 3}",
            "create_namespace": True,
            "service_account": f"sa-{index:02d}",
            "identity": identity,
        }
        if bound:
            item["federation"] = "identity_binding"
        items.append(item)
    return items


def identity_state(lab, tag: str) -> dict:
    """The identity's credentials and the cluster's bindings of it, from the emulator's state."""
    credentials, bindings, identity = [], [], None
    for key, body in lab.state()["resources"].items():
        lower = key.lower()
        if lower.endswith(f"{MSI}id-{tag}"):
            identity = body
        elif f"{MSI}id-{tag}/federatedidentitycredentials/" in lower:
            credentials.append(body["name"])
        elif "/identitybindings/" in lower and f"{MSI}id-{tag}" in str(body).lower():
            bindings.append(body)
    return {"identity": identity, "credentials": sorted(credentials), "bindings": bindings}


def may_use(kube: k8s.ApiClient, namespace: str, service_account: str, client_id: str) -> bool:
    """The real apiserver's answer, through the test's own SubjectAccessReview."""
    review = k8s.V1SubjectAccessReview(
        spec=k8s.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{namespace}:{service_account}",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
            resource_attributes=k8s.V1ResourceAttributes(
                group=wi.IDENTITY_BINDING_RBAC_API_GROUP, resource=client_id, verb=wi.IDENTITY_BINDING_RBAC_VERB
            ),
        )
    )
    return bool(k8s.AuthorizationV1Api(kube).create_subject_access_review(review).status.allowed)


def arm_counts(lab, since: int) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for request in lab.requests(since):
        if request["plane"] != "arm" or request["path"].startswith("/metadata/"):
            continue
        path = request["path"].lower().split("?")[0]
        kind = (
            "bindings"
            if "/identitybindings" in path
            else "credentials"
            if "/federatedidentitycredentials" in path
            else "identities"
            if "/userassignedidentities" in path
            else "cluster"
            if "/managedclusters/" in path
            else path
        )
        counts[f"{request['method']} {kind}"] += 1
    return counts


def test_25_service_accounts_share_one_identity_through_one_binding(lab, cluster, kube):
    tag = f"ib{uuid.uuid4().hex[:4]}"
    items = items_for(lab, tag, 25, own=2)
    args = {"items": items, **cluster}

    # Federated credentials alone cannot: 27 on one identity fail the budget before any write.
    alone = [{k: v for k, v in item.items() if k != "federation"} for item in items]
    seq, mark = lab.last_seq(), lab.kube_mark()
    refused = run_module(MODULE, {"items": alone, **cluster}, env=lab.env)
    assert refused.failed and "would need 27 federated credentials" in refused["msg"], refused.get("msg")
    assert lab.writes(seq) == [] and lab.kube_writes(mark, include_dry_run=True) == []

    # Check mode: everything planned, nothing written, not even a dry run.
    seq, mark = lab.last_seq(), lab.kube_mark()
    check = run_module(MODULE, args, env=lab.env, check=True, diff=True)
    assert check.changed and not check.failed, check.get("msg")
    assert check["summary"]["changed"] == 27
    assert lab.writes(seq) == [] and lab.kube_writes(mark, include_dry_run=True) == []
    planned = {w["name"]: w for w in check["workloads"]}
    assert planned[f"{tag}-00"]["identity_binding_name"] == f"id{tag}"
    assert [a["step"] for a in planned[f"{tag}-00"]["actions"]][:4] == [
        "identity",
        "identity_binding",
        "identity_binding_access",
        "identity_binding_access",
    ]

    first = run_module(MODULE, args, env=lab.env)
    assert first.changed and not first.failed, first.get("msg")
    state = identity_state(lab, tag)
    # One binding, and on the identity AKS's one credential plus the two workloads' own: 3 of 20, for 27 workloads.
    assert len(state["bindings"]) == 1
    assert len(state["credentials"]) == 3 and wi.IDENTITY_BINDING_CREDENTIAL_NAME in state["credentials"]
    results = {w["name"]: w for w in first["workloads"]}
    client_id = results[f"{tag}-00"]["client_id"]
    assert results[f"{tag}-00"]["binding_issuer_url"].endswith(f"/{client_id}")
    assert results[f"{tag}-25"]["federation"] == "federated_credential" and results[f"{tag}-25"]["credential_name"]
    # Kubernetes RBAC: each bound ServiceAccount may use the identity; the two with their own credential and a
    # stranger may not.
    for index in range(27):
        item = items[index]
        assert may_use(kube, item["namespace"], item["service_account"], client_id) is (index < 25), item["name"]
    assert not may_use(kube, f"{tag}-ns0", "stranger", client_id)
    rbac = k8s.RbacAuthorizationV1Api(kube)
    name = wi.identity_binding_role_name(client_id)
    assert len(rbac.read_cluster_role_binding(name).subjects) == 25
    core = k8s.CoreV1Api(kube)
    account = core.read_namespaced_service_account("sa-00", f"{tag}-ns0")
    assert account.metadata.annotations[wi.ANNOTATION_CLIENT_ID] == client_id

    # Second run: nothing changes; the reads are the identity list, its credential list, one binding list (no
    # cluster GET: none is needed beyond the issuer read) and the two RBAC GETs; no write anywhere.
    seq, mark = lab.last_seq(), lab.kube_mark()
    again = run_module(MODULE, args, env=lab.env)
    assert not again.changed and not again.failed, again.get("msg")
    assert lab.writes(seq) == [] and lab.kube_writes(mark, include_dry_run=True) == []
    counts = arm_counts(lab, seq)
    assert counts == {"GET cluster": 1, "GET identities": 1, "GET credentials": 1, "GET bindings": 1}, counts
    rbac_reads = [e for e in lab.kube_requests(mark) if "rbac.authorization.k8s.io" in e["uri"]]
    assert len(rbac_reads) == 2, rbac_reads

    # A whole teardown in check mode plans the RBAC, the binding and AKS's credential, and writes nothing.
    seq, mark = lab.last_seq(), lab.kube_mark()
    preview = run_module(
        MODULE,
        {"state": "absent", "items": first["workloads"], "delete_binding_credential": True, **cluster},
        env=lab.env,
        check=True,
    )
    assert preview.changed and not preview.failed, preview.get("msg")
    assert all(w["identity_binding_deleted"] for w in preview["workloads"] if w["federation"] == "identity_binding")
    assert preview["identities"][0]["deleted"]
    assert lab.writes(seq) == [] and lab.kube_writes(mark, include_dry_run=True) == []

    # A partial teardown: five bound ServiceAccounts leave, the binding and the other 20 stay.
    leaving = first["workloads"][:5]
    seq, mark = lab.last_seq(), lab.kube_mark()
    partial = run_module(MODULE, {"state": "absent", "items": leaving, "keep_items": items, **cluster}, env=lab.env)
    assert partial.changed and not partial.failed, partial.get("msg")
    assert all(w["binding_access_removed"] and not w["identity_binding_deleted"] for w in partial["workloads"])
    assert len(rbac.read_cluster_role_binding(name).subjects) == 20
    assert not may_use(kube, items[0]["namespace"], items[0]["service_account"], client_id)
    assert may_use(kube, items[5]["namespace"], items[5]["service_account"], client_id)
    assert len(identity_state(lab, tag)["bindings"]) == 1

    # The rest, keeping AKS's credential (the default): the binding and our RBAC go, the identity stays for it.
    rest = first["workloads"][5:]
    kept = run_module(MODULE, {"state": "absent", "items": rest, **cluster}, env=lab.env)
    assert kept.changed and not kept.failed, kept.get("msg")
    state = identity_state(lab, tag)
    assert state["bindings"] == [] and state["credentials"] == [wi.IDENTITY_BINDING_CREDENTIAL_NAME]
    assert state["identity"] is not None
    report = kept["identities"][0]
    assert not report["deleted"] and wi.IDENTITY_BINDING_CREDENTIAL_NAME in report["kept_reason"]
    for kind in ("cluster_role", "cluster_role_binding"):
        with pytest.raises(k8s.ApiException) as gone:
            getattr(rbac, f"read_{kind}")(name)
        assert gone.value.status == 404

    # Asked to, the credential goes and the identity with it; then a re-run is a no-op.
    final = run_module(
        MODULE, {"state": "absent", "items": rest, "delete_binding_credential": True, **cluster}, env=lab.env
    )
    assert final.changed and not final.failed, final.get("msg")
    assert final["identities"][0]["deleted"]
    assert identity_state(lab, tag) == {"identity": None, "credentials": [], "bindings": []}
    seq = lab.last_seq()
    noop = run_module(
        MODULE, {"state": "absent", "items": rest, "delete_binding_credential": True, **cluster}, env=lab.env
    )
    assert not noop.changed and not noop.failed, noop.get("msg")
    assert lab.writes(seq) == []


def test_binding_items_need_the_cluster_named_and_fail_without_a_write(lab):
    items = items_for(lab, f"ib{uuid.uuid4().hex[:4]}", 1)
    seq = lab.last_seq()
    failed = run_module(MODULE, {"items": items, "issuer_url": "https://issuer.example/x/"}, env=lab.env)
    assert failed.failed
    assert "federation: identity_binding needs the cluster (cluster_resource_group and cluster_name)" in failed["msg"]
    assert lab.requests(seq) == []


def test_a_missing_cluster_is_found_by_reading(lab):
    items = items_for(lab, f"ib{uuid.uuid4().hex[:4]}", 2)
    args = {"items": items, "issuer_url": "https://issuer.example/x/"}
    args.update(cluster_resource_group=lab.seed["resource_group"], cluster_name="aks-nowhere")
    seq = lab.last_seq()
    failed = run_module(MODULE, args, env=lab.env)
    assert failed.failed and "does not exist" in failed["msg"] and "aks-nowhere" in failed["msg"], failed.get("msg")
    assert lab.writes(seq) == []
