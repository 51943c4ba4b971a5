"""wid_verify_pod against the lab's real kube-apiserver, through ansible-playbook.

The lab is a control plane without nodes (no kubelet, no scheduler), so no pod can run there: the module must
see that from the real node list and say that it skipped the check and why, without creating anything. The
run path on a cluster with nodes is covered by the unit tests (tests/unit/plugins/module_utils/test_pod_proof.py).
"""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from tests.integration.runner import run_module

pytestmark = pytest.mark.lab

ARGS = {
    "namespace": "default",
    "service_account": "wid-verify-pod",
    "keyvault_url": "https://kv-wid-rbac.vault.azure.net/",
    "secret_name": "app-secret",
}


@pytest.fixture(scope="module")
def service_account(core):
    """The pod's ServiceAccount (the lab runs no controller manager, so not even 'default' exists by itself)."""
    body = k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=ARGS["service_account"]))
    core.create_namespaced_service_account(ARGS["namespace"], body)
    yield
    core.delete_namespaced_service_account(ARGS["service_account"], ARGS["namespace"])


@pytest.mark.parametrize("check", [False, True])
def test_skipped_on_a_cluster_without_nodes_and_nothing_created(lab, service_account, check):
    mark = lab.kube_mark()
    result = run_module("wid_verify_pod", ARGS, env=lab.env, check=check)
    assert not result.failed, result.result
    assert result["status"] == "skipped" and not result.changed
    assert result["schedulable_nodes"] == 0 and "no Ready node that accepts pods" in result["reason"]
    assert not result["created"] and lab.kube_writes(mark, include_dry_run=True) == []


def test_bad_input_is_refused_before_any_request(lab):
    result = run_module("wid_verify_pod", {**ARGS, "keyvault_url": "kv-wid-rbac"}, env=lab.env)
    assert result.failed and "keyvault_url: must be the vault's https URL" in result["msg"]
