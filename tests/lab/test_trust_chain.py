"""Conformance of the whole lab: a ServiceAccount token signed by the REAL kube-apiserver is exchanged at the
emulated Entra ID for an access token, exactly as a pod's workload identity does on AKS, through unmodified
clients only (kubernetes, azure-identity, azure-mgmt-*, azure-keyvault-secrets).

The exchange succeeds only when the identity has a federated credential whose issuer, subject and audience
match the token exactly; each near miss fails with the AADSTS code Entra gives for it.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import jwt
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import ClientSecretCredential, WorkloadIdentityCredential
from azure.keyvault.secrets import SecretClient
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.resource.resources import ResourceManagementClient
from kubernetes import client as k8s
from kubernetes import config as k8s_config

pytestmark = pytest.mark.lab

AUDIENCE = "api://AzureADTokenExchange"
ARM_SCOPE = "https://management.core.windows.net/.default"
DEMO_RG, DEMO_CLUSTER = "rg-wid-demo", "aks-wid-demo"  # wired to the lab's kube-apiserver (tests/lab/lab.py)


class World:
    """Clients built from the lab's env file, as a user would build them against a custom cloud."""

    def __init__(self, lab) -> None:
        env = lab.env
        self.lab = lab
        self.env = env
        self.ca = env["AZURE_CA_BUNDLE"]
        metadata = requests.get(env["AZURE_CLOUD_ENVIRONMENT"], verify=self.ca, timeout=30).json()
        self.arm = metadata["resourceManager"].rstrip("/")
        self.authority = metadata["authentication"]["loginEndpoint"].rstrip("/")
        self.subscription = env["AZURE_SUBSCRIPTION_ID"]
        self.tenant = env["AZURE_TENANT"]
        self.deployer = ClientSecretCredential(
            self.tenant, env["AZURE_CLIENT_ID"], env["AZURE_SECRET"], **self.identity_kwargs()
        )
        mgmt = {"base_url": self.arm, "credential_scopes": [ARM_SCOPE], "connection_verify": self.ca}
        self.resources = ResourceManagementClient(self.deployer, self.subscription, **mgmt)
        self.aks = ContainerServiceClient(self.deployer, self.subscription, **mgmt)
        self.msi = ManagedServiceIdentityClient(self.deployer, self.subscription, **mgmt)
        self.authorization = AuthorizationManagementClient(self.deployer, self.subscription, **mgmt)
        self.keyvault = KeyVaultManagementClient(self.deployer, self.subscription, **mgmt)
        api = k8s_config.new_client_from_config(config_file=str(lab.admin_kubeconfig))
        self.core = k8s.CoreV1Api(api)
        self.version = k8s.VersionApi(api)

    def identity_kwargs(self) -> dict:
        # A custom cloud's authority is unknown to login.microsoftonline.com, so MSAL must not ask it to
        # validate the authority (instance discovery); the same setting serves Azure Stack and private clouds.
        return {"authority": self.authority, "disable_instance_discovery": True, "connection_verify": self.ca}

    def service_account_token(self, namespace: str, name: str, audience: str = AUDIENCE) -> str:
        request = k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(audiences=[audience], expiration_seconds=600)
        )
        return self.core.create_namespaced_service_account_token(name, namespace, request).status.token

    def exchange(self, client_id: str, token: str, tmp_path: Path, scope: str = ARM_SCOPE):
        token_file = tmp_path / f"token-{uuid.uuid4().hex}"
        token_file.write_text(token)
        credential = WorkloadIdentityCredential(
            tenant_id=self.tenant, client_id=client_id, token_file_path=str(token_file), **self.identity_kwargs()
        )
        return credential, credential.get_token(scope)


@pytest.fixture(scope="module")
def world(lab):
    return World(lab)


