"""wid_info with AKS identity bindings, on the lab: the binding findings on planted objects, AKS's aks-identity-binding
credential never taken for an orphan, how each ServiceAccount reaches its identity (credential, binding, both), the
exact requests the bindings add (one binding list per audited cluster, one list each of ClusterRoles and
ClusterRoleBindings, checked against the emulator's and the apiserver's logs), check mode, the switch that turns it
off, and a user who may not list RBAC (a warning, not a failure).

Bindings are made with aks.workload_identity.aks_identity_binding and our RBAC with wid_identity_binding_access (the
modules a user would run); hand-made RBAC, identities, credentials and Kubernetes objects with the SDKs. Nothing is
checked through the module under test's own writes: it has none.
"""

from __future__ import annotations

import collections
import uuid

import pytest
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.containerservice import models as aks_models
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.resource.resources import ResourceManagementClient
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from ansible_collections.aks.workload_identity.plugins.module_utils import workload_identity as wi
from tests.integration.runner import run_module
from tests.integration.sdk import sdk_client

pytestmark = pytest.mark.lab

MODULE = "wid_info"
LAB_CLUSTER = "aks-wid-lab"
FAST = {"lro_polling_interval": 0.2}  # the emulator sends no Retry-After: poll quickly
BUDGET = 17  # credentials on one identity: over the warning threshold (16), under Azure's 20
BINDING_CALLS = {
    "containerservice.identity_bindings.list_by_managed_cluster": 1,
    "kubernetes.clusterroles.list": 1,
    "kubernetes.clusterrolebindings.list": 1,
}


# --- clients and helpers ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sdk(lab) -> dict:
    return {
        "aks": sdk_client(lab, ContainerServiceClient, polling_interval=0.2),
        "msi": sdk_client(lab, ManagedServiceIdentityClient, polling_interval=0.2),
        "resources": sdk_client(lab, ResourceManagementClient, polling_interval=0.2),
    }


@pytest.fixture(scope="module")
def kube(lab) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=str(lab.admin_kubeconfig))


def deployment(name: str, service_account: str, *, opted_in: bool) -> dict:
    annotations = {wi.ANNOTATION_USE_IDENTITY_BINDING: "true"} if opted_in else {}
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, wi.LABEL_USE: "true"}, "annotations": annotations},
                "spec": {"serviceAccountName": service_account, "containers": [{"name": "app", "image": "busybox"}]},
            },
        },
    }


def rbac_pair(name: str, client_ids: list[str], subjects: list[dict]) -> tuple[dict, dict]:
    """A hand-made ClusterRole granting use-managed-identity on ``client_ids`` and its ClusterRoleBinding: names of
    our own, not the collection's."""
    role = {
        "metadata": {"name": name},
        "rules": [
            {
                "apiGroups": [wi.IDENTITY_BINDING_RBAC_API_GROUP],
                "resources": client_ids,
                "verbs": [wi.IDENTITY_BINDING_RBAC_VERB],
            }
        ],
    }
    binding = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": subjects,
    }
    return role, binding


def bind(lab, group: str, cluster: str, identity: str, identity_group: str) -> dict:
    """An identity binding, made as a user would (aks_identity_binding)."""
    args = {
        "resource_group": group,
        "cluster_name": cluster,
        "identity_name": identity,
        "identity_resource_group": identity_group,
        **FAST,
    }
    made = run_module("aks_identity_binding", args, env=lab.env)
    assert made.changed and not made.failed, made.get("msg")
    return made.result


def make_cluster(sdk: dict, group: str, name: str) -> None:
    body = {
        "location": "eastus",
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "dnsPrefix": name,
            "agentPoolProfiles": [{"name": "system", "count": 1, "vmSize": "Standard_D4ds_v5", "mode": "System"}],
            "oidcIssuerProfile": {"enabled": True},
        },
    }
    sdk["aks"].managed_clusters.begin_create_or_update(group, name, aks_models.ManagedCluster(body)).result()


