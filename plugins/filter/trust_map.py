# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters that render a wid_info result: trust_map_mermaid (a Mermaid flowchart) and trust_map_markdown (a
report with that diagram, the findings and the ownership map). Documentation: trust_map_mermaid.yml and
trust_map_markdown.yml beside this file."""

from __future__ import annotations

import hashlib
import re
import typing as t

from ansible.errors import AnsibleFilterError

SEVERITY_ORDER = ("error", "warning", "info")
# Mermaid classes of nodes with findings: the worst severity wins.
CLASS_DEFINITIONS = {
    "error": "fill:#fde0dc,stroke:#c62828,stroke-width:3px,color:#000",
    "warning": "fill:#fff1c2,stroke:#b26a00,stroke-width:3px,color:#000",
    "info": "fill:#e3f2fd,stroke:#1565c0,stroke-width:1px,color:#000",
}
# Characters left as they are in Mermaid labels; every other one becomes an entity code (#<decimal>;), which
# Mermaid documents for quotes and any character (mermaid.js.org/syntax/flowchart.html, "Entity codes to escape
# characters"), so no name can close a label, start a comment (%%), or be read as markup or a keyword.
_MERMAID_SAFE = re.compile(r"[A-Za-z0-9 ._/:@,=+-]")
_SUBJECT_PREFIX = "system:serviceaccount:"
BINDING_CREDENTIAL_NAME = "aks-identity-binding"  # workload_identity.IDENTITY_BINDING_CREDENTIAL_NAME


def mermaid_text(value: t.Any) -> str:
    """``value`` as text that is safe inside a double-quoted Mermaid label."""
    return "".join(c if _MERMAID_SAFE.fullmatch(c) else f"#{ord(c)};" for c in str(value))


def node_id(subject: str) -> str:
    """A Mermaid node id from a subject: letters and digits only, never a keyword such as ``end``."""
    return "n" + hashlib.sha256(subject.encode("utf-8")).hexdigest()[:12]


class _Diagram:
    def __init__(self, findings: list[dict[str, t.Any]]) -> None:
        self.severity: dict[str, str] = {}
        for item in findings:
            current = self.severity.get(item["subject"])
            if current is None or SEVERITY_ORDER.index(item["severity"]) < SEVERITY_ORDER.index(current):
                self.severity[item["subject"]] = item["severity"]
        self.nodes: dict[str, tuple[str, str]] = {}  # subject -> (group, node line)
        self.edges: list[str] = []

    def node(self, subject: str, group: str, *lines: t.Any, shape: str = "box") -> str:
        ident = node_id(subject)
        if subject not in self.nodes:
            label = "<br/>".join(mermaid_text(line) for line in lines if line not in (None, ""))
            opening, closing = {"box": ('["', '"]'), "round": ('("', '")'), "hexagon": ('{{"', '"}}')}[shape]
            self.nodes[subject] = (group, f"{ident}{opening}{label}{closing}")
        return ident

    def edge(self, source: str, target: str, label: str | None = None) -> None:
        line = f'{source} -->|"{mermaid_text(label)}"| {target}' if label else f"{source} --> {target}"
        if line not in self.edges:
            self.edges.append(line)

    def render(self) -> str:
        out = ["flowchart LR"]
        out += [f"  classDef {name} {style}" for name, style in CLASS_DEFINITIONS.items()]
        titles = {
            "kubernetes": "Kubernetes",
            "azure": "Microsoft Entra ID and Azure",
            "issuers": "OIDC issuers",
            "other": "Other objects with findings",
        }
        for group, title in titles.items():
            members = [line for g, line in self.nodes.values() if g == group]
            if not members:
                continue
            out.append(f'  subgraph {group}["{mermaid_text(title)}"]')
            out += [f"    {line}" for line in members]
            out.append("  end")
        out += [f"  {line}" for line in self.edges]
        for severity in SEVERITY_ORDER:
            flagged = sorted(node_id(s) for s, v in self.severity.items() if v == severity and s in self.nodes)
            if flagged:
                out.append(f"  class {','.join(flagged)} {severity}")
        return "\n".join(out) + "\n"


def _require_result(result: t.Any, name: str) -> dict[str, t.Any]:
    if not isinstance(result, dict) or not isinstance(result.get("map"), list):
        raise AnsibleFilterError(f"{name}: expects the result of aks.workload_identity.wid_info (a dict with 'map')")
    return result


def _short_scope(scope: str) -> str:
    """The last "type/name" pair of an ARM scope (resourceGroups/rg-apps, vaults/kv-apps), to keep nodes small."""
    parts = [p for p in str(scope).split("/") if p]
    return "/".join(parts[-2:]) if len(parts) > 2 else str(scope)


def _binding_subject(binding: t.Mapping[str, t.Any]) -> str:
    return (
        f"IdentityBinding/{binding.get('cluster_resource_group')}/{binding.get('cluster_name')}/{binding.get('name')}"
    )


def _draw_bindings(diagram: _Diagram, entry: t.Mapping[str, t.Any], account: str, identity: str) -> None:
    """The identity's binding to this cluster (-> its issuer), and the ServiceAccount's RBAC grant to use it."""
    for binding in entry.get("bindings") or []:
        node = diagram.node(
            _binding_subject(binding),
            "azure",
            "Identity binding",
            binding.get("name"),
            f"cluster {binding.get('cluster_resource_group')}/{binding.get('cluster_name')}",
        )
        diagram.edge(identity, node, "bound")
        if binding.get("issuer_url"):
            issuer = diagram.node(
                f"Issuer/{binding['issuer_url']}", "issuers", "binding issuer", binding["issuer_url"], shape="hexagon"
            )
            diagram.edge(node, issuer, "issuer")
        if entry.get("rbac_grants"):
            diagram.edge(account, node, "RBAC: may use")


def _draw_binding_credentials(diagram: _Diagram, identities: list[dict[str, t.Any]]) -> None:
    """AKS's aks-identity-binding credential of each drawn identity with a binding, trusting the binding issuer."""
    for identity in identities:
        subject = f"UserAssignedIdentity/{identity.get('resource_group')}/{identity.get('name')}"
        if subject not in diagram.nodes or not identity.get("bindings"):
            continue
        for credential in identity.get("credentials") or []:
            if credential.get("name") != BINDING_CREDENTIAL_NAME:
                continue
            node = diagram.node(
                f"FederatedIdentityCredential/{identity.get('resource_group')}/{identity.get('name')}/"
                f"{credential['name']}",
                "azure",
                "Federated credential (AKS)",
                credential["name"],
            )
            diagram.edge(node_id(subject), node, "federated")
            issuer = diagram.node(
                f"Issuer/{credential.get('issuer')}",
                "issuers",
                "binding issuer",
                credential.get("issuer"),
                shape="hexagon",
            )
            diagram.edge(node, issuer, "trusts")


