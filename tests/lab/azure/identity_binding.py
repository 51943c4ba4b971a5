"""Microsoft.ContainerService/managedClusters/identityBindings: AKS identity bindings (azure-behaviour §10).

A binding maps one user-assigned managed identity to one cluster. AKS keeps one OIDC issuer per identity (not per
cluster or binding), https://ib.oic.prod-aks.azure.com/{tenantId}/{clientId}, and puts one federated identity
credential, ``aks-identity-binding``, on the identity, shared by every binding of it. Here the issuer keeps that path
on the emulator's host and publishes a discovery document and key set, so Entra (entra.py) can verify tokens issued
for it, as it does for the clusters' issuers (oidc.py).

The contract: specification/containerservice/resource-manager/Microsoft.ContainerService/aks/stable/2026-04-01/
managedClusters.json (paths .../managedClusters/{resourceName}/identityBindings[/{identityBindingName}], definitions
IdentityBinding*), from specification/.../aks/IdentityBinding.tsp, and its examples IdentityBindings_*.json. The
behaviour: https://learn.microsoft.com/azure/aks/identity-bindings-concepts and
https://learn.microsoft.com/azure/aks/identity-bindings. Long-running operations reuse aks.py's: a PUT that creates
answers 201 Creating and finishes ``lro_seconds`` later, settled by whichever read comes first (azure-behaviour §3).
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from . import msi
from .aks import (
    OPERATION_HANDLERS,
    PROVIDER_TYPE,
    _operation_url,
    _start_operation,
    is_wired,
    settle_operation,
    settled_cluster,
)
from .arm import authorize, is_authorized
from .common import (
    require_provider_api_version,
    require_resource_group,
    require_subscription,
    resource_id,
    resource_not_found,
)
from .oidc import TOKEN_PROXY, issuer_source
from .server import ArmError, Request, Response, route
from .state import State

BINDING_TYPE = "Microsoft.ContainerService/managedClusters/identityBindings"  # as the spec examples spell it
CREDENTIAL_NAME = "aks-identity-binding"  # the credential AKS creates on the identity (identity-bindings how-to)
# LAB CHOICE, no public source gives them: the subject and audience of that credential. Its subject has to be one
# value for every cluster and service account the identity serves (one credential, no wildcards: azure-behaviour
# §4), so the lab uses the identity's client ID; the audience is the value Entra recommends for every federated
# credential (azure-behaviour §4). Tokens issued for a binding's issuer must carry these to be exchanged.
CREDENTIAL_AUDIENCE = "api://AzureADTokenExchange"


def credential_subject(client_id: str) -> str:
    """The subject of an identity's ``aks-identity-binding`` credential: LAB CHOICE (see CREDENTIAL_AUDIENCE)."""
    return client_id


# api-versions of the identityBindings routes (azure-behaviour §1): the aks/stable/ folders from 2026-04-01 on
# (IdentityBinding.tsp: @added(Versions.v2026_04_01); azure-mgmt-containerservice 41.8 lists 2026-04-01 ... 2026-08-01
# for the operations; 2026-10-01/managedClusters.json has them too) and the aks/preview/ folders from
# 2025-06-02-preview on (examples/IdentityBindings_*.json; 2025-05-02-preview has none).
_STABLE = ("2026-04-01", "2026-05-01", "2026-06-01", "2026-07-01", "2026-08-01", "2026-10-01")
_PREVIEW = (
    "2025-06-02-preview", "2025-07-02-preview", "2025-08-02-preview", "2025-09-02-preview", "2025-10-02-preview",
    "2026-01-02-preview", "2026-02-02-preview", "2026-03-02-preview", "2026-04-02-preview", "2026-05-02-preview",
    "2026-06-02-preview", "2026-07-02-preview", "2026-08-02-preview", "2026-10-02-preview",
)  # fmt: skip
IDENTITY_BINDING_API_VERSIONS = tuple(sorted(_STABLE + _PREVIEW))  # ascending, as ARM lists them in its refusal

_READ = "Microsoft.ContainerService/managedClusters/identityBindings/read"
_WRITE = "Microsoft.ContainerService/managedClusters/identityBindings/write"
_DELETE = "Microsoft.ContainerService/managedClusters/identityBindings/delete"
_CREDENTIAL_WRITE = "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write"
_HANDLER = "identityBinding"  # this module's long-running operations, as aks.OPERATION_HANDLERS knows them

