#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: wid_service_account
short_description: Annotate a Kubernetes ServiceAccount for Microsoft Entra Workload ID
version_added: 0.1.0
description:
  - Creates or updates a Kubernetes ServiceAccount so that the azure-workload-identity webhook gives its pods the
    token of a user-assigned managed identity, or removes it.
  - Sets the C(azure.workload.identity/client-id) annotation from O(client_id), and, when given,
    C(azure.workload.identity/tenant-id) and C(azure.workload.identity/service-account-token-expiration).
  - Manages only its own keys. Labels, annotations, C(secrets) and C(imagePullSecrets) that others put on an
    existing ServiceAccount are kept, because every update is a strategic merge patch that names only the keys
    this task sets or removes (C(azwi serviceaccount create) replaces the whole object instead).
  - Returns the O(namespace)/O(name) subject (C(system:serviceaccount:<namespace>:<name>)) that a federated
    identity credential must trust.
  - Warns, naming the pods (up to five), when the client ID, tenant ID or token expiration of a ServiceAccount
    that running pods use changes, or that ServiceAccount is deleted. The webhook injects these settings when a
    pod is created, so such pods keep the old identity until restarted.
  - "API requests: a run that changes nothing makes exactly one: a GET of the ServiceAccount. A create adds a GET
    of the namespace and the POST (plus, when the namespace is missing and O(create_namespace=true), a POST of the
    namespace before it), an update a PATCH, a delete a DELETE. One LIST of the pods in the namespace
    (filtered on C(spec.serviceAccountName)) is added only when the client ID, tenant ID or token expiration of
    an existing ServiceAccount changes, or such a ServiceAccount is deleted. A request that the API server
    answers with 429 or 5xx and a C(Retry-After) header is repeated after that delay, for up to 60 seconds."
author:
  - Contributors to the aks.workload_identity collection (@aks-workload-identity)
requirements:
  - python >= 3.10
  - kubernetes
extends_documentation_fragment:
  - aks.workload_identity.k8s_auth
options:
  namespace:
    description:
      - Namespace of the ServiceAccount, an RFC 1123 label (lower-case letters, digits and C(-), at most 63).
    type: str
    required: true
  name:
    description:
      - Name of the ServiceAccount, an RFC 1123 subdomain (lower-case letters, digits, C(-) and C(.), at most 253).
    type: str
    required: true
    aliases: [service_account]
  client_id:
    description:
      - Client ID (application ID) of the user-assigned managed identity the pods act as, a GUID. This is the
        C(client_id) that M(aks.workload_identity.managed_identity) returns.
      - Required when O(state=present); ignored when O(state=absent).
      - Compared without regard to letter case, like Entra does; an existing value that differs only by case is
        kept.
    type: str
  tenant_id:
    description:
      - Tenant of the managed identity, a GUID. Only needed when it differs from the tenant the webhook was
        installed with (the cluster's tenant).
      - When not set, an existing C(azure.workload.identity/tenant-id) annotation is left alone; set V("") to
        remove it.
    type: str
  token_expiration:
    description:
      - Lifetime in seconds of the projected ServiceAccount token the webhook mounts, 3600 to 86400 as the
        webhook accepts (its default is 3600).
      - When not set, an existing C(azure.workload.identity/service-account-token-expiration) annotation is left
        alone.
    type: int
  labels:
    description:
      - Other labels to set on the ServiceAccount. Only the keys given here are touched; a V(null) value removes
        that key.
      - Keys are Kubernetes qualified names (an optional DNS subdomain prefix and C(/), then at most 63 letters,
        digits, C(-), C(_) or C(.), starting and ending alphanumeric); values are strings of at most 63 such
        characters, or empty. Quote numbers and booleans.
      - With O(state=absent) and O(remove=annotations), these keys are removed.
    type: dict
    default: {}
  annotations:
    description:
      - Other annotations to set on the ServiceAccount. Only the keys given here are touched; a V(null) value
        removes that key.
      - Keys are Kubernetes qualified names, as for O(labels); values are strings (quote numbers and booleans),
        and keys and values together at most 256 KiB.
      - The keys this module owns (C(azure.workload.identity/client-id), C(azure.workload.identity/tenant-id),
        C(azure.workload.identity/service-account-token-expiration)) are rejected here; use O(client_id),
        O(tenant_id) and O(token_expiration).
      - With O(state=absent) and O(remove=annotations), these keys are removed.
    type: dict
    default: {}
  create_namespace:
    description:
      - Create O(namespace) when it does not exist. When V(false) and the namespace is missing, the module fails
        naming O(namespace) before any write, in check mode too.
      - The namespace is only read (one GET) when the ServiceAccount has to be created, so this costs no request
        on a run that changes nothing.
    type: bool
    default: false
  state:
    description:
      - V(present) creates or updates the ServiceAccount; V(absent) removes what O(remove) says.
    type: str
    choices: [present, absent]
    default: present
  remove:
    description:
      - What O(state=absent) removes.
      - V(service_account) deletes the ServiceAccount (whoever created it), like C(kubectl delete).
      - V(annotations) keeps the ServiceAccount and removes only the workload identity annotations and the keys
        named in O(labels) and O(annotations); use it for a ServiceAccount that a Helm chart or another tool owns.
      - Ignored when O(state=present).
    type: str
    choices: [service_account, annotations]
    default: service_account
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details:
      - Every write is sent as a server-side dry run (C(dryRun=All)), so the API server validates it and runs
        admission, and nothing is persisted. A namespace that O(create_namespace) would create is dry-run too.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode).
    support: full
    details:
      - The diff shows the ServiceAccount's namespace, name, labels, annotations and the webhook settings read
        from them (client ID, tenant ID, token expiration).
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
  action_group:
    description: Use C(group/aks.workload_identity.k8s) in C(module_defaults) to set the connection options.
    support: full
    membership:
      - aks.workload_identity.k8s
