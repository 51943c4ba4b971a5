#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: wid_info
short_description: Map who trusts whom in Microsoft Entra Workload ID on a cluster, and find what is wrong
version_added: 0.1.0
description:
  - Read-only audit of workload identity on one Kubernetes cluster and the Azure side it relies on. Joins the
    OIDC issuers of the AKS clusters in O(clusters), the user-assigned managed identities and their federated
    identity credentials, the ServiceAccounts annotated with a client ID, the workloads (Deployments,
    StatefulSets, DaemonSets, Jobs, CronJobs and bare Pods) that run as them, the clusters' AKS identity bindings
    with the Kubernetes RBAC that lets ServiceAccounts use them, and the identities' Azure role assignments, into
    the ownership map RV(map) namespace/ServiceAccount -> identity (client ID) -> credentials and identity
    bindings -> role grants.
  - "Reports findings (RV(findings)), each with a stable code: a credential whose subject names no ServiceAccount
    (C(credential-orphaned)); a credential whose issuer is no known cluster's, left over from a deleted or
    re-created cluster (C(issuer-unknown)); an issuer or subject that differs from the right one only by a
    trailing slash, letter case or whitespace (C(issuer-near-miss), C(subject-near-miss)); a ServiceAccount
    annotated with a client ID no identity has (C(annotation-unknown-client-id)) or whose identity has no
    credential for it (C(annotation-no-credential)); a workload running as an annotated ServiceAccount without
    the C(azure.workload.identity/use: \"true\") label on its pod template (C(workload-label-missing)), with the
    label on a Job's or CronJob's own metadata instead (C(label-on-job-metadata)), or a ServiceAccount carrying
    the label as preview releases wanted (C(label-on-serviceaccount)); a running pod whose injected
    C(AZURE_CLIENT_ID) is no longer the ServiceAccount's (C(pod-client-id-stale)); a token expiration
    annotation outside 3600-86400 (C(token-expiration-out-of-range)); an identity close to the 20 credentials
    Azure allows (C(credential-budget)), with the advice to move its Kubernetes ServiceAccounts to an identity
    binding; aad-pod-identity leftovers (C(pod-identity-leftover)), each with the workload identity set-up to
    create instead; and, for AKS identity bindings, a workload opting in to the binding of an identity that has
    none on this cluster (C(identity-binding-missing)), an annotated ServiceAccount whose workloads opt in but which
    no RBAC grant lets use the identity (C(identity-binding-access-missing)), a grant for a client ID no audited
    identity has or no binding of this cluster maps (C(identity-binding-access-stale)), and AKS's
    C(aks-identity-binding) credential on an identity that no audited cluster binds
    (C(identity-binding-credential-unbound))."
  - "AKS identity bindings (with O(identity_bindings)): one binding maps an identity to one cluster, and AKS keeps
    one federated credential, C(aks-identity-binding), for all the identity's bindings, trusting the binding's
    issuer (not the cluster's). That credential is never reported as orphaned or of an unknown issuer; when no
    binding of its identity is on an audited cluster it gets a note only, as it may serve a binding on a cluster
    not audited. Who may use an identity through its binding is found by rule content, whoever made the RBAC:
    any ClusterRole granting the verb C(use-managed-identity) on API group C(cid.wi.aks.azure.com) and the
    identity's client ID as resource (or C(*)), bound by any ClusterRoleBinding to a ServiceAccount, to its user
    name C(system:serviceaccount:<namespace>:<name>), or to the group of its namespace
    (C(system:serviceaccounts:<namespace>)) or of all ServiceAccounts. Workloads opt in with the pod template
    annotation C(azure.workload.identity/use-identity-binding: \"true\"); an annotated ServiceAccount all of whose
    workloads opt in (or that reaches the identity by its binding and has no workload yet) needs no credential of
    its own. RV(map[].via) says how each ServiceAccount reaches its identity."
  - The Kubernetes side is the cluster the connection options reach. Its issuer is read from the API server's
    discovery document (C(/.well-known/openid-configuration)); when that is not readable, or names no issuer
    the options know, the single cluster in O(clusters) is taken as this one. Credentials trusting another
    known issuer belong to another cluster and are not checked against this cluster's ServiceAccounts.
  - "API requests, all reads. Azure: one GET per cluster in O(clusters); one list of identities (the
    subscription's, or one per group in O(identity_resource_groups)); one list of federated credentials per
    identity, because Azure has no subscription-wide list of them (run four at a time); one list of the
    subscription's role assignments (with O(include_role_assignments)), filtered here by the identities'
    principal IDs, plus one list of the subscription's role definitions only when an assigned role is not one
    of the built-in roles this collection knows by ID; with O(identity_bindings), one list of identity bindings per
    cluster in O(clusters). Every further page of a list is one more request.
    Kubernetes: one GET of the discovery document and one list per kind across all namespaces (ServiceAccounts,
    Deployments, StatefulSets, DaemonSets, Jobs, CronJobs, Pods), plus two lists for aad-pod-identity with
    O(pod_identity) and one list each of ClusterRoles and ClusterRoleBindings with O(identity_bindings); never one
    per namespace, unless O(namespaces) is given and the cluster-wide list is forbidden. RV(api_calls) counts
    them."
requirements:
  - python >= 3.10
  - azure-identity
  - azure-mgmt-containerservice (>= 41.3.0, the first release with identity bindings, to judge them; with an older
    one they are not judged, with a warning)
  - azure-mgmt-msi
  - azure-mgmt-authorization
  - kubernetes
extends_documentation_fragment:
  - aks.workload_identity.azure_auth
  - aks.workload_identity.k8s_auth
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying the target.
    support: full
    details:
      - The module only reads; check mode makes the same requests and returns the same result.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode).
    support: none
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
  action_group:
    description: Use C(group/aks.workload_identity.azure) and C(group/aks.workload_identity.k8s) in
      C(module_defaults) to set its options.
    support: full
    membership:
      - aks.workload_identity.azure
      - aks.workload_identity.k8s
options:
  clusters:
    description:
      - AKS clusters whose OIDC issuer URLs are the known issuers. A credential whose issuer is none of them (nor
        in O(issuer_urls)) is reported as C(issuer-unknown).
      - List this cluster and every other cluster whose ServiceAccounts the identities trust.
      - Empty, and O(issuer_urls) empty too, means only the issuer this cluster's API server reports is known.
    type: list
    elements: dict
    default: []
    suboptions:
      resource_group:
        description: Resource group of the cluster (1-90 letters, digits, C(_), C(-), C(.), C(\() or C(\)), not
          ending with C(.)).
        type: str
        required: true
      name:
        description: Name of the cluster (1-63 letters, digits, C(-) or C(_), starting and ending with a letter or
          digit). Each cluster once.
        type: str
        required: true
  issuer_urls:
    description:
      - More issuer URLs to treat as known, exactly as in the credentials, for clusters that are not AKS
        clusters or not readable with these credentials.
      - Each an https URL of at most 600 characters, given once.
    type: list
    elements: str
    default: []
  identity_resource_groups:
    description:
      - Resource groups whose user-assigned managed identities to audit, one list request each. Each a valid
        resource group name, given once (names ignore letter case).
      - Empty audits every identity in the subscription with one list request.
      - A ServiceAccount annotated with the client ID of an identity outside these groups is reported as
        C(annotation-unknown-client-id).
    type: list
    elements: str
    default: []
  namespaces:
    description:
      - Namespaces to audit, each an RFC 1123 label given once. Empty audits all of them.
      - Either way each kind is listed once across all namespaces and filtered here; only when that cluster-wide
        list is forbidden (403) are the given namespaces listed one by one.
      - Credentials whose subject names a ServiceAccount in another namespace are not judged.
    type: list
    elements: str
    default: []
  include_role_assignments:
    description:
      - Read the identities' Azure role assignments for RV(map[].grants), with one list of the subscription's
        assignments (needs C(Microsoft.Authorization/roleAssignments/read) on the subscription).
    type: bool
    default: true
  pod_identity:
    description:
      - Look for aad-pod-identity leftovers, C(AzureIdentity) and C(AzureIdentityBinding) objects
        (C(aadpodidentity.k8s.io/v1)) and pods labelled C(aadpodidbinding). A cluster without those
        CustomResourceDefinitions simply has none.
    type: bool
    default: true
  identity_bindings:
    description:
      - Read the AKS identity bindings of the clusters in O(clusters) (one list per cluster) and the cluster's
        ClusterRoles and ClusterRoleBindings (one list each), and judge them (the C(identity-binding-*) findings,
        RV(map[].via), RV(map[].bindings), RV(map[].rbac_grants)).
      - When they cannot be read (no right to list them, 403, or an azure-mgmt-containerservice without identity
        bindings) the module warns and does not judge them, rather than failing.
      - V(false) reads neither; AKS's C(aks-identity-binding) credential is then left unjudged too.
    type: bool
    default: true
  credential_warning_threshold:
    description:
      - An identity with at least this many federated credentials gets a C(credential-budget) warning; one with
        20, the most Azure allows, an error. 1 to 20.
    type: int
    default: 16
notes:
  - "RBAC the connecting Kubernetes user needs: C(list) on serviceaccounts, pods, deployments, statefulsets,
    daemonsets, jobs and cronjobs (cluster-wide, or in each of O(namespaces)), on azureidentities and
    azureidentitybindings with O(pod_identity), and on clusterroles and clusterrolebindings with
    O(identity_bindings). Azure: C(Reader) on the clusters (it covers their identity bindings), identities and
    subscription (role assignments)."
  - Findings are sorted by severity (error, warning, info), code and subject, and nothing in the result depends
    on the time of the run, so two runs on an unchanged set-up return the same result.
seealso:
  - module: aks.workload_identity.federated_credential
  - module: aks.workload_identity.aks_identity_binding
  - module: aks.workload_identity.wid_identity_binding_access
  - module: aks.workload_identity.wid_service_account
  - module: aks.workload_identity.wid_workload_patch
  - name: Service account labels and annotations (azure-workload-identity)
    description: The label and annotations the mutating webhook reads, and their accepted values.
    link: https://azure.github.io/azure-workload-identity/docs/topics/service-account-labels-and-annotations.html
  - name: Migrate from pod-managed identity to workload identity
    description: Microsoft's guide to replacing aad-pod-identity.
    link: https://learn.microsoft.com/azure/aks/workload-identity-migrate-from-pod-identity
author:
  - Contributors to the aks.workload_identity collection (!UNKNOWN)
"""

EXAMPLES = r"""
---
- name: Audit the cluster and every identity of the subscription
  aks.workload_identity.wid_info:
    clusters:
      - resource_group: rg-apps
        name: aks-prod
  register: audit

- name: Show the errors
  ansible.builtin.debug:
    msg: "{{ audit.findings | selectattr('severity', 'equalto', 'error') | list }}"

- name: Audit two namespaces and the identities of one resource group, without role assignments
  aks.workload_identity.wid_info:
    clusters:
      - resource_group: rg-apps
        name: aks-prod
      - resource_group: rg-apps-dr
        name: aks-dr
    identity_resource_groups: [rg-apps]
    namespaces: [orders, payments]
    include_role_assignments: false
  register: audit

- name: Render the trust map as Markdown with a Mermaid diagram
  ansible.builtin.copy:
    content: "{{ audit | aks.workload_identity.trust_map_markdown }}"
    dest: audit.md
    mode: "0644"
"""

RETURN = r"""
map:
  description:
    - The ownership map, one entry per ServiceAccount and identity that an annotation or a federated credential
      ties together, sorted by namespace, ServiceAccount and client ID.
  returned: always
  type: list
  elements: dict
  contains:
    namespace:
      description: Namespace of the ServiceAccount.
      type: str
    service_account:
      description: Name of the ServiceAccount.
      type: str
    subject:
      description: The subject its tokens carry, C(system:serviceaccount:<namespace>:<name>).
      type: str
    service_account_exists:
      description: Whether the ServiceAccount exists (V(false) for a credential whose ServiceAccount is gone).
      type: bool
    annotated:
      description: Whether the ServiceAccount's C(azure.workload.identity/client-id) annotation names this identity.
      type: bool
    client_id:
      description: The client ID of the entry (the annotation's, else the identity's).
      type: str
    tenant_id:
      description: The ServiceAccount's C(azure.workload.identity/tenant-id) annotation, if any.
      type: str
    token_expiration:
      description: The ServiceAccount's token expiration annotation as written, if any.
      type: str
    identity:
      description: The identity (V(null) when no identity has the client ID).
      type: dict
      contains:
        name:
          description: Name of the identity.
          type: str
        resource_group:
          description: Resource group of the identity.
          type: str
        id:
          description: Azure resource ID of the identity.
          type: str
        client_id:
          description: Client ID of the identity.
          type: str
        principal_id:
          description: Object (principal) ID of the identity.
          type: str
    credentials:
      description: The identity's federated credentials whose subject names this ServiceAccount.
      type: list
      elements: dict
      contains:
        name:
          description: Name of the credential.
          type: str
        issuer:
          description: The issuer it trusts.
          type: str
        subject:
          description: The subject it trusts.
          type: str
        audiences:
          description: The audience it trusts.
          type: list
          elements: str
        issuer_status:
          description: How the issuer compares with the known ones.
          type: str
          choices: [ok, other-cluster, issuer-near-miss, issuer-unknown]
        issuer_owner:
          description: Whose issuer it is (C(cluster <resource group>/<name>), C(issuer_urls), this cluster's API server).
          type: str
    grants:
      description: The identity's role assignments (empty without O(include_role_assignments)).
      type: list
      elements: dict
      contains:
        role:
          description: The role's name, or its definition ID when the name is not known.
          type: str
        role_definition_id:
          description: The role definition ID.
          type: str
        scope:
          description: Where the role is assigned.
          type: str
    workloads:
      description: Workloads running as the ServiceAccount, with whether their pod template carries the label.
      type: list
      elements: dict
      contains:
        kind:
          description: Deployment, StatefulSet, DaemonSet, Job, CronJob or Pod.
          type: str
        name:
          description: Name of the workload.
          type: str
        labelled:
          description: Whether the pod template has C(azure.workload.identity/use=true).
          type: bool
        identity_binding:
          description: Whether the pod template opts in to the identity binding
            (C(azure.workload.identity/use-identity-binding=true)).
          type: bool
    via:
      description:
        - How the ServiceAccount reaches the identity on this cluster. V(federated_credential) by a credential of its
          own (this cluster's issuer, its subject, the webhook's audience); V(identity_binding) by the identity's
          binding to this cluster and an RBAC grant; V(both); V(none).
        - Bindings and RBAC not read (O(identity_bindings), or not readable) count as absent here.
      type: str
      choices: [federated_credential, identity_binding, both, none]
    bindings:
      description: The identity's AKS identity bindings on this cluster (there is at most one per cluster).
      type: list
      elements: dict
      contains:
        cluster_resource_group:
          description: Resource group of the cluster, as O(clusters) names it.
          type: str
        cluster_name:
          description: Name of the cluster, as O(clusters) names it.
          type: str
        name:
          description: Name of the binding.
          type: str
        issuer_url:
          description: The binding's issuer, C(https://<AKS host>/<tenant>/<client ID>), which AKS's
            C(aks-identity-binding) credential trusts.
          type: str
        provisioning_state:
          description: The binding's provisioning state.
          type: str
    rbac_grants:
      description: The RBAC grants that let the ServiceAccount use the identity through its binding.
      type: list
      elements: dict
      contains:
        cluster_role:
          description: The ClusterRole whose rule grants C(use-managed-identity) on the client ID (or C(*)).
          type: str
        cluster_role_binding:
          description: The ClusterRoleBinding that binds it.
          type: str
        subject:
          description: How the ClusterRoleBinding names the ServiceAccount, C(ServiceAccount/<namespace>/<name>),
            C(User/system:serviceaccount:<namespace>:<name>) or C(Group/<group>).
          type: str
    pods:
      description: Running pods of the ServiceAccount, the client IDs injected into them, and whether any is stale.
      type: list
      elements: dict
  sample:
    - namespace: orders
      service_account: orders-api
      subject: system:serviceaccount:orders:orders-api
      service_account_exists: true
      annotated: true
      client_id: 9bb715b3-e30d-4143-b4ab-e6d3603d9864
      tenant_id: null
      token_expiration: null
      identity:
        name: id-orders
        resource_group: rg-apps
        id: /subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-apps/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-orders
        client_id: 9bb715b3-e30d-4143-b4ab-e6d3603d9864
        principal_id: 5c3b1a2e-0000-4000-8000-000000000001
      credentials:
        - name: aks-prod-orders-orders-api-1a2b3c4d
          issuer: https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0328c7fa-e740-4752-af1c-182a774aacc7/
          subject: system:serviceaccount:orders:orders-api
          audiences: [api://AzureADTokenExchange]
          issuer_status: ok
          issuer_owner: cluster rg-apps/aks-prod
      grants:
        - role: Reader
          role_definition_id: "/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.Authorization/\
            roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"
          scope: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-apps
      workloads:
        - kind: Deployment
          name: orders-api
          labelled: true
          identity_binding: false
      pods: []
      via: federated_credential
      bindings: []
      rbac_grants: []
identities:
  description:
    - Every audited identity with all its federated credentials (C(credential_count) V(null) when they could
      not be read), role grants, identity bindings and RBAC grants.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Name of the identity.
      type: str
    resource_group:
      description: Resource group of the identity.
      type: str
    id:
      description: Azure resource ID of the identity.
      type: str
    client_id:
      description: Client ID of the identity.
      type: str
    principal_id:
      description: Object (principal) ID of the identity.
      type: str
    tenant_id:
      description: Tenant of the identity.
      type: str
    credential_count:
      description: How many federated credentials it has (V(null) when they could not be read).
      type: int
    credentials:
      description: Its federated credentials (C(name), C(issuer), C(subject), C(audiences)), by name, AKS's
        C(aks-identity-binding) among them.
      type: list
      elements: dict
    grants:
      description: Its role assignments, as in RV(map[].grants).
      type: list
      elements: dict
    bindings:
      description: Its AKS identity bindings on the clusters of O(clusters), each as in RV(map[].bindings).
      type: list
      elements: dict
    rbac_grants:
      description: The RBAC grants naming its client ID (wildcard rules aside).
      type: list
      elements: dict
      contains:
        cluster_role:
          description: The ClusterRole whose rule grants C(use-managed-identity) on its client ID.
          type: str
        cluster_role_binding:
          description: The ClusterRoleBinding that binds it.
          type: str
        subjects:
          description: The subjects that can be ServiceAccounts, C(ServiceAccount/<namespace>/<name>),
            C(User/<name>) or C(Group/<name>).
          type: list
          elements: str
identity_bindings:
  description:
    - Every AKS identity binding of the clusters in O(clusters), with the audited identity it maps; V(null) when
      not read (O(identity_bindings) off, no O(clusters), or not readable).
  returned: always
  type: list
  elements: dict
  contains:
    cluster_resource_group:
      description: Resource group of the cluster, as O(clusters) names it.
      type: str
    cluster_name:
      description: Name of the cluster, as O(clusters) names it.
      type: str
    name:
      description: Name of the binding.
      type: str
    issuer_url:
      description: The binding's issuer.
      type: str
    provisioning_state:
      description: The binding's provisioning state.
      type: str
    identity_id:
      description: Resource ID of the identity it maps.
      type: str
    client_id:
      description: Client ID of the identity it maps.
      type: str
    identity:
      description: Name of the audited identity it maps, V(null) when that identity is not audited.
      type: str
  sample:
    - cluster_resource_group: rg-apps
      cluster_name: aks-prod
      name: idorders
      issuer_url: https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/9bb715b3-e30d-4143-b4ab-e6d3603d9864
      provisioning_state: Succeeded
      identity_id: "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-apps/providers/\
        Microsoft.ManagedIdentity/userAssignedIdentities/id-orders"
      client_id: 9bb715b3-e30d-4143-b4ab-e6d3603d9864
      identity: id-orders
rbac_grants:
  description:
    - Every grant of C(use-managed-identity) on C(cid.wi.aks.azure.com) in the cluster, found by rule content, one
      per ClusterRoleBinding and client ID, sorted by ClusterRoleBinding; V(null) when not read.
  returned: always
  type: list
  elements: dict
  contains:
    client_id:
      description: The client ID the rule names, lower case, or C(*) for a wildcard rule.
      type: str
    cluster_role:
      description: The ClusterRole.
      type: str
    cluster_role_binding:
      description: The ClusterRoleBinding.
      type: str
    subjects:
      description: Its subjects that can be ServiceAccounts (others are left out; a binding with none is no grant).
      type: list
      elements: str
    identity:
      description: Name of the audited identity with that client ID, V(null) when none.
      type: str
  sample:
    - client_id: 9bb715b3-e30d-4143-b4ab-e6d3603d9864
      cluster_role: azure-wi-identity-binding-9bb715b3-e30d-4143-b4ab-e6d3603d9864
      cluster_role_binding: azure-wi-identity-binding-9bb715b3-e30d-4143-b4ab-e6d3603d9864
      subjects: [ServiceAccount/batch/batch-runner, Group/system:serviceaccounts:reports]
      identity: id-orders
clusters:
  description: The clusters of O(clusters) as read, with their issuer URL and workload identity settings.
  returned: always
  type: list
  elements: dict
  sample:
    - resource_group: rg-apps
      name: aks-prod
      issuer_url: https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0328c7fa-e740-4752-af1c-182a774aacc7/
      oidc_issuer_enabled: true
      workload_identity_enabled: true
cluster_issuer:
  description: The issuer this cluster's API server reports, V(null) when its discovery document is not readable.
  returned: always
  type: str
findings:
  description:
    - What is wrong, sorted by severity, code and subject.
  returned: always
  type: list
  elements: dict
  contains:
    severity:
      description: V(error) (the workload cannot get a token or access), V(warning) (stale, risky or about to
        break) or V(info).
      type: str
      choices: [error, warning, info]
    code:
      description: Stable identifier of the kind of finding.
      type: str
      choices: [credential-orphaned, issuer-unknown, issuer-near-miss, subject-near-miss,
        annotation-unknown-client-id, annotation-no-credential, workload-label-missing, label-on-job-metadata,
        label-on-serviceaccount, pod-client-id-stale, token-expiration-out-of-range, credential-budget,
        pod-identity-leftover, identity-binding-credential-unbound, identity-binding-access-missing,
        identity-binding-missing, identity-binding-access-stale]
    subject:
      description:
        - The object the finding is about, C(<Kind>/<namespace>/<name>) for Kubernetes objects,
          C(UserAssignedIdentity/<resource group>/<name>) and
          C(FederatedIdentityCredential/<resource group>/<identity>/<name>) for Azure ones;
          C(ClusterRoleBinding/<name>) for a stale grant.
      type: str
    message:
      description: What is wrong, with the exact values.
      type: str
    fix:
      description: What to do about it.
      type: str
  sample:
    - severity: error
      code: issuer-near-miss
      subject: FederatedIdentityCredential/rg-apps/id-orders/fic-orders
      message: "federated credential 'fic-orders' on managed identity id-orders: issuers 'https://x/' and 'https://x' differ only by a trailing slash"
      fix: Set its issuer to exactly https://x/ (aks.workload_identity.federated_credential)
pod_identity_migration:
  description:
    - Per aad-pod-identity AzureIdentityBinding, the identity it binds (C(client_id), C(resource_id)) and the
      workloads that select it, to set up with workload identity instead.
  returned: always
  type: list
  elements: dict
summary:
  description: Counts of findings by severity and code, and of ServiceAccounts, identities, credentials, workloads
    and identity bindings (of the clusters in O(clusters)).
  returned: always
  type: dict
  sample:
    errors: 1
    warnings: 2
    info: 0
    by_code:
      issuer-unknown: 2
      workload-label-missing: 1
    service_accounts: 3
    identities: 2
    credentials: 4
    workloads: 5
    identity_bindings: 1
api_calls:
  description:
    - How many requests each API operation took (a paged list counts one per page), for checking the request
      budget described above.
  returned: always
  type: dict
  sample:
    containerservice.managed_clusters.get: 1
    msi.user_assigned_identities.list_by_subscription: 1
    msi.federated_identity_credentials.list: 2
    authorization.role_assignments.list_for_subscription: 1
    kubernetes.openid_configuration.get: 1
    kubernetes.serviceaccounts.list: 1
    containerservice.identity_bindings.list_by_managed_cluster: 1
    kubernetes.clusterroles.list: 1
    kubernetes.clusterrolebindings.list: 1
"""

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import AZURE_AUTH_ARGSPEC, AzureModule
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.inputs import new_module
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8S_AUTH_ARGSPEC, K8sModule
from ansible_collections.aks.workload_identity.plugins.module_utils.trust_inventory import (
    ApiCalls,
    inventory,
    validate,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.trust_map import (
    DEFAULT_CREDENTIAL_WARNING_THRESHOLD,
    build_trust_map,
)

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    "clusters": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {"resource_group": {"type": "str", "required": True}, "name": {"type": "str", "required": True}},
    },
    "issuer_urls": {"type": "list", "elements": "str", "default": []},
    "identity_resource_groups": {"type": "list", "elements": "str", "default": []},
    "namespaces": {"type": "list", "elements": "str", "default": []},
    "include_role_assignments": {"type": "bool", "default": True},
    "pod_identity": {"type": "bool", "default": True},
    "identity_bindings": {"type": "bool", "default": True},
    "credential_warning_threshold": {"type": "int", "default": DEFAULT_CREDENTIAL_WARNING_THRESHOLD},
}


def main() -> None:
    module = new_module({**AZURE_AUTH_ARGSPEC, **K8S_AUTH_ARGSPEC, **ARGUMENT_SPEC}, supports_check_mode=True)
    errors = validate(module.params)
    if errors:
        module.fail_json(msg="Invalid input: " + "; ".join(errors), errors=errors, changed=False)
    azure, kube = AzureModule(module=module), K8sModule(module=module)
    calls = ApiCalls()
    try:
        found = inventory(azure, kube, module.params, calls)
    except WorkloadIdentityError as exc:
        module.fail_json(
            **exc.to_fail_kwargs(redact=[module.params.get("secret"), module.params.get("api_key")]),
            api_calls=calls.as_dict(),
        )
    for warning in found["warnings"]:
        module.warn(warning)
    result = build_trust_map(found, credential_warning_threshold=module.params["credential_warning_threshold"])
    if not found["clusters"] and not found["issuer_urls"] and not found["cluster_issuer"]:
        module.warn(
            "No issuer is known (no clusters, no issuer_urls, and the API server's discovery document was not "
            "readable): credentials were checked against ServiceAccounts only, not against an issuer"
        )
    module.exit_json(
        changed=False,
        clusters=found["clusters"],
        cluster_issuer=found["cluster_issuer"],
        api_calls=calls.as_dict(),
        **result,
    )


if __name__ == "__main__":
    main()
