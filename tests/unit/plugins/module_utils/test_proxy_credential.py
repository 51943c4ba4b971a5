"""azure_client.proxy_credential: azure-identity's own WorkloadIdentityCredential(enable_azure_proxy=True), given
the token proxy's settings as a pod gets them, against a real local TLS server playing the AKS token proxy. Nothing
of azure-identity is faked: the request, its TLS (the injected CA alone), the environment it reads, the private
files and their removal are real. Also the verifier's reading of what the webhook injects (chain_verifier)."""

from __future__ import annotations

import os
import stat
import threading
import urllib.parse
from pathlib import Path

import certifi
import pytest
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

from ansible_collections.aks.workload_identity.plugins.module_utils import azure_client, chain_verifier
from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import (
    KNOWN_CLOUDS,
    TokenProxy,
    proxy_credential,
    token_proxy_unsupported,
)

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c"
ASSERTION = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6b3JkZXJzOmFwaSJ9.c2ln"
SCOPE = "https://vault.azure.net/.default"
CLOUD = KNOWN_CLOUDS["AzureCloud"]
PROXY_NAMES = azure_client.TOKEN_PROXY_ENVIRONMENT


def token_route(server, status: int = 200, body: dict | None = None) -> None:
    server.json_route(
        f"/{TENANT}/oauth2/v2.0/token",
        body or {"access_token": "workload-access-token", "expires_in": 3600, "token_type": "Bearer"},
        status=status,
    )


