"""Azure RBAC: built-in role definitions, role assignments, and the checks every other route module relies on.

``authorize()`` is what ARM does before any resource provider sees a request; ``data_action_allowed()`` is the
same evaluation for data actions (Key Vault's RBAC permission model). Both honour the lab setting
``role_propagation_seconds``: a new assignment is not effective until it is that old (azure-behaviour §7, §9).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from .common import require_global_api_version, require_resource_group, require_subscription, utcnow_iso
from .server import ArmError, Request, Response, route
from .state import State, seeder

PROVIDER = "/providers/Microsoft.Authorization"
ASSIGNMENT_TYPE = "Microsoft.Authorization/roleAssignments"
DEFINITION_TYPE = "Microsoft.Authorization/roleDefinitions"
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_NAMESPACE = "Microsoft.Authorization"
# api-versions of the roleAssignments routes (azure-behaviour §1): the folders of specification/authorization/
# resource-manager/Microsoft.Authorization/Authorization/{stable,preview}/ that hold an
# authorization-RoleAssignmentsCalls.json. ARM's manifest has carried further versions no spec folder has (its 2018-2021
# refusals list 2014-04-01-preview ... 2021-04-01-preview, Azure/azure-sdk-for-go#16699); whether it still does is
# UNVERIFIED, so the lab keeps to the spec.
ROLE_ASSIGNMENT_API_VERSIONS = (
    "2015-07-01",
    "2017-10-01-preview",
    "2018-01-01-preview",
    "2018-09-01-preview",
    "2020-03-01-preview",
    "2020-04-01-preview",
    "2020-08-01-preview",
    "2020-10-01-preview",
    "2022-04-01",
    "2026-08-01",
)
# api-versions of the roleDefinitions routes: the folders of the same spec that hold an
# authorization-RoleDefinitionsCalls.json (the Azure CLI reads definitions with 2022-05-01-preview).
ROLE_DEFINITION_API_VERSIONS = ("2015-07-01", "2018-01-01-preview", "2022-04-01", "2022-05-01-preview")

# Built-in roles, copied from the generated role reference (MicrosoftDocs/azure-docs
# articles/role-based-access-control/built-in-roles/{privileged,general,security,identity}.md). GUIDs are the same
# in every tenant (azure-behaviour §9). Tuple: name, guid, description, actions, notActions, dataActions.
_KEY_VAULT_READ_ACTIONS = [
    "Microsoft.Authorization/*/read",
    "Microsoft.Insights/alertRules/*",
    "Microsoft.Resources/deployments/*",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Support/*",
    "Microsoft.KeyVault/checkNameAvailability/read",
    "Microsoft.KeyVault/deletedVaults/read",
    "Microsoft.KeyVault/locations/*/read",
    "Microsoft.KeyVault/vaults/*/read",
    "Microsoft.KeyVault/operations/read",
]
_IDENTITY_COMMON = [
    "Microsoft.Authorization/*/read",
    "Microsoft.Insights/alertRules/*",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Resources/deployments/*",
    "Microsoft.Support/*",
]
BUILT_IN_ROLES: list[tuple[str, str, str, list[str], list[str], list[str]]] = [
    (
        "Owner",
        "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
        ["*"],
        [],
        [],
    ),
    (
        "Contributor",
        "b24988ac-6180-42a0-ab88-20f7382dd24c",
        "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC, manage "
        "assignments in Azure Blueprints, or share image galleries.",
        ["*"],
        [
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
            "Microsoft.Blueprint/blueprintAssignments/write",
            "Microsoft.Blueprint/blueprintAssignments/delete",
            "Microsoft.Compute/galleries/share/action",
            "Microsoft.Purview/consents/write",
            "Microsoft.Purview/consents/delete",
            "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
            "Microsoft.Subscription/cancel/action",
            "Microsoft.Subscription/enable/action",
        ],
        [],
    ),
    (
        "Reader",
        "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        "View all resources, but does not allow you to make any changes.",
        ["*/read"],
        [],
        [],
    ),
    (
        "User Access Administrator",
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        "Lets you manage user access to Azure resources.",
        ["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"],
        [],
        [],
    ),
    (
        "Role Based Access Control Administrator",
        "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
        "Manage access to Azure resources by assigning roles using Azure RBAC. This role does not allow you to manage "
        "access using other ways, such as Azure Policy.",
        [
            "Microsoft.Authorization/roleAssignments/write",
            "Microsoft.Authorization/roleAssignments/delete",
            "*/read",
            "Microsoft.Support/*",
        ],
        [],
        [],
    ),
    (
        "Key Vault Administrator",
        "00482a5a-887f-4fb3-b363-3b7fe8e74483",
        "Perform all data plane operations on a key vault and all objects in it, including certificates, keys, and "
        "secrets. Cannot manage key vault resources or manage role assignments. Only works for key vaults that use the "
        "'Azure role-based access control' permission model.",
        _KEY_VAULT_READ_ACTIONS,
        [],
        ["Microsoft.KeyVault/vaults/*"],
    ),
    (
        "Key Vault Reader",
        "21090545-7ca7-4776-b22c-e363652d74d2",
        "Read metadata of key vaults and its certificates, keys, and secrets. Cannot read sensitive values such as "
        "secret contents or key material. Only works for key vaults that use the 'Azure role-based access control' "
        "permission model.",
        _KEY_VAULT_READ_ACTIONS,
        [],
        ["Microsoft.KeyVault/vaults/*/read", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"],
    ),
    (
        "Key Vault Secrets Officer",
        "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
        "Perform any action on the secrets of a key vault, except manage permissions. Only works for key vaults that "
        "use the 'Azure role-based access control' permission model.",
        _KEY_VAULT_READ_ACTIONS,
        [],
        ["Microsoft.KeyVault/vaults/secrets/*"],
    ),
    (
        "Key Vault Secrets User",
        "4633458b-17de-408a-b874-0445c86b69e6",
        "Read secret contents. Only works for key vaults that use the 'Azure role-based access control' permission "
        "model.",
        [],
        [],
        ["Microsoft.KeyVault/vaults/secrets/getSecret/action", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"],
    ),
    (
        "Managed Identity Contributor",
        "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59",
        "Create, Read, Update, and Delete User Assigned Identity",
        [
            "Microsoft.ManagedIdentity/userAssignedIdentities/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
            "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete",
            "Microsoft.ManagedIdentity/userAssignedIdentities/revokeTokens/action",
            *_IDENTITY_COMMON,
        ],
        [],
        [],
    ),
    (
        "Managed Identity Operator",
        "f1a07417-d97a-45cb-824c-7a7467783830",
        "Read and Assign User Assigned Identity",
        [
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
            *_IDENTITY_COMMON,
        ],
        [],
        [],
    ),
]
ROLE_IDS = {role[0]: role[1] for role in BUILT_IN_ROLES}


# ---------------------------------------------------------------------------------------------- scopes
def normalize_scope(scope: str) -> str:
    return "/" + scope.strip("/") if scope.strip("/") else "/"


def scope_covers(assignment_scope: str, target: str) -> bool:
    """An assignment applies at its scope and everything below it: prefix match on whole segments, ignoring case."""
    outer, inner = normalize_scope(assignment_scope).lower(), normalize_scope(target).lower()
    return outer == "/" or inner == outer or inner.startswith(outer + "/")


def _definition_id(scope: str, guid: str) -> str:
    # A role definition read under a subscription (or anything in it) is named by that subscription, as
    # azure-cli recordings show for reads at resource-group scope.
    match = re.match(r"^/subscriptions/([^/]+)", scope, re.IGNORECASE)
    prefix = f"/subscriptions/{match.group(1)}" if match else ""
    return f"{prefix}{PROVIDER}/roleDefinitions/{guid}"


def _definition(state: State, guid: str) -> dict[str, Any] | None:
    return state.get(f"{PROVIDER}/roleDefinitions/{guid}")


def _guid_of(role_definition_id: str) -> str:
    return role_definition_id.rstrip("/").rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------------------------- evaluation
def _wildcard(pattern: str) -> re.Pattern[str]:
    # RBAC wildcards: '*' matches any run of characters, '/' included ('*/read', 'Microsoft.KeyVault/vaults/*').
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$", re.IGNORECASE)


def _permits(permission: dict[str, Any], operation: str, data: bool) -> bool:
    allow, deny = ("dataActions", "notDataActions") if data else ("actions", "notActions")
    if not any(_wildcard(p).match(operation) for p in permission.get(allow, [])):
        return False
    return not any(_wildcard(p).match(operation) for p in permission.get(deny, []))


def effective_assignments(state: State, object_id: str, scope: str) -> list[dict[str, Any]]:
    """The caller's assignments at ``scope`` or above that have propagated (azure-behaviour §7: 403, then success)."""
    delay = state.settings["role_propagation_seconds"]
    now = state.now()
    found = []
    for assignment in _all_assignments(state):
        props = assignment["properties"]
        if props["principalId"].lower() != (object_id or "").lower() or not scope_covers(props["scope"], scope):
            continue
        if now - state.meta_of(assignment["id"])["created"] < delay:
            continue
        found.append(assignment)
    return found


