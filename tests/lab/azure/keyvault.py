"""Azure Key Vault: the management plane (Microsoft.KeyVault/vaults, access policies) and the secrets data plane.

Data-plane requests arrive at https://<vault>.<vault_dns_suffix>/ (server.py routes them to plane "vault" and has
already answered the 401 challenge). Each vault authorizes data actions by its own permission model: Azure RBAC
when ``enableRbacAuthorization`` is true, its access policies otherwise (keyvault.json VaultProperties).
Bodies follow the 2025-05-01 management spec, secrets.json (2025-07-01) and azure-cli recordings
(test_keyvault_secret.yaml, test_keyvault_rbac.yaml).
"""

from __future__ import annotations

import base64
import copy
import datetime
import re
import uuid
from collections.abc import Callable
from typing import Any

from .arm import check_location_unchanged, normalize_location
from .authorization import assign_role, authorize, data_action_allowed
from .common import require_provider_api_version, require_resource_group, require_subscription, resource_not_found
from .server import ArmError, Request, Response, route
from .state import State, seeder

VAULT_TYPE = "Microsoft.KeyVault/vaults"
_SUB_RG = r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
_VAULT_PATH = _SUB_RG + r"/providers/Microsoft\.KeyVault/vaults/(?P<name>[^/]+)"
_PERMISSION_KINDS = ("keys", "secrets", "certificates", "storage")
ALL_SECRET_PERMISSIONS = ["get", "list", "set", "delete", "backup", "restore", "recover", "purge"]
_SECRET_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")  # secrets.json SetSecret pattern (azure-behaviour §1)
_SERVICE_VERSION = "1.9.2203.1"  # x-ms-keyvault-service-version recorded in 2025 (azure-behaviour §7)
# api-versions of the Microsoft.KeyVault/vaults routes (azure-behaviour §1): the version folders of specification/
# keyvault/resource-manager/Microsoft.KeyVault/KeyVault/{stable,preview}/ whose spec has the vaults paths
# (keyvault.json up to 2025-05-01, openapi.json from then on; the folders the readme.md tags name).
VAULT_API_VERSIONS = (
    "2015-06-01", "2016-10-01", "2018-02-14", "2018-02-14-preview", "2019-09-01", "2020-04-01-preview",
    "2021-04-01-preview", "2021-06-01-preview", "2021-10-01", "2021-11-01-preview", "2022-02-01-preview",
    "2022-07-01", "2022-11-01", "2023-02-01", "2023-07-01", "2024-04-01-preview", "2024-11-01", "2024-12-01-preview",
    "2025-05-01", "2026-02-01", "2026-04-01", "2026-04-01-preview", "2026-05-15",
)  # fmt: skip
# api-versions of the secrets data plane: the folders of specification/keyvault/data-plane/Secrets/{stable,preview}/
# with a secrets.json, and before that split those of data-plane/Microsoft.KeyVault/{stable,preview}/ (secrets.json
# from 7.1 on, keyvault.json for 2015-06-01, 2016-10-01 and 7.0). azure-keyvault-secrets 4.12 sends 2026-04-01.
SECRET_API_VERSIONS = (
    "2015-06-01", "2016-10-01", "7.0", "7.1", "7.2-preview", "7.2", "7.3-preview", "7.3", "7.4-preview.1", "7.4",
    "7.5-preview.1", "7.5", "7.6-preview.1", "7.6-preview.2", "7.6", "2025-06-01-preview", "2025-07-01",
    "2026-01-01-preview", "2026-03-01-preview", "2026-04-01", "2026-05-01-preview", "2026-07-01-preview",
)  # fmt: skip
LATEST_SECRET_API_VERSION = "2026-04-01"  # the newest stable one: what the refusal recommends


# ================================================================================================ management plane
def vault_id(subscription: str, resource_group: str, name: str) -> str:
    # Key Vault keeps 'resourceGroups' camel-cased in ids (recorded), unlike MSI/AKS (azure-behaviour §2).
    return f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{VAULT_TYPE}/{name}"


