"""azure_client.py: option resolution, credential choice, clouds, error mapping, LRO waiting, the module base."""

from __future__ import annotations

import json
import re
import threading
import typing as t
import urllib.parse

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.core.polling import LROPoller, PollingMethod
from azure.identity import AzureAuthorityHosts, CredentialUnavailableError
from azure.mgmt.core.tools import get_arm_endpoints

from ansible_collections.aks.workload_identity.plugins.module_utils import azure_client
from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import (
    AZURE_AUTH_ARGSPEC,
    KNOWN_CLOUDS,
    AzureCloud,
    AzureModule,
    azure_call,
    azure_error,
    azure_error_code,
    build_credential,
    cloud_from_metadata,
    is_azure_not_found,
    resolve_cloud,
    wait_for_lro,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import (
    WorkloadIdentityError,
    retry_after_from_exception,
)
from tests.unit.conftest import failure, module_args

SUB = "11111111-2222-3333-4444-555555555555"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "3f2a9c1b-0d4e-4c6b-9a8f-1e2d3c4b5a69"
SECRET = "very-secret-value-123"
PUBLIC = KNOWN_CLOUDS["AzureCloud"]
LAB = AzureCloud(
    name="Lab",
    resource_manager="https://127.0.0.1:8443/",
    authority_host="https://127.0.0.1:8444",
    arm_audience="https://management.lab.test/",
    keyvault_dns_suffix=".vault.lab.test",
    metadata_url="https://127.0.0.1:8443/metadata/endpoints?api-version=2022-09-01",
)


def _params(**overrides: t.Any) -> dict[str, t.Any]:
    params = {name: spec.get("default") for name, spec in AZURE_AUTH_ARGSPEC.items()}
    params.update(overrides)
    return params


# --- option resolution (AnsibleModule does the env fallbacks) -------------------------------------------------------
def _resolved(args: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
    with module_args(args or {}):
        return AzureModule().params


def _raiser(exc):
    def call():
        raise exc

    return call


@pytest.mark.parametrize(
    ("option", "env", "args", "expected"),
    [
        ("secret", {"AZURE_SECRET": "awx", "AZURE_CLIENT_SECRET": "identity"}, {}, "awx"),
        ("secret", {"AZURE_CLIENT_SECRET": "identity"}, {}, "identity"),
        ("secret", {"AZURE_SECRET": "awx", "AZURE_CLIENT_SECRET": "identity"}, {"secret": "task"}, "task"),
        ("tenant", {"AZURE_TENANT": "awx.example", "AZURE_TENANT_ID": "identity.example"}, {}, "awx.example"),
        ("tenant", {"AZURE_TENANT_ID": "identity.example"}, {}, "identity.example"),
        ("tenant", {"AZURE_TENANT": "awx.example"}, {"tenant": "task.example"}, "task.example"),
        ("client_id", {"AZURE_CLIENT_ID": CLIENT}, {}, CLIENT),
        ("subscription_id", {"AZURE_SUBSCRIPTION_ID": SUB}, {}, SUB),
        ("cloud_environment", {}, {}, "AzureCloud"),
        ("cloud_environment", {"AZURE_CLOUD_ENVIRONMENT": "AzureUSGovernment"}, {}, "AzureUSGovernment"),
        (
            "cloud_environment",
            {"AZURE_CLOUD_ENVIRONMENT": "AzureUSGovernment"},
            {"cloud_environment": "AzureChinaCloud"},
            "AzureChinaCloud",
        ),
        ("auth_source", {}, {}, "auto"),
        ("auth_source", {"ANSIBLE_AZURE_AUTH_SOURCE": "msi"}, {}, "msi"),
        ("ca_bundle", {"AZURE_CA_BUNDLE": "/a.pem", "REQUESTS_CA_BUNDLE": "/r.pem"}, {}, "/a.pem"),
        ("ca_bundle", {"REQUESTS_CA_BUNDLE": "/r.pem"}, {}, "/r.pem"),
        ("ca_bundle", {"REQUESTS_CA_BUNDLE": "/r.pem"}, {"ca_bundle": "/t.pem"}, "/t.pem"),
        ("federated_token_file", {"AZURE_FEDERATED_TOKEN_FILE": "/var/token"}, {}, "/var/token"),
        (
            "authority_host",
            {"AZURE_AUTHORITY_HOST": "https://login.microsoftonline.us/"},
            {},
            "https://login.microsoftonline.us/",
        ),
        ("disable_instance_discovery", {}, {}, None),
        ("lro_polling_interval", {}, {}, 5.0),
    ],
)
def test_option_precedence(monkeypatch, option, env, args, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _resolved(args)[option] == expected


def test_secret_from_the_environment_is_a_no_log_value(monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRET)
    with module_args({}):
        azure = AzureModule()
    assert SECRET in azure.module.no_log_values


def test_module_spec_is_merged_and_nothing_is_contacted():
    with module_args({"name": "id1"}):
        azure = AzureModule({"name": {"type": "str", "required": True}}, required_if=[("name", "x", ["tenant"])])
    assert azure.params["name"] == "id1"
    assert azure.module.supports_check_mode
    assert azure._choice is None and azure._cloud is None and azure._clients == {}


# --- credential choice ----------------------------------------------------------------------------------------------------
class Recorder:
    """Stands in for an azure-identity credential class and keeps what it was built with."""

    def __init__(self, name: str):
        self.name = name
        self.calls: list[tuple[tuple[t.Any, ...], dict[str, t.Any]]] = []

    def __call__(self, *args: t.Any, **kwargs: t.Any) -> Built:
        self.calls.append((args, kwargs))
        return Built(self.name, args, kwargs)


class Built(t.NamedTuple):
    cls: str
    args: tuple[t.Any, ...]
    kwargs: dict[str, t.Any]


@pytest.fixture
def credentials(monkeypatch) -> dict[str, Recorder]:
    names = ("ClientSecretCredential", "WorkloadIdentityCredential", "ManagedIdentityCredential", "AzureCliCredential")
    recorders = {name: Recorder(name) for name in names}
    for name, recorder in recorders.items():
        monkeypatch.setattr(azure_client, name, recorder)
    monkeypatch.setattr(azure_client, "ChainedTokenCredential", lambda *chain: Built("Chained", chain, {}))
    return recorders


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "azure-identity-token"
    path.write_text("eyJhbGciOiJSUzI1NiJ9.e30.sig")
    return str(path)


@pytest.mark.parametrize("source", ["auto", "env"])
def test_service_principal_when_a_secret_is_set(credentials, source, token_file):
    params = _params(
        auth_source=source, client_id=CLIENT, secret=SECRET, tenant=TENANT, federated_token_file=token_file
    )
    choice = build_credential(PUBLIC, params)
    assert choice.credential == Built(
        "ClientSecretCredential",
        (TENANT, CLIENT, SECRET),
        {"authority": "https://login.microsoftonline.com", "disable_instance_discovery": False},
    )
    assert SECRET not in choice.description and CLIENT in choice.description


def test_service_principal_on_a_metadata_cloud_skips_instance_discovery_and_trusts_the_ca(credentials):
    params = _params(client_id=CLIENT, secret=SECRET, tenant=TENANT, ca_bundle="/lab/ca.pem")
    built = build_credential(LAB, params).credential
    assert built.kwargs == {
        "authority": "https://127.0.0.1:8444",
        "disable_instance_discovery": True,
        "connection_verify": "/lab/ca.pem",
    }


@pytest.mark.parametrize(("cloud", "setting", "expected"), [(LAB, False, False), (PUBLIC, True, True)])
def test_explicit_instance_discovery_setting_wins(credentials, cloud, setting, expected):
    params = _params(client_id=CLIENT, secret=SECRET, tenant=TENANT, disable_instance_discovery=setting)
    assert build_credential(cloud, params).credential.kwargs["disable_instance_discovery"] is expected


@pytest.mark.parametrize(
    ("cloud_name", "authority"),
    [
        ("AzureCloud", "https://login.microsoftonline.com"),
        ("AzureUSGovernment", "https://login.microsoftonline.us"),
        ("AzureChinaCloud", "https://login.chinacloudapi.cn"),
    ],
)
def test_authority_follows_the_cloud(credentials, cloud_name, authority):
    params = _params(client_id=CLIENT, secret=SECRET, tenant=TENANT)
    assert build_credential(KNOWN_CLOUDS[cloud_name], params).credential.kwargs["authority"] == authority


def test_authority_host_option_overrides_the_cloud(credentials):
    params = _params(client_id=CLIENT, secret=SECRET, tenant=TENANT, authority_host="https://login.microsoftonline.us/")
    assert build_credential(PUBLIC, params).credential.kwargs["authority"] == "https://login.microsoftonline.us"


@pytest.mark.parametrize("source", ["auto", "env", "workload_identity"])
def test_workload_identity_when_a_token_file_is_set(credentials, source, token_file):
    params = _params(auth_source=source, client_id=CLIENT, tenant=TENANT, federated_token_file=token_file)
    choice = build_credential(LAB, params)
    assert choice.credential == Built(
        "WorkloadIdentityCredential",
        (),
        {
            "tenant_id": TENANT,
            "client_id": CLIENT,
            "token_file_path": token_file,
            "authority": "https://127.0.0.1:8444",
            "disable_instance_discovery": True,
        },
    )
    assert "workload identity" in choice.description


def test_workload_identity_needs_client_tenant_and_file(credentials):
    with pytest.raises(WorkloadIdentityError) as caught:
        build_credential(PUBLIC, _params(auth_source="workload_identity"))
    assert "client_id (AZURE_CLIENT_ID)" in caught.value.message
    assert "tenant (AZURE_TENANT or AZURE_TENANT_ID)" in caught.value.message
    assert "federated_token_file (AZURE_FEDERATED_TOKEN_FILE)" in caught.value.message


def test_workload_identity_reports_a_missing_token_file(credentials, tmp_path):
    missing = str(tmp_path / "nope")
    params = _params(auth_source="workload_identity", client_id=CLIENT, tenant=TENANT, federated_token_file=missing)
    with pytest.raises(WorkloadIdentityError, match="does not exist or is not readable"):
        build_credential(PUBLIC, params)


def test_service_principal_with_missing_tenant_is_an_error_not_a_fallback(credentials):
    with pytest.raises(WorkloadIdentityError, match=r"needs tenant \(AZURE_TENANT or AZURE_TENANT_ID\)"):
        build_credential(PUBLIC, _params(client_id=CLIENT, secret=SECRET))
    assert credentials["ManagedIdentityCredential"].calls == []


def test_env_without_credentials_says_what_to_set(credentials):
    with pytest.raises(WorkloadIdentityError) as caught:
        build_credential(PUBLIC, _params(auth_source="env"))
    assert caught.value.code == "CredentialUnavailable"
    for name in ("AZURE_SECRET", "AZURE_CLIENT_SECRET", "AZURE_TENANT", "AZURE_FEDERATED_TOKEN_FILE"):
        assert name in caught.value.message


@pytest.mark.parametrize(
    ("client_id", "ca_bundle", "expected"),
    [(None, None, {}), (CLIENT, "/ca.pem", {"client_id": CLIENT, "connection_verify": "/ca.pem"})],
)
def test_managed_identity(credentials, client_id, ca_bundle, expected):
    choice = build_credential(PUBLIC, _params(auth_source="msi", client_id=client_id, ca_bundle=ca_bundle))
    assert choice.credential == Built("ManagedIdentityCredential", (), expected)
    assert ("user-assigned" if client_id else "system-assigned") in choice.description


def test_azure_cli(credentials):
    choice = build_credential(PUBLIC, _params(auth_source="cli", tenant=TENANT))
    assert choice.credential == Built("AzureCliCredential", (), {"tenant_id": TENANT})


def test_auto_without_secret_or_token_chains_managed_identity_then_cli(credentials):
    choice = build_credential(PUBLIC, _params(client_id=CLIENT, ca_bundle="/ca.pem"))
    assert choice.credential.cls == "Chained"
    managed, cli = choice.credential.args
    assert managed == Built("ManagedIdentityCredential", (), {"client_id": CLIENT, "connection_verify": "/ca.pem"})
    assert cli == Built("AzureCliCredential", (), {"tenant_id": ""})
    assert "managed identity" in choice.description and "Azure CLI" in choice.description


def test_real_sdk_classes_accept_our_keyword_arguments(token_file):
    """No stubs: the keyword arguments we pass must be ones azure-identity accepts."""
    from azure.identity import (
        AzureCliCredential,
        ChainedTokenCredential,
        ClientSecretCredential,
        ManagedIdentityCredential,
        WorkloadIdentityCredential,
    )

    cases = [
        (_params(client_id=CLIENT, secret=SECRET, tenant=TENANT, ca_bundle="/ca.pem"), ClientSecretCredential),
        (_params(client_id=CLIENT, tenant=TENANT, federated_token_file=token_file), WorkloadIdentityCredential),
        (_params(auth_source="msi", client_id=CLIENT, ca_bundle="/ca.pem"), ManagedIdentityCredential),
        (_params(auth_source="cli", tenant=TENANT), AzureCliCredential),
        (_params(), ChainedTokenCredential),
    ]
    for params, expected in cases:
        assert build_credential(LAB, params).credential.__class__ is expected


# --- clouds ----------------------------------------------------------------------------------------------------------------
def test_named_clouds_agree_with_the_sdks():
    authorities = {
        "AzureCloud": AzureAuthorityHosts.AZURE_PUBLIC_CLOUD,
        "AzureUSGovernment": AzureAuthorityHosts.AZURE_GOVERNMENT,
        "AzureChinaCloud": AzureAuthorityHosts.AZURE_CHINA,
    }
    from azure.core import AzureClouds

    settings = {
        "AzureCloud": AzureClouds.AZURE_PUBLIC_CLOUD,
        "AzureUSGovernment": AzureClouds.AZURE_US_GOVERNMENT,
        "AzureChinaCloud": AzureClouds.AZURE_CHINA_CLOUD,
    }
    for name, cloud in KNOWN_CLOUDS.items():
        assert cloud.authority_host == f"https://{authorities[name]}"
        arm = get_arm_endpoints(settings[name])
        assert cloud.resource_manager == arm["resource_manager"]
        assert cloud.credential_scopes == arm["credential_scopes"]


@pytest.mark.parametrize(
    ("value", "name", "keyvault"),
    [
        ("AzureCloud", "AzureCloud", ".vault.azure.net"),
        ("azurecloud", "AzureCloud", ".vault.azure.net"),
        (None, "AzureCloud", ".vault.azure.net"),
        ("AzureUSGovernment", "AzureUSGovernment", ".vault.usgovcloudapi.net"),
        ("AzureChinaCloud", "AzureChinaCloud", ".vault.azure.cn"),
    ],
)
def test_resolve_named_cloud(value, name, keyvault):
    cloud = resolve_cloud(value)
    assert (cloud.name, cloud.keyvault_dns_suffix, cloud.metadata_url) == (name, keyvault, None)


def test_unknown_cloud_name_lists_the_choices():
    with pytest.raises(WorkloadIdentityError, match="AzureCloud, AzureUSGovernment, AzureChinaCloud"):
        resolve_cloud("AzureGermanCloud")


def _metadata(
    name: str, arm: str, login: str, audience: str = "https://management.core.windows.net/", kv="vault.lab.test"
):
    return {
        "name": name,
        "resourceManager": arm,
        "authentication": {"loginEndpoint": login, "audiences": [audience, "https://management.azure.com/"]},
        "suffixes": {"keyVaultDns": kv, "storage": "core.windows.net"},
        "portal": "https://portal.azure.com",
    }


def test_metadata_array_picks_the_cloud_of_the_url_host(http_server):
    other = _metadata("AzureCloud", "https://management.azure.com/", "https://login.microsoftonline.com/")
    lab = _metadata("Lab", f"{http_server.url}/", f"{http_server.url}/", "https://management.lab.test/")
    http_server.json_route("/metadata/endpoints", [other, lab])
    url = f"{http_server.url}/metadata/endpoints?api-version=2022-09-01"
    cloud = resolve_cloud(url)
    assert cloud == AzureCloud(
        name="Lab",
        resource_manager=f"{http_server.url}/",
        authority_host=http_server.url,
        arm_audience="https://management.lab.test/",
        keyvault_dns_suffix=".vault.lab.test",
        metadata_url=url,
    )
    assert cloud.credential_scopes == ["https://management.lab.test/.default"]
    assert http_server.requests[0].method == "GET"
    assert http_server.requests[0].path == "/metadata/endpoints?api-version=2022-09-01"


def test_metadata_array_without_a_host_match_takes_the_first(http_server):
    first = _metadata("AzureCloud", "https://management.azure.com/", "https://login.microsoftonline.com/")
    second = _metadata("AzureChinaCloud", "https://management.chinacloudapi.cn/", "https://login.chinacloudapi.cn/")
    http_server.json_route("/metadata/endpoints", [first, second])
    assert resolve_cloud(f"{http_server.url}/metadata/endpoints?api-version=2022-09-01").name == "AzureCloud"


def test_metadata_single_object_of_older_api_versions(http_server):
    http_server.json_route(
        "/metadata/endpoints",
        _metadata("AzureStack", "https://management.local.azurestack.external/", "https://login.local/"),
    )
    cloud = resolve_cloud(f"{http_server.url}/metadata/endpoints?api-version=2015-01-01")
    assert (cloud.name, cloud.authority_host) == ("AzureStack", "https://login.local")
    assert cloud.credential_scopes == ["https://management.core.windows.net/.default"]


def test_metadata_host_match_prefers_the_port(http_server):
    same_host = _metadata("OtherPort", "http://127.0.0.1:1/", "https://login.one/")
    exact = _metadata("ThisPort", f"{http_server.url}", "https://login.two/")
    http_server.json_route("/metadata/endpoints", [same_host, exact])
    assert resolve_cloud(f"{http_server.url}/metadata/endpoints").name == "ThisPort"


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "holds no cloud object"),
        ({"name": "x"}, "lacks resourceManager, authentication.loginEndpoint, authentication.audiences"),
        (
            {"resourceManager": "https://arm/", "authentication": {"loginEndpoint": "https://l/", "audiences": []}},
            "lacks authentication.audiences",
        ),
    ],
)
def test_metadata_document_problems(http_server, document, problem):
    http_server.json_route("/metadata/endpoints", document)
    with pytest.raises(WorkloadIdentityError) as caught:
        resolve_cloud(f"{http_server.url}/metadata/endpoints")
    assert problem in caught.value.message and caught.value.code == "InvalidCloudMetadata"


