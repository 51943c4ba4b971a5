"""k8s_client.py: connection resolution, option fallbacks, dry run, error mapping, the module base."""

from __future__ import annotations

import base64
import json
import os
import typing as t
import urllib.parse

import pytest
import yaml
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import MaxRetryError, NewConnectionError, SSLError

from ansible_collections.aks.workload_identity.plugins.module_utils import k8s_client
from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import AZURE_AUTH_ARGSPEC, AzureModule
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import (
    WorkloadIdentityError,
    retry_after_from_exception,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import (
    K8S_AUTH_ARGSPEC,
    K8sModule,
    build_configuration,
    is_k8s_not_found,
    k8s_call,
    k8s_error,
)
from tests.unit.conftest import failure, module_args

TOKEN = "eyJhbGciOiJSUzI1NiJ9.kube-token.sig"


def _params(**overrides: t.Any) -> dict[str, t.Any]:
    params = {name: spec.get("default") for name, spec in K8S_AUTH_ARGSPEC.items()}
    params.update(overrides)
    return params


def _bearer(configuration: t.Any) -> str | None:
    """The Authorization header the client will send (the api_key key name differs across client versions)."""
    return configuration.auth_settings().get("BearerToken", {}).get("value")


@pytest.fixture
def kubeconfig(tmp_path, pki) -> dict[str, t.Any]:
    """A kubeconfig with two clusters/contexts; the current one trusts the test CA, the other skips TLS checks."""
    ca_data = base64.b64encode(pki.ca_file.read_bytes()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "lab",
        "clusters": [
            {"name": "lab", "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority-data": ca_data}},
            {"name": "other", "cluster": {"server": "https://10.0.0.1:443", "insecure-skip-tls-verify": True}},
        ],
        "users": [
            {"name": "lab-admin", "user": {"token": "lab-token"}},
            {"name": "other-user", "user": {"token": "other-token"}},
        ],
        "contexts": [
            {"name": "lab", "context": {"cluster": "lab", "user": "lab-admin"}},
            {"name": "other", "context": {"cluster": "other", "user": "other-user"}},
        ],
    }


@pytest.fixture
def kubeconfig_file(tmp_path, kubeconfig) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    return str(path)