# Spec: identityBindingName "^[a-z][a-z0-9]{0,63}$", 1-63 characters. (The how-to names its binding "${MI_NAME}-ib",
# which this pattern refuses; the lab keeps to the spec.) managedIdentity.resourceId: the spec's pattern, matched
# case-insensitively, since the identity provider itself returns ids with 'resourcegroups' (azure-behaviour §2).
_BINDING_NAME = re.compile(r"^[a-z][a-z0-9]{0,62}$")
_IDENTITY_ID = re.compile(
    r"^/subscriptions/[a-zA-Z0-9-]+/resourceGroups/[a-zA-Z0-9-]+/providers/Microsoft\.ManagedIdentity/"
    r"userAssignedIdentities/[a-zA-Z0-9-]+$",
    re.IGNORECASE,
)
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

_SUBSCRIPTION = r"/subscriptions/(?P<subscription>[^/]+)"
_CLUSTER = (
    _SUBSCRIPTION
    + r"/resourcegroups/(?P<resource_group>[^/]+)/providers/Microsoft\.ContainerService/managedClusters/(?P<cluster>[^/]+)"
)
_BINDINGS = _CLUSTER + r"/identityBindings"
_BINDING = _BINDINGS + r"/(?P<name>[^/]+)"


# ---------------------------------------------------------------------------------------------------------------
# Issuer and credential


def issuer_url(state: State, tenant_id: str, client_id: str) -> str:
    """The identity's binding issuer: AKS's path, /{tenantId}/{clientId} with no trailing slash (the how-to's
    example output; azure-cli's test_aks_identity_binding.py checks the URL ends with '/{tenantId}/{clientId}'),
    on the emulator's host instead of ib.oic.prod-aks.azure.com."""
    return f"{state.config.base_url}/{tenant_id}/{client_id}"


def _ensure_credential(state: State, identity: dict[str, Any], issuer: str) -> None:
    """Create (or restore, or reuse) the identity's ``aks-identity-binding`` credential. The docs: AKS creates the
    credential when a binding is created, or reuses it; one per identity, shared by all its bindings. The MSI
    provider's rules still apply (its limit of 20 credentials per identity, unique issuer and subject)."""
    props = identity["properties"]
    properties = {
        "issuer": issuer,
        "subject": credential_subject(props["clientId"]),
        "audiences": [CREDENTIAL_AUDIENCE],
    }
    credential_id = f"{identity['id']}/federatedIdentityCredentials/{CREDENTIAL_NAME}"
    existing = state.get(credential_id)
    if existing is not None and existing["properties"] == properties:
        return
    msi._check_unique_and_limit(state, identity["id"], CREDENTIAL_NAME, properties)
    state.put(
        credential_id, {"id": credential_id, "name": CREDENTIAL_NAME, "type": msi.FIC_TYPE, "properties": properties}
    )
    meta = state.meta_of(credential_id)
    if existing is None:
        meta["created"] = state.now()  # Entra's propagation delay counts from here (azure-behaviour §4)
    meta["updated"] = state.now()


# ---------------------------------------------------------------------------------------------------------------
# Bookkeeping


def _finish(state: State, operation_id: str, operation: dict[str, Any]) -> str:
    """aks.settle_operation's hook: the terminal status of this module's operation whose time has come."""
    binding_id = operation["resource_id"]
    binding = state.get(binding_id)
    if binding is None or state.meta.get(binding_id.lower(), {}).get("operation") != operation_id:
        return "Succeeded" if operation["kind"] == "delete" else "Canceled"  # gone, or superseded by a delete
    if operation["kind"] == "delete":
        state.delete(binding_id)
        return "Succeeded"
    binding["properties"]["provisioningState"] = "Succeeded"
    state.put(binding_id, binding)
    return "Succeeded"


OPERATION_HANDLERS[_HANDLER] = _finish


def settled_binding(state: State, binding_id: str) -> dict[str, Any] | None:
    """The binding as a GET sees it now (settling its operation first)."""
    with state.lock:
        operation_id = state.meta.get(binding_id.lower(), {}).get("operation")
        if operation_id:
            settle_operation(state, operation_id)
        return state.get(binding_id)


def _running(state: State, binding: dict[str, Any] | None) -> bool:
    operation = state.operations.get(state.meta.get((binding or {}).get("id", "").lower(), {}).get("operation", ""))
    return binding is not None and operation is not None and operation["status"] == "InProgress"


def _all_bindings(state: State) -> list[dict[str, Any]]:
    found = state.find(lambda key, body: body.get("type") == BINDING_TYPE)
    return [b for b in (settled_binding(state, f["id"]) for f in found) if b is not None]