# --- the planted set-up ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted(lab, sdk, kube, cluster):
    """One namespace and these identities (in the lab's group):

    - ``bound``: bound to the lab cluster; ServiceAccount ``granted`` (our RBAC) and ``by-hand`` (hand-made RBAC
      naming its user) use it; ``refused`` is annotated with it and opts in, without a grant;
    - ``unbound``: no binding; ServiceAccount ``unbound`` opts in and is granted it by the hand-made role;
    - ``elsewhere``: bound to another cluster only (made here, in a group of its own);
    - ``full``: 17 federated credentials for 17 plain ServiceAccounts;

    plus a ClusterRoleBinding granting a client ID no identity has to the namespace's group."""
    previous = lab.settings()["lro_seconds"]
    lab.settings(lro_seconds=0.3)
    rg, tag = lab.seed["resource_group"], uuid.uuid4().hex[:6]
    namespace, other_group, other_cluster = f"wib-{tag}", f"rg-wib-{tag}", f"aks-wib-{tag}"
    msi = sdk["msi"]
    names = {key: f"id-wib-{tag}-{key}" for key in ("bound", "unbound", "elsewhere", "full")}
    identities = {
        key: msi.user_assigned_identities.create_or_update(rg, name, {"location": "eastus"})
        for key, name in names.items()
    }
    client = {key: identity.client_id for key, identity in identities.items()}
    ghost = str(uuid.uuid4())
    issuer = sdk["aks"].managed_clusters.get(rg, LAB_CLUSTER).oidc_issuer_profile.issuer_url

    sdk["resources"].resource_groups.create_or_update(other_group, {"location": "eastus"})
    make_cluster(sdk, other_group, other_cluster)
    binding = bind(lab, rg, LAB_CLUSTER, names["bound"], rg)
    bind(lab, other_group, other_cluster, names["elsewhere"], rg)
    for index in range(BUDGET):
        msi.federated_identity_credentials.create_or_update(
            rg,
            names["full"],
            f"fic-{index:02d}",
            {
                "issuer": issuer,
                "subject": f"system:serviceaccount:{namespace}:sa-{index:02d}",
                "audiences": [wi.DEFAULT_AUDIENCE],
            },
        )

    core, apps, rbac = k8s.CoreV1Api(kube), k8s.AppsV1Api(kube), k8s.RbacAuthorizationV1Api(kube)
    core.create_namespace({"metadata": {"name": namespace}})
    annotated = {"granted": "bound", "by-hand": "bound", "refused": "bound", "unbound": "unbound"}
    for account, key in annotated.items():
        core.create_namespaced_service_account(
            namespace, {"metadata": {"name": account, "annotations": {wi.ANNOTATION_CLIENT_ID: client[key]}}}
        )
        apps.create_namespaced_deployment(namespace, deployment(account, account, opted_in=True))
    for index in range(BUDGET):
        core.create_namespaced_service_account(namespace, {"metadata": {"name": f"sa-{index:02d}"}})
    granted = run_module(
        "wid_identity_binding_access",
        {"client_id": client["bound"], "service_accounts": [{"namespace": namespace, "name": "granted"}]},
        env=lab.env,
    )
    assert granted.changed and not granted.failed, granted.get("msg")
    hand_made = {
        f"wib-{tag}-hand": rbac_pair(
            f"wib-{tag}-hand",
            [client["bound"], client["unbound"]],
            [
                {"kind": "User", "name": f"system:serviceaccount:{namespace}:by-hand"},
                {"kind": "ServiceAccount", "name": "unbound", "namespace": namespace},
            ],
        ),
        f"wib-{tag}-ghost": rbac_pair(
            f"wib-{tag}-ghost",
            [ghost],
            [{"kind": "Group", "name": f"system:serviceaccounts:{namespace}", "apiGroup": "rbac.authorization.k8s.io"}],
        ),
    }
    for pair in hand_made.values():
        rbac.create_cluster_role(pair[0])
        rbac.create_cluster_role_binding(pair[1])
    yield {
        "rg": rg,
        "tag": tag,
        "namespace": namespace,
        "names": names,
        "client": client,
        "ghost": ghost,
        "binding": binding,
        "other_group": other_group,
        "other_cluster": other_cluster,
    }
    for name in hand_made:
        rbac.delete_cluster_role_binding(name)
        rbac.delete_cluster_role(name)
    run_module(
        "wid_identity_binding_access",
        {
            "client_id": client["bound"],
            "service_accounts": [{"namespace": namespace, "name": "granted"}],
            "state": "absent",
        },
        env=lab.env,
    )
    core.delete_namespace(namespace)
    run_module(
        "aks_identity_binding",
        {
            "resource_group": rg,
            "cluster_name": LAB_CLUSTER,
            "name": binding["identity_binding"]["name"],
            "state": "absent",
            **FAST,
        },
        env=lab.env,
    )
    sdk["resources"].resource_groups.begin_delete(other_group).result()  # the other cluster and its binding
    for name in names.values():
        msi.user_assigned_identities.delete(rg, name)
    lab.settings(lro_seconds=previous)


