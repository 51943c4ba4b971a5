# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters the fleet roles use: batches of items, the input rules (the same functions the fleet modules run), and
the summaries the roles print. Documentation: fleet_batches.yml, fleet_errors.yml and fleet_summary.yml beside
this file. Pure presentation and rule lookups; no decision is made here that a module does not make too."""

from __future__ import annotations

import typing as t

from ansible.errors import AnsibleFilterError

from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import namespace
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_items import (
    batches,
    parse_items,
    validate_fleet,
)


def plain(value: t.Any) -> t.Any:
    """The value as plain dicts, lists and scalars. Ansible hands filters lazily templated containers; the rules
    deep-copy what they check, and a deep copy of a lazy container cannot template what it holds any more (a
    filter used inside it then fails to load), so everything is rendered here, once, in the filter's context."""
    if isinstance(value, t.Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def fleet_batches(items: t.Any, size: t.Any = 50) -> list[list[t.Any]]:
    """The items in batches of about ``size``, the items of one identity never split."""
    if not isinstance(items, list):
        raise AnsibleFilterError(f"fleet_batches: the input must be a list of items, got {type(items).__name__}")
    try:
        return batches(items, int(size))
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"fleet_batches: {exc}") from exc


def fleet_errors(
    items: t.Any,
    state: str = "present",
    issuer_url: str | None = None,
    tenant_id: str | None = None,
    accept_results: bool = False,
    cluster_name: str | None = None,
) -> list[str]:
    """Every input rule the fleet modules apply, over the whole list at once: the errors, or []. ``cluster_name``
    "" says no cluster is named (items using an identity binding need one); None does not check."""
    parsed, errors = parse_items(plain(items), accept_results=accept_results or state != "present")
    if errors:
        return errors
    return validate_fleet(
        parsed,
        state=state,
        issuer=issuer_url or None,
        tenant_id=tenant_id or None,
        cluster_named=cluster_name is None or bool(cluster_name),
    )


def namespace_errors(names: t.Any, field: str = "namespaces") -> list[str]:
    """The rules M(aks.workload_identity.wid_namespace) applies to a namespace it deletes, for a list of names."""
    if not isinstance(names, list):
        return [f"{field}: must be a list of namespace names"]
    errors = []
    for index, name in enumerate(names):
        desired = namespace.DesiredNamespace(name=name, state=namespace.ABSENT)
        errors += [f"{field}[{index}]: {error.split(': ', 1)[1]}" for error in namespace.validate(desired)]
    return errors


def _id_or(value: t.Any, missing: str) -> str:
    return str(value) if value else missing


def _workload_lines(result: dict[str, t.Any]) -> list[str]:
    lines = [
        f"Workload {result['name']}" + (f"  FAILED at {result['failed_step']}" if result.get("failed") else ""),
        f"  ServiceAccount  {result['namespace']}/{result['service_account']}",
        f"  identity        {result['identity_name']} (resource group {result['identity_resource_group']})",
        f"  client ID       {_id_or(result.get('client_id'), '(assigned on creation)')}",
        f"  subject         {result['subject']}",
        f"  credential      {_id_or(result.get('credential_name'), '(named when the issuer is known)')}",
    ]
    lines += [f"  grant           {g['role']} on {g['scope']}" for g in result.get("grants") or []] or [
        "  grants          none"
    ]
    if result.get("configmap"):
        lines.append(f"  ConfigMap       {result['namespace']}/{result['configmap']}")
    lines += [f"  pod template    {p['kind']}/{p['name']}" for p in result.get("patched_workloads") or []]
    changes = [f"{a['step']} {a['action']}" for a in result.get("actions") or [] if a["action"] not in ("none",)]
    if changes:
        lines.append(f"  changes         {', '.join(changes)}")
    if result.get("failed"):
        lines.append(f"  error           {result.get('error')}")
    return lines