# ---------------------------------------------------------------------------------------------------------------
# Checks


def _prologue(request: Request, state: State, action: str, scope: str) -> None:
    """api-version, subscription, RBAC, resource group: ARM's checks before the provider sees the call."""
    require_provider_api_version(request, state, IDENTITY_BINDING_API_VERSIONS, "managedClusters/identityBindings")
    require_subscription(request, state, request.params["subscription"])
    authorize(request, state, action, scope)
    require_resource_group(request, state, request.params["subscription"], request.params["resource_group"])


def _addressed_cluster_id(request: Request, state: State) -> str:
    p = request.params
    return resource_id(state.config.subscription_id, p["resource_group"], PROVIDER_TYPE, p["cluster"])


def _require_cluster(request: Request, state: State) -> dict[str, Any]:
    cluster = settled_cluster(state, _addressed_cluster_id(request, state))
    if cluster is None:
        # ARM's answer for a nested resource whose parent is missing (Learn: "Resolve errors for parent resources",
        # https://learn.microsoft.com/azure/azure-resource-manager/troubleshooting/error-parent-resource). The status
        # (404) is UNVERIFIED for this type.
        raise ArmError(
            404,
            "ParentResourceNotFound",
            f"Can not perform requested operation on nested resource. Parent resource '{request.params['cluster']}' "
            "not found.",
        )
    return cluster


def _invalid(message: str, target: str) -> ArmError:
    return ArmError(400, "InvalidParameter", message, target=target)  # UNVERIFIED code and wording


def _requested_identity(request: Request) -> str:
    name = request.params["name"]
    if not _BINDING_NAME.match(name):
        raise _invalid(
            f"The value of parameter identityBindingName '{name}' is invalid: it must match '^[a-z][a-z0-9]{{0,63}}$' "
            "and be at most 63 characters long.",
            "identityBindingName",
        )
    payload = request.json()
    profile = ((payload or {}).get("properties") or {}).get("managedIdentity") if isinstance(payload, dict) else None
    wanted = (profile or {}).get("resourceId") if isinstance(profile, dict) else None
    if not isinstance(wanted, str) or not wanted:
        raise _invalid("properties.managedIdentity.resourceId is required.", "properties.managedIdentity.resourceId")
    if not _IDENTITY_ID.match(wanted):
        raise _invalid(
            f"The managed identity resource ID '{wanted}' is not the ID of a user-assigned managed identity.",
            "properties.managedIdentity.resourceId",
        )
    return wanted


def _check_linked_access(request: Request, state: State, binding_id: str, identity_id: str) -> None:
    """The docs: creating a binding needs the right to write federated credentials on the identity, and fails
    without it. The answer is ARM's linked access check (code and wording as ARM gives them for other linked
    scopes, Learn: "Troubleshoot Azure RBAC"); that AKS's identityBindings declare this check is UNVERIFIED."""
    if is_authorized(
        request, state, _CREDENTIAL_WRITE, f"{identity_id}/federatedIdentityCredentials/{CREDENTIAL_NAME}"
    ):
        return
    oid = (request.principal or {}).get("oid", "")
    raise ArmError(
        403,
        "LinkedAuthorizationFailed",
        f"The client '{oid}' with object id '{oid}' has permission to perform action '{_WRITE}' on scope "
        f"'{binding_id}'; however, it does not have permission to perform action(s) '{_CREDENTIAL_WRITE}' on the "
        f"linked scope(s) '{identity_id}' (respectively) or the linked scope(s) are invalid.",
    )


def _check_cluster(cluster: dict[str, Any]) -> None:
    """The docs' one limitation: no identity bindings on clusters with API server VNet integration. The error code
    and wording are UNVERIFIED."""
    if ((cluster.get("properties") or {}).get("apiServerAccessProfile") or {}).get("enableVnetIntegration"):
        raise ArmError(
            400,
            "BadRequest",
            "Identity bindings are not supported on clusters with API server VNet integration.",
        )


def _check_one_binding_per_identity(state: State, cluster: dict[str, Any], binding_id: str, identity_id: str) -> None:
    """LAB CHOICE (UNVERIFIED): the docs define a binding as the mapping of one identity to one cluster, so a second
    binding of the same identity on the same cluster is refused, 409."""
    for other in state.children(cluster["id"], "identityBindings"):
        same = other["properties"]["managedIdentity"]["resourceId"].lower() == identity_id.lower()
        if same and other["id"].lower() != binding_id.lower():
            raise ArmError(
                409,
                "Conflict",
                f"The managed identity '{identity_id}' is already bound to managed cluster '{cluster['name']}' by "
                f"identity binding '{other['name']}'.",
            )


