"""Conformance tests of the emulated ARM surface (metadata, resource groups, AKS, managed identities, federated
credentials, OIDC issuers) through the real Azure SDK clients over HTTPS, plus raw requests where a shape matters.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
import types
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.containerservice import models as aks_models
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.resource.resources import ResourceManagementClient

from tests.lab import pki
from tests.lab.azure import app
from tests.lab.azure.fake_apiserver import FakeApiserver
from tests.lab.azure.inprocess import RunningEmulator, running_emulator

ARM_SCOPE = "https://management.core.windows.net/.default"
AKS_API = "2026-08-01"
MSI_API = "2024-11-30"
RG_API = "2025-04-01"
SUBJECT = "system:serviceaccount:default:workload"
AUDIENCE = "api://AzureADTokenExchange"


# ---------------------------------------------------------------------------------------------------------------
# Fixtures


def _route_modules_present() -> tuple[str, ...]:
    return tuple(m for m in app.ROUTE_MODULES if importlib.util.find_spec(f"tests.lab.azure.{m}"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[RunningEmulator]:
    """One emulator for the module. Sibling route modules still being written are skipped, and until
    authorization.py exists an allow-all stand-in takes its place (the deployer principal is Owner once it does)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(app, "ROUTE_MODULES", _route_modules_present())
    if importlib.util.find_spec("tests.lab.azure.authorization") is None:
        stand_in = types.ModuleType("tests.lab.azure.authorization")
        stand_in.authorize = lambda request, state, action, scope: None
        patch.setitem(sys.modules, "tests.lab.azure.authorization", stand_in)
    with running_emulator(tmp_path_factory.mktemp("emulator")) as running:
        yield running
    patch.undo()


@pytest.fixture
def emulator(lab: RunningEmulator) -> RunningEmulator:
    """The shared emulator, reset to its seeded world, with quick long-running operations."""
    lab.state.config.wired_clusters = []
    lab.state.config.kube_issuer_url = None
    lab.state.config.kube_apiserver_url = None
    lab.state.reset()
    lab.server.faults.clear()
    lab.state.update_settings({"lro_seconds": 0.3, "fic_write_seconds": 0.0})
    return lab


class StaticTokenCredential:
    """An azure-core TokenCredential handing out one pre-issued ARM token."""

    def __init__(self, token: str, expires_on: int) -> None:
        self._token = AccessToken(token, expires_on)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self._token


def _token(emulator: RunningEmulator) -> str:
    return emulator.token()


@pytest.fixture
def credential(emulator: RunningEmulator) -> StaticTokenCredential:
    return StaticTokenCredential(_token(emulator), int(time.time()) + 3600)


def _client_options(emulator: RunningEmulator) -> dict[str, Any]:
    return {
        "base_url": emulator.base_url,
        "connection_verify": str(emulator.ca_file),
        "credential_scopes": [ARM_SCOPE],
        "retry_backoff_factor": 0.1,
    }


@pytest.fixture
def resources(emulator, credential) -> ResourceManagementClient:
    return ResourceManagementClient(credential, emulator.config.subscription_id, **_client_options(emulator))


@pytest.fixture
def aks(emulator, credential) -> ContainerServiceClient:
    return ContainerServiceClient(credential, emulator.config.subscription_id, **_client_options(emulator))


@pytest.fixture
def msi(emulator, credential) -> ManagedServiceIdentityClient:
    return ManagedServiceIdentityClient(credential, emulator.config.subscription_id, **_client_options(emulator))


@pytest.fixture
def http(emulator) -> requests.Session:
    """Raw HTTPS with the ARM token."""
    return emulator.session(_token(emulator))


def _group_path(emulator, resource_group: str | None = None) -> str:
    group = resource_group or emulator.seed["resource_group"]
    return f"{emulator.base_url}/subscriptions/{emulator.config.subscription_id}/resourceGroups/{group}"


def _cluster_url(emulator, name: str | None = None, resource_group: str | None = None) -> str:
    cluster = name or emulator.seed["cluster"]
    return f"{_group_path(emulator, resource_group)}/providers/Microsoft.ContainerService/managedClusters/{cluster}?api-version={AKS_API}"


def _identity_url(emulator, name: str, resource_group: str | None = None) -> str:
    return f"{_group_path(emulator, resource_group)}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"


def _identity_id(emulator, name: str) -> str:
    group = emulator.seed["resource_group"]
    return f"/subscriptions/{emulator.config.subscription_id}/resourcegroups/{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"


def _credential_url(emulator, identity: str, name: str) -> str:
    return f"{_identity_url(emulator, identity)}/federatedIdentityCredentials/{name}?api-version={MSI_API}"


def _fic_body(
    issuer: str = "https://issuer.example/tenant/abc/", subject: str = SUBJECT, audiences: Any = None
) -> dict[str, Any]:
    return {
        "properties": {
            "issuer": issuer,
            "subject": subject,
            "audiences": audiences if audiences is not None else [AUDIENCE],
        }
    }