def fleet_summary(runs: t.Any, kind: str = "workload", check_mode: bool = False, detail_limit: int = 20) -> list[str]:
    """The lines a fleet role prints: per workload up to ``detail_limit`` workloads (then only the changed and
    failed ones), and the totals. ``runs`` is the list of the module's results (one per batch) or of workloads."""
    if not isinstance(runs, list):
        raise AnsibleFilterError(f"fleet_summary: the input must be a list, got {type(runs).__name__}")
    workloads = []
    for entry in runs:
        if isinstance(entry, dict) and "workloads" in entry:
            workloads += entry.get("workloads") or []
        elif isinstance(entry, dict) and "name" in entry:
            workloads.append(entry)
    lines = ["CHECK MODE: nothing was written."] if check_mode else []
    shown = (
        workloads if len(workloads) <= detail_limit else [w for w in workloads if w.get("changed") or w.get("failed")]
    )
    if kind == "teardown":
        for result in shown:
            changes = [f"{a['step']} {a['action']}" for a in result.get("actions") or [] if a["action"] != "none"]
            status = (
                f"FAILED at {result['failed_step']}: {result.get('error')}"
                if result.get("failed")
                else (", ".join(changes) or "nothing to take down")
            )
            lines.append(f"Workload {result['name']} ({result['namespace']}/{result['service_account']}): {status}")
    elif kind == "rotation":
        for result in shown:
            status = (
                f"FAILED at {result['failed_step']}: {result.get('error')}"
                if result.get("failed")
                else f"{result['stage']}{' (old issuer retired now)' if result.get('retired') else ''}; next: "
                f"{result['next']}"
            )
            lines.append(f"Workload {result['name']} ({result['namespace']}/{result['service_account']}): {status}")
        stages: dict[str, int] = {}
        for result in workloads:
            stages[result.get("stage", "?")] = stages.get(result.get("stage", "?"), 0) + 1
        lines.append("Stages: " + ", ".join(f"{count} {stage}" for stage, count in sorted(stages.items())))
    else:
        for result in shown:
            lines += _workload_lines(result)
    changed = sum(1 for w in workloads if w.get("changed") and not w.get("failed"))
    failed = sum(1 for w in workloads if w.get("failed"))
    verb = "would change" if check_mode else "changed"
    noun = "workload" if len(workloads) == 1 else "workloads"
    lines.append(
        f"{len(workloads)} {noun}: {changed} {verb}, {len(workloads) - changed - failed} unchanged, {failed} failed"
        + (f" (details of the {len(shown)} changed or failed shown)" if len(shown) < len(workloads) else "")
    )
    return lines


def teardown_report(
    runs: t.Any,
    namespaces: t.Any = None,
    workload_identity: t.Any = None,
    resource_group: t.Any = None,
    check_mode: bool = False,
    cluster_name: str = "",
    delete_service_account: bool = True,
    cluster: t.Any = None,
    resource_group_name: str = "",
) -> dict[str, t.Any]:
    """The teardown role's ``teardown_results``: per workload and identity what went (or would), the namespaces,
    workload identity on the cluster, the resource group, and the summary lines."""
    results = [r for r in runs or [] if isinstance(r, dict)]
    workloads = [w for r in results for w in r.get("workloads") or []]
    identities = [i for r in results for i in r.get("identities") or []]
    clusters = [r["cluster"] for r in results if isinstance(r.get("cluster"), dict)]
    cluster = clusters[0] if clusters else (cluster if isinstance(cluster, dict) else {})
    namespace_results = [
        {"name": n.get("_teardown_namespace"), "deleted": bool(n.get("changed")), "contents": n.get("contents") or {}}
        for n in namespaces or []
        if isinstance(n, dict) and not n.get("skipped")
    ]
    report = {
        "workloads": [_teardown_workload(w) for w in workloads],
        "identities": identities,
        "workload_identity_disabled": bool((workload_identity or {}).get("changed")),
        # AKS cannot disable an OIDC issuer once enabled; nothing here ever tries.
        "oidc_issuer_enabled": cluster.get("oidc_issuer_enabled"),
        "cluster_exists": cluster.get("exists"),
        "resource_group_deleted": bool((resource_group or {}).get("changed")),
        "namespaces": namespace_results,
    }
    report["summary"] = _teardown_lines(report, check_mode, cluster_name, delete_service_account, cluster)
    if resource_group_name:
        gone = "would be deleted" if check_mode else "deleted"
        status = f"{gone} with everything in it" if report["resource_group_deleted"] else "already gone"
        report["summary"].append(f"Resource group {resource_group_name}: {status}")
    return report


def _teardown_workload(result: dict[str, t.Any]) -> dict[str, t.Any]:
    keys = (
        "name", "namespace", "service_account", "subject", "configmap", "federated_credential",
        "federated_credential_deleted", "service_account_removed", "configmap_removed", "grants_removed",
        "grants_kept", "pod_templates_changed", "failed", "failed_step", "error",
    )  # fmt: skip
    return {key: result.get(key) for key in keys}


