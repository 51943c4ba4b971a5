# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reconciler for Azure role assignments, keyed on (scope, principal, role) whatever the assignment's name.

Used by the role_assignment module and, for vaults on the RBAC permission model, by keyvault_access. Reads are
as few as the decision allows: one list of the principal's assignments at the scope answers every question
(``$filter=principalId eq '<id>'``, then only those exactly AT the scope are kept); a role given by a name this
collection does not know costs one more list of role definitions.

New assignments get a deterministic name, uuid5 of (scope, principal, role): two runs that race converge on
the same name, and a run that loses a race to an assignment under another name gets 409 RoleAssignmentExists,
which counts as present (azure-behaviour §9: uniqueness is on the triple, not on the name).

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import re
import typing as t
import uuid
from dataclasses import dataclass

from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import (
    CODE_PRINCIPAL_NOT_FOUND,
    azure_error_code,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.azure import (
    Identities,
    ResourceGroups,
    RoleAssignments,
    RoleDefinitions,
    resource_group_of,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import (
    CREATE,
    DELETE,
    NONE,
    Plan,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    BUILTIN_ROLES,
    is_uuid,
    role_definition_guid,
    validate_resource_group_name,
)

# azure-behaviour §9: 409 when the (scope, principal, role) triple already has an assignment under another name.
CODE_ROLE_ASSIGNMENT_EXISTS = "RoleAssignmentExists"
PRINCIPAL_TYPES = ("ServicePrincipal", "User", "Group", "ForeignGroup", "Device")  # RoleAssignment.principalType
# azure-behaviour §9: principalType lets ARM accept a principal Entra has not replicated yet (a managed identity
# created moments ago); managed identities are service principals.
DEFAULT_PRINCIPAL_TYPE = "ServicePrincipal"
# azure-behaviour §9: PrincipalNotFound can still happen with principalType set (rarely); retried this long, then
# reported.
PRINCIPAL_NOT_FOUND_TIMEOUT = 180.0
# Fixed namespace of the deterministic assignment names; changing it would make every run create duplicates.
ASSIGNMENT_NAME_NAMESPACE = uuid.UUID("f33ff504-5cb1-461d-8901-1a7125d39f21")
_ROLE_DEFINITIONS_SEGMENT = "/providers/microsoft.authorization/roledefinitions/"
_SUBSCRIPTION_SCOPE = re.compile(r"^/subscriptions/(?P<subscription>[^/]+)", re.IGNORECASE)
_BUILTIN_NAMES = {guid: name for name, guid in BUILTIN_ROLES.items()}


# --- Pure rules -----------------------------------------------------------------------------------------------------
def normalize_scope(scope: str) -> str:
    """``/a/b`` for ``a/b/``, ``/a/b`` and ``/a/b/``; ARM scopes have no trailing slash (the root is ``/``)."""
    stripped = (scope or "").strip().strip("/")
    return f"/{stripped}" if stripped else "/"


def same_scope(a: str | None, b: str | None) -> bool:
    """ARM ids compare without regard to case (Key Vault says resourceGroups, MSI resourcegroups)."""
    return normalize_scope(a or "").lower() == normalize_scope(b or "").lower()


def validate_scope(value: t.Any, field: str = "scope") -> list[str]:
    """The scope formats of https://learn.microsoft.com/azure/role-based-access-control/scope-overview: ``/``,
    ``/providers/Microsoft.Management/managementGroups/<id>``, ``/subscriptions/<GUID>``, then optionally
    ``/resourceGroups/<name>``, then optionally ``/providers/<namespace>/<type>/<name>[/<type>/<name>...]``."""
    if not isinstance(value, str) or not value.strip():
        return [f"{field}: is required"]
    shape = f"{field}: must be an ARM resource ID starting with '/', such as /subscriptions/<id>/resourceGroups/<name>"
    if not value.startswith("/") or "//" in value.rstrip("/") or any(c.isspace() or c in "?#%" for c in value):
        return [shape]
    segments = value.strip("/").split("/") if value.strip("/") else []
    if segments and segments[0].lower() == "subscriptions":
        if len(segments) < 2 or not is_uuid(segments[1]):
            found = segments[1] if len(segments) > 1 else ""
            return [f"{field}: the subscription in the scope must be a GUID, got {found!r}"]
        segments = segments[2:]
        if segments and segments[0].lower() == "resourcegroups":
            if len(segments) < 2:
                return [f"{field}: must name the resource group after /resourceGroups/"]
            errors = validate_resource_group_name(segments[1], field)
            if errors:
                return errors
            segments = segments[2:]
    return (
        []
        if _resource_segments(segments)
        else [f"{shape}; after the subscription and resource group come /providers/<namespace>/<type>/<name> segments"]
    )


def _resource_segments(segments: list[str]) -> bool:
    """``providers/<namespace>`` followed by ``<type>/<name>`` pairs, any number of times (extension resources)."""
    while segments:
        if segments[0].lower() != "providers" or len(segments) < 4:
            return False
        pairs = segments[2:]
        end = next((i for i in range(0, len(pairs), 2) if pairs[i].lower() == "providers"), len(pairs))
        if end == 0 or end % 2:
            return False
        segments = pairs[end:]
    return True


def validate_role(value: t.Any, field: str = "role") -> list[str]:
    """A role is a name (any text), a GUID, or a roleDefinitions ID; an ID must end in a GUID."""
    if not isinstance(value, str) or not value.strip():
        return [f"{field}: is required"]
    if _ROLE_DEFINITIONS_SEGMENT in value.lower() and role_definition_guid(value) is None:
        return [f"{field}: a role definition ID must end in /providers/Microsoft.Authorization/roleDefinitions/<GUID>"]
    return []


def validate_principal_type(value: t.Any, field: str = "principal_type") -> list[str]:
    if value not in PRINCIPAL_TYPES:
        return [f"{field}: must be one of {', '.join(PRINCIPAL_TYPES)}, got {value!r}"]
    return []


def role_definition_id_for_scope(scope: str, guid: str) -> str:
    """The roleDefinitionId to send: under the scope's subscription, as ARM and the CLI do (azure-behaviour §9)."""
    match = _SUBSCRIPTION_SCOPE.match(normalize_scope(scope))
    prefix = f"/subscriptions/{match.group('subscription')}" if match else ""
    return f"{prefix}/providers/Microsoft.Authorization/roleDefinitions/{guid.lower()}"


def assignment_name(scope: str, principal_id: str, role_guid: str) -> str:
    """The deterministic name of the assignment of one (scope, principal, role): a uuid5 of the three."""
    key = "\n".join((normalize_scope(scope).lower(), principal_id.lower(), role_guid.lower()))
    return str(uuid.uuid5(ASSIGNMENT_NAME_NAMESPACE, key))


@dataclass(frozen=True)
class Role:
    """A resolved role: its definition GUID and, when known, its name."""

    guid: str
    name: str | None = None


@dataclass(frozen=True)
class DesiredRoleAssignment:
    """What the caller wants. ``principal_id`` is None only in check mode, for an identity not created yet."""

    scope: str
    role: Role
    principal_id: str | None
    principal_type: str = DEFAULT_PRINCIPAL_TYPE
    state: str = "present"

    @property
    def role_definition_id(self) -> str:
        return role_definition_id_for_scope(self.scope, self.role.guid)

    @property
    def name(self) -> str | None:
        if self.principal_id is None:
            return None
        return assignment_name(self.scope, self.principal_id, self.role.guid)

    def as_dict(self) -> dict[str, t.Any]:
        """The assignment as it will read once created (normalised like ``normalize_role_assignment``)."""
        scope, name = normalize_scope(self.scope), self.name
        return {
            "id": f"{'' if scope == '/' else scope}/providers/Microsoft.Authorization/roleAssignments/{name}"
            if name
            else None,
            "name": name,
            "scope": scope,
            "role_definition_id": self.role_definition_id,
            "role_name": self.role.name,
            "principal_id": self.principal_id,
            "principal_type": self.principal_type,
        }


def matching_assignments(
    assignments: t.Iterable[dict[str, t.Any]], scope: str, principal_id: str | None, role_guid: str
) -> list[dict[str, t.Any]]:
    """The normalised assignments of exactly this (scope, principal, role); the list also holds inherited ones
    (assignments above the scope) and ones below it, which are not ours to create or delete."""
    if principal_id is None:
        return []
    return [
        a
        for a in assignments
        if same_scope(a.get("scope"), scope)
        and str(a.get("principal_id") or "").lower() == principal_id.lower()
        and role_definition_guid(a.get("role_definition_id") or "") == role_guid.lower()
    ]


def plan_role_assignment(actual: t.Iterable[dict[str, t.Any]], desired: DesiredRoleAssignment) -> Plan:
    """Decide from the principal's normalised assignments (the one list) what to do for ``desired``."""
    found = matching_assignments(actual, desired.scope, desired.principal_id, desired.role.guid)
    found = [dict(a, role_name=desired.role.name or a.get("role_name")) for a in found]
    warnings: list[str] = []
    if desired.state == "absent":
        if not found:
            return Plan(NONE, None, None, reason="no assignment of this role to this principal at this scope")
        reason = "delete the assignment" if len(found) == 1 else f"delete the {len(found)} assignments"
        return Plan(DELETE, found[0], None, reason=f"{reason} of this role to this principal at this scope")
    if found:
        if len(found) > 1:
            warnings.append(
                f"{len(found)} assignments of role {desired.role.guid} to principal {desired.principal_id} exist at "
                f"{normalize_scope(desired.scope)} ({', '.join(str(a['name']) for a in found)}); the first is kept"
            )
        return Plan(NONE, found[0], found[0], warnings, reason="the role is already assigned at this scope")
    if desired.principal_id is None:
        warnings.append(
            "the principal does not exist yet (check mode: an earlier task would create it), so the assignment's "
            "name and principal ID are not known"
        )
    return Plan(CREATE, None, desired.as_dict(), warnings, reason="the role is not assigned at this scope")


# --- Azure calls (thin) ---------------------------------------------------------------------------------------------
def resolve_role(azure: t.Any, scope: str, role: str) -> Role:
    """A role name, GUID or roleDefinitions ID as a Role, found to exist by reading, never by a failed write.
    Built-in roles this collection knows (by name or GUID) cost nothing; any other GUID or ID one GET of the
    definition under the scope's subscription (the ID the assignment would send); any other name one
    roleDefinitions list at the scope (``$filter=roleName eq '<name>'``)."""
    guid = role_definition_guid(role)
    if guid is not None and (role in BUILTIN_ROLES or guid in _BUILTIN_NAMES):
        return Role(guid, role if role in BUILTIN_ROLES else _BUILTIN_NAMES[guid])
    if guid is not None:
        definition_id = role_definition_id_for_scope(scope, guid)
        found = RoleDefinitions(azure).get(definition_id)
        if found is None:
            raise WorkloadIdentityError(
                f"role: role definition {guid} does not exist (read as {definition_id}); give a built-in role name, "
                "a custom role's exact name, or the ID of an existing role definition",
                code="RoleDefinitionDoesNotExist",
                status=404,
                target=role,
            )
        return Role(guid, found.get("name"))
    named = RoleDefinitions(azure).find_by_name(normalize_scope(scope), role)
    if not named:
        raise WorkloadIdentityError(
            f"role: no role definition named {role!r} is visible at scope '{normalize_scope(scope)}'; give a "
            "built-in role name, a custom role's exact name, or a role definition ID",
            code="RoleDefinitionNotFound",
            target=role,
        )
    if len(named) > 1:
        raise WorkloadIdentityError(
            f"role: {len(named)} role definitions are named {role!r} ({', '.join(sorted(named))}); give the role "
            "definition ID instead",
            code="AmbiguousRoleName",
            target=role,
        )
    found_guid, name = next(iter(named.items()))
    return Role(found_guid, name)


def list_principal_assignments(azure: t.Any, scope: str, principal_id: str) -> list[dict[str, t.Any]]:
    """One list: the principal's assignments at, above and below the scope, normalised. A scope in a resource
    group that does not exist is found here, by this read (ARM answers 404 ResourceGroupNotFound)."""
    try:
        return RoleAssignments(azure).list_for_principal(normalize_scope(scope), principal_id)
    except WorkloadIdentityError as exc:
        group = resource_group_of(scope)
        if exc.code != "ResourceGroupNotFound" or group is None:
            raise
        raise WorkloadIdentityError(
            f"scope: resource group '{group}' does not exist", code=exc.code, status=404, target=scope
        ) from exc


def create_assignment(azure: t.Any, desired: DesiredRoleAssignment) -> dict[str, t.Any]:
    """PUT the assignment under its deterministic name, retrying PrincipalNotFound for a bounded time."""
    created = RoleAssignments(azure).create(
        normalize_scope(desired.scope),
        t.cast(str, desired.name),
        desired.role_definition_id,
        t.cast(str, desired.principal_id),
        desired.principal_type,
        # azure-behaviour §9: Entra has not replicated a principal created moments ago (400 PrincipalNotFound).
        retry_while=lambda exc: azure_error_code(exc) == CODE_PRINCIPAL_NOT_FOUND,
        retry_timeout=PRINCIPAL_NOT_FOUND_TIMEOUT,
        description=_describe(desired),
    )
    return {**created, "role_name": desired.role.name or created.get("role_name")}


def delete_assignment(azure: t.Any, assignment: dict[str, t.Any]) -> None:
    RoleAssignments(azure).delete(normalize_scope(assignment["scope"]), assignment["name"])


def _describe(desired: DesiredRoleAssignment) -> str:
    role = f"'{desired.role.name}' ({desired.role.guid})" if desired.role.name else desired.role.guid
    return f"of role {role} to principal '{desired.principal_id}' at scope '{normalize_scope(desired.scope)}'"


# --- The principal ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Principal:
    """Whom access is for: the object (principal) ID, and the identity it came from when one was read.

    ``principal_id`` is None when the identity named does not exist; ``missing`` then says which one.
    """

    principal_id: str | None
    identity: dict[str, t.Any] | None = None
    missing: str | None = None
    missing_code: str | None = None


def resolve_principal(
    azure: t.Any,
    *,
    principal_id: str | None = None,
    client_id: str | None = None,
    identity_resource_group: str | None = None,
    identity_name: str | None = None,
    group_option: str = "identity_resource_group",
) -> Principal:
    """The principal ID from, cheapest first: itself (no request), the identity by resource group + name (one
    GET; its client ID must equal ``client_id`` when both are given), or a bare client ID (one list). A missing
    identity costs one more GET, of its resource group, to name the option to fix (``group_option`` is the one
    that gave the group)."""
    if principal_id:
        return Principal(principal_id)
    if identity_name:
        group = t.cast(str, identity_resource_group)
        where = f"managed identity '{identity_name}' in resource group '{group}'"
        identity = Identities(azure).get(group, identity_name)
        if identity is None:
            if ResourceGroups(azure).get(group) is None:
                return Principal(
                    None, None, f"{group_option}: resource group '{group}' does not exist", "ResourceGroupNotFound"
                )
            return Principal(None, None, f"identity_name: {where} does not exist", "IdentityNotFound")
        if client_id and str(identity.get("client_id") or "").lower() != client_id.lower():
            raise WorkloadIdentityError(
                f"identity_client_id: {where} has client ID {identity.get('client_id')!r}, not {client_id!r}",
                code="IdentityMismatch",
                target=identity.get("id"),
            )
        return Principal(identity.get("principal_id"), identity)
    if client_id:
        identity = Identities(azure).find_by_client_id(client_id)
        if identity is None:
            where = f"no user-assigned managed identity in subscription '{azure.subscription_id}'"
            return Principal(None, None, f"identity_client_id: {where} has client ID '{client_id}'", "IdentityNotFound")
        return Principal(identity.get("principal_id"), identity)
    raise WorkloadIdentityError(
        "principal_id, identity_client_id or identity_name is required", code="MissingPrincipal"
    )


def require_principal(principal: Principal, state: str, check_mode: bool) -> None:
    """Granting to an identity that does not exist fails, found by reading and before any write, except in check
    mode, where an earlier task of the same play would have created it (a warning says so); removing access of one
    that does not exist is nothing to do."""
    if principal.principal_id is None and state == "present" and not check_mode:
        raise WorkloadIdentityError(
            f"{principal.missing}; there is no principal to grant access to",
            code=principal.missing_code or "IdentityNotFound",
            status=404,
        )


# --- The reconciler -------------------------------------------------------------------------------------------------
@dataclass
class RoleAssignmentOutcome:
    """The plan as carried out and the assignment afterwards (None when there is none)."""

    plan: Plan
    assignment: dict[str, t.Any] | None


def reconcile_role_assignment(azure: t.Any, desired: DesiredRoleAssignment, check_mode: bool) -> RoleAssignmentOutcome:
    """Read (one list) -> plan -> apply unless ``check_mode``. A no-op run makes exactly one request."""
    actual = list_principal_assignments(azure, desired.scope, desired.principal_id) if desired.principal_id else []
    plan = plan_role_assignment(actual, desired)
    if check_mode or not plan.changed:
        return RoleAssignmentOutcome(plan, plan.after)
    if plan.action == DELETE:
        for assignment in matching_assignments(actual, desired.scope, desired.principal_id, desired.role.guid):
            delete_assignment(azure, assignment)
        return RoleAssignmentOutcome(plan, None)
    try:
        plan.after = create_assignment(azure, desired)
    except WorkloadIdentityError as exc:
        if exc.code != CODE_ROLE_ASSIGNMENT_EXISTS:
            raise
        return _created_meanwhile(azure, desired, exc)
    return RoleAssignmentOutcome(plan, plan.after)


def _created_meanwhile(
    azure: t.Any, desired: DesiredRoleAssignment, conflict: WorkloadIdentityError
) -> RoleAssignmentOutcome:
    """409 RoleAssignmentExists: another run assigned the same triple (under another name) between our list and
    our PUT. The desired state holds and this run changed nothing: read it back (one more list) and report it."""
    actual = list_principal_assignments(azure, desired.scope, t.cast(str, desired.principal_id))
    found = matching_assignments(actual, desired.scope, desired.principal_id, desired.role.guid)
    if not found:
        raise conflict  # Azure says it exists but does not list it: report that rather than guess
    current = dict(found[0], role_name=desired.role.name or found[0].get("role_name"))
    plan = Plan(
        NONE,
        current,
        current,
        [f"the role assignment was created by someone else while this task ran ({conflict.code}); it is kept"],
        reason="assigned concurrently by another run",
    )
    return RoleAssignmentOutcome(plan, current)
