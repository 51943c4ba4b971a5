# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reconciler for the workload identity ServiceAccount: the annotations the webhook reads, and nothing else.

Only the keys this collection owns (client ID, tenant ID, token expiration) and the labels and annotations the
caller names are ever written, with a strategic merge patch that lists just those keys, so other labels,
annotations, ``secrets`` and ``imagePullSecrets`` on an existing ServiceAccount survive (azwi replaces the
object). Check mode is the API server's dry run.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass, field

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways import ApiCalls
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.kubernetes import (
    NamespaceMissing,
    Namespaces,
    Pods,
    ServiceAccounts,
    normalize_service_account,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import (
    CREATE,
    DELETE,
    NONE,
    UPDATE,
    NamespacedReconciler,
    Plan,
    merge_owned,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ANNOTATION_CLIENT_ID,
    ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION,
    ANNOTATION_TENANT_ID,
    DNS1123_SUBDOMAIN_MAX,
    DNS1123_SUBDOMAIN_PATTERN,
    LABEL_USE,
    service_account_subject,
    validate_namespace,
    validate_service_account_annotations,
    validate_service_account_name,
)

PRESENT = "present"
ABSENT = "absent"
REMOVE_SERVICE_ACCOUNT = "service_account"  # state=absent deletes the ServiceAccount
REMOVE_ANNOTATIONS = "annotations"  # state=absent strips our keys and keeps the ServiceAccount

# The ServiceAccount annotations the webhook reads, by the name of the option that sets each.
OWNED_ANNOTATIONS: dict[str, str] = {
    "client_id": ANNOTATION_CLIENT_ID,
    "tenant_id": ANNOTATION_TENANT_ID,
    "token_expiration": ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION,
}
GUID_ANNOTATIONS = (ANNOTATION_CLIENT_ID, ANNOTATION_TENANT_ID)  # Entra compares GUIDs case-insensitively

# k8s.io/apimachinery/pkg/util/validation: IsQualifiedName (label and annotation keys), IsValidLabelValue,
# and TotalAnnotationSizeLimitB (256 KiB over all keys and values).
QUALIFIED_NAME_MAX = 63
QUALIFIED_NAME_PATTERN = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE_MAX = 63
LABEL_VALUE_PATTERN = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ANNOTATIONS_SIZE_MAX = 256 * 1024

MAX_NAMED_PODS = 5  # pods named in the restart warning; the result lists them all


# --- The desired state --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DesiredServiceAccount:
    """What the caller wants. ``tenant_id``: ``None`` leaves the annotation alone, ``""`` removes it."""

    namespace: str
    name: str
    state: str = PRESENT
    client_id: str | None = None
    tenant_id: str | None = None
    token_expiration: int | None = None
    labels: t.Mapping[str, str | None] = field(default_factory=dict)
    annotations: t.Mapping[str, str | None] = field(default_factory=dict)
    create_namespace: bool = False
    remove: str = REMOVE_SERVICE_ACCOUNT

    @property
    def subject(self) -> str:
        return service_account_subject(self.namespace, self.name)

    @property
    def target(self) -> str:
        return f"'{self.namespace}/{self.name}'"


def validate(desired: DesiredServiceAccount) -> list[str]:
    """Every input rule, as "field: rule" messages, checked before any request."""
    errors = [*validate_namespace(desired.namespace), *validate_service_account_name(desired.name, "name")]
    if desired.state == PRESENT:
        errors += validate_service_account_annotations(
            desired.client_id, desired.tenant_id or None, desired.token_expiration
        )
    errors += _validate_metadata("labels", desired.labels, label_values=True)
    errors += _validate_metadata("annotations", desired.annotations, label_values=False)
    for option, key in OWNED_ANNOTATIONS.items():
        if key in (desired.annotations or {}):
            errors.append(f"annotations: key {key!r} is owned by this module; set it with the {option} option")
    return errors


def validate_labels(labels: t.Any, field_name: str = "labels") -> list[str]:
    """Labels to set (str) or remove (None) on any object: the API server's rules for keys and values."""
    return _validate_metadata(field_name, labels, label_values=True)


def _validate_metadata(field_name: str, values: t.Any, *, label_values: bool) -> list[str]:
    if not isinstance(values, t.Mapping):
        return [f"{field_name}: must be a dictionary"]
    errors: list[str] = []
    for key, value in values.items():
        errors += validate_qualified_name(key, f"{field_name}: key {key!r}")
        if value is None:  # null removes the key
            continue
        if not isinstance(value, str):
            errors.append(f"{field_name}.{key}: must be a string (quote it), got {type(value).__name__}")
        elif label_values and (len(value) > LABEL_VALUE_MAX or not LABEL_VALUE_PATTERN.match(value)):
            errors.append(
                f"{field_name}.{key}: must be at most {LABEL_VALUE_MAX} letters, digits, '-', '_' or '.', "
                "starting and ending alphanumeric (or empty)"
            )
    if not label_values:
        # The API server counts bytes (Go's len of the UTF-8 strings), not characters.
        size = sum(len(str(k).encode()) + len(v.encode()) for k, v in values.items() if isinstance(v, str))
        if size > ANNOTATIONS_SIZE_MAX:
            errors.append(f"{field_name}: keys and values must total at most {ANNOTATIONS_SIZE_MAX} bytes, got {size}")
    return errors


def validate_qualified_name(key: t.Any, where: str) -> list[str]:
    """A label or annotation key: ``[prefix/]name``, prefix an RFC 1123 subdomain, name 1-63 characters."""
    if not isinstance(key, str) or not key:
        return [f"{where}: must be a non-empty string"]
    prefix, _slash, name = key.rpartition("/")
    errors = []
    if "/" in key and (
        not prefix or len(prefix) > DNS1123_SUBDOMAIN_MAX or not DNS1123_SUBDOMAIN_PATTERN.match(prefix)
    ):
        errors.append(f"{where}: prefix must be a DNS subdomain (lower-case letters, digits, '-' and '.')")
    if len(name) > QUALIFIED_NAME_MAX or not QUALIFIED_NAME_PATTERN.match(name):
        errors.append(
            f"{where}: name part must be 1-{QUALIFIED_NAME_MAX} letters, digits, '-', '_' or '.', "
            "starting and ending alphanumeric"
        )
    return errors


# --- Normalising ------------------------------------------------------------------------------------------------
def _comparable(service_account: dict[str, t.Any] | None) -> dict[str, t.Any] | None:
    """The normalised dict without what only the server assigns, for plans and diffs."""
    if service_account is None:
        return None
    return {key: value for key, value in service_account.items() if key != "uid"}


def _rebuild(namespace: str, name: str, labels: dict[str, str], annotations: dict[str, str]) -> dict[str, t.Any]:
    return _comparable(
        normalize_service_account(
            {"metadata": {"namespace": namespace, "name": name, "labels": labels, "annotations": annotations}}
        )
    )  # type: ignore[return-value]


# --- Planning (pure) ----------------------------------------------------------------------------------------------
def owned_annotations(desired: DesiredServiceAccount, current: t.Mapping[str, str] | None = None) -> dict[str, t.Any]:
    """Annotation keys to set (value) or remove (None). Options left unset are not ours to touch this time."""
    if desired.state == ABSENT:
        return dict.fromkeys([*OWNED_ANNOTATIONS.values(), *desired.annotations])
    owned: dict[str, t.Any] = dict(desired.annotations)
    owned[ANNOTATION_CLIENT_ID] = desired.client_id
    if desired.tenant_id is not None:
        owned[ANNOTATION_TENANT_ID] = desired.tenant_id or None
    if desired.token_expiration is not None:
        owned[ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION] = str(desired.token_expiration)
    for key in GUID_ANNOTATIONS:  # keep the spelling already there when only the letter case differs
        value, existing = owned.get(key), (current or {}).get(key)
        if isinstance(value, str) and isinstance(existing, str) and value.lower() == existing.lower():
            owned[key] = existing
    return owned


def owned_labels(desired: DesiredServiceAccount) -> dict[str, t.Any]:
    if desired.state == ABSENT:
        return dict.fromkeys(desired.labels)
    return dict(desired.labels)


def plan(actual: dict[str, t.Any] | None, desired: DesiredServiceAccount) -> Plan:
    """Decide from the normalised ServiceAccount (``None`` when absent) what to do."""
    before = _comparable(actual)
    warnings = []
    if desired.state == PRESENT and LABEL_USE in desired.labels:
        warnings.append(
            f"labels: {LABEL_USE!r} has no effect on a ServiceAccount since azure-workload-identity v1.0; "
            "put it on the pod template of the workloads instead"
        )
    if desired.state == ABSENT and desired.remove == REMOVE_SERVICE_ACCOUNT:
        if before is None:
            return Plan(NONE, None, None, warnings, "the ServiceAccount does not exist")
        return Plan(DELETE, before, None, warnings, "the ServiceAccount exists")
    if before is None:
        if desired.state == ABSENT:
            return Plan(NONE, None, None, warnings, "the ServiceAccount does not exist")
        labels = {k: v for k, v in owned_labels(desired).items() if v is not None}
        annotations = {k: v for k, v in owned_annotations(desired).items() if v is not None}
        after = _rebuild(desired.namespace, desired.name, labels, annotations)
        return Plan(CREATE, None, after, warnings, "the ServiceAccount does not exist")
    after = _rebuild(
        desired.namespace,
        desired.name,
        merge_owned(before["labels"], owned_labels(desired)),
        merge_owned(before["annotations"], owned_annotations(desired, before["annotations"])),
    )
    if after == before:
        return Plan(NONE, before, after, warnings, "the ServiceAccount already has the desired labels and annotations")
    changed = [k for k in ("labels", "annotations") if after[k] != before[k]]
    return Plan(UPDATE, before, after, warnings, f"{' and '.join(changed)} differ")


def patch_body(plan: Plan) -> dict[str, t.Any]:
    """A strategic merge patch naming only the keys that change (``None`` deletes a key)."""
    metadata: dict[str, t.Any] = {}
    for section in ("labels", "annotations"):
        before, after = (plan.before or {}).get(section) or {}, (plan.after or {}).get(section) or {}
        changes = {key: after.get(key) for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)}
        if changes:
            metadata[section] = changes
    return {"metadata": metadata}


