# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The AKS cluster reconciler: the OIDC issuer and workload identity on a cluster, and the docs' minimal cluster.

Used by the ``aks_oidc`` and ``aks_cluster`` modules (and any bulk entry point). The decisions are pure functions
of normalised dicts (``plan_oidc``, ``plan_create``, ``plan_existing_cluster``, ``plan_absent``); the
``ClusterReconciler`` reads, waits, writes and re-plans around them.

An update is a full-body PUT of the cluster AS READ with only the two settings changed (azure-behaviour §2): the
ManagedCluster model keeps every field it does not know, and the SDK leaves read-only ones out of the body, so
node pools, networking and add-ons go back exactly as Azure sent them.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import re
import time
import typing as t
from dataclasses import dataclass

from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import wait_for_lro
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import (
    WorkloadIdentityError,
    describe_failure,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.azure import (
    Clusters,
    cluster_target,
    new_cluster_model,
    normalize_cluster,
    set_oidc_settings,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import (
    CREATE,
    DELETE,
    NONE,
    UPDATE,
    Plan,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import resource_group as group_reconciler
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.resource_group import (
    normalize_location,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    validate_cluster_name,
    validate_location,
    validate_tags,
)

PROVIDER_TYPE = "Microsoft.ContainerService/managedClusters"
SUCCEEDED = "Succeeded"
DELETING = "Deleting"
# ARM's terminal provisioning states (azure-behaviour §3.7); anything else (Creating, Updating, Upgrading, Scaling,
# Starting...) means an operation is running, and AKS answers a PUT then with 409 OperationNotAllowed.
FINISHED_STATES = frozenset({"Succeeded", "Failed", "Canceled"})
CODE_OPERATION_NOT_ALLOWED = "OperationNotAllowed"
DEFAULT_NODE_POOL = "nodepool1"  # az aks create's --nodepool-name default
DEFAULT_NODE_COUNT = 3  # az aks create's --node-count default
# [aks-spec] ManagedClusterAgentPoolProfileProperties.count: "in the range of 1 to 1000 (inclusive) for system
# pools" (azure-rest-api-specs specification/containerservice/resource-manager/Microsoft.ContainerService/aks/
# stable/2026-07-01/managedClusters.json); the pool this module creates is the system pool.
MIN_NODE_COUNT = 1
MAX_NODE_COUNT = 1000
MAX_PRECONDITION_RETRIES = 3  # 412s before we give up on a cluster that keeps changing under us
# kubernetesVersion: "major.minor" (AKS then picks the latest patch) or "major.minor.patch"
# (https://learn.microsoft.com/azure/aks/supported-kubernetes-versions).
KUBERNETES_VERSION_PATTERN = re.compile(r"^\d+\.\d+(\.\d+)?$")
# VM size names (https://learn.microsoft.com/azure/virtual-machines/vm-naming-conventions): a tier, '_', the
# family and vCPUs with letters for features, '-' for constrained vCPUs (Standard_M8-2ms), '_v<n>' versions. The
# spec types vmSize as a free string; the 64-character bound is ours (real names are about 25).
VM_SIZE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_-]+$")
MAX_VM_SIZE_LENGTH = 64

ENABLE_ISSUER_WARNING = (
    "Enabling the OIDC issuer on the existing {target} restarts its API server and changes the issuer of the "
    "ServiceAccount tokens it signs; pods holding tokens from the old issuer may need a restart, and AKS does not "
    "support disabling the issuer afterwards (learn.microsoft.com/azure/aks/use-oidc-issuer)."
)


# --- Input rules ---------------------------------------------------------------------------------------------
def validate_cluster_reference(resource_group: t.Any, name: t.Any) -> list[str]:
    """The resource group and cluster names, by Azure's naming rules."""
    errors = [
        "resource_group: " + message.split(": ", 1)[1]
        for message in group_reconciler.validate_name(resource_group if isinstance(resource_group, str) else "")
    ]
    return errors + validate_cluster_name(name, "name")


def validate_oidc_settings(oidc_issuer: t.Any, workload_identity: t.Any) -> list[str]:
    """Workload identity needs the OIDC issuer (azure-behaviour §5: azure-cli refuses the combination itself too)."""
    if workload_identity and not oidc_issuer:
        return [
            "workload_identity: requires oidc_issuer, because Entra ID checks workload tokens against the cluster's "
            "OIDC issuer; set oidc_issuer: true"
        ]
    return []


@dataclass(frozen=True)
class ClusterSpec:
    """What aks_cluster asks for. ``None`` means "the service's default" when creating, "not compared" after."""

    location: str | None = None
    node_count: int | None = None
    vm_size: str | None = None
    kubernetes_version: str | None = None
    tags: dict[str, str] | None = None


def validate_cluster_spec(spec: ClusterSpec) -> list[str]:
    """Rules checked before any request; that ``location`` is given is checked later, only if the cluster must be
    created."""
    errors = []
    count = spec.node_count
    if count is not None and (isinstance(count, bool) or not MIN_NODE_COUNT <= count <= MAX_NODE_COUNT):
        errors.append(f"node_count: must be between {MIN_NODE_COUNT} and {MAX_NODE_COUNT}, got {count!r}")
    version = spec.kubernetes_version
    if version is not None and not KUBERNETES_VERSION_PATTERN.match(version):
        errors.append(f"kubernetes_version: must look like 1.33 or 1.33.5, got {version!r}")
    size = spec.vm_size
    if size is not None and (len(size) > MAX_VM_SIZE_LENGTH or not VM_SIZE_PATTERN.match(size)):
        errors.append(
            f"vm_size: must be an Azure VM size such as Standard_D4ds_v5 (letters, digits, '_' and '-', at most "
            f"{MAX_VM_SIZE_LENGTH} characters), got {size!r}"
        )
    return errors + validate_location(spec.location) + validate_tags(spec.tags)


def input_error(errors: list[str]) -> WorkloadIdentityError:
    # ARM's code for a bad parameter, as the collection's other modules use it.
    return WorkloadIdentityError("Invalid input: " + "; ".join(errors), code="InvalidParameter")


def default_dns_prefix(name: str, resource_group: str, subscription_id: str) -> str:
    """The DNS prefix az aks create chooses (azure-cli acs/custom.py ``_get_default_dns_prefix``): immutable, so
    it must be set on create; the subscription part keeps equal cluster names in other subscriptions apart."""
    name_part = re.sub(r"[^A-Za-z0-9-]", "", name)[:10]
    if not name_part[:1].isalpha():
        name_part = ("a" + name_part)[:10]
    group_part = re.sub(r"[^A-Za-z0-9-]", "", resource_group)[:16]
    return f"{name_part}-{group_part}-{subscription_id[:6]}"


# --- Plans (pure) --------------------------------------------------------------------------------------------
def plan_oidc(actual: dict[str, t.Any], oidc_issuer: bool, workload_identity: bool, target: str) -> Plan:
    """Turn the two settings of an existing cluster into ``oidc_issuer``/``workload_identity``."""
    if actual["oidc_issuer_enabled"] and not oidc_issuer:
        raise WorkloadIdentityError(
            describe_failure(
                "disable the OIDC issuer of",
                target,
                "OIDCIssuerCannotBeDisabled",
                "oidc_issuer: AKS does not support disabling the OIDC issuer once it is enabled "
                "(learn.microsoft.com/azure/aks/use-oidc-issuer); set oidc_issuer: true",
            ),
            code="OIDCIssuerCannotBeDisabled",
            target=target,
        )
    steps = []
    if oidc_issuer and not actual["oidc_issuer_enabled"]:
        steps.append("enable the OIDC issuer")
    if workload_identity != actual["workload_identity_enabled"]:
        steps.append(f"{'enable' if workload_identity else 'disable'} workload identity")
    if not steps:
        return Plan(NONE, actual, dict(actual), reason="the OIDC issuer and workload identity are as requested")
    after = {**actual, "oidc_issuer_enabled": bool(oidc_issuer), "workload_identity_enabled": bool(workload_identity)}
    warnings = [ENABLE_ISSUER_WARNING.format(target=target)] if "enable the OIDC issuer" in steps else []
    if actual.get("provisioning_state") in ("Failed", "Canceled"):
        warnings.append(
            f"The {target} is in provisioning state {actual['provisioning_state']!r}; the update also asks AKS to "
            "reconcile it"
        )
    return Plan(UPDATE, actual, after, warnings=warnings, reason=" and ".join(steps))


def plan_create(spec: ClusterSpec, subscription_id: str, resource_group: str, name: str) -> Plan:
    """A new cluster with both features on; unknown values (issuer URL, versions AKS picks) are None."""
    after = {
        # ARM returns AKS ids with a lower-case "resourcegroups" (azure-behaviour §2).
        "id": f"/subscriptions/{subscription_id}/resourcegroups/{resource_group}/providers/{PROVIDER_TYPE}/{name}",
        "name": name,
        "resource_group": resource_group,
        "location": normalize_location(spec.location),
        "kubernetes_version": spec.kubernetes_version,
        "current_kubernetes_version": None,
        "provisioning_state": None,
        "oidc_issuer_enabled": True,
        "issuer_url": None,
        "workload_identity_enabled": True,
        "tags": dict(spec.tags or {}),
        "agent_pools": [
            {
                "name": DEFAULT_NODE_POOL,
                "count": spec.node_count or DEFAULT_NODE_COUNT,
                "vm_size": spec.vm_size,
                "mode": "System",
            }
        ],
    }
    return Plan(CREATE, None, after, reason="create the cluster with the OIDC issuer and workload identity enabled")


def _version_matches(wanted: str, actual: dict[str, t.Any]) -> bool:
    current = actual.get("current_kubernetes_version") or ""
    return wanted in (actual.get("kubernetes_version"), current) or current.startswith(wanted + ".")


def drift(actual: dict[str, t.Any], spec: ClusterSpec) -> list[str]:
    """Creation options the user set that the existing cluster does not match (aks_cluster never changes them)."""
    found = []
    if spec.location and normalize_location(spec.location) != normalize_location(actual["location"]):
        found.append(f"location is {actual['location']!r}, not {spec.location!r}")
    if spec.kubernetes_version and not _version_matches(spec.kubernetes_version, actual):
        found.append(f"kubernetes_version is {actual['kubernetes_version']!r}, not {spec.kubernetes_version!r}")
    pools = actual.get("agent_pools") or []
    system = next((pool for pool in pools if pool.get("mode") == "System"), pools[0] if pools else {})
    if spec.node_count is not None and system.get("count") != spec.node_count:
        found.append(f"node pool {system.get('name')!r} has {system.get('count')} nodes, not {spec.node_count}")
    if spec.vm_size and (system.get("vm_size") or "").lower() != spec.vm_size.lower():
        found.append(f"node pool {system.get('name')!r} runs {system.get('vm_size')!r}, not {spec.vm_size!r}")
    if spec.tags is not None and actual.get("tags") != spec.tags:
        found.append(f"tags are {actual.get('tags')!r}, not {spec.tags!r}")
    return found


def plan_existing_cluster(actual: dict[str, t.Any], spec: ClusterSpec, target: str) -> Plan:
    """aks_cluster on a cluster that exists: only the OIDC logic; other differences become one warning."""
    plan = plan_oidc(actual, True, True, target)
    differences = drift(actual, spec)
    if differences:
        plan.warnings.append(
            f"The {target} already exists and aks_cluster changes only its OIDC issuer and workload identity, so it "
            f"left these differences alone: {'; '.join(differences)}. Change them with az aks or the portal."
        )
    return plan


def plan_absent(actual: dict[str, t.Any] | None) -> Plan:
    if actual is None:
        return Plan(NONE, None, None, reason="the cluster does not exist")
    if actual.get("provisioning_state") == DELETING:
        return Plan(NONE, actual, None, reason="the cluster is already being deleted")
    return Plan(DELETE, actual, None, reason="delete")


def new_model(spec: ClusterSpec, name: str, resource_group: str, subscription_id: str) -> t.Any:
    """The body az aks create --enable-oidc-issuer --enable-workload-identity sends for this spec."""
    return new_cluster_model(
        location=t.cast(str, spec.location),
        tags=spec.tags,
        kubernetes_version=spec.kubernetes_version,
        dns_prefix=default_dns_prefix(name, resource_group, subscription_id),
        pool_name=DEFAULT_NODE_POOL,
        node_count=spec.node_count or DEFAULT_NODE_COUNT,
        vm_size=spec.vm_size,
    )


# --- The reconciler ------------------------------------------------------------------------------------------
@dataclass
class ClusterRead:
    model: t.Any  # the ManagedCluster as GET returned it, or None
    cluster: dict[str, t.Any] | None  # normalised
    resource_group_exists: bool


@dataclass
class ClusterResult:
    plan: Plan
    cluster: dict[str, t.Any] | None  # the cluster now (after apply), or as planned in check mode
    resource_group_created: bool = False


class ClusterReconciler:
    """Read -> plan -> apply for one cluster. A no-op run is one GET of the cluster."""

    def __init__(
        self,
        azure: t.Any,
        resource_group: str,
        name: str,
        *,
        check_mode: bool = False,
        wait: bool = True,
        wait_timeout: float = 1800,
        sleep: t.Callable[[float], None] = time.sleep,
        clock: t.Callable[[], float] = time.monotonic,
    ) -> None:
        self.azure = azure
        self.resource_group = resource_group
        self.name = name
        self.check_mode = check_mode
        self.wait = wait
        self.wait_timeout = wait_timeout
        self.sleep = sleep
        self.clock = clock
        self.target = cluster_target(resource_group, name)

    # -- through the gateway
    def _get(self) -> tuple[t.Any, bool]:
        return Clusters(self.azure).get_model(self.resource_group, self.name)

    def _begin_put(self, model: t.Any, action: str) -> t.Any:
        return Clusters(self.azure).begin_put(self.resource_group, self.name, model, action, wait=self.wait)

    def _begin_delete(self) -> t.Any:
        return Clusters(self.azure).begin_delete(self.resource_group, self.name, wait=self.wait)

    def _create_resource_group(self, location: str) -> None:
        """Through the resource group reconciler (the cluster's GET already said the group is missing)."""
        desired = group_reconciler.DesiredResourceGroup(name=self.resource_group, location=location)
        decided = group_reconciler.plan(None, desired, subscription_id=self.azure.subscription_id)
        group_reconciler.apply(self.azure, desired, decided)

    # -- steps
    def read(self) -> ClusterRead:
        model, group_exists = self._get()
        cluster = normalize_cluster(model, self.resource_group) if model is not None else None
        return ClusterRead(model, cluster, group_exists)

    def ensure_oidc(self, oidc_issuer: bool, workload_identity: bool) -> ClusterResult:
        """aks_oidc: the cluster must exist; set its two settings."""
        current = self.read()
        if current.model is None:
            raise self._missing(current)
        return self._reconcile_existing(
            current, lambda actual: plan_oidc(actual, oidc_issuer, workload_identity, self.target)
        )

    def ensure_present(self, spec: ClusterSpec, create_resource_group: bool = True) -> ClusterResult:
        """aks_cluster: create the cluster (and its resource group) with both features, or fix an existing one."""
        deadline = self.clock() + self.wait_timeout
        current = self.read()
        if current.model is not None:
            return self._reconcile_existing(current, lambda actual: plan_existing_cluster(actual, spec, self.target))
        if not spec.location:
            raise input_error(["location: is required to create the cluster, which does not exist yet"])
        if not current.resource_group_exists and not create_resource_group:
            raise WorkloadIdentityError(
                f"resource_group: resource group '{self.resource_group}' does not exist and create_resource_group is "
                "false; create the group first or set create_resource_group: true",
                code="ResourceGroupNotFound",
                status=404,
                target=self.target,
            )
        plan = plan_create(spec, self.azure.subscription_id, self.resource_group, self.name)
        create_group = not current.resource_group_exists
        if self.check_mode:
            return ClusterResult(plan, plan.after, resource_group_created=create_group)
        if create_group:
            self._create_resource_group(spec.location)
        model = new_model(spec, self.name, self.resource_group, self.azure.subscription_id)
        poller = self._begin_put(model, "create")
        final = self._finish(poller, deadline, f"create {self.target}")
        return ClusterResult(plan, normalize_cluster(final, self.resource_group), resource_group_created=create_group)

    def ensure_absent(self) -> ClusterResult:
        """Delete the cluster (never its resource group)."""
        deadline = self.clock() + self.wait_timeout
        current = self.read()
        plan = plan_absent(current.cluster)
        if self.check_mode:
            return ClusterResult(plan, None)
        if plan.action == DELETE:
            poller = self._begin_delete()
            if self.wait:
                wait_for_lro(poller, self._remaining(deadline), f"delete {self.target}")
        elif current.model is not None and self.wait:
            self._wait_until(deadline, lambda read: read.model is None, "be deleted")
        return ClusterResult(plan, None)

    # -- helpers
    def _reconcile_existing(self, current: ClusterRead, decide: t.Callable[[dict[str, t.Any]], Plan]) -> ClusterResult:
        """Plan; in check mode stop there. Otherwise never race another operation: wait for it (or fail when
        wait is false), re-plan on what it left, PUT, and start over on a 409 OperationNotAllowed or a 412."""
        plan = decide(current.cluster)
        state = current.cluster["provisioning_state"]
        if self.check_mode:
            if plan.changed and is_busy(state):
                plan.warnings.append(
                    f"The {self.target} is {state!r} (another operation is running): a real run waits for it "
                    "before changing anything, or fails with wait: false"
                )
            return ClusterResult(plan, plan.after)
        deadline = self.clock() + self.wait_timeout
        preconditions_failed = idle_conflicts = 0
        while True:
            state = current.cluster["provisioning_state"]
            if state == DELETING:
                raise WorkloadIdentityError(
                    describe_failure("update", self.target, CODE_OPERATION_NOT_ALLOWED, "the cluster is being deleted"),
                    code=CODE_OPERATION_NOT_ALLOWED,
                    target=self.target,
                )
            if is_busy(state):
                if not plan.changed and not self.wait:
                    return ClusterResult(plan, current.cluster)
                if not self.wait:
                    raise self._busy(state)
                current = self._wait_until(deadline, _finished, "finish its current operation")
                plan = decide(current.cluster)  # the other operation may have changed what we decided on
                continue
            if not plan.changed:
                return ClusterResult(plan, current.cluster)
            try:
                final = self._put_oidc(current.model, plan, deadline)
            except WorkloadIdentityError as exc:
                if not self._should_retry(exc, deadline):
                    raise
                preconditions_failed += exc.status == 412
                if preconditions_failed > MAX_PRECONDITION_RETRIES:
                    raise
                current = self.read()
                if current.model is None:
                    raise self._missing(current) from exc
                if exc.status == 409 and not is_busy(current.cluster["provisioning_state"]):
                    # The operation that made AKS refuse already ended (retry once), or the 409 has another
                    # cause that waiting will not cure (report it).
                    idle_conflicts += 1
                    if idle_conflicts > 1:
                        raise
                plan = decide(current.cluster)
                continue
            return ClusterResult(plan, normalize_cluster(final, self.resource_group))

    def _put_oidc(self, model: t.Any, plan: Plan, deadline: float) -> t.Any:
        set_oidc_settings(model, plan.after["oidc_issuer_enabled"], plan.after["workload_identity_enabled"])
        poller = self._begin_put(model, f"{plan.reason} on")
        return self._finish(poller, deadline, f"{plan.reason} on {self.target}")

    def _finish(self, poller: t.Any, deadline: float, description: str) -> t.Any:
        if not self.wait:
            # No polling: the PUT's own 200/201 body, already Creating/Updating and carrying issuerURL
            # (azure-behaviour §5).
            return poller.result()
        return wait_for_lro(poller, self._remaining(deadline), description)

    def _should_retry(self, exc: WorkloadIdentityError, deadline: float) -> bool:
        """Conditions azure-core does not retry, after which we read the cluster again and re-plan."""
        if self.clock() >= deadline:
            return False
        if exc.status == 412:  # our If-Match lost to a concurrent change
            return True
        # AKS: 409 OperationNotAllowed "Another operation (Updating) is in progress, please wait for it to
        # finish" - an operation began between our GET and PUT; the next read shows it and we wait for it.
        return exc.status == 409 and exc.code == CODE_OPERATION_NOT_ALLOWED and self.wait

    def _wait_until(self, deadline: float, done: t.Callable[[ClusterRead], bool], goal: str) -> ClusterRead:
        """GET the cluster every polling interval until ``done``; fail at the deadline."""
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise WorkloadIdentityError(
                    f"Timed out after {self.wait_timeout:g} seconds waiting for the {self.target} to {goal}",
                    code="OperationTimeout",
                    target=self.target,
                )
            self.sleep(min(self.azure.polling_interval, remaining))
            current = self.read()
            if done(current):
                return current
            if current.model is None:
                raise self._missing(current)

    def _remaining(self, deadline: float) -> float:
        return max(deadline - self.clock(), 1.0)

    def _busy(self, state: str) -> WorkloadIdentityError:
        return WorkloadIdentityError(
            describe_failure(
                "update",
                self.target,
                CODE_OPERATION_NOT_ALLOWED,
                f"the cluster is {state!r}: another operation is running and AKS refuses changes until it "
                "finishes; run again later or with wait: true",
            ),
            code=CODE_OPERATION_NOT_ALLOWED,
            status=409,
            target=self.target,
        )

    def _missing(self, current: ClusterRead) -> WorkloadIdentityError:
        """The cluster's GET answered 404: name the option to fix (its code tells a missing group)."""
        if not current.resource_group_exists:
            code, message = (
                "ResourceGroupNotFound",
                f"resource_group: resource group '{self.resource_group}' does not exist",
            )
        else:
            code = "ResourceNotFound"
            message = f"name: {self.target} does not exist; create it first (aks.workload_identity.aks_cluster)"
        return WorkloadIdentityError(message, code=code, status=404, target=self.target)


def is_busy(state: str | None) -> bool:
    """An operation is running on the cluster (a missing state is taken as settled)."""
    return state is not None and state not in FINISHED_STATES


def _finished(read: ClusterRead) -> bool:
    return read.cluster is not None and not is_busy(read.cluster["provisioning_state"])


# --- Module results ------------------------------------------------------------------------------------------
RESULT_KEYS = (
    "id",
    "issuer_url",
    "oidc_issuer_enabled",
    "workload_identity_enabled",
    "provisioning_state",
    "kubernetes_version",
    "location",
)


def module_result(result: ClusterResult, diff: bool) -> dict[str, t.Any]:
    """The modules' return values: ``cluster`` plus its main keys at the top, and the diff when asked."""
    cluster = result.cluster
    values: dict[str, t.Any] = {"changed": result.plan.changed, "cluster": cluster or {}}
    if cluster is not None:
        values.update({key: cluster.get(key) for key in RESULT_KEYS})
    if diff:
        values["diff"] = {"before": result.plan.before or {}, "after": cluster or {}}
    return values
