"""The emulator as clients nobody here wrote see it: the api-versions they send, the bodies they replay from real
Azure traffic, the issuer URLs they parse, the token audiences they ask for, the steps of Microsoft's walk-through.

Everything goes over HTTPS to an in-process emulator, through requests (raw wire shapes, recorded bodies replayed)
or the unmodified Azure SDK clients.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

from tests.lab.azure.aks import MANAGED_CLUSTER_API_VERSIONS
from tests.lab.azure.arm import RESOURCE_GROUP_API_VERSIONS
from tests.lab.azure.authorization import ROLE_ASSIGNMENT_API_VERSIONS, ROLE_DEFINITION_API_VERSIONS
from tests.lab.azure.inprocess import RunningEmulator, running_emulator
from tests.lab.azure.keyvault import SECRET_API_VERSIONS, VAULT_API_VERSIONS
from tests.lab.azure.msi import FIC_API_VERSIONS, IDENTITY_API_VERSIONS

AUDIENCE = "api://AzureADTokenExchange"
SUBJECT = "system:serviceaccount:default:workload"


# ---------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[RunningEmulator]:
    with running_emulator(tmp_path_factory.mktemp("emulator")) as running:
        yield running


@pytest.fixture
def emulator(lab: RunningEmulator) -> RunningEmulator:
    lab.server.faults.clear()
    lab.state.reset()
    lab.state.update_settings({"lro_seconds": 0.2, "fic_write_seconds": 0.0})
    return lab


def _session(emulator: RunningEmulator, audience: str) -> requests.Session:
    """Raw HTTPS as the deployer, with a token for ``audience``; trust_env off so no proxy or CA bundle interferes."""
    return emulator.session(emulator.token(audience))


@pytest.fixture
def arm(emulator: RunningEmulator) -> requests.Session:
    return _session(emulator, emulator.config.arm_audience)


def _deployer(emulator: RunningEmulator) -> ClientSecretCredential:
    seed = emulator.seed
    return ClientSecretCredential(
        emulator.config.tenant_id,
        seed["deployer_client_id"],
        seed["deployer_secret"],
        authority=emulator.base_url,
        disable_instance_discovery=True,
        connection_verify=str(emulator.ca_file),
    )


def _group(emulator: RunningEmulator) -> str:
    return f"{emulator.base_url}/subscriptions/{emulator.config.subscription_id}/resourceGroups/{emulator.seed['resource_group']}"


def _error(response: requests.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


def _identity(emulator: RunningEmulator, name: str = "id-clients") -> str:
    return f"{_group(emulator)}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"


def _cluster(emulator: RunningEmulator, name: str | None = None) -> str:
    name = name or emulator.seed["cluster"]
    return f"{_group(emulator)}/providers/Microsoft.ContainerService/managedClusters/{name}"


def _wait(arm: requests.Session, response: requests.Response, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while arm.get(response.headers["Azure-AsyncOperation"]).json()["status"] == "InProgress":
        assert time.monotonic() < deadline, "the operation never finished"
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------------------------
# 1. api-versions: every published one is accepted, an unknown one gets the refusal Azure gives (azure-behaviour §1)


def test_the_azure_cli_291_identity_version_works_end_to_end(emulator, arm):
    """az identity create / federated-credential create in CLI 2.91 send api-version 2025-05-31-preview."""
    version = "2025-05-31-preview"
    created = arm.put(f"{_identity(emulator)}?api-version={version}", json={"location": "eastus", "tags": {}})
    assert created.status_code == 201, created.text
    fic = f"{_identity(emulator)}/federatedIdentityCredentials/fic-cli?api-version={version}"
    body = {"properties": {"issuer": "https://issuer.example/t/c/", "subject": SUBJECT, "audiences": [AUDIENCE]}}
    assert arm.put(fic, json=body).status_code == 201
    assert arm.get(fic).json()["properties"]["subject"] == SUBJECT
    listed = arm.get(f"{_identity(emulator).rsplit('/', 1)[0]}?api-version={version}").json()["value"]
    assert [i["name"] for i in listed] == ["id-clients"]
    # The newest stable versions too.
    for newer in ("2026-04-30", "2026-05-31"):
        assert arm.get(fic.replace(version, newer)).status_code == 200


ROUTES = {
    # route name -> (versions the route publishes, a URL template that GETs something that exists)
    "resource group": (RESOURCE_GROUP_API_VERSIONS, "{group}"),
    "managed cluster": (MANAGED_CLUSTER_API_VERSIONS, "{cluster}"),
    "identity": (IDENTITY_API_VERSIONS, "{identity}"),
    "federated credential": (FIC_API_VERSIONS, "{identity}/federatedIdentityCredentials"),
    "role assignment": (ROLE_ASSIGNMENT_API_VERSIONS, "{group}/providers/Microsoft.Authorization/roleAssignments"),
    "role definition": (
        ROLE_DEFINITION_API_VERSIONS,
        "{subscription}/providers/Microsoft.Authorization/roleDefinitions",
    ),
    "vault": (VAULT_API_VERSIONS, "{group}/providers/Microsoft.KeyVault/vaults/{rbac_vault}"),
}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_every_published_version_of_a_route_is_accepted(emulator, arm, route):
    assert arm.put(f"{_identity(emulator)}?api-version=2024-11-30", json={"location": "eastus"}).ok
    versions, template = ROUTES[route]
    url = template.format(
        group=_group(emulator),
        cluster=_cluster(emulator),
        identity=_identity(emulator),
        subscription=f"{emulator.base_url}/subscriptions/{emulator.config.subscription_id}",
        rbac_vault=emulator.seed["rbac_vault"],
    )
    refused = {v: r.status_code for v in versions if not (r := arm.get(f"{url}?api-version={v}")).ok}
    assert refused == {}


def test_every_published_secrets_version_is_accepted(emulator):
    vault = _session(emulator, emulator.config.vault_audience)
    url = f"{emulator.vault_url(emulator.seed['policy_vault'])}secrets/{emulator.seed['secret_name']}"
    refused = {
        v: r.status_code for v in SECRET_API_VERSIONS if (r := vault.get(f"{url}?api-version={v}")).status_code != 200
    }
    assert refused == {}


def test_unknown_versions_get_the_refusals_azure_gives(emulator, arm):
    # ARM's own route (resource groups): 400 InvalidApiVersionParameter listing ARM's versions, no spaces.
    group = arm.get(f"{_group(emulator)}?api-version=2099-01-01")
    assert _error(group) == (
        400,
        "InvalidApiVersionParameter",
        f"The api-version '2099-01-01' is invalid. The supported versions are '{','.join(RESOURCE_GROUP_API_VERSIONS)}'.",
    )
    assert "2025-04-01,2025-03-01" in _error(group)[2]
    # A location-bound provider type: 400 NoRegisteredProviderFound, for the location of the resource group.
    cluster = arm.get(f"{_cluster(emulator)}?api-version=2099-01-01")
    assert _error(cluster) == (
        400,
        "NoRegisteredProviderFound",
        "No registered resource provider found for location 'eastus' and API version '2099-01-01' for type "
        f"'managedClusters'. The supported api-versions are '{', '.join(MANAGED_CLUSTER_API_VERSIONS)}'. "
        "The supported locations are 'eastus'.",
    )
    assert "'2017-08-31, 2018-03-31, 2018-08-01-preview, 2019-02-01," in _error(cluster)[2]
    # A PUT is routed by the location its body names.
    put = arm.put(f"{_identity(emulator)}?api-version=2099-01-01", json={"location": "West Europe"})
    assert _error(put)[:2] == (400, "NoRegisteredProviderFound")
    assert _error(put)[2].startswith(
        "No registered resource provider found for location 'westeurope' and API version '2099-01-01' for type "
        "'userAssignedIdentities'. The supported api-versions are '2015-08-31-preview, 2018-11-30, "
    )
    # Federated credentials exist from 2022-01-31-preview on: an identity version before that has no such child type.
    assert arm.put(f"{_identity(emulator)}?api-version=2021-09-30-preview", json={"location": "eastus"}).ok
    old = arm.get(f"{_identity(emulator)}/federatedIdentityCredentials?api-version=2021-09-30-preview")
    assert _error(old)[:2] == (400, "NoRegisteredProviderFound")
    assert "for type 'userAssignedIdentities/federatedIdentityCredentials'" in _error(old)[2]
    vault = arm.get(
        f"{_group(emulator)}/providers/Microsoft.KeyVault/vaults/{emulator.seed['rbac_vault']}?api-version=2099-01-01"
    )
    assert _error(vault)[:2] == (400, "NoRegisteredProviderFound") and "for type 'vaults'" in _error(vault)[2]
    # A global type (Microsoft.Authorization): 404 InvalidResourceType.
    roles = arm.get(f"{_group(emulator)}/providers/Microsoft.Authorization/roleAssignments?api-version=2021-04-01")
    assert _error(roles) == (
        404,
        "InvalidResourceType",
        "The resource type 'roleAssignments' could not be found in the namespace 'Microsoft.Authorization' for api "
        f"version '2021-04-01'. The supported api-versions are '{','.join(ROLE_ASSIGNMENT_API_VERSIONS)}'.",
    )
    definitions = arm.get(
        f"{emulator.base_url}/subscriptions/{emulator.config.subscription_id}/providers/Microsoft.Authorization"
        "/roleDefinitions?api-version=2020-04-01-preview"
    )
    assert _error(definitions)[:2] == (404, "InvalidResourceType")
    # Not a version at all.
    assert _error(arm.get(f"{_cluster(emulator)}?api-version=latest"))[:2] == (400, "InvalidApiVersionParameter")


def test_key_vault_refuses_an_unknown_version_as_key_vault_does(emulator):
    vault = _session(emulator, emulator.config.vault_audience)
    url = f"{emulator.vault_url(emulator.seed['policy_vault'])}secrets/{emulator.seed['secret_name']}"
    refused = vault.get(f"{url}?api-version=7.7")
    assert _error(refused) == (
        400,
        "BadParameter",
        "The specified version (7.7) is not recognized. Consider using the latest supported version (2026-04-01).",
    )
    assert refused.headers["x-ms-keyvault-service-version"]  # Key Vault's headers, not ARM's


# ---------------------------------------------------------------------------------------------------------------
# 2. AKS fills in its defaults (azure-behaviour §2)

# The PUT body azure-cli 2.62 sent in test_aks_create_default_service_msi.yaml (Azure/azure-cli recordings, api-version
# 2026-01-01), the SSH key shortened.
RECORDED_CREATE = {
    "tags": {"key1": "value1"},
    "location": "eastus",
    "identity": {"type": "SystemAssigned"},
    "properties": {
        "kubernetesVersion": "",
        "dnsPrefix": "cliaksdns000002",
        "agentPoolProfiles": [
            {
                "count": 1,
                "vmSize": "Standard_DS2_v2",
                "osDiskSizeGB": 0,  # as test_aks_create_with_oidc_issuer_enabled.yaml sends it
                "osType": "Linux",
                "enableAutoScaling": False,
                "type": "VirtualMachineScaleSets",
                "mode": "System",
                "orchestratorVersion": "",
                "upgradeSettings": {},
                "enableNodePublicIP": False,
                "scaleSetPriority": "Regular",
                "scaleSetEvictionPolicy": "Delete",
                "spotMaxPrice": -1.0,
                "nodeLabels": {"label1": "value1", "label2": "value2"},
                "nodeTaints": [],
                "enableEncryptionAtHost": False,
                "enableUltraSSD": False,
                "enableFIPS": False,
                "name": "nodepool1",
            }
        ],
        "linuxProfile": {"adminUsername": "azureuser", "ssh": {"publicKeys": [{"keyData": "ssh-rsa AAAA lab"}]}},
        "addonProfiles": {},
        "enableRBAC": True,
        "networkProfile": {
            "podCidr": "10.244.0.0/16",
            "serviceCidr": "10.0.0.0/16",
            "dnsServiceIP": "10.0.0.10",
            "outboundType": "loadBalancer",
            "loadBalancerSku": "standard",
        },
        "disableLocalAccounts": False,
        "storageProfile": {},
    },
}
CSI_DEFAULTS = {
    "diskCSIDriver": {"enabled": True},
    "fileCSIDriver": {"enabled": True},
    "snapshotController": {"enabled": True},
}


def test_a_recorded_cli_create_comes_back_with_aks_defaults(emulator, arm):
    url = f"{_cluster(emulator, 'aks-cli')}?api-version=2026-01-01"
    created = arm.put(url, json=RECORDED_CREATE)
    assert created.status_code == 201, created.text
    props = created.json()["properties"]
    assert props["storageProfile"] == CSI_DEFAULTS  # "storageProfile": {} sent; no blobCSIDriver comes back
    pool = props["agentPoolProfiles"][0]
    assert pool["osDiskSizeGB"] == 128  # 0 asks for the default
    assert pool["upgradeSettings"] == {"maxSurge": "10%"}
    assert pool["nodeLabels"] == {"label1": "value1", "label2": "value2"}
    for absent in ("scaleSetPriority", "scaleSetEvictionPolicy", "spotMaxPrice", "nodeTaints"):
        assert absent not in pool, absent
    assert "addonProfiles" not in props
    assert props["securityProfile"] == {} and props["oidcIssuerProfile"] == {"enabled": False}
    _wait(arm, created)
    assert arm.get(url).json()["properties"]["storageProfile"] == CSI_DEFAULTS


def test_storage_profile_keeps_what_the_client_set_and_defaults_the_rest(emulator, arm):
    # test_aks_create_and_update_with_blob_csi_driver.yaml: --enable-blob-driver sends only blobCSIDriver.
    url = f"{_cluster(emulator, 'aks-blob')}?api-version=2026-07-01"
    body = copy.deepcopy(RECORDED_CREATE)
    body["properties"]["storageProfile"] = {"blobCSIDriver": {"enabled": True}, "diskCSIDriver": {"enabled": False}}
    created = arm.put(url, json=body)
    assert created.json()["properties"]["storageProfile"] == {
        "diskCSIDriver": {"enabled": False},  # set by the client: kept
        "fileCSIDriver": {"enabled": True},
        "snapshotController": {"enabled": True},
        "blobCSIDriver": {"enabled": True},
    }
    _wait(arm, created)
    # --disable-blob-driver: the full body back with only blobCSIDriver in storageProfile.
    current = arm.get(url).json()
    current["properties"]["storageProfile"] = {"blobCSIDriver": {"enabled": False}}
    updated = arm.put(url, json=current)
    assert updated.status_code == 200
    assert updated.json()["properties"]["storageProfile"] == {
        "diskCSIDriver": {"enabled": False},  # the cluster's own value, not the default
        "fileCSIDriver": {"enabled": True},
        "snapshotController": {"enabled": True},
        "blobCSIDriver": {"enabled": False},
    }


# ---------------------------------------------------------------------------------------------------------------
# 3. The issuer URL has AKS's path shape (azure-behaviour §5)


def test_issuer_url_has_aks_path_shape_and_serves_its_documents(emulator, arm):
    url = f"{_cluster(emulator, 'aks-issuer')}?api-version=2026-07-01"
    body = copy.deepcopy(RECORDED_CREATE)
    body["properties"]["oidcIssuerProfile"] = {"enabled": True}
    created = arm.put(url, json=body)
    issuer = created.json()["properties"]["oidcIssuerProfile"]["issuerURL"]
    parts = urlsplit(issuer)
    assert f"{parts.scheme}://{parts.netloc}" == emulator.base_url  # the emulator's host stands in for the region's
    tenant, guid, trailing = parts.path[1:].split("/")
    assert tenant == emulator.config.tenant_id and uuid.UUID(guid) and trailing == ""  # /{tenant}/{guid}/, nothing more
    _wait(arm, created)
    anonymous = requests.Session()
    anonymous.trust_env = False
    anonymous.verify = str(emulator.ca_file)
    discovery = anonymous.get(issuer + ".well-known/openid-configuration")
    assert discovery.status_code == 200 and discovery.json()["issuer"] == issuer
    assert discovery.json()["jwks_uri"] == issuer + "openid/v1/jwks"
    assert anonymous.get(discovery.json()["jwks_uri"]).json() == {"keys": []}
    # Entra's paths under the same tenant still reach Entra.
    entra = anonymous.get(f"{emulator.base_url}/{tenant}/v2.0/.well-known/openid-configuration")
    assert entra.status_code == 200 and "token_endpoint" in entra.json()
    assert anonymous.get(f"{emulator.base_url}/{tenant}/discovery/v2.0/keys").json()["keys"]
    # The old /oidc/ prefix is not an issuer any more.
    assert anonymous.get(f"{emulator.base_url}/oidc{parts.path}.well-known/openid-configuration").status_code == 404


# ---------------------------------------------------------------------------------------------------------------
# 4. Key Vault takes tokens for the public cloud's audience (azure-behaviour §7)


class PublicCloudScopes:
    """A client configured for the public cloud: whatever the vault's challenge names, it asks Entra for
    https://vault.azure.net(/)/.default, as code with a hard-coded Key Vault scope does."""

    def __init__(self, credential: ClientSecretCredential, resource: str) -> None:
        self.credential, self.scope = credential, resource + "/.default"

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self.credential.get_token(self.scope, **{k: v for k, v in kwargs.items() if k != "tenant_id"})