def create_body(plan: Plan) -> dict[str, t.Any]:
    after = plan.after or {}
    metadata = {"name": after["name"], "namespace": after["namespace"]}
    for section in ("labels", "annotations"):
        if after.get(section):
            metadata[section] = dict(after[section])
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}


def webhook_settings(service_account: t.Mapping[str, t.Any] | None) -> dict[str, t.Any]:
    return {key: (service_account or {}).get(key) for key in OWNED_ANNOTATIONS}


def settings_change_affects_pods(plan: Plan) -> bool:
    """Running pods keep what the webhook injected when they were created: does this plan change that?

    True when an existing ServiceAccount's client ID, tenant ID or token expiration changes, or the
    ServiceAccount that carries them goes away; pods created from now on get the new settings.
    """
    if not plan.changed or plan.before is None:
        return False
    before, after = webhook_settings(plan.before), webhook_settings(plan.after)
    return before != after and any(value is not None for value in before.values())


def restart_warning(plan: Plan, desired: DesiredServiceAccount, pods: list[str]) -> str:
    before, after = webhook_settings(plan.before), webhook_settings(plan.after)
    if plan.action == DELETE:
        what = "is deleted"
    else:
        changes = [f"{key} {before[key]!r} -> {after[key]!r}" for key in OWNED_ANNOTATIONS if before[key] != after[key]]
        what = "changes " + ", ".join(changes)
    named = ", ".join(pods[:MAX_NAMED_PODS]) + (
        f" and {len(pods) - MAX_NAMED_PODS} more" if len(pods) > MAX_NAMED_PODS else ""
    )
    return (
        f"ServiceAccount {desired.target} {what}; {len(pods)} pod(s) use it and keep the workload identity "
        f"settings injected when they started until they are restarted: {named}. "
        "Restart their workloads (for example kubectl rollout restart)."
    )


