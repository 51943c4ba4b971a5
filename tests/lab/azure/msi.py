"""Microsoft.ManagedIdentity: user-assigned managed identities and their federated identity credentials.

Every identity is also a directory principal (its service principal), registered with the state so the Entra
and authorization emulators can find it by client id or object id. Federated identity credential rules are those
of azure-behaviour §4; the error table in the Entra docs (workload-identity-federation-considerations.md, "Errors")
gives most of the wording.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from .arm import authorize, check_location_unchanged, delete_resource_tree, is_authorized, normalize_location
from .common import (
    require_provider_api_version,
    require_resource_group,
    require_subscription,
    resource_id,
    resource_not_found,
)
from .server import ArmError, Request, Response, route
from .state import State
from .throttle import limit, per_second

IDENTITY_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"
FIC_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
# api-versions of the userAssignedIdentities routes (azure-behaviour §1): the version folders of specification/msi/
# resource-manager/Microsoft.ManagedIdentity/ManagedIdentity/{stable,preview}/ (each with a ManagedIdentity.json; the
# older layout has the same under Microsoft.ManagedIdentity/{stable,preview}/). The Azure CLI 2.91 identity commands
# send 2025-05-31-preview; azure-mgmt-msi 7.1 sends 2024-11-30.
IDENTITY_API_VERSIONS = (
    "2015-08-31-preview",
    "2018-11-30",
    "2021-09-30-preview",
    "2022-01-31-preview",
    "2023-01-31",
    "2023-07-31-preview",
    "2024-11-30",
    "2025-01-31-preview",
    "2025-05-31-preview",
    "2026-04-30",
    "2026-05-31",
)
# api-versions of the federatedIdentityCredentials routes: the same folders from 2022-01-31-preview on, the first
# whose ManagedIdentity.json (and examples/FederatedIdentityCredential*.json) has the child type.
FIC_API_VERSIONS = (
    "2022-01-31-preview",
    "2023-01-31",
    "2023-07-31-preview",
    "2024-11-30",
    "2025-01-31-preview",
    "2025-05-31-preview",
    "2026-04-30",
    "2026-05-31",
)
MAX_CREDENTIALS_PER_IDENTITY = 20  # Entra docs: workload-identity-federation-considerations (azure-behaviour §4)
MAX_PROPERTY_LENGTH = 600  # issuer, subject and audience (azure-behaviour §4)
_FIC_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-_]{2,119}$")  # spec pattern: 3-120, first character alphanumeric

_SUBSCRIPTION = r"/subscriptions/(?P<subscription>[^/]+)"
_GROUP = _SUBSCRIPTION + r"/resourcegroups/(?P<resource_group>[^/]+)"
_IDENTITIES = _GROUP + r"/providers/Microsoft\.ManagedIdentity/userAssignedIdentities"
_IDENTITY = _IDENTITIES + r"/(?P<name>[^/]+)"
_CREDENTIALS = _IDENTITY + r"/federatedIdentityCredentials"
_CREDENTIAL = _CREDENTIALS + r"/(?P<credential>[^/]+)"


# ---------------------------------------------------------------------------------------------------------------
# Identities


def _identity_id(request: Request, state: State) -> str:
    return resource_id(
        state.config.subscription_id, request.params["resource_group"], IDENTITY_TYPE, request.params["name"]
    )


# The type as ARM names it in NoRegisteredProviderFound (the path below the namespace).
_RESOURCE_TYPES = {
    IDENTITY_API_VERSIONS: "userAssignedIdentities",
    FIC_API_VERSIONS: "userAssignedIdentities/federatedIdentityCredentials",
}


def _api_version(request: Request, state: State, versions: tuple[str, ...]) -> str:
    return require_provider_api_version(request, state, versions, _RESOURCE_TYPES[versions])


def _prologue(request: Request, state: State, action: str, scope: str, versions: tuple[str, ...]) -> None:
    """api-version, subscription, RBAC, resource group: ARM's checks before the provider sees the call."""
    _api_version(request, state, versions)
    require_subscription(request, state, request.params["subscription"])
    authorize(request, state, action, scope)
    require_resource_group(request, state, request.params["subscription"], request.params["resource_group"])


