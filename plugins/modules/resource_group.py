#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: resource_group
short_description: Create, update or delete an Azure resource group
version_added: 0.1.0
description:
  - Creates an Azure resource group, updates its tags, or deletes it, as C(az group create) and
    C(az group delete --yes) do at the start and the end of the Microsoft Entra Workload ID quickstart.
  - Deleting a resource group deletes B(every resource in it), whoever created them (clusters, identities with
    their federated credentials, key vaults). There is no undo, and no confirmation beyond O(state=absent)
    itself, exactly like C(az group delete --yes). Run the task in check mode with diff first to see which group
    would go.
  - A group managed by another resource, such as the node resource group (C(MC_...)) of an AKS cluster, is
    never deleted; the module fails before writing and names the resource to delete instead.
  - A run that changes nothing makes one Azure Resource Manager request, a GET of the group. Creating adds one
    PUT, a tag change one PATCH, a delete one DELETE and, with O(wait=true), a GET of the deletion's status every
    O(lro_polling_interval) seconds until it ends.
  - Azure cannot move a resource group to another region. When O(location) differs from the existing group's,
    the module fails before writing anything.
requirements:
  - azure-mgmt-resource >= 23.0.0
extends_documentation_fragment:
  - aks.workload_identity.azure_auth
attributes:
  check_mode:
    support: full
    description: Reports what would change, with the same read as a real run and no write.
  diff_mode:
    support: full
    description: Shows the resource group before and after, as the RV(resource_group) dictionary.
  idempotent:
    support: full
    description: A second run with the same options reports no change and only reads.
options:
  name:
    description:
      - Name of the resource group, 1 to 90 letters, digits, underscores, hyphens, periods or parentheses, not
        ending with a period.
    type: str
    required: true
  location:
    description:
      - Azure region to create the group in, for example V(eastus) or V(East US). Required when the group does not
        exist.
      - For an existing group it is only compared; a different location is an error, as Azure cannot move
        resource groups.
    type: str
  tags:
    description:
      - Tags of the group, as a dictionary of strings (quote numbers and booleans in YAML).
      - Azure's limits apply and are checked before any request, at most 50 tags, names of 1 to 512 characters
        without any of C(<>%&\?/) and unique regardless of case, values of at most 256 characters.
      - When not set, the group's tags are left as they are.
      - See O(purge_tags) for tags not listed here.
    type: dict
  purge_tags:
    description:
      - With V(true), the group ends up with exactly O(tags); tags not listed are removed.
      - With V(false), O(tags) are added or updated and other tags are kept.
      - Has no effect when O(tags) is not set.
    type: bool
    default: true
  state:
    description:
      - V(present) creates the group or updates its tags.
      - V(absent) deletes the group B(and everything in it).
    type: str
    choices: [present, absent]
    default: present
  wait:
    description:
      - With O(state=absent), wait until Azure has deleted the group and all its resources, which takes minutes
        when it holds an AKS cluster.
      - With V(false) the module returns as soon as Azure accepted the deletion; the group is then still
        visible, in provisioning state C(Deleting), for a while.
    type: bool
    default: true
  wait_timeout:
    description:
      - How many seconds to wait for the deletion with O(wait=true), 1 to 86400 (a day).
      - When the time is up the module fails; Azure goes on deleting the group.
    type: int
    default: 1800
seealso:
  - module: aks.workload_identity.aks_cluster
    description: Creates the resource group together with an AKS cluster.
  - name: Manage Azure resource groups
    description: Microsoft's guide, including what deleting a group deletes.
    link: https://learn.microsoft.com/azure/azure-resource-manager/management/manage-resource-groups-portal
author:
  - Contributors to the aks.workload_identity collection (!UNKNOWN)
"""

EXAMPLES = r"""
---
- name: Create the resource group of the workload identity demo
  aks.workload_identity.resource_group:
    name: rg-wid-demo
    location: eastus
    tags:
      purpose: workload-identity-demo
  register: demo_group

- name: Add a tag and keep the others
  aks.workload_identity.resource_group:
    name: rg-wid-demo
    tags:
      owner: platform-team
    purge_tags: false

- name: See which group deleting would remove, without doing it
  aks.workload_identity.resource_group:
    name: rg-wid-demo
    state: absent
  check_mode: true
  diff: true

- name: Delete the demo resource group and everything in it (az group delete --yes)
  aks.workload_identity.resource_group:
    name: rg-wid-demo
    state: absent
"""

RETURN = r"""
resource_group:
  description:
    - The resource group after the run; empty when O(state=absent).
  returned: always
  type: dict
  contains:
    id:
      description: Azure resource ID of the group.
      type: str
      sample: "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-wid-demo"
    name:
      description: Name of the group.
      type: str
      sample: rg-wid-demo
    location:
      description: Azure region of the group.
      type: str
      sample: eastus
    tags:
      description: Tags of the group.
      type: dict
      sample: {"purpose": "workload-identity-demo"}
    managed_by:
      description: ID of the resource that manages the group (an AKS cluster for its node resource group), or null.
      type: str
      sample: null
    provisioning_state:
      description: Provisioning state of the group, C(Succeeded) once created.
      type: str
      sample: Succeeded
diff:
  description: The group before and after the run (an empty dictionary for an absent group).
  returned: always
  type: dict
  contains:
    before:
      description: The group before the run.
      type: dict
    after:
      description: The group after the run.
      type: dict
"""

from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import (
    AzureModule,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import (
    WorkloadIdentityError,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.resource_group import (
    DesiredResourceGroup,
    reconcile,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    validate_location,
    validate_resource_group_name,
    validate_tags,
    validate_wait_timeout,
)

ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True},
    "location": {"type": "str"},
    "tags": {"type": "dict"},
    "purge_tags": {"type": "bool", "default": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "wait": {"type": "bool", "default": True},
    "wait_timeout": {"type": "int", "default": 1800},
}


def check_input(params: dict) -> list[str]:
    """Every "option: rule" problem at once, before any request."""
    return [
        *validate_resource_group_name(params["name"], "name"),
        *validate_location(params["location"]),
        *validate_tags(params["tags"]),
        *validate_wait_timeout(params["wait_timeout"]),
    ]


def desired_resource_group(params: dict) -> DesiredResourceGroup:
    tags = params["tags"]
    return DesiredResourceGroup(
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
        decided, group = reconcile(
            azure,
            desired_resource_group(azure.params),
            wait=azure.params["wait"],
            wait_timeout=azure.params["wait_timeout"],
        )
    except WorkloadIdentityError as exc:
        azure.fail(exc)
    for warning in decided.warnings:
        azure.warn(warning)
    azure.exit_json(changed=decided.changed, resource_group=group or {}, diff=decided.diff())


if __name__ == "__main__":
    main()
