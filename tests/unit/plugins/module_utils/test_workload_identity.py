"""workload_identity.py: every domain rule, at its boundaries."""

from __future__ import annotations

import pytest

from ansible_collections.aks.workload_identity.plugins.module_utils import workload_identity as wi

AKS_ISSUER = (
    "https://westus2.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0328c7fa-e740-4752-af1c-182a774aacc7/"
)
CLIENT_ID = "3f2a9c1b-0d4e-4c6b-9a8f-1e2d3c4b5a69"


# --- constants ------------------------------------------------------------------------------------------------------
def test_annotation_and_label_keys():
    assert wi.ANNOTATION_CLIENT_ID == "azure.workload.identity/client-id"
    assert wi.ANNOTATION_TENANT_ID == "azure.workload.identity/tenant-id"
    assert wi.ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION == "azure.workload.identity/service-account-token-expiration"
    assert wi.LABEL_USE == "azure.workload.identity/use" and wi.LABEL_USE_VALUE == "true"
    assert wi.ANNOTATION_INJECT_PROXY_SIDECAR == "azure.workload.identity/inject-proxy-sidecar"
    assert wi.ANNOTATION_PROXY_SIDECAR_PORT == "azure.workload.identity/proxy-sidecar-port"
    assert wi.ANNOTATION_SKIP_CONTAINERS == "azure.workload.identity/skip-containers"
    keys = [value for name, value in vars(wi).items() if name.startswith(("ANNOTATION_", "LABEL_USE")) and "/" in value]
    assert all(key.startswith(wi.ANNOTATION_PREFIX) for key in keys)
    assert wi.DEFAULT_AUDIENCE == "api://AzureADTokenExchange"


def test_builtin_roles_are_guids_and_unique():
    assert wi.BUILTIN_ROLES["Reader"] == "acdd72a7-3385-48ef-bd42-f606fba81ae7"
    assert wi.BUILTIN_ROLES["Key Vault Secrets User"] == "4633458b-17de-408a-b874-0445c86b69e6"
    assert wi.BUILTIN_ROLES["Key Vault Secrets Officer"] == "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
    assert wi.BUILTIN_ROLES["Key Vault Administrator"] == "00482a5a-887f-4fb3-b363-3b7fe8e74483"
    assert all(wi.is_uuid(guid) for guid in wi.BUILTIN_ROLES.values())
    assert len(set(wi.BUILTIN_ROLES.values())) == len(wi.BUILTIN_ROLES)


# --- subjects ----------------------------------------------------------------------------------------------------------
def test_service_account_subject_round_trip():
    subject = wi.service_account_subject("team-a", "workload")
    assert subject == "system:serviceaccount:team-a:workload"
    assert wi.parse_service_account_subject(subject) == ("team-a", "workload")


@pytest.mark.parametrize(
    "subject",
    [
        "system:serviceaccount:team-a",
        "system:serviceaccount:team-a:sa:extra",
        "system:serviceaccount::sa",
        "system:serviceaccount:Team-A:sa",
        "system:serviceaccount:team-a:SA",
        "repo:org/repo:ref:refs/heads/main",
        "",
        None,
    ],
)
def test_parse_rejects_other_subjects(subject):
    assert wi.parse_service_account_subject(subject) is None


def test_parse_accepts_dotted_service_account_names():
    assert wi.parse_service_account_subject("system:serviceaccount:ns:my.app") == ("ns", "my.app")


# --- Kubernetes names ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("a", True),
        ("team-a", True),
        ("0abc9", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("-a", False),
        ("a-", False),
        ("Team", False),
        ("a.b", False),
        ("a_b", False),
        ("", False),
        (None, False),
    ],
)
def test_namespace_is_a_dns1123_label(value, valid):
    assert (wi.validate_namespace(value) == []) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("sa", True),
        ("my.app", True),
        ("a.b-c.d", True),
        ("a" * 253, True),
        ("a" * 254, False),
        (".a", False),
        ("a.", False),
        ("a..b", False),
        ("a.-b", False),
        ("My-App", False),
        ("a_b", False),
        ("", False),
    ],
)
def test_service_account_name_is_a_dns1123_subdomain(value, valid):
    assert (wi.validate_service_account_name(value) == []) is valid


def test_name_errors_name_the_field_and_rule():
    assert wi.validate_namespace("a" * 64) == ["namespace: must be at most 63 characters, got 64"]
    assert wi.validate_service_account_name("", field="sa") == ["sa: is required"]


