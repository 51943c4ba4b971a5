"""The trust_map_mermaid and trust_map_markdown filters: the diagram's syntax holds whatever the names, nodes
with findings are highlighted, and the Markdown tables cannot be broken by a name."""

from __future__ import annotations

import html
import re

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.aks.workload_identity.plugins.filter import trust_map as filters
from ansible_collections.aks.workload_identity.plugins.module_utils.trust_map import build_trust_map

ISSUER = "https://oidc.example.test/tenant/cluster/"
NODE = r"n[0-9a-f]{12}"
LABEL = r'"((?:[A-Za-z0-9 ._/:@,=+-]|#\d+;|<br/>)*)"'
LINE_GRAMMAR = [
    re.compile(r"^flowchart LR$"),
    re.compile(r"^  classDef (error|warning|info) [a-z0-9:#,;-]+$"),
    re.compile(rf"^  subgraph (kubernetes|azure|issuers|other)\[{LABEL}\]$"),
    re.compile(rf"^    {NODE}(\[{LABEL}\]|\({LABEL}\)|\{{\{{{LABEL}\}}\}})$"),
    re.compile(r"^  end$"),
    re.compile(rf"^  {NODE} -->(\|{LABEL}\|)? {NODE}$"),
    re.compile(rf"^  class {NODE}(,{NODE})* (error|warning|info)$"),
]
AWKWARD = 'we"ird [name] {x} (y) <b>end</b> %% --> |pipe| #1; end'


def check_mermaid_syntax(text: str) -> list[str]:
    """Every line matches the small Mermaid grammar this filter emits; returns the decoded labels."""
    assert text.endswith("\n")
    labels = []
    for line in text.rstrip("\n").split("\n"):
        match = next((g.fullmatch(line) for g in LINE_GRAMMAR if g.fullmatch(line)), None)
        assert match is not None, f"not valid Mermaid for this filter: {line!r}"
        labels += [html.unescape(re.sub(r"#(\d+);", r"&#\1;", m)) for m in re.findall(LABEL, line)]
    return labels


def result_with(identity_name="id-orders", credential_name="fic-orders", role="Reader", issuer=ISSUER):
    inventory = {
        "clusters": [{"resource_group": "rg", "name": "aks", "issuer_url": ISSUER}],
        "cluster_issuer": ISSUER,
        "identities": [
            {
                "id": "/subscriptions/s/resourcegroups/rg/providers/x/" + identity_name,
                "name": identity_name,
                "resource_group": "rg",
                "client_id": "9bb715b3-e30d-4143-b4ab-e6d3603d9864",
                "principal_id": "p1",
                "credentials": [
                    {
                        "name": credential_name,
                        "issuer": issuer,
                        "subject": "system:serviceaccount:orders:api",
                        "audiences": ["api://AzureADTokenExchange"],
                    },
                    {
                        "name": "gone",
                        "issuer": ISSUER,
                        "subject": "system:serviceaccount:orders:gone",
                        "audiences": ["api://AzureADTokenExchange"],
                    },
                ],
            }
        ],
        "role_assignments": [
            {
                "scope": "/subscriptions/s/resourceGroups/rg",
                "role_definition_id": "r",
                "role_name": role,
                "principal_id": "p1",
            }
        ],
        "service_accounts": [
            {
                "metadata": {
                    "namespace": "orders",
                    "name": "api",
                    "annotations": {"azure.workload.identity/client-id": "9bb715b3-e30d-4143-b4ab-e6d3603d9864"},
                }
            }
        ],
        "workloads": [
            {
                "kind": "Deployment",
                "document": {
                    "metadata": {"namespace": "orders", "name": "api"},
                    "spec": {"template": {"metadata": {"labels": {}}, "spec": {"serviceAccountName": "api"}}},
                },
            }
        ],
        "pods": [],
    }
    result = build_trust_map(inventory)
    result["clusters"] = inventory["clusters"]
    result["api_calls"] = {"kubernetes.pods.list": 1}
    return result