def audit_args(lab, planted, *clusters: tuple[str, str], **extra) -> dict:
    return {
        "clusters": [{"resource_group": g, "name": n} for g, n in clusters or [(planted["rg"], LAB_CLUSTER)]],
        "identity_resource_groups": [planted["rg"]],
        "namespaces": [planted["namespace"]],
        "pod_identity": False,
        **extra,
    }


def mine(result: dict, planted: dict) -> list[tuple[str, str, str]]:
    """(severity, code, subject) of the findings about this test's objects (the lab holds other tests' too)."""
    return sorted(
        (f["severity"], f["code"], f["subject"]) for f in result["findings"] if planted["tag"] in f["subject"]
    )


def entry(result: dict, planted: dict, account: str, identity: str = "bound") -> dict:
    """The map entry of (ServiceAccount, identity): the hand-made role grants two identities to some of them."""
    client_id = planted["client"][identity].lower()
    return next(
        e
        for e in result["map"]
        if (e["namespace"], e["service_account"], e["client_id"].lower()) == (planted["namespace"], account, client_id)
    )


# --- the tests -------------------------------------------------------------------------------------------------------
def test_binding_findings_and_no_orphan(lab, planted):
    rg, namespace, names, tag = planted["rg"], planted["namespace"], planted["names"], planted["tag"]
    seq, mark = lab.last_seq(), lab.kube_mark()
    run = run_module(MODULE, audit_args(lab, planted), env=lab.env)
    assert not run.failed and not run.changed, run.result
    assert mine(run.result, planted) == sorted(
        [
            ("error", "identity-binding-access-missing", f"ServiceAccount/{namespace}/refused"),
            ("error", "identity-binding-missing", f"Deployment/{namespace}/unbound"),
            ("info", "identity-binding-access-stale", f"ClusterRoleBinding/wib-{tag}-hand"),
            ("info", "identity-binding-access-stale", f"ClusterRoleBinding/wib-{tag}-ghost"),
            (
                "info",
                "identity-binding-credential-unbound",
                f"FederatedIdentityCredential/{rg}/{names['elsewhere']}/{wi.IDENTITY_BINDING_CREDENTIAL_NAME}",
            ),
            ("warning", "credential-budget", f"UserAssignedIdentity/{rg}/{names['full']}"),
        ]
    )
    found = {(f["code"], f["subject"]): f for f in run["findings"]}
    refused = found[("identity-binding-access-missing", f"ServiceAccount/{namespace}/refused")]
    assert "Deployment refused opt in" in refused["message"] and "token proxy refuses" in refused["message"]
    assert "aks.workload_identity.wid_identity_binding_access" in refused["fix"]
    assert "federation: identity_binding" in refused["fix"]
    missing = found[("identity-binding-missing", f"Deployment/{namespace}/unbound")]
    assert f"no identity binding on cluster {rg}/{LAB_CLUSTER}" in missing["message"]
    stale = found[("identity-binding-access-stale", f"ClusterRoleBinding/wib-{tag}-ghost")]
    assert planted["ghost"] in stale["message"] and "no managed identity" in stale["message"]
    stale_hand = found[("identity-binding-access-stale", f"ClusterRoleBinding/wib-{tag}-hand")]
    assert planted["client"]["unbound"] in stale_hand["message"]
    unbound = found[
        (
            "identity-binding-credential-unbound",
            f"FederatedIdentityCredential/{rg}/{names['elsewhere']}/{wi.IDENTITY_BINDING_CREDENTIAL_NAME}",
        )
    ]
    assert "may serve a binding on another cluster" in unbound["message"]
    assert "only once no cluster binds the identity" in unbound["fix"]
    budget = found[("credential-budget", f"UserAssignedIdentity/{rg}/{names['full']}")]
    assert f"{BUDGET} of the 20" in budget["message"]
    assert budget["fix"].startswith("Move its Kubernetes ServiceAccounts to an identity binding")
    # AKS's credential on the bound identity: no finding of any kind (not orphaned, not of an unknown issuer).
    assert not [f for f in run["findings"] if names["bound"] in f["subject"]]
    # Read-only.
    assert lab.writes(seq) == [] and lab.kube_writes(mark) == []


