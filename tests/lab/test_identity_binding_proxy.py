"""AKS identity bindings end to end, through unmodified clients only (azure-behaviour §10, docs/lab.md §5).

The flow a pod on AKS goes through, with the real pieces where the lab has them: a managed identity and an identity
binding made with the Azure SDKs against the emulator; the ClusterRole that lets a ServiceAccount
``use-managed-identity`` the identity, in the real kube-apiserver; the real webhook's injection into a dry-run pod
annotated for identity bindings; then, playing the kubelet, the pod's projected volume written to disk (a real
TokenRequest for the injected audience and the ConfigMap kube-root-ca.crt); and azure-identity's
``WorkloadIdentityCredential(enable_azure_proxy=True)`` with the pod's environment, which sends the token request to
the lab's AKS token proxy (SNI and CA as injected), which checks the ServiceAccount token, asks the apiserver a
SubjectAccessReview, finds the binding and exchanges through the binding issuer at the emulated Entra. The token
then reads a Key Vault secret with azure-keyvault-secrets. Each missing piece is refused.
"""

from __future__ import annotations

import socket
import ssl
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential, WorkloadIdentityCredential
from azure.keyvault.secrets import SecretClient
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.msi import ManagedServiceIdentityClient
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.lab.azure.identity_binding import CREDENTIAL_AUDIENCE, CREDENTIAL_NAME, credential_subject

pytestmark = pytest.mark.lab

ARM_SCOPE = "https://management.core.windows.net/.default"
USE_LABEL = "azure.workload.identity/use"
CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
MOUNT_PATH = "/var/run/secrets/azure/wi"  # the webhook's VolumeMountPath (v1.6.0, docs/lab.md §5)
DEFAULT_AUDIENCE = "api://AzureADTokenExchange"
# Environment the SDK reads; none may leak from the test process into the credential (the CA must come from the pod).
_CLEARED = (
    "AZURE_KUBERNETES_TOKEN_PROXY",
    "AZURE_KUBERNETES_SNI_NAME",
    "AZURE_KUBERNETES_CA_FILE",
    "AZURE_KUBERNETES_CA_DATA",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTPS_PROXY",
    "https_proxy",
)


class World:
    """Clients built from the lab's env file, as a user builds them against a custom cloud (as test_trust_chain)."""

    def __init__(self, lab) -> None:
        env = lab.env
        self.lab, self.env, self.ca = lab, env, env["AZURE_CA_BUNDLE"]
        metadata = requests.get(env["AZURE_CLOUD_ENVIRONMENT"], verify=self.ca, timeout=30).json()
        self.authority = metadata["authentication"]["loginEndpoint"].rstrip("/")
        self.tenant = env["AZURE_TENANT"]
        deployer = ClientSecretCredential(
            self.tenant,
            env["AZURE_CLIENT_ID"],
            env["AZURE_SECRET"],
            authority=self.authority,
            disable_instance_discovery=True,
            connection_verify=self.ca,
        )
        mgmt = {
            "base_url": metadata["resourceManager"].rstrip("/"),
            "credential_scopes": [ARM_SCOPE],
            "connection_verify": self.ca,
        }
        subscription = env["AZURE_SUBSCRIPTION_ID"]
        self.aks = ContainerServiceClient(deployer, subscription, **mgmt)
        self.msi = ManagedServiceIdentityClient(deployer, subscription, **mgmt)
        self.authorization = AuthorizationManagementClient(deployer, subscription, **mgmt)
        self.keyvault = KeyVaultManagementClient(deployer, subscription, **mgmt)
        api = k8s_config.new_client_from_config(config_file=str(lab.admin_kubeconfig))
        self.core = k8s.CoreV1Api(api)
        self.rbac = k8s.RbacAuthorizationV1Api(api)
        self.group, self.cluster = lab.seed["resource_group"], lab.seed["cluster"]  # wired to the lab apiserver


@pytest.fixture(scope="module")
def world(lab):
    lab.settings(lro_seconds=0.3)
    try:
        yield World(lab)
    finally:
        lab.settings(lro_seconds=2)


