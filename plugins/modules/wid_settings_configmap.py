#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: wid_settings_configmap
short_description: Hand a workload its non-secret workload identity settings in a Kubernetes ConfigMap
version_added: 0.1.0
description:
  - Creates or updates a ConfigMap holding the non-secret settings an application needs next to workload
    identity, such as C(AZURE_CLIENT_ID) and C(AZURE_TENANT_ID) (from O(client_id) and O(tenant_id)) and any
    other keys in O(data), for example the URL of the Key Vault to read. Pods can load it with C(envFrom).
  - Only for identifiers and URLs. Workload identity needs no secret, and none belongs in a ConfigMap.
  - Manages only its own keys. Other keys, C(binaryData), labels and annotations that others put on an existing
    ConfigMap are kept, because every update is a strategic merge patch that names only the keys this task sets
    or removes.
  - "API requests: a run that changes nothing makes exactly one, a GET of the ConfigMap. A create adds a GET of
    the namespace and the POST (plus, when the namespace is missing and O(create_namespace=true), a POST of the
    namespace before it), an update a PATCH, a delete a DELETE. A request that the API server answers with 429
    or 5xx and a C(Retry-After) header is repeated after that delay, for up to 60 seconds."
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
      - Namespace of the ConfigMap, an RFC 1123 label (lower-case letters, digits and C(-), at most 63).
    type: str
    required: true
  name:
    description:
      - Name of the ConfigMap, an RFC 1123 subdomain (lower-case letters, digits, C(-) and C(.), at most 253).
    type: str
    required: true
  client_id:
    description:
      - Client ID of the managed identity, a GUID, stored under C(AZURE_CLIENT_ID).
      - When not set, an existing C(AZURE_CLIENT_ID) key is left alone; set V("") to remove it.
    type: str
  tenant_id:
    description:
      - Tenant ID of the managed identity, a GUID, stored under C(AZURE_TENANT_ID).
      - When not set, an existing C(AZURE_TENANT_ID) key is left alone; set V("") to remove it.
    type: str
  data:
    description:
      - Other keys to set, as strings. Only the keys given here are touched; a V(null) value removes that key.
      - Keys are 1-253 letters, digits, C(-), C(_) or C(.) (not C(.) or C(..)); C(AZURE_CLIENT_ID) and
        C(AZURE_TENANT_ID) are set with O(client_id) and O(tenant_id). Values are strings (quote numbers and
        booleans); keys and values together at most 1 MiB.
      - With O(state=absent) and O(remove=keys), these keys are removed.
    type: dict
    default: {}
  labels:
    description:
      - Labels to set on the ConfigMap. Only the keys given here are touched; a V(null) value removes that key.
      - Keys are Kubernetes qualified names (an optional DNS subdomain prefix and C(/), then at most 63 letters,
        digits, C(-), C(_) or C(.), starting and ending alphanumeric); values are strings of at most 63 such
        characters, or empty.
      - With O(state=absent) and O(remove=keys), these labels are removed.
    type: dict
    default: {}
  create_namespace:
    description:
      - Create O(namespace) when it does not exist. When V(false) and the namespace is missing, the module fails
        naming O(namespace) before any write, in check mode too.
      - The namespace is only read (one GET) when the ConfigMap has to be created.
    type: bool
    default: false
  state:
    description:
      - V(present) creates or updates the ConfigMap; V(absent) removes what O(remove) says.
    type: str
    choices: [present, absent]
    default: present
  remove:
    description:
      - What O(state=absent) removes.
      - V(configmap) deletes the ConfigMap (whoever created it), like C(kubectl delete).
      - V(keys) keeps the ConfigMap and removes only C(AZURE_CLIENT_ID), C(AZURE_TENANT_ID) and the keys named in
        O(data) and O(labels); use it for a ConfigMap that another tool owns.
    type: str
    choices: [configmap, keys]
    default: configmap
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details:
      - Every write is sent as a server-side dry run (C(dryRun=All)), so nothing is persisted. A namespace that
        O(create_namespace) would create is dry-run too.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode).
    support: full
    details:
      - The diff shows the ConfigMap's labels and data (values included, as none of them is secret).
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
  action_group:
    description: Use C(group/aks.workload_identity.k8s) in C(module_defaults) to set the connection options.
    support: full
    membership:
      - aks.workload_identity.k8s
notes:
  - "RBAC the connecting user needs in O(namespace): C(get) on C(configmaps) always; C(create), C(patch) or
    C(delete) for a create, update or delete; C(get) on C(namespaces) (cluster-wide) before a create, to find a
    missing namespace before any write (when it is forbidden the create is sent and the API server's refusal
    tells); C(create) on C(namespaces) only when O(create_namespace=true) and the namespace is missing."