def _teardown_lines(
    report: dict[str, t.Any], check_mode: bool, cluster_name: str, delete_service_account: bool, cluster: dict
) -> list[str]:
    gone = "would be deleted" if check_mode else "deleted"
    removed = "would be removed" if check_mode else "removed"
    k8s_change = gone if delete_service_account else f"identity keys {removed}"
    lines = ["CHECK MODE: nothing was deleted; this is what would go."] if check_mode else []
    if report["cluster_exists"] is False:
        lines.append(
            f"Cluster {cluster_name} does not exist any more: its Kubernetes objects went with it (Kubernetes steps "
            "skipped)."
        )
    for w in report["workloads"]:
        lines.append(
            f"Workload {w['name']} ({w['subject']})"
            + (f": FAILED at {w['failed_step']}: {w['error']}" if w["failed"] else "")
        )
        lines += [
            f"  pod template          {p['kind']}/{p['name']}: workload identity label {removed}"
            for p in w["pod_templates_changed"] or []
        ]
        lines += [f"  grant                 {g['role']} on {g['scope']}: {removed}" for g in w["grants_removed"] or []]
        lines += [
            f"  grant                 {g['role']} on {g['scope']}: kept, a staying workload of the same identity lists it"
            for g in w["grants_kept"] or []
        ]
        credential = (w["federated_credential"] or {}).get("name", "")
        lines.append(
            f"  federated credential  {credential + ': ' + gone if w['federated_credential_deleted'] else 'none left'}"
        )
        if w["configmap"]:
            lines.append(
                f"  ConfigMap             {w['namespace']}/{w['configmap']}: {k8s_change if w['configmap_removed'] else 'none left'}"
            )
        lines.append(
            f"  ServiceAccount        {w['namespace']}/{w['service_account']}: "
            f"{k8s_change if w['service_account_removed'] else 'none left'}"
        )
    for identity in report["identities"]:
        status = identity["kept_reason"] or (gone if identity["deleted"] else "already gone")
        lines.append(f"Identity {identity['name']} ({identity['resource_group']}): {status}")
        lines += [f"  key vault access      {vault}: {removed}" for vault in identity["keyvault_access_removed"]]
    if cluster.get("exists"):
        if report["workload_identity_disabled"]:
            state = "would be turned off" if check_mode else "turned off"
        else:
            state = "off" if not cluster.get("workload_identity_enabled") else "left on"
        lines.append(f"Cluster {cluster_name}: workload identity {state}")
        if cluster.get("oidc_issuer_enabled"):
            lines.append(
                f"Cluster {cluster_name}: the OIDC issuer stays on. AKS cannot turn an OIDC issuer off once it is enabled;"
            )
            lines.append("  its issuer URL keeps being published.")
    for ns in report["namespaces"]:
        if ns["deleted"]:
            contents = ns["contents"]
            count = sum(int(c.get("count") or 0) for c in contents.values())
            held = f" with {count} object(s) still in it ({', '.join(contents)})" if contents else ""
            lines.append(f"Namespace {ns['name']}: {gone}{held}")
        else:
            lines.append(f"Namespace {ns['name']}: already gone or being deleted")
    return lines


POD_KEYS = ("status", "reason", "cause", "fix", "pod_name", "injected_env", "log_excerpt", "schedulable_nodes")


def _pod_proof(pod: dict[str, t.Any] | None, requested: bool, bound: bool = False) -> dict[str, t.Any]:
    if not requested:
        return {"status": "not requested"}
    if bound:  # workloads_verify never marks these ready
        return {
            "status": "skipped",
            "reason": "the docs' verification pod does not use identity bindings (no proxy-aware client)",
        }
    if pod is None or pod.get("skipped"):
        return {"status": "skipped", "reason": "the token proof did not get that far (see proof)"}
    if "status" not in pod:
        return {"status": "error", "reason": pod.get("msg") or "unknown error"}
    return {key: pod[key] for key in POD_KEYS if key in pod}


def verify_report(
    runs: t.Any, pods: t.Any = None, pod_proof: bool = False, check_mode: bool = False, cluster_name: str = ""
) -> dict[str, t.Any]:
    """The verify role's ``verify_results`` (with the docs' pod's outcome merged in), ``verify_passed``, the summary
    lines and the failure message."""
    batches = [r for r in runs or [] if isinstance(r, dict)]
    pods_by_name = {
        p["_verify_workload"]["name"]: p
        for p in pods or []
        if isinstance(p, dict) and isinstance(p.get("_verify_workload"), dict)
    }
    results = []
    for batch in batches:
        for workload in batch.get("workloads") or []:
            bound = workload.get("federation") == "identity_binding"
            pod = _pod_proof(pods_by_name.get(workload["name"]), pod_proof, bound)
            problems = list(workload["problems"])
            if pod["status"] == "failed":
                problems.append(f"the verification pod failed: {pod.get('cause')} Fix: {pod.get('fix')}")
            elif pod["status"] == "error":
                problems.append(f"the verification pod could not run: {pod['reason']}")
            results.append({**workload, "pod_proof": pod, "problems": problems, "passed": not problems})
    errors = [b.get("msg") for b in batches if b.get("failed")]
    clusters = [b["cluster"] for b in batches if isinstance(b.get("cluster"), dict)]
    cluster = clusters[0] if clusters else {}
    cluster_problems = list(dict.fromkeys(p for b in batches for p in b.get("cluster_problems") or []))
    cluster_problems += [f"the verification could not run: {e}" for e in errors]
    passed = not cluster_problems and all(r["passed"] for r in results)
    return {
        "results": results,
        "passed": passed,
        "cluster_problems": cluster_problems,
        "summary": _verify_lines(results, cluster, cluster_problems, check_mode, cluster_name),
        "failure": _verify_failure(results, cluster_problems, cluster_name),
    }