def _require_identity(request: Request, state: State, identity_id: str) -> dict[str, Any]:
    identity = state.get(identity_id)
    if identity is None:
        raise resource_not_found(IDENTITY_TYPE, request.params["name"], request.params["resource_group"])
    return identity


def _new_identity(state: State, identity_id: str, name: str, location: str) -> dict[str, Any]:
    """tenantId/principalId/clientId are made once, on create, and never change (azure-behaviour §2)."""
    principal_id, client_id = str(uuid.uuid4()), str(uuid.uuid4())
    state.add_principal(principal_id, client_id, "ManagedIdentity", name, identity_id=identity_id)
    state.meta_of(identity_id)["principals"] = [principal_id]
    return {
        "id": identity_id,
        "name": name,
        "type": IDENTITY_TYPE,
        "location": location,
        "tags": {},
        "properties": {"tenantId": state.config.tenant_id, "principalId": principal_id, "clientId": client_id},
    }


def _isolation_scope(payload: dict[str, Any], api_version: str) -> str | None:
    scope = (payload.get("properties") or {}).get("isolationScope")
    if scope is None or api_version < "2024-11-30":  # writable from 2024-11-30 on (spec)
        return None
    if scope not in ("None", "Regional"):
        raise ArmError(
            400, "BadRequest", f"The value '{scope}' is not a valid isolation scope. Valid values: None, Regional."
        )  # UNVERIFIED wording
    return scope


@route("PUT", _IDENTITY)
def put_identity(request: Request, state: State) -> Response:
    identity_id = _identity_id(request, state)
    _prologue(
        request, state, "Microsoft.ManagedIdentity/userAssignedIdentities/write", identity_id, IDENTITY_API_VERSIONS
    )
    payload = request.json()
    if not isinstance(payload, dict) or not payload.get("location"):
        raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
    scope = _isolation_scope(payload, request.api_version)
    with state.lock:
        existing = state.get(identity_id)
        check_location_unchanged(existing, payload["location"], request.params["resource_group"])
        body = existing or _new_identity(
            state, identity_id, request.params["name"], normalize_location(payload["location"])
        )
        body["tags"] = payload.get("tags") or {}  # PUT replaces the tags
        if scope is not None:
            body["properties"]["isolationScope"] = scope
        state.put(identity_id, body)
    if existing:
        return Response(200, body)
    # The recorded 201 carries the id as location (azure-behaviour §2).
    return Response(201, body, {"Location": identity_id})


@route("GET", _IDENTITY)
def get_identity(request: Request, state: State) -> Response:
    identity_id = _identity_id(request, state)
    _prologue(
        request, state, "Microsoft.ManagedIdentity/userAssignedIdentities/read", identity_id, IDENTITY_API_VERSIONS
    )
    return Response(200, _require_identity(request, state, identity_id))


@route("PATCH", _IDENTITY)
def patch_identity(request: Request, state: State) -> Response:
    # IdentityUpdate: tags replace when present; location is create-only; the properties are read-only.
    identity_id = _identity_id(request, state)
    _prologue(
        request, state, "Microsoft.ManagedIdentity/userAssignedIdentities/write", identity_id, IDENTITY_API_VERSIONS
    )
    patch = request.json() or {}
    with state.lock:
        identity = _require_identity(request, state, identity_id)
        if patch.get("location"):
            check_location_unchanged(identity, patch["location"], request.params["resource_group"])
        if patch.get("tags") is not None:
            identity["tags"] = patch["tags"]
        return Response(200, state.put(identity_id, identity))


@route("DELETE", _IDENTITY)
def delete_identity(request: Request, state: State) -> Response:
    # 200 with an empty body when it existed, 204 when it did not (azure-behaviour §2). Its credentials and principal
    # go with it.
    identity_id = _identity_id(request, state)
    _prologue(
        request, state, "Microsoft.ManagedIdentity/userAssignedIdentities/delete", identity_id, IDENTITY_API_VERSIONS
    )
    return Response(200 if delete_resource_tree(state, identity_id) else 204)


