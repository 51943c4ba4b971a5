#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: workloads_verify
short_description: Check that many workloads' Microsoft Entra Workload ID chains agree, and prove them, in one call
version_added: 0.2.0
description:
  - For every workload, first the agreement checks over one snapshot of the world, then the proof the workload
    itself will make at run time, workloads in parallel (at most O(parallel) at once).
  - "Agreement: the managed identity exists (and has the client ID the workload was set up with, for entries of
    C(workload_results)); the ServiceAccount exists and its C(azure.workload.identity/client-id) annotation is the
    identity's client ID; a federated credential of the identity trusts the cluster's issuer and the
    ServiceAccount's subject for the audience C(api://AzureADTokenExchange) (an issuer that differs only by its
    trailing slash, a subject only by letter case, are named as such); every grant is assigned. Read in lists: one
    of the identities per resource group, one of the credentials per identity, one of the role assignments per
    grant scope, one of the ServiceAccounts per namespace, and the cluster once."
  - "Items with C(federation: identity_binding) use the identity's AKS identity binding on the cluster
    (O(cluster_resource_group) and O(cluster_name) are then required, and refused before any request when missing)
    instead of a federated credential of their own, whose absence is therefore no problem. Their agreement: the
    identity has a binding on the cluster (one list of the cluster's bindings serves every item), named as the
    item's C(identity_binding_name) when it gives one, in state C(Succeeded); the identity holds AKS's federated
    credential C(aks-identity-binding) with the binding's issuer (its subject and audience are AKS's own, not public,
    and not compared); the ServiceAccount is annotated with the identity's client ID; Kubernetes RBAC lets the
    ServiceAccount C(use-managed-identity) the client ID (group C(cid.wi.aks.azure.com)), asked as one
    SubjectAccessReview per item - a question the API server stores nowhere, so also asked in check mode - and, when
    denied, the ClusterRole and ClusterRoleBinding C(azure-wi-identity-binding-<client ID>) read (two GETs per
    identity) to name what is missing; grants as for the other items."
  - "Their proof, as M(aks.workload_identity.wid_verify) with C(federation=identity_binding):
    the webhook's dry run of a pod labelled and annotated C(azure.workload.identity/use-identity-binding: \"true\")
    must show the token proxy's settings (C(AZURE_KUBERNETES_TOKEN_PROXY), C(AZURE_KUBERNETES_SNI_NAME),
    C(AZURE_KUBERNETES_CA_FILE)) and a projected token with a custom audience - a webhook older than v1.6.0, or not
    configured for identity bindings, injects only the usual settings, and that is the finding; the CA ConfigMap it
    projects (C(kube-root-ca.crt)) is read in the namespace (one GET; missing, the pods could not start); a
    TokenRequest for the audience found; the exchange through the proxy with azure-identity's own
    C(WorkloadIdentityCredential(enable_azure_proxy=True)) given those settings; the read of the secret or resource.
    On AKS the proxy is served inside the cluster: when it cannot be reached from the host running the module, the
    exchange and the read are V(skipped) with that reason, not failed, and only a pod can prove them (the docs'
    verification pod does not use identity bindings, so C(pod_proof_ready) is V(false) for these items)."
  - "Proof (O(prove)), as M(aks.workload_identity.wid_verify) does it for one workload and from the same snapshot:
    one TokenRequest token per ServiceAccount, its claims compared with the credentials, the exchange at Microsoft
    Entra ID through azure-identity, the read of O(secret_name) in O(keyvault) or of O(arm_resource_id) with the
    workload's token, and the webhook's dry run. Credential and role propagation is ridden out for at most
    O(propagation_timeout) seconds; a definite mismatch fails at once. A failure names the step, the cause, the fix
    and the service's error code. No token and no secret value is ever returned."
  - Writes nothing to Azure; in Kubernetes only TokenRequests (not in check mode) and server-side dry runs.
requirements:
  - azure-identity >= 1.19.0 (>= 1.27.0 for the exchange through the AKS token proxy of identity bindings)
  - azure-mgmt-msi >= 7.0.0
  - azure-mgmt-authorization >= 4.0.0
  - azure-mgmt-containerservice >= 34.0.0 (>= 41.3.0 for items using an identity binding)
  - azure-keyvault-secrets >= 4.8.0 (for O(keyvault))
  - kubernetes >= 29.0.0
extends_documentation_fragment:
  - aks.workload_identity.azure_auth
  - aks.workload_identity.k8s_auth
