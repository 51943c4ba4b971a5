"""trust_check: claims, claims against federated credentials, the diagnosis table (with the error texts Entra ID,
Key Vault and ARM send, azure-behaviour §6-§8), the propagation retry decision and redaction."""

from __future__ import annotations

import base64
import datetime
import json

import pytest

from ansible_collections.aks.workload_identity.plugins.module_utils import trust_check as tc

ISSUER = "https://westeurope.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0328c7fa-e740-4752-af1c-182a774aacc7/"
SUBJECT = "system:serviceaccount:orders:orders-api"
AUDIENCE = "api://AzureADTokenExchange"
CLIENT_ID = "6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
IDENTITY = "managed identity 'id-orders'"
TRACE = (
    " Trace ID: 0d5f2c1e-1b2a-4c3d-9e8f-7a6b5c4d3e2f Correlation ID: 11111111-2222-3333-4444-555555555555 "
    "Timestamp: 2025-01-01 10:00:00Z"
)
FIC_DOCS = (
    "Check your federated identity credential Subject, Audience and Issuer against the presented assertion. "
    "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
)

# azure-behaviour §6, the descriptions Entra ID sends (error_description), Trace trailer included.
ENTRA = {
    "AADSTS70021": "AADSTS70021: No matching federated identity record found for presented assertion. Assertion "
    f"Issuer: '{ISSUER}'. Assertion Subject: '{SUBJECT}'. Assertion Audience: '{AUDIENCE}'.{TRACE}",
    "AADSTS700211": f"AADSTS700211: No matching federated identity record found for presented assertion issuer "
    f"'{ISSUER}'. {FIC_DOCS}{TRACE}",
    "AADSTS700213": f"AADSTS700213: No matching federated identity record found for presented assertion subject "
    f"'{SUBJECT}'. {FIC_DOCS}{TRACE}",
    "AADSTS7002138": f"AADSTS7002138: No matching federated identity record found for presented assertion subject "
    f"'{SUBJECT}'. The subject matches with case-insensitive comparison, but not with case-sensitive comparison. "
    f"{FIC_DOCS}{TRACE}",
    "AADSTS700212": f"AADSTS700212: No matching federated identity record found for presented assertion audience "
    f"'{AUDIENCE}'. {FIC_DOCS}{TRACE}",
    "AADSTS700016": f"AADSTS700016: Application with identifier '{CLIENT_ID}' was not found in the directory "
    f"'{TENANT}'. This can happen if the application has not been installed by the administrator of the tenant or "
    f"consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.{TRACE}",
    "AADSTS700024": "AADSTS700024: Client assertion is not within its valid time range. Current time: "
    "2025-01-01T10:00:00.0000000Z, assertion valid from 2025-01-01T08:00:00.0000000Z, expiry time of assertion "
    "2025-01-01T08:10:00.0000000Z. Review the documentation at "
    f"https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials .{TRACE}",
    "AADSTS50166": f"AADSTS50166: Request to External OIDC endpoint failed.{TRACE}",
    "AADSTS50013": "AADSTS50013: Assertion failed signature validation. [Reason - The key was not found.]" + TRACE,
    "AADSTS90002": f"AADSTS90002: Tenant '{TENANT}' not found. Check to make sure you have the correct tenant ID.{TRACE}",
}
VAULT_RESOURCE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-apps/providers/microsoft.keyvault/vaults/"
    "kv-orders/secrets/db-password"
)
# azure-behaviour §7, verbatim shape.
FORBIDDEN_BY_RBAC = (
    "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role "
    "definitions were changed recently, please observe propagation time.\r\nCaller: "
    f"appid={CLIENT_ID};oid=3e663318-3d53-4662-a3c0-754692b3afce;iss=https://sts.windows.net/{TENANT}/\r\n"
    "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\n"
    f"Resource: '{VAULT_RESOURCE}'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\n"
    "DecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: kv-orders;location=westeurope\r\n"
)
RG_ID = "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-apps"
AUTHORIZATION_FAILED = (
    "The client '3e663318-3d53-4662-a3c0-754692b3afce' with object id '3e663318-3d53-4662-a3c0-754692b3afce' does "
    "not have authorization to perform action 'Microsoft.Resources/subscriptions/resourcegroups/read' over scope "
    f"'{RG_ID}' or the scope is invalid. If access was recently granted, please refresh your credentials."
)
ACCESS_POLICY_DENIED = (
    f"The user, group or application 'appid={CLIENT_ID};oid=3e663318-3d53-4662-a3c0-754692b3afce;"
    f"iss=https://sts.windows.net/{TENANT}/' does not have secrets get permission on key vault "
    "'kv-orders;location=westeurope'. For help resolving this issue, please see "
    "https://go.microsoft.com/fwlink/?linkid=2125287"
)
SECRETS_USER = "/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.Authorization/roleDefinitions/4633458b-17de-408a-b874-0445c86b69e6"
READER = "/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"
PERMISSIONS = {
    SECRETS_USER.lower(): [{"actions": [], "data_actions": ["Microsoft.KeyVault/vaults/secrets/getSecret/action"]}],
    READER.lower(): [{"actions": ["*/read"], "data_actions": []}],
}


