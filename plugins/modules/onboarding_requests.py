#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: onboarding_requests
short_description: Onboard the ServiceAccounts that ask for a workload identity, within the platform team's policy
version_added: 0.4.0
description:
  - Self-service onboarding. An application team asks for a workload identity by annotating its ServiceAccount;
    this module reads every ServiceAccount of the cluster, checks each request against O(policy), and converges the
    allowed ones through the same fleet engine as M(aks.workload_identity.workloads) - the user-assigned managed
    identity, the ServiceAccount's client ID annotation, the federated credential (or identity binding) and the role
    grants - then proves each new or changed chain as M(aks.workload_identity.workloads_verify) does.
  - "The request annotations: C(aks.workload-identity/request-identity) (required, the identity's name),
    C(aks.workload-identity/request-grants) (optional, C(Role name@scope alias) separated by commas, semicolons or
    new lines; the aliases are the keys of O(policy.scopes)) and C(aks.workload-identity/request-federation)
    (optional, V(federated_credential) or V(identity_binding)). Any other C(aks.workload-identity/request-) key
    refuses the request."
  - A request outside the policy (a namespace not listed, an identity no pattern allows, a grant or federation the
    namespace may not use, a malformed annotation) is refused as a whole - nothing of it is applied - and every
    reason is named. An earlier onboarding of the same ServiceAccount stays as it was.
  - The outcome is written where the requester sees it - the annotations C(aks.workload-identity/onboarding-status)
    (V(onboarded), V(refused), V(failed), V(offboarded)) and C(aks.workload-identity/onboarding-message) on the
    ServiceAccount, and a Kubernetes Event about it (C(kubectl describe serviceaccount)), reason C(Onboarded),
    C(OnboardingRefused), C(OnboardingFailed) or C(Offboarded). A repeated run with the same outcome writes neither
    again.
  - What onboarding applied is recorded in a registry, a ConfigMap in a namespace of the platform team's
    (O(registry_namespace)), before the first write of a request. A request withdrawn (its annotations removed) or
    a ServiceAccount deleted - even while nothing was watching - is then taken down as
    M(aks.workload_identity.teardown) does, in reverse order, keeping what other onboarded ServiceAccounts share
    (the identity, a grant listed by another ServiceAccount of the identity); the ServiceAccount itself is never
    deleted, only its workload identity annotations removed. A request that names another identity or federation
    takes the old chain down first; one that drops grants revokes them.
  - The run is level-triggered - the state of the cluster and the registry decide, not the event that started it -
    so lost or repeated events do no harm, and an unchanged cluster costs one list of ServiceAccounts, one read of
    the registry and the fleet engine's batched reads, with no write. The EDA rulebook
    C(aks.workload_identity.onboarding) runs it on every change (see the README's EDA section).
  - Check mode plans everything and writes nothing, not even the registry, an annotation or an Event.
author:
  - Contributors to the aks.workload_identity collection (!UNKNOWN)
extends_documentation_fragment:
  - aks.workload_identity.azure_auth
  - aks.workload_identity.k8s_auth
attributes:
  check_mode:
    support: full
    description:
      - Plans everything from the same reads and writes nothing - no registry entry, annotation, Event or dry run;
        no proof runs (a token request is a write). New or changed requests report the status V(pending).
  diff_mode:
    support: full
    description: One diff per ServiceAccount whose chain changes (each fleet step's object before and after).
  idempotent:
    support: full
    description: A second run with nothing changed in the cluster or the policy writes nothing.
options:
  policy:
    description: What the platform team allows. Every rule is checked before the first request.
    type: dict
    required: true
    suboptions:
      identity_resource_group:
        description: Resource group of the requested identities (it must exist).
        type: str
        required: true
      identity_location:
        description: Region of identities created on request; by default their resource group's.
        type: str
      create_identities:
        description: V(true) creates a requested identity that does not exist; V(false) refuses to (the request fails).
        type: bool
        default: true
      delete_identities:
        description:
          - V(true) deletes an identity when the last onboarded ServiceAccount that uses it goes, and it holds no other
            federated credential. V(false) (default) keeps it; its credential and grants still go.
        type: bool
        default: false
      scopes:
        description:
          - Scope aliases the requests name in C(role@alias) grants, each mapped to a resource ID (a subscription, a
            resource group or a resource, such as a key vault). Requesters never write a resource ID.
        type: dict
        default: {}
      namespaces:
        description:
          - The namespaces open to onboarding, by name; a request in any other namespace is refused.
          - "Each has C(identities) (required: names or fnmatch patterns such as C(id-orders-*) of the identities
            its ServiceAccounts may ask for), C(grants) (the C(Role name@alias) pairs they may ask for; the role as
            Azure names it or a role definition GUID; default none) and C(federations) (default
            C([federated_credential]); add V(identity_binding) to allow it)."
        type: dict
        required: true
  registry_namespace:
    description:
      - Namespace of the registry ConfigMap; created when absent (not in check mode). Only the platform team (and
        the onboarding automation) should be able to write there.
    type: str
    default: aks-wid-onboarding
  registry_name:
    description: Name of the registry ConfigMap.
    type: str
    default: onboarding-registry
  issuer_url:
    description: The cluster's OIDC issuer URL. By default read from the cluster (O(cluster_name)).
    type: str
  cluster_resource_group:
    description: Resource group of the AKS cluster.
    type: str
  cluster_name:
    description: Name of the AKS cluster; needed for V(identity_binding) requests and to read its issuer.
    type: str
  tenant_id:
    description: Tenant ID to annotate the ServiceAccounts with (C(azure.workload.identity/tenant-id)).
    type: str
  prove:
    description:
      - Prove each new or changed chain (a token of the ServiceAccount exchanged for an Entra token of the identity)
        before it is reported V(onboarded); a failed proof reports V(failed) and is retried on the next run.
    type: bool
    default: true
  propagation_timeout:
    description: Seconds a proof rides out Entra's propagation of a new credential, 0-3600.
    type: int
    default: 300
  retry_interval:
    description: Seconds between a proof's attempts, 1-60.
    type: int
    default: 5
  parallel:
    description: Requests in flight at once, across identities (writes on one identity are always one at a time), 1-32.
    type: int
    default: 8
notes:
  - The Kubernetes credential needs to list ServiceAccounts in all namespaces, patch them, create Events and
    TokenRequests, and manage ConfigMaps in O(registry_namespace); C(extensions/eda/rbac/onboarding.yml) has that
    ClusterRole.
seealso:
  - module: aks.workload_identity.workloads
  - module: aks.workload_identity.workloads_verify
  - name: Event-Driven Ansible rulebook for onboarding (extensions/eda/rulebooks/onboarding.yml)
    description: Runs this module (through the onboard playbook) whenever a request changes.
    link: https://ansible.readthedocs.io/projects/rulebook/en/stable/
"""

EXAMPLES = r"""
- name: Onboard what the application teams asked for
  aks.workload_identity.onboarding_requests:
    cluster_resource_group: rg-aks
    cluster_name: aks-prod
    policy:
      identity_resource_group: rg-app-identities
      scopes:
        orders-vault: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-orders/providers/Microsoft.KeyVault/vaults/kv-orders
      namespaces:
        orders:
          identities: [id-orders, id-orders-*]
          grants: ["Key Vault Secrets User@orders-vault"]
        payments:
          identities: [id-payments]
          federations: [federated_credential, identity_binding]

# What the application team writes (kubectl apply):
#   apiVersion: v1
#   kind: ServiceAccount
#   metadata:
#     name: orders-api
#     namespace: orders
#     annotations:
#       aks.workload-identity/request-identity: id-orders
#       aks.workload-identity/request-grants: Key Vault Secrets User@orders-vault

- name: See what a run would do, without writing anything
  aks.workload_identity.onboarding_requests:
    cluster_resource_group: rg-aks
    cluster_name: aks-prod
    policy: "{{ onboarding_policy }}"
  check_mode: true
  register: planned
"""

RETURN = r"""
requests:
  description: One entry per ServiceAccount that asks, and per recorded one whose request is gone.
  returned: always
  type: list
  elements: dict
  contains:
    namespace:
      description: Namespace of the ServiceAccount.
      type: str
    service_account:
      description: Name of the ServiceAccount.
      type: str
    decision:
      description: V(apply), V(refuse) or V(offboard).
      type: str
    status:
      description:
        - The outcome written on the ServiceAccount, V(onboarded), V(refused), V(failed) or V(offboarded); in check
          mode the outcome planned (V(pending) for a chain not yet proven).
      type: str
    message:
      description: The message written with it (what happened, every refusal reason, what to do).
      type: str
    identity:
      description: The identity requested (or recorded, for an offboarding).
      type: str
    client_id:
      description: Client ID of the identity, when known.
      type: str
    changed:
      description: Whether Azure or the cluster changed for it (the fleet steps, not the status).
      type: bool
    proven:
      description: V(true) when the chain was proven in this run, V(null) when no proof ran.
      type: bool
    actions:
      description: What each fleet step did, as M(aks.workload_identity.workloads) reports it.
      type: list
      elements: dict
    event:
      description: Name of the Event written (or that would be), V(null) when the outcome was already reported.
      type: str
    line:
      description: "One line a person reads: C(<namespace>/<service account>: <status> - <message>)."
      type: str
    reasons:
      description: Why the request was refused (every reason), or why it was offboarded.
      type: list
      elements: str
summary:
  description: Counts by status, and of requests applied, refused and offboarded.
  returned: always
  type: dict
  sample: {"requests": 3, "statuses": {"onboarded": 2, "refused": 1}, "writes": 0}
registry:
  description: Namespace and name of the registry ConfigMap, and the entries it holds after the run.
  returned: always
  type: dict
issuer_url:
  description: The issuer the federated credentials trust.
  returned: always
  type: str
problems:
  description: Registry entries that are not records of onboarding (left alone).
  returned: always
  type: list
  elements: str
api_calls:
  description: Requests made, by API and operation.
  returned: always
  type: dict
"""

import contextlib
import datetime
import json
import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils import fleet, onboarding
from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import AZURE_AUTH_ARGSPEC, AzureModule
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.fleet_verify import Verification, chain_proof_params
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.kubernetes import (
    ConfigMaps,
    Events,
    Namespaces,
    ServiceAccounts,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.inputs import new_module
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8S_AUTH_ARGSPEC, K8sModule, Raced
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    validate_cluster_name,
    validate_issuer,
    validate_namespace,
    validate_number,
    validate_resource_group_name,
    validate_uuid,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_items import (
    parse_items,
    validate_fleet,
)

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    # Checked by onboarding.parse_policy, which names every broken rule (Ansible's suboptions would stop at one).
    "policy": {"type": "dict", "required": True},
    "registry_namespace": {"type": "str", "default": onboarding.DEFAULT_REGISTRY_NAMESPACE},
    "registry_name": {"type": "str", "default": onboarding.DEFAULT_REGISTRY_NAME},
    "issuer_url": {"type": "str"},
    "cluster_resource_group": {"type": "str"},
    "cluster_name": {"type": "str"},
    "tenant_id": {"type": "str"},
    "prove": {"type": "bool", "default": True},
    "propagation_timeout": {"type": "int", "default": 300},
    "retry_interval": {"type": "int", "default": 5},
    "parallel": {"type": "int", "default": fleet.DEFAULT_PARALLEL},
}
MANAGED_BY = "app.kubernetes.io/managed-by"
COLLECTION = "aks.workload_identity"
MODULE_KWARGS: dict[str, t.Any] = {
    "required_together": [("cluster_resource_group", "cluster_name")],
    "required_one_of": [("issuer_url", "cluster_name")],
}


def check_options(params: dict[str, t.Any]) -> tuple[onboarding.Policy | None, list[str]]:
    policy, errors = onboarding.parse_policy(params["policy"])
    errors += validate_namespace(params["registry_namespace"], "registry_namespace")
    if not params["registry_name"] or len(params["registry_name"]) > 253:
        errors.append("registry_name: must be 1-253 characters")
    if params["cluster_name"] is not None:
        errors += validate_resource_group_name(params["cluster_resource_group"], "cluster_resource_group")
        errors += validate_cluster_name(params["cluster_name"], "cluster_name")
    if params["issuer_url"] is not None:
        errors += validate_issuer(params["issuer_url"], "issuer_url")
    if params["tenant_id"]:
        errors += validate_uuid(params["tenant_id"], "tenant_id")
    errors += validate_number(params["propagation_timeout"], "propagation_timeout", 0, 3600, "seconds")
    errors += validate_number(params["retry_interval"], "retry_interval", 1, 60, "seconds")
    errors += validate_number(params["parallel"], "parallel", 1, 32)
    if policy is not None and not params["cluster_name"]:
        errors += [
            f"policy.namespaces.{name}.federations: identity_binding needs cluster_resource_group and cluster_name"
            for name, allowed in policy.namespaces.items()
            if "identity_binding" in allowed.federations
        ]
    return policy, errors


class Run:
    def __init__(self, module: t.Any, azure: AzureModule, kube: K8sModule, policy: onboarding.Policy) -> None:
        self.module, self.azure, self.kube, self.policy, self.params = module, azure, kube, policy, module.params
        self.check_mode = module.check_mode
        self.writes = 0
        self.registry_exists = False
        self.registry_namespace_exists = True
        self.registry_uid: str | None = None

    def _gateway(self, kind: type) -> t.Any:
        return kind(self.kube.core_v1, calls=self.azure.calls, dry_run=False)

    def _engine(self) -> fleet.Fleet:
        named = (self.params["cluster_resource_group"], self.params["cluster_name"])
        engine = fleet.Fleet(
            self.azure,
            self.kube,
            check_mode=self.check_mode,
            parallel=self.params["parallel"],
            cluster=named if self.params["cluster_name"] else None,
        )
        engine.prepare()
        return engine

    # -- reads
    def read(self) -> tuple[list[dict[str, t.Any]], dict[str, dict[str, t.Any]], list[str]]:
        accounts = self._gateway(ServiceAccounts).list_all_json()
        registry = self._gateway(ConfigMaps).read(self.params["registry_namespace"], self.params["registry_name"])
        self.registry_exists = registry is not None
        if registry is None:  # its parent, read now: the first write of the run creates both when absent
            self.registry_namespace_exists = (
                self._gateway(Namespaces).read(self.params["registry_namespace"]) is not None
            )
        records, problems = onboarding.parse_registry((registry or {}).get("data"))
        return accounts, records, problems

    def items(self, raws: list[dict[str, t.Any]], state: str, issuer: str | None) -> list[t.Any]:
        items, errors = parse_items(raws)
        if not errors:
            errors = validate_fleet(
                items, state=state, issuer=issuer, tenant_id=None, cluster_named=bool(self.params["cluster_name"])
            )
        if errors:
            raise WorkloadIdentityError(f"Invalid onboarding items: {'; '.join(errors)}", code="InvalidParameter")
        return items

    # -- the registry: intents before the first write of a request, outcomes after
    def write_registry(self, entries: dict[str, dict[str, t.Any] | None]) -> None:
        """A merge patch of the registry's data (``None`` removes an entry); creates the namespace and ConfigMap."""
        if not entries or self.check_mode:
            return
        namespace, name = self.params["registry_namespace"], self.params["registry_name"]
        data = {key: None if record is None else json.dumps(record, sort_keys=True) for key, record in entries.items()}
        configmaps = self._gateway(ConfigMaps)
        if not self.registry_exists:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace, "labels": {MANAGED_BY: COLLECTION}},
                "data": {k: v for k, v in data.items() if v is not None},
            }
            if not self.registry_namespace_exists:  # as read before the first write
                with contextlib.suppress(Raced):  # created by a concurrent run meanwhile: what we wanted
                    self._gateway(Namespaces).create(namespace, {MANAGED_BY: COLLECTION})
                self.registry_namespace_exists = True
            try:
                configmaps.create(namespace, body)
                self.registry_exists = True
                self.writes += 1
                return
            except Raced:
                self.registry_exists = True
        configmaps.patch(namespace, name, {"data": data})
        self.writes += 1

    # -- the fleet
    def take_down(self, decisions: list[onboarding.Decision], issuer: str | None) -> dict[str, t.Any]:
        """Offboarded requests, and the recorded chains a changed request replaces; then the grants it dropped.
        Returns the runs by decision key ('<key>' the offboarding or replacement, '<key>#grants' the revocation)."""
        leaving = [d.item for d in decisions if d.action == onboarding.OFFBOARD]
        leaving += [d.replaced for d in decisions if d.action == onboarding.APPLY and d.replaced is not None]
        revoking = [{**d.item, "grants": d.revoked} for d in decisions if d.action == onboarding.APPLY and d.revoked]
        if not (leaving or revoking):
            return {}
        # What stays: the applied requests (a replaced chain's new identity among them) and what refusals keep.
        staying_raw = onboarding.staying_items(decisions)
        staying = self.items(staying_raw, "absent", issuer) if staying_raw else []
        runs: dict[str, t.Any] = {}
        if leaving:
            done, _identities = self._engine().take_down(
                self.items(leaving, "absent", issuer),
                staying=staying,
                issuer=issuer,
                delete_service_account=False,
                keep_identity=not self.policy.delete_identities,
                keyvaults=[],
            )
            runs.update({run.item.name: run for run in done})
        if revoking:
            done, _identities = self._engine().take_down(
                self.items(revoking, "absent", issuer),
                staying=staying,
                issuer=issuer,
                delete_service_account=False,
                keep_identity=True,
                keyvaults=[],
                grants_only=True,
            )
            runs.update({f"{run.item.name}#grants": run for run in done})
        return runs

    def converge(self, decisions: list[onboarding.Decision], issuer: str | None) -> dict[str, t.Any]:
        applying = [d.item for d in decisions if d.action == onboarding.APPLY and not d.held]
        if not applying:
            return {}
        items = self.items(applying, "present", issuer)
        runs, _identities = self._engine().converge(items, issuer=issuer, tenant_id=self.params["tenant_id"] or None)
        return {run.item.name: run for run in runs}

    def prove(self, runs: list[t.Any], issuer: str | None) -> dict[str, dict[str, t.Any]]:
        if self.check_mode or not self.params["prove"] or not runs:
            return {}
        params = chain_proof_params(self.params, issuer)
        verified = Verification(params, self.azure, self.kube, check_mode=False).run([run.item for run in runs])
        return {proof["name"]: proof for proof in verified["workloads"]}

    # -- what the requester sees
    def report(
        self, decision: onboarding.Decision, account: dict[str, t.Any] | None, outcome: str, text: str
    ) -> str | None:
        """The status annotations and an Event on the ServiceAccount, when they say something new. Returns the
        Event's name (None when the outcome was already reported there)."""
        if account is None:
            return None  # deleted: nobody to tell
        annotations = (account.get("metadata") or {}).get("annotations") or {}
        if annotations.get(onboarding.STATUS_ANNOTATION) == outcome and (
            annotations.get(onboarding.MESSAGE_ANNOTATION) == text
        ):
            return None
        uid = (account.get("metadata") or {}).get("uid") or ""
        name = onboarding.event_name(decision.service_account, uid, outcome, text)
        if self.check_mode:
            return name
        self._gateway(ServiceAccounts).patch(
            decision.namespace,
            decision.service_account,
            {"metadata": {"annotations": {onboarding.STATUS_ANNOTATION: outcome, onboarding.MESSAGE_ANNOTATION: text}}},
        )
        self.writes += 1
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = onboarding.event_body(decision.namespace, account, outcome, text, now, name)
        # The name is the outcome's: an Event that exists already (the same outcome told before) answers 409.
        with contextlib.suppress(Raced):
            self._gateway(Events).create(decision.namespace, body)
            self.writes += 1
        return name