notes:
  - "RBAC the connecting user needs in O(namespace): C(get) on C(serviceaccounts) always; C(create), C(patch) or
    C(delete) on C(serviceaccounts) for a create, update or delete; C(list) on C(pods) for the restart warning
    (when it is forbidden the module goes on and warns that it could not check); C(get) on C(namespaces)
    (cluster-wide) before a create, to find a missing namespace before any write (when it is forbidden the
    create is sent and the API server's refusal tells); C(create) on C(namespaces) only when
    O(create_namespace=true) and the namespace is missing. A forbidden request fails
    with the API server's message, which names the verb, resource and namespace."
  - The ServiceAccount is read, planned and written again from the start when another writer creates, changes
    or deletes it between this module's read and its write (up to three rounds).
seealso:
  - module: aks.workload_identity.managed_identity
  - module: aks.workload_identity.federated_credential
  - name: Service account labels and annotations (azure-workload-identity)
    description: The annotations the mutating webhook reads, their defaults and accepted ranges.
    link: https://azure.github.io/azure-workload-identity/docs/topics/service-account-labels-and-annotations.html
  - name: Use Microsoft Entra Workload ID with AKS
    description: Microsoft's overview of workload identity on Azure Kubernetes Service.
    link: https://learn.microsoft.com/azure/aks/workload-identity-overview
"""

EXAMPLES = r"""
---
- name: Annotate (create if needed) the ServiceAccount of a workload
  aks.workload_identity.wid_service_account:
    namespace: orders
    name: orders-api
    client_id: "{{ identity.client_id }}"
  register: service_account

- name: Use the subject it returns in the federated identity credential
  ansible.builtin.debug:
    msg: "Trust {{ service_account.subject }}"

- name: Create the namespace too, pin the tenant and a 24 hour token, add a team label
  aks.workload_identity.wid_service_account:
    namespace: payments
    name: payments-worker
    client_id: 6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c
    tenant_id: 72f988bf-86f1-41af-91ab-2d7cd011db47
    token_expiration: 86400
    labels:
      team: payments
    create_namespace: true

- name: Preview a client ID change in check mode (the API server dry-runs it) and show the diff
  aks.workload_identity.wid_service_account:
    namespace: orders
    name: orders-api
    client_id: 0b8e2c1d-4a5f-4e3b-8c9d-7e6f5a4b3c2d
  check_mode: true
  diff: true

- name: Stop using workload identity on a ServiceAccount that a Helm chart owns (keep the ServiceAccount)
  aks.workload_identity.wid_service_account:
    namespace: monitoring
    name: grafana
    state: absent
    remove: annotations

- name: Delete the ServiceAccount
  aks.workload_identity.wid_service_account:
    namespace: orders
    name: orders-api
    state: absent
"""

RETURN = r"""
service_account:
  description:
    - The ServiceAccount after the run (in check mode, as the API server's dry run computed it).
    - Empty when it does not exist (after O(state=absent) with O(remove=service_account)).
  returned: always
  type: dict
  sample:
    namespace: orders
    name: orders-api
    uid: 4f1d9c2e-7b3a-4c5d-8e9f-0a1b2c3d4e5f
    labels:
      team: orders
    annotations:
      azure.workload.identity/client-id: 6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c
    client_id: 6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c
    tenant_id: null
    token_expiration: null
  contains:
    namespace:
      description: Namespace of the ServiceAccount.
      type: str
      returned: when the ServiceAccount exists
    name:
      description: Name of the ServiceAccount.
      type: str
      returned: when the ServiceAccount exists
    uid:
      description: Kubernetes UID of the ServiceAccount; V(null) in check mode when it would be created.
      type: str
      returned: when the ServiceAccount exists
    labels:
      description: All labels of the ServiceAccount, also those this module does not manage.
      type: dict
      returned: when the ServiceAccount exists
    annotations:
      description: All annotations of the ServiceAccount, also those this module does not manage.
      type: dict
      returned: when the ServiceAccount exists
    client_id:
      description: The C(azure.workload.identity/client-id) annotation.
      type: str
      returned: when the ServiceAccount exists
    tenant_id:
      description: The C(azure.workload.identity/tenant-id) annotation, V(null) when not set.
      type: str
      returned: when the ServiceAccount exists
    token_expiration:
      description: The C(azure.workload.identity/service-account-token-expiration) annotation in seconds, V(null)
        when not set (the webhook then uses 3600).
      type: int
      returned: when the ServiceAccount exists
subject:
  description: The subject a federated identity credential must have to trust this ServiceAccount's tokens.
  returned: always
  type: str
  sample: system:serviceaccount:orders:orders-api
namespace_created:
  description: Whether the module created O(namespace) (in check mode, would create it).
  returned: always
  type: bool
  sample: false
stale_pods:
  description:
    - Pods that use the ServiceAccount and keep the workload identity settings they started with until
      restarted, when this run changes those settings. Empty when nothing changed that pods depend on.
    - V(null) when the pods could not be listed (for example C(list pods) is forbidden); a warning says so.
  returned: always
  type: list
  elements: str
  sample: [orders-api-7d9c8b6f5-abcde]
"""

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8sModule
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.service_account import (
    PRESENT,
    REMOVE_ANNOTATIONS,
    REMOVE_SERVICE_ACCOUNT,
    DesiredServiceAccount,
    ServiceAccountReconciler,
    validate,
)

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    "namespace": {"type": "str", "required": True},
    "name": {"type": "str", "required": True, "aliases": ["service_account"]},
    "client_id": {"type": "str"},
    "tenant_id": {"type": "str"},
    "token_expiration": {"type": "int", "no_log": False},  # seconds, not a secret
    "labels": {"type": "dict", "default": {}},
    "annotations": {"type": "dict", "default": {}},
    "create_namespace": {"type": "bool", "default": False},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "remove": {
        "type": "str",
        "choices": [REMOVE_SERVICE_ACCOUNT, REMOVE_ANNOTATIONS],
        "default": REMOVE_SERVICE_ACCOUNT,
    },
}


def desired_from_params(params: dict[str, t.Any]) -> DesiredServiceAccount:
    return DesiredServiceAccount(
        namespace=params["namespace"],
        name=params["name"],
        state=params["state"],
        client_id=params["client_id"],
        tenant_id=params["tenant_id"],
        token_expiration=params["token_expiration"],
        labels=params["labels"] or {},
        annotations=params["annotations"] or {},
        create_namespace=params["create_namespace"],
        remove=params["remove"],
    )


def main() -> None:
    k8s = K8sModule(ARGUMENT_SPEC, supports_check_mode=True, required_if=[("state", PRESENT, ["client_id"])])
    module = k8s.module
    desired = desired_from_params(k8s.params)
    errors = validate(desired)
    if errors:
        module.fail_json(msg="Invalid input: " + "; ".join(errors), errors=errors)
    try:
        outcome = ServiceAccountReconciler(k8s.core_v1, dry_run=k8s.check_mode).reconcile(desired)
    except WorkloadIdentityError as exc:
        k8s.fail(exc)
    for warning in outcome.warnings:
        module.warn(warning)
    result: dict[str, t.Any] = {
        "changed": outcome.changed,
        "service_account": outcome.service_account or {},
        "subject": desired.subject,
        "namespace_created": outcome.namespace_created,
        "stale_pods": outcome.stale_pods,
    }
    if module._diff:
        result["diff"] = outcome.plan.diff()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
