"""Emulated Microsoft Entra ID: tenant discovery and the v2.0 token endpoint (client credentials).

Two client credentials are accepted, as Entra accepts them for a confidential client:
- a client secret (service principals: the lab's deployer);
- a client assertion (workload identity federation): a JWT from an external OIDC issuer, exchanged for an access
  token of the identity whose federated identity credential trusts (issuer, subject, audience). Entra fetches the
  issuer's discovery document and JWKS itself, so this module does too, over real HTTPS (azure-behaviour §6).

Errors are OAuth-shaped (azure-behaviour §6), never ARM-shaped. Secrets and assertions are never logged or echoed.
"""

from __future__ import annotations

import datetime
import hmac
import json
import ssl
import urllib.request
import uuid
from typing import Any

import jwt

from .server import RawError, Request, Response, route
from .state import State, seeder

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FIC_DOCS = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
# UNVERIFIED for Entra itself: 5 minutes is Microsoft.IdentityModel's default clock skew
# (TokenValidationParameters.DefaultClockSkew), the library family Entra's token validation is built on.
CLOCK_SKEW_SECONDS = 300
DISCOVERY_TIMEOUT_SECONDS = 5


# The AADSTS errors this emulator returns: code -> (HTTP status, OAuth 'error', description). Sources per line;
# statuses follow azure-behaviour §6 (invalid_client = 401, invalid_request/invalid_scope/unauthorized_client = 400).
_NO_MATCH = "No matching federated identity record found for presented assertion"
_CHECK_FIC = (
    f"Check your federated identity credential Subject, Audience and Issuer against the presented assertion. {FIC_DOCS}"
)
ERRORS: dict[int, tuple[int, str, str]] = {
    # Azure/azure-cli#22145 (discovery) - the token endpoint's 'error' value for it is UNVERIFIED (invalid_request).
    90002: (
        400,
        "invalid_tenant",
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and "
        "are signing into the correct cloud. Check with your subscription administrator, this may happen if there "
        "are no active subscriptions for the tenant.",
    ),
    900144: (400, "invalid_request", "The request body must contain the following parameter: '{name}'."),
    70003: (400, "unsupported_grant_type", "The app requested an unsupported grant type."),  # UNVERIFIED wording
    # Azure/azure-sdk-for-python#8314 (unauthorized_client), MicrosoftDocs/azure-docs#35244 (text).
    700016: (
        400,
        "unauthorized_client",
        "Application with identifier '{client_id}' was not found in the directory "
        "'{tenant}'. This can happen if the application has not been installed by the administrator of the tenant "
        "or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
    ),
    # Entra's reference page example (reference-error-codes) and oauth2-proxy#2158.
    70011: (
        400,
        "invalid_scope",
        "The provided request must include a 'scope' input parameter. The provided value for "
        "the input parameter 'scope' is not valid. The scope {scope} is not valid. .default scope can't be combined "
        "with resource-specific scopes.",
    ),
    # Quoted in MSAL/SDK sources and docs: client credentials take only '<resource>/.default'.
    1002012: (
        400,
        "invalid_scope",
        "The provided value for scope {scope} is not valid. Client credential flows must have "
        "a scope value with /.default suffixed to the resource identifier (application ID URI).",
    ),
    # OfficeDev/microsoft-365-agents-toolkit#8621, Azure/sap-automation#418 (401 invalid_client).
    7000215: (
        401,
        "invalid_client",
        "Invalid client secret provided. Ensure the secret being sent in the request is the "
        "client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
    ),
    7000218: (
        401,
        "invalid_client",
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    ),  # MicrosoftDocs/azure-docs#25959 (text); status UNVERIFIED
    50027: (400, "invalid_request", "JWT token is invalid or malformed."),  # UNVERIFIED for federated assertions
    # Azure/azure-workload-identity#642 and #1130 (400 invalid_request; azure-behaviour §6).
    50166: (400, "invalid_request", "Request to External OIDC endpoint failed."),
    # UNVERIFIED for federated assertions: the certificate-credential code for a failed signature.
    50013: (401, "invalid_client", "Assertion failed signature validation. [Reason - {reason}]"),
    # Azure/azure-workload-identity#693, risingwavelabs/risingwave#17123 (401 invalid_client).
    700024: (
        401,
        "invalid_client",
        "Client assertion is not within its valid time range. Current time: {now}, "
        "assertion valid from {nbf}, expiry time of assertion {exp}. Review the documentation at "
        "https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
    ),
    # Azure/azure-workload-identity#1200 (invalid_client), Azure/login#482, dotnet/maui#31978 (2025 wording).
    700211: (401, "invalid_client", f"{_NO_MATCH} issuer '{{issuer}}'. {_CHECK_FIC}"),
    700213: (401, "invalid_client", f"{_NO_MATCH} subject '{{subject}}'. {_CHECK_FIC}"),
    # Azure/login#515: subject case mismatch since the case-sensitive matching change (azure-behaviour §4).
    7002138: (
        401,
        "invalid_client",
        f"{_NO_MATCH} subject '{{subject}}'. The subject matches with case-insensitive "
        f"comparison, but not with case-sensitive comparison. {_CHECK_FIC}",
    ),
    # Audience mismatch: AADSTS700212 in several independent client sources (an SDK test fixture, demo scripts).
    700212: (401, "invalid_client", f"{_NO_MATCH} audience '{{audience}}'. {_CHECK_FIC}"),
}


