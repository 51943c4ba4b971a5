#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: wid_workload_patch
short_description: Opt the pods of a Deployment, StatefulSet, DaemonSet or CronJob into Microsoft Entra Workload ID
version_added: 0.1.0
description:
  - Patches the pod template of an existing workload so that the azure-workload-identity webhook mutates its
    pods. Sets the C(azure.workload.identity/use=true) label and C(spec.serviceAccountName) to O(service_account),
    the ServiceAccount that M(aks.workload_identity.wid_service_account) annotated.
  - Both go on the B(pod template) (C(spec.template), for a CronJob C(spec.jobTemplate.spec.template)), never on
    the workload's own metadata, where the webhook does not look.
  - With O(proxy_sidecar), also sets or removes the C(azure.workload.identity/inject-proxy-sidecar) and
    C(azure.workload.identity/proxy-sidecar-port) annotations, for applications that still use the Azure Instance
    Metadata Service (the webhook's migration sidecar).
  - With O(identity_binding), also sets or removes the C(azure.workload.identity/use-identity-binding) annotation,
    for workloads whose identity reaches the cluster through an AKS identity binding
    (M(aks.workload_identity.aks_identity_binding)) rather than a federated credential of their own.
  - Every change is one JSON merge patch (RFC 7386) naming only these keys; containers, volumes and every other
    label or annotation of the template are left as they are.
  - Changing the pod template of a Deployment, StatefulSet or DaemonSet makes Kubernetes roll out new pods (that
    is how they get the new settings); a CronJob's change applies to the jobs it starts from then on. RV(restarts_pods)
    says which.
  - A Job's pod template is immutable and a Pod's C(serviceAccountName) too; recreate those with the label and
    ServiceAccount instead.
  - "API requests: a run that changes nothing makes one, a GET of the workload; a change adds one PATCH. When
    the workload does not exist (O(state=present)), one GET of the namespace tells which of the two is missing,
    and the module fails without writing. A request that the API server answers with 429 or 5xx and a
    C(Retry-After) header is repeated after that delay, for up to 60 seconds."
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
      - Namespace of the workload, an RFC 1123 label.
    type: str
    required: true
  kind:
    description:
      - Kind of the workload.
    type: str
    required: true
    choices: [Deployment, StatefulSet, DaemonSet, CronJob]
  name:
    description:
      - Name of the workload, an RFC 1123 subdomain (lower-case letters, digits, C(-) and C(.)) of at most 253
        characters; at most 52 for a CronJob, as Kubernetes allows.
    type: str
    required: true
  service_account:
    description:
      - The ServiceAccount the pods run as, annotated with the managed identity's client ID, an RFC 1123
        subdomain. Required when O(state=present).
      - When the template named another ServiceAccount, the module warns that its pods change ServiceAccount.
    type: str
  proxy_sidecar:
    description:
      - V(true) asks the webhook to inject its proxy sidecar (C(azure.workload.identity/inject-proxy-sidecar=true)
        and C(azure.workload.identity/proxy-sidecar-port)); V(false) removes both annotations.
      - When not set, the proxy annotations are left as they are.
    type: bool
  identity_binding:
    description:
      - V(true) sets C(azure.workload.identity/use-identity-binding=true) on the pod template. The webhook (v1.6 or
        later, as AKS configures it for identity bindings) then gives the pods a token for the AKS token proxy
        (C(AZURE_KUBERNETES_TOKEN_PROXY), C(AZURE_KUBERNETES_SNI_NAME), C(AZURE_KUBERNETES_CA_FILE)) instead of one
        for Microsoft Entra ID directly. The application's Azure Identity library must opt in to the proxy
        (azure-identity for Python 1.26.0b1 or later, C(WorkloadIdentityCredential(enable_azure_proxy=True))).
      - V(false) removes the annotation. When not set, it is left as it is.
      - See U(https://learn.microsoft.com/azure/aks/identity-bindings).
    type: bool
  proxy_sidecar_port:
    description:
      - Port of the proxy sidecar, 1 to 65535. The webhook's default is V(8000).
      - Only with O(proxy_sidecar=true) and O(state=present); given otherwise it would be ignored, so the module
        refuses it.
    type: int
  state:
    description:
      - V(present) sets the label, the ServiceAccount and, with O(proxy_sidecar), the proxy annotations.
      - V(absent) removes the label, the proxy annotations and the identity binding annotation, so new pods are no longer mutated. The
        C(serviceAccountName) is left as it is (the module cannot know which one the pods used before).
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details:
      - The patch is sent as a server-side dry run (C(dryRun=All)), so the API server validates it and nothing is
        persisted.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode).
    support: full
    details:
      - The diff shows the pod template's ServiceAccount, labels and annotations and the settings read from them.
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
  action_group:
    description: Use C(group/aks.workload_identity.k8s) in C(module_defaults) to set the connection options.
    support: full
    membership:
      - aks.workload_identity.k8s
notes:
  - "RBAC the connecting user needs in O(namespace): C(get) and, for a change, C(patch) on C(deployments),
    C(statefulsets) or C(daemonsets) (API group C(apps)) or C(cronjobs) (API group C(batch))."
  - A workload that does not exist is an error with O(state=present) (naming O(name), or O(namespace) when the
    namespace is missing too) and nothing to do with O(state=absent).
seealso:
  - module: aks.workload_identity.wid_service_account
  - module: aks.workload_identity.wid_settings_configmap
  - name: Service account labels and annotations (azure-workload-identity)
    description: The pod label and annotations the mutating webhook reads.
    link: https://azure.github.io/azure-workload-identity/docs/topics/service-account-labels-and-annotations.html
  - name: Deploy and configure workload identity on AKS
    description: Microsoft's walk-through, whose application pod carries the same label and ServiceAccount.
    link: https://learn.microsoft.com/azure/aks/workload-identity-deploy-cluster
"""

EXAMPLES = r"""
---
- name: Let the pods of a Deployment use workload identity (the Deployment rolls out new pods)
  aks.workload_identity.wid_workload_patch:
    namespace: orders
    kind: Deployment
    name: orders-api
    service_account: orders-api

- name: Preview the change to a CronJob's job template in check mode, with the diff
  aks.workload_identity.wid_workload_patch:
    namespace: orders
    kind: CronJob
    name: orders-nightly
    service_account: orders-api
  check_mode: true
  diff: true

- name: Add the webhook's proxy sidecar for an application that still calls the instance metadata endpoint
  aks.workload_identity.wid_workload_patch:
    namespace: legacy
    kind: StatefulSet
    name: billing
    service_account: billing
    proxy_sidecar: true
    proxy_sidecar_port: 8000

- name: Let a Deployment's pods get their tokens through the cluster's identity binding
  aks.workload_identity.wid_workload_patch:
    namespace: payments
    kind: Deployment
    name: payments-api
    service_account: payments-api
    identity_binding: true

- name: Stop mutating the pods of a DaemonSet (label and annotations removed)
  aks.workload_identity.wid_workload_patch:
    namespace: monitoring
    kind: DaemonSet
    name: log-shipper
    state: absent
"""

RETURN = r"""
workload:
  description:
    - The workload's pod template settings after the run (in check mode, as the API server's dry run computed
      them). Empty when the workload does not exist (O(state=absent)).
  returned: always
  type: dict
  sample:
    kind: Deployment
    namespace: orders
    name: orders-api
    uid: 4f1d9c2e-7b3a-4c5d-8e9f-0a1b2c3d4e5f
    service_account: orders-api
    labels:
      app: orders-api
      azure.workload.identity/use: "true"
    annotations: {}
    workload_identity: true
    proxy_sidecar: false
    proxy_sidecar_port: null
    identity_binding: false
  contains:
    kind:
      description: Kind of the workload.
      type: str
      returned: when the workload exists
    namespace:
      description: Namespace of the workload.
      type: str
      returned: when the workload exists
    name:
      description: Name of the workload.
      type: str
      returned: when the workload exists
    uid:
      description: Kubernetes UID of the workload.
      type: str
      returned: when the workload exists
    service_account:
      description: C(serviceAccountName) of the pod template; V(null) when not set (pods then run as C(default)).
      type: str
      returned: when the workload exists
    labels:
      description: All labels of the pod template, also those this module does not manage.
      type: dict
      returned: when the workload exists
    annotations:
      description: All annotations of the pod template, also those this module does not manage.
      type: dict
      returned: when the workload exists
    workload_identity:
      description: Whether the pod template carries C(azure.workload.identity/use=true).
      type: bool
      returned: when the workload exists
    proxy_sidecar:
      description: Whether the pod template asks for the proxy sidecar.
      type: bool
      returned: when the workload exists
    proxy_sidecar_port:
      description: The C(azure.workload.identity/proxy-sidecar-port) annotation, V(null) when not set.
      type: int
      returned: when the workload exists
    identity_binding:
      description: Whether the pod template carries C(azure.workload.identity/use-identity-binding=true).
      type: bool
      returned: when the workload exists
