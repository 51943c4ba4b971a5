#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aks_identity_binding
short_description: Bind a user-assigned managed identity to an AKS cluster (AKS identity bindings)
version_added: 0.2.0
description:
  - Creates or deletes an AKS identity binding, the Azure resource
    C(Microsoft.ContainerService/managedClusters/identityBindings) that maps one user-assigned managed identity to one
    cluster, and returns the binding, the OIDC issuer AKS assigned to the identity and the identity's client,
    principal and tenant IDs.
  - A binding has no setting but its identity, which Azure sets only when the binding is created. A binding of
    O(name) that maps another identity is therefore refused before any write, naming O(name); so is the identity
    when the cluster already binds it under another name (a cluster holds one binding per identity), with the name
    to use instead.
  - "Requests: one list of the cluster's bindings serves every decision, so a run that changes nothing makes that one
    Azure Resource Manager request. Creating adds a GET of the identity (which must exist), the PUT, a GET of the
    operation every O(lro_polling_interval) seconds until it ends, and a final GET; deleting adds the DELETE and its
    polls. With O(wait=false), only the PUT or DELETE."
  - A missing cluster is found by that list (404) and a missing identity by its GET; one GET of the resource group then
    says which option is wrong (O(resource_group) or O(cluster_name); O(identity_name), O(identity_resource_group) or
    O(identity_id)). The module fails before any write. A missing cluster fails in check mode too; a missing identity
    is a warning in check mode, as an earlier task of the play may create it. With O(state=absent) a missing cluster
    has nothing to delete.
requirements:
  - python >= 3.10
  - azure-identity
  - azure-mgmt-containerservice >= 41.3.0 (the first release with identity bindings, API version 2026-04-01)
  - azure-mgmt-msi >= 7.0.0 (to read the identity before a create)
  - azure-mgmt-resource >= 23.0.0 (only to tell a missing resource group from a missing cluster or identity)
