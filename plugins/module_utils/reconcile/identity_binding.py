# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reconciler of an AKS identity binding: one user-assigned managed identity mapped to one cluster
(``Microsoft.ContainerService/managedClusters/identityBindings``, azure-behaviour §10).

One list of the cluster's bindings serves every decision: a run that changes nothing is that one request. A create
adds one GET of the identity (it must exist: found missing by reading, not by a refused PUT; it also gives the IDs a
check-mode run predicts), the PUT and its operation's polls; a delete adds the DELETE and its polls. A list that
answers 404 means the cluster is missing; one GET of its resource group then says which option to fix.

``plan`` is pure: a binding's identity can only be set when it is created, and a cluster holds one binding per
identity, so both clashes are refused here, before any write, naming the option to change.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways import ApiCalls
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.azure import (
    DEFAULT_IDENTITY_BINDING_WAIT,
    Identities,
    IdentityBindings,
    ResourceGroups,
    cluster_target,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import (
    CREATE,
    DELETE,
    NONE,
    Plan,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    IDENTITY_BINDING_CREDENTIAL_NAME,
    validate_cluster_name,
    validate_identity_binding_name,
    validate_resource_group_name,
)

CLUSTER_PROVIDER = "Microsoft.ContainerService/managedClusters"
IDENTITY_PROVIDER = "Microsoft.ManagedIdentity/userAssignedIdentities"
# aks/stable/2026-04-01/managedClusters.json, IdentityBindingManagedIdentityProfile.resourceId (azure-rest-api-specs
# specification/containerservice/resource-manager/Microsoft.ContainerService/aks/): resource group and identity
# name of letters, digits and '-' only, narrower than ARM's own naming rules. Matched ignoring case, as the identity
# provider itself returns 'resourcegroups' (azure-behaviour §2).
IDENTITY_ID_PATTERN = re.compile(
    r"^/subscriptions/(?P<subscription>[a-zA-Z0-9-]+)/resourceGroups/(?P<resource_group>[a-zA-Z0-9-]+)"
    r"/providers/Microsoft\.ManagedIdentity/userAssignedIdentities/(?P<name>[a-zA-Z0-9-]+)$",
    re.IGNORECASE,
)
_SPEC_NAME = re.compile(r"^[a-zA-Z0-9-]+$")


@dataclass(frozen=True)
class DesiredIdentityBinding:
    """What the user asked for. ``identity_id`` is the identity's resource ID (required with ``present``; with
    ``absent`` it only guards against deleting another identity's binding)."""

    resource_group: str
    cluster_name: str
    name: str
    identity_id: str | None
    state: str = "present"

    @property
    def target(self) -> str:
        return f"identity binding '{self.name}' on {cluster_target(self.resource_group, self.cluster_name)}"

    @property
    def cluster(self) -> str:
        return cluster_target(self.resource_group, self.cluster_name)


# --- Identities and input rules ------------------------------------------------------------------------------------
def user_assigned_identity_id(subscription_id: str, resource_group: str, name: str) -> str:
    """The ID a binding's ``managedIdentity.resourceId`` takes, in the spec's spelling (``resourceGroups``)."""
    return f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/{IDENTITY_PROVIDER}/{name}"


def parse_identity_id(value: t.Any) -> tuple[str, str, str] | None:
    """(subscription, resource group, name) of a user-assigned identity's ID in the spec's pattern, or None."""
    match = IDENTITY_ID_PATTERN.match(value) if isinstance(value, str) else None
    return (match["subscription"], match["resource_group"], match["name"]) if match else None


def canonical_identity_id(value: str) -> str:
    """An identity ID as the spec spells it, whatever case the user wrote the fixed segments in."""
    parsed = parse_identity_id(value)
    return user_assigned_identity_id(*parsed) if parsed else value


def validate_identity_id(value: t.Any, field: str = "identity_id") -> list[str]:
    if parse_identity_id(value) is None:
        return [
            f"{field}: must be a user-assigned managed identity's resource ID, /subscriptions/<GUID>/resourceGroups/"
            f"<group>/providers/{IDENTITY_PROVIDER}/<name>, with a group and a name of letters, digits and '-' only "
            "(the identity binding API's rule)"
        ]
    return []


def spec_name_errors(value: t.Any, field: str) -> list[str]:
    """The identity binding API's narrower rule for the identity's resource group and name (see IDENTITY_ID_PATTERN):
    an identity whose names break it can be created, but not bound."""
    if isinstance(value, str) and value and not _SPEC_NAME.match(value):
        return [
            f"{field}: identity bindings accept only an identity whose resource group and name are letters, digits "
            f"and '-' (the API's managedIdentity.resourceId pattern), got {value!r}; use a federated credential "
            "for this identity"
        ]
    return []


def validate(desired: DesiredIdentityBinding) -> list[str]:
    """Every "option: rule" problem of a desired binding, before any request."""
    errors = [
        *validate_resource_group_name(desired.resource_group),
        *validate_cluster_name(desired.cluster_name, "cluster_name"),
        *validate_identity_binding_name(desired.name, "name"),
    ]
    if desired.identity_id is not None:
        errors += validate_identity_id(desired.identity_id)
    elif desired.state == "present":
        errors.append("identity_id: is required to create a binding")
    return errors


# --- Lookups (pure) ------------------------------------------------------------------------------------------------
def same_identity(a: str | None, b: str | None) -> bool:
    """ARM resource IDs compare without regard to case (the identity provider answers 'resourcegroups' for the
    'resourceGroups' one sends, azure-behaviour §2)."""
    return bool(a) and bool(b) and t.cast(str, a).lower() == t.cast(str, b).lower()


def find_for_identity(bindings: list[dict[str, t.Any]], identity_id: str | None) -> dict[str, t.Any] | None:
    """The binding that maps ``identity_id`` among one cluster's bindings (there is at most one), or None."""
    return next((b for b in bindings if same_identity(b.get("identity_id"), identity_id)), None)


def _by_name(bindings: list[dict[str, t.Any]], name: str) -> dict[str, t.Any] | None:
    return next((b for b in bindings if (b.get("name") or "").lower() == name.lower()), None)


# --- plan (pure) ---------------------------------------------------------------------------------------------------
def cluster_id(subscription_id: str, resource_group: str, cluster_name: str) -> str:
    """A cluster's ID as AKS returns it (lower-case ``resourcegroups``, azure-behaviour §2)."""
    return (
        f"/subscriptions/{subscription_id}/resourcegroups/{resource_group}/providers/{CLUSTER_PROVIDER}/{cluster_name}"
    )


def plan(
    bindings: list[dict[str, t.Any]],
    desired: DesiredIdentityBinding,
    *,
    identity: dict[str, t.Any] | None = None,
    cluster: str | None = None,
) -> Plan:
    """Decide from the cluster's normalised bindings. ``identity`` (the identity as read) and ``cluster`` (the
    cluster's ID) only fill in the IDs of a binding that would be created. Raises WorkloadIdentityError for a request
    Azure would refuse: a name taken by another identity's binding, or an identity bound under another name."""
    named = _by_name(bindings, desired.name)
    if desired.state == "absent":
        return _plan_absent(bindings, named, desired)
    if named is not None and same_identity(named.get("identity_id"), desired.identity_id):
        return Plan(NONE, named, dict(named), _state_warnings(named, desired), "the binding maps the identity")
    if named is not None:
        raise WorkloadIdentityError(
            f"name: {desired.target} already maps managed identity '{named.get('identity_id')}', not "
            f"'{desired.identity_id}'; a binding's identity can only be set when it is created. Choose another name, "
            "or delete the binding first (state: absent)",
            code="IdentityBindingNameTaken",
            target=desired.target,
        )
    other = find_for_identity(bindings, desired.identity_id)
    if other is not None:
        raise WorkloadIdentityError(
            f"name: managed identity '{desired.identity_id}' is already bound to {desired.cluster} by identity binding "
            f"'{other['name']}'; a cluster holds one binding per identity. Set name: {other['name']} to manage that "
            "binding",
            code="IdentityAlreadyBound",
            target=desired.target,
        )
    identity = identity or {}
    after = {
        "id": f"{cluster}/identityBindings/{desired.name}" if cluster else None,
        "name": desired.name,
        "resource_group": desired.resource_group,
        "cluster_name": desired.cluster_name,
        "identity_id": desired.identity_id,
        "client_id": identity.get("client_id"),
        "principal_id": identity.get("principal_id"),
        "tenant_id": identity.get("tenant_id"),
        "issuer_url": None,  # AKS assigns it when the binding is created
        "provisioning_state": None,
        "etag": None,
    }
    return Plan(CREATE, None, after, reason="no binding has the name")


def _plan_absent(
    bindings: list[dict[str, t.Any]], named: dict[str, t.Any] | None, desired: DesiredIdentityBinding
) -> Plan:
    if named is None:
        warnings = []
        other = find_for_identity(bindings, desired.identity_id)
        if other is not None:
            warnings.append(
                f"Managed identity '{desired.identity_id}' is bound to {desired.cluster} by identity binding "
                f"'{other['name']}', not '{desired.name}'; it was not deleted (set name: {other['name']} to delete it)"
            )
        return Plan(NONE, None, None, warnings, f"no binding is named '{desired.name}'")
    if desired.identity_id is not None and not same_identity(named.get("identity_id"), desired.identity_id):
        raise WorkloadIdentityError(
            f"name: {desired.target} maps managed identity '{named.get('identity_id')}', not "
            f"'{desired.identity_id}'; it was not deleted. Give only name to delete it whatever its identity",
            code="IdentityBindingNameTaken",
            target=desired.target,
        )
    if named.get("provisioning_state") == "Deleting":
        return Plan(NONE, named, None, reason="the binding is already being deleted")
    return Plan(DELETE, named, None, reason="the binding exists")


def _state_warnings(binding: dict[str, t.Any], desired: DesiredIdentityBinding) -> list[str]:
    state = binding.get("provisioning_state")
    if state in ("Failed", "Canceled"):
        return [
            f"The {desired.target} is in provisioning state {state!r}; workloads may not be able to use it. Delete it "
            "(state: absent) and create it again"
        ]
    return []


# --- Missing parents -----------------------------------------------------------------------------------------------
def missing_cluster_error(desired: DesiredIdentityBinding, group_exists: bool) -> WorkloadIdentityError:
    """The bindings' list answered 404: name the option to fix."""
    if not group_exists:
        return WorkloadIdentityError(
            f"resource_group: resource group '{desired.resource_group}' does not exist",
            code="ResourceGroupNotFound",
            status=404,
            target=desired.cluster,
        )
    return WorkloadIdentityError(
        f"cluster_name: {desired.cluster} does not exist; create it first (aks.workload_identity.aks_cluster)",
        code="ResourceNotFound",
        status=404,
        target=desired.cluster,
    )


def missing_identity_message(
    resource_group: str, name: str, group_exists: bool, identity_option: str, group_option: str
) -> str:
    if not group_exists:
        return f"{group_option}: resource group '{resource_group}' does not exist"
    return (
        f"{identity_option}: managed identity '{name}' in resource group '{resource_group}' does not exist; create it "
        "first (aks.workload_identity.managed_identity)"
    )


def read_bindings(
    azure: t.Any, desired: DesiredIdentityBinding, calls: ApiCalls | None = None
) -> list[dict[str, t.Any]] | None:
    """The cluster's bindings (one list). When the cluster is missing: None for ``absent`` (nothing to delete), else
    the error naming the option, after one GET of the resource group."""
    bindings = IdentityBindings(azure, calls).list(desired.resource_group, desired.cluster_name)
    if bindings is not None or desired.state == "absent":
        return bindings
    group_exists = ResourceGroups(azure, calls).get(desired.resource_group) is not None
    raise missing_cluster_error(desired, group_exists)


def read_identity(
    azure: t.Any,
    desired: DesiredIdentityBinding,
    calls: ApiCalls | None = None,
    *,
    identity_option: str = "identity_id",
    group_option: str = "identity_id",
) -> tuple[dict[str, t.Any] | None, str | None]:
    """(the identity, None) or (None, why it is missing): one GET, plus one GET of its resource group when that is
    not the cluster's (whose list already showed it exists)."""
    _subscription, group, name = t.cast("tuple[str, str, str]", parse_identity_id(desired.identity_id))
    identity = Identities(azure, calls).get(group, name)
    if identity is not None:
        return identity, None
    group_exists = (
        group.lower() == desired.resource_group.lower() or ResourceGroups(azure, calls).get(group) is not None
    )
    return None, missing_identity_message(group, name, group_exists, identity_option, group_option)


# --- apply (through the gateway) -----------------------------------------------------------------------------------
def apply(
    azure: t.Any,
    desired: DesiredIdentityBinding,
    decided: Plan,
    calls: ApiCalls | None = None,
    *,
    wait: bool = True,
    timeout: float = DEFAULT_IDENTITY_BINDING_WAIT,
) -> dict[str, t.Any] | None:
    """Carry out a plan; the binding as Azure returns it afterwards (None once deleted)."""
    gateway = IdentityBindings(azure, calls)
    if decided.action == CREATE:
        return gateway.create(
            desired.resource_group,
            desired.cluster_name,
            desired.name,
            t.cast(str, desired.identity_id),
            wait=wait,
            timeout=timeout,
        )
    if decided.action == DELETE:
        name = (decided.before or {}).get("name") or desired.name
        gateway.delete(desired.resource_group, desired.cluster_name, name, wait=wait, timeout=timeout)
        return None
    return decided.after


# --- the whole round, for the modules ------------------------------------------------------------------------------
@dataclass
class Outcome:
    """A reconciler run: the plan and the binding afterwards (as planned in check mode; None when absent)."""

    plan: Plan
    binding: dict[str, t.Any] | None

    def diff(self) -> dict[str, dict[str, t.Any]]:
        return {"before": dict(self.plan.before or {}), "after": dict(self.binding or {})}


def reconcile(
    azure: t.Any,
    desired: DesiredIdentityBinding,
    *,
    wait: bool = True,
    timeout: float = DEFAULT_IDENTITY_BINDING_WAIT,
    calls: ApiCalls | None = None,
    identity_option: str = "identity_id",
    group_option: str = "identity_id",
) -> Outcome:
    """Validate, list once, plan, read the identity when a binding is to be created, apply unless in check mode.
    ``identity_option``/``group_option`` are the options that named the identity and its group, for messages."""
    errors = validate(desired)
    if errors:
        raise WorkloadIdentityError(f"Invalid input: {'; '.join(errors)}", code="InvalidParameter")
    bindings = read_bindings(azure, desired, calls)
    if bindings is None:
        return Outcome(Plan(NONE, None, None, reason="the cluster does not exist"), None)
    decided = plan(bindings, desired)
    if decided.action == CREATE:
        identity, missing = read_identity(
            azure, desired, calls, identity_option=identity_option, group_option=group_option
        )
        if missing is not None and not azure.check_mode:
            raise WorkloadIdentityError(missing, code="ResourceNotFound", status=404, target=desired.target)
        decided = plan(
            bindings,
            desired,
            identity=identity,
            cluster=cluster_id(azure.subscription_id, desired.resource_group, desired.cluster_name),
        )
        if missing is not None:
            # Check mode only (a real run fails above): an earlier task of the play may create the identity.
            decided.warnings.append(f"{missing}; the binding can only be created once the identity exists")
    if azure.check_mode or not decided.changed:
        return Outcome(decided, decided.after)
    return Outcome(decided, apply(azure, desired, decided, calls, wait=wait, timeout=timeout))


def module_result(outcome: Outcome) -> dict[str, t.Any]:
    """The modules' return values: the binding, its issuer and the identity's IDs at the top, and the diff."""
    binding = outcome.binding or {}
    return {
        "changed": outcome.plan.changed,
        "action": outcome.plan.action,
        "identity_binding": binding,
        "issuer_url": binding.get("issuer_url"),
        "client_id": binding.get("client_id"),
        "principal_id": binding.get("principal_id"),
        "tenant_id": binding.get("tenant_id"),
        "credential_name": IDENTITY_BINDING_CREDENTIAL_NAME,
        "diff": outcome.diff(),
    }