@pytest.fixture(scope="module")
def issuer(world):
    """Create the docs' starting point: a resource group and a cluster with the OIDC issuer + workload identity."""
    world.lab.settings(lro_seconds=0.5)
    world.resources.resource_groups.create_or_update(DEMO_RG, {"location": "eastus"})
    cluster = world.aks.managed_clusters.begin_create_or_update(
        DEMO_RG,
        DEMO_CLUSTER,
        # Plain dicts go to the wire as they are in these SDK versions, so they carry the REST (camelCase) names.
        {
            "location": "eastus",
            "identity": {"type": "SystemAssigned"},
            "properties": {
                "dnsPrefix": DEMO_CLUSTER,
                "agentPoolProfiles": [{"name": "nodepool1", "count": 1, "vmSize": "Standard_DS2_v2", "mode": "System"}],
                "oidcIssuerProfile": {"enabled": True},
                "securityProfile": {"workloadIdentity": {"enabled": True}},
            },
        },
        polling_interval=0.2,
    ).result()
    try:
        yield cluster.oidc_issuer_profile.issuer_url
    finally:
        world.resources.resource_groups.begin_delete(DEMO_RG, polling_interval=0.2).result()
        world.lab.settings(lro_seconds=2)


@pytest.fixture
def workload(world):
    """A namespace + ServiceAccount on the real apiserver, and a managed identity in Azure."""
    suffix = uuid.uuid4().hex[:8]
    namespace, name = f"conf-{suffix}", "workload"
    world.core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    world.core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name)))
    identity = world.msi.user_assigned_identities.create_or_update(DEMO_RG, f"id-conf-{suffix}", {"location": "eastus"})
    return {
        "namespace": namespace,
        "name": name,
        "identity": identity,
        "subject": f"system:serviceaccount:{namespace}:{name}",
    }


def _federate(world, workload, issuer: str, subject: str, name: str = "fic") -> None:
    world.msi.federated_identity_credentials.create_or_update(
        DEMO_RG,
        workload["identity"].name,
        name,
        {"properties": {"issuer": issuer, "subject": subject, "audiences": [AUDIENCE]}},
    )


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_apiserver_is_real_and_versioned(world):
    info = world.version.get_code()
    assert info.git_version.startswith("v1.") and "+" not in info.git_version  # a real semver: the webhook parses it
    assert info.major == "1"


def test_cluster_issuer_is_the_apiservers_and_discovery_is_anonymous(world, issuer):
    assert issuer == world.lab.state()["config"]["kube_issuer_url"]
    assert issuer.endswith("/")  # AKS's issuer URLs end with a slash (azure-behaviour §5)
    discovery = requests.get(issuer + ".well-known/openid-configuration", verify=world.ca, timeout=30).json()
    assert discovery["issuer"] == issuer
    jwks = requests.get(discovery["jwks_uri"], verify=world.ca, timeout=30).json()
    apiserver_jwks = requests.get(world.lab.kube_url + "/openid/v1/jwks", verify=world.ca, timeout=30).json()
    assert jwks["keys"] and jwks["keys"] == apiserver_jwks["keys"]  # the apiserver's keys, read anonymously


def test_service_account_token_carries_aks_claims(world, issuer, workload):
    token = world.service_account_token(workload["namespace"], workload["name"])
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    claims = _claims(token)
    assert header["alg"] == "RS256"
    assert claims["iss"] == issuer
    assert claims["sub"] == workload["subject"]
    assert claims["aud"] == [AUDIENCE]


def test_exchange_succeeds_only_with_a_matching_federated_credential(world, issuer, workload, tmp_path):
    client_id = workload["identity"].client_id
    token = world.service_account_token(workload["namespace"], workload["name"])
    with pytest.raises(ClientAuthenticationError, match="AADSTS700211"):
        world.exchange(client_id, token, tmp_path)
    _federate(world, workload, issuer, workload["subject"])
    _credential, access = world.exchange(client_id, token, tmp_path)
    claims = _claims(access.token)
    assert claims["aud"] == ARM_SCOPE.removesuffix("/.default")
    assert claims["oid"] == workload["identity"].principal_id
    assert claims["appid"] == client_id
    assert claims["tid"] == world.tenant


