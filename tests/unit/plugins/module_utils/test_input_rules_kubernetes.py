"""The input rules of the Kubernetes-side modules, one class of value per test, on the pure validators.

Each rule is the one Kubernetes, the webhook, Entra or Key Vault applies (the validators cite their sources); a
value breaking it must be refused before any request, naming the option and the rule. The module-level tests
(tests/unit/plugins/modules/) and tests/integration/modules/test_bad_inputs_kubernetes.py check that the modules
apply them before the first request.
"""

from __future__ import annotations

import typing as t

import pytest
import yaml

from ansible_collections.aks.workload_identity.plugins.module_utils import chain_verifier, pod_proof, trust_inventory
from ansible_collections.aks.workload_identity.plugins.module_utils import workload_identity as wi
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import namespace as ns
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import service_account as sa
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import settings_configmap as cm
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import workload_patch as wp

GUID = "6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


def rule_of(errors: list[str]) -> list[str]:
    """The option names the messages start with."""
    return [error.split(":", 1)[0] for error in errors]


# --- Kubernetes names ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["orders", "a", "o-1", "a" * 63])
def test_namespace_names_that_kubernetes_accepts(name):
    assert wi.validate_namespace(name) == []


@pytest.mark.parametrize("name", ["Orders", "orders.eu", "-orders", "orders-", "a" * 64, "a/b", "ÄÖ", ".."])
def test_namespace_names_are_rfc_1123_labels(name):
    assert rule_of(wi.validate_namespace(name)) and set(rule_of(wi.validate_namespace(name))) == {"namespace"}


@pytest.mark.parametrize("name", ["orders-api", "orders.api.v1", "a" * 253])
def test_object_names_that_kubernetes_accepts(name):
    assert wi.validate_object_name(name) == []


@pytest.mark.parametrize("name", ["Orders", "a/b", "a?b", "..", "ÄÖ", "a_b", "a" * 254, ""])
def test_object_names_are_rfc_1123_subdomains(name):
    assert wi.validate_object_name(name, "name")


def test_cronjob_names_leave_room_for_the_job_suffix():
    assert wi.validate_object_name("n" * 52, "name", wi.CRONJOB_NAME_MAX) == []
    assert wi.validate_object_name("n" * 53, "name", wi.CRONJOB_NAME_MAX) == [
        "name: must be at most 52 characters, got 53"
    ]
    cronjob = wp.DesiredPodTemplate("orders", "CronJob", "n" * 53, "orders-api")
    deployment = wp.DesiredPodTemplate("orders", "Deployment", "n" * 53, "orders-api")
    assert "name: must be at most 52 characters, got 53" in wp.validate(cronjob)
    assert wp.validate(deployment) == []


# --- Labels and annotations ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key", ["team", "app.kubernetes.io/name", "example.com/a_b.c-d", "a" * 63, f"{'p' * 253}/name"]
)
def test_label_keys_that_kubernetes_accepts(key):
    assert sa.validate_labels({key: "x"}) == []


@pytest.mark.parametrize("key", ["", "bad key", "-team", "a" * 64, "Example.com/x", "/x", "a/b/c", 1])
def test_label_keys_are_qualified_names(key):
    assert sa.validate_labels({key: "x"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("x" * 64, "labels.team: must be at most 63"),
        ("a b", "labels.team: must be at most 63"),
        ("-a", "labels.team: must be at most 63"),
        (1, "labels.team: must be a string (quote it), got int"),
        (True, "labels.team: must be a string (quote it), got bool"),
        ({"nested": "x"}, "labels.team: must be a string (quote it), got dict"),
    ],
)
def test_label_values_are_short_strings(value, expected):
    assert any(e.startswith(expected) for e in sa.validate_labels({"team": value}))


def test_null_label_and_annotation_values_remove_keys_and_are_valid():
    assert sa.validate_labels({"team": None, "empty": ""}) == []
    desired = sa.DesiredServiceAccount("orders", "orders-api", client_id=GUID, annotations={"note": None})
    assert sa.validate(desired) == []


def test_annotation_size_is_counted_in_bytes_as_the_api_server_does():
    half = sa.ANNOTATIONS_SIZE_MAX // 2  # characters of two bytes each: over the limit in bytes only
    too_big = sa.DesiredServiceAccount("orders", "orders-api", client_id=GUID, annotations={"n": "é" * half})
    assert any(
        e.startswith("annotations: keys and values must total at most 262144 bytes") for e in sa.validate(too_big)
    )
    fits = sa.DesiredServiceAccount("orders", "orders-api", client_id=GUID, annotations={"n": "é" * (half - 8)})
    assert sa.validate(fits) == []