def _allowed(state: State, object_id: str, operation: str, scope: str, data: bool) -> bool:
    for assignment in effective_assignments(state, object_id, scope):
        definition = _definition(state, _guid_of(assignment["properties"]["roleDefinitionId"]))
        if definition and any(_permits(p, operation, data) for p in definition["properties"]["permissions"]):
            return True
    return False


def authorize(request: Request, state: State, action: str, scope: str) -> None:
    """ARM's authorization gate: 403 AuthorizationFailed unless an effective assignment grants ``action``."""
    object_id = (request.principal or {}).get("oid", "")
    if _allowed(state, object_id, action, scope, data=False):
        return
    # The wording ARM returns for service principals (the object id stands in the 'client' slot too).
    raise ArmError(
        403,
        "AuthorizationFailed",
        f"The client '{object_id}' with object id '{object_id}' does not have authorization to perform action "
        f"'{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh "
        "your credentials.",
    )


def data_action_allowed(state: State, object_id: str, data_action: str, scope: str) -> bool:
    return _allowed(state, object_id, data_action, scope, data=True)


# ---------------------------------------------------------------------------------------------- role definitions
def _definition_body(state: State, scope: str, stored: dict[str, Any]) -> dict[str, Any]:
    body = dict(stored)
    body["id"] = _definition_id(scope, stored["name"])
    return body