def jwt(claims: dict) -> str:
    def part(document: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'kid': 'k1'})}.{part(claims)}.c2lnbmF0dXJl"


def credential(name: str = "fic", issuer: str = ISSUER, subject: str = SUBJECT, audiences=None) -> dict:
    return {"name": name, "issuer": issuer, "subject": subject, "audiences": audiences or [AUDIENCE]}


CLAIMS = {"iss": ISSUER, "sub": SUBJECT, "aud": [AUDIENCE], "exp": 1735725600, "nbf": 1735725000}


# --------------------------------------------------------------------------------------------- claims
def test_decode_claims_reads_the_payload_without_verifying():
    token = jwt(CLAIMS | {"kubernetes.io": {"namespace": "orders"}})
    assert tc.decode_claims(token)["sub"] == SUBJECT
    assert tc.claims_view(tc.decode_claims(token)) == {
        "iss": ISSUER,
        "sub": SUBJECT,
        "aud": [AUDIENCE],
        "exp": 1735725600,
    }


@pytest.mark.parametrize(
    ("token", "problem"),
    [("not-a-jwt", "three dot-separated"), ("eyJhbGciOiJSUzI1NiJ9.!!!!.sig", "base64url"), ("a.W10.c", "JSON object")],
)
def test_decode_claims_errors_never_quote_the_token(token, problem):
    with pytest.raises(ValueError, match=problem) as raised:
        tc.decode_claims(token)
    assert token not in str(raised.value)


@pytest.mark.parametrize(("aud", "expected"), [(AUDIENCE, [AUDIENCE]), ([AUDIENCE, "x"], [AUDIENCE, "x"]), (None, [])])
def test_audiences_of_accepts_a_string_or_a_list(aud, expected):
    assert tc.audiences_of({"aud": aud}) == expected


# --------------------------------------------------------------------------------------------- comparison
def test_exact_match_passes():
    check = tc.compare_credentials(
        [credential("other", subject="x"), credential()], ISSUER, SUBJECT, AUDIENCE, IDENTITY
    )
    assert check.status == tc.PASSED and check.match["name"] == "fic" and check.diagnosis is None


@pytest.mark.parametrize(
    ("configured", "code", "fragments"),
    [
        (credential(issuer=ISSUER.rstrip("/")), "AADSTS700211", ["trailing slash", "lacks a trailing slash"]),
        (credential(issuer=ISSUER.upper()), "AADSTS700211", ["letter case"]),
        (credential(issuer=f" {ISSUER}"), "AADSTS700211", ["surrounding whitespace"]),
        (credential(issuer="https://oidc.prod-aks.azure.com/other/"), "AADSTS700211", ["another cluster"]),
        (
            credential(issuer="https://oidc.prod-aks.azure.com/other/", subject="x"),
            "AADSTS700211",
            ["none of the 1 federated credential(s)"],
        ),
        (credential(subject=SUBJECT.replace("orders-api", "Orders-Api")), "AADSTS7002138", ["letter case"]),
        (
            credential(subject="system:serviceaccount:order:orders-api"),
            "AADSTS700213",
            ["namespace 'order'", "namespace 'orders'"],
        ),
        (
            credential(subject="system:serviceaccount:orders:orders-apl"),
            "AADSTS700213",
            ["ServiceAccount name 'orders-apl'"],
        ),
        (credential(subject="system:serviceaccount:orders-api:orders"), "AADSTS700213", ["swapped"]),
        (credential(subject="system:serviceaccount:billing:worker"), "AADSTS700213", ["no federated credential"]),
        (credential(audiences=["api://other"]), "AADSTS700212", ["audience(s) ['api://other']"]),
    ],
    ids=[
        "issuer-slash",
        "issuer-case",
        "issuer-space",
        "issuer-other-cluster",
        "issuer-none",
        "subject-case",
        "subject-namespace",
        "subject-name",
        "subject-swapped",
        "subject-none",
        "audience",
    ],
)
def test_mismatch_names_the_difference_and_the_code(configured, code, fragments):
    check = tc.compare_credentials([configured], ISSUER, SUBJECT, AUDIENCE, IDENTITY)
    assert check.status == tc.FAILED and check.match is None
    assert check.diagnosis.step == tc.CREDENTIAL and check.diagnosis.code == code
    assert not check.diagnosis.propagation
    for fragment in fragments:
        assert fragment in check.diagnosis.cause
    assert check.diagnosis.fix