def test_annotation_values_must_be_strings():
    desired = sa.DesiredServiceAccount("orders", "orders-api", client_id=GUID, annotations={"n": 5, "m": ["x"]})
    assert rule_of(sa.validate(desired)) == ["annotations.n", "annotations.m"]


def test_the_namespace_name_label_is_the_api_servers():
    errors = ns.validate(ns.DesiredNamespace("orders", labels={ns.NAME_LABEL: "orders"}))
    assert errors == [
        "labels: 'kubernetes.io/metadata.name' is set by the API server to the namespace's name; leave it out"
    ]


# --- ConfigMap data -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["KEYVAULT_URL", "a.b-c_d", "k" * 253, ".env"])
def test_configmap_keys_that_kubernetes_accepts(key):
    assert cm.validate(cm.DesiredConfigMap("orders", "settings", data={key: "v"})) == []


@pytest.mark.parametrize("key", ["", ".", "..", "a b", "a/b", "k" * 254, "ÄÖ"])
def test_configmap_keys_follow_is_configmap_key(key):
    assert rule_of(cm.validate(cm.DesiredConfigMap("orders", "settings", data={key: "v"}))) == ["data"]


@pytest.mark.parametrize("value", [1, 1.5, True, {"a": "b"}, ["a"]])
def test_configmap_values_must_be_strings(value):
    assert rule_of(cm.validate(cm.DesiredConfigMap("orders", "settings", data={"K": value}))) == ["data.K"]


def test_configmap_size_is_counted_in_bytes():
    data = {"BIG": "é" * (cm.CONFIGMAP_SIZE_MAX // 2)}
    assert rule_of(cm.validate(cm.DesiredConfigMap("orders", "settings", data=data))) == ["data"]


# --- Numbers: ranges and timeouts -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "valid"), [(3600, True), (86400, True), (3599, False), (86401, False)])
def test_the_webhooks_token_expiration_range(value, valid):
    desired = sa.DesiredServiceAccount("orders", "orders-api", client_id=GUID, token_expiration=value)
    assert (sa.validate(desired) == []) is valid


@pytest.mark.parametrize(("value", "valid"), [(1, True), (65535, True), (0, False), (65536, False), (True, False)])
def test_the_proxy_sidecar_port_range(value, valid):
    desired = wp.DesiredPodTemplate("orders", "Deployment", "api", "orders-api", proxy_sidecar_port=value)
    assert (wp.validate(desired) == []) is valid


@pytest.mark.parametrize(("value", "valid"), [(1, True), (86400, True), (0, False), (86401, False), (10**12, False)])
def test_waits_are_bounded_to_a_day(value, valid):
    assert (ns.validate(ns.DesiredNamespace("orders", wait_timeout=value)) == []) is valid
    request = pod_proof.PodRequest("orders", "orders-api", "https://kv.vault.azure.net/", "s", timeout=value)
    assert (pod_proof.validate(request) == []) is valid


def verify_options(**overrides: t.Any) -> dict[str, t.Any]:
    params: dict[str, t.Any] = dict.fromkeys(
        (
            "identity_client_id",
            "tenant_id",
            "identity_resource_group",
            "identity_name",
            "issuer_url",
            "cluster_resource_group",
            "cluster_name",
            "scope",
            "keyvault",
            "secret_name",
            "arm_resource_id",
            "arm_api_version",
        )
    )
    params.update(
        namespace="orders",
        service_account="orders-api",
        audience=wi.DEFAULT_AUDIENCE,
        token_expiration=600,
        propagation_timeout=300,
        retry_interval=5,
        return_secret_value=False,
    )
    params.update(overrides)
    return params


@pytest.mark.parametrize(
    ("overrides", "option"),
    [
        ({"token_expiration": 599}, "token_expiration"),
        ({"token_expiration": 2**32 + 1}, "token_expiration"),
        ({"propagation_timeout": -1}, "propagation_timeout"),
        ({"propagation_timeout": 86401}, "propagation_timeout"),
        ({"retry_interval": 0}, "retry_interval"),
        ({"retry_interval": 31}, "retry_interval"),
    ],
)
def test_token_request_and_retry_bounds(overrides, option):
    assert rule_of(chain_verifier.validate(verify_options(**overrides))) == [option]


def test_valid_verify_options_have_no_errors():
    assert chain_verifier.validate(verify_options()) == []
    assert (
        chain_verifier.validate(verify_options(token_expiration=2**32, propagation_timeout=0, retry_interval=30)) == []
    )


# --- Images ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "image",
    [
        pod_proof.DEFAULT_IMAGE,
        "busybox",
        "library/busybox:1.36",
        "myregistry.azurecr.io/mirror/msal-go:v1.4.0",
        "localhost:5000/msal-go",
        f"ghcr.io/azure/msal-go@sha256:{'a' * 64}",
    ],
)
def test_image_references_that_runtimes_accept(image):
    assert wi.validate_container_image(image) == []


@pytest.mark.parametrize("image", ["ÄÖ", "a?b", "..", "Upper/Case", "a b", "image:", "image:tag:x", "x" * 256, ""])
def test_image_references_follow_the_distribution_grammar(image):
    assert rule_of(wi.validate_container_image(image)) == ["image"]


# --- Key Vault --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "valid"),
    [
        ("https://kv-orders.vault.azure.net/", True),
        ("https://kv-orders.vault.azure.net", True),
        ("https://kv-wid-rbac.vault.localhost:8443/", True),
        ("kv-orders", False),
        ("http://kv-orders.vault.azure.net/", False),
        ("https://kv-orders.vault.azure.net/secrets/x", False),
        ("https://kv-orders.vault.azure.net/?api-version=7.4", False),
        ("https://kv-orders.vault.azure.net/#x", False),
        ("https://user:pw@kv-orders.vault.azure.net/", False),
        ("https://kv-orders.vault.azure.net:port/", False),
    ],
)
def test_vault_urls(url, valid):
    assert (wi.validate_keyvault_url(url) == []) is valid


