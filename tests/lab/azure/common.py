"""ARM conventions shared by the route modules: ids, api-version, parent checks, standard errors."""

from __future__ import annotations

import datetime
from typing import Any

from .server import ArmError, Request
from .state import State


def utcnow_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def require_api_version(request: Request, supported: tuple[str, ...] | None = None) -> str:
    version = request.api_version
    if not version:
        raise ArmError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    if supported and version not in supported:
        raise ArmError(
            400,
            "NoRegisteredProviderFound",
            f"No registered resource provider found for location '{request.params.get('location', 'eastus')}' and API version "
            f"'{version}'. The supported api-versions are '{', '.join(supported)}'.",
        )
    return version


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
