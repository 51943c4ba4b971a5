"""The emulated Entra ID, Azure RBAC and Key Vault, driven by the real, unmodified Azure SDK clients over HTTPS.

One emulator per module (reset before every test); a second small HTTPS server plays the external OIDC issuers
whose tokens workload identity federation exchanges.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import ClientAssertionCredential, ClientSecretCredential, WorkloadIdentityCredential
from azure.keyvault.secrets import SecretClient
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault import models as kv_models
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.resource.resources import ResourceManagementClient
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.lab import pki
from tests.lab.azure.authorization import ROLE_IDS
from tests.lab.azure.inprocess import RunningEmulator, running_emulator

ARM_SCOPE = "https://management.azure.com/.default"
TOKEN_EXCHANGE = "api://AzureADTokenExchange"
SUBJECT = "system:serviceaccount:apps:worker"


# ---------------------------------------------------------------------------------------------- an external issuer
class Issuers:
    """OIDC issuers served over HTTPS with a lab-CA certificate: discovery document + JWKS per issuer path."""

    def __init__(self, workdir: Path, ca_file: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}
        tls = pki.issue(
            pki.KeyPair(ca_file, ca_file.parent / "ca.key"), workdir, "issuer", "issuer", ip_addresses=("127.0.0.1",)
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert, tls.key)
        issuers = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.endswith("/.well-known/openid-configuration"):
                    issuer = issuers.base + self.path[: -len(".well-known/openid-configuration")]
                    body = {
                        "issuer": issuer,
                        "jwks_uri": issuer + "openid/v1/jwks",
                        "id_token_signing_alg_values_supported": ["RS256"],
                    }
                elif self.path.endswith("/openid/v1/jwks"):
                    body = issuers.jwks
                else:
                    self.send_error(404)
                    return
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.base = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def issuer(self, name: str = "cluster") -> str:
        return f"{self.base}/{name}/"  # AKS's shape: trailing slash (azure-behaviour §5)

    def token(
        self,
        *,
        iss: str,
        sub: str = SUBJECT,
        aud: str = TOKEN_EXCHANGE,
        lifetime: int = 600,
        offset: int = 0,
        key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        now = int(time.time()) + offset
        claims = {"iss": iss, "sub": sub, "aud": [aud], "iat": now, "nbf": now, "exp": now + lifetime}
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": self.kid})


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Iterator[RunningEmulator]:
    with running_emulator(tmp_path_factory.mktemp("emulator")) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(emulator: RunningEmulator) -> RunningEmulator:
    emulator.server.faults.clear()
    emulator.state.reset()
    return emulator


@pytest.fixture(scope="module")
def issuers(emulator: RunningEmulator, tmp_path_factory) -> Iterator[Issuers]:
    served = Issuers(tmp_path_factory.mktemp("issuer"), emulator.ca_file)
    yield served
    served.server.shutdown()
    served.server.server_close()


def _kwargs(emulator: RunningEmulator) -> dict[str, Any]:
    return {
        "authority": emulator.base_url,
        "disable_instance_discovery": True,
        "connection_verify": str(emulator.ca_file),
    }


def deployer(emulator: RunningEmulator) -> ClientSecretCredential:
    seed = emulator.seed
    return ClientSecretCredential(
        emulator.config.tenant_id, seed["deployer_client_id"], seed["deployer_secret"], **_kwargs(emulator)
    )


def arm_client(cls, emulator: RunningEmulator, credential) -> Any:
    return cls(
        credential,
        emulator.config.subscription_id,
        base_url=emulator.base_url,
        credential_scopes=[ARM_SCOPE],
        connection_verify=str(emulator.ca_file),
    )


def secret_client(emulator: RunningEmulator, vault_url: str, credential) -> SecretClient:
    return SecretClient(vault_url=vault_url, credential=credential, connection_verify=str(emulator.ca_file))


def rg_id(emulator: RunningEmulator) -> str:
    return f"/subscriptions/{emulator.config.subscription_id}/resourceGroups/{emulator.seed['resource_group']}"


def role_definition_id(emulator: RunningEmulator, role: str) -> str:
    subscription = f"/subscriptions/{emulator.config.subscription_id}"
    return f"{subscription}/providers/Microsoft.Authorization/roleDefinitions/{ROLE_IDS[role]}"


def create_identity(
    emulator: RunningEmulator,
    name: str,
    issuer: str | None = None,
    subject: str = SUBJECT,
    audience: str = TOKEN_EXCHANGE,
) -> Any:
    """A user-assigned identity (and optionally a federated credential) made through the MSI routes."""
    msi = arm_client(ManagedServiceIdentityClient, emulator, deployer(emulator))
    identity = msi.user_assigned_identities.create_or_update(
        emulator.seed["resource_group"], name, {"location": "eastus"}
    )
    if issuer:
        msi.federated_identity_credentials.create_or_update(
            emulator.seed["resource_group"],
            name,
            "fic-1",
            {"issuer": issuer, "subject": subject, "audiences": [audience]},
        )
    return identity


def assertion_credential(emulator: RunningEmulator, client_id: str, assertion: str) -> ClientAssertionCredential:
    return ClientAssertionCredential(emulator.config.tenant_id, client_id, lambda: assertion, **_kwargs(emulator))


def aadsts(excinfo: pytest.ExceptionInfo) -> str:
    return str(excinfo.value)


def assign(emulator: RunningEmulator, scope: str, principal_id: str, role: str) -> Any:
    auth = arm_client(AuthorizationManagementClient, emulator, deployer(emulator))
    return auth.role_assignments.create(
        scope,
        str(uuid.uuid4()),
        {
            "role_definition_id": role_definition_id(emulator, role),
            "principal_id": principal_id,
            "principal_type": "ServicePrincipal",
        },
    )


# ---------------------------------------------------------------------------------------------- Entra: secrets
def test_client_secret_credential_gets_an_arm_token_with_the_requested_audience(emulator):
    token = deployer(emulator).get_token(ARM_SCOPE)
    claims = jwt.decode(token.token, options={"verify_signature": False})
    assert claims["aud"] == "https://management.azure.com"
    assert claims["oid"] == emulator.seed["deployer_object_id"]
    assert claims["appid"] == emulator.seed["deployer_client_id"]
    assert token.expires_on > time.time() + 3000


def test_wrong_secret_is_aadsts7000215(emulator):
    credential = ClientSecretCredential(
        emulator.config.tenant_id, emulator.seed["deployer_client_id"], "not-the-secret", **_kwargs(emulator)
    )
    with pytest.raises(ClientAuthenticationError) as excinfo:
        credential.get_token(ARM_SCOPE)
    assert "AADSTS7000215" in aadsts(excinfo)
    assert "not-the-secret" not in aadsts(excinfo)


def test_unknown_client_is_aadsts700016_and_unknown_tenant_fails_discovery(emulator):
    unknown = ClientSecretCredential(emulator.config.tenant_id, str(uuid.uuid4()), "x", **_kwargs(emulator))
    with pytest.raises(ClientAuthenticationError) as excinfo:
        unknown.get_token(ARM_SCOPE)
    assert "AADSTS700016" in aadsts(excinfo)
    wrong_tenant = ClientSecretCredential(
        str(uuid.uuid4()), emulator.seed["deployer_client_id"], "x", **_kwargs(emulator)
    )
    with pytest.raises(ClientAuthenticationError) as excinfo:
        wrong_tenant.get_token(ARM_SCOPE)
    # MSAL turns the AADSTS90002 discovery answer into its own message, as it does against Azure.
    assert "Unable to get authority configuration" in aadsts(excinfo)


def test_token_endpoint_error_body_has_entra_shape_and_scope_must_be_default(emulator):
    import requests

    url = f"{emulator.base_url}/{emulator.config.tenant_id}/oauth2/v2.0/token"
    form = {
        "grant_type": "client_credentials",
        "client_id": emulator.seed["deployer_client_id"],
        "client_secret": emulator.seed["deployer_secret"],
        "scope": "https://management.azure.com/user_impersonation",
    }
    response = requests.post(
        url, data=form, verify=str(emulator.ca_file), headers={"client-request-id": "corr-1"}, timeout=10
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_scope" and body["error_codes"] == [1002012]
    assert body["correlation_id"] == "corr-1" and "Trace ID: " in body["error_description"]
    assert {"timestamp", "trace_id", "error_uri"} <= set(body)
    form["client_secret"] = "wrong"
    form["scope"] = ARM_SCOPE
    response = requests.post(url, data=form, verify=str(emulator.ca_file), timeout=10)
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


def test_tenant_discovery_document_points_at_the_emulator(emulator):
    import requests

    doc = requests.get(
        f"{emulator.base_url}/{emulator.config.tenant_id}/v2.0/.well-known/openid-configuration",
        verify=str(emulator.ca_file),
        timeout=10,
    ).json()
    assert doc["token_endpoint"] == f"{emulator.base_url}/{emulator.config.tenant_id}/oauth2/v2.0/token"
    keys = requests.get(doc["jwks_uri"], verify=str(emulator.ca_file), timeout=10).json()["keys"]
    token = deployer(emulator).get_token(ARM_SCOPE).token
    assert jwt.decode(token, jwt.PyJWK(keys[0]).key, algorithms=["RS256"], audience="https://management.azure.com")
    bad = requests.get(
        f"{emulator.base_url}/{uuid.uuid4()}/v2.0/.well-known/openid-configuration",
        verify=str(emulator.ca_file),
        timeout=10,
    )
    assert bad.status_code == 400 and bad.json()["error_codes"] == [90002]


@pytest.mark.parametrize("alias", ["common", "organizations", "consumers"])
def test_multi_tenant_authorities_publish_discovery_with_the_tenant_placeholder(emulator, alias):
    import requests

    doc = requests.get(
        f"{emulator.base_url}/{alias}/v2.0/.well-known/openid-configuration",
        verify=str(emulator.ca_file),
        timeout=10,
    ).json()
    assert doc["issuer"] == f"{emulator.base_url}/{{tenantid}}/v2.0"
    assert doc["token_endpoint"] == f"{emulator.base_url}/{alias}/oauth2/v2.0/token"


# ---------------------------------------------------------------------------------------------- Entra: federation
def test_workload_identity_exchange_succeeds_for_matching_credential(emulator, issuers, tmp_path):
    identity = create_identity(emulator, "id-wi", issuers.issuer())
    token_file = tmp_path / "token"
    token_file.write_text(issuers.token(iss=issuers.issuer()))
    credential = WorkloadIdentityCredential(
        tenant_id=emulator.config.tenant_id,
        client_id=identity.client_id,
        token_file_path=str(token_file),
        **_kwargs(emulator),
    )
    claims = jwt.decode(credential.get_token(ARM_SCOPE).token, options={"verify_signature": False})
    assert (claims["oid"], claims["appid"]) == (identity.principal_id, identity.client_id)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("issuer without the trailing slash", "AADSTS700211"),
        ("subject differs by case", "AADSTS7002138"),
        ("other subject", "AADSTS700213"),
        ("wrong audience", "AADSTS700212"),
        ("expired assertion", "AADSTS700024"),
        ("signed by another key", "AADSTS50013"),
    ],
)
def test_federated_assertion_mismatches_get_entras_codes(emulator, issuers, case, code):
    identity = create_identity(emulator, "id-mismatch", issuers.issuer())
    claims = {
        "issuer without the trailing slash": {"iss": issuers.issuer().rstrip("/")},
        "subject differs by case": {"iss": issuers.issuer(), "sub": SUBJECT.upper()},
        "other subject": {"iss": issuers.issuer(), "sub": "system:serviceaccount:apps:other"},
        "wrong audience": {"iss": issuers.issuer(), "aud": "api://SomethingElse"},
        "expired assertion": {"iss": issuers.issuer(), "offset": -7200},
        "signed by another key": {
            "iss": issuers.issuer(),
            "key": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        },
    }[case]
    with pytest.raises(ClientAuthenticationError) as excinfo:
        assertion_credential(emulator, identity.client_id, issuers.token(**claims)).get_token(ARM_SCOPE)
    assert code in aadsts(excinfo)


def test_unknown_client_and_unreachable_issuer(emulator, issuers):
    with pytest.raises(ClientAuthenticationError) as excinfo:
        assertion_credential(emulator, str(uuid.uuid4()), issuers.token(iss=issuers.issuer())).get_token(ARM_SCOPE)
    assert "AADSTS700016" in aadsts(excinfo)
    unreachable = f"https://127.0.0.1:{_closed_port()}/gone/"
    identity = create_identity(emulator, "id-unreachable", unreachable)
    with pytest.raises(ClientAuthenticationError) as excinfo:
        assertion_credential(emulator, identity.client_id, issuers.token(iss=unreachable)).get_token(ARM_SCOPE)
    assert "AADSTS50166" in aadsts(excinfo)


def test_new_federated_credential_is_not_usable_until_propagated(emulator, issuers):
    emulator.state.update_settings({"credential_propagation_seconds": 3600})
    identity = create_identity(emulator, "id-young", issuers.issuer())
    assertion = issuers.token(iss=issuers.issuer())
    with pytest.raises(ClientAuthenticationError) as excinfo:
        assertion_credential(emulator, identity.client_id, assertion).get_token(ARM_SCOPE)
    assert "AADSTS700211" in aadsts(excinfo)  # not visible yet: as if absent
    emulator.state.update_settings({"credential_propagation_seconds": 0})
    assert assertion_credential(emulator, identity.client_id, assertion).get_token(ARM_SCOPE).token


# ---------------------------------------------------------------------------------------------- RBAC
def test_role_definitions_by_name_and_by_id(emulator):
    auth = arm_client(AuthorizationManagementClient, emulator, deployer(emulator))
    found = list(auth.role_definitions.list(rg_id(emulator), filter="roleName eq 'key vault secrets user'"))
    assert [d.role_name for d in found] == ["Key Vault Secrets User"]
    assert found[0].id == role_definition_id(emulator, "Key Vault Secrets User")
    assert found[0].permissions[0].data_actions == [
        "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
    ]
    reader = auth.role_definitions.get(f"/subscriptions/{emulator.config.subscription_id}", ROLE_IDS["Reader"])
    assert (reader.role_name, reader.permissions[0].actions) == ("Reader", ["*/read"])
    built_in = list(auth.role_definitions.list(rg_id(emulator), filter="type eq 'BuiltInRole'"))
    assert len(built_in) == len(ROLE_IDS)


def test_role_assignment_create_conflict_list_delete(emulator):
    auth = arm_client(AuthorizationManagementClient, emulator, deployer(emulator))
    principal_id = create_identity(emulator, "id-rbac").principal_id
    scope, name = rg_id(emulator), str(uuid.uuid4())
    params = {"role_definition_id": role_definition_id(emulator, "Reader"), "principal_id": principal_id}
    created = auth.role_assignments.create(scope, name, params)
    assert (created.name, created.scope, created.principal_type) == (name, scope, "ServicePrincipal")
    assert auth.role_assignments.create(scope, name, params).name == name  # same name, same triple: accepted again
    with pytest.raises(HttpResponseError) as excinfo:
        auth.role_assignments.create(scope, str(uuid.uuid4()), params)
    assert excinfo.value.status_code == 409 and excinfo.value.error.code == "RoleAssignmentExists"
    assert name.replace("-", "") in excinfo.value.error.message
    listed = list(auth.role_assignments.list_for_scope(scope, filter=f"principalId eq '{principal_id}'"))
    assert [a.name for a in listed] == [name]
    # atScope() at the subscription does not see what lies below it; the unfiltered list does.
    subscription = f"/subscriptions/{emulator.config.subscription_id}"
    assert name not in [a.name for a in auth.role_assignments.list_for_scope(subscription, filter="atScope()")]
    assert name in [a.name for a in auth.role_assignments.list_for_subscription()]
    assert auth.role_assignments.delete(scope, name).name == name
    assert auth.role_assignments.delete(scope, name) is None  # 204 the second time
    assert not list(auth.role_assignments.list_for_scope(scope, filter=f"assignedTo('{principal_id}')"))


def test_principal_not_found_unless_principal_type_is_given(emulator):
    auth = arm_client(AuthorizationManagementClient, emulator, deployer(emulator))
    ghost = str(uuid.uuid4())
    params = {"role_definition_id": role_definition_id(emulator, "Reader"), "principal_id": ghost}
    with pytest.raises(HttpResponseError) as excinfo:
        auth.role_assignments.create(rg_id(emulator), str(uuid.uuid4()), params)
    assert excinfo.value.error.code == "PrincipalNotFound" and ghost.replace("-", "") in excinfo.value.error.message
    created = auth.role_assignments.create(
        rg_id(emulator), str(uuid.uuid4()), {**params, "principal_type": "ServicePrincipal"}
    )
    assert created.principal_id == ghost
    bad_role = {
        **params,
        "role_definition_id": role_definition_id(emulator, "Reader")[:-4] + "0000",
        "principal_type": "User",
    }
    with pytest.raises(HttpResponseError) as excinfo:
        auth.role_assignments.create(rg_id(emulator), str(uuid.uuid4()), bad_role)
    assert excinfo.value.error.code == "RoleDefinitionDoesNotExist"


def test_reader_can_read_the_resource_group_but_not_write_or_assign(emulator, issuers):
    identity = create_identity(emulator, "id-reader", issuers.issuer())
    assign(emulator, rg_id(emulator), identity.principal_id, "Reader")
    credential = assertion_credential(emulator, identity.client_id, issuers.token(iss=issuers.issuer()))
    resources = arm_client(ResourceManagementClient, emulator, credential)
    assert resources.resource_groups.get(emulator.seed["resource_group"]).name == emulator.seed["resource_group"]
    with pytest.raises(HttpResponseError) as excinfo:
        resources.resource_groups.create_or_update(emulator.seed["resource_group"], {"location": "eastus"})
    assert excinfo.value.status_code == 403 and excinfo.value.error.code == "AuthorizationFailed"
    assert "Microsoft.Resources/subscriptions/resourceGroups/write" in excinfo.value.error.message
    auth = arm_client(AuthorizationManagementClient, emulator, credential)
    with pytest.raises(HttpResponseError) as excinfo:
        auth.role_assignments.create(
            rg_id(emulator),
            str(uuid.uuid4()),
            {"role_definition_id": role_definition_id(emulator, "Owner"), "principal_id": identity.principal_id},
        )
    assert excinfo.value.error.code == "AuthorizationFailed"
    assert f"object id '{identity.principal_id}'" in excinfo.value.error.message


# ---------------------------------------------------------------------------------------------- Key Vault (management)
def test_vaults_as_seeded(emulator):
    kv = arm_client(KeyVaultManagementClient, emulator, deployer(emulator))
    rbac = kv.vaults.get(emulator.seed["resource_group"], emulator.seed["rbac_vault"])
    policy = kv.vaults.get(emulator.seed["resource_group"], emulator.seed["policy_vault"])
    assert rbac.properties.enable_rbac_authorization is True and rbac.properties.access_policies == []
    assert rbac.properties.vault_uri == emulator.vault_url(emulator.seed["rbac_vault"])
    assert policy.properties.enable_rbac_authorization is False
    assert [p.object_id for p in policy.properties.access_policies] == [emulator.seed["deployer_object_id"]]
    names = sorted(v.name for v in kv.vaults.list_by_resource_group(emulator.seed["resource_group"]))
    assert names == sorted([emulator.seed["rbac_vault"], emulator.seed["policy_vault"]])
    with pytest.raises(ResourceNotFoundError):
        kv.vaults.get(emulator.seed["resource_group"], "kv-missing")


def test_vault_create_then_update_access_policy_add_and_remove(emulator):
    kv = arm_client(KeyVaultManagementClient, emulator, deployer(emulator))
    group, tenant, other, newcomer = (
        emulator.seed["resource_group"],
        emulator.config.tenant_id,
        str(uuid.uuid4()),
        str(uuid.uuid4()),
    )

    def entry(object_id: str, *secrets: str) -> kv_models.AccessPolicyEntry:
        return kv_models.AccessPolicyEntry(
            tenant_id=tenant, object_id=object_id, permissions=kv_models.Permissions(secrets=list(secrets))
        )

    parameters = kv_models.VaultCreateOrUpdateParameters(
        location="eastus",
        properties=kv_models.VaultProperties(
            tenant_id=tenant, sku=kv_models.Sku(family="A", name="standard"), access_policies=[entry(other, "get")]
        ),
    )
    vault = kv.vaults.begin_create_or_update(group, "kv-made-here", parameters).result()
    assert vault.properties.provisioning_state == "Succeeded" and vault.properties.enable_soft_delete is True
    assert vault.properties.vault_uri == emulator.vault_url("kv-made-here")

    def policies() -> dict[str, list[str]]:
        found = kv.vaults.get(group, "kv-made-here").properties.access_policies
        return {p.object_id: sorted(p.permissions.secrets or []) for p in found}

    def change(kind: str, *entries: kv_models.AccessPolicyEntry) -> None:
        body = kv_models.VaultAccessPolicyParameters(
            properties=kv_models.VaultAccessPolicyProperties(access_policies=list(entries))
        )
        kv.vaults.update_access_policy(group, "kv-made-here", kind, body)

    change("add", entry(newcomer, "get", "list"), entry(other, "list"))
    assert policies() == {other: ["get", "list"], newcomer: ["get", "list"]}
    change("remove", entry(newcomer, "list"))
    assert policies() == {other: ["get", "list"], newcomer: ["get"]}
    change("replace", entry(other, "set"))
    assert policies() == {other: ["set"], newcomer: ["get"]}
    change("remove", entry(newcomer, "get"))
    assert policies() == {other: ["set"]}
    arm_client(ResourceManagementClient, emulator, deployer(emulator)).resource_groups.create_or_update(
        "rg-other", {"location": "eastus"}
    )
    with pytest.raises(HttpResponseError) as excinfo:  # vault names are global: one DNS name each
        kv.vaults.begin_create_or_update("rg-other", "kv-made-here", parameters).result()
    assert (excinfo.value.status_code, excinfo.value.error.code) == (409, "VaultAlreadyExists")


# ---------------------------------------------------------------------------------------------- Key Vault (secrets)
def test_deployer_reads_the_policy_vault_through_the_challenge(emulator):
    client = secret_client(emulator, emulator.vault_url(emulator.seed["policy_vault"]), deployer(emulator))
    secret = client.get_secret(emulator.seed["secret_name"])
    assert secret.value == emulator.seed["secret_value"]
    assert len(secret.properties.version) == 32
    again = client.set_secret(emulator.seed["secret_name"], "second")
    assert again.properties.version != secret.properties.version
    assert (
        client.get_secret(emulator.seed["secret_name"], secret.properties.version).value
        == emulator.seed["secret_value"]
    )
    assert [p.name for p in client.list_properties_of_secrets()] == [emulator.seed["secret_name"]]
    assert len(list(client.list_properties_of_secret_versions(emulator.seed["secret_name"]))) == 2
    with pytest.raises(ResourceNotFoundError) as excinfo:
        client.get_secret("nope")
    assert excinfo.value.error.code == "SecretNotFound"


def test_secret_list_pages_and_delete(emulator):
    client = secret_client(emulator, emulator.vault_url(emulator.seed["policy_vault"]), deployer(emulator))
    for index in range(4):
        client.set_secret(f"extra-{index}", "v")
    assert len(list(client.list_properties_of_secrets(max_page_size=2))) == 5
    deleted = client.begin_delete_secret("extra-0").result()
    assert deleted.recovery_id.endswith("/deletedsecrets/extra-0")
    with pytest.raises(HttpResponseError) as excinfo:
        client.set_secret("extra-0", "again")
    assert excinfo.value.status_code == 409


def test_rbac_vault_denies_then_allows_after_propagation(emulator, issuers):
    identity = create_identity(emulator, "id-kv", issuers.issuer())
    credential = assertion_credential(emulator, identity.client_id, issuers.token(iss=issuers.issuer()))
    vault_url = emulator.vault_url(emulator.seed["rbac_vault"])
    client = secret_client(emulator, vault_url, credential)
    with pytest.raises(HttpResponseError) as excinfo:
        client.get_secret(emulator.seed["secret_name"])
    assert excinfo.value.status_code == 403
    response = excinfo.value.response
    body = response.json()["error"]
    assert (body["code"], body["innererror"]["code"]) == ("Forbidden", "ForbiddenByRbac")
    assert (
        f"oid={identity.principal_id}" in body["message"]
        and "Microsoft.KeyVault/vaults/secrets/getSecret/action" in body["message"]
    )
    assert response.headers["x-ms-keyvault-region"] == "eastus"
    emulator.state.update_settings({"role_propagation_seconds": 3600})
    vault_scope = f"{rg_id(emulator)}/providers/Microsoft.KeyVault/vaults/{emulator.seed['rbac_vault']}"
    assign(emulator, vault_scope, identity.principal_id, "Key Vault Secrets User")
    with pytest.raises(HttpResponseError) as excinfo:
        client.get_secret(emulator.seed["secret_name"])
    assert excinfo.value.status_code == 403  # assigned, not yet effective
    emulator.state.update_settings({"role_propagation_seconds": 0})
    assert client.get_secret(emulator.seed["secret_name"]).value == emulator.seed["secret_value"]
    with pytest.raises(HttpResponseError) as excinfo:
        client.set_secret("not-allowed", "x")  # Secrets User reads only
    assert "setSecret/action" in excinfo.value.response.json()["error"]["message"]


def test_policy_vault_denies_then_allows_with_an_access_policy(emulator, issuers):
    identity = create_identity(emulator, "id-policy", issuers.issuer())
    credential = assertion_credential(emulator, identity.client_id, issuers.token(iss=issuers.issuer()))
    client = secret_client(emulator, emulator.vault_url(emulator.seed["policy_vault"]), credential)
    with pytest.raises(HttpResponseError) as excinfo:
        client.get_secret(emulator.seed["secret_name"])
    body = excinfo.value.response.json()["error"]
    assert (excinfo.value.status_code, body["code"], body["innererror"]["code"]) == (403, "Forbidden", "AccessDenied")
    assert "does not have secrets get permission on key vault" in body["message"]
    kv = arm_client(KeyVaultManagementClient, emulator, deployer(emulator))
    kv.vaults.update_access_policy(
        emulator.seed["resource_group"],
        emulator.seed["policy_vault"],
        "add",
        {
            "properties": {
                "accessPolicies": [
                    {
                        "tenantId": emulator.config.tenant_id,
                        "objectId": identity.principal_id,
                        "permissions": {"secrets": ["get"]},
                    }
                ]
            }
        },
    )
    assert client.get_secret(emulator.seed["secret_name"]).value == emulator.seed["secret_value"]
    policies = kv.vaults.get(emulator.seed["resource_group"], emulator.seed["policy_vault"]).properties.access_policies
    assert {p.object_id for p in policies} == {emulator.seed["deployer_object_id"], identity.principal_id}