def registry_changes(
    before: dict[str, dict[str, t.Any]], after: dict[str, dict[str, t.Any] | None]
) -> dict[str, dict[str, t.Any] | None]:
    """The entries to write: records that differ from the registry as read, and removals of entries it holds."""
    changes: dict[str, dict[str, t.Any] | None] = {}
    for key, record in after.items():
        if record != before.get(key) and (record is not None or key in before):
            changes[key] = record
    return changes


def failure_of(run: t.Any) -> str | None:
    if run is None or not run.failed:
        return None
    view = fleet.workload_result(run, None)
    return f"{view.get('failed_step')}: {view.get('error') or view.get('msg') or 'failed'}"


def main() -> None:
    module = new_module(
        AZURE_AUTH_ARGSPEC | K8S_AUTH_ARGSPEC | ARGUMENT_SPEC, supports_check_mode=True, **MODULE_KWARGS
    )
    azure, kube = AzureModule(module=module), K8sModule(module=module)
    params = module.params
    secrets = [params.get("secret"), params.get("api_key")]
    views: list[dict[str, t.Any]] = []
    diffs: list[dict[str, t.Any]] = []
    try:
        policy, errors = check_options(params)
        if errors or policy is None:
            raise WorkloadIdentityError(f"Invalid input: {'; '.join(errors)}", code="InvalidParameter")
        run = Run(module, azure, kube, policy)
        accounts, records, problems = run.read()
        by_key = {onboarding.registry_key(a["metadata"]["namespace"], a["metadata"]["name"]): a for a in accounts}
        decisions = onboarding.plan(accounts, records, policy)
        changing = [d for d in decisions if d.action != onboarding.REFUSE]
        cluster = fleet.read_cluster(azure, params) if changing else None
        issuer = cluster.issuer if cluster else params["issuer_url"]
        if changing and issuer is None and not run.check_mode:
            raise WorkloadIdentityError(
                f"issuer_url: no issuer to federate with: {cluster.note if cluster else ''}",
                code="OIDCIssuerNotEnabled",
            )
        down = run.take_down(decisions, issuer)
        # A changed request whose old chain or dropped grants could not be taken down keeps its old record, so the
        # next run tries again; a new chain is not started beside an old one half taken down.
        for decision in decisions:
            held = [failure_of(down.get(k)) for k in (decision.key, f"{decision.key}#grants")]
            decision.held = next((problem for problem in held if problem), None) if decision.record else None
        intents = {
            d.key: onboarding.record_for(d.item, d.request, onboarding.PENDING)
            for d in decisions
            if d.action == onboarding.APPLY and (d.record is None or d.prove) and not d.held
        }
        run.write_registry(intents)
        up = run.converge(decisions, issuer)
        to_prove = [up[d.key] for d in decisions if d.key in up and d.prove and not up[d.key].failed]
        proofs = run.prove(to_prove, issuer)
        outcomes: dict[str, dict[str, t.Any] | None] = {}
        for decision in decisions:
            view, record = settle(run, decision, up, down, proofs, by_key.get(decision.key))
            views.append(view)
            if record is not False:
                outcomes[decision.key] = record
            diffs += [d for d in (fleet.workload_diff(r) for r in view.pop("runs")) if d is not None]
        run.write_registry(registry_changes(records, outcomes))
    except WorkloadIdentityError as exc:
        module.fail_json(**exc.to_fail_kwargs(redact=secrets), requests=views, api_calls=azure.calls.as_dict())
    statuses: dict[str, int] = {}
    for view in views:
        statuses[view["status"]] = statuses.get(view["status"], 0) + 1
    remaining = {k: v for k, v in records.items() if k not in outcomes} | {k: v for k, v in outcomes.items() if v}
    output: dict[str, t.Any] = {
        "changed": any(v["changed"] for v in views) or run.writes > 0,
        "requests": views,
        "summary": {"requests": len(views), "statuses": statuses, "writes": run.writes},
        "registry": {
            "namespace": params["registry_namespace"],
            "name": params["registry_name"],
            "entries": sorted(remaining),
        },
        "issuer_url": issuer or "",
        "problems": problems,
        "api_calls": azure.calls.as_dict(),
    }
    if module._diff:
        output["diff"] = diffs
    failed = [v for v in views if v["status"] == onboarding.FAILED]
    if failed:
        details = "; ".join(f"{v['namespace']}/{v['service_account']}: {v['message']}" for v in failed)
        module.fail_json(msg=f"{len(failed)} of {len(views)} onboarding requests failed: {details}", **output)
    module.exit_json(**output)


