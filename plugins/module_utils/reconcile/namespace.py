# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reconciler for a namespace: created with the labels asked for, or deleted with everything in it.

A delete is the demo clean-up's last Kubernetes step, so before it the reconciler lists what the namespace still
holds (one LIST per kind, with a page limit: the API server reports how many items remain), and the plan shows
it: check mode says exactly what would go. Deleting only starts the namespace's termination; the namespace
controller then deletes its contents and the namespace disappears.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import time
import typing as t
from dataclasses import dataclass, field

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways import ApiCalls
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.kubernetes import Namespaces
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
    validate_namespace,
    validate_wait_timeout,
)

PRESENT = "present"
ABSENT = "absent"
# Namespaces every cluster needs; deleting one breaks the cluster, so the module refuses (kubernetes.io,
# "Namespaces": "Kubernetes starts with four initial namespaces").
SYSTEM_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# The API server sets this label on every namespace to the namespace's name, whatever a request says
# (https://kubernetes.io/docs/reference/labels-annotations-taints/#kubernetes-io-metadata-name).
NAME_LABEL = "kubernetes.io/metadata.name"
# What a person would want to know is about to go, by API client and resource (list_namespaced_<resource>).
# Objects every namespace gets on its own are not counted: the 'default' ServiceAccount and the
# 'kube-root-ca.crt' ConfigMap.
CONTENT_KINDS: tuple[tuple[str, str, str], ...] = (
    ("Deployment", "apps_v1", "deployment"),
    ("StatefulSet", "apps_v1", "stateful_set"),
    ("DaemonSet", "apps_v1", "daemon_set"),
    ("CronJob", "batch_v1", "cron_job"),
    ("Job", "batch_v1", "job"),
    ("Pod", "core_v1", "pod"),
    ("Service", "core_v1", "service"),
    ("ServiceAccount", "core_v1", "service_account"),
    ("ConfigMap", "core_v1", "config_map"),
    ("Secret", "core_v1", "secret"),
)
AUTOMATIC_OBJECTS = {("ServiceAccount", "default"), ("ConfigMap", "kube-root-ca.crt")}
NAMES_LISTED = 20  # names shown per kind; the count is always complete
WAIT_POLL_SECONDS = 2.0


@dataclass(frozen=True)
class DesiredNamespace:
    name: str
    state: str = PRESENT
    labels: t.Mapping[str, str | None] = field(default_factory=dict)
    wait: bool = False
    wait_timeout: float = 300.0

    @property
    def target(self) -> str:
        return f"'{self.name}'"


def validate(desired: DesiredNamespace) -> list[str]:
    errors = validate_namespace(desired.name, "name")
    if desired.state == ABSENT and desired.name in SYSTEM_NAMESPACES:
        errors.append(f"name: '{desired.name}' is a namespace every cluster needs; this module never deletes it")
    errors += validate_labels(desired.labels)
    if isinstance(desired.labels, t.Mapping) and NAME_LABEL in desired.labels:
        errors.append(f"labels: {NAME_LABEL!r} is set by the API server to the namespace's name; leave it out")
    errors += validate_wait_timeout(desired.wait_timeout)
    return errors


def plan(actual: dict[str, t.Any] | None, desired: DesiredNamespace, contents: dict[str, t.Any] | None) -> Plan:
    if desired.state == ABSENT:
        if actual is None:
            return Plan(NONE, None, None, reason="the namespace does not exist")
        if actual["terminating"]:
            return Plan(NONE, _shown(actual, contents), None, reason="the namespace is already being deleted")
        return Plan(DELETE, _shown(actual, contents), None, reason="delete the namespace and everything in it")
    owned = dict(desired.labels)
    if actual is None:
        after = {"name": desired.name, "labels": {k: v for k, v in owned.items() if v is not None}}
        return Plan(CREATE, None, after, reason="create the namespace")
    if actual["terminating"]:
        raise WorkloadIdentityError(
            f"Failed to reconcile namespace {desired.target}: it is being deleted (phase {actual['phase']}); "
            "wait until it is gone, then run again",
            code="Conflict",
            status=409,
            target=desired.target,
        )
    before = {"name": actual["name"], "labels": actual["labels"]}
    after = {"name": actual["name"], "labels": merge_owned(actual["labels"], owned)}
    if after == before:
        return Plan(NONE, before, after, reason="the namespace already has these labels")
    return Plan(UPDATE, before, after, reason="set the namespace's labels")