def _scope(request: Request, state: State) -> str:
    """The request's scope; an unknown subscription is 404 before RBAC is even consulted (as msi.py/arm.py do)."""
    scope = normalize_scope(request.params.get("scope", ""))
    match = re.match(r"^/subscriptions/([^/]+)", scope, re.IGNORECASE)
    if match:
        require_subscription(request, state, match.group(1))
    return scope


def _check_scope(request: Request, state: State, scope: str) -> None:
    """A resource-group scope must exist: checked after authorization, as ARM does for resource groups."""
    match = re.match(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)", scope, re.IGNORECASE)
    if match:
        require_resource_group(request, state, match.group(1), match.group(2))


def _authorize_definition_read(request: Request, state: State, scope: str) -> None:
    # Built-in definitions live at the tenant root ('/providers/Microsoft.Authorization/roleDefinitions/{id}');
    # reading them there is left open to any signed-in caller. UNVERIFIED: ARM's exact rule at the root.
    if scope != "/":
        authorize(request, state, "Microsoft.Authorization/roleDefinitions/read", scope)


def _parse_definition_filter(text: str) -> list[tuple[str, str]]:
    clauses = []
    for clause in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE) if text.strip() else []:
        found = re.fullmatch(r"\s*(roleName|type)\s+eq\s+'([^']*)'\s*", clause, re.IGNORECASE)
        if found:
            clauses.append((found.group(1).lower(), found.group(2)))
        elif not re.fullmatch(r"\s*atScopeAndBelow\(\)\s*", clause, re.IGNORECASE):
            # UNVERIFIED: the exact code and wording ARM uses for an unsupported OData clause.
            raise ArmError(400, "BadRequest", f"The filter '{text}' is not supported.")
    return clauses


@route("GET", rf"(?P<scope>.*){PROVIDER}/roleDefinitions")
def list_role_definitions(request: Request, state: State) -> Response:
    require_global_api_version(request, ROLE_DEFINITION_API_VERSIONS, _NAMESPACE, "roleDefinitions")
    scope = _scope(request, state)
    _authorize_definition_read(request, state, scope)
    _check_scope(request, state, scope)
    clauses = _parse_definition_filter(request.query.get("$filter", ""))
    found = []
    for stored in state.find(lambda key, body: body.get("type") == DEFINITION_TYPE):
        props = stored["properties"]
        # roleName matching ignores case: azure-cli asks for 'reader' and gets 'Reader' (recorded).
        if all(props["roleName" if f == "rolename" else "type"].lower() == value.lower() for f, value in clauses):
            found.append(_definition_body(state, scope, stored))
    return Response(200, {"value": found})