def test_metadata_without_keyvault_suffix_is_accepted():
    document = _metadata("NoKv", "https://arm/", "https://login/")
    del document["suffixes"]
    assert cloud_from_metadata(document, "https://arm/metadata/endpoints").keyvault_dns_suffix is None


def test_metadata_http_error_keeps_the_status(http_server):
    http_server.json_route("/metadata/endpoints", {"error": "nope"}, status=404)
    with pytest.raises(WorkloadIdentityError) as caught:
        resolve_cloud(f"{http_server.url}/metadata/endpoints")
    assert caught.value.status == 404
    assert caught.value.message.startswith(f"Failed to read cloud metadata from {http_server.url}/metadata/endpoints")


def test_metadata_that_is_not_json(http_server):
    http_server.routes["/metadata"] = lambda request: (200, {"Content-Type": "text/html"}, b"<html>login</html>")
    with pytest.raises(WorkloadIdentityError, match="not JSON"):
        resolve_cloud(f"{http_server.url}/metadata/endpoints")


def test_metadata_unreachable():
    with pytest.raises(
        WorkloadIdentityError, match=re.escape("Failed to read cloud metadata from http://127.0.0.1:9/")
    ):
        azure_client.fetch_cloud_metadata("http://127.0.0.1:9/metadata/endpoints", timeout=2)