@pytest.mark.parametrize(("name", "valid"), [("a", True), ("app-secret", True), ("s" * 127, True), ("s" * 128, False)])
def test_secret_names_are_1_to_127_letters_digits_or_hyphens(name, valid):
    assert (wi.validate_keyvault_object_name(name) == []) is valid
    assert wi.validate_keyvault_object_name("a_b") and wi.validate_keyvault_object_name("a.b")


@pytest.mark.parametrize(
    ("keyvault", "valid"),
    [("kv-orders", True), ("https://kv-orders.vault.azure.net/", True), ("kv_orders", False), ("kv", False)],
)
def test_wid_verify_takes_a_vault_name_or_url(keyvault, valid):
    errors = chain_verifier.validate(verify_options(keyvault=keyvault, secret_name="app-secret"))
    assert (errors == []) is valid


# --- Entra: issuer, audience, scope ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "option"),
    [
        ({"issuer_url": "http://issuer.example/"}, "issuer_url"),
        ({"issuer_url": "https://issuer.example/" + "x" * 600}, "issuer_url"),
        ({"audience": "x" * 601}, "audience"),
        ({"audience": "api://*"}, "audience"),
        ({"scope": "https://vault.azure.net"}, "scope"),
        ({"scope": "https://vault.azure.net/.default https://graph.microsoft.com/.default"}, "scope"),
        ({"scope": "/.default"}, "scope"),
    ],
)
def test_claims_and_scopes_entra_would_refuse(overrides, option):
    assert rule_of(chain_verifier.validate(verify_options(**overrides))) == [option]


@pytest.mark.parametrize(
    "scope",
    [
        "https://vault.azure.net/.default",
        "https://management.azure.com//.default",
        "api://my-api/.default",
        f"{GUID}/.default",
    ],
)
def test_scopes_entra_takes_in_the_client_credentials_flow(scope):
    assert wi.validate_token_scope(scope) == []


# --- ARM: resource IDs and api-versions --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "resource_id",
    [
        f"/subscriptions/{SUBSCRIPTION}",
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-apps",
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-apps/",
        f"/subscriptions/{SUBSCRIPTION}/resourcegroups/rg-apps/providers/Microsoft.KeyVault/vaults/kv-orders",
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/s",
    ],
)
def test_resource_ids_arm_accepts(resource_id):
    assert wi.validate_arm_resource_id(resource_id, "arm_resource_id") == []


