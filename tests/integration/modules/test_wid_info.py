"""wid_info on the lab, run through ansible-playbook: findings on planted objects, nothing on a clean set-up,
the request budget (one list per kind, never one per namespace; the emulator's request log agrees with
api_calls), and no write anywhere, in check mode or not.

Objects are planted with the Azure SDK and the kubernetes client, never with the collection."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.integration.runner import run_module

pytestmark = pytest.mark.lab

MODULE = "wid_info"
USE_LABEL = "azure.workload.identity/use"
CLIENT_ID_KEY = "azure.workload.identity/client-id"
UNKNOWN_CLIENT_ID = "00000000-0000-4000-8000-00000000beef"
KUBE_LISTS = ("serviceaccounts", "deployments", "statefulsets", "daemonsets", "jobs", "cronjobs", "pods")


@pytest.fixture(scope="module")
def kube(lab) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(
        config_file=lab.env["K8S_AUTH_KUBECONFIG"], client_configuration=configuration, persist_config=False
    )
    return k8s.ApiClient(configuration)


@pytest.fixture(scope="module")
def issuer(lab) -> str:
    """The lab cluster's issuer, with the OIDC issuer on (the module under test never writes, aks_oidc may)."""
    enabled = run_module("aks_oidc", {"resource_group": lab.seed["resource_group"], "name": "aks-wid-lab"}, env=lab.env)
    assert not enabled.failed, enabled.result
    return enabled["issuer_url"]


def deployment(name: str, service_account: str, labelled: bool) -> dict:
    labels = {"app": name, **({USE_LABEL: "true"} if labelled else {})}
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"serviceAccountName": service_account, "containers": [{"name": "app", "image": "busybox"}]},
            },
        },
    }


@pytest.fixture
def planted(lab, msi, kube, issuer):
    """A namespace with a clean workload and three problems; identities deleted afterwards."""
    rg, suffix = lab.seed["resource_group"], uuid.uuid4().hex[:8]
    namespace, identity_name = f"wid-info-{suffix}", f"id-wid-info-{suffix}"
    identity = msi.user_assigned_identities.create_or_update(rg, identity_name, {"location": "eastus"})
    credentials = msi.federated_identity_credentials
    for name, subject in (("good", "good"), ("gone", "gone")):
        credentials.create_or_update(
            rg,
            identity_name,
            f"fic-{name}",
            {
                "issuer": issuer,
                "subject": f"system:serviceaccount:{namespace}:{subject}",
                "audiences": ["api://AzureADTokenExchange"],
            },
        )
    core, apps = k8s.CoreV1Api(kube), k8s.AppsV1Api(kube)
    core.create_namespace({"metadata": {"name": namespace}})
    for name, client_id in (("good", identity.client_id), ("stranger", UNKNOWN_CLIENT_ID)):
        core.create_namespaced_service_account(
            namespace, {"metadata": {"name": name, "annotations": {CLIENT_ID_KEY: client_id}}}
        )
    apps.create_namespaced_deployment(namespace, deployment("good", "good", labelled=True))
    apps.create_namespaced_deployment(namespace, deployment("unlabelled", "good", labelled=False))
    yield {"namespace": namespace, "identity": identity_name, "client_id": identity.client_id, "rg": rg}
    msi.user_assigned_identities.delete(rg, identity_name)
    for name in ("good", "unlabelled"):
        apps.delete_namespaced_deployment(name, namespace)
    for name in ("good", "stranger"):
        core.delete_namespaced_service_account(name, namespace)


def audit_args(lab, planted, **extra) -> dict:
    return {
        "clusters": [{"resource_group": lab.seed["resource_group"], "name": "aks-wid-lab"}],
        "identity_resource_groups": [planted["rg"]],
        "namespaces": [planted["namespace"]],
        **extra,
    }


def mine(result: dict, planted: dict) -> list[tuple[str, str]]:
    """The findings about this test's objects (the lab may hold other tests' objects)."""
    return [
        (f["code"], f["subject"])
        for f in result["findings"]
        if planted["namespace"] in f["subject"] or planted["identity"] in f["subject"]
    ]


