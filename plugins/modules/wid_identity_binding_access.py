#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: wid_identity_binding_access
short_description: Let Kubernetes ServiceAccounts use a managed identity through an AKS identity binding
version_added: 0.2.0
description:
  - Grants (or takes back) the right of Kubernetes ServiceAccounts to use a user-assigned managed identity through an
    AKS identity binding, with Kubernetes RBAC as Microsoft's how-to does it - a ClusterRole granting the verb
    C(use-managed-identity) on the resource C(<client ID>) of API group C(cid.wi.aks.azure.com), and a
    ClusterRoleBinding of that ClusterRole to the ServiceAccounts.
  - Both objects are named C(azure-wi-identity-binding-<client ID>) and get the label
    C(app.kubernetes.io/managed-by=aks.workload_identity) when this module creates them.
  - Touches only what it owns. In the ClusterRole, its one rule is added when missing and other rules are kept. In
    the ClusterRoleBinding, O(state=present) adds the listed ServiceAccounts that are missing (at the end) and
    O(state=absent) removes only the listed ones; every other subject stays, in its order.
  - With O(state=absent), the ClusterRoleBinding is deleted when no subject is left in it and the ClusterRole when
    no subject is left in the ClusterRoleBinding, each only when it carries the label above.
  - The identity binding itself (the Azure resource that maps the identity to the cluster) is not managed here.
  - "API requests: a run that changes nothing makes exactly two, a GET of the ClusterRole and a GET of the
    ClusterRoleBinding. Each object that is created, changed or deleted adds one POST, PATCH or DELETE. O(verify=true)
    adds one SubjectAccessReview per ServiceAccount (asked again every half second, for up to 10 seconds, while the
    answer disagrees with O(state) after this run changed something). A request that the API server answers with 429
    or 5xx and a C(Retry-After) header is repeated after that delay, for up to 60 seconds."
author:
  - Contributors to the aks.workload_identity collection (@aks-workload-identity)
requirements:
  - python >= 3.10
  - kubernetes
extends_documentation_fragment:
  - aks.workload_identity.k8s_auth
options:
  client_id:
    description:
      - Client ID (application ID) of the user-assigned managed identity, a GUID. This is the C(client_id) that
        M(aks.workload_identity.managed_identity) returns.
      - It is written in lower case, as Azure returns client IDs, both as the RBAC resource and in the objects' name.
    type: str
    required: true
  service_accounts:
    description:
      - The ServiceAccounts that may use the identity (O(state=present)) or may no longer use it through this
        module's ClusterRoleBinding (O(state=absent)). At least one; each only once.
      - The ServiceAccounts need not exist yet; RBAC refers to them by name.
    type: list
    elements: dict
    required: true
    suboptions:
      namespace:
        description: Namespace of the ServiceAccount, an RFC 1123 label (lower-case letters, digits and C(-), at most 63).
        type: str
        required: true
      name:
        description:
          - Name of the ServiceAccount, an RFC 1123 subdomain (lower-case letters, digits, C(-) and C(.), at most 253).
        type: str
        required: true
  labels:
    description:
      - Other labels to set on the ClusterRole and the ClusterRoleBinding with O(state=present). Only the keys given
        here are touched; a V(null) value removes that key. Ignored with O(state=absent).
      - Keys are Kubernetes qualified names; values are strings of at most 63 letters, digits, C(-), C(_) or C(.), or
        empty. C(app.kubernetes.io/managed-by) is set by the module and rejected here.
    type: dict
    default: {}
  state:
    description:
      - V(present) lets the listed ServiceAccounts use the identity; V(absent) takes that right back from them.
    type: str
    choices: [present, absent]
    default: present
  verify:
    description:
      - After the run, ask the API server with one SubjectAccessReview per ServiceAccount whether its token may use
        the identity (the user C(system:serviceaccount:<namespace>:<name>) with the groups the API server gives
        ServiceAccount tokens), and return the answer in RV(service_accounts). A ServiceAccount whose answer
        disagrees with O(state) (for example one that another binding still grants) gets a warning.
      - Not done in check mode, which sends no request but the two reads.
    type: bool
    default: false
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details:
      - Plans from the same two reads as a real run and writes nothing, not even a server-side dry run, like the fleet
        modules. RV(cluster_role) and RV(cluster_role_binding) are the planned objects.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode).
    support: full
    details:
      - The diff shows both objects (name, labels, rules, roleRef, subjects) before and after.
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
  action_group:
    description: Use C(group/aks.workload_identity.k8s) in C(module_defaults) to set the connection options.
    support: full
    membership:
      - aks.workload_identity.k8s
