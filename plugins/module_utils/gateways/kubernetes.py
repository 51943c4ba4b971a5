# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Kubernetes gateways: ServiceAccounts, ConfigMaps, namespaces, the pod templates of workloads, pods and token
requests. Each method is one API request (retried only when the server asks, with Retry-After), its
normalisation and its error translation; every write is a server-side dry run when the gateway is built with
``dry_run=True`` (check mode). Lists are read as the API server's JSON (no model deserialisation: a list of a
thousand objects costs milliseconds, not seconds).

A write that finds the object changed by another writer since our read raises ``Raced`` (409 AlreadyExists on a
create, 404 on a patch, 404 or 409 on a uid-guarded delete): the caller reads again and re-plans. A create in a
namespace that does not exist raises ``NamespaceMissing``.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import functools
import json
import typing as t
from dataclasses import dataclass

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways import ApiCalls
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import (
    K8sApiCaller,
    Raced,
    delete_options,
    status_details_kind,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ANNOTATION_CLIENT_ID,
    ANNOTATION_INJECT_PROXY_SIDECAR,
    ANNOTATION_PROXY_SIDECAR_PORT,
    ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION,
    ANNOTATION_TENANT_ID,
    ANNOTATION_USE_IDENTITY_BINDING,
    IDENTITY_BINDING_RBAC_API_GROUP,
    IDENTITY_BINDING_RBAC_VERB,
    LABEL_USE,
    LABEL_USE_VALUE,
)

MERGE_PATCH = "application/merge-patch+json"


class NamespaceMissing(WorkloadIdentityError):
    """A create answered 404 for the namespace (Status details.kind ``namespaces``)."""


def _field(document: t.Mapping[str, t.Any] | None, camel: str) -> t.Any:
    """A field of an API dict (camelCase) or of a kubernetes model's ``to_dict()`` (snake_case)."""
    if not document:
        return None
    if camel in document:
        return document[camel]
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return document.get(snake)


def _document(found: t.Any) -> dict[str, t.Any]:
    if hasattr(found, "to_dict"):
        return found.to_dict()
    return dict(found or {})


