"""Bad input and missing parents of the Kubernetes-side modules, against the lab's real kube-apiserver and Azure
emulator, each module run in this process (tests/integration/inprocess.py) so that hundreds of cases stay fast.

- A value Kubernetes, the webhook, Entra or Key Vault would refuse, or that would not mean what was written, is
  refused before the first request (to Azure or Kubernetes, reads included), naming the option and the rule,
  without a traceback.
- A parent that is missing (a namespace, a ServiceAccount, a workload) is found by reading and the module fails
  naming the option, with no write of any kind (not even a server-side dry run), in check mode too.
- wid_verify on a ServiceAccount that does not exist still reports the chain, and requests no token for it.
"""

from __future__ import annotations

import typing as t
import uuid

import pytest

from tests.integration.inprocess import run_inprocess

pytestmark = pytest.mark.lab

GUID = "6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c"
SUBSCRIPTION = "00000000-0000-4000-8000-00000000a11b"
ISSUER = "https://issuer.example/tenant/cluster/"
MISSING = f"wid-missing-{uuid.uuid4().hex[:8]}"  # a namespace (and object names) that never exist

BASES: dict[str, dict[str, t.Any]] = {
    "wid_namespace": {"name": "orders"},
    "wid_service_account": {"namespace": "default", "name": "orders-api", "client_id": GUID},
    "wid_settings_configmap": {"namespace": "default", "name": "orders-settings", "client_id": GUID},
    "wid_workload_patch": {
        "namespace": "default",
        "kind": "Deployment",
        "name": "orders-api",
        "service_account": "orders-api",
    },
    "wid_verify_pod": {
        "namespace": "default",
        "service_account": "default",
        "keyvault_url": "https://kv-orders.vault.azure.net/",
        "secret_name": "app-secret",
    },
    "wid_verify": {"namespace": "default", "service_account": "default", "issuer_url": ISSUER},
    "wid_info": {"namespaces": ["default"]},
}


def case(module: str, option: str, **overrides: t.Any) -> t.Any:
    args = {**BASES[module], **overrides}
    label = "-".join(f"{key}={str(value)[:24]}" for key, value in overrides.items())
    return pytest.param(module, {k: v for k, v in args.items() if v is not None}, option, id=f"{module}-{label}")