def _verify_lines(
    results: list[dict], cluster: dict, cluster_problems: list[str], check_mode: bool, cluster_name: str
) -> list[str]:
    lines = []
    if check_mode:
        lines.append(
            "CHECK MODE: the same reads as a real run; findings may only mean that earlier roles did not make their changes."
        )
    if cluster.get("exists"):
        oidc = "on" if cluster.get("oidc_issuer_enabled") else "OFF"
        wi = "on" if cluster.get("workload_identity_enabled") else "OFF"
        lines.append(f"Cluster {cluster_name}: OIDC issuer {oidc}, workload identity {wi}")
    issuers = sorted({r["issuer"] for r in results if r.get("issuer")})
    lines.append(f"Issuer: {issuers[0] if len(issuers) == 1 else '(each workload its own)'}")
    lines += [f"  FAIL  {problem}" for problem in cluster_problems]
    lines.append(f"{'Workload':<24} {'ServiceAccount':<36} {'Identity':<28} Result")
    for r in results:
        account = f"{r['namespace']}/{r['service_account']}"
        lines.append(f"{r['name']:<24} {account:<36} {r['identity_name']:<28} {'PASS' if r['passed'] else 'FAIL'}")
        bound = r.get("federation") == "identity_binding"
        if bound:  # in place of a federated credential of its own
            issuer = f", issuer {r['binding_issuer_url']}" if r.get("binding_issuer_url") else ""
            lines.append(
                f"  identity binding {r.get('identity_binding_name')} (AKS's credential aks-identity-binding{issuer})"
            )
        proof = r["proof"]
        if proof["status"] in ("passed", "failed"):
            lines.append("  proof: " + ", ".join(f"{s['name']} {s['status']}" for s in proof["steps"]))
            exchange = next((s for s in proof["steps"] if s["name"] == "exchange"), {})
            if bound and exchange.get("status") == "skipped" and not check_mode:
                lines.append(f"  exchange skipped: {exchange.get('detail')}")
            if proof.get("progress"):
                lines.append(f"  waited for propagation: {len(proof['progress'])} retries ({proof['progress'][-1]})")
            if (proof.get("webhook") or {}).get("status") == "skipped":
                lines.append(f"  webhook check skipped: {proof['webhook'].get('reason')}")
        elif proof["status"] == "skipped":
            lines.append(f"  proof skipped: {proof['reason']}")
        pod = r["pod_proof"]
        if pod["status"] == "passed":
            lines.append(
                f"  verification pod {pod.get('pod_name')}: read the secret ({', '.join(pod.get('injected_env') or [])} injected)"
            )
        elif pod["status"] == "skipped":
            lines.append(f"  verification pod skipped: {pod.get('reason')}")
        lines += [f"  - {problem}" for problem in r["problems"]]
    passed = sum(1 for r in results if r["passed"])
    lines.append(
        f"{passed} of {len(results)} workloads passed" + ("; the cluster failed." if cluster_problems else ".")
    )
    return lines


def _verify_failure(results: list[dict], cluster_problems: list[str], cluster_name: str) -> str:
    parts = ["Workload identity verification failed."]
    parts += [f"Cluster {cluster_name}: {problem}." for problem in cluster_problems]
    parts += [
        f"Workload {r['name']} ({r['namespace']}/{r['service_account']}): {'; '.join(r['problems'])}."
        for r in results
        if not r["passed"]
    ]
    return " ".join(parts)


class FilterModule:
    def filters(self) -> dict[str, t.Callable[..., t.Any]]:
        return {
            "fleet_batches": fleet_batches,
            "fleet_errors": fleet_errors,
            "fleet_summary": fleet_summary,
            "namespace_errors": namespace_errors,
            "teardown_report": teardown_report,
            "verify_report": verify_report,
        }