def test_trailing_slash_the_other_way_round():
    check = tc.compare_credentials([credential()], ISSUER.rstrip("/"), SUBJECT, AUDIENCE, IDENTITY)
    assert "has a trailing slash the token's issuer lacks" in check.diagnosis.cause
    assert repr(ISSUER.rstrip("/")) in check.diagnosis.fix


def test_no_credentials_at_all():
    check = tc.compare_credentials([], ISSUER, SUBJECT, AUDIENCE, IDENTITY)
    assert check.diagnosis.cause == f"{IDENTITY} has no federated credentials"
    assert "federated_credential" in check.diagnosis.fix and SUBJECT in check.diagnosis.fix


def test_the_credential_for_the_subject_explains_an_issuer_mismatch_first():
    credentials = [credential("a", issuer=ISSUER.upper(), subject="x"), credential("b", issuer=ISSUER.rstrip("/"))]
    check = tc.compare_credentials(credentials, ISSUER, SUBJECT, AUDIENCE, IDENTITY)
    assert "'b'" in check.diagnosis.cause and "trailing slash" in check.diagnosis.cause


# An identity shared by several ServiceAccounts has one correct credential per other ServiceAccount; they must not
# be taken for near misses of this one (found by the diagnose Molecule scenario).
SHARED = [
    credential("orders-worker-fic", subject="system:serviceaccount:orders:orders-worker"),
    credential("orders-batch-fic", subject="system:serviceaccount:orders:orders-batch"),
]


def test_shared_identity_issuer_slash_names_this_service_accounts_credential():
    mine = credential("orders-api-fic", issuer=ISSUER.rstrip("/"))
    check = tc.compare_credentials([*SHARED, mine], ISSUER, SUBJECT, AUDIENCE, IDENTITY)
    assert "'orders-api-fic'" in check.diagnosis.cause and "trailing slash" in check.diagnosis.cause
    assert check.diagnosis.code == "AADSTS700211"


def test_shared_identity_namespace_typo_is_found_among_other_workloads_credentials():
    typo = credential("orders-api-fic", subject=SUBJECT.replace(":orders:", ":ordres:"))
    check = tc.compare_credentials([*SHARED, typo], ISSUER, SUBJECT, AUDIENCE, IDENTITY)
    assert "'orders-api-fic'" in check.diagnosis.cause and "namespace 'ordres'" in check.diagnosis.cause
    assert check.diagnosis.code == "AADSTS700213"


def test_shared_identity_name_typo_versus_another_workload():
    typo = credential("orders-api-fic", subject=SUBJECT.replace("orders-api", "order-api"))
    check = tc.compare_credentials([*SHARED, typo], ISSUER, SUBJECT, AUDIENCE, IDENTITY)
    assert "'orders-api-fic'" in check.diagnosis.cause and "ServiceAccount name 'order-api'" in check.diagnosis.cause
    # Only other workloads' credentials: no typo to point at, the subject is simply not trusted.
    check = tc.compare_credentials(SHARED, ISSUER, SUBJECT, AUDIENCE, IDENTITY)
    assert check.diagnosis.cause.startswith(f"no federated credential of {IDENTITY} trusts subject {SUBJECT!r}")


