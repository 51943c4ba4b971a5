#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: workloads
short_description: Give a whole fleet of Kubernetes workloads their Microsoft Entra identities in one call, or take them down
version_added: 0.2.0
description:
  - Converges many workloads in one process, with one sign-in, in Microsoft's order (Deploy and configure workload
    identity on AKS) per workload - the user-assigned managed identity, the ServiceAccount annotated with its client
    ID, the federated identity credential that trusts the ServiceAccount's tokens from the cluster's issuer, the
    role grants, and on request a settings ConfigMap and the pod templates of existing workloads.
  - "Reads come first and in lists: one list of the identities of each resource group, one list of the federated
    credentials of each existing identity (Azure has no wider list), one list of the role assignments at each scope
    the grants name (C($filter=atScope()), every principal at once), one list of ServiceAccounts per namespace (and
    of ConfigMaps, and of each kind of workload to patch, where items ask for them). A run that changes nothing makes
    C(G + I + S) Azure Resource Manager requests and C(N + C + W) Kubernetes requests, for G resource groups of
    identities, I existing identities, S distinct grant scopes, N namespaces, C namespaces with ConfigMaps and W
    namespace and kind pairs of workloads to patch (one more each per further page), plus one GET of the cluster when
    O(issuer_url) is not given, and Microsoft Entra's discovery document and one token for the whole run."
  - Every workload is planned before anything is written, with the same rules as the single-resource modules; a
    workload that cannot be done (an identity that must exist but does not, a namespace that does not exist, an
    identity that would hold more than its 20 federated credentials, a workload to patch that is missing) fails
    without a write, and the others go on.
  - Writes run in parallel across identities (at most O(parallel) requests in flight) and strictly in order within
    one identity, because Azure refuses concurrent federated credential writes on one identity. Once the managed
    identity provider throttles the run (429), every worker takes its turn at the rate Microsoft documents for it
    (2 writes per second per subscription, one per 4 seconds per identity), and the Retry-After is honoured.
  - One failing workload does not stop the others. The module fails at the end, naming each failed workload, the
    step and the cause; a run that is stopped half-way converges on the next run, with nothing duplicated (names of
    federated credentials and role assignments are deterministic).
  - With O(state=absent), takes the workloads down in reverse order - pod template labels, role grants, federated
    credential, ConfigMap, ServiceAccount (or only its workload identity annotations) - and then the identity, only
    when no workload in O(keep_items) uses it and it holds no federated credential this run does not remove; key
    vault access (O(keyvaults)) goes with it.
  - "Identity bindings: items with C(federation: identity_binding) do not get a federated credential each. Their
    identity is bound to the cluster once (an AKS identity binding, child of the cluster named by
    O(cluster_resource_group) and O(cluster_name); AKS then puts its one C(aks-identity-binding) credential on the
    identity), and a ClusterRole and ClusterRoleBinding named C(azure-wi-identity-binding-<client ID>) let the items'
    ServiceAccounts use it (verb C(use-managed-identity) on API group C(cid.wi.aks.azure.com)); only the listed
    subjects are added or removed. Their pod templates get C(azure.workload.identity/use-identity-binding=true).
    Any number of ServiceAccounts share one identity this way, past the 20 credentials an identity holds; a binding
    costs one list of the cluster's bindings and two GETs (ClusterRole, ClusterRoleBinding) per bound identity."
  - Choose a binding when many ServiceAccounts (across namespaces) must act as one identity, or one identity serves
    many clusters; keep credentials when a workload needs an identity of its own, when the cluster's API server uses
    VNet integration (bindings are not supported there), or when the application's Azure Identity library cannot
    use the AKS token proxy yet.
  - For progress on a long list, the M(aks.workload_identity.workload) and M(aks.workload_identity.teardown) roles
    call this module once per batch of items (never splitting the items of one identity), one result line each.
