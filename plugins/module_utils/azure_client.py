# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Base of every Azure module in this collection: options, credentials, cloud endpoints, clients, errors, LROs.

Private to this collection. Modules build an ``AzureModule`` (composition: it owns an ``AnsibleModule``), hand it
to the gateways (which make every SDK call through ``azure_call``) and keep one ``try/except
WorkloadIdentityError`` in ``main()`` that ends in ``azure.fail(exc)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import ssl
import tempfile
import threading
import traceback
import typing as t
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib
from ansible.module_utils.urls import ConnectionError as UrlConnectionError
from ansible.module_utils.urls import open_url

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import (
    WorkloadIdentityError,
    describe_failure,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways import ApiCalls
from ansible_collections.aks.workload_identity.plugins.module_utils.inputs import new_module
from ansible_collections.aks.workload_identity.plugins.module_utils.pacing import Pacer
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ENV_KUBERNETES_CA_FILE,
    ENV_KUBERNETES_SNI_NAME,
    ENV_KUBERNETES_TOKEN_PROXY,
    is_uuid,
)

IMPORT_ERRORS: dict[str, str] = {}  # pip package name -> traceback of the failed import

try:
    from azure.identity import __version__ as AZURE_IDENTITY_VERSION
except ImportError:
    AZURE_IDENTITY_VERSION = None

try:
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )
    from azure.identity import (
        AzureCliCredential,
        ChainedTokenCredential,
        ClientAssertionCredential,
        ClientSecretCredential,
        ManagedIdentityCredential,
        WorkloadIdentityCredential,
    )
except ImportError:
    IMPORT_ERRORS["azure-identity"] = traceback.format_exc()

    class _AzureSdkMissing(Exception):
        """Stands in for the azure-core exception classes so ``isinstance`` checks stay valid."""

    AzureError = ClientAuthenticationError = HttpResponseError = _AzureSdkMissing
    ServiceRequestError = ServiceResponseError = _AzureSdkMissing
    AzureCliCredential = ChainedTokenCredential = ClientAssertionCredential = ClientSecretCredential = None
    ManagedIdentityCredential = WorkloadIdentityCredential = None

try:
    from azure.mgmt.containerservice import ContainerServiceClient
except ImportError:
    ContainerServiceClient = None
    IMPORT_ERRORS["azure-mgmt-containerservice"] = traceback.format_exc()

try:
    from azure.mgmt.msi import ManagedServiceIdentityClient
except ImportError:
    ManagedServiceIdentityClient = None
    IMPORT_ERRORS["azure-mgmt-msi"] = traceback.format_exc()

try:
    from azure.mgmt.authorization import AuthorizationManagementClient
except ImportError:
    AuthorizationManagementClient = None
    IMPORT_ERRORS["azure-mgmt-authorization"] = traceback.format_exc()

try:
    from azure.mgmt.keyvault import KeyVaultManagementClient
except ImportError:
    KeyVaultManagementClient = None
    IMPORT_ERRORS["azure-mgmt-keyvault"] = traceback.format_exc()

try:
    # azure-mgmt-resource 24+ dropped the top-level re-export; the subpackage path works in every version.
    from azure.mgmt.resource.resources import ResourceManagementClient
except ImportError:
    ResourceManagementClient = None
    IMPORT_ERRORS["azure-mgmt-resource"] = traceback.format_exc()

try:
    from azure.keyvault.secrets import SecretClient
except ImportError:
    SecretClient = None
    IMPORT_ERRORS["azure-keyvault-secrets"] = traceback.format_exc()


USER_AGENT = "ansible-aks.workload_identity"
AUTH_SOURCES = ("auto", "env", "cli", "msi", "workload_identity")
DEFAULT_POLLING_INTERVAL = 5.0  # seconds between LRO polls when the service sends no Retry-After (SDK: 30)
METADATA_TIMEOUT = 30

# azure-core's RetryPolicy already retries connection errors and 408/429/500/502/503/504 (any status when a
# Retry-After header is present), honouring Retry-After, for idempotent methods (POST/PATCH only on 500/503/504).
# We set it explicitly to a budget that suits one Ansible task instead of the SDK's 10 tries up to 120 s apart;
# errors.retry() is only for the service errors it does not retry (see the codes below).
RETRY_POLICY_KWARGS: dict[str, t.Any] = {"retry_total": 6, "retry_backoff_factor": 1.0, "retry_backoff_max": 30}

# Codes the reconcilers retry with errors.retry(), because azure-core treats them as final:
# azure-behaviour §4 - 409 when two federated credentials under one identity are written at once.
CODE_CONCURRENT_FIC_WRITES = "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity"
# azure-behaviour §9 - 400 for a role assignment to a principal created moments ago (Entra replication delay).
CODE_PRINCIPAL_NOT_FOUND = "PrincipalNotFound"
# azure-behaviour §4 - 404 for a federated credential on an identity created moments ago.
CODE_PARENT_NOT_FOUND = "ParentResourceNotFound"

# Codes of a 404 that mean "the object is not there" (reads turn them into None). Other 404s, such as
# InvalidResourceType (unknown type or api-version), are real errors.
NOT_FOUND_CODES = frozenset(
    {"ResourceNotFound", "ResourceGroupNotFound", "ParentResourceNotFound", "NotFound", "SecretNotFound"}
)

