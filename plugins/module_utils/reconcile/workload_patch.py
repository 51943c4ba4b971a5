# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reconciler for the pod template of a workload: the label, ServiceAccount and annotations the webhook reads.

The azure-workload-identity webhook mutates only pods labelled ``azure.workload.identity/use: "true"`` that run
as an annotated ServiceAccount, and a Deployment, StatefulSet, DaemonSet or CronJob makes its pods from its pod
template (a CronJob's is ``spec.jobTemplate.spec.template``), so that is where the label and
``serviceAccountName`` go; a label on the workload's own metadata has no effect. Only those keys (and the proxy
sidecar annotations, when asked) are ever written, with a JSON merge patch (RFC 7386) naming just them, so the
rest of the template is left as it is. Check mode is the API server's dry run.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways import ApiCalls
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.kubernetes import (
    KINDS,
    Namespaces,
    PodTemplates,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import NONE, UPDATE, Plan, merge_owned
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ANNOTATION_INJECT_PROXY_SIDECAR,
    ANNOTATION_PROXY_SIDECAR_PORT,
    ANNOTATION_USE_IDENTITY_BINDING,
    CRONJOB_NAME_MAX,
    DEFAULT_PROXY_SIDECAR_PORT,
    LABEL_USE,
    LABEL_USE_VALUE,
    validate_namespace,
    validate_object_name,
    validate_service_account_name,
)

PRESENT = "present"
ABSENT = "absent"


PROXY_ANNOTATIONS = (ANNOTATION_INJECT_PROXY_SIDECAR, ANNOTATION_PROXY_SIDECAR_PORT)
MIN_PORT, MAX_PORT = 1, 65535


# --- The desired state --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DesiredPodTemplate:
    """What the caller wants. ``proxy_sidecar`` and ``identity_binding``: ``None`` leaves their annotations alone.
    ``identity_binding`` true sets ``azure.workload.identity/use-identity-binding: "true"``: the pods get their
    tokens through the AKS token proxy of the cluster's identity bindings."""

    namespace: str
    kind: str
    name: str
    service_account: str | None = None
    state: str = PRESENT
    proxy_sidecar: bool | None = None
    proxy_sidecar_port: int | None = None
    identity_binding: bool | None = None

    @property
    def target(self) -> str:
        return f"{self.kind} '{self.namespace}/{self.name}'"

    @property
    def template_field(self) -> str:
        return ".".join(KINDS[self.kind].template_path)


def validate(desired: DesiredPodTemplate) -> list[str]:
    """Every input rule, as "field: rule" messages, checked before any request."""
    errors = validate_namespace(desired.namespace)
    if desired.kind not in KINDS:
        errors.append(f"kind: must be one of {', '.join(KINDS)}, got {desired.kind!r}")
    if desired.kind == "CronJob":
        errors += validate_object_name(desired.name, "name", CRONJOB_NAME_MAX)
    else:
        errors += validate_object_name(desired.name, "name")
    if desired.state == PRESENT:
        errors += validate_service_account_name(desired.service_account, "service_account")
    port = desired.proxy_sidecar_port
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not MIN_PORT <= port <= MAX_PORT):
        errors.append(f"proxy_sidecar_port: must be a port number {MIN_PORT}-{MAX_PORT}, got {port!r}")
    return errors


# --- Normalising ------------------------------------------------------------------------------------------------
def _comparable(workload: dict[str, t.Any] | None) -> dict[str, t.Any] | None:
    """The normalised dict without what only the server assigns or what merely mirrors another field."""
    if workload is None:
        return None
    return {key: value for key, value in workload.items() if key not in ("uid", "deprecated_service_account")}


# --- Planning (pure) ----------------------------------------------------------------------------------------------
def owned_labels(desired: DesiredPodTemplate) -> dict[str, str | None]:
    return {LABEL_USE: LABEL_USE_VALUE if desired.state == PRESENT else None}


def owned_annotations(desired: DesiredPodTemplate) -> dict[str, str | None]:
    owned: dict[str, str | None] = {}
    if desired.state == ABSENT or desired.proxy_sidecar is False:
        owned.update(dict.fromkeys(PROXY_ANNOTATIONS))
    elif desired.proxy_sidecar:
        port = desired.proxy_sidecar_port or DEFAULT_PROXY_SIDECAR_PORT
        owned.update({ANNOTATION_INJECT_PROXY_SIDECAR: "true", ANNOTATION_PROXY_SIDECAR_PORT: str(port)})
    if desired.state == ABSENT or desired.identity_binding is False:
        owned[ANNOTATION_USE_IDENTITY_BINDING] = None
    elif desired.identity_binding:
        owned[ANNOTATION_USE_IDENTITY_BINDING] = "true"
    return owned


def _rebuild(before: dict[str, t.Any], service_account: str | None, labels: dict, annotations: dict) -> dict:
    port = annotations.get(ANNOTATION_PROXY_SIDECAR_PORT)
    return {
        **before,
        "service_account": service_account,
        "labels": labels,
        "annotations": annotations,
        "workload_identity": labels.get(LABEL_USE) == LABEL_USE_VALUE,
        "proxy_sidecar": annotations.get(ANNOTATION_INJECT_PROXY_SIDECAR) == "true",
        "proxy_sidecar_port": int(port) if isinstance(port, str) and port.isdigit() else None,
        "identity_binding": str(annotations.get(ANNOTATION_USE_IDENTITY_BINDING, "")).lower() == "true",
    }