pod_template:
  description: Where the pod template sits in the workload, the field the label and ServiceAccount are set in.
  returned: always
  type: str
  sample: spec.template
restarts_pods:
  description:
    - Whether this run changed (in check mode, would change) a pod template that Kubernetes rolls out at once
      (Deployment, StatefulSet, DaemonSet). V(false) for a CronJob, whose next jobs get the change.
  returned: always
  type: bool
  sample: true
"""

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8sModule
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.workload_patch import (
    KINDS,
    PRESENT,
    DesiredPodTemplate,
    PodTemplateReconciler,
    validate,
)

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    "namespace": {"type": "str", "required": True},
    "kind": {"type": "str", "required": True, "choices": list(KINDS)},
    "name": {"type": "str", "required": True},
    "service_account": {"type": "str"},
    "proxy_sidecar": {"type": "bool"},
    "proxy_sidecar_port": {"type": "int"},
    "identity_binding": {"type": "bool"},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
}


def desired_from_params(params: dict[str, t.Any]) -> DesiredPodTemplate:
    return DesiredPodTemplate(
        namespace=params["namespace"],
        kind=params["kind"],
        name=params["name"],
        service_account=params["service_account"],
        state=params["state"],
        proxy_sidecar=params["proxy_sidecar"],
        proxy_sidecar_port=params["proxy_sidecar_port"],
        identity_binding=params["identity_binding"],
    )


def check_options(params: dict[str, t.Any]) -> list[str]:
    """Rules of this module's options beyond the pod template's (the fleet sets a port by default)."""
    if params["proxy_sidecar_port"] is not None and not (params["proxy_sidecar"] and params["state"] == PRESENT):
        return [
            "proxy_sidecar_port: only applies with proxy_sidecar: true and state: present; set proxy_sidecar: true "
            "or leave the port out"
        ]
    return []


def main() -> None:
    k8s = K8sModule(ARGUMENT_SPEC, supports_check_mode=True, required_if=[("state", PRESENT, ["service_account"])])
    module = k8s.module
    desired = desired_from_params(k8s.params)
    errors = validate(desired) + check_options(k8s.params)
    if errors:
        module.fail_json(msg="Invalid input: " + "; ".join(errors), errors=errors)
    api = KINDS[desired.kind].api
    clients = {api: getattr(k8s, api), "core_v1": k8s.core_v1}  # this kind's API group; core for the namespace
    try:
        outcome = PodTemplateReconciler(clients, dry_run=k8s.check_mode).reconcile(desired)
    except WorkloadIdentityError as exc:
        k8s.fail(exc)
    for warning in outcome.warnings:
        module.warn(warning)
    workload = dict(outcome.workload or {})
    workload.pop("deprecated_service_account", None)
    result: dict[str, t.Any] = {
        "changed": outcome.changed,
        "workload": workload,
        "pod_template": desired.template_field,
        "restarts_pods": outcome.restarts_pods,
    }
    if module._diff:
        result["diff"] = outcome.plan.diff()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
