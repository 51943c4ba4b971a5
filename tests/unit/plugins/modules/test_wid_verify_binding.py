"""wid_verify with federation: identity_binding, through main(), with only the SDK boundary faked (the kubernetes
CoreV1Api and AuthorizationV1Api, the MSI and AKS clients); azure-identity is the real one, and the AKS token proxy
a real local TLS server (tests/unit/conftest.py), so the exchange goes the way a bound pod's does. The lab tests
(tests/integration/modules/test_wid_verify.py, test_workloads_verify_binding.py) run the real webhook, apiserver and
proxy."""

from __future__ import annotations

import base64
import json
import types
import typing as t
import urllib.parse

import pytest
from kubernetes import client as k8s

from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import KNOWN_CLOUDS, AzureModule
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8sModule
from ansible_collections.aks.workload_identity.plugins.modules import wid_verify
from tests.unit.conftest import Pager, RawResponse, module_args

CLIENT = "6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
DEPLOYER = "3f2a9c1b-0d4e-4c6b-9a8f-1e2d3c4b5a69"
IDENTITY_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourcegroups/rg-apps/providers/Microsoft.ManagedIdentity/"
    "userAssignedIdentities/id-orders"
)
BINDING_ISSUER = f"https://ib.oic.prod-aks.azure.com/{TENANT}/{CLIENT}"
AUDIENCE = "api://AKSIdentityBinding"
MOUNT = "/var/run/secrets/azure/wi"