def plan(actual: dict[str, t.Any] | None, desired: DesiredPodTemplate) -> Plan:
    """Decide from the normalised workload (``None`` when it does not exist) what to patch."""
    if actual is None:
        if desired.state == ABSENT:
            return Plan(NONE, None, None, [], f"the {desired.kind} does not exist")
        raise WorkloadIdentityError(
            f"name: {desired.target}: it does not exist; create the workload first (or leave it out of the list of "
            "workloads to patch)",
            code="NotFound",
            status=404,
            target=desired.target,
        )
    before = _comparable(actual) or {}
    service_account = desired.service_account if desired.state == PRESENT else before["service_account"]
    after = _rebuild(
        before,
        service_account,
        merge_owned(before["labels"], owned_labels(desired)),
        merge_owned(before["annotations"], owned_annotations(desired)),
    )
    warnings = []
    previous = before["service_account"]
    if desired.state == PRESENT and previous not in (None, "", "default", service_account):
        warnings.append(
            f"The pods of {desired.target} ran as ServiceAccount '{previous}' and will run as '{service_account}'; "
            f"any Kubernetes RBAC granted to '{previous}' no longer applies to them"
        )
    if after == before and not _deprecated_alias_differs(actual, after):
        return Plan(NONE, before, after, warnings, "the pod template already has the desired settings")
    changed = [key for key in ("service_account", "labels", "annotations") if after[key] != before[key]]
    return Plan(UPDATE, before, after, warnings, f"{', '.join(changed) or 'serviceAccount'} of the pod template differ")


def _deprecated_alias_differs(actual: dict[str, t.Any], after: dict[str, t.Any]) -> bool:
    alias = actual.get("deprecated_service_account")
    return bool(alias) and alias != after["service_account"]


def patch_body(plan: Plan, desired: DesiredPodTemplate, actual: dict[str, t.Any]) -> dict[str, t.Any]:
    """A JSON merge patch of the pod template naming only the keys that change (``None`` deletes a key)."""
    before, after = plan.before or {}, plan.after or {}
    metadata: dict[str, t.Any] = {}
    for section in ("labels", "annotations"):
        old, new = before.get(section) or {}, after.get(section) or {}
        changes = {key: new.get(key) for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)}
        if changes:
            metadata[section] = changes
    template: dict[str, t.Any] = {}
    if metadata:
        template["metadata"] = metadata
    spec: dict[str, t.Any] = {}
    if after.get("service_account") != before.get("service_account"):
        spec["serviceAccountName"] = after["service_account"]
    if _deprecated_alias_differs(actual, after):
        # A stale deprecated alias would read as another ServiceAccount to older tools: keep the two equal.
        spec["serviceAccount"] = after["service_account"]
    if spec:
        template["spec"] = spec
    body: dict[str, t.Any] = template
    for step in reversed(KINDS[desired.kind].template_path):
        body = {step: body}
    return body


# --- Talking to the API server ----------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What one reconcile did. ``workload`` is the normalised workload after it (None when it does not exist)."""

    plan: Plan
    workload: dict[str, t.Any] | None
    restarts_pods: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.plan.changed


class PodTemplateReconciler:
    """Reads, plans and patches one workload's pod template through the gateway.

    ``clients`` maps the API group client names of ``KINDS`` (``apps_v1``, ``batch_v1``) to kubernetes client
    objects. ``dry_run`` (check mode) sends the patch with ``dryRun=All``: the API server validates and answers
    with the result, and persists nothing.
    """

    def __init__(self, clients: t.Mapping[str, t.Any], *, calls: ApiCalls | None = None, **caller: t.Any) -> None:
        self.templates = PodTemplates(clients, calls=calls, **caller)
        self.core_v1 = clients.get("core_v1")
        self.caller = caller

    def read(self, desired: DesiredPodTemplate) -> dict[str, t.Any] | None:
        return self.templates.read(desired.kind, desired.namespace, desired.name)

    def reconcile(self, desired: DesiredPodTemplate) -> Outcome:
        """Read -> plan -> patch. A workload to patch that is missing fails in the plan; when ``clients`` has
        ``core_v1``, one GET of its namespace first tells a missing namespace from a missing workload."""
        actual = self.read(desired)
        if actual is None and desired.state == PRESENT and self._namespace_missing(desired.namespace):
            raise WorkloadIdentityError(
                f"namespace: namespace '{desired.namespace}' does not exist, so {desired.target} does not either; "
                "create them first",
                code="NotFound",
                status=404,
                target=f"'{desired.namespace}'",
            )
        return self.apply(actual, desired)

    def _namespace_missing(self, namespace: str) -> bool:
        if self.core_v1 is None:
            return False
        try:
            return Namespaces(self.core_v1, calls=self.templates.calls, **self.caller).read(namespace) is None
        except WorkloadIdentityError as error:
            if error.status == 403:  # may not read namespaces (a namespaced Role cannot grant it): say what we know
                return False
            raise

    def apply(self, actual: dict[str, t.Any] | None, desired: DesiredPodTemplate) -> Outcome:
        """Plan from ``actual`` (read by the caller, or just now) and patch: a merge patch names only our keys, so
        it needs no resourceVersion and cannot undo another writer's change."""
        decided = plan(actual, desired)
        outcome = Outcome(decided, actual, warnings=list(decided.warnings))
        if not decided.changed or actual is None:
            return outcome
        result = self.templates.patch(
            desired.kind, desired.namespace, desired.name, patch_body(decided, desired, actual)
        )
        outcome.workload = result
        decided.after = _comparable(result)  # what the server computed
        outcome.restarts_pods = KINDS[desired.kind].rolls_out
        return outcome