def test_metadata_over_https_honours_the_ca_bundle(https_server, pki):
    https_server.json_route("/metadata/endpoints", [_metadata("Lab", f"{https_server.url}/", f"{https_server.url}/")])
    url = f"{https_server.url}/metadata/endpoints?api-version=2022-09-01"
    with pytest.raises(WorkloadIdentityError) as caught:
        resolve_cloud(url)  # the throwaway CA is in no system store
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message and "ca_bundle" in caught.value.message
    assert resolve_cloud(url, ca_bundle=str(pki.ca_file)).name == "Lab"


# --- error mapping ---------------------------------------------------------------------------------------------------------
class FakeResponse:
    """Just enough of an azure-core HTTP response for HttpResponseError."""

    def __init__(self, status: int, body: t.Any = None, headers: dict[str, str] | None = None, reason: str = "Reason"):
        self.status_code = status
        self.reason = reason
        self.headers = headers or {}
        self._text = body if isinstance(body, str) else json.dumps(body) if body is not None else ""
        self.content_type = "application/json; charset=utf-8"
        self.request = None

    def text(self, encoding: str | None = None) -> str:
        return self._text

    def body(self) -> bytes:
        return self._text.encode()


def arm_error(status: int, code: str, message: str, cls: type = HttpResponseError, **headers: str) -> HttpResponseError:
    return cls(response=FakeResponse(status, {"error": {"code": code, "message": message}}, headers))


