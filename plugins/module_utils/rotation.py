# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Issuer rotation, make before break: move workloads from an old cluster's OIDC issuer to a new cluster's.

A federated credential trusts one issuer exactly (azure-behaviour §4), so when a cluster is replaced every
credential trusting the old issuer stops working for pods of the new cluster. Deleting and re-creating them in
place (an UPDATE of the issuer) breaks the old cluster's pods at once and the new ones until Entra has seen the
change. Here, per workload:

1. ``add``: the fleet engine converges the workloads against the NEW cluster: a credential for the new issuer
   beside the old one (a new name: a name holds one issuer), or for items using an identity binding a binding on
   the new cluster; the ServiceAccount on the new cluster; the identity's budget of 20 counts the overlap.
2. ``prove``: the new chain is proven as the workload will run it (a token of the new cluster, the exchange, the
   access read), riding out propagation.
3. ``retire`` (only when asked, and only for workloads whose new chain was proven in this run): the old issuer's
   credential is deleted (for bound workloads, the identity's binding on the old cluster).

Every step is decided from what Azure holds, so the stage of a workload is read back on every run and an
interrupted run resumes where it stopped. Check mode plans all three steps and writes nothing.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import dataclasses
import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils import fleet
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.azure import IdentityBindings
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import (
    NONE,
    Plan,
    federated_credential,
    identity_binding,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_items import Item

# Where a workload stands, read from the identity's credentials (and the step this run reached).
NOT_STARTED = "not_started"  # only the old issuer is trusted
OVERLAP = "overlap"  # both issuers are trusted
PROVEN = "proven"  # both are trusted, and the new chain was proven in this run
RETIRED = "retired"  # only the new issuer is trusted
FAILED = "failed"
NEXT_STEP = {
    NOT_STARTED: "run again: the new issuer's credential is added first",
    OVERLAP: "prove the new chain (prove: true); then retire the old issuer (retire_old: true)",
    PROVEN: "retire the old issuer's credential once the old cluster's pods are gone (retire_old: true)",
    RETIRED: "nothing: the workload trusts only the new issuer",
    FAILED: "fix the cause named in error and run again: the run resumes where it stopped",
}


def for_new_issuer(items: list[Item]) -> list[Item]:
    """The items as the new issuer's credentials are made: a credential name names one (issuer, subject) pair, so an
    item's own ``credential_name`` stays with the old issuer and the new credential gets the default name."""
    return [dataclasses.replace(item, credential_name=None) for item in items]


def trusted(credentials: list[dict[str, t.Any]] | None, issuer: str | None, subject: str) -> dict[str, t.Any] | None:
    """The credential trusting exactly ``issuer`` for ``subject`` (Entra compares both exactly)."""
    return next((c for c in credentials or [] if c["issuer"] == issuer and c["subject"] == subject), None)


def stage(credentials: list[dict[str, t.Any]] | None, old_issuer: str, new_issuer: str, subject: str) -> str:
    has_old = trusted(credentials, old_issuer, subject) is not None
    has_new = trusted(credentials, new_issuer, subject) is not None
    if has_new:
        return OVERLAP if has_old else RETIRED
    return NOT_STARTED


def plan_retirement(
    item: Item, credentials: list[dict[str, t.Any]] | None, old_issuer: str
) -> tuple[Plan, federated_credential.DesiredCredential]:
    """The deletion of the old issuer's credential of the workload, found by the exact (issuer, subject) pair."""
    desired = federated_credential.DesiredCredential(
        resource_group=item.identity.resource_group,
        identity_name=item.identity.name,
        name=None,
        issuer=old_issuer,
        subject=item.subject,
        state="absent",
    )
    if credentials is None:
        return Plan(NONE, None, None, reason="the identity does not exist"), desired
    return federated_credential.plan(credentials, desired), desired


def check_issuers(old_issuer: str | None, new_issuer: str | None) -> list[str]:
    """The two issuers must be known and differ: rotating onto the same issuer would delete the only credential."""
    errors = []
    if old_issuer and new_issuer and old_issuer == new_issuer:
        errors.append(
            f"new_issuer_url: is the old issuer ({old_issuer}); a rotation needs the new cluster's issuer, which "
            "differs"
        )
    if old_issuer and new_issuer and old_issuer.rstrip("/") == new_issuer.rstrip("/") and old_issuer != new_issuer:
        errors.append(
            "new_issuer_url: differs from the old issuer only by its trailing slash; Entra compares issuers exactly, "
            "so the cluster's issuer is one of them, not both"
        )
    return errors


def refuse(message: str) -> WorkloadIdentityError:
    return WorkloadIdentityError(message, code="InvalidParameter")


# --- The flow ---------------------------------------------------------------------------------------------------
PROVE = "prove"
RETIRE = "retire"


class Rotation:
    """add -> prove -> retire for a list of items, on a Fleet whose Kubernetes client and ``cluster`` are the new
    cluster's. ``prove(items, issuer)`` proves the new chains (by item name: workloads_verify's result)."""

    def __init__(self, engine: t.Any, params: t.Mapping[str, t.Any], *, prove: t.Callable[..., t.Any]) -> None:
        self.engine, self.params, self.prover = engine, params, prove
        self.check_mode = engine.check_mode
        self.old_bindings: list[dict[str, t.Any]] | None = None

    def run(self, items: list[Item]) -> dict[str, t.Any]:
        engine, params = self.engine, self.params
        engine.prepare(workloads=any(item.patch_workloads for item in items))
        old = fleet.read_cluster(engine.azure, params, prefix="old_")
        new = fleet.read_cluster(engine.azure, params, prefix="new_")
        if old.issuer is None:
            raise refuse(f"old_issuer_url: the old issuer is not known: {old.note}; give old_issuer_url")
        if new.issuer is None:
            raise refuse(f"new_issuer_url: the new issuer is not known: {new.note} (enable it with aks_oidc)")
        errors = check_issuers(old.issuer, new.issuer)
        if errors:
            raise refuse("; ".join(errors))
        runs, _identities = engine.converge(for_new_issuer(items), issuer=new.issuer, tenant_id=params["tenant_id"])
        proofs = self._prove(runs, new.issuer)
        self._read_old_bindings(items)
        retiring = self._plan_retirement(runs, proofs, old.issuer)
        if not self.check_mode:
            self._apply_retirement(retiring)
        views = [self._view(run, proofs.get(run.item.name), old.issuer, new.issuer) for run in runs]
        stages: dict[str, int] = {}
        for view in views:
            stages[view["stage"]] = stages.get(view["stage"], 0) + 1
        failed = [v for v in views if v["failed"]]
        return {
            "changed": any(v["changed"] for v in views),
            "workloads": views,
            "summary": {
                "workloads": len(views),
                "changed": sum(1 for v in views if v["changed"] and not v["failed"]),
                "failed": len(failed),
                "stages": stages,
            },
            "old_issuer": old.issuer,
            "new_issuer": new.issuer,
            "diff": [d for d in map(fleet.workload_diff, runs) if d is not None],
            "failure": (
                f"{len(failed)} of {len(views)} workloads could not be moved to the new issuer: "
                + "; ".join(f"{v['name']} ({v['failed_step']}): {v['error']}" for v in failed)
                if failed
                else None
            ),
        }

    # -- prove
    def _prove(self, runs: list[t.Any], issuer: str) -> dict[str, dict[str, t.Any]]:
        """The new chains of the workloads that were added, proven after the writes; not in check mode (a
        TokenRequest is a write) nor with prove: false. A workload whose proof fails fails at this step."""
        live = [run for run in runs if not run.failed]
        if not live or self.check_mode or not self.params["prove"]:
            return {}
        proofs = self.prover([run.item for run in live], issuer)
        for run in live:
            proof = proofs.get(run.item.name)
            if proof is not None and not proof["passed"]:
                run.fail(PROVE, WorkloadIdentityError("; ".join(proof["problems"]), code="ProofFailed"))
        return proofs

    # -- retire
    def _read_old_bindings(self, items: list[Item]) -> None:
        """The old cluster's bindings (one list), when items use a binding and the old cluster is named."""
        if not self.params["retire_old"] or not self.params["old_cluster_name"]:
            return
        if any(item.uses_binding for item in items):
            self.old_bindings = IdentityBindings(self.engine.azure, self.engine.calls).list(
                self.params["old_cluster_resource_group"], self.params["old_cluster_name"]
            )

    def _eligible(self, run: t.Any, proofs: dict[str, dict[str, t.Any]]) -> bool:
        """Proven in this run (in check mode: would be, once proven)."""
        if run.failed:
            return False
        return self.check_mode or bool(proofs.get(run.item.name, {}).get("passed"))

    def _plan_retirement(self, runs: list[t.Any], proofs: dict[str, dict[str, t.Any]], old_issuer: str) -> list[t.Any]:
        if not self.params["retire_old"]:
            return []
        snapshot = self.engine.snapshot
        retiring = []
        by_identity: dict[tuple[str, str], list[t.Any]] = {}
        for run in runs:
            by_identity.setdefault(run.item.identity.key, []).append(run)
        for key, members in by_identity.items():
            for run in members:
                if run.item.uses_binding or not self._eligible(run, proofs):
                    continue
                plan, desired = plan_retirement(run.item, snapshot.credentials.get(key), old_issuer)
                target = f"federated credential for the old issuer on {run.item.identity.label}"
                retiring.append(run.record(RETIRE, target, plan, desired=desired, kind="credential"))
            bound = [run for run in members if run.item.uses_binding]
            if bound and self.old_bindings is not None and all(self._eligible(run, proofs) for run in bound):
                identity = snapshot.identities.get(key) or {}
                found = identity_binding.find_for_identity(self.old_bindings, identity.get("id"))
                if found is not None:
                    desired = identity_binding.DesiredIdentityBinding(
                        self.params["old_cluster_resource_group"],
                        self.params["old_cluster_name"],
                        found["name"],
                        identity.get("id"),
                        state="absent",
                    )
                    plan = identity_binding.plan(self.old_bindings, desired)
                    target = f"identity binding '{found['name']}' on the old cluster"
                    steps = [run.record(RETIRE, target, plan, desired=desired, kind="binding") for run in bound]
                    retiring.append(steps[0])
                    for copy in steps[1:]:
                        copy.context["shared_with"] = steps[0]
        return retiring

    def _apply_retirement(self, retiring: list[t.Any]) -> None:
        """One identity's deletions in order, identities in parallel (Azure refuses concurrent credential writes on
        one identity)."""

        def delete(steps: list[t.Any]) -> None:
            for step in steps:
                if step.context["kind"] == "credential":
                    federated_credential.apply(self.engine.azure, step.context["desired"], step.plan)
                else:
                    identity_binding.apply(self.engine.azure, step.context["desired"], step.plan, self.engine.calls)
                step.result = None

        by_identity: dict[t.Any, list[t.Any]] = {}
        for step in retiring:
            if step.changed:
                desired = step.context["desired"]
                key = getattr(desired, "identity_name", None) or getattr(desired, "identity_id", "")
                by_identity.setdefault(str(key).lower(), []).append(step)
        outcomes = self.engine._run_all((key, lambda s=steps: delete(s)) for key, steps in by_identity.items())
        self.failed_retirements = {key: error for key, error in outcomes.items() if error is not None}

    # -- report
    def _view(self, run: t.Any, proof: dict[str, t.Any] | None, old_issuer: str, new_issuer: str) -> dict[str, t.Any]:
        item = run.item
        credentials = self.engine.snapshot.credentials.get(item.identity.key)
        failures = getattr(self, "failed_retirements", {})
        retire = next((s for s in run.steps if s.step == RETIRE), None)
        retire_key = None
        if retire is not None:
            desired = retire.context["desired"]
            retire_key = str(getattr(desired, "identity_name", None) or getattr(desired, "identity_id", "")).lower()
        if retire_key in failures and not run.failed:
            run.fail(RETIRE, failures[retire_key])
        retired = retire is not None and retire.changed and not run.failed
        new_step = run.step(fleet.CREDENTIAL)
        new_credential = ""
        if new_step is not None:
            new_credential = (new_step.result or new_step.plan.after or new_step.plan.before or {}).get("name", "")
        old = trusted(credentials, old_issuer, item.subject)
        if run.failed:
            stage_now = FAILED
        elif item.uses_binding:
            stage_now = RETIRED if retired else (PROVEN if proof else OVERLAP)
        else:
            before = stage(credentials, old_issuer, new_issuer, item.subject)
            has_new = bool(new_credential) or before in (OVERLAP, RETIRED)
            if retired or (has_new and old is None):
                stage_now = RETIRED
            elif has_new:
                stage_now = PROVEN if proof else OVERLAP
            else:
                stage_now = NOT_STARTED
        summary = {k: proof[k] for k in ("passed", "problems")} if proof else {}
        return {
            **item.view(),
            "federation": item.federation,
            "stage": stage_now,
            "next": NEXT_STEP[stage_now],
            "new_credential": new_credential,
            "old_credential": "" if (retired or old is None) else old["name"],
            "retired": retired,
            "proof": (proof or {}).get("proof") or {"status": "skipped", "reason": self._skip_reason()},
            "problems": summary.get("problems", []),
            "changed": run.changed or retired,
            "failed": run.failed,
            "failed_step": run.failed_step,
            "error": str(run.error) if run.error else None,
            "actions": [step.view() for step in run.steps],
        }

    def _skip_reason(self) -> str:
        if self.check_mode:
            return "check mode: no token is requested"
        if not self.params["prove"]:
            return "prove is false"
        return "the workload failed before its proof"