def form(request) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(request.body.decode()))


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """Where tempfile puts the credential's private folder, to watch it come and go."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    return tmp_path


def test_the_token_request_goes_to_the_proxy_trusting_the_injected_ca_alone(https_server, pki, private_tmp):
    token_route(https_server)
    proxy = TokenProxy(https_server.url, "127.0.0.1", ca_file_content=pki.ca_file.read_text())
    # The module's own CA bundle is not the proxy's trust: the pod trusts the injected CA only.
    params = {"ca_bundle": certifi.where()}
    with proxy_credential(CLOUD, params, TENANT, CLIENT, ASSERTION, proxy) as credential:
        [folder] = list(private_tmp.glob("wid-verify-*"))
        files = sorted(p.name for p in folder.iterdir())
        assert files == ["ca.crt", "token"]
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.iterdir())
        assert all(os.environ.get(name, "") == "" for name in PROXY_NAMES)  # read by the constructor, then reset
        assert credential.get_token(SCOPE).token == "workload-access-token"
    assert list(private_tmp.glob("wid-verify-*")) == []  # the token and the CA are gone with the context
    [request] = https_server.requests
    sent = form(request)
    assert request.method == "POST" and request.path == f"/{TENANT}/oauth2/v2.0/token"
    assert (sent["client_id"], sent["client_assertion"], sent["scope"]) == (CLIENT, ASSERTION, SCOPE)
    assert sent["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def test_a_proxy_path_prefixes_the_token_path_and_ca_data_works_as_the_file(https_server, pki):
    token_route(https_server)
    https_server.routes[f"/proxy/{TENANT}/oauth2/v2.0/token"] = https_server.routes.pop(f"/{TENANT}/oauth2/v2.0/token")
    proxy = TokenProxy(f"{https_server.url}/proxy", "127.0.0.1", ca_data=pki.ca_file.read_text())
    with proxy_credential(CLOUD, {}, TENANT, CLIENT, ASSERTION, proxy) as credential:
        credential.get_token(SCOPE)
    assert https_server.requests[0].path == f"/proxy/{TENANT}/oauth2/v2.0/token"


def test_the_callers_environment_is_restored_and_never_leaks_into_the_credential(https_server, pki, monkeypatch):
    """A controller that has proxy variables of its own (say, it runs in a bound pod) keeps them; the credential sees
    only the injected ones (else azure-identity would refuse CA_FILE beside the controller's CA_DATA)."""
    token_route(https_server)
    monkeypatch.setenv("AZURE_KUBERNETES_CA_DATA", "the controller's own")
    monkeypatch.setenv("AZURE_KUBERNETES_TOKEN_PROXY", "https://controller.example")
    proxy = TokenProxy(https_server.url, "127.0.0.1", ca_file_content=pki.ca_file.read_text())
    with proxy_credential(CLOUD, {}, TENANT, CLIENT, ASSERTION, proxy) as credential:
        credential.get_token(SCOPE)
    assert os.environ["AZURE_KUBERNETES_CA_DATA"] == "the controller's own"
    assert os.environ["AZURE_KUBERNETES_TOKEN_PROXY"] == "https://controller.example"
    assert os.environ.get("AZURE_KUBERNETES_SNI_NAME", "") == os.environ.get("AZURE_KUBERNETES_CA_FILE", "") == ""


def test_credentials_built_in_parallel_keep_their_own_proxy(https_server, pki):
    """The environment is process-wide: constructions are serialised, so each credential gets its own settings."""
    token_route(https_server)
    ca = pki.ca_file.read_text()
    errors: list[BaseException] = []

    def build(index: int) -> None:
        endpoint = https_server.url if index % 2 else "https://127.0.0.1:1"
        try:
            with proxy_credential(CLOUD, {}, TENANT, CLIENT, ASSERTION, TokenProxy(endpoint, "127.0.0.1", ca)) as c:
                try:
                    c.get_token(SCOPE)
                    assert index % 2
                except ServiceRequestError:
                    assert not index % 2
        except BaseException as exc:  # reported below, from the main thread
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(https_server.requests) == 4


def test_other_threads_reading_the_environment_meanwhile_never_miss_a_key(https_server, pki):
    """requests reads the proxy settings by iterating os.environ on every request, in every thread: a setting deleted
    between its listing of the keys and its read of one raised KeyError there (seen with 25 proofs in parallel)."""
    token_route(https_server)
    ca = pki.ca_file.read_text()
    stop = threading.Event()
    failures: list[BaseException] = []

    def read_environment() -> None:
        while not stop.is_set():
            try:
                dict(os.environ.items())
            except KeyError as exc:
                failures.append(exc)

    readers = [threading.Thread(target=read_environment) for _reader in range(2)]
    for reader in readers:
        reader.start()
    try:
        for _round in range(200):
            with proxy_credential(CLOUD, {}, TENANT, CLIENT, ASSERTION, TokenProxy(https_server.url, "127.0.0.1", ca)):
                pass
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert failures == []


def test_an_unreachable_proxy_fails_fast_as_a_connection_error_not_a_tls_one(pki):
    proxy = TokenProxy("https://127.0.0.1:1", "127.0.0.1", ca_file_content=pki.ca_file.read_text())
    with (
        proxy_credential(CLOUD, {}, TENANT, CLIENT, ASSERTION, proxy) as credential,
        pytest.raises(ServiceRequestError) as refused,
    ):
        credential.get_token(SCOPE)
    assert not chain_verifier._tls_failure(refused.value)


def test_a_proxy_certificate_the_injected_ca_does_not_verify_is_a_tls_failure(https_server):
    token_route(https_server)
    proxy = TokenProxy(https_server.url, "127.0.0.1", ca_file_content=Path(certifi.where()).read_text())
    with (
        proxy_credential(CLOUD, {}, TENANT, CLIENT, ASSERTION, proxy) as credential,
        pytest.raises(ServiceRequestError) as refused,
    ):
        credential.get_token(SCOPE)
    assert chain_verifier._tls_failure(refused.value)
    assert https_server.requests == []


def test_the_proxys_refusal_reaches_the_caller_as_azure_identity_raises_it(https_server, pki):
    token_route(
        https_server,
        403,
        {"error": "unauthorized_client", "error_description": "The service account is not allowed to use it."},
    )
    proxy = TokenProxy(https_server.url, "127.0.0.1", ca_file_content=pki.ca_file.read_text())
    with (
        proxy_credential(CLOUD, {}, TENANT, CLIENT, ASSERTION, proxy) as credential,
        pytest.raises(ClientAuthenticationError, match="is not allowed to use it"),
    ):
        credential.get_token(SCOPE)


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        (TokenProxy("https://127.0.0.1:1", "x", ca_file_content="PEM", ca_data="PEM"), "Only one should be set"),
        (TokenProxy("http://127.0.0.1:1", "x", ca_data=None), "must use the 'https' scheme"),
        (TokenProxy("https://127.0.0.1:1", "x", ca_file_content="not a certificate"), "not a usable PEM certificate"),
    ],
    ids=["ca-file-and-data", "plain-http", "not-pem"],
)
def test_settings_a_pod_would_be_refused_with_are_refused_the_same(proxy, message, private_tmp):
    with pytest.raises(ValueError, match=message), proxy_credential(CLOUD, {}, TENANT, CLIENT, ASSERTION, proxy):
        pass
    assert list(private_tmp.glob("wid-verify-*")) == []
    assert all(os.environ.get(name, "") == "" for name in PROXY_NAMES)