RG_NOT_FOUND = "Resource group 'rg1' could not be found."


def test_arm_error_body_gives_code_status_and_message():
    exc = arm_error(404, "ResourceGroupNotFound", RG_NOT_FOUND, ResourceNotFoundError)
    error = azure_error(exc, "read managed identity", "'id1' in resource group 'rg1'")
    assert (
        error.message
        == f"Failed to read managed identity 'id1' in resource group 'rg1': ResourceGroupNotFound: {RG_NOT_FOUND}"
    )
    assert (error.code, error.status, error.target, error.original) == (
        "ResourceGroupNotFound",
        404,
        "'id1' in resource group 'rg1'",
        exc,
    )
    assert "ResourceNotFoundError" in error.to_fail_kwargs()["exception"]


@pytest.mark.parametrize(
    ("status", "code", "not_found"),
    [
        (404, "ResourceNotFound", True),
        (404, "ResourceGroupNotFound", True),
        (404, "ParentResourceNotFound", True),
        (404, "SecretNotFound", True),
        (404, "InvalidResourceType", False),
        (400, "ResourceNotFound", False),
        (409, "Conflict", False),
    ],
)
def test_not_found_detection(status, code, not_found):
    assert is_azure_not_found(arm_error(status, code, "m")) is not_found


def test_not_found_without_a_body():
    assert is_azure_not_found(ResourceNotFoundError(response=FakeResponse(404, "", reason="Not Found")))


