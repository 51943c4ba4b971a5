#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: issuer_rotation
short_description: Move workloads to a new cluster's OIDC issuer without an outage (make before break)
version_added: 0.3.0
description:
  - When a cluster is rebuilt or replaced (blue/green, a region move, recreation) its OIDC issuer URL changes, and
    every federated credential that trusts the old issuer stops working for pods of the new cluster. Deleting and
    re-creating the credentials (or changing their issuer in place) breaks the old cluster's pods at once and the new
    cluster's until Microsoft Entra ID has seen the change (AADSTS70021 meanwhile).
  - This module moves a fleet of workloads in three steps, per workload, in one process (the fleet engine of
    M(aks.workload_identity.workloads)).
  - "B(add): converges the workloads against the B(new) cluster - a federated credential for the new issuer
    B(beside) the old one (under the default name, since a name holds one issuer), the annotated ServiceAccount on the
    new cluster, the grants; for items with C(federation=identity_binding), the identity's binding to the new cluster
    and its RBAC. The identity's budget of 20 credentials is checked with the overlap counted (two per ServiceAccount
    while both clusters run) before anything is written."
  - "B(prove) (O(prove)): proves each workload's new chain as it will run - a token of the new cluster's
    ServiceAccount, the exchange at Entra ID, and the read of O(secret_name) in O(keyvault) (or of
    O(arm_resource_id)) - riding out credential and role propagation for up to O(propagation_timeout) seconds, as
    M(aks.workload_identity.workloads_verify) does."
  - "B(retire) (O(retire_old), off by default): only for workloads whose new chain was proven B(in this run),
    deletes the credential that trusts the old issuer for the workload's ServiceAccount (found by the exact issuer
    and subject); for items using an identity binding, the identity's binding on the old cluster
    (O(old_cluster_name)), once every item of the identity is proven. Run it once the old cluster's pods are gone."
  - Each workload's RV(workloads[].stage) is read back from what Azure holds on every run, so a run that stopped
    after B(add) (or was interrupted) resumes where it stopped, with nothing duplicated.
  - Check mode plans all three steps from the same reads and writes nothing; the proof is not run (a TokenRequest
    is a write), and the retirement is shown for every workload as it would be once proven.
  - The Kubernetes connection options name the B(new) cluster. Nothing is read from or written to the old cluster's
    API server; its ServiceAccounts and RBAC stay as they are.
requirements:
  - azure-identity >= 1.19.0
  - azure-mgmt-msi >= 7.0.0
  - azure-mgmt-authorization >= 4.0.0
  - azure-mgmt-containerservice >= 34.0.0
  - azure-keyvault-secrets >= 4.8.0 (for O(keyvault))
  - kubernetes >= 29.0.0
extends_documentation_fragment:
  - aks.workload_identity.azure_auth
  - aks.workload_identity.k8s_auth
attributes:
  check_mode:
    support: full
    description: Plans the three steps and writes nothing, not even a dry run; no token is requested.
  diff_mode:
    support: full
    description: One diff per workload that changes, each step's object before and after.
  idempotent:
    support: full
    description: A second run makes no change; with O(retire_old=true) the workloads end trusting only the new issuer.
options:
  items:
    description:
      - The workloads, as the M(aks.workload_identity.workload) role's C(workload_items) (or its C(workload_results)).
        An item's C(credential_name) names its credential for the B(old) issuer; the new issuer's gets the default
        name.
    type: list
    elements: dict
    required: true
  old_issuer_url:
    description:
      - The old cluster's OIDC issuer URL exactly as Azure returned it. Unset reads it from O(old_cluster_name), which
        then must still exist; once the old cluster is deleted, give it here.
    type: str
  old_cluster_resource_group:
    description: Resource group of the old cluster.
    type: str
  old_cluster_name:
    description:
      - Name of the old cluster, read for its issuer when O(old_issuer_url) is not set, and the cluster whose identity
        bindings O(retire_old) deletes for items with C(federation=identity_binding).
    type: str
  new_issuer_url:
    description: The new cluster's OIDC issuer URL. Unset reads it from O(new_cluster_name).
    type: str
  new_cluster_resource_group:
    description: Resource group of the new cluster.
    type: str
    required: true
  new_cluster_name:
    description: Name of the new cluster, the parent of new identity bindings; the Kubernetes connection must reach it.
    type: str
    required: true
  tenant_id:
    description: Tenant ID to annotate the new cluster's ServiceAccounts with, as in M(aks.workload_identity.workloads).
    type: str
  default_location:
    description: Region of identities created without C(identity.location) (items that name a new identity).
    type: str
  prove:
    description: V(false) stops after the B(add) step (nothing is proven, so nothing is retired).
    type: bool
    default: true
  retire_old:
    description: Delete, for each workload proven in this run, the old issuer's credential (or the old cluster's binding).
    type: bool
    default: false
  keyvault:
    description: Name or URL of the key vault whose O(secret_name) each workload reads with its new token.
    type: str
  secret_name:
    description: The secret to read in O(keyvault) (its value is never returned).
    type: str
  arm_resource_id:
    description: An Azure Resource Manager resource each workload reads instead of a secret.
    type: str
  arm_api_version:
    description: The api-version for O(arm_resource_id).
    type: str
  propagation_timeout:
    description: Seconds the proof waits at most for credential and role propagation.
    type: int
    default: 300
  retry_interval:
    description: Seconds between the proof's attempts while it waits for propagation.
    type: int
    default: 5
  webhook_dry_run:
    description:
      - Part of the proof - a server-side dry run of a labelled pod on the new cluster shows whether the webhook
        would inject the identity (needed for items using an identity binding, whose token audience and proxy come
        from it). V(false) skips it, for a new cluster whose webhook is not installed yet.
    type: bool
    default: true
  parallel:
    description: How many requests at most are in flight at once, across identities.
    type: int
    default: 8