# --- AKS, UUID, Key Vault -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("a", True),
        ("A1", True),
        ("my_cluster-1", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("-a", False),
        ("a_", False),
        ("a.b", False),
        ("", False),
    ],
)
def test_cluster_name(value, valid):
    assert (wi.validate_cluster_name(value) == []) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (CLIENT_ID, True),
        (CLIENT_ID.upper(), True),
        (CLIENT_ID.replace("-", ""), False),
        (CLIENT_ID[:-1], False),
        (CLIENT_ID + "0", False),
        ("{" + CLIENT_ID + "}", False),
        ("g" + CLIENT_ID[1:], False),
        (None, False),
        (42, False),
    ],
)
def test_uuid(value, valid):
    assert wi.is_uuid(value) is valid
    assert (wi.validate_uuid(value, "client_id") == []) is valid


@pytest.mark.parametrize(
    ("value", "valid"), [("db-password", True), ("Secret1", True), ("a_b", False), ("a.b", False), ("", False)]
)
def test_keyvault_secret_name(value, valid):
    assert (wi.validate_keyvault_secret_name(value) == []) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [(3599, False), (3600, True), (43200, True), (86400, True), (86401, False), ("3600", False), (True, False)],
)
def test_token_expiration_range(value, valid):
    assert (wi.validate_token_expiration(value) == []) is valid


def test_service_account_annotations():
    assert wi.validate_service_account_annotations(CLIENT_ID, CLIENT_ID, 3600) == []
    assert wi.validate_service_account_annotations("nope", "bad", 10) == [
        "client_id: must be a GUID like 00000000-0000-0000-0000-000000000000, got 'nope'",
        "tenant_id: must be a GUID like 00000000-0000-0000-0000-000000000000, got 'bad'",
        "token_expiration: must be between 3600 and 86400 seconds, got 10",
    ]


# --- federated credentials -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("ab", False),  # 2 characters
        ("abc", True),  # 3
        ("a" * 120, True),
        ("a" * 121, False),
        ("1-_", True),
        ("-ab", False),
        ("_ab", False),
        ("a.b", False),
        ("a b", False),
        ("ab/c", False),
        ("", False),
        (None, False),
    ],
)
def test_federated_credential_name(name, valid):
    assert (wi.validate_federated_credential_name(name) == []) is valid
    if isinstance(name, str) and name:
        assert bool(wi.FEDERATED_CREDENTIAL_NAME_PATTERN.match(name)) is valid


def test_valid_federated_credential_has_no_findings():
    subject = wi.service_account_subject("ns", "sa")
    assert wi.validate_federated_credential("fic-1", AKS_ISSUER, subject) == []
    assert wi.validate_federated_credential("fic-1", AKS_ISSUER, subject, [wi.DEFAULT_AUDIENCE]) == []


@pytest.mark.parametrize(
    ("field", "length", "valid"),
    [("issuer", 600, True), ("issuer", 601, False), ("subject", 600, True), ("subject", 601, False)],
)
def test_issuer_and_subject_length_limits(field, length, valid):
    values = {"issuer": "https://issuer.example/", "subject": "system:serviceaccount:ns:sa"}
    base = values[field]
    values[field] = base + "a" * (length - len(base))
    assert len(values[field]) == length
    errors = wi.validate_federated_credential("fic", values["issuer"], values["subject"])
    assert (errors == []) is valid
    if not valid:
        assert errors == [f"{field}: must be at most 600 characters, got {length}"]


@pytest.mark.parametrize(("length", "valid"), [(600, True), (601, False)])
def test_audience_length_limit(length, valid):
    audience = "api://" + "a" * (length - 6)
    errors = wi.validate_federated_credential("fic", AKS_ISSUER, "s", [audience])
    assert (errors == []) is valid


@pytest.mark.parametrize(
    ("audiences", "expected"),
    [
        ([], ["audiences: must contain exactly one audience, got 0"]),
        (["a", "b"], ["audiences: must contain exactly one audience, got 2"]),
        ("api://AzureADTokenExchange", ["audiences: must be a list with exactly one audience"]),
        ([""], ["audiences[0]: is required"]),
        (["api://*"], ["audiences[0]: wildcards are not supported"]),
    ],
)
def test_exactly_one_audience(audiences, expected):
    assert wi.validate_federated_credential("fic", AKS_ISSUER, "s", audiences) == expected


