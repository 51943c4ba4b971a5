"""wid_verify through main(), with only the SDK boundary faked: the kubernetes CoreV1Api, the MSI and AKS clients
and azure-identity's ClientAssertionCredential. The lab integration tests drive the real chain."""

from __future__ import annotations

import base64
import json
import types
import typing as t

import pytest
from azure.core.exceptions import ClientAuthenticationError
from kubernetes import client as k8s

from ansible_collections.aks.workload_identity.plugins.module_utils import azure_client, chain_verifier
from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import KNOWN_CLOUDS, AzureModule
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8sModule
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import ANNOTATION_CLIENT_ID
from ansible_collections.aks.workload_identity.plugins.modules import wid_verify
from tests.unit.conftest import Pager, module_args

ISSUER = "https://westeurope.oic.prod-aks.azure.com/tenant/cluster/"
CLIENT = "6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
SECRET = "deployer-secret-that-must-never-show"
DEPLOYER = "3f2a9c1b-0d4e-4c6b-9a8f-1e2d3c4b5a69"  # the client ID the module authenticates with (a GUID)


def jwt(claims: dict[str, t.Any]) -> str:
    def part(document: dict[str, t.Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


TOKEN = jwt(
    {
        "iss": ISSUER,
        "sub": "system:serviceaccount:orders:orders-api",
        "aud": ["api://AzureADTokenExchange"],
        "exp": 2000000000,
    }
)


class FakeCore:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def read_namespaced_service_account(self, name: str, namespace: str) -> t.Any:
        self.calls.append("read")
        metadata = k8s.V1ObjectMeta(annotations={ANNOTATION_CLIENT_ID: CLIENT}, name=name, namespace=namespace)
        return k8s.V1ServiceAccount(metadata=metadata)

    def create_namespaced_service_account_token(self, name: str, namespace: str, body: t.Any) -> t.Any:
        self.calls.append("token")
        assert body["spec"] == {"audiences": ["api://AzureADTokenExchange"], "expirationSeconds": 600}
        return types.SimpleNamespace(status=types.SimpleNamespace(token=TOKEN))


class FakeMsi:
    def __init__(self, credentials: list[dict[str, t.Any]]) -> None:
        identity = {
            "id": f"/subscriptions/{SUBSCRIPTION}/resourcegroups/rg-apps/providers/Microsoft.ManagedIdentity/"
            "userAssignedIdentities/id-orders",
            "name": "id-orders",
            "properties": {"clientId": CLIENT, "principalId": "p1", "tenantId": TENANT},
        }
        self.user_assigned_identities = types.SimpleNamespace(get=lambda rg, name: identity)
        self.federated_identity_credentials = types.SimpleNamespace(list=lambda rg, name: Pager(credentials))


class FakeCredential:
    """ClientAssertionCredential: Entra's answer is ``answer`` (a message raises ClientAuthenticationError)."""

    answer: str | None = None
    assertions: list[str] = []

    def __init__(self, tenant_id: str, client_id: str, func: t.Callable[[], str], **kwargs: t.Any) -> None:
        assert (tenant_id, client_id) == (TENANT, CLIENT)
        self.func = func

    def get_token(self, scope: str) -> t.Any:
        FakeCredential.assertions.append(self.func())
        if self.answer:
            raise ClientAuthenticationError(message=self.answer)
        return types.SimpleNamespace(token="access-token", expires_on=0)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch):
    core = FakeCore()
    cluster = types.SimpleNamespace(
        id="c",
        name="aks-prod",
        location="westeurope",
        kubernetes_version="1.33",
        current_kubernetes_version="1.33",
        provisioning_state="Succeeded",
        oidc_issuer_profile=types.SimpleNamespace(enabled=True, issuer_url=ISSUER),
        security_profile=None,
        tags={},
        agent_pool_profiles=[],
    )
    credentials = [
        {
            "name": "fic",
            "properties": {
                "issuer": ISSUER,
                "subject": "system:serviceaccount:orders:orders-api",
                "audiences": ["api://AzureADTokenExchange"],
            },
        }
    ]
    state = types.SimpleNamespace(core=core, credentials=credentials)
    monkeypatch.setattr(K8sModule, "core_v1", property(lambda self: core))
    monkeypatch.setattr(AzureModule, "cloud", property(lambda self: KNOWN_CLOUDS["AzureCloud"]))
    monkeypatch.setattr(AzureModule, "msi", property(lambda self: FakeMsi(state.credentials)))
    aks = types.SimpleNamespace(managed_clusters=types.SimpleNamespace(get=lambda rg, name: cluster))
    monkeypatch.setattr(AzureModule, "containerservice", property(lambda self: aks))
    monkeypatch.setattr(azure_client, "ClientAssertionCredential", FakeCredential)
    FakeCredential.answer, FakeCredential.assertions = None, []
    return state


def run(
    capsys: pytest.CaptureFixture[str], check_mode: bool = False, **overrides: t.Any
) -> tuple[dict[str, t.Any], str]:
    args: dict[str, t.Any] = {
        "namespace": "orders",
        "service_account": "orders-api",
        "cluster_resource_group": "rg-aks",
        "cluster_name": "aks-prod",
        "identity_resource_group": "rg-apps",
        "identity_name": "id-orders",
        "webhook_dry_run": False,
        "subscription_id": SUBSCRIPTION,
        "tenant": TENANT,
        "client_id": DEPLOYER,
        "secret": SECRET,
        "_ansible_check_mode": check_mode,
        **overrides,
    }
    args = {key: value for key, value in args.items() if value is not None}  # None: leave the option out
    with module_args(args), pytest.raises(SystemExit):
        wid_verify.main()
    out = capsys.readouterr().out
    return json.loads(out), out


def test_good_chain(world, capsys):
    result, out = run(capsys)
    assert result["passed"] and not result["changed"] and result["credential"]["name"] == "fic"
    assert FakeCredential.assertions == [TOKEN]  # the minted token is the assertion
    assert TOKEN not in out and SECRET not in out


def test_check_mode_mints_no_token_and_predicts_the_mismatch(world, capsys):
    world.credentials[0]["properties"]["issuer"] = ISSUER.rstrip("/")
    result, _out = run(capsys, check_mode=True, fail_on_error=False)
    assert world.core.calls == ["read"] and FakeCredential.assertions == []
    assert result["failed_step"] == "credential" and result["error_code"] == "AADSTS700211"
    assert "trailing slash" in result["cause"]
    assert [s["status"] for s in result["steps"] if s["name"] in ("token", "exchange", "access")] == ["skipped"] * 3


def test_refusal_echoing_the_token_is_redacted_and_reported_as_propagation(world, capsys):
    FakeCredential.answer = f"AADSTS700211: No matching federated identity record found for assertion {TOKEN}."
    result, out = run(capsys, propagation_timeout=0)
    assert result["failed"] and result["failed_step"] == "exchange" and result["error_code"] == "AADSTS700211"
    assert "has not propagated" in result["cause"]
    assert TOKEN not in out and SECRET not in out


def test_bad_input_fails_before_any_request(world, capsys):
    result, _out = run(capsys, token_expiration=60)
    assert result["failed"] and "token_expiration: must be between 600 and 4294967296 seconds" in result["msg"]
    assert world.core.calls == []


SUBSCRIPTION_ID = f"/subscriptions/{SUBSCRIPTION}"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"token_expiration": 2**32 + 1}, "token_expiration: must be between 600 and"),
        ({"propagation_timeout": 10**12}, "propagation_timeout: must be between 0 and 86400 seconds"),
        ({"propagation_timeout": -1}, "propagation_timeout: must be between 0 and 86400 seconds"),
        ({"retry_interval": 0}, "retry_interval: must be between 1 and 30 seconds"),
        ({"retry_interval": 31}, "retry_interval: must be between 1 and 30 seconds"),
        ({"audience": "x" * 601}, "audience: must be at most 600 characters"),
        ({"audience": "api://*"}, "audience: wildcards are not supported"),
        ({"scope": "https://vault.azure.net"}, "scope: must be a resource followed by /.default"),
        ({"scope": "a/.default b/.default"}, "scope: must be one scope, without spaces"),
        ({"cluster_name": "-aks-", "cluster_resource_group": "rg"}, "cluster_name: must be 1-63"),
        ({"cluster_resource_group": "rg?"}, "cluster_resource_group: 'rg?' is not a valid resource group name"),
        ({"identity_name": "a/b"}, "identity_name: must be 3-128"),
        ({"identity_resource_group": "rg/x"}, "identity_resource_group: 'rg/x' is not a valid"),
        (
            {"issuer_url": "http://issuer/", "cluster_name": None, "cluster_resource_group": None},
            "issuer_url: must be an https URL",
        ),
        ({"keyvault": "kv_bad", "secret_name": "s"}, "keyvault: 'kv_bad' is not a valid key vault name"),
        ({"keyvault": "https://kv.vault.azure.net/x", "secret_name": "s"}, "keyvault: must be the vault's https URL"),
        ({"keyvault": "kv-orders", "secret_name": "a_b"}, "secret_name: must be 1-127 letters"),
        ({"arm_resource_id": "/subscriptions/x/resourceGroups/rg"}, "arm_resource_id (subscription): must be a GUID"),
        ({"arm_resource_id": f"{SUBSCRIPTION_ID}/resourceGroups/rg?x"}, "arm_resource_id: must be an Azure resource"),
        (
            {"arm_resource_id": f"{SUBSCRIPTION_ID}/providers/Microsoft.KeyVault/vaults/kv", "arm_api_version": "v1"},
            "arm_api_version: must be an ARM api-version",
        ),
        ({"arm_api_version": "2023-01-31"}, "arm_api_version: only applies with arm_resource_id"),
        ({"return_secret_value": True}, "return_secret_value: only applies with keyvault and secret_name"),
    ],
)
def test_option_rules_fail_before_any_request(world, capsys, overrides, expected):
    result, _out = run(capsys, **overrides)
    assert result["failed"] and result["msg"].startswith("Invalid input: ")
    assert any(error.startswith(expected) for error in result["errors"]), result["errors"]
    assert world.core.calls == []


def mutated_pod(env: list[str], audience: str | None) -> dict[str, t.Any]:
    """A pod as the azure-workload-identity webhook returns it from a dry-run create (pkg/webhook/webhook.go)."""
    volumes = []
    if audience:
        token = {"audience": audience, "expirationSeconds": 3600, "path": "azure-identity-token"}
        volumes.append({"name": "azure-identity-token", "projected": {"sources": [{"serviceAccountToken": token}]}})
    container = {"name": "wid-verify", "env": [{"name": name, "value": "x"} for name in [*env, "OTHER"]]}
    return {"spec": {"containers": [container], "volumes": volumes}}


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        (
            mutated_pod(list(chain_verifier.INJECTED_ENV), "api://AzureADTokenExchange"),
            (list(chain_verifier.INJECTED_ENV), True),
        ),
        (mutated_pod(["AZURE_CLIENT_ID"], "api://other"), (["AZURE_CLIENT_ID"], False)),
        ({"spec": {"containers": [{"name": "c"}]}}, ([], False)),
    ],
    ids=["mutated", "partial", "untouched"],
)
def test_injection_reads_env_names_and_the_token_volume(pod, expected):
    assert chain_verifier.injected_settings(pod, "api://AzureADTokenExchange") == expected