seealso:
  - module: aks.workload_identity.workloads
  - module: aks.workload_identity.workloads_verify
  - name: Federated identity credentials (considerations)
    description: One credential per issuer and subject, compared exactly; 20 per identity; propagation.
    link: https://learn.microsoft.com/entra/workload-id/workload-identity-federation-considerations
author:
  - Contributors to the aks.workload_identity collection (!UNKNOWN)
"""

EXAMPLES = r"""
---
- name: Blue/green - trust the green cluster's issuer beside the blue one's, and prove it (the blue one stays)
  aks.workload_identity.issuer_rotation:
    items: "{{ workload_items }}"
    old_cluster_resource_group: rg-aks
    old_cluster_name: aks-blue
    new_cluster_resource_group: rg-aks
    new_cluster_name: aks-green
    keyvault: kv-orders
    secret_name: app-secret
    kubeconfig: ~/.kube/aks-green

- name: Once the blue cluster's pods are gone, retire its issuer (only workloads proven in this run)
  aks.workload_identity.issuer_rotation:
    items: "{{ workload_items }}"
    old_issuer_url: "{{ blue_issuer_url }}"
    new_cluster_resource_group: rg-aks
    new_cluster_name: aks-green
    keyvault: kv-orders
    secret_name: app-secret
    retire_old: true
    kubeconfig: ~/.kube/aks-green
"""

RETURN = r"""
workloads:
  description: Per workload, where it stands and what each step did.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The item's name.
      type: str
    stage:
      description:
        - V(not_started) (only the old issuer is trusted), V(overlap) (both), V(proven) (both, and the new chain was
          proven in this run), V(retired) (only the new issuer), V(failed).
      type: str
    next:
      description: What the next run (or person) does for this workload.
      type: str
    new_credential:
      description: Name of the credential trusting the new issuer ("" for items using an identity binding).
      type: str
    old_credential:
      description: Name of the credential trusting the old issuer, "" once it is gone.
      type: str
    retired:
      description: Whether this run deleted (or, in check mode, would delete) the old issuer's credential or binding.
      type: bool
    proof:
      description: The proof's summary (status, failed_step, cause, fix, error_code, steps), as in workloads_verify.
      type: dict
    problems:
      description: The new chain's agreement problems and the proof's failure, one sentence each.
      type: list
      elements: str
    changed:
      description: Whether this workload changed (or would, in check mode).
      type: bool
    failed:
      description: Whether this workload failed (at adding, proving or retiring).
      type: bool
    error:
      description: Why it failed.
      type: str
summary:
  description: How many workloads stand at each stage after the run, and how many changed or failed.
  returned: always
  type: dict
old_issuer_url:
  description: The old issuer used.
  returned: always
  type: str
new_issuer_url:
  description: The new issuer used.
  returned: always
  type: str
api_calls:
  description: Azure Resource Manager and Kubernetes requests, by operation.
  returned: always
  type: dict