@pytest.mark.parametrize("resource", ["https://vault.azure.net", "https://vault.azure.net/"])
def test_vault_accepts_tokens_for_the_public_audience(emulator, resource):
    credential = PublicCloudScopes(_deployer(emulator), resource)
    assert emulator.state.tokens.decode(credential.get_token().token)["aud"] == resource
    client = SecretClient(
        emulator.vault_url(emulator.seed["policy_vault"]), credential, connection_verify=str(emulator.ca_file)
    )
    assert client.get_secret(emulator.seed["secret_name"]).value == emulator.seed["secret_value"]
    # Other audiences are still refused.
    wrong = _session(emulator, emulator.config.arm_audience).get(
        f"{emulator.vault_url(emulator.seed['policy_vault'])}secrets/{emulator.seed['secret_name']}?api-version=7.4"
    )
    assert wrong.status_code == 401 and "AKV10022" in wrong.json()["error"]["message"]


# ---------------------------------------------------------------------------------------------------------------
# 5. The walk-through's self-assignment on the RBAC vault (seed.py)


def test_deployer_can_set_and_read_a_secret_on_the_rbac_vault(emulator):
    client = SecretClient(
        emulator.vault_url(emulator.seed["rbac_vault"]), _deployer(emulator), connection_verify=str(emulator.ca_file)
    )
    assert client.get_secret(emulator.seed["secret_name"]).value == emulator.seed["secret_value"]
    client.set_secret("docs-secret", "Hello!")
    assert client.get_secret("docs-secret").value == "Hello!"
    vault_id = (
        f"/subscriptions/{emulator.config.subscription_id}/resourceGroups/{emulator.seed['resource_group']}"
        f"/providers/Microsoft.KeyVault/vaults/{emulator.seed['rbac_vault']}"
    )
    listed = _session(emulator, emulator.config.arm_audience).get(
        f"{emulator.base_url}{vault_id}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01"
        f"&$filter=principalId eq '{emulator.seed['deployer_object_id']}'"
    )
    roles = {a["properties"]["roleDefinitionId"].rsplit("/", 1)[1] for a in listed.json()["value"]}
    assert "b86a8fe4-44ce-4948-aee5-eccb2c155cd7" in roles  # Key Vault Secrets Officer, at the vault