@pytest.mark.parametrize(
    ("version", "supported"),
    [("1.27.0", True), ("1.27.1", True), ("2.0.0", True), ("1.27.0b1", False), ("1.26.0b2", False), (None, False)],
)
def test_the_proxy_needs_azure_identity_1_27(version, supported):
    reason = token_proxy_unsupported(version)
    assert (reason is None) is supported
    if not supported:
        assert "azure-identity >= 1.27.0" in reason


# --- What the webhook injects, read from the dry-run pod (chain_verifier.proxy_injection) ----------------------
MOUNT = "/var/run/secrets/azure/wi"


def bound_pod(*, ca_items: list[dict] | None = None, proxy: bool = True, audience: str = "api://AKSIdentityBinding"):
    """A pod as the azure-workload-identity webhook v1.6.0 mutates one annotated for an identity binding
    (pkg/webhook/webhook.go; tests/lab/test_webhook.py asserts the same layout from the real webhook)."""
    env = [
        {"name": "AZURE_CLIENT_ID", "value": CLIENT},
        {"name": "AZURE_TENANT_ID", "value": TENANT},
        {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": f"{MOUNT}/token/azure-identity-token"},
        {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"},
        {"name": "OTHER", "value": "x"},
    ]
    sources = [{"serviceAccountToken": {"audience": audience, "expirationSeconds": 3600, "path": "token/x"}}]
    if proxy:
        env += [
            {"name": "AZURE_KUBERNETES_TOKEN_PROXY", "value": "https://kubernetes.default.svc"},
            {"name": "AZURE_KUBERNETES_SNI_NAME", "value": "0123abcd"},
            {"name": "AZURE_KUBERNETES_CA_FILE", "value": f"{MOUNT}/ca-cert/ca.crt"},
        ]
        items = ca_items if ca_items is not None else [{"key": "ca.crt", "path": "ca-cert/ca.crt"}]
        sources.append({"configMap": {"name": "kube-root-ca.crt", "items": items, "optional": False}})
    container = {"name": "app", "env": env, "volumeMounts": [{"name": "wi", "mountPath": MOUNT, "readOnly": True}]}
    return {"spec": {"containers": [container], "volumes": [{"name": "wi", "projected": {"sources": sources}}]}}


def test_the_injection_gives_the_proxy_the_audience_and_the_cas_configmap():
    found = chain_verifier.proxy_injection(bound_pod())
    assert found["injected"] == [
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_AUTHORITY_HOST",
        "AZURE_KUBERNETES_TOKEN_PROXY",
        "AZURE_KUBERNETES_SNI_NAME",
        "AZURE_KUBERNETES_CA_FILE",
    ]
    assert found["env"]["AZURE_KUBERNETES_TOKEN_PROXY"] == "https://kubernetes.default.svc"
    assert found["audience"] == "api://AKSIdentityBinding"
    assert found["ca_source"] == {"kind": "configMap", "name": "kube-root-ca.crt", "key": "ca.crt"}


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        (bound_pod(ca_items=[]), {"kind": "configMap", "name": "kube-root-ca.crt", "key": "ca-cert/ca.crt"}),
        (bound_pod(ca_items=[{"key": "ca.crt", "path": "elsewhere.crt"}]), None),
    ],
    ids=["every-key-a-file", "not-projected-where-the-variable-points"],
)
def test_the_ca_source_is_what_provides_the_file_the_variable_names(pod, expected):
    assert chain_verifier.proxy_injection(pod)["ca_source"] == expected


def test_a_webhook_without_the_custom_token_endpoint_injects_the_usual_settings_only():
    found = chain_verifier.proxy_injection(bound_pod(proxy=False, audience="api://AzureADTokenExchange"))
    assert "AZURE_KUBERNETES_TOKEN_PROXY" not in found["env"] and found["ca_source"] is None
    assert found["audience"] == "api://AzureADTokenExchange"


def test_an_untouched_pod_has_nothing():
    found = chain_verifier.proxy_injection({"spec": {"containers": [{"name": "c"}]}})
    assert found == {"injected": [], "env": {}, "audience": None, "ca_source": None}