attributes:
  check_mode:
    support: full
    description:
      - The same reads and comparisons; no token is requested (a TokenRequest is a write), so no exchange. The
        SubjectAccessReviews of items using an identity binding and the webhook's dry runs are asked too (neither
        stores anything).
  diff_mode:
    support: none
    description: Writes nothing, so there is nothing to diff.
  idempotent:
    support: full
    description: Changes nothing, ever.
options:
  items:
    description:
      - The workloads, as the M(aks.workload_identity.workload) role's C(workload_items) or its C(workload_results)
        (with C(identity_name) and C(identity_resource_group), and the C(client_id) and C(issuer) they were set up
        with, which are then compared too). C(name), C(namespace), C(service_account) and the identity are needed;
        C(credential_name) checks the credential by name, C(grants) the role assignments.
      - C(federation) (V(federated_credential) by default, or V(identity_binding)) says how the identity trusts the
        ServiceAccount's tokens; C(identity_binding_name) checks the binding's name. Items using a binding need
        O(cluster_name).
    type: list
    elements: dict
    required: true
  issuer_url:
    description:
      - The OIDC issuer URL the credentials must trust, exactly as Azure returns it. Unset takes the cluster's
        (O(cluster_resource_group), O(cluster_name)), else each workload's C(issuer). When both this and the
        cluster's are known and differ, that is a problem of its own (RV(cluster_problems)).
    type: str
  cluster_resource_group:
    description:
      - Resource group of the AKS cluster to read (its issuer, OIDC issuer and workload identity settings, and the
        identity bindings items with C(federation=identity_binding) use).
    type: str
  cluster_name:
    description: Name of the AKS cluster to read; required when an item uses an identity binding.
    type: str
  prove:
    description:
      - V(true) proves every chain with a real token (see the description); V(false) only runs the agreement
        checks.
    type: bool
    default: true
  keyvault:
    description: Name or URL of the key vault whose O(secret_name) each workload reads with its token.
    type: str
  secret_name:
    description: The secret to read; its value is never returned.
    type: str
  arm_resource_id:
    description: An Azure Resource Manager resource to read with each workload's token when no secret is named.
    type: str
  arm_api_version:
    description: The api-version to read O(arm_resource_id) with (not needed for a resource group).
    type: str
  propagation_timeout:
    description: Seconds to keep retrying while Entra ID or Azure RBAC has not caught up with a credential or grant.
    type: int
    default: 300
  retry_interval:
    description: Seconds between the first retries (then backing off).
    type: int
    default: 5
  webhook_dry_run:
    description: Dry-run a labelled pod per workload and check what the webhook would inject.
    type: bool
    default: true
  parallel:
    description: How many workloads are proven at once (and reads in flight), 1-32.
    type: int
    default: 8
seealso:
  - module: aks.workload_identity.wid_verify
  - module: aks.workload_identity.workloads
author:
  - Contributors to the aks.workload_identity collection (!UNKNOWN)
"""

EXAMPLES = r"""
---
- name: Prove every workload the workload role set up, reading the vault's secret as each
  aks.workload_identity.workloads_verify:
    items: "{{ workload_results }}"
    cluster_resource_group: rg-aks
    cluster_name: aks-prod
    keyvault: kv-orders
    secret_name: app-secret
  register: proof

- name: Prove workloads that share one identity through its AKS identity binding
  aks.workload_identity.workloads_verify:
    items:
      - name: orders-api
        namespace: orders
        service_account: orders-api
        identity: {name: id-orders, resource_group: rg-apps}
        federation: identity_binding
    cluster_resource_group: rg-aks
    cluster_name: aks-prod
    keyvault: kv-orders
    secret_name: app-secret
  register: bound_proof

- name: Only check that the chains agree (no token), in check mode
  aks.workload_identity.workloads_verify:
    items: "{{ workload_items }}"
    issuer_url: "{{ cluster_issuer_url }}"
    prove: false
  check_mode: true