def _system_data(request: Request | None, created: dict[str, Any] | None) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    who = ((request.principal or {}).get("appid") if request else None) or "lab-seed"
    created = created or {"createdBy": who, "createdByType": "Application", "createdAt": now}
    return {
        **{k: created[k] for k in ("createdBy", "createdByType", "createdAt")},
        "lastModifiedBy": who,
        "lastModifiedByType": "Application",
        "lastModifiedAt": now,
    }


def _access_policy(entry: dict[str, Any]) -> dict[str, Any]:
    policy = {"tenantId": entry.get("tenantId"), "objectId": entry.get("objectId")}
    if entry.get("applicationId"):
        policy["applicationId"] = entry["applicationId"]
    permissions = entry.get("permissions") or {}
    policy["permissions"] = {
        kind: list(permissions[kind]) for kind in _PERMISSION_KINDS if permissions.get(kind) is not None
    }
    return policy


def build_vault(
    state: State,
    resource_id: str,
    name: str,
    location: str,
    tags: dict[str, Any],
    properties: dict[str, Any],
    system_data: dict[str, Any],
) -> dict[str, Any]:
    """A vault as GET returns it; readOnly and defaulted properties filled in, key order as recorded."""
    props: dict[str, Any] = {
        "sku": properties["sku"],
        "tenantId": properties["tenantId"],
        "accessPolicies": [_access_policy(p) for p in properties.get("accessPolicies") or []],
        "enabledForDeployment": bool(properties.get("enabledForDeployment", False)),
    }
    for optional in ("enabledForDiskEncryption", "enabledForTemplateDeployment"):
        if optional in properties:
            props[optional] = bool(properties[optional])
    # Spec defaults: soft delete on, 90 days retention, access-policy permission model.
    props["enableSoftDelete"] = bool(properties.get("enableSoftDelete", True))
    props["softDeleteRetentionInDays"] = int(properties.get("softDeleteRetentionInDays") or 90)
    props["enableRbacAuthorization"] = bool(properties.get("enableRbacAuthorization", False))
    for optional in ("enablePurgeProtection", "networkAcls"):
        if properties.get(optional) is not None:
            props[optional] = properties[optional]
    props["vaultUri"] = f"https://{name}.{state.config.vault_dns_suffix}/"
    props["provisioningState"] = "Succeeded"
    props["publicNetworkAccess"] = properties.get("publicNetworkAccess") or "Enabled"
    return {
        "id": resource_id,
        "name": name,
        "type": VAULT_TYPE,
        "location": location,
        "tags": tags or {},
        "systemData": system_data,
        "properties": props,
    }


def find_vault(state: State, name: str) -> dict[str, Any] | None:
    """Vault names are global (one DNS name each), so the data plane finds a vault by name alone."""
    found = state.find(lambda key, body: body.get("type") == VAULT_TYPE and body["name"].lower() == name.lower())
    return found[0] if found else None


def _vault_or_404(request: Request, state: State) -> dict[str, Any]:
    p = request.params
    require_resource_group(request, state, p["sub"], p["rg"])
    found = state.get(vault_id(p["sub"], p["rg"], p["name"]))
    if found is None:
        raise resource_not_found(VAULT_TYPE, p["name"], p["rg"])
    return found


def _prepare(request: Request, state: State, action: str, resource_type: str = "vaults") -> str:
    """ARM's checks before the provider sees the call: api-version, subscription, then RBAC (resource-group and
    vault existence come after, so an unauthorized caller learns nothing about them)."""
    require_provider_api_version(request, state, VAULT_API_VERSIONS, resource_type)
    p = request.params
    require_subscription(request, state, p["sub"])
    resource_id = (
        vault_id(p["sub"], p["rg"], p["name"]) if "name" in p else f"/subscriptions/{p['sub']}/resourceGroups/{p['rg']}"
    )
    authorize(request, state, action, resource_id)
    return resource_id


@route("GET", _VAULT_PATH)
def get_vault(request: Request, state: State) -> Response:
    _prepare(request, state, "Microsoft.KeyVault/vaults/read")
    return Response(200, _vault_or_404(request, state))