@route("GET", rf"(?P<scope>.*){PROVIDER}/roleDefinitions/(?P<name>[^/]+)")
def get_role_definition(request: Request, state: State) -> Response:
    require_global_api_version(request, ROLE_DEFINITION_API_VERSIONS, _NAMESPACE, "roleDefinitions")
    scope = _scope(request, state)
    _authorize_definition_read(request, state, scope)
    _check_scope(request, state, scope)
    stored = _definition(state, request.params["name"])
    if stored is None:
        # UNVERIFIED: status and wording; the code is the one ARM uses for unknown role definitions.
        raise ArmError(
            404,
            "RoleDefinitionDoesNotExist",
            f"The specified role definition with ID '{request.params['name']}' does not exist.",
        )
    return Response(200, _definition_body(state, scope, stored))


# ---------------------------------------------------------------------------------------------- role assignments
def _all_assignments(state: State) -> list[dict[str, Any]]:
    return state.find(lambda key, body: body.get("type") == ASSIGNMENT_TYPE)


def _assignment_id(scope: str, name: str) -> str:
    return f"{'' if scope == '/' else scope}{PROVIDER}/roleAssignments/{name}"


def _principal_type(principal: dict[str, Any]) -> str:
    # Managed identities are service principals to Azure RBAC.
    return "User" if principal["kind"] == "User" else "Group" if principal["kind"] == "Group" else "ServicePrincipal"


def _validate_new_assignment(state: State, name: str, props: dict[str, Any]) -> dict[str, Any]:
    if not _GUID.match(name):
        # UNVERIFIED wording.
        raise ArmError(
            400,
            "InvalidRoleAssignmentId",
            f"The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID.",
        )
    definition_id = str(props.get("roleDefinitionId") or "")
    if not re.search(rf"{PROVIDER}/roleDefinitions/[^/]+$", definition_id, re.IGNORECASE) or not _GUID.match(
        _guid_of(definition_id)
    ):
        raise ArmError(
            400, "InvalidRoleDefinitionId", f"The role definition ID '{_guid_of(definition_id)}' is not valid."
        )
    if _definition(state, _guid_of(definition_id)) is None:
        # UNVERIFIED: status 400 for a well-formed but unknown role definition.
        raise ArmError(
            400,
            "RoleDefinitionDoesNotExist",
            f"The specified role definition with ID '{_guid_of(definition_id)}' does not exist.",
        )
    principal_id = str(props.get("principalId") or "")
    if not _GUID.match(principal_id):
        raise ArmError(
            400, "InvalidPrincipalId", "A valid principal ID must be provided for role assignment."
        )  # UNVERIFIED
    principal = state.principals.get(principal_id.lower()) or next(
        (p for p in state.principals.values() if p["object_id"].lower() == principal_id.lower()), None
    )
    requested_type = props.get("principalType")
    if principal is None and not requested_type:
        # azure-behaviour §9: without principalType ARM looks the principal up in the directory and fails; with it,
        # the assignment is accepted (what principalType exists for: replication delay).
        raise ArmError(
            400,
            "PrincipalNotFound",
            f"Principal {principal_id.replace('-', '').lower()} does not exist in the directory "
            f"{state.config.tenant_id}. "
            "Check that you have the correct principal ID. If you are creating this principal and then immediately "
            "assigning a role, this error might be related to a replication delay. In this case, set the role "
            "assignment principalType property to a value, such as ServicePrincipal, User, or Group.  See "
            "https://aka.ms/docs-principaltype",
        )
    actual_type = _principal_type(principal) if principal else requested_type
    if requested_type and principal and requested_type.lower() != actual_type.lower():
        # Quoted in many Bicep/azd deployment logs; the 400 status is UNVERIFIED.
        raise ArmError(
            400,
            "UnmatchedPrincipalType",
            f"The PrincipalId '{principal_id.replace('-', '')}' has type '{actual_type}', which is different from "
            f"specified PrincipalType '{requested_type}'.",
        )
    return {"roleDefinitionId": definition_id, "principalId": principal_id, "principalType": actual_type}


def _same_assignment(a: dict[str, Any], scope: str, principal_id: str, role_guid: str) -> bool:
    props = a["properties"]
    return (
        normalize_scope(props["scope"]).lower() == scope.lower()
        and props["principalId"].lower() == principal_id.lower()
        and _guid_of(props["roleDefinitionId"]).lower() == role_guid.lower()
    )


