"""reconcile/workload_patch.py: validation, plan decisions (pure), the merge patch, and apply through a fake API.

The fake stands in for the kubernetes client's ``AppsV1Api`` / ``BatchV1Api`` only: it keeps workloads as the API
server's JSON, applies JSON merge patches (RFC 7386) as the server does, honours ``dryRun`` and raises the client's
real ``ApiException`` with Kubernetes ``Status`` bodies.
"""

from __future__ import annotations

import copy
import typing as t
import uuid

import pytest
from kubernetes import client as k8s

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways import kubernetes as kube_gateway
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import NONE, UPDATE
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import workload_patch as wp
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ANNOTATION_INJECT_PROXY_SIDECAR,
    ANNOTATION_PROXY_SIDECAR_PORT,
    ANNOTATION_USE_IDENTITY_BINDING,
    LABEL_USE,
)
from tests.unit.plugins.module_utils.reconcile.test_service_account import api_error, not_found


def desired(**overrides: t.Any) -> wp.DesiredPodTemplate:
    values: dict[str, t.Any] = {
        "namespace": "orders",
        "kind": "Deployment",
        "name": "orders-api",
        "service_account": "orders-api",
    }
    values.update(overrides)
    return wp.DesiredPodTemplate(**values)


def deployment(
    labels: dict | None = None, annotations: dict | None = None, service_account: str | None = None, **spec: t.Any
) -> dict[str, t.Any]:
    template_spec: dict[str, t.Any] = {"containers": [{"name": "app", "image": "busybox"}], **spec}
    if service_account:
        template_spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"namespace": "orders", "name": "orders-api", "uid": "uid-1", "labels": {"app": "orders"}},
        "spec": {
            "selector": {"matchLabels": {"app": "orders"}},
            "template": {
                "metadata": {"labels": {"app": "orders", **(labels or {})}, "annotations": dict(annotations or {})},
                "spec": template_spec,
            },
        },
    }


def cronjob() -> dict[str, t.Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"namespace": "orders", "name": "nightly", "uid": "uid-2"},
        "spec": {
            "schedule": "0 1 * * *",
            "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "job", "image": "busybox"}]}}}},
        },
    }