def test_the_map_says_how_each_service_account_reaches_its_identity(lab, planted):
    run = run_module(MODULE, audit_args(lab, planted), env=lab.env)
    client, binding = planted["client"], planted["binding"]
    granted = entry(run.result, planted, "granted")
    assert granted["via"] == "identity_binding" and granted["credentials"] == []
    assert [(b["name"], b["cluster_name"], b["issuer_url"]) for b in granted["bindings"]] == [
        (binding["identity_binding"]["name"], LAB_CLUSTER, binding["issuer_url"])
    ]
    ours = wi.identity_binding_role_name(client["bound"])
    assert granted["rbac_grants"] == [
        {
            "cluster_role": ours,
            "cluster_role_binding": ours,
            "subject": f"ServiceAccount/{planted['namespace']}/granted",
        }
    ]
    assert granted["workloads"] == [
        {"kind": "Deployment", "name": "granted", "labelled": True, "identity_binding": True}
    ]
    by_hand = entry(run.result, planted, "by-hand")
    assert by_hand["via"] == "identity_binding"
    assert [g["subject"] for g in by_hand["rbac_grants"]] == [
        f"User/system:serviceaccount:{planted['namespace']}:by-hand"
    ]
    assert entry(run.result, planted, "refused")["via"] == "none"
    unbound = entry(run.result, planted, "unbound", "unbound")
    assert unbound["annotated"] and unbound["via"] == "none" and unbound["bindings"] == []
    assert [g["cluster_role_binding"] for g in unbound["rbac_grants"]] == [f"wib-{planted['tag']}-hand"]
    # The hand-made role also lets it use the bound identity, which it is not annotated with: shown, not judged.
    also = entry(run.result, planted, "unbound", "bound")
    assert not also["annotated"] and also["via"] == "identity_binding"
    assert entry(run.result, planted, "sa-00", "full")["via"] == "federated_credential"
    identities = {i["name"]: i for i in run["identities"]}
    bound = identities[planted["names"]["bound"]]
    assert [b["name"] for b in bound["bindings"]] == [binding["identity_binding"]["name"]]
    assert wi.IDENTITY_BINDING_CREDENTIAL_NAME in [c["name"] for c in bound["credentials"]]
    assert {g["cluster_role_binding"] for g in bound["rbac_grants"]} == {ours, f"wib-{planted['tag']}-hand"}
    assert identities[planted["names"]["full"]]["credential_count"] == BUDGET
    ghost = next(g for g in run["rbac_grants"] if g["client_id"] == planted["ghost"])
    assert ghost["identity"] is None and ghost["subjects"] == [f"Group/system:serviceaccounts:{planted['namespace']}"]
    assert any(b["client_id"] == client["bound"] for b in run["identity_bindings"])