AZURE_AUTH_ARGSPEC: dict[str, dict[str, t.Any]] = {
    "auth_source": {
        "type": "str",
        "choices": list(AUTH_SOURCES),
        "default": "auto",
        "fallback": (env_fallback, ["ANSIBLE_AZURE_AUTH_SOURCE"]),
    },
    "subscription_id": {"type": "str", "fallback": (env_fallback, ["AZURE_SUBSCRIPTION_ID"])},
    "client_id": {"type": "str", "fallback": (env_fallback, ["AZURE_CLIENT_ID"])},
    # AWX's "Microsoft Azure Resource Manager" credential injects the first name, azure-identity reads the second.
    "secret": {"type": "str", "no_log": True, "fallback": (env_fallback, ["AZURE_SECRET", "AZURE_CLIENT_SECRET"])},
    "tenant": {"type": "str", "fallback": (env_fallback, ["AZURE_TENANT", "AZURE_TENANT_ID"])},
    "federated_token_file": {
        "type": "path",
        "no_log": False,
        "fallback": (env_fallback, ["AZURE_FEDERATED_TOKEN_FILE"]),
    },
    "cloud_environment": {
        "type": "str",
        "default": "AzureCloud",
        "fallback": (env_fallback, ["AZURE_CLOUD_ENVIRONMENT"]),
    },
    "authority_host": {"type": "str", "fallback": (env_fallback, ["AZURE_AUTHORITY_HOST"])},
    "disable_instance_discovery": {"type": "bool"},
    "ca_bundle": {"type": "path", "fallback": (env_fallback, ["AZURE_CA_BUNDLE", "REQUESTS_CA_BUNDLE"])},
    "lro_polling_interval": {"type": "float", "default": DEFAULT_POLLING_INTERVAL},
}


# --- Clouds -----------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class AzureCloud:
    """The endpoints of one Azure cloud this collection needs."""

    name: str
    resource_manager: str  # ARM base URL
    authority_host: str  # Entra login endpoint, https://host
    arm_audience: str  # resource of ARM tokens
    keyvault_dns_suffix: str | None  # ".vault.azure.net"
    metadata_url: str | None = None  # set when resolved from an ARM metadata document

    @property
    def credential_scopes(self) -> list[str]:
        return [f"{self.arm_audience.rstrip('/')}/.default"]

    def to_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)


# The audiences are the scopes azure-mgmt-core's get_arm_endpoints() uses; the authority hosts equal
# azure.identity.AzureAuthorityHosts (a unit test keeps them equal); Key Vault suffixes as in azure-cli's cloud.py.
KNOWN_CLOUDS: dict[str, AzureCloud] = {
    "AzureCloud": AzureCloud(
        name="AzureCloud",
        resource_manager="https://management.azure.com/",
        authority_host="https://login.microsoftonline.com",
        arm_audience="https://management.azure.com",
        keyvault_dns_suffix=".vault.azure.net",
    ),
    "AzureUSGovernment": AzureCloud(
        name="AzureUSGovernment",
        resource_manager="https://management.usgovcloudapi.net/",
        authority_host="https://login.microsoftonline.us",
        arm_audience="https://management.core.usgovcloudapi.net",
        keyvault_dns_suffix=".vault.usgovcloudapi.net",
    ),
    "AzureChinaCloud": AzureCloud(
        name="AzureChinaCloud",
        resource_manager="https://management.chinacloudapi.cn/",
        authority_host="https://login.chinacloudapi.cn",
        arm_audience="https://management.chinacloudapi.cn",
        keyvault_dns_suffix=".vault.azure.cn",
    ),
}


def is_metadata_url(cloud_environment: str | None) -> bool:
    return bool(cloud_environment) and cloud_environment.lower().startswith(("https://", "http://"))


def resolve_cloud(cloud_environment: str | None, ca_bundle: str | None = None) -> AzureCloud:
    """A named cloud (case-insensitive) or the cloud an ARM metadata URL describes."""
    value = (cloud_environment or "AzureCloud").strip()
    if is_metadata_url(value):
        return cloud_from_metadata(fetch_cloud_metadata(value, ca_bundle), value)
    for name, cloud in KNOWN_CLOUDS.items():
        if name.lower() == value.lower():
            return cloud
    raise WorkloadIdentityError(
        f"Unknown cloud_environment {value!r}: use one of {', '.join(KNOWN_CLOUDS)} or an ARM metadata URL "
        "such as https://management.azure.com/metadata/endpoints?api-version=2022-09-01",
        code="UnknownCloud",
    )