# --- Talking to the API server ----------------------------------------------------------------------------------
def namespace_missing(namespace: str, error: BaseException | None = None) -> WorkloadIdentityError:
    return WorkloadIdentityError(
        f"namespace: namespace '{namespace}' does not exist; set create_namespace: true or create it first",
        code="NotFound",
        status=404,
        target=f"'{namespace}'",
        exception=getattr(error, "original", None),
    )


def read_parent_namespace(namespaces: Namespaces, namespace: str, create_namespace: bool) -> bool | None:
    """Before creating an object in ``namespace``: one GET of it. True when it must be created first, False when it
    exists; a missing namespace without ``create_namespace``, or one being deleted, fails here, before any write.
    None when the caller may not read namespaces (a namespaced Role cannot grant it): the create then tells."""
    try:
        found = namespaces.read(namespace)
    except WorkloadIdentityError as error:
        if error.status == 403:
            return None
        raise
    if found is None:
        if not create_namespace:
            raise namespace_missing(namespace)
        return True
    if found["terminating"]:
        raise WorkloadIdentityError(
            f"namespace: namespace '{namespace}' is being deleted (phase {found['phase']}), so nothing can be created "
            "in it; wait until it is gone and run again",
            code="Conflict",
            status=409,
            target=f"'{namespace}'",
        )
    return False