def _metadata(document: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    return dict(_field(document, "metadata") or {})


# --- Normalising ------------------------------------------------------------------------------------------------
def normalize_service_account(service_account: t.Any) -> dict[str, t.Any]:
    """A ServiceAccount (kubernetes model or API dict) as the collection reports it, with the webhook's settings."""
    metadata = _metadata(_document(service_account))
    annotations = dict(metadata.get("annotations") or {})
    expiration = annotations.get(ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION)
    return {
        "namespace": metadata.get("namespace"),
        "name": metadata.get("name"),
        "uid": metadata.get("uid"),
        "labels": dict(metadata.get("labels") or {}),
        "annotations": annotations,
        "client_id": annotations.get(ANNOTATION_CLIENT_ID),
        "tenant_id": annotations.get(ANNOTATION_TENANT_ID),
        "token_expiration": int(expiration) if isinstance(expiration, str) and expiration.isdigit() else None,
    }


def normalize_configmap(configmap: t.Any) -> dict[str, t.Any]:
    """A ConfigMap (kubernetes model or API dict) as the collection reports it (``binaryData`` by key only)."""
    document = _document(configmap)
    metadata = _metadata(document)
    return {
        "namespace": metadata.get("namespace"),
        "name": metadata.get("name"),
        "uid": metadata.get("uid"),
        "labels": dict(metadata.get("labels") or {}),
        "data": dict(document.get("data") or {}),
        "binary_data_keys": sorted(_field(document, "binaryData") or {}),
    }


def normalize_namespace(namespace: t.Any) -> dict[str, t.Any]:
    document = _document(namespace)
    metadata = _metadata(document)
    return {
        "name": metadata.get("name"),
        "uid": metadata.get("uid"),
        "labels": dict(metadata.get("labels") or {}),
        "phase": _field(_field(document, "status") or {}, "phase") or "Active",
        "terminating": _field(metadata, "deletionTimestamp") is not None,
    }


@dataclass(frozen=True)
class Kind:
    """Where a workload kind lives in the API and where its pod template sits (camelCase path in the object)."""

    api: str  # the K8sModule client property
    resource: str  # the kubernetes client's method suffix: read_namespaced_<resource>
    template_path: tuple[str, ...]
    rolls_out: bool  # a template change replaces the running pods (a CronJob's only affects its next jobs)


# A Job's pod template is immutable and a bare Pod's serviceAccountName too: neither can be patched.
KINDS: dict[str, Kind] = {
    "Deployment": Kind("apps_v1", "deployment", ("spec", "template"), True),
    "StatefulSet": Kind("apps_v1", "stateful_set", ("spec", "template"), True),
    "DaemonSet": Kind("apps_v1", "daemon_set", ("spec", "template"), True),
    "CronJob": Kind("batch_v1", "cron_job", ("spec", "jobTemplate", "spec", "template"), False),
}


def pod_template_of(workload: t.Mapping[str, t.Any], kind: str) -> dict[str, t.Any]:
    node: t.Any = workload
    for step in KINDS[kind].template_path:
        node = _field(node, step) or {}
    return dict(node)


def normalize_workload(workload: t.Any, kind: str) -> dict[str, t.Any]:
    """The workload as this collection reports it: identity and the parts of its pod template the webhook reads."""
    document = _document(workload)
    metadata = _field(document, "metadata") or {}
    template = pod_template_of(document, kind)
    template_metadata = _field(template, "metadata") or {}
    template_spec = _field(template, "spec") or {}
    labels = dict(_field(template_metadata, "labels") or {})
    annotations = dict(_field(template_metadata, "annotations") or {})
    port = annotations.get(ANNOTATION_PROXY_SIDECAR_PORT)
    return {
        "kind": kind,
        "namespace": _field(metadata, "namespace"),
        "name": _field(metadata, "name"),
        "uid": _field(metadata, "uid"),
        # serviceAccount is the deprecated alias the API server still fills in from serviceAccountName
        "service_account": _field(template_spec, "serviceAccountName") or _field(template_spec, "serviceAccount"),
        "deprecated_service_account": _field(template_spec, "serviceAccount"),
        "labels": labels,
        "annotations": annotations,
        "workload_identity": labels.get(LABEL_USE) == LABEL_USE_VALUE,
        "proxy_sidecar": annotations.get(ANNOTATION_INJECT_PROXY_SIDECAR) == "true",
        "proxy_sidecar_port": int(port) if isinstance(port, str) and port.isdigit() else None,
        "identity_binding": str(annotations.get(ANNOTATION_USE_IDENTITY_BINDING, "")).lower() == "true",
    }


# --- The gateways -----------------------------------------------------------------------------------------------
class _Gateway(K8sApiCaller):
    def __init__(self, api: t.Any, *, calls: ApiCalls | None = None, **caller: t.Any) -> None:
        super().__init__(**caller)
        self.api = api
        self.calls = calls if calls is not None else ApiCalls()

    def _counted(self, operation: str, call: t.Callable[[], t.Any], action: str, target: str, **kwargs: t.Any) -> t.Any:
        self.calls.add(operation)
        return self._call(call, action, target, **kwargs)

    def _list_json(self, operation: str, call: t.Callable[..., t.Any], action: str, target: str) -> list[dict]:
        """Every item of a LIST, following ``continue`` tokens (one request per page), as API dicts."""
        items: list[dict[str, t.Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, t.Any] = {"_preload_content": False}
            if token:
                kwargs["_continue"] = token
            response = self._counted(operation, lambda kwargs=kwargs: call(**kwargs), action, target)
            document = json.loads(response.data)
            items += document.get("items") or []
            token = (document.get("metadata") or {}).get("continue")
            if not token:
                return items

    def _create(self, operation: str, call: t.Callable[..., t.Any], action: str, target: str) -> t.Any:
        try:
            return self._counted(operation, lambda: call(**self._dry_run()), action, target)
        except WorkloadIdentityError as error:
            if error.status == 409 and error.code == "AlreadyExists":
                raise Raced() from error
            if error.status == 404 and status_details_kind(error) == "namespaces":
                raise NamespaceMissing(
                    str(error), code="NotFound", status=404, target=target, exception=error.original
                ) from error
            raise

    def _patch(self, operation: str, call: t.Callable[..., t.Any], action: str, target: str) -> t.Any:
        self.calls.add(operation)
        return self._patch_or_raced(call, action, target)

    def _delete(
        self, operation: str, call: t.Callable[..., t.Any], uid: str | None, action: str, target: str, **extra: t.Any
    ) -> None:
        self.calls.add(operation)
        self._delete_or_raced(call, uid, action, target, **extra)


def _target(namespace: str, name: str) -> str:
    return f"'{namespace}/{name}'"


class ServiceAccounts(_Gateway):
    """``api`` is a kubernetes ``CoreV1Api``."""

    def read(self, namespace: str, name: str) -> dict[str, t.Any] | None:
        found = self._counted(
            "kubernetes.serviceaccounts.get",
            lambda: self.api.read_namespaced_service_account(name, namespace),
            "read ServiceAccount",
            _target(namespace, name),
            none_if_not_found=True,
        )
        return normalize_service_account(found) if found is not None else None

    def list(self, namespace: str) -> dict[str, dict[str, t.Any]]:
        """The namespace's ServiceAccounts by name: one LIST (per page). Empty for a namespace that does not exist."""
        items = self._list_json(
            "kubernetes.serviceaccounts.list",
            lambda **kwargs: self.api.list_namespaced_service_account(namespace, **kwargs),
            "list ServiceAccounts in namespace",
            f"'{namespace}'",
        )
        found = [normalize_service_account(item) for item in items]
        return {sa["name"]: sa for sa in found}

    def request_token(self, namespace: str, name: str, audience: str, seconds: int) -> str:
        """A token of the ServiceAccount from the TokenRequest API (a create: never in check mode). Kept in memory
        by the caller only; it is never logged or returned."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [audience], "expirationSeconds": seconds},
        }
        answer = self._counted(
            "kubernetes.serviceaccounts.token.create",
            lambda: self.api.create_namespaced_service_account_token(name, namespace, body),
            "request a token for",
            f"ServiceAccount {_target(namespace, name)}",
        )
        return answer.status.token

    def list_all_json(self) -> list[dict[str, t.Any]]:
        """Every ServiceAccount of the cluster as API dicts: one LIST (per page)."""
        return self._list_json(
            "kubernetes.serviceaccounts.list",
            self.api.list_service_account_for_all_namespaces,
            "list ServiceAccounts",
            "in all namespaces",
        )

    def create(self, namespace: str, body: dict[str, t.Any]) -> t.Any:
        return self._create(
            "kubernetes.serviceaccounts.create",
            lambda **dry_run: self.api.create_namespaced_service_account(namespace, body, **dry_run),
            "create ServiceAccount",
            _target(namespace, body["metadata"]["name"]),
        )

    def patch(self, namespace: str, name: str, body: dict[str, t.Any]) -> t.Any:
        return self._patch(
            "kubernetes.serviceaccounts.patch",
            lambda **dry_run: self.api.patch_namespaced_service_account(name, namespace, body, **dry_run),
            "update ServiceAccount",
            _target(namespace, name),
        )

    def delete(self, namespace: str, name: str, uid: str | None) -> None:
        self._delete(
            "kubernetes.serviceaccounts.delete",
            lambda **options: self.api.delete_namespaced_service_account(name, namespace, **options),
            uid,
            "delete ServiceAccount",
            _target(namespace, name),
        )


class ConfigMaps(_Gateway):
    """``api`` is a kubernetes ``CoreV1Api``."""

    def read(self, namespace: str, name: str) -> dict[str, t.Any] | None:
        found = self._counted(
            "kubernetes.configmaps.get",
            lambda: self.api.read_namespaced_config_map(name, namespace),
            "read ConfigMap",
            _target(namespace, name),
            none_if_not_found=True,
        )
        return normalize_configmap(found) if found is not None else None

    def list(self, namespace: str) -> dict[str, dict[str, t.Any]]:
        """The namespace's ConfigMaps by name: one LIST (per page)."""
        items = self._list_json(
            "kubernetes.configmaps.list",
            lambda **kwargs: self.api.list_namespaced_config_map(namespace, **kwargs),
            "list ConfigMaps in namespace",
            f"'{namespace}'",
        )
        found = [normalize_configmap(item) for item in items]
        return {configmap["name"]: configmap for configmap in found}

    def create(self, namespace: str, body: dict[str, t.Any]) -> t.Any:
        return self._create(
            "kubernetes.configmaps.create",
            lambda **dry_run: self.api.create_namespaced_config_map(namespace, body, **dry_run),
            "create ConfigMap",
            _target(namespace, body["metadata"]["name"]),
        )

    def patch(self, namespace: str, name: str, body: dict[str, t.Any]) -> t.Any:
        return self._patch(
            "kubernetes.configmaps.patch",
            lambda **dry_run: self.api.patch_namespaced_config_map(name, namespace, body, **dry_run),
            "update ConfigMap",
            _target(namespace, name),
        )

    def delete(self, namespace: str, name: str, uid: str | None) -> None:
        self._delete(
            "kubernetes.configmaps.delete",
            lambda **options: self.api.delete_namespaced_config_map(name, namespace, **options),
            uid,
            "delete ConfigMap",
            _target(namespace, name),
        )


class Events(_Gateway):
    """Core v1 Events, the ones ``kubectl describe`` shows with their object. ``api`` is a kubernetes ``CoreV1Api``."""

    def create(self, namespace: str, body: dict[str, t.Any]) -> t.Any:
        return self._create(
            "kubernetes.events.create",
            lambda **dry_run: self.api.create_namespaced_event(namespace, body, **dry_run),
            "create Event",
            _target(namespace, body["metadata"]["name"]),
        )


class Namespaces(_Gateway):
    """``api`` is a kubernetes ``CoreV1Api``."""

    def read(self, name: str) -> dict[str, t.Any] | None:
        found = self._counted(
            "kubernetes.namespaces.get",
            lambda: self.api.read_namespace(name),
            "read namespace",
            f"'{name}'",
            none_if_not_found=True,
        )
        return normalize_namespace(found) if found is not None else None

    def create(self, name: str, labels: dict[str, str] | None = None) -> dict[str, t.Any]:
        """Create a namespace; one created meanwhile by someone else is fine (then None)."""
        body: dict[str, t.Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        if labels:
            body["metadata"]["labels"] = dict(labels)
        try:
            created = self._counted(
                "kubernetes.namespaces.create",
                lambda: self.api.create_namespace(body, **self._dry_run()),
                "create namespace",
                f"'{name}'",
            )
        except WorkloadIdentityError as error:
            if error.status == 409 and error.code == "AlreadyExists":
                return {"name": name, "uid": None, "labels": dict(labels or {}), "phase": None, "terminating": False}
            raise
        namespace = normalize_namespace(created)
        if self.dry_run:
            namespace["uid"] = None  # a dry run answers with a uid that will never exist
        return namespace

    def patch_labels(self, name: str, labels: dict[str, str | None]) -> dict[str, t.Any]:
        patch = {"metadata": {"labels": dict(labels)}}  # a merge patch: None removes a label
        patched = self._counted(
            "kubernetes.namespaces.patch",
            lambda: self.api.patch_namespace(name, patch, **self._dry_run()),
            "update namespace",
            f"'{name}'",
        )
        return normalize_namespace(patched)

    def delete(self, name: str, uid: str | None) -> None:
        """Delete (background propagation) unless it was recreated since our read; gone meanwhile is fine."""
        try:
            self._delete(
                "kubernetes.namespaces.delete",
                lambda **options: self.api.delete_namespace(name, **options),
                uid,
                "delete namespace",
                f"'{name}'",
                propagationPolicy="Background",
            )
        except Raced as raced:
            cause = raced.__cause__
            if isinstance(cause, WorkloadIdentityError) and cause.status != 404:
                # Recreated since our read: say so rather than delete the new one.
                raise WorkloadIdentityError(
                    cause.message, code=cause.code, status=cause.status, target=cause.target, exception=cause.original
                ) from raced

    def list_names(self, name: str, api: t.Any, resource: str, limit: int) -> tuple[list[str], int]:
        """Names of one kind of object in the namespace (at most ``limit``: one LIST) and how many more there are."""
        method = getattr(api, f"list_namespaced_{resource}")
        listed = self._counted(
            f"kubernetes.{resource}.list",
            lambda: method(name, limit=limit),
            f"list {resource} in namespace",
            f"'{name}'",
        )
        # With a limit the API server says how many items the later pages hold (remainingItemCount).
        remaining = getattr(listed.metadata, "remaining_item_count", None) or 0
        return [item.metadata.name for item in listed.items], remaining


class PodTemplates(_Gateway):
    """The workloads whose pod templates carry the webhook's label; ``api`` maps ``apps_v1``/``batch_v1`` to the
    kubernetes clients."""

    def _method(self, verb: str, kind: str) -> t.Callable[..., t.Any]:
        spec = KINDS[kind]
        return getattr(self.api[spec.api], f"{verb}_namespaced_{spec.resource}")

    def read(self, kind: str, namespace: str, name: str) -> dict[str, t.Any] | None:
        found = self._counted(
            f"kubernetes.{KINDS[kind].resource}.get",
            lambda: self._method("read", kind)(name, namespace),
            "read",
            f"{kind} {_target(namespace, name)}",
            none_if_not_found=True,
        )
        return normalize_workload(found, kind) if found is not None else None

    def list(self, kind: str, namespace: str) -> dict[str, dict[str, t.Any]]:
        """The namespace's workloads of one kind by name: one LIST (per page)."""
        method = self._method("list", kind)
        items = self._list_json(
            f"kubernetes.{KINDS[kind].resource}.list",
            lambda **kwargs: method(namespace, **kwargs),
            f"list {kind}s in namespace",
            f"'{namespace}'",
        )
        found = [normalize_workload(item, kind) for item in items]
        return {workload["name"]: workload for workload in found}

    def patch(self, kind: str, namespace: str, name: str, body: dict[str, t.Any]) -> dict[str, t.Any]:
        """A JSON merge patch (RFC 7386) naming only our keys: it needs no resourceVersion."""
        extra: dict[str, t.Any] = {"_content_type": MERGE_PATCH, **self._dry_run()}
        target = f"{kind} {_target(namespace, name)}"
        try:
            patched = self._counted(
                f"kubernetes.{KINDS[kind].resource}.patch",
                lambda: self._method("patch", kind)(name, namespace, body, **extra),
                "patch the pod template of",
                target,
            )
        except WorkloadIdentityError as error:
            if error.status == 404:
                raise WorkloadIdentityError(
                    f"Failed to patch the pod template of {target}: it was deleted while being patched",
                    code="NotFound",
                    status=404,
                    target=target,
                    exception=error.original,
                ) from error
            raise
        return normalize_workload(patched, kind)


class Pods(_Gateway):
    """``api`` is a kubernetes ``CoreV1Api``. Single pods are returned as kubernetes models (the pod prover reads
    their status as it changes)."""

    def create_dry_run(self, namespace: str, body: dict[str, t.Any]) -> dict[str, t.Any]:
        """The pod as admission (the webhook) would make it, as an API dict; nothing is created."""
        created = self._counted(
            "kubernetes.pods.create_dry_run",
            lambda: self.api.create_namespaced_pod(namespace, body, dry_run="All"),
            "dry-run create a pod in namespace",
            f"'{namespace}'",
        )
        return self.api.api_client.sanitize_for_serialization(created)

    def create(self, namespace: str, body: dict[str, t.Any]) -> t.Any:
        return self._counted(
            "kubernetes.pods.create",
            lambda: self.api.create_namespaced_pod(namespace, body),
            "create the verification pod",
            f"in namespace '{namespace}'",
        )

    def read(self, namespace: str, name: str) -> t.Any:
        return self._counted(
            "kubernetes.pods.get",
            lambda: self.api.read_namespaced_pod(name, namespace),
            "read the verification pod",
            _target(namespace, name),
        )

    def log(self, namespace: str, name: str, tail_lines: int) -> str:
        return self._counted(
            "kubernetes.pods.log",
            lambda: self.api.read_namespaced_pod_log(name, namespace, tail_lines=tail_lines),
            "read the verification pod's log",
            _target(namespace, name),
        )

    def delete_now(self, namespace: str, name: str) -> None:
        """Delete at once (grace period 0); gone already is fine."""
        try:
            self._counted(
                "kubernetes.pods.delete",
                lambda: self.api.delete_namespaced_pod(
                    name, namespace, body=delete_options(False, gracePeriodSeconds=0)
                ),
                "delete the verification pod",
                _target(namespace, name),
            )
        except WorkloadIdentityError as error:
            if error.status != 404:
                raise

    def names_using(self, namespace: str, service_account: str) -> list[str]:
        """Names of the running pods of the namespace that run as the ServiceAccount (finished ones left out).
        One LIST with a field selector."""
        items = self._list_json(
            "kubernetes.pods.list",
            lambda **kwargs: self.api.list_namespaced_pod(
                namespace, field_selector=f"spec.serviceAccountName={service_account}", **kwargs
            ),
            "list pods in namespace",
            f"'{namespace}'",
        )
        names = []
        for pod in items:
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            if (pod.get("spec") or {}).get("serviceAccountName") == service_account:  # the selector, double-checked
                names.append(_metadata(pod).get("name"))
        return sorted(names)


class Nodes(_Gateway):
    """``api`` is a kubernetes ``CoreV1Api``."""

    def schedulable(self) -> int | None:
        """Ready nodes that accept pods; None when the caller may not list nodes."""
        try:
            nodes = self._counted("kubernetes.nodes.list", self.api.list_node, "list nodes", "the cluster")
        except WorkloadIdentityError as error:
            if error.status == 403:
                return None
            raise
        count = 0
        for node in nodes.items:
            ready = any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
            if ready and not (node.spec and node.spec.unschedulable):
                count += 1
        return count


class WebhookConfigurations(_Gateway):
    """``api`` is a kubernetes ``AdmissionregistrationV1Api``."""

    def holding(self, webhook_name: str) -> list[str]:
        """Names of the MutatingWebhookConfigurations that hold a webhook of this name. One LIST."""
        configurations = self._counted(
            "kubernetes.mutatingwebhookconfigurations.list",
            lambda: self.api.list_mutating_webhook_configuration().items or [],
            "list",
            "MutatingWebhookConfigurations",
        )
        return [c.metadata.name for c in configurations if any(w.name == webhook_name for w in c.webhooks or [])]


# --- RBAC: the ClusterRole and ClusterRoleBinding of an identity binding, and access reviews ----------------------
RBAC_API_GROUP = "rbac.authorization.k8s.io"
# PolicyRule fields (camelCase in the API) and the snake_case keys the collection reports them under.
_RULE_FIELDS = (
    ("apiGroups", "api_groups"),
    ("resources", "resources"),
    ("verbs", "verbs"),
    ("resourceNames", "resource_names"),
    ("nonResourceURLs", "non_resource_urls"),
)


def _api_dict(found: t.Any, api: t.Any) -> dict[str, t.Any]:
    """An API object as the API server's JSON (camelCase): from a raw response (``_preload_content=False``), a
    kubernetes model (serialised with its own attribute map, so ``nonResourceURLs`` keeps its name) or a dict."""
    data = getattr(found, "data", None)
    if isinstance(data, (bytes, str)):
        return json.loads(data)
    if hasattr(found, "to_dict"):
        return api.api_client.sanitize_for_serialization(found)
    return dict(found or {})


def normalize_policy_rule(rule: t.Mapping[str, t.Any]) -> dict[str, list[str]]:
    """A PolicyRule with only the fields it sets, each a list of strings, under snake_case keys."""
    return {snake: list(rule[camel]) for camel, snake in _RULE_FIELDS if rule.get(camel)}


def policy_rule_body(rule: t.Mapping[str, t.Any]) -> dict[str, list[str]]:
    return {camel: list(rule[snake]) for camel, snake in _RULE_FIELDS if rule.get(snake)}


def normalize_rbac_subject(subject: t.Mapping[str, t.Any]) -> dict[str, str]:
    """A Subject: kind, name, and namespace (ServiceAccounts) and apiGroup (users and groups) when set."""
    normalized = {"kind": subject.get("kind"), "name": subject.get("name")}
    if subject.get("namespace"):
        normalized["namespace"] = subject["namespace"]
    if subject.get("apiGroup"):
        normalized["api_group"] = subject["apiGroup"]
    return normalized


def rbac_subject_body(subject: t.Mapping[str, t.Any]) -> dict[str, str]:
    body = {"kind": subject["kind"], "name": subject["name"]}
    if subject.get("namespace"):
        body["namespace"] = subject["namespace"]
    if subject.get("api_group"):
        body["apiGroup"] = subject["api_group"]
    return body


def _rbac_metadata(document: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    metadata = _metadata(document)
    return {
        "name": metadata.get("name"),
        "uid": metadata.get("uid"),
        "resource_version": metadata.get("resourceVersion"),
        "labels": dict(metadata.get("labels") or {}),
    }


def normalize_cluster_role(document: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """A ClusterRole (API JSON) as the collection reports it; ``aggregated`` when an aggregationRule makes the
    controller manager own its rules."""
    return {
        **_rbac_metadata(document),
        "rules": [normalize_policy_rule(rule) for rule in document.get("rules") or []],
        "aggregated": document.get("aggregationRule") is not None,
    }


def normalize_cluster_role_binding(document: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """A ClusterRoleBinding (API JSON) as the collection reports it, its subjects in the API server's order."""
    role_ref = document.get("roleRef") or {}
    return {
        **_rbac_metadata(document),
        "role_ref": {"api_group": role_ref.get("apiGroup"), "kind": role_ref.get("kind"), "name": role_ref.get("name")},
        "subjects": [normalize_rbac_subject(subject) for subject in document.get("subjects") or []],
    }


class _ClusterScopedRbac(_Gateway):
    """Read, create, merge-patch and delete one cluster-scoped RBAC kind; ``api`` is a kubernetes
    ``RbacAuthorizationV1Api``. Answers are read as the API server's JSON.

    Optimistic concurrency: a patch body carrying ``metadata.resourceVersion`` is refused with 409 Conflict when
    the object changed since that version, and a delete carries the uid and resourceVersion as preconditions; both
    raise ``Raced`` then (and on 404), so a list we replace whole (rules, subjects) never drops another writer's
    entry.
    https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions
    """

    kind = ""  # ClusterRole or ClusterRoleBinding
    resource = ""  # the kubernetes client's method suffix and the request counter's name
    normalize: t.Callable[[t.Mapping[str, t.Any]], dict[str, t.Any]]

    def _method(self, verb: str) -> t.Callable[..., t.Any]:
        return getattr(self.api, f"{verb}_{self.resource}")

    def _operation(self, verb: str) -> str:
        return f"kubernetes.{self.resource.replace('_', '')}s.{verb}"

    def _normalized(self, found: t.Any) -> dict[str, t.Any]:
        return type(self).normalize(_api_dict(found, self.api))

    def read(self, name: str) -> dict[str, t.Any] | None:
        found = self._counted(
            self._operation("get"),
            lambda: self._method("read")(name, _preload_content=False),
            f"read {self.kind}",
            f"'{name}'",
            none_if_not_found=True,
        )
        return self._normalized(found) if found is not None else None

    def list(self, label_selector: str | None = None) -> dict[str, dict[str, t.Any]]:
        """The cluster's objects of this kind by name (those matching ``label_selector``): one LIST per page."""
        selector = {"label_selector": label_selector} if label_selector else {}
        items = self._list_json(
            self._operation("list"),
            lambda **kwargs: self._method("list")(**selector, **kwargs),
            f"list {self.kind}s",
            f"matching '{label_selector}'" if label_selector else "in the cluster",
        )
        found = [type(self).normalize(item) for item in items]
        return {item["name"]: item for item in found}

    def create(self, body: dict[str, t.Any]) -> dict[str, t.Any]:
        """Create (a dry run in check mode); created meanwhile by another writer raises ``Raced``."""
        created = self._create(
            self._operation("create"),
            lambda **dry_run: self._method("create")(body, _preload_content=False, **dry_run),
            f"create {self.kind}",
            f"'{body['metadata']['name']}'",
        )
        return self._normalized(created)

    def patch(self, name: str, body: dict[str, t.Any]) -> dict[str, t.Any]:
        """A JSON merge patch (RFC 7386); with ``metadata.resourceVersion`` in ``body``, changed or deleted since
        that version raises ``Raced``."""
        self.calls.add(self._operation("patch"))
        extra: dict[str, t.Any] = {"_content_type": MERGE_PATCH, "_preload_content": False, **self._dry_run()}
        try:
            patched = self._call(lambda: self._method("patch")(name, body, **extra), f"update {self.kind}", f"'{name}'")
        except WorkloadIdentityError as error:
            if error.status in (404, 409):
                raise Raced() from error
            raise
        return self._normalized(patched)

    def delete(self, name: str, uid: str | None, resource_version: str | None = None) -> None:
        """Delete only the object we read (uid, and resourceVersion when given, as preconditions); gone or changed
        since raises ``Raced``."""
        preconditions = {
            key: value for key, value in (("uid", uid), ("resourceVersion", resource_version)) if value is not None
        }
        options = delete_options(self.dry_run, **({"preconditions": preconditions} if preconditions else {}))
        self.calls.add(self._operation("delete"))
        try:
            self._call(
                lambda: self._method("delete")(name, body=options, _preload_content=False, **self._dry_run()),
                f"delete {self.kind}",
                f"'{name}'",
            )
        except WorkloadIdentityError as error:
            if error.status in (404, 409):
                raise Raced() from error
            raise


class ClusterRoles(_ClusterScopedRbac):
    """ClusterRoles; ``api`` is a kubernetes ``RbacAuthorizationV1Api``."""

    kind = "ClusterRole"
    resource = "cluster_role"
    normalize = staticmethod(normalize_cluster_role)


class ClusterRoleBindings(_ClusterScopedRbac):
    """ClusterRoleBindings; ``api`` is a kubernetes ``RbacAuthorizationV1Api``."""

    kind = "ClusterRoleBinding"
    resource = "cluster_role_binding"
    normalize = staticmethod(normalize_cluster_role_binding)


def service_account_groups(namespace: str) -> list[str]:
    """The groups the API server gives a ServiceAccount token's user, plus the one every authenticated user gets.
    https://kubernetes.io/docs/reference/access-authn-authz/authentication/#service-account-tokens and
    https://kubernetes.io/docs/reference/access-authn-authz/rbac/#referring-to-subjects"""
    return ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]


class AccessReviews(_Gateway):
    """SubjectAccessReviews; ``api`` is a kubernetes ``AuthorizationV1Api``. A review is a question, never stored,
    so it is sent as is even by a gateway built with ``dry_run=True``."""

    def can_use_identity(self, namespace: str, service_account: str, client_id: str) -> dict[str, t.Any]:
        """Whether the API server's authorizers let the ServiceAccount's token use the identity of ``client_id``
        through an AKS identity binding: the verb ``use-managed-identity`` on the resource ``<client ID>`` of API
        group ``cid.wi.aks.azure.com`` (learn.microsoft.com/azure/aks/identity-bindings), asked cluster-wide, as
        the how-to's ClusterRoleBinding grants it. One POST; ``{"allowed": bool, "reason": str}``."""
        user = f"system:serviceaccount:{namespace}:{service_account}"
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": service_account_groups(namespace),
                "resourceAttributes": {
                    "group": IDENTITY_BINDING_RBAC_API_GROUP,
                    "resource": client_id,
                    "verb": IDENTITY_BINDING_RBAC_VERB,
                },
            },
        }
        answer = self._counted(
            "kubernetes.subjectaccessreviews.create",
            lambda: self.api.create_subject_access_review(body, _preload_content=False),
            "review the access of",
            f"ServiceAccount {_target(namespace, service_account)} to identity '{client_id}'",
        )
        status = _api_dict(answer, self.api).get("status") or {}
        reason = status.get("reason") or status.get("evaluationError") or ""
        return {"allowed": bool(status.get("allowed")) and not status.get("denied"), "reason": reason}


# --- aad-pod-identity (deprecated) ------------------------------------------------------------------------------
# Its two CRDs this collection reads and, when a migration is done, deletes: AzureIdentity and AzureIdentityBinding
# (https://azure.github.io/aad-pod-identity/docs/concepts/azureidentity/ and .../azureidentitybinding/).
POD_IDENTITY_GROUP = "aadpodidentity.k8s.io"
POD_IDENTITY_VERSION = "v1"
POD_IDENTITY_PLURALS = {"AzureIdentity": "azureidentities", "AzureIdentityBinding": "azureidentitybindings"}
# An AzureIdentity annotated so only pods of its own namespace match it ("Match Pods in the Namespace",
# https://azure.github.io/aad-pod-identity/docs/configure/match_pods_in_namespace/).
POD_IDENTITY_BEHAVIOR_ANNOTATION = "aadpodidentity.k8s.io/Behavior"


def normalize_pod_identity_object(document: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """An AzureIdentity or AzureIdentityBinding (API dict) as this collection reports it: the spec fields as written
    (camelCase, as the CRD documents them) and the metadata a delete needs."""
    metadata = _metadata(document)
    return {
        "kind": document.get("kind"),
        "namespace": metadata.get("namespace"),
        "name": metadata.get("name"),
        "uid": metadata.get("uid"),
        "annotations": dict(metadata.get("annotations") or {}),
        "spec": dict(document.get("spec") or {}),
    }


class PodIdentityObjects(_Gateway):
    """AzureIdentity and AzureIdentityBinding objects; ``api`` is a kubernetes ``CustomObjectsApi``."""

    def list_json(self, kind: str, namespace: str | None = None) -> list[dict[str, t.Any]] | None:
        """Every object of the kind, in one namespace or all (one LIST per page), as API dicts; None when the CRD is
        not installed (404): then there is none."""
        plural = POD_IDENTITY_PLURALS[kind]
        items: list[dict[str, t.Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, t.Any] = {"_preload_content": False, **({"_continue": token} if token else {})}
            call = functools.partial(self._page, plural, namespace, **kwargs)
            where = "in all namespaces" if namespace is None else f"in namespace '{namespace}'"
            response = self._counted(
                f"kubernetes.{plural}.list", call, f"list {plural}.{POD_IDENTITY_GROUP}", where, none_if_not_found=True
            )
            if response is None:
                return None
            document = json.loads(response.data)
            items += document.get("items") or []
            token = (document.get("metadata") or {}).get("continue")
            if not token:
                return items

    def _page(self, plural: str, namespace: str | None, **kwargs: t.Any) -> t.Any:
        if namespace is None:
            return self.api.list_cluster_custom_object(POD_IDENTITY_GROUP, POD_IDENTITY_VERSION, plural, **kwargs)
        return self.api.list_namespaced_custom_object(
            POD_IDENTITY_GROUP, POD_IDENTITY_VERSION, namespace, plural, **kwargs
        )

    def list(self, kind: str, namespace: str | None = None) -> list[dict[str, t.Any]] | None:
        found = self.list_json(kind, namespace)
        return None if found is None else [normalize_pod_identity_object(item) for item in found]

    def delete(self, kind: str, namespace: str, name: str, uid: str | None) -> None:
        """Deleted, unless it was recreated since our read (uid precondition); gone already raises ``Raced``."""
        plural = POD_IDENTITY_PLURALS[kind]
        self._delete(
            f"kubernetes.{plural}.delete",
            lambda **options: self.api.delete_namespaced_custom_object(
                POD_IDENTITY_GROUP, POD_IDENTITY_VERSION, namespace, plural, name, **options
            ),
            uid,
            f"delete {kind}",
            _target(namespace, name),
        )


class LabelledObjects(_Gateway):
    """Workloads and pods read to find what a label selects, in one namespace or all; ``api`` maps ``core_v1``,
    ``apps_v1`` and ``batch_v1`` to the kubernetes clients."""

    def workloads(self, kind: str, namespace: str | None = None) -> list[dict[str, t.Any]]:
        """Every workload of the kind (normalised): one LIST (per page)."""
        spec = KINDS[kind]
        client = self.api[spec.api]

        def method(**kwargs: t.Any) -> t.Any:
            if namespace is None:
                return getattr(client, f"list_{spec.resource}_for_all_namespaces")(**kwargs)
            return getattr(client, f"list_namespaced_{spec.resource}")(namespace, **kwargs)

        items = self._list_json(
            f"kubernetes.{spec.resource}.list",
            method,
            f"list {kind}s",
            "in all namespaces" if namespace is None else f"in namespace '{namespace}'",
        )
        return [normalize_workload(item, kind) for item in items]

    def pods(self, label: str, namespace: str | None = None) -> list[dict[str, t.Any]]:
        """The pods that carry ``label`` (any value), as API dicts: one LIST (per page) with a label selector."""
        core = self.api["core_v1"]

        def method(**kwargs: t.Any) -> t.Any:
            if namespace is None:
                return core.list_pod_for_all_namespaces(label_selector=label, **kwargs)
            return core.list_namespaced_pod(namespace, label_selector=label, **kwargs)

        return self._list_json(
            "kubernetes.pods.list",
            method,
            f"list pods labelled {label}",
            "in all namespaces" if namespace is None else f"in namespace '{namespace}'",
        )
