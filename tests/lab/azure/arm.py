"""Azure Resource Manager itself: cloud metadata, subscriptions and resource groups.

Also the small helpers the resource-provider modules (aks.py, msi.py) share: the RBAC hook and the delete that
takes a resource's children and directory principals with it.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from .common import require_api_version, require_arm_api_version, require_subscription, resource_group_id
from .server import ArmError, Request, Response, route
from .state import State, seeder

RESOURCE_GROUP_TYPE = "Microsoft.Resources/resourceGroups"
_SUBSCRIPTION = r"/subscriptions/(?P<subscription>[^/]+)"
_RESOURCE_GROUP = _SUBSCRIPTION + r"/resourcegroups/(?P<resource_group>[^/]+)"
# api-versions of the resource group routes. ARM serves these itself, and its refusal lists the versions it knows
# (azure-behaviour §1): that list as Azure/azure-cli#27109 quotes it (August 2023, ARM's order and spelling, its
# odd '2014-04' included), preceded by the newer folders of the spec, specification/resources/resource-manager/
# Microsoft.Resources/resources/stable/{2024-03-01,2024-07-01,2024-11-01,2025-03-01,2025-04-01}/resources.json. Every
# older spec folder (2015-11-01 ... 2023-07-01) is in ARM's list.
RESOURCE_GROUP_API_VERSIONS = (
    "2025-04-01", "2025-03-01", "2024-11-01", "2024-07-01", "2024-03-01",
    "2023-07-01", "2023-07-01-preview", "2023-03-01-preview", "2022-12-01", "2022-11-01-preview", "2022-09-01",
    "2022-06-01", "2022-05-01", "2022-03-01-preview", "2022-01-01", "2021-04-01", "2021-01-01", "2020-10-01",
    "2020-09-01", "2020-08-01", "2020-07-01", "2020-06-01", "2020-05-01", "2020-01-01", "2019-11-01", "2019-10-01",
    "2019-09-01", "2019-08-01", "2019-07-01", "2019-06-01", "2019-05-10", "2019-05-01", "2019-03-01", "2018-11-01",
    "2018-09-01", "2018-08-01", "2018-07-01", "2018-06-01", "2018-05-01", "2018-02-01", "2018-01-01", "2017-12-01",
    "2017-08-01", "2017-06-01", "2017-05-10", "2017-05-01", "2017-03-01", "2016-09-01", "2016-07-01", "2016-06-01",
    "2016-02-01", "2015-11-01", "2015-01-01", "2014-04-01-preview", "2014-04-01", "2014-01-01", "2013-03-01",
    "2014-02-26", "2014-04",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Shared by the resource-provider modules


def authorize(request: Request, state: State, action: str, scope: str) -> None:
    from . import authorization  # written by a sibling module; enforces RBAC on ARM calls

    authorization.authorize(request, state, action, scope)


def is_authorized(request: Request, state: State, action: str, scope: str) -> bool:
    """For list calls: ARM returns only what the caller may read instead of failing the whole list."""
    try:
        authorize(request, state, action, scope)
    except ArmError as error:
        if error.status == 403:
            return False
        raise
    return True


def delete_resource_tree(state: State, resource_id: str) -> dict[str, Any] | None:
    """Delete a resource and everything under it, and drop the directory principals those resources owned
    (a deleted managed identity's service principal disappears with it). Resources list the principals they own
    in ``state.meta_of(id)["principals"]``."""
    with state.lock:
        prefix = resource_id.lower()
        for key in [k for k in state.resources if k == prefix or k.startswith(prefix + "/")]:
            for object_id in state.meta.get(key, {}).get("principals", []):
                state.remove_principal(object_id)
        return state.delete(resource_id)


def normalize_location(location: str) -> str:
    return location.replace(" ", "").lower()  # "East US" -> "eastus", as ARM stores it


def check_location_unchanged(existing: dict[str, Any] | None, location: str, resource_group: str) -> None:
    """A tracked resource cannot move by PUT. UNVERIFIED: status and wording of ARM's InvalidResourceLocation."""
    if existing is not None and existing["location"] != normalize_location(location):
        raise ArmError(
            409,
            "InvalidResourceLocation",
            f"The resource '{existing['name']}' already exists in location '{existing['location']}' in resource group "
            f"'{resource_group}'. A resource with the same name cannot be created in location "
            f"'{normalize_location(location)}'. Please select a new resource name.",
        )


# ---------------------------------------------------------------------------------------------------------------
# Cloud metadata


def _cloud(state: State) -> dict[str, Any]:
    """The lab as an Azure cloud: every endpoint a client derives from the metadata points at the emulator."""
    base = state.config.base_url
    return {
        "name": "AksWorkloadIdentityLab",
        "portal": base,
        "resourceManager": base + "/",
        "authentication": {
            "loginEndpoint": base + "/",
            # audiences[0] is the ARM token audience clients ask for (azure-cli maps it to
            # active_directory_resource_id); the lab also accepts its own address, as ARM accepts both of its.
            "audiences": [state.config.arm_audience, base + "/"],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "graph": base + "/",
        "graphAudience": base + "/",
        "microsoftGraphResourceId": base + "/",
        # Azure publishes "vault.azure.net" (no leading dot; azure-cli adds it) and vaults are
        # <name>.vault.azure.net; lab vaults are <name>.<vault_dns_suffix>, port included.
        "suffixes": {"keyVaultDns": state.config.vault_dns_suffix},
    }


def _legacy_cloud(state: State) -> dict[str, Any]:
    # The pre-2019 shape msrestazure still asks for (api-version 2015-01-01): gallery/graph/portal + authentication.
    cloud = _cloud(state)
    return {
        "galleryEndpoint": cloud["portal"] + "/",
        "graphEndpoint": cloud["graph"],
        "graphAudience": cloud["graphAudience"],
        "portalEndpoint": cloud["portal"] + "/",
        "authentication": cloud["authentication"],
    }


@route("GET", r"/metadata/endpoints", auth=None)
def get_metadata_endpoints(request: Request, state: State) -> Response:
    # Shapes seen from management.azure.com: 2022-09-01 -> one object for this cloud (azure-cli `cloud register`
    # feeds it to _arm_to_cli_mapper as a dict); 2019-05-01 -> an array of clouds (azure-cli's
    # ARM_CLOUD_METADATA_URL loop); 1.0/2015-01-01/2018-01-01 -> the legacy object. Sources: azure-cli cloud.py,
    # pulumi and other ARM metadata stub servers quoting real responses.
    version = require_api_version(request)
    if version >= "2022-09-01":
        return Response(200, _cloud(state))
    if version >= "2019-05-01":
        return Response(200, [_cloud(state)])
    return Response(200, _legacy_cloud(state))


# ---------------------------------------------------------------------------------------------------------------
# Subscriptions (read-only: the lab has exactly one)


def _subscription(state: State) -> dict[str, Any]:
    subscription = state.config.subscription_id
    return {
        "id": f"/subscriptions/{subscription}",
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": subscription,
        "tenantId": state.config.tenant_id,
        "displayName": "aks-workload-identity-lab",
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off",
        },
    }


@route("GET", r"/subscriptions")
def list_subscriptions(request: Request, state: State) -> Response:
    require_api_version(request)
    return Response(200, {"value": [_subscription(state)], "count": {"type": "Total", "value": 1}})


@route("GET", _SUBSCRIPTION)
def get_subscription(request: Request, state: State) -> Response:
    require_api_version(request)
    require_subscription(request, state, request.params["subscription"])
    return Response(200, _subscription(state))


# ---------------------------------------------------------------------------------------------------------------
# Resource groups


def _resource_group_scope(request: Request) -> str:
    return resource_group_id(request.params["subscription"], request.params["resource_group"])


def _stored_group(state: State, request: Request) -> dict[str, Any]:
    group = state.get(_resource_group_scope(request))
    if group is None:
        name = request.params["resource_group"]
        raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
    return group


def _group_body(state: State, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": resource_group_id(state.config.subscription_id, name),
        "name": name,
        "type": RESOURCE_GROUP_TYPE,
        "location": payload["location"],
        "properties": {"provisioningState": "Succeeded"},
    }
    if payload.get("managedBy"):
        body["managedBy"] = payload["managedBy"]
    if payload.get("tags") is not None:  # real responses carry no "tags" key when none were set
        body["tags"] = payload["tags"]
    return body


def _validate_group_payload(payload: Any, existing: dict[str, Any] | None) -> dict[str, Any]:
    if not isinstance(payload, dict) or not payload.get("location"):
        raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
    location = normalize_location(payload["location"])
    if existing is not None and existing["location"] != location:
        # ARM refuses to move a resource group; the message names both locations.
        raise ArmError(
            409,
            "InvalidResourceGroupLocation",
            f"Invalid resource group location '{location}'. The Resource group already exists in location "
            f"'{existing['location']}'.",
        )
    return {**payload, "location": location}


@route("PUT", _RESOURCE_GROUP)
def put_resource_group(request: Request, state: State) -> Response:
    require_arm_api_version(request, RESOURCE_GROUP_API_VERSIONS)
    require_subscription(request, state, request.params["subscription"])
    scope = _resource_group_scope(request)
    authorize(request, state, "Microsoft.Resources/subscriptions/resourceGroups/write", scope)
    with state.lock:
        existing = state.get(scope)
        payload = _validate_group_payload(request.json(), existing)
        # PUT replaces: tags left out of the body are removed (the az group create "wipes my tags" behaviour).
        name = existing["name"] if existing else request.params["resource_group"]
        body = state.put(scope, _group_body(state, name, payload))
    return Response(200 if existing else 201, body)


@route("GET", _RESOURCE_GROUP)
def get_resource_group(request: Request, state: State) -> Response:
    require_arm_api_version(request, RESOURCE_GROUP_API_VERSIONS)
    require_subscription(request, state, request.params["subscription"])
    authorize(request, state, "Microsoft.Resources/subscriptions/resourceGroups/read", _resource_group_scope(request))
    return Response(200, _stored_group(state, request))


@route("HEAD", _RESOURCE_GROUP)
def head_resource_group(request: Request, state: State) -> Response:
    # ResourceGroups_CheckExistence: 204 or 404, no body either way.
    require_arm_api_version(request, RESOURCE_GROUP_API_VERSIONS)
    require_subscription(request, state, request.params["subscription"])
    authorize(request, state, "Microsoft.Resources/subscriptions/resourceGroups/read", _resource_group_scope(request))
    return Response(204 if state.get(_resource_group_scope(request)) else 404)


@route("PATCH", _RESOURCE_GROUP)
def patch_resource_group(request: Request, state: State) -> Response:
    # ResourceGroups_Update: only tags (and managedBy) change; a missing key leaves the value alone.
    require_arm_api_version(request, RESOURCE_GROUP_API_VERSIONS)
    require_subscription(request, state, request.params["subscription"])
    scope = _resource_group_scope(request)
    authorize(request, state, "Microsoft.Resources/subscriptions/resourceGroups/write", scope)
    patch = request.json() or {}
    with state.lock:
        group = _stored_group(state, request)
        for key in ("tags", "managedBy"):
            if key in patch:
                group[key] = patch[key]
        return Response(200, state.put(scope, group))


@route("DELETE", _RESOURCE_GROUP)
def delete_resource_group(request: Request, state: State) -> Response:
    # ARM deletes a resource group asynchronously: 202 + Location (operationresults), which answers 202 while
    # running and 200 when done. Here the delete is immediate, so the first poll already says 200.
    version = require_arm_api_version(request, RESOURCE_GROUP_API_VERSIONS)
    subscription = request.params["subscription"]
    require_subscription(request, state, subscription)
    scope = _resource_group_scope(request)
    authorize(request, state, "Microsoft.Resources/subscriptions/resourceGroups/delete", scope)
    _stored_group(state, request)
    delete_resource_tree(state, scope)
    job = f"RESOURCEGROUPDELETIONJOB-{request.params['resource_group'].upper()}-{uuid.uuid4().hex[:8].upper()}"
    token = base64.urlsafe_b64encode(json.dumps({"jobId": job, "jobLocation": state.config.location}).encode())
    token_text = token.decode().rstrip("=")
    with state.lock:
        state.operations[token_text] = {"kind": "resourceGroupDeletion", "status": "Succeeded"}
    location = (
        f"{state.config.base_url}/subscriptions/{subscription}/operationresults/{token_text}?api-version={version}"
    )
    return Response(202, None, {"Location": location})


@route("GET", _SUBSCRIPTION + r"/operationresults/(?P<token>[^/]+)")
def get_operation_result(request: Request, state: State) -> Response:
    # Polling URLs ARM hands out are pre-authorized (signed in Azure), so no RBAC check here.
    require_subscription(request, state, request.params["subscription"])
    with state.lock:
        operation = state.operations.get(request.params["token"])
    if operation is None:
        raise ArmError(404, "NotFound", "The operation result was not found.")  # UNVERIFIED wording
    return Response(200 if operation["status"] == "Succeeded" else 202)


@route("GET", _SUBSCRIPTION + r"/resourcegroups")
def list_resource_groups(request: Request, state: State) -> Response:
    require_arm_api_version(request, RESOURCE_GROUP_API_VERSIONS)
    require_subscription(request, state, request.params["subscription"])
    groups = state.find(lambda key, body: body.get("type") == RESOURCE_GROUP_TYPE)
    visible = [
        g
        for g in groups
        if is_authorized(request, state, "Microsoft.Resources/subscriptions/resourceGroups/read", g["id"])
    ]
    return Response(200, {"value": visible})


@seeder(10)
def seed_resource_group(state: State) -> None:
    name = state.config.seed.get("resource_group")
    if name:
        payload = {"location": state.config.location}
        state.put(resource_group_id(state.config.subscription_id, name), _group_body(state, name, payload))
