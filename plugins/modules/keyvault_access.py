#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: keyvault_access
short_description: Grant or remove an identity's access to the secrets of an Azure Key Vault
version_added: 0.1.0
description:
  - Lets an identity, typically the user-assigned managed identity of a workload, read the secrets of a key vault,
    or takes that access away, on whichever permission model the vault uses. The vault decides, through its
    C(enableRbacAuthorization) property; nothing needs to be told.
  - On a vault using Azure role-based access control, the identity gets O(role) assigned at the vault's scope, by
    the same logic as M(aks.workload_identity.role_assignment) (idempotent on scope, principal and role; a
    deterministic assignment name; C(RoleAssignmentExists) counts as present; C(PrincipalNotFound) retried).
  - On a vault using access policies, the identity's object (principal) ID gets an access policy entry with
    O(secret_permissions), merged into what the entry already grants. The module changes the vault only through
    its C(accessPolicies/add) and C(accessPolicies/remove) operations, which work on one identity's entry, so
    other principals' entries are never rewritten, even by concurrent runs.
  - O(state=absent) removes only what this module grants, the role assignment of that role at the vault, or the
    O(secret_permissions) from the identity's entry (an entry left with no permission at all is removed by Key
    Vault). Permissions and roles granted by other means stay.
  - A run that changes nothing makes one Azure Resource Manager request on an access-policy vault, the GET of the
    vault (its access policies come with it), and two on an RBAC vault, the GET and the list of the principal's
    role assignments at the vault. Naming the identity by O(identity_name) adds one GET of the identity; by
    O(identity_client_id) alone, one list of all user-assigned identities in the subscription (paged, so more
    than one request in subscriptions with many identities). O(principal_id) is the cheapest. A O(role) other
    than the built-in roles this collection knows by GUID adds one list of role definitions (a name) or one GET
    of the role definition (a GUID or ID). A change adds one write (PUT), or one DELETE per removed role
    assignment. Not counted are the token request and the GET of the cloud metadata document when
    O(cloud_environment) is a URL.
  - Input is checked before any request; a bad value fails naming the option and the rule. What must exist (the
    vault, its resource group, the identity, the role definition) is found missing by reading, and the module
    fails naming the option before writing anything; a missing identity is only a warning in check mode, as an
    earlier task of the play may create it.
requirements:
  - azure-mgmt-keyvault >= 14.1.0
  - azure-mgmt-authorization >= 4.0.0
  - azure-mgmt-msi >= 7.0.0 (only with O(identity_name) or O(identity_client_id))
extends_documentation_fragment:
  - aks.workload_identity.azure_auth
attributes:
  check_mode:
    support: full
    description: Reports what would change, with the same reads as a real run and no write.
  diff_mode:
    support: full
    description:
      - Shows what the identity is granted before and after, the role assignment on an RBAC vault, the identity's
        access policy entry (tenant ID, object ID, secret permissions) on an access-policy vault.
  idempotent:
    support: full
    description: A second run with the same options reports no change and only reads.
