"""workloads_verify and wid_verify with AKS identity bindings, on the lab: three workloads bound through two identities
(set up by the fleet module, with a Key Vault grant) are proven through the lab's AKS token proxy with azure-identity's
own enable_azure_proxy path, reading the vault's secret; a ServiceAccount taken out of our RBAC and a deleted binding
are named; check mode writes nothing on either side (a SubjectAccessReview and a dry run store nothing); a binding
item without a cluster is refused before any request. Drift is planted with the test's own clients (kubernetes, the
AKS SDK), never through the module under test."""

from __future__ import annotations

import re
import uuid

import pytest
from azure.mgmt.containerservice import ContainerServiceClient
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from ansible_collections.aks.workload_identity.plugins.module_utils import workload_identity as wi
from tests.integration.modules.test_role_assignment import sdk_client
from tests.integration.runner import run_module

pytestmark = pytest.mark.lab

MODULE = "workloads_verify"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.")
PROVEN = {
    "serviceaccount": "passed",
    "cluster": "passed",
    "credential": "passed",
    "token": "passed",
    "exchange": "passed",
    "access": "passed",
    "webhook": "passed",
}


@pytest.fixture(scope="module")
def rbac(lab) -> k8s.RbacAuthorizationV1Api:
    return k8s.RbacAuthorizationV1Api(k8s_config.new_client_from_config(config_file=str(lab.admin_kubeconfig)))


@pytest.fixture(scope="module")
def bound(lab, cluster) -> dict:
    """Three workloads using identity bindings (two share an identity), each granted Key Vault Secrets User on the
    lab's RBAC vault, set up by the fleet module; the namespace gets kube-root-ca.crt as kube-controller-manager
    would publish it. Their workload_results-shaped entries and the items."""
    tag = f"vb{uuid.uuid4().hex[:4]}"
    sub, rg = lab.env["AZURE_SUBSCRIPTION_ID"], lab.seed["resource_group"]
    vault = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{lab.seed['rbac_vault']}"
    items = [
        {
            "name": f"{tag}-{index}",
            "namespace": tag,
            "create_namespace": True,
            "service_account": f"sa-{index}",
            "identity": {"name": f"id-{tag}-{index // 2}", "resource_group": rg},
            "federation": "identity_binding",
            "grants": [{"role": "Key Vault Secrets User", "scope": vault}],
        }
        for index in range(3)
    ]
    lab.settings(lro_seconds=0.3)
    done = run_module("workloads", {"items": items, **cluster}, env=lab.env)
    assert not done.failed, done.get("msg")
    lab.publish_root_ca(tag)
    return {"tag": tag, "items": items, "results": done["workloads"]}


def proof_args(lab, cluster, bound) -> dict:
    return {
        "items": bound["results"],
        **cluster,
        "keyvault": lab.seed["rbac_vault"],
        "secret_name": lab.seed["secret_name"],
        "parallel": 3,
    }


def steps(proof: dict) -> dict[str, str]:
    return {step["name"]: step["status"] for step in proof["steps"]}


def kube_writes(lab, mark: int) -> list[str]:
    """What the apiserver was asked to create, by whom, dry runs excluded: 'user resource' each."""
    return [f"{e['user']} {e['uri'].split('?')[0].rsplit('/', 1)[-1]}" for e in lab.kube_writes(mark)]


