#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: wid_namespace
short_description: Create a Kubernetes namespace for workloads, or delete one with everything in it
version_added: 0.1.0
description:
  - Creates a namespace (with the labels given) or deletes one, as the clean-up of a demo built from nothing
    does.
  - Before a delete it lists what the namespace still holds (Deployments, StatefulSets, DaemonSets, CronJobs,
    Jobs, Pods, Services, ServiceAccounts, ConfigMaps and Secrets; counts are complete, up to 20 names per kind),
    and returns it in RV(contents) and in the diff, so check mode shows everything that would go.
  - Never deletes C(default), C(kube-system), C(kube-public) or C(kube-node-lease).
  - A delete starts the namespace's termination; the namespace controller then deletes what it holds and the
    namespace disappears. With O(wait=false) (the default) the module returns at once and the namespace may show
    phase C(Terminating) for a while.
  - "API requests: a run that changes nothing makes one, a GET of the namespace. O(state=absent) on an existing
    namespace adds one LIST per kind above and the DELETE (plus a GET every 2 seconds with O(wait=true)); a create
    or label update adds one POST or PATCH. A request answered with 429 or 5xx and a C(Retry-After) header is
    repeated after that delay, for up to 60 seconds."
author:
  - Contributors to the aks.workload_identity collection (@aks-workload-identity)
requirements:
  - python >= 3.10
  - kubernetes
extends_documentation_fragment:
  - aks.workload_identity.k8s_auth
options:
  name:
    description:
      - Name of the namespace, an RFC 1123 label (lower-case letters, digits and C(-), at most 63).
    type: str
    required: true
  state:
    description:
      - V(present) creates the namespace or sets its labels; V(absent) deletes it with everything in it.
    type: str
    choices: [present, absent]
    default: present
  labels:
    description:
      - Labels to set on the namespace. Only the keys given here are touched; a V(null) value removes that key.
      - Keys are Kubernetes qualified names (an optional DNS subdomain prefix and C(/), then at most 63 letters,
        digits, C(-), C(_) or C(.), starting and ending alphanumeric); values are strings of at most 63 such
        characters, or empty. C(kubernetes.io/metadata.name) is refused, since the API server sets it to the name.
      - Ignored with O(state=absent).
    type: dict
    default: {}
  wait:
    description:
      - With O(state=absent), wait until the namespace is gone. Fails after O(wait_timeout) seconds if the
        namespace controller has not finished; the deletion goes on in the background.
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds to wait with O(wait=true), 1 to 86400 (a day).
    type: int
    default: 300
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details:
      - Every write is sent as a server-side dry run (C(dryRun=All)), so nothing is persisted. The contents of a
        namespace to delete are listed in check mode too.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode).
    support: full
    details:
      - For a delete, C(before) holds the namespace's labels, phase and contents.
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
    details:
      - A namespace that is already terminating counts as deleted.
  action_group:
    description: Use C(group/aks.workload_identity.k8s) in C(module_defaults) to set the connection options.
    support: full
    membership:
      - aks.workload_identity.k8s
notes:
  - "RBAC the connecting user needs (cluster-wide): C(get) on C(namespaces) always; C(create), C(patch) or
    C(delete) on C(namespaces) for a create, label change or delete; for a delete also C(list) on the kinds
    named above in that namespace."
seealso:
  - module: aks.workload_identity.wid_service_account
  - name: Namespaces
    description: Kubernetes documentation on namespaces and their deletion.
    link: https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/
"""

EXAMPLES = r"""
---
- name: Create the namespace of a workload, labelled as the team's
  aks.workload_identity.wid_namespace:
    name: orders
    labels:
      team: payments

- name: Show what deleting the demo namespace would take with it (nothing is deleted)
  aks.workload_identity.wid_namespace:
    name: wid-demo
    state: absent
  check_mode: true
  diff: true
  register: demo_namespace

- name: Delete the demo namespace and wait until it is gone
  aks.workload_identity.wid_namespace:
    name: wid-demo
    state: absent
    wait: true
    wait_timeout: 600
"""

RETURN = r"""
namespace:
  description: The namespace after the task; V({}) when it does not exist (or, in check mode, would be deleted).
  returned: always
  type: dict
  contains:
    name:
      description: Name of the namespace.
      type: str
      returned: when the namespace exists
      sample: orders
    uid:
      description: Kubernetes UID; V(null) in check mode when the namespace would be created.
      type: str
      returned: when the namespace exists
    labels:
      description: All labels of the namespace.
      type: dict
      returned: when the namespace exists
    phase:
      description: V(Active), or V(Terminating) while it is being deleted.
      type: str
      returned: when the namespace exists
      sample: Active
    terminating:
      description: Whether the namespace is being deleted.
      type: bool
      returned: when the namespace exists
contents:
  description:
    - What the namespace held before the delete, by kind; only kinds with objects appear. C(count) is complete,
      C(names) lists up to 20 of them. The C(default) ServiceAccount and the C(kube-root-ca.crt) ConfigMap that
      every namespace has are not counted.
  returned: with O(state=absent) when the namespace existed and was not already terminating
  type: dict
  sample: {"Deployment": {"count": 1, "names": ["orders-api"]}, "ServiceAccount": {"count": 1, "names": ["orders-api"]}}
deleted:
  description: Whether the namespace is known to be gone (only with O(wait=true), or when it did not exist).
  returned: always
  type: bool
"""

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8sModule
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.namespace import (
    ABSENT,
    PRESENT,
    DesiredNamespace,
    NamespaceReconciler,
    validate,
)

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "choices": [PRESENT, ABSENT], "default": PRESENT},
    "labels": {"type": "dict", "default": {}},
    "wait": {"type": "bool", "default": False},
    "wait_timeout": {"type": "int", "default": 300},
}


def main() -> None:
    k8s = K8sModule(ARGUMENT_SPEC, supports_check_mode=True)
    module = k8s.module
    params = k8s.params
    desired = DesiredNamespace(
        name=params["name"],
        state=params["state"],
        labels=params["labels"] or {},
        wait=params["wait"],
        wait_timeout=float(params["wait_timeout"]),
    )
    errors = validate(desired)
    if errors:
        module.fail_json(msg="Invalid input: " + "; ".join(errors), errors=errors)
    clients = {"core_v1": k8s.core_v1, "apps_v1": k8s.apps_v1, "batch_v1": k8s.batch_v1}
    try:
        outcome = NamespaceReconciler(clients, dry_run=k8s.check_mode).reconcile(desired)
    except WorkloadIdentityError as exc:
        k8s.fail(exc)
    result: dict[str, t.Any] = {
        "changed": outcome.changed,
        "namespace": outcome.namespace or {},
        "deleted": outcome.deleted,
    }
    if outcome.contents is not None:
        result["contents"] = outcome.contents
    if module._diff:
        result["diff"] = outcome.plan.diff()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