class OAuthError(RawError):
    """An Entra error response: {error, error_description "AADSTSnnnn: ... Trace ID ...", error_codes, ...}."""

    def __init__(self, request: Request, state: State, code: int, error: str | None = None, **fields: str):
        status, default_error, template = ERRORS[code]
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        trace_id = str(uuid.uuid4())
        # MSAL sends client-request-id; Entra reports it back as the correlation id.
        correlation_id = request.headers.get("client-request-id") or str(uuid.uuid4())
        description = f"AADSTS{code}: {template.format(**fields)}"
        body = {
            "error": error or default_error,
            "error_description": f"{description} Trace ID: {trace_id} Correlation ID: {correlation_id} "
            f"Timestamp: {now}",
            "error_codes": [code],
            "timestamp": now,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{state.config.base_url}/error?code={code}",
        }
        super().__init__(Response(status, body, {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}))
        self.code = code


# ---------------------------------------------------------------------------------------------- discovery
def _require_tenant(request: Request, state: State, error: str) -> str:
    tenant = request.params["tenant"]
    if tenant.lower() != state.config.tenant_id.lower():
        raise OAuthError(request, state, 90002, error, tenant=tenant)
    return state.config.tenant_id


# The tenant-independent authorities also publish a discovery document, whose issuer holds the placeholder
# "{tenantid}" (https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc, "Find your app's OpenID
# configuration document URI"); MSAL reads it when an app is built on one, as `az logout` does with /organizations.
MULTI_TENANT_AUTHORITIES = ("common", "organizations", "consumers")


@route("GET", r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration", plane="entra", auth=None)
def openid_configuration(request: Request, state: State) -> Response:
    alias = request.params["tenant"].lower()
    if alias in MULTI_TENANT_AUTHORITIES:
        tenant, issuer_tenant = alias, "{tenantid}"
    else:
        tenant = issuer_tenant = _require_tenant(request, state, "invalid_tenant")
    base = f"{state.config.base_url}/{tenant}"
    # The v2.0 document as MSAL logs it (Azure/azure-workload-identity#682), re-hosted on the emulator. MSAL reads
    # authorization_endpoint, token_endpoint, issuer and device_authorization_endpoint (msal/authority.py).
    return Response(
        200,
        {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{state.config.base_url}/{issuer_tenant}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "cloud_instance_name",
                "cloud_instance_host_name",
                "cloud_graph_host_name",
                "msgraph_host",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "acr",
                "nonce",
                "preferred_username",
                "name",
                "tid",
                "ver",
                "at_hash",
                "c_hash",
                "email",
            ],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "NA",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        },
    )