def test_azure_call_reads_none_when_not_found_and_names_the_target_otherwise():
    assert azure_call(lambda: {"name": "id1"}, "read managed identity", "'id1'", none_if_not_found=True) == {
        "name": "id1"
    }
    gone = _raiser(arm_error(404, "ResourceNotFound", "gone"))
    assert azure_call(gone, "read managed identity", "'id1'", none_if_not_found=True) is None
    with pytest.raises(WorkloadIdentityError) as caught:
        azure_call(
            _raiser(arm_error(404, "InvalidResourceType", "no such type")),
            "read managed identity",
            "'id1' in resource group 'rg1'",
            none_if_not_found=True,
        )
    assert (
        caught.value.message
        == "Failed to read managed identity 'id1' in resource group 'rg1': InvalidResourceType: no such type"
    )


def test_azure_call_functional_form():
    def boom():
        raise arm_error(403, "AuthorizationFailed", "no access")

    assert azure_call(lambda: 42, "x") == 42
    with pytest.raises(WorkloadIdentityError, match="Failed to list role assignments: AuthorizationFailed: no access"):
        azure_call(boom, "list role assignments")
    assert azure_call(_raiser(arm_error(404, "NotFound", "m")), "x", none_if_not_found=True) is None


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (
            arm_error(409, "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity", "Too many"),
            azure_client.CODE_CONCURRENT_FIC_WRITES,
        ),
        (arm_error(400, "PrincipalNotFound", "Principal x does not exist"), azure_client.CODE_PRINCIPAL_NOT_FOUND),
        (HttpResponseError(response=FakeResponse(502, "<html>bad gateway</html>")), "HttpResponseError"),
        (ValueError("not azure"), None),
    ],
)
def test_error_codes_for_retry_predicates(exc, code):
    assert azure_error_code(exc) == code


def test_throttling_exposes_retry_after():
    exc = arm_error(429, "SubscriptionRequestsThrottled", "slow down", **{"Retry-After": "17"})
    assert retry_after_from_exception(exc) == 17.0


def test_entra_error_body_gives_the_aadsts_code():
    body = {
        "error": "invalid_client",
        "error_description": "AADSTS700211: No matching federated identity record found for presented assertion issuer 'https://x/'.",
        "error_codes": [700211],
    }
    exc = ClientAuthenticationError(response=FakeResponse(400, body))
    error = azure_error(exc, "get a token for", "workload identity 'c'")
    assert error.code == "AADSTS700211" and error.status == 400
    assert error.message.startswith("Failed to get a token for workload identity 'c': AADSTS700211: No matching")