def _readable(request: Request, state: State, found: list[dict[str, Any]]) -> Response:
    action = "Microsoft.ManagedIdentity/userAssignedIdentities/read"
    return Response(200, {"value": [i for i in found if is_authorized(request, state, action, i["id"])]})


@route("GET", _IDENTITIES)
def list_identities_in_group(request: Request, state: State) -> Response:
    _api_version(request, state, IDENTITY_API_VERSIONS)
    require_resource_group(request, state, request.params["subscription"], request.params["resource_group"])
    prefix = resource_id(state.config.subscription_id, request.params["resource_group"], IDENTITY_TYPE, "").lower()
    return _readable(
        request, state, state.find(lambda key, body: body.get("type") == IDENTITY_TYPE and key.startswith(prefix))
    )


@route("GET", _SUBSCRIPTION + r"/providers/Microsoft\.ManagedIdentity/userAssignedIdentities")
def list_identities_in_subscription(request: Request, state: State) -> Response:
    _api_version(request, state, IDENTITY_API_VERSIONS)
    require_subscription(request, state, request.params["subscription"])
    return _readable(request, state, state.find(lambda key, body: body.get("type") == IDENTITY_TYPE))


# ---------------------------------------------------------------------------------------------------------------
# Federated identity credentials: validation


def _bad_request(message: str) -> ArmError:
    # The MSI provider answers validation failures with code "BadRequest" ("BadRequest: The request format was
    # unexpected. Federated Identity Credential must specify ..." in zioproto/istio-aks-example#6).
    return ArmError(400, "BadRequest", message)


def _check_credential_name(name: str) -> None:
    if not _FIC_NAME.match(name):
        raise _bad_request(f"Federated Identity Credential name '{name}' is invalid.")


def _require_parent(request: Request, state: State, identity_id: str) -> dict[str, Any]:
    identity = state.get(identity_id)
    if identity is None:
        # Message from the Entra docs' error table; the code is UNVERIFIED.
        raise ArmError(404, "NotFound", "The parent user-assigned identity doesn't exist.")
    return identity


def _check_issuer(issuer: str) -> None:
    """The issuer must be a URL (spec: format uri). UNVERIFIED as a server-side rule: requiring https. Chosen
    because OpenID Connect Discovery 1.0 §3 makes issuers https URLs and Entra only fetches https discovery
    documents, so an http issuer could never work; rejecting it early is the kinder failure."""
    parts = urlsplit(issuer)
    if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
        raise _bad_request(
            f"Federated Identity Credential issuer '{issuer}' is invalid. The issuer must be an https URL."
        )  # UNVERIFIED wording


def _credential_properties(payload: Any) -> dict[str, Any]:
    properties = payload.get("properties") if isinstance(payload, dict) else None
    if not properties:
        raise _bad_request("Federated Identity Credential from HTTP body has empty properties")
    issuer, subject, audiences = properties.get("issuer"), properties.get("subject"), properties.get("audiences")
    if not issuer or not subject or audiences is None:
        raise _bad_request(
            "The request format was unexpected. Federated Identity Credential must specify 'issuer', 'subject' and 'audience'."
        )
    if not isinstance(audiences, list) or len(audiences) != 1 or not audiences[0]:
        raise _bad_request("Federated identity credentials must have exactly one audience.")
    for field, value in (("issuer", issuer), ("subject", subject), ("audiences", audiences[0])):
        if len(value) > MAX_PROPERTY_LENGTH:  # the limit is documented, the wording is UNVERIFIED
            raise _bad_request(
                f"Federated Identity Credential property '{field}' exceeds the maximum length of {MAX_PROPERTY_LENGTH} characters."
            )
    _check_issuer(issuer)
    return {"issuer": issuer, "subject": subject, "audiences": list(audiences)}