@pytest.mark.parametrize(
    "resource_id",
    [
        "subscriptions/x",
        "/subscriptions/not-a-guid/resourceGroups/rg",
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg?api-version=1",
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/bad group",
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg./",
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.KeyVault",
        f"/subscriptions/{SUBSCRIPTION}//resourceGroups/rg",
    ],
)
def test_resource_ids_that_are_not_arm_ids(resource_id):
    assert wi.validate_arm_resource_id(resource_id, "arm_resource_id")


@pytest.mark.parametrize(
    ("version", "valid"),
    [
        ("2023-01-31", True),
        ("2024-05-01-preview", True),
        ("2023-13-01", False),
        ("2023-1-1", False),
        ("latest", False),
        ("7.4", False),
    ],
)
def test_arm_api_versions_are_dates(version, valid):
    assert (wi.validate_arm_api_version(version, "arm_api_version") == []) is valid


def test_arm_options_that_would_be_ignored_are_refused():
    assert rule_of(chain_verifier.validate(verify_options(arm_api_version="2023-01-31"))) == ["arm_api_version"]
    assert rule_of(chain_verifier.validate(verify_options(return_secret_value=True))) == ["return_secret_value"]
    other = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{GUID}"
    assert rule_of(chain_verifier.validate(verify_options(arm_resource_id=other))) == ["arm_api_version"]


# --- Identity and cluster references ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "option"),
    [
        ({"identity_client_id": "not-a-guid"}, "identity_client_id"),
        ({"tenant_id": "contoso"}, "tenant_id"),
        ({"identity_name": "ab"}, "identity_name"),
        ({"identity_resource_group": "rg."}, "identity_resource_group"),
        ({"cluster_name": "aks.prod"}, "cluster_name"),
        ({"cluster_resource_group": "a" * 91}, "cluster_resource_group"),
    ],
)
def test_identity_and_cluster_references(overrides, option):
    assert rule_of(chain_verifier.validate(verify_options(**overrides))) == [option]


# --- Lists: duplicates ---------------------------------------------------------------------------------------------------
def test_unique_entries_case_sensitive_or_not():
    assert wi.validate_unique(["a", "b"], "x") == []
    assert wi.validate_unique(["a", "A"], "x") == []
    assert wi.validate_unique(["a", "A"], "x", ignore_case=True) == ["x[1]: repeats x[0]; give each entry once"]


def test_wid_info_lists_name_each_entry_once():
    params = {
        "clusters": [{"resource_group": "rg", "name": "aks"}, {"resource_group": "RG", "name": "aks"}],
        "issuer_urls": ["https://a/", "https://A/"],  # issuers compare exactly: two issuers
        "identity_resource_groups": ["rg", "RG"],
        "namespaces": ["orders", "orders"],
        "credential_warning_threshold": 16,
    }
    assert rule_of(trust_inventory.validate(params)) == ["clusters[1]", "identity_resource_groups[1]", "namespaces[1]"]


# --- Docs and code agree -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("module", "option", "words"),
    [
        ("wid_namespace", "wait_timeout", ["86400"]),
        ("wid_namespace", "labels", ["kubernetes.io/metadata.name", "63"]),
        ("wid_workload_patch", "name", ["253", "52"]),
        ("wid_workload_patch", "proxy_sidecar_port", ["65535", "proxy_sidecar=true"]),
        ("wid_verify_pod", "image", ["image reference"]),
        ("wid_verify_pod", "timeout", ["86400"]),
        ("wid_verify_pod", "secret_name", ["1-127"]),
        ("wid_verify", "token_expiration", ["600", "4294967296"]),
        ("wid_verify", "retry_interval", ["1 to 30"]),
        ("wid_verify", "scope", ["/.default"]),
        ("wid_verify", "arm_api_version", ["YYYY-MM-DD"]),
        ("wid_info", "namespaces", ["once"]),
        ("wid_service_account", "create_namespace", ["before any write"]),
        ("wid_settings_configmap", "create_namespace", ["before any write"]),
    ],
)
def test_each_rule_is_documented_on_its_option(module, option, words):
    import importlib

    documentation = importlib.import_module(f"ansible_collections.aks.workload_identity.plugins.modules.{module}")
    description = yaml.safe_load(documentation.DOCUMENTATION)["options"][option]["description"]
    text = " ".join(description) if isinstance(description, list) else description
    assert all(word in text for word in words), text
