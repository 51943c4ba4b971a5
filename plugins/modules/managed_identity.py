#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: managed_identity
short_description: Create, update or delete a user-assigned managed identity
version_added: 0.1.0
description:
  - Creates, updates (tags) or deletes an Azure user-assigned managed identity, the identity a workload uses
    through Microsoft Entra Workload ID.
  - Returns the identity's client ID, which the workload's Kubernetes ServiceAccount is annotated with, its
    principal ID, which role assignments name, and its tenant ID.
  - A run that changes nothing makes one Azure Resource Manager request, a GET of the identity. Creating adds a
    GET of the resource group (which must exist; its location is the default) and one PUT; a tag change adds one
    PATCH; a delete adds one DELETE.
  - Azure cannot move an identity to another region. When O(location) differs from the existing identity's, the
    module fails before writing anything.
requirements:
  - azure-mgmt-msi >= 7.0.0
  - azure-mgmt-resource >= 23.0.0 (only to read the resource group before a create)
extends_documentation_fragment:
  - aks.workload_identity.azure_auth
attributes:
  check_mode:
    support: full
    description: Reports what would change, with the same reads as a real run and no write.
  diff_mode:
    support: full
    description: Shows the identity before and after, as the RV(managed_identity) dictionary.
  idempotent:
    support: full
    description: A second run with the same options reports no change and only reads.
options:
  resource_group:
    description:
      - Name of the resource group of the identity, 1 to 90 letters, digits, underscores, hyphens, periods or
        parentheses, not ending with a period.
      - It must exist; creating an identity in a group that does not exist fails after one GET of the group, in
        check mode too, and nothing is written.
    type: str
    required: true
  name:
    description:
      - Name of the user-assigned managed identity.
      - 3-128 letters, digits, V(-) or V(_), starting with a letter or digit (Azure's naming rule); checked
        before any request.
    type: str
    required: true
  location:
    description:
      - Azure region to create the identity in, for example V(westeurope) or V(West Europe).
      - Defaults to the location of O(resource_group), read only when the identity has to be created.
      - Only used when creating. A different location for an existing identity is an error, as Azure cannot
        move identities.
    type: str
  tags:
    description:
      - Tags of the identity, as a dictionary of strings (quote numbers and booleans in YAML).
      - Azure's limits apply and are checked before any request, at most 50 tags, names of 1 to 512 characters
        without any of C(<>%&\?/) and unique regardless of case, values of at most 256 characters.
      - When not set, the identity's tags are left as they are.
      - See O(purge_tags) for tags not listed here.
    type: dict
  purge_tags:
    description:
      - With V(true), the identity ends up with exactly O(tags); tags not listed are removed.
      - With V(false), O(tags) are added or updated and other tags are kept.
      - Has no effect when O(tags) is not set.
    type: bool
    default: true
  state:
    description:
      - V(present) creates the identity or updates its tags.
      - V(absent) deletes it. Azure deletes its federated credentials with it; role assignments naming its
        principal ID stay behind (shown as "Identity not found") until removed.
    type: str
    choices: [present, absent]
    default: present
seealso:
  - module: aks.workload_identity.federated_credential
    description: Federate the identity with a Kubernetes ServiceAccount.
  - module: aks.workload_identity.role_assignment
    description: Grant the identity a role.
  - name: Manage user-assigned managed identities
    description: Microsoft's guide.
    link: https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-manage-user-assigned-managed-identities
author:
  - Contributors to the aks.workload_identity collection (!UNKNOWN)
"""

EXAMPLES = r"""
---
- name: Create a user-assigned managed identity in the resource group's location
  aks.workload_identity.managed_identity:
    resource_group: rg-apps
    name: id-orders
    tags:
      team: orders
  register: orders_identity

- name: Show the client ID to annotate the ServiceAccount with
  ansible.builtin.debug:
    msg: "{{ orders_identity.managed_identity.client_id }}"

- name: Add a tag and keep the others
  aks.workload_identity.managed_identity:
    resource_group: rg-apps
    name: id-orders
    tags:
      cost-center: "4711"
    purge_tags: false

- name: See what deleting the identity would do, without doing it
  aks.workload_identity.managed_identity:
    resource_group: rg-apps
    name: id-orders
    state: absent
  check_mode: true
  diff: true

- name: Delete the identity
  aks.workload_identity.managed_identity:
    resource_group: rg-apps
    name: id-orders
    state: absent
"""

RETURN = r"""
managed_identity:
  description:
    - The identity after the run; empty when O(state=absent).
    - In check mode, when the identity would be created, the IDs Azure assigns on creation are null.
  returned: always
  type: dict
  contains:
    id:
      description: Azure resource ID of the identity.
      type: str
      sample: "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-apps/providers/\
        Microsoft.ManagedIdentity/userAssignedIdentities/id-orders"
    name:
      description: Name of the identity.
      type: str
      sample: id-orders
    location:
      description: Azure region of the identity.
      type: str
      sample: westeurope
    tags:
      description: Tags of the identity.
      type: dict
      sample: {"team": "orders"}
    client_id:
      description:
        - Client (application) ID of the identity; the value of the
          C(azure.workload.identity/client-id) ServiceAccount annotation.
      type: str
      sample: 3f2a9c1b-0d4e-4c6b-9a8f-1e2d3c4b5a69
    principal_id:
      description: Object ID of the identity's service principal; role assignments name it.
      type: str
      sample: 5e1a0f5c-8b9d-4c3e-a2f1-0d6b7c8e9f10
    tenant_id:
      description: Microsoft Entra tenant ID of the identity.
      type: str
      sample: 72f988bf-86f1-41af-91ab-2d7cd011db47
diff:
  description: The identity before and after the run (an empty dictionary for an absent identity).
  returned: always
  type: dict
  contains:
    before:
      description: The identity before the run.
      type: dict
    after:
      description: The identity after the run.
      type: dict
"""

from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import (
    AzureModule,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import (
    WorkloadIdentityError,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.identity import (
    DesiredIdentity,
    reconcile,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    validate_identity_name,
    validate_location,
    validate_resource_group_name,
    validate_tags,
)

ARGUMENT_SPEC = {
    "resource_group": {"type": "str", "required": True},
    "name": {"type": "str", "required": True},
    "location": {"type": "str"},
    "tags": {"type": "dict"},
    "purge_tags": {"type": "bool", "default": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
}


def check_input(params: dict) -> list[str]:
    """Every "option: rule" problem at once, before any request."""
    return [
        *validate_resource_group_name(params["resource_group"]),
        *validate_identity_name(params["name"]),
        *validate_location(params["location"]),
        *validate_tags(params["tags"]),
    ]


def desired_identity(params: dict) -> DesiredIdentity:
    tags = params["tags"]
    return DesiredIdentity(
        resource_group=params["resource_group"],
        name=params["name"],
        state=params["state"],
        location=params["location"],
        tags=None if tags is None else dict(tags),  # strings only (check_input)
        purge_tags=params["purge_tags"],
    )


def main() -> None:
    azure = AzureModule(ARGUMENT_SPEC, supports_check_mode=True)
    errors = check_input(azure.params)
    if errors:
        azure.module.fail_json(msg="Invalid input: " + "; ".join(errors), errors=errors, error_code="InvalidParameter")
    try:
        decided, identity = reconcile(azure, desired_identity(azure.params))
    except WorkloadIdentityError as exc:
        azure.fail(exc)
    for warning in decided.warnings:
        azure.warn(warning)
    azure.exit_json(changed=decided.changed, managed_identity=identity or {}, diff=decided.diff())


if __name__ == "__main__":
    main()