def test_diagram_links_the_chain_and_highlights_findings():
    result = result_with()
    text = filters.trust_map_mermaid(result)
    labels = check_mermaid_syntax(text)
    assert "ServiceAccount<br/>orders/api" in labels
    deployment = filters.node_id("Deployment/orders/api")
    account = filters.node_id("ServiceAccount/orders/api")
    identity = filters.node_id("UserAssignedIdentity/rg/id-orders")
    credential = filters.node_id("FederatedIdentityCredential/rg/id-orders/fic-orders")
    orphan = filters.node_id("FederatedIdentityCredential/rg/id-orders/gone")
    issuer = filters.node_id(f"Issuer/{ISSUER}")
    for edge in (
        f'{deployment} -->|"runs as"| {account}',
        f'{account} -->|"client ID"| {identity}',
        f'{identity} -->|"federated"| {credential}',
        f'{credential} -->|"trusts"| {issuer}',
    ):
        assert f"  {edge}\n" in text
    # The unlabelled Deployment is an error, the orphaned credential a warning.
    assert f"  class {deployment} error\n" in text
    assert f"  class {orphan} warning\n" in text
    assert account not in re.findall(r"^  class (.*) ", text, re.MULTILINE)[0]


@pytest.mark.parametrize("field", ["identity_name", "credential_name", "role", "issuer"])
def test_awkward_names_do_not_break_the_diagram(field):
    value = AWKWARD if field != "issuer" else ISSUER + AWKWARD
    result = result_with(**{field: value})
    labels = check_mermaid_syntax(filters.trust_map_mermaid(result))
    assert any(value in label.split("<br/>") for label in labels), labels


def test_mermaid_text_escapes_everything_but_plain_characters():
    assert filters.mermaid_text('a"b') == "a#34;b"
    assert filters.mermaid_text("%%") == "#37;#37;"
    assert filters.mermaid_text("x\ny") == "x#10;y"
    assert filters.mermaid_text("ok-1.2/x:y@z") == "ok-1.2/x:y@z"


def test_findings_about_objects_outside_the_map_get_their_own_node():
    result = result_with()
    result["findings"].append(
        {
            "severity": "warning",
            "code": "pod-identity-leftover",
            "subject": "AzureIdentity/ns/legacy",
            "message": "m",
            "fix": "f",
        }
    )
    text = filters.trust_map_mermaid(result)
    check_mermaid_syntax(text)
    assert 'subgraph other["Other objects with findings"]' in text
    assert filters.node_id("AzureIdentity/ns/legacy") in text


def test_markdown_report():
    result = result_with(role="Role | with <html> & pipes")
    text = filters.trust_map_markdown(result, title="Audit of aks")
    assert text.startswith("# Audit of aks\n")
    assert "```mermaid\nflowchart LR\n" in text
    assert "| ERROR | workload-label-missing | Deployment/orders/api |" in text
    assert "Role \\| with &lt;html&gt; &amp; pipes on /subscriptions/s/resourceGroups/rg" in text
    # Every table row has as many cells as its header.
    for block in re.findall(r"((?:^\|.*\|\n)+)", text, re.MULTILINE):
        rows = block.strip("\n").split("\n")
        widths = {len(re.split(r"(?<!\\)\|", row)) for row in rows}
        assert len(widths) == 1, block
    assert filters.trust_map_markdown(result, title="Audit of aks") == text


def test_markdown_of_a_clean_result():
    result = build_trust_map({})
    text = filters.trust_map_markdown(result)
    assert "## Findings\n\nNone.\n" in text
    check_mermaid_syntax(filters.trust_map_mermaid(result))


def test_filters_reject_other_input():
    with pytest.raises(AnsibleFilterError, match="wid_info"):
        filters.trust_map_markdown({"findings": []})
    assert set(filters.FilterModule().filters()) == {"trust_map_mermaid", "trust_map_markdown"}


CLIENT_ID = "9bb715b3-e30d-4143-b4ab-e6d3603d9864"
BINDING_ISSUER = f"https://oidc.example.test/tenant/{CLIENT_ID}"
ANNOTATION = "azure.workload.identity/client-id"


