#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: role_assignment
short_description: Assign an Azure role to a principal at a scope, or remove the assignment
version_added: 0.1.0
description:
  - Ensures a principal, typically the user-assigned managed identity of a workload, holds an Azure role at a
    scope (a subscription, a resource group or a single resource such as a key vault), or no longer holds it.
  - Idempotent on the triple (O(scope), principal, O(role)), as Azure itself is, whatever the existing
    assignment is named. Only assignments exactly at O(scope) count; an assignment inherited from a parent scope
    or made on a child resource is neither reused nor removed.
  - A new assignment is named with a deterministic UUID (version 5) of scope, principal and role. Two runs that
    race therefore write the same name and both succeed; when the triple was assigned under another name between
    this module's read and its write, Azure answers 409 C(RoleAssignmentExists), which the module reports as
    present and unchanged, with a warning.
  - O(principal_type) is sent with every new assignment, so Azure accepts a managed identity that Microsoft Entra
    ID has not replicated yet. The rare 400 C(PrincipalNotFound) that can still follow the creation of an identity
    is retried, with backoff, for up to three minutes.
  - A run that changes nothing makes one Azure Resource Manager request, the list of the principal's assignments
    at the scope (C($filter=principalId eq '<id>')). O(identity_name) adds one GET of the identity. A O(role)
    given by a name other than the built-in roles this collection knows by GUID (V(Reader), V(Contributor),
    V(Key Vault Secrets User), V(Key Vault Secrets Officer), V(Key Vault Administrator)) adds one list of role
    definitions at the scope; any other role definition GUID or ID one GET of that definition. Creating adds one
    PUT; removing adds one DELETE per assignment. Not counted are the token request and the GET of the cloud
    metadata document when O(cloud_environment) is a URL.
  - Input is checked before any request; a bad value fails naming the option and the rule. What must exist (the
    identity, its resource group, the role definition, the scope's resource group) is found missing by reading,
    and the module fails naming the option before writing anything.
requirements:
  - azure-mgmt-authorization >= 4.0.0
  - azure-mgmt-msi >= 7.0.0 (only with O(identity_name))
extends_documentation_fragment:
  - aks.workload_identity.azure_auth
attributes:
  check_mode:
    support: full
    description: Reports what would change, with the same reads as a real run and no write.
  diff_mode:
    support: full
    description: Shows the assignment before and after, as the RV(role_assignment) dictionary.
  idempotent:
    support: full
    description: A second run with the same options reports no change and only reads.
options:
  scope:
    description:
      - The Azure resource ID the role is assigned at, for example V(/subscriptions/<id>/resourceGroups/rg-apps)
        or the ID of a key vault.
      - One of the scope formats of Azure RBAC, checked before any request, V(/),
        C(/providers/Microsoft.Management/managementGroups/<id>), C(/subscriptions/<GUID>), optionally followed by
        C(/resourceGroups/<name>) (a valid resource group name), optionally followed by
        C(/providers/<namespace>/<type>/<name>) segments; no whitespace, C(?), C(#) or C(%).
      - A scope in a resource group that does not exist fails after the read of its assignments, before any
        write.
      - Compared with existing assignments without regard to case or a trailing slash.
    type: str
    required: true
  role:
    description:
      - The role, as a role name (V(Key Vault Secrets User), V(Storage Blob Data Reader), a custom role's name),
        a role definition GUID, or a role definition ID
        (C(/subscriptions/<id>/providers/Microsoft.Authorization/roleDefinitions/<GUID>) or
        C(/providers/Microsoft.Authorization/roleDefinitions/<GUID>)).
      - Names are matched as Azure matches them, without regard to case; a name no role definition visible at
        O(scope) carries, or one several carry, is an error.
      - The built-in roles V(Reader), V(Contributor), V(Key Vault Secrets User), V(Key Vault Secrets Officer) and
        V(Key Vault Administrator), by name or GUID, are known without a request. Any other GUID or ID is read (one
        GET of the role definition, under the scope's subscription) before anything is written, and an unknown
        one fails the module, in check mode too.
    type: str
    required: true
  principal_id:
    description:
      - Object ID of the principal (for a managed identity, its principal ID), a GUID.
      - The cheapest way to name the principal. Mutually exclusive with O(identity_name).
    type: str
  identity_name:
    description:
      - Name of the user-assigned managed identity whose principal ID is used, read from O(identity_resource_group),
        3 to 128 letters, digits, V(-) or V(_), starting with a letter or digit.
      - When the identity (or its resource group) does not exist, O(state=present) fails before any write, naming
        the option to fix, except in check mode, where a warning says an earlier task would have created it;
        O(state=absent) has nothing to do.
    type: str
  identity_resource_group:
    description:
      - Resource group of O(identity_name), a valid resource group name. Required with it.
    type: str
  principal_type:
    description:
      - The principal's type, sent with a new assignment. Leave the default for managed identities and other
        service principals, as it lets Azure accept a principal created moments ago.
      - Not compared with existing assignments.
    type: str
    choices: [ServicePrincipal, User, Group, ForeignGroup, Device]
    default: ServicePrincipal
  state:
    description:
      - V(present) makes sure the principal holds the role at the scope.
      - V(absent) deletes every assignment of the role to the principal exactly at the scope.
    type: str
    choices: [present, absent]
    default: present
seealso:
  - module: aks.workload_identity.managed_identity
    description: Create the identity whose principal ID gets the role.
  - module: aks.workload_identity.keyvault_access
    description: Grant secret access on a key vault, whichever permission model it uses.
  - name: Assign Azure roles using the REST API
    description: The API this module calls.
    link: https://learn.microsoft.com/azure/role-based-access-control/role-assignments-rest
  - name: Azure built-in roles
    description: Role names and GUIDs.
    link: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
author:
  - Contributors to the aks.workload_identity collection (!UNKNOWN)
"""

EXAMPLES = r"""
---
- name: Let the workload's identity read the resources of its resource group
  aks.workload_identity.role_assignment:
    scope: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-apps
    role: Reader
    identity_resource_group: rg-apps
    identity_name: id-orders

- name: Grant a role by definition ID to a principal ID
  aks.workload_identity.role_assignment:
    scope: "{{ vault_id }}"
    role: /providers/Microsoft.Authorization/roleDefinitions/4633458b-17de-408a-b874-0445c86b69e6
    principal_id: "{{ orders_identity.managed_identity.principal_id }}"
  register: assignment

- name: See what removing the assignment would do, without doing it
  aks.workload_identity.role_assignment:
    scope: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-apps
    role: Reader
    identity_resource_group: rg-apps
    identity_name: id-orders
    state: absent
  check_mode: true
  diff: true

- name: Remove the assignment
  aks.workload_identity.role_assignment:
    scope: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-apps
    role: Reader
    identity_resource_group: rg-apps
    identity_name: id-orders
    state: absent
"""

RETURN = r"""
role_assignment:
  description:
    - The assignment after the run; empty when O(state=absent).
    - In check mode, for an identity that does not exist yet, RV(role_assignment.name),
      RV(role_assignment.id) and RV(role_assignment.principal_id) are null.
  returned: always
  type: dict
  contains:
    id:
      description: Azure resource ID of the assignment.
      type: str
      sample: "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-apps/providers/\
        Microsoft.Authorization/roleAssignments/5f0c8c3e-4a8e-5d4b-9a57-0d7c6a2e9b11"
    name:
      description: Name of the assignment, a GUID.
      type: str
      sample: 5f0c8c3e-4a8e-5d4b-9a57-0d7c6a2e9b11
    scope:
      description: The scope it is assigned at.
      type: str
      sample: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-apps
    role_definition_id:
      description: ID of the role definition.
      type: str
      sample: /subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7
    role_name:
      description: Name of the role; null for a role given by GUID or ID that is not a built-in role this collection knows.
      type: str
      sample: Reader
    principal_id:
      description: Object ID of the principal.
      type: str
      sample: 6e2b2a5c-1f0e-4a57-9c1c-1b5d3a4e8f90
    principal_type:
      description: Type of the principal.
      type: str
      sample: ServicePrincipal
principal_id:
  description: Object ID of the principal the module worked for; null when the identity named does not exist.
  returned: always
  type: str
  sample: 6e2b2a5c-1f0e-4a57-9c1c-1b5d3a4e8f90
"""

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import AzureModule
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.role_assignment import (
    DEFAULT_PRINCIPAL_TYPE,
    PRINCIPAL_TYPES,
    DesiredRoleAssignment,
    RoleAssignmentOutcome,
    reconcile_role_assignment,
    require_principal,
    resolve_principal,
    resolve_role,
    validate_role,
    validate_scope,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    validate_identity_name,
    validate_resource_group_name,
    validate_uuid,
)

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    "scope": {"type": "str", "required": True},
    "role": {"type": "str", "required": True},
    "principal_id": {"type": "str"},
    "identity_name": {"type": "str"},
    "identity_resource_group": {"type": "str"},
    "principal_type": {"type": "str", "choices": list(PRINCIPAL_TYPES), "default": DEFAULT_PRINCIPAL_TYPE},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
}
MODULE_KWARGS: dict[str, t.Any] = {
    "mutually_exclusive": [("principal_id", "identity_name"), ("principal_id", "identity_resource_group")],
    "required_one_of": [("principal_id", "identity_name")],
    "required_together": [("identity_name", "identity_resource_group")],
}


def check_input(params: dict[str, t.Any]) -> list[str]:
    """Every "option: rule" problem at once, before any request."""
    errors = [*validate_scope(params["scope"]), *validate_role(params["role"])]
    if params.get("principal_id") is not None:
        errors += validate_uuid(params["principal_id"], "principal_id")
    if params.get("identity_name") is not None:
        errors += validate_identity_name(params["identity_name"], "identity_name")
    if params.get("identity_resource_group") is not None:
        errors += validate_resource_group_name(params["identity_resource_group"], "identity_resource_group")
    return errors


def run(azure: AzureModule) -> tuple[RoleAssignmentOutcome, str | None]:
    params = azure.params
    principal = resolve_principal(
        azure,
        principal_id=params["principal_id"],
        identity_resource_group=params["identity_resource_group"],
        identity_name=params["identity_name"],
    )
    require_principal(principal, params["state"], azure.check_mode)
    role = resolve_role(azure, params["scope"], params["role"])
    desired = DesiredRoleAssignment(
        params["scope"], role, principal.principal_id, params["principal_type"], params["state"]
    )
    outcome = reconcile_role_assignment(azure, desired, azure.check_mode)
    if principal.principal_id is None:
        outcome.plan.warnings.append(f"{principal.missing}")
    return outcome, principal.principal_id


def main() -> None:
    azure = AzureModule(ARGUMENT_SPEC, supports_check_mode=True, **MODULE_KWARGS)
    errors = check_input(azure.params)
    if errors:
        azure.module.fail_json(msg="Invalid input: " + "; ".join(errors), errors=errors, error_code="InvalidParameter")
    try:
        outcome, principal_id = run(azure)
    except WorkloadIdentityError as exc:
        azure.fail(exc)
    for warning in outcome.plan.warnings:
        azure.warn(warning)
    azure.exit_json(
        changed=outcome.plan.changed,
        role_assignment=outcome.assignment or {},
        principal_id=principal_id,
        diff=outcome.plan.diff(),
    )


if __name__ == "__main__":
    main()