def trust_map_mermaid(result: t.Any) -> str:
    """A Mermaid flowchart: workloads -> ServiceAccounts -> identities -> credentials and identity bindings ->
    issuers, and grants."""
    result = _require_result(result, "trust_map_mermaid")
    findings = list(result.get("findings") or [])
    diagram = _Diagram(findings)
    issuer_names = {
        c.get("issuer_url"): f"cluster {c.get('resource_group')}/{c.get('name')}" for c in result.get("clusters") or []
    }
    for entry in result["map"]:
        namespace, name = entry["namespace"], entry["service_account"]
        account_subject = f"ServiceAccount/{namespace}/{name}"
        account = diagram.node(
            account_subject,
            "kubernetes",
            "ServiceAccount",
            f"{namespace}/{name}",
            None if entry.get("service_account_exists", True) else "(does not exist)",
        )
        for workload in entry.get("workloads") or []:
            workload_subject = f"{workload['kind']}/{namespace}/{workload['name']}"
            source = diagram.node(
                workload_subject,
                "kubernetes",
                workload["kind"],
                f"{namespace}/{workload['name']}",
                None if workload.get("labelled") else "(no azure.workload.identity/use label)",
                "(uses the identity binding)" if workload.get("identity_binding") else None,
                shape="round",
            )
            diagram.edge(source, account, "runs as")
        for pod in entry.get("pods") or []:
            if pod.get("stale"):
                source = diagram.node(
                    f"Pod/{namespace}/{pod['name']}",
                    "kubernetes",
                    "Pod",
                    f"{namespace}/{pod['name']}",
                    "(stale client ID)",
                    shape="round",
                )
                diagram.edge(source, account, "runs as")
        identity = entry.get("identity")
        if identity:
            identity_subject = f"UserAssignedIdentity/{identity['resource_group']}/{identity['name']}"
            target = diagram.node(
                identity_subject,
                "azure",
                "Managed identity",
                identity["name"],
                f"client ID {identity.get('client_id')}",
            )
        else:
            target = diagram.node(
                f"ClientId/{entry.get('client_id')}",
                "azure",
                "No identity found",
                f"client ID {entry.get('client_id')}",
            )
        diagram.edge(account, target, "client ID" if entry.get("annotated") else "trusted by")
        for credential in entry.get("credentials") or []:
            if not identity:
                continue
            credential_subject = (
                f"FederatedIdentityCredential/{identity['resource_group']}/{identity['name']}/{credential['name']}"
            )
            node = diagram.node(
                credential_subject, "azure", "Federated credential", credential["name"], credential.get("subject")
            )
            diagram.edge(target, node, "federated")
            issuer = credential.get("issuer")
            status = credential.get("issuer_status")
            if status == "issuer-near-miss":
                owner = f"near miss of the issuer of {credential.get('issuer_owner') or 'a known cluster'}"
            elif status == "issuer-unknown":
                owner = "unknown issuer"
            else:
                owner = issuer_names.get(issuer) or credential.get("issuer_owner") or "issuer"
            issuer_node = diagram.node(f"Issuer/{issuer}", "issuers", owner, issuer, shape="hexagon")
            diagram.edge(node, issuer_node, "trusts")
        if identity:
            _draw_bindings(diagram, entry, account, target)
        for grant in entry.get("grants") or []:
            if not identity:
                continue
            grant_subject = f"Grant/{identity['name']}/{grant.get('role')}/{grant.get('scope')}"
            node = diagram.node(
                grant_subject, "azure", grant.get("role"), _short_scope(grant.get("scope") or ""), shape="round"
            )
            diagram.edge(target, node, "role")
    _draw_binding_credentials(diagram, list(result.get("identities") or []))
    for item in findings:
        if item["subject"] not in diagram.nodes:
            kind, _sep, rest = item["subject"].partition("/")
            diagram.node(item["subject"], "other", kind, rest)
    return diagram.render()


