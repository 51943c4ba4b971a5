# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The fleet engine: many workloads in one process, as snapshot -> plan -> apply -> report.

1. Snapshot: the world is read in lists, not gets, where Azure and Kubernetes allow it, in parallel: the
   identities of each resource group, the federated credentials of each existing identity (Azure offers no wider
   list), the role assignments at each scope the grants name (``atScope()``: every principal in one list), the
   ServiceAccounts and ConfigMaps of each namespace, the workloads to patch per namespace and kind.
2. Plan: every item with the reconcilers' pure ``plan()`` functions, from the snapshot. Anything that can be known
   before a write is checked here: a missing identity that must exist, a missing namespace, the 20-credential
   budget of each identity, a workload to patch that does not exist. A workload that fails here is not written.
3. Apply: identities first (one write each, in parallel), then per identity, in parallel across identities and in
   order within one (Azure refuses concurrent federated credential writes on one identity): ServiceAccount ->
   federated credential -> grants -> ConfigMap -> pod templates. A failure stops that workload only.
4. Report: per workload the keys the workload role publishes as ``workload_results``, what each step did, and a
   diff; a summary. Check mode stops after the plan: no write, not even a dry run.

``state: absent`` runs the same in reverse: pod templates -> grants -> federated credential -> ConfigMap ->
ServiceAccount, then key vault access and the identity, only when no staying workload uses it and it holds no
federated credential this run does not remove.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import typing as t
from dataclasses import dataclass, field

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways import ApiCalls
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.azure import (
    Clusters,
    FederatedCredentials,
    Identities,
    IdentityBindings,
    ResourceGroups,
    RoleAssignments,
    Vaults,
    cluster_target,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.kubernetes import (
    ClusterRoleBindings,
    ClusterRoles,
    ConfigMaps,
    Namespaces,
    PodTemplates,
    ServiceAccounts,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import (
    CREATE,
    DELETE,
    NONE,
    Plan,
    federated_credential,
    identity,
    identity_binding,
    identity_binding_access,
    keyvault_access,
    role_assignment,
    service_account,
    settings_configmap,
    workload_patch,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ANNOTATION_INJECT_PROXY_SIDECAR,
    ANNOTATION_PROXY_SIDECAR_PORT,
    ANNOTATION_USE_IDENTITY_BINDING,
    IDENTITY_BINDING_CREDENTIAL_NAME,
    LABEL_USE,
    LABEL_USE_VALUE,
    MAX_FEDERATED_CREDENTIALS_PER_IDENTITY,
    identity_binding_role_name,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_items import (
    PLACEHOLDER_CLIENT_ID,
    IdentityRef,
    Item,
    desired_configmap,
    desired_credential,
    desired_pod_template,
    desired_service_account,
    identity_groups,
)

DEFAULT_PARALLEL = 8
# Steps of a workload, in the order they are applied (state present); state absent runs them backwards.
IDENTITY = "identity"
BINDING = "identity_binding"  # the identity's binding to the cluster (items with federation: identity_binding)
BINDING_ACCESS = "identity_binding_access"  # the ClusterRole and ClusterRoleBinding that let the SAs use it
NAMESPACE = "namespace"
SERVICE_ACCOUNT = "service_account"
CREDENTIAL = "federated_credential"
GRANTS = "grants"
CONFIGMAP = "configmap"
POD_TEMPLATES = "pod_templates"
KEYVAULT = "keyvault_access"
STEPS = (
    IDENTITY,
    BINDING,
    BINDING_ACCESS,
    NAMESPACE,
    SERVICE_ACCOUNT,
    CREDENTIAL,
    GRANTS,
    CONFIGMAP,
    POD_TEMPLATES,
    KEYVAULT,
)
# Written once per identity (for all its workloads), not per workload.
IDENTITY_STEPS = (IDENTITY, BINDING, BINDING_ACCESS, KEYVAULT)


# --- Results ----------------------------------------------------------------------------------------------------
@dataclass
class StepResult:
    """What one step decided (and did, unless in check mode) for one object."""

    step: str
    target: str
    plan: Plan
    result: dict[str, t.Any] | None = None  # the object afterwards (as planned in check mode)
    context: dict[str, t.Any] = field(default_factory=dict)  # what the apply needs beyond the plan

    @property
    def changed(self) -> bool:
        return self.plan.changed

    def view(self) -> dict[str, t.Any]:
        return {"step": self.step, "target": self.target, "action": self.plan.action, "reason": self.plan.reason}


@dataclass
class WorkloadRun:
    """One workload through the engine."""

    item: Item
    steps: list[StepResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failed_step: str | None = None
    error: WorkloadIdentityError | None = None
    identity: dict[str, t.Any] | None = None  # the identity afterwards (as planned in check mode)

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def changed(self) -> bool:
        return any(step.changed for step in self.steps)

    def fail(self, step: str, error: WorkloadIdentityError) -> None:
        if self.error is None:
            self.failed_step, self.error = step, error

    def record(self, step: str, target: str, plan: Plan, **context: t.Any) -> StepResult:
        done = StepResult(step, target, plan, plan.after, dict(context))
        self.steps.append(done)
        for warning in plan.warnings:
            if warning not in self.warnings:
                self.warnings.append(warning)
        return done

    def step(self, name: str) -> StepResult | None:
        return next((s for s in self.steps if s.step == name), None)


Planned = tuple[str, Plan, dict[str, t.Any]]  # (target, plan, context of the apply)


def _error(message: str, code: str, target: str | None = None) -> WorkloadIdentityError:
    return WorkloadIdentityError(message, code=code, target=target)


# --- The snapshot -----------------------------------------------------------------------------------------------
@dataclass
class Snapshot:
    """What the fleet's objects look like before the run, read in as few requests as the APIs allow."""

    identities: dict[tuple[str, str], dict[str, t.Any] | None] = field(default_factory=dict)
    missing_groups: set[str] = field(default_factory=set)  # lower-case names of resource groups that do not exist
    group_locations: dict[str, str] = field(default_factory=dict)  # lower-case resource group -> location
    credentials: dict[tuple[str, str], list[dict[str, t.Any]]] = field(default_factory=dict)
    assignments: dict[str, list[dict[str, t.Any]]] = field(default_factory=dict)  # lower-case scope -> list
    roles: dict[tuple[str, str], role_assignment.Role] = field(default_factory=dict)  # (role, scope) -> resolved
    service_accounts: dict[str, dict[str, dict[str, t.Any]]] = field(default_factory=dict)  # namespace -> name -> SA
    configmaps: dict[str, dict[str, dict[str, t.Any]]] = field(default_factory=dict)
    pod_templates: dict[tuple[str, str], dict[str, dict[str, t.Any]]] = field(default_factory=dict)  # (kind, ns)
    namespaces: dict[str, bool | None] = field(default_factory=dict)  # exists? None: could not be read (403)
    vaults: dict[tuple[str, str], dict[str, t.Any] | None] = field(default_factory=dict)
    bindings: list[dict[str, t.Any]] | None = None  # the cluster's identity bindings; None: no cluster
    cluster_roles: dict[str, dict[str, t.Any] | None] = field(default_factory=dict)  # by name
    cluster_role_bindings: dict[str, dict[str, t.Any] | None] = field(default_factory=dict)
    errors: dict[str, WorkloadIdentityError] = field(default_factory=dict)  # what could not be read, by key


class Fleet:
    """Converges (or takes down) a list of items with one Azure login and one Kubernetes client.

    ``azure`` is an ``AzureModule``, ``kube`` a ``K8sModule`` (their clients are shared by every worker thread;
    the Azure SDK clients and the kubernetes ApiClient are thread-safe). ``parallel`` bounds the requests in
    flight at once.
    """

    def __init__(
        self,
        azure: t.Any,
        kube: t.Any,
        *,
        check_mode: bool,
        parallel: int = DEFAULT_PARALLEL,
        cluster: tuple[str, str] | None = None,
    ) -> None:
        self.azure = azure
        self.cluster = cluster  # (resource group, name): where the items' identity bindings go
        self.kube = kube
        self.check_mode = check_mode
        self.parallel = max(1, parallel)
        self.calls: ApiCalls = azure.calls
        self.snapshot = Snapshot()
        self._identity_plans: dict[tuple[str, str], Plan] = {}
        self._binding_plans: dict[tuple[str, str], Plan] = {}

    # -- plumbing
    def prepare(self, *, kubernetes: bool = True, workloads: bool = False) -> None:
        """Build the clients and sign in once, before any worker thread starts: the credential's first token
        request then serves all of them (azure-identity caches the token; concurrent first calls would each sign
        in). The apps and batch clients (a second of imports) only when workloads are to be patched."""
        self.azure.sign_in()
        for client in ("msi", "authorization", "resources"):
            getattr(self.azure, client)
        if kubernetes:
            configuration = self.kube.configuration
            configuration.connection_pool_maxsize = max(self.parallel, configuration.connection_pool_maxsize or 0)
            for client in ("core_v1", *(("apps_v1", "batch_v1") if workloads else ())):
                getattr(self.kube, client)

    def _k8s(self, gateway: type, api: t.Any) -> t.Any:
        return gateway(api, calls=self.calls, dry_run=False)

    def _run_all(self, jobs: t.Iterable[tuple[t.Any, t.Callable[[], t.Any]]]) -> dict[t.Any, t.Any]:
        """Run ``(key, call)`` jobs on at most ``parallel`` threads; each result or WorkloadIdentityError by key."""
        jobs = list(jobs)
        if not jobs:
            return {}
        results: dict[t.Any, t.Any] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(self.parallel, len(jobs))) as pool:
            futures = {pool.submit(call): key for key, call in jobs}
            for future in concurrent.futures.as_completed(futures):
                key = futures[future]
                try:
                    results[key] = future.result()
                except WorkloadIdentityError as exc:
                    results[key] = exc
                except Exception as exc:  # a bug must fail its workload with the traceback, not the whole fleet
                    results[key] = WorkloadIdentityError(
                        f"Unexpected error: {type(exc).__name__}: {exc}", code="InternalError", exception=exc
                    )
        return results

    # -- reads
    def read_azure(self, items: list[Item]) -> None:
        """The items' identities (one list per resource group), the credentials of those that exist (one list
        each), the role assignments at the scopes they are granted at (one list per scope) and the roles named."""
        self.read_identities(items)
        self.read_credentials(identity_groups(items))
        self.read_assignments(
            g.scope for item in items if self.snapshot.identities.get(item.identity.key) for g in item.grants
        )
        self.resolve_roles((g.role, g.scope) for item in items for g in item.grants)

    def read_identities(self, items: list[Item]) -> None:
        """One list per resource group of the items' identities: every identity's client and principal ID."""
        groups = {item.identity.resource_group.lower(): item.identity.resource_group for item in items}
        gateway = Identities(self.azure, self.calls)
        found = self._run_all((key, lambda g=group: gateway.list_in_resource_group(g)) for key, group in groups.items())
        for key, listed in found.items():
            if isinstance(listed, WorkloadIdentityError):
                self.snapshot.errors[f"group:{key}"] = listed
            elif listed is None:
                self.snapshot.missing_groups.add(key)
            else:
                for entry in listed:
                    self.snapshot.identities[(key, str(entry["name"]).lower())] = entry
        for item in items:
            self.snapshot.identities.setdefault(item.identity.key, None)

    def read_credentials(self, keys: t.Iterable[tuple[str, str]]) -> None:
        gateway = FederatedCredentials(self.azure, self.calls)
        jobs = []
        for key in keys:
            current = self.snapshot.identities.get(key)
            if current is not None:
                jobs.append((key, lambda c=current: gateway.list(c["resource_group"], c["name"])))
        for key, listed in self._run_all(jobs).items():
            if isinstance(listed, WorkloadIdentityError):
                self.snapshot.errors[f"credentials:{key}"] = listed
            elif listed is None:  # deleted since the identity list
                self.snapshot.identities[key] = None
            else:
                self.snapshot.credentials[key] = listed

    def read_assignments(self, scopes: t.Iterable[str]) -> None:
        gateway = RoleAssignments(self.azure, self.calls)
        unique = {role_assignment.normalize_scope(s).lower(): role_assignment.normalize_scope(s) for s in scopes}
        found = self._run_all((key, lambda s=scope: gateway.list_at_scope(s)) for key, scope in unique.items())
        for key, listed in found.items():
            if isinstance(listed, WorkloadIdentityError):
                self.snapshot.errors[f"assignments:{key}"] = listed
            else:
                self.snapshot.assignments[key] = listed

    def resolve_roles(self, pairs: t.Iterable[tuple[str, str]]) -> None:
        """Role names to definition GUIDs: built-in names and GUIDs cost nothing, any other name one list."""
        jobs = [
            (pair, lambda p=pair: role_assignment.resolve_role(self.azure, p[1], p[0]))
            for pair in dict.fromkeys(pairs)
            if pair not in self.snapshot.roles
        ]
        for pair, role in self._run_all(jobs).items():
            if isinstance(role, WorkloadIdentityError):
                self.snapshot.errors[f"role:{pair}"] = role
            else:
                self.snapshot.roles[pair] = role

    def read_group_locations(self, groups: t.Iterable[str]) -> None:
        gateway = ResourceGroups(self.azure, self.calls)
        unique = {g.lower(): g for g in groups if g.lower() not in self.snapshot.group_locations}
        for key, group in self._run_all((k, lambda g=g: gateway.get(g)) for k, g in unique.items()).items():
            if isinstance(group, WorkloadIdentityError):
                self.snapshot.errors[f"group:{key}"] = group
            elif group is None:
                self.snapshot.missing_groups.add(key)
            else:
                self.snapshot.group_locations[key] = group["location"]

    def read_kubernetes(self, items: list[Item], *, service_accounts_only: bool = False) -> None:
        """One list per namespace of ServiceAccounts (and of ConfigMaps where items have one), one per namespace
        and kind of workload to patch."""
        accounts = self._k8s(ServiceAccounts, self.kube.core_v1)
        configmaps = self._k8s(ConfigMaps, self.kube.core_v1)
        jobs: list[tuple[t.Any, t.Callable[[], t.Any]]] = []
        for namespace in dict.fromkeys(item.namespace for item in items):
            jobs.append((("sa", namespace), lambda ns=namespace: accounts.list(ns)))
        for namespace in dict.fromkeys(item.namespace for item in items if item.configmap is not None):
            if not service_accounts_only:
                jobs.append((("cm", namespace), lambda ns=namespace: configmaps.list(ns)))
        kinds = (
            {}
            if service_accounts_only
            else dict.fromkeys((p.kind, item.namespace) for item in items for p in item.patch_workloads)
        )
        if kinds:
            templates = self._k8s(PodTemplates, {"apps_v1": self.kube.apps_v1, "batch_v1": self.kube.batch_v1})
        for kind, namespace in kinds:
            jobs.append((("wl", kind, namespace), lambda k=kind, ns=namespace: templates.list(k, ns)))
        for key, listed in self._run_all(jobs).items():
            if isinstance(listed, WorkloadIdentityError):
                self.snapshot.errors[f"{key[0]}:{':'.join(key[1:])}"] = listed
            elif key[0] == "sa":
                self.snapshot.service_accounts[key[1]] = listed
            elif key[0] == "cm":
                self.snapshot.configmaps[key[1]] = listed
            else:
                self.snapshot.pod_templates[(key[1], key[2])] = listed

    def read_bindings(self) -> None:
        """The cluster's identity bindings: one list serves every identity."""
        if self.cluster is None:
            return
        try:
            self.snapshot.bindings = IdentityBindings(self.azure, self.calls).list(*self.cluster)
        except WorkloadIdentityError as exc:
            self.snapshot.errors["bindings"] = exc

    def read_binding_access(self, client_ids: t.Iterable[str]) -> None:
        """Our ClusterRole and ClusterRoleBinding of each identity (named by its client ID): one GET each."""
        roles = self._k8s(ClusterRoles, self.kube.rbac_v1)
        role_bindings = self._k8s(ClusterRoleBindings, self.kube.rbac_v1)
        jobs: list[tuple[t.Any, t.Callable[[], t.Any]]] = []
        for name in dict.fromkeys(identity_binding_role_name(c) for c in client_ids):
            jobs.append((("role", name), lambda n=name: roles.read(n)))
            jobs.append((("binding", name), lambda n=name: role_bindings.read(n)))
        for (kind, name), found in self._run_all(jobs).items():
            if isinstance(found, WorkloadIdentityError):
                self.snapshot.errors[f"rbac:{name}"] = found
            elif kind == "role":
                self.snapshot.cluster_roles[name] = found
            else:
                self.snapshot.cluster_role_bindings[name] = found

    def _bound_client_ids(self, items: list[Item]) -> list[str]:
        """The client IDs of the existing identities that items bind (new ones have no objects to read)."""
        found = (self.snapshot.identities.get(item.identity.key) for item in items if item.uses_binding)
        return [identity["client_id"] for identity in found if identity and identity.get("client_id")]

    def read_namespaces(self, names: t.Iterable[str]) -> None:
        """Whether namespaces exist (only those where something is to be created): one GET each. A list in a
        namespace that does not exist answers like an empty one, so it cannot tell."""
        gateway = self._k8s(Namespaces, self.kube.core_v1)
        wanted = [n for n in dict.fromkeys(names) if n not in self.snapshot.namespaces]
        for name, found in self._run_all((n, lambda n=n: gateway.read(n)) for n in wanted).items():
            if isinstance(found, WorkloadIdentityError):
                # Without the right to read namespaces (a namespace-scoped Role), a create will tell.
                self.snapshot.namespaces[name] = None if found.status == 403 else False
                if found.status != 403:
                    self.snapshot.errors[f"namespace:{name}"] = found
            else:
                self.snapshot.namespaces[name] = found is not None and not found["terminating"]

    def _read_error(self, key: str) -> WorkloadIdentityError | None:
        return self.snapshot.errors.get(key)

    # -- converge (state present) ------------------------------------------------------------------------------
    def converge(
        self, items: list[Item], *, issuer: str | None, tenant_id: str | None
    ) -> tuple[list[WorkloadRun], dict[tuple[str, str], dict[str, t.Any]]]:
        runs = [WorkloadRun(item) for item in items]
        groups = identity_groups(items)
        self.read_azure(items)
        self.read_group_locations(
            item.identity.resource_group
            for item in items
            if self.snapshot.identities.get(item.identity.key) is None and not item.identity.location
        )
        self.read_kubernetes(items)
        if any(item.uses_binding for item in items):
            self.read_bindings()
            self.read_binding_access(self._bound_client_ids(items))
        identities = self._plan_identities(runs, groups)
        by_identity: dict[tuple[str, str], list[WorkloadRun]] = {}
        for run in runs:
            by_identity.setdefault(run.item.identity.key, []).append(run)
        for key, members in by_identity.items():
            self._plan_binding(members, identities.get(key))
            self._plan_credentials(members, identities.get(key), issuer)
        for run in runs:
            if not run.failed:
                self._plan_kubernetes_and_grants(run, identities.get(run.item.identity.key), tenant_id)
        self.read_namespaces(self._namespaces_to_create(runs))
        creating = {run.item.namespace for run in runs if run.item.create_namespace and not run.failed}
        for run in runs:
            self._check_namespace(run, creating)
            run.steps.sort(key=lambda step: STEPS.index(step.step))  # Microsoft's order, also the order of writes
        if self.check_mode:
            return runs, identities
        self._create_namespaces(runs)
        written = self._apply_identities(by_identity, identities)
        jobs = [
            (key, lambda m=members: self._apply_group(m, written, issuer, tenant_id))
            for key, members in by_identity.items()
        ]
        self._run_all(jobs)
        return runs, written

    def _plan_identities(
        self, runs: list[WorkloadRun], groups: dict[tuple[str, str], list[Item]]
    ) -> dict[tuple[str, str], dict[str, t.Any]]:
        """Each identity planned once; the identity as it will be (client ID unknown until created)."""
        planned: dict[tuple[str, str], dict[str, t.Any]] = {}
        failures: dict[tuple[str, str], WorkloadIdentityError] = {}
        for key, members in groups.items():
            ref = members[0].identity
            try:
                plan = self._plan_identity(ref)
            except WorkloadIdentityError as exc:
                failures[key] = exc
                continue
            self._identity_plans[key] = plan
            planned[key] = plan.after or {}
        for run in runs:
            key = run.item.identity.key
            if key in failures:
                run.fail(IDENTITY, failures[key])
            else:
                run.identity = planned[key]
                run.record(IDENTITY, run.item.identity.label, self._identity_plans[key])
        return planned

    def _plan_identity(self, ref: IdentityRef) -> Plan:
        group = ref.resource_group.lower()
        error = self._read_error(f"group:{group}")
        if error is not None:
            raise error
        missing_group = group in self.snapshot.missing_groups
        if missing_group and not self.check_mode:
            raise _error(
                f"identity.resource_group: resource group '{ref.resource_group}' does not exist; create it first",
                "ResourceGroupNotFound",
                ref.label,
            )
        actual = self.snapshot.identities.get(ref.key)
        if actual is None and not ref.create:
            raise _error(
                f"identity: {ref.label} does not exist, and identity.create is false for it: create it first, or "
                "set identity.create to true",
                "ResourceNotFound",
                ref.label,
            )
        location = ref.location or self.snapshot.group_locations.get(group)
        if missing_group:
            # Check mode: an earlier task of the play (the cluster role creating a cluster) would create the group.
            location = location or "unknown"
        desired = identity.DesiredIdentity(ref.resource_group, ref.name, location=ref.location)
        plan = identity.plan(actual, desired, location=location, subscription_id=self.azure.subscription_id)
        if missing_group:
            if plan.after and plan.after.get("location") == "unknown":
                plan.after["location"] = None  # the resource group's, once it exists
            plan.warnings.append(
                f"resource group '{ref.resource_group}' does not exist yet: a real run needs it (check mode: an "
                "earlier task would create it)"
            )
        return plan

    def _plan_credentials(self, members: list[WorkloadRun], planned_identity: dict | None, issuer: str | None) -> None:
        """The credentials of one identity, item by item against a running list (a create counts for the next
        item), then the identity's budget of 20, checked before anything is written. Items using the identity
        binding have no credential of their own: the binding's one (AKS's) counts once, when it is still to come."""
        live = [run for run in members if not run.failed]
        own = [run for run in live if not run.item.uses_binding]
        if not live:
            return
        key = live[0].item.identity.key
        error = self._read_error(f"credentials:{key}")
        if error is not None:
            for run in live:
                run.fail(CREDENTIAL, error)
            return
        if not issuer and own:
            for run in own:
                run.record(
                    CREDENTIAL, "federated credential", Plan(NONE, None, None, reason="the issuer is not known yet")
                )
                run.warnings.append(
                    "The cluster's OIDC issuer is not known yet (check mode, before the cluster role enables it): "
                    "the federated credential is planned once it is"
                )
            own = []
        current = list(self.snapshot.credentials.get(key, []))
        existing = len(current)
        ident_id = (planned_identity or {}).get("id")
        creates = []
        over: list[WorkloadRun] = []  # items whose credential would not fit: the whole identity fails below
        for run in own:
            desired = desired_credential(run.item, issuer)
            try:
                plan = federated_credential.plan(current, desired, identity=ident_id)
            except WorkloadIdentityError as exc:
                if exc.code == "FederatedCredentialLimitReached":
                    over.append(run)
                    continue
                run.fail(CREDENTIAL, exc)
                continue
            run.record(CREDENTIAL, f"federated credential on {run.item.identity.label}", plan, desired=desired)
            if plan.action == CREATE:
                current.append(plan.after)
                creates.append(run)
            elif plan.changed:
                current = [c for c in current if c["name"] != (plan.before or {}).get("name")] + [plan.after]
        binding_credential = any(run.item.uses_binding for run in live) and not any(
            c["name"].lower() == IDENTITY_BINDING_CREDENTIAL_NAME for c in current
        )
        creates += over
        total = len(current) + len(over) + (1 if binding_credential else 0)
        if total > MAX_FEDERATED_CREDENTIALS_PER_IDENTITY:
            binding_note = (
                f", 1 ({IDENTITY_BINDING_CREDENTIAL_NAME}) for its identity binding" if binding_credential else ""
            )
            error = _error(
                f"{live[0].item.identity.label} would hold {total} federated credentials ({existing} now, "
                f"{len(creates)} to create{binding_note}); Azure allows {MAX_FEDERATED_CREDENTIALS_PER_IDENTITY} per "
                "identity. Use another identity for some of these workloads, or federation: identity_binding: one "
                "binding serves every ServiceAccount of the cluster with one credential",
                "FederatedCredentialLimitReached",
                live[0].item.identity.label,
            )
            for run in live:
                run.fail(CREDENTIAL, error)

    def _plan_binding(self, members: list[WorkloadRun], planned_identity: dict | None) -> None:
        """The identity's binding to the cluster and the RBAC that lets its ServiceAccounts use it, planned once
        for the items that use it and recorded on each (like the identity: written once, before their steps)."""
        bound = [run for run in members if not run.failed and run.item.uses_binding]
        if not bound:
            return
        try:
            binding_plan, desired = self._plan_identity_binding(bound[0].item, planned_identity)
        except WorkloadIdentityError as exc:
            for run in bound:
                run.fail(BINDING, exc)
            return
        self._binding_plans[bound[0].item.identity.key] = binding_plan
        client_id = (planned_identity or {}).get("client_id") or PLACEHOLDER_CLIENT_ID
        try:
            access = self._plan_binding_access(bound, client_id, "present")
        except WorkloadIdentityError as exc:
            for run in bound:
                run.fail(BINDING_ACCESS, exc)
            return
        target = f"identity binding '{desired.name}' on {cluster_label(self.cluster)}"
        for run in bound:
            run.record(BINDING, target, binding_plan, desired=desired)
            for step_target, plan, context in access:
                run.record(BINDING_ACCESS, step_target, plan, **context)

    def _plan_identity_binding(
        self, item: Item, planned_identity: dict | None, state: str = "present"
    ) -> tuple[Plan, identity_binding.DesiredIdentityBinding]:
        if self.cluster is None:  # the module refuses this before any request; here for callers that do not
            raise _error("cluster_name: federation: identity_binding needs the cluster", "InvalidParameter", item.where)
        self._raise_read_error("bindings")
        identity_id = (planned_identity or {}).get("id") or ""
        desired = identity_binding.DesiredIdentityBinding(
            self.cluster[0], self.cluster[1], item.binding_name, identity_id, state=state
        )
        if self.snapshot.bindings is None:
            if state == "absent":
                return Plan(NONE, None, None, reason="the cluster does not exist"), desired
            if not self.check_mode:
                raise _error(
                    f"cluster_name: the {cluster_label(self.cluster)} does not exist; create it first",
                    "ResourceNotFound",
                    cluster_label(self.cluster),
                )
            plan = Plan(CREATE, None, {"name": desired.name, "identity_id": identity_id}, reason="no cluster yet")
            plan.warnings.append(
                f"the {cluster_label(self.cluster)} does not exist yet: a real run needs it (check mode: an earlier "
                "task would create it)"
            )
            return plan, desired
        return identity_binding.plan(self.snapshot.bindings, desired), desired

    def _plan_binding_access(self, runs: list[WorkloadRun], client_id: str, state: str) -> list[Planned]:
        """Our ClusterRole and ClusterRoleBinding for the identity, with these runs' ServiceAccounts as subjects
        added (or, absent, removed); subjects and rules of others are left alone."""
        name = identity_binding_role_name(client_id)
        self._raise_read_error(f"rbac:{name}")
        desired = identity_binding_access.DesiredBindingAccess(
            client_id=client_id,
            service_accounts=tuple((run.item.namespace, run.item.service_account) for run in runs),
            state=state,
        )
        role, role_binding = self.snapshot.cluster_roles.get(name), self.snapshot.cluster_role_bindings.get(name)
        planned = identity_binding_access.plan(role, role_binding, desired)
        steps = [
            (f"ClusterRole '{name}'", planned.role, {"desired": desired, "kind": "ClusterRole", "actual": role}),
            (
                f"ClusterRoleBinding '{name}'",
                planned.binding,
                {"desired": desired, "kind": "ClusterRoleBinding", "actual": role_binding},
            ),
        ]
        # The role before the binding that grants it; taken down the other way round.
        return steps if state == "present" else steps[::-1]

    def _plan_kubernetes_and_grants(self, run: WorkloadRun, planned: dict | None, tenant_id: str | None) -> None:
        item = run.item
        client_id = (planned or {}).get("client_id")
        principal_id = (planned or {}).get("principal_id")
        if client_id is None:
            run.warnings.append(
                f"{item.identity.label} does not exist yet: its client ID and principal ID are assigned on creation "
                "(check mode plans with a stand-in)"
            )
        _record_plans(
            run,
            [
                (
                    SERVICE_ACCOUNT,
                    lambda: self._plan_service_account(item, client_id or PLACEHOLDER_CLIENT_ID, tenant_id),
                ),
                (GRANTS, lambda: self._plan_grants(item, principal_id)),
                (CONFIGMAP, lambda: self._plan_configmap(item, client_id or PLACEHOLDER_CLIENT_ID, tenant_id, planned)),
                (POD_TEMPLATES, lambda: self._plan_pod_templates(item, "present")),
            ],
        )

    def _plan_service_account(self, item: Item, client_id: str, tenant_id: str | None) -> list[Planned]:
        self._raise_read_error(f"sa:{item.namespace}")
        actual = self.snapshot.service_accounts.get(item.namespace, {}).get(item.service_account)
        desired = desired_service_account(item, client_id, tenant_id)
        return [(item.service_account_label, service_account.plan(actual, desired), {"desired": desired})]

    def _plan_grants(self, item: Item, principal_id: str | None, state: str = "present") -> list[Planned]:
        plans: list[Planned] = []
        for grant in item.grants:
            self._raise_read_error(f"role:{(grant.role, grant.scope)}")
            scope = role_assignment.normalize_scope(grant.scope)
            if principal_id is not None:
                self._raise_read_error(f"assignments:{scope.lower()}")
            role = self.snapshot.roles[(grant.role, grant.scope)]
            desired = role_assignment.DesiredRoleAssignment(scope, role, principal_id, state=state)
            actual = self.snapshot.assignments.get(scope.lower(), [])
            plan = role_assignment.plan_role_assignment(actual, desired)
            plans.append((f"role {grant.role} at {scope}", plan, {"desired": desired, "grant": grant}))
        return plans

    def _plan_configmap(self, item: Item, client_id: str, tenant_id: str | None, planned: dict | None) -> list[Planned]:
        if item.configmap is None:
            return []
        self._raise_read_error(f"cm:{item.namespace}")
        actual = self.snapshot.configmaps.get(item.namespace, {}).get(item.configmap.name)
        desired = desired_configmap(item, client_id, tenant_id or (planned or {}).get("tenant_id"))
        target = f"ConfigMap '{item.namespace}/{item.configmap.name}'"
        return [(target, settings_configmap.plan(actual, desired), {"desired": desired})]

    def _plan_pod_templates(self, item: Item, state: str) -> list[Planned]:
        plans: list[Planned] = []
        for target in item.patch_workloads:
            self._raise_read_error(f"wl:{target.kind}:{item.namespace}")
            actual = self.snapshot.pod_templates.get((target.kind, item.namespace), {}).get(target.name)
            desired = desired_pod_template(item, target, state)
            plans.append((desired.target, workload_patch.plan(actual, desired), {"desired": desired}))
        return plans

    def _raise_read_error(self, key: str) -> None:
        error = self._read_error(key)
        if error is not None:
            raise error

    def _namespaces_to_create(self, runs: list[WorkloadRun]) -> list[str]:
        return [
            run.item.namespace
            for run in runs
            if not run.failed
            and any(s.step in (SERVICE_ACCOUNT, CONFIGMAP) and s.plan.action == CREATE for s in run.steps)
        ]

    def _check_namespace(self, run: WorkloadRun, creating: set[str]) -> None:
        """A missing namespace is found by reading: created first (before any workload's writes) when an item in
        it asks for it, else the item fails."""
        if run.failed or run.item.namespace not in self.snapshot.namespaces:
            return
        exists = self.snapshot.namespaces[run.item.namespace]
        if exists is not False:
            return
        item = run.item
        if item.namespace in creating and not item.create_namespace:
            return  # another item of the namespace creates it
        if not item.create_namespace:
            run.fail(
                NAMESPACE,
                _error(
                    f"namespace: namespace '{item.namespace}' does not exist; create it first or set "
                    "create_namespace: true",
                    "NotFound",
                    f"namespace '{item.namespace}'",
                ),
            )
            return
        plan = Plan(CREATE, None, {"name": item.namespace}, reason="the namespace does not exist")
        index = next((i for i, s in enumerate(run.steps) if s.step in (SERVICE_ACCOUNT, CONFIGMAP)), len(run.steps))
        run.steps.insert(index, StepResult(NAMESPACE, f"namespace '{item.namespace}'", plan, plan.after))

    # -- apply (state present)
    def _apply_identities(
        self, by_identity: dict[tuple[str, str], list[WorkloadRun]], planned: dict[tuple[str, str], dict]
    ) -> dict[tuple[str, str], dict[str, t.Any]]:
        """Create or update each identity once, in parallel; its workloads fail with it."""
        written = dict(planned)
        jobs = []
        for key, members in by_identity.items():
            plan = self._identity_plans.get(key)
            live = [run for run in members if not run.failed]
            if plan is None or not plan.changed or not live:
                continue
            ref = live[0].item.identity
            desired = identity.DesiredIdentity(ref.resource_group, ref.name, location=ref.location)
            jobs.append((key, lambda d=desired, p=plan: identity.apply(self.azure, d, p)))
        for key, outcome in self._run_all(jobs).items():
            for run in by_identity[key]:
                if isinstance(outcome, WorkloadIdentityError):
                    run.fail(IDENTITY, outcome)
                else:
                    run.identity = outcome
                    step = run.step(IDENTITY)
                    if step is not None:
                        step.result = outcome
            if not isinstance(outcome, WorkloadIdentityError):
                written[key] = outcome
        return written

    def _apply_group(
        self, members: list[WorkloadRun], written: dict, issuer: str | None, tenant_id: str | None
    ) -> None:
        """The writes of the workloads of one identity, strictly in order: the identity's binding and its RBAC
        first (once for all), then each workload's steps."""
        current = written.get(members[0].item.identity.key) or {}
        self._apply_binding(members, current)
        for run in members:
            if run.failed:
                continue
            run.identity = current
            self._replan_with_identity(run, current, tenant_id)
            for done in list(run.steps):
                if run.failed:
                    break
                if done.step in IDENTITY_STEPS or not done.changed:
                    continue
                try:
                    self._apply_step(run, done)
                except WorkloadIdentityError as exc:
                    run.fail(done.step, exc)

    def _apply_binding(self, members: list[WorkloadRun], current: dict[str, t.Any]) -> None:
        """The binding (a long-running operation), then our ClusterRole and ClusterRoleBinding, planned again with
        the identity's real client ID when it was only just created. A failure fails every workload using it."""
        bound = [run for run in members if not run.failed and run.step(BINDING) is not None]
        if not bound:
            return
        step = bound[0].step(BINDING)
        try:
            if step.changed:
                desired = step.context["desired"]
                if not desired.identity_id:
                    desired = dataclasses.replace(desired, identity_id=current["id"])
                result = identity_binding.apply(self.azure, desired, step.plan, calls=self.calls)
                for run in bound:
                    run.step(BINDING).result = result
        except WorkloadIdentityError as exc:
            for run in bound:
                run.fail(BINDING, exc)
            return
        try:
            access = self._plan_binding_access(bound, current["client_id"], "present")
            for run in bound:
                run.steps = [s for s in run.steps if s.step != BINDING_ACCESS]
                for target, plan, context in access:
                    run.record(BINDING_ACCESS, target, plan, **context)
                run.steps.sort(key=lambda s: STEPS.index(s.step))
            for index, (_target, plan, context) in enumerate(access):
                if plan.changed:
                    result = self._apply_access(plan, context)
                    for run in bound:
                        [s for s in run.steps if s.step == BINDING_ACCESS][index].result = result
        except WorkloadIdentityError as exc:
            for run in bound:
                run.fail(BINDING_ACCESS, exc)

    def _apply_access(self, plan: Plan, context: dict[str, t.Any]) -> dict[str, t.Any] | None:
        reconciler = identity_binding_access.BindingAccessReconciler(self.kube.rbac_v1, calls=self.calls, dry_run=False)
        return reconciler.apply_one(context["kind"], plan, context["desired"], context["actual"])

    def _replan_with_identity(self, run: WorkloadRun, current: dict, tenant_id: str | None) -> None:
        """Plans made with a stand-in client or principal ID (the identity did not exist) made again with the real
        ones, from the same snapshot (pure)."""
        item = run.item
        replans = {
            SERVICE_ACCOUNT: lambda: self._plan_service_account(item, current["client_id"], tenant_id),
            GRANTS: lambda: self._plan_grants(item, current.get("principal_id")),
            CONFIGMAP: lambda: self._plan_configmap(item, current["client_id"], tenant_id, current),
        }
        for step_name, replan in replans.items():
            try:
                fresh = iter(replan())
            except WorkloadIdentityError as exc:
                run.fail(step_name, exc)
                return
            for index, done in enumerate(run.steps):
                if done.step == step_name:
                    target, plan, context = next(fresh)
                    run.steps[index] = StepResult(step_name, target, plan, plan.after, context)

    def _apply_step(self, run: WorkloadRun, done: StepResult) -> None:
        item = run.item
        if done.step == NAMESPACE:
            return  # created before the workloads' writes (_create_namespaces)
        if done.step == SERVICE_ACCOUNT:
            reconciler = service_account.ServiceAccountReconciler(self.kube.core_v1, calls=self.calls, dry_run=False)
            actual = self.snapshot.service_accounts.get(item.namespace, {}).get(item.service_account)
            outcome = reconciler.apply(actual, done.context["desired"], done.plan)
            done.result = outcome.service_account
            run.warnings += [w for w in outcome.warnings if w not in run.warnings]
        elif done.step == CREDENTIAL:
            done.result = federated_credential.apply(
                self.azure, done.context["desired"], done.plan, identity_known=True
            )
        elif done.step == GRANTS:
            self._apply_grant(done)
        elif done.step == CONFIGMAP:
            reconciler = settings_configmap.ConfigMapReconciler(self.kube.core_v1, calls=self.calls, dry_run=False)
            actual = self.snapshot.configmaps.get(item.namespace, {}).get(done.context["desired"].name)
            done.result = reconciler.apply(actual, done.context["desired"], done.plan).configmap
        elif done.step == POD_TEMPLATES:
            self._apply_pod_template(run, done)

    def _apply_grant(self, done: StepResult) -> None:
        desired: role_assignment.DesiredRoleAssignment = done.context["desired"]
        if done.plan.action == DELETE:
            actual = self.snapshot.assignments.get(desired.scope.lower(), [])
            for found in role_assignment.matching_assignments(
                actual, desired.scope, desired.principal_id, desired.role.guid
            ):
                role_assignment.delete_assignment(self.azure, found)
            done.result = None
            return
        try:
            done.result = role_assignment.create_assignment(self.azure, desired)
        except WorkloadIdentityError as exc:
            if exc.code != role_assignment.CODE_ROLE_ASSIGNMENT_EXISTS:
                raise
            done.result = done.plan.after  # another run assigned the same triple meanwhile: the state holds

    def _apply_pod_template(self, run: WorkloadRun, done: StepResult) -> None:
        desired: workload_patch.DesiredPodTemplate = done.context["desired"]
        reconciler = workload_patch.PodTemplateReconciler(
            {"apps_v1": self.kube.apps_v1, "batch_v1": self.kube.batch_v1}, calls=self.calls, dry_run=False
        )
        actual = self.snapshot.pod_templates.get((desired.kind, desired.namespace), {}).get(desired.name)
        outcome = reconciler.apply(actual, desired)
        done.result = outcome.workload
        run.warnings += [w for w in outcome.warnings if w not in run.warnings]

    def _create_namespaces(self, runs: list[WorkloadRun]) -> None:
        """The namespaces to create, first and once each: the items of a namespace run in parallel, so none may
        find it missing because the item that creates it has not run yet. The workloads of a namespace that cannot
        be created fail with it."""
        wanted = dict.fromkeys(r.item.namespace for r in runs if r.step(NAMESPACE) is not None and not r.failed)
        gateway = self._k8s(Namespaces, self.kube.core_v1)
        created = self._run_all((name, lambda n=name: gateway.create(n)) for name in wanted)
        for run in runs:
            outcome = created.get(run.item.namespace)
            if isinstance(outcome, WorkloadIdentityError):
                run.fail(NAMESPACE, outcome)
            elif outcome is not None and run.step(NAMESPACE) is not None:
                run.step(NAMESPACE).result = outcome

    # -- take down (state absent) ------------------------------------------------------------------------------
    def take_down(
        self,
        items: list[Item],
        *,
        staying: list[Item],
        issuer: str | None,
        delete_service_account: bool,
        keep_identity: bool,
        keyvaults: list[dict[str, t.Any]],
        kubernetes: bool = True,
        delete_binding_credential: bool = False,
        grants_only: bool = False,
    ) -> tuple[list[WorkloadRun], list[dict[str, t.Any]]]:
        """``kubernetes`` false: the cluster is gone, and its Kubernetes objects and identity bindings with it.
        ``delete_binding_credential``: the aks-identity-binding credential goes with the identity's last binding
        here (AKS never removes it; only the caller knows that no other cluster binds the identity).
        ``grants_only``: only the items' grants go (a workload that stays but lists fewer grants); the identity,
        its credential and the Kubernetes objects stay."""
        runs = [WorkloadRun(item) for item in items]
        groups = identity_groups(items)
        keep_identity = keep_identity or grants_only
        kubernetes = kubernetes and not grants_only
        self.read_azure(items)
        if kubernetes:
            self.read_kubernetes(items)
            if any(item.uses_binding for item in items):
                self.read_bindings()
                self.read_binding_access(self._bound_client_ids(items))
        unbinding = self._bindings_to_remove(groups, staying)
        decisions = self._identity_decisions(
            groups, staying, keep_identity, issuer, unbinding if delete_binding_credential else set()
        )
        self._read_vaults(keyvaults, decisions)
        by_identity: dict[tuple[str, str], list[WorkloadRun]] = {}
        for run in runs:
            by_identity.setdefault(run.item.identity.key, []).append(run)
            self._plan_removal(
                run, staying, issuer, delete_service_account, kubernetes, decisions[run.item.identity.key], grants_only
            )
        for key, members in by_identity.items():
            if grants_only:
                continue
            if kubernetes:
                self._plan_binding_removal(members, decisions[key], key in unbinding, delete_binding_credential)
            self._plan_identity_removal(members, decisions[key], keyvaults)
        if not self.check_mode:
            self._run_all((key, lambda m=members: self._apply_removal(m)) for key, members in by_identity.items())
        return runs, [identity_report(decisions[key], members) for key, members in by_identity.items()]

    def _bindings_to_remove(
        self, groups: dict[tuple[str, str], list[Item]], staying: list[Item]
    ) -> set[tuple[str, str]]:
        """The identities whose binding to this cluster this run removes (or the cluster's deletion removed): no
        staying item binds them here."""
        staying_bound = {s.identity.key for s in staying if s.uses_binding}
        return {
            key for key, members in groups.items() if any(m.uses_binding for m in members) and key not in staying_bound
        }

    def _identity_decisions(
        self,
        groups: dict[tuple[str, str], list[Item]],
        staying: list[Item],
        keep_identity: bool,
        issuer: str | None,
        unbinding: set[tuple[str, str]] = frozenset(),  # type: ignore[assignment]
    ) -> dict[tuple[str, str], dict[str, t.Any]]:
        """Per identity: delete it, or keep it and why. An identity goes only when no staying workload uses it and
        it holds no federated credential this run does not remove (another cluster or application may trust it).
        The aks-identity-binding credential counts as removed for the identities in ``unbinding``."""
        decisions = {}
        for key, members in groups.items():
            ref = members[0].identity
            actual = self.snapshot.identities.get(key)
            users = [s.name for s in staying if s.identity.key == key]
            removed = {self._credential_to_remove(item, issuer, key) for item in members} - {None}
            if key in unbinding:
                removed.add(IDENTITY_BINDING_CREDENTIAL_NAME)
            others = [c for c in self.snapshot.credentials.get(key, []) if c["name"].lower() not in removed]
            if actual is None:
                reason = "it does not exist"
            elif keep_identity:
                reason = "kept: keep_identity is true"
            elif users:
                reason = f"kept: still used by workload {', '.join(users)}"
            elif others:
                reason = (
                    f"kept: it has {len(others)} other federated credential(s) this teardown does not remove "
                    f"({', '.join(sorted(c['name'] for c in others))})"
                )
            else:
                reason = ""
            decisions[key] = {
                "name": ref.name,
                "resource_group": ref.resource_group,
                "exists": actual is not None,
                "delete": actual is not None and not reason,
                "reason": reason or "no staying workload uses it and it holds no other federated credential",
                "used_by": users,
                "other_credentials": len(others),
                "identity": actual,
            }
        return decisions

    def _credential_to_remove(self, item: Item, issuer: str | None, key: tuple[str, str]) -> str | None:
        if item.uses_binding:
            return None
        credentials = self.snapshot.credentials.get(key, [])
        if item.credential_name:
            found = next((c for c in credentials if c["name"].lower() == item.credential_name.lower()), None)
        elif issuer:
            found = next((c for c in credentials if (c["issuer"], c["subject"]) == (issuer, item.subject)), None)
        else:
            found = None
        return found["name"].lower() if found else None

    def _plan_binding_removal(
        self, members: list[WorkloadRun], decision: dict[str, t.Any], unbind: bool, delete_credential: bool
    ) -> None:
        """Our RBAC loses the leaving ServiceAccounts; the binding goes when no staying item binds the identity
        here, and with ``delete_credential`` the aks-identity-binding credential after it. Recorded on each
        leaving item that used the binding, applied once after their own steps."""
        bound = [run for run in members if not run.failed and run.item.uses_binding]
        if not bound:
            return
        current = decision["identity"] or {}
        steps: list[tuple[str, str, Plan, dict[str, t.Any]]] = []
        try:
            if current.get("client_id"):
                access = self._plan_binding_access(bound, current["client_id"], "absent")
                steps += [(BINDING_ACCESS, target, plan, context) for target, plan, context in access]
            item = bound[0].item
            if not unbind:
                plan = Plan(NONE, None, None, reason="kept: a staying workload binds the identity on this cluster")
                steps.append((BINDING, f"identity binding on {cluster_label(self.cluster)}", plan, {}))
            else:
                found = identity_binding.find_for_identity(self.snapshot.bindings or [], current.get("id") or "")
                name = found["name"] if found else item.binding_name
                desired = (
                    identity_binding.DesiredIdentityBinding(
                        self.cluster[0], self.cluster[1], name, current.get("id") or "", state="absent"
                    )
                    if self.cluster
                    else None
                )
                if desired is not None and self.snapshot.bindings is not None:
                    plan = identity_binding.plan(self.snapshot.bindings, desired)
                    target = f"identity binding '{name}' on {cluster_label(self.cluster)}"
                    steps.append((BINDING, target, plan, {"desired": desired}))
                if delete_credential and decision["exists"] and not decision["delete"]:
                    # The identity stays (or it would take the credential with it): the credential goes alone.
                    credentials = self.snapshot.credentials.get(item.identity.key, [])
                    managed = next(
                        (c for c in credentials if c["name"].lower() == IDENTITY_BINDING_CREDENTIAL_NAME), None
                    )
                    if managed is not None:
                        gone = federated_credential.DesiredCredential(
                            resource_group=item.identity.resource_group,
                            identity_name=item.identity.name,
                            name=managed["name"],
                            issuer=managed["issuer"],
                            subject=managed["subject"],
                            state="absent",
                        )
                        plan = federated_credential.plan(credentials, gone)
                        target = f"federated credential '{managed['name']}' on {item.identity.label}"
                        steps.append((BINDING, target, plan, {"desired": gone, "kind": "credential"}))
        except WorkloadIdentityError as exc:
            for run in bound:
                run.fail(BINDING, exc)
            return
        for run in bound:
            for step, target, plan, context in steps:
                run.record(step, target, plan, **context)

    def _plan_removal(
        self,
        run: WorkloadRun,
        staying: list[Item],
        issuer: str | None,
        delete_service_account: bool,
        kubernetes: bool,
        decision: dict[str, t.Any],
        grants_only: bool = False,
    ) -> None:
        item = run.item
        principal_id = (decision["identity"] or {}).get("principal_id")
        run.identity = decision["identity"]
        # A grant that a staying workload of the same identity also lists stays.
        kept = {
            (role_assignment.normalize_scope(g.scope).lower(), g.role)
            for s in staying
            if s.identity.key == item.identity.key
            for g in s.grants
        }
        remove_keys = not delete_service_account
        steps: list[tuple[str, t.Callable[[], list[Planned]]]] = [
            (POD_TEMPLATES, lambda: self._plan_pod_templates(item, "absent") if kubernetes else []),
            (GRANTS, lambda: self._plan_grant_removal(item, principal_id, kept)),
            (CREDENTIAL, lambda: [] if item.uses_binding else self._plan_credential_removal(item, issuer, decision)),
            (CONFIGMAP, lambda: self._plan_configmap_removal(item, remove_keys) if kubernetes else []),
            (SERVICE_ACCOUNT, lambda: self._plan_service_account_removal(item, remove_keys) if kubernetes else []),
        ]
        _record_plans(run, steps[1:2] if grants_only else steps)

    def _plan_grant_removal(self, item: Item, principal_id: str | None, kept: set[tuple[str, str]]) -> list[Planned]:
        planned = []
        for target, plan, context in self._plan_grants(item, principal_id, "absent"):
            grant = context["grant"]
            if plan.changed and (role_assignment.normalize_scope(grant.scope).lower(), grant.role) in kept:
                plan = Plan(NONE, plan.before, plan.before, reason="a staying workload of the identity lists it")
            planned.append((target, plan, context))
        return planned

    def _plan_credential_removal(self, item: Item, issuer: str | None, decision: dict[str, t.Any]) -> list[Planned]:
        self._raise_read_error(f"credentials:{item.identity.key}")
        target = f"federated credential on {item.identity.label}"
        if not item.credential_name and not issuer:
            return [(target, Plan(NONE, None, None, reason="no credential_name, and no issuer known to find it"), {})]
        desired = desired_credential(item, issuer, "absent")
        plan = federated_credential.plan(self.snapshot.credentials.get(item.identity.key, []), desired)
        with_identity = plan.action == DELETE and decision["delete"]
        if with_identity:
            # Azure deletes an identity's federated credentials with it: one write instead of two.
            plan = Plan(DELETE, plan.before, None, plan.warnings, "deleted with its identity")
        return [(target, plan, {"desired": desired, "with_identity": with_identity})]

    def _plan_configmap_removal(self, item: Item, remove_keys: bool) -> list[Planned]:
        if item.configmap is None:
            return []
        self._raise_read_error(f"cm:{item.namespace}")
        actual = self.snapshot.configmaps.get(item.namespace, {}).get(item.configmap.name)
        desired = settings_configmap.DesiredConfigMap(
            namespace=item.namespace,
            name=item.configmap.name,
            state="absent",
            data=item.configmap.data,
            remove=settings_configmap.REMOVE_KEYS if remove_keys else settings_configmap.REMOVE_CONFIGMAP,
        )
        target = f"ConfigMap '{item.namespace}/{item.configmap.name}'"
        return [(target, settings_configmap.plan(actual, desired), {"desired": desired})]

    def _plan_service_account_removal(self, item: Item, remove_keys: bool) -> list[Planned]:
        self._raise_read_error(f"sa:{item.namespace}")
        actual = self.snapshot.service_accounts.get(item.namespace, {}).get(item.service_account)
        desired = service_account.DesiredServiceAccount(
            namespace=item.namespace,
            name=item.service_account,
            state="absent",
            labels=item.labels,
            annotations=item.annotations,
            remove=service_account.REMOVE_ANNOTATIONS if remove_keys else service_account.REMOVE_SERVICE_ACCOUNT,
        )
        return [(item.service_account_label, service_account.plan(actual, desired), {"desired": desired})]

    def _read_vaults(self, keyvaults: list[dict[str, t.Any]], decisions: dict) -> None:
        """The key vaults access is taken back from: one GET each (and one assignment list per RBAC vault), only
        when some identity loses its last workload."""
        if not keyvaults or not any(d["exists"] and not d["used_by"] for d in decisions.values()):
            return
        gateway = Vaults(self.azure, self.calls)
        jobs = [
            ((v["resource_group"], v["vault_name"]), lambda v=v: gateway.get(v["resource_group"], v["vault_name"]))
            for v in keyvaults
        ]
        rbac_scopes = []
        for key, vault in self._run_all(jobs).items():
            if isinstance(vault, WorkloadIdentityError):
                self.snapshot.errors[f"vault:{key}"] = vault
                continue
            self.snapshot.vaults[key] = vault
            if vault is not None and vault["enable_rbac_authorization"]:
                rbac_scopes.append(vault["id"])
        self.read_assignments(rbac_scopes)
        pairs = []
        for spec in keyvaults:
            vault = self.snapshot.vaults.get((spec["resource_group"], spec["vault_name"]))
            if vault is not None and vault["enable_rbac_authorization"]:
                pairs.append((spec.get("role") or keyvault_access.DEFAULT_ROLE, vault["id"]))
        self.resolve_roles(pairs)

    def _plan_identity_removal(self, members: list[WorkloadRun], decision: dict, keyvaults: list[dict]) -> None:
        """Key vault access (of an identity no staying workload uses: it belongs to the identity, not to one
        workload) and the identity itself, recorded on the identity's last workload and applied only once every
        workload of the identity is down."""
        run = next((r for r in reversed(members) if not r.failed), None)
        if run is None or not decision["exists"] or decision["used_by"]:
            return
        if any(r.failed for r in members):
            failed = ", ".join(r.item.name for r in members if r.failed)
            decision.update(delete=False, reason=f"kept: workload {failed} failed")
            _credentials_on_their_own(members)
            return
        principal_id = decision["identity"].get("principal_id")
        try:
            for spec in keyvaults:
                for target, plan, context in self._plan_keyvault_removal(spec, principal_id):
                    run.record(KEYVAULT, target, plan, **context)
        except WorkloadIdentityError as exc:
            run.fail(KEYVAULT, exc)
            decision.update(delete=False, reason=f"kept: its key vault access could not be planned ({exc})")
            _credentials_on_their_own(members)
            return
        if decision["delete"]:
            desired = identity.DesiredIdentity(decision["resource_group"], decision["name"], state="absent")
            run.record(IDENTITY, run.item.identity.label, identity.plan(decision["identity"], desired), desired=desired)

    def _plan_keyvault_removal(self, spec: dict[str, t.Any], principal_id: str) -> list[Planned]:
        key = (spec["resource_group"], spec["vault_name"])
        self._raise_read_error(f"vault:{key}")
        vault = self.snapshot.vaults.get(key)
        target = f"key vault '{spec['vault_name']}'"
        if vault is None:
            return [(target, Plan(NONE, None, None, reason="the key vault does not exist"), {})]
        if vault["enable_rbac_authorization"]:
            role_name = spec.get("role") or keyvault_access.DEFAULT_ROLE
            scope = role_assignment.normalize_scope(vault["id"])
            self._raise_read_error(f"role:{(role_name, vault['id'])}")
            self._raise_read_error(f"assignments:{scope.lower()}")
            role = self.snapshot.roles[(role_name, vault["id"])]
            desired = role_assignment.DesiredRoleAssignment(scope, role, principal_id, state="absent")
            plan = role_assignment.plan_role_assignment(self.snapshot.assignments.get(scope.lower(), []), desired)
            return [(f"{target} (role {role_name})", plan, {"desired": desired})]
        permissions = spec.get("secret_permissions") or keyvault_access.DEFAULT_SECRET_PERMISSIONS
        plan = keyvault_access.plan_access_policy(vault, principal_id, permissions, "absent")
        return [(f"{target} (access policy)", plan, {"vault": vault, "object_id": principal_id})]

    def _apply_removal(self, members: list[WorkloadRun]) -> None:
        """The workloads of one identity, in order; the identity's own steps (key vault access, the identity) only
        when every one of them is down, or Azure would keep role assignments of a deleted identity. Credentials
        planned to go with the identity go on their own when it stays after all."""
        for run in members:
            for done in list(run.steps):
                if run.failed:
                    break
                if done.step in IDENTITY_STEPS or done.context.get("with_identity"):
                    continue
                if done.changed:
                    self._try(run, done, self._apply_removal_step)
        self._apply_binding_removal(members)
        last = members[-1]
        own = [s for r in members for s in r.steps if s.step in (KEYVAULT, IDENTITY)]
        failed = ", ".join(r.item.name for r in members if r.failed)
        for done in own:
            if failed:
                done.plan = Plan(NONE, done.plan.before, done.plan.before, reason=f"kept: workload {failed} failed")
            elif done.changed:
                self._try(last, done, self._apply_removal_step)
        identity_step = next((s for s in own if s.step == IDENTITY), None)
        if identity_step is None or not identity_step.changed or any(r.failed for r in members):
            _credentials_on_their_own(members)
            for run in members:
                for done in run.steps:
                    if done.step == CREDENTIAL and done.changed and not run.failed and done.result is not None:
                        self._try(run, done, self._apply_removal_step)

    def _apply_binding_removal(self, members: list[WorkloadRun]) -> None:
        """Once for the identity, after its workloads' own steps: our RBAC, then the binding, then (when asked)
        the aks-identity-binding credential; kept whole when a workload of the identity failed."""
        bound = [run for run in members if any(s.step in (BINDING, BINDING_ACCESS) for s in run.steps)]
        if not bound:
            return
        failed = ", ".join(r.item.name for r in members if r.failed)
        first = bound[0]
        for index, done in enumerate([s for s in first.steps if s.step in (BINDING_ACCESS, BINDING)]):
            copies = [[s for s in run.steps if s.step in (BINDING_ACCESS, BINDING)][index] for run in bound]
            if failed:
                for step in copies:
                    step.plan = Plan(NONE, step.plan.before, step.plan.before, reason=f"kept: workload {failed} failed")
                continue
            if not done.changed:
                continue
            try:
                if done.step == BINDING_ACCESS:
                    result = self._apply_access(done.plan, done.context)
                elif done.context.get("kind") == "credential":
                    federated_credential.apply(self.azure, done.context["desired"], done.plan)
                    result = None
                else:
                    result = identity_binding.apply(self.azure, done.context["desired"], done.plan, calls=self.calls)
            except WorkloadIdentityError as exc:
                for run in bound:
                    run.fail(done.step, exc)
                return
            for step in copies:
                step.result = result

    def _try(self, run: WorkloadRun, done: StepResult, apply: t.Callable[[WorkloadRun, StepResult], None]) -> None:
        try:
            apply(run, done)
        except WorkloadIdentityError as exc:
            run.fail(done.step, exc)

    def _apply_removal_step(self, run: WorkloadRun, done: StepResult) -> None:
        item = run.item
        if done.step == POD_TEMPLATES:
            self._apply_pod_template(run, done)
        elif done.step == GRANTS or (done.step == KEYVAULT and "desired" in done.context):
            self._apply_grant(done)
        elif done.step == KEYVAULT:
            kind, secrets = keyvault_access.permission_change(done.plan)
            Vaults(self.azure, self.calls).update_access_policy(
                done.context["vault"], kind, done.context["object_id"], secrets
            )
        elif done.step == CREDENTIAL:
            federated_credential.apply(self.azure, done.context["desired"], done.plan)
            done.result = None
        elif done.step == CONFIGMAP:
            reconciler = settings_configmap.ConfigMapReconciler(self.kube.core_v1, calls=self.calls, dry_run=False)
            actual = self.snapshot.configmaps.get(item.namespace, {}).get(done.context["desired"].name)
            done.result = reconciler.apply(actual, done.context["desired"], done.plan).configmap
        elif done.step == SERVICE_ACCOUNT:
            reconciler = service_account.ServiceAccountReconciler(self.kube.core_v1, calls=self.calls, dry_run=False)
            actual = self.snapshot.service_accounts.get(item.namespace, {}).get(item.service_account)
            done.result = reconciler.apply(actual, done.context["desired"], done.plan).service_account
        elif done.step == IDENTITY:
            identity.apply(self.azure, done.context["desired"], done.plan)
            done.result = None


def cluster_label(cluster: tuple[str, str] | None) -> str:
    if cluster is None:
        return "cluster (not named)"
    return f"AKS cluster '{cluster[1]}' in resource group '{cluster[0]}'"


def _record_plans(run: WorkloadRun, steps: list[tuple[str, t.Callable[[], list[Planned]]]]) -> None:
    """Plan each step in order and record it; the first that cannot be planned fails the workload there."""
    for step, plan_it in steps:
        try:
            for target, plan, context in plan_it():
                run.record(step, target, plan, **context)
        except WorkloadIdentityError as exc:
            run.fail(step, exc)
            return


def _credentials_on_their_own(members: list[WorkloadRun]) -> None:
    """The identity stays after all: credentials planned to go with it must be deleted by themselves."""
    for run in members:
        for done in run.steps:
            if done.step == CREDENTIAL and done.context.get("with_identity"):
                done.context["with_identity"] = False
                done.plan = Plan(DELETE, done.plan.before, None, done.plan.warnings, "the credential exists")
                done.result = done.plan.before  # not deleted yet


# --- The cluster --------------------------------------------------------------------------------------------------
class Cluster(t.NamedTuple):
    issuer: str | None
    exists: bool | None  # None: not read
    note: str | None  # why there is no issuer yet, for check mode
    view: dict[str, t.Any] | None = None  # what the modules return as cluster


def read_cluster(azure: t.Any, params: t.Mapping[str, t.Any], *, always: bool = False, prefix: str = "") -> Cluster:
    """The issuer from ``<prefix>issuer_url``, or from one GET of the cluster ``<prefix>cluster_resource_group`` /
    ``<prefix>cluster_name`` (read ``always`` when named: a teardown needs to know whether it is gone)."""
    group, name = params[f"{prefix}cluster_resource_group"], params[f"{prefix}cluster_name"]
    issuer_url = params[f"{prefix}issuer_url"]
    if issuer_url and not (always and name):
        return Cluster(issuer_url, None, None)
    if not name:
        return Cluster(
            None,
            None,
            f"neither {prefix}issuer_url nor the cluster ({prefix}cluster_resource_group, {prefix}cluster_name) is set",
        )
    cluster = Clusters(azure).get(group, name)
    target = cluster_target(group, name)
    if cluster is None:
        return Cluster(issuer_url, False, f"the {target} does not exist", {"exists": False})
    keys = ("name", "resource_group", "issuer_url", "oidc_issuer_enabled", "workload_identity_enabled")
    view = {"exists": True, **{key: cluster[key] for key in keys}}
    if issuer_url:
        return Cluster(issuer_url, True, None, view)
    if not cluster["oidc_issuer_enabled"] or not cluster["issuer_url"]:
        return Cluster(None, True, f"the OIDC issuer of the {target} is not enabled", view)
    return Cluster(cluster["issuer_url"], True, None, view)


# --- Reports ----------------------------------------------------------------------------------------------------
def identity_report(decision: dict[str, t.Any], members: list[WorkloadRun]) -> dict[str, t.Any]:
    """What happened to one identity in a teardown: deleted (or would be, in check mode), or kept and why."""
    steps = [s for run in members for s in run.steps]
    identity_step = next((s for s in steps if s.step == IDENTITY), None)
    failed = [run.item.name for run in members if run.failed]
    deleted = identity_step is not None and identity_step.changed and not failed
    if deleted or not decision["exists"]:
        kept_reason = ""
    elif failed:
        kept_reason = f"kept: workload {', '.join(failed)} failed"
    else:
        kept_reason = decision["reason"]
    return {
        "name": decision["name"],
        "resource_group": decision["resource_group"],
        "exists": decision["exists"],
        "deleted": deleted,
        "kept_reason": kept_reason,
        "used_by": decision["used_by"],
        "other_credentials": decision["other_credentials"],
        "keyvault_access_removed": [
            s.target.split("'")[1] for s in steps if s.step == KEYVAULT and s.changed and not failed
        ],
    }


def teardown_view(run: WorkloadRun) -> dict[str, t.Any]:
    """What a teardown did to one workload, by kind of object."""
    credential = run.step(CREDENTIAL)
    service_account_step = run.step(SERVICE_ACCOUNT)
    configmap_step = run.step(CONFIGMAP)
    grants = [s for s in run.steps if s.step == GRANTS]
    binding = next((s for s in run.steps if _is_binding_step(s)), None)
    access = [s for s in run.steps if s.step == BINDING_ACCESS]
    return {
        "identity_binding_deleted": bool(binding and binding.changed),
        "binding_access_removed": any(s.changed for s in access),
        "federated_credential": (credential.plan.before or {}) if credential else {},
        "federated_credential_deleted": bool(credential and credential.changed),
        "service_account_removed": bool(service_account_step and service_account_step.changed),
        "configmap_removed": bool(configmap_step and configmap_step.changed),
        "grants_removed": [_grant_of(s) for s in grants if s.changed],
        "grants_kept": [_grant_of(s) for s in grants if s.plan.reason == "a staying workload of the identity lists it"],
        "pod_templates_changed": [
            {"kind": s.context["desired"].kind, "name": s.context["desired"].name}
            for s in run.steps
            if s.step == POD_TEMPLATES and s.changed
        ],
    }


def _grant_of(step: StepResult) -> dict[str, str]:
    grant = step.context["grant"]
    return {"role": grant.role, "scope": grant.scope}


def manifest_snippet(item: Item) -> str:
    """What to put into the pod template of the workload (label, ServiceAccount, proxy annotations)."""
    lines = ["metadata:", "  labels:", f'    {LABEL_USE}: "{LABEL_USE_VALUE}"']
    annotations = []
    if item.proxy_sidecar:
        annotations += [
            f'    {ANNOTATION_INJECT_PROXY_SIDECAR}: "true"',
            f'    {ANNOTATION_PROXY_SIDECAR_PORT}: "{item.proxy_sidecar_port}"',
        ]
    if item.uses_binding:
        annotations.append(f'    {ANNOTATION_USE_IDENTITY_BINDING}: "true"')
    if annotations:
        lines += ["  annotations:", *annotations]
    lines += ["spec:", f"  serviceAccountName: {item.service_account}"]
    return "\n".join(lines) + "\n"


def workload_result(run: WorkloadRun, issuer: str | None) -> dict[str, t.Any]:
    """One entry of ``workloads``: the keys of the workload role's ``workload_results``, and what each step did."""
    item = run.item
    current = run.identity or {}
    credential = run.step(CREDENTIAL)
    credential_view = (credential.result or credential.plan.after or credential.plan.before or {}) if credential else {}
    return {
        **item.view(),
        # None in check mode for an identity that would be created: Azure assigns them
        "identity_id": current.get("id"),
        "client_id": current.get("client_id"),
        "principal_id": current.get("principal_id"),
        "tenant_id": current.get("tenant_id"),
        "credential_name": credential_view.get("name") or item.credential_name or "",
        "federation": item.federation,
        **(_binding_view(run) if item.uses_binding else {}),
        "issuer": issuer or "",
        "grants": [{"role": g.role, "scope": g.scope} for g in item.grants],
        "configmap": item.configmap.name if item.configmap else "",
        "patched_workloads": [{"kind": p.kind, "name": p.name} for p in item.patch_workloads],
        "manifest_snippet": manifest_snippet(item),
        "changed": run.changed,
        "failed": run.failed,
        "failed_step": run.failed_step,
        "error": str(run.error) if run.error else None,
        "error_code": run.error.code if run.error else None,
        "actions": [step.view() for step in run.steps],
        "warnings": list(run.warnings),
    }


def _is_binding_step(step: StepResult) -> bool:
    """The binding's own step (the BINDING step may also carry the removal of AKS's credential)."""
    return step.step == BINDING and "desired" in step.context and step.context.get("kind") != "credential"


def _binding_view(run: WorkloadRun) -> dict[str, t.Any]:
    """The identity binding a workload uses: its name and the issuer AKS gave it ("" until it exists)."""
    step = next((s for s in run.steps if _is_binding_step(s)), None)
    binding = (step.result or step.plan.after or step.plan.before or {}) if step else {}
    return {
        "identity_binding_name": binding.get("name") or run.item.binding_name,
        "binding_issuer_url": binding.get("issuer_url") or "",
    }


def workload_diff(run: WorkloadRun) -> dict[str, t.Any] | None:
    """Ansible's diff of one workload: every step's object before and after, by step and target."""
    if not run.changed:
        return None
    before: dict[str, t.Any] = {}
    after: dict[str, t.Any] = {}
    for step in run.steps:
        if not step.changed:
            continue
        label = f"{step.step}: {step.target}"
        before[label] = copy.deepcopy(step.plan.before) or {}
        after[label] = copy.deepcopy(step.result if step.result is not None else step.plan.after) or {}
    return {
        "before_header": f"workload {run.item.name} (before)",
        "after_header": f"workload {run.item.name} (after)",
        "before": before,
        "after": after,
    }


def summary(runs: list[WorkloadRun]) -> dict[str, t.Any]:
    """Counts, and per step how many objects each action touched."""
    actions: dict[str, dict[str, int]] = {}
    for run in runs:
        for step in run.steps:
            counts = actions.setdefault(step.step, {})
            counts[step.plan.action] = counts.get(step.plan.action, 0) + 1
    return {
        "workloads": len(runs),
        "changed": sum(1 for run in runs if run.changed and not run.failed),
        "unchanged": sum(1 for run in runs if not run.changed and not run.failed),
        "failed": sum(1 for run in runs if run.failed),
        "actions": actions,
    }


def failure_message(runs: list[WorkloadRun], what: str) -> str | None:
    """The module's failure message, naming each failed workload, its step and the cause; None when none failed."""
    failed = [run for run in runs if run.failed]
    if not failed:
        return None
    details = "; ".join(f"{run.item.name} ({run.failed_step}): {run.error}" for run in failed)
    return f"{len(failed)} of {len(runs)} workloads could not be {what}: {details}"
