# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reconciler for a ConfigMap of non-secret workload identity settings (client ID, tenant ID, vault URL...).

Only the keys the caller names are written, with a strategic merge patch that lists just those keys, so other
keys, ``binaryData``, labels and annotations that others put on the ConfigMap survive. Nothing here is secret:
a client ID, a tenant ID and a vault URL are identifiers, which is why a ConfigMap (not a Secret) holds them.
Check mode is the API server's dry run.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass, field

from ansible_collections.aks.workload_identity.plugins.module_utils.gateways import ApiCalls
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.kubernetes import (
    ConfigMaps,
    Namespaces,
    normalize_configmap,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import (
    CREATE,
    DELETE,
    NONE,
    UPDATE,
    Plan,
    merge_owned,
)

# The API server rules for label keys and values, and the namespace read before a create, are the ServiceAccount
# reconciler's: one rule, written once.
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.service_account import (
    InNamespaceReconciler,
    validate_labels,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ENV_CLIENT_ID,
    ENV_TENANT_ID,
    validate_namespace,
    validate_service_account_name,
    validate_uuid,
)

PRESENT = "present"
ABSENT = "absent"
REMOVE_CONFIGMAP = "configmap"  # state=absent deletes the ConfigMap
REMOVE_KEYS = "keys"  # state=absent removes our keys and keeps the ConfigMap

# The data keys set from options rather than from ``data``, by option name.
OWNED_KEYS: dict[str, str] = {"client_id": ENV_CLIENT_ID, "tenant_id": ENV_TENANT_ID}
# k8s.io/apimachinery/pkg/util/validation IsConfigMapKey: at most 253 of [-._a-zA-Z0-9], not "." or "..".
CONFIGMAP_KEY_PATTERN = re.compile(r"^[-._a-zA-Z0-9]+$")
CONFIGMAP_KEY_MAX = 253
CONFIGMAP_SIZE_MAX = 1024 * 1024  # the API server refuses a ConfigMap whose data exceeds 1 MiB


# --- The desired state --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DesiredConfigMap:
    """What the caller wants. ``client_id``/``tenant_id``: ``None`` leaves the key alone, ``""`` removes it."""

    namespace: str
    name: str
    state: str = PRESENT
    data: t.Mapping[str, str | None] = field(default_factory=dict)
    client_id: str | None = None
    tenant_id: str | None = None
    labels: t.Mapping[str, str | None] = field(default_factory=dict)
    create_namespace: bool = False
    remove: str = REMOVE_CONFIGMAP

    @property
    def target(self) -> str:
        return f"'{self.namespace}/{self.name}'"


def validate(desired: DesiredConfigMap) -> list[str]:
    """Every input rule, as "field: rule" messages, checked before any request."""
    errors = [*validate_namespace(desired.namespace), *validate_service_account_name(desired.name, "name")]
    for option in OWNED_KEYS:
        value = getattr(desired, option)
        if value:  # None leaves the key alone, "" removes it
            errors += validate_uuid(value, option)
    errors += _validate_data(desired.data)
    errors += validate_labels(desired.labels)
    return errors


def _validate_data(data: t.Any) -> list[str]:
    if not isinstance(data, t.Mapping):
        return ["data: must be a dictionary"]
    errors: list[str] = []
    for key, value in data.items():
        if (
            not isinstance(key, str)
            or key in (".", "..")
            or len(key) > CONFIGMAP_KEY_MAX
            or not CONFIGMAP_KEY_PATTERN.match(key)
        ):
            errors.append(f"data: key {key!r} must be 1-{CONFIGMAP_KEY_MAX} letters, digits, '-', '_' or '.'")
        elif key in OWNED_KEYS.values():
            option = next(name for name, owned in OWNED_KEYS.items() if owned == key)
            errors.append(f"data: key {key!r} is set with the {option} option")
        if value is not None and not isinstance(value, str):
            errors.append(f"data.{key}: must be a string (quote it), got {type(value).__name__}")
    size = sum(len(str(k).encode()) + len(v.encode()) for k, v in data.items() if isinstance(v, str))  # bytes
    if size > CONFIGMAP_SIZE_MAX:
        errors.append(f"data: keys and values must total at most {CONFIGMAP_SIZE_MAX} bytes, got {size}")
    return errors


# --- Normalising ------------------------------------------------------------------------------------------------
def _comparable(configmap: dict[str, t.Any] | None) -> dict[str, t.Any] | None:
    if configmap is None:
        return None
    return {key: value for key, value in configmap.items() if key != "uid"}


# --- Planning (pure) ----------------------------------------------------------------------------------------------
def owned_data(desired: DesiredConfigMap) -> dict[str, str | None]:
    """Data keys to set (value) or remove (None). Options left unset are not ours to touch this time."""
    if desired.state == ABSENT:
        return dict.fromkeys([*OWNED_KEYS.values(), *desired.data])
    owned: dict[str, str | None] = dict(desired.data)
    for option, key in OWNED_KEYS.items():
        value = getattr(desired, option)
        if value is not None:
            owned[key] = value or None
    return owned


def owned_labels(desired: DesiredConfigMap) -> dict[str, str | None]:
    return dict.fromkeys(desired.labels) if desired.state == ABSENT else dict(desired.labels)


def plan(actual: dict[str, t.Any] | None, desired: DesiredConfigMap) -> Plan:
    """Decide from the normalised ConfigMap (``None`` when absent) what to do."""
    before = _comparable(actual)
    if desired.state == ABSENT and desired.remove == REMOVE_CONFIGMAP:
        if before is None:
            return Plan(NONE, None, None, [], "the ConfigMap does not exist")
        return Plan(DELETE, before, None, [], "the ConfigMap exists")
    if before is None:
        if desired.state == ABSENT:
            return Plan(NONE, None, None, [], "the ConfigMap does not exist")
        after = {
            "namespace": desired.namespace,
            "name": desired.name,
            "labels": {k: v for k, v in owned_labels(desired).items() if v is not None},
            "data": {k: v for k, v in owned_data(desired).items() if v is not None},
            "binary_data_keys": [],
        }
        return Plan(CREATE, None, after, [], "the ConfigMap does not exist")
    after = {
        **before,
        "labels": merge_owned(before["labels"], owned_labels(desired)),
        "data": merge_owned(before["data"], owned_data(desired)),
    }
    if after == before:
        return Plan(NONE, before, after, [], "the ConfigMap already has the desired keys")
    changed = [key for key in ("labels", "data") if after[key] != before[key]]
    return Plan(UPDATE, before, after, [], f"{' and '.join(changed)} differ")


def _changes(before: t.Mapping[str, str], after: t.Mapping[str, str]) -> dict[str, str | None]:
    return {key: after.get(key) for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)}