def test_shared_identity_audience_of_this_service_accounts_credential():
    mine = credential("orders-api-fic", audiences=["api://AzureADTokenExchangeUS"])
    check = tc.compare_credentials([*SHARED, mine], ISSUER, SUBJECT, AUDIENCE, IDENTITY)
    assert "'orders-api-fic' trusts audience(s)" in check.diagnosis.cause and check.diagnosis.code == "AADSTS700212"


def test_token_issuer_mismatch():
    diagnosis = tc.token_issuer_mismatch(ISSUER, ISSUER.rstrip("/"), "the cluster's OIDC issuer")
    assert diagnosis.step == tc.TOKEN and diagnosis.code == "IssuerMismatch"
    assert "trailing slash" in diagnosis.cause


# --------------------------------------------------------------------------------------------- exchange
MATCH = tc.CredentialCheck(tc.PASSED, match=credential("fic-orders"))


def exchange(code: str, check: tc.CredentialCheck | None) -> tc.Diagnosis:
    return tc.diagnose_exchange(code, ENTRA[code], check, client_id=CLIENT_ID, tenant_id=TENANT, claims=CLAIMS)


@pytest.mark.parametrize("code", ["AADSTS70021", "AADSTS700211", "AADSTS700213"])
def test_no_match_with_a_matching_credential_in_arm_is_propagation(code):
    diagnosis = exchange(code, MATCH)
    assert diagnosis.propagation and diagnosis.step == tc.EXCHANGE and diagnosis.code == code
    assert "'fic-orders'" in diagnosis.cause and "not propagated" in diagnosis.cause


@pytest.mark.parametrize("code", ["AADSTS7002138", "AADSTS700212"])
def test_case_and_audience_codes_are_never_propagation(code):
    assert not exchange(code, MATCH).propagation


@pytest.mark.parametrize("code", sorted(tc.NO_MATCH_CODES))
def test_no_match_with_a_definite_mismatch_reports_the_mismatch_with_entras_code(code):
    mismatch = tc.compare_credentials([credential(issuer=ISSUER.rstrip("/"))], ISSUER, SUBJECT, AUDIENCE, IDENTITY)
    diagnosis = exchange(code, mismatch)
    assert not diagnosis.propagation and diagnosis.step == tc.CREDENTIAL and diagnosis.code == code
    assert diagnosis.cause == mismatch.diagnosis.cause


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("AADSTS700211", f"trusts the token's issuer '{ISSUER}'"),
        ("AADSTS700213", f"trusts the token's subject '{SUBJECT}'"),
        ("AADSTS7002138", "same letter case"),
        ("AADSTS700212", "audience"),
        ("AADSTS70021", "matches the token's issuer"),
    ],
)
def test_no_match_when_arm_could_not_be_read(code, fragment):
    diagnosis = exchange(code, None)
    assert diagnosis.step == tc.EXCHANGE and not diagnosis.propagation and fragment in diagnosis.cause
    assert "Trace ID" not in diagnosis.cause  # the trailer is noise
    skipped = exchange(code, tc.CredentialCheck(tc.SKIPPED, reason="403"))
    assert skipped.cause == diagnosis.cause


@pytest.mark.parametrize(
    ("code", "cause", "fix"),
    [
        ("AADSTS700016", f"no application or managed identity with client ID '{CLIENT_ID}'", "client-id annotation"),
        ("AADSTS90002", f"does not know tenant '{TENANT}'", "tenant-id"),
        ("AADSTS700024", "expires 2025-01-01T10:00:00Z", "clocks"),
        ("AADSTS50166", f"{ISSUER.rstrip('/')}/.well-known/openid-configuration", "aks_oidc"),
        ("AADSTS50013", "signature", "rotated"),
    ],
)
def test_exchange_table(code, cause, fix):
    diagnosis = exchange(code, MATCH)
    assert diagnosis.step == tc.EXCHANGE and diagnosis.code == code and not diagnosis.propagation
    assert cause in diagnosis.cause and fix in diagnosis.fix


def test_unknown_entra_code_quotes_the_message():
    message = "AADSTS9999999: Something new happened." + TRACE
    diagnosis = tc.diagnose_exchange(
        "AADSTS9999999", message, MATCH, client_id=CLIENT_ID, tenant_id=TENANT, claims=CLAIMS
    )
    assert "Something new happened." in diagnosis.cause and "reference-error-codes" in diagnosis.fix