def _shown(actual: dict[str, t.Any], contents: dict[str, t.Any] | None) -> dict[str, t.Any]:
    shown = {"name": actual["name"], "labels": actual["labels"], "phase": actual["phase"]}
    if contents is not None:
        shown["contents"] = contents
    return shown


@dataclass
class Outcome:
    plan: Plan
    namespace: dict[str, t.Any] | None
    contents: dict[str, t.Any] | None = None
    deleted: bool = False  # gone for good (only known when waiting)

    @property
    def changed(self) -> bool:
        return self.plan.changed


class NamespaceReconciler:
    """Reads, plans and applies one namespace through the gateway (dry run in check mode)."""

    def __init__(
        self,
        clients: t.Mapping[str, t.Any],
        *,
        clock: t.Callable[[], float] = time.monotonic,
        calls: ApiCalls | None = None,
        **caller: t.Any,
    ) -> None:
        self.namespaces = Namespaces(clients["core_v1"], calls=calls, **caller)
        self.clients = clients
        self.clock = clock
        self.dry_run = self.namespaces.dry_run
        self.sleep = self.namespaces.sleep

    def read(self, name: str) -> dict[str, t.Any] | None:
        return self.namespaces.read(name)

    def list_contents(self, name: str) -> dict[str, t.Any]:
        """{kind: {count, names}} for the kinds that hold something, one LIST (limited to a page) per kind."""
        contents: dict[str, t.Any] = {}
        for kind, api, resource in CONTENT_KINDS:
            names, remaining = self.namespaces.list_names(
                name, self.clients[api], resource, NAMES_LISTED + len(AUTOMATIC_OBJECTS)
            )
            names = [n for n in names if (kind, n) not in AUTOMATIC_OBJECTS]
            count = len(names) + remaining
            if count:
                contents[kind] = {"count": count, "names": sorted(names)[:NAMES_LISTED]}
        return contents

    def reconcile(self, desired: DesiredNamespace) -> Outcome:
        actual = self.read(desired.name)
        contents = None
        if desired.state == ABSENT and actual is not None and not actual["terminating"]:
            contents = self.list_contents(desired.name)
        decided = plan(actual, desired, contents)
        outcome = Outcome(decided, actual, contents)
        if decided.action == CREATE:
            outcome.namespace = self.namespaces.create(desired.name, decided.after["labels"])
        elif decided.action == UPDATE:
            outcome.namespace = self.namespaces.patch_labels(desired.name, dict(desired.labels))
        elif decided.action == DELETE:
            self.namespaces.delete(desired.name, actual["uid"])
            outcome.namespace = None if self.dry_run else self.read(desired.name)
        if desired.state == ABSENT and desired.wait and not self.dry_run and outcome.namespace is not None:
            self._wait_gone(desired)
            outcome.namespace = None
        outcome.deleted = desired.state == ABSENT and outcome.namespace is None and not self.dry_run
        return outcome

    def _wait_gone(self, desired: DesiredNamespace) -> None:
        deadline = self.clock() + desired.wait_timeout
        while True:
            current = self.read(desired.name)
            if current is None:
                return
            if self.clock() >= deadline:
                raise WorkloadIdentityError(
                    f"Namespace {desired.target} is still {current['phase']} after {desired.wait_timeout:g} s: the "
                    "namespace controller has not finished deleting its contents (look for objects with "
                    "finalizers, or an unavailable aggregated API); it goes on in the background",
                    code="Timeout",
                    target=desired.target,
                )
            self.sleep(WAIT_POLL_SECONDS)
