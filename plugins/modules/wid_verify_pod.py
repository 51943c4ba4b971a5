#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: wid_verify_pod
short_description: Prove workload identity with the docs' verification pod on a real cluster
version_added: 0.1.0
description:
  - Runs the check Microsoft's walk-through does by hand. It creates a pod labelled
    C(azure.workload.identity/use=true) that uses O(service_account) and runs the azure-workload-identity msal-go
    sample, which reads secret O(secret_name) from O(keyvault_url) with the pod's workload identity. Then it checks
    that the webhook injected C(AZURE_CLIENT_ID), C(AZURE_TENANT_ID), C(AZURE_FEDERATED_TOKEN_FILE) and
    C(AZURE_AUTHORITY_HOST), waits for the sample's verdict in the pod's log, and deletes the pod.
  - The secret's value, which the sample writes to its log, is never returned; only failure lines are quoted,
    with token-like strings removed.
  - On a cluster with no Ready node that accepts pods (for example this collection's lab, a control plane without
    nodes) the check is skipped and RV(reason) says why. M(aks.workload_identity.wid_verify) proves the token
    exchange without a pod and names the broken link when there is one.
  - "API requests: a GET of the ServiceAccount (and, when it is missing, of the namespace: the module then fails
    naming O(service_account) or O(namespace), in check mode too, and creates nothing); one LIST of nodes; then
    the POST of the pod, a GET of the pod every 2 seconds until it runs, a GET of its log per poll while it runs,
    and the DELETE."
author:
  - Contributors to the aks.workload_identity collection (@aks-workload-identity)
requirements:
  - python >= 3.10
  - kubernetes
extends_documentation_fragment:
  - aks.workload_identity.k8s_auth
options:
  namespace:
    description: Namespace of the ServiceAccount, where the pod runs, an RFC 1123 label.
    type: str
    required: true
  service_account:
    description: The workload's ServiceAccount, annotated with its identity's client ID, an RFC 1123 subdomain.
    type: str
    required: true
  keyvault_url:
    description:
      - URL of the key vault to read, as C(https://<vault>.vault.azure.net/); https, with a host (and port) but no
        path, query or fragment.
    type: str
    required: true
  secret_name:
    description:
      - Name of the secret the pod reads, 1-127 letters, digits or C(-). Its value is never returned.
    type: str
    required: true
  image:
    description:
      - Image of the verification pod. The default is the sample of Microsoft's walk-through; a mirror of it in
        your registry works the same.
      - A container image reference, C([registry[:port]/]lower-case/path[:tag][@digest]) without spaces.
    type: str
    default: ghcr.io/azure/azure-workload-identity/msal-go:latest
  timeout:
    description: Seconds to wait for the pod's verdict (the image pull included), 1 to 86400.
    type: int
    default: 180
  keep_pod:
    description: Leave the pod in place after the check, for inspection. V(false) deletes it.
    type: bool
    default: false
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details:
      - In check mode no pod is created; the result says the check was skipped.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode).
    support: none
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
    details:
      - The pod is deleted before the module returns, so it reports no change; with O(keep_pod=true) it reports
        a change.
  action_group:
    description: Use C(group/aks.workload_identity.k8s) in C(module_defaults) to set the connection options.
    support: full
    membership:
      - aks.workload_identity.k8s
notes:
  - "RBAC the connecting user needs: C(list) on C(nodes) (cluster-wide; without it the pod is tried anyway);
    C(get) on C(serviceaccounts), C(create), C(get) and C(delete) on C(pods) and C(get) on C(pods/log) in
    O(namespace); C(get) on C(namespaces) (cluster-wide) only to tell a missing namespace from a missing
    ServiceAccount."
  - The nodes must be able to pull O(image); the identity needs read access to the secret (Key Vault Secrets User,
    or an access policy with C(get)).
seealso:
  - module: aks.workload_identity.wid_verify
  - name: Deploy and configure workload identity on AKS
    description: The walk-through whose verification pod this module runs.
    link: https://learn.microsoft.com/azure/aks/workload-identity-deploy-cluster
"""

EXAMPLES = r"""
---
- name: Prove the orders workload with a real pod
  aks.workload_identity.wid_verify_pod:
    namespace: orders
    service_account: orders-api
    keyvault_url: https://kv-orders.vault.azure.net/
    secret_name: orders-db-password
  register: pod_proof

- name: Fail unless the pod read the secret (a skip, on a cluster without nodes, is not a failure)
  ansible.builtin.assert:
    that: pod_proof.status != 'failed'
    fail_msg: "{{ pod_proof.cause }} Fix: {{ pod_proof.fix }}"
"""

RETURN = r"""
status:
  description: V(passed) (the pod read the secret), V(failed) (see RV(cause) and RV(fix)) or V(skipped) (see RV(reason)).
  returned: always
  type: str
  sample: passed
reason:
  description: Why the check was skipped.
  returned: always
  type: str
cause:
  description: What is wrong, when RV(status=failed).
  returned: always
  type: str
fix:
  description: What to do about it, when RV(status=failed).
  returned: always
  type: str
pod_name:
  description: Name of the verification pod (generated), when one was created.
  returned: always
  type: str
  sample: wid-verify-x7k2p
injected_env:
  description: The workload identity variables the webhook injected into the pod.
  returned: always
  type: list
  elements: str
  sample: [AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST]
log_excerpt:
  description: The sample's failure lines (never a success line, which carries the secret), token-like text removed.
  returned: always
  type: list
  elements: str
schedulable_nodes:
  description: How many Ready nodes accept pods; V(null) when nodes may not be listed.
  returned: always
  type: int
created:
  description: Whether a pod was created.
  returned: always
  type: bool
deleted:
  description: Whether the pod was deleted again.
  returned: always
  type: bool
"""

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8sModule
from ansible_collections.aks.workload_identity.plugins.module_utils.pod_proof import (
    DEFAULT_IMAGE,
    PodProver,
    PodRequest,
    validate,
)

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    "namespace": {"type": "str", "required": True},
    "service_account": {"type": "str", "required": True},
    "keyvault_url": {"type": "str", "required": True, "no_log": False},  # an address, not a secret
    "secret_name": {"type": "str", "required": True, "no_log": False},  # the secret's name, not its value
    "image": {"type": "str", "default": DEFAULT_IMAGE},
    "timeout": {"type": "int", "default": 180},
    "keep_pod": {"type": "bool", "default": False},
}


def main() -> None:
    k8s = K8sModule(ARGUMENT_SPEC, supports_check_mode=True)
    params = k8s.params
    request = PodRequest(
        namespace=params["namespace"],
        service_account=params["service_account"],
        keyvault_url=params["keyvault_url"],
        secret_name=params["secret_name"],
        image=params["image"],
        timeout=float(params["timeout"]),
        keep_pod=params["keep_pod"],
    )
    errors = validate(request)
    if errors:
        k8s.module.fail_json(msg="Invalid input: " + "; ".join(errors), errors=errors)
    try:
        proof = PodProver(k8s.core_v1, dry_run=k8s.check_mode).prove(request)
    except WorkloadIdentityError as exc:
        k8s.fail(exc)
    result = proof.as_dict()
    k8s.module.exit_json(changed=proof.created and not proof.deleted, **result)


if __name__ == "__main__":
    main()