"""

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils import fleet, rotation
from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import AZURE_AUTH_ARGSPEC, AzureModule
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.fleet_verify import (
    PROOF_ARGSPEC,
    Verification,
    proof_option_errors,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.inputs import new_module
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8S_AUTH_ARGSPEC, K8sModule
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    validate_cluster_name,
    validate_issuer,
    validate_location,
    validate_resource_group_name,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_items import parse_items, validate_fleet

ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    "items": {"type": "list", "elements": "dict", "required": True},
    "old_issuer_url": {"type": "str"},
    "old_cluster_resource_group": {"type": "str"},
    "old_cluster_name": {"type": "str"},
    "new_issuer_url": {"type": "str"},
    "new_cluster_resource_group": {"type": "str", "required": True},
    "new_cluster_name": {"type": "str", "required": True},
    "tenant_id": {"type": "str"},
    "default_location": {"type": "str"},
    "prove": {"type": "bool", "default": True},
    "retire_old": {"type": "bool", "default": False},
    **PROOF_ARGSPEC,
}
MODULE_KWARGS: dict[str, t.Any] = {
    "required_together": [("old_cluster_resource_group", "old_cluster_name"), ("keyvault", "secret_name")],
    "required_one_of": [("old_issuer_url", "old_cluster_name")],
    "mutually_exclusive": [("keyvault", "arm_resource_id")],
}


def check_options(params: dict[str, t.Any]) -> list[str]:
    errors = proof_option_errors({**params, "issuer_url": None, "cluster_resource_group": None, "cluster_name": None})
    for prefix in ("old_", "new_"):
        if params[f"{prefix}cluster_name"] is not None:
            errors += validate_resource_group_name(
                params[f"{prefix}cluster_resource_group"], f"{prefix}cluster_resource_group"
            )
            errors += validate_cluster_name(params[f"{prefix}cluster_name"], f"{prefix}cluster_name")
        if params[f"{prefix}issuer_url"] is not None:
            errors += validate_issuer(params[f"{prefix}issuer_url"], f"{prefix}issuer_url")
    errors += validate_location(params["default_location"], "default_location")
    if params["retire_old"] and not params["prove"]:
        errors.append("retire_old: needs prove: true (only a proven workload's old credential is retired)")
    errors += rotation.check_issuers(params["old_issuer_url"], params["new_issuer_url"])
    return errors


def verification_params(params: dict[str, t.Any], issuer: str) -> dict[str, t.Any]:
    """workloads_verify's options for the new cluster, from this module's."""
    return {
        **params,
        "issuer_url": issuer,
        "cluster_resource_group": params["new_cluster_resource_group"],
        "cluster_name": params["new_cluster_name"],
        "prove": True,
    }


def main() -> None:
    module = new_module(
        AZURE_AUTH_ARGSPEC | K8S_AUTH_ARGSPEC | ARGUMENT_SPEC, supports_check_mode=True, **MODULE_KWARGS
    )
    azure, kube = AzureModule(module=module), K8sModule(module=module)
    params = module.params
    secrets = [params.get("secret"), params.get("api_key")]
    try:
        errors = check_options(params)
        items, item_errors = parse_items(params["items"], default_location=params["default_location"])
        errors += item_errors or validate_fleet(
            items, state="present", issuer=params["new_issuer_url"], tenant_id=params["tenant_id"] or None
        )
        if errors:
            raise WorkloadIdentityError(f"Invalid input: {'; '.join(errors)}", code="InvalidParameter")
        engine = fleet.Fleet(
            azure,
            kube,
            check_mode=module.check_mode,
            parallel=params["parallel"],
            cluster=(params["new_cluster_resource_group"], params["new_cluster_name"]),
        )
        outcome = rotation.Rotation(engine, params, prove=_prover(params, azure, kube, module.check_mode)).run(items)
    except WorkloadIdentityError as exc:
        module.fail_json(**exc.to_fail_kwargs(redact=secrets), api_calls=azure.calls.as_dict())
    result: dict[str, t.Any] = {
        "changed": outcome["changed"],
        "workloads": outcome["workloads"],
        "summary": outcome["summary"],
        "old_issuer_url": outcome["old_issuer"],
        "new_issuer_url": outcome["new_issuer"],
        "api_calls": azure.calls.as_dict(),
    }
    if module._diff:
        result["diff"] = outcome["diff"]
    message = outcome["failure"]
    if message:
        module.fail_json(msg=message, **result)
    module.exit_json(**result)


def _prover(params: dict[str, t.Any], azure: AzureModule, kube: K8sModule, check_mode: bool) -> t.Any:
    """The proof of the new chains: workloads_verify's verification on the new cluster, run after the writes."""

    def prove(items: list[t.Any], issuer: str) -> dict[str, dict[str, t.Any]]:
        verified = Verification(verification_params(params, issuer), azure, kube, check_mode=check_mode).run(items)
        return {result["name"]: result for result in verified["workloads"]}

    return prove


if __name__ == "__main__":
    main()
