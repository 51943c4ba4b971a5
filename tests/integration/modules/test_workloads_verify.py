"""workloads_verify on the lab: many workloads proven in one call (one token per ServiceAccount, real exchanges at the
emulated Entra ID, the ARM read with each workload's token), the reads of one snapshot only, drift named per
workload, and check mode minting no token. Set-up through the fleet module; drift planted with the kubernetes
client."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.runner import run_module
from tests.lab.kube import controlplane

pytestmark = pytest.mark.lab

MODULE = "workloads_verify"


@pytest.fixture(scope="module")
def fleet(lab, cluster) -> list[dict]:
    """Six workloads set up by the fleet module: their workload_results-shaped entries."""
    tag = f"vf{uuid.uuid4().hex[:4]}"
    scope = f"/subscriptions/{lab.env['AZURE_SUBSCRIPTION_ID']}/resourceGroups/{lab.seed['resource_group']}"
    items = [
        {
            "name": f"{tag}-{index}",
            "namespace": tag,
            "create_namespace": True,
            "service_account": f"sa-{index}",
            "identity": {"name": f"id-{tag}-{index % 4}", "resource_group": lab.seed["resource_group"]},
            "grants": [{"role": "Reader", "scope": scope}],
        }
        for index in range(6)
    ]
    done = run_module("workloads", {"items": items, **cluster}, env=lab.env)
    assert not done.failed, done.get("msg")
    return done["workloads"]


def test_many_workloads_are_proven_in_one_call_with_one_token_each(lab, cluster, fleet):
    scope = fleet[0]["grants"][0]["scope"]
    args = {"items": fleet, **cluster, "arm_resource_id": scope, "parallel": 3}
    marks = (lab.last_seq(), lab.kube_mark())
    result = run_module(MODULE, args, env=lab.env)
    assert not result.failed and not result.changed, result.get("msg")
    assert result["passed"] and result["cluster_problems"] == []
    for workload in result["workloads"]:
        assert workload["passed"] and workload["problems"] == [], workload
        steps = {s["name"]: s["status"] for s in workload["proof"]["steps"]}
        assert (steps["token"], steps["exchange"], steps["access"]) == ("passed", "passed", "passed")
    kube = [e for e in controlplane.audit_requests(lab.workdir / "kube", marks[1]) if e["user"] == "lab-admin"]
    tokens = [e for e in kube if e["verb"] == "create" and e["uri"].split("?")[0].endswith("/token")]
    assert len(tokens) == 6  # one TokenRequest per ServiceAccount
    assert len([e for e in kube if e["verb"] == "list"]) == 1  # the namespace's ServiceAccounts, once
    requests = lab.requests(marks[0])
    # The snapshot: the cluster, the identities of one resource group, 4 credential lists, one assignment list.
    lists = [r for r in requests if r["plane"] == "arm" and r["path"].lower().endswith("/federatedidentitycredentials")]
    assert len(lists) == 4
    assert result["api_calls"]["msi.federated_identity_credentials.list"] == 4
    assert result["api_calls"]["msi.user_assigned_identities.list_by_resource_group"] == 1
    assert result["api_calls"]["authorization.role_assignments.list_for_scope"] == 1
    assert "msi.user_assigned_identities.get" not in result["api_calls"]  # the verifier re-read nothing
    exchanges = [r for r in requests if r["plane"] == "entra" and r["method"] == "POST"]
    assert len(exchanges) == 1 + 6  # the module's own sign-in, then one exchange per workload
    assert lab.writes(marks[0]) == []


def test_drift_is_named_per_workload_and_check_mode_mints_no_token(lab, cluster, fleet, core):
    drifted = fleet[1]
    wrong = "00000000-0000-4000-8000-00000000abcd"
    core.patch_namespaced_service_account(
        drifted["service_account"],
        drifted["namespace"],
        {"metadata": {"annotations": {"azure.workload.identity/client-id": wrong}}},
    )
    try:
        marks = (lab.last_seq(), lab.kube_mark())
        check = run_module(MODULE, {"items": fleet, **cluster}, env=lab.env, check=True)
        assert not check.failed and check["passed"] is False
        kube = controlplane.audit_requests(lab.workdir / "kube", marks[1])
        creates = [e for e in kube if e["verb"] == "create"]
        assert creates and all(e["dry_run"] for e in creates)  # the webhook's dry-run pods only: no TokenRequest
        by_name = {w["name"]: w for w in check["workloads"]}
        bad = by_name[drifted["name"]]
        assert bad["problems"][0] == (
            f"ServiceAccount {drifted['namespace']}/{drifted['service_account']} has annotation "
            f"azure.workload.identity/client-id {wrong}, but the client ID of managed identity "
            f"{drifted['identity_name']} (resource group {drifted['identity_resource_group']}) is {drifted['client_id']}"
        )
        assert all(w["passed"] for name, w in by_name.items() if name != drifted["name"])
        real = run_module(MODULE, {"items": fleet, **cluster}, env=lab.env)
        bad = {w["name"]: w for w in real["workloads"]}[drifted["name"]]
        assert bad["proof"]["status"] == "failed" and bad["proof"]["failed_step"] == "serviceaccount"
        assert bad["problems"][-1].startswith("proof failed at step serviceaccount:")
    finally:
        core.patch_namespaced_service_account(
            drifted["service_account"],
            drifted["namespace"],
            {"metadata": {"annotations": {"azure.workload.identity/client-id": drifted["client_id"]}}},
        )


def test_a_missing_identity_is_a_finding_not_a_failure(lab, cluster, fleet):
    ghost = {
        **fleet[0],
        "name": "ghost",
        "service_account": "ghost",
        "identity_name": f"id-ghost-{uuid.uuid4().hex[:4]}",
    }
    result = run_module(MODULE, {"items": [ghost], **cluster, "prove": True}, env=lab.env)
    assert not result.failed and result["passed"] is False
    (workload,) = result["workloads"]
    assert workload["problems"][0].endswith("does not exist") and workload["proof"]["status"] == "skipped"