def test_finds_the_planted_problems_and_writes_nothing(lab, planted):
    namespace, identity, rg = planted["namespace"], planted["identity"], planted["rg"]
    seq, mark = lab.last_seq(), lab.kube_mark()
    run = run_module(MODULE, audit_args(lab, planted), env=lab.env)
    assert not run.failed, run.result
    assert not run.changed
    assert sorted(mine(run.result, planted)) == sorted(
        [
            ("credential-orphaned", f"FederatedIdentityCredential/{rg}/{identity}/fic-gone"),
            ("annotation-unknown-client-id", f"ServiceAccount/{namespace}/stranger"),
            ("workload-label-missing", f"Deployment/{namespace}/unlabelled"),
        ]
    )
    good = next(e for e in run["map"] if e["namespace"] == namespace and e["service_account"] == "good")
    assert good["annotated"] and good["identity"]["name"] == identity
    assert [(c["name"], c["issuer_status"]) for c in good["credentials"]] == [("fic-good", "ok")]
    assert {(w["name"], w["labelled"]) for w in good["workloads"]} == {("good", True), ("unlabelled", False)}
    assert run["cluster_issuer"] == run["clusters"][0]["issuer_url"]
    # Read-only: not one write to Azure or Kubernetes.
    assert lab.writes(seq) == []
    assert lab.kube_writes(mark) == []


def test_request_budget_matches_the_emulator_log(lab, msi, planted):
    identities = len(list(msi.user_assigned_identities.list_by_resource_group(planted["rg"])))
    seq = lab.last_seq()
    run = run_module(MODULE, audit_args(lab, planted), env=lab.env)
    calls = run["api_calls"]
    assert calls["containerservice.managed_clusters.get"] == 1
    assert calls["msi.user_assigned_identities.list_by_resource_group"] == 1
    assert calls["msi.federated_identity_credentials.list"] == identities
    assert calls["authorization.role_assignments.list_for_subscription"] == 1
    assert all(calls[f"kubernetes.{kind}.list"] == 1 for kind in KUBE_LISTS)
    assert calls["kubernetes.openid_configuration.get"] == 1
    # Identity bindings: one list per audited cluster, one list each of ClusterRoles and ClusterRoleBindings.
    assert calls["containerservice.identity_bindings.list_by_managed_cluster"] == 1
    assert calls["kubernetes.clusterroles.list"] == calls["kubernetes.clusterrolebindings.list"] == 1
    # The emulator saw exactly the Azure requests the module counted (tokens and cloud metadata aside).
    arm = [r for r in lab.requests(seq) if r["plane"] == "arm" and not r["path"].startswith("/metadata/")]
    azure_calls = {k: v for k, v in calls.items() if not k.startswith("kubernetes.")}
    assert len(arm) == sum(azure_calls.values()), arm


def test_more_namespaces_cost_no_more_requests(lab, planted):
    one = run_module(MODULE, audit_args(lab, planted), env=lab.env)
    three = run_module(
        MODULE, audit_args(lab, planted, namespaces=[planted["namespace"], "default", "kube-system"]), env=lab.env
    )
    assert one["api_calls"] == three["api_calls"]
    assert mine(one.result, planted) == mine(three.result, planted)


def test_check_mode_returns_the_same(lab, planted):
    mark, seq = lab.kube_mark(), lab.last_seq()
    checked = run_module(MODULE, audit_args(lab, planted), env=lab.env, check=True)
    real = run_module(MODULE, audit_args(lab, planted), env=lab.env)
    assert not checked.changed
    assert {k: checked[k] for k in ("map", "findings", "summary", "api_calls")} == {
        k: real[k] for k in ("map", "findings", "summary", "api_calls")
    }
    assert lab.writes(seq) == [] and lab.kube_writes(mark, include_dry_run=True) == []


def test_clean_setup_has_no_finding(lab, planted, kube):
    apps = k8s.AppsV1Api(kube)
    apps.delete_namespaced_deployment("unlabelled", planted["namespace"])
    apps.create_namespaced_deployment(planted["namespace"], deployment("unlabelled", "good", labelled=True))
    k8s.CoreV1Api(kube).delete_namespaced_service_account("stranger", planted["namespace"])
    k8s.CoreV1Api(kube).create_namespaced_service_account(planted["namespace"], {"metadata": {"name": "stranger"}})
    run = run_module(MODULE, audit_args(lab, planted), env=lab.env)
    found = mine(run.result, planted)
    assert found == [
        ("credential-orphaned", f"FederatedIdentityCredential/{planted['rg']}/{planted['identity']}/fic-gone")
    ]
    run = run_module(MODULE, audit_args(lab, planted, namespaces=["default"]), env=lab.env)
    assert mine(run.result, planted) == []  # the orphaned credential's namespace is not audited


def test_bad_input_fails_before_any_request(lab):
    seq = lab.last_seq()
    run = run_module(MODULE, {"namespaces": ["Not_A_Namespace"], "credential_warning_threshold": 21}, env=lab.env)
    assert run.failed
    assert "namespaces[0]" in run["msg"] and "credential_warning_threshold" in run["msg"]
    assert [r for r in lab.requests(seq) if r["plane"] == "arm" and not r["path"].startswith("/metadata/")] == []