@pytest.mark.parametrize(
    ("issuer", "expected"),
    [
        ("http://issuer.example/", ["issuer: must be an https URL"]),
        ("issuer.example", ["issuer: must be an https URL"]),
        ("https://", ["issuer: must be an https URL"]),
        (AKS_ISSUER + " ", ["issuer: must not start or end with whitespace"]),
        ("https://*.example/", ["issuer: wildcards are not supported"]),
        ("", ["issuer: is required"]),
        (None, ["issuer: is required"]),
    ],
)
def test_issuer_rules(issuer, expected):
    assert wi.validate_issuer(issuer) == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("system:serviceaccount:ns:*", ["subject: wildcards are not supported"]),
        (" system:serviceaccount:ns:sa", ["subject: must not start or end with whitespace"]),
        ("repo:org/repo:ref:refs/heads/main", []),  # no fixed format (azure-behaviour §4)
        ("", ["subject: is required"]),
    ],
)
def test_subject_rules(subject, expected):
    assert wi.validate_subject(subject) == expected


def test_all_findings_are_reported_together():
    errors = wi.validate_federated_credential("x", "http://i", "", ["a", "b"])
    assert [error.split(":")[0] for error in errors] == ["name", "issuer", "subject", "audiences"]


def test_limits():
    assert wi.MAX_FEDERATED_CREDENTIALS_PER_IDENTITY == 20
    assert (wi.MIN_TOKEN_EXPIRATION, wi.DEFAULT_TOKEN_EXPIRATION, wi.MAX_TOKEN_EXPIRATION) == (3600, 3600, 86400)


# --- near misses ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("configured", "presented", "reason"),
    [
        (AKS_ISSUER.rstrip("/"), AKS_ISSUER, "a trailing slash"),
        (AKS_ISSUER, AKS_ISSUER.rstrip("/"), "a trailing slash"),
        (AKS_ISSUER.upper(), AKS_ISSUER, "letter case"),
        (AKS_ISSUER.upper().rstrip("/"), AKS_ISSUER, "a trailing slash and letter case"),
        (AKS_ISSUER + " ", AKS_ISSUER, "surrounding whitespace"),
        (" " + AKS_ISSUER.rstrip("/"), AKS_ISSUER, "surrounding whitespace and a trailing slash"),
        (AKS_ISSUER + "/", AKS_ISSUER, "a trailing slash"),
    ],
)
def test_issuer_near_miss(configured, presented, reason):
    found = wi.issuer_near_miss(configured, presented)
    assert found is not None and f"differ only by {reason};" in found
    assert "AADSTS700211" in found


@pytest.mark.parametrize(
    ("configured", "presented"),
    [
        (AKS_ISSUER, AKS_ISSUER),
        (AKS_ISSUER, "https://oidc.prod-aks.azure.com/0328c7fa-e740-4752-af1c-182a774aacc7/"),
        (None, AKS_ISSUER),
        (AKS_ISSUER, None),
    ],
)
def test_issuer_no_near_miss(configured, presented):
    assert wi.issuer_near_miss(configured, presented) is None


@pytest.mark.parametrize(
    ("configured", "presented", "expected"),
    [
        ("system:serviceaccount:ns:App", "system:serviceaccount:ns:app", "differ only by letter case"),
        ("system:serviceaccount:ns:app ", "system:serviceaccount:ns:app", "differ only by surrounding whitespace"),
        ("system:serviceaccount:sa:ns", "system:serviceaccount:ns:sa", "namespace and ServiceAccount name swapped"),
    ],
)
def test_subject_near_miss(configured, presented, expected):
    found = wi.subject_near_miss(configured, presented)
    assert found is not None and expected in found


def test_subject_case_miss_cites_case_sensitive_matching():
    assert "AADSTS7002138" in wi.subject_near_miss("system:serviceaccount:NS:sa", "system:serviceaccount:ns:sa")


@pytest.mark.parametrize(
    ("configured", "presented"),
    [
        ("system:serviceaccount:ns:a", "system:serviceaccount:ns:a"),
        ("system:serviceaccount:ns:a", "system:serviceaccount:ns:b"),
        ("system:serviceaccount:ns:a", "system:serviceaccount:ns:a/"),  # a slash is a real difference here
        ("system:serviceaccount:a:a", "system:serviceaccount:a:b"),
    ],
)
def test_subject_no_near_miss(configured, presented):
    assert wi.subject_near_miss(configured, presented) is None


