#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pod_identity_migration
short_description: Migrate workloads from aad-pod-identity to Microsoft Entra Workload ID
version_added: 0.3.0
description:
  - Finds aad-pod-identity's C(AzureIdentity) and C(AzureIdentityBinding) objects (C(aadpodidentity.k8s.io/v1)) and
    the Deployments, StatefulSets, DaemonSets and CronJobs whose pod templates select a binding with the label
    C(aadpodidbinding), and plans for each workload its workload identity equivalent, as Microsoft's migration guide
    describes it - the same user-assigned managed identity (from the AzureIdentity's C(resourceID); it exists, so it
    is never created), a ServiceAccount annotated with its client ID, the federated credential that trusts the
    ServiceAccount's tokens from the cluster's issuer, and the pod template labelled
    C(azure.workload.identity/use=true) and running as that ServiceAccount.
  - "The ServiceAccount is the workload's own when it runs as one other than C(default); else a new one named after
    the binding, in the workload's namespace (the workloads of one binding and namespace share it: they all had the
    identity already, and one credential serves them). C(default) is never annotated."
  - Applications written for aad-pod-identity call the instance metadata endpoint (IMDS), which workload identity
    does not serve; their pod templates get the migration sidecar (C(azure.workload.identity/inject-proxy-sidecar))
    unless O(sdk_supports_workload_identity) says the application's Azure Identity library supports workload
    identity.
  - The plan is a list of items in the shape of the M(aks.workload_identity.workload) role's C(workload_items) (one
    per ServiceAccount, its workloads under C(patch_workloads)), applied by the same fleet engine as
    M(aks.workload_identity.workloads) - one process, the same rules, check mode and diff.
  - With O(state=migrated) the items are converged, the chains proven (O(prove)) as
    M(aks.workload_identity.workloads_verify) proves them, and on request (O(remove_pod_identity)) the
    AzureIdentityBinding objects are deleted whose every selected workload was migrated and proven in this run, then
    the AzureIdentity objects whose every binding was.
  - "Unsupported cases are named and left alone, never failing the run - an AzureIdentity of a service principal
    (C(type) 1 or 2: no equivalent without a new identity), a binding whose AzureIdentity does not exist, a
    C(resourceID) that is not a user-assigned identity of this subscription, a binding selecting nothing, a workload
    selected by two bindings, a ServiceAccount two identities would need, a labelled pod with no owner workload this
    module patches (a bare pod, a Job's). Their bindings stay."
  - "The C(aadpodidbinding) label stays on the pod templates: once the binding is gone it selects nothing, while
    taking it off is a second rollout best made in the application's own manifests, after aad-pod-identity (NMI) is
    uninstalled."
  - A binding and an AzureIdentity match across namespaces (aad-pod-identity's default), except for an AzureIdentity
    annotated C(aadpodidentity.k8s.io/Behavior=namespaced). With O(namespaces), only objects in those namespaces are
    read, so a binding elsewhere is not seen.
requirements:
  - azure-identity >= 1.19.0
  - azure-mgmt-msi >= 7.0.0
  - azure-mgmt-authorization >= 4.0.0
  - azure-mgmt-resource >= 23.0.0
  - azure-mgmt-containerservice >= 34.0.0 (to read the cluster's issuer)
  - kubernetes >= 29.0.0
extends_documentation_fragment:
  - aks.workload_identity.azure_auth
  - aks.workload_identity.k8s_auth
attributes:
  check_mode:
    support: full
    description:
      - O(state=planned) never writes. With O(state=migrated), check mode plans the fleet and the removals from the
        same reads and writes nothing, not even a dry run; no proof runs (a token request is a write).
  diff_mode:
    support: full
    description: One diff per ServiceAccount that changes (each step's object before and after), one per object deleted.
  idempotent:
    support: full
    description: A second run reports no change; after a removal the workloads' labels select nothing and are reported so.
options:
  state:
    description:
      - V(planned) reads and returns the plan and the items, and writes nothing, in check mode or not.
      - V(migrated) applies the plan through the fleet engine, then proves and removes as asked.
    type: str
    choices: [planned, migrated]
    default: planned
  namespaces:
    description: Namespaces to read aad-pod-identity's objects, workloads and pods in; empty reads all namespaces.
    type: list
    elements: str
    default: []
  issuer_url:
    description:
      - The cluster's OIDC issuer URL exactly as Azure returns it; read from the cluster (O(cluster_resource_group),
        O(cluster_name)) when not set.
    type: str
  cluster_resource_group:
    description: Resource group of the AKS cluster, read for its issuer when O(issuer_url) is not set.
    type: str
  cluster_name:
    description: Name of the AKS cluster; see O(cluster_resource_group).
    type: str
  tenant_id:
    description: Tenant ID to annotate the ServiceAccounts with (C(azure.workload.identity/tenant-id)); unset leaves it off.
    type: str
  sdk_supports_workload_identity:
    description:
      - V(true) when the applications already use an Azure Identity library version that supports workload identity
        (C(DefaultAzureCredential) or C(WorkloadIdentityCredential)); their pod templates then get no migration
        sidecar. V(false) gives every migrated pod template the sidecar that answers IMDS calls.
    type: bool
    default: false
  proxy_sidecar_port:
    description: Port of the migration sidecar (C(azure.workload.identity/proxy-sidecar-port)); unset uses 8000.
    type: int
  prove:
    description:
      - With O(state=migrated), prove each migrated chain after the writes (a token of the ServiceAccount exchanged
        at Microsoft Entra ID for the identity's token, riding out propagation), as
        M(aks.workload_identity.workloads_verify) does. A workload whose proof fails is reported as failed.
    type: bool
    default: true
  remove_pod_identity:
    description:
      - With O(state=migrated), delete each AzureIdentityBinding whose every selected workload was migrated and
        proven in this run and that nothing unsupported uses, then each AzureIdentity whose every binding was
        deleted. Needs O(prove=true).
    type: bool
    default: false
  propagation_timeout:
    description: Seconds a proof waits for Microsoft Entra ID to see a new federated credential.
    type: int
    default: 300
  retry_interval:
    description: Seconds between a proof's attempts while it waits.
    type: int
    default: 5
  parallel:
    description: How many requests at most are in flight at once (1-32).
    type: int
    default: 8
seealso:
  - module: aks.workload_identity.workloads
  - module: aks.workload_identity.workloads_verify
  - module: aks.workload_identity.wid_info
  - name: Migrate from pod managed-identity to workload identity
    description: Microsoft's guide, the steps this module follows.
    link: https://learn.microsoft.com/azure/aks/workload-identity-migrate-from-pod-identity
  - name: AzureIdentity and AzureIdentityBinding
    description: aad-pod-identity's objects, their types and selectors.
    link: https://azure.github.io/aad-pod-identity/docs/concepts/azureidentitybinding/
author:
  - Contributors to the aks.workload_identity collection (!UNKNOWN)
"""

EXAMPLES = r"""
---
- name: See what the migration would do (reads only)
  aks.workload_identity.pod_identity_migration:
    cluster_resource_group: rg-aks
    cluster_name: aks-prod
    namespaces: [orders]
  register: migration_plan

- name: Migrate, prove every chain, and delete aad-pod-identity's objects that are no longer needed
  aks.workload_identity.pod_identity_migration:
    state: migrated
    cluster_resource_group: rg-aks
    cluster_name: aks-prod
    remove_pod_identity: true

- name: Migrate applications that use a current Azure Identity library (no migration sidecar), checking first
  aks.workload_identity.pod_identity_migration:
    state: migrated
    issuer_url: "{{ cluster_issuer_url }}"
    sdk_supports_workload_identity: true
  check_mode: true
  diff: true
"""

RETURN = r"""
workloads:
  description: One entry per workload labelled C(aadpodidbinding), in namespace, kind and name order.
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: V(Deployment), V(StatefulSet), V(DaemonSet) or V(CronJob).
      type: str
    namespace:
      description: Namespace of the workload.
      type: str
    name:
      description: Name of the workload.
      type: str
    selector:
      description: The value of its C(aadpodidbinding) label.
      type: str
    bindings:
      description: The AzureIdentityBinding objects (C(namespace/name)) that select it.
      type: list
      elements: str
    service_account_before:
      description: The ServiceAccount it runs as now.
      type: str
    service_account:
      description: The ServiceAccount it runs as after the migration (planned workloads only).
      type: str
    service_account_new:
      description: Whether that ServiceAccount is a new one, named after the binding.
      type: bool
    identity:
      description: The managed identity (C(name), C(resource_group)) and the AzureIdentity's C(client_id).
      type: dict
    proxy_sidecar:
      description: Whether the pod template gets the migration sidecar.
      type: bool
    item:
      description: The name of its fleet item in RV(items) (C(namespace/service account)).
      type: str
    status:
      description:
        - V(planned), V(migrated) (converged in this run), V(proven) (converged and proven), V(failed),
          V(unsupported), or V(label_only) (no binding selects it).
      type: str
    reason:
      description: Why it is unsupported, failed or label only.
      type: str
    changed:
      description: Whether its item changed (or would, in check mode).
      type: bool
    actions:
      description: What each step of its item did (the fleet's C(actions)).
      type: list
      elements: dict
    next_step:
      description: What to do next.
      type: str
    line:
      description: The entry in one line (found, plan or reason, next step), as the role prints it.
      type: str
items:
  description: The fleet items of the plan, in the M(aks.workload_identity.workload) role's C(workload_items) shape.
  returned: always
  type: list
  elements: dict
  sample:
    - name: orders/orders-binding
      namespace: orders
      service_account: orders-binding
      identity: {name: id-orders, resource_group: rg-apps, create: false}
      patch_workloads: [{kind: Deployment, name: orders-api}]
      proxy_sidecar: true
bindings:
  description:
    - Per AzureIdentityBinding, its C(selector), C(azure_identity), the C(workloads) it selects, C(status)
      (V(planned) or V(unsupported)), C(reason), whether it is C(removable) and whether it was C(removed).
  returned: always
  type: list
  elements: dict
azure_identities:
  description: Per AzureIdentity, its C(type), C(client_id), C(resource_id), C(bindings), C(removable) and C(removed).
  returned: always
  type: list
  elements: dict
unsupported:
  description: Every case left alone, as C(object) and C(reason).
  returned: always
  type: list
  elements: dict
  sample:
    - object: AzureIdentityBinding legacy/sp-binding
      reason: "AzureIdentity legacy/sp is a service principal (type 1): workload identity has no equivalent ..."
summary:
  description: How many workloads are in each status, and how many objects were (or would be) removed.
  returned: always
  type: dict
  sample: {"workloads": 2, "statuses": {"proven": 2}, "items": 1, "unsupported": 0, "removed": 2}
issuer_url:
  description: The issuer the credentials trust ("" when not known yet in check mode).
  returned: always
  type: str
api_calls:
  description: Requests made to Azure Resource Manager and the Kubernetes API, by operation.
  returned: always
  type: dict
"""

import contextlib
import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils import fleet, migration
from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import AZURE_AUTH_ARGSPEC, AzureModule
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.fleet_verify import Verification, chain_proof_params
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.kubernetes import (
    LabelledObjects,
    PodIdentityObjects,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.inputs import new_module
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8S_AUTH_ARGSPEC, K8sModule, Raced
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    validate_cluster_name,
    validate_issuer,
    validate_namespace,
    validate_number,
    validate_resource_group_name,
    validate_unique,
    validate_uuid,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_items import (
    parse_items,
    validate_fleet,
    validate_item,
)

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    "state": {"type": "str", "choices": ["planned", "migrated"], "default": "planned"},
    "namespaces": {"type": "list", "elements": "str", "default": []},
    "issuer_url": {"type": "str"},
    "cluster_resource_group": {"type": "str"},
    "cluster_name": {"type": "str"},
    "tenant_id": {"type": "str"},
    "sdk_supports_workload_identity": {"type": "bool", "default": False},
    "proxy_sidecar_port": {"type": "int"},
    "prove": {"type": "bool", "default": True},
    "remove_pod_identity": {"type": "bool", "default": False},
    "propagation_timeout": {"type": "int", "default": 300},
    "retry_interval": {"type": "int", "default": 5},
    "parallel": {"type": "int", "default": fleet.DEFAULT_PARALLEL},
}
MODULE_KWARGS: dict[str, t.Any] = {
    "required_together": [("cluster_resource_group", "cluster_name")],
    "required_one_of": [("issuer_url", "cluster_name")],
}


def check_options(params: dict[str, t.Any]) -> list[str]:
    errors = validate_number(params["parallel"], "parallel", 1, 32)
    for index, namespace in enumerate(params["namespaces"]):
        errors += validate_namespace(namespace, f"namespaces[{index}]")
    errors += validate_unique(params["namespaces"], "namespaces")
    if params["cluster_name"] is not None:
        errors += validate_resource_group_name(params["cluster_resource_group"], "cluster_resource_group")
        errors += validate_cluster_name(params["cluster_name"], "cluster_name")
    if params["issuer_url"] is not None:
        errors += validate_issuer(params["issuer_url"], "issuer_url")
    if params["tenant_id"]:
        errors += validate_uuid(params["tenant_id"], "tenant_id")
    if params["proxy_sidecar_port"] is not None:
        errors += validate_number(params["proxy_sidecar_port"], "proxy_sidecar_port", 1, 65535)
    errors += validate_number(params["propagation_timeout"], "propagation_timeout", 0, 3600, "seconds")
    errors += validate_number(params["retry_interval"], "retry_interval", 1, 60, "seconds")
    if params["remove_pod_identity"] and not params["prove"]:
        errors.append("remove_pod_identity: needs prove: true (only proven workloads let their binding go)")
    return errors


class Run:
    def __init__(self, module: t.Any, azure: AzureModule, kube: K8sModule) -> None:
        self.module, self.azure, self.kube, self.params = module, azure, kube, module.params
        self.check_mode = module.check_mode or self.params["state"] == "planned"
        self.deleted: list[dict[str, t.Any]] = []

    def read(self) -> dict[str, t.Any]:
        calls = self.azure.calls
        objects = PodIdentityObjects(self.kube._api("CustomObjectsApi"), calls=calls, dry_run=False)
        clients = {name: getattr(self.kube, name) for name in ("core_v1", "apps_v1", "batch_v1")}
        return migration.read_found(
            objects, LabelledObjects(clients, calls=calls, dry_run=False), self.params["namespaces"]
        )

    def plan(self, found: dict[str, t.Any]) -> migration.Plan:
        return migration.plan(
            identities=found["identities"],
            bindings=found["bindings"],
            workloads=found["workloads"],
            pods=found["pods"],
            subscription_id=self.azure.subscription_id,
            sdk_supports_workload_identity=self.params["sdk_supports_workload_identity"],
            proxy_sidecar_port=self.params["proxy_sidecar_port"],
        )

    def items(self, result: migration.Plan, issuer: str | None) -> list[t.Any]:
        """The plan's items parsed and checked by the workload role's rules; an item that breaks one is unsupported."""
        items, errors = parse_items(result.items) if result.items else ([], [])
        if errors:
            raise WorkloadIdentityError(f"Invalid plan: {'; '.join(errors)}", code="InvalidParameter")
        good = []
        for item in items:
            problems = validate_item(item, state="present", issuer=issuer)
            if problems:
                for view in result.workloads:
                    if view.get("item") == item.name:
                        migration._unsupported(view, "; ".join(problems))
                        result.unsupported.append({"object": view["label"], "reason": view["reason"]})
            else:
                good.append(item)
        errors = validate_fleet(good, state="present", issuer=issuer, tenant_id=self.params["tenant_id"] or None)
        if errors:
            raise WorkloadIdentityError(f"Invalid plan: {'; '.join(errors)}", code="InvalidParameter")
        return good

    def converge(self, result: migration.Plan) -> tuple[list[t.Any], str | None]:
        cluster_named = (self.params["cluster_resource_group"], self.params["cluster_name"])
        engine = fleet.Fleet(
            self.azure,
            self.kube,
            check_mode=self.check_mode,
            parallel=self.params["parallel"],
            cluster=cluster_named if self.params["cluster_name"] else None,
        )
        engine.prepare(workloads=True)
        cluster = fleet.read_cluster(self.azure, self.params)
        if cluster.issuer is None and not self.check_mode:
            raise WorkloadIdentityError(
                f"issuer_url: no issuer to federate with: {cluster.note}", code="OIDCIssuerNotEnabled"
            )
        items = self.items(result, cluster.issuer)
        if not items:
            return [], cluster.issuer
        runs, _identities = engine.converge(items, issuer=cluster.issuer, tenant_id=self.params["tenant_id"] or None)
        return runs, cluster.issuer

    def prove(self, runs: list[t.Any], issuer: str | None) -> dict[str, bool]:
        live = [run.item for run in runs if not run.failed]
        if self.check_mode or not self.params["prove"] or not live:
            return {}
        params = chain_proof_params(self.params, issuer)
        verified = Verification(params, self.azure, self.kube, check_mode=False).run(live)
        for run, proof in zip((r for r in runs if not r.failed), verified["workloads"], strict=True):
            if not proof["passed"]:
                run.fail("prove", WorkloadIdentityError("; ".join(proof["problems"]), code="ProofFailed"))
        return {proof["name"]: proof["passed"] for proof in verified["workloads"]}

    def remove(self, result: migration.Plan) -> None:
        """Bindings first, then AzureIdentity objects; gone already counts as removed. Check mode removes nothing."""
        if not self.params["remove_pod_identity"] or self.params["state"] != "migrated":
            return
        gateway = PodIdentityObjects(self.kube._api("CustomObjectsApi"), calls=self.azure.calls, dry_run=False)
        for entry in migration.removal_order(result):
            kind = entry["object"].split(" ", 1)[0]
            if not self.check_mode:
                # Deleted by someone else since our read: what we wanted.
                with contextlib.suppress(Raced):
                    gateway.delete(kind, entry["namespace"], entry["name"], entry["uid"])
            entry["removed"] = not self.check_mode
            self.deleted.append(entry)


def outcome_views(runs: list[t.Any], issuer: str | None) -> dict[str, dict[str, t.Any]]:
    return {run.item.name: fleet.workload_result(run, issuer) for run in runs}


def report(result: migration.Plan, outcomes: dict[str, dict[str, t.Any]], deleted: list[dict]) -> list[dict]:
    views = []
    for view in result.workloads:
        outcome = outcomes.get(view.get("item") or "", {})
        views.append(
            {
                **{k: v for k, v in view.items() if k != "label"},
                "changed": bool(outcome.get("changed")),
                "actions": outcome.get("actions", []),
                "line": line(view),
            }
        )
    return views


def line(view: dict[str, t.Any]) -> str:
    """One line a person reads: what was found, the plan or why not, and the next step."""
    found = f"{view['label']} (aadpodidbinding={view['selector']}, as {view['service_account_before']})"
    if "item" in view and view["status"] != migration.UNSUPPORTED:
        identity = view["identity"]
        plan = (
            f"ServiceAccount {view['service_account']}{' (new)' if view['service_account_new'] else ''}, identity "
            f"{identity['name']} in {identity['resource_group']}{', migration sidecar' if view['proxy_sidecar'] else ''}"
        )
    else:
        plan = view["reason"]
    return f"{found}: {view['status']} - {plan}. Next: {view['next_step']}"


def summary(result: migration.Plan, deleted: list[dict[str, t.Any]]) -> dict[str, t.Any]:
    statuses: dict[str, int] = {}
    for view in result.workloads:
        statuses[view["status"]] = statuses.get(view["status"], 0) + 1
    return {
        "workloads": len(result.workloads),
        "statuses": statuses,
        "items": len(result.items),
        "unsupported": len(result.unsupported),
        "removed": len(deleted),
    }


def removal_diff(deleted: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
    return [
        {"before_header": entry["object"], "after_header": f"{entry['object']} (deleted)", "before": entry, "after": {}}
        for entry in deleted
    ]


def main() -> None:
    module = new_module(
        AZURE_AUTH_ARGSPEC | K8S_AUTH_ARGSPEC | ARGUMENT_SPEC, supports_check_mode=True, **MODULE_KWARGS
    )
    azure, kube = AzureModule(module=module), K8sModule(module=module)
    params = module.params
    secrets = [params.get("secret"), params.get("api_key")]
    run = Run(module, azure, kube)
    try:
        errors = check_options(params)
        if errors:
            raise WorkloadIdentityError(f"Invalid input: {'; '.join(errors)}", code="InvalidParameter")
        found = run.read()
        result = run.plan(found)
        runs, issuer = run.converge(result) if result.items else ([], params["issuer_url"])
        proven = run.prove(runs, issuer)
        outcomes = outcome_views(runs, issuer)
        migration.settle(result, outcomes, proven, check_mode=run.check_mode)
        run.remove(result)
    except WorkloadIdentityError as exc:
        module.fail_json(**exc.to_fail_kwargs(redact=secrets), api_calls=azure.calls.as_dict())
    migrated = params["state"] == "migrated"
    output: dict[str, t.Any] = {
        "changed": migrated and (any(r.changed for r in runs) or bool(run.deleted)),
        "workloads": report(result, outcomes, run.deleted),
        "items": result.items,
        "bindings": [{k: v for k, v in b.items() if k not in ("uid", "label")} for b in result.bindings],
        "azure_identities": [
            {k: v for k, v in i.items() if k not in ("uid", "label")} for i in result.azure_identities
        ],
        "unsupported": result.unsupported,
        "summary": summary(result, run.deleted),
        "issuer_url": issuer or "",
        "api_calls": azure.calls.as_dict(),
    }
    if not found["crds"]:
        module.warn("aad-pod-identity's CRDs are not installed (or not in every namespace read): nothing to migrate")
    if module._diff and migrated:
        output["diff"] = [d for d in map(fleet.workload_diff, runs) if d is not None] + removal_diff(run.deleted)
    failed = [v for v in result.workloads if v["status"] == migration.FAILED]
    if failed:
        details = "; ".join(f"{v['label']} ({v.get('failed_step')}): {v['reason']}" for v in failed)
        module.fail_json(
            msg=f"{len(failed)} of {len(result.workloads)} workloads could not be migrated: {details}", **output
        )
    module.exit_json(**output)


if __name__ == "__main__":
    main()