def test_azure_identity_message_gives_the_aadsts_code():
    exc = ClientAuthenticationError(
        message="ClientSecretCredential.get_token failed: Authentication failed: AADSTS7000215: Invalid client secret provided."
    )
    assert azure_error(exc, "authenticate").code == "AADSTS7000215"


def test_credential_unavailable():
    exc = CredentialUnavailableError(
        message="ManagedIdentityCredential authentication unavailable, no response from IMDS"
    )
    error = azure_error(exc, "read cluster", "'c1'")
    assert error.code == "CredentialUnavailable"
    assert error.message == (
        "Failed to read cluster 'c1': CredentialUnavailable: ManagedIdentityCredential authentication unavailable, "
        "no response from IMDS"
    )


def test_tls_failure_hints_at_the_ca_bundle():
    exc = ServiceRequestError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer")
    error = azure_error(exc, "read cluster", "'c1'")
    assert error.code == "ServiceRequestError" and "set ca_bundle or AZURE_CA_BUNDLE" in error.message


def test_non_json_error_body():
    error = azure_error(HttpResponseError(response=FakeResponse(502, "<html/>", reason="Bad Gateway")), "read", "'x'")
    assert (error.code, error.status) == ("HttpResponseError", 502)
    assert "Bad Gateway" in error.message


def test_workload_identity_errors_pass_through():
    original = WorkloadIdentityError("already mapped", code="X")
    assert azure_error(original, "y") is original


# --- long-running operations -----------------------------------------------------------------------------------------------
class ScriptedPolling(PollingMethod):
    """A polling method that ends as told: 'Succeeded', 'Failed' (with or without an error body), or never."""

    def __init__(self, outcome: str, body: t.Any = None):
        self.outcome = outcome
        self.body = body
        self._status = "InProgress"
        self.release = threading.Event()

    def initialize(self, client, initial_response, deserialization_callback):
        self._deserialize = deserialization_callback

    def run(self):
        if self.outcome == "never":
            self.release.wait(5)
            return
        self._status = self.outcome
        if self.outcome != "Succeeded":
            raise HttpResponseError(response=FakeResponse(200, self.body, reason="OK"))

    def status(self):
        return self._status

    def finished(self):
        return self._status in ("Succeeded", "Failed", "Canceled")

    def resource(self):
        return self._deserialize({"name": "c1", "provisioningState": "Succeeded"})


def _poller(polling: ScriptedPolling) -> LROPoller:
    return LROPoller(None, None, lambda body: body, polling)


def test_lro_success_returns_the_result():
    assert wait_for_lro(_poller(ScriptedPolling("Succeeded")), 5, "create cluster 'c1'") == {
        "name": "c1",
        "provisioningState": "Succeeded",
    }


def test_lro_failure_carries_the_operation_error():
    body = {"status": "Failed", "error": {"code": "OIDCIssuerFeatureCannotBeDisabled", "message": "not supported"}}
    with pytest.raises(WorkloadIdentityError) as caught:
        wait_for_lro(_poller(ScriptedPolling("Failed", body)), 5, "update cluster 'c1'")
    assert caught.value.code == "OIDCIssuerFeatureCannotBeDisabled"
    assert caught.value.message == "Failed to update cluster 'c1': OIDCIssuerFeatureCannotBeDisabled: not supported"


@pytest.mark.parametrize("state", ["Failed", "Canceled"])
def test_lro_failure_without_an_error_body(state):
    with pytest.raises(WorkloadIdentityError) as caught:
        wait_for_lro(_poller(ScriptedPolling(state, {"status": state})), 5, "update cluster 'c1'")
    assert caught.value.code == f"Operation{state}"
    assert caught.value.message == f"Failed to update cluster 'c1': Operation{state}: the operation ended as {state}"


def test_lro_timeout():
    polling = ScriptedPolling("never")
    try:
        with pytest.raises(WorkloadIdentityError) as caught:
            wait_for_lro(_poller(polling), 0.2, "create cluster 'c1'")
    finally:
        polling.release.set()
    assert caught.value.code == "OperationTimeout"
    assert caught.value.message.startswith("Timed out after 0.2 seconds waiting to create cluster 'c1'")
    assert "'InProgress'" in caught.value.message


# --- the module base -------------------------------------------------------------------------------------------------------
def _module(args: dict[str, t.Any]) -> AzureModule:
    with module_args(args):
        return AzureModule()


def test_subscription_id_is_required_and_checked():
    with pytest.raises(WorkloadIdentityError, match="subscription_id is required"):
        assert not _module({}).subscription_id
    assert _module({"subscription_id": SUB}).subscription_id == SUB


def test_subscription_from_the_azure_cli(monkeypatch):
    azure = _module({"auth_source": "cli"})
    monkeypatch.setattr(azure.module, "get_bin_path", lambda name: "/usr/bin/az")
    calls = []

    def run_command(argv):
        calls.append(argv)
        return 0, json.dumps({"id": SUB, "tenantId": TENANT}), ""

    monkeypatch.setattr(azure.module, "run_command", run_command)
    assert azure.subscription_id == SUB
    assert calls == [["/usr/bin/az", "account", "show", "--output", "json"]]