def test_bound_workloads_are_proven_through_the_token_proxy(lab, cluster, bound):
    seq, mark = lab.last_seq(), lab.kube_mark()
    result = run_module(MODULE, proof_args(lab, cluster, bound), env=lab.env, verbosity=3)
    assert not result.failed and not result.changed, result.get("msg")
    assert result["passed"] and result["cluster_problems"] == []
    for workload in result["workloads"]:
        assert workload["passed"] and workload["problems"] == [], workload
        assert workload["federation"] == "identity_binding" and workload["credential_name"] == ""
        assert workload["identity_binding_name"] == wi.default_identity_binding_name(workload["identity_name"])
        assert workload["binding_issuer_url"].endswith(f"/{workload['client_id']}")
        proof = workload["proof"]
        assert proof["status"] == "passed" and steps(proof) == PROVEN, proof
        assert proof["binding"]["provisioning_state"] == "Succeeded"
        assert proof["webhook"]["token_audience"] == lab.env["LAB_WEBHOOK_TOKEN_PROXY_AUDIENCE"]
        assert proof["webhook"]["token_proxy"] == lab.env["LAB_TOKEN_PROXY_URL"]
        assert not workload["pod_proof_ready"]  # the docs' pod does not use identity bindings
    requests = lab.requests(seq)
    token_path = f"/{lab.env['AZURE_TENANT']}/oauth2/v2.0/token"
    # Each workload's token requests went through the proxy (and the proxy to Entra): the exchange step's, and the
    # Key Vault client's own (it asks with enable_cae=True, a token cache of its own); the secret read with the result.
    assert [r["status"] for r in requests if r["plane"] == "token_proxy" and r["path"] == token_path] == [200] * 6
    assert len([r for r in requests if r["plane"] == "entra" and r["method"] == "POST"]) == 1 + 6
    assert len([r for r in requests if r["plane"] == "vault" and r["status"] == 200]) == 3
    calls = result["api_calls"]
    assert calls["containerservice.identity_bindings.list_by_managed_cluster"] == 1  # one list serves all three
    assert calls["kubernetes.subjectaccessreviews.create"] == 3  # one review each; the proofs reuse them
    assert calls["kubernetes.configmaps.get"] == 3  # the CA each pod would trust
    assert "kubernetes.clusterroles.get" not in calls  # only read to explain a denial
    assert "msi.user_assigned_identities.get" not in calls
    # Nothing written: Azure untouched; in Kubernetes the TokenRequests and the reviews (ours and the proxy's).
    assert lab.writes(seq) == []
    assert sorted(set(kube_writes(lab, mark))) == [
        "lab-admin subjectaccessreviews",
        "lab-admin token",
        "lab-aks-token-proxy subjectaccessreviews",
    ]
    assert lab.seed["secret_value"] not in result.output and not JWT.search(result.output)


def test_check_mode_writes_nothing_and_exchanges_nothing(lab, cluster, bound):
    seq, mark = lab.last_seq(), lab.kube_mark()
    result = run_module(MODULE, proof_args(lab, cluster, bound), env=lab.env, check=True)
    assert not result.failed and result["passed"], result.get("msg")
    for workload in result["workloads"]:
        found = steps(workload["proof"])
        assert {found[s] for s in ("token", "exchange", "access")} == {"skipped"}
        assert (found["cluster"], found["credential"], found["webhook"]) == ("passed", "passed", "passed")
    assert lab.writes(seq) == []
    assert [r for r in lab.requests(seq) if r["plane"] == "token_proxy"] == []
    # A SubjectAccessReview is a question the apiserver stores nowhere, and the pods were dry runs: no TokenRequest.
    assert sorted(set(kube_writes(lab, mark))) == ["lab-admin subjectaccessreviews"]
    dry = [e for e in lab.kube_writes(mark, include_dry_run=True) if e["dry_run"]]
    assert len(dry) == 3 and all(e["uri"].split("?")[0].endswith("/pods") for e in dry)


def test_a_service_account_taken_out_of_the_rbac_is_named(lab, cluster, bound, rbac):
    taken = bound["results"][1]
    name = wi.identity_binding_role_name(taken["client_id"])
    original = rbac.read_cluster_role_binding(name)
    kept = [s for s in original.subjects if s.name != taken["service_account"]]
    rbac.patch_cluster_role_binding(name, {"subjects": [k8s.ApiClient().sanitize_for_serialization(s) for s in kept]})
    try:
        result = run_module(MODULE, proof_args(lab, cluster, bound), env=lab.env)
        assert not result.failed and result["passed"] is False, result.get("msg")
        by_name = {w["name"]: w for w in result["workloads"]}
        bad = by_name[taken["name"]]
        assert bad["problems"][0] == (
            f"ServiceAccount {taken['namespace']}/{taken['service_account']} may not use managed identity "
            f"{taken['identity_name']} (resource group {taken['identity_resource_group']}): Kubernetes RBAC does not "
            f"grant it the verb use-managed-identity on resource {taken['client_id']} of API group "
            f"cid.wi.aks.azure.com, so the AKS token proxy refuses its tokens; ClusterRoleBinding {name} does not "
            "name it as a subject"
        )
        # The proxy's refusal confirms it, at the same step.
        assert bad["proof"]["failed_step"] == "serviceaccount" and steps(bad["proof"])["exchange"] == "failed"
        assert bad["proof"]["error_code"] == "IdentityBindingAccessDenied"
        assert bad["problems"][-1].startswith("proof failed at step serviceaccount:")
        assert all(w["passed"] for n, w in by_name.items() if n != taken["name"])  # the other user of the identity
        assert result["api_calls"]["kubernetes.clusterrolebindings.get"] == 1  # read to say why, once
    finally:
        subjects = [k8s.ApiClient().sanitize_for_serialization(s) for s in original.subjects]
        rbac.patch_cluster_role_binding(name, {"subjects": subjects})


