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


# --- Identity bindings ------------------------------------------------------------------------------------------
SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
IDENTITY_ID = f"/subscriptions/{SUBSCRIPTION}/resourcegroups/rg-apps/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-orders"
BOUND_IDENTITY = {**IDENTITY, "id": IDENTITY_ID, "resource_group": "rg-apps"}
BINDING_ISSUER = f"https://ib.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/{CLIENT}"
CLUSTER = "AKS cluster 'aks-prod' in resource group 'rg-aks'"
ROLE = f"azure-wi-identity-binding-{CLIENT}"


def binding(name="idorders", identity_id=IDENTITY_ID, state="Succeeded", issuer=BINDING_ISSUER):
    # As the gateway normalises it; the identity ID in the spec's spelling (resourceGroups), the list's in ARM's.
    return {"name": name, "identity_id": identity_id, "provisioning_state": state, "issuer_url": issuer}


def aks_credential(issuer=BINDING_ISSUER):
    return credential("aks-identity-binding", issuer=issuer, subject=CLIENT)


def bound(**overrides):
    values = {
        "namespace": "orders",
        "service_account": "orders-api",
        "identity": BOUND_IDENTITY,
        "cluster": CLUSTER,
        "bindings": [binding(name="other", identity_id=IDENTITY_ID.replace("id-orders", "id-x")), binding()],
        "credentials": [aks_credential()],
        "review": {"allowed": True, "reason": ""},
        **overrides,
    }
    return chain_checks.binding_problems(**values)


def test_a_bound_workload_needs_no_credential_of_its_own():
    problems, found = bound()
    assert problems == [] and found["name"] == "idorders"
    # The identity ID compares without case (the identity provider answers resourcegroups, the spec resourceGroups).
    upper = {**BOUND_IDENTITY, "id": IDENTITY_ID.replace("resourcegroups", "resourceGroups")}
    assert bound(identity=upper)[0] == []


@pytest.mark.parametrize(
    ("overrides", "link", "code", "fragment"),
    [
        ({"bindings": None}, "binding", "ParentResourceNotFound", f"{CLUSTER} does not exist, so {LABEL} cannot"),
        ({"bindings": []}, "binding", "IdentityBindingNotFound", f"{LABEL} has no identity binding on {CLUSTER}"),
        (
            {"bindings": [binding(state="Creating")]},
            "binding",
            "IdentityBindingNotReady",
            f"identity binding 'idorders' of {LABEL} on {CLUSTER} is Creating, not Succeeded",
        ),
        (
            {"binding_name": "orders"},
            "binding",
            "IdentityBindingNameMismatch",
            "is bound to AKS cluster 'aks-prod' in resource group 'rg-aks' as 'idorders', not as identity_binding_name",
        ),
        ({"credentials": []}, "credential", "AADSTS700211", "holds no federated credential aks-identity-binding"),
        (
            {"credentials": [aks_credential(issuer=BINDING_ISSUER + "/")]},
            "credential",
            "AADSTS700211",
            f"trusts issuer {BINDING_ISSUER}/, but the issuer of identity binding 'idorders' is {BINDING_ISSUER} (",
        ),
        (
            {"review": {"allowed": False, "reason": "no RBAC policy matched"}},
            "access",
            "IdentityBindingAccessDenied",
            f"ServiceAccount orders/orders-api may not use {LABEL}: Kubernetes RBAC does not grant it the verb "
            f"use-managed-identity on resource {CLIENT} of API group cid.wi.aks.azure.com (no RBAC policy matched)",
        ),
    ],
    ids=["no-cluster", "unbound", "creating", "other-name", "no-aks-credential", "issuer-slash", "denied"],
)
def test_each_link_of_a_bound_chain_is_named(overrides, link, code, fragment):
    problems, _found = bound(**overrides)
    assert [(p.link, p.code) for p in problems] == [(link, code)], problems
    assert fragment in problems[0].text, problems[0].text
    assert problems[0].fix


def rbac_objects(*subjects, rule=True):
    role = {
        "name": ROLE,
        "labels": {"app.kubernetes.io/managed-by": "aks.workload_identity"},
        "rules": [{"api_groups": ["cid.wi.aks.azure.com"], "resources": [CLIENT], "verbs": ["use-managed-identity"]}]
        if rule
        else [],
        "aggregated": False,
    }
    role_binding = {
        "name": ROLE,
        "labels": {"app.kubernetes.io/managed-by": "aks.workload_identity"},
        "role_ref": {"api_group": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "orders"} for name in subjects],
    }
    return role, role_binding


@pytest.mark.parametrize(
    ("rbac", "why"),
    [
        ((None, None), f"; ClusterRole {ROLE} does not exist and ClusterRoleBinding {ROLE} does not exist"),
        (rbac_objects("other"), f"; ClusterRoleBinding {ROLE} does not name it as a subject"),
        (rbac_objects("orders-api", rule=False), f"; ClusterRole {ROLE} has no rule for it"),
        (rbac_objects("orders-api"), f"; ClusterRole and ClusterRoleBinding {ROLE} do grant it"),
    ],
    ids=["no-rbac", "not-a-subject", "no-rule", "granted-but-denied"],
)
def test_a_denied_review_says_what_our_rbac_lacks(rbac, why):
    problems, _found = bound(review={"allowed": False, "reason": ""}, rbac=rbac)
    assert problems[0].text.endswith(why) or why in problems[0].text, problems[0].text


def test_what_could_not_be_read_is_said_and_compared_with_nothing():
    errors = {"bindings": "Forbidden", "review": "Forbidden", "credentials": "Forbidden"}
    problems, found = bound(errors=errors)
    assert found is not None  # the list given is still searched: only the link that could not be read is unknown
    assert [(p.link, p.code) for p in problems] == [
        ("binding", chain_checks.UNREADABLE),
        ("credential", chain_checks.UNREADABLE),
        ("access", chain_checks.UNREADABLE),
    ]
    assert problems[0].text == f"cannot read the identity bindings of {CLUSTER}: Forbidden"
    denied = bound(review={"allowed": False}, rbac=None, errors={"rbac": "Forbidden"})[0]
    assert denied[0].text.endswith("; our ClusterRole and ClusterRoleBinding could not be read: Forbidden")


def test_no_review_asked_is_no_access_problem():
    assert bound(review=None)[0] == []
