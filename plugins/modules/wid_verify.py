#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: wid_verify
short_description: Prove that a workload's Microsoft Entra Workload ID trust chain works, and say why when it does not
version_added: 0.1.0
description:
  - Walks the trust chain of one Kubernetes ServiceAccount the way a pod mutated by the azure-workload-identity
    webhook does, and reports each step as passed, failed or skipped.
  - "C(serviceaccount): reads the ServiceAccount and its C(azure.workload.identity/client-id) and
    C(azure.workload.identity/tenant-id) annotations."
  - "C(cluster): reads the OIDC issuer URL of the AKS cluster O(cluster_resource_group)/O(cluster_name) (one GET),
    or takes O(issuer_url); fails when the cluster's OIDC issuer is not enabled."
  - "C(credential): reads the identity's federated identity credentials from Azure Resource Manager and compares
    them with the token's issuer, subject and audience exactly, as Entra ID does, naming near misses (a trailing
    slash or letter case in the issuer, letter case, namespace or name in the subject, another audience)."
  - "C(token): requests a ServiceAccount token from the API server (TokenRequest) with audience O(audience) and
    decodes its claims (without verifying them; Entra ID verifies). The token is never returned or logged."
  - "C(exchange): exchanges the token at Entra ID for an access token of the identity (a client assertion, as
    azure-identity's WorkloadIdentityCredential does in the pod), for O(scope)."
  - "C(access): with O(keyvault) and O(secret_name), reads that secret with the identity's token (its value is
    not returned unless O(return_secret_value=true)); with O(arm_resource_id), GETs that Azure resource, as
    C(az group show) would."
  - "C(webhook): with O(webhook_dry_run=true), creates a pod labelled C(azure.workload.identity/use: \"true\")
    that uses the ServiceAccount as a server-side dry run (nothing is stored, no container runs) and checks that
    the webhook injected C(AZURE_CLIENT_ID), C(AZURE_TENANT_ID), C(AZURE_FEDERATED_TOKEN_FILE),
    C(AZURE_AUTHORITY_HOST) and the projected token volume. Skipped, with the reason, when nothing was injected
    and no C(MutatingWebhookConfiguration) holds the webhook C(mutation.azure-workload-identity.io)."
  - "With O(federation=identity_binding) the workload uses an AKS identity binding instead of a federated
    credential of its own (the cluster O(cluster_resource_group)/O(cluster_name) is then required), and the chain is
    walked as a pod annotated C(azure.workload.identity/use-identity-binding: \"true\") walks it.
    C(serviceaccount) also asks the API server (a SubjectAccessReview, a question that stores nothing, so also in
    check mode) whether Kubernetes RBAC lets the ServiceAccount C(use-managed-identity) the identity's client ID
    (API group C(cid.wi.aks.azure.com)), and on a denial reads the ClusterRole and ClusterRoleBinding
    C(azure-wi-identity-binding-<client ID>) to say what is missing. C(cluster) lists the cluster's identity
    bindings (one request) and finds the identity's, which must be C(Succeeded). C(credential) checks that the
    identity holds AKS's federated credential C(aks-identity-binding) with the binding's issuer; no credential of the
    workload's own is needed or looked for. C(webhook) runs before the token: the dry-run pod also carries the
    annotation, and the webhook must inject C(AZURE_KUBERNETES_TOKEN_PROXY), C(AZURE_KUBERNETES_SNI_NAME),
    C(AZURE_KUBERNETES_CA_FILE) and a projected token for a custom audience (a webhook older than v1.6.0, or one
    not configured for identity bindings, injects only the usual settings: that fails the step, naming it); the CA
    file's source, the ConfigMap (C(kube-root-ca.crt)) in O(namespace), is read (one GET), and a missing one fails
    the step, as the pods could not start. C(token) requests the token for the audience found in the dry run.
    C(exchange) goes through the AKS token proxy with azure-identity's own
    C(WorkloadIdentityCredential(enable_azure_proxy=True)) (azure-identity 1.27.0 or later), given the injected
    proxy URL, SNI name and the ConfigMap's CA as the pod gets them. On AKS the proxy is served inside the cluster
    and usually cannot be reached from the host running Ansible: then C(exchange) and C(access) are V(skipped) with
    that reason, and only a pod can prove them."
  - "What binding mode does not prove: that the proxy AKS runs accepts the token (when it cannot be reached), and
    the subject and audience of C(aks-identity-binding), which AKS does not document (only its issuer is compared)."
  - A failure is diagnosed before anything is retried. Only what can be propagation is retried, for at most
    O(propagation_timeout) seconds with backoff, each retry adding a line to RV(progress) - Entra ID refusing a
    token (AADSTS70021, AADSTS700211, AADSTS700213) although Azure Resource Manager already holds a federated
    credential matching it exactly (new credentials take minutes to reach Entra ID), and Key Vault C(403
    ForbiddenByRbac) or ARM C(403 AuthorizationFailed) when a role assignment that allows the read exists or
    cannot be checked (role assignments take minutes to take effect). A definite mismatch fails at once. In
    identity binding mode, the same AADSTS codes coming back through the token proxy are retried when
    C(aks-identity-binding) already trusts the binding's issuer (AKS has just created it).
  - The module never changes anything (C(changed) is always V(false)).
requirements:
  - python >= 3.10
  - azure-identity >= 1.19.0 (>= 1.27.0 for the exchange through the AKS token proxy with
    O(federation=identity_binding); an older one skips that exchange, saying so)
  - azure-mgmt-msi >= 7.0.0
  - azure-mgmt-containerservice >= 34.0.0 (only with O(cluster_name); >= 41.3.0 with O(federation=identity_binding))
  - azure-mgmt-authorization >= 4.0.0 (to tell a missing role assignment from one still propagating)
  - azure-mgmt-resource >= 23.0.0 (only with O(arm_resource_id))
  - azure-keyvault-secrets >= 4.8.0 (only with O(keyvault))
  - kubernetes >= 29.0.0
extends_documentation_fragment:
  - aks.workload_identity.azure_auth
  - aks.workload_identity.k8s_auth
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details:
      - The module never writes. In check mode it does not request a ServiceAccount token either (a TokenRequest
        is a create in the API server's audit log), so C(token), C(exchange) and C(access) are skipped with the
        reason V(check mode); the credential comparison uses the issuer of the cluster or O(issuer_url) and the
        ServiceAccount's subject. The webhook dry run does run (it is a C(dryRun=All) request). With
        O(federation=identity_binding) the SubjectAccessReview, the bindings list and the CA ConfigMap's read run
        too (none of them stores anything).
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode).
    support: none
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
  action_group:
    description: Use C(group/aks.workload_identity.azure) and C(group/aks.workload_identity.k8s) in
      C(module_defaults) to set the connection options.
    support: full
    membership:
      - aks.workload_identity.azure
      - aks.workload_identity.k8s
options:
  namespace:
    description:
      - Namespace of the ServiceAccount, an RFC 1123 label.
      - A namespace or ServiceAccount that does not exist fails the C(serviceaccount) step (the result still
        reports the other steps); no token is requested for it and no pod is dry-run.
    type: str
    required: true
  service_account:
    description:
      - Name of the ServiceAccount whose trust chain to verify, an RFC 1123 subdomain.
    type: str
    required: true
  identity_client_id:
    description:
      - Client ID of the user-assigned managed identity the workload acts as, a GUID.
      - Defaults to the ServiceAccount's C(azure.workload.identity/client-id) annotation. When both are set and
        differ, the C(serviceaccount) step fails, because the webhook gives pods the annotation's value.
      - Named so as not to clash with O(client_id), the client ID the module authenticates to Azure with.
    type: str
  tenant_id:
    description:
      - Tenant of the identity, a GUID. Defaults to the ServiceAccount's C(azure.workload.identity/tenant-id)
        annotation, else O(tenant).
    type: str
  identity_resource_group:
    description:
      - Resource group of the managed identity, whose federated credentials are compared with the token (1-90
        letters, digits, C(_), C(-), C(.), C(\() or C(\)), not ending with C(.)).
      - When O(identity_resource_group) and O(identity_name) are not set, the identity is found by its client ID
        in the subscription (one list of the subscription's user-assigned identities). When it is not there
        (another subscription), the comparison is skipped and only Entra ID's answer is diagnosed.
    type: str
  identity_name:
    description:
      - Name of the managed identity (3-128 letters, digits, C(-) or C(_), starting with a letter or digit).
        Requires O(identity_resource_group).
    type: str
  issuer_url:
    description:
      - The OIDC issuer the federated credentials must trust, exactly (on AKS it ends with a slash), an https URL
        of at most 600 characters.
      - Mutually exclusive with O(cluster_name). When neither is set, the token's C(iss) claim is used alone (and
        in check mode the comparison is skipped).
    type: str
  cluster_resource_group:
    description:
      - Resource group of the AKS cluster to read the OIDC issuer URL from (as O(identity_resource_group)).
        Requires O(cluster_name).
    type: str
  cluster_name:
    description:
      - Name of the AKS cluster to read the OIDC issuer URL from (one GET). The token's issuer must equal it.
      - 1-63 letters, digits, C(-) or C(_), starting and ending with a letter or digit.
    type: str
  federation:
    description:
      - How the identity trusts the ServiceAccount's tokens.
      - V(federated_credential) - a federated credential of the identity trusts the cluster's issuer and the
        ServiceAccount's subject; the token is exchanged at Entra ID directly.
      - V(identity_binding) - the identity is bound to the cluster (an AKS identity binding, named by
        O(cluster_resource_group) and O(cluster_name), which are then required), Kubernetes RBAC lets the
        ServiceAccount use it, and the token is exchanged through the AKS token proxy the webhook points pods to
        (see the description). O(audience) and O(issuer_url) do not apply.
    type: str
    choices: [federated_credential, identity_binding]
    default: federated_credential
  audience:
    description:
      - Audience of the ServiceAccount token, which the federated credential must trust. Defaults to
        V(api://AzureADTokenExchange), the audience the webhook requests.
      - At most 600 characters, without wildcards, as in a federated credential.
      - Refused with O(federation=identity_binding), whose token audience is the one the webhook injects for
        identity bindings, read from its dry run.
    type: str
  token_expiration:
    description:
      - Lifetime in seconds of the ServiceAccount token requested, 600 to 4294967296 (2^32) as the API server
        accepts.
    type: int
    default: 600
  scope:
    description:
      - Scope of the access token the exchange asks Entra ID for, a resource followed by C(/.default) such as
        C(https://vault.azure.net/.default), the only form the client credentials flow takes.
      - Defaults to Key Vault's (C(https://vault.azure.net/.default) in the public cloud) when O(keyvault) is set,
        else Azure Resource Manager's, both derived from the cloud settings (O(cloud_environment)).
    type: str
  keyvault:
    description:
      - Name or URL of a Key Vault to prove access to by reading O(secret_name) with the identity's token.
      - A name is 3-24 letters, digits and C(-), starting with a letter; a URL is the vault's
        C(https://<vault>.vault.azure.net/), without a path, query or fragment.
      - Mutually exclusive with O(arm_resource_id).
    type: str
  secret_name:
    description:
      - Secret to read in O(keyvault), 1-127 letters, digits or C(-). Requires O(keyvault).
    type: str
  return_secret_value:
    description:
      - Return the secret's value in RV(access.secret_value). Only with O(keyvault) and O(secret_name).
      - "When V(true), give the task C(no_log: true): Ansible does not know the value is secret and would print
        the registered result at C(-v)."
    type: bool
    default: false
  arm_resource_id:
    description:
      - Azure resource ID to prove access to by reading it with the identity's token, for example a resource
        group ID (C(/subscriptions/<id>/resourceGroups/<name>)). The subscription must be a GUID, the resource
        group a valid name; other resources are C(.../providers/<Namespace>/<type>/<name>).
    type: str
  arm_api_version:
    description:
      - API version for reading O(arm_resource_id) when it is not a resource group (each resource provider has
        its own). Not needed for a resource group; refused without O(arm_resource_id).
      - A date, C(YYYY-MM-DD), optionally followed by C(-preview).
    type: str
  propagation_timeout:
    description:
      - Most seconds spent retrying refusals that may be propagation (see the description), 0 to 86400. V(0)
        retries nothing.
    type: int
    default: 300
  retry_interval:
    description:
      - Seconds before the first retry, 1 to 30; each further wait doubles, up to 30 seconds.
    type: int
    default: 5
  webhook_dry_run:
    description:
      - Check the webhook's pod mutation with a server-side dry run of a pod create.
      - With O(federation=identity_binding) the token audience and the proxy's settings come from this dry run, and
        V(false) skips the C(token), C(exchange) and C(access) steps.
    type: bool
    default: true
  fail_on_error:
    description:
      - When V(false), a failed verification returns RV(passed=false) without failing the task (for roles that
        collect results). Bad input, and Azure or Kubernetes that cannot be reached, always fail the task.
    type: bool
    default: true
notes:
  - "Kubernetes RBAC the connecting user needs in O(namespace): C(get) on C(serviceaccounts); C(create) on
    C(serviceaccounts/token) (not in check mode); C(create) on C(pods) for the webhook dry run (a dry run stores
    nothing; when forbidden the step is skipped); optionally C(list) on C(mutatingwebhookconfigurations)
    (cluster-wide, group C(admissionregistration.k8s.io)) to tell a missing webhook from one that did not mutate
    the pod. With O(federation=identity_binding) also C(create) on C(subjectaccessreviews) (group
    C(authorization.k8s.io)), C(get) on C(configmaps) in O(namespace), and C(get) on C(clusterroles) and
    C(clusterrolebindings) (when a review is denied); a refused read skips what it would check, with the reason."
  - "Azure permissions of the identity the module authenticates as: read the managed identity and its federated
    identity credentials (C(Microsoft.ManagedIdentity/userAssignedIdentities/read),
    C(.../federatedIdentityCredentials/read)); without O(identity_name), list the subscription's user-assigned
    identities; with O(cluster_name), read the cluster (C(Microsoft.ContainerService/managedClusters/read)); to
    tell a missing role assignment from one still propagating, read role assignments and role definitions
    (C(Microsoft.Authorization/roleAssignments/read), C(.../roleDefinitions/read)); with
    O(federation=identity_binding), list the cluster's identity bindings
    (C(Microsoft.ContainerService/managedClusters/identityBindings/read)). The C(Reader) role on the
    resource groups involved is enough. The secret or resource read itself uses the workload identity's token."
  - The ServiceAccount token is requested for the ServiceAccount under test, so it is as powerful as that
    workload's own token for its lifetime (O(token_expiration)); it is kept in memory only and never returned.
seealso:
  - module: aks.workload_identity.workloads_verify
  - module: aks.workload_identity.aks_identity_binding
  - module: aks.workload_identity.wid_identity_binding_access
  - module: aks.workload_identity.aks_oidc
  - module: aks.workload_identity.managed_identity
  - module: aks.workload_identity.federated_credential
  - module: aks.workload_identity.wid_service_account
  - module: aks.workload_identity.keyvault_access
  - name: Troubleshoot Microsoft Entra Workload ID
    description: The errors a workload sees and what causes them.
    link: https://azure.github.io/azure-workload-identity/docs/troubleshooting.html
  - name: Entra ID error codes (AADSTS)
    description: The reference of the codes in RV(error_code).
    link: https://learn.microsoft.com/entra/identity-platform/reference-error-codes
author:
  - Contributors to the aks.workload_identity collection (!UNKNOWN)
"""

EXAMPLES = r"""
---
- name: Verify the orders-api workload end to end, reading its Key Vault secret
  aks.workload_identity.wid_verify:
    namespace: orders
    service_account: orders-api
    cluster_resource_group: rg-aks
    cluster_name: aks-prod
    identity_resource_group: rg-apps
    identity_name: id-orders
    keyvault: kv-orders
    secret_name: db-password
  register: verify

- name: Show what failed and how to fix it
  ansible.builtin.debug:
    msg: "{{ verify.failed_step }}: {{ verify.cause }} -> {{ verify.fix }}"
  when: not verify.passed

- name: Prove the identity can read its resource group (as az group show), waiting up to 10 minutes for a new grant
  aks.workload_identity.wid_verify:
    namespace: orders
    service_account: orders-api
    arm_resource_id: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-apps
    propagation_timeout: 600

- name: Collect results of many workloads without failing on the first
  aks.workload_identity.wid_verify:
    namespace: "{{ item.namespace }}"
    service_account: "{{ item.service_account }}"
    fail_on_error: false
  loop: "{{ workloads }}"
  register: verifications

- name: Compare the configuration only (no token is requested) in check mode
  aks.workload_identity.wid_verify:
    namespace: orders
    service_account: orders-api
    cluster_resource_group: rg-aks
    cluster_name: aks-prod
  check_mode: true

- name: Verify a workload that uses the identity's AKS identity binding (through the AKS token proxy)
  aks.workload_identity.wid_verify:
    namespace: orders
    service_account: orders-api
    federation: identity_binding
    cluster_resource_group: rg-aks
    cluster_name: aks-prod
    identity_resource_group: rg-apps
    identity_name: id-orders
    keyvault: kv-orders
    secret_name: db-password
  register: bound
  # From outside the cluster the proxy is usually out of reach: exchange and access are then skipped, with the reason

- name: Read the secret's value too; the registered result holds it, so hide the task's output
  aks.workload_identity.wid_verify:
    namespace: orders
    service_account: orders-api
    keyvault: kv-orders
    secret_name: db-password
    return_secret_value: true
  register: secret_check
  no_log: true
"""

RETURN = r"""
passed:
  description: Whether every step that ran passed (skipped steps do not fail the verification).
  returned: always
  type: bool
  sample: false
federation:
  description: How the workload's identity trusts its tokens, O(federation).
  returned: always
  type: str
  choices: [federated_credential, identity_binding]
  sample: identity_binding
binding:
  description:
    - The identity's binding on the cluster, as found in the cluster's list (O(federation=identity_binding)); V(null)
      in the other mode or when there is none.
  returned: always
  type: dict
  contains:
    name:
      description: Name of the identity binding.
      type: str
    issuer_url:
      description: The binding's OIDC issuer, which C(aks-identity-binding) must trust.
      type: str
    provisioning_state:
      description: Its provisioning state; only V(Succeeded) is usable.
      type: str
  sample: {"name": "idorders", "issuer_url": "https://ib.oic.prod-aks.azure.com/<tenant>/<client id>",
    "provisioning_state": "Succeeded"}
failed_step:
  description: The first step that failed, in the order of RV(steps); V(null) when all passed.
  returned: always
  type: str
  choices: [serviceaccount, cluster, credential, token, exchange, access, webhook]
  sample: credential
cause:
  description: One sentence saying what is wrong, naming the values involved; V(null) when all passed.
  returned: always
  type: str
  sample: "federated credential 'orders-api' trusts issuer 'https://westeurope.oic.prod-aks.azure.com/t/c' but the
    token's issuer is 'https://westeurope.oic.prod-aks.azure.com/t/c/': issuers ... differ only by a trailing slash"
fix:
  description: One sentence saying what to do about RV(cause); V(null) when all passed.
  returned: always
  type: str
  sample: set the credential's issuer to exactly 'https://westeurope.oic.prod-aks.azure.com/t/c/'
error_code:
  description:
    - The raw code behind the failure, such as V(AADSTS700211), V(ForbiddenByRbac), V(AuthorizationFailed),
      V(AccessDenied), V(NotFound); or the collection's own when no service sent one (V(MissingAnnotation),
      V(OIDCIssuerNotEnabled), V(ClientIdMismatch), V(IssuerMismatch); with O(federation=identity_binding)
      V(IdentityBindingNotFound), V(IdentityBindingNotReady), V(IdentityBindingAccessDenied),
      V(WebhookNotConfiguredForIdentityBinding), V(ConfigMapNotFound), V(TokenProxyTLSFailed),
      V(TokenProxyRefused)); in check mode, the AADSTS code Entra ID would answer a credential mismatch with.
      V(null) when all passed.
  returned: always
  type: str
  sample: AADSTS700211
steps:
  description: Each step of the chain, in order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The step.
      type: str
      choices: [serviceaccount, cluster, credential, token, exchange, access, webhook]
    status:
      description: What happened.
      type: str
      choices: [passed, failed, skipped]
    detail:
      description: What was checked, or why the step failed or was skipped.
      type: str
claims:
  description: The ServiceAccount token's claims, decoded without verification; V(null) when no token was
    requested (check mode, or an earlier failure). The token itself is never returned.
  returned: always
  type: dict
  contains:
    iss:
      description: Issuer.
      type: str
    sub:
      description: Subject, C(system:serviceaccount:<namespace>:<name>).
      type: str
    aud:
      description: Audiences.
      type: list
      elements: str
    exp:
      description: Expiry, seconds since the epoch.
      type: int
expected:
  description: The values the chain must hold.
  returned: always
  type: dict
  contains:
    issuer:
      description:
        - The cluster's issuer, O(issuer_url), or the token's C(iss); V(null) when unknown. With
          O(federation=identity_binding), the token's C(iss) (the AKS token proxy checks it; Entra ID sees the
          binding's issuer instead).
      type: str
    subject:
      description: The ServiceAccount's subject.
      type: str
    audience:
      description:
        - O(audience); with O(federation=identity_binding) the custom audience from the webhook's dry run (V(null)
          until it is known).
      type: str
    client_id:
      description: The identity's client ID.
      type: str
    tenant_id:
      description: The identity's tenant.
      type: str
credential:
  description: The federated credential that matches the token exactly, or V(null).
  returned: always
  type: dict
  contains:
    name:
      description: Name of the credential.
      type: str
    issuer:
      description: Its issuer.
      type: str
    subject:
      description: Its subject.
      type: str
    audiences:
      description: Its audience.
      type: list
      elements: str
webhook:
  description: What the webhook dry run found.
  returned: always
  type: dict
  contains:
    status:
      description: Outcome of the dry run.
      type: str
      choices: [passed, failed, skipped]
    reason:
      description: Why it failed or was skipped, or what it found.
      type: str
    injected_env:
      description:
        - Names of the C(AZURE_*) variables the webhook injected into the pod's container (with
          O(federation=identity_binding) also C(AZURE_KUBERNETES_TOKEN_PROXY), C(AZURE_KUBERNETES_SNI_NAME),
          C(AZURE_KUBERNETES_CA_FILE) and, when given, C(AZURE_KUBERNETES_CA_DATA)).
      type: list
      elements: str
    token_volume:
      description:
        - Whether the pod got a projected ServiceAccount token volume with O(audience) (with
          O(federation=identity_binding), with any audience).
      type: bool
    token_audience:
      description:
        - The audience of the projected token the webhook added; with O(federation=identity_binding) the custom
          audience the C(token) step then requests (V(api://AKSIdentityBinding) on AKS, as far as public sources
          tell). V(null) when there is none.
      type: str
    token_proxy:
      description:
        - The C(AZURE_KUBERNETES_TOKEN_PROXY) the webhook injected (O(federation=identity_binding)), or V(null).
      type: str
access:
  description: The access proven with the identity's token.
  returned: always
  type: dict
  contains:
    kind:
      description: What was read.
      type: str
      choices: [keyvault, arm, none]
    target:
      description: The secret URL or resource ID.
      type: str
    status:
      description: Outcome.
      type: str
      choices: [passed, failed, skipped]
    secret_value:
      description: The secret's value.
      type: str
      returned: when O(return_secret_value=true) and the secret was read
attempts:
  description: How many times the exchange and the access read were tried in total (retries included).
  returned: always
  type: int
  sample: 3
progress:
  description: One timestamped line per retry of a refusal that may be propagation.
  returned: always
  type: list
  elements: str
  sample: ["2025-01-01T10:00:00Z attempt 1: Entra refuses the token with AADSTS700211 ...; retrying in 5 s (0 of 300 s
    spent)"]
"""

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils import trust_check as tc
from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import AZURE_AUTH_ARGSPEC, AzureModule
from ansible_collections.aks.workload_identity.plugins.module_utils.chain_verifier import (
    MIN_TOKEN_REQUEST_SECONDS,
    Verifier,
    validate,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.inputs import new_module
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8S_AUTH_ARGSPEC, K8sModule
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import FEDERATIONS

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    "namespace": {"type": "str", "required": True},
    "service_account": {"type": "str", "required": True},
    "identity_client_id": {"type": "str"},
    "tenant_id": {"type": "str"},
    "identity_resource_group": {"type": "str"},
    "identity_name": {"type": "str"},
    "issuer_url": {"type": "str"},
    "cluster_resource_group": {"type": "str"},
    "cluster_name": {"type": "str"},
    "federation": {"type": "str", "choices": list(FEDERATIONS), "default": FEDERATIONS[0]},
    "audience": {"type": "str"},
    "token_expiration": {"type": "int", "default": MIN_TOKEN_REQUEST_SECONDS, "no_log": False},
    "scope": {"type": "str"},
    "keyvault": {"type": "str", "no_log": False},  # a vault name or URL
    "secret_name": {"type": "str", "no_log": False},  # a name, not a secret
    "return_secret_value": {"type": "bool", "default": False, "no_log": False},
    "arm_resource_id": {"type": "str"},
    "arm_api_version": {"type": "str"},
    "propagation_timeout": {"type": "int", "default": 300},
    "retry_interval": {"type": "int", "default": 5},
    "webhook_dry_run": {"type": "bool", "default": True},
    "fail_on_error": {"type": "bool", "default": True},
}
MODULE_KWARGS: dict[str, t.Any] = {
    "required_together": [
        ("identity_resource_group", "identity_name"),
        ("cluster_resource_group", "cluster_name"),
        ("keyvault", "secret_name"),
    ],
    "mutually_exclusive": [("issuer_url", "cluster_name"), ("keyvault", "arm_resource_id")],
    # The identity binding is a child of the cluster: the cluster must be named.
    "required_if": [("federation", FEDERATIONS[1], ("cluster_resource_group", "cluster_name"))],
}


def main() -> None:
    module = new_module(
        AZURE_AUTH_ARGSPEC | K8S_AUTH_ARGSPEC | ARGUMENT_SPEC, supports_check_mode=True, **MODULE_KWARGS
    )
    errors = validate(module.params)
    if errors:
        module.fail_json(msg="Invalid input: " + "; ".join(errors), errors=errors, changed=False)
    azure, kube = AzureModule(module=module), K8sModule(module=module)
    azure.require("azure-mgmt-msi")
    verifier = Verifier(azure, kube)
    try:
        result = verifier.run()
    except (WorkloadIdentityError, ValueError) as exc:
        error = exc if isinstance(exc, WorkloadIdentityError) else WorkloadIdentityError(str(exc), code="InvalidToken")
        secrets = [module.params.get("secret"), module.params.get("api_key"), verifier.token]
        kwargs = error.to_fail_kwargs(redact=secrets)
        module.fail_json(**{k: tc.redact(v, secrets) if isinstance(v, str) else v for k, v in kwargs.items()})
    if not result["passed"] and module.params["fail_on_error"]:
        step = result["failed_step"]
        msg = f"Verification of {verifier.target} failed at step '{step}': {result['cause']}. Fix: {result['fix']}"
        module.fail_json(msg=msg, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