# --------------------------------------------------------------------------------------------- access
def test_denied_action_from_key_vault_and_arm_messages():
    assert tc.denied_action(FORBIDDEN_BY_RBAC) == (tc.KEYVAULT_GET_SECRET_ACTION, VAULT_RESOURCE)
    assert tc.denied_action(AUTHORIZATION_FAILED) == ("Microsoft.Resources/subscriptions/resourcegroups/read", RG_ID)
    assert tc.denied_action("Forbidden") == (None, None)


@pytest.mark.parametrize(
    ("scope", "covered"),
    [
        ("/", True),
        ("/subscriptions/00000000-0000-0000-0000-000000000000", True),
        ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/RG-APPS", True),
        ("/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-app", False),
        (VAULT_RESOURCE + "/", True),
        (VAULT_RESOURCE + "x", False),
    ],
)
def test_scope_covers(scope, covered):
    assert tc.scope_covers(scope, VAULT_RESOURCE) is covered


def test_permissions_allow_wildcards_and_not_actions():
    assert tc.permissions_allow(
        [{"data_actions": ["Microsoft.KeyVault/vaults/secrets/*"]}], tc.KEYVAULT_GET_SECRET_ACTION, data=True
    )
    assert not tc.permissions_allow([{"actions": ["*"]}], tc.KEYVAULT_GET_SECRET_ACTION, data=True)  # not a data action
    denied = [{"data_actions": ["*"], "not_data_actions": ["Microsoft.KeyVault/vaults/secrets/getSecret/action"]}]
    assert not tc.permissions_allow(denied, tc.KEYVAULT_GET_SECRET_ACTION, data=True)
    assert tc.permissions_allow(
        [{"actions": ["*/read"]}], "microsoft.resources/subscriptions/resourcegroups/read", data=False
    )


def assignment(scope: str, role: str, name: str = "ra1") -> dict:
    return {"name": name, "scope": scope, "role_definition_id": role}


@pytest.mark.parametrize(
    ("assignments", "state"),
    [
        ([], tc.GRANT_ABSENT),
        ([assignment(RG_ID, READER)], tc.GRANT_ABSENT),  # Reader has no data actions
        ([assignment(RG_ID, SECRETS_USER)], tc.GRANT_PRESENT),
        ([assignment(RG_ID + "/providers/microsoft.keyvault/vaults/kv-other", SECRETS_USER)], tc.GRANT_ABSENT),
        ([assignment(RG_ID, "/providers/Microsoft.Authorization/roleDefinitions/custom")], tc.GRANT_UNKNOWN),
    ],
    ids=["none", "reader", "secrets-user", "other-vault", "unreadable-definition"],
)
def test_evaluate_grant(assignments, state):
    definitions = {**PERMISSIONS, "/providers/microsoft.authorization/roledefinitions/custom": None}
    grant = tc.evaluate_grant(assignments, definitions, tc.KEYVAULT_GET_SECRET_ACTION, VAULT_RESOURCE, data=True)
    assert grant.state == state


def test_missing_grant_is_definite():
    diagnosis = tc.diagnose_access(
        "keyvault", "kv", "ForbiddenByRbac", FORBIDDEN_BY_RBAC, principal="id", grant=tc.GrantCheck(tc.GRANT_ABSENT)
    )
    assert not diagnosis.propagation and diagnosis.step == tc.ACCESS and diagnosis.code == "ForbiddenByRbac"
    assert "has no role assignment allowing" in diagnosis.cause and VAULT_RESOURCE in diagnosis.cause
    assert "Key Vault Secrets User" in diagnosis.fix


@pytest.mark.parametrize(
    "grant",
    [
        tc.GrantCheck(tc.GRANT_PRESENT, assignment(RG_ID, SECRETS_USER)),
        tc.GrantCheck(tc.GRANT_UNKNOWN, reason="403"),
        None,
    ],
)
def test_refusal_with_a_grant_or_unknown_is_propagation_then_reported_as_such(grant):
    during = tc.diagnose_access("keyvault", "kv", "ForbiddenByRbac", FORBIDDEN_BY_RBAC, principal="id", grant=grant)
    assert during.propagation
    after = tc.diagnose_access(
        "keyvault", "kv", "ForbiddenByRbac", FORBIDDEN_BY_RBAC, principal="id", grant=grant, waited=300
    )
    assert not after.propagation and "after 300 s" in after.cause and "not propagated yet" in after.cause