@pytest.mark.parametrize(
    ("attribute", "class_name"),
    [
        ("containerservice", "ContainerServiceClient"),
        ("msi", "ManagedServiceIdentityClient"),
        ("authorization", "AuthorizationManagementClient"),
        ("keyvault_mgmt", "KeyVaultManagementClient"),
        ("resources", "ResourceManagementClient"),
    ],
)
def test_management_clients_get_the_cloud_and_transport_settings(monkeypatch, credentials, attribute, class_name):
    recorder = Recorder(class_name)
    monkeypatch.setattr(azure_client, class_name, recorder)
    azure = _module(
        {"subscription_id": SUB, "client_id": CLIENT, "secret": SECRET, "tenant": TENANT, "ca_bundle": "/ca.pem"}
    )
    azure._cloud = LAB
    client = getattr(azure, attribute)
    assert getattr(azure, attribute) is client  # built once
    assert len(recorder.calls) == 1
    (credential, subscription), kwargs = recorder.calls[0]
    assert credential.cls == "ClientSecretCredential" and subscription == SUB
    assert kwargs == {
        "base_url": "https://127.0.0.1:8443/",
        "credential_scopes": ["https://management.lab.test/.default"],
        "polling_interval": 5.0,
        "user_agent": "ansible-aks.workload_identity",
        # one pacer for every client of the run: a 429 to one worker paces them all (pacing.py)
        "raw_request_hook": azure.pacer.request_hook,
        "raw_response_hook": azure.pacer.response_hook,
        "retry_total": 6,
        "retry_backoff_factor": 1.0,
        "retry_backoff_max": 30,
        "connection_verify": "/ca.pem",
    }


def test_real_management_clients_are_configured():
    """No stubs: the SDK clients really take our endpoint, scopes, polling interval and retry budget."""
    azure = _module(
        {"subscription_id": SUB, "client_id": CLIENT, "secret": SECRET, "tenant": TENANT, "lro_polling_interval": 1.5}
    )
    azure._cloud = LAB
    for attribute in ("containerservice", "msi", "authorization", "keyvault_mgmt", "resources"):
        client = getattr(azure, attribute)
        config = client._config
        assert config.credential_scopes == ["https://management.lab.test/.default"]
        assert config.retry_policy.total_retries == 6
        if hasattr(config, "polling_interval"):
            assert config.polling_interval == 1.5


def test_missing_sdk_package_fails_with_missing_required_lib(monkeypatch, capsys):
    monkeypatch.setitem(azure_client.IMPORT_ERRORS, "azure-mgmt-msi", "Traceback: No module named 'azure.mgmt.msi'")
    with module_args({"subscription_id": SUB}):
        azure = AzureModule()
        result = failure(capsys, lambda: azure.msi)
    assert result["failed"] and "azure-mgmt-msi" in result["msg"]


def test_fail_masks_the_secret_and_reports_code_and_status(capsys):
    error = WorkloadIdentityError(f"Failed to x: echoed {SECRET}", code="Conflict", status=409)
    with module_args({"secret": SECRET}):
        result = failure(capsys, lambda: AzureModule().fail(error))
    assert SECRET not in json.dumps(result)
    assert (result["error_code"], result["status"]) == ("Conflict", 409)


def test_fail_names_the_credential_on_authentication_errors(capsys, credentials):
    exc = ClientAuthenticationError(message="AADSTS7000215: Invalid client secret provided.")
    with module_args({"client_id": CLIENT, "secret": SECRET, "tenant": TENANT}):
        azure = AzureModule()
        assert azure.credential is not None
        result = failure(capsys, lambda: azure.fail(azure_error(exc, "read cluster", "'c1'")))
    assert result["error_code"] == "AADSTS7000215"
    assert result["msg"].endswith(
        f"(authenticating as service principal '{CLIENT}' (client secret) in tenant '{TENANT}')"
    )


def test_keyvault_url_from_a_vault_name():
    azure = _module({})
    assert azure.keyvault_url("kv1") == "https://kv1.vault.azure.net/"
    assert azure.keyvault_url("https://kv1.vault.azure.net/") == "https://kv1.vault.azure.net/"
    azure._cloud = AzureCloud("NoKv", "https://arm/", "https://login", "https://arm", None, "https://arm/metadata")
    with pytest.raises(WorkloadIdentityError, match="no Key Vault DNS suffix"):
        azure.keyvault_url("kv1")


@pytest.mark.parametrize(
    ("cloud", "vault", "verify"),
    [
        (PUBLIC, "https://kv1.vault.azure.net/", True),
        (PUBLIC, "https://127.0.0.1:8445/", True),
        (LAB, "https://kv1.vault.lab.test/", True),
        (LAB, "https://127.0.0.1:8445/", False),
    ],
)
def test_secret_client_keeps_the_challenge_check_except_for_custom_clouds(
    monkeypatch, credentials, cloud, vault, verify
):
    recorder = Recorder("SecretClient")
    monkeypatch.setattr(azure_client, "SecretClient", recorder)
    azure = _module({"client_id": CLIENT, "secret": SECRET, "tenant": TENANT, "ca_bundle": "/ca.pem"})
    azure._cloud = cloud
    azure.keyvault_secret_client(vault)
    (url, _credential), kwargs = recorder.calls[0]
    assert url == vault
    assert kwargs["verify_challenge_resource"] is verify and kwargs["connection_verify"] == "/ca.pem"