# --- default credential name ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("origin", "namespace", "service_account"),
    [
        ("aks1", "default", "workload"),
        ("my_cluster-1", "team-a", "my.app.sa"),
        (AKS_ISSUER, "ns", "sa"),
        ("c" * 63, "n" * 63, "s" * 253),
        ("_odd", "ns", "sa"),
    ],
)
def test_default_credential_name_obeys_the_rules(origin, namespace, service_account):
    name = wi.default_federated_credential_name(origin, namespace, service_account)
    assert wi.validate_federated_credential_name(name) == []
    assert name == wi.default_federated_credential_name(origin, namespace, service_account)  # deterministic


def test_default_credential_name_is_readable():
    name = wi.default_federated_credential_name("aks1", "default", "workload")
    assert name.startswith("aks1-default-workload-") and len(name) == len("aks1-default-workload-") + 8


def test_default_credential_name_for_an_issuer_hides_the_url():
    name = wi.default_federated_credential_name(AKS_ISSUER, "ns", "sa")
    assert name.startswith("issuer-ns-sa-")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("c", "ns", "a.b"), ("c", "ns", "a-b")),
        (("c-ns", "x", "sa"), ("c", "ns-x", "sa")),
        (("c" * 63, "n" * 63, "s" * 250 + "abc"), ("c" * 63, "n" * 63, "s" * 250 + "abd")),
        ((AKS_ISSUER, "ns", "sa"), (AKS_ISSUER.rstrip("/"), "ns", "sa")),
    ],
)
def test_default_credential_names_do_not_collide(first, second):
    assert wi.default_federated_credential_name(*first) != wi.default_federated_credential_name(*second)


def test_default_credential_name_length_is_capped():
    assert len(wi.default_federated_credential_name("c" * 63, "n" * 63, "s" * 253)) == 120


# --- role definitions -------------------------------------------------------------------------------------------
SUB = "00000000-0000-0000-0000-000000000001"


def test_role_definition_id_from_name_or_guid():
    expected = (
        f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{wi.ROLE_KEY_VAULT_SECRETS_USER}"
    )
    assert wi.role_definition_id(SUB, "Key Vault Secrets User") == expected
    assert wi.role_definition_id(SUB, wi.ROLE_KEY_VAULT_SECRETS_USER.upper()) == expected


def test_role_definition_id_rejects_unknown_names():
    with pytest.raises(ValueError, match="role: 'Owner Plus'"):
        wi.role_definition_id(SUB, "Owner Plus")


@pytest.mark.parametrize(
    ("value", "guid"),
    [
        ("Reader", wi.ROLE_READER),
        (wi.ROLE_READER.upper(), wi.ROLE_READER),
        (f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{wi.ROLE_READER}", wi.ROLE_READER),
        (f"/providers/microsoft.authorization/roleDefinitions/{wi.ROLE_READER}", wi.ROLE_READER),
        ("/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/not-a-guid", None),
        ("Owner Plus", None),
    ],
)
def test_role_definition_guid(value, guid):
    assert wi.role_definition_guid(value) == guid


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("abc", True),
        ("ab", False),
        ("a" * 128, True),
        ("a" * 129, False),
        ("id_orders-1", True),
        ("-id", False),
        ("id.x", False),
    ],
)
def test_identity_name_rule(value, ok):
    from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import validate_identity_name

    assert (validate_identity_name(value) == []) is ok


# --- identity bindings ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ("id-orders", "idorders"),
        ("Id_Orders-API", "idordersapi"),
        ("123-app", "id123app"),  # led by a letter
        ("x" * 100, "x" * 63),  # the spec's maxLength
    ],
)
def test_default_identity_binding_names_keep_to_the_spec(identity, expected):
    name = wi.default_identity_binding_name(identity)
    assert name == expected
    assert wi.validate_identity_binding_name(name) == []


@pytest.mark.parametrize("name", ["", "Orders", "1orders", "id-orders", "a" * 64, 7])
def test_identity_binding_names_outside_the_spec_are_refused(name):
    assert wi.validate_identity_binding_name(name, "identity_binding_name") == [
        "identity_binding_name: must be 1-63 lower-case letters or digits, starting with a letter"
    ]


def test_the_binding_rbac_objects_are_named_by_the_lower_case_client_id():
    client_id = "9BB715B3-E30D-4143-B4AB-E6D3603D9864"
    assert wi.identity_binding_role_name(client_id) == f"azure-wi-identity-binding-{client_id.lower()}"
