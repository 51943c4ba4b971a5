# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reconcilers: one per resource kind, shared by the modules and any bulk entry point.

Every reconciler follows the same four steps: read the actual state (``read``), compare it with the desired
state and decide (``plan`` -> ``Plan``), carry the plan out unless in check mode (``apply``), and report
before/after. Plans are plain data so unit tests can assert on decisions without any network.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import copy
import typing as t
from dataclasses import dataclass, field

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import Raced

CREATE = "create"
UPDATE = "update"
DELETE = "delete"
NONE = "none"  # nothing to do: the actual state already is the desired one
ADOPT = "adopt"  # an equivalent object exists under another name: use it, write nothing


@dataclass
class Plan:
    """What a reconciler decided. ``before``/``after`` are normalised snake_case dicts (None = absent)."""

    action: str
    before: dict[str, t.Any] | None
    after: dict[str, t.Any] | None
    warnings: list[str] = field(default_factory=list)
    reason: str = ""  # one short sentence on why, for the module's result and for tests

    @property
    def changed(self) -> bool:
        return self.action in (CREATE, UPDATE, DELETE)

    def diff(self) -> dict[str, dict[str, t.Any]]:
        """Ansible's diff: before/after as dicts ({} for absent)."""
        return {"before": copy.deepcopy(self.before) or {}, "after": copy.deepcopy(self.after) or {}}


RACE_ATTEMPTS = 3  # read -> plan -> apply rounds when another writer races us (AlreadyExists, NotFound, Conflict)


class NamespacedReconciler:
    """The read -> plan -> apply round of a namespaced Kubernetes object, again from the read when another writer
    got in between. Subclasses give ``kind``, ``read(namespace, name)``, ``plan_for(actual, desired)`` and
    ``attempt(actual, desired, plan)``, which returns the outcome or lets the gateway's ``Raced`` through."""

    kind = "object"

    def read(self, namespace: str, name: str) -> dict[str, t.Any] | None:
        raise NotImplementedError

    def plan_for(self, actual: dict[str, t.Any] | None, desired: t.Any) -> Plan:
        raise NotImplementedError

    def attempt(self, actual: dict[str, t.Any] | None, desired: t.Any, decided: Plan) -> t.Any:
        raise NotImplementedError

    def apply(self, actual: dict[str, t.Any] | None, desired: t.Any, decided: Plan) -> t.Any:
        """Carry out a plan made from ``actual`` (read by the caller, for example in one list of the namespace);
        when another writer changed the object since, read it again and start over."""
        try:
            return self.attempt(actual, desired, decided)
        except Raced:
            return self.reconcile(desired)

    def reconcile(self, desired: t.Any) -> t.Any:
        for _attempt in range(RACE_ATTEMPTS):
            actual = self.read(desired.namespace, desired.name)
            try:
                return self.attempt(actual, desired, self.plan_for(actual, desired))
            except Raced:
                continue
        raise WorkloadIdentityError(
            f"Failed to reconcile {self.kind} {desired.target}: it kept changing under us ({RACE_ATTEMPTS} attempts); "
            "another controller may be managing it",
            code="Conflict",
            target=desired.target,
        )


def changed_keys(before: t.Mapping[str, t.Any] | None, after: t.Mapping[str, t.Any] | None) -> list[str]:
    """Top-level keys whose values differ between two normalised dicts."""
    before, after = before or {}, after or {}
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def merge_owned(current: t.Mapping[str, str] | None, desired: t.Mapping[str, str | None]) -> dict[str, str]:
    """Labels/annotations/tags: set the keys we own, delete those desired as None, keep everybody else's."""
    merged = dict(current or {})
    for key, value in desired.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