def settle(
    run: Run,
    decision: onboarding.Decision,
    up: dict[str, t.Any],
    down: dict[str, t.Any],
    proofs: dict[str, dict[str, t.Any]],
    account: dict[str, t.Any] | None,
) -> tuple[dict[str, t.Any], dict[str, t.Any] | bool | None]:
    """The outcome of one decision: its view, and its registry record (None: remove it; False: leave it as is)."""
    key = decision.key
    runs = [r for r in (down.get(key), down.get(f"{key}#grants"), up.get(key)) if r is not None]
    record: dict[str, t.Any] | bool | None = False
    client_id = None
    proven = None
    if decision.action == onboarding.REFUSE:
        outcome, text = onboarding.REFUSED, onboarding.message(decision, onboarding.REFUSED)
    elif decision.action == onboarding.OFFBOARD:
        problem = failure_of(down.get(key))
        if problem:
            outcome, text = (
                onboarding.FAILED,
                onboarding.message(decision, onboarding.FAILED, f"offboarding: {problem}"),
            )
        else:
            outcome, text = onboarding.OFFBOARDED, onboarding.message(decision, onboarding.OFFBOARDED)
            record = None
    else:
        problem = next((failure_of(r) for r in runs if failure_of(r)), None)
        converged = up.get(key)
        client_id = ((converged.identity or {}) if converged else {}).get("client_id")
        proof = proofs.get(key)
        if proof is not None:
            proven = bool(proof["passed"])
            if not proven and not problem:
                problem = f"proof: {'; '.join(proof.get('problems') or [proof.get('cause') or 'failed'])}"
        if problem:
            outcome = onboarding.FAILED
            text = onboarding.message(decision, onboarding.FAILED, problem)
            # Held: the old record stays, naming what is still to be taken down.
            record = (
                False if decision.held else onboarding.record_for(decision.item, decision.request, onboarding.FAILED)
            )
        elif run.check_mode and decision.prove:
            outcome, text = onboarding.PENDING, "Onboarding planned (check mode)."
        else:
            outcome = onboarding.ONBOARDED
            text = onboarding.message(decision, onboarding.ONBOARDED, f" (client ID {client_id})" if client_id else "")
            record = onboarding.record_for(decision.item, decision.request, onboarding.ONBOARDED)
    event = None if outcome == onboarding.PENDING else run.report(decision, account, outcome, text)
    identity = (
        decision.request.identity if decision.request else (decision.record or {}).get("identity", {}).get("name")
    )
    actions = [action for r in runs for action in fleet.workload_result(r, None).get("actions", [])]
    view = {
        "namespace": decision.namespace,
        "service_account": decision.service_account,
        "decision": decision.action,
        "status": outcome,
        "message": text,
        "reasons": decision.reasons,
        "identity": identity,
        "client_id": client_id,
        "changed": any(r.changed for r in runs),
        "proven": proven,
        "actions": actions,
        "event": event,
        "line": f"{decision.namespace}/{decision.service_account}: {outcome} - {text}",
        "runs": runs,
    }
    return view, record


if __name__ == "__main__":
    main()
