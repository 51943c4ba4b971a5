"""wid_namespace against the lab's real kube-apiserver, run through ansible-playbook.

State is checked with the kubernetes client on the admin kubeconfig; writes are counted from the API server's
audit log (dry runs are marked there). The lab runs no namespace controller, so a deleted namespace stays
Terminating: exactly the state the module must report and treat as done.
"""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.integration.runner import run_module

pytestmark = pytest.mark.lab


def read(core: k8s.CoreV1Api, name: str) -> k8s.V1Namespace | None:
    try:
        return core.read_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_create_label_and_delete_with_contents_shown_first(lab, core):
    name = f"wid-ns-{uuid.uuid4().hex[:8]}"
    mark = lab.kube_mark()
    planned = run_module("wid_namespace", {"name": name, "labels": {"team": "payments"}}, env=lab.env, check=True)
    assert planned.changed and planned["namespace"]["uid"] is None
    assert read(core, name) is None and lab.kube_writes(mark) == []

    created = run_module("wid_namespace", {"name": name, "labels": {"team": "payments"}}, env=lab.env)
    assert created.changed and read(core, name).metadata.labels["team"] == "payments"
    mark = lab.kube_mark()
    again = run_module("wid_namespace", {"name": name, "labels": {"team": "payments"}}, env=lab.env)
    assert not again.changed and lab.kube_writes(mark) == []

    sa = {"metadata": {"name": "orders-api", "annotations": {"azure.workload.identity/client-id": str(uuid.uuid4())}}}
    core.create_namespaced_service_account(name, sa)
    core.create_namespaced_config_map(name, {"metadata": {"name": "orders-api-azure-identity"}, "data": {"A": "b"}})

    mark = lab.kube_mark()
    preview = run_module("wid_namespace", {"name": name, "state": "absent"}, env=lab.env, check=True, diff=True)
    assert preview.changed and lab.kube_writes(mark) == []
    assert preview["contents"] == {
        "ServiceAccount": {"count": 1, "names": ["orders-api"]},
        "ConfigMap": {"count": 1, "names": ["orders-api-azure-identity"]},
    }
    assert preview["diff"]["before"]["contents"] == preview["contents"] and preview["diff"]["after"] == {}
    assert read(core, name).status.phase == "Active"

    deleted = run_module("wid_namespace", {"name": name, "state": "absent"}, env=lab.env)
    assert deleted.changed and deleted["namespace"]["phase"] == "Terminating" and not deleted["deleted"]
    assert read(core, name).metadata.deletion_timestamp is not None
    mark = lab.kube_mark()
    second = run_module("wid_namespace", {"name": name, "state": "absent"}, env=lab.env)
    assert not second.changed and lab.kube_writes(mark) == []

    waited = run_module(
        "wid_namespace", {"name": name, "state": "absent", "wait": True, "wait_timeout": 3}, env=lab.env
    )
    assert waited.failed and "still Terminating after 3 s" in waited["msg"]


def test_refuses_system_namespaces_and_bad_names(lab):
    refused = run_module("wid_namespace", {"name": "kube-system", "state": "absent"}, env=lab.env)
    assert refused.failed and "'kube-system' is a namespace every cluster needs" in refused["msg"]
    bad = run_module("wid_namespace", {"name": "Orders"}, env=lab.env)
    assert bad.failed and "name: must be an RFC 1123 label" in bad["msg"]