# --- end to end over real HTTPS: metadata -> Entra token -> ARM -----------------------------------------------------------
def test_service_principal_against_a_custom_cloud_over_https(https_server, pki):
    base = https_server.url
    https_server.json_route(
        "/metadata/endpoints", [_metadata("Lab", f"{base}/", f"{base}/", "https://management.lab.test/")]
    )
    https_server.json_route(
        f"/{TENANT}/v2.0/.well-known/openid-configuration",
        {
            "issuer": f"{base}/{TENANT}/v2.0",
            "authorization_endpoint": f"{base}/{TENANT}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/{TENANT}/oauth2/v2.0/token",
        },
    )
    https_server.json_route(
        f"/{TENANT}/oauth2/v2.0/token", {"token_type": "Bearer", "expires_in": 3600, "access_token": "lab-token"}
    )
    rg = f"/subscriptions/{SUB}/resourcegroups"
    https_server.json_route(
        f"{rg}/present", {"id": f"{rg}/present", "name": "present", "location": "westus", "properties": {}}
    )
    https_server.json_route(f"{rg}/absent", {"error": {"code": "ResourceGroupNotFound", "message": "gone"}}, 404)

    azure = _module(
        {
            "cloud_environment": f"{base}/metadata/endpoints?api-version=2022-09-01",
            "ca_bundle": str(pki.ca_file),
            "subscription_id": SUB,
            "client_id": CLIENT,
            "secret": SECRET,
            "tenant": TENANT,
        }
    )
    get = azure.resources.resource_groups.get
    assert azure_call(lambda: get("absent"), "read resource group", "'absent'", none_if_not_found=True) is None
    assert get("present").name == "present"

    token_requests = [r for r in https_server.requests if r.path.endswith("/oauth2/v2.0/token")]
    form = urllib.parse.parse_qs(token_requests[0].body.decode())
    assert form["scope"] == ["https://management.lab.test/.default"]
    assert form["client_id"] == [CLIENT] and form["grant_type"] == ["client_credentials"]
    arm_requests = [r for r in https_server.requests if r.path.startswith("/subscriptions/")]
    assert {r.headers["authorization"] for r in arm_requests} == {"Bearer lab-token"}
    assert all("ansible-aks.workload_identity" in r.headers["user-agent"] for r in arm_requests)
    assert not any("discovery/instance" in r.path for r in https_server.requests)


def test_shares_the_ansible_module_of_a_k8s_module():
    from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8sModule

    with module_args({"subscription_id": SUB, "host": "https://api:6443"}):
        k8s = K8sModule(AZURE_AUTH_ARGSPEC)
        azure = AzureModule(module=k8s.module)
    assert azure.module is k8s.module and azure.subscription_id == SUB


def test_module_without_the_azure_options_is_refused(capsys):
    from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8sModule

    with module_args({}):
        k8s = K8sModule()
        result = failure(capsys, lambda: AzureModule(module=k8s.module))
    assert "lacks AZURE_AUTH_ARGSPEC" in result["msg"]


@pytest.mark.parametrize(("value", "expected"), [(0.5, 0.5), (2, 2.0)])
def test_polling_interval(value, expected):
    assert _module({"lro_polling_interval": value}).polling_interval == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"subscription_id": "prod"}, "subscription_id: must be a GUID"),
        ({"client_id": "my-app"}, "client_id: must be a GUID"),
        ({"tenant": "contoso"}, "tenant: must be the tenant's GUID or one of its domain names"),
        ({"tenant": "a b.example"}, "tenant: must be the tenant's GUID"),
        ({"cloud_environment": "AzurePublic"}, "cloud_environment: must be one of AzureCloud"),
        ({"cloud_environment": "http://metadata.example/endpoints"}, "cloud_environment: must be an https URL"),
        ({"cloud_environment": "https://metadata.example/x#frag"}, "cloud_environment: must not have a fragment"),
        ({"authority_host": "https://login.example/?x=1"}, "authority_host: must not have a query"),
        ({"authority_host": "https://login.example:port"}, "authority_host: is not a valid URL"),
        ({"lro_polling_interval": 0}, "lro_polling_interval: must be a positive number"),
        ({"lro_polling_interval": -1}, "lro_polling_interval: must be a positive number"),
    ],
)
def test_auth_options_are_checked_before_any_request(capsys, args, expected):
    with module_args(args):
        result = failure(capsys, AzureModule)
    assert result["msg"].startswith("Invalid input: ") and expected in result["msg"]


@pytest.mark.parametrize(
    "args",
    [
        {"tenant": TENANT, "client_id": CLIENT, "subscription_id": SUB},
        {"tenant": "contoso.onmicrosoft.com"},
        {"cloud_environment": "azureusgovernment"},
        {"cloud_environment": "https://management.azure.com/metadata/endpoints?api-version=2022-09-01"},
        {"authority_host": "login.microsoftonline.us"},
        {"authority_host": "https://login.microsoftonline.com/"},
    ],
)
def test_good_auth_options_pass(args):
    with module_args(args):
        assert AzureModule().params
