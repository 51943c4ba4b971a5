#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aks_cluster
short_description: Create a minimal AKS cluster with the OIDC issuer and workload identity on
version_added: 0.1.0
description:
  - The start of the Microsoft Entra Workload ID docs' flow, C(az group create) plus
    C(az aks create --enable-oidc-issuer --enable-workload-identity), as one idempotent task.
  - Creates the resource group when it does not exist (see O(create_resource_group)) and a cluster with a
    managed identity, Kubernetes RBAC, one system node pool, the OIDC issuer and workload identity, then waits
    for it.
  - Not a general cluster manager. On an existing cluster it changes nothing but the OIDC issuer and workload
    identity, through the same logic as M(aks.workload_identity.aks_oidc) (the cluster as read, only those two
    settings changed); node pools, networking, version and tags are never restated. Options that differ from
    the existing cluster produce a warning.
  - With O(state=absent) deletes the cluster and waits for the deletion; the resource group is never deleted.
  - "Requests: a run that changes nothing makes one API request, a GET of the cluster (besides, once per run,
    the token request and, when O(cloud_environment) is a metadata URL, the metadata document). That GET also
    tells whether the resource group exists. A create adds a PUT of the resource group (only when missing), a
    PUT of the cluster, a GET of the operation status every O(lro_polling_interval) seconds and a final GET."
requirements:
  - python >= 3.10
  - azure-identity
  - azure-mgmt-containerservice
  - azure-mgmt-resource
extends_documentation_fragment:
  - aks.workload_identity.azure_auth
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying the target.
    support: full
    details:
      - Reads the cluster and reports what would be created, changed or deleted; makes no write. Values Azure
        chooses (the issuer URL, the default Kubernetes version) are V(null) in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode).
    support: full
    details:
      - Before and after are the normalised cluster (see RV(cluster)).
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
      - Name of the resource group of the cluster, 1 to 90 letters, digits, underscores, hyphens, periods or
        parentheses, not ending with a period.
      - Created in O(location) when it does not exist and O(create_resource_group=true).
    type: str
    required: true
  create_resource_group:
    description:
      - Create O(resource_group) when it does not exist. With V(false) a missing resource group is an error, found
        by the cluster's GET, in check mode too, before any write.
    type: bool
    default: true
  name:
    description:
      - Name of the AKS cluster, 1-63 letters, digits, C(-) or C(_), starting and ending alphanumeric.
    type: str
    required: true
    aliases: [cluster_name]
  state:
    description:
      - V(present) creates the cluster when it does not exist and makes sure its OIDC issuer and workload
        identity are on.
      - V(absent) deletes the cluster (never the resource group).
    type: str
    choices: [present, absent]
    default: present
  location:
    description:
      - Azure region of a new cluster (and of the resource group when it is created), for example V(eastus) or
        V(East US).
      - Required when the cluster does not exist yet; compared (with a warning) otherwise.
    type: str
  node_count:
    description:
      - Number of nodes in the system node pool of a new cluster, 1 to 1000 (the AKS limit for a system pool).
      - Defaults to V(3), as C(az aks create).
    type: int
  vm_size:
    description:
      - VM size of the nodes of a new cluster, for example V(Standard_D4ds_v5), an Azure VM size name (a tier such
        as C(Standard), C(_), then letters, digits, C(_) and C(-); at most 64 characters).
      - Defaults to the size AKS chooses for the region.
    type: str
  kubernetes_version:
    description:
      - Kubernetes version of a new cluster, as V(1.33) (AKS picks the latest patch) or V(1.33.5); quote it in YAML
        so that V(1.30) stays a string.
      - Defaults to the service's default version.
    type: str
  tags:
    description:
      - Tags of a new cluster, as a dictionary of strings (quote numbers and booleans in YAML).
      - Azure's limits apply and are checked before any request, at most 50 tags, names of 1 to 512 characters
        without any of C(<>%&\?/) and unique regardless of case, values of at most 256 characters.
    type: dict
  wait:
    description:
      - Wait for the create, update or delete to finish (and, before deciding, for an operation already
        running on the cluster).
      - With V(false) the module returns as soon as Azure accepted the request, with RV(provisioning_state)
        C(Creating) or C(Updating) and the issuer URL from the PUT's answer.
    type: bool
    default: true
  wait_timeout:
    description:
      - How many seconds to wait in all, 1 to 86400 (a day). Creating a cluster takes five to ten minutes on Azure.
    type: int
    default: 1800