def _validate_vault_put(request: Request, state: State, body: dict[str, Any], existing: dict[str, Any] | None) -> None:
    name = request.params["name"]
    if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]", name) or "--" in name:
        # UNVERIFIED wording (spec pattern ^[a-zA-Z0-9-]{3,24}$ plus the portal's documented naming rules).
        raise ArmError(
            400,
            "VaultNameNotValid",
            f"The vault name '{name}' is invalid. A vault's name must be between 3-24 "
            "alphanumeric characters. The name must begin with a letter, end with a letter or digit, and not "
            "contain consecutive hyphens.",
        )
    if existing is None and not body.get("location"):
        raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
    props = body.get("properties") or {}
    for required in ("tenantId", "sku"):
        if not props.get(required):
            raise ArmError(400, "BadRequest", f"The parameter properties.{required} is required.")  # UNVERIFIED wording
    if existing is None and props.get("accessPolicies") is None and props.get("createMode") != "recover":
        # VaultProperties.accessPolicies: required unless createMode is 'recover' (keyvault.json). UNVERIFIED wording.
        raise ArmError(400, "BadRequest", "The parameter properties.accessPolicies is required.")
    other = find_vault(state, name)
    if other is not None and existing is None:
        # Recorded in pulumi/pulumi-hugo#626 (the service's typo 'globaly' included).
        raise ArmError(
            409,
            "VaultAlreadyExists",
            f"The vault name '{name}' is already in use. Vault names are globaly unique "
            "so it is possible that the name is already taken. If you are sure that the vault name was not "
            "taken then it is possible that a vault with the same name was recently deleted but not purged "
            "after being placed in a recoverable state. If the vault is in a recoverable state then the vault "
            "will need to be purged before reusing the name. For more information on soft delete and purging a "
            "vault follow this link https://go.microsoft.com/fwlink/?linkid=2147740.",
        )


@route("PUT", _VAULT_PATH)
def put_vault(request: Request, state: State) -> Response:
    resource_id = _prepare(request, state, "Microsoft.KeyVault/vaults/write")
    require_resource_group(request, state, request.params["sub"], request.params["rg"])
    body = request.json() or {}
    with state.lock:
        existing = state.get(resource_id)
        _validate_vault_put(request, state, body, existing)
        if body.get("location"):
            check_location_unchanged(existing, body["location"], request.params["rg"])
        properties = dict(body["properties"])
        if existing is not None and properties.get("accessPolicies") is None:
            properties["accessPolicies"] = existing["properties"]["accessPolicies"]  # UNVERIFIED: kept when omitted
        stored_name = existing["name"] if existing else request.params["name"]
        vault = build_vault(
            state,
            existing["id"] if existing else resource_id,
            stored_name,
            existing["location"] if existing else normalize_location(body["location"]),
            body.get("tags") or {},
            properties,
            _system_data(request, existing and existing.get("systemData")),
        )
        state.put(resource_id, vault)
    # 200 for create and update alike in the recordings; the spec also allows 201 (no async headers: the SDK's
    # poller reads provisioningState 'Succeeded' from this body and stops).
    return Response(200, vault)


@route("PATCH", _VAULT_PATH)
def patch_vault(request: Request, state: State) -> Response:
    resource_id = _prepare(request, state, "Microsoft.KeyVault/vaults/write")
    body = request.json() or {}
    with state.lock:
        existing = _vault_or_404(request, state)
        properties = {
            **existing["properties"],
            **{k: v for k, v in (body.get("properties") or {}).items() if v is not None},
        }
        tags = body["tags"] if body.get("tags") is not None else existing["tags"]
        vault = build_vault(
            state,
            existing["id"],
            existing["name"],
            existing["location"],
            tags,
            properties,
            _system_data(request, existing.get("systemData")),
        )
        state.put(resource_id, vault)
    return Response(200, vault)


@route("DELETE", _VAULT_PATH)
def delete_vault(request: Request, state: State) -> Response:
    resource_id = _prepare(request, state, "Microsoft.KeyVault/vaults/delete")
    with state.lock:
        removed = state.delete(resource_id)
        if removed is not None:
            # UNVERIFIED simplification: soft-deleted vaults (deletedVaults) are not modelled; the secrets go with it.
            state.secrets.pop(removed["name"].lower(), None)
            state.deleted_secrets.pop(removed["name"].lower(), None)
    return Response(200) if removed is not None else Response(204)