# --- A fake AppsV1Api + BatchV1Api --------------------------------------------------------------------------------
def merge_patch(target: t.Any, patch: t.Any) -> t.Any:
    """RFC 7386, as the API server applies application/merge-patch+json."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeWorkloadApi:
    """Deployments, StatefulSets, DaemonSets and CronJobs in memory; records every call."""

    RESOURCES = ("deployment", "stateful_set", "daemon_set", "cron_job")

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, t.Any]] = {}
        self.calls: list[tuple[str, dict[str, t.Any]]] = []
        self.faults: dict[str, list[BaseException]] = {}
        self.namespaces = {"orders"}  # CoreV1Api.read_namespace, for the namespace of a missing workload

    def add(self, resource: str, document: dict[str, t.Any]) -> dict[str, t.Any]:
        metadata = document["metadata"]
        self.objects[(resource, metadata["namespace"], metadata["name"])] = copy.deepcopy(document)
        return document

    def stored(self, resource: str, namespace: str, name: str) -> dict[str, t.Any]:
        return self.objects[(resource, namespace, name)]

    def methods(self) -> list[str]:
        return [call[0] for call in self.calls]

    def writes(self, persisted_only: bool = True) -> list[str]:
        return [
            name
            for name, kwargs in self.calls
            if name.startswith("patch") and not (persisted_only and kwargs.get("dry_run") == "All")
        ]

    def _enter(self, method: str, **kwargs: t.Any) -> None:
        self.calls.append((method, kwargs))
        queue = self.faults.get(method)
        if queue:
            raise queue.pop(0)

    def __getattr__(self, attribute: str) -> t.Callable[..., t.Any]:
        verb, _separator, resource = attribute.partition("_namespaced_")
        if resource not in self.RESOURCES or verb not in ("read", "patch"):
            raise AttributeError(attribute)
        if verb == "read":
            return lambda name, namespace: self._read(attribute, resource, name, namespace)
        return lambda name, namespace, body, **kwargs: self._patch(attribute, resource, name, namespace, body, **kwargs)

    def read_namespace(self, name: str) -> k8s.V1Namespace:
        self._enter("read_namespace", name=name)
        if name not in self.namespaces:
            raise not_found("namespaces", name)
        return k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name), status=k8s.V1NamespaceStatus(phase="Active"))

    def _read(self, method: str, resource: str, name: str, namespace: str) -> dict[str, t.Any]:
        self._enter(method, name=name, namespace=namespace)
        if (resource, namespace, name) not in self.objects:
            raise not_found(resource + "s", name)
        return copy.deepcopy(self.objects[(resource, namespace, name)])

    def _patch(self, method: str, resource: str, name: str, namespace: str, body: dict, **kwargs: t.Any) -> dict:
        self._enter(method, name=name, namespace=namespace, body=copy.deepcopy(body), **kwargs)
        assert kwargs.get("_content_type") == kube_gateway.MERGE_PATCH
        if (resource, namespace, name) not in self.objects:
            raise not_found(resource + "s", name)
        document = merge_patch(self.objects[(resource, namespace, name)], body)
        if kwargs.get("dry_run") != "All":
            self.objects[(resource, namespace, name)] = document
        return copy.deepcopy(document)


@pytest.fixture
def api() -> FakeWorkloadApi:
    return FakeWorkloadApi()


def reconciler(api: FakeWorkloadApi, dry_run: bool = False, core: bool = False) -> wp.PodTemplateReconciler:
    clients = {"apps_v1": api, "batch_v1": api, **({"core_v1": api} if core else {})}
    return wp.PodTemplateReconciler(clients, dry_run=dry_run, sleep=lambda _seconds: None)


# --- validate ---------------------------------------------------------------------------------------------------
def test_valid_input_has_no_errors():
    assert wp.validate(desired(proxy_sidecar=True, proxy_sidecar_port=8080)) == []
    assert wp.validate(desired(state="absent", service_account=None)) == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"namespace": "Orders"}, "namespace: must be an RFC 1123 label"),
        ({"kind": "Job"}, "kind: must be one of Deployment, StatefulSet, DaemonSet, CronJob, got 'Job'"),
        ({"name": ""}, "name: is required"),
        ({"name": "a/b"}, "name: must be an RFC 1123 subdomain"),
        ({"name": "Orders_API"}, "name: must be an RFC 1123 subdomain"),
        ({"name": "a" * 254}, "name: must be at most 253 characters, got 254"),
        ({"kind": "CronJob", "name": "n" * 53}, "name: must be at most 52 characters, got 53"),
        ({"service_account": None}, "service_account: is required"),
        ({"service_account": "Orders_API"}, "service_account: must be an RFC 1123 subdomain"),
        ({"proxy_sidecar_port": 0}, "proxy_sidecar_port: must be a port number 1-65535, got 0"),
        ({"proxy_sidecar_port": 70000}, "proxy_sidecar_port: must be a port number 1-65535, got 70000"),
        ({"proxy_sidecar_port": True}, "proxy_sidecar_port: must be a port number"),
    ],
)
def test_invalid_input_is_named(overrides, expected):
    errors = wp.validate(desired(**overrides))
    assert any(error.startswith(expected) for error in errors), errors


# --- normalising ------------------------------------------------------------------------------------------------
def test_normalize_reads_the_pod_template_from_an_api_dict():
    normalized = kube_gateway.normalize_workload(
        deployment({LABEL_USE: "true"}, {ANNOTATION_PROXY_SIDECAR_PORT: "8001"}, service_account="orders-api"),
        "Deployment",
    )
    assert normalized == {
        "kind": "Deployment",
        "namespace": "orders",
        "name": "orders-api",
        "uid": "uid-1",
        "service_account": "orders-api",
        "deprecated_service_account": None,
        "labels": {"app": "orders", LABEL_USE: "true"},
        "annotations": {ANNOTATION_PROXY_SIDECAR_PORT: "8001"},
        "workload_identity": True,
        "proxy_sidecar": False,
        "proxy_sidecar_port": 8001,
        "identity_binding": False,
    }


def test_normalize_reads_a_kubernetes_model_and_a_cronjobs_job_template():
    model = k8s.V1CronJob(
        metadata=k8s.V1ObjectMeta(namespace="orders", name="nightly", uid="uid-2"),
        spec=k8s.V1CronJobSpec(
            schedule="0 1 * * *",
            job_template=k8s.V1JobTemplateSpec(
                spec=k8s.V1JobSpec(
                    template=k8s.V1PodTemplateSpec(
                        metadata=k8s.V1ObjectMeta(labels={LABEL_USE: "true"}),
                        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="job")], service_account_name="jobs"),
                    )
                )
            ),
        ),
    )
    normalized = kube_gateway.normalize_workload(model, "CronJob")
    assert (normalized["name"], normalized["service_account"], normalized["workload_identity"]) == (
        "nightly",
        "jobs",
        True,
    )


def test_the_deprecated_service_account_field_counts_when_the_name_is_missing():
    document = deployment(serviceAccount="legacy")
    assert kube_gateway.normalize_workload(document, "Deployment")["service_account"] == "legacy"


# --- plan -------------------------------------------------------------------------------------------------------
def actual(**kwargs: t.Any) -> dict[str, t.Any]:
    return kube_gateway.normalize_workload(deployment(**kwargs), "Deployment")


def test_plan_sets_label_and_service_account_and_keeps_other_labels():
    decided = wp.plan(actual(), desired())
    assert decided.action == UPDATE
    assert decided.after["labels"] == {"app": "orders", LABEL_USE: "true"}
    assert decided.after["service_account"] == "orders-api"
    assert decided.after["workload_identity"] is True
    assert decided.warnings == []


def test_plan_is_a_no_op_when_already_done():
    decided = wp.plan(actual(labels={LABEL_USE: "true"}, service_account="orders-api"), desired())
    assert decided.action == NONE
    assert not decided.changed


def test_plan_warns_when_the_pods_change_service_account():
    decided = wp.plan(actual(service_account="builder"), desired())
    assert decided.changed
    assert "ran as ServiceAccount 'builder' and will run as 'orders-api'" in decided.warnings[0]


@pytest.mark.parametrize("previous", [None, "default", "orders-api"])
def test_plan_does_not_warn_for_the_default_or_same_service_account(previous):
    assert wp.plan(actual(service_account=previous), desired()).warnings == []


def test_plan_adds_proxy_annotations_with_the_default_port():
    decided = wp.plan(actual(), desired(proxy_sidecar=True))
    assert decided.after["annotations"] == {
        ANNOTATION_INJECT_PROXY_SIDECAR: "true",
        ANNOTATION_PROXY_SIDECAR_PORT: "8000",
    }
    assert decided.after["proxy_sidecar"] is True
    assert decided.after["proxy_sidecar_port"] == 8000


def test_plan_leaves_proxy_annotations_alone_when_not_asked_and_removes_them_when_false():
    present = {ANNOTATION_INJECT_PROXY_SIDECAR: "true", ANNOTATION_PROXY_SIDECAR_PORT: "9000", "other": "x"}
    current = actual(labels={LABEL_USE: "true"}, annotations=present, service_account="orders-api")
    assert wp.plan(current, desired()).action == NONE
    removed = wp.plan(current, desired(proxy_sidecar=False))
    assert removed.after["annotations"] == {"other": "x"}


def test_plan_sets_the_identity_binding_annotation_and_leaves_it_alone_when_not_asked():
    decided = wp.plan(actual(annotations={"other": "x"}), desired(identity_binding=True))
    assert decided.after["annotations"] == {"other": "x", ANNOTATION_USE_IDENTITY_BINDING: "true"}
    assert decided.after["identity_binding"] is True
    current = actual(
        labels={LABEL_USE: "true"}, annotations={ANNOTATION_USE_IDENTITY_BINDING: "true"}, service_account="orders-api"
    )
    assert wp.plan(current, desired()).action == NONE
    assert wp.plan(current, desired(identity_binding=True)).action == NONE
    removed = wp.plan(current, desired(identity_binding=False))
    assert removed.after["annotations"] == {}
    assert removed.after["identity_binding"] is False


def test_absent_removes_the_identity_binding_annotation_too():
    current = actual(
        labels={LABEL_USE: "true"}, annotations={ANNOTATION_USE_IDENTITY_BINDING: "true"}, service_account="orders-api"
    )
    decided = wp.plan(current, desired(state="absent", service_account=None))
    assert decided.after["annotations"] == {}
    body = wp.patch_body(decided, desired(state="absent", service_account=None), current)
    assert body["spec"]["template"]["metadata"]["annotations"] == {ANNOTATION_USE_IDENTITY_BINDING: None}


def test_absent_removes_label_and_proxy_annotations_but_keeps_the_service_account():
    current = actual(
        labels={LABEL_USE: "true"}, annotations={ANNOTATION_INJECT_PROXY_SIDECAR: "true"}, service_account="orders-api"
    )
    decided = wp.plan(current, desired(state="absent", service_account=None))
    assert decided.after["labels"] == {"app": "orders"}
    assert decided.after["annotations"] == {}
    assert decided.after["service_account"] == "orders-api"


def test_a_missing_workload_fails_when_present_and_is_nothing_when_absent():
    with pytest.raises(WorkloadIdentityError, match=r"^name: Deployment 'orders/orders-api': it does not exist"):
        wp.plan(None, desired())
    assert wp.plan(None, desired(state="absent")).action == NONE


# --- patch body -----------------------------------------------------------------------------------------------------
def test_patch_body_names_only_the_changed_keys_under_the_pod_template():
    current = actual(labels={"keep": "me"}, annotations={"other": "x"})
    body = wp.patch_body(wp.plan(current, desired(proxy_sidecar=True)), desired(), current)
    assert body == {
        "spec": {
            "template": {
                "metadata": {
                    "labels": {LABEL_USE: "true"},
                    "annotations": {ANNOTATION_INJECT_PROXY_SIDECAR: "true", ANNOTATION_PROXY_SIDECAR_PORT: "8000"},
                },
                "spec": {"serviceAccountName": "orders-api"},
            }
        }
    }


def test_patch_body_of_a_cronjob_goes_to_the_job_template():
    current = kube_gateway.normalize_workload(cronjob(), "CronJob")
    target = desired(kind="CronJob", name="nightly")
    body = wp.patch_body(wp.plan(current, target), target, current)
    template = body["spec"]["jobTemplate"]["spec"]["template"]
    assert template == {"metadata": {"labels": {LABEL_USE: "true"}}, "spec": {"serviceAccountName": "orders-api"}}


def test_patch_body_keeps_the_deprecated_alias_in_step():
    current = kube_gateway.normalize_workload(
        deployment(serviceAccount="legacy", serviceAccountName="legacy"), "Deployment"
    )
    body = wp.patch_body(wp.plan(current, desired()), desired(), current)
    assert body["spec"]["template"]["spec"] == {"serviceAccountName": "orders-api", "serviceAccount": "orders-api"}


def test_a_null_in_the_patch_removes_a_key():
    current = actual(labels={LABEL_USE: "true"}, service_account="orders-api")
    body = wp.patch_body(wp.plan(current, desired(state="absent")), desired(state="absent"), current)
    assert body == {"spec": {"template": {"metadata": {"labels": {LABEL_USE: None}}}}}


# --- reconcile through the fake API ---------------------------------------------------------------------------
def test_reconcile_patches_once_and_then_only_reads(api):
    api.add("deployment", deployment())
    outcome = reconciler(api).reconcile(desired())
    assert outcome.changed and outcome.restarts_pods
    stored = api.stored("deployment", "orders", "orders-api")["spec"]["template"]
    assert stored["metadata"]["labels"] == {"app": "orders", LABEL_USE: "true"}
    assert stored["spec"]["serviceAccountName"] == "orders-api"
    assert stored["spec"]["containers"] == [{"name": "app", "image": "busybox"}]  # the rest of the template stays
    assert api.stored("deployment", "orders", "orders-api")["metadata"]["labels"] == {"app": "orders"}
    api.calls.clear()
    again = reconciler(api).reconcile(desired())
    assert not again.changed and not again.restarts_pods
    assert api.methods() == ["read_namespaced_deployment"]


def test_check_mode_dry_runs_the_patch_and_reports_the_servers_answer(api):
    api.add("deployment", deployment())
    outcome = reconciler(api, dry_run=True).reconcile(desired())
    assert outcome.changed
    assert api.writes() == []
    assert api.writes(persisted_only=False) == ["patch_namespaced_deployment"]
    assert outcome.workload["workload_identity"] is True
    assert api.stored("deployment", "orders", "orders-api")["spec"]["template"]["metadata"]["labels"] == {
        "app": "orders"
    }


def test_a_cronjob_does_not_roll_out(api):
    api.add("cron_job", cronjob())
    outcome = reconciler(api).reconcile(desired(kind="CronJob", name="nightly"))
    assert outcome.changed and not outcome.restarts_pods


def test_a_workload_deleted_before_the_patch_is_reported(api):
    api.add("stateful_set", {**deployment(), "kind": "StatefulSet"})
    api.faults["patch_namespaced_stateful_set"] = [not_found("statefulsets", "orders-api")]
    with pytest.raises(WorkloadIdentityError, match="it was deleted while being patched"):
        reconciler(api).reconcile(desired(kind="StatefulSet"))


def test_throttling_with_retry_after_is_retried(api):
    api.add("daemon_set", {**deployment(), "kind": "DaemonSet"})
    api.faults["read_namespaced_daemon_set"] = [
        api_error(429, "TooManyRequests", "slow down", headers={"Retry-After": "1"})
    ]
    outcome = reconciler(api).reconcile(desired(kind="DaemonSet"))
    assert outcome.changed
    assert api.methods().count("read_namespaced_daemon_set") == 2


def test_forbidden_patch_names_the_workload(api):
    api.add("deployment", deployment())
    api.faults["patch_namespaced_deployment"] = [api_error(403, "Forbidden", "deployments.apps is forbidden")]
    with pytest.raises(WorkloadIdentityError) as caught:
        reconciler(api).reconcile(desired())
    assert str(caught.value).startswith("Failed to patch the pod template of Deployment 'orders/orders-api': Forbidden")


def test_uid_is_kept_from_the_server(api):
    document = deployment()
    document["metadata"]["uid"] = str(uuid.uuid4())
    api.add("deployment", document)
    outcome = reconciler(api).reconcile(desired())
    assert outcome.workload["uid"] == document["metadata"]["uid"]
    assert "uid" not in outcome.plan.after


# --- missing parents ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "check-mode"])
def test_a_missing_workload_is_found_by_reading_and_names_the_option(api, dry_run):
    with pytest.raises(WorkloadIdentityError, match=r"^name: Deployment 'orders/orders-api': it does not exist"):
        reconciler(api, dry_run=dry_run, core=True).reconcile(desired())
    assert api.methods() == ["read_namespaced_deployment", "read_namespace"]
    assert api.writes(persisted_only=False) == []


def test_a_missing_namespace_is_named_rather_than_the_workload(api):
    with pytest.raises(WorkloadIdentityError, match=r"^namespace: namespace 'payments' does not exist"):
        reconciler(api, core=True).reconcile(desired(namespace="payments"))
    assert api.writes(persisted_only=False) == []


def test_a_namespace_that_may_not_be_read_falls_back_to_naming_the_workload(api):
    api.faults["read_namespace"] = [api_error(403, "Forbidden", 'namespaces "payments" is forbidden', "namespaces")]
    with pytest.raises(WorkloadIdentityError, match=r"^name: Deployment 'payments/orders-api': it does not exist"):
        reconciler(api, core=True).reconcile(desired(namespace="payments"))