@route("PUT", rf"(?P<scope>.*){PROVIDER}/roleAssignments/(?P<name>[^/]+)")
def create_role_assignment(request: Request, state: State) -> Response:
    require_global_api_version(request, ROLE_ASSIGNMENT_API_VERSIONS, _NAMESPACE, "roleAssignments")
    scope = _scope(request, state)
    name = request.params["name"]
    assignment_id = _assignment_id(scope, name)
    authorize(request, state, "Microsoft.Authorization/roleAssignments/write", assignment_id)
    _check_scope(request, state, scope)
    props = (request.json() or {}).get("properties") or {}
    checked = _validate_new_assignment(state, name, props)
    role_guid = _guid_of(checked["roleDefinitionId"])
    caller = (request.principal or {}).get("oid")
    with state.lock:
        existing = state.get(assignment_id)
        if existing is not None:
            same = _same_assignment(existing, scope, checked["principalId"], role_guid)
            if not same:
                # UNVERIFIED: ARM's answer to re-pointing an existing assignment name at another principal/role.
                raise ArmError(
                    409,
                    "RoleAssignmentUpdateNotPermitted",
                    "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
                )
            # Same name, same triple: accepted again (ARM/Bicep redeployments are idempotent); the spec allows
            # 200 or 201 and which one the service picks is UNVERIFIED (azure-behaviour §9).
            existing["properties"].update(
                {k: props.get(k) for k in ("description", "condition", "conditionVersion") if k in props},
                updatedOn=utcnow_iso(),
                updatedBy=caller,
            )
            state.put(assignment_id, existing)
            return Response(201, existing)
        duplicate = next(
            (a for a in _all_assignments(state) if _same_assignment(a, scope, checked["principalId"], role_guid)), None
        )
        if duplicate is not None:
            # azure-behaviour §9: uniqueness is on (scope, principal, role); the message names the existing one.
            raise ArmError(
                409,
                "RoleAssignmentExists",
                "The role assignment already exists. The ID of the existing role assignment is "
                f"{duplicate['name'].replace('-', '')}.",
            )
        now = utcnow_iso()
        body = {
            "properties": {
                **checked,
                "scope": scope,
                "condition": props.get("condition"),
                "conditionVersion": props.get("conditionVersion"),
                "createdOn": now,
                "updatedOn": now,
                "createdBy": caller,
                "updatedBy": caller,
                "delegatedManagedIdentityResourceId": props.get("delegatedManagedIdentityResourceId"),
                "description": props.get("description"),
            },
            "id": assignment_id,
            "type": ASSIGNMENT_TYPE,
            "name": name,
        }
        state.put(assignment_id, body)
        state.meta_of(assignment_id)["created"] = state.now()
    response = dict(body, properties={**body["properties"], "createdBy": None})  # recorded: createdBy null on the PUT
    return Response(201, response)


@route("GET", rf"(?P<scope>.*){PROVIDER}/roleAssignments/(?P<name>[^/]+)")
def get_role_assignment(request: Request, state: State) -> Response:
    require_global_api_version(request, ROLE_ASSIGNMENT_API_VERSIONS, _NAMESPACE, "roleAssignments")
    scope = _scope(request, state)
    assignment_id = _assignment_id(scope, request.params["name"])
    authorize(request, state, "Microsoft.Authorization/roleAssignments/read", assignment_id)
    _check_scope(request, state, scope)
    found = state.get(assignment_id)
    if found is None:
        # UNVERIFIED wording.
        raise ArmError(404, "RoleAssignmentNotFound", f"The role assignment '{request.params['name']}' is not found.")
    return Response(200, found)


@route("DELETE", rf"(?P<scope>.*){PROVIDER}/roleAssignments/(?P<name>[^/]+)")
def delete_role_assignment(request: Request, state: State) -> Response:
    require_global_api_version(request, ROLE_ASSIGNMENT_API_VERSIONS, _NAMESPACE, "roleAssignments")
    scope = _scope(request, state)
    assignment_id = _assignment_id(scope, request.params["name"])
    authorize(request, state, "Microsoft.Authorization/roleAssignments/delete", assignment_id)
    _check_scope(request, state, scope)
    removed = state.delete(assignment_id)
    # azure-behaviour §2: 200 with the deleted assignment, or 204 when there was none.
    return Response(200, removed) if removed is not None else Response(204)