def result_with_binding(binding_name="idorders"):
    """result_with() plus orders/batch using the identity through its binding (RBAC grant, opted-in Deployment)."""
    result = result_with()
    inventory = {
        "clusters": result["clusters"],
        "cluster_issuer": ISSUER,
        "identities": [
            {
                "id": "/subscriptions/s/resourcegroups/rg/providers/x/id-orders",
                "name": "id-orders",
                "resource_group": "rg",
                "client_id": CLIENT_ID,
                "principal_id": "p1",
                "credentials": [
                    {"name": "aks-identity-binding", "issuer": BINDING_ISSUER, "subject": CLIENT_ID, "audiences": []}
                ],
            }
        ],
        "service_accounts": [
            {"metadata": {"namespace": "orders", "name": "batch", "annotations": {ANNOTATION: CLIENT_ID}}}
        ],
        "workloads": [
            {
                "kind": "Deployment",
                "document": {
                    "metadata": {"namespace": "orders", "name": "batch"},
                    "spec": {
                        "template": {
                            "metadata": {
                                "labels": {"azure.workload.identity/use": "true"},
                                "annotations": {"azure.workload.identity/use-identity-binding": "true"},
                            },
                            "spec": {"serviceAccountName": "batch"},
                        }
                    },
                },
            }
        ],
        "identity_bindings": [
            {
                "name": binding_name,
                "identity_id": "/subscriptions/s/resourcegroups/rg/providers/x/id-orders",
                "client_id": CLIENT_ID,
                "issuer_url": BINDING_ISSUER,
                "provisioning_state": "Succeeded",
                "cluster_resource_group": "rg",
                "cluster_name": "aks",
            }
        ],
        "cluster_roles": [
            {
                "name": "mine",
                "rules": [
                    {
                        "api_groups": ["cid.wi.aks.azure.com"],
                        "resources": [CLIENT_ID],
                        "verbs": ["use-managed-identity"],
                    }
                ],
            }
        ],
        "cluster_role_bindings": [
            {
                "name": "mine",
                "role_ref": {"kind": "ClusterRole", "name": "mine"},
                "subjects": [{"kind": "Group", "name": "system:serviceaccounts:orders"}],
            }
        ],
    }
    bound = build_trust_map(inventory)
    bound["clusters"] = inventory["clusters"]
    return bound


def test_diagram_shows_the_binding_path():
    result = result_with_binding()
    assert result["findings"] == []
    text = filters.trust_map_mermaid(result)
    labels = check_mermaid_syntax(text)
    assert "Identity binding<br/>idorders<br/>cluster rg/aks" in labels
    deployment = filters.node_id("Deployment/orders/batch")
    account = filters.node_id("ServiceAccount/orders/batch")
    identity = filters.node_id("UserAssignedIdentity/rg/id-orders")
    binding = filters.node_id("IdentityBinding/rg/aks/idorders")
    credential = filters.node_id("FederatedIdentityCredential/rg/id-orders/aks-identity-binding")
    issuer = filters.node_id(f"Issuer/{BINDING_ISSUER}")
    for edge in (
        f'{deployment} -->|"runs as"| {account}',
        f'{account} -->|"client ID"| {identity}',
        f'{identity} -->|"bound"| {binding}',
        f'{binding} -->|"issuer"| {issuer}',
        f'{account} -->|"RBAC: may use"| {binding}',
        f'{identity} -->|"federated"| {credential}',
        f'{credential} -->|"trusts"| {issuer}',
    ):
        assert f"  {edge}\n" in text, edge
    assert "(uses the identity binding)" in " ".join(labels)


def test_awkward_binding_names_do_not_break_the_diagram():
    labels = check_mermaid_syntax(filters.trust_map_mermaid(result_with_binding(AWKWARD)))
    assert any(AWKWARD in label.split("<br/>") for label in labels)


def test_markdown_report_shows_bindings():
    result = result_with_binding("idorders | <b>")
    text = filters.trust_map_markdown(result)
    assert "and 1 identity bindings." in text
    assert "## Identity bindings\n" in text
    assert (
        f"| rg/aks | idorders \\| &lt;b&gt; | id-orders ({CLIENT_ID}) | {BINDING_ISSUER} | Succeeded | "
        "Group/system:serviceaccounts:orders (mine) |"
    ) in text
    row = next(line for line in text.splitlines() if line.startswith("| orders/batch"))
    assert "| identity_binding |" in row and "RBAC: mine (Group/system:serviceaccounts:orders)" in row
    assert "Deployment batch (identity binding)" in row
    for block in re.findall(r"((?:^\|.*\|\n)+)", text, re.MULTILINE):
        rows = block.strip("\n").split("\n")
        assert len({len(re.split(r"(?<!\\)\|", r)) for r in rows}) == 1, block
