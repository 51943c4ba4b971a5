"""The fleet filters the roles render with: batches, the input rules, summaries, teardown_results and
verify_results, from module results shaped as the fleet modules return them."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.aks.workload_identity.plugins.filter import fleet

SCOPE = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg1"


def workload(name: str, **overrides) -> dict:
    return {
        "name": name,
        "namespace": "ns",
        "service_account": name,
        "subject": f"system:serviceaccount:ns:{name}",
        "identity_name": f"id-{name}",
        "identity_resource_group": "rg",
        "client_id": None,
        "credential_name": "",
        "grants": [{"role": "Reader", "scope": SCOPE}],
        "configmap": "",
        "patched_workloads": [],
        "changed": True,
        "failed": False,
        "failed_step": None,
        "error": None,
        "actions": [{"step": "identity", "target": "x", "action": "create", "reason": ""}],
        **overrides,
    }


def test_batches_and_their_errors():
    items = [{"name": f"w{i}", "identity": {"name": f"id{i % 2}", "resource_group": "rg"}} for i in range(4)]
    assert [[i["name"] for i in b] for b in fleet.fleet_batches(items, 2)] == [["w0", "w2"], ["w1", "w3"]]
    with pytest.raises(AnsibleFilterError, match="must be a list"):
        fleet.fleet_batches("w0")
    with pytest.raises(AnsibleFilterError, match="at least 1"):
        fleet.fleet_batches(items, 0)


def test_fleet_errors_runs_the_modules_rules():
    bad = [
        {"name": "a", "namespace": "A", "service_account": "a", "identity": {"name": "id-a", "resource_group": "rg"}}
    ]
    assert fleet.fleet_errors(bad) == [
        "items[0] (a): namespace: must be an RFC 1123 label (lower-case letters, digits and '-', starting and ending "
        "alphanumeric)"
    ]
    assert fleet.fleet_errors([{**bad[0], "namespace": "a"}]) == []
    assert fleet.namespace_errors(["kube-system", "ok"], "teardown_delete_namespaces") == [
        "teardown_delete_namespaces[0]: 'kube-system' is a namespace every cluster needs; this module never deletes it"
    ]


def test_summary_details_small_fleets_and_counts_large_ones():
    small = fleet.fleet_summary([{"workloads": [workload("a"), workload("b", changed=False, actions=[])]}])
    assert small[0] == "Workload a" and "  client ID       (assigned on creation)" in small
    assert small[-1] == "2 workloads: 1 changed, 1 unchanged, 0 failed"
    many = [workload(f"w{i}", changed=i == 3) for i in range(30)]
    many[5] = workload("w5", changed=False, failed=True, failed_step="grants", error="boom")
    lines = fleet.fleet_summary(many, check_mode=True)
    assert lines[0] == "CHECK MODE: nothing was written."
    assert "Workload w5  FAILED at grants" in lines and "  error           boom" in lines
    assert (
        lines[-1] == "30 workloads: 1 would change, 28 unchanged, 1 failed (details of the 2 changed or failed shown)"
    )


def test_teardown_report():
    down = workload(
        "a",
        federated_credential={"name": "fic-a"},
        federated_credential_deleted=True,
        service_account_removed=True,
        configmap_removed=False,
        grants_removed=[{"role": "Reader", "scope": SCOPE}],
        grants_kept=[],
        pod_templates_changed=[{"kind": "Deployment", "name": "a"}],
    )
    identity = {
        "name": "id-a",
        "resource_group": "rg",
        "deleted": False,
        "kept_reason": "kept: keep_identity is true",
        "keyvault_access_removed": [],
    }
    cluster = {"exists": True, "oidc_issuer_enabled": True, "workload_identity_enabled": True}
    namespaces = [
        {"_teardown_namespace": "demo", "changed": True, "contents": {"ConfigMap": {"count": 1, "names": ["x"]}}}
    ]
    report = fleet.teardown_report(
        [{"workloads": [down], "identities": [identity], "cluster": cluster}],
        namespaces=namespaces,
        check_mode=True,
        cluster_name="aks1",
        resource_group_name="rg-demo",
        resource_group={"changed": True},
    )
    assert report["oidc_issuer_enabled"] is True and report["resource_group_deleted"] is True
    assert report["workloads"][0]["grants_removed"] == [{"role": "Reader", "scope": SCOPE}]
    summary = report["summary"]
    assert summary[0].startswith("CHECK MODE")
    assert "  federated credential  fic-a: would be deleted" in summary
    assert "  pod template          Deployment/a: workload identity label would be removed" in summary
    assert "Identity id-a (rg): kept: keep_identity is true" in summary
    assert "Cluster aks1: the OIDC issuer stays on. AKS cannot turn an OIDC issuer off once it is enabled;" in summary
    assert "Namespace demo: would be deleted with 1 object(s) still in it (ConfigMap)" in summary
    assert summary[-1] == "Resource group rg-demo: would be deleted with everything in it"


def test_verify_report_merges_the_pod_proof_and_fails_with_every_problem():
    passed = {
        **workload("good"),
        "issuer": "https://i/",
        "proof": {
            "status": "passed",
            "steps": [{"name": "token", "status": "passed"}],
            "progress": [],
            "webhook": {"status": "passed"},
            "access": {"target": "t"},
        },
        "passed": True,
        "problems": [],
    }
    broken = {
        **workload("bad"),
        "issuer": "https://i/",
        "proof": {"status": "skipped", "reason": "verify_prove is false"},
        "passed": False,
        "problems": ["ServiceAccount ns/bad does not exist"],
    }
    pods = [{"_verify_workload": {"name": "good"}, "status": "failed", "cause": "no env", "fix": "label it"}]
    report = fleet.verify_report(
        [{"workloads": [passed, broken], "cluster_problems": []}], pods=pods, pod_proof=True, cluster_name="aks1"
    )
    good, bad = report["results"]
    assert good["pod_proof"]["status"] == "failed" and not good["passed"]
    assert good["problems"] == ["the verification pod failed: no env Fix: label it"]
    assert bad["pod_proof"] == {"status": "skipped", "reason": "the token proof did not get that far (see proof)"}
    assert report["passed"] is False
    assert report["summary"][-1] == "0 of 2 workloads passed."
    assert report["failure"] == (
        "Workload identity verification failed. Workload good (ns/good): the verification pod failed: no env Fix: "
        "label it. Workload bad (ns/bad): ServiceAccount ns/bad does not exist."
    )
    assert fleet.verify_report([{"workloads": [passed]}])["passed"] is True


def test_verify_report_names_the_binding_of_bound_workloads_and_why_their_exchange_was_skipped():
    skipped = "the AKS token proxy https://kubernetes.default.svc (server name abc) cannot be reached from this host"
    bound = {
        **workload("bound"),
        "issuer": "https://i/",
        "federation": "identity_binding",
        "identity_binding_name": "idbound",
        "binding_issuer_url": "https://ib.example/t/c",
        "proof": {
            "status": "passed",
            "steps": [
                {"name": "token", "status": "passed", "detail": "token"},
                {"name": "exchange", "status": "skipped", "detail": skipped},
            ],
            "progress": [],
            "webhook": {"status": "passed"},
            "access": {"kind": "keyvault", "target": "t"},
        },
        "passed": True,
        "problems": [],
    }
    own = {**workload("own"), "issuer": "https://i/", "federation": "federated_credential", "credential_name": "fic"}
    own.update(proof={"status": "skipped", "reason": "verify_prove is false"}, passed=True, problems=[])
    report = fleet.verify_report([{"workloads": [bound, own], "cluster_problems": []}], pod_proof=True)
    lines = report["summary"]
    row = lines.index(next(line for line in lines if line.startswith("bound ")))
    assert (
        lines[row + 1]
        == "  identity binding idbound (AKS's credential aks-identity-binding, issuer https://ib.example/t/c)"
    )
    assert lines[row + 3] == f"  exchange skipped: {skipped}"
    assert not any(line.startswith("  identity binding") for line in lines[row + 4 :])  # not for the other workload
    assert report["passed"] is True
    # The docs' verification pod does not use identity bindings: skipped with that reason, not "did not get that far".
    assert report["results"][0]["pod_proof"]["reason"].startswith("the docs' verification pod does not use identity")
    checked = fleet.verify_report([{"workloads": [bound]}], check_mode=True)["summary"]
    assert not any(line.startswith("  exchange skipped") for line in checked)