requirements:
  - azure-identity >= 1.19.0
  - azure-mgmt-msi >= 7.0.0
  - azure-mgmt-authorization >= 4.0.0
  - azure-mgmt-resource >= 23.0.0
  - azure-mgmt-containerservice >= 34.0.0 (to read the cluster's issuer)
  - azure-mgmt-keyvault >= 10.3.0 (for O(keyvaults))
  - kubernetes >= 29.0.0
extends_documentation_fragment:
  - aks.workload_identity.azure_auth
  - aks.workload_identity.k8s_auth
attributes:
  check_mode:
    support: full
    description: Plans every workload from the same reads as a real run and writes nothing, not even a dry run.
  diff_mode:
    support: full
    description: One diff per workload that changes, each step's object before and after.
  idempotent:
    support: full
    description: A second run with the same items reports no change and makes only the reads listed above.
options:
  items:
    description:
      - The workloads, in the shape of the M(aks.workload_identity.workload) role's C(workload_items), with its
        defaults - C(name), C(namespace), C(service_account), C(identity) (C(name), C(resource_group), C(location),
        C(create), default V(true)), C(credential_name), C(federation) (V(federated_credential), the default, or
        V(identity_binding)), C(identity_binding_name), C(grants) (C(role), C(scope)), C(token_expiration),
        C(tenant_annotation) (default V(true)), C(create_namespace) (default V(false)), C(labels), C(annotations),
        C(configmap) (C(name), default C(<service_account>-azure-identity), and C(data)), C(patch_workloads)
        (C(kind), one of V(Deployment), V(StatefulSet), V(DaemonSet), V(CronJob), and C(name)), C(proxy_sidecar) and
        C(proxy_sidecar_port) (default V(8000)). See the role's documentation for each key.
      - With O(state=absent) the entries of the role's C(workload_results) are accepted too (C(identity_name) and
        C(identity_resource_group) for C(identity), C(configmap) by name, C(patched_workloads)).
      - Every item is checked before the first request; an error names the item, the key and the rule.
    type: list
    elements: dict
    required: true
  state:
    description:
      - V(present) sets the workloads up; V(absent) takes them down.
    type: str
    choices: [present, absent]
    default: present
  issuer_url:
    description:
      - The cluster's OIDC issuer URL exactly as Azure returns it (trailing slash included), the issuer of every
        federated credential.
      - When not set, it is read from the cluster named by O(cluster_resource_group) and O(cluster_name). In check
        mode, when the cluster or its issuer does not exist yet (an earlier task would create it), the credentials
        are not planned and the result says so.
      - With O(state=absent), finds the credentials of items without C(credential_name) by issuer and subject.
    type: str
  cluster_resource_group:
    description:
      - Resource group of the AKS cluster, read for its issuer when O(issuer_url) is not set.
      - With O(state=absent), a cluster that no longer exists means its Kubernetes objects are gone with it, and the
        Kubernetes steps are skipped.
    type: str
  cluster_name:
    description:
      - Name of the AKS cluster; see O(cluster_resource_group).
      - Required (with O(cluster_resource_group)) when an item uses C(federation=identity_binding); its binding is a
        child of this cluster.
    type: str
  tenant_id:
    description:
      - Tenant ID (GUID) to annotate the ServiceAccounts with (C(azure.workload.identity/tenant-id), where the item's
        C(tenant_annotation) is true) and to put into settings ConfigMaps (else the identity's tenant). V("") or unset
        leaves the annotation off.
    type: str
  default_location:
    description: Region of identities created without C(identity.location); unset uses their resource group's.
    type: str
  parallel:
    description:
      - How many requests at most are in flight at once, reads and writes, across identities (writes on one identity
        are always one at a time). 1 runs everything in sequence.
    type: int
    default: 8
  keep_items:
    description:
      - With O(state=absent), the workloads that stay (typically the role's whole C(workload_items)); items also in
        O(items) (same namespace and ServiceAccount) are not counted. An identity that a staying workload uses is
        kept, and so are the grants a staying workload of the same identity lists. Same shape as O(items); only
        C(name), C(namespace), C(service_account), C(identity) and C(grants) are read.
    type: list
    elements: dict
    default: []
  delete_service_account:
    description:
      - With O(state=absent), V(true) deletes each ServiceAccount and settings ConfigMap; V(false) only removes the
        workload identity annotations of the ServiceAccount (and the item's C(labels) and C(annotations) keys) and
        the C(AZURE_CLIENT_ID), C(AZURE_TENANT_ID) and C(configmap.data) keys of the ConfigMap, for objects another
        tool owns.
    type: bool
    default: true
  keep_identity:
    description: With O(state=absent), keep the managed identities (their credentials and grants still go).
    type: bool
    default: false
  delete_binding_credential:
    description:
      - With O(state=absent), when the identity binding of an identity on this cluster goes (no item of
        O(keep_items) binds it), V(true) also deletes the C(aks-identity-binding) credential AKS put on the identity;
        then an identity that nothing else uses is deleted too.
      - AKS never removes that credential itself, and it serves the identity's bindings on every cluster; the module
        sees only this one. Set V(true) only when no other cluster binds the identity. With V(false) the credential
        stays, and with it the identity (the result says why).
    type: bool
    default: false
  keyvaults:
    description:
      - With O(state=absent), key vaults to take the secret access of deleted identities back from, before the
        identity goes (else the vault keeps an orphaned access policy entry or role assignment).
    type: list
    elements: dict
    default: []
    suboptions:
      vault_name:
        description: Name of the key vault.
        type: str
        required: true
      resource_group:
        description: Resource group of the key vault.
        type: str
        required: true
      role:
        description: On an RBAC vault, the role that was granted.
        type: str
        default: Key Vault Secrets User
      secret_permissions:
        description: On an access-policy vault, the secret permissions that were granted.
        type: list
        elements: str
        default: [get]
seealso:
  - module: aks.workload_identity.workloads_verify
  - module: aks.workload_identity.managed_identity
  - module: aks.workload_identity.federated_credential
  - module: aks.workload_identity.wid_service_account
  - module: aks.workload_identity.role_assignment
  - module: aks.workload_identity.aks_identity_binding
  - module: aks.workload_identity.wid_identity_binding_access
  - name: Identity bindings for AKS (concepts)
    description: When one identity serves many clusters and ServiceAccounts, past the 20 federated credentials.
    link: https://learn.microsoft.com/azure/aks/identity-bindings-concepts
  - name: Deploy and configure workload identity on an AKS cluster
    description: Microsoft's walk-through, the order this module follows.
    link: https://learn.microsoft.com/azure/aks/workload-identity-deploy-cluster
author:
  - Contributors to the aks.workload_identity collection (!UNKNOWN)
"""

EXAMPLES = r"""
---
- name: Give two workloads their identities (the issuer read from the cluster)
  aks.workload_identity.workloads:
    cluster_resource_group: rg-aks
    cluster_name: aks-prod
    items:
      - name: orders
        namespace: orders
        service_account: orders-api
        identity: {name: id-orders, resource_group: rg-apps}
        grants:
          - role: Key Vault Secrets User
            scope: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-apps/providers/Microsoft.KeyVault/vaults/kv-orders
      - name: billing
        namespace: billing
        service_account: billing-worker
        create_namespace: true
        identity: {name: id-billing, resource_group: rg-apps, location: westeurope}
        patch_workloads:
          - {kind: Deployment, name: billing-worker}
  register: fleet

- name: Bind one identity for the ServiceAccounts of several teams (one binding, not one credential each)
  aks.workload_identity.workloads:
    cluster_resource_group: rg-aks
    cluster_name: aks-prod
    items:
      - name: reports
        namespace: analytics
        service_account: reports
        federation: identity_binding
        identity: {name: id-data-readers, resource_group: rg-apps}
        patch_workloads:
          - {kind: Deployment, name: reports}
      - name: exporter
        namespace: finance
        service_account: exporter
        federation: identity_binding
        identity: {name: id-data-readers, resource_group: rg-apps}

- name: See what would change, without writing
  aks.workload_identity.workloads:
    issuer_url: "{{ cluster_issuer_url }}"
    items: "{{ workload_items }}"
  check_mode: true
  diff: true

- name: Take them down again, keeping identities other workloads still use
  aks.workload_identity.workloads:
    state: absent
    issuer_url: "{{ cluster_issuer_url }}"
    items: "{{ fleet.workloads }}"
    keep_items: "{{ workload_items }}"
    keyvaults:
      - {vault_name: kv-orders, resource_group: rg-apps}
"""

RETURN = r"""
workloads:
  description:
    - One entry per item, in order; the keys of the workload role's C(workload_results) plus what each step did.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The item's name.
      type: str
      sample: orders
    namespace:
      description: Namespace of the ServiceAccount.
      type: str
      sample: orders
    service_account:
      description: Name of the ServiceAccount.
      type: str
      sample: orders-api
    subject:
      description: The subject the federated credential trusts.
      type: str
      sample: system:serviceaccount:orders:orders-api
    identity_name:
      description: Name of the managed identity.
      type: str
      sample: id-orders
    identity_resource_group:
      description: Resource group of the managed identity.
      type: str
      sample: rg-apps
    identity_id:
      description: Resource ID of the identity; null in check mode for an identity that would be created.
      type: str
    client_id:
      description: Client ID of the identity (null while it does not exist).
      type: str
      sample: 9bb715b3-e30d-4143-b4ab-e6d3603d9864
    principal_id:
      description: Principal (object) ID of the identity.
      type: str
    tenant_id:
      description: Tenant of the identity.
      type: str
    credential_name:
      description: Name of the federated credential ("" while the issuer is not known).
      type: str
      sample: issuer-orders-orders-api-0e57dd6a
    issuer:
      description: The cluster's issuer, the one a workload's own credential trusts.
      type: str
    federation:
      description: How the identity trusts the workload's tokens, V(federated_credential) or V(identity_binding).
      type: str
    identity_binding_name:
      description: The identity binding on the cluster that the workload uses (C(federation=identity_binding) only).
      type: str
      returned: with C(federation=identity_binding)
    binding_issuer_url:
      description:
        - The issuer AKS gave the identity binding (C(https://<region-less AKS host>/<tenant>/<client ID>)); "" until
          the binding exists (check mode).
      type: str
      returned: with C(federation=identity_binding)
    grants:
      description: The item's grants.
      type: list
      elements: dict
    configmap:
      description: Name of the settings ConfigMap, "" without one.
      type: str
    patched_workloads:
      description: The workloads whose pod templates the item opts in.
      type: list
      elements: dict
    manifest_snippet:
      description: What to put into the pod template (label and serviceAccountName).
      type: str
    changed:
      description: Whether this workload changed (or would, in check mode).
      type: bool
    failed:
      description: Whether this workload failed.
      type: bool
    failed_step:
      description:
        - The step that failed (V(identity), V(identity_binding), V(identity_binding_access), V(namespace),
          V(service_account), V(federated_credential), V(grants), V(configmap), V(pod_templates), V(keyvault_access)).
      type: str
    error:
      description: Why it failed, naming the object and the service's error code.
      type: str
    error_code:
      description: The service's error code of the failure.
      type: str
    actions:
      description: Each step's object, action (V(create), V(update), V(delete), V(adopt), V(none)) and reason.
      type: list
      elements: dict
    warnings:
      description: Warnings of this workload (near-miss credentials, pods to restart, stand-in IDs in check mode).
      type: list
      elements: str
    federated_credential:
      description: With O(state=absent), the credential removed (or that would be), as it was.
      type: dict
    federated_credential_deleted:
      description: With O(state=absent), whether the credential was (or would be) removed, by itself or with its identity.
      type: bool
    identity_binding_deleted:
      description: With O(state=absent), whether the identity's binding to the cluster was (or would be) deleted.
      type: bool
    binding_access_removed:
      description: With O(state=absent), whether the ServiceAccount was (or would be) taken out of the binding's RBAC.
      type: bool
    service_account_removed:
      description: With O(state=absent), whether the ServiceAccount (or its workload identity annotations) was removed.
      type: bool
    configmap_removed:
      description: With O(state=absent), whether the settings ConfigMap (or its identity keys) was removed.
      type: bool
    grants_removed:
      description: With O(state=absent), the grants removed.
      type: list
      elements: dict
    grants_kept:
      description: With O(state=absent), the grants kept because a staying workload of the same identity lists them.
      type: list
      elements: dict
    pod_templates_changed:
      description: With O(state=absent), the workloads whose pod templates lost the workload identity label.
      type: list
      elements: dict
summary:
  description: How many workloads changed, did not, failed; and per step how many objects each action touched.
  returned: always
  type: dict
  sample:
    workloads: 50
    changed: 0
    unchanged: 50
    failed: 0
    actions: {"identity": {"none": 50}, "service_account": {"none": 50}}
identities:
  description:
    - With O(state=absent), per identity whether it was (or would be) deleted, and why not when kept.
  returned: when state is absent
  type: list
  elements: dict
  sample:
    - name: id-orders
      resource_group: rg-apps
      exists: true
      deleted: false
      kept_reason: "kept: still used by workload billing"
      used_by: [billing]
      other_credentials: 0
      keyvault_access_removed: []
issuer_url:
  description: The issuer used (read from the cluster when not given; "" when not known yet in check mode).
  returned: always
  type: str
cluster:
  description:
    - The cluster as read (C(exists), and when it does C(name), C(resource_group), C(issuer_url),
      C(oidc_issuer_enabled), C(workload_identity_enabled)). With O(state=absent) the cluster is always read when
      named, to know whether its Kubernetes objects still exist.
  returned: when the cluster was read
  type: dict
  sample:
    exists: true
    name: aks-prod
    resource_group: rg-aks
    oidc_issuer_enabled: true
    workload_identity_enabled: true
    issuer_url: https://westeurope.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0328c7fa-e740-4752-af1c-182a774aacc7/
api_calls:
  description: Requests made to Azure Resource Manager and the Kubernetes API, by operation.
  returned: always
  type: dict
  sample: {"msi.user_assigned_identities.list_by_resource_group": 1, "msi.federated_identity_credentials.list": 50}
throttled:
  description: How many 429 answers the managed identity provider gave this run, and the seconds spent pacing.
  returned: always
  type: dict
  sample: {"responses": 0, "seconds_waited": 0.0}
"""

import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.aks.workload_identity.plugins.module_utils import fleet
from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import AZURE_AUTH_ARGSPEC, AzureModule
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.inputs import new_module
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8S_AUTH_ARGSPEC, K8sModule
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import keyvault_access, role_assignment
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    validate_cluster_name,
    validate_keyvault_name,
    validate_location,
    validate_resource_group_name,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_items import (
    parse_items,
    validate_fleet,
)

ARGUMENT_SPEC = {
    "items": {"type": "list", "elements": "dict", "required": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "issuer_url": {"type": "str"},
    "cluster_resource_group": {"type": "str"},
    "cluster_name": {"type": "str"},
    "tenant_id": {"type": "str"},
    "default_location": {"type": "str"},
    "parallel": {"type": "int", "default": fleet.DEFAULT_PARALLEL},
    "keep_items": {"type": "list", "elements": "dict", "default": []},
    "delete_service_account": {"type": "bool", "default": True},
    "keep_identity": {"type": "bool", "default": False},
    "delete_binding_credential": {"type": "bool", "default": False},
    "keyvaults": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "no_log": False,  # vault names and the permissions granted, not secrets
        "options": {
            "vault_name": {"type": "str", "required": True},
            "resource_group": {"type": "str", "required": True},
            "role": {"type": "str", "default": "Key Vault Secrets User"},
            "secret_permissions": {"type": "list", "elements": "str", "default": ["get"], "no_log": False},
        },
    },
}
MODULE_KWARGS = {"required_together": [("cluster_resource_group", "cluster_name")]}
MAX_PARALLEL = 32  # the HTTP connection pools are sized to it


def check_options(params: dict[str, t.Any]) -> list[str]:
    """The options' own rules (the items' come from workload_items)."""
    errors = []
    if not 1 <= params["parallel"] <= MAX_PARALLEL:
        errors.append(f"parallel: must be 1-{MAX_PARALLEL}, got {params['parallel']}")
    if params["cluster_name"] is not None or params["cluster_resource_group"] is not None:
        errors += validate_resource_group_name(params["cluster_resource_group"], "cluster_resource_group")
        errors += validate_cluster_name(params["cluster_name"], "cluster_name")
    errors += validate_location(params["default_location"], "default_location")
    for index, vault in enumerate(params["keyvaults"]):
        where = f"keyvaults[{index}]"
        errors += validate_keyvault_name(vault["vault_name"], f"{where}.vault_name")
        errors += validate_resource_group_name(vault["resource_group"], f"{where}.resource_group")
        errors += role_assignment.validate_role(vault["role"], f"{where}.role")
        errors += keyvault_access.validate_secret_permissions(
            vault["secret_permissions"], f"{where}.secret_permissions"
        )
    return errors


def converge(module: AnsibleModule, engine: fleet.Fleet, params: dict[str, t.Any]) -> dict[str, t.Any]:
    items, errors = parse_items(params["items"], default_location=params["default_location"])
    tenant_id = params["tenant_id"] or None
    if not errors:
        errors = validate_fleet(
            items,
            state="present",
            issuer=params["issuer_url"],
            tenant_id=tenant_id,
            cluster_named=bool(params["cluster_name"]),
        )
    if errors:
        raise WorkloadIdentityError(f"Invalid items: {'; '.join(errors)}", code="InvalidParameter")
    engine.prepare(workloads=any(item.patch_workloads for item in items))
    cluster = fleet.read_cluster(engine.azure, params)
    if cluster.issuer is None and not module.check_mode:
        raise WorkloadIdentityError(
            f"issuer_url: no issuer to federate with: {cluster.note} (enable it with aks.workload_identity.aks_oidc, "
            "or set issuer_url)",
            code="OIDCIssuerNotEnabled" if cluster.exists else "MissingIssuer",
        )
    runs, _identities = engine.converge(items, issuer=cluster.issuer, tenant_id=tenant_id)
    return {"runs": runs, "issuer": cluster.issuer, "note": cluster.note, "cluster": cluster.view}


def take_down(module: AnsibleModule, engine: fleet.Fleet, params: dict[str, t.Any]) -> dict[str, t.Any]:
    items, errors = parse_items(params["items"], accept_results=True)
    keep, keep_errors = parse_items(params["keep_items"], accept_results=True) if params["keep_items"] else ([], [])
    errors += [f"keep_{error}" for error in keep_errors]
    if not errors:
        errors = validate_fleet(
            items,
            state="absent",
            issuer=params["issuer_url"],
            tenant_id=None,
            cluster_named=bool(params["cluster_name"]),
        )
    if errors:
        raise WorkloadIdentityError(f"Invalid items: {'; '.join(errors)}", code="InvalidParameter")
    leaving = {(item.namespace, item.service_account) for item in items}
    staying = [item for item in keep if (item.namespace, item.service_account) not in leaving]
    cluster = fleet.read_cluster(engine.azure, params, always=True)
    kubernetes = cluster.exists is not False
    engine.prepare(kubernetes=kubernetes, workloads=any(item.patch_workloads for item in items))
    runs, identities = engine.take_down(
        items,
        staying=staying,
        issuer=cluster.issuer,
        delete_service_account=params["delete_service_account"],
        keep_identity=params["keep_identity"],
        keyvaults=params["keyvaults"],
        kubernetes=kubernetes,
        delete_binding_credential=params["delete_binding_credential"],
    )
    note = None if kubernetes else f"{cluster.note}: its Kubernetes objects went with it, so they were not read"
    return {"runs": runs, "issuer": cluster.issuer, "note": note, "identities": identities, "cluster": cluster.view}


def main() -> None:
    module = new_module(
        {**AZURE_AUTH_ARGSPEC, **K8S_AUTH_ARGSPEC, **ARGUMENT_SPEC},
        supports_check_mode=True,
        **MODULE_KWARGS,
    )
    azure, kube = AzureModule(module=module), K8sModule(module=module)
    params = module.params
    secrets = [params.get("secret"), params.get("api_key")]
    try:
        errors = check_options(params)
        if errors:
            raise WorkloadIdentityError(f"Invalid input: {'; '.join(errors)}", code="InvalidParameter")
        cluster = (params["cluster_resource_group"], params["cluster_name"]) if params["cluster_name"] else None
        engine = fleet.Fleet(azure, kube, check_mode=module.check_mode, parallel=params["parallel"], cluster=cluster)
        outcome = (converge if params["state"] == "present" else take_down)(module, engine, params)
    except WorkloadIdentityError as exc:
        module.fail_json(**exc.to_fail_kwargs(redact=secrets), api_calls=azure.calls.as_dict())
    runs = outcome["runs"]
    absent = params["state"] == "absent"
    result: dict[str, t.Any] = {
        "changed": any(run.changed for run in runs),
        "workloads": [
            {**fleet.workload_result(run, outcome["issuer"]), **(fleet.teardown_view(run) if absent else {})}
            for run in runs
        ],
        "summary": fleet.summary(runs),
        "issuer_url": outcome["issuer"] or "",
        "api_calls": azure.calls.as_dict(),
        "throttled": {"responses": azure.pacer.throttled, "seconds_waited": round(azure.pacer.waited, 1)},
    }
    if "identities" in outcome:
        result["identities"] = outcome["identities"]
    if outcome["cluster"] is not None:
        result["cluster"] = outcome["cluster"]
    if module._diff:
        result["diff"] = [diff for diff in map(fleet.workload_diff, runs) if diff is not None]
    if outcome["note"] and params["state"] == "present":
        module.warn(f"Federated credentials were not planned: {outcome['note']} (check mode)")
    elif outcome["note"]:
        module.warn(outcome["note"])
    message = fleet.failure_message(runs, "set up" if params["state"] == "present" else "taken down")
    if message:
        module.fail_json(msg=message, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
