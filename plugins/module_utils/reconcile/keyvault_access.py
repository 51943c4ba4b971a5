# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reconciler for an identity's secret access to one Key Vault, on whichever permission model the vault uses.

The vault decides (``properties.enableRbacAuthorization``): an RBAC vault gets a role assignment scoped to the
vault, through the role assignment reconciler (no second copy of its rules); an access-policy vault gets an
access policy entry for the identity's object (principal) ID, changed only through the vault's
``accessPolicies/add`` and ``accessPolicies/remove`` operations, which merge per identity, so other principals'
entries are never rewritten (a vault PUT with the whole list would race with every other writer).

Requests of a run that changes nothing: one GET of the vault (its access policies come with it), plus, on an RBAC
vault, the role assignment reconciler's one list.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.azure import ResourceGroups, Vaults
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import (
    CREATE,
    DELETE,
    NONE,
    UPDATE,
    Plan,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.role_assignment import (
    DEFAULT_PRINCIPAL_TYPE,
    DesiredRoleAssignment,
    reconcile_role_assignment,
    resolve_role,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    SECRET_PERMISSIONS,
    is_uuid,
    sort_permissions,
    validate_keyvault_name,
    validate_resource_group_name,
)

MODEL_RBAC = "rbac"
MODEL_ACCESS_POLICY = "access_policy"
# What a workload reading its secrets needs, as the workload identity quickstart grants it
# (az keyvault set-policy --secret-permissions get); "list" is left out on purpose: least privilege.
DEFAULT_SECRET_PERMISSIONS = ("get",)
# azure-behaviour §9: "Key Vault Secrets User" reads secret contents (getSecret) and metadata (readMetadata); a
# built-in role this collection knows by GUID (workload_identity.BUILTIN_ROLES), so naming it costs no lookup.
DEFAULT_ROLE = "Key Vault Secrets User"

_VAULT_ID = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<resource_group>[^/]+)"
    r"/providers/Microsoft\.KeyVault/vaults/(?P<name>[^/]+)/?$",
    re.IGNORECASE,
)


# --- Pure rules -----------------------------------------------------------------------------------------------------
def parse_vault_id(value: str) -> tuple[str, str, str] | None:
    """(subscription, resource group, name) of a Key Vault resource ID, or None."""
    match = _VAULT_ID.match(value or "")
    return (match.group("subscription"), match.group("resource_group"), match.group("name")) if match else None


def validate_vault_id(value: t.Any, field: str = "vault_id") -> list[str]:
    parsed = parse_vault_id(value) if isinstance(value, str) else None
    if parsed is None:
        return [
            f"{field}: must be a Key Vault resource ID like "
            "/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.KeyVault/vaults/<name>"
        ]
    if not is_uuid(parsed[0]):
        return [f"{field}: the subscription in the ID must be a GUID, got {parsed[0]!r}"]
    return [*validate_resource_group_name(parsed[1], field), *validate_keyvault_name(parsed[2], field)]


def validate_secret_permissions(value: t.Any, field: str = "secret_permissions") -> list[str]:
    if not isinstance(value, (list, tuple)) or not value:
        return [f"{field}: must list at least one of {', '.join(SECRET_PERMISSIONS)}"]
    unknown = [p for p in value if not isinstance(p, str) or p.lower() not in SECRET_PERMISSIONS]
    if unknown:
        return [f"{field}: unknown permissions {unknown!r}; allowed: {', '.join(SECRET_PERMISSIONS)}"]
    return []


def identity_policy(vault: dict[str, t.Any], object_id: str | None) -> dict[str, t.Any] | None:
    """The vault's entry for this object ID alone (an entry with an application ID is a compound identity:
    another principal), in the vault's tenant; None when there is none."""
    if object_id is None:
        return None
    for entry in vault["access_policies"]:
        if (
            str(entry.get("object_id") or "").lower() == object_id.lower()
            and not entry.get("application_id")
            and str(entry.get("tenant_id") or "").lower() == str(vault.get("tenant_id") or "").lower()
        ):
            return entry
    return None


def _policy_view(vault: dict[str, t.Any], object_id: str | None, secrets: list[str]) -> dict[str, t.Any]:
    return {"tenant_id": vault.get("tenant_id"), "object_id": object_id, "secret_permissions": secrets}