def test_a_deleted_binding_is_named(lab, cluster, bound):
    alone = bound["results"][2]  # the only workload of its identity
    aks = sdk_client(lab, ContainerServiceClient)
    group, name = cluster["cluster_resource_group"], cluster["cluster_name"]
    aks.identity_bindings.begin_delete(group, name, alone["identity_binding_name"], polling_interval=0.1).result()
    try:
        result = run_module(MODULE, proof_args(lab, cluster, bound), env=lab.env)
        assert not result.failed and result["passed"] is False, result.get("msg")
        by_name = {w["name"]: w for w in result["workloads"]}
        bad = by_name[alone["name"]]
        assert bad["problems"][0] == (
            f"managed identity {alone['identity_name']} (resource group {alone['identity_resource_group']}) has no "
            f"identity binding on AKS cluster '{name}' in resource group '{group}': the AKS token proxy exchanges the "
            "tokens of its ServiceAccounts only for an identity bound to the cluster"
        )
        assert bad["binding_issuer_url"] == "" and bad["proof"]["failed_step"] == "cluster"
        assert bad["proof"]["error_code"] == "IdentityBindingNotFound"
        assert steps(bad["proof"])["exchange"] == "failed"  # the proxy refuses it too
        assert all(w["passed"] for n, w in by_name.items() if n != alone["name"])
    finally:
        again = run_module("workloads", {"items": bound["items"], **cluster}, env=lab.env)
        assert not again.failed, again.get("msg")


def test_wid_verify_proves_one_bound_workload(lab, cluster, bound):
    one = bound["results"][0]
    args = {
        "namespace": one["namespace"],
        "service_account": one["service_account"],
        "federation": "identity_binding",
        **cluster,
        "identity_resource_group": one["identity_resource_group"],
        "identity_name": one["identity_name"],
        "keyvault": lab.seed["rbac_vault"],
        "secret_name": lab.seed["secret_name"],
    }
    seq, mark = lab.last_seq(), lab.kube_mark()
    run = run_module("wid_verify", args, env=lab.env, verbosity=3)
    assert not run.failed, run.output
    assert run["passed"] and steps(run) == PROVEN and run["federation"] == "identity_binding"
    assert run["binding"]["name"] == one["identity_binding_name"]
    assert run["binding"]["issuer_url"] == one["binding_issuer_url"]
    assert run["expected"]["audience"] == run["claims"]["aud"][0] == lab.env["LAB_WEBHOOK_TOKEN_PROXY_AUDIENCE"]
    assert wi.ENV_KUBERNETES_TOKEN_PROXY in run["webhook"]["injected_env"]
    assert run["access"]["status"] == "passed" and run["credential"] is None
    assert lab.writes(seq) == []
    assert sorted(set(kube_writes(lab, mark))) == [
        "lab-admin subjectaccessreviews",
        "lab-admin token",
        "lab-aks-token-proxy subjectaccessreviews",
    ]
    assert lab.seed["secret_value"] not in run.output and not JWT.search(run.output)
    # Check mode: the agreement and the dry run, no token.
    check = run_module("wid_verify", args, env=lab.env, check=True)
    assert check["passed"] and {steps(check)[s] for s in ("token", "exchange", "access")} == {"skipped"}


def test_binding_items_without_a_cluster_are_refused_before_any_request(lab, bound):
    seq = lab.last_seq()
    refused = run_module(MODULE, {"items": bound["results"], "issuer_url": "https://issuer.example/x/"}, env=lab.env)
    assert refused.failed
    assert "federation: identity_binding needs the cluster (cluster_resource_group and cluster_name)" in refused["msg"]
    assert lab.requests(seq) == []
