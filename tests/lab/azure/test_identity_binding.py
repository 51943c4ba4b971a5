"""AKS identity bindings in the emulator (identity_binding.py, azure-behaviour §10): the ARM routes through the
unmodified azure-mgmt-containerservice SDK and raw HTTPS, the managed federated credential on the identity, the
binding issuer's discovery document and keys, and an Entra token exchange against that issuer.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.msi import ManagedServiceIdentityClient

from tests.lab.azure.identity_binding import (
    CREDENTIAL_AUDIENCE,
    CREDENTIAL_NAME,
    IDENTITY_BINDING_API_VERSIONS,
    credential_subject,
)
from tests.lab.azure.inprocess import RunningEmulator, running_emulator
from tests.lab.azure.tokens import IssuerKey

ARM_SCOPE = "https://management.core.windows.net/.default"
IB_API = "2026-04-01"  # the first stable version with identity bindings
MSI_API = "2024-11-30"
AUTHZ_API = "2022-04-01"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
SLOW_LRO = 2.0  # seconds an operation runs in tests that look at it while it runs (a busy machine is slow)


# ---------------------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[RunningEmulator]:
    with running_emulator(tmp_path_factory.mktemp("emulator")) as running:
        yield running


@pytest.fixture
def emulator(lab: RunningEmulator) -> RunningEmulator:
    """The shared emulator, reset to its seeded world (nothing wired), with quick long-running operations."""
    lab.state.config.wired_clusters = []
    lab.state.config.kube_issuer_url = None
    lab.state.config.kube_apiserver_url = None
    lab.state.config.kube_ca_file = None
    lab.state.reset()
    lab.server.faults.clear()
    lab.state.update_settings({"lro_seconds": 0.3, "fic_write_seconds": 0.0})
    return lab


class _Credential:
    def __init__(self, token: str) -> None:
        self._token = AccessToken(token, int(time.time()) + 3600)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self._token


def _token(emulator: RunningEmulator, oid: str | None = None) -> str:
    return emulator.token(oid=oid)


def _options(emulator: RunningEmulator) -> dict[str, Any]:
    return {
        "base_url": emulator.base_url,
        "connection_verify": str(emulator.ca_file),
        "credential_scopes": [ARM_SCOPE],
        "retry_backoff_factor": 0.1,
    }


@pytest.fixture
def aks(emulator) -> ContainerServiceClient:
    return ContainerServiceClient(_Credential(_token(emulator)), emulator.config.subscription_id, **_options(emulator))


@pytest.fixture
def msi(emulator) -> ManagedServiceIdentityClient:
    return ManagedServiceIdentityClient(
        _Credential(_token(emulator)), emulator.config.subscription_id, **_options(emulator)
    )


def _session(emulator: RunningEmulator, token: str | None = None) -> requests.Session:
    """Raw HTTPS; no token: anonymous."""
    return emulator.session(token)


@pytest.fixture
def http(emulator) -> requests.Session:
    return _session(emulator, _token(emulator))


def _group(emulator: RunningEmulator) -> str:
    return emulator.seed["resource_group"]


def _group_url(emulator: RunningEmulator) -> str:
    return f"{emulator.base_url}/subscriptions/{emulator.config.subscription_id}/resourceGroups/{_group(emulator)}"


def _cluster_url(emulator: RunningEmulator, cluster: str | None = None) -> str:
    name = cluster or emulator.seed["cluster"]
    return f"{_group_url(emulator)}/providers/Microsoft.ContainerService/managedClusters/{name}"


def _binding_url(emulator: RunningEmulator, name: str, cluster: str | None = None, api: str = IB_API) -> str:
    return f"{_cluster_url(emulator, cluster)}/identityBindings/{name}?api-version={api}"


def _bindings_url(emulator: RunningEmulator, cluster: str | None = None, api: str = IB_API) -> str:
    return f"{_cluster_url(emulator, cluster)}/identityBindings?api-version={api}"


def _binding_body(identity_id: str) -> dict[str, Any]:
    return {"properties": {"managedIdentity": {"resourceId": identity_id}}}


def _identity(msi: ManagedServiceIdentityClient, emulator: RunningEmulator, name: str = "id-ib"):
    return msi.user_assigned_identities.create_or_update(_group(emulator), name, {"location": "eastus"})


def _error(response: requests.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


def _wait(http: requests.Session, url: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = http.get(url).json()
        if status["status"] != "InProgress":
            return status
        time.sleep(0.1)
    raise AssertionError(f"operation still running: {status}")


def _second_cluster(aks: ContainerServiceClient, emulator: RunningEmulator, name: str = "aks-two") -> None:
    cluster = {
        "location": "eastus",
        "properties": {"dnsPrefix": name, "agentPoolProfiles": [{"name": "nodepool1", "count": 1}]},
    }
    aks.managed_clusters.begin_create_or_update(_group(emulator), name, cluster, polling_interval=0.1).result()


def _bind(
    aks: ContainerServiceClient, emulator: RunningEmulator, name: str, identity_id: str, cluster: str | None = None
):
    return aks.identity_bindings.begin_create_or_update(
        _group(emulator), cluster or emulator.seed["cluster"], name, _binding_body(identity_id), polling_interval=0.1
    ).result()


# ---------------------------------------------------------------------------------------------------------------
# Create, read, list


def test_create_through_the_sdk_runs_to_succeeded_then_get_and_list(emulator, aks, msi):
    identity = _identity(msi, emulator)
    binding = _bind(aks, emulator, "ib1", identity.id)
    assert binding.properties.provisioning_state == "Succeeded"
    assert binding.type == "Microsoft.ContainerService/managedClusters/identityBindings"
    cluster_id = aks.managed_clusters.get(_group(emulator), emulator.seed["cluster"]).id
    assert binding.id == f"{cluster_id}/identityBindings/ib1" and binding.name == "ib1"
    profile = binding.properties.managed_identity
    assert (profile.resource_id, profile.client_id, profile.object_id, profile.tenant_id) == (
        identity.id,
        identity.client_id,
        identity.principal_id,
        identity.tenant_id,
    )
    # One issuer per identity: AKS's path /{tenantId}/{clientId}, no trailing slash, on the emulator's host.
    issuer = binding.properties.oidc_issuer.oidc_issuer_url
    assert issuer == f"{emulator.base_url}/{identity.tenant_id}/{identity.client_id}"
    assert binding.e_tag
    fetched = aks.identity_bindings.get(_group(emulator), emulator.seed["cluster"], "ib1")
    assert fetched.as_dict() == binding.as_dict()
    listed = list(aks.identity_bindings.list_by_managed_cluster(_group(emulator), emulator.seed["cluster"]))
    assert [b.name for b in listed] == ["ib1"]


def test_put_is_a_long_running_operation_and_a_second_put_answers_at_once(emulator, msi, http):
    emulator.state.update_settings({"lro_seconds": SLOW_LRO})  # time to look while it runs
    identity = _identity(msi, emulator)
    url = _binding_url(emulator, "ib1")
    created = http.put(url, json=_binding_body(identity.id))
    assert created.status_code == 201
    assert created.json()["properties"]["provisioningState"] == "Creating"
    status_url, location = created.headers["Azure-AsyncOperation"], created.headers["Location"]
    prefix = (
        f"{emulator.base_url}/subscriptions/{emulator.config.subscription_id}/providers/Microsoft.ContainerService/"
        "locations/eastus/"
    )
    assert status_url.startswith(prefix + "operations/") and location.startswith(prefix + "operationresults/")
    assert http.get(location).status_code == 202  # still running
    assert _error(http.put(url, json=_binding_body(identity.id)))[:2] == (409, "OperationNotAllowed")
    assert _wait(http, status_url)["status"] == "Succeeded"
    final = http.get(location)  # final-state-via 'location': the binding
    assert final.status_code == 200 and final.json()["properties"]["provisioningState"] == "Succeeded"
    assert http.get(url).json() == final.json()
    again = http.put(url, json=_binding_body(identity.id.replace("/resourcegroups/", "/resourceGroups/")))
    assert again.status_code == 200 and "Azure-AsyncOperation" not in again.headers
    assert again.json() == final.json()  # nothing writable: same body, same eTag


def test_every_published_api_version_and_no_other(emulator, msi, http):
    identity = _identity(msi, emulator)
    assert "2025-06-02-preview" in IDENTITY_BINDING_API_VERSIONS and "2026-10-01" in IDENTITY_BINDING_API_VERSIONS
    assert http.put(_binding_url(emulator, "ibpreview", api="2025-06-02-preview"), json=_binding_body(identity.id)).ok
    assert http.get(_bindings_url(emulator, api="2026-10-02-preview")).json()["value"][0]["name"] == "ibpreview"
    for version in ("2026-03-01", "2025-05-02-preview"):  # the cluster routes take these; the binding routes do not
        assert http.get(f"{_cluster_url(emulator)}?api-version={version}").ok
        refused = http.get(_bindings_url(emulator, api=version))
        status, code, message = _error(refused)
        assert (status, code) == (400, "NoRegisteredProviderFound")
        assert f"API version '{version}' for type 'managedClusters/identityBindings'" in message
        assert f"The supported api-versions are '{', '.join(IDENTITY_BINDING_API_VERSIONS)}'." in message
    missing = http.get(f"{_cluster_url(emulator)}/identityBindings")
    assert _error(missing)[:2] == (400, "MissingApiVersionParameter")


# ---------------------------------------------------------------------------------------------------------------
# The managed federated identity credential


def test_the_identity_gets_one_shared_credential_that_outlives_the_bindings(emulator, aks, msi, http):
    identity = _identity(msi, emulator)
    assert list(msi.federated_identity_credentials.list(_group(emulator), "id-ib")) == []
    first = _bind(aks, emulator, "ib1", identity.id)
    credential = msi.federated_identity_credentials.get(_group(emulator), "id-ib", CREDENTIAL_NAME)
    assert credential.issuer == first.properties.oidc_issuer.oidc_issuer_url
    assert credential.subject == credential_subject(identity.client_id)
    assert credential.audiences == [CREDENTIAL_AUDIENCE]

    _second_cluster(aks, emulator)
    second = _bind(aks, emulator, "ib2", identity.id, cluster="aks-two")
    assert second.properties.oidc_issuer.oidc_issuer_url == first.properties.oidc_issuer.oidc_issuer_url
    assert [c.name for c in msi.federated_identity_credentials.list(_group(emulator), "id-ib")] == [CREDENTIAL_NAME]

    aks.identity_bindings.begin_delete(_group(emulator), "aks-two", "ib2", polling_interval=0.1).result()
    aks.identity_bindings.begin_delete(_group(emulator), emulator.seed["cluster"], "ib1", polling_interval=0.1).result()
    # "There's no automatic garbage collection of the FIC today" (identity-bindings-concepts): it stays, and the
    # operator removes it by hand once no binding needs it.
    assert [c.name for c in msi.federated_identity_credentials.list(_group(emulator), "id-ib")] == [CREDENTIAL_NAME]
    msi.federated_identity_credentials.delete(_group(emulator), "id-ib", CREDENTIAL_NAME)
    assert list(msi.federated_identity_credentials.list(_group(emulator), "id-ib")) == []


def test_a_put_restores_the_credential_if_someone_deleted_it(emulator, aks, msi, http):
    identity = _identity(msi, emulator)
    _bind(aks, emulator, "ib1", identity.id)
    msi.federated_identity_credentials.delete(_group(emulator), "id-ib", CREDENTIAL_NAME)
    assert http.put(_binding_url(emulator, "ib1"), json=_binding_body(identity.id)).status_code == 200
    assert msi.federated_identity_credentials.get(_group(emulator), "id-ib", CREDENTIAL_NAME).issuer


def test_an_identity_at_its_credential_limit_cannot_be_bound(emulator, msi, http):
    identity = _identity(msi, emulator)
    for index in range(20):
        body = {
            "properties": {
                "issuer": f"https://issuer.example/{index}/",
                "subject": "s",
                "audiences": [CREDENTIAL_AUDIENCE],
            }
        }
        msi.federated_identity_credentials.create_or_update(_group(emulator), "id-ib", f"fic{index:02d}", body)
    refused = http.put(_binding_url(emulator, "ib1"), json=_binding_body(identity.id))
    assert refused.status_code == 400 and "limit of 20" in refused.json()["error"]["message"]
    assert http.get(_bindings_url(emulator)).json() == {"value": []}


# ---------------------------------------------------------------------------------------------------------------
# Delete, and what deleting the identity or the cluster does


def test_delete_is_a_long_running_operation(emulator, msi, http):
    emulator.state.update_settings({"lro_seconds": SLOW_LRO})  # time to look while it runs
    identity = _identity(msi, emulator)
    url = _binding_url(emulator, "ib1")
    created = http.put(url, json=_binding_body(identity.id))
    assert _wait(http, created.headers["Azure-AsyncOperation"])["status"] == "Succeeded"
    deleted = http.delete(url)
    assert deleted.status_code == 202 and deleted.content == b""
    assert http.get(url).json()["properties"]["provisioningState"] == "Deleting"
    assert http.delete(url).headers["Azure-AsyncOperation"] == deleted.headers["Azure-AsyncOperation"]
    assert http.get(deleted.headers["Location"]).status_code == 202
    assert _wait(http, deleted.headers["Azure-AsyncOperation"])["status"] == "Succeeded"
    assert http.get(deleted.headers["Location"]).status_code == 204
    status, code, message = _error(http.get(url))
    assert (status, code) == (404, "ResourceNotFound")
    assert f"managedClusters/{emulator.seed['cluster']}/identityBindings/ib1'" in message
    assert http.delete(url).status_code == 204


def test_a_delete_supersedes_a_running_create(emulator, msi, http):
    emulator.state.update_settings({"lro_seconds": SLOW_LRO})  # time to look while it runs
    identity = _identity(msi, emulator)
    created = http.put(_binding_url(emulator, "ib1"), json=_binding_body(identity.id))
    deleted = http.delete(_binding_url(emulator, "ib1"))
    assert deleted.status_code == 202
    assert _wait(http, created.headers["Azure-AsyncOperation"])["status"] == "Canceled"
    assert _wait(http, deleted.headers["Azure-AsyncOperation"])["status"] == "Succeeded"
    assert http.get(_bindings_url(emulator)).json() == {"value": []}


def test_deleting_the_cluster_takes_its_bindings_and_deleting_the_identity_its_credential(emulator, aks, msi, http):
    identity = _identity(msi, emulator)
    _second_cluster(aks, emulator)
    _bind(aks, emulator, "ib1", identity.id, cluster="aks-two")
    aks.managed_clusters.begin_delete(_group(emulator), "aks-two", polling_interval=0.1).result()
    assert _error(http.get(_bindings_url(emulator, cluster="aks-two")))[:2] == (404, "ParentResourceNotFound")
    assert [c.name for c in msi.federated_identity_credentials.list(_group(emulator), "id-ib")] == [CREDENTIAL_NAME]

    binding = _bind(aks, emulator, "ib1", identity.id)
    msi.user_assigned_identities.delete(_group(emulator), "id-ib")
    # The binding is the cluster's resource: it stays, still naming the identity it was made for (UNVERIFIED).
    kept = http.get(_binding_url(emulator, "ib1")).json()
    assert kept["properties"]["managedIdentity"]["clientId"] == identity.client_id
    assert kept["properties"]["oidcIssuer"]["oidcIssuerUrl"] == binding.properties.oidc_issuer.oidc_issuer_url
    assert emulator.state.get(f"{identity.id}/federatedIdentityCredentials/{CREDENTIAL_NAME}") is None


# ---------------------------------------------------------------------------------------------------------------
# Refusals


def test_missing_identity_and_missing_cluster(emulator, msi, http):
    group_id = f"/subscriptions/{emulator.config.subscription_id}/resourceGroups/{_group(emulator)}"
    absent = f"{group_id}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-absent"
    status, code, message = _error(http.put(_binding_url(emulator, "ib1"), json=_binding_body(absent)))
    assert (status, code) == (400, "InvalidParameter") and "id-absent" in message
    identity = _identity(msi, emulator)
    for response in (
        http.put(_binding_url(emulator, "ib1", cluster="aks-absent"), json=_binding_body(identity.id)),
        http.get(_binding_url(emulator, "ib1", cluster="aks-absent")),
        http.get(_bindings_url(emulator, cluster="aks-absent")),
    ):
        status, code, message = _error(response)
        assert (status, code) == (404, "ParentResourceNotFound")
        assert message == (
            "Can not perform requested operation on nested resource. Parent resource 'aks-absent' not found."
        )
    assert http.delete(_binding_url(emulator, "ib1", cluster="aks-absent")).status_code == 204
    status, code, _message = _error(http.get(_binding_url(emulator, "ib1")))
    assert (status, code) == (404, "ResourceNotFound")


def test_a_second_binding_of_the_same_identity_on_the_same_cluster_is_refused(emulator, aks, msi, http):
    identity = _identity(msi, emulator)
    _bind(aks, emulator, "ib1", identity.id)
    status, code, message = _error(http.put(_binding_url(emulator, "ib2"), json=_binding_body(identity.id)))
    assert (status, code) == (409, "Conflict") and "'ib1'" in message
    other = _identity(msi, emulator, "id-other")
    assert _bind(aks, emulator, "ib2", other.id).properties.provisioning_state == "Succeeded"
    with pytest.raises(HttpResponseError) as refused:  # the unmodified SDK sees the same refusal
        _bind(aks, emulator, "ib3", identity.id)
    assert refused.value.status_code == 409


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("ib-test-mi-ib", "identityBindingName"),  # the how-to's "${MI_NAME}-ib": the spec's pattern refuses it
        ("Ib1", "identityBindingName"),
        ("1ib", "identityBindingName"),
        ("i" * 64, "identityBindingName"),
    ],
)
def test_binding_names_follow_the_spec(emulator, msi, http, name, target):
    identity = _identity(msi, emulator)
    refused = http.put(_binding_url(emulator, name), json=_binding_body(identity.id))
    assert _error(refused)[:2] == (400, "InvalidParameter") and refused.json()["error"]["target"] == target


def test_the_longest_name_and_the_managed_identity_rules(emulator, msi, http):
    longest = _identity(msi, emulator, "id-long")
    assert http.put(_binding_url(emulator, "i" * 63), json=_binding_body(longest.id)).status_code == 201
    identity = _identity(msi, emulator)
    for body in (
        {},
        {"properties": {"managedIdentity": {}}},
        _binding_body(f"{_cluster_url(emulator).split('://', 1)[1].split('/', 1)[1]}"),  # not an identity's id
        _binding_body(identity.id + "/federatedIdentityCredentials/x"),
    ):
        refused = http.put(_binding_url(emulator, "ib1"), json=body)
        assert _error(refused)[:2] == (400, "InvalidParameter"), body
        assert refused.json()["error"]["target"] == "properties.managedIdentity.resourceId"
    other = _identity(msi, emulator, "id-other")
    created = http.put(_binding_url(emulator, "ib1"), json=_binding_body(identity.id))
    _wait(http, created.headers["Azure-AsyncOperation"])
    changed = http.put(_binding_url(emulator, "ib1"), json=_binding_body(other.id))  # managedIdentity is create-only
    assert _error(changed)[:2] == (400, "PropertyChangeNotAllowed")


def test_binding_needs_the_right_to_write_the_identitys_credentials(emulator, msi, http):
    identity = _identity(msi, emulator)
    operator = str(uuid.uuid4())
    emulator.state.add_principal(operator, str(uuid.uuid4()), "ServicePrincipal", "cluster-operator")

    def grant(scope: str) -> None:
        assignment = {
            "properties": {
                "roleDefinitionId": f"/subscriptions/{emulator.config.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{CONTRIBUTOR}",
                "principalId": operator,
                "principalType": "ServicePrincipal",
            }
        }
        url = f"{emulator.base_url}{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}"
        assert http.put(f"{url}?api-version={AUTHZ_API}", json=assignment).status_code == 201

    cluster_id = http.get(f"{_cluster_url(emulator)}?api-version=2026-08-01").json()["id"]
    grant(cluster_id)
    as_operator = _session(emulator, _token(emulator, operator))
    refused = as_operator.put(_binding_url(emulator, "ib1"), json=_binding_body(identity.id))
    status, code, message = _error(refused)
    assert (status, code) == (403, "LinkedAuthorizationFailed")
    assert "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write" in message
    assert f"on the linked scope(s) '{identity.id}'" in message
    grant(identity.id)
    assert as_operator.put(_binding_url(emulator, "ib1"), json=_binding_body(identity.id)).status_code == 201


def test_a_cluster_with_api_server_vnet_integration_takes_no_binding(emulator, aks, msi, http):
    identity = _identity(msi, emulator)
    cluster = {
        "location": "eastus",
        "properties": {
            "dnsPrefix": "aks-vnet",
            "agentPoolProfiles": [{"name": "nodepool1", "count": 1}],
            "apiServerAccessProfile": {"enableVnetIntegration": True},
        },
    }
    aks.managed_clusters.begin_create_or_update(_group(emulator), "aks-vnet", cluster, polling_interval=0.1).result()
    refused = http.put(_binding_url(emulator, "ib1", cluster="aks-vnet"), json=_binding_body(identity.id))
    assert _error(refused)[:2] == (400, "BadRequest")


# ---------------------------------------------------------------------------------------------------------------
# The binding issuer: discovery, keys, and a token exchange at the emulated Entra


def test_a_binding_issuer_serves_discovery_and_the_token_proxys_key(emulator, msi, http):
    emulator.state.update_settings({"lro_seconds": SLOW_LRO})  # time to look while it runs
    identity = _identity(msi, emulator)
    anonymous = _session(emulator)
    issuer = f"{emulator.base_url}/{identity.tenant_id}/{identity.client_id}"
    assert anonymous.get(issuer + "/.well-known/openid-configuration").status_code == 404  # no binding yet
    created = http.put(_binding_url(emulator, "ib1"), json=_binding_body(identity.id))
    assert anonymous.get(issuer + "/.well-known/openid-configuration").status_code == 404  # not created yet
    _wait(http, created.headers["Azure-AsyncOperation"])
    discovery = anonymous.get(issuer + "/.well-known/openid-configuration")
    assert discovery.status_code == 200 and discovery.headers["Content-Type"].startswith("application/json")
    assert discovery.json() == {
        "issuer": issuer,
        "jwks_uri": issuer + "/openid/v1/jwks",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }
    keys = anonymous.get(discovery.json()["jwks_uri"])
    # LAB CHOICE (azure-behaviour §10): the key the lab's AKS token proxy signs with, shaped as kube-apiserver's JWKS.
    assert keys.json() == {"keys": [emulator.state.binding_issuer_key.public_jwk()]}
    assert keys.headers["Content-Type"] == "application/jwk-set+json"
    [key] = keys.json()["keys"]
    assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig") and key["kid"]
    # Paths of the same shape that are no binding's issuer still reach the clusters' issuers (oidc.py).
    unknown = anonymous.get(f"{emulator.base_url}/{identity.tenant_id}/{uuid.uuid4()}/.well-known/openid-configuration")
    assert unknown.status_code == 404 and "No OIDC issuer document" in unknown.json()["error"]["message"]
    deleted = http.delete(_binding_url(emulator, "ib1"))
    _wait(http, deleted.headers["Azure-AsyncOperation"])
    assert anonymous.get(issuer + "/.well-known/openid-configuration").status_code == 404  # no binding left


def test_a_cluster_issuer_is_still_served_beside_the_binding_issuers(emulator, aks, msi, http):
    identity = _identity(msi, emulator)
    _bind(aks, emulator, "ib1", identity.id)
    cluster = {
        "location": "eastus",
        "properties": {
            "dnsPrefix": "aks-iss",
            "agentPoolProfiles": [{"name": "nodepool1", "count": 1}],
            "oidcIssuerProfile": {"enabled": True},
        },
    }
    issuer = (
        aks.managed_clusters.begin_create_or_update(_group(emulator), "aks-iss", cluster, polling_interval=0.1)
        .result()
        .oidc_issuer_profile.issuer_url
    )
    discovery = _session(emulator).get(issuer + ".well-known/openid-configuration")
    assert discovery.status_code == 200 and discovery.json()["issuer"] == issuer


def test_entra_exchanges_a_token_the_token_proxy_signs_for_the_binding_issuer(emulator, aks, msi):
    """The last hop of the AKS token proxy (token_proxy.py, proven end to end in tests/lab/test_identity_binding_
    proxy.py): a token of the binding issuer, signed with the key that issuer publishes and shaped as the managed
    credential expects it, is exchanged at the emulated Entra for the identity's token; a token signed with another
    key, or for another subject, is not."""
    identity = _identity(msi, emulator)
    issuer = _bind(aks, emulator, "ib1", identity.id).properties.oidc_issuer.oidc_issuer_url
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": credential_subject(identity.client_id),
        "aud": [CREDENTIAL_AUDIENCE],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    signed = emulator.state.binding_issuer_key.sign(claims)
    token = emulator.exchange(identity.client_id, signed, ARM_SCOPE)
    assert jwt.decode(token.token, options={"verify_signature": False})["oid"] == identity.principal_id

    other_key = IssuerKey()
    with pytest.raises(ClientAuthenticationError, match="AADSTS50013"):
        emulator.exchange(identity.client_id, other_key.sign(claims), ARM_SCOPE)
    with pytest.raises(ClientAuthenticationError, match="AADSTS700213"):
        emulator.exchange(
            identity.client_id, emulator.state.binding_issuer_key.sign({**claims, "sub": "someone"}), ARM_SCOPE
        )