@pytest.mark.parametrize(
    ("variant", "code"),
    [
        ("issuer-without-trailing-slash", "AADSTS700211"),
        ("subject-case", "AADSTS7002138"),
        ("other-namespace", "AADSTS700213"),
        ("wrong-audience", "AADSTS700212"),
    ],
)
def test_near_misses_fail_with_entras_codes(world, issuer, workload, tmp_path, variant, code):
    subject, token_audience, fic_issuer = workload["subject"], AUDIENCE, issuer
    if variant == "issuer-without-trailing-slash":
        fic_issuer = issuer.rstrip("/")
    elif variant == "subject-case":
        subject = subject.replace(workload["namespace"], workload["namespace"].upper())
    elif variant == "other-namespace":
        subject = "system:serviceaccount:default:" + workload["name"]
    else:
        token_audience = "api://SomethingElse"
    _federate(world, workload, fic_issuer, subject)
    token = world.service_account_token(workload["namespace"], workload["name"], audience=token_audience)
    with pytest.raises(ClientAuthenticationError, match=code):
        world.exchange(workload["identity"].client_id, token, tmp_path)


def test_workload_reads_a_key_vault_secret_once_granted(world, issuer, workload, tmp_path):
    seed = world.lab.seed
    _federate(world, workload, issuer, workload["subject"])
    token = world.service_account_token(workload["namespace"], workload["name"])
    vault = world.keyvault.vaults.get(seed["resource_group"], seed["rbac_vault"])
    assert vault.properties.enable_rbac_authorization is True
    credential, _access = world.exchange(workload["identity"].client_id, token, tmp_path)
    secrets = SecretClient(vault.properties.vault_uri, credential, connection_verify=world.ca)  # no overrides
    with pytest.raises(HttpResponseError) as denied:
        secrets.get_secret(seed["secret_name"])
    assert denied.value.status_code == 403 and "ForbiddenByRbac" in str(denied.value)
    role = next(
        iter(world.authorization.role_definitions.list(vault.id, filter="roleName eq 'Key Vault Secrets User'"))
    )
    world.authorization.role_assignments.create(
        vault.id,
        str(uuid.uuid4()),
        {
            "properties": {
                "roleDefinitionId": role.id,
                "principalId": workload["identity"].principal_id,
                "principalType": "ServicePrincipal",
            }
        },
    )
    assert secrets.get_secret(seed["secret_name"]).value == seed["secret_value"]


def test_restricted_user_is_confined_to_its_namespace(world):
    api = k8s_config.new_client_from_config(config_file=str(world.lab.restricted_kubeconfig))
    core = k8s.CoreV1Api(api)
    name = f"sa-{uuid.uuid4().hex[:6]}"
    namespace = world.lab.restricted_namespace
    core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name)))
    core.delete_namespaced_service_account(name, namespace)
    with pytest.raises(k8s.ApiException) as forbidden:
        core.create_namespaced_service_account("default", k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name)))
    assert forbidden.value.status == 403


def test_audit_log_tells_dry_runs_from_writes(world):
    """Tests prove "check mode wrote nothing" with the apiserver's own audit log."""
    namespace = world.lab.restricted_namespace
    name = f"sa-{uuid.uuid4().hex[:6]}"
    body = k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
    mark = world.lab.kube_mark()
    world.core.create_namespaced_service_account(namespace, body, dry_run="All")
    assert world.lab.kube_writes(mark) == []
    assert [e["verb"] for e in world.lab.kube_writes(mark, include_dry_run=True)] == ["create"]
    world.core.create_namespaced_service_account(namespace, body)
    assert [(e["verb"], e["code"]) for e in world.lab.kube_writes(mark)] == [("create", 201)]