notes:
  - The issuer URL is returned exactly as Azure sends it, trailing slash included; federated identity
    credentials must use that exact string.
seealso:
  - module: aks.workload_identity.aks_oidc
  - module: aks.workload_identity.managed_identity
  - name: Deploy and configure workload identity on AKS
    description: The docs' flow this module starts.
    link: https://learn.microsoft.com/azure/aks/workload-identity-deploy-cluster
author:
  - Contributors to the aks.workload_identity collection (!UNKNOWN)
"""

EXAMPLES = r"""
---
- name: Create the resource group and a cluster with the OIDC issuer and workload identity
  aks.workload_identity.aks_cluster:
    resource_group: rg-apps
    name: aks-apps
    location: eastus
    node_count: 1
    tags:
      env: demo
  register: aks

- name: Show the issuer for federated credentials
  ansible.builtin.debug:
    msg: "{{ aks.issuer_url }}"

- name: Preview what would be created
  aks.workload_identity.aks_cluster:
    resource_group: rg-apps
    name: aks-apps
    location: eastus
  check_mode: true
  diff: true

- name: Turn both features on for a cluster that already exists (nothing else is changed)
  aks.workload_identity.aks_cluster:
    resource_group: rg-legacy
    name: aks-legacy

- name: Delete the cluster, keeping the resource group
  aks.workload_identity.aks_cluster:
    resource_group: rg-apps
    name: aks-apps
    state: absent
"""

RETURN = r"""
issuer_url:
  description:
    - The cluster's OIDC issuer URL exactly as Azure returns it (with its trailing slash).
    - V(null) in check mode when this run would create the cluster or enable the issuer.
  returned: when O(state=present)
  type: str
  sample: https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0328c7fa-e740-4752-af1c-182a774aacc7/
oidc_issuer_enabled:
  description: Whether the OIDC issuer is enabled.
  returned: when O(state=present)
  type: bool
  sample: true
workload_identity_enabled:
  description: Whether workload identity is enabled.
  returned: when O(state=present)
  type: bool
  sample: true
id:
  description: The cluster's resource ID (predicted in check mode).
  returned: when O(state=present)
  type: str
  sample: /subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-apps/providers/Microsoft.ContainerService/managedClusters/aks-apps
provisioning_state:
  description: C(Succeeded) after a wait; C(Creating) or C(Updating) with O(wait=false).
  returned: when O(state=present)
  type: str
  sample: Succeeded
kubernetes_version:
  description: The Kubernetes version of the cluster (V(null) in check mode when the service would choose it).
  returned: when O(state=present)
  type: str
  sample: "1.33"
location:
  description: The cluster's Azure region.
  returned: when O(state=present)
  type: str
  sample: eastus
resource_group_created:
  description: Whether this run created (in check mode, would create) the resource group.
  returned: always
  type: bool
  sample: false