options:
  vault_name:
    description:
      - Name of the key vault, in O(resource_group), 3 to 24 letters, digits and V(-), starting with a letter,
        ending with a letter or digit, without two V(-) in a row.
      - The vault must exist (this module does not create vaults); a missing one fails after its GET, in check mode
        too, before any write. With O(state=absent) a missing vault has nothing to remove.
      - Mutually exclusive with O(vault_id).
    type: str
  resource_group:
    description:
      - Resource group of O(vault_name), a valid resource group name. Required with it, mutually exclusive with
        O(vault_id).
    type: str
  vault_id:
    description:
      - Azure resource ID of the key vault, instead of O(vault_name) and O(resource_group),
        C(/subscriptions/<GUID>/resourceGroups/<group>/providers/Microsoft.KeyVault/vaults/<name>), the group and
        the name following the rules of O(resource_group) and O(vault_name). The vault must be in
        O(subscription_id).
    type: str
  principal_id:
    description:
      - Object ID (for a managed identity, its principal ID) of the identity, a GUID. The cheapest way to name it.
      - Mutually exclusive with O(identity_name) and O(identity_client_id).
    type: str
  identity_client_id:
    description:
      - Client ID of the user-assigned managed identity, a GUID.
      - With O(identity_name), the identity read must have this client ID. Alone, it is looked up in a list of the
        subscription's user-assigned identities. For other service principals give O(principal_id).
      - Named so as not to clash with O(client_id), the client ID the module authenticates with.
    type: str
  identity_name:
    description:
      - Name of the user-assigned managed identity, read from O(identity_resource_group), 3 to 128 letters,
        digits, V(-) or V(_), starting with a letter or digit.
      - When the identity (or its resource group) does not exist, O(state=present) fails before any write, naming
        the option to fix, except in check mode, where a warning says an earlier task would have created it.
    type: str
  identity_resource_group:
    description:
      - Resource group of O(identity_name), a valid resource group name. Defaults to the vault's resource group.
      - Requires O(identity_name).
    type: str
  secret_permissions:
    description:
      - Secret permissions to grant on a vault using access policies, at least one.
      - Defaults to V(get), which is what a workload reading its secrets needs, as Microsoft's workload identity
        quickstart grants it. V(list) is left out on purpose; add it when the workload enumerates secrets.
      - Ignored, with a warning, on a vault using Azure RBAC (see O(role)).
    type: list
    elements: str
    choices: [get, list, set, delete, backup, restore, recover, purge]
  role:
    description:
      - Role to assign at the vault's scope on a vault using Azure RBAC, by name, GUID or role definition ID.
      - A role other than the built-in roles this collection knows is read before anything is written; an unknown
        one fails the module, in check mode too.
      - Defaults to V(Key Vault Secrets User), which reads secret contents (and secret metadata, so it can also
        list secrets' names, unlike the V(get) access policy).
      - Ignored, with a warning, on a vault using access policies (see O(secret_permissions)).
    type: str
  principal_type:
    description:
      - Principal type sent with a new role assignment (RBAC vaults). Leave the default for managed identities.
    type: str
    choices: [ServicePrincipal, User, Group, ForeignGroup, Device]
    default: ServicePrincipal
  state:
    description:
      - V(present) makes sure the identity has the access.
      - V(absent) removes the access this module grants. A vault that does not exist has nothing to remove.
    type: str
    choices: [present, absent]
    default: present
seealso:
  - module: aks.workload_identity.role_assignment
    description: Assign any role at any scope.
  - module: aks.workload_identity.managed_identity
    description: Create the identity.
  - name: Provide access to Key Vault keys, certificates, and secrets with Azure role-based access control
    description: The RBAC permission model.
    link: https://learn.microsoft.com/azure/key-vault/general/rbac-guide
  - name: Assign a Key Vault access policy
    description: The access policy permission model.
    link: https://learn.microsoft.com/azure/key-vault/general/assign-access-policy
author:
  - Contributors to the aks.workload_identity collection (!UNKNOWN)
"""

EXAMPLES = r"""
---
- name: Let the workload's identity read the secrets of its vault (RBAC or access policies)
  aks.workload_identity.keyvault_access:
    resource_group: rg-apps
    vault_name: kv-orders
    identity_name: id-orders
  register: access

- name: Say how access was granted
  ansible.builtin.debug:
    msg: "{{ access.keyvault_access.model }} on {{ access.keyvault_access.vault.vault_uri }}"

- name: Also let it list secrets, by vault ID and principal ID
  aks.workload_identity.keyvault_access:
    vault_id: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-apps/providers/Microsoft.KeyVault/vaults/kv-orders
    principal_id: "{{ orders_identity.managed_identity.principal_id }}"
    secret_permissions: [get, list]

- name: See what removing the access would do, without doing it
  aks.workload_identity.keyvault_access:
    resource_group: rg-apps
    vault_name: kv-orders
    identity_name: id-orders
    state: absent
  check_mode: true
  diff: true

- name: Remove the access
  aks.workload_identity.keyvault_access:
    resource_group: rg-apps
    vault_name: kv-orders
    identity_name: id-orders
    state: absent
"""

RETURN = r"""
keyvault_access:
  description: How the vault grants access and what the identity holds after the run.
  returned: always
  type: dict
  contains:
    model:
      description:
        - The vault's permission model, V(rbac) or V(access_policy).
        - Null when O(state=absent) and the vault does not exist.
      type: str
      sample: access_policy
    vault:
      description: The vault; empty when it does not exist.
      type: dict
      contains:
        id:
          description: Azure resource ID of the vault.
          type: str
          sample: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-apps/providers/Microsoft.KeyVault/vaults/kv-orders
        name:
          description: Name of the vault.
          type: str
          sample: kv-orders
        resource_group:
          description: Resource group of the vault.
          type: str
          sample: rg-apps
        vault_uri:
          description: The vault's data-plane URI, what the workload's SecretClient connects to.
          type: str
          sample: https://kv-orders.vault.azure.net/
        enable_rbac_authorization:
          description: Whether the vault uses Azure RBAC (true) or access policies (false).
          type: bool
          sample: false
    principal_id:
      description: Object ID of the identity; null when the identity named does not exist.
      type: str
      sample: 6e2b2a5c-1f0e-4a57-9c1c-1b5d3a4e8f90
    role_assignment:
      description:
        - On an RBAC vault, the assignment of O(role) at the vault after the run (as returned by
          M(aks.workload_identity.role_assignment)); empty when there is none or the vault uses access policies.
      type: dict
      sample:
        id: "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-apps/providers/Microsoft.KeyVault/\
          vaults/kv-orders/providers/Microsoft.Authorization/roleAssignments/5f0c8c3e-4a8e-5d4b-9a57-0d7c6a2e9b11"
        name: 5f0c8c3e-4a8e-5d4b-9a57-0d7c6a2e9b11
        scope: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-apps/providers/Microsoft.KeyVault/vaults/kv-orders
        role_definition_id: "/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.Authorization/\
          roleDefinitions/4633458b-17de-408a-b874-0445c86b69e6"
        role_name: Key Vault Secrets User
        principal_id: 6e2b2a5c-1f0e-4a57-9c1c-1b5d3a4e8f90
        principal_type: ServicePrincipal
    access_policy:
      description:
        - On an access-policy vault, the identity's entry after the run; empty when it has none or the vault uses
          RBAC. RV(keyvault_access.access_policy.secret_permissions) lists all the secret permissions the entry
          grants, including ones granted by other means.
      type: dict
      contains:
        tenant_id:
          description: Tenant of the entry, the vault's.
          type: str
          sample: 72f988bf-86f1-41af-91ab-2d7cd011db47
        object_id:
          description: Object ID of the identity.
          type: str
          sample: 6e2b2a5c-1f0e-4a57-9c1c-1b5d3a4e8f90
        secret_permissions:
          description: The secret permissions granted.
          type: list
          elements: str
          sample: [get]
"""

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import AzureModule
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.keyvault_access import (
    DEFAULT_ROLE,
    DEFAULT_SECRET_PERMISSIONS,
    MODEL_ACCESS_POLICY,
    MODEL_RBAC,
    SECRET_PERMISSIONS,
    DesiredKeyVaultAccess,
    KeyVaultAccessOutcome,
    parse_vault_id,
    reconcile_keyvault_access,
    validate_secret_permissions,
    validate_vault_id,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.role_assignment import (
    DEFAULT_PRINCIPAL_TYPE,
    PRINCIPAL_TYPES,
    Principal,
    require_principal,
    resolve_principal,
    validate_role,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    validate_identity_name,
    validate_keyvault_name,
    validate_resource_group_name,
    validate_uuid,
)

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    "vault_name": {"type": "str"},
    "resource_group": {"type": "str"},
    "vault_id": {"type": "str"},
    "principal_id": {"type": "str"},
    "identity_client_id": {"type": "str"},
    "identity_name": {"type": "str"},
    "identity_resource_group": {"type": "str"},
    "secret_permissions": {"type": "list", "elements": "str", "choices": list(SECRET_PERMISSIONS)},
    "role": {"type": "str"},
    "principal_type": {"type": "str", "choices": list(PRINCIPAL_TYPES), "default": DEFAULT_PRINCIPAL_TYPE},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
}
MODULE_KWARGS: dict[str, t.Any] = {
    "mutually_exclusive": [
        ("vault_name", "vault_id"),
        ("vault_id", "resource_group"),
        ("principal_id", "identity_name"),
        ("principal_id", "identity_client_id"),
        ("principal_id", "identity_resource_group"),
    ],
    "required_one_of": [("vault_name", "vault_id"), ("principal_id", "identity_name", "identity_client_id")],
    "required_by": {"vault_name": "resource_group", "identity_resource_group": "identity_name"},
}


def check_input(params: dict[str, t.Any]) -> list[str]:
    """Every "option: rule" problem at once, before any request."""
    errors = []
    if params["vault_id"] is not None:
        errors += validate_vault_id(params["vault_id"])
    if params["vault_name"] is not None:
        errors += validate_keyvault_name(params["vault_name"])
    if params["resource_group"] is not None:
        errors += validate_resource_group_name(params["resource_group"])
    if params["principal_id"] is not None:
        errors += validate_uuid(params["principal_id"], "principal_id")
    if params["identity_client_id"] is not None:
        errors += validate_uuid(params["identity_client_id"], "identity_client_id")
    if params["identity_name"] is not None:
        errors += validate_identity_name(params["identity_name"], "identity_name")
    if params["identity_resource_group"] is not None:
        errors += validate_resource_group_name(params["identity_resource_group"], "identity_resource_group")
    if params["secret_permissions"] is not None:
        errors += validate_secret_permissions(params["secret_permissions"])
    if params["role"] is not None:
        errors += validate_role(params["role"])
    return errors


def vault_subscription_errors(azure: AzureModule) -> list[str]:
    """O(vault_id) must be in the subscription the module works in (no request: the option or the environment)."""
    if not azure.params["vault_id"]:
        return []
    subscription = t.cast("tuple[str, str, str]", parse_vault_id(azure.params["vault_id"]))[0]
    if subscription.lower() == azure.subscription_id.lower():
        return []
    return [
        f"vault_id: the vault is in subscription {subscription}, not in subscription_id {azure.subscription_id}; run "
        "the module with subscription_id set to the vault's"
    ]


def vault_location(params: dict[str, t.Any]) -> tuple[str, str, str, str]:
    """(resource group, name) of the vault, and the options that gave them (to name in errors)."""
    if not params["vault_id"]:
        return params["resource_group"], params["vault_name"], "vault_name", "resource_group"
    _subscription, resource_group, name = t.cast("tuple[str, str, str]", parse_vault_id(params["vault_id"]))
    return resource_group, name, "vault_id", "vault_id"


def principal_of(azure: AzureModule, vault_resource_group: str, vault_group_option: str) -> Principal:
    params = azure.params
    return resolve_principal(
        azure,
        principal_id=params["principal_id"],
        client_id=params["identity_client_id"],
        identity_resource_group=params["identity_resource_group"] or vault_resource_group,
        identity_name=params["identity_name"],
        group_option="identity_resource_group" if params["identity_resource_group"] else vault_group_option,
    )


def ignored_options(azure: AzureModule, model: str | None) -> list[str]:
    """Warnings for the option meant for the other permission model."""
    if model == MODEL_RBAC and azure.params["secret_permissions"] is not None:
        return ["secret_permissions is ignored: the vault uses Azure RBAC, so access is granted by the role option"]
    if model == MODEL_ACCESS_POLICY and azure.params["role"] is not None:
        return ["role is ignored: the vault uses access policies, so access is granted by secret_permissions"]
    return []


def run(azure: AzureModule) -> tuple[KeyVaultAccessOutcome, Principal]:
    params = azure.params
    resource_group, vault_name, vault_option, group_option = vault_location(params)
    principal = principal_of(azure, resource_group, group_option)
    require_principal(principal, params["state"], azure.check_mode)
    desired = DesiredKeyVaultAccess(
        principal_id=principal.principal_id,
        secret_permissions=tuple(params["secret_permissions"] or DEFAULT_SECRET_PERMISSIONS),
        role=params["role"] or DEFAULT_ROLE,
        principal_type=params["principal_type"],
        state=params["state"],
    )
    outcome = reconcile_keyvault_access(
        azure,
        resource_group,
        vault_name,
        desired,
        azure.check_mode,
        vault_option=vault_option,
        group_option=group_option,
    )
    outcome.plan.warnings.extend(ignored_options(azure, outcome.model))
    if principal.principal_id is None:
        outcome.plan.warnings.append(f"{principal.missing}")
    return outcome, principal


def result(outcome: KeyVaultAccessOutcome, principal: Principal) -> dict[str, t.Any]:
    vault = outcome.vault or {}
    return {
        "model": outcome.model,
        "vault": {k: vault[k] for k in ("id", "name", "resource_group", "vault_uri", "enable_rbac_authorization")}
        if vault
        else {},
        "principal_id": principal.principal_id,
        "role_assignment": outcome.role_assignment or {},
        "access_policy": outcome.access_policy or {},
    }


def main() -> None:
    azure = AzureModule(ARGUMENT_SPEC, supports_check_mode=True, **MODULE_KWARGS)
    try:
        errors = check_input(azure.params) or vault_subscription_errors(azure)
        if errors:
            azure.module.fail_json(
                msg="Invalid input: " + "; ".join(errors), errors=errors, error_code="InvalidParameter"
            )
        outcome, principal = run(azure)
    except WorkloadIdentityError as exc:
        azure.fail(exc)
    for warning in outcome.plan.warnings:
        azure.warn(warning)
    azure.exit_json(changed=outcome.plan.changed, keyvault_access=result(outcome, principal), diff=outcome.plan.diff())


if __name__ == "__main__":
    main()