notes:
  - Why one ClusterRole per identity - the RBAC resource AKS checks is the identity's client ID, so a role names the
    identities it grants; one role and one binding per identity (the how-to's shape) keep each identity's grant on
    its own, readable with C(kubectl get clusterrolebinding azure-wi-identity-binding-<client ID>), and removable
    without touching another identity's.
  - What AKS checks - a pod that opts in with the C(azure.workload.identity/use-identity-binding) annotation exchanges
    its ServiceAccount token through a per-cluster identity binding proxy run by AKS instead of calling Microsoft
    Entra ID itself, and only ServiceAccounts that Kubernetes RBAC grants C(use-managed-identity) on the identity's
    client ID (API group C(cid.wi.aks.azure.com)) may use it. Microsoft documents the RBAC objects, not how the proxy
    asks; O(verify) asks the API server the equivalent question cluster-wide.
  - Only the listed subjects are touched; subjects added by hand or by other tools (groups such as
    C(system:serviceaccounts:<namespace>), users, other ServiceAccounts) stay. A ClusterRole or ClusterRoleBinding of
    this name that this module did not create is updated the same way but never deleted.
  - A ClusterRoleBinding of this name whose roleRef names another role is refused before any write, since Kubernetes
    does not let a roleRef change. A ClusterRole of this name with an aggregationRule is refused too.
  - Updates are merge patches guarded by the resourceVersion that was read, and deletes carry the uid and
    resourceVersion as preconditions, so a subject or rule that another writer adds meanwhile is never lost; the
    objects are then read and planned once more.
  - "RBAC the connecting user needs: C(get) on C(clusterroles) and C(clusterrolebindings); C(create), C(patch) or
    C(delete) on them for a create, update or delete; C(escalate) on C(clusterroles) or the C(use-managed-identity)
    permission itself, and C(bind) on C(clusterroles), as Kubernetes requires to grant a permission; C(create) on
    C(subjectaccessreviews) (API group C(authorization.k8s.io)) for O(verify). AKS's how-to asks for cluster admin."
seealso:
  - module: aks.workload_identity.managed_identity
  - module: aks.workload_identity.wid_service_account
  - module: aks.workload_identity.wid_workload_patch
  - name: Set up identity bindings on AKS
    description: Microsoft's how-to, with the ClusterRole and ClusterRoleBinding this module writes.
    link: https://learn.microsoft.com/azure/aks/identity-bindings
  - name: Identity bindings for AKS (concepts)
    description: One identity per binding and cluster, the shared credential, the token proxy.
    link: https://learn.microsoft.com/azure/aks/identity-bindings-concepts
  - name: Using RBAC authorization
    description: ClusterRoles, ClusterRoleBindings, subjects, and why a roleRef cannot change.
    link: https://kubernetes.io/docs/reference/access-authn-authz/rbac/
"""

EXAMPLES = r"""
---
- name: Let two ServiceAccounts use the orders identity through the cluster's identity binding
  aks.workload_identity.wid_identity_binding_access:
    client_id: "{{ identity.client_id }}"
    service_accounts:
      - namespace: orders
        name: orders-api
      - namespace: orders
        name: orders-worker
    verify: true
  register: access

- name: Show which ServiceAccounts the API server lets use the identity
  ansible.builtin.debug:
    msg: "{{ access.service_accounts | map(attribute='subject') | zip(access.service_accounts | map(attribute='allowed')) }}"

- name: Preview adding a ServiceAccount of another namespace, with the diff
  aks.workload_identity.wid_identity_binding_access:
    client_id: 6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c
    service_accounts:
      - namespace: billing
        name: invoices
    labels:
      team: platform
  check_mode: true
  diff: true

- name: Take the right back from one ServiceAccount (the objects go when nothing else is bound)
  aks.workload_identity.wid_identity_binding_access:
    client_id: 6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c
    service_accounts:
      - namespace: orders
        name: orders-worker
    state: absent
"""

RETURN = r"""
cluster_role:
  description:
    - The ClusterRole after the run (in check mode, as planned). Empty when it does not exist.
  returned: always
  type: dict
  sample:
    name: azure-wi-identity-binding-6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c
    uid: 0d4c2f1e-9a8b-4c7d-8e6f-5a4b3c2d1e0f
    labels:
      app.kubernetes.io/managed-by: aks.workload_identity
    rules:
      - api_groups: [cid.wi.aks.azure.com]
        resources: [6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c]
        verbs: [use-managed-identity]
    aggregated: false
  contains:
    name:
      description: Name of the ClusterRole.
      type: str
      returned: when it exists
    uid:
      description: Kubernetes UID; V(null) in check mode when it would be created.
      type: str
      returned: when it exists
    labels:
      description: All labels, also those this module does not manage.
      type: dict
      returned: when it exists
    rules:
      description:
        - All rules, also those this module did not add, each with the fields it sets among C(api_groups),
          C(resources), C(verbs), C(resource_names) and C(non_resource_urls).
      type: list
      elements: dict
      returned: when it exists
    aggregated:
      description: Whether the ClusterRole has an aggregationRule (this module refuses to change such a role).
      type: bool
      returned: when it exists
cluster_role_binding:
  description:
    - The ClusterRoleBinding after the run (in check mode, as planned). Empty when it does not exist.
  returned: always
  type: dict
  sample:
    name: azure-wi-identity-binding-6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c
    uid: 7b6a5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d
    labels:
      app.kubernetes.io/managed-by: aks.workload_identity
    role_ref:
      api_group: rbac.authorization.k8s.io
      kind: ClusterRole
      name: azure-wi-identity-binding-6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c
    subjects:
      - kind: ServiceAccount
        namespace: orders
        name: orders-api
  contains:
    name:
      description: Name of the ClusterRoleBinding.
      type: str
      returned: when it exists
    uid:
      description: Kubernetes UID; V(null) in check mode when it would be created.
      type: str
      returned: when it exists
    labels:
      description: All labels, also those this module does not manage.
      type: dict
      returned: when it exists
    role_ref:
      description: The role it binds (C(api_group), C(kind), C(name)).
      type: dict
      returned: when it exists
    subjects:
      description:
        - Every subject in the API server's order, also those this module did not add; C(kind), C(name), and
          C(namespace) (ServiceAccounts) or C(api_group) (users and groups).
      type: list
      elements: dict
      returned: when it exists
service_accounts:
  description: The listed ServiceAccounts, in the order given, with the answer of their access review.
  returned: always
  type: list
  elements: dict
  sample:
    - namespace: orders
      name: orders-api
      subject: system:serviceaccount:orders:orders-api
      allowed: true
      reason: 'RBAC: allowed by ClusterRoleBinding "azure-wi-identity-binding-6f0c1b2a-..." of ClusterRole ...'
  contains:
    namespace:
      description: Namespace of the ServiceAccount.
      type: str
      returned: always
    name:
      description: Name of the ServiceAccount.
      type: str
      returned: always
    subject:
      description: The user name of the ServiceAccount's tokens, C(system:serviceaccount:<namespace>:<name>).
      type: str
      returned: always
    allowed:
      description:
        - Whether the API server lets the ServiceAccount use the identity; V(null) without O(verify) and in check mode.
      type: bool
      returned: always
    reason:
      description: The authorizer's reason, when it gives one.
      type: str
      returned: when O(verify=true) and not in check mode
api_calls:
  description: Requests sent to the API server, by operation.
  returned: always
  type: dict
  sample:
    kubernetes.clusterroles.get: 1
    kubernetes.clusterrolebindings.get: 1
"""

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8sModule
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.identity_binding_access import (
    ABSENT,
    PRESENT,
    VERIFY_TIMEOUT,
    BindingAccessReconciler,
    DesiredBindingAccess,
    access_warnings,
    validate,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import service_account_subject

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    "client_id": {"type": "str", "required": True},
    "service_accounts": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": {
            "namespace": {"type": "str", "required": True},
            "name": {"type": "str", "required": True},
        },
    },
    "labels": {"type": "dict", "default": {}},
    "state": {"type": "str", "choices": [PRESENT, ABSENT], "default": PRESENT},
    "verify": {"type": "bool", "default": False},
}


def desired_from_params(params: dict[str, t.Any]) -> DesiredBindingAccess:
    return DesiredBindingAccess(
        client_id=params["client_id"],
        service_accounts=tuple((entry["namespace"], entry["name"]) for entry in params["service_accounts"] or []),
        state=params["state"],
        labels=params["labels"] or {},
    )


def _reported(found: dict[str, t.Any] | None) -> dict[str, t.Any]:
    """The normalised object as returned (the resourceVersion is the module's own business)."""
    return {key: value for key, value in (found or {}).items() if key != "resource_version"}


def main() -> None:
    k8s = K8sModule(ARGUMENT_SPEC, supports_check_mode=True)
    module = k8s.module
    desired = desired_from_params(k8s.params)
    errors = validate(desired)
    if errors:
        module.fail_json(msg="Invalid input: " + "; ".join(errors), errors=errors)
    reviews = [
        {"namespace": ns, "name": name, "subject": service_account_subject(ns, name), "allowed": None}
        for ns, name in desired.service_accounts
    ]
    try:
        # Check mode writes nothing, not even a dry run (the fleet modules' rule): dry_run stays off.
        reconciler = BindingAccessReconciler(k8s.rbac_v1, k8s.authorization_v1, dry_run=False)
        outcome = reconciler.reconcile(desired, check_mode=module.check_mode)
        if module.params["verify"] and not module.check_mode:
            reviews = reconciler.verify(desired, timeout=VERIFY_TIMEOUT if outcome.changed else 0.0)
            outcome.warnings += access_warnings(desired, reviews)
    except WorkloadIdentityError as exc:
        k8s.fail(exc)
    for warning in outcome.warnings:
        module.warn(warning)
    result: dict[str, t.Any] = {
        "changed": outcome.changed,
        "cluster_role": _reported(outcome.cluster_role),
        "cluster_role_binding": _reported(outcome.cluster_role_binding),
        "service_accounts": reviews,
        "api_calls": reconciler.calls.as_dict(),
    }
    if module._diff:
        result["diff"] = outcome.diff()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