cluster:
  description: The cluster, normalised (also the before/after of the diff); empty after O(state=absent).
  returned: always
  type: dict
  contains:
    id:
      description: Resource ID.
      type: str
      returned: when O(state=present)
    name:
      description: Cluster name.
      type: str
      returned: when O(state=present)
    resource_group:
      description: Resource group.
      type: str
      returned: when O(state=present)
    location:
      description: Azure region.
      type: str
      returned: when O(state=present)
    kubernetes_version:
      description: Requested Kubernetes version.
      type: str
      returned: when O(state=present)
    current_kubernetes_version:
      description: The Kubernetes version running.
      type: str
      returned: when O(state=present)
    provisioning_state:
      description: Provisioning state.
      type: str
      returned: when O(state=present)
    oidc_issuer_enabled:
      description: Whether the OIDC issuer is enabled.
      type: bool
      returned: when O(state=present)
    issuer_url:
      description: The OIDC issuer URL, exactly as Azure returns it.
      type: str
      returned: when O(state=present)
    workload_identity_enabled:
      description: Whether workload identity is enabled.
      type: bool
      returned: when O(state=present)
    tags:
      description: The cluster's tags.
      type: dict
      returned: when O(state=present)
    agent_pools:
      description: Name, node count, VM size and mode of each node pool.
      type: list
      elements: dict
      returned: when O(state=present)
  sample:
    id: /subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-apps/providers/Microsoft.ContainerService/managedClusters/aks-apps
    name: aks-apps
    resource_group: rg-apps
    location: eastus
    kubernetes_version: "1.33"
    current_kubernetes_version: 1.33.5
    provisioning_state: Succeeded
    oidc_issuer_enabled: true
    issuer_url: https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0328c7fa-e740-4752-af1c-182a774aacc7/
    workload_identity_enabled: true
    tags: {env: demo}
    agent_pools:
      - {name: nodepool1, count: 1, vm_size: Standard_DS2_v2, mode: System}
"""

from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import AzureModule
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.cluster import (
    ClusterReconciler,
    ClusterSpec,
    module_result,
    validate_cluster_reference,
    validate_cluster_spec,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import validate_wait_timeout

ARGUMENT_SPEC = {
    "resource_group": {"type": "str", "required": True},
    "create_resource_group": {"type": "bool", "default": True},
    "name": {"type": "str", "required": True, "aliases": ["cluster_name"]},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "location": {"type": "str"},
    "node_count": {"type": "int"},
    "vm_size": {"type": "str"},
    "kubernetes_version": {"type": "str"},
    "tags": {"type": "dict"},
    "wait": {"type": "bool", "default": True},
    "wait_timeout": {"type": "int", "default": 1800},
}


def spec_from(params: dict) -> ClusterSpec:
    tags = params["tags"]
    return ClusterSpec(
        location=params["location"],
        node_count=params["node_count"],
        vm_size=params["vm_size"],
        kubernetes_version=params["kubernetes_version"],
        tags=dict(tags) if tags is not None else None,  # strings only (check_input)
    )


def check_input(params: dict) -> list[str]:
    """Every "option: rule" problem at once, before any request."""
    return [
        *validate_cluster_reference(params["resource_group"], params["name"]),
        *validate_cluster_spec(spec_from(params)),
        *validate_wait_timeout(params["wait_timeout"]),
    ]


def main() -> None:
    azure = AzureModule(ARGUMENT_SPEC, supports_check_mode=True)
    params = azure.params
    errors = check_input(params)
    if errors:
        azure.module.fail_json(msg="Invalid input: " + "; ".join(errors), errors=errors, error_code="InvalidParameter")
    try:
        spec = spec_from(params)
        reconciler = ClusterReconciler(
            azure,
            params["resource_group"],
            params["name"],
            check_mode=azure.check_mode,
            wait=params["wait"],
            wait_timeout=params["wait_timeout"],
        )
        if params["state"] == "absent":
            result = reconciler.ensure_absent()
        else:
            result = reconciler.ensure_present(spec, params["create_resource_group"])
    except WorkloadIdentityError as exc:
        azure.fail(exc)
    for warning in result.plan.warnings:
        azure.warn(warning)
    azure.exit_json(resource_group_created=result.resource_group_created, **module_result(result, azure.module._diff))


if __name__ == "__main__":
    main()
