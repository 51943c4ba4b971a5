#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aks_identity_binding_info
short_description: List the identity bindings of an AKS cluster
version_added: 0.2.0
description:
  - Returns the AKS identity bindings (C(Microsoft.ContainerService/managedClusters/identityBindings)) of one cluster,
    or the one named O(name), each with its identity's IDs and the OIDC issuer AKS assigned to the identity.
  - "Requests: one list of the cluster's bindings (one request per page), whether O(name) is set or not. A cluster
    that does not exist fails the module, naming O(cluster_name), or O(resource_group) after one GET of the group
    when that is what is missing."
  - Never writes anything.
requirements:
  - python >= 3.10
  - azure-identity
  - azure-mgmt-containerservice >= 41.3.0 (the first release with identity bindings, API version 2026-04-01)
  - azure-mgmt-resource >= 23.0.0 (only to tell a missing resource group from a missing cluster)
extends_documentation_fragment:
  - aks.workload_identity.azure_auth
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying the target.
    support: full
    details:
      - A read-only module; check mode changes nothing in what it does.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode).
    support: none
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
  action_group:
    description: Use C(group/aks.workload_identity.azure) in C(module_defaults) to set its options.
    support: full
    membership:
      - aks.workload_identity.azure
options:
  resource_group:
    description:
      - Resource group of the AKS cluster, 1 to 90 letters, digits, underscores, hyphens, periods or parentheses, not
        ending with a period.
    type: str
    required: true
  cluster_name:
    description:
      - Name of the AKS cluster, 1 to 63 letters, digits, V(-) or V(_), starting and ending alphanumeric.
    type: str
    required: true
  name:
    description:
      - Name of one binding to return (1 to 63 lower-case letters or digits, starting with a letter);
        RV(identity_bindings) is then empty when the cluster has no binding of that name.
      - Omit it to return every binding of the cluster.
    type: str
seealso:
  - module: aks.workload_identity.aks_identity_binding
    description: Create or delete a binding.
  - name: Identity bindings (concepts)
    description: What an identity binding is and when to use one.
    link: https://learn.microsoft.com/azure/aks/identity-bindings-concepts
  - name: Set up identity bindings on AKS
    description: Microsoft's walk-through.
    link: https://learn.microsoft.com/azure/aks/identity-bindings
author:
  - Contributors to the aks.workload_identity collection (!UNKNOWN)
"""

EXAMPLES = r"""
---
- name: List the identity bindings of the cluster
  aks.workload_identity.aks_identity_binding_info:
    resource_group: rg-apps
    cluster_name: aks-apps
  register: bindings

- name: Show which identities the cluster binds
  ansible.builtin.debug:
    msg: "{{ bindings.identity_bindings | map(attribute='identity_id') | list }}"

- name: Read one binding by name
  aks.workload_identity.aks_identity_binding_info:
    resource_group: rg-apps
    cluster_name: aks-apps
    name: idorders
  register: orders_binding
"""

RETURN = r"""
identity_bindings:
  description: The cluster's bindings (only the one named O(name) when it is set), sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Resource ID of the binding.
      type: str
      sample: "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-apps/providers/\
        Microsoft.ContainerService/managedClusters/aks-apps/identityBindings/idorders"
    name:
      description: Name of the binding.
      type: str
      sample: idorders
    resource_group:
      description: Resource group of the cluster.
      type: str
      sample: rg-apps
    cluster_name:
      description: Name of the cluster.
      type: str
      sample: aks-apps
    identity_id:
      description: Resource ID of the bound identity.
      type: str
      sample: "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-apps/providers/\
        Microsoft.ManagedIdentity/userAssignedIdentities/id-orders"
    client_id:
      description: Client ID of the identity.
      type: str
      sample: 3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f
    principal_id:
      description: Object (principal) ID of the identity.
      type: str
      sample: 9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d
    tenant_id:
      description: Tenant of the identity.
      type: str
      sample: 72f988bf-86f1-41af-91ab-2d7cd011db47
    issuer_url:
      description: The OIDC issuer AKS assigned to the identity, without a trailing slash.
      type: str
      sample: https://ib.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f
    provisioning_state:
      description: Provisioning state of the binding, C(Succeeded) once created.
      type: str
      sample: Succeeded
    etag:
      description: The binding's entity tag.
      type: str
      sample: 0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b
credential_name:
  description: Name of the federated credential AKS keeps on each bound identity for all its bindings.
  returned: always
  type: str
  sample: aks-identity-binding
"""

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import AzureModule
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.identity_binding import (
    DesiredIdentityBinding,
    read_bindings,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    IDENTITY_BINDING_CREDENTIAL_NAME,
    validate_cluster_name,
    validate_identity_binding_name,
    validate_resource_group_name,
)

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    "resource_group": {"type": "str", "required": True},
    "cluster_name": {"type": "str", "required": True},
    "name": {"type": "str"},
}


def check_input(params: dict[str, t.Any]) -> list[str]:
    """Every "option: rule" problem at once, before any request."""
    errors = validate_resource_group_name(params["resource_group"])
    errors += validate_cluster_name(params["cluster_name"], "cluster_name")
    if params["name"] is not None:
        errors += validate_identity_binding_name(params["name"], "name")
    return errors


def main() -> None:
    azure = AzureModule(ARGUMENT_SPEC, supports_check_mode=True)
    params = azure.params
    errors = check_input(params)
    if errors:
        azure.module.fail_json(msg="Invalid input: " + "; ".join(errors), errors=errors, error_code="InvalidParameter")
    # "present": a missing cluster is an error here (read_bindings names the option), not an empty list.
    cluster = DesiredIdentityBinding(params["resource_group"], params["cluster_name"], params["name"] or "", None)
    try:
        bindings = read_bindings(azure, cluster) or []
    except WorkloadIdentityError as exc:
        azure.fail(exc)
    if params["name"] is not None:
        bindings = [b for b in bindings if (b["name"] or "").lower() == params["name"].lower()]
    azure.exit_json(
        changed=False,
        identity_bindings=sorted(bindings, key=lambda b: b["name"] or ""),
        credential_name=IDENTITY_BINDING_CREDENTIAL_NAME,
    )


if __name__ == "__main__":
    main()
