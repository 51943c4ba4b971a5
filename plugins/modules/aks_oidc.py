#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aks_oidc
short_description: Enable the OIDC issuer and workload identity on an AKS cluster
version_added: 0.1.0
description:
  - Turns on the OIDC issuer and Microsoft Entra Workload ID on an existing Azure Kubernetes Service cluster, the
    first step of workload identity, and returns the cluster's issuer URL for federated identity credentials.
  - Reads the cluster and writes only when one of the two settings differs. The update sends back the cluster
    exactly as Azure returned it with only those settings changed (the full-body PUT C(az aks update) makes), so
    node pools, networking and add-ons are never restated from module options.
  - Enabling the OIDC issuer on an existing cluster restarts its API server and changes the issuer of the
    ServiceAccount tokens it signs; AKS cannot disable the issuer again. The module warns about this, also in
    check mode, and refuses O(oidc_issuer=false) on a cluster whose issuer is on.
  - Never races another operation on the cluster (AKS would answer 409 C(OperationNotAllowed)); it waits for
    that operation to finish and decides again, or fails clearly when O(wait=false).
  - "Requests: a run that changes nothing makes one API request, a GET of the cluster (besides, once per run,
    the token request and, when O(cloud_environment) is a metadata URL, the metadata document). A change adds
    one PUT, a GET of the operation status every O(lro_polling_interval) seconds until it ends, and a final GET
    of the cluster; with O(wait=false) only the PUT."
requirements:
  - python >= 3.10
  - azure-identity
  - azure-mgmt-containerservice
extends_documentation_fragment:
  - aks.workload_identity.azure_auth
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying the target.
    support: full
    details:
      - Reads the cluster and reports what would change; makes no write. The issuer URL of a cluster whose
        issuer would be enabled is not known until Azure assigns it, so RV(issuer_url) is V(null) then.
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
      - Name of the resource group that holds the cluster, 1 to 90 letters, digits, underscores, hyphens, periods or
        parentheses, not ending with a period.
    type: str
    required: true
  name:
    description:
      - Name of the AKS cluster, 1 to 63 letters, digits, C(-) or C(_), starting and ending alphanumeric.
      - The cluster must exist; a missing cluster or resource group fails after the cluster's GET, in check mode
        too, naming O(name) or O(resource_group), and nothing is written.
    type: str
    required: true
    aliases: [cluster_name]
  oidc_issuer:
    description:
      - Whether the cluster's OIDC issuer is enabled.
      - V(false) is accepted only for a cluster whose issuer is off; AKS does not support disabling the issuer
        once it is on, and the module fails before any write when asked to.
    type: bool
    default: true
  workload_identity:
    description:
      - Whether workload identity (C(securityProfile.workloadIdentity)) is enabled.
      - Requires O(oidc_issuer=true); the combination O(oidc_issuer=false) with O(workload_identity=true) is
        rejected before any request.
      - V(false) disables workload identity and leaves the OIDC issuer on.
    type: bool
    default: true
  wait:
    description:
      - Wait for the cluster's long-running operation to finish, so the returned cluster is C(Succeeded) and its
        issuer publishes its discovery document.
      - Also waits, before deciding, for an operation already running on the cluster.
      - With V(false) the module returns as soon as Azure accepted the change, with RV(provisioning_state)
        C(Updating) and the issuer URL from the PUT's answer; and it fails instead of waiting when another
        operation is running.
    type: bool
    default: true
  wait_timeout:
    description:
      - How many seconds to wait in all, for another operation and for this one, 1 to 86400 (a day). Enabling the
        issuer takes about two minutes on Azure.
    type: int
    default: 1800
notes:
  - The issuer URL is returned exactly as Azure sends it, trailing slash included; federated identity
    credentials must use that exact string (Entra compares it character by character).
  - On Kubernetes 1.34 and later AKS enables the OIDC issuer on every new cluster.
seealso:
  - module: aks.workload_identity.aks_cluster
  - module: aks.workload_identity.federated_credential
  - name: Create an OpenID Connect provider on AKS
    description: Microsoft's guide to the AKS OIDC issuer.
    link: https://learn.microsoft.com/azure/aks/use-oidc-issuer
  - name: Deploy and configure workload identity on AKS
    description: The flow this collection automates.
    link: https://learn.microsoft.com/azure/aks/workload-identity-deploy-cluster
author:
  - Contributors to the aks.workload_identity collection (!UNKNOWN)
"""

EXAMPLES = r"""
---
- name: Enable the OIDC issuer and workload identity
  aks.workload_identity.aks_oidc:
    resource_group: rg-apps
    name: aks-apps
  register: aks

- name: Show the issuer for federated credentials
  ansible.builtin.debug:
    msg: "{{ aks.issuer_url }}"