def patch_body(plan: Plan) -> dict[str, t.Any]:
    """A strategic merge patch naming only the keys that change (``None`` deletes a key)."""
    before, after = plan.before or {}, plan.after or {}
    body: dict[str, t.Any] = {}
    labels = _changes(before.get("labels") or {}, after.get("labels") or {})
    if labels:
        body["metadata"] = {"labels": labels}
    data = _changes(before.get("data") or {}, after.get("data") or {})
    if data:
        body["data"] = data
    return body


def create_body(plan: Plan) -> dict[str, t.Any]:
    after = plan.after or {}
    metadata: dict[str, t.Any] = {"name": after["name"], "namespace": after["namespace"]}
    if after.get("labels"):
        metadata["labels"] = dict(after["labels"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": dict(after.get("data") or {})}


# --- Talking to the API server ----------------------------------------------------------------------------------
@dataclass
class Outcome:
    plan: Plan
    configmap: dict[str, t.Any] | None
    namespace_created: bool = False

    @property
    def changed(self) -> bool:
        return self.plan.changed


class ConfigMapReconciler(InNamespaceReconciler):
    """Reads, plans and applies one ConfigMap through the gateways, on a kubernetes ``CoreV1Api`` (dry run in
    check mode)."""

    kind = "ConfigMap"

    def __init__(self, core_v1: t.Any, *, calls: ApiCalls | None = None, **caller: t.Any) -> None:
        self.configmaps = self.objects = ConfigMaps(core_v1, calls=calls, **caller)
        self.namespaces = Namespaces(core_v1, calls=self.configmaps.calls, **caller)
        self.dry_run = self.configmaps.dry_run

    def read(self, namespace: str, name: str) -> dict[str, t.Any] | None:
        return self.configmaps.read(namespace, name)

    def _create(self, plan: Plan, desired: DesiredConfigMap, outcome: Outcome) -> t.Any:
        return self.create_in_namespace(desired, create_body(plan), outcome)

    def _patch(self, plan: Plan, desired: DesiredConfigMap) -> t.Any:
        return self.configmaps.patch(desired.namespace, desired.name, patch_body(plan))

    def _delete(self, uid: str | None, desired: DesiredConfigMap) -> None:
        self.configmaps.delete(desired.namespace, desired.name, uid)

    # The whole round (NamespacedReconciler: reconcile, apply).
    def plan_object(self, actual: dict[str, t.Any] | None, desired: DesiredConfigMap) -> Plan:
        return plan(actual, desired)

    def attempt(self, actual: dict[str, t.Any] | None, desired: DesiredConfigMap, decided: Plan) -> Outcome:
        outcome = Outcome(decided, actual)
        if decided.changed:
            self._apply(actual, desired, outcome)  # Raced: NamespacedReconciler reads again
        return outcome

    def _apply(self, actual: dict[str, t.Any] | None, desired: DesiredConfigMap, outcome: Outcome) -> None:
        decided = outcome.plan
        if decided.action == DELETE:
            self._delete((actual or {}).get("uid"), desired)
            outcome.configmap = None
            return
        if decided.action == CREATE:
            response = self._create(decided, desired, outcome)
        else:
            response = self._patch(decided, desired)
        if response is None:  # check mode inside a namespace that only the dry run created
            outcome.configmap = {**(decided.after or {}), "uid": None}
            return
        result = normalize_configmap(response)
        if self.dry_run and decided.action == CREATE:
            result["uid"] = None  # a dry-run create answers with a uid that will never exist
        outcome.configmap = result
        decided.after = _comparable(result)