def plan_access_policy(
    vault: dict[str, t.Any], object_id: str | None, secret_permissions: t.Iterable[str], state: str
) -> Plan:
    """Present: the entry holds at least ``secret_permissions`` (others' and extra ones are kept). Absent: exactly
    those are taken away (other permissions stay; an entry left with none at all goes, as Key Vault does)."""
    wanted = sort_permissions(secret_permissions)
    entry = identity_policy(vault, object_id)
    current = entry["permissions"]["secrets"] if entry else []
    before = _policy_view(vault, object_id, current) if entry else None
    if state == "absent":
        removed = [p for p in current if p in wanted]
        if not removed:
            return Plan(NONE, before, before, reason="the access policy grants none of these secret permissions")
        remaining = [p for p in current if p not in removed]
        others = any(permissions for kind, permissions in entry["permissions"].items() if kind != "secrets")
        if remaining or others:
            after = _policy_view(vault, object_id, remaining)
            return Plan(UPDATE, before, after, reason=f"remove secret permissions {', '.join(removed)}")
        # The spec names the operation only; that Key Vault drops an entry left with no permission is what the
        # portal shows and the lab models (UNVERIFIED in the service's docs), hence "after: none".
        return Plan(DELETE, before, None, reason="remove the identity's access policy")
    missing = [p for p in wanted if p not in current]
    if not missing:
        return Plan(NONE, before, before, reason="the access policy already grants these secret permissions")
    after = _policy_view(vault, object_id, sort_permissions([*current, *missing]))
    warnings = []
    if object_id is None:
        warnings.append("the identity does not exist yet (check mode: an earlier task would create it)")
    action = UPDATE if entry else CREATE
    return Plan(action, before, after, warnings, reason=f"add secret permissions {', '.join(missing)}")


def permission_change(plan: Plan) -> tuple[str, list[str]]:
    """The accessPolicies operation kind and the secret permissions a changing plan sends."""
    before = (plan.before or {}).get("secret_permissions") or []
    after = (plan.after or {}).get("secret_permissions") or []
    if plan.action in (CREATE, UPDATE) and set(after) - set(before):
        return "add", [p for p in after if p not in before]
    return "remove", [p for p in before if p not in after]


# --- The reconciler -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DesiredKeyVaultAccess:
    """What the caller wants; ``role`` serves RBAC vaults, ``secret_permissions`` access-policy vaults."""

    principal_id: str | None  # None only in check mode, for an identity not created yet
    secret_permissions: tuple[str, ...] = DEFAULT_SECRET_PERMISSIONS
    role: str = DEFAULT_ROLE
    principal_type: str = DEFAULT_PRINCIPAL_TYPE
    state: str = "present"


@dataclass
class KeyVaultAccessOutcome:
    model: str | None  # None when the vault does not exist (state absent only)
    vault: dict[str, t.Any] | None
    plan: Plan
    role_assignment: dict[str, t.Any] | None = None
    access_policy: dict[str, t.Any] | None = None


def missing_vault(
    azure: t.Any, resource_group: str, vault_name: str, vault_option: str, group_option: str
) -> WorkloadIdentityError:
    """The error for a vault the GET did not find, naming the option to fix: one more GET tells whether its
    resource group is missing too."""
    if ResourceGroups(azure).get(resource_group) is None:
        message, code = f"{group_option}: resource group '{resource_group}' does not exist", "ResourceGroupNotFound"
    else:
        message, code = (
            f"{vault_option}: key vault '{vault_name}' does not exist in resource group '{resource_group}' (this "
            "module grants access to an existing vault)",
            "ResourceNotFound",
        )
    return WorkloadIdentityError(message, code=code, status=404, target=vault_name)


def reconcile_keyvault_access(
    azure: t.Any,
    resource_group: str,
    vault_name: str,
    desired: DesiredKeyVaultAccess,
    check_mode: bool,
    *,
    vault_option: str = "vault_name",
    group_option: str = "resource_group",
) -> KeyVaultAccessOutcome:
    """Read the vault, then grant or remove on its model. A vault that does not exist fails (in check mode too:
    nothing in this collection creates vaults), naming ``vault_option`` or ``group_option``, unless absent."""
    vault = Vaults(azure).get(resource_group, vault_name)
    if vault is None:
        if desired.state == "absent":
            return KeyVaultAccessOutcome(None, None, Plan(NONE, None, None, reason="the key vault does not exist"))
        raise missing_vault(azure, resource_group, vault_name, vault_option, group_option)
    if vault["enable_rbac_authorization"]:
        role = resolve_role(azure, vault["id"], desired.role)
        assignment = DesiredRoleAssignment(
            vault["id"], role, desired.principal_id, desired.principal_type, desired.state
        )
        outcome = reconcile_role_assignment(azure, assignment, check_mode)
        return KeyVaultAccessOutcome(MODEL_RBAC, vault, outcome.plan, role_assignment=outcome.assignment)
    plan = plan_access_policy(vault, desired.principal_id, desired.secret_permissions, desired.state)
    if plan.changed and not check_mode:
        kind, secrets = permission_change(plan)
        Vaults(azure).update_access_policy(vault, kind, t.cast(str, desired.principal_id), secrets)
    return KeyVaultAccessOutcome(MODEL_ACCESS_POLICY, vault, plan, access_policy=plan.after)