# --- option fallbacks -----------------------------------------------------------------------------------------------------
def _resolved(args: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
    with module_args(args or {}):
        return K8sModule().params


@pytest.mark.parametrize(
    ("option", "env", "args", "expected"),
    [
        ("kubeconfig", {"K8S_AUTH_KUBECONFIG": "/k"}, {}, "/k"),
        ("kubeconfig", {"K8S_AUTH_KUBECONFIG": "/k"}, {"kubeconfig": "/t"}, "/t"),
        ("context", {"K8S_AUTH_CONTEXT": "lab"}, {}, "lab"),
        ("host", {"K8S_AUTH_HOST": "https://api:6443"}, {}, "https://api:6443"),
        ("api_key", {"K8S_AUTH_API_KEY": TOKEN}, {}, TOKEN),
        ("client_cert", {"K8S_AUTH_CERT_FILE": "/c.pem"}, {}, "/c.pem"),
        ("client_key", {"K8S_AUTH_KEY_FILE": "/k.pem"}, {}, "/k.pem"),
        ("ca_cert", {"K8S_AUTH_SSL_CA_CERT": "/ca.pem"}, {}, "/ca.pem"),
        ("ca_cert", {"K8S_AUTH_SSL_CA_CERT": "/ca.pem"}, {"ssl_ca_cert": "/alias.pem"}, "/alias.pem"),
        ("validate_certs", {"K8S_AUTH_VERIFY_SSL": "false"}, {}, False),
        ("validate_certs", {"K8S_AUTH_VERIFY_SSL": "no"}, {"verify_ssl": True}, True),
        ("validate_certs", {}, {}, None),
        ("client_cert", {}, {"cert_file": "/alias-c.pem"}, "/alias-c.pem"),
        ("client_key", {}, {"key_file": "/alias-k.pem"}, "/alias-k.pem"),
    ],
)
def test_option_fallbacks_and_aliases(monkeypatch, option, env, args, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _resolved(args)[option] == expected


def test_token_from_the_environment_is_a_no_log_value(monkeypatch):
    monkeypatch.setenv("K8S_AUTH_API_KEY", TOKEN)
    with module_args({}):
        assert TOKEN in K8sModule().module.no_log_values


def test_kubeconfig_accepts_a_dictionary(kubeconfig):
    assert _resolved({"kubeconfig": kubeconfig})["kubeconfig"] == kubeconfig


# --- connection resolution -----------------------------------------------------------------------------------------------
def test_host_and_token_need_no_kubeconfig(tmp_path):
    environ = {"KUBECONFIG": str(tmp_path / "missing"), "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    params = _params(host="https://api.lab:6443/", api_key=TOKEN, ca_cert="/ca.pem", validate_certs=False)
    connection = build_configuration(params, environ)
    configuration = connection.configuration
    assert connection.source == "host https://api.lab:6443"
    assert configuration.host == "https://api.lab:6443"
    assert _bearer(configuration) == f"Bearer {TOKEN}"
    assert (configuration.ssl_ca_cert, configuration.verify_ssl) == ("/ca.pem", False)
    assert TOKEN not in connection.source


def test_host_and_client_certificate_need_no_kubeconfig():
    params = _params(host="https://api.lab:6443", client_cert="/c.pem", client_key="/k.pem")
    configuration = build_configuration(params, {}).configuration
    assert (configuration.cert_file, configuration.key_file) == ("/c.pem", "/k.pem")
    assert configuration.verify_ssl is True


def test_kubeconfig_current_context(kubeconfig_file):
    connection = build_configuration(_params(kubeconfig=kubeconfig_file), {})
    configuration = connection.configuration
    assert configuration.host == "https://127.0.0.1:6443"
    assert _bearer(configuration) == "Bearer lab-token"
    assert configuration.verify_ssl is True
    assert os.path.isfile(configuration.ssl_ca_cert)  # the CA data, written out by the client
    assert connection.source == f"kubeconfig {kubeconfig_file}"


def test_kubeconfig_named_context(kubeconfig_file):
    connection = build_configuration(_params(kubeconfig=kubeconfig_file, context="other"), {})
    configuration = connection.configuration
    assert (configuration.host, _bearer(configuration)) == ("https://10.0.0.1:443", "Bearer other-token")
    assert configuration.verify_ssl is False  # insecure-skip-tls-verify
    assert connection.source.endswith("(context other)")


def test_kubeconfig_dictionary(kubeconfig):
    connection = build_configuration(_params(kubeconfig=kubeconfig, context="other"), {})
    assert connection.configuration.host == "https://10.0.0.1:443"
    assert connection.source == "the kubeconfig dictionary (context other)"


def test_explicit_options_override_the_kubeconfig(kubeconfig_file):
    params = _params(
        kubeconfig=kubeconfig_file,
        context="other",
        host="https://override:6443",
        ca_cert="/ca.pem",
        validate_certs=True,
    )
    configuration = build_configuration(params, {}).configuration
    assert configuration.host == "https://override:6443"
    assert (configuration.ssl_ca_cert, configuration.verify_ssl) == ("/ca.pem", True)
    assert _bearer(configuration) == "Bearer other-token"


def test_api_key_overrides_a_refreshing_token(kubeconfig_file):
    params = _params(kubeconfig=kubeconfig_file, api_key=TOKEN)
    configuration = build_configuration(params, {}).configuration
    assert _bearer(configuration) == f"Bearer {TOKEN}" and configuration.refresh_api_key_hook is None


def test_context_alone_uses_the_default_kubeconfig(monkeypatch, tmp_path, kubeconfig):
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert build_configuration(_params(context="other"), {}).configuration.host == "https://10.0.0.1:443"


def test_plain_kubeconfig_variable(kubeconfig_file):
    connection = build_configuration(_params(), {"KUBECONFIG": kubeconfig_file})
    assert connection.configuration.host == "https://127.0.0.1:6443"
    assert connection.source == f"KUBECONFIG kubeconfig {kubeconfig_file}"


def test_kubeconfig_option_wins_over_the_plain_variable(kubeconfig_file, tmp_path):
    environ = {"KUBECONFIG": str(tmp_path / "missing")}
    assert (
        build_configuration(_params(kubeconfig=kubeconfig_file), environ).configuration.host == "https://127.0.0.1:6443"
    )


@pytest.fixture
def in_cluster(monkeypatch, tmp_path, pki) -> dict[str, str]:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("pod-token")
    ca.write_bytes(pki.ca_file.read_bytes())
    monkeypatch.setattr(k8s_client, "IN_CLUSTER_TOKEN_FILE", str(token))
    monkeypatch.setattr(k8s_client, "IN_CLUSTER_CA_FILE", str(ca))
    return {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def test_in_cluster_service_account(in_cluster):
    connection = build_configuration(_params(), in_cluster)
    configuration = connection.configuration
    assert configuration.host == "https://10.96.0.1:443"
    assert _bearer(configuration).lower() == "bearer pod-token"
    assert connection.source == "the in-cluster service account"


def test_plain_kubeconfig_variable_wins_over_in_cluster(in_cluster, kubeconfig_file):
    connection = build_configuration(_params(), {**in_cluster, "KUBECONFIG": kubeconfig_file})
    assert connection.configuration.host == "https://127.0.0.1:6443"


def test_in_cluster_without_a_token(in_cluster, monkeypatch, tmp_path):
    monkeypatch.setattr(k8s_client, "IN_CLUSTER_TOKEN_FILE", str(tmp_path / "absent"))
    with pytest.raises(WorkloadIdentityError, match="Failed to load the in-cluster service account: ConfigError"):
        build_configuration(_params(), in_cluster)


def test_nothing_configured_names_the_default_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(WorkloadIdentityError) as caught:
        build_configuration(_params(), {})
    assert caught.value.code == "ConfigError"
    assert caught.value.message.startswith("Failed to load the Kubernetes connection from kubeconfig ~/.kube/config")


def test_unknown_context(kubeconfig_file):
    with pytest.raises(WorkloadIdentityError, match=r"\(context nope\): ConfigError"):
        build_configuration(_params(kubeconfig=kubeconfig_file, context="nope"), {})


def test_kubeconfig_of_the_wrong_type():
    with pytest.raises(WorkloadIdentityError, match="must be a path or a dictionary, got list"):
        build_configuration(_params(kubeconfig=["a"]), {})


# --- error mapping -------------------------------------------------------------------------------------------------------
def _status(code: int, reason: str, message: str, **headers: str) -> ApiException:
    exc = ApiException(status=code, reason=f"HTTP {code}")
    exc.body = json.dumps(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code}
    )
    exc.headers = headers or None
    return exc


@pytest.mark.parametrize(
    ("status", "reason", "message"),
    [
        (404, "NotFound", 'serviceaccounts "sa" not found'),
        (409, "AlreadyExists", 'serviceaccounts "sa" already exists'),
        (409, "Conflict", "the object has been modified; please apply your changes to the latest version"),
        (422, "Invalid", 'ServiceAccount "Bad" is invalid: metadata.name: Invalid value: "Bad"'),
        (403, "Forbidden", 'serviceaccounts is forbidden: User "x" cannot create resource'),
    ],
)
def test_status_body_gives_reason_and_message(status, reason, message):
    error = k8s_error(_status(status, reason, message), "create ServiceAccount", "'ns/sa'")
    assert (error.code, error.status) == (reason, status)
    assert error.message == f"Failed to create ServiceAccount 'ns/sa': {reason}: {message}"
    assert is_k8s_not_found(error.original) is (status == 404)


def test_api_exception_without_a_status_body():
    exc = ApiException(status=502, reason="Bad Gateway")
    exc.body = "<html>proxy error</html>"
    error = k8s_error(exc, "read namespace", "'ns'")
    assert (error.code, error.status) == ("Bad Gateway", 502)
    assert error.message == "Failed to read namespace 'ns': Bad Gateway: <html>proxy error</html>"


def test_connection_errors():
    refused = MaxRetryError(None, "/api/v1/namespaces", NewConnectionError(None, "Connection refused"))
    error = k8s_error(refused, "read namespace", "'ns'")
    assert error.code == "ConnectionError" and "Connection refused" in error.message
    tls = MaxRetryError(None, "/api", SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"))
    assert "set ca_cert or K8S_AUTH_SSL_CA_CERT" in k8s_error(tls, "read namespace").message


def test_config_errors():
    error = k8s_error(ConfigException("Invalid kube-config file. No configuration found."), "load the connection")
    assert error.code == "ConfigError"


def test_throttled_api_server_exposes_retry_after():
    assert retry_after_from_exception(_status(429, "TooManyRequests", "slow down", **{"Retry-After": "2"})) == 2.0


def test_k8s_call_reads_none_when_not_found_and_names_the_target_otherwise():
    def read(exc: BaseException | None = None) -> dict[str, str]:
        if exc is not None:
            raise exc
        return {"name": "sa"}

    assert k8s_call(read, "read ServiceAccount", "'ns/sa'", none_if_not_found=True) == {"name": "sa"}
    gone = _status(404, "NotFound", "not found")
    assert k8s_call(lambda: read(gone), "read ServiceAccount", "'ns/sa'", none_if_not_found=True) is None
    with pytest.raises(WorkloadIdentityError, match="Failed to read ServiceAccount 'ns/sa': Forbidden: no"):
        k8s_call(lambda: read(_status(403, "Forbidden", "no")), "read ServiceAccount", "'ns/sa'")


# --- the module base -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("check_mode", "dry_run", "kwargs"), [(False, None, {}), (True, "All", {"dry_run": "All"})])
def test_dry_run_follows_check_mode(check_mode, dry_run, kwargs):
    with module_args({"_ansible_check_mode": check_mode}):
        k8s = K8sModule()
    assert (k8s.check_mode, k8s.dry_run, k8s.dry_run_kwargs()) == (check_mode, dry_run, kwargs)


def test_clients_are_lazy_and_share_one_api_client(kubeconfig_file):
    with module_args({"kubeconfig": kubeconfig_file}):
        k8s = K8sModule()
    assert k8s._connection is None and k8s._clients == {}
    core, apps, batch, rbac = k8s.core_v1, k8s.apps_v1, k8s.batch_v1, k8s.rbac_v1
    assert core is k8s.core_v1
    assert {id(api.api_client) for api in (core, apps, batch, rbac, k8s.authentication_v1)} == {id(k8s.api_client)}
    assert k8s.api_client.configuration.host == "https://127.0.0.1:6443"
    assert k8s.api_client.user_agent == "ansible-aks.workload_identity"


def test_shares_the_ansible_module_of_an_azure_module(kubeconfig_file):
    with module_args({"kubeconfig": kubeconfig_file, "subscription_id": "00000000-0000-0000-0000-000000000001"}):
        azure = AzureModule(K8S_AUTH_ARGSPEC)
        k8s = K8sModule(module=azure.module)
    assert k8s.module is azure.module and k8s.configuration.host == "https://127.0.0.1:6443"
    assert set(AZURE_AUTH_ARGSPEC).isdisjoint(K8S_AUTH_ARGSPEC)


def test_fail_masks_the_api_key(capsys):
    with module_args({"host": "https://api", "api_key": TOKEN}):
        k8s = K8sModule()
        result = failure(capsys, lambda: k8s.fail(WorkloadIdentityError(f"Failed: sent {TOKEN}", code="Unauthorized")))
    assert TOKEN not in json.dumps(result) and result["error_code"] == "Unauthorized"


# --- end to end over real HTTP: token auth, reads, server-side dry run ---------------------------------------------------
def test_reads_and_dry_run_against_an_api_server(http_server):
    sa_path = "/api/v1/namespaces/team-a/serviceaccounts"
    http_server.json_route(
        f"{sa_path}/workload",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "workload", "namespace": "team-a"}},
    )
    http_server.json_route(
        f"{sa_path}/absent",
        {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"},
        404,
    )
    http_server.json_route(
        f"{sa_path}?",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "new", "namespace": "team-a"}},
        201,
    )
    with module_args({"host": http_server.url, "api_key": TOKEN, "_ansible_check_mode": True}):
        k8s = K8sModule()
    core = k8s.core_v1
    assert core.read_namespaced_service_account("workload", "team-a").metadata.name == "workload"
    absent = k8s_call(lambda: core.read_namespaced_service_account("absent", "team-a"), "read", none_if_not_found=True)
    assert absent is None
    body = {"metadata": {"name": "new"}}
    core.create_namespaced_service_account("team-a", body, **k8s.dry_run_kwargs())
    create = next(r for r in http_server.requests if r.method == "POST")
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(create.path).query) == {"dryRun": ["All"]}
    assert {r.headers["authorization"] for r in http_server.requests} == {f"Bearer {TOKEN}"}


def test_delete_options_carry_dry_run_in_the_body_in_check_mode():
    """A DELETE with a body ignores ?dryRun=All on the API server: check mode must put it in the body."""
    assert k8s_client.delete_options(True, preconditions={"uid": "u1"}) == {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": {"uid": "u1"},
        "dryRun": ["All"],
    }
    assert "dryRun" not in k8s_client.delete_options(False)