def fetch_cloud_metadata(url: str, ca_bundle: str | None = None, timeout: float = METADATA_TIMEOUT) -> t.Any:
    """GET the ARM metadata document, trusting only ``ca_bundle`` when it is given."""
    try:
        response = open_url(
            url, method="GET", headers={"Accept": "application/json"}, ca_path=ca_bundle, timeout=timeout
        )
        body = response.read()
    except HTTPError as exc:
        raise WorkloadIdentityError(
            describe_failure("read cloud metadata from", url, f"HTTP {exc.code}", str(exc.reason)),
            code=f"HTTP{exc.code}",
            status=exc.code,
            target=url,
            exception=exc,
        ) from exc
    except (URLError, UrlConnectionError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        message = str(reason)
        if "CERTIFICATE_VERIFY_FAILED" in message:
            message += " (set ca_bundle or AZURE_CA_BUNDLE to the CA bundle that signed the endpoint's certificate)"
        raise WorkloadIdentityError(
            describe_failure("read cloud metadata from", url, None, message), target=url, exception=exc
        ) from exc
    try:
        return json.loads(body)
    except ValueError as exc:
        raise WorkloadIdentityError(
            describe_failure("read cloud metadata from", url, None, f"the answer is not JSON ({exc})"),
            target=url,
            exception=exc,
        ) from exc


def cloud_from_metadata(document: t.Any, url: str) -> AzureCloud:
    """Pick and read one cloud from an ARM ``/metadata/endpoints`` document.

    azure-cli (src/azure-cli-core/azure/cli/core/cloud.py, ``_convert_arm_to_cli`` / ``_arm_to_cli_mapper``)
    reads the document as a JSON array of clouds and takes ``name``, ``resourceManager``,
    ``authentication.loginEndpoint``, ``authentication.audiences[0]`` and ``suffixes.keyVaultDns`` (adding a
    leading dot); hashicorp/go-azure-sdk's ``sdk/environments/metadata`` client decodes a single object of the
    same shape. We accept both: from an array, the cloud whose resourceManager host is the URL's host, else the
    only or first one.
    """
    candidates = document if isinstance(document, list) else [document]
    candidates = [c for c in candidates if isinstance(c, dict)]
    if not candidates:
        raise _metadata_error(url, "it holds no cloud object")
    chosen = _match_cloud_by_host(candidates, url)
    authentication = chosen.get("authentication") or {}
    audiences = authentication.get("audiences") or []
    missing = [
        key
        for key, value in (
            ("resourceManager", chosen.get("resourceManager")),
            ("authentication.loginEndpoint", authentication.get("loginEndpoint")),
            ("authentication.audiences", audiences[0] if isinstance(audiences, list) and audiences else None),
        )
        if not isinstance(value, str) or not value
    ]
    if missing:
        raise _metadata_error(url, f"the cloud lacks {', '.join(missing)}")
    keyvault_dns = (chosen.get("suffixes") or {}).get("keyVaultDns")
    if keyvault_dns and not keyvault_dns.startswith("."):
        keyvault_dns = f".{keyvault_dns}"
    return AzureCloud(
        name=str(chosen.get("name") or urlsplit(url).hostname or "custom"),
        resource_manager=chosen["resourceManager"],
        authority_host=authentication["loginEndpoint"].rstrip("/"),
        arm_audience=audiences[0],
        keyvault_dns_suffix=keyvault_dns or None,
        metadata_url=url,
    )


def _match_cloud_by_host(candidates: list[dict[str, t.Any]], url: str) -> dict[str, t.Any]:
    wanted = urlsplit(url)
    for attribute in ("netloc", "hostname"):
        for cloud in candidates:
            manager = urlsplit(str(cloud.get("resourceManager") or ""))
            if (getattr(manager, attribute) or "").lower() == (getattr(wanted, attribute) or "").lower():
                return cloud
    return candidates[0]


def _metadata_error(url: str, problem: str) -> WorkloadIdentityError:
    return WorkloadIdentityError(
        describe_failure("read cloud metadata from", url, "InvalidCloudMetadata", problem),
        code="InvalidCloudMetadata",
        target=url,
    )


# --- Auth options -----------------------------------------------------------------------------------------------
# A tenant is named by its GUID or one of its domains (contoso.onmicrosoft.com); azure-identity accepts only these
# characters in a tenant (azure/identity/_internal/__init__.py, validate_tenant_id).
_TENANT_DOMAIN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$")


def validate_auth_options(params: t.Mapping[str, t.Any]) -> list[str]:
    """ "option: rule" messages for the Azure auth options that were given (or came from the environment); checked
    before the first request, so a typo never reaches Entra as a failed sign-in."""
    errors = []
    for name in ("subscription_id", "client_id"):
        value = params.get(name)
        if value and not is_uuid(value):
            errors.append(f"{name}: must be a GUID like 00000000-0000-0000-0000-000000000000")
    tenant = params.get("tenant")
    if tenant and not (is_uuid(tenant) or _TENANT_DOMAIN.match(tenant)):
        errors.append("tenant: must be the tenant's GUID or one of its domain names, such as contoso.onmicrosoft.com")
    cloud = params.get("cloud_environment")
    if cloud and not is_metadata_url(cloud) and cloud.strip().lower() not in {n.lower() for n in KNOWN_CLOUDS}:
        errors.append(f"cloud_environment: must be one of {', '.join(KNOWN_CLOUDS)} or an ARM metadata URL")
    elif cloud and is_metadata_url(cloud):
        errors += _url_errors(cloud, "cloud_environment", query=True)
    authority = params.get("authority_host")
    if authority:
        errors += _url_errors(authority if "://" in authority else f"https://{authority}", "authority_host")
    interval = params.get("lro_polling_interval")
    if interval is not None and not interval > 0:
        errors.append("lro_polling_interval: must be a positive number of seconds")
    return errors


def _url_errors(value: str, field: str, *, query: bool = False) -> list[str]:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return [f"{field}: is not a valid URL"]
    if parts.scheme != "https" or not parts.hostname:
        return [f"{field}: must be an https URL with a host name"]
    if parts.fragment or (parts.query and not query):
        return [f"{field}: must not have a {'fragment' if parts.fragment else 'query'}"]
    return []


# --- Credentials ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CredentialChoice:
    """The credential built for a run and a sentence saying which it is (for errors; never holds secrets)."""

    credential: t.Any
    description: str


def credential_kwargs(cloud: AzureCloud, params: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """Keyword arguments every Entra-talking credential gets: authority, instance discovery, CA bundle."""
    disable = params.get("disable_instance_discovery")
    if disable is None:
        # MSAL asks login.microsoftonline.com to vouch for an authority it does not know; a custom cloud's
        # authority (Azure Stack, an emulator) is unknown there, so skip that call for metadata URLs.
        disable = cloud.metadata_url is not None
    kwargs: dict[str, t.Any] = {
        "authority": (params.get("authority_host") or cloud.authority_host).rstrip("/"),
        "disable_instance_discovery": bool(disable),
    }
    kwargs.update(transport_kwargs(params))
    return kwargs


def assertion_credential(
    cloud: AzureCloud, params: t.Mapping[str, t.Any], tenant_id: str, client_id: str, assertion: str
) -> t.Any:
    """A credential that exchanges ``assertion`` (a ServiceAccount token) for the identity ``client_id``'s Entra
    tokens, as the workload's own SDK does, with the module's cloud and CA settings."""
    return ClientAssertionCredential(tenant_id, client_id, lambda: assertion, **credential_kwargs(cloud, params))


# --- The AKS token proxy of identity bindings (azure-behaviour §10) ---------------------------------------------
# azure-identity 1.27.0 is the first stable release with WorkloadIdentityCredential(enable_azure_proxy=True); older
# ones do not know the keyword and would send the token to Entra ID directly, which proves nothing about the proxy.
TOKEN_PROXY_AZURE_IDENTITY = (1, 27, 0)
ENV_KUBERNETES_CA_DATA = "AZURE_KUBERNETES_CA_DATA"
TOKEN_PROXY_ENVIRONMENT = (
    ENV_KUBERNETES_TOKEN_PROXY,
    ENV_KUBERNETES_SNI_NAME,
    ENV_KUBERNETES_CA_FILE,
    ENV_KUBERNETES_CA_DATA,
)
# The proxy is in-cluster on AKS (upstream's e2e: https://kubernetes.default.svc): from elsewhere a connection
# should fail in seconds, not after azure-core's 300 s connection timeout retried three times.
TOKEN_PROXY_CONNECTION_TIMEOUT = 10
TOKEN_PROXY_CONNECTION_RETRIES = 1
# WorkloadIdentityCredential reads the proxy settings from os.environ, once, in its constructor: one construction
# at a time, so that threads proving several workloads never see each other's settings.
_PROXY_ENVIRONMENT_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class TokenProxy:
    """What the webhook injects into a pod that uses an identity binding: the proxy's URL
    (AZURE_KUBERNETES_TOKEN_PROXY), the TLS server name (AZURE_KUBERNETES_SNI_NAME) and the CA, either as the content
    of the file AZURE_KUBERNETES_CA_FILE names (the projected ConfigMap's key) or as AZURE_KUBERNETES_CA_DATA."""

    endpoint: str
    sni_name: str | None = None
    ca_file_content: str | None = None
    ca_data: str | None = None


def token_proxy_unsupported(version: str | None = AZURE_IDENTITY_VERSION) -> str | None:
    """Why the installed azure-identity cannot send a token request through the AKS token proxy, or None."""
    found = re.match(r"^(\d+)\.(\d+)\.(\d+)(.*)$", version or "")
    if found:
        numbers = tuple(int(part) for part in found.groups()[:3])
        # A pre-release of the minimum (1.27.0b1) comes before it.
        if numbers > TOKEN_PROXY_AZURE_IDENTITY or (numbers == TOKEN_PROXY_AZURE_IDENTITY and not found.group(4)):
            return None
    wanted = ".".join(str(n) for n in TOKEN_PROXY_AZURE_IDENTITY)
    return (
        f"the exchange through the AKS token proxy needs azure-identity >= {wanted} "
        f"(WorkloadIdentityCredential(enable_azure_proxy=True)) on the host that runs the module; it has "
        f"{version or 'none'}"
    )


@contextlib.contextmanager
def _proxy_environment(values: t.Mapping[str, str]) -> t.Iterator[None]:
    """``values`` as the only token proxy settings in os.environ for the duration, under the lock.

    A setting is never deleted from os.environ, only set to "" (which azure-identity treats as unset): other threads
    read os.environ meanwhile without this lock (requests looks up proxy settings by iterating it on every request),
    and a key deleted between their listing of the keys and their read of it raises KeyError in them."""
    with _PROXY_ENVIRONMENT_LOCK:
        saved = {name: os.environ.get(name, "") for name in TOKEN_PROXY_ENVIRONMENT}
        try:
            for name in TOKEN_PROXY_ENVIRONMENT:
                os.environ[name] = values.get(name, "")
            yield
        finally:
            for name, value in saved.items():
                os.environ[name] = value


def _private_file(folder: str, name: str, content: str) -> str:
    path = os.path.join(folder, name)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(content)
    return path


@contextlib.contextmanager
def proxy_credential(
    cloud: AzureCloud,
    params: t.Mapping[str, t.Any],
    tenant_id: str,
    client_id: str,
    assertion: str,
    proxy: TokenProxy,
) -> t.Iterator[t.Any]:
    """The credential a pod using an identity binding builds: azure-identity's own
    ``WorkloadIdentityCredential(enable_azure_proxy=True)``, given the settings the webhook injected, as the kubelet
    would give them to the pod - the token and the CA in files (in a private temporary folder, removed on exit) and
    the proxy variables in the environment while the credential reads them.

    Its token requests go to the proxy, over TLS with the SNI name and trusting the injected CA alone (not the
    module's ca_bundle). Raises ValueError as azure-identity does for settings a pod would be refused with too (both
    a CA file and CA data, a proxy URL that is not https). The assertion is never logged or returned."""
    kwargs = {k: v for k, v in credential_kwargs(cloud, params).items() if k != "connection_verify"}
    with tempfile.TemporaryDirectory(prefix="wid-verify-") as folder:
        environment = {ENV_KUBERNETES_TOKEN_PROXY: proxy.endpoint}
        if proxy.sni_name:
            environment[ENV_KUBERNETES_SNI_NAME] = proxy.sni_name
        if proxy.ca_file_content is not None:
            environment[ENV_KUBERNETES_CA_FILE] = _private_file(folder, "ca.crt", proxy.ca_file_content)
        if proxy.ca_data:
            environment[ENV_KUBERNETES_CA_DATA] = proxy.ca_data
        token_file = _private_file(folder, "token", assertion)
        with _proxy_environment(environment):
            try:
                credential = WorkloadIdentityCredential(
                    tenant_id=tenant_id,
                    client_id=client_id,
                    token_file_path=token_file,
                    enable_azure_proxy=True,
                    connection_timeout=TOKEN_PROXY_CONNECTION_TIMEOUT,
                    retry_connect=TOKEN_PROXY_CONNECTION_RETRIES,
                    **kwargs,
                )
            except ssl.SSLError as exc:  # the transport loads the CA in the constructor
                raise ValueError(f"the injected CA is not a usable PEM certificate: {exc}") from None
        try:
            yield credential
        finally:
            credential.close()


def transport_kwargs(params: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    return {"connection_verify": params["ca_bundle"]} if params.get("ca_bundle") else {}


def build_credential(cloud: AzureCloud, params: t.Mapping[str, t.Any]) -> CredentialChoice:
    """Choose and build the credential ``auth_source`` asks for (see the azure_auth doc fragment)."""
    source = params.get("auth_source") or "auto"
    client_id, tenant = params.get("client_id"), params.get("tenant")
    token_file = params.get("federated_token_file")
    if source in ("auto", "env") and params.get("secret"):
        return _service_principal(cloud, params)
    if source == "workload_identity" or (source in ("auto", "env") and token_file):
        return _workload_identity(cloud, params)
    if source == "env":
        raise WorkloadIdentityError(
            "auth_source=env found no credentials: set client_id, secret and tenant (AZURE_CLIENT_ID, "
            "AZURE_SECRET or AZURE_CLIENT_SECRET, AZURE_TENANT or AZURE_TENANT_ID) for a service principal, or "
            "client_id, tenant and federated_token_file (AZURE_FEDERATED_TOKEN_FILE) for workload identity",
            code="CredentialUnavailable",
        )
    if source == "msi":
        return CredentialChoice(_managed_identity(params), _describe_managed_identity(client_id))
    if source == "cli":
        return CredentialChoice(AzureCliCredential(tenant_id=tenant or ""), "the Azure CLI login")
    if source != "auto":
        raise WorkloadIdentityError(f"Unknown auth_source {source!r}", code="InvalidAuthSource")
    chain = ChainedTokenCredential(_managed_identity(params), AzureCliCredential(tenant_id=tenant or ""))
    return CredentialChoice(
        chain,
        f"auth_source=auto: no secret and no federated token file were given, so {_describe_managed_identity(client_id)}"
        " and then the Azure CLI login were tried",
    )


def _service_principal(cloud: AzureCloud, params: t.Mapping[str, t.Any]) -> CredentialChoice:
    _require_params(params, ("client_id", "tenant"), "a service principal secret")
    credential = ClientSecretCredential(
        params["tenant"], params["client_id"], params["secret"], **credential_kwargs(cloud, params)
    )
    return CredentialChoice(
        credential, f"service principal {params['client_id']!r} (client secret) in tenant {params['tenant']!r}"
    )


def _workload_identity(cloud: AzureCloud, params: t.Mapping[str, t.Any]) -> CredentialChoice:
    _require_params(params, ("client_id", "tenant", "federated_token_file"), "workload identity")
    token_file = params["federated_token_file"]
    if not os.path.isfile(token_file) or not os.access(token_file, os.R_OK):
        raise WorkloadIdentityError(
            f"The federated token file {token_file!r} does not exist or is not readable",
            code="CredentialUnavailable",
            target=token_file,
        )
    credential = WorkloadIdentityCredential(
        tenant_id=params["tenant"],
        client_id=params["client_id"],
        token_file_path=token_file,
        **credential_kwargs(cloud, params),
    )
    return CredentialChoice(
        credential,
        f"workload identity {params['client_id']!r} in tenant {params['tenant']!r} (token file {token_file})",
    )


def _managed_identity(params: t.Mapping[str, t.Any]) -> t.Any:
    # IMDS is not an Entra authority: no authority / instance discovery, only the transport settings.
    kwargs = transport_kwargs(params)
    if params.get("client_id"):
        kwargs["client_id"] = params["client_id"]
    return ManagedIdentityCredential(**kwargs)


def _describe_managed_identity(client_id: str | None) -> str:
    return f"the user-assigned managed identity {client_id!r}" if client_id else "the system-assigned managed identity"


def _require_params(params: t.Mapping[str, t.Any], names: t.Iterable[str], purpose: str) -> None:
    env = {
        "client_id": "AZURE_CLIENT_ID",
        "tenant": "AZURE_TENANT or AZURE_TENANT_ID",
        "federated_token_file": "AZURE_FEDERATED_TOKEN_FILE",
    }
    missing = [f"{name} ({env[name]})" for name in names if not params.get(name)]
    if missing:
        raise WorkloadIdentityError(
            f"Authenticating with {purpose} needs {', '.join(missing)}", code="CredentialUnavailable"
        )


# --- Errors -----------------------------------------------------------------------------------------------------
_AADSTS = re.compile(r"AADSTS\d+")


def azure_error_parts(exc: BaseException) -> tuple[str | None, str, int | None]:
    """``(code, message, status)`` of an azure-core / azure-identity exception, from the parsed error or body.

    ``code`` is the service's code (ARM ``error.code``, Key Vault ``error.code``, or the ``AADSTSnnnn`` number in
    an Entra answer) and ``None`` when the service sent none.
    """
    status = getattr(exc, "status_code", None)
    code: str | None = None
    message: str | None = None
    error = getattr(exc, "error", None)  # azure-core's parsed ODataV4Format, when the body had one
    if error is not None and getattr(error, "code", None):
        code, message = error.code, getattr(error, "message", None)
    if code is None:
        code, message = _codes_from_body(exc)
    text = str(message or getattr(exc, "message", None) or exc)
    found = _AADSTS.search(text)
    # OAuth error names ("invalid_client") say less than the AADSTS number inside the description.
    if found and (code is None or code == code.lower()):
        code = found.group(0)
    return code, text, status


def _fallback_code(exc: BaseException) -> str | None:
    """A code for errors without a service code: the azure-core exception class, e.g. ServiceRequestError."""
    if not isinstance(exc, AzureError):
        return None
    name = type(exc).__name__
    return name[: -len("Error")] if name == "CredentialUnavailableError" else name


def _codes_from_body(exc: BaseException) -> tuple[str | None, str | None]:
    response = getattr(exc, "response", None)
    if response is None:
        return None, None
    try:
        body = json.loads(response.text())
    except Exception:  # any body that is not JSON simply has no code
        return None, None
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    if isinstance(error, dict):
        return error.get("code"), error.get("message")
    if isinstance(error, str):  # Entra token endpoint: {"error": "invalid_client", "error_description": ...}
        return error, body.get("error_description")
    return body.get("code"), body.get("message")


def azure_error(exc: BaseException, action: str, target: str | None = None) -> WorkloadIdentityError:
    """``Failed to <action> <target>: <code>: <message>`` with the code, HTTP status and traceback attached."""
    if isinstance(exc, WorkloadIdentityError):
        return exc
    code, message, status = azure_error_parts(exc)
    code = code or _fallback_code(exc)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)) and "CERTIFICATE_VERIFY_FAILED" in message:
        message += " (set ca_bundle or AZURE_CA_BUNDLE to the CA bundle that signed the endpoint's certificate)"
    return WorkloadIdentityError(
        describe_failure(action, target, code, message), code=code, status=status, target=target, exception=exc
    )


def azure_error_code(exc: BaseException) -> str | None:
    """The service error code of an exception (``None`` for non-Azure exceptions); for retry predicates."""
    if isinstance(exc, WorkloadIdentityError):
        return exc.code
    if not isinstance(exc, AzureError):
        return None
    return azure_error_parts(exc)[0] or _fallback_code(exc)


def is_azure_not_found(exc: BaseException) -> bool:
    """A 404 that says the object is absent (see NOT_FOUND_CODES), as opposed to a bad type or api-version."""
    if isinstance(exc, WorkloadIdentityError):
        return exc.status == 404 and (exc.code is None or exc.code in NOT_FOUND_CODES)
    if not isinstance(exc, HttpResponseError) or getattr(exc, "status_code", None) != 404:
        return False
    code = azure_error_parts(exc)[0]
    return code is None or code in NOT_FOUND_CODES


def azure_call(
    call: t.Callable[[], t.Any], action: str, target: str | None = None, *, none_if_not_found: bool = False
) -> t.Any:
    """Run one SDK call; Azure errors become a WorkloadIdentityError naming ``action`` and ``target`` (a "not
    found" becomes None with ``none_if_not_found``: reads)."""
    try:
        return call()
    except AzureError as exc:
        if none_if_not_found and is_azure_not_found(exc):
            return None
        raise azure_error(exc, action, target) from exc


def wait_for_lro(poller: t.Any, timeout: float, description: str) -> t.Any:
    """Wait up to ``timeout`` seconds for a long-running operation; its result, or a WorkloadIdentityError.

    ``description`` reads as an action and its target ("enable the OIDC issuer on cluster 'c1'"). Failed and
    Canceled operations carry the operation's error code and message when the service sent them (azure-behaviour §3).
    """
    try:
        poller.wait(timeout=timeout)
        if not poller.done():
            raise WorkloadIdentityError(
                f"Timed out after {timeout:g} seconds waiting to {description}; Azure still reports the "
                f"operation as {poller.status()!r} and may finish it later",
                code="OperationTimeout",
                target=description,
            )
        return poller.result()
    except AzureError as exc:
        code, message, status = azure_error_parts(exc)
        state = _poller_status(poller)
        if code is None and state in ("Failed", "Canceled"):
            # azure-behaviour §3.7: the Failed body shape is UNVERIFIED; without an error object say how the
            # operation ended.
            code, message = f"Operation{state}", f"the operation ended as {state}"
        raise WorkloadIdentityError(
            describe_failure(description, None, code or _fallback_code(exc), message),
            code=code or _fallback_code(exc),
            status=status,
            target=description,
            exception=exc,
        ) from exc


def _poller_status(poller: t.Any) -> str | None:
    try:
        return str(poller.status())
    except Exception:  # only decorates a message
        return None


# --- The module base --------------------------------------------------------------------------------------------
class AzureModule:
    """An ``AnsibleModule`` with Azure auth options, lazily built credential, cloud and SDK clients.

    The constructor parses arguments and checks the SDK is importable; nothing talks to Azure until a client,
    ``credential``, ``cloud`` or ``subscription_id`` is first used. Pass ``module=`` to share one
    ``AnsibleModule`` with a ``K8sModule`` (its argument spec must then include ``AZURE_AUTH_ARGSPEC``).
    """

    def __init__(
        self,
        argument_spec: dict[str, dict[str, t.Any]] | None = None,
        *,
        module: AnsibleModule | None = None,
        supports_check_mode: bool = True,
        **module_kwargs: t.Any,
    ) -> None:
        if module is None:
            module = new_module(
                AZURE_AUTH_ARGSPEC | (argument_spec or {}),
                supports_check_mode=supports_check_mode,
                **module_kwargs,
            )
        elif not set(AZURE_AUTH_ARGSPEC) <= set(module.argument_spec):
            module.fail_json(msg="Internal error: the module's argument_spec lacks AZURE_AUTH_ARGSPEC")
        self.module = module
        self.require("azure-identity")
        errors = validate_auth_options(module.params)
        if errors:
            module.fail_json(msg="Invalid input: " + "; ".join(errors), errors=errors)
        self._cloud: AzureCloud | None = None
        self._choice: CredentialChoice | None = None
        self._subscription_id: str | None = None
        self._clients: dict[str, t.Any] = {}
        self.calls = ApiCalls()  # every gateway request of the run, by operation
        self.pacer = Pacer()  # shared by every client: once throttled, all workers take turns

    # -- plumbing
    @property
    def params(self) -> dict[str, t.Any]:
        return self.module.params

    @property
    def check_mode(self) -> bool:
        return self.module.check_mode

    @property
    def polling_interval(self) -> float:
        value = self.params.get("lro_polling_interval")
        return float(value) if value else DEFAULT_POLLING_INTERVAL

    def require(self, package: str) -> None:
        """Fail the module (``missing_required_lib``) when ``package`` could not be imported."""
        if package in IMPORT_ERRORS:
            self.module.fail_json(msg=missing_required_lib(package), exception=IMPORT_ERRORS[package])

    def warn(self, message: str) -> None:
        self.module.warn(message)

    def exit_json(self, **result: t.Any) -> t.NoReturn:
        self.module.exit_json(**result)

    def fail(self, exc: BaseException, action: str = "run the module") -> t.NoReturn:
        """Fail with a WorkloadIdentityError's message, code, status and traceback; secrets masked."""
        error = exc if isinstance(exc, WorkloadIdentityError) else azure_error(exc, action)
        kwargs = error.to_fail_kwargs(redact=[self.params.get("secret")])
        if self._choice is not None and isinstance(error.original, ClientAuthenticationError):
            kwargs["msg"] += f" (authenticating as {self._choice.description})"
        self.module.fail_json(**kwargs)

    # -- identity and endpoints
    @property
    def cloud(self) -> AzureCloud:
        if self._cloud is None:
            self._cloud = resolve_cloud(self.params.get("cloud_environment"), self.params.get("ca_bundle"))
        return self._cloud

    @property
    def credential(self) -> t.Any:
        return self._credential_choice().credential

    def sign_in(self) -> None:
        """Get the ARM token now (azure-identity caches it for every client), failing with which credential was
        tried: for a module about to start worker threads, whose concurrent first calls would each sign in."""
        scopes = self.cloud.credential_scopes
        azure_call(lambda: self.credential.get_token(*scopes), f"sign in as {self.credential_description}")

    @property
    def credential_description(self) -> str:
        return self._credential_choice().description

    def _credential_choice(self) -> CredentialChoice:
        if self._choice is None:
            self._choice = build_credential(self.cloud, self.params)
        return self._choice

    @property
    def subscription_id(self) -> str:
        if self._subscription_id is None:
            value = self.params.get("subscription_id")
            if not value and self.params.get("auth_source") == "cli":
                value = self._cli_subscription_id()
            if not value:
                raise WorkloadIdentityError(
                    "subscription_id is required: set the option or AZURE_SUBSCRIPTION_ID", code="MissingSubscription"
                )
            if not is_uuid(value):
                raise WorkloadIdentityError(
                    f"subscription_id must be a subscription GUID, got {value!r}", code="InvalidSubscription"
                )
            self._subscription_id = value
        return self._subscription_id

    def _cli_subscription_id(self) -> str | None:
        az = self.module.get_bin_path("az")
        if not az:
            return None
        rc, out, err = self.module.run_command([az, "account", "show", "--output", "json"])
        if rc != 0:
            raise WorkloadIdentityError(
                describe_failure("read the Azure CLI's default subscription", None, None, err or out),
                code="AzureCliError",
            )
        try:
            return json.loads(out).get("id")
        except (ValueError, AttributeError):
            return None

    # -- SDK clients
    def _mgmt_client(self, attribute: str, package: str, factory: t.Any) -> t.Any:
        if attribute not in self._clients:
            self.require(package)
            self._clients[attribute] = factory(self.credential, self.subscription_id, **self.mgmt_client_kwargs())
        return self._clients[attribute]

    def mgmt_client_kwargs(self) -> dict[str, t.Any]:
        """What every management client gets: the cloud's ARM endpoint and scopes, CA bundle, retry, polling."""
        return {
            "base_url": self.cloud.resource_manager,
            "credential_scopes": self.cloud.credential_scopes,
            "polling_interval": self.polling_interval,
            "user_agent": USER_AGENT,
            "raw_request_hook": self.pacer.request_hook,
            "raw_response_hook": self.pacer.response_hook,
            **RETRY_POLICY_KWARGS,
            **transport_kwargs(self.params),
        }

    @property
    def containerservice(self) -> t.Any:
        return self._mgmt_client("containerservice", "azure-mgmt-containerservice", ContainerServiceClient)

    @property
    def msi(self) -> t.Any:
        return self._mgmt_client("msi", "azure-mgmt-msi", ManagedServiceIdentityClient)

    @property
    def authorization(self) -> t.Any:
        return self._mgmt_client("authorization", "azure-mgmt-authorization", AuthorizationManagementClient)

    @property
    def keyvault_mgmt(self) -> t.Any:
        return self._mgmt_client("keyvault_mgmt", "azure-mgmt-keyvault", KeyVaultManagementClient)

    @property
    def resources(self) -> t.Any:
        return self._mgmt_client("resources", "azure-mgmt-resource", ResourceManagementClient)

    def keyvault_url(self, vault: str) -> str:
        """``https://<vault><suffix>/`` for a vault name; a URL is returned as given."""
        if is_metadata_url(vault):
            return vault
        if not self.cloud.keyvault_dns_suffix:
            raise WorkloadIdentityError(
                f"The cloud {self.cloud.name!r} publishes no Key Vault DNS suffix; give the vault URL instead of "
                f"the name {vault!r}",
                code="MissingKeyVaultSuffix",
            )
        return f"https://{vault}{self.cloud.keyvault_dns_suffix}/"

    def keyvault_secret_client(self, vault_url: str, credential: t.Any = None) -> t.Any:
        """A Key Vault data-plane SecretClient for ``vault_url`` (or a vault name) with our transport settings,
        authenticating as the module (or with ``credential``, for example a workload's; such a client is not kept)."""
        self.require("azure-keyvault-secrets")
        vault_url = self.keyvault_url(vault_url)
        key = f"secrets:{vault_url}" if credential is None else f"secrets:{vault_url}:{id(credential)}"
        if key not in self._clients:
            # The SDK checks that the 401 challenge's resource shares the vault URL's domain (azure-behaviour §7).
            # A vault outside the cloud's Key Vault DNS suffix (an emulator on 127.0.0.1) can only pass when the
            # cloud itself came from a metadata URL the user chose; public clouds keep the check.
            host = (urlsplit(vault_url).hostname or "").lower()
            suffix = (self.cloud.keyvault_dns_suffix or "").lower()
            verify_challenge = not (self.cloud.metadata_url and not (suffix and host.endswith(suffix)))
            self._clients[key] = SecretClient(
                vault_url,
                self.credential if credential is None else credential,
                verify_challenge_resource=verify_challenge,
                user_agent=USER_AGENT,
                **RETRY_POLICY_KWARGS,
                **transport_kwargs(self.params),
            )
        return self._clients[key]
