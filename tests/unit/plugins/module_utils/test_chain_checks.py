"""chain_checks.py: the agreement checks of a workload's chain, over plain dicts as the gateways return them."""

from __future__ import annotations

import pytest

from ansible_collections.aks.workload_identity.plugins.module_utils import chain_checks
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.role_assignment import Role
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    DEFAULT_AUDIENCE,
    ROLE_READER,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_items import parse_items

ISSUER = "https://westeurope.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0328c7fa-e740-4752-af1c-182a774aacc7/"
SCOPE = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg1"
CLIENT = "9bb715b3-e30d-4143-b4ab-e6d3603d9864"
PRINCIPAL = "7d37609c-3670-4ef6-b9ec-5f228a12ebde"
IDENTITY = {"name": "id-orders", "client_id": CLIENT, "principal_id": PRINCIPAL}
LABEL = "managed identity id-orders (resource group rg-apps)"


def item(**overrides):
    raw = {
        "name": "orders",
        "namespace": "orders",
        "service_account": "orders-api",
        "identity_name": "id-orders",
        "identity_resource_group": "rg-apps",
        "grants": [{"role": "Reader", "scope": SCOPE}],
        **overrides,
    }
    (parsed,), errors = parse_items([raw], accept_results=True)
    assert errors == []
    return parsed


def credential(name="fic", issuer=ISSUER, subject="system:serviceaccount:orders:orders-api", audiences=None):
    return {"name": name, "issuer": issuer, "subject": subject, "audiences": audiences or [DEFAULT_AUDIENCE]}


def test_a_missing_or_re_created_identity():
    assert chain_checks.identity_problems(item(), None) == [f"{LABEL} does not exist"]
    assert chain_checks.identity_problems(item(), None, "Forbidden") == [f"cannot read {LABEL}: Forbidden"]
    recreated = chain_checks.identity_problems(item(client_id="00000000-0000-4000-8000-000000000001"), IDENTITY)
    assert recreated[0].startswith(f"{LABEL} has client ID {CLIENT}, but the workload was set up with 0000")
    assert chain_checks.identity_problems(item(client_id=CLIENT.upper()), IDENTITY) == []


def test_the_annotation_must_name_the_identitys_client_id():
    good = {"client_id": CLIENT.upper()}  # Entra compares GUIDs without case
    assert chain_checks.service_account_problems(item(), good, IDENTITY) == []
    assert chain_checks.service_account_problems(item(), None, IDENTITY) == [
        "ServiceAccount orders/orders-api does not exist"
    ]
    assert chain_checks.service_account_problems(item(), {"client_id": None}, IDENTITY) == [
        f"ServiceAccount orders/orders-api has annotation azure.workload.identity/client-id (none), but the client ID "
        f"of {LABEL} is {CLIENT}"
    ]


def test_a_matching_credential_is_named():
    assert chain_checks.credential_problems(item(), [credential("other", subject="x"), credential()], ISSUER) == (
        [],
        "fic",
    )


@pytest.mark.parametrize(
    ("credentials", "fragment"),
    [
        ([], "no federated credential on managed identity id-orders (resource group rg-apps) trusts issuer"),
        ([credential(issuer=ISSUER.rstrip("/"))], "trailing slash"),
        ([credential(subject="system:serviceaccount:Orders:orders-api")], "letter case"),
    ],
)
def test_missing_and_near_miss_credentials(credentials, fragment):
    problems, name = chain_checks.credential_problems(item(), credentials, ISSUER)
    assert name == "" and any(fragment in p for p in problems), problems


def test_a_named_credential_that_drifted_says_what_differs():
    drifted = [credential(name="fic1", issuer=ISSUER.rstrip("/"), audiences=["api://other"])]
    problems, _name = chain_checks.credential_problems(item(credential_name="fic1"), drifted, ISSUER)
    assert problems == [
        f"federated credential 'fic1' on {LABEL} trusts issuer {ISSUER.rstrip('/')}, but the cluster issuer is "
        f"{ISSUER} (Entra compares them exactly, trailing slash included: the token exchange fails with AADSTS70021)",
        f"federated credential 'fic1' on {LABEL} has audience api://other, but the webhook requests tokens for "
        f"{DEFAULT_AUDIENCE}",
    ]


def test_no_issuer_and_a_full_identity():
    assert chain_checks.credential_problems(item(), [], None)[0] == [
        f"no OIDC issuer URL is known to check the federated credential of {LABEL} against"
    ]
    full = [credential(name=f"c{i}", subject=f"s{i}") for i in range(20)]
    problems, _name = chain_checks.credential_problems(item(), full, ISSUER)
    assert "already has 20 of the 20" in problems[0]


def test_grants_must_be_assigned_at_their_scope():
    roles = {("Reader", SCOPE): Role(ROLE_READER, "Reader")}
    assigned = {
        SCOPE.lower(): [
            {
                "scope": SCOPE,
                "principal_id": PRINCIPAL,
                "role_definition_id": f"/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/{ROLE_READER}",
            }
        ]
    }
    assert chain_checks.grant_problems(item(), PRINCIPAL, assigned, roles) == []
    assert chain_checks.grant_problems(item(), "someone-else", assigned, roles) == [
        f"role Reader is not assigned to {LABEL} at {SCOPE}"
    ]
    errors = {f"assignments:{SCOPE.lower()}": "AuthorizationFailed"}
    assert chain_checks.grant_problems(item(), PRINCIPAL, {}, roles, errors) == [
        f"cannot read the assignments of role Reader at {SCOPE}: AuthorizationFailed"
    ]
