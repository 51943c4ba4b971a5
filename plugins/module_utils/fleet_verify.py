# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Verification of many workloads over one snapshot: the agreement checks, then each workload's proof (the
verifier of wid_verify, preloaded with what the snapshot read), in parallel. Used by workloads_verify and by the
flows that must prove a chain before they go on (issuer_rotation).

``params`` are workloads_verify's options (issuer_url, cluster_resource_group, cluster_name, prove, keyvault,
secret_name, arm_resource_id, arm_api_version, propagation_timeout, retry_interval, webhook_dry_run, parallel, and
the connection options the verifier passes on).

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils import chain_checks, fleet
from ansible_collections.aks.workload_identity.plugins.module_utils import trust_check as tc
from ansible_collections.aks.workload_identity.plugins.module_utils.chain_verifier import (
    MIN_TOKEN_REQUEST_SECONDS,
    Verifier,
    validate,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.azure import Clusters, cluster_target
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.kubernetes import AccessReviews
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    DEFAULT_AUDIENCE,
    identity_binding_role_name,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_items import Item

# The options of a proof, shared by the modules that prove many chains (workloads_verify, issuer_rotation).
PROOF_ARGSPEC: dict[str, dict[str, t.Any]] = {
    "keyvault": {"type": "str", "no_log": False},  # a vault name or URL
    "secret_name": {"type": "str", "no_log": False},  # a name, not a secret
    "arm_resource_id": {"type": "str"},
    "arm_api_version": {"type": "str"},
    "propagation_timeout": {"type": "int", "default": 300},
    "retry_interval": {"type": "int", "default": 5},
    "webhook_dry_run": {"type": "bool", "default": True},
    "parallel": {"type": "int", "default": fleet.DEFAULT_PARALLEL},
}
MAX_PARALLEL = 32


def chain_proof_params(params: t.Mapping[str, t.Any], issuer: str | None) -> dict[str, t.Any]:
    """workloads_verify's options for a module that proves the chains it just made: the token exchange only (no
    vault or ARM read), the webhook asked by a dry run."""
    return {
        **params,
        "issuer_url": issuer,
        "prove": True,
        "keyvault": None,
        "secret_name": None,
        "arm_resource_id": None,
        "arm_api_version": None,
        "webhook_dry_run": True,
    }


def proof_option_errors(params: t.Mapping[str, t.Any]) -> list[str]:
    """The rules of the proof options (wid_verify's own, over a stand-in workload), checked before any request."""
    errors = []
    if not 1 <= params["parallel"] <= MAX_PARALLEL:
        errors.append(f"parallel: must be 1-{MAX_PARALLEL}, got {params['parallel']}")
    probe = {
        **params,
        "namespace": "probe",
        "service_account": "probe",
        "identity_client_id": None,
        "tenant_id": None,
        "token_expiration": MIN_TOKEN_REQUEST_SECONDS,
    }
    return errors + validate(probe)


BEFORE_ACCESS = (tc.SERVICEACCOUNT, tc.CLUSTER, tc.CREDENTIAL, tc.TOKEN, tc.EXCHANGE)


def proof_params(
    params: t.Mapping[str, t.Any], item: Item, identity: dict[str, t.Any] | None, issuer: str | None
) -> dict:
    """wid_verify's options for one workload, from this module's. A bound workload's proof needs the cluster (its
    binding) and takes the token audience from the webhook's dry run; the others get the issuer read once."""
    bound = item.uses_binding
    return {
        **params,
        "namespace": item.namespace,
        "service_account": item.service_account,
        "identity_client_id": (identity or {}).get("client_id"),
        "tenant_id": None,
        "identity_resource_group": item.identity.resource_group,
        "identity_name": item.identity.name,
        "issuer_url": None if bound else issuer,
        "cluster_resource_group": params["cluster_resource_group"] if bound else None,
        "cluster_name": params["cluster_name"] if bound else None,
        "federation": item.federation,
        "audience": None if bound else DEFAULT_AUDIENCE,
        "token_expiration": MIN_TOKEN_REQUEST_SECONDS,
        "scope": None,
        "return_secret_value": False,
        "fail_on_error": False,
    }


def proof_summary(result: dict[str, t.Any]) -> dict[str, t.Any]:
    """What the verify role shows of a proof: never a token or a secret value."""
    return {
        "status": "passed" if result["passed"] else "failed",
        "binding": result["binding"],
        "failed_step": result["failed_step"],
        "cause": result["cause"],
        "fix": result["fix"],
        "error_code": result["error_code"],
        "steps": result["steps"],
        "webhook": result["webhook"],
        "access": {k: v for k, v in result["access"].items() if k != "secret_value"},
        "attempts": result["attempts"] or 1,
        "progress": result["progress"],
    }


def cluster_problems(params: t.Mapping[str, t.Any], cluster: dict[str, t.Any] | None) -> list[str]:
    name = params["cluster_name"]
    if not name:
        return []
    if cluster is None:
        return [f"cannot read cluster {name}: it does not exist"]
    problems = []
    if not cluster["oidc_issuer_enabled"]:
        problems.append(
            f"the OIDC issuer of cluster {name} is off: the tokens of its ServiceAccounts cannot be exchanged (the "
            "cluster role enables it)"
        )
    if not cluster["workload_identity_enabled"]:
        problems.append(
            f"workload identity is off on cluster {name}: the webhook does not give pods their identity (the cluster "
            "role enables it)"
        )
    issuer = params["issuer_url"]
    if issuer and cluster["issuer_url"] and issuer != cluster["issuer_url"]:
        problems.append(f"issuer_url {issuer} is not the issuer of cluster {name}, {cluster['issuer_url']}")
    return problems


class Verification:
    """``azure`` an AzureModule, ``kube`` a K8sModule (the cluster whose ServiceAccounts are proven)."""

    def __init__(self, params: t.Mapping[str, t.Any], azure: t.Any, kube: t.Any, *, check_mode: bool) -> None:
        self.azure, self.kube, self.params = azure, kube, params
        named = self.params["cluster_name"]
        self.cluster = (self.params["cluster_resource_group"], named) if named else None
        self.engine = fleet.Fleet(
            azure, kube, check_mode=check_mode, parallel=self.params["parallel"], cluster=self.cluster
        )
        # Items using an identity binding: the API server's answer to "may the ServiceAccount use the identity", by
        # item index (a dict, or the WorkloadIdentityError of the review).
        self.reviews: dict[int, t.Any] = {}

    def run(self, items: list[Item]) -> dict[str, t.Any]:
        engine = self.engine
        engine.prepare()
        cluster = None
        if self.params["cluster_name"]:
            cluster = Clusters(self.azure).get(self.params["cluster_resource_group"], self.params["cluster_name"])
        engine.read_azure(items)
        engine.read_kubernetes(items, service_accounts_only=True)
        self.read_binding_agreement([item for item in items if item.uses_binding])
        issuer = self.params["issuer_url"] or (cluster or {}).get("issuer_url")
        checked = [self.agreement(item, issuer) for item in items]
        if self.params["prove"]:
            proofs = engine._run_all(
                (index, lambda c=check: self.prove(c)) for index, check in enumerate(checked) if check["identity"]
            )
            for index, proof in proofs.items():
                checked[index]["proof"] = (
                    {"status": "error", "reason": str(proof)} if isinstance(proof, WorkloadIdentityError) else proof
                )
        results = [self.report(check) for check in checked]
        problems = cluster_problems(self.params, cluster)
        view = None
        if self.params["cluster_name"]:
            keys = ("name", "resource_group", "issuer_url", "oidc_issuer_enabled", "workload_identity_enabled")
            view = {"exists": cluster is not None, **{k: cluster[k] for k in keys}} if cluster else {"exists": False}
        return {
            "workloads": results,
            "cluster": view,
            "cluster_problems": problems,
            "passed": not problems and all(r["passed"] for r in results),
        }

    def read_binding_agreement(self, bound: list[Item]) -> None:
        """For the items using an identity binding: the cluster's bindings (one list), one SubjectAccessReview per
        item whose identity and ServiceAccount exist, and our ClusterRole and ClusterRoleBinding of each identity a
        review denied (to say what is missing)."""
        if not bound:
            return
        engine = self.engine
        engine.read_bindings()
        reviews = engine._k8s(AccessReviews, self.kube.authorization_v1)
        jobs = []
        for item in bound:
            identity = engine.snapshot.identities.get(item.identity.key)
            if identity and identity.get("client_id") and self._service_account(item) is not None:
                jobs.append(
                    (
                        item.index,
                        lambda i=item, c=identity["client_id"]: reviews.can_use_identity(
                            i.namespace, i.service_account, c
                        ),
                    )
                )
        self.reviews = engine._run_all(jobs)
        denied = [
            engine.snapshot.identities[item.identity.key]["client_id"]
            for item in bound
            if isinstance(self.reviews.get(item.index), dict) and not self.reviews[item.index]["allowed"]
        ]
        engine.read_binding_access(denied)

    def _service_account(self, item: Item) -> dict[str, t.Any] | None:
        return self.engine.snapshot.service_accounts.get(item.namespace, {}).get(item.service_account)

    def binding_agreement(self, item: Item, identity: dict[str, t.Any]) -> tuple[list[str], dict[str, t.Any]]:
        """chain_checks.binding_problems over the snapshot, and what the proof may take from it as read."""
        snapshot = self.engine.snapshot
        review = self.reviews.get(item.index)
        errors = {
            "bindings": _text(snapshot.errors.get("bindings")),
            "credentials": _text(snapshot.errors.get(f"credentials:{item.identity.key}")),
            "review": _text(review) if isinstance(review, WorkloadIdentityError) else None,
        }
        rbac = None
        if isinstance(review, dict) and not review["allowed"]:
            name = identity_binding_role_name(identity["client_id"])
            errors["rbac"] = _text(snapshot.errors.get(f"rbac:{name}"))
            rbac = (snapshot.cluster_roles.get(name), snapshot.cluster_role_bindings.get(name))
        found, binding = chain_checks.binding_problems(
            namespace=item.namespace,
            service_account=item.service_account,
            identity=identity,
            cluster=cluster_target(*t.cast(tuple, self.cluster)),
            bindings=snapshot.bindings,
            credentials=snapshot.credentials.get(item.identity.key),
            review=review if isinstance(review, dict) else None,
            rbac=rbac,
            binding_name=item.identity_binding_name,
            errors=errors,
        )
        preloaded: dict[str, t.Any] = {}
        if errors["bindings"] is None:
            preloaded["bindings"] = snapshot.bindings
        if isinstance(review, dict):
            preloaded["review"] = review
        if rbac is not None and errors["rbac"] is None:
            preloaded["rbac"] = rbac
        return [problem.text for problem in found], {"binding": binding, "preloaded": preloaded}

    def agreement(self, item: Item, cluster_issuer: str | None) -> dict[str, t.Any]:
        snapshot = self.engine.snapshot
        group = item.identity.resource_group.lower()
        identity_error = snapshot.errors.get(f"group:{group}")
        identity = snapshot.identities.get(item.identity.key)
        sa_error = snapshot.errors.get(f"sa:{item.namespace}")
        service_account = snapshot.service_accounts.get(item.namespace, {}).get(item.service_account)
        issuer = cluster_issuer or item.expected_issuer
        problems = chain_checks.identity_problems(item, identity, _text(identity_error))
        problems += chain_checks.service_account_problems(item, service_account, identity, _text(sa_error))
        credential_name = ""
        bound: dict[str, t.Any] = {"binding": None, "preloaded": {}}
        if identity is not None and item.uses_binding:
            # No federated credential of its own: AKS's aks-identity-binding serves every bound ServiceAccount.
            found, bound = self.binding_agreement(item, identity)
            problems += found
        elif identity is not None:
            credential_error = snapshot.errors.get(f"credentials:{item.identity.key}")
            found, credential_name = chain_checks.credential_problems(
                item, snapshot.credentials.get(item.identity.key), issuer, _text(credential_error)
            )
            problems += found
        if identity is not None:
            errors = {key: _text(error) for key, error in snapshot.errors.items()}
            problems += chain_checks.grant_problems(
                item, identity.get("principal_id"), snapshot.assignments, snapshot.roles, errors
            )
        skipped = "verify_prove is false" if not self.params["prove"] else "the identity could not be read"
        return {
            "item": item,
            "identity": identity,
            "service_account": service_account,
            "issuer": issuer,
            "credential_name": credential_name,
            "binding": bound["binding"],
            "preloaded": bound["preloaded"],
            "problems": problems,
            "proof": {"status": "skipped", "reason": skipped},
        }

    def prove(self, check: dict[str, t.Any]) -> dict[str, t.Any]:
        item, identity = check["item"], check["identity"]
        credentials = self.engine.snapshot.credentials.get(item.identity.key)
        preloaded = {
            "service_account": check["service_account"],
            "identity": {**identity, "credentials": credentials} if credentials is not None else identity,
            **check["preloaded"],
        }
        params = proof_params(self.params, item, identity, check["issuer"])
        verifier = Verifier(self.azure, self.kube, params=params, preloaded=preloaded)
        try:
            return proof_summary(verifier.run())
        except (WorkloadIdentityError, ValueError) as exc:
            return {"status": "error", "reason": tc.redact(str(exc), [verifier.token])}

    def report(self, check: dict[str, t.Any]) -> dict[str, t.Any]:
        item, identity, proof = check["item"], check["identity"], check["proof"]
        problems = list(check["problems"])
        if proof["status"] == "failed":
            code = f" [{proof['error_code']}]" if proof.get("error_code") else ""
            problems.append(f"proof failed at step {proof['failed_step']}: {proof['cause']} Fix: {proof['fix']}{code}")
        elif proof["status"] == "error":
            problems.append(f"the proof could not run: {proof['reason']}")
        access = proof.get("access") or {}
        binding = {}
        if item.uses_binding:
            found = check["binding"] or {}
            binding = {
                "identity_binding_name": found.get("name") or item.binding_name,
                "binding_issuer_url": found.get("issuer_url") or "",
            }
        return {
            **item.view(),
            "client_id": (identity or {}).get("client_id"),
            "issuer": check["issuer"] or "",
            "credential_name": check["credential_name"],
            "federation": item.federation,
            **binding,
            "proof": proof,
            "passed": not problems,
            "problems": problems,
            # The docs' verification pod can only do better once the proof got past the exchange to a vault; it
            # does not use identity bindings (no use-identity-binding annotation, no proxy-aware client).
            "pod_proof_ready": access.get("kind") == "keyvault"
            and not item.uses_binding
            and bool(access.get("target"))
            and proof.get("failed_step") not in BEFORE_ACCESS,
            "keyvault_url": str(access["target"]).rsplit("secrets/", 1)[0] if access.get("kind") == "keyvault" else "",
        }


def _text(error: t.Any) -> str | None:
    return tc.short_message(str(error)) if error is not None else None