def _busy(binding: dict[str, Any]) -> ArmError:
    # The words AKS uses for a cluster with an operation running (aks.put_cluster); for bindings UNVERIFIED.
    return ArmError(
        409,
        "OperationNotAllowed",
        f"Operation is not allowed: Another operation ({binding['properties']['provisioningState']}) is in progress, "
        "please wait for it to finish before starting a new operation.",
    )


# ---------------------------------------------------------------------------------------------------------------
# Routes


def _binding_body(binding_id: str, name: str, wanted: str, identity: dict[str, Any], issuer: str) -> dict[str, Any]:
    """Key order as the spec's examples; managedIdentity echoes the resourceId as sent and adds the identity's
    read-only objectId, clientId and tenantId; oidcIssuer and provisioningState are read-only."""
    props = identity["properties"]
    return {
        "id": binding_id,
        "name": name,
        "type": BINDING_TYPE,
        "properties": {
            "managedIdentity": {
                "resourceId": wanted,
                "objectId": props["principalId"],
                "clientId": props["clientId"],
                "tenantId": props["tenantId"],
            },
            "oidcIssuer": {"oidcIssuerUrl": issuer},
            "provisioningState": "Creating",
        },
        "eTag": str(uuid.uuid4()),  # read-only; the service's format is UNVERIFIED (the examples say "string")
    }


def _operation_headers(state: State, location: str, operation_id: str) -> dict[str, str]:
    # Spec (ArmCombinedLroHeaders): Azure-AsyncOperation and Location on the 201 of a create and the 202 of a delete,
    # final-state-via 'location'. The Location URL ends with the binding (PUT) or 204 (DELETE).
    return {
        "Azure-AsyncOperation": _operation_url(state, location, operation_id),
        "Location": _operation_url(state, location, operation_id, "operationresults"),
    }


@route("PUT", _BINDING)
def put_binding(request: Request, state: State) -> Response:
    addressed = f"{_addressed_cluster_id(request, state)}/identityBindings/{request.params['name']}"
    _prologue(request, state, _WRITE, addressed)
    wanted = _requested_identity(request)
    with state.lock:
        cluster = _require_cluster(request, state)
        existing = settled_binding(state, f"{cluster['id']}/identityBindings/{request.params['name']}")
        binding_id = existing["id"] if existing else f"{cluster['id']}/identityBindings/{request.params['name']}"
        if existing is not None:
            if _running(state, existing):
                raise _busy(existing)
            if existing["properties"]["managedIdentity"]["resourceId"].lower() != wanted.lower():
                # managedIdentity is read/create only (spec x-ms-mutability); code and wording as AKS gives them for
                # dnsPrefix (aks._check_immutable), UNVERIFIED here.
                raise ArmError(
                    400,
                    "PropertyChangeNotAllowed",
                    "Changing property 'managedIdentity.resourceId' is not allowed.",
                    target="properties.managedIdentity.resourceId",
                )
        _check_linked_access(request, state, binding_id, wanted)
        identity = state.get(wanted)
        if identity is None or identity.get("type") != msi.IDENTITY_TYPE:
            raise _invalid(  # UNVERIFIED: code and wording
                f"The user-assigned managed identity '{wanted}' could not be found.",
                "properties.managedIdentity.resourceId",
            )
        _check_cluster(cluster)
        _check_one_binding_per_identity(state, cluster, binding_id, wanted)
        issuer = issuer_url(state, identity["properties"]["tenantId"], identity["properties"]["clientId"])
        # UNVERIFIED: whether AKS writes the credential before it answers or while the operation runs; written here
        # at once, so the MSI provider's refusals (its limit of 20) fail the PUT itself.
        _ensure_credential(state, identity, issuer)
        if existing is not None:
            # Spec: the 200 of a PUT is a finished update (no LRO headers). Nothing in a stable binding is writable
            # after creation, so the binding comes back as it is; its credential was restored above if missing.
            return Response(200, existing)
        body = _binding_body(binding_id, request.params["name"], wanted, identity, issuer)
        state.put(binding_id, body)
        operation_id = _start_operation(state, binding_id, "put", cluster["location"], handler=_HANDLER)
    return Response(201, body, _operation_headers(state, cluster["location"], operation_id))