def jwt(claims: dict[str, t.Any]) -> str:
    def part(document: dict[str, t.Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


TOKEN = jwt({"iss": "https://apiserver/", "sub": "system:serviceaccount:orders:orders-api", "aud": [AUDIENCE]})


class World:
    """What the fake SDK clients answer; tests change it."""

    def __init__(self, proxy_url: str, ca: str) -> None:
        self.calls: list[str] = []
        self.proxy_url, self.ca = proxy_url, ca
        self.inject_proxy = True
        self.configmap: dict[str, str] | None = {"ca.crt": ca}
        self.allowed = True
        self.bindings = [
            {
                "id": "/subscriptions/x/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/"
                "aks-prod/identityBindings/idorders",
                "name": "idorders",
                "properties": {
                    "managedIdentity": {"resourceId": IDENTITY_ID.replace("resourcegroups", "resourceGroups")},
                    "oidcIssuer": {"oidcIssuerUrl": BINDING_ISSUER},
                    "provisioningState": "Succeeded",
                },
            }
        ]
        self.credentials = [
            {
                "name": "aks-identity-binding",
                "properties": {
                    "issuer": BINDING_ISSUER,
                    "subject": CLIENT,
                    "audiences": ["api://AzureADTokenExchange"],
                },
            }
        ]

    # CoreV1Api
    api_client = k8s.ApiClient()

    def read_namespaced_service_account(self, name: str, namespace: str) -> t.Any:
        self.calls.append("sa.get")
        metadata = k8s.V1ObjectMeta(annotations={"azure.workload.identity/client-id": CLIENT}, name=name)
        return k8s.V1ServiceAccount(metadata=metadata)

    def create_namespaced_service_account_token(self, name: str, namespace: str, body: t.Any) -> t.Any:
        self.calls.append(f"token:{body['spec']['audiences'][0]}")
        return types.SimpleNamespace(status=types.SimpleNamespace(token=TOKEN))

    def create_namespaced_pod(self, namespace: str, body: t.Any, dry_run: str) -> dict[str, t.Any]:
        assert dry_run == "All"
        self.calls.append("pod.dry_run")
        assert body["metadata"]["annotations"] == {"azure.workload.identity/use-identity-binding": "true"}
        env = [
            {"name": "AZURE_CLIENT_ID", "value": CLIENT},
            {"name": "AZURE_TENANT_ID", "value": TENANT},
            {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": f"{MOUNT}/token/azure-identity-token"},
            {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"},
        ]
        audience = "api://AzureADTokenExchange"
        sources: list[dict[str, t.Any]] = []
        if self.inject_proxy:
            audience = AUDIENCE
            env += [
                {"name": "AZURE_KUBERNETES_TOKEN_PROXY", "value": self.proxy_url},
                {"name": "AZURE_KUBERNETES_SNI_NAME", "value": "127.0.0.1"},
                {"name": "AZURE_KUBERNETES_CA_FILE", "value": f"{MOUNT}/ca-cert/ca.crt"},
            ]
            items = [{"key": "ca.crt", "path": "ca-cert/ca.crt"}]
            sources.append({"configMap": {"name": "kube-root-ca.crt", "items": items}})
        sources.insert(0, {"serviceAccountToken": {"audience": audience, "path": "token/azure-identity-token"}})
        container = {**body["spec"]["containers"][0], "env": env, "volumeMounts": [{"name": "wi", "mountPath": MOUNT}]}
        return {**body, "spec": {**body["spec"], "containers": [container], "volumes": [
            {"name": "wi", "projected": {"sources": sources}}
        ]}}  # fmt: skip

    def read_namespaced_config_map(self, name: str, namespace: str) -> t.Any:
        self.calls.append(f"configmap.get:{name}")
        if self.configmap is None:
            raise k8s.ApiException(status=404, reason="Not Found")
        return k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=name, namespace=namespace), data=self.configmap)

    # AuthorizationV1Api
    def create_subject_access_review(self, body: dict[str, t.Any], _preload_content: bool) -> RawResponse:
        self.calls.append("subjectaccessreview")
        assert body["spec"]["resourceAttributes"] == {
            "group": "cid.wi.aks.azure.com",
            "resource": CLIENT,
            "verb": "use-managed-identity",
        }
        return RawResponse(json.dumps({"status": {"allowed": self.allowed}}).encode())


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, https_server, pki) -> World:
    state = World(https_server.url, pki.ca_file.read_text())
    identity = {
        "id": IDENTITY_ID,
        "name": "id-orders",
        "properties": {"clientId": CLIENT, "principalId": "p1", "tenantId": TENANT},
    }
    msi = types.SimpleNamespace(
        user_assigned_identities=types.SimpleNamespace(get=lambda rg, name: identity),
        federated_identity_credentials=types.SimpleNamespace(list=lambda rg, name: Pager(state.credentials)),
    )

    def list_bindings(rg: str, name: str) -> Pager:
        state.calls.append("bindings.list")
        return Pager(state.bindings)

    aks = types.SimpleNamespace(identity_bindings=types.SimpleNamespace(list_by_managed_cluster=list_bindings))
    monkeypatch.setattr(K8sModule, "core_v1", property(lambda self: state))
    monkeypatch.setattr(K8sModule, "authorization_v1", property(lambda self: state))
    monkeypatch.setattr(AzureModule, "cloud", property(lambda self: KNOWN_CLOUDS["AzureCloud"]))
    monkeypatch.setattr(AzureModule, "msi", property(lambda self: msi))
    monkeypatch.setattr(AzureModule, "containerservice", property(lambda self: aks))
    https_server.json_route(
        f"/{TENANT}/oauth2/v2.0/token", {"access_token": "workload-token", "expires_in": 3600, "token_type": "Bearer"}
    )
    return state


def run(capsys: pytest.CaptureFixture[str], check_mode: bool = False, **overrides: t.Any) -> dict[str, t.Any]:
    args: dict[str, t.Any] = {
        "namespace": "orders",
        "service_account": "orders-api",
        "federation": "identity_binding",
        "cluster_resource_group": "rg-aks",
        "cluster_name": "aks-prod",
        "identity_resource_group": "rg-apps",
        "identity_name": "id-orders",
        "subscription_id": SUBSCRIPTION,
        "tenant": TENANT,
        "client_id": DEPLOYER,
        "secret": "deployer-secret",
        "fail_on_error": False,
        "_ansible_check_mode": check_mode,
        **overrides,
    }
    with module_args({k: v for k, v in args.items() if v is not None}), pytest.raises(SystemExit):
        wid_verify.main()
    out = capsys.readouterr().out
    assert TOKEN not in out
    return json.loads(out)


def steps(result: dict[str, t.Any]) -> dict[str, str]:
    return {step["name"]: step["status"] for step in result["steps"]}


def test_a_bound_chain_is_proven_through_the_proxy(world, capsys, https_server):
    result = run(capsys)
    assert result["passed"], result
    assert steps(result) == {
        "serviceaccount": "passed",
        "cluster": "passed",
        "credential": "passed",
        "token": "passed",
        "exchange": "passed",
        "access": "skipped",
        "webhook": "passed",
    }
    assert result["federation"] == "identity_binding"
    assert result["binding"] == {"name": "idorders", "issuer_url": BINDING_ISSUER, "provisioning_state": "Succeeded"}
    assert result["webhook"]["token_audience"] == AUDIENCE and result["webhook"]["token_proxy"] == https_server.url
    assert result["expected"]["audience"] == AUDIENCE and result["credential"] is None
    # The webhook first (it gives the audience), then a token for that audience, and the CA from the ConfigMap.
    assert world.calls == [
        "sa.get",
        "bindings.list",
        "subjectaccessreview",
        "pod.dry_run",
        "configmap.get:kube-root-ca.crt",
        f"token:{AUDIENCE}",
    ]
    [request] = https_server.requests
    assert dict(urllib.parse.parse_qsl(request.body.decode()))["client_assertion"] == TOKEN


def test_an_unreachable_proxy_skips_the_exchange_and_the_access_with_the_reason(world, capsys):
    world.proxy_url = "https://127.0.0.1:1"
    result = run(capsys, keyvault="kv-orders", secret_name="app-secret")
    assert result["passed"] and result["failed_step"] is None
    details = {step["name"]: step for step in result["steps"]}
    assert details["exchange"]["status"] == details["access"]["status"] == "skipped"
    assert "cannot be reached from this host" in details["exchange"]["detail"]
    assert "served inside the cluster, so only a pod there can make this exchange" in details["exchange"]["detail"]
    assert details["access"]["detail"] == "no access token: the AKS token proxy cannot be reached from this host"


def test_a_webhook_not_configured_for_bindings_is_the_finding(world, capsys):
    world.inject_proxy = False
    result = run(capsys)
    assert result["failed_step"] == "webhook" and result["error_code"] == "WebhookNotConfiguredForIdentityBinding"
    assert "older than v1.6.0 or has no custom token endpoint configured for identity bindings" in result["cause"]
    assert steps(result)["token"] == "skipped" and "token:" not in " ".join(world.calls)


def test_a_missing_root_ca_configmap_means_the_pods_cannot_start(world, capsys):
    world.configmap = None
    result = run(capsys)
    assert result["failed_step"] == "webhook" and result["error_code"] == "ConfigMapNotFound"
    assert "ConfigMap 'kube-root-ca.crt'" in result["cause"] and "it does not exist" in result["cause"]


def test_check_mode_asks_the_review_and_dry_runs_but_mints_no_token(world, capsys):
    world.allowed = False
    world.bindings = []

    def not_found(name, _preload_content=False):
        raise k8s.ApiException(status=404)

    monkey_rbac = types.SimpleNamespace(read_cluster_role=not_found, read_cluster_role_binding=not_found)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(K8sModule, "rbac_v1", property(lambda self: monkey_rbac))
        result = run(capsys, check_mode=True)
    assert not result["passed"] and result["failed_step"] == "serviceaccount"
    assert result["error_code"] == "IdentityBindingAccessDenied"
    assert "does not exist and ClusterRoleBinding" in result["cause"]
    assert (
        "has no identity binding on AKS cluster 'aks-prod'"
        in next(s for s in result["steps"] if s["name"] == "cluster")["detail"]
    )
    assert not any(call.startswith("token:") for call in world.calls)
    assert "subjectaccessreview" in world.calls and "pod.dry_run" in world.calls


def test_audience_is_refused_in_binding_mode_and_the_cluster_is_required(world, capsys):
    result = run(capsys, audience="api://AKSIdentityBinding")
    assert result["failed"] and "audience: with federation identity_binding" in result["msg"]
    result = run(capsys, cluster_name=None, cluster_resource_group=None)
    assert result["failed"] and "federation is identity_binding" in result["msg"]
    assert world.calls == []