def _check_unique_and_limit(state: State, identity_id: str, name: str, properties: dict[str, Any]) -> None:
    others = [
        c for c in state.children(identity_id, "federatedIdentityCredentials") if c["name"].lower() != name.lower()
    ]
    pair = (properties["issuer"], properties["subject"])
    for other in others:
        if (other["properties"]["issuer"], other["properties"]["subject"]) == pair:
            # Status 400 per the Entra docs' error table; code "Conflict" as azd/bicep logs print it
            # ("Conflict: Issuer and subject combination already exists ..."). UNVERIFIED pairing.
            raise ArmError(400, "Conflict", "Issuer and subject combination already exists for this Managed Identity.")
    is_new = state.get(f"{identity_id}/federatedIdentityCredentials/{name}") is None
    if is_new and len(others) >= MAX_CREDENTIALS_PER_IDENTITY:
        raise _bad_request(  # the limit of 20 is documented; this wording is UNVERIFIED
            f"The number of Federated Identity Credentials for the managed identity has reached the limit of "
            f"{MAX_CREDENTIALS_PER_IDENTITY}."
        )


@contextmanager
def _credential_write(state: State, identity_id: str) -> Iterator[None]:
    """A federated credential write holds its identity for ``fic_write_seconds``; a second write on the same
    identity meanwhile fails with 409 (azure-behaviour §4). Writes on different identities run in parallel: the wait
    happens outside the state lock."""
    with state.lock:
        meta = state.meta_of(identity_id)
        if meta.get("credential_write_in_flight"):
            raise ArmError(
                409,
                "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
                f"Too many Federated Identity Credentials are written concurrently for the managed identity "
                f"'{identity_id.lower()}'. Concurrent Federated Identity Credentials writes under the same managed "
                "identity are not supported.",
            )
        meta["credential_write_in_flight"] = True
    try:
        time.sleep(state.settings["fic_write_seconds"])
        yield
    finally:
        with state.lock:
            meta["credential_write_in_flight"] = False


# ---------------------------------------------------------------------------------------------------------------
# Federated identity credentials: routes


def _credential_ids(request: Request, state: State) -> tuple[str, str]:
    identity_id = _identity_id(request, state)
    return identity_id, f"{identity_id}/federatedIdentityCredentials/{request.params['credential']}"


@route("PUT", _CREDENTIAL)
def put_credential(request: Request, state: State) -> Response:
    identity_id, credential_id = _credential_ids(request, state)
    name = request.params["credential"]
    _prologue(
        request,
        state,
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
        credential_id,
        FIC_API_VERSIONS,
    )
    _check_credential_name(name)
    _require_parent(request, state, identity_id)
    properties = _credential_properties(request.json())
    with _credential_write(state, identity_id), state.lock:
        parent = _require_parent(request, state, identity_id)  # it may have gone while the write was held
        existing = state.get(credential_id)
        _check_unique_and_limit(state, identity_id, name, properties)
        # Issuer and subject may change in place (recorded 200); only the name is immutable (azure-behaviour §4).
        body = {
            "id": f"{parent['id']}/federatedIdentityCredentials/{existing['name'] if existing else name}",
            "name": existing["name"] if existing else name,
            "type": FIC_TYPE,
            "properties": properties,
        }
        state.put(credential_id, body)
        meta = state.meta_of(credential_id)
        if existing is None:
            meta["created"] = state.now()  # Entra starts its propagation delay here (azure-behaviour §4)
        meta["updated"] = state.now()
    if existing:
        return Response(200, body)
    return Response(201, body, {"Location": body["id"]})


@route("GET", _CREDENTIAL)
def get_credential(request: Request, state: State) -> Response:
    identity_id, credential_id = _credential_ids(request, state)
    _prologue(
        request,
        state,
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read",
        credential_id,
        FIC_API_VERSIONS,
    )
    _require_parent(request, state, identity_id)
    credential = state.get(credential_id)
    if credential is None:
        provider_type = f"{IDENTITY_TYPE}/{request.params['name']}/federatedIdentityCredentials"
        raise resource_not_found(provider_type, request.params["credential"], request.params["resource_group"])
    return Response(200, credential)