def test_requests_added_and_their_logs(lab, planted):
    # The same audit without bindings, then with: the difference is exactly one binding list and the two RBAC lists.
    off = run_module(MODULE, audit_args(lab, planted, identity_bindings=False), env=lab.env)
    seq, mark = lab.last_seq(), lab.kube_mark()
    on = run_module(MODULE, audit_args(lab, planted), env=lab.env)
    added = collections.Counter(on["api_calls"])
    added.subtract(off["api_calls"])
    assert {k: v for k, v in added.items() if v} == BINDING_CALLS
    # The emulator and the apiserver saw exactly those.
    arm = [r for r in lab.requests(seq) if r["plane"] == "arm" and not r["path"].startswith("/metadata/")]
    assert len([r for r in arm if "/identitybindings" in r["path"].lower()]) == 1
    assert len(arm) == sum(v for k, v in on["api_calls"].items() if not k.startswith("kubernetes."))
    rbac = [e for e in lab.kube_requests(mark) if "rbac.authorization.k8s.io" in e["uri"]]
    assert sorted((e["verb"], e["uri"].split("?")[0].rsplit("/", 1)[1]) for e in rbac) == [
        ("list", "clusterrolebindings"),
        ("list", "clusterroles"),
    ]
    # Off: nothing judged, and AKS's credential is still not taken for an orphan.
    assert off["identity_bindings"] is None and off["rbac_grants"] is None
    assert not [f for f in off["findings"] if f["code"].startswith("identity-binding-")]
    assert not [f for f in off["findings"] if wi.IDENTITY_BINDING_CREDENTIAL_NAME in f["subject"]]


def test_a_second_cluster_is_one_more_list_and_explains_the_credential(lab, planted):
    both = ((planted["rg"], LAB_CLUSTER), (planted["other_group"], planted["other_cluster"]))
    run = run_module(MODULE, audit_args(lab, planted, *both), env=lab.env)
    assert not run.failed, run.result
    assert run["api_calls"]["containerservice.identity_bindings.list_by_managed_cluster"] == 2
    assert not [
        f
        for f in run["findings"]
        if f["code"] == "identity-binding-credential-unbound" and planted["tag"] in f["subject"]
    ]
    elsewhere = next(i for i in run["identities"] if i["name"] == planted["names"]["elsewhere"])
    assert [(b["cluster_resource_group"], b["cluster_name"]) for b in elsewhere["bindings"]] == [
        (planted["other_group"], planted["other_cluster"])
    ]
    # A binding on another cluster is not one on this cluster: the workload that opts in still has none here.
    assert ("identity-binding-missing", f"Deployment/{planted['namespace']}/unbound") in {
        (f["code"], f["subject"]) for f in run["findings"]
    }


def test_check_mode_returns_the_same(lab, planted):
    seq, mark = lab.last_seq(), lab.kube_mark()
    checked = run_module(MODULE, audit_args(lab, planted), env=lab.env, check=True)
    real = run_module(MODULE, audit_args(lab, planted), env=lab.env)
    assert not checked.changed
    keys = ("map", "identities", "findings", "identity_bindings", "rbac_grants", "summary", "api_calls")
    assert {k: checked[k] for k in keys} == {k: real[k] for k in keys}
    assert lab.writes(seq) == [] and lab.kube_writes(mark, include_dry_run=True) == []


def test_a_user_who_may_not_list_rbac_gets_a_warning_not_a_failure(lab, planted):
    env = {**lab.env, "K8S_AUTH_KUBECONFIG": str(lab.restricted_kubeconfig)}
    args = audit_args(lab, planted, namespaces=[lab.restricted_namespace])
    run = run_module(MODULE, args, env=env)
    assert not run.failed, run.get("msg")
    assert run["rbac_grants"] is None and run["identity_bindings"] is not None
    warnings = " ".join(str(w) for w in run.get("warnings") or [])
    assert "who may use identity bindings was not judged" in warnings, run.result
    assert run["api_calls"]["kubernetes.clusterroles.list"] == 1
    assert "kubernetes.clusterrolebindings.list" not in run["api_calls"]