@route("GET", _BINDING)
def get_binding(request: Request, state: State) -> Response:
    addressed = f"{_addressed_cluster_id(request, state)}/identityBindings/{request.params['name']}"
    _prologue(request, state, _READ, addressed)
    cluster = _require_cluster(request, state)
    binding = settled_binding(state, f"{cluster['id']}/identityBindings/{request.params['name']}")
    if binding is None:
        provider_type = f"{PROVIDER_TYPE}/{cluster['name']}/identityBindings"
        raise resource_not_found(provider_type, request.params["name"], request.params["resource_group"])
    return Response(200, binding)


@route("GET", _BINDINGS)
def list_bindings(request: Request, state: State) -> Response:
    _prologue(request, state, _READ, _addressed_cluster_id(request, state))
    cluster = _require_cluster(request, state)
    found = state.children(cluster["id"], "identityBindings")
    return Response(200, {"value": [b for b in (settled_binding(state, f["id"]) for f in found) if b is not None]})


@route("DELETE", _BINDING)
def delete_binding(request: Request, state: State) -> Response:
    # Spec: 202 with Azure-AsyncOperation and Location while it runs, 204 when there is nothing to delete. The
    # credential stays: "There's no automatic garbage collection of the FIC today when the last identity binding
    # referencing a UAMI is deleted" (identity-bindings-concepts, FAQ).
    addressed = f"{_addressed_cluster_id(request, state)}/identityBindings/{request.params['name']}"
    _prologue(request, state, _DELETE, addressed)
    with state.lock:
        cluster = settled_cluster(state, _addressed_cluster_id(request, state))
        if cluster is None:  # UNVERIFIED: 204 rather than ParentResourceNotFound (nothing to delete either way)
            return Response(204)
        binding = settled_binding(state, f"{cluster['id']}/identityBindings/{request.params['name']}")
        if binding is None:
            return Response(204)
        operation_id = state.meta_of(binding["id"]).get("operation", "")
        if not (_running(state, binding) and binding["properties"]["provisioningState"] == "Deleting"):
            binding["properties"]["provisioningState"] = "Deleting"  # a running create is superseded (Canceled)
            state.put(binding["id"], binding)
            operation_id = _start_operation(state, binding["id"], "delete", cluster["location"], handler=_HANDLER)
    return Response(202, None, _operation_headers(state, cluster["location"], operation_id))


# ---------------------------------------------------------------------------------------------------------------
# What the AKS token proxy (token_proxy.py) asks: the bindings of an identity on the clusters wired to the lab.


def wired_bindings(state: State, client_id: str) -> list[dict[str, Any]]:
    """The finished bindings (provisioningState Succeeded) of the identity with ``client_id`` on clusters wired to the
    lab's (first) kube-apiserver: the clusters whose workloads the lab's token proxy serves. A cluster added with
    ``add_cluster`` has no token proxy (docs/lab.md §8), so its bindings are not among them."""
    found = []
    for binding in _all_bindings(state):
        props = binding["properties"]
        if props["provisioningState"] != "Succeeded":
            continue
        if str(props["managedIdentity"].get("clientId", "")).lower() != client_id.lower():
            continue
        parts = binding["id"].split("/")  # /subscriptions/{s}/resourcegroups/{rg}/providers/{ns}/{type}/{cluster}/...
        if is_wired(state, parts[4], parts[8], primary_only=True):
            found.append(binding)
    return found


# ---------------------------------------------------------------------------------------------------------------
# The bindings' OIDC issuers, served by oidc.py's issuer route (same path shape, no trailing slash).


@issuer_source
def _binding_issuer(state: State, issuer_path: str) -> tuple[str, str | None] | None:
    """(issuer URL, who signs for it). Published once a binding of the identity has been created (its operation ran),
    until the last one is gone: UNVERIFIED, AKS's timing is not documented.
    AKS's token proxy issues this issuer's tokens for the clusters' workloads (identity-bindings-concepts); which key
    it signs with is not public. LAB CHOICE: one key of the lab's token proxy (token_proxy.py), the same for every
    binding issuer and every cluster, as the issuer is the identity's and not a cluster's; so the JWKS holds that key
    whichever cluster the binding is on (a binding on an unwired cluster has no proxy in the lab to use it)."""
    for binding in _all_bindings(state):
        url = binding["properties"]["oidcIssuer"]["oidcIssuerUrl"]
        if binding["properties"]["provisioningState"] != "Creating" and urlsplit(url).path == issuer_path:
            return url, TOKEN_PROXY
    return None
