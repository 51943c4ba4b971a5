"""Microsoft.ContainerService/managedClusters: AKS clusters as ARM sees them, long-running operations included.

A PUT answers at once with the desired body in Creating/Updating and an Azure-AsyncOperation URL; the operation
finishes ``state.settings["lro_seconds"]`` later and the cluster turns Succeeded. Nothing runs in the background:
every read settles an operation whose time has come (azure-behaviour §3).

Shapes follow azure-cli recordings of api-version 2026-01-01 (test_aks_create_default_service_msi.yaml) and the
2026-07-01 spec in Azure/azure-rest-api-specs (specification/containerservice/resource-manager/
Microsoft.ContainerService/aks/stable/2026-07-01/managedClusters.json).
"""

from __future__ import annotations

import copy
import re
import secrets
import string
import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from .arm import (
    authorize,
    check_location_unchanged,
    delete_resource_tree,
    is_authorized,
    normalize_location,
)
from .common import (
    require_provider_api_version,
    require_resource_group,
    require_subscription,
    resource_group_id,
    resource_id,
    resource_not_found,
    utcnow_iso,
)
from .server import ArmError, Request, Response, route
from .state import PRIMARY, State, seeder

PROVIDER_TYPE = "Microsoft.ContainerService/managedClusters"
RESPONSE_TYPE = "Microsoft.ContainerService/ManagedClusters"  # capital M in responses (azure-behaviour §2)
OPERATION_API_VERSION = "2016-03-30"  # the status URL's version, whatever the PUT used (azure-behaviour §1, §3)
# api-versions of the managedClusters routes (azure-behaviour §1): the folders of specification/containerservice/
# resource-manager/Microsoft.ContainerService/aks/stable/ (each with a managedClusters.json) and aks/preview/, up to
# 2024-07 as the aks readme.md tags list them, later ones as folders in the spec repo; plus 2022-08-01, which has no
# spec folder but is in ARM's own list for the type (NoRegisteredProviderFound messages in Azure/azure-cli#28368,
# Azure/kubectl-aks#48). Every version answers with the same body here; the properties the collection depends on
# are newer than many of them (issuerURL is in cluster bodies from 2022-09-01 on, azure-workload-identity
# troubleshooting docs), and a client on an older version ignores what it does not model. AKS retires old previews
# (2021-11-01-preview is missing from ARM's 2023 lists); the lab keeps accepting every published one.
_MANAGED_CLUSTER_STABLE = (
    "2017-08-31", "2018-03-31", "2019-02-01", "2019-04-01", "2019-06-01", "2019-08-01", "2019-10-01", "2019-11-01",
    "2020-01-01", "2020-02-01", "2020-03-01", "2020-04-01", "2020-06-01", "2020-07-01", "2020-09-01", "2020-11-01",
    "2020-12-01", "2021-02-01", "2021-03-01", "2021-05-01", "2021-07-01", "2021-08-01", "2021-09-01", "2021-10-01",
    "2022-01-01", "2022-02-01", "2022-03-01", "2022-04-01", "2022-06-01", "2022-07-01", "2022-08-01", "2022-09-01",
    "2022-11-01", "2023-01-01", "2023-02-01", "2023-03-01", "2023-04-01", "2023-05-01", "2023-06-01", "2023-07-01",
    "2023-08-01", "2023-09-01", "2023-10-01", "2023-11-01", "2024-01-01", "2024-02-01", "2024-05-01", "2024-07-01",
    "2024-08-01", "2024-09-01", "2024-10-01", "2025-01-01", "2025-02-01", "2025-03-01", "2025-04-01", "2025-05-01",
    "2025-06-01", "2025-07-01", "2025-08-01", "2025-09-01", "2025-10-01", "2026-01-01", "2026-02-01", "2026-03-01",
    "2026-04-01", "2026-05-01", "2026-06-01", "2026-07-01", "2026-08-01", "2026-10-01",
)  # fmt: skip
_MANAGED_CLUSTER_PREVIEW = (
    "2018-08-01-preview", "2021-11-01-preview", "2022-01-02-preview", "2022-02-02-preview", "2022-03-02-preview",
    "2022-04-02-preview", "2022-05-02-preview", "2022-06-02-preview", "2022-07-02-preview", "2022-08-02-preview",
    "2022-08-03-preview", "2022-09-02-preview", "2022-10-02-preview", "2022-11-02-preview", "2023-01-02-preview",
    "2023-02-02-preview", "2023-03-02-preview", "2023-04-02-preview", "2023-05-02-preview", "2023-06-02-preview",
    "2023-07-02-preview", "2023-08-02-preview", "2023-09-02-preview", "2023-10-02-preview", "2023-11-02-preview",
    "2024-01-02-preview", "2024-02-02-preview", "2024-03-02-preview", "2024-04-02-preview", "2024-05-02-preview",
    "2024-06-02-preview", "2024-07-02-preview", "2024-09-02-preview", "2024-10-02-preview", "2025-01-02-preview",
    "2025-02-02-preview", "2025-03-02-preview", "2025-04-02-preview", "2025-05-02-preview", "2025-06-02-preview",
    "2025-07-02-preview", "2025-08-02-preview", "2025-09-02-preview", "2025-10-02-preview", "2026-01-02-preview",
    "2026-02-02-preview", "2026-03-02-preview", "2026-04-02-preview", "2026-05-02-preview", "2026-06-02-preview",
    "2026-07-02-preview", "2026-08-02-preview", "2026-10-02-preview",
)  # fmt: skip
# Ascending, as ARM lists them in its refusal.
MANAGED_CLUSTER_API_VERSIONS = tuple(sorted(_MANAGED_CLUSTER_STABLE + _MANAGED_CLUSTER_PREVIEW))
# The lab's default when kubernetesVersion is "" or absent. Real AKS answers with the minor it chose in
# kubernetesVersion and the patch it runs in currentKubernetesVersion ("1.28" / "1.28.10" in the recording).
# 1.33 keeps new clusters below the 1.34 line where the OIDC issuer becomes always-on (azure-behaviour §5).
DEFAULT_KUBERNETES_VERSION = "1.33"
PATCH_RELEASES = {"1.31": "1.31.13", "1.32": "1.32.9", "1.33": "1.33.5", "1.34": "1.34.1", "1.35": "1.35.0"}
OIDC_ALWAYS_ON_FROM = (1, 34)
NODE_IMAGE_VERSION = "AKSUbuntu-2204gen2containerd-202510.03.0"