extends_documentation_fragment:
  - aks.workload_identity.azure_auth
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying the target.
    support: full
    details:
      - Makes the same reads as a real run and no write. The issuer URL of a binding that would be created is not
        known until AKS assigns it, so RV(issuer_url) is V(null) then.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode).
    support: full
    details:
      - Before and after are the RV(identity_binding) dictionary (empty for no binding).
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
    details:
      - The second run makes one request, the list of the cluster's bindings.
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
      - The cluster must exist; it is not created.
    type: str
    required: true
  name:
    description:
      - Name of the identity binding, 1 to 63 lower-case letters or digits, starting with a letter (the API's rule,
        which refuses V(-)).
      - Defaults to the identity's name with everything but letters and digits removed, lower-cased (V(id-orders)
        gives V(idorders)), led by V(id) when it would not start with a letter.
      - With O(state=absent), either O(name) or the identity is required; given alone, O(name) deletes the binding
        whatever identity it maps.
    type: str
  identity_name:
    description:
      - Name of the user-assigned managed identity to bind, read from O(identity_resource_group).
      - Identity bindings accept only identities whose name and resource group are letters, digits and V(-) (the
        pattern of the API's C(managedIdentity.resourceId)); others are refused before any request.
      - One of O(identity_name) and O(identity_id) is required with O(state=present). Mutually exclusive with
        O(identity_id).
    type: str
  identity_resource_group:
    description:
      - Resource group of O(identity_name), letters, digits and V(-). Defaults to O(resource_group).
      - Requires O(identity_name).
    type: str
  identity_id:
    description:
      - Resource ID of the user-assigned managed identity to bind, instead of O(identity_name),
        C(/subscriptions/<GUID>/resourceGroups/<group>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>),
        the group and the name of letters, digits and V(-).
      - The identity must be in O(subscription_id), where the module reads it before creating the binding.
    type: str
  wait:
    description:
      - Wait for the binding's long-running operation to finish, so a created binding is C(Succeeded) and its issuer
        serves its discovery document, and a deleted one is gone.
      - With V(false) the module returns as soon as Azure accepted the request; a created binding's
        RV(identity_binding.provisioning_state) is then C(Creating), as the PUT answered.
    type: bool
    default: true
  wait_timeout:
    description:
      - How many seconds to wait for the operation, 1 to 86400 (a day).
    type: int
    default: 600
  state:
    description:
      - V(present) creates the binding; an existing binding of the identity with O(name) is left as it is.
      - V(absent) deletes the binding. With O(identity_name) or O(identity_id), only when it maps that identity;
        the identity's C(aks-identity-binding) federated credential stays (see the notes).
    type: str
    choices: [present, absent]
    default: present
notes:
  - "When to choose a binding over a federated credential: each cluster a workload identity trusts through
    M(aks.workload_identity.federated_credential) costs one of the 20 federated credentials Azure allows per
    identity. Bindings do not: all bindings of an identity share one federated credential, so one identity can serve
    any number of clusters. Use federated credentials for a few clusters, or for issuers other than AKS; bindings for
    an identity shared by many clusters."
  - A cluster holds one binding per identity; the same identity can be bound to any number of clusters, one binding on
    each. AKS gives the identity one OIDC issuer, the same for all its bindings,
    C(https://ib.oic.prod-aks.azure.com/<tenant ID>/<client ID>), without a trailing slash.
  - Creating a binding makes AKS create (or reuse) the federated credential C(aks-identity-binding) on the identity,
    so the account running the module also needs
    C(Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write) on the identity. AKS owns
    that credential; do not change or delete it while a binding uses it. AKS does not delete it when the last binding
    goes (no garbage collection); delete it yourself with M(aks.workload_identity.federated_credential) once no
    cluster binds the identity.
  - The binding alone lets no workload use the identity. Kubernetes RBAC in the cluster says which ServiceAccounts may
    (a ClusterRole granting the verb C(use-managed-identity) on the resource C(<client ID>) of API group
    C(cid.wi.aks.azure.com), bound to them); the collection's C(wid_identity_binding_access) module writes that grant.
  - Pods opt in with the annotation C(azure.workload.identity/use-identity-binding) set to C("true") (the
    C(identity_binding) option of M(aks.workload_identity.wid_workload_patch)), which the workload identity webhook
    v1.6 or later understands; their tokens are exchanged through an AKS token proxy, which the Azure Identity
    libraries use only when asked (Python, azure-identity 1.26.0b1 or later,
    C(WorkloadIdentityCredential(use_token_proxy=True))).
  - Identity bindings are not supported on clusters with API server VNet integration.
seealso:
  - module: aks.workload_identity.aks_identity_binding_info
    description: List a cluster's bindings.
  - module: aks.workload_identity.managed_identity
    description: Create the identity first.
  - module: aks.workload_identity.federated_credential
    description: The other way to trust a cluster's tokens, one credential per cluster.
  - name: Identity bindings (concepts)
    description: What an identity binding is, its limits, and how it compares with federated credentials.
    link: https://learn.microsoft.com/azure/aks/identity-bindings-concepts
  - name: Set up identity bindings on AKS
    description: Microsoft's walk-through, from the binding to the ClusterRole and the pod annotation.
    link: https://learn.microsoft.com/azure/aks/identity-bindings
author:
  - Contributors to the aks.workload_identity collection (!UNKNOWN)
"""

EXAMPLES = r"""
---
- name: Bind the identity id-orders to the cluster aks-apps
  aks.workload_identity.aks_identity_binding:
    resource_group: rg-apps
    cluster_name: aks-apps
    identity_name: id-orders
  register: binding

- name: Show the issuer and the client ID the workloads use
  ansible.builtin.debug:
    msg: "{{ binding.issuer_url }} {{ binding.client_id }}"

- name: Bind an identity of another resource group, under a name of our own, without waiting
  aks.workload_identity.aks_identity_binding:
    resource_group: rg-apps
    cluster_name: aks-apps
    name: sharedorders
    identity_resource_group: rg-identities
    identity_name: id-shared-orders
    wait: false

- name: Bind an identity given by its resource ID
  aks.workload_identity.aks_identity_binding:
    resource_group: rg-apps
    cluster_name: aks-apps
    identity_id: "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-identities/providers/\
      Microsoft.ManagedIdentity/userAssignedIdentities/id-billing"

- name: Preview the binding without creating it
  aks.workload_identity.aks_identity_binding:
    resource_group: rg-apps
    cluster_name: aks-apps
    identity_name: id-orders
  check_mode: true
  diff: true

- name: Delete the binding (the identity's aks-identity-binding credential stays)
  aks.workload_identity.aks_identity_binding:
    resource_group: rg-apps
    cluster_name: aks-apps
    identity_name: id-orders
    state: absent
"""

RETURN = r"""
identity_binding:
  description:
    - The binding after the run; empty with O(state=absent).
    - In check mode, the binding as it would be created, its issuer URL, state and entity tag V(null).
  returned: always
  type: dict
  contains:
    id:
      description: Resource ID of the binding (predicted in check mode).
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
      description: Resource ID of the bound identity, as the binding holds it.
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
      description:
        - The OIDC issuer AKS assigned to the identity, the same for all its bindings, without a trailing slash.
      type: str
      sample: https://ib.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f
    provisioning_state:
      description: C(Succeeded) after a wait; C(Creating) with O(wait=false).
      type: str
      sample: Succeeded
    etag:
      description: The binding's entity tag.
      type: str
      sample: 0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b
issuer_url:
  description: The binding's issuer URL (RV(identity_binding.issuer_url)); V(null) with O(state=absent) or in check mode
    for a binding to create.
  returned: always
  type: str
  sample: https://ib.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f
client_id:
  description: The identity's client ID, for the workloads' ServiceAccount annotation and the RBAC grant; V(null) with
    O(state=absent).
  returned: always
  type: str
  sample: 3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f
principal_id:
  description: The identity's principal (object) ID, for role assignments; V(null) with O(state=absent).
  returned: always
  type: str
  sample: 9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d
tenant_id:
  description: The identity's tenant ID; V(null) with O(state=absent).
  returned: always
  type: str
  sample: 72f988bf-86f1-41af-91ab-2d7cd011db47
credential_name:
  description: Name of the federated credential AKS keeps on the identity for all its bindings.
  returned: always
  type: str
  sample: aks-identity-binding
action:
  description: What the module did, or would do in check mode.
  returned: always
  type: str
  choices: [create, delete, none]
  sample: create
diff:
  description: The binding before and after the run (an empty dictionary for no binding).
  returned: always
  type: dict
  contains:
    before:
      description: The binding before the run.
      type: dict
    after:
      description: The binding after the run.
      type: dict
"""

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import AzureModule
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.identity_binding import (
    DesiredIdentityBinding,
    canonical_identity_id,
    module_result,
    parse_identity_id,
    reconcile,
    spec_name_errors,
    user_assigned_identity_id,
    validate,
    validate_identity_id,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    default_identity_binding_name,
    validate_identity_name,
    validate_resource_group_name,
    validate_wait_timeout,
)

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    "resource_group": {"type": "str", "required": True},
    "cluster_name": {"type": "str", "required": True},
    "name": {"type": "str"},
    "identity_name": {"type": "str"},
    "identity_resource_group": {"type": "str"},
    "identity_id": {"type": "str"},
    "wait": {"type": "bool", "default": True},
    "wait_timeout": {"type": "int", "default": 600},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
}
MODULE_KWARGS: dict[str, t.Any] = {
    "mutually_exclusive": [("identity_name", "identity_id"), ("identity_resource_group", "identity_id")],
    "required_by": {"identity_resource_group": "identity_name"},
    "required_one_of": [("name", "identity_name", "identity_id")],
    "required_if": [("state", "present", ("identity_name", "identity_id"), True)],
}


def check_input(params: dict[str, t.Any]) -> list[str]:
    """Every "option: rule" problem at once, before any request."""
    errors = [*validate_wait_timeout(params["wait_timeout"])]
    if params["identity_name"] is not None:
        errors += validate_identity_name(params["identity_name"], "identity_name")
        errors += spec_name_errors(params["identity_name"], "identity_name")
    if params["identity_resource_group"] is not None:
        errors += validate_resource_group_name(params["identity_resource_group"], "identity_resource_group")
        errors += spec_name_errors(params["identity_resource_group"], "identity_resource_group")
    elif params["identity_name"] is not None:
        errors += spec_name_errors(params["resource_group"], "resource_group (the identity's resource group)")
    if params["identity_id"] is not None:
        errors += validate_identity_id(params["identity_id"])
    # The binding's own rules on the values the options resolve to (no subscription is needed for them). When the
    # identity's options are wrong, what is derived from them (its ID, the default name) is not reported again.
    derived = validate(desired_binding(params, "00000000-0000-0000-0000-000000000000"))
    if errors:
        derived = [e for e in derived if not e.startswith("identity_id:")]
        derived = [e for e in derived if params["name"] is not None or not e.startswith("name:")]
    return errors + derived


def identity_reference(params: dict[str, t.Any], subscription_id: str) -> tuple[str | None, str | None]:
    """(the identity's ID as the API spells it, its name), or (None, None) when no identity was given."""
    if params["identity_id"] is not None:
        parsed = parse_identity_id(params["identity_id"])
        return canonical_identity_id(params["identity_id"]), parsed[2] if parsed else None
    if params["identity_name"] is not None:
        group = params["identity_resource_group"] or params["resource_group"]
        return user_assigned_identity_id(subscription_id, group, params["identity_name"]), params["identity_name"]
    return None, None


def desired_binding(params: dict[str, t.Any], subscription_id: str) -> DesiredIdentityBinding:
    identity_id, identity_name = identity_reference(params, subscription_id)
    name = params["name"] or (default_identity_binding_name(identity_name) if identity_name else "")
    return DesiredIdentityBinding(
        resource_group=params["resource_group"],
        cluster_name=params["cluster_name"],
        name=name,
        identity_id=identity_id,
        state=params["state"],
    )


def subscription_errors(params: dict[str, t.Any], subscription_id: str) -> list[str]:
    """O(identity_id) must be in the subscription the module reads identities in (no request)."""
    parsed = parse_identity_id(params["identity_id"])
    if parsed is None or parsed[0].lower() == subscription_id.lower():
        return []
    return [
        f"identity_id: the identity is in subscription {parsed[0]}, not in subscription_id {subscription_id}, where "
        "the module reads it before binding it; run the module with the identity's subscription_id"
    ]


def option_names(params: dict[str, t.Any]) -> dict[str, str]:
    """The options that named the identity and its resource group, for the messages about a missing one."""
    if params["identity_id"] is not None:
        return {"identity_option": "identity_id", "group_option": "identity_id"}
    group_option = "identity_resource_group" if params["identity_resource_group"] else "resource_group"
    return {"identity_option": "identity_name", "group_option": group_option}


def main() -> None:
    azure = AzureModule(ARGUMENT_SPEC, supports_check_mode=True, **MODULE_KWARGS)
    params = azure.params
    try:
        errors = check_input(params) or subscription_errors(params, azure.subscription_id)
        if errors:
            azure.module.fail_json(
                msg="Invalid input: " + "; ".join(errors), errors=errors, error_code="InvalidParameter"
            )
        outcome = reconcile(
            azure,
            desired_binding(params, azure.subscription_id),
            wait=params["wait"],
            timeout=params["wait_timeout"],
            **option_names(params),
        )
    except WorkloadIdentityError as exc:
        azure.fail(exc)
    for warning in outcome.plan.warnings:
        azure.warn(warning)
    azure.exit_json(**module_result(outcome))


if __name__ == "__main__":
    main()