INPUT_ERRORS = [
    # namespaces: RFC 1123 labels; the namespace's own name label is the API server's; waits bounded to a day
    case("wid_namespace", "name", name="a" * 64),
    case("wid_namespace", "name", name="Orders_1"),
    case("wid_namespace", "labels", labels={"kubernetes.io/metadata.name": "other"}),
    case("wid_namespace", "labels", labels={"team": "x" * 64}),
    case("wid_namespace", "labels", labels={"bad key!": "x"}),
    case("wid_namespace", "labels", labels={"team": {"nested": "x"}}),
    case("wid_namespace", "wait_timeout", state="absent", wait=True, wait_timeout=10**12),
    case("wid_namespace", "wait_timeout", wait_timeout=0),
    # ServiceAccounts: subdomain names, label and annotation rules, the webhook's token expiration range
    case("wid_service_account", "name", name="a" * 254),
    case("wid_service_account", "name", name="a/b"),
    case("wid_service_account", "namespace", namespace="a" * 64),
    case("wid_service_account", "client_id", client_id="not-a-guid"),
    case("wid_service_account", "tenant_id", tenant_id="contoso.onmicrosoft.com"),
    case("wid_service_account", "token_expiration", token_expiration=3599),
    case("wid_service_account", "token_expiration", token_expiration=86401),
    case("wid_service_account", "labels", labels={"team": 1}),
    case("wid_service_account", "labels", labels={"x" * 64: "a"}),
    case("wid_service_account", "annotations", annotations={"note": 5}),
    case("wid_service_account", "annotations", annotations={"Bad Key": "x"}),
    case("wid_service_account", "annotations", annotations={"big": "é" * (128 * 1024 + 1)}),
    case("wid_service_account", "annotations", annotations={"azure.workload.identity/client-id": GUID}),
    # ConfigMaps: subdomain names, IsConfigMapKey, string values, 1 MiB
    case("wid_settings_configmap", "name", name="Orders_Settings"),
    case("wid_settings_configmap", "data", data={"bad key": "x"}),
    case("wid_settings_configmap", "data", data={"..": "x"}),
    case("wid_settings_configmap", "data", data={"k" * 254: "x"}),
    case("wid_settings_configmap", "data", data={"PORT": 8080}),
    case("wid_settings_configmap", "data", data={"NESTED": {"a": "b"}}),
    case("wid_settings_configmap", "data", data={"BIG": "é" * (512 * 1024 + 1)}),
    case("wid_settings_configmap", "data", data={"AZURE_CLIENT_ID": GUID}),
    case("wid_settings_configmap", "tenant_id", tenant_id="nope"),
    case("wid_settings_configmap", "labels", labels={"team": "a b"}),
    # workloads: subdomain names (CronJob at most 52), the proxy sidecar port only with the sidecar
    case("wid_workload_patch", "name", name="a/b"),
    case("wid_workload_patch", "name", name="a?b"),
    case("wid_workload_patch", "name", name=".."),
    case("wid_workload_patch", "name", name="ÄÖ"),
    case("wid_workload_patch", "name", kind="CronJob", name="n" * 53),
    case("wid_workload_patch", "service_account", service_account="Orders_API"),
    case("wid_workload_patch", "proxy_sidecar_port", proxy_sidecar=True, proxy_sidecar_port=65536),
    case("wid_workload_patch", "proxy_sidecar_port", proxy_sidecar_port=8001),
    case("wid_workload_patch", "proxy_sidecar_port", proxy_sidecar=False, proxy_sidecar_port=8001),
    # the verification pod: image references, vault URLs, Key Vault names, bounded waits
    case("wid_verify_pod", "image", image="ÄÖ"),
    case("wid_verify_pod", "image", image="a?b"),
    case("wid_verify_pod", "image", image=".."),
    case("wid_verify_pod", "image", image="x" * 700),
    case("wid_verify_pod", "keyvault_url", keyvault_url="kv-orders"),
    case("wid_verify_pod", "keyvault_url", keyvault_url="http://kv-orders.vault.azure.net/"),
    case("wid_verify_pod", "keyvault_url", keyvault_url="https://kv-orders.vault.azure.net/secrets/app"),
    case("wid_verify_pod", "keyvault_url", keyvault_url="https://kv-orders.vault.azure.net/?x=1"),
    case("wid_verify_pod", "secret_name", secret_name="s" * 128),
    case("wid_verify_pod", "secret_name", secret_name="app_secret"),
    case("wid_verify_pod", "timeout", timeout=10**12),
    case("wid_verify_pod", "timeout", timeout=0),
    case("wid_verify_pod", "service_account", service_account="Default"),
    # the chain proof: TokenRequest range, Entra's claim and scope rules, ARM shapes, references, bounds
    case("wid_verify", "token_expiration", token_expiration=599),
    case("wid_verify", "token_expiration", token_expiration=10**12),
    case("wid_verify", "audience", audience="x" * 700),
    case("wid_verify", "audience", audience="api://*"),
    case("wid_verify", "scope", scope="https://vault.azure.net"),
    case("wid_verify", "scope", scope="a/.default b/.default"),
    case("wid_verify", "issuer_url", issuer_url="http://issuer.example/"),
    case("wid_verify", "issuer_url", issuer_url="a/b"),
    case("wid_verify", "identity_client_id", identity_client_id="nope"),
    case("wid_verify", "tenant_id", tenant_id="nope"),
    case("wid_verify", "identity_name", identity_resource_group="rg-apps", identity_name="a/b"),
    case("wid_verify", "identity_resource_group", identity_resource_group="rg?", identity_name="id-orders"),
    case("wid_verify", "cluster_name", issuer_url=None, cluster_resource_group="rg", cluster_name="-aks-"),
    case("wid_verify", "keyvault", keyvault="kv_orders", secret_name="app-secret"),
    case("wid_verify", "keyvault", keyvault="https://kv.vault.azure.net/x", secret_name="app-secret"),
    case("wid_verify", "secret_name", keyvault="kv-orders", secret_name="s" * 128),
    case("wid_verify", "arm_resource_id", arm_resource_id="/subscriptions/x/resourceGroups/rg"),
    case("wid_verify", "arm_resource_id", arm_resource_id=f"/subscriptions/{SUBSCRIPTION}/resourceGroups/r g"),
    case("wid_verify", "arm_api_version", arm_resource_id=f"/subscriptions/{SUBSCRIPTION}", arm_api_version="v1"),
    case("wid_verify", "arm_api_version", arm_api_version="2023-01-31"),
    case("wid_verify", "return_secret_value", return_secret_value=True),
    case("wid_verify", "propagation_timeout", propagation_timeout=10**12),
    case("wid_verify", "retry_interval", retry_interval=0),
    case("wid_verify", "retry_interval", retry_interval=10**12),
    # the audit: valid, unrepeated list entries and the threshold's range
    case("wid_info", "clusters[0].resource_group", clusters=[{"resource_group": "a/b", "name": "aks"}]),
    case("wid_info", "clusters[0].name", clusters=[{"resource_group": "rg", "name": "ÄÖ"}]),
    case(
        "wid_info",
        "clusters[1]",
        clusters=[{"resource_group": "rg", "name": "a"}, {"resource_group": "RG", "name": "a"}],
    ),
    case("wid_info", "issuer_urls[0]", issuer_urls=["http://issuer.example/"]),
    case("wid_info", "issuer_urls[1]", issuer_urls=[ISSUER, ISSUER]),
    case("wid_info", "identity_resource_groups[0]", identity_resource_groups=["rg?"]),
    case("wid_info", "identity_resource_groups[1]", identity_resource_groups=["rg", "RG"]),
    case("wid_info", "namespaces[1]", namespaces=["default", "default"]),
    case("wid_info", "namespaces[0]", namespaces=["Not_A_Namespace"]),
    case("wid_info", "credential_warning_threshold", credential_warning_threshold=21),
    case("wid_info", "credential_warning_threshold", credential_warning_threshold=0),
]