class Workload:
    """One workload's pieces: a namespace and ServiceAccount on the apiserver, a managed identity in Azure, and
    whatever the test adds (binding, RBAC grant, Key Vault role)."""

    def __init__(self, world: World) -> None:
        self.world = world
        suffix = uuid.uuid4().hex[:8]
        self.namespace, self.account = f"ib-{suffix}", "workload"
        self.identity = world.msi.user_assigned_identities.create_or_update(
            world.group, f"id-ib-{suffix}", {"location": "eastus"}
        )
        self.binding_name = f"ib{suffix}"
        self.cluster_role = f"use-mi-{self.identity.client_id}"  # the how-to's name
        core = world.core
        core.create_namespace({"metadata": {"name": self.namespace}})
        core.create_namespaced_service_account(
            self.namespace,
            {"metadata": {"name": self.account, "annotations": {CLIENT_ID_ANNOTATION: self.identity.client_id}}},
        )
        world.lab.publish_root_ca(self.namespace)  # kube-controller-manager's job on a real cluster

    @property
    def client_id(self) -> str:
        return self.identity.client_id

    def bind(self):
        """The identity binding, with the SDK's ContainerServiceClient.identity_bindings (a long-running PUT)."""
        return self.world.aks.identity_bindings.begin_create_or_update(
            self.world.group,
            self.world.cluster,
            self.binding_name,
            {"properties": {"managedIdentity": {"resourceId": self.identity.id}}},
            polling_interval=0.1,
        ).result()

    def grant_rbac(self) -> None:
        """The how-to's ClusterRole and ClusterRoleBinding: this ServiceAccount may use this identity."""
        self.world.rbac.create_cluster_role(
            {
                "metadata": {"name": self.cluster_role},
                "rules": [
                    {
                        "verbs": ["use-managed-identity"],
                        "apiGroups": ["cid.wi.aks.azure.com"],
                        "resources": [self.client_id],
                    }
                ],
            }
        )
        self.world.rbac.create_cluster_role_binding(
            {
                "metadata": {"name": self.cluster_role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": self.cluster_role},
                "subjects": [{"kind": "ServiceAccount", "name": self.account, "namespace": self.namespace}],
            }
        )

    def grant_secrets_user(self, vault_id: str) -> None:
        definitions = self.world.authorization.role_definitions.list(
            vault_id, filter="roleName eq 'Key Vault Secrets User'"
        )
        self.world.authorization.role_assignments.create(
            vault_id,
            str(uuid.uuid4()),
            {
                "properties": {
                    "roleDefinitionId": next(iter(definitions)).id,
                    "principalId": self.identity.principal_id,
                    "principalType": "ServicePrincipal",
                }
            },
        )

    def dry_run_pod(self) -> k8s.V1Pod:
        """The pod as the real webhook mutates it: labelled for workload identity, annotated for identity binding."""
        pod = {
            "metadata": {
                "name": "app",
                "labels": {USE_LABEL: "true"},
                "annotations": {self.world.env["LAB_WEBHOOK_TOKEN_PROXY_ANNOTATION"]: "true"},
            },
            "spec": {"serviceAccountName": self.account, "containers": [{"name": "app", "image": "busybox"}]},
        }
        return self.world.core.create_namespaced_pod(self.namespace, pod, dry_run="All")

    def token(self, audience: str, seconds: int = 3600) -> str:
        """A real TokenRequest for the ServiceAccount (what the kubelet asks for a projected token)."""
        request = {"spec": {"audiences": [audience], "expirationSeconds": seconds}}
        return self.world.core.create_namespaced_service_account_token(
            self.account, self.namespace, request
        ).status.token

    def cleanup(self) -> None:
        for delete in (self.world.rbac.delete_cluster_role_binding, self.world.rbac.delete_cluster_role):
            try:
                delete(self.cluster_role)
            except k8s.ApiException as error:
                if error.status != 404:
                    raise


@pytest.fixture
def workload(world):
    made = Workload(world)
    try:
        yield made
    finally:
        made.cleanup()  # the namespace stays: no namespace controller finalizes deletions (docs/lab.md §3.2)


def _kubelet(workload: Workload, pod: k8s.V1Pod, root: Path) -> dict[str, str]:
    """What the kubelet would do for the pod's first container: write the webhook's projected volume under ``root``
    (a TokenRequest per serviceAccountToken source, the ConfigMap's keys per configMap source) and return the
    container's environment with paths under the mount moved there. The dry-run pod does not exist, so the token is
    not bound to it, as the kubelet's would be."""
    container = pod.spec.containers[0]
    [mount] = [m for m in container.volume_mounts if m.mount_path == MOUNT_PATH]
    [volume] = [v for v in pod.spec.volumes if v.name == mount.name]
    for source in volume.projected.sources:
        if source.service_account_token:
            token = source.service_account_token
            target = root / token.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(workload.token(token.audience, token.expiration_seconds))
        if source.config_map:
            data = workload.world.core.read_namespaced_config_map(source.config_map.name, workload.namespace).data
            for item in source.config_map.items:
                target = root / item.path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(data[item.key])
    env = {item.name: item.value for item in container.env}
    return {
        name: value.replace(MOUNT_PATH, str(root), 1) if value.startswith(MOUNT_PATH) else value
        for name, value in env.items()
    }


def _credential(env: dict[str, str], monkeypatch) -> WorkloadIdentityCredential:
    """The credential a pod's code makes, in the pod's environment (and nothing of the test process's)."""
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return WorkloadIdentityCredential(
        tenant_id=env["AZURE_TENANT_ID"],
        client_id=env["AZURE_CLIENT_ID"],
        token_file_path=env["AZURE_FEDERATED_TOKEN_FILE"],
        enable_azure_proxy=True,
    )


def _vault(world: World):
    return world.keyvault.vaults.get(world.group, world.lab.seed["rbac_vault"])


def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def _calls(world: World, since: int) -> list[tuple[str, str, str, int]]:
    return [(r["plane"], r["method"], r["path"], r["status"]) for r in world.lab.requests(since)]


# ---------------------------------------------------------------------------------------------------------------
# The whole way


def test_a_bound_and_granted_workload_reads_a_key_vault_secret_through_the_token_proxy(
    world, workload, tmp_path, monkeypatch
):
    binding = workload.bind()
    assert binding.properties.provisioning_state == "Succeeded"
    issuer = binding.properties.oidc_issuer.oidc_issuer_url
    credential_fic = world.msi.federated_identity_credentials.get(world.group, workload.identity.name, CREDENTIAL_NAME)
    assert (credential_fic.issuer, credential_fic.subject, credential_fic.audiences) == (
        issuer,
        credential_subject(workload.client_id),
        [CREDENTIAL_AUDIENCE],
    )
    workload.grant_rbac()
    vault = _vault(world)
    workload.grant_secrets_user(vault.id)

    pod = workload.dry_run_pod()
    env = _kubelet(workload, pod, tmp_path / "wi")
    assert env["AZURE_KUBERNETES_TOKEN_PROXY"] == world.env["LAB_TOKEN_PROXY_URL"]
    assert env["AZURE_KUBERNETES_SNI_NAME"] == world.env["LAB_TOKEN_PROXY_SNI_NAME"]
    assert Path(env["AZURE_KUBERNETES_CA_FILE"]).read_text() == Path(world.env["LAB_TOKEN_PROXY_CA_FILE"]).read_text()
    assert _claims(Path(env["AZURE_FEDERATED_TOKEN_FILE"]).read_text())["aud"] == [
        world.env["LAB_WEBHOOK_TOKEN_PROXY_AUDIENCE"]
    ]
    credential = _credential(env, monkeypatch)
    mark = world.lab.last_seq()

    secrets = SecretClient(vault.properties.vault_uri, credential, connection_verify=world.ca)  # no overrides
    assert secrets.get_secret(world.lab.seed["secret_name"]).value == world.lab.seed["secret_value"]

    calls = _calls(world, mark)
    token_path = f"/{world.tenant}/oauth2/v2.0/token"
    # The request went to the proxy, and the proxy to Entra, which read the binding issuer's documents to verify
    # the token the proxy minted; the ServiceAccount token never reached Entra as an assertion of its own.
    assert ("token_proxy", "POST", token_path, 200) in calls
    proxied = calls.index(("token_proxy", "POST", token_path, 200))
    entra = [c for c in calls if c[0] == "entra"]
    assert entra == [("entra", "POST", token_path, 200)]
    issuer_path = issuer.split("://", 1)[1].split("/", 1)[1]
    assert ("oidc", "GET", f"/{issuer_path}/.well-known/openid-configuration", 200) in calls
    assert ("oidc", "GET", f"/{issuer_path}/openid/v1/jwks", 200) in calls
    assert calls.index(entra[0]) < proxied  # logged when answered: Entra answered before the proxy did
    assert [c for c in calls if c[0] == "vault"][-1][3] == 200
    claims = _claims(credential.get_token(ARM_SCOPE).token)  # the identity's token, for any resource
    assert (claims["oid"], claims["appid"], claims["tid"]) == (
        workload.identity.principal_id,
        workload.client_id,
        world.tenant,
    )

    # The SubjectAccessReview was the proxy's own, as its user, at the real apiserver.
    reviews = [e for e in world.lab.kube_writes() if "subjectaccessreviews" in e["uri"]]
    assert reviews and reviews[-1]["user"] == "lab-aks-token-proxy" and reviews[-1]["code"] == 201


# ---------------------------------------------------------------------------------------------------------------
# Refusals


def _refused(credential: WorkloadIdentityCredential, world: World, *expected: str) -> None:
    mark = world.lab.last_seq()
    with pytest.raises(ClientAuthenticationError) as refused:
        credential.get_token(ARM_SCOPE)
    for text in expected:
        assert text in str(refused.value)
    assert [c for c in _calls(world, mark) if c[0] == "entra"] == []  # the proxy never asked Entra


def test_a_service_account_without_the_rbac_grant_is_refused(world, workload, tmp_path, monkeypatch):
    workload.bind()
    credential = _credential(_kubelet(workload, workload.dry_run_pod(), tmp_path / "wi"), monkeypatch)
    _refused(
        credential,
        world,
        "unauthorized_client",
        f"'system:serviceaccount:{workload.namespace}:{workload.account}' is not allowed to use the managed identity",
        "'use-managed-identity'",
    )
    workload.grant_rbac()  # the same credential works once the ClusterRoleBinding is there
    assert _claims(credential.get_token(ARM_SCOPE).token)["oid"] == workload.identity.principal_id


def test_an_identity_without_a_binding_on_this_cluster_is_refused(world, workload, tmp_path, monkeypatch):
    workload.grant_rbac()
    credential = _credential(_kubelet(workload, workload.dry_run_pod(), tmp_path / "wi"), monkeypatch)
    _refused(
        credential, world, "unauthorized_client", f"'{workload.client_id}' has no identity binding on this cluster"
    )
    workload.bind()
    assert _claims(credential.get_token(ARM_SCOPE).token)["oid"] == workload.identity.principal_id
    world.aks.identity_bindings.begin_delete(
        world.group, world.cluster, workload.binding_name, polling_interval=0.1
    ).result()
    fresh = _credential(_kubelet(workload, workload.dry_run_pod(), tmp_path / "again"), monkeypatch)
    _refused(fresh, world, "has no identity binding on this cluster")  # deleting the binding ends it


def test_a_token_for_the_default_audience_is_refused(world, workload, tmp_path, monkeypatch):
    workload.bind()
    workload.grant_rbac()
    env = _kubelet(workload, workload.dry_run_pod(), tmp_path / "wi")
    Path(env["AZURE_FEDERATED_TOKEN_FILE"]).write_text(workload.token(DEFAULT_AUDIENCE))
    _refused(
        _credential(env, monkeypatch),
        world,
        "invalid_client",
        f"its audience is not '{world.env['LAB_WEBHOOK_TOKEN_PROXY_AUDIENCE']}'",
    )


def test_a_token_the_apiserver_did_not_sign_is_refused(world, workload, tmp_path, monkeypatch):
    workload.bind()
    workload.grant_rbac()
    env = _kubelet(workload, workload.dry_run_pod(), tmp_path / "wi")
    real = Path(env["AZURE_FEDERATED_TOKEN_FILE"]).read_text()
    forged = jwt.encode(
        _claims(real),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        algorithm="RS256",
        headers={"kid": jwt.get_unverified_header(real)["kid"]},  # the apiserver's key id, another key
    )
    Path(env["AZURE_FEDERATED_TOKEN_FILE"]).write_text(forged)
    _refused(_credential(env, monkeypatch), world, "invalid_client", "its signature does not verify")


# ---------------------------------------------------------------------------------------------------------------
# TLS, and the webhook's CA choice


def _handshake(world: World, server_name: str | None) -> None:
    url = world.env["LAB_TOKEN_PROXY_URL"]
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    context = ssl.create_default_context(cafile=world.env["LAB_TOKEN_PROXY_CA_FILE"])
    context.check_hostname = server_name is not None
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        assert tls.version()


def test_the_proxy_answers_only_the_injected_sni_name_with_a_certificate_for_it(world):
    _handshake(world, world.env["LAB_TOKEN_PROXY_SNI_NAME"])
    for name in (None, "kubernetes.default.svc", "127.0.0.1"):  # no SNI, or another server's
        with pytest.raises(ssl.SSLError):
            _handshake(world, name)
    # A client that ignores AZURE_KUBERNETES_SNI_NAME checks the certificate against 127.0.0.1 and fails too.
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(world.env["LAB_TOKEN_PROXY_URL"], verify=world.env["LAB_TOKEN_PROXY_CA_FILE"], timeout=10)


def test_ca_data_beside_the_ca_file_is_refused_by_azure_identity(tmp_path, monkeypatch):
    """Why the lab gives the webhook the CA as a ConfigMap (docs/lab.md §5): given AZURE_KUBERNETES_CA_DATA, v1.6.0
    injects it AND AZURE_KUBERNETES_CA_FILE (pkg/webhook/webhook.go addEnvironmentVariables), and azure-identity
    refuses a credential that sees both."""
    token_file = tmp_path / "token"
    token_file.write_text("x")
    monkeypatch.setenv("AZURE_KUBERNETES_TOKEN_PROXY", "https://127.0.0.1:1")
    monkeypatch.setenv("AZURE_KUBERNETES_CA_FILE", f"{MOUNT_PATH}/ca-cert/ca.crt")
    monkeypatch.setenv("AZURE_KUBERNETES_CA_DATA", "-----BEGIN CERTIFICATE-----")
    with pytest.raises(ValueError, match="Both AZURE_KUBERNETES_CA_FILE and AZURE_KUBERNETES_CA_DATA are set"):
        WorkloadIdentityCredential(
            tenant_id=str(uuid.uuid4()),
            client_id=str(uuid.uuid4()),
            token_file_path=str(token_file),
            enable_azure_proxy=True,
        )


def test_without_the_proxy_opt_in_the_credential_goes_to_entra_directly(world, workload, tmp_path, monkeypatch):
    """The same pod environment without enable_azure_proxy: azure-identity ignores the proxy and presents the
    ServiceAccount token to Entra, whose aks-identity-binding credential does not trust the cluster's issuer."""
    workload.bind()
    workload.grant_rbac()
    env = _kubelet(workload, workload.dry_run_pod(), tmp_path / "wi")
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    credential = WorkloadIdentityCredential(
        tenant_id=env["AZURE_TENANT_ID"],
        client_id=env["AZURE_CLIENT_ID"],
        token_file_path=env["AZURE_FEDERATED_TOKEN_FILE"],
        connection_verify=world.ca,
    )
    mark = world.lab.last_seq()
    with pytest.raises(ClientAuthenticationError, match="AADSTS700211"):
        credential.get_token(ARM_SCOPE)
    assert [c[0] for c in _calls(world, mark)] == ["entra"]


def test_the_lab_settings_name_the_proxy(world):
    env = world.env
    assert env["LAB_TOKEN_PROXY_URL"].startswith("https://127.0.0.1:")
    assert len(env["LAB_TOKEN_PROXY_SNI_NAME"]) == 46
    assert env["LAB_WEBHOOK_TOKEN_PROXY_AUDIENCE"] == "api://AKSIdentityBinding"
    assert env["LAB_WEBHOOK_TOKEN_PROXY_ANNOTATION"] == "azure.workload.identity/use-identity-binding"
    assert Path(env["LAB_TOKEN_PROXY_CA_FILE"]) == world.lab.ca_file