"""

RETURN = r"""
workloads:
  description: One entry per item, in order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The item's name.
      type: str
    namespace:
      description: Namespace of the ServiceAccount.
      type: str
    service_account:
      description: Name of the ServiceAccount.
      type: str
    subject:
      description: The ServiceAccount's subject.
      type: str
    identity_name:
      description: Name of the identity.
      type: str
    identity_resource_group:
      description: Resource group of the identity.
      type: str
    client_id:
      description: Client ID of the identity (null when it does not exist).
      type: str
    issuer:
      description: The issuer the credential must trust.
      type: str
    credential_name:
      description: The credential that agrees ("" when none does, and for an item using an identity binding).
      type: str
    federation:
      description: How the identity trusts the ServiceAccount's tokens.
      type: str
      choices: [federated_credential, identity_binding]
    identity_binding_name:
      description:
        - The identity's binding on the cluster as found (else the name the item gives or the default one), for an
          item using an identity binding.
      type: str
      returned: for items with C(federation=identity_binding)
    binding_issuer_url:
      description: The issuer of that binding ("" when there is none), which C(aks-identity-binding) must trust.
      type: str
      returned: for items with C(federation=identity_binding)
    proof:
      description:
        - V(passed), V(failed), V(skipped) or V(error) in C(status); for a proof that ran, C(failed_step), C(cause),
          C(fix), C(error_code), C(steps), C(webhook), C(access) (never a secret value), C(attempts) and
          C(progress), as M(aks.workload_identity.wid_verify) returns them; C(binding) for an item using an
          identity binding. An exchange through the AKS token proxy that this host cannot reach is a V(skipped)
          step with the reason, and the proof's C(status) is then still V(passed).
      type: dict
    passed:
      description: No problem was found.
      type: bool
    problems:
      description: One sentence per problem, the agreement checks first, then the proof's failure.
      type: list
      elements: str
    pod_proof_ready:
      description:
        - Whether the docs' verification pod (M(aks.workload_identity.wid_verify_pod)) could tell more - the proof
          reads a key vault secret and got past the token exchange.
      type: bool
    keyvault_url:
      description: The URL of the vault the proof reads ("" without one), for the verification pod.
      type: str
cluster:
  description: The cluster as read (when named).
  returned: when a cluster is named
  type: dict
cluster_problems:
  description: What is wrong with the cluster itself (OIDC issuer or workload identity off, another issuer).
  returned: always
  type: list
  elements: str
passed:
  description: Every workload passed and the cluster has no problem.
  returned: always
  type: bool
api_calls:
  description:
    - Azure Resource Manager and Kubernetes requests of the snapshot and the proofs, by operation (the proofs'
      TokenRequests and dry runs are not counted). Items using an identity binding add one list of the cluster's
      bindings for all, one SubjectAccessReview each (C(kubernetes.subjectaccessreviews.create)), two RBAC GETs per
      identity a review denied, and in the proof one C(kubernetes.configmaps.get) each.
  returned: always
  type: dict
"""

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils import trust_check as tc
from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import AZURE_AUTH_ARGSPEC, AzureModule
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.fleet_verify import (
    PROOF_ARGSPEC,
    Verification,
    proof_option_errors,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.inputs import new_module
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8S_AUTH_ARGSPEC, K8sModule
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_items import (
    parse_items,
    validate_fleet,
)

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    "items": {"type": "list", "elements": "dict", "required": True},
    "issuer_url": {"type": "str"},
    "cluster_resource_group": {"type": "str"},
    "cluster_name": {"type": "str"},
    "prove": {"type": "bool", "default": True},
    **PROOF_ARGSPEC,
}

MODULE_KWARGS: dict[str, t.Any] = {
    "required_together": [("cluster_resource_group", "cluster_name"), ("keyvault", "secret_name")],
    "mutually_exclusive": [("keyvault", "arm_resource_id")],
}


def main() -> None:
    module = new_module(
        AZURE_AUTH_ARGSPEC | K8S_AUTH_ARGSPEC | ARGUMENT_SPEC, supports_check_mode=True, **MODULE_KWARGS
    )
    azure, kube = AzureModule(module=module), K8sModule(module=module)
    secrets = [module.params.get("secret"), module.params.get("api_key")]
    try:
        items, errors = parse_items(module.params["items"], accept_results=True)
        errors = proof_option_errors(module.params) + (
            errors
            or validate_fleet(
                items,
                state="absent",
                issuer=module.params["issuer_url"],
                tenant_id=None,
                cluster_named=bool(module.params["cluster_name"]),
            )
        )
        if errors:
            raise WorkloadIdentityError(f"Invalid input: {'; '.join(errors)}", code="InvalidParameter")
        outcome = Verification(module.params, azure, kube, check_mode=module.check_mode).run(items)
    except WorkloadIdentityError as exc:
        kwargs = exc.to_fail_kwargs(redact=secrets)
        module.fail_json(**{k: tc.redact(v, secrets) if isinstance(v, str) else v for k, v in kwargs.items()})
    result = {"changed": False, **outcome, "api_calls": azure.calls.as_dict()}
    if result["cluster"] is None:
        del result["cluster"]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
