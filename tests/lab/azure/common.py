"""ARM conventions shared by the route modules: ids, api-version, parent checks, standard errors."""

from __future__ import annotations

import datetime
import re
from typing import Any

from .server import ArmError, Request
from .state import State


def utcnow_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def require_api_version(request: Request) -> str:
    """The request's api-version; ARM refuses a request without one before anything else (any route)."""
    version = request.api_version
    if not version:
        raise ArmError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    return version


# How ARM refuses an api-version it does not know (azure-behaviour §1, "Refusals"). Three shapes, by who owns the
# route; each lists the versions the route accepts, in the order of its tuple:
# - ARM's own routes (Microsoft.Resources: resource groups): 400 InvalidApiVersionParameter, "The api-version '{v}'
#   is invalid. The supported versions are '{v1,v2,...}'." (no spaces; Azure/azure-cli#27109,
#   Azure/azure-sdk-for-net#2303);
# - a resource provider's type bound to a location (managedClusters, userAssignedIdentities, vaults): 400
#   NoRegisteredProviderFound, "No registered resource provider found for location '{l}' and API version '{v}' for
#   type '{type}'. The supported api-versions are '{v1, v2, ...}'. The supported locations are '{l1, l2, ...}'."
#   (Azure/azure-cli#28368, #28952, Azure/kubectl-aks#48, Azure/azure-sdk-for-node#4388);
# - a global type (Microsoft.Authorization roleAssignments/roleDefinitions): 404 InvalidResourceType, "The resource
#   type '{type}' could not be found in the namespace '{ns}' for api version '{v}'. The supported api-versions are
#   '{v1,v2,...}'." (Azure/acs-engine#4037, Azure/azure-sdk-for-go#16699, Azure/azure-sdk-for-node#3638; the 404 is
#   seen in JulianHayward/Azure-MG-Sub-Governance-Reporting#297 and as the "NotFound" of acs-engine#4037).
# A value that is not a version at all ('latest') gets ARM's InvalidApiVersionParameter on every route: UNVERIFIED
# for provider routes (no capture found); the list it names here is the route's.
_VERSION_SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")


def _invalid_api_version(version: str, supported: tuple[str, ...]) -> ArmError:
    return ArmError(
        400,
        "InvalidApiVersionParameter",
        f"The api-version '{version}' is invalid. The supported versions are '{','.join(supported)}'.",
    )


def require_arm_api_version(request: Request, supported: tuple[str, ...]) -> str:
    """api-version check of a route ARM serves itself (Microsoft.Resources)."""
    version = require_api_version(request)
    if version not in supported:
        raise _invalid_api_version(version, supported)
    return version


def _request_location(request: Request, state: State) -> str:
    """The location ARM routes a provider request by: the body's for a write that names one, else the resource
    group's, else the lab's region."""
    if request.method in ("PUT", "PATCH"):
        try:
            body = request.json()
        except ArmError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("location"), str) and body["location"]:
            return body["location"].replace(" ", "").lower()
    subscription = request.params.get("subscription") or request.params.get("sub")
    group = request.params.get("resource_group") or request.params.get("rg")
    if subscription and group:
        found = state.get(resource_group_id(subscription, group))
        if found and found.get("location"):
            return found["location"]
    return state.config.location


def require_provider_api_version(request: Request, state: State, supported: tuple[str, ...], resource_type: str) -> str:
    """api-version check of a location-bound resource provider type (``resource_type`` as ARM names it in the
    message: the type path without the namespace, e.g. 'managedClusters')."""
    version = require_api_version(request)
    if version in supported:
        return version
    if not _VERSION_SHAPE.match(version):
        raise _invalid_api_version(version, supported)
    location = _request_location(request, state)
    # Azure lists every region the provider serves; the lab serves its own region and whichever a request names.
    locations = ", ".join(sorted({state.config.location, location}))
    raise ArmError(
        400,
        "NoRegisteredProviderFound",
        f"No registered resource provider found for location '{location}' and API version '{version}' for type "
        f"'{resource_type}'. The supported api-versions are '{', '.join(supported)}'. The supported locations are "
        f"'{locations}'.",
    )


def require_global_api_version(request: Request, supported: tuple[str, ...], namespace: str, resource_type: str) -> str:
    """api-version check of a resource type that is not bound to a location (Microsoft.Authorization)."""
    version = require_api_version(request)
    if version in supported:
        return version
    if not _VERSION_SHAPE.match(version):
        raise _invalid_api_version(version, supported)
    raise ArmError(
        404,
        "InvalidResourceType",
        f"The resource type '{resource_type}' could not be found in the namespace '{namespace}' for api version "
        f"'{version}'. The supported api-versions are '{','.join(supported)}'.",
    )


def require_subscription(request: Request, state: State, subscription: str) -> None:
    if subscription.lower() != state.config.subscription_id.lower():
        raise ArmError(404, "SubscriptionNotFound", f"The subscription '{subscription}' could not be found.")


def resource_group_id(subscription: str, resource_group: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{resource_group}"


def require_resource_group(request: Request, state: State, subscription: str, resource_group: str) -> dict[str, Any]:
    """The resource group as stored, or ARM's 404 ResourceGroupNotFound."""
    require_subscription(request, state, subscription)
    found = state.get(resource_group_id(subscription, resource_group))
    if found is None:
        raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{resource_group}' could not be found.")
    return found


def resource_id(subscription: str, resource_group: str, provider_type: str, name: str) -> str:
    """Returned ids lower-case 'resourcegroups' as Azure does for these providers (azure-behaviour §2)."""
    return f"/subscriptions/{subscription}/resourcegroups/{resource_group}/providers/{provider_type}/{name}"


def resource_not_found(provider_type: str, name: str, resource_group: str) -> ArmError:
    # azure-behaviour §3.1: the gateway's 404 for a missing tracked resource.
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{provider_type}/{name}' under resource group '{resource_group}' was not found. "
        "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
        {"x-ms-failure-cause": "gateway"},
    )
