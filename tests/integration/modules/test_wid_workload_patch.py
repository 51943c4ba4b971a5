"""wid_workload_patch against the lab's real kube-apiserver, run through ansible-playbook.

State is checked with the kubernetes client on the admin kubeconfig, never with the module; writes are counted
from the API server's audit log (dry runs are marked there), filtered on the test's own namespace.
"""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from ansible_collections.aks.workload_identity.plugins.module_utils import workload_identity as wi
from tests.integration.runner import run_module

pytestmark = pytest.mark.lab

MODULE = "wid_workload_patch"
USE = "azure.workload.identity/use"
INJECT = "azure.workload.identity/inject-proxy-sidecar"
PORT = "azure.workload.identity/proxy-sidecar-port"
CONTAINER = {"name": "app", "image": "busybox", "command": ["sleep", "3600"]}


class Admin:
    """The lab's admin user through the kubernetes client."""

    def __init__(self, kubeconfig: str) -> None:
        api = k8s_config.new_client_from_config(config_file=kubeconfig)
        self.core = k8s.CoreV1Api(api)
        self.apps = k8s.AppsV1Api(api)
        self.batch = k8s.BatchV1Api(api)

    def new_namespace(self) -> str:
        name = f"wid-patch-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def add_deployment(self, namespace: str, name: str, service_account: str | None = None) -> None:
        spec = {"containers": [CONTAINER], **({"serviceAccountName": service_account} if service_account else {})}
        self.apps.create_namespaced_deployment(
            namespace,
            {
                "metadata": {"name": name, "labels": {"app": name}},
                "spec": {
                    "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}, "annotations": {"keep": "me"}}, "spec": spec},
                },
            },
        )

    def add_cronjob(self, namespace: str, name: str) -> None:
        self.batch.create_namespaced_cron_job(
            namespace,
            {
                "metadata": {"name": name},
                "spec": {
                    "schedule": "0 3 * * *",
                    "jobTemplate": {
                        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [CONTAINER]}}}
                    },
                },
            },
        )


@pytest.fixture(scope="module")
def admin(lab) -> Admin:
    return Admin(str(lab.admin_kubeconfig))


def run(lab, args, env=None, **kwargs):
    return run_module(MODULE, args, env=env or lab.env, **kwargs)


def writes_in(lab, mark: int, namespace: str) -> list[dict]:
    """Persisted writes (dry runs left out) the API server saw in ``namespace`` since ``mark``."""
    return [event for event in lab.kube_writes(mark) if f"/namespaces/{namespace}/" in event["uri"]]


def test_deployment_lifecycle(lab, admin):
    namespace = admin.new_namespace()
    admin.add_deployment(namespace, "orders-api", service_account="builder")
    args = {"namespace": namespace, "kind": "Deployment", "name": "orders-api", "service_account": "orders-api"}

    # check mode: changed, with a diff, and the API server only dry-ran the patch
    mark = lab.kube_mark()
    checked = run(lab, args, check=True, diff=True)
    assert not checked.failed, checked.output
    assert checked.changed
    assert writes_in(lab, mark, namespace) == []
    assert [e["verb"] for e in lab.kube_writes(mark, include_dry_run=True) if namespace in e["uri"]] == ["patch"]
    assert checked["diff"]["before"]["service_account"] == "builder"
    assert checked["diff"]["after"]["labels"] == {"app": "orders-api", USE: "true"}
    assert "ran as ServiceAccount 'builder'" in checked.output
    stored = admin.apps.read_namespaced_deployment("orders-api", namespace)
    assert stored.spec.template.spec.service_account_name == "builder"

    # apply: the label and ServiceAccount land on the pod template, nothing else moves
    applied = run(lab, args)
    assert applied.changed, applied.output
    assert applied["restarts_pods"] is True
    stored = admin.apps.read_namespaced_deployment("orders-api", namespace)
    template = stored.spec.template
    assert template.metadata.labels == {"app": "orders-api", USE: "true"}
    assert template.metadata.annotations == {"keep": "me"}
    assert template.spec.service_account_name == "orders-api"
    assert [c.name for c in template.spec.containers] == ["app"]
    assert stored.metadata.labels == {"app": "orders-api"}  # never on the Deployment's own metadata

    # re-run: no change and no write at all
    mark = lab.kube_mark()
    again = run(lab, args)
    assert not again.changed, again.output
    assert lab.kube_writes(mark, include_dry_run=True) == []

    # the proxy sidecar, then absent: label and proxy annotations go, the ServiceAccount and other keys stay
    with_proxy = run(lab, {**args, "proxy_sidecar": True, "proxy_sidecar_port": 8001})
    assert with_proxy.changed
    annotations = admin.apps.read_namespaced_deployment("orders-api", namespace).spec.template.metadata.annotations
    assert annotations == {"keep": "me", INJECT: "true", PORT: "8001"}
    with_binding = run(lab, {**args, "identity_binding": True})
    assert with_binding.changed and with_binding["workload"]["identity_binding"] is True
    annotations = admin.apps.read_namespaced_deployment("orders-api", namespace).spec.template.metadata.annotations
    assert annotations == {"keep": "me", INJECT: "true", PORT: "8001", wi.ANNOTATION_USE_IDENTITY_BINDING: "true"}
    removed = run(lab, {"namespace": namespace, "kind": "Deployment", "name": "orders-api", "state": "absent"})
    assert removed.changed
    template = admin.apps.read_namespaced_deployment("orders-api", namespace).spec.template
    assert template.metadata.labels == {"app": "orders-api"}
    assert template.metadata.annotations == {"keep": "me"}
    assert template.spec.service_account_name == "orders-api"


def test_cronjob_gets_the_label_on_its_job_template(lab, admin):
    namespace = admin.new_namespace()
    admin.add_cronjob(namespace, "nightly")
    args = {"namespace": namespace, "kind": "CronJob", "name": "nightly", "service_account": "jobs"}
    applied = run(lab, args)
    assert applied.changed, applied.output
    assert applied["restarts_pods"] is False
    assert applied["pod_template"] == "spec.jobTemplate.spec.template"
    stored = admin.batch.read_namespaced_cron_job("nightly", namespace)
    template = stored.spec.job_template.spec.template
    assert template.metadata.labels == {USE: "true"}
    assert template.spec.service_account_name == "jobs"
    assert not run(lab, args).changed


def test_missing_workload_fails_and_absent_is_a_no_op(lab, admin):
    namespace = admin.new_namespace()
    failed = run(lab, {"namespace": namespace, "kind": "StatefulSet", "name": "gone", "service_account": "x"})
    assert failed.failed
    assert f"StatefulSet '{namespace}/gone': it does not exist" in failed["msg"]
    absent = run(lab, {"namespace": namespace, "kind": "DaemonSet", "name": "gone", "state": "absent"})
    assert not absent.failed and not absent.changed


def test_least_privileged_user_can_patch_in_its_namespace(lab, admin):
    """The lab's restricted Role grants get and patch on workloads only: enough for this module."""
    namespace = lab.restricted_namespace
    name = f"least-{uuid.uuid4().hex[:6]}"
    admin.add_deployment(namespace, name)
    env = {**lab.env, "K8S_AUTH_KUBECONFIG": str(lab.restricted_kubeconfig)}
    args = {"namespace": namespace, "kind": "Deployment", "name": name, "service_account": "orders-api"}
    try:
        assert run(lab, args, env=env, check=True).changed
        applied = run(lab, args, env=env)
        assert applied.changed, applied.output
        assert not run(lab, args, env=env).changed
    finally:
        admin.apps.delete_namespaced_deployment(name, namespace)