@route("GET", r"/(?P<tenant>[^/]+)/discovery/v2\.0/keys", plane="entra", auth=None)
def signing_keys(request: Request, state: State) -> Response:
    _require_tenant(request, state, "invalid_tenant")
    return Response(200, {"keys": [state.tokens.public_jwk()]})


@route("GET", r"/common/discovery/instance", plane="entra", auth=None)
def instance_discovery(request: Request, state: State) -> Response:
    # Only reached by clients told to validate against this host. The answer's shape is the one recorded in
    # azure-cli cassettes (login.windows.net/common/discovery/instance), pointing back at the emulator.
    parts = request.query.get("authorization_endpoint", "").split("/")
    tenant = parts[3] if len(parts) > 3 and parts[3] else state.config.tenant_id
    host = state.config.base_url.split("://", 1)[-1]
    return Response(
        200,
        {
            "tenant_discovery_endpoint": f"{state.config.base_url}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        },
    )


# ---------------------------------------------------------------------------------------------- token endpoint
def _resource_of(request: Request, state: State, scope: str) -> str:
    """Client credentials ask for exactly one '<resource>/.default'; the token's audience is that resource."""
    scopes = scope.split()
    if not scopes:
        raise OAuthError(request, state, 900144, name="scope")
    if len(scopes) > 1 and any(s.endswith("/.default") for s in scopes):
        raise OAuthError(request, state, 70011, scope=scope)
    if not scopes[0].endswith("/.default"):
        raise OAuthError(request, state, 1002012, scope=scope)
    return scopes[0][: -len("/.default")]


@route("POST", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token", plane="entra", auth=None)
def token(request: Request, state: State) -> Response:
    _require_tenant(request, state, "invalid_request")
    form = request.form()
    for name in ("grant_type", "client_id"):
        if not form.get(name):
            raise OAuthError(request, state, 900144, name=name)
    if form["grant_type"] != "client_credentials":  # the only grant a workload (or the deployer) uses
        raise OAuthError(request, state, 70003)
    # UNVERIFIED order of Entra's checks: client, then scope, then the credential.
    principal = state.principal_by_app_id(form["client_id"])
    if principal is None:
        raise OAuthError(request, state, 700016, client_id=form["client_id"], tenant=state.config.tenant_id)
    resource = _resource_of(request, state, form.get("scope", ""))
    if form.get("client_assertion"):
        if form.get("client_assertion_type") != JWT_BEARER:
            raise OAuthError(request, state, 900144, name="client_assertion_type")
        verify_federated_assertion(request, state, principal, form["client_assertion"])
    elif form.get("client_secret"):
        expected = principal.get("secret")
        if not expected or not hmac.compare_digest(expected.encode(), form["client_secret"].encode()):
            raise OAuthError(request, state, 7000215, client_id=principal["app_id"])
    else:
        raise OAuthError(request, state, 7000218)
    lifetime = int(state.settings["token_lifetime_seconds"])
    access_token, expires_in = state.tokens.issue(
        audience=resource, oid=principal["object_id"], appid=principal["app_id"], lifetime=lifetime
    )
    body = {
        "token_type": "Bearer",
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": access_token,
    }
    return Response(200, body, {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})


# ---------------------------------------------------------------------------------------------- federation
def _federated_credentials(state: State, client_id: str) -> list[tuple[dict[str, Any], float]]:
    """(properties, created) of every federated credential on the user-assigned identity with this client id."""
    identities = state.find(
        lambda key, body: (
            "/userassignedidentities/" in key
            and "/federatedidentitycredentials/" not in key
            and str((body.get("properties") or {}).get("clientId", "")).lower() == client_id.lower()
        )
    )
    return [
        (credential.get("properties") or {}, state.meta_of(credential["id"])["created"])
        for identity in identities
        for credential in state.children(identity["id"], "federatedIdentityCredentials")
    ]


def _fetch_json(state: State, url: str) -> Any:
    cafile = state.config.ca_file
    context = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=DISCOVERY_TIMEOUT_SECONDS) as response:
        return json.loads(response.read())


def _issuer_keys(request: Request, state: State, issuer: str) -> dict[str, Any]:
    # OIDC Discovery 1.0 §4: a terminating '/' of the issuer is removed before '/.well-known/openid-configuration'
    # is appended, so 'https://x/uuid/' (AKS, azure-behaviour §5) and 'https://x/uuid' read the same document.
    try:
        discovery = _fetch_json(state, issuer.rstrip("/") + "/.well-known/openid-configuration")
        return _fetch_json(state, discovery["jwks_uri"])
    except Exception:  # any failure to reach or read the issuer is one error to the caller (azure-behaviour §6)
        raise OAuthError(request, state, 50166) from None


def _verify_signature(request: Request, state: State, assertion: str, keys: dict[str, Any]) -> None:
    kid = jwt.get_unverified_header(assertion).get("kid")
    key = next((k for k in keys.get("keys", []) if k.get("kid") == kid), None)
    if key is None:
        raise OAuthError(request, state, 50013, reason="The key was not found.")
    try:
        # Only the signature here: Entra reports time range and claim mismatches with their own codes.
        options = {"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False}
        jwt.decode(assertion, jwt.PyJWK(key).key, algorithms=["RS256"], options=options)
    except jwt.PyJWTError:
        reason = "The provided signature value did not match the expected signature value."
        raise OAuthError(request, state, 50013, reason=reason) from None


def _check_lifetime(request: Request, state: State, claims: dict[str, Any]) -> None:
    now = state.now()
    not_before, expires = float(claims.get("nbf") or 0), float(claims.get("exp") or 0)
    if not_before - CLOCK_SKEW_SECONDS <= now <= expires + CLOCK_SKEW_SECONDS:
        return

    def stamp(ts: float) -> str:  # Entra prints 7 fractional digits: 2024-06-04T11:40:28.3451933Z
        return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")

    raise OAuthError(request, state, 700024, now=stamp(now), nbf=stamp(not_before), exp=stamp(expires))


def verify_federated_assertion(request: Request, state: State, principal: dict[str, Any], assertion: str) -> None:
    """Entra's checks of a workload identity assertion: a credential trusts the issuer -> the issuer is reachable
    and signed it -> time range -> subject -> audience. UNVERIFIED: the order (each step's code is sourced)."""
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise OAuthError(request, state, 50027) from None
    issuer, subject = str(claims.get("iss", "")), str(claims.get("sub", ""))
    audiences = claims["aud"] if isinstance(claims.get("aud"), list) else [str(claims.get("aud", ""))]
    # azure-behaviour §4: a credential created moments ago is not visible to Entra yet, so it fails as if absent
    # (700211/700213 on fresh credentials: Azure/azure-workload-identity#1200).
    delay = state.settings["credential_propagation_seconds"]
    credentials = _federated_credentials(state, principal["app_id"])
    visible = [props for props, created in credentials if state.now() - created >= delay]
    # Issuer, subject and audience match exactly and case-sensitively (azure-behaviour §4).
    by_issuer = [p for p in visible if p.get("issuer") == issuer]
    if not by_issuer:
        raise OAuthError(request, state, 700211, issuer=issuer)
    _verify_signature(request, state, assertion, _issuer_keys(request, state, issuer))
    _check_lifetime(request, state, claims)
    by_subject = [p for p in by_issuer if p.get("subject") == subject]
    if not by_subject:
        case_only = any(str(p.get("subject", "")).lower() == subject.lower() for p in by_issuer)
        raise OAuthError(request, state, 7002138 if case_only else 700213, subject=subject)
    if not any(aud in (p.get("audiences") or []) for p in by_subject for aud in audiences):
        raise OAuthError(request, state, 700212, audience=audiences[0] if audiences else "")


# ---------------------------------------------------------------------------------------------- seeding
@seeder(20)
def _seed_deployer(state: State) -> None:
    seed = state.config.seed
    if seed.get("deployer_client_id"):
        name = seed.get("deployer_display_name", "deployer")
        state.add_principal(
            seed["deployer_object_id"],
            seed["deployer_client_id"],
            "ServicePrincipal",
            name,
            secret=seed["deployer_secret"],
        )
