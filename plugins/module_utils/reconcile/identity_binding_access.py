# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reconciler for the Kubernetes side of an AKS identity binding: which ServiceAccounts may use an identity.

AKS's identity binding proxy exchanges a pod's token only when Kubernetes RBAC grants its ServiceAccount the verb
``use-managed-identity`` on the resource ``<client ID>`` of API group ``cid.wi.aks.azure.com``; the how-to grants it
with one ClusterRole and one ClusterRoleBinding per identity
(https://learn.microsoft.com/azure/aks/identity-bindings, "Authorize namespaces and service accounts"):

    kind: ClusterRole                              kind: ClusterRoleBinding
    rules:                                         roleRef: {apiGroup: rbac.authorization.k8s.io,
      - verbs: ["use-managed-identity"]                      kind: ClusterRole, name: <the role>}
        apiGroups: ["cid.wi.aks.azure.com"]        subjects:
        resources: ["<client ID>"]                   - {kind: ServiceAccount, name: demo, namespace: demo}

Both are named ``identity_binding_role_name(client_id)``. Only what this collection owns is touched: our rule in the
ClusterRole (other rules stay), the listed ServiceAccount subjects in the ClusterRoleBinding (other subjects stay,
in their order). An object is deleted only when it carries our ``app.kubernetes.io/managed-by`` label and nothing
of anybody else's is left in it. The plan functions are pure; ``BindingAccessReconciler`` reads and writes through
the gateways.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import copy
import time
import typing as t
from dataclasses import dataclass, field

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways import ApiCalls
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.kubernetes import (
    RBAC_API_GROUP,
    AccessReviews,
    ClusterRoleBindings,
    ClusterRoles,
    policy_rule_body,
    rbac_subject_body,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import Raced
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import (
    CREATE,
    DELETE,
    NONE,
    UPDATE,
    Plan,
    merge_owned,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.service_account import validate_labels
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    IDENTITY_BINDING_RBAC_API_GROUP,
    IDENTITY_BINDING_RBAC_VERB,
    identity_binding_role_name,
    service_account_subject,
    validate_namespace,
    validate_service_account_name,
    validate_uuid,
)

PRESENT = "present"
ABSENT = "absent"
# The label this collection puts on the Kubernetes objects it creates (pod_proof.py's verification pods carry it
# too); https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "aks.workload_identity"
SERVICE_ACCOUNT = "ServiceAccount"
# A changed object is read again once after a 409 from another writer (a create of the same name, a patch or delete
# whose resourceVersion precondition failed), then the run fails.
RACE_ATTEMPTS = 2
# The API server's authorizer reads RBAC from its watch cache: a review sent right after our write may not see it.
VERIFY_TIMEOUT = 10.0
VERIFY_INTERVAL = 0.5
UNREAD: t.Any = object()  # plan_role's actual_binding when the caller did not read it


# --- The desired state --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DesiredBindingAccess:
    """The ServiceAccounts (``(namespace, name)`` pairs) that may (present) or may no longer (absent) use the
    identity of ``client_id`` through an identity binding. ``labels`` go on both objects with state present (a
    ``None`` value removes the key); state absent ignores them."""

    client_id: str
    service_accounts: tuple[tuple[str, str], ...] = ()
    state: str = PRESENT
    labels: t.Mapping[str, str | None] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Our ClusterRole's name, which our ClusterRoleBinding shares."""
        return identity_binding_role_name(self.client_id)

    @property
    def resource(self) -> str:
        """The RBAC resource: the client ID as Azure writes it (lower case; ``az identity show`` in the how-to)."""
        return self.client_id.lower()

    @property
    def rule(self) -> dict[str, list[str]]:
        return {
            "api_groups": [IDENTITY_BINDING_RBAC_API_GROUP],
            "resources": [self.resource],
            "verbs": [IDENTITY_BINDING_RBAC_VERB],
        }

    @property
    def role_ref(self) -> dict[str, str]:
        return {"api_group": RBAC_API_GROUP, "kind": "ClusterRole", "name": self.name}

    @property
    def subjects(self) -> list[dict[str, str]]:
        return [
            {"kind": SERVICE_ACCOUNT, "name": name, "namespace": namespace} for namespace, name in self.service_accounts
        ]

    @property
    def target(self) -> str:
        return f"'{self.name}'"


def validate(desired: DesiredBindingAccess) -> list[str]:
    """Every input rule, as "field: rule" messages, checked before any request."""
    errors = validate_uuid(desired.client_id, "client_id")
    if desired.state not in (PRESENT, ABSENT):
        errors.append(f"state: must be {PRESENT} or {ABSENT}, got {desired.state!r}")
    if not desired.service_accounts:
        errors.append("service_accounts: must name at least one ServiceAccount (namespace and name)")
    seen: dict[tuple[str, str], int] = {}
    for index, (namespace, name) in enumerate(desired.service_accounts):
        where = f"service_accounts[{index}]"
        found = [
            *validate_namespace(namespace, f"{where}.namespace"),
            *validate_service_account_name(name, f"{where}.name"),
        ]
        errors += found
        if not found and (namespace, name) in seen:
            errors.append(f"{where}: repeats service_accounts[{seen[(namespace, name)]}] ({namespace}/{name})")
        seen.setdefault((namespace, name), index)
    errors += validate_labels(desired.labels)
    if LABEL_MANAGED_BY in (desired.labels or {}):
        errors.append(f"labels: key {LABEL_MANAGED_BY!r} is set by this module on the objects it creates")
    return errors


# --- Planning (pure) ----------------------------------------------------------------------------------------------
def owned(actual: t.Mapping[str, t.Any] | None) -> bool:
    """Whether this collection created the object (our managed-by label)."""
    return bool(actual) and (actual.get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY  # type: ignore[union-attr]


def comparable(actual: t.Mapping[str, t.Any] | None) -> dict[str, t.Any] | None:
    """The normalised object without what only the server assigns, for plans and diffs."""
    if actual is None:
        return None
    return {key: copy.deepcopy(value) for key, value in actual.items() if key not in ("uid", "resource_version")}


def _new_labels(desired: DesiredBindingAccess) -> dict[str, str]:
    labels = {key: value for key, value in desired.labels.items() if value is not None}
    return {**labels, LABEL_MANAGED_BY: MANAGED_BY}


def _is_subject(subject: t.Mapping[str, t.Any], namespace: str, name: str) -> bool:
    return (
        subject.get("kind") == SERVICE_ACCOUNT
        and subject.get("namespace") == namespace
        and subject.get("name") == name
        and not subject.get("api_group")
    )


def _named(service_accounts: t.Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{namespace}/{name}" for namespace, name in service_accounts)


def plan_role(actual: dict[str, t.Any] | None, desired: DesiredBindingAccess, actual_binding: t.Any = UNREAD) -> Plan:
    """Decide the ClusterRole from its normalised form (``None``: absent). State absent also needs
    ``actual_binding``, our ClusterRoleBinding as read (``None``: absent): the ClusterRole goes only when the
    binding keeps no subject once the listed ServiceAccounts are removed from it."""
    before = comparable(actual)
    if desired.state == ABSENT:
        if before is None:
            return Plan(NONE, None, None, reason="the ClusterRole does not exist")
        if actual_binding is UNREAD:
            raise TypeError("plan_role: state absent needs actual_binding (our ClusterRoleBinding as read, or None)")
        left = (plan_role_binding(actual_binding, desired).after or {}).get("subjects") or []
        if left:
            return Plan(NONE, before, before, reason=f"the ClusterRoleBinding still binds {len(left)} subject(s)")
        if not owned(before):
            return Plan(NONE, before, before, reason=f"the ClusterRole lacks the label {LABEL_MANAGED_BY}={MANAGED_BY}")
        return Plan(DELETE, before, None, reason="no subject is bound to the ClusterRole any more")
    if before is None:
        after = {"name": desired.name, "labels": _new_labels(desired), "rules": [desired.rule], "aggregated": False}
        return Plan(CREATE, None, after, reason="the ClusterRole does not exist")
    if before["aggregated"]:
        raise WorkloadIdentityError(
            f"ClusterRole {desired.target} has an aggregationRule, so the controller manager owns its rules and would "
            "remove the rule this module adds; delete it or remove its aggregationRule, then run again",
            code="Conflict",
            target=desired.target,
        )
    warnings = []
    if not owned(before):
        warnings.append(
            f"ClusterRole {desired.target} was not created by this collection (no label {LABEL_MANAGED_BY}="
            f"{MANAGED_BY}): its rule is added, and the ClusterRole is never deleted by this module"
        )
    rules = before["rules"] if desired.rule in before["rules"] else [*before["rules"], desired.rule]
    after = {**before, "labels": merge_owned(before["labels"], desired.labels), "rules": rules}
    if after == before:
        return Plan(NONE, before, after, warnings, "the ClusterRole already grants the identity")
    changed = [key for key in ("labels", "rules") if after[key] != before[key]]
    return Plan(UPDATE, before, after, warnings, f"{' and '.join(changed)} differ")


def plan_role_binding(actual: dict[str, t.Any] | None, desired: DesiredBindingAccess) -> Plan:
    """Decide the ClusterRoleBinding from its normalised form (``None``: absent): present adds the listed
    ServiceAccounts that are missing at the end, absent removes them; every other subject stays where it is.

    A binding of our name whose roleRef names another role is refused (roleRef cannot be changed,
    https://kubernetes.io/docs/reference/access-authn-authz/rbac/#clusterrolebinding-example), before any write.
    """
    before = comparable(actual)
    if before is not None and before["role_ref"] != desired.role_ref:
        ref = before["role_ref"]
        raise WorkloadIdentityError(
            f"ClusterRoleBinding {desired.target} refers to {ref.get('kind')} '{ref.get('name')}' (apiGroup "
            f"'{ref.get('api_group')}'), not to ClusterRole {desired.target}; Kubernetes does not allow a roleRef to "
            "change and this module does not replace a binding it did not make: delete or rename it, then run again",
            code="Conflict",
            status=409,
            target=desired.target,
        )
    if desired.state == ABSENT:
        if before is None:
            return Plan(NONE, None, None, reason="the ClusterRoleBinding does not exist")
        kept = [s for s in before["subjects"] if not any(_is_subject(s, ns, n) for ns, n in desired.service_accounts)]
        removed = [
            (ns, n) for ns, n in desired.service_accounts if any(_is_subject(s, ns, n) for s in before["subjects"])
        ]
        if not kept and owned(before):
            return Plan(DELETE, before, None, reason="no subject would be left in the ClusterRoleBinding")
        after = {**before, "subjects": kept}
        if not removed:
            return Plan(NONE, before, after, reason="none of the ServiceAccounts is bound")
        return Plan(UPDATE, before, after, reason=f"removes {_named(removed)}")
    if before is None:
        after = {
            "name": desired.name,
            "labels": _new_labels(desired),
            "role_ref": desired.role_ref,
            "subjects": desired.subjects,
        }
        return Plan(CREATE, None, after, reason="the ClusterRoleBinding does not exist")
    missing = [
        (ns, n) for ns, n in desired.service_accounts if not any(_is_subject(s, ns, n) for s in before["subjects"])
    ]
    added = [{"kind": SERVICE_ACCOUNT, "name": name, "namespace": namespace} for namespace, name in missing]
    after = {
        **before,
        "labels": merge_owned(before["labels"], desired.labels),
        "subjects": [*before["subjects"], *added],
    }
    if after == before:
        return Plan(NONE, before, after, reason="every ServiceAccount is bound")
    return Plan(UPDATE, before, after, reason=f"adds {_named(missing)}" if missing else "labels differ")


@dataclass
class AccessPlan:
    """The two plans of one identity; ``diff()`` shows both objects."""

    role: Plan
    binding: Plan

    @property
    def changed(self) -> bool:
        return self.role.changed or self.binding.changed

    @property
    def warnings(self) -> list[str]:
        return [*self.role.warnings, *self.binding.warnings]

    def diff(self) -> dict[str, dict[str, t.Any]]:
        return {
            "before": {"cluster_role": self.role.before or {}, "cluster_role_binding": self.binding.before or {}},
            "after": {"cluster_role": self.role.after or {}, "cluster_role_binding": self.binding.after or {}},
        }


def plan(role: dict[str, t.Any] | None, binding: dict[str, t.Any] | None, desired: DesiredBindingAccess) -> AccessPlan:
    """Both plans from the two normalised objects (read one by one, or taken from lists of the cluster). Raises
    ``WorkloadIdentityError`` for what must not be written (a foreign roleRef, an aggregated ClusterRole)."""
    return AccessPlan(plan_role(role, desired, binding), plan_role_binding(binding, desired))


# --- Request bodies -----------------------------------------------------------------------------------------------
def _label_changes(before: t.Mapping[str, t.Any], after: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """Labels that change, for a merge patch (None removes a key)."""
    old, new = before.get("labels") or {}, after.get("labels") or {}
    return {key: new.get(key) for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)}


def role_create_body(after: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    return {
        "apiVersion": f"{RBAC_API_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": after["name"], "labels": dict(after["labels"])},
        "rules": [policy_rule_body(rule) for rule in after["rules"]],
    }


def binding_create_body(after: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    ref = after["role_ref"]
    return {
        "apiVersion": f"{RBAC_API_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": after["name"], "labels": dict(after["labels"])},
        "roleRef": {"apiGroup": ref["api_group"], "kind": ref["kind"], "name": ref["name"]},
        "subjects": [rbac_subject_body(subject) for subject in after["subjects"]],
    }


def patch_body(actual: t.Mapping[str, t.Any], after: t.Mapping[str, t.Any], list_key: str) -> dict[str, t.Any]:
    """A merge patch of the labels that change and, when it changes, the whole list (``rules`` or ``subjects``,
    which a merge patch can only replace), guarded by the resourceVersion we read."""
    metadata: dict[str, t.Any] = {"resourceVersion": actual["resource_version"]}
    labels = _label_changes(actual, after)
    if labels:
        metadata["labels"] = labels
    body: dict[str, t.Any] = {"metadata": metadata}
    if after[list_key] != actual[list_key]:
        to_body = policy_rule_body if list_key == "rules" else rbac_subject_body
        body[list_key] = [to_body(item) for item in after[list_key]]
    return body


# --- Applying -----------------------------------------------------------------------------------------------------
@dataclass
class BindingAccessOutcome:
    """What one reconcile did. ``cluster_role``/``cluster_role_binding`` are the normalised objects after it (in
    check mode, as planned; None when absent); ``before`` holds both as first read, for the diff."""

    plan: AccessPlan
    cluster_role: dict[str, t.Any] | None
    cluster_role_binding: dict[str, t.Any] | None
    changed: bool
    before: dict[str, t.Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def diff(self) -> dict[str, dict[str, t.Any]]:
        return {
            "before": copy.deepcopy(self.before),
            "after": {
                "cluster_role": comparable(self.cluster_role) or {},
                "cluster_role_binding": comparable(self.cluster_role_binding) or {},
            },
        }


def _predicted(decided: Plan, actual: dict[str, t.Any] | None) -> dict[str, t.Any] | None:
    """The object a plan leaves, with the server's fields of the existing one (None for one not yet created)."""
    if decided.after is None:
        return None
    return {
        **decided.after,
        "uid": (actual or {}).get("uid"),
        "resource_version": (actual or {}).get("resource_version"),
    }


class BindingAccessReconciler:
    """Reads, plans and applies the ClusterRole and ClusterRoleBinding of one identity through the gateways, on a
    kubernetes ``RbacAuthorizationV1Api`` (and an ``AuthorizationV1Api`` for ``verify``).

    Writes go role before binding with state present (a subject is never bound to a role that does not exist yet)
    and binding before role with state absent. A write that finds an object changed by another writer since our
    read (``Raced``) makes one more round from a fresh read. ``dry_run`` sends every write with ``dryRun=All``.
    """

    def __init__(
        self,
        rbac_v1: t.Any,
        authorization_v1: t.Any = None,
        *,
        calls: ApiCalls | None = None,
        **caller: t.Any,
    ) -> None:
        self.roles = ClusterRoles(rbac_v1, calls=calls, **caller)
        self.bindings = ClusterRoleBindings(rbac_v1, calls=self.roles.calls, **caller)
        self.reviews = AccessReviews(authorization_v1, calls=self.roles.calls, **caller)
        self.calls = self.roles.calls
        self.dry_run = self.roles.dry_run
        self.sleep = self.roles.sleep

    def read(self, client_id: str) -> tuple[dict[str, t.Any] | None, dict[str, t.Any] | None]:
        """Our ClusterRole and ClusterRoleBinding (normalised, None when absent): two GETs."""
        name = identity_binding_role_name(client_id)
        return self.roles.read(name), self.bindings.read(name)

    def reconcile(self, desired: DesiredBindingAccess, *, check_mode: bool = False) -> BindingAccessOutcome:
        """Read, plan and (unless ``check_mode``, which writes nothing at all) apply."""
        role, binding = self.read(desired.client_id)
        decided = plan(role, binding, desired)
        if check_mode or not decided.changed:
            return BindingAccessOutcome(
                decided,
                _predicted(decided.role, role),
                _predicted(decided.binding, binding),
                decided.changed,
                decided.diff()["before"],
                decided.warnings,
            )
        return self.apply(role, binding, desired, decided)

    def apply(
        self,
        role: dict[str, t.Any] | None,
        binding: dict[str, t.Any] | None,
        desired: DesiredBindingAccess,
        decided: AccessPlan,
    ) -> BindingAccessOutcome:
        """Carry out ``decided``, made from ``role`` and ``binding`` (read by the caller, one by one or in lists);
        when another writer changed either since, read both again and plan once more."""
        before = decided.diff()["before"]
        written: list[str] = []
        for attempt in range(RACE_ATTEMPTS):
            try:
                outcome = self._attempt(role, binding, desired, decided, written)
            except Raced:
                if attempt + 1 == RACE_ATTEMPTS:
                    break
                role, binding = self.read(desired.client_id)
                decided = plan(role, binding, desired)
                continue
            outcome.before = before
            outcome.changed = bool(written)
            return outcome
        raise WorkloadIdentityError(
            f"Failed to reconcile ClusterRole and ClusterRoleBinding {desired.target}: another writer changed them "
            f"between our read and our write, {RACE_ATTEMPTS} times; another controller may be managing them",
            code="Conflict",
            status=409,
            target=desired.target,
        )

    def apply_one(
        self, kind: str, decided: Plan, desired: DesiredBindingAccess, actual: t.Any = UNREAD
    ) -> dict[str, t.Any] | None:
        """Carry out the plan of one object (``kind`` ClusterRole or ClusterRoleBinding) made from ``actual``, and
        return the object after it (None when deleted). Without ``actual``, an update or delete reads the object
        first (one GET) for the uid and resourceVersion its write is guarded by. When the object is not (or no
        longer) what ``decided`` was planned from, it is planned again from a fresh read, once, and ``decided``
        updated in place; call it for the role before the binding with state present, after it with absent."""
        gateway = self.roles if kind == "ClusterRole" else self.bindings
        list_key = "rules" if kind == "ClusterRole" else "subjects"
        written: list[str] = []
        if actual is UNREAD and decided.action == CREATE:
            actual = None
        for attempt in range(RACE_ATTEMPTS):
            if actual is UNREAD:
                actual = gateway.read(desired.name)
            if comparable(actual) != decided.before:
                fresh = self._plan_one(kind, actual, desired)
                decided.action, decided.before, decided.after = fresh.action, fresh.before, fresh.after
                decided.reason, decided.warnings = fresh.reason, fresh.warnings
            try:
                return self._apply_one(gateway, decided, actual, list_key, written)
            except Raced:
                if attempt + 1 == RACE_ATTEMPTS:
                    break
                actual = UNREAD
        raise WorkloadIdentityError(
            f"Failed to reconcile {kind} {desired.target}: another writer kept changing it between our read and our "
            "write; another controller may be managing it",
            code="Conflict",
            status=409,
            target=desired.target,
        )

    def _plan_one(self, kind: str, actual: dict[str, t.Any] | None, desired: DesiredBindingAccess) -> Plan:
        if kind != "ClusterRole":
            return plan_role_binding(actual, desired)
        binding = self.bindings.read(desired.name) if desired.state == ABSENT else None
        return plan_role(actual, desired, binding)

    def _attempt(
        self,
        role: dict[str, t.Any] | None,
        binding: dict[str, t.Any] | None,
        desired: DesiredBindingAccess,
        decided: AccessPlan,
        written: list[str],
    ) -> BindingAccessOutcome:
        outcome = BindingAccessOutcome(decided, role, binding, False, warnings=decided.warnings)
        if desired.state == PRESENT:
            outcome.cluster_role = self._apply_one(self.roles, decided.role, role, "rules", written)
            outcome.cluster_role_binding = self._apply_one(self.bindings, decided.binding, binding, "subjects", written)
        else:
            outcome.cluster_role_binding = self._apply_one(self.bindings, decided.binding, binding, "subjects", written)
            outcome.cluster_role = self._apply_one(self.roles, decided.role, role, "rules", written)
        return outcome

    def _apply_one(
        self, gateway: t.Any, decided: Plan, actual: dict[str, t.Any] | None, list_key: str, written: list[str]
    ) -> dict[str, t.Any] | None:
        if decided.action == NONE:
            return actual
        if decided.action == DELETE:
            gateway.delete(actual["name"], actual["uid"], actual["resource_version"])  # type: ignore[index]
            written.append(f"{gateway.kind} delete")
            return None
        if decided.action == CREATE:
            body = role_create_body(decided.after) if list_key == "rules" else binding_create_body(decided.after)  # type: ignore[arg-type]
            result = gateway.create(body)
            if self.dry_run:
                result["uid"] = result["resource_version"] = None  # a dry run answers with ones that never exist
        else:
            result = gateway.patch(actual["name"], patch_body(actual, decided.after, list_key))  # type: ignore[index,arg-type]
        written.append(f"{gateway.kind} {decided.action}")
        decided.after = comparable(result)  # what the server stored
        return result

    # --- Verifying ------------------------------------------------------------------------------------------------
    def verify(self, desired: DesiredBindingAccess, *, timeout: float = 0.0) -> list[dict[str, t.Any]]:
        """One SubjectAccessReview per listed ServiceAccount: may its token use the identity? With ``timeout``, the
        ServiceAccounts whose answer is not yet what the state asks for are asked again every VERIFY_INTERVAL
        seconds until then (the authorizer sees our writes through its watch cache)."""
        expected = desired.state == PRESENT
        results: dict[tuple[str, str], dict[str, t.Any]] = {}
        deadline = time.monotonic() + timeout
        pending = list(desired.service_accounts)
        while True:
            for namespace, name in pending:
                answer = self.reviews.can_use_identity(namespace, name, desired.resource)
                results[(namespace, name)] = {
                    "namespace": namespace,
                    "name": name,
                    "subject": service_account_subject(namespace, name),
                    **answer,
                }
            pending = [key for key in pending if results[key]["allowed"] != expected]
            if not pending or time.monotonic() + VERIFY_INTERVAL > deadline:
                return [results[key] for key in desired.service_accounts]
            self.sleep(VERIFY_INTERVAL)


def access_warnings(desired: DesiredBindingAccess, results: t.Iterable[t.Mapping[str, t.Any]]) -> list[str]:
    """A warning per ServiceAccount whose review disagrees with the desired state."""
    expected = desired.state == PRESENT
    warnings = []
    for result in results:
        if result["allowed"] == expected:
            continue
        reason = f" ({result['reason']})" if result.get("reason") else ""
        if expected:
            warnings.append(
                f"ServiceAccount '{result['namespace']}/{result['name']}' may not use identity '{desired.resource}' "
                f"although ClusterRoleBinding {desired.target} binds it{reason}"
            )
        else:
            warnings.append(
                f"ServiceAccount '{result['namespace']}/{result['name']}' may still use identity '{desired.resource}': "
                f"another binding grants it{reason}"
            )
    return warnings