def _error(response: requests.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


def _wait_for_operation(http: requests.Session, url: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(http.get(url).json())
        if seen[-1]["status"] != "InProgress":
            return seen
        time.sleep(0.1)
    raise AssertionError(f"operation still running: {seen[-1]}")


def _wire_seed_cluster(emulator: RunningEmulator, apiserver_url: str | None = None) -> str:
    """Wire the seed cluster to a kube-apiserver, as the lab does; returns the issuer URL it will publish."""
    issuer = f"{emulator.base_url}/{emulator.config.tenant_id}/{emulator.seed['cluster_issuer_uuid']}/"
    emulator.state.config.wired_clusters = [[emulator.seed["resource_group"].upper(), emulator.seed["cluster"]]]
    emulator.state.config.kube_issuer_url = issuer
    emulator.state.config.kube_apiserver_url = apiserver_url
    emulator.state.reset()
    emulator.state.update_settings({"lro_seconds": 0.3, "fic_write_seconds": 0.0})
    return issuer


def _enable_oidc(aks: ContainerServiceClient, emulator, workload_identity: bool | None = None):
    cluster = aks.managed_clusters.get(emulator.seed["resource_group"], emulator.seed["cluster"])
    cluster.oidc_issuer_profile = aks_models.ManagedClusterOIDCIssuerProfile(enabled=True)
    if workload_identity is not None:
        cluster.security_profile = aks_models.ManagedClusterSecurityProfile(
            workload_identity=aks_models.ManagedClusterSecurityProfileWorkloadIdentity(enabled=workload_identity)
        )
    poller = aks.managed_clusters.begin_create_or_update(
        emulator.seed["resource_group"], emulator.seed["cluster"], cluster, polling_interval=0.1
    )
    return poller.result()


# ---------------------------------------------------------------------------------------------------------------
# ARM: metadata, authentication, resource groups


def test_metadata_endpoints_shapes_and_configure_a_client(emulator, credential):
    plain = requests.Session()
    plain.trust_env = False
    plain.verify = str(emulator.ca_file)
    current = plain.get(f"{emulator.base_url}/metadata/endpoints?api-version=2022-09-01").json()
    assert isinstance(current, dict)
    assert current["resourceManager"] == emulator.base_url + "/"
    assert current["authentication"]["loginEndpoint"] == emulator.base_url + "/"
    assert current["authentication"]["audiences"][0] == emulator.config.arm_audience
    assert current["authentication"]["tenant"] == "common"
    assert current["suffixes"]["keyVaultDns"] == emulator.config.vault_dns_suffix
    assert f"https://kv.{current['suffixes']['keyVaultDns']}/" == emulator.vault_url("kv")
    clouds = plain.get(f"{emulator.base_url}/metadata/endpoints?api-version=2019-05-01").json()
    assert isinstance(clouds, list) and clouds[0] == current
    legacy = plain.get(f"{emulator.base_url}/metadata/endpoints?api-version=2015-01-01").json()
    assert legacy["authentication"]["loginEndpoint"] == emulator.base_url + "/" and "graphEndpoint" in legacy
    # A client configured from the document alone reaches the lab.
    client = ResourceManagementClient(
        credential,
        emulator.config.subscription_id,
        base_url=current["resourceManager"],
        credential_scopes=[current["authentication"]["audiences"][0] + ".default"],
        connection_verify=str(emulator.ca_file),
    )
    assert emulator.seed["resource_group"] in [g.name for g in client.resource_groups.list()]


def test_arm_requires_a_valid_token_and_api_version(emulator, http):
    anonymous = requests.get(_cluster_url(emulator), verify=str(emulator.ca_file))
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "AuthenticationFailed"
    missing = http.get(_cluster_url(emulator).split("?", maxsplit=1)[0])
    assert _error(missing)[:2] == (400, "MissingApiVersionParameter")
    old = http.get(_cluster_url(emulator).replace(AKS_API, "2019-06-01"))  # old, but published: accepted
    assert old.status_code == 200
    unknown = http.get(_cluster_url(emulator).replace(AKS_API, "2019-06-02"))
    assert _error(unknown)[:2] == (400, "NoRegisteredProviderFound")
    assert _error(http.get(_cluster_url(emulator).replace(AKS_API, "latest")))[:2] == (
        400,
        "InvalidApiVersionParameter",
    )


def test_resource_group_create_update_get_and_missing(emulator, resources, http):
    created = http.put(
        f"{_group_path(emulator, 'rg-new')}?api-version={RG_API}", json={"location": "West Europe", "tags": {"a": "1"}}
    )
    assert created.status_code == 201
    assert created.json() == {
        "id": f"/subscriptions/{emulator.config.subscription_id}/resourceGroups/rg-new",
        "name": "rg-new",
        "type": "Microsoft.Resources/resourceGroups",
        "location": "westeurope",
        "properties": {"provisioningState": "Succeeded"},
        "tags": {"a": "1"},
    }
    updated = resources.resource_groups.create_or_update("rg-new", {"location": "westeurope", "tags": {"b": "2"}})
    assert updated.tags == {"b": "2"}
    moved = http.put(f"{_group_path(emulator, 'rg-new')}?api-version={RG_API}", json={"location": "eastus"})
    assert _error(moved)[:2] == (409, "InvalidResourceGroupLocation")
    assert resources.resource_groups.check_existence("rg-new") is True
    assert resources.resource_groups.check_existence("rg-absent") is False
    with pytest.raises(ResourceNotFoundError) as missing:
        resources.resource_groups.get("rg-absent")
    assert missing.value.error.code == "ResourceGroupNotFound"
    assert missing.value.error.message == "Resource group 'rg-absent' could not be found."
    assert {"rg-new", emulator.seed["resource_group"]} <= {g.name for g in resources.resource_groups.list()}


def test_resource_group_delete_cascades_to_identities_clusters_and_principals(emulator, resources, aks, msi, http):
    resources.resource_groups.create_or_update("rg-doomed", {"location": "eastus"})
    identity = msi.user_assigned_identities.create_or_update("rg-doomed", "id-doomed", {"location": "eastus"})
    msi.federated_identity_credentials.create_or_update("rg-doomed", "id-doomed", "fic-doomed", _fic_body())
    cluster = aks.managed_clusters.begin_create_or_update(
        "rg-doomed", "aks-doomed", _minimal_cluster(), polling_interval=0.1
    ).result()
    principals = {
        identity.principal_id,
        cluster.identity.principal_id,
        cluster.identity_profile["kubeletidentity"].object_id,
    }
    assert principals <= set(emulator.state.principals)
    deleted = http.delete(f"{_group_path(emulator, 'rg-doomed')}?api-version={RG_API}")
    assert deleted.status_code == 202 and "/operationresults/" in deleted.headers["Location"]
    assert http.get(deleted.headers["Location"]).status_code == 200
    assert not principals & set(emulator.state.principals)
    assert _error(http.get(_cluster_url(emulator, "aks-doomed", "rg-doomed")))[:2] == (404, "ResourceGroupNotFound")
    assert not [k for k in emulator.state.resources if "rg-doomed" in k]
    # And through the SDK poller: create again, begin_delete, gone.
    resources.resource_groups.create_or_update("rg-doomed", {"location": "eastus"})
    resources.resource_groups.begin_delete("rg-doomed", polling_interval=0.1).result()
    assert resources.resource_groups.check_existence("rg-doomed") is False


# ---------------------------------------------------------------------------------------------------------------
# AKS


def _minimal_cluster(**properties: Any) -> dict[str, Any]:
    return {
        "location": "eastus",
        "properties": {
            "dnsPrefix": "mini",
            "agentPoolProfiles": [{"name": "nodepool1", "count": 1, "vmSize": "Standard_DS2_v2", "mode": "System"}],
            **properties,
        },
    }


def test_seed_cluster_looks_like_a_real_one(emulator, aks, http):
    body = http.get(_cluster_url(emulator)).json()
    seed = emulator.seed
    assert body["id"] == (
        f"/subscriptions/{emulator.config.subscription_id}/resourcegroups/{seed['resource_group']}"
        f"/providers/Microsoft.ContainerService/managedClusters/{seed['cluster']}"
    )
    assert body["type"] == "Microsoft.ContainerService/ManagedClusters"
    assert body["sku"] == {"name": "Base", "tier": "Free"}
    assert body["identity"]["type"] == "SystemAssigned" and body["identity"]["tenantId"] == emulator.config.tenant_id
    props = body["properties"]
    assert props["provisioningState"] == "Succeeded" and props["powerState"] == {"code": "Running"}
    assert props["kubernetesVersion"] == props["currentKubernetesVersion"] == seed["cluster_kubernetes_version"]
    assert props["fqdn"].startswith(props["dnsPrefix"] + "-") and props["fqdn"].endswith(".hcp.eastus.azmk8s.io")
    assert props["azurePortalFQDN"] == props["fqdn"].replace(".hcp.", ".portal.hcp.")
    assert props["nodeResourceGroup"] == f"MC_{seed['resource_group']}_{seed['cluster']}_eastus"
    assert props["servicePrincipalProfile"] == {"clientId": "msi"}
    assert props["enableRBAC"] is True and props["maxAgentPools"] == 100 and props["disableLocalAccounts"] is False
    assert props["oidcIssuerProfile"] == {"enabled": False}
    assert props["securityProfile"] == {}
    kubelet = props["identityProfile"]["kubeletidentity"]
    assert kubelet["resourceId"].endswith(f"/userAssignedIdentities/{seed['cluster']}-agentpool")
    assert kubelet["objectId"] in emulator.state.principals
    pool = props["agentPoolProfiles"][0]
    assert pool["name"] == "nodepool1" and pool["mode"] == "System" and pool["osType"] == "Linux"
    assert pool["type"] == "VirtualMachineScaleSets" and pool["provisioningState"] == "Succeeded"
    assert pool["currentOrchestratorVersion"] == props["currentKubernetesVersion"]
    network = props["networkProfile"]
    assert network["serviceCidr"] == "10.0.0.0/16" and network["dnsServiceIP"] == "10.0.0.10"
    assert network["outboundType"] == "loadBalancer" and network["ipFamilies"] == ["IPv4"]
    assert network["loadBalancerProfile"]["effectiveOutboundIPs"]
    assert len(props["resourceUID"]) == 24
    sdk = aks.managed_clusters.get(seed["resource_group"], seed["cluster"])
    assert sdk.oidc_issuer_profile.enabled is False and sdk.oidc_issuer_profile.issuer_url is None
    missing = http.get(_cluster_url(emulator, "aks-absent"))
    assert _error(missing) == (
        404,
        "ResourceNotFound",
        f"The Resource 'Microsoft.ContainerService/managedClusters/aks-absent' under resource group "
        f"'{seed['resource_group']}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )
    assert missing.headers["x-ms-failure-cause"] == "gateway"


def test_enable_oidc_on_wired_cluster_changes_nothing_else(emulator, aks, http):
    issuer = _wire_seed_cluster(emulator)
    before = http.get(_cluster_url(emulator)).json()
    result = _enable_oidc(aks, emulator)
    assert result.provisioning_state == "Succeeded"
    assert result.oidc_issuer_profile.issuer_url == issuer
    after = http.get(_cluster_url(emulator)).json()
    assert after["properties"].pop("oidcIssuerProfile") == {"enabled": True, "issuerURL": issuer}
    before["properties"].pop("oidcIssuerProfile")
    assert after == before


def test_put_is_a_long_running_operation_with_azure_asyncoperation(emulator, http):
    emulator.state.update_settings({"lro_seconds": 0.5})
    body = http.get(_cluster_url(emulator)).json()
    body["properties"]["oidcIssuerProfile"] = {"enabled": True}
    put = http.put(_cluster_url(emulator), json=body)
    assert put.status_code == 200
    assert put.json()["properties"]["provisioningState"] == "Updating"
    assert put.json()["properties"]["agentPoolProfiles"][0]["provisioningState"] == "Updating"
    assert put.json()["properties"]["oidcIssuerProfile"]["issuerURL"]  # already in the 200 body (azure-behaviour §5)
    assert "Location" not in put.headers and "Retry-After" not in put.headers
    status_url = put.headers["Azure-AsyncOperation"]
    prefix = f"{emulator.base_url}/subscriptions/{emulator.config.subscription_id}/providers/Microsoft.ContainerService/locations/eastus/operations/"
    assert status_url.startswith(prefix) and status_url.endswith("?api-version=2016-03-30")
    operation_id = status_url[len(prefix) :].split("?", maxsplit=1)[0]
    conflict = http.put(_cluster_url(emulator), json=body)
    assert _error(conflict)[:2] == (409, "OperationNotAllowed")
    assert "Another operation (Updating) is in progress" in _error(conflict)[2]
    polls = _wait_for_operation(http, status_url)
    assert polls[0]["status"] == "InProgress" and "endTime" not in polls[0]
    done = polls[-1]
    assert done["status"] == "Succeeded" and done["endTime"] >= done["startTime"]
    # The status name is the operation id with its first three GUID groups byte-reversed.
    groups, name = operation_id.split("-"), done["name"].split("-")
    for index in range(3):
        assert name[index] == bytes.fromhex(groups[index])[::-1].hex()
    assert name[3:] == groups[3:]
    assert http.get(_cluster_url(emulator)).json()["properties"]["provisioningState"] == "Succeeded"


def test_new_cluster_is_201_creating_then_succeeded_with_defaults(emulator, aks, http):
    created = http.put(_cluster_url(emulator, "aks-mini"), json=_minimal_cluster())
    assert created.status_code == 201
    body = created.json()
    assert body["properties"]["provisioningState"] == "Creating"
    assert "identityProfile" not in body["properties"]  # the kubelet identity comes with provisioning
    assert (
        body["properties"]["kubernetesVersion"] == "1.33" and body["properties"]["currentKubernetesVersion"] == "1.33.5"
    )
    assert body["properties"]["oidcIssuerProfile"] == {"enabled": False}
    assert body["identity"]["principalId"] in emulator.state.principals
    _wait_for_operation(http, created.headers["Azure-AsyncOperation"])
    final = aks.managed_clusters.get(emulator.seed["resource_group"], "aks-mini")
    assert final.provisioning_state == "Succeeded"
    assert final.identity_profile["kubeletidentity"].client_id
    pool = final.agent_pool_profiles[0]
    assert (pool.os_disk_size_gb, pool.max_pods, pool.os_sku, pool.orchestrator_version) == (128, 250, "Ubuntu", "1.33")
    assert final.network_profile.network_plugin == "azure" and final.network_profile.network_plugin_mode == "overlay"
    assert final.sku.name == "Base" and final.security_profile.workload_identity is None


def test_new_cluster_with_oidc_and_workload_identity_gets_an_aks_shaped_issuer(emulator, aks, http):
    cluster = _minimal_cluster(
        oidcIssuerProfile={"enabled": True}, securityProfile={"workloadIdentity": {"enabled": True}}
    )
    result = aks.managed_clusters.begin_create_or_update(
        emulator.seed["resource_group"], "aks-wi", cluster, polling_interval=0.1
    ).result()
    issuer = result.oidc_issuer_profile.issuer_url
    prefix = f"{emulator.base_url}/{emulator.config.tenant_id}/"  # AKS: https://{region}.oic.../{tenant}/{guid}/
    assert issuer.startswith(prefix) and issuer.endswith("/") and uuid.UUID(issuer[len(prefix) : -1])
    assert result.security_profile.workload_identity.enabled is True
    # The issuer never changes for the life of the cluster.
    again = aks.managed_clusters.begin_create_or_update(
        emulator.seed["resource_group"], "aks-wi", result, polling_interval=0.1
    ).result()
    assert again.oidc_issuer_profile.issuer_url == issuer


def test_kubernetes_134_clusters_always_get_the_issuer(emulator, aks):
    cluster = _minimal_cluster(kubernetesVersion="1.34", oidcIssuerProfile={"enabled": False})
    result = aks.managed_clusters.begin_create_or_update(
        emulator.seed["resource_group"], "aks-134", cluster, polling_interval=0.1
    ).result()
    assert result.oidc_issuer_profile.enabled is True and result.current_kubernetes_version == "1.34.1"


def test_disabling_the_oidc_issuer_is_refused(emulator, aks):
    cluster = _enable_oidc(aks, emulator)
    cluster.oidc_issuer_profile.enabled = False
    with pytest.raises(HttpResponseError) as refused:
        aks.managed_clusters.begin_create_or_update(emulator.seed["resource_group"], emulator.seed["cluster"], cluster)
    assert refused.value.status_code == 400
    assert refused.value.error.code == "OIDCIssuerFeatureCannotBeDisabled"
    assert refused.value.error.message == "OIDC issuer feature cannot be disabled."


def test_workload_identity_without_oidc_issuer_is_refused(emulator, aks):
    cluster = aks.managed_clusters.get(emulator.seed["resource_group"], emulator.seed["cluster"])
    cluster.security_profile = aks_models.ManagedClusterSecurityProfile(
        workload_identity=aks_models.ManagedClusterSecurityProfileWorkloadIdentity(enabled=True)
    )
    with pytest.raises(HttpResponseError) as refused:
        aks.managed_clusters.begin_create_or_update(emulator.seed["resource_group"], emulator.seed["cluster"], cluster)
    assert refused.value.status_code == 400
    assert "requires enabling OIDC issuer" in refused.value.error.message


def test_workload_identity_enable_then_disable(emulator, aks, http):
    enabled = _enable_oidc(aks, emulator, workload_identity=True)
    assert enabled.security_profile.workload_identity.enabled is True
    enabled.security_profile.workload_identity.enabled = False
    aks.managed_clusters.begin_create_or_update(
        emulator.seed["resource_group"], emulator.seed["cluster"], enabled, polling_interval=0.1
    ).result()
    props = http.get(_cluster_url(emulator)).json()["properties"]
    assert props["securityProfile"] == {"workloadIdentity": {"enabled": False}}
    assert props["oidcIssuerProfile"]["enabled"] is True  # OIDC stays on (azure-behaviour §5)


def test_immutable_dns_prefix_and_location(emulator, http):
    body = http.get(_cluster_url(emulator)).json()
    changed = json.loads(json.dumps(body))
    changed["properties"]["dnsPrefix"] = "other"
    assert _error(http.put(_cluster_url(emulator), json=changed))[:2] == (400, "PropertyChangeNotAllowed")
    body["location"] = "westus"
    assert _error(http.put(_cluster_url(emulator), json=body))[:2] == (409, "InvalidResourceLocation")


def test_cluster_delete_is_a_long_running_operation(emulator, aks, http):
    cluster = aks.managed_clusters.begin_create_or_update(
        emulator.seed["resource_group"], "aks-gone", _minimal_cluster(), polling_interval=0.1
    ).result()
    principal = cluster.identity.principal_id
    deleted = http.delete(_cluster_url(emulator, "aks-gone"))
    assert deleted.status_code == 202 and deleted.headers["Azure-AsyncOperation"] and deleted.headers["Location"]
    assert http.get(_cluster_url(emulator, "aks-gone")).json()["properties"]["provisioningState"] == "Deleting"
    _wait_for_operation(http, deleted.headers["Azure-AsyncOperation"])
    assert http.get(_cluster_url(emulator, "aks-gone")).status_code == 404
    assert principal not in emulator.state.principals
    assert http.delete(_cluster_url(emulator, "aks-gone")).status_code == 204
    aks.managed_clusters.begin_create_or_update(
        emulator.seed["resource_group"], "aks-gone", _minimal_cluster(), polling_interval=0.1
    ).result()
    aks.managed_clusters.begin_delete(emulator.seed["resource_group"], "aks-gone", polling_interval=0.1).result()
    assert "aks-gone" not in [
        c.name for c in aks.managed_clusters.list_by_resource_group(emulator.seed["resource_group"])
    ]


def test_list_clusters(emulator, aks):
    assert [c.name for c in aks.managed_clusters.list_by_resource_group(emulator.seed["resource_group"])] == [
        emulator.seed["cluster"]
    ]
    assert [c.name for c in aks.managed_clusters.list()] == [emulator.seed["cluster"]]


# ---------------------------------------------------------------------------------------------------------------
# OIDC issuers


def test_unwired_issuer_serves_discovery_and_an_empty_key_set(emulator, aks, http):
    cluster = _minimal_cluster(oidcIssuerProfile={"enabled": True})
    issuer = (
        aks.managed_clusters.begin_create_or_update(
            emulator.seed["resource_group"], "aks-iss", cluster, polling_interval=0.1
        )
        .result()
        .oidc_issuer_profile.issuer_url
    )
    anonymous = requests.Session()
    anonymous.trust_env = False
    anonymous.verify = str(emulator.ca_file)
    discovery = anonymous.get(issuer + ".well-known/openid-configuration")
    assert discovery.status_code == 200 and discovery.headers["Content-Type"].startswith("application/json")
    assert discovery.json() == {
        "issuer": issuer,
        "jwks_uri": issuer + "openid/v1/jwks",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }
    assert anonymous.get(discovery.json()["jwks_uri"]).json() == {"keys": []}
    unknown = f"{emulator.base_url}/{emulator.config.tenant_id}/{uuid.uuid4()}/.well-known/openid-configuration"
    assert anonymous.get(unknown).status_code == 404
    disabled = f"{emulator.base_url}/{emulator.config.tenant_id}/{emulator.seed['cluster_issuer_uuid']}/.well-known/openid-configuration"
    assert anonymous.get(disabled).status_code == 404  # the seed cluster's issuer is off


def test_wired_issuer_publishes_the_apiserver_keys(emulator, aks, tmp_path):
    ca = pki.create_ca(emulator.ca_file.parent)  # the emulator's own CA (reused, not recreated)
    apiserver = FakeApiserver(tmp_path, ca)
    try:
        issuer = _wire_seed_cluster(emulator, apiserver.url)
        emulator.state.config.kube_ca_file = str(emulator.ca_file)
        anonymous = requests.Session()
        anonymous.trust_env = False
        anonymous.verify = str(emulator.ca_file)
        assert anonymous.get(issuer + ".well-known/openid-configuration").status_code == 404  # not enabled yet
        assert _enable_oidc(aks, emulator).oidc_issuer_profile.issuer_url == issuer
        discovery = anonymous.get(issuer + ".well-known/openid-configuration").json()
        assert discovery["issuer"] == issuer
        keys = anonymous.get(discovery["jwks_uri"])
        assert keys.status_code == 200 and keys.json() == apiserver.jwks
    finally:
        apiserver.close()
    unreachable = anonymous.get(discovery["jwks_uri"])
    assert unreachable.status_code == 502
    emulator.state.config.kube_apiserver_url = None
    assert anonymous.get(discovery["jwks_uri"]).status_code == 503


def test_entra_accepts_a_token_signed_by_the_wired_apiserver(emulator, aks, msi, tmp_path):
    """The whole trust chain through real clients: wired issuer -> federated credential -> Entra exchange."""
    if importlib.util.find_spec("tests.lab.azure.entra") is None:
        pytest.skip("the token endpoint is entra.py, not written yet")

    apiserver = FakeApiserver(tmp_path, pki.create_ca(emulator.ca_file.parent))
    try:
        issuer = _wire_seed_cluster(emulator, apiserver.url)
        emulator.state.config.kube_ca_file = str(emulator.ca_file)
        _enable_oidc(aks, emulator, workload_identity=True)
        group = emulator.seed["resource_group"]
        identity = msi.user_assigned_identities.create_or_update(group, "id-e2e", {"location": "eastus"})
        msi.federated_identity_credentials.create_or_update(group, "id-e2e", "fic-e2e", _fic_body(issuer=issuer))
        now = int(time.time())
        claims = {"iss": issuer, "sub": SUBJECT, "aud": [AUDIENCE], "iat": now, "nbf": now, "exp": now + 600}
        token = emulator.exchange(identity.client_id, apiserver.sign(claims), ARM_SCOPE)
        assert jwt.decode(token.token, options={"verify_signature": False})["oid"] == identity.principal_id
    finally:
        apiserver.close()


# ---------------------------------------------------------------------------------------------------------------
# Managed identities


def test_identity_crud_registers_the_principal(emulator, msi, http):
    url = f"{_identity_url(emulator, 'id-app')}?api-version={MSI_API}"
    created = http.put(url, json={"location": "eastus", "tags": {}})
    assert created.status_code == 201
    body = created.json()
    assert created.headers["Location"] == body["id"]
    assert body["id"] == (
        f"/subscriptions/{emulator.config.subscription_id}/resourcegroups/{emulator.seed['resource_group']}"
        "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-app"
    )
    assert body["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities" and body["tags"] == {}
    props = body["properties"]
    assert props["tenantId"] == emulator.config.tenant_id
    principal = emulator.state.principals[props["principalId"]]
    assert principal["app_id"] == props["clientId"] and principal["kind"] == "ManagedIdentity"
    assert emulator.state.principal_by_app_id(props["clientId"])["object_id"] == props["principalId"]
    updated = msi.user_assigned_identities.create_or_update(
        emulator.seed["resource_group"], "id-app", {"location": "eastus", "tags": {"team": "a"}}
    )
    assert (updated.principal_id, updated.client_id, updated.tags) == (
        props["principalId"],
        props["clientId"],
        {"team": "a"},
    )
    patched = msi.user_assigned_identities.update(emulator.seed["resource_group"], "id-app", {"tags": {"team": "b"}})
    assert patched.tags == {"team": "b"} and patched.client_id == props["clientId"]
    assert [i.name for i in msi.user_assigned_identities.list_by_resource_group(emulator.seed["resource_group"])] == [
        "id-app"
    ]
    assert [i.name for i in msi.user_assigned_identities.list_by_subscription()] == ["id-app"]
    deleted = http.delete(url)
    assert deleted.status_code == 200 and deleted.content == b""
    assert props["principalId"] not in emulator.state.principals
    assert http.delete(url).status_code == 204
    with pytest.raises(ResourceNotFoundError):
        msi.user_assigned_identities.get(emulator.seed["resource_group"], "id-app")


def test_identity_in_missing_group_and_old_api_version(emulator, http):
    missing = http.put(
        f"{_identity_url(emulator, 'x', 'rg-absent')}?api-version={MSI_API}", json={"location": "eastus"}
    )
    assert _error(missing)[:2] == (404, "ResourceGroupNotFound")
    old = http.put(f"{_identity_url(emulator, 'id-old')}?api-version=2018-11-30", json={"location": "eastus"})
    assert old.status_code == 201
    assert http.get(_credential_url(emulator, "id-old", "f").replace(MSI_API, "2018-11-30")).status_code == 400


# ---------------------------------------------------------------------------------------------------------------
# Federated identity credentials


@pytest.fixture
def identity(emulator, msi) -> str:
    msi.user_assigned_identities.create_or_update(emulator.seed["resource_group"], "id-wl", {"location": "eastus"})
    return "id-wl"


def test_credential_crud_and_update_in_place(emulator, msi, http, identity):
    url = _credential_url(emulator, identity, "fic-one")
    created = http.put(url, json=_fic_body())
    assert created.status_code == 201 and created.headers["Location"] == created.json()["id"]
    assert created.json() == {
        "id": f"{_identity_id(emulator, identity)}/federatedIdentityCredentials/fic-one",
        "name": "fic-one",
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
        "properties": _fic_body()["properties"],
    }
    meta = emulator.state.meta_of(created.json()["id"])
    assert meta["created"] <= time.time()
    moved = msi.federated_identity_credentials.create_or_update(
        emulator.seed["resource_group"], identity, "fic-one", _fic_body(subject="system:serviceaccount:other:sa")
    )
    assert moved.subject == "system:serviceaccount:other:sa" and moved.name == "fic-one"
    assert http.put(url, json=_fic_body()).status_code == 200
    got = msi.federated_identity_credentials.get(emulator.seed["resource_group"], identity, "fic-one")
    assert (got.issuer, got.subject, got.audiences) == ("https://issuer.example/tenant/abc/", SUBJECT, [AUDIENCE])
    assert http.delete(url).status_code == 200
    assert http.delete(url).status_code == 204
    assert http.get(url).status_code == 404


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("-bad", _fic_body(), "Federated Identity Credential name '-bad' is invalid."),
        ("ab", _fic_body(), "Federated Identity Credential name 'ab' is invalid."),
        ("f" * 121, _fic_body(), f"Federated Identity Credential name '{'f' * 121}' is invalid."),
        ("fic", {}, "Federated Identity Credential from HTTP body has empty properties"),
        ("fic", {"properties": {}}, "Federated Identity Credential from HTTP body has empty properties"),
        (
            "fic",
            {"properties": {"issuer": "https://i.example/", "audiences": [AUDIENCE]}},
            "must specify 'issuer', 'subject' and 'audience'",
        ),
        ("fic", _fic_body(audiences=[]), "Federated identity credentials must have exactly one audience."),
        (
            "fic",
            _fic_body(audiences=[AUDIENCE, "api://other"]),
            "Federated identity credentials must have exactly one audience.",
        ),
        ("fic", _fic_body(issuer="https://i.example/" + "x" * 600), "maximum length of 600"),
        ("fic", _fic_body(subject="s" * 601), "maximum length of 600"),
        ("fic", _fic_body(audiences=["a" * 601]), "maximum length of 600"),
        ("fic", _fic_body(issuer="not a url"), "is invalid"),
        ("fic", _fic_body(issuer="http://plain.example/"), "must be an https URL"),
    ],
)
def test_credential_validation_rules(emulator, http, identity, name, body, message):
    refused = http.put(_credential_url(emulator, identity, name), json=body)
    status, code, text = _error(refused)
    assert (status, code) == (400, "BadRequest")
    assert message in text


def test_credential_names_at_the_limits_are_accepted(emulator, http, identity):
    for name in ("a_-", "A" + "b" * 119):
        assert http.put(_credential_url(emulator, identity, name), json=_fic_body(subject=name)).status_code == 201


def test_issuer_and_subject_pair_is_unique_per_identity(emulator, msi, http, identity):
    assert http.put(_credential_url(emulator, identity, "fic-a"), json=_fic_body()).status_code == 201
    duplicate = http.put(_credential_url(emulator, identity, "fic-b"), json=_fic_body())
    assert _error(duplicate) == (
        400,
        "Conflict",
        "Issuer and subject combination already exists for this Managed Identity.",
    )
    msi.user_assigned_identities.create_or_update(emulator.seed["resource_group"], "id-other", {"location": "eastus"})
    assert http.put(_credential_url(emulator, "id-other", "fic-b"), json=_fic_body()).status_code == 201


def test_twenty_credentials_per_identity(emulator, http, identity):
    for index in range(20):
        assert (
            http.put(
                _credential_url(emulator, identity, f"fic-{index:02d}"), json=_fic_body(subject=f"s{index}")
            ).status_code
            == 201
        )
    over = http.put(_credential_url(emulator, identity, "fic-20"), json=_fic_body(subject="s20"))
    assert _error(over)[:2] == (400, "BadRequest") and "20" in _error(over)[2]
    assert http.put(_credential_url(emulator, identity, "fic-00"), json=_fic_body(subject="changed")).status_code == 200


def test_credential_under_a_missing_identity(emulator, http):
    missing = http.put(_credential_url(emulator, "id-absent", "fic"), json=_fic_body())
    assert _error(missing) == (404, "NotFound", "The parent user-assigned identity doesn't exist.")
    assert http.get(_credential_url(emulator, "id-absent", "fic").replace("/fic?", "?")).status_code == 404


def test_credential_list_pages_with_top_and_skiptoken(emulator, msi, http, identity):
    for index in range(5):
        http.put(_credential_url(emulator, identity, f"fic-{index}"), json=_fic_body(subject=f"s{index}"))
    list_url = _credential_url(emulator, identity, "x").replace("/x?", "?")
    first = http.get(list_url + "&$top=2").json()
    assert [c["name"] for c in first["value"]] == ["fic-0", "fic-1"] and "$skiptoken=2" in first["nextLink"]
    second = http.get(first["nextLink"]).json()
    assert [c["name"] for c in second["value"]] == ["fic-2", "fic-3"]
    assert "nextLink" not in http.get(list_url).json()
    paged = msi.federated_identity_credentials.list(emulator.seed["resource_group"], identity, top=2)
    assert [c.name for c in paged] == [f"fic-{i}" for i in range(5)]


def test_concurrent_credential_writes_on_one_identity_conflict(emulator, msi, http, identity):
    emulator.state.update_settings({"fic_write_seconds": 0.75})
    msi.user_assigned_identities.create_or_update(emulator.seed["resource_group"], "id-two", {"location": "eastus"})

    def put_all(targets: list[tuple[str, str]]) -> tuple[list[requests.Response], float]:
        results: list[requests.Response] = []
        started = time.monotonic()
        threads = [
            threading.Thread(
                target=lambda t=t: results.append(http.put(_credential_url(emulator, *t), json=_fic_body(subject=t[1])))
            )
            for t in targets
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results, time.monotonic() - started

    same, _other = put_all([(identity, "fic-x"), (identity, "fic-y")])
    statuses = sorted(r.status_code for r in same)
    assert statuses == [201, 409]
    conflict = next(r for r in same if r.status_code == 409)
    identity_id = _identity_id(emulator, identity)
    assert _error(conflict) == (
        409,
        "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
        f"Too many Federated Identity Credentials are written concurrently for the managed identity '{identity_id.lower()}'. "
        "Concurrent Federated Identity Credentials writes under the same managed identity are not supported.",
    )
    parallel, elapsed = put_all([(identity, "fic-z"), ("id-two", "fic-z")])
    assert [r.status_code for r in parallel] == [201, 201]
    assert elapsed < 1.3  # both held their identity for 0.75 s at the same time (in turn: >= 1.5 s)
    # A delete is a write too.
    emulator.state.update_settings({"fic_write_seconds": 0.6})
    deleter = threading.Thread(target=lambda: http.delete(_credential_url(emulator, identity, "fic-z")))
    deleter.start()
    time.sleep(0.2)
    assert http.put(_credential_url(emulator, identity, "fic-w"), json=_fic_body(subject="w")).status_code == 409
    deleter.join()


# ---------------------------------------------------------------------------------------------------------------
# Lab control API: request log and fault injection


def _lab(emulator, path: str, method: str = "GET", body: Any = None) -> Any:
    response = requests.request(method, f"{emulator.base_url}/_lab/{path}", json=body, verify=str(emulator.ca_file))
    response.raise_for_status()
    return response.json() if response.content else None


def test_request_log_counts_calls(emulator, aks):
    since = _lab(emulator, "requests")["last_seq"]
    aks.managed_clusters.get(emulator.seed["resource_group"], emulator.seed["cluster"])
    with pytest.raises(ResourceNotFoundError):
        aks.managed_clusters.get(emulator.seed["resource_group"], "aks-absent")
    logged = _lab(emulator, f"requests?since={since}")["requests"]
    assert [(r["method"], r["status"]) for r in logged] == [("GET", 200), ("GET", 404)]
    assert logged[0]["caller"] == emulator.seed["deployer_object_id"]
    assert logged[0]["path"].endswith(f"/managedClusters/{emulator.seed['cluster']}")


def test_throttling_with_retry_after_is_retried_by_azure_core(emulator, msi, identity):
    since = _lab(emulator, "requests")["last_seq"]
    _lab(
        emulator,
        "faults",
        "POST",
        {"method": "GET", "path": "/userAssignedIdentities/id-wl$", "status": 429, "retry_after": 1},
    )
    started = time.monotonic()
    assert msi.user_assigned_identities.get(emulator.seed["resource_group"], identity).name == identity
    assert time.monotonic() - started >= 0.9  # azure-core honoured Retry-After
    assert [r["status"] for r in _lab(emulator, f"requests?since={since}")["requests"]] == [429, 200]


def test_dropped_connection_is_retried_by_azure_core(emulator, aks):
    since = _lab(emulator, "requests")["last_seq"]
    _lab(emulator, "faults", "POST", {"method": "GET", "path": "/managedClusters/", "action": "drop"})
    assert (
        aks.managed_clusters.get(emulator.seed["resource_group"], emulator.seed["cluster"]).name
        == emulator.seed["cluster"]
    )
    logged = _lab(emulator, f"requests?since={since}")["requests"]
    assert [r.get("fault") for r in logged] == ["drop", None]


def test_subscription_is_readable(emulator, http):
    body = http.get(
        f"{emulator.base_url}/subscriptions/{emulator.config.subscription_id}?api-version=2022-12-01"
    ).json()
    assert body["subscriptionId"] == emulator.config.subscription_id and body["tenantId"] == emulator.config.tenant_id
    listed = http.get(f"{emulator.base_url}/subscriptions?api-version=2022-12-01").json()["value"]
    assert [s["subscriptionId"] for s in listed] == [emulator.config.subscription_id]


def test_callers_without_a_role_are_refused_and_lists_are_filtered(emulator):
    if importlib.util.find_spec("tests.lab.azure.authorization") is None:
        pytest.skip("RBAC is enforced by authorization.py, not written yet")
    stranger = str(uuid.uuid4())
    session = emulator.session(emulator.token(oid=stranger))
    refused = session.get(_cluster_url(emulator))
    assert _error(refused)[:2] == (403, "AuthorizationFailed")
    assert "Microsoft.ContainerService/managedClusters/read" in _error(refused)[2]
    listed = session.get(
        f"{emulator.base_url}/subscriptions/{emulator.config.subscription_id}/resourcegroups?api-version={RG_API}"
    )
    assert listed.status_code == 200 and listed.json() == {"value": []}
    fic = session.put(_credential_url(emulator, "id-any", "fic"), json=_fic_body())
    assert _error(fic)[:2] == (403, "AuthorizationFailed")