def _parse_assignment_filter(text: str) -> tuple[bool, str | None]:
    at_scope, principal = False, None
    for clause in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE) if text.strip() else []:
        clause = clause.strip()
        if re.fullmatch(r"atScope\(\)", clause, re.IGNORECASE):
            at_scope = True
            continue
        found = re.fullmatch(r"principalId\s+eq\s+'?([0-9a-fA-F-]+)'?", clause, re.IGNORECASE) or re.fullmatch(
            r"assignedTo\('([0-9a-fA-F-]+)'\)", clause, re.IGNORECASE
        )
        if not found:
            raise ArmError(400, "BadRequest", f"The filter '{text}' is not supported.")  # UNVERIFIED wording
        principal = found.group(1)
    return at_scope, principal


def _list_assignments(request: Request, state: State, scope: str) -> Response:
    authorize(request, state, "Microsoft.Authorization/roleAssignments/read", scope)
    _check_scope(request, state, scope)
    at_scope, principal = _parse_assignment_filter(request.query.get("$filter", ""))
    found = []
    for assignment in _all_assignments(state):
        props = assignment["properties"]
        above = scope_covers(props["scope"], scope)
        # RoleAssignmentFilterParameter: atScope() = at or above; no filter or principalId/assignedTo = at, above
        # or below (groups are not modelled, so assignedTo() behaves as principalId).
        if not (above or (not at_scope and scope_covers(scope, props["scope"]))):
            continue
        if principal and props["principalId"].lower() != principal.lower():
            continue
        found.append(assignment)
    return Response(200, {"value": found})


@route("GET", rf"(?P<scope>.*){PROVIDER}/roleAssignments")
def list_role_assignments(request: Request, state: State) -> Response:
    require_global_api_version(request, ROLE_ASSIGNMENT_API_VERSIONS, _NAMESPACE, "roleAssignments")
    return _list_assignments(request, state, _scope(request, state))


# ---------------------------------------------------------------------------------------------- seeding
@seeder(5)
def _seed_role_definitions(state: State) -> None:
    for role_name, guid, description, actions, not_actions, data_actions in BUILT_IN_ROLES:
        state.put(
            f"{PROVIDER}/roleDefinitions/{guid}",
            {
                "properties": {
                    "roleName": role_name,
                    "type": "BuiltInRole",
                    "description": description,
                    "assignableScopes": ["/"],
                    "permissions": [
                        {
                            "actions": list(actions),
                            "notActions": list(not_actions),
                            "dataActions": list(data_actions),
                            "notDataActions": [],
                        }
                    ],
                    "createdOn": "2015-02-02T21:55:09.8806423Z",  # UNVERIFIED per role; the recorded Reader value
                    "updatedOn": "2021-11-11T20:13:47.8628684Z",
                    "createdBy": None,
                    "updatedBy": None,
                },
                "id": f"{PROVIDER}/roleDefinitions/{guid}",
                "type": DEFINITION_TYPE,
                "name": guid,
            },
        )


def assign_role(
    state: State,
    scope: str,
    principal_id: str,
    role_name: str,
    principal_type: str = "ServicePrincipal",
    *,
    name: str | None = None,
    effective_now: bool = False,
) -> dict[str, Any]:
    """Create an assignment directly in state (seeders and tests); ``effective_now`` skips propagation."""
    scope = normalize_scope(scope)
    name = name or str(uuid.uuid4())
    assignment_id = _assignment_id(scope, name)
    now = utcnow_iso()
    body = {
        "properties": {
            "roleDefinitionId": f"/subscriptions/{state.config.subscription_id}{PROVIDER}/roleDefinitions/"
            f"{ROLE_IDS[role_name]}",
            "principalId": principal_id,
            "principalType": principal_type,
            "scope": scope,
            "condition": None,
            "conditionVersion": None,
            "createdOn": now,
            "updatedOn": now,
            "createdBy": None,
            "updatedBy": None,
            "delegatedManagedIdentityResourceId": None,
            "description": None,
        },
        "id": assignment_id,
        "type": ASSIGNMENT_TYPE,
        "name": name,
    }
    state.put(assignment_id, body)
    state.meta_of(assignment_id)["created"] = 0.0 if effective_now else state.now()
    return body


@seeder(40)
def _seed_deployer_owner(state: State) -> None:
    seed = state.config.seed
    if not seed.get("deployer_object_id"):
        return
    # The lab's deployer is Owner on the subscription from the start: effective at once, not subject to delay.
    name = str(uuid.uuid5(uuid.NAMESPACE_URL, f"owner/{seed['deployer_object_id']}"))
    assign_role(
        state,
        f"/subscriptions/{state.config.subscription_id}",
        seed["deployer_object_id"],
        "Owner",
        name=name,
        effective_now=True,
    )
