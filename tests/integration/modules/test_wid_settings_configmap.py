"""wid_settings_configmap against the lab's real kube-apiserver, run through ansible-playbook.

State is checked with the kubernetes client on the admin kubeconfig, never with the module; writes are counted
from the API server's audit log (dry runs are marked there).
"""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.integration.runner import run_module

pytestmark = pytest.mark.lab

MODULE = "wid_settings_configmap"
CLIENT = "6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
VAULT = "https://kv-orders.vault.azure.net/"


def read(core: k8s.CoreV1Api, namespace: str, name: str) -> k8s.V1ConfigMap | None:
    try:
        return core.read_namespaced_config_map(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def namespace_exists(core: k8s.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def run(lab, args, env=None, **kwargs):
    return run_module(MODULE, args, env=env or lab.env, **kwargs)


def test_lifecycle(lab, core):
    namespace = f"wid-cm-{uuid.uuid4().hex[:8]}"
    name = "orders-api-azure-identity"
    args = {
        "namespace": namespace,
        "name": name,
        "client_id": CLIENT,
        "tenant_id": TENANT,
        "data": {"KEYVAULT_URL": VAULT},
        "create_namespace": True,
    }

    # check mode in a namespace still to create: the namespace is only dry-run, nothing persists
    mark = lab.kube_mark()
    checked = run(lab, args, check=True, diff=True)
    assert not checked.failed, checked.output
    assert checked.changed and checked["namespace_created"]
    assert lab.kube_writes(mark) == []
    assert not namespace_exists(core, namespace)
    assert checked["diff"]["after"]["data"] == {
        "AZURE_CLIENT_ID": CLIENT,
        "AZURE_TENANT_ID": TENANT,
        "KEYVAULT_URL": VAULT,
    }
    assert checked["configmap"]["uid"] is None

    # apply: namespace and ConfigMap
    applied = run(lab, args)
    assert applied.changed, applied.output
    stored = read(core, namespace, name)
    assert stored.data == {"AZURE_CLIENT_ID": CLIENT, "AZURE_TENANT_ID": TENANT, "KEYVAULT_URL": VAULT}
    assert applied["configmap"]["uid"] == stored.metadata.uid

    # re-run: no change, no write
    mark = lab.kube_mark()
    again = run(lab, args)
    assert not again.changed, again.output
    assert lab.kube_writes(mark, include_dry_run=True) == []

    # someone else's key survives a change of ours; removing our keys keeps theirs
    core.patch_namespaced_config_map(name, namespace, {"data": {"OTHER": "x"}})
    changed = run(lab, {**args, "data": {"KEYVAULT_URL": "https://kv-orders-2.vault.azure.net/"}}, diff=True)
    assert changed.changed
    assert changed["diff"]["before"]["data"]["KEYVAULT_URL"] == VAULT
    assert read(core, namespace, name).data["OTHER"] == "x"
    keys = run(
        lab, {"namespace": namespace, "name": name, "data": {"KEYVAULT_URL": None}, "state": "absent", "remove": "keys"}
    )
    assert keys.changed
    assert read(core, namespace, name).data == {"OTHER": "x"}

    # delete: check mode first (dry-run delete), then for real
    absent = {"namespace": namespace, "name": name, "state": "absent"}
    mark = lab.kube_mark()
    assert run(lab, absent, check=True).changed
    assert lab.kube_writes(mark) == []
    assert read(core, namespace, name) is not None
    removed = run(lab, absent)
    assert removed.changed and removed["configmap"] == {}
    assert read(core, namespace, name) is None
    assert not run(lab, absent).changed


def test_least_privileged_user_in_its_namespace(lab, core):
    """The lab's restricted Role grants configmaps get/create/patch/delete: enough for this module."""
    namespace = lab.restricted_namespace
    name = f"least-{uuid.uuid4().hex[:6]}"
    env = {**lab.env, "K8S_AUTH_KUBECONFIG": str(lab.restricted_kubeconfig)}
    args = {"namespace": namespace, "name": name, "client_id": CLIENT}
    applied = run(lab, args, env=env)
    assert applied.changed, applied.output
    assert not run(lab, args, env=env).changed
    assert run(lab, {**args, "state": "absent"}, env=env).changed
    assert read(core, namespace, name) is None