# --- Markdown ---------------------------------------------------------------------------------------------------
def markdown_cell(value: t.Any) -> str:
    """Text that stays inside one Markdown table cell and shows as written (no HTML, no pipes, no line breaks)."""
    text = "" if value is None else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _cell(value: t.Any) -> str:
    """A cell; a list becomes one line per item."""
    if isinstance(value, list):
        return "<br>".join(markdown_cell(item) for item in value) or "-"
    return markdown_cell(value)


def _table(header: list[str], rows: list[list[t.Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return lines


def trust_map_markdown(result: t.Any, title: str = "Microsoft Entra Workload ID audit") -> str:
    """A Markdown report: summary, the Mermaid trust map, findings, ownership map, migration, request counts."""
    result = _require_result(result, "trust_map_markdown")
    summary = result.get("summary") or {}
    findings = list(result.get("findings") or [])
    out = [f"# {markdown_cell(title)}", ""]
    out.append(
        f"**{summary.get('errors', 0)} errors, {summary.get('warnings', 0)} warnings, {summary.get('info', 0)} notes** "
        f"on {summary.get('service_accounts', 0)} ServiceAccounts, {summary.get('identities', 0)} identities, "
        f"{summary.get('credentials', 0)} federated credentials, {summary.get('workloads', 0)} workloads"
        + (
            f" and {summary['identity_bindings']} identity bindings."
            if summary.get("identity_bindings") is not None
            else "."
        )
    )
    out.append("")
    issuers = [
        [f"cluster {c.get('resource_group')}/{c.get('name')}", c.get("issuer_url") or "(OIDC issuer off)"]
        for c in result.get("clusters") or []
    ]
    if result.get("cluster_issuer"):
        issuers.append(["this cluster's API server", result["cluster_issuer"]])
    if issuers:
        out += ["## Issuers", "", *_table(["Whose", "Issuer URL"], issuers), ""]
    out += [
        "## Trust map",
        "",
        "Workloads run as ServiceAccounts, whose client ID names a managed identity, whose federated credentials "
        "trust an issuer; an identity's binding to the cluster serves the ServiceAccounts RBAC lets use it; the "
        "identity's role grants hang off it. Red: errors, amber: warnings.",
        "",
        "```mermaid",
        trust_map_mermaid(result).rstrip("\n"),
        "```",
        "",
        "## Findings",
        "",
    ]
    if findings:
        out += _table(
            ["Severity", "Code", "Subject", "Problem", "Fix"],
            [[f["severity"].upper(), f["code"], f["subject"], f["message"], f["fix"]] for f in findings],
        )
    else:
        out.append("None.")
    out += ["", "## Ownership map", ""]
    rows = []
    for entry in result["map"]:
        identity = entry.get("identity") or {}
        rows.append(
            [
                f"{entry['namespace']}/{entry['service_account']}"
                + ("" if entry.get("service_account_exists", True) else " (missing)"),
                f"{identity.get('name') or '(none)'} ({entry.get('client_id')})",
                [f"{c['name']}: {c['issuer']} ({c['issuer_status']})" for c in entry.get("credentials") or []],
                [
                    f"{b['name']} on {b['cluster_resource_group']}/{b['cluster_name']}: {b['issuer_url']}"
                    for b in entry.get("bindings") or []
                ]
                + [f"RBAC: {g['cluster_role_binding']} ({g['subject']})" for g in entry.get("rbac_grants") or []],
                entry.get("via") or "-",
                [f"{g.get('role')} on {g.get('scope')}" for g in entry.get("grants") or []],
                ", ".join(
                    f"{w['kind']} {w['name']}"
                    + ("" if w.get("labelled") else " (unlabelled)")
                    + (" (identity binding)" if w.get("identity_binding") else "")
                    for w in entry.get("workloads") or []
                )
                or "-",
            ]
        )
    header = ["ServiceAccount", "Identity (client ID)", "Federated credentials", "Identity binding", "Reached by"]
    out += _table([*header, "Grants", "Workloads"], rows) if rows else ["None."]
    out += _bindings_section(result)
    migrations = result.get("pod_identity_migration") or []
    if migrations:
        out += ["", "## aad-pod-identity to migrate", ""]
        out += _table(
            ["Binding", "Selector", "Client ID", "Identity", "Workloads (ServiceAccount)"],
            [
                [
                    m.get("binding"),
                    m.get("selector"),
                    m.get("client_id"),
                    m.get("resource_id"),
                    ", ".join(
                        f"{w['kind']} {w['namespace']}/{w['name']} ({w['service_account']})"
                        for w in m.get("workloads") or []
                    )
                    or "-",
                ]
                for m in migrations
            ],
        )
    calls = result.get("api_calls") or {}
    if calls:
        out += ["", "## API requests", "", *_table(["Operation", "Requests"], sorted(calls.items()))]
    return "\n".join(out) + "\n"


def _bindings_section(result: t.Mapping[str, t.Any]) -> list[str]:
    """The clusters' identity bindings, each with the ServiceAccounts RBAC lets use its identity."""
    bindings = result.get("identity_bindings") or []
    if not bindings:
        return []
    grants: dict[str, list[str]] = {}
    for grant in result.get("rbac_grants") or []:
        grants.setdefault(str(grant.get("client_id")), []).extend(
            f"{subject} ({grant.get('cluster_role_binding')})" for subject in grant.get("subjects") or []
        )
    rows = [
        [
            f"{b.get('cluster_resource_group')}/{b.get('cluster_name')}",
            b.get("name"),
            f"{b.get('identity') or '(not audited)'} ({b.get('client_id')})",
            b.get("issuer_url"),
            b.get("provisioning_state"),
            grants.get(str(b.get("client_id") or "").lower(), []),
        ]
        for b in bindings
    ]
    header = ["Cluster", "Binding", "Identity (client ID)", "Issuer", "State", "May use it (RBAC)"]
    return ["", "## Identity bindings", "", *_table(header, rows)]


class FilterModule:
    def filters(self) -> dict[str, t.Callable[..., t.Any]]:
        return {"trust_map_mermaid": trust_map_mermaid, "trust_map_markdown": trust_map_markdown}