@route("DELETE", _CREDENTIAL)
def delete_credential(request: Request, state: State) -> Response:
    identity_id, credential_id = _credential_ids(request, state)
    _prologue(
        request,
        state,
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete",
        credential_id,
        FIC_API_VERSIONS,
    )
    _require_parent(request, state, identity_id)
    with _credential_write(state, identity_id), state.lock:  # a delete is a write too (409 on overlap)
        found = state.delete(credential_id)
    return Response(200 if found else 204)


def _page_arguments(request: Request) -> tuple[int | None, int]:
    try:
        top = int(request.query["$top"]) if request.query.get("$top") else None
        offset = int(request.query.get("$skiptoken") or 0)
    except ValueError:
        raise _bad_request(
            "The request format was unexpected: $top and $skiptoken must be integers."
        ) from None  # UNVERIFIED
    if (top is not None and top < 1) or offset < 0:
        raise _bad_request("The request format was unexpected: $top must be at least 1.")  # UNVERIFIED
    return top, offset


@route("GET", _CREDENTIALS)
def list_credentials(request: Request, state: State) -> Response:
    # $top pages the list; nextLink carries $skiptoken (an offset here: opaque to clients, as in Azure).
    identity_id = _identity_id(request, state)
    action = "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read"
    _prologue(request, state, action, identity_id, FIC_API_VERSIONS)
    _require_parent(request, state, identity_id)
    top, offset = _page_arguments(request)
    credentials = state.children(identity_id, "federatedIdentityCredentials")
    end = len(credentials) if top is None else offset + top
    body: dict[str, Any] = {"value": credentials[offset:end]}
    if end < len(credentials):
        body["nextLink"] = (
            f"{state.config.base_url}{request.path.rstrip('/')}?api-version={request.api_version}&$top={top}&$skiptoken={end}"
        )
    return Response(200, body)


# ---------------------------------------------------------------------------------------------------------------
# Throttling (lab setting "throttling"): the published requests-per-second limits for user-assigned identities, per
# tenant / subscription / resource, from the table in
# https://learn.microsoft.com/en-us/entra/workload-id/workload-identity-federation-considerations#throttling-limits
# The table names the identity operations only. UNVERIFIED: that federated credential calls fall in the same rows
# and charge their parent identity's per-resource bucket (so one identity takes one credential write every 4 s).
# A list charges what it lists: the resource group, the subscription, or the identity (its credentials).

_CREATE_OR_UPDATE = per_second(tenant=10, subscription=2, resource=0.25)
_GET = per_second(tenant=30, subscription=10, resource=0.5)
_LIST = per_second(tenant=15, subscription=5, resource=0.25)
_DELETE = per_second(tenant=10, subscription=2, resource=0.25)
_MSI = "Microsoft.ManagedIdentity"

limit(("PUT", "PATCH"), _IDENTITY, provider=_MSI, operation="write", resource=_IDENTITY, limits=_CREATE_OR_UPDATE)
limit("GET", _IDENTITY, provider=_MSI, operation="read", resource=_IDENTITY, limits=_GET)
limit("DELETE", _IDENTITY, provider=_MSI, operation="delete", resource=_IDENTITY, limits=_DELETE)
limit("GET", _IDENTITIES, provider=_MSI, operation="list", resource=_GROUP, limits=_LIST)
limit(
    "GET",
    _SUBSCRIPTION + r"/providers/Microsoft\.ManagedIdentity/userAssignedIdentities",
    provider=_MSI,
    operation="list",
    resource=_SUBSCRIPTION,
    limits=_LIST,
)
limit("PUT", _CREDENTIAL, provider=_MSI, operation="write", resource=_IDENTITY, limits=_CREATE_OR_UPDATE)
limit("GET", _CREDENTIAL, provider=_MSI, operation="read", resource=_IDENTITY, limits=_GET)
limit("DELETE", _CREDENTIAL, provider=_MSI, operation="delete", resource=_IDENTITY, limits=_DELETE)
limit("GET", _CREDENTIALS, provider=_MSI, operation="list", resource=_IDENTITY, limits=_LIST)