def names(error: str, option: str) -> bool:
    """Whether an "option: rule" message is about ``option`` (or one of its keys: ``labels.team``)."""
    return any(error.startswith(option + mark) for mark in (":", ".", " ("))


@pytest.mark.parametrize(("module", "args", "option"), INPUT_ERRORS)
def test_bad_input_is_refused_before_any_request(lab, module, args, option):
    probed = run_inprocess(lab, module, args)
    assert probed.failed, probed.result
    assert probed.msg.startswith("Invalid input: "), probed.msg
    assert any(names(error, option) for error in probed.result["errors"]), probed.result["errors"]
    assert "Traceback" not in probed.msg
    assert probed.requests == []


MISSING_PARENTS = [
    pytest.param(
        "wid_service_account",
        {"namespace": MISSING, "name": "orders-api", "client_id": GUID},
        f"namespace: namespace '{MISSING}' does not exist; set create_namespace: true or create it first",
        id="service-account-in-a-missing-namespace",
    ),
    pytest.param(
        "wid_settings_configmap",
        {"namespace": MISSING, "name": "orders-settings", "client_id": GUID},
        f"namespace: namespace '{MISSING}' does not exist; set create_namespace: true or create it first",
        id="configmap-in-a-missing-namespace",
    ),
    pytest.param(
        "wid_workload_patch",
        {"namespace": "default", "kind": "StatefulSet", "name": MISSING, "service_account": "orders-api"},
        f"name: StatefulSet 'default/{MISSING}': it does not exist",
        id="missing-workload",
    ),
    pytest.param(
        "wid_workload_patch",
        {"namespace": MISSING, "kind": "Deployment", "name": "orders-api", "service_account": "orders-api"},
        f"namespace: namespace '{MISSING}' does not exist",
        id="workload-in-a-missing-namespace",
    ),
    pytest.param(
        "wid_verify_pod",
        {**BASES["wid_verify_pod"], "service_account": MISSING},
        f"service_account: ServiceAccount 'default/{MISSING}' does not exist",
        id="verification-pod-for-a-missing-service-account",
    ),
    pytest.param(
        "wid_verify_pod",
        {**BASES["wid_verify_pod"], "namespace": MISSING},
        f"namespace: namespace '{MISSING}' does not exist",
        id="verification-pod-in-a-missing-namespace",
    ),
]


@pytest.mark.parametrize("check", [False, True], ids=["run", "check-mode"])
@pytest.mark.parametrize(("module", "args", "expected"), MISSING_PARENTS)
def test_missing_parent_is_found_by_reading_with_no_write(lab, module, args, expected, check):
    probed = run_inprocess(lab, module, args, check=check)
    assert probed.failed, probed.result
    assert probed.msg.startswith(expected), probed.msg
    assert "Traceback" not in probed.msg
    assert probed.writes == []
    # not even a server-side dry run: the parent is read before anything is sent to be written
    assert [f"{r['verb']} {r['uri']}" for r in probed.kube if r["verb"] not in ("get", "list", "watch")] == []
    assert probed.requests, "the parent must be found by reading"


@pytest.mark.parametrize("check", [False, True], ids=["run", "check-mode"])
@pytest.mark.parametrize("namespace", ["default", MISSING], ids=["missing-service-account", "missing-namespace"])
def test_verify_reports_a_missing_service_account_and_requests_no_token_for_it(lab, namespace, check):
    args = {
        "namespace": namespace,
        "service_account": MISSING,
        "issuer_url": ISSUER,
        "identity_client_id": str(uuid.uuid4()),
        "fail_on_error": False,
    }
    probed = run_inprocess(lab, "wid_verify", args, check=check)
    assert not probed.failed, probed.result
    assert probed.result["passed"] is False and probed.result["failed_step"] == "serviceaccount"
    assert f"ServiceAccount '{namespace}/{MISSING}' does not exist" in probed.result["cause"]
    steps = {step["name"]: step["status"] for step in probed.result["steps"]}
    assert steps["token"] == "skipped" and steps["webhook"] == "skipped"
    assert probed.writes == []
    assert not [r for r in probed.kube if r["verb"] not in ("get", "list", "watch")]  # no TokenRequest, no dry run