seealso:
  - module: aks.workload_identity.wid_service_account
  - module: aks.workload_identity.wid_workload_patch
  - name: Configure a Pod to use a ConfigMap
    description: Loading a ConfigMap's keys as environment variables with envFrom.
    link: https://kubernetes.io/docs/tasks/configure-pod-container/configure-pod-configmap/
"""

EXAMPLES = r"""
---
- name: Give the orders workload its client ID, tenant ID and vault URL
  aks.workload_identity.wid_settings_configmap:
    namespace: orders
    name: orders-api-azure-identity
    client_id: "{{ identity.managed_identity.client_id }}"
    tenant_id: "{{ identity.managed_identity.tenant_id }}"
    data:
      KEYVAULT_URL: https://kv-orders.vault.azure.net/

- name: Preview a change in check mode (the API server dry-runs it), with the diff
  aks.workload_identity.wid_settings_configmap:
    namespace: orders
    name: orders-api-azure-identity
    data:
      KEYVAULT_URL: https://kv-orders-2.vault.azure.net/
  check_mode: true
  diff: true

- name: Remove only our keys from a ConfigMap another tool owns
  aks.workload_identity.wid_settings_configmap:
    namespace: orders
    name: orders-settings
    data:
      KEYVAULT_URL:
    state: absent
    remove: keys

- name: Delete the ConfigMap
  aks.workload_identity.wid_settings_configmap:
    namespace: orders
    name: orders-api-azure-identity
    state: absent
"""

RETURN = r"""
configmap:
  description:
    - The ConfigMap after the run (in check mode, as the API server's dry run computed it).
    - Empty when it does not exist (after O(state=absent) with O(remove=configmap)).
  returned: always
  type: dict
  sample:
    namespace: orders
    name: orders-api-azure-identity
    uid: 0c9d8e7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f
    labels: {}
    data:
      AZURE_CLIENT_ID: 6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c
      AZURE_TENANT_ID: 72f988bf-86f1-41af-91ab-2d7cd011db47
      KEYVAULT_URL: https://kv-orders.vault.azure.net/
    binary_data_keys: []
  contains:
    namespace:
      description: Namespace of the ConfigMap.
      type: str
      returned: when the ConfigMap exists
    name:
      description: Name of the ConfigMap.
      type: str
      returned: when the ConfigMap exists
    uid:
      description: Kubernetes UID of the ConfigMap; V(null) in check mode when it would be created.
      type: str
      returned: when the ConfigMap exists
    labels:
      description: All labels of the ConfigMap, also those this module does not manage.
      type: dict
      returned: when the ConfigMap exists
    data:
      description: All data keys of the ConfigMap, also those this module does not manage.
      type: dict
      returned: when the ConfigMap exists
    binary_data_keys:
      description: Names of the ConfigMap's C(binaryData) keys (never written by this module).
      type: list
      elements: str
      returned: when the ConfigMap exists
namespace_created:
  description: Whether the module created O(namespace) (in check mode, would create it).
  returned: always
  type: bool
  sample: false
"""

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8sModule
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.settings_configmap import (
    REMOVE_CONFIGMAP,
    REMOVE_KEYS,
    ConfigMapReconciler,
    DesiredConfigMap,
    validate,
)

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    "namespace": {"type": "str", "required": True},
    "name": {"type": "str", "required": True},
    "client_id": {"type": "str"},
    "tenant_id": {"type": "str"},
    "data": {"type": "dict", "default": {}},
    "labels": {"type": "dict", "default": {}},
    "create_namespace": {"type": "bool", "default": False},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "remove": {"type": "str", "choices": [REMOVE_CONFIGMAP, REMOVE_KEYS], "default": REMOVE_CONFIGMAP},
}


def desired_from_params(params: dict[str, t.Any]) -> DesiredConfigMap:
    return DesiredConfigMap(
        namespace=params["namespace"],
        name=params["name"],
        state=params["state"],
        data=params["data"] or {},
        client_id=params["client_id"],
        tenant_id=params["tenant_id"],
        labels=params["labels"] or {},
        create_namespace=params["create_namespace"],
        remove=params["remove"],
    )


def main() -> None:
    k8s = K8sModule(ARGUMENT_SPEC, supports_check_mode=True)
    module = k8s.module
    desired = desired_from_params(k8s.params)
    errors = validate(desired)
    if errors:
        module.fail_json(msg="Invalid input: " + "; ".join(errors), errors=errors)
    try:
        outcome = ConfigMapReconciler(k8s.core_v1, dry_run=k8s.check_mode).reconcile(desired)
    except WorkloadIdentityError as exc:
        k8s.fail(exc)
    result: dict[str, t.Any] = {
        "changed": outcome.changed,
        "configmap": outcome.configmap or {},
        "namespace_created": outcome.namespace_created,
    }
    if module._diff:
        result["diff"] = outcome.plan.diff()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