def test_arm_authorization_failed_without_grant():
    diagnosis = tc.diagnose_access(
        "arm", RG_ID, "AuthorizationFailed", AUTHORIZATION_FAILED, principal="id", grant=tc.GrantCheck(tc.GRANT_ABSENT)
    )
    assert "Reader" in diagnosis.fix and "resourcegroups/read" in diagnosis.cause and not diagnosis.propagation


def test_access_policy_denied_and_not_found():
    policy = tc.diagnose_access("keyvault", "kv-orders", "AccessDenied", ACCESS_POLICY_DENIED, principal="id")
    assert "uses access policies" in policy.cause and "keyvault_access" in policy.fix and not policy.propagation
    missing = tc.diagnose_access(
        "keyvault", "kv-orders/secrets/x", "SecretNotFound", "A secret ... not found", principal="id"
    )
    assert missing.code == "SecretNotFound" and "does not exist" in missing.cause


# --------------------------------------------------------------------------------------------- retry
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def fixed_progress() -> tc.Progress:
    return tc.Progress(now=lambda: datetime.datetime(2025, 1, 1, 10, 0, tzinfo=datetime.timezone.utc))


def run_retry(outcomes: list[str], timeout: float = 60, interval: float = 5):
    clock, progress, logged = FakeClock(), fixed_progress(), []
    calls = iter(outcomes)
    result = tc.retry_while_propagating(
        lambda: next(calls),
        lambda outcome: "still refused" if outcome == "propagating" else None,
        timeout=timeout,
        interval=interval,
        progress=progress,
        sleep=clock.sleep,
        clock=clock,
        log=logged.append,
    )
    return result, clock, progress, logged


def test_definite_failures_and_successes_are_not_retried():
    for outcome in ("ok", "mismatch"):
        (last, attempts, waited), clock, progress, _logged = run_retry([outcome])
        assert (last, attempts, waited, clock.sleeps, progress.lines) == (outcome, 1, 0, [], [])


def test_propagation_is_retried_with_backoff_and_a_progress_line_each_time():
    (last, attempts, waited), clock, progress, logged = run_retry(["propagating"] * 3 + ["ok"])
    assert (last, attempts) == ("ok", 4)
    assert clock.sleeps == [5, 10, 20] and waited == 35
    assert progress.lines[0] == "2025-01-01T10:00:00Z attempt 1: still refused; retrying in 5 s (0 of 60 s spent)"
    assert len(progress.lines) == 3 and logged == progress.lines


def test_retries_stop_at_the_timeout():
    (last, attempts, waited), clock, progress, _logged = run_retry(["propagating"] * 20, timeout=12, interval=5)
    assert last == "propagating" and waited == 12
    assert clock.sleeps == [5, 7] and attempts == 3 and len(progress.lines) == 2


def test_zero_timeout_retries_nothing():
    (last, attempts, waited), clock, progress, _logged = run_retry(["propagating"], timeout=0)
    assert (last, attempts, waited, clock.sleeps, progress.lines) == ("propagating", 1, 0, [], [])


@pytest.mark.parametrize(("attempt", "expected"), [(1, 5), (2, 10), (3, 20), (4, 30), (10, 30)])
def test_backoff_doubles_up_to_thirty_seconds(attempt, expected):
    assert tc.backoff(attempt, 5) == expected
    assert tc.backoff(attempt, 60) == 60  # never below the interval asked for


# --------------------------------------------------------------------------------------------- redaction
def test_redact_masks_secrets_and_anything_shaped_like_a_jwt():
    token = jwt(CLAIMS)
    text = f"assertion {token} rejected; secret hunter2 and hunter2x"
    masked = tc.redact(text, ["hunter2", None, "hunter2x"])
    assert token not in masked and "hunter2" not in masked
    assert masked == "assertion ******** rejected; secret ******** and ********"
    assert tc.redact(None) == ""


def test_short_message_drops_the_trace_and_truncates():
    assert tc.short_message(ENTRA["AADSTS50166"]) == "AADSTS50166: Request to External OIDC endpoint failed."
    assert tc.short_message("x" * 1000).endswith("...") and len(tc.short_message("x" * 1000)) == tc.MAX_MESSAGE
    assert tc.short_message(FORBIDDEN_BY_RBAC).count("\r") == 0