_CLUSTER_NAME = re.compile(r"^[a-zA-Z0-9]$|^[a-zA-Z0-9][-_a-zA-Z0-9]{0,61}[a-zA-Z0-9]$")
_SUBSCRIPTION = r"/subscriptions/(?P<subscription>[^/]+)"
_CLUSTERS_IN_GROUP = (
    _SUBSCRIPTION + r"/resourcegroups/(?P<resource_group>[^/]+)/providers/Microsoft\.ContainerService/managedClusters"
)
_CLUSTER = _CLUSTERS_IN_GROUP + r"/(?P<name>[^/]+)"
_LOCATION_OPERATIONS = _SUBSCRIPTION + r"/providers/Microsoft\.ContainerService/locations/(?P<location>[^/]+)"

# Agent pool fields where 0 asks for the default: osDiskSizeGB ("If you specify 0, it will apply the default osDisk
# size according to the vmSize specified", managedClusters.json; azure-cli sends 0 and gets 128 back, recorded in
# test_aks_create_with_oidc_issuer_enabled.yaml).
_ZERO_MEANS_DEFAULT = ("osDiskSizeGB",)
# Spot-only agent pool settings: azure-cli sends "scaleSetPriority": "Regular", "scaleSetEvictionPolicy": "Delete" and
# "spotMaxPrice": -1 on every create, and a Regular pool comes back without them (test_aks_create_default_service_msi
# .yaml, test_aks_create_with_workload_identity_enabled.yaml).
_SPOT_ONLY = ("scaleSetPriority", "scaleSetEvictionPolicy", "spotMaxPrice")
# The CSI drivers AKS turns on unless told otherwise: a create whose storageProfile is {} comes back with these three
# enabled and no blobCSIDriver (test_aks_create_default_service_msi.yaml at 2026-01-01,
# test_aks_create_with_workload_identity_enabled.yaml at 2023-06-01); a create asking only for blobCSIDriver comes
# back with these three as well, in this order, then blobCSIDriver, which stays in the body, as sent, from then on
# (test_aks_create_and_update_with_blob_csi_driver.yaml). The spec calls blobCSIDriver's default "false"; the
# service does not write it out (az aks show prints "blobCsiDriver": null).
_CSI_DEFAULTS = {
    "diskCSIDriver": {"enabled": True},
    "fileCSIDriver": {"enabled": True},
    "snapshotController": {"enabled": True},
}
# Read-only agent pool fields the service computes; whatever a client sends back for them is ignored.
_POOL_READ_ONLY = ("provisioningState", "powerState", "currentOrchestratorVersion", "nodeImageVersion")
_CLUSTER_READ_ONLY = (
    "provisioningState", "powerState", "currentKubernetesVersion", "fqdn", "azurePortalFQDN", "privateFQDN",
    "maxAgentPools", "resourceUID", "status",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Versions, names, issuer


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def _resolve_versions(requested: str | None) -> tuple[str, str]:
    """(kubernetesVersion, currentKubernetesVersion) for a requested version ("", "1.33" or "1.33.5")."""
    wanted = (requested or "").strip() or DEFAULT_KUBERNETES_VERSION
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?", wanted):
        raise ArmError(
            400, "InvalidParameter", f"The value of parameter kubernetesVersion '{wanted}' is invalid."
        )  # UNVERIFIED wording
    if wanted.count(".") == 2:
        return wanted, wanted
    return wanted, PATCH_RELEASES.get(wanted, wanted + ".0")


def operation_name(operation_id: str) -> str:
    """The status body's ``name``: the operation id with its first three GUID groups byte-reversed (the
    little-endian GUID layout), e.g. fe62827a-6931-4fd2-... -> 7a8262fe-3169-d24f-... (azure-behaviour §3.3).
    Note: a 2024 recording (test_aks_create_default_service_msi.yaml) shows the id unchanged."""
    return str(uuid.UUID(bytes=uuid.UUID(operation_id).bytes_le))


def is_wired(state: State, resource_group: str, name: str, *, primary_only: bool = False) -> bool:
    """Whether the cluster's issuer is a lab kube-apiserver's (any of them, or only the first one)."""
    wiring = state.config.wiring_of_cluster(resource_group, name)
    return wiring is not None and (wiring.primary or not primary_only)


def issuer_url(state: State, resource_group: str, name: str, issuer_uuid: str) -> str:
    """A wired cluster's issuer is its kube-apiserver's --service-account-issuer, exactly; others get an
    AKS-shaped one on the emulator: host/{tenant}/{uuid}/ with the trailing slash (azure-behaviour §5)."""
    wiring = state.config.wiring_of_cluster(resource_group, name)
    if wiring is not None:
        return wiring.issuer_url
    return f"{state.config.base_url}/{state.config.tenant_id}/{issuer_uuid}/"


def _resource_group_of(cluster_id: str) -> str:
    return cluster_id.split("/")[4]


# ---------------------------------------------------------------------------------------------------------------
# Building the body a GET returns


def _agent_pool(
    requested: dict[str, Any], index: int, versions: tuple[str, str], word: str, plugin: str
) -> dict[str, Any]:
    """One agent pool: what the client sent, service defaults for the rest, read-only fields recomputed."""
    orchestrator = requested.get("orchestratorVersion") or versions[0]
    running = versions[1] if orchestrator == versions[0] else _resolve_versions(orchestrator)[1]
    computed = {
        "provisioningState": word,
        "powerState": {"code": "Running"},
        "orchestratorVersion": orchestrator,
        "currentOrchestratorVersion": running,
        "nodeImageVersion": NODE_IMAGE_VERSION,
    }
    defaults = {
        "name": f"nodepool{index + 1}",
        "count": 1,
        "vmSize": "Standard_DS2_v2",
        "osDiskSizeGB": 128,
        "osDiskType": "Managed",
        "kubeletDiskType": "OS",
        "maxPods": 250 if plugin == "azure" else 110,  # AKS defaults: 250 with Azure CNI Overlay, 110 with kubenet
        "type": "VirtualMachineScaleSets",
        "enableAutoScaling": False,
        "provisioningState": None,
        "powerState": None,
        "orchestratorVersion": None,
        "currentOrchestratorVersion": None,
        "enableNodePublicIP": False,
        "mode": "System" if index == 0 else "User",
        "enableEncryptionAtHost": False,
        "enableUltraSSD": False,
        "osType": "Linux",
        "osSKU": "Ubuntu",
        "nodeImageVersion": None,
        "upgradeSettings": {"maxSurge": "10%"},
        "enableFIPS": False,
    }
    pool: dict[str, Any] = {}
    for key, default in defaults.items():
        if key in computed:
            pool[key] = computed[key]
        elif requested.get(key) not in (None, "", {}) and not (key in _ZERO_MEANS_DEFAULT and requested[key] == 0):
            pool[key] = requested[key]  # "" and {} (as azure-cli sends them) mean "default", as 0 does for some
        else:
            pool[key] = default
    spot = requested.get("scaleSetPriority") == "Spot"
    for key, value in requested.items():  # labels, taints, zones...: round-trip untouched
        if key in pool or key in _POOL_READ_ONLY or value in (None, [], {}):
            continue  # empty lists and objects do not come back (azure-cli's "nodeTaints": [], recorded)
        if key in _SPOT_ONLY and not spot:
            continue  # a Regular pool's priority settings do not come back (recorded)
        pool[key] = value
    return pool


def _network_profile(requested: dict[str, Any] | None, existing: dict[str, Any] | None) -> dict[str, Any]:
    """Requested values over service defaults. New clusters default to Azure CNI Overlay (AKS's default network
    since kubenet's retirement was announced; the 2024 recording's CLI still sent kubenet)."""
    if requested is None and existing is not None:
        return copy.deepcopy(existing)
    requested = copy.deepcopy(requested or {})
    plugin = requested.get("networkPlugin") or "azure"
    profile: dict[str, Any] = {"networkPlugin": plugin}
    if plugin == "azure":
        profile.update({"networkPluginMode": "overlay", "networkDataplane": "azure"})
    profile.update(
        {
            "networkPolicy": "none",
            "loadBalancerSku": "standard",
            "loadBalancerProfile": {"managedOutboundIPs": {"count": 1}, "backendPoolType": "nodeIPConfiguration"},
            "podCidr": "10.244.0.0/16",
            "serviceCidr": "10.0.0.0/16",
            "dnsServiceIP": "10.0.0.10",
            "outboundType": "loadBalancer",
        }
    )
    balancer = {**profile["loadBalancerProfile"], **(requested.pop("loadBalancerProfile", None) or {})}
    balancer.pop("effectiveOutboundIPs", None)  # read-only: the service fills it once the cluster runs
    profile.update({k: v for k, v in requested.items() if v is not None})
    profile["loadBalancerProfile"] = balancer
    if existing and existing.get("loadBalancerProfile", {}).get("effectiveOutboundIPs"):
        balancer["effectiveOutboundIPs"] = existing["loadBalancerProfile"]["effectiveOutboundIPs"]
    profile.setdefault("podCidrs", [profile["podCidr"]])
    profile.setdefault("serviceCidrs", [profile["serviceCidr"]])
    profile.setdefault("ipFamilies", ["IPv4"])
    return profile


def _identity(
    state: State, requested: dict[str, Any] | None, existing: dict[str, Any] | None, meta: dict[str, Any]
) -> dict[str, Any]:
    kind = (requested or existing or {}).get("type") or "SystemAssigned"  # AKS clusters are MSI clusters by default
    identity: dict[str, Any] = {"type": kind}
    if kind == "SystemAssigned":
        meta.setdefault("system_principal_id", str(uuid.uuid4()))
        meta.setdefault("system_app_id", str(uuid.uuid4()))
        identity.update({"principalId": meta["system_principal_id"], "tenantId": state.config.tenant_id})
    elif kind == "UserAssigned":
        assigned = {}
        for identity_id in (requested or existing or {}).get("userAssignedIdentities", {}):
            found = state.get(identity_id) or {}
            props = found.get("properties", {})
            assigned[identity_id] = {"principalId": props.get("principalId"), "clientId": props.get("clientId")}
        identity["userAssignedIdentities"] = assigned
    return identity


def _oidc_and_security(
    state: State, props: dict[str, Any], existing: dict[str, Any] | None, versions: tuple[str, str]
) -> tuple[bool, dict[str, Any]]:
    """The OIDC issuer switch and the security profile after the rules of azure-behaviour §5."""
    before = (existing or {}).get("oidcIssuerProfile", {}).get("enabled", False)
    requested = props.get("oidcIssuerProfile")
    enabled = before if requested is None or "enabled" not in requested else bool(requested["enabled"])
    if existing is None and _version_tuple(versions[1]) >= OIDC_ALWAYS_ON_FROM:
        # 1.34+: new clusters always get the issuer; --enable-oidc-issuer is a no-op (azure-behaviour §5).
        enabled = True
    if before and not enabled:
        # Disabling is unsupported (AKS docs, use-oidc-issuer.md); code and message as quoted in many terraform
        # apply logs ("400 OIDCIssuerFeatureCannotBeDisabled: OIDC issuer feature cannot be disabled.").
        raise ArmError(400, "OIDCIssuerFeatureCannotBeDisabled", "OIDC issuer feature cannot be disabled.")
    security = copy.deepcopy(props["securityProfile"]) if props.get("securityProfile") is not None else None
    if security is None:
        security = copy.deepcopy((existing or {}).get("securityProfile", {}))  # never set -> {} (azure-behaviour §2)
    if security.get("workloadIdentity") is not None:
        security["workloadIdentity"] = {"enabled": bool(security["workloadIdentity"].get("enabled"))}
    if security.get("workloadIdentity", {}).get("enabled") and not enabled:
        # The RP refuses this too; its wording is UNVERIFIED (azure-cli stops it client-side with "Enabling
        # workload identity requires enabling OIDC issuer (--enable-oidc-issuer).", managed_cluster_decorator.py).
        raise ArmError(
            400,
            "InvalidParameter",
            "Enabling workload identity requires enabling OIDC issuer (oidcIssuerProfile.enabled).",
            target="securityProfile.workloadIdentity",
        )
    return enabled, security


def _check_immutable(props: dict[str, Any], existing: dict[str, Any]) -> None:
    # dnsPrefix "cannot be updated once the Managed Cluster has been created" (spec); the error shape is the one
    # AKS gives for linuxProfile keys ("PropertyChangeNotAllowed", target = the property).
    wanted = props.get("dnsPrefix")
    if wanted and wanted != existing.get("dnsPrefix"):
        raise ArmError(
            400, "PropertyChangeNotAllowed", "Changing property 'dnsPrefix' is not allowed.", target="dnsPrefix"
        )


def _random_label(length: int) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _index in range(length))