@route("GET", _SUB_RG + r"/providers/Microsoft\.KeyVault/vaults")
def list_vaults_by_resource_group(request: Request, state: State) -> Response:
    _prepare(request, state, "Microsoft.KeyVault/vaults/read")
    require_resource_group(request, state, request.params["sub"], request.params["rg"])
    prefix = f"/subscriptions/{request.params['sub']}/resourcegroups/{request.params['rg']}/".lower()
    return Response(
        200, {"value": state.find(lambda key, body: body.get("type") == VAULT_TYPE and key.startswith(prefix))}
    )


@route("GET", r"/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.KeyVault/vaults")
def list_vaults_by_subscription(request: Request, state: State) -> Response:
    require_provider_api_version(request, state, VAULT_API_VERSIONS, "vaults")
    require_subscription(request, state, request.params["sub"])
    authorize(request, state, "Microsoft.KeyVault/vaults/read", f"/subscriptions/{request.params['sub']}")
    prefix = f"/subscriptions/{request.params['sub']}/".lower()
    return Response(
        200, {"value": state.find(lambda key, body: body.get("type") == VAULT_TYPE and key.startswith(prefix))}
    )


# ------------------------------------------------------------------------------------------------ access policies
def _same_identity(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(
        str(a.get(k) or "").lower() == str(b.get(k) or "").lower() for k in ("tenantId", "objectId", "applicationId")
    )


def _union(current: list[str], extra: list[str]) -> list[str]:
    return current + [p for p in extra if p.lower() not in {c.lower() for c in current}]


def _apply_policy_change(policies: list[dict[str, Any]], change: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """Vaults_UpdateAccessPolicy, per (tenantId, objectId, applicationId): 'add' merges permissions, 'replace' sets
    them, 'remove' takes the listed ones away and drops an entry left with none. UNVERIFIED beyond the spec's names:
    the per-identity reading of 'replace' and the dropping of emptied entries."""
    match = next((p for p in policies if _same_identity(p, change)), None)
    change = copy.deepcopy(change)
    if match is None:
        return [*policies, change] if kind in ("add", "replace") else policies
    if kind == "replace":
        match["permissions"] = change["permissions"]
    for category, wanted in change["permissions"].items():
        if kind == "add":
            match["permissions"][category] = _union(match["permissions"].get(category, []), wanted)
        elif kind == "remove":
            drop = {w.lower() for w in wanted}
            match["permissions"][category] = [
                p for p in match["permissions"].get(category, []) if p.lower() not in drop
            ]
    if kind == "remove" and not any(match["permissions"].values()):
        return [p for p in policies if p is not match]
    return policies


@route("PUT", _VAULT_PATH + r"/accessPolicies/(?P<kind>[^/]+)")
def update_access_policy(request: Request, state: State) -> Response:
    resource_id = _prepare(request, state, "Microsoft.KeyVault/vaults/accessPolicies/write", "vaults/accessPolicies")
    kind = request.params["kind"].lower()
    if kind not in ("add", "replace", "remove"):
        raise ArmError(400, "BadRequest", f"The operation kind '{request.params['kind']}' is not valid.")  # UNVERIFIED
    entries = (((request.json() or {}).get("properties")) or {}).get("accessPolicies")
    if entries is None:
        raise ArmError(400, "BadRequest", "The parameter properties.accessPolicies is required.")  # UNVERIFIED wording
    changes = [_access_policy(e) for e in entries]
    with state.lock:
        vault = _vault_or_404(request, state)
        policies = vault["properties"]["accessPolicies"]
        for change in changes:
            policies = _apply_policy_change(policies, change, kind)
        vault["properties"]["accessPolicies"] = policies
        vault["systemData"] = _system_data(request, vault.get("systemData"))
        state.put(resource_id, vault)
    # Shape of the spec example updateAccessPoliciesAdd.json: the id ends in 'accessPolicies/', and the body
    # carries the policies of the request (UNVERIFIED whether the service returns those or the vault's whole list).
    return Response(
        200,
        {
            "id": f"{vault['id']}/accessPolicies/",
            "type": f"{VAULT_TYPE}/accessPolicies",
            "properties": {"accessPolicies": changes},
        },
    )


# ================================================================================================ data plane
def _kv_headers(state: State, vault: dict[str, Any] | None) -> dict[str, str]:
    return {
        "x-ms-keyvault-region": (vault or {}).get("location", state.config.location),
        "x-ms-keyvault-service-version": _SERVICE_VERSION,
        "x-ms-keyvault-network-info": "conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;",
    }


def vault_route(methods: str | tuple[str, ...], pattern: str) -> Callable:
    """A data-plane route: finds the vault named by the Host header, adds Key Vault's headers (azure-behaviour §7)."""

    def decorate(handler: Callable[[Request, State, dict[str, Any]], Response]) -> Callable:
        def wrapper(request: Request, state: State) -> Response:
            vault = find_vault(state, request.vault or "")
            try:
                # UNVERIFIED wording of both: Azure answers an unknown vault with a DNS failure, not HTTP.
                if not request.api_version:
                    raise ArmError(400, "BadParameter", "The 'api-version' query parameter is missing.")
                if request.api_version not in SECRET_API_VERSIONS:
                    # Key Vault's own refusal, as quoted in Azure/azure-sdk-for-python#28595 and
                    # Azure/azure-sdk-for-net#14789 (azure-behaviour §1).
                    raise ArmError(
                        400,
                        "BadParameter",
                        f"The specified version ({request.api_version}) is not recognized. Consider using the latest "
                        f"supported version ({LATEST_SECRET_API_VERSION}).",
                    )
                if vault is None:
                    raise ArmError(404, "VaultNotFound", f"The vault '{request.vault}' was not found.")
                response = handler(request, state, vault)
            except ArmError as exc:
                exc.headers = {**_kv_headers(state, vault), **exc.headers}
                raise
            response.headers = {**_kv_headers(state, vault), **response.headers}
            return response

        wrapper.__name__ = handler.__name__
        route(methods, pattern, plane="vault", auth="vault")(wrapper)
        return handler

    return decorate


def _caller(request: Request) -> str:
    claims = request.principal or {}
    return f"appid={claims.get('appid')};oid={claims.get('oid')};iss={claims.get('iss')}"


def _policy_allows(vault: dict[str, Any], claims: dict[str, Any], permission: str) -> bool:
    for policy in vault["properties"]["accessPolicies"]:
        if str(policy.get("objectId", "")).lower() != str(claims.get("oid", "")).lower():
            continue
        if str(policy.get("tenantId", "")).lower() != str(claims.get("tid", "")).lower():
            continue
        if policy.get("applicationId") and policy["applicationId"].lower() != str(claims.get("appid", "")).lower():
            continue  # UNVERIFIED: a compound-identity entry is matched on the app too
        granted = {p.lower() for p in policy.get("permissions", {}).get("secrets", [])}
        if permission in granted or "all" in granted:
            return True
    return False


def _authorize_secret(
    request: Request, state: State, vault: dict[str, Any], permission: str, data_action: str, secret: str | None
) -> None:
    claims = request.principal or {}
    if vault["properties"].get("enableRbacAuthorization"):
        resource = vault["id"] + ("/secrets/" + secret if secret else "/secrets")
        if data_action_allowed(state, claims.get("oid", ""), data_action, resource):
            return
        # azure-behaviour §7, verbatim shape (terraform-provider-azurerm#23927); Resource is lower-cased there.
        message = (
            "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role "
            "definitions were changed recently, please observe propagation time.\r\n"
            f"Caller: {_caller(request)}\r\nAction: '{data_action}'\r\nResource: '{resource.lower()}'\r\n"
            "Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\n"
            f"Vault: {vault['name']};location={vault['location']}\r\n"
        )
        raise ArmError(403, "Forbidden", message, innererror={"code": "ForbiddenByRbac"})
    if not _policy_allows(vault, claims, permission):
        # Access-policy denial as quoted in turbot/steampipe-plugin-azure#127 and ansible-collections/azure#635.
        raise ArmError(
            403,
            "Forbidden",
            f"The user, group or application '{_caller(request)}' does not have secrets {permission} permission on key "
            f"vault '{vault['name']};location={vault['location']}'. For help resolving this issue, please see "
            "https://go.microsoft.com/fwlink/?linkid=2125287",
            innererror={"code": "AccessDenied"},
        )


def _recovery(vault: dict[str, Any]) -> dict[str, Any]:
    days = vault["properties"].get("softDeleteRetentionInDays", 90)
    level = ("CustomizedRecoverable" if days < 90 else "Recoverable") + (
        "" if vault["properties"].get("enablePurgeProtection") else "+Purgeable"
    )
    return {"recoveryLevel": level, "recoverableDays": days}


def _secret_url(state: State, vault: dict[str, Any], name: str, version: str | None = None) -> str:
    return f"https://{vault['name']}.{state.config.vault_dns_suffix}/secrets/{name}" + (
        f"/{version}" if version else ""
    )


def _bundle(
    state: State,
    vault: dict[str, Any],
    name: str,
    record: dict[str, Any],
    *,
    value: bool = True,
    versioned: bool = True,
) -> dict[str, Any]:
    """SecretBundle / SecretItem in the recorded key order: value, contentType, id, attributes, tags."""
    out: dict[str, Any] = {"value": record["value"]} if value else {}
    if record.get("contentType") is not None:
        out["contentType"] = record["contentType"]
    out["id"] = _secret_url(state, vault, name, record["version"] if versioned else None)
    out["attributes"] = {**record["attributes"], **_recovery(vault)}
    if record.get("tags") is not None:
        out["tags"] = record["tags"]
    return out


def _versions(state: State, vault: dict[str, Any], name: str) -> list[dict[str, Any]] | None:
    return state.secrets.get(vault["name"].lower(), {}).get(name.lower())


def _not_found(name: str, version: str | None = None) -> ArmError:
    shown = f"{name}/{version}" if version else name  # UNVERIFIED: how a versioned miss names the secret
    return ArmError(
        404,
        "SecretNotFound",
        f"A secret with (name/id) {shown} was not found in this key vault. If you recently "
        "deleted this secret you may be able to recover it using the correct recovery command. For help "
        "resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
    )


@vault_route("PUT", r"/secrets/(?P<name>[^/]+)")
def set_secret(request: Request, state: State, vault: dict[str, Any]) -> Response:
    name = request.params["name"]
    _authorize_secret(request, state, vault, "set", "Microsoft.KeyVault/vaults/secrets/setSecret/action", name)
    if not _SECRET_NAME.match(name):
        raise ArmError(400, "BadParameter", f"The request URI contains an invalid name: {name}")  # UNVERIFIED wording
    body = request.json() or {}
    if not isinstance(body.get("value"), str):
        raise ArmError(400, "BadParameter", "Property value is required.")  # UNVERIFIED wording
    with state.lock:
        if name.lower() in state.deleted_secrets.get(vault["name"].lower(), {}):
            raise ArmError(
                409,
                "Conflict",
                f"Secret {name} is currently in a deleted but recoverable state, and its name "
                "cannot be reused; in this state, the secret can only be recovered or purged.",
                innererror={"code": "ObjectIsDeletedButRecoverable"},
            )
        now = int(state.now())
        attributes = {"enabled": (body.get("attributes") or {}).get("enabled", True)}
        for optional in ("nbf", "exp"):
            if (body.get("attributes") or {}).get(optional) is not None:
                attributes[optional] = body["attributes"][optional]
        record = {
            "name": name,
            "version": uuid.uuid4().hex,
            "value": body["value"],
            "contentType": body.get("contentType"),
            "tags": body.get("tags"),
            "attributes": {**attributes, "created": now, "updated": now},
        }
        versions = state.secrets.setdefault(vault["name"].lower(), {}).setdefault(name.lower(), [])
        versions.append(record)  # each set creates a new version (azure-behaviour §2)
    return Response(200, _bundle(state, vault, versions[0]["name"], record))


@vault_route("GET", r"/secrets/(?P<name>[^/]+)/versions")
def list_secret_versions(request: Request, state: State, vault: dict[str, Any]) -> Response:
    name = request.params["name"]
    _authorize_secret(request, state, vault, "list", "Microsoft.KeyVault/vaults/secrets/readMetadata/action", name)
    versions = _versions(state, vault, name) or []
    # Ordered by version id: the recorded $skiptoken encodes the next version's upper-cased id.
    items = [_bundle(state, vault, v["name"], v, value=False) for v in sorted(versions, key=lambda v: v["version"])]
    return _page(request, f"/secrets/{name}/versions", items)


@vault_route(("GET", "PATCH"), r"/secrets/(?P<name>[^/]+)(?:/(?P<version>[^/]*))?")
def get_or_update_secret(request: Request, state: State, vault: dict[str, Any]) -> Response:
    name, version = request.params["name"], request.params.get("version") or None
    if request.method == "PATCH":
        _authorize_secret(request, state, vault, "set", "Microsoft.KeyVault/vaults/secrets/update/action", name)
    else:
        _authorize_secret(request, state, vault, "get", "Microsoft.KeyVault/vaults/secrets/getSecret/action", name)
    with state.lock:
        versions = _versions(state, vault, name)
        # An empty version is the latest one (the CLI sends GET /secrets/{name}/, azure-behaviour §1).
        record = (
            (versions or [None])[-1]
            if not version
            else next((v for v in versions or [] if v["version"] == version.lower()), None)
        )
        if record is None:
            raise _not_found(name, version)
        if request.method == "PATCH":
            body = request.json() or {}
            for key in ("contentType", "tags"):
                if key in body:
                    record[key] = body[key]
            record["attributes"].update(
                {k: v for k, v in (body.get("attributes") or {}).items() if k in ("enabled", "nbf", "exp")}
            )
            record["attributes"]["updated"] = int(state.now())
            return Response(200, _bundle(state, vault, record["name"], record, value=False))
        if not record["attributes"].get("enabled", True):
            # UNVERIFIED wording.
            raise ArmError(
                403,
                "Forbidden",
                "Operation get is not allowed on a disabled secret.",
                innererror={"code": "SecretDisabled"},
            )
        return Response(200, _bundle(state, vault, record["name"], record))


def _page(request: Request, path: str, items: list[dict[str, Any]]) -> Response:
    # secrets.json: maxresults 1-25 (25 when absent); $skiptoken is opaque (an encoded offset here).
    try:
        size = max(1, min(25, int(request.query.get("maxresults") or 25)))
        token = request.query.get("$skiptoken")
        start = int(base64.urlsafe_b64decode(token.encode() + b"==").decode()) if token else 0
    except ValueError:
        raise ArmError(400, "BadParameter", "The paging parameters are not valid.") from None  # UNVERIFIED wording
    page, rest = items[start : start + size], items[start + size :]
    next_link = None
    if rest:
        marker = base64.urlsafe_b64encode(str(start + size).encode()).decode().rstrip("=")
        next_link = (
            f"https://{request.host}{path}?api-version={request.api_version}&$skiptoken={marker}&maxresults={size}"
        )
    return Response(200, {"value": page, "nextLink": next_link})  # nextLink null on the last page (recorded)


@vault_route("GET", r"/secrets")
def list_secrets(request: Request, state: State, vault: dict[str, Any]) -> Response:
    _authorize_secret(request, state, vault, "list", "Microsoft.KeyVault/vaults/secrets/readMetadata/action", None)
    with state.lock:
        secrets = sorted(
            state.secrets.get(vault["name"].lower(), {}).values(), key=lambda versions: versions[0]["name"].lower()
        )
        items = [
            _bundle(state, vault, versions[-1]["name"], versions[-1], value=False, versioned=False)
            for versions in secrets
            if versions
        ]
    return _page(request, "/secrets", items)


def _deleted_bundle(state: State, vault: dict[str, Any], deleted: dict[str, Any]) -> dict[str, Any]:
    record = deleted["versions"][-1]
    base = f"https://{vault['name']}.{state.config.vault_dns_suffix}"
    return {
        "recoveryId": f"{base}/deletedsecrets/{record['name']}",
        "deletedDate": deleted["deletedDate"],
        "scheduledPurgeDate": deleted["scheduledPurgeDate"],
        **_bundle(state, vault, record["name"], record, value=False),
    }


@vault_route("DELETE", r"/secrets/(?P<name>[^/]+)")
def delete_secret(request: Request, state: State, vault: dict[str, Any]) -> Response:
    name = request.params["name"]
    _authorize_secret(request, state, vault, "delete", "Microsoft.KeyVault/vaults/secrets/delete", name)
    with state.lock:
        versions = state.secrets.get(vault["name"].lower(), {}).pop(name.lower(), None)
        if not versions:
            raise _not_found(name)
        now = int(state.now())
        deleted = {
            "versions": versions,
            "deletedDate": now,
            "scheduledPurgeDate": now + 86400 * vault["properties"].get("softDeleteRetentionInDays", 90),
        }
        state.deleted_secrets.setdefault(vault["name"].lower(), {})[name.lower()] = deleted
    # DeletedSecretBundle without the value (recorded).
    return Response(200, _deleted_bundle(state, vault, deleted))


def _deleted_or_404(state: State, vault: dict[str, Any], name: str) -> dict[str, Any]:
    deleted = state.deleted_secrets.get(vault["name"].lower(), {}).get(name.lower())
    if deleted is None:
        raise ArmError(404, "SecretNotFound", "Deleted Secret not found")  # UNVERIFIED wording
    return deleted


@vault_route(("GET", "DELETE"), r"/deletedsecrets/(?P<name>[^/]+)")
def get_or_purge_deleted_secret(request: Request, state: State, vault: dict[str, Any]) -> Response:
    name = request.params["name"]
    if request.method == "DELETE":
        _authorize_secret(request, state, vault, "purge", "Microsoft.KeyVault/vaults/secrets/purge/action", name)
        with state.lock:
            _deleted_or_404(state, vault, name)
            state.deleted_secrets[vault["name"].lower()].pop(name.lower())
        return Response(204)  # recorded purge answer
    # UNVERIFIED: the permission and data action GetDeletedSecret is checked against (metadata read assumed).
    _authorize_secret(request, state, vault, "list", "Microsoft.KeyVault/vaults/secrets/readMetadata/action", name)
    return Response(200, _deleted_bundle(state, vault, _deleted_or_404(state, vault, name)))


@vault_route("POST", r"/deletedsecrets/(?P<name>[^/]+)/recover")
def recover_deleted_secret(request: Request, state: State, vault: dict[str, Any]) -> Response:
    name = request.params["name"]
    _authorize_secret(request, state, vault, "recover", "Microsoft.KeyVault/vaults/secrets/recover/action", name)
    with state.lock:
        deleted = _deleted_or_404(state, vault, name)
        state.deleted_secrets[vault["name"].lower()].pop(name.lower())
        state.secrets.setdefault(vault["name"].lower(), {})[name.lower()] = deleted["versions"]
    record = deleted["versions"][-1]
    return Response(200, _bundle(state, vault, record["name"], record, value=False))


# ================================================================================================ seeding
@seeder(35)
def _seed_vaults(state: State) -> None:
    seed, config = state.config.seed, state.config
    if not seed.get("resource_group"):
        return
    deployer_policy = {
        "tenantId": config.tenant_id,
        "objectId": seed["deployer_object_id"],
        "permissions": {"keys": [], "secrets": list(ALL_SECRET_PERMISSIONS), "certificates": [], "storage": []},
    }
    for name, rbac, policies in ((seed["rbac_vault"], True, []), (seed["policy_vault"], False, [deployer_policy])):
        resource_id = vault_id(config.subscription_id, seed["resource_group"], name)
        properties = {
            "sku": {"family": "A", "name": "standard"},
            "tenantId": config.tenant_id,
            "accessPolicies": policies,
            "enableRbacAuthorization": rbac,
        }
        state.put(
            resource_id,
            build_vault(state, resource_id, name, config.location, {}, properties, _system_data(None, None)),
        )
        role = seed.get("rbac_vault_deployer_role")
        if rbac and role and seed.get("deployer_object_id"):
            # The walk-through's self-assignment (seed.py): at the vault, effective at once, a fixed name per deployer.
            assign_role(
                state,
                resource_id,
                seed["deployer_object_id"],
                role,
                name=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{resource_id.lower()}/{role}/{seed['deployer_object_id']}")),
                effective_now=True,
            )
        now = int(state.now())
        state.secrets[name.lower()] = {
            seed["secret_name"].lower(): [
                {
                    "name": seed["secret_name"],
                    "version": uuid.uuid4().hex,
                    "value": seed["secret_value"],
                    "contentType": None,
                    "tags": {},
                    "attributes": {"enabled": True, "created": now, "updated": now},
                }
            ]
        }