class InNamespaceReconciler(NamespacedReconciler):
    """A namespaced object whose create needs its namespace (ServiceAccounts, ConfigMaps): the namespace is read
    when the plan is a create, so a missing one fails before any write, and it is created first when asked.
    Subclasses set ``objects`` (the object's gateway), ``namespaces`` and ``dry_run``, and give ``plan_object``."""

    objects: t.Any
    namespaces: Namespaces
    dry_run: bool
    # From the namespace read before a create (None: not readable); callers of apply() have not read it.
    namespace_to_create: bool | None = False

    def plan_object(self, actual: dict[str, t.Any] | None, desired: t.Any) -> Plan:
        raise NotImplementedError

    def plan_for(self, actual: dict[str, t.Any] | None, desired: t.Any) -> Plan:
        decided = self.plan_object(actual, desired)
        if decided.action == CREATE:
            self.namespace_to_create = read_parent_namespace(
                self.namespaces, desired.namespace, desired.create_namespace
            )
        return decided

    def create_in_namespace(self, desired: t.Any, body: t.Any, outcome: t.Any) -> t.Any:
        if self.namespace_to_create is not True:
            try:
                return self.objects.create(desired.namespace, body)
            except NamespaceMissing as error:  # deleted since our read, or a caller of apply() that did not read it
                if not desired.create_namespace:
                    raise namespace_missing(desired.namespace, error) from error
        self.namespaces.create(desired.namespace)
        outcome.namespace_created = True
        if self.dry_run:
            return None  # the namespace exists only in the dry run: the object cannot be dry-run inside it
        return self.objects.create(desired.namespace, body)


@dataclass
class Outcome:
    """What one reconcile did. ``service_account`` is the normalised object after it (None when absent)."""

    plan: Plan
    service_account: dict[str, t.Any] | None
    namespace_created: bool = False
    stale_pods: list[str] | None = field(default_factory=list)  # None: could not be listed
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.plan.changed


class ServiceAccountReconciler(InNamespaceReconciler):
    """Reads, plans and applies one ServiceAccount through the gateways, on a kubernetes ``CoreV1Api``.

    ``dry_run`` (check mode) sends every write with ``dryRun=All``: the API server validates, runs admission and
    answers with the result, and persists nothing.
    """

    kind = "ServiceAccount"

    def __init__(self, core_v1: t.Any, *, calls: ApiCalls | None = None, **caller: t.Any) -> None:
        self.accounts = self.objects = ServiceAccounts(core_v1, calls=calls, **caller)
        self.namespaces = Namespaces(core_v1, calls=self.accounts.calls, **caller)
        self.pods = Pods(core_v1, calls=self.accounts.calls, **caller)
        self.dry_run = self.accounts.dry_run

    def read(self, namespace: str, name: str) -> dict[str, t.Any] | None:
        return self.accounts.read(namespace, name)

    def _create(self, plan: Plan, desired: DesiredServiceAccount, outcome: Outcome) -> t.Any:
        return self.create_in_namespace(desired, create_body(plan), outcome)

    def _patch(self, plan: Plan, desired: DesiredServiceAccount) -> t.Any:
        return self.accounts.patch(desired.namespace, desired.name, patch_body(plan))

    def _delete(self, uid: str | None, desired: DesiredServiceAccount) -> None:
        self.accounts.delete(desired.namespace, desired.name, uid)

    # The whole round (NamespacedReconciler: reconcile, apply).
    def plan_object(self, actual: dict[str, t.Any] | None, desired: DesiredServiceAccount) -> Plan:
        return plan(actual, desired)

    def attempt(self, actual: dict[str, t.Any] | None, desired: DesiredServiceAccount, decided: Plan) -> Outcome:
        """The plan carried out (after the pods check), or RacedWrite."""
        outcome = Outcome(decided, actual, warnings=list(decided.warnings))
        if settings_change_affects_pods(decided):
            self._check_pods(decided, desired, outcome)
        if decided.changed:
            self._apply(actual, desired, outcome)  # Raced: NamespacedReconciler reads again
        return outcome

    def _check_pods(self, decided: Plan, desired: DesiredServiceAccount, outcome: Outcome) -> None:
        try:
            outcome.stale_pods = self.pods.names_using(desired.namespace, desired.name)
        except WorkloadIdentityError as error:
            # Only a warning depends on it (and the lab's least-privileged Role may not allow it): go on.
            outcome.stale_pods = None
            outcome.warnings.append(
                f"Could not check which pods use ServiceAccount {desired.target} ({error}); pods started before "
                "this change keep the old workload identity settings until restarted."
            )
            return
        if outcome.stale_pods:
            outcome.warnings.append(restart_warning(decided, desired, outcome.stale_pods))

    def _apply(self, actual: dict[str, t.Any] | None, desired: DesiredServiceAccount, outcome: Outcome) -> None:
        decided = outcome.plan
        if decided.action == DELETE:
            self._delete((actual or {}).get("uid"), desired)
            outcome.service_account = None
            return
        if decided.action == CREATE:
            response = self._create(decided, desired, outcome)
        else:
            response = self._patch(decided, desired)
        if response is None:  # check mode inside a namespace that only the dry run created
            outcome.service_account = {**(decided.after or {}), "uid": None}
            return
        result = normalize_service_account(response)
        if self.dry_run and decided.action == CREATE:
            result["uid"] = None  # a dry-run create answers with a uid that will never exist
        outcome.service_account = result
        decided.after = _comparable(result)  # what the server computed (admission may add keys)