def _versions_for(props: dict[str, Any], current: dict[str, Any] | None) -> tuple[str, str]:
    if props.get("kubernetesVersion") in (None, "") and current is not None:
        return current["kubernetesVersion"], current["currentKubernetesVersion"]  # unchanged unless asked
    return _resolve_versions(props.get("kubernetesVersion"))


def _agent_pools(
    props: dict[str, Any], current: dict[str, Any] | None, versions: tuple[str, str], word: str, plugin: str
) -> list[dict[str, Any]]:
    requested = props.get("agentPoolProfiles") or (current or {}).get("agentPoolProfiles")
    if not requested:
        raise ArmError(400, "MustDefineAtLeastOneSystemPool", "Must define at least one system pool.")  # UNVERIFIED
    return [_agent_pool(pool, index, versions, word, plugin) for index, pool in enumerate(requested)]


def _keeper(props: dict[str, Any], current: dict[str, Any] | None) -> Callable[[str, Any], Any]:
    """keep(key, default): the client's value, else the current one (on update), else the service default."""

    def keep(key: str, default: Any) -> Any:
        if props.get(key) is not None:
            return props[key]
        return copy.deepcopy((current or {}).get(key, default))

    return keep


def _control_plane(
    state: State,
    name: str,
    resource_group: str,
    location: str,
    props: dict[str, Any],
    current: dict[str, Any] | None,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """dnsPrefix (immutable), FQDNs and node resource group: fixed at create, carried through updates."""
    dns_prefix = (
        (current or {}).get("dnsPrefix")
        or props.get("dnsPrefix")
        or f"{name[:10]}-{resource_group[:16]}-{state.config.subscription_id[:6]}"
    )
    meta.setdefault("fqdn_label", _random_label(8))
    fqdn = f"{dns_prefix}-{meta['fqdn_label']}.hcp.{location}.azmk8s.io"
    node_group = (current or {}).get("nodeResourceGroup") or props.get("nodeResourceGroup")
    return {
        "dnsPrefix": dns_prefix,
        "fqdn": fqdn,
        "azurePortalFQDN": fqdn.replace(".hcp.", ".portal.hcp.", 1),
        "nodeResourceGroup": node_group or f"MC_{resource_group}_{name}_{location}",
    }


def build_cluster(
    state: State,
    cluster_id: str,
    name: str,
    payload: dict[str, Any],
    existing: dict[str, Any] | None,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """The body a GET returns after this PUT: the client's writable fields, service defaults for what it left
    out (on update: the current values), and every read-only field recomputed. Key order follows real bodies."""
    props = copy.deepcopy(payload.get("properties") or {})
    current = (existing or {}).get("properties")
    resource_group, word = _resource_group_of(cluster_id), ("Updating" if existing else "Creating")
    location = normalize_location((existing or payload)["location"])
    if current is not None:
        _check_immutable(props, current)
    versions = _versions_for(props, current)
    oidc_enabled, security = _oidc_and_security(state, props, current, versions)
    network = _network_profile(props.get("networkProfile"), (current or {}).get("networkProfile"))
    plane = _control_plane(state, name, resource_group, location, props, current, meta)
    meta.setdefault("resource_uid", secrets.token_hex(12))
    meta.setdefault("issuer_uuid", str(uuid.uuid4()))
    keep = _keeper(props, current)
    properties: dict[str, Any] = {
        "provisioningState": word,
        "powerState": {"code": "Running"},
        "kubernetesVersion": versions[0],
        "currentKubernetesVersion": versions[1],
        "dnsPrefix": plane["dnsPrefix"],
        "fqdn": plane["fqdn"],
        "azurePortalFQDN": plane["azurePortalFQDN"],
        "agentPoolProfiles": _agent_pools(props, current, versions, word, network["networkPlugin"]),
    }
    if keep("linuxProfile", None) is not None:
        properties["linuxProfile"] = keep("linuxProfile", None)
    properties.update(
        servicePrincipalProfile={"clientId": "msi"},  # MSI clusters report the literal "msi"
        nodeResourceGroup=plane["nodeResourceGroup"],
        enableRBAC=keep("enableRBAC", True),
        supportPlan=keep("supportPlan", "KubernetesOfficial"),
        networkProfile=network,
        maxAgentPools=100,
    )
    kubelet = (current or {}).get("identityProfile") or props.get("identityProfile")
    if kubelet:  # the kubelet identity appears once provisioning has run (or when brought by the client)
        properties["identityProfile"] = copy.deepcopy(kubelet)
    storage = _storage_profile(props, current)
    properties.update(_feature_profiles(state, keep, name, resource_group, oidc_enabled, security, storage, meta))
    for key, value in props.items():  # anything else the client set (addonProfiles, apiServerAccessProfile...)
        if key not in properties and key not in _CLUSTER_READ_ONLY and value not in (None, {}):
            properties[key] = value
    return _envelope(state, cluster_id, name, location, payload, existing, properties, meta)


def _storage_profile(props: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    """What the client set, else what the cluster has, else AKS's defaults, driver by driver (see _CSI_DEFAULTS)."""
    requested = props.get("storageProfile") or {}
    before = (current or {}).get("storageProfile") or {}
    profile = {key: requested.get(key) or before.get(key) or default for key, default in _CSI_DEFAULTS.items()}
    for key, value in {**before, **requested}.items():  # blobCSIDriver and any later driver, once set
        if key not in profile and value not in (None, {}):
            profile[key] = value
    return copy.deepcopy(profile)


def _feature_profiles(
    state: State,
    keep: Callable[[str, Any], Any],
    name: str,
    resource_group: str,
    oidc_enabled: bool,
    security: dict[str, Any],
    storage: dict[str, Any],
    meta: dict[str, Any],
) -> dict[str, Any]:
    oidc: dict[str, Any] = {"enabled": oidc_enabled}
    # issuerURL is read-only and present only when enabled, already in the 200/201 body (azure-behaviour §5).
    if oidc_enabled:
        oidc["issuerURL"] = issuer_url(state, resource_group, name, meta["issuer_uuid"])
    return {
        "autoUpgradeProfile": keep("autoUpgradeProfile", {"nodeOSUpgradeChannel": "NodeImage"}),
        "disableLocalAccounts": keep("disableLocalAccounts", False),
        "securityProfile": security,
        "storageProfile": storage,
        "oidcIssuerProfile": oidc,
        "workloadAutoScalerProfile": keep("workloadAutoScalerProfile", {}),
        "resourceUID": meta["resource_uid"],
        "metricsProfile": keep("metricsProfile", {"costAnalysis": {"enabled": False}}),
    }


def _envelope(
    state: State,
    cluster_id: str,
    name: str,
    location: str,
    payload: dict[str, Any],
    existing: dict[str, Any] | None,
    properties: dict[str, Any],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """The tracked-resource envelope: id, location, name, tags (only when set), type, identity, sku."""
    body: dict[str, Any] = {"id": cluster_id, "location": location, "name": name}
    tags = payload.get("tags") if "tags" in payload else (existing or {}).get("tags")
    if tags is not None:
        body["tags"] = tags
    body["type"] = RESPONSE_TYPE
    body["properties"] = properties
    body["identity"] = _identity(state, payload.get("identity"), (existing or {}).get("identity"), meta)
    body["sku"] = payload.get("sku") or (existing or {}).get("sku") or {"name": "Base", "tier": "Free"}
    return body


# ---------------------------------------------------------------------------------------------------------------
# Long-running operations


def _operation_url(state: State, location: str, operation_id: str, kind: str = "operations") -> str:
    subscription = state.config.subscription_id
    return (
        f"{state.config.base_url}/subscriptions/{subscription}/providers/Microsoft.ContainerService/locations/"
        f"{location}/{kind}/{operation_id}?api-version={OPERATION_API_VERSION}"
    )


# How the operations of other Microsoft.ContainerService resources finish (identity_binding.py registers its own):
# handler(state, operation_id, operation record) -> the terminal status. They share this module's status URLs.
OPERATION_HANDLERS: dict[str, Callable[[State, str, dict[str, Any]], str]] = {}


def _start_operation(state: State, cluster_id: str, kind: str, location: str, handler: str | None = None) -> str:
    operation_id = str(uuid.uuid4())
    with state.lock:
        meta = state.meta_of(cluster_id)
        previous = state.operations.get(meta.get("operation", ""))
        if previous and previous["status"] == "InProgress":
            previous.update(status="Canceled", endTime=utcnow_iso())  # a delete supersedes it (UNVERIFIED)
        state.operations[operation_id] = {
            "kind": kind,
            "resource_id": cluster_id,
            "location": location,
            "status": "InProgress",
            "startTime": utcnow_iso(),
            "due": state.now() + state.settings["lro_seconds"],
        }
        if handler is not None:
            state.operations[operation_id]["handler"] = handler
        meta["operation"] = operation_id
    return operation_id


def _kubelet_identity(state: State, cluster: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The kubelet identity AKS creates in the node resource group (as a UAMI named <cluster>-agentpool)."""
    if "kubelet" not in meta:
        node_group = cluster["properties"]["nodeResourceGroup"]
        meta["kubelet"] = {
            "resourceId": resource_id(
                state.config.subscription_id,
                node_group,
                "Microsoft.ManagedIdentity/userAssignedIdentities",
                f"{cluster['name']}-agentpool",
            ),
            "clientId": str(uuid.uuid4()),
            "objectId": str(uuid.uuid4()),
        }
    return dict(meta["kubelet"])


def _ensure_principal(state: State, object_id: str, app_id: str, display_name: str, **extra: Any) -> None:
    if object_id not in state.principals:  # re-adding would reset its creation time (propagation delays use it)
        state.add_principal(object_id, app_id, "ManagedIdentity", display_name, **extra)


def _register_principals(state: State, cluster: dict[str, Any], meta: dict[str, Any]) -> None:
    """The cluster's own identity and its kubelet identity are directory principals (roles can be granted to them)."""
    owned = []
    if cluster["identity"].get("type") == "SystemAssigned":
        _ensure_principal(
            state, meta["system_principal_id"], meta["system_app_id"], cluster["name"], resource_id=cluster["id"]
        )
        owned.append(meta["system_principal_id"])
    kubelet = cluster["properties"].get("identityProfile", {}).get("kubeletidentity")
    if kubelet and kubelet.get("objectId") == meta.get("kubelet", {}).get("objectId"):
        _ensure_principal(
            state,
            kubelet["objectId"],
            kubelet["clientId"],
            f"{cluster['name']}-agentpool",
            identity_id=kubelet["resourceId"],
        )
        owned.append(kubelet["objectId"])
    meta["principals"] = owned


def _finish_provisioning(state: State, cluster: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """What the service fills in once a create/update has run: states, kubelet identity, outbound IPs."""
    props = cluster["properties"]
    props["provisioningState"] = "Succeeded"
    for pool in props["agentPoolProfiles"]:
        pool["provisioningState"] = "Succeeded"
    if "identityProfile" not in props:  # placed after maxAgentPools, where real bodies carry it
        entries = list(props.items())
        at = [entry[0] for entry in entries].index("maxAgentPools") + 1
        entries.insert(at, ("identityProfile", {"kubeletidentity": _kubelet_identity(state, cluster, meta)}))
        props = cluster["properties"] = dict(entries)
    balancer = props["networkProfile"].get("loadBalancerProfile")
    if balancer is not None and "effectiveOutboundIPs" not in balancer:
        meta.setdefault("outbound_ip", str(uuid.uuid4()))
        ip_id = (
            f"/subscriptions/{state.config.subscription_id}/resourceGroups/{props['nodeResourceGroup']}"
            f"/providers/Microsoft.Network/publicIPAddresses/{meta['outbound_ip']}"
        )
        balancer["effectiveOutboundIPs"] = [{"id": ip_id}]
    # The issuer's discovery document is published once the operation that enabled it has run (UNVERIFIED:
    # how soon AKS serves it; modules wait for the LRO anyway).
    meta["issuer_published"] = bool(props["oidcIssuerProfile"].get("enabled"))
    _register_principals(state, cluster, meta)
    return cluster


def settle_operation(state: State, operation_id: str) -> dict[str, Any] | None:
    """Finish an operation whose time has come; returns the operation record."""
    with state.lock:
        operation = state.operations.get(operation_id)
        if operation is None or operation["status"] != "InProgress" or state.now() < operation["due"]:
            return copy.deepcopy(operation)
        handler = OPERATION_HANDLERS.get(operation.get("handler", ""))
        if handler is not None:  # another resource type's operation
            operation["status"] = handler(state, operation_id, operation)
            operation["endTime"] = utcnow_iso()
            return copy.deepcopy(operation)
        cluster_id = operation["resource_id"]
        cluster = state.get(cluster_id)
        meta = state.meta_of(cluster_id) if cluster is not None else {}
        if cluster is None or meta.get("operation") != operation_id:
            operation["status"] = "Succeeded" if operation["kind"] == "delete" else "Canceled"
        elif operation["kind"] == "delete":
            delete_resource_tree(state, cluster_id)
            operation["status"] = "Succeeded"
        else:
            state.put(cluster_id, _finish_provisioning(state, cluster, meta))
            operation["status"] = "Succeeded"
        operation["endTime"] = utcnow_iso()
        return copy.deepcopy(operation)


def settled_cluster(state: State, cluster_id: str) -> dict[str, Any] | None:
    """The cluster as a GET sees it now (settling its operation first)."""
    with state.lock:
        operation_id = state.meta.get(cluster_id.lower(), {}).get("operation")
        if operation_id:
            settle_operation(state, operation_id)
        return state.get(cluster_id)


def _in_progress(state: State, cluster_id: str) -> str | None:
    """The provisioning state of a running operation on this cluster, if any."""
    cluster = settled_cluster(state, cluster_id)
    operation = state.operations.get(state.meta.get(cluster_id.lower(), {}).get("operation", ""))
    if cluster is not None and operation is not None and operation["status"] == "InProgress":
        return cluster["properties"]["provisioningState"]
    return None


# ---------------------------------------------------------------------------------------------------------------
# Routes


def _cluster_id(request: Request, state: State, existing: dict[str, Any] | None = None) -> str:
    if existing is not None:
        return existing["id"]
    p = request.params
    return resource_id(state.config.subscription_id, p["resource_group"], PROVIDER_TYPE, p["name"])


def _prologue(request: Request, state: State, action: str) -> str:
    """api-version, subscription, RBAC, resource group: ARM's checks before the provider sees the call."""
    require_provider_api_version(request, state, MANAGED_CLUSTER_API_VERSIONS, "managedClusters")
    require_subscription(request, state, request.params["subscription"])
    cluster_id = _cluster_id(request, state)
    authorize(request, state, action, cluster_id)
    require_resource_group(request, state, request.params["subscription"], request.params["resource_group"])
    return cluster_id


def _require_cluster(request: Request, state: State, cluster_id: str) -> dict[str, Any]:
    cluster = settled_cluster(state, cluster_id)
    if cluster is None:
        raise resource_not_found(PROVIDER_TYPE, request.params["name"], request.params["resource_group"])
    return cluster


def _validated_payload(request: Request) -> dict[str, Any]:
    if not _CLUSTER_NAME.match(request.params["name"]):
        raise ArmError(
            400, "InvalidParameter", f"The value of parameter resourceName '{request.params['name']}' is invalid."
        )  # UNVERIFIED wording
    payload = request.json()
    if not isinstance(payload, dict):
        raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be deserialized.")
    if not payload.get("location"):
        raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
    return payload


@route("GET", _CLUSTER)
def get_cluster(request: Request, state: State) -> Response:
    cluster_id = _prologue(request, state, "Microsoft.ContainerService/managedClusters/read")
    return Response(200, _require_cluster(request, state, cluster_id))


@route("PUT", _CLUSTER)
def put_cluster(request: Request, state: State) -> Response:
    cluster_id = _prologue(request, state, "Microsoft.ContainerService/managedClusters/write")
    payload = _validated_payload(request)
    with state.lock:
        busy = _in_progress(state, cluster_id)
        if busy:
            # Seen in AKS errors (azure-workload-identity#417, terraform-azurerm-avm-ptn-aks-production#25).
            raise ArmError(
                409,
                "OperationNotAllowed",
                f"Operation is not allowed: Another operation ({busy}) is in progress, please wait for it to finish "
                "before starting a new operation. See https://aka.ms/aks-pending-operation for more details",
            )
        existing = state.get(cluster_id)
        check_location_unchanged(existing, payload["location"], request.params["resource_group"])
        cluster_id = _cluster_id(request, state, existing)
        meta = state.meta_of(cluster_id)
        scratch = copy.deepcopy(meta)  # rules may still refuse the PUT: commit bookkeeping only on success
        try:
            body = build_cluster(
                state, cluster_id, (existing or {}).get("name", request.params["name"]), payload, existing, scratch
            )
        except ArmError:
            if existing is None:  # leave no bookkeeping behind for a cluster that was never created
                state.meta.pop(cluster_id.lower(), None)
            raise
        meta.update(scratch)
        state.put(cluster_id, body)
        if existing is None:
            _register_principals(state, body, meta)
        operation_id = _start_operation(state, cluster_id, "put", body["location"])
    headers = {"Azure-AsyncOperation": _operation_url(state, body["location"], operation_id)}
    return Response(200 if existing else 201, body, headers)


@route("PATCH", _CLUSTER)
def patch_cluster_tags(request: Request, state: State) -> Response:
    # ManagedClusters_UpdateTags: only tags; answered synchronously with 200 (the spec also allows 202).
    cluster_id = _prologue(request, state, "Microsoft.ContainerService/managedClusters/write")
    patch = request.json() or {}
    with state.lock:
        cluster = _require_cluster(request, state, cluster_id)
        if "tags" in patch:
            cluster["tags"] = patch["tags"] or {}
        return Response(200, state.put(cluster_id, cluster))


@route("DELETE", _CLUSTER)
def delete_cluster(request: Request, state: State) -> Response:
    # 202 + Azure-AsyncOperation + Location while it runs; 204 when there is nothing to delete (azure-behaviour §3.6).
    cluster_id = _prologue(request, state, "Microsoft.ContainerService/managedClusters/delete")
    with state.lock:
        cluster = settled_cluster(state, cluster_id)
        if cluster is None:
            return Response(204)
        cluster["properties"]["provisioningState"] = "Deleting"
        state.put(cluster_id, cluster)
        operation_id = _start_operation(state, cluster["id"], "delete", cluster["location"])
    headers = {
        "Azure-AsyncOperation": _operation_url(state, cluster["location"], operation_id),
        "Location": _operation_url(state, cluster["location"], operation_id, "operationresults"),
    }
    return Response(202, None, headers)


def _list_response(request: Request, state: State, clusters: list[dict[str, Any]]) -> Response:
    settled = [settled_cluster(state, c["id"]) for c in clusters]
    readable = [
        c
        for c in settled
        if c and is_authorized(request, state, "Microsoft.ContainerService/managedClusters/read", c["id"])
    ]
    return Response(200, {"value": readable})


def _is_cluster(key: str, body: dict[str, Any]) -> bool:
    return body.get("type") == RESPONSE_TYPE


@route("GET", _CLUSTERS_IN_GROUP)
def list_clusters_in_group(request: Request, state: State) -> Response:
    require_provider_api_version(request, state, MANAGED_CLUSTER_API_VERSIONS, "managedClusters")
    p = request.params
    require_resource_group(request, state, p["subscription"], p["resource_group"])
    group_prefix = resource_id(state.config.subscription_id, p["resource_group"], PROVIDER_TYPE, "").lower()
    return _list_response(
        request, state, state.find(lambda key, body: _is_cluster(key, body) and key.startswith(group_prefix))
    )


@route("GET", _SUBSCRIPTION + r"/providers/Microsoft\.ContainerService/managedClusters")
def list_clusters_in_subscription(request: Request, state: State) -> Response:
    require_provider_api_version(request, state, MANAGED_CLUSTER_API_VERSIONS, "managedClusters")
    require_subscription(request, state, request.params["subscription"])
    return _list_response(request, state, state.find(_is_cluster))


def _operation(request: Request, state: State) -> dict[str, Any]:
    # Polling URLs are pre-authorized in Azure (signed query string), so authentication only, no RBAC.
    require_subscription(request, state, request.params["subscription"])
    operation = settle_operation(state, request.params["operation"])
    if operation is None or operation.get("location", "").lower() != request.params["location"].lower():
        raise ArmError(404, "NotFound", f"Operation {request.params['operation']} not found.")  # UNVERIFIED wording
    return operation


@route("GET", _LOCATION_OPERATIONS + r"/operations/(?P<operation>[^/]+)")
def get_operation_status(request: Request, state: State) -> Response:
    operation = _operation(request, state)
    body = {
        "name": operation_name(request.params["operation"]),
        "status": operation["status"],
        "startTime": operation["startTime"],
    }
    if "endTime" in operation:
        body["endTime"] = operation["endTime"]
    return Response(200, body)


@route("GET", _LOCATION_OPERATIONS + r"/operationresults/(?P<operation>[^/]+)")
def get_operation_result(request: Request, state: State) -> Response:
    # The Location URL of a delete: 202 while running, 204 once the cluster is gone (ARM Location polling). A handler
    # operation's PUT (an identity binding's: final-state-via location) ends with the resource it wrote, 200.
    operation = _operation(request, state)
    if operation["status"] == "InProgress":
        return Response(
            202,
            None,
            {"Location": _operation_url(state, operation["location"], request.params["operation"], "operationresults")},
        )
    written = state.get(operation["resource_id"]) if operation.get("handler") and operation["kind"] == "put" else None
    if written is not None and operation["status"] == "Succeeded":
        return Response(200, written)
    return Response(204)


# ---------------------------------------------------------------------------------------------------------------
# Seed


@seeder(30)
def seed_cluster(state: State) -> None:
    """The seeded cluster: fully provisioned, OIDC issuer off, workload identity never set."""
    seed = state.config.seed
    if not seed.get("cluster") or not seed.get("resource_group"):
        return
    cluster_id = resource_id(state.config.subscription_id, seed["resource_group"], PROVIDER_TYPE, seed["cluster"])
    payload = {
        "location": state.config.location,
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "kubernetesVersion": seed.get("cluster_kubernetes_version", DEFAULT_KUBERNETES_VERSION),
            "dnsPrefix": seed["cluster"],
            "agentPoolProfiles": [{"name": "nodepool1", "count": 2, "vmSize": "Standard_D4ds_v5"}],
            "oidcIssuerProfile": {"enabled": False},
        },
    }
    meta = state.meta_of(cluster_id)
    meta["issuer_uuid"] = seed.get("cluster_issuer_uuid") or str(uuid.uuid4())
    body = build_cluster(state, cluster_id, seed["cluster"], payload, None, meta)
    state.put(cluster_id, _finish_provisioning(state, body, meta))


# ---------------------------------------------------------------------------------------------------------------
# Clusters added at runtime: a second (third...) lab kube-apiserver and the AKS cluster resource wired to it


def _seed_wired_cluster(state: State, entry: dict[str, Any]) -> dict[str, Any]:
    """The AKS cluster resource of a wiring added at runtime: fully provisioned, OIDC issuer and workload identity on,
    its issuer the apiserver's --service-account-issuer (issuer_url() finds the wiring). Written directly, as the seed
    cluster is: it stands for a cluster someone built beforehand (docs/lab.md §8), so no ARM request is logged."""
    cluster_id = resource_id(state.config.subscription_id, entry["resource_group"], PROVIDER_TYPE, entry["cluster"])
    payload = {
        "location": state.config.location,
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "kubernetesVersion": entry.get("kubernetes_version")
            or state.config.seed.get("cluster_kubernetes_version", DEFAULT_KUBERNETES_VERSION),
            "dnsPrefix": entry["cluster"],
            "agentPoolProfiles": [{"name": "nodepool1", "count": 2, "vmSize": "Standard_D4ds_v5"}],
            "oidcIssuerProfile": {"enabled": True},
            "securityProfile": {"workloadIdentity": {"enabled": True}},
        },
    }
    state.meta.pop(cluster_id.lower(), None)  # a fresh resource: new resourceUID, identities and operation state
    meta = state.meta_of(cluster_id)
    meta["issuer_uuid"] = entry["issuer_url"].rstrip("/").rsplit("/", 1)[-1]
    body = build_cluster(state, cluster_id, entry["cluster"], payload, None, meta)
    return state.put(cluster_id, _finish_provisioning(state, body, meta))


@seeder(31)
def seed_wired_clusters(state: State) -> None:
    """Clusters added at runtime come back on /_lab/reset, as the seed cluster does (their resource group, if it is
    not a seeded one, does not: then neither does the cluster)."""
    for entry in state.config.kube_clusters:
        if state.get(resource_group_id(state.config.subscription_id, entry["resource_group"])) is not None:
            _seed_wired_cluster(state, entry)


_WIRING_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")
_LAB_FIELDS = ("name", "resource_group", "cluster", "apiserver_url", "issuer_url", "ca_file", "kubernetes_version")


def _validated_wiring(state: State, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", "The body must be a JSON object.")
    entry = {key: body.get(key) for key in _LAB_FIELDS if body.get(key) is not None}
    for key in ("name", "resource_group", "cluster", "apiserver_url", "issuer_url"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise ArmError(400, "InvalidParameter", f"'{key}' is required.")
    if not _WIRING_NAME.match(entry["name"]) or entry["name"] == PRIMARY:
        raise ArmError(400, "InvalidParameter", f"'name' must be 1-32 of [a-z0-9-], not '{PRIMARY}'.")
    if not _CLUSTER_NAME.match(entry["cluster"]):
        raise ArmError(400, "InvalidParameter", f"The value of parameter resourceName '{entry['cluster']}' is invalid.")
    # The issuer is served by this emulator, in AKS's shape: https://<host>/<tenant>/<guid>/ (azure-behaviour §5).
    prefix = f"{state.config.base_url}/{state.config.tenant_id}/"
    issuer = entry["issuer_url"]
    guid = issuer[len(prefix) : -1] if issuer.startswith(prefix) and issuer.endswith("/") else ""
    if not re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", guid):
        raise ArmError(400, "InvalidParameter", f"'issuer_url' must be {prefix}<lower-case guid>/, not '{issuer}'.")
    if not entry["apiserver_url"].startswith("https://"):
        raise ArmError(400, "InvalidParameter", "'apiserver_url' must be an https URL.")
    for wiring in state.config.wirings():
        if wiring.name == entry["name"]:
            continue
        if wiring.issuer_url == issuer:
            raise ArmError(409, "Conflict", f"The issuer '{issuer}' is wiring '{wiring.name}''s already.")
        if (entry["resource_group"].lower(), entry["cluster"].lower()) in wiring.clusters:
            raise ArmError(409, "Conflict", f"The cluster '{entry['cluster']}' is wired to '{wiring.name}' already.")
    return entry


def _wiring_view(state: State, entry: dict[str, Any]) -> dict[str, Any]:
    cluster_id = resource_id(state.config.subscription_id, entry["resource_group"], PROVIDER_TYPE, entry["cluster"])
    return {**entry, "id": cluster_id}


@route(("GET", "POST"), r"/_lab/clusters", plane="lab", auth=None)
def lab_clusters(request: Request, state: State) -> Response:
    """The lab's control API (never Azure's): GET lists the wirings; POST adds (or updates, by name) one, and writes
    its AKS cluster resource, as tests/lab/lab.py add_cluster does once the second apiserver is ready."""
    if request.method == "GET":
        return Response(200, {"clusters": [{**asdict(wiring)} for wiring in state.config.wirings()]})
    with state.lock:
        entry = _validated_wiring(state, request.json())
        if state.get(resource_group_id(state.config.subscription_id, entry["resource_group"])) is None:
            raise ArmError(
                404, "ResourceGroupNotFound", f"Resource group '{entry['resource_group']}' could not be found."
            )
        previous = next((e for e in state.config.kube_clusters if e["name"] == entry["name"]), None)
        cluster_id = _wiring_view(state, entry)["id"]
        existing = state.get(cluster_id)
        if existing is not None and (previous is None or previous["cluster"].lower() != entry["cluster"].lower()):
            raise ArmError(409, "Conflict", f"The cluster '{entry['cluster']}' exists already and is not wired.")
        others = [e for e in state.config.kube_clusters if e["name"] != entry["name"]]
        state.config.kube_clusters = [*others, entry]
        issuer = (existing or {}).get("properties", {}).get("oidcIssuerProfile", {}).get("issuerURL")
        if existing is None or issuer != entry["issuer_url"]:
            _seed_wired_cluster(state, entry)
    return Response(200 if previous else 201, _wiring_view(state, entry))


@route("DELETE", r"/_lab/clusters/(?P<name>[^/]+)", plane="lab", auth=None)
def lab_remove_cluster(request: Request, state: State) -> Response:
    """Unwire a cluster added at runtime and delete its AKS cluster resource (if it is still there), as the lab does
    when a test removes the cluster it added (tests/lab/lab.py remove_cluster)."""
    with state.lock:
        entry = next((e for e in state.config.kube_clusters if e["name"] == request.params["name"]), None)
        if entry is None:
            raise ArmError(404, "NotFound", f"No cluster '{request.params['name']}' was added.")
        state.config.kube_clusters = [e for e in state.config.kube_clusters if e is not entry]
        cluster_id = _wiring_view(state, entry)["id"]
        if state.get(cluster_id) is not None:
            delete_resource_tree(state, cluster_id)
    return Response(200, _wiring_view(state, entry))