- name: Preview the change without touching the cluster
  aks.workload_identity.aks_oidc:
    resource_group: rg-apps
    name: aks-apps
  check_mode: true
  diff: true

- name: Start enabling and return at once (the cluster stays Updating for a few minutes)
  aks.workload_identity.aks_oidc:
    resource_group: rg-apps
    name: aks-apps
    wait: false

- name: Disable workload identity again, keeping the OIDC issuer (which cannot be disabled)
  aks.workload_identity.aks_oidc:
    resource_group: rg-apps
    name: aks-apps
    workload_identity: false
"""

RETURN = r"""
issuer_url:
  description:
    - The cluster's OIDC issuer URL exactly as Azure returns it (with its trailing slash), for the issuer of
      federated identity credentials.
    - V(null) while the issuer is off, and in check mode when this run would enable it.
  returned: success
  type: str
  sample: https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0328c7fa-e740-4752-af1c-182a774aacc7/
oidc_issuer_enabled:
  description: Whether the OIDC issuer is enabled (in check mode, whether it would be).
  returned: success
  type: bool
  sample: true
workload_identity_enabled:
  description: Whether workload identity is enabled (in check mode, whether it would be).
  returned: success
  type: bool
  sample: true
id:
  description: The cluster's resource ID.
  returned: success
  type: str
  sample: /subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-apps/providers/Microsoft.ContainerService/managedClusters/aks-apps
provisioning_state:
  description:
    - The cluster's provisioning state, C(Succeeded) after a wait; C(Updating) with O(wait=false).
  returned: success
  type: str
  sample: Succeeded
kubernetes_version:
  description: The Kubernetes version the cluster was asked to run.
  returned: success
  type: str
  sample: "1.33"
location:
  description: The cluster's Azure region.
  returned: success
  type: str
  sample: eastus
cluster:
  description: The cluster, normalised (also the before/after of the diff).
  returned: success
  type: dict
  contains:
    id:
      description: Resource ID.
      type: str
      returned: always
    name:
      description: Cluster name.
      type: str
      returned: always
    resource_group:
      description: Resource group.
      type: str
      returned: always
    location:
      description: Azure region.
      type: str
      returned: always
    kubernetes_version:
      description: Requested Kubernetes version.
      type: str
      returned: always
    current_kubernetes_version:
      description: The Kubernetes version running.
      type: str
      returned: always
    provisioning_state:
      description: Provisioning state.
      type: str
      returned: always
    oidc_issuer_enabled:
      description: Whether the OIDC issuer is enabled.
      type: bool
      returned: always
    issuer_url:
      description: The OIDC issuer URL, exactly as Azure returns it.
      type: str
      returned: always
    workload_identity_enabled:
      description: Whether workload identity is enabled.
      type: bool
      returned: always
    tags:
      description: The cluster's tags.
      type: dict
      returned: always
    agent_pools:
      description: Name, node count, VM size and mode of each node pool (read only, never changed).
      type: list
      elements: dict
      returned: always
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
    tags: {}
    agent_pools:
      - {name: nodepool1, count: 3, vm_size: Standard_D4ds_v5, mode: System}
"""

from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import AzureModule
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.cluster import (
    ClusterReconciler,
    module_result,
    validate_cluster_reference,
    validate_oidc_settings,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import validate_wait_timeout

ARGUMENT_SPEC = {
    "resource_group": {"type": "str", "required": True},
    "name": {"type": "str", "required": True, "aliases": ["cluster_name"]},
    "oidc_issuer": {"type": "bool", "default": True},
    "workload_identity": {"type": "bool", "default": True},
    "wait": {"type": "bool", "default": True},
    "wait_timeout": {"type": "int", "default": 1800},
}


def validate(params: dict) -> list[str]:
    """Every "option: rule" problem at once, before any request."""
    errors = validate_cluster_reference(params["resource_group"], params["name"])
    errors += validate_oidc_settings(params["oidc_issuer"], params["workload_identity"])
    return errors + validate_wait_timeout(params["wait_timeout"])


def main() -> None:
    azure = AzureModule(ARGUMENT_SPEC, supports_check_mode=True)
    params = azure.params
    errors = validate(params)
    if errors:
        azure.module.fail_json(msg="Invalid input: " + "; ".join(errors), errors=errors, error_code="InvalidParameter")
    try:
        reconciler = ClusterReconciler(
            azure,
            params["resource_group"],
            params["name"],
            check_mode=azure.check_mode,
            wait=params["wait"],
            wait_timeout=params["wait_timeout"],
        )
        result = reconciler.ensure_oidc(params["oidc_issuer"], params["workload_identity"])
    except WorkloadIdentityError as exc:
        azure.fail(exc)
    for warning in result.plan.warnings:
        azure.warn(warning)
    azure.exit_json(**module_result(result, diff=azure.module._diff))


if __name__ == "__main__":
    main()
