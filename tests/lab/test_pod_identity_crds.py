"""AAD Pod Identity's CRDs on the lab's real kube-apiserver (docs/lab.md §9), for migrations away from it.

The apiserver serves aadpodidentity.k8s.io/v1 from the project's published definitions
(tests/lab/kube/aad-pod-identity-crds.yaml): it stores AzureIdentity and AzureIdentityBinding objects written as the
project's documentation writes them, refuses what their schema refuses, prunes what it does not know, and pods are
found through their `aadpodidbinding` label. No MIC or NMI runs, so nothing acts on the objects.
"""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.lab.kube import crds

pytestmark = pytest.mark.lab

GROUP, VERSION = "aadpodidentity.k8s.io", "v1"
PLURALS = ("azureidentities", "azureidentitybindings", "azureassignedidentities", "azurepodidentityexceptions")


@pytest.fixture(scope="module")
def installed(lab):
    return lab.install_pod_identity_crds()


@pytest.fixture(scope="module")
def api(lab, installed):
    return k8s_config.new_client_from_config(config_file=str(lab.admin_kubeconfig))


@pytest.fixture
def namespace(api):
    name = f"podid-{uuid.uuid4().hex[:8]}"
    k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    return name


def _identity(name: str, **spec) -> dict:
    # https://azure.github.io/aad-pod-identity/docs/concepts/azureidentity/ (user-assigned identity example)
    body_spec = {
        "type": 0,
        "resourceID": f"/subscriptions/{uuid.uuid4()}/resourcegroups/rg/providers/"
        f"Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
        "clientID": str(uuid.uuid4()),
        **spec,
    }
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AzureIdentity", "metadata": {"name": name}, "spec": body_spec}


def _binding(name: str, **spec) -> dict:
    # https://azure.github.io/aad-pod-identity/docs/concepts/azureidentitybinding/
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AzureIdentityBinding",
        "metadata": {"name": f"{name}-binding"},
        "spec": {"azureIdentity": name, "selector": name, **spec},
    }


def test_the_four_definitions_are_established_and_served(lab, api, installed):
    assert sorted(installed) == sorted(f"{plural}.{GROUP}" for plural in PLURALS)
    assert installed == [d["metadata"]["name"] for d in crds.definitions()]
    resources = {r.name: r for r in k8s.CustomObjectsApi(api).get_api_resources(GROUP, VERSION).resources}
    assert set(PLURALS) <= set(resources)
    assert resources["azureidentities"].kind == "AzureIdentity" and resources["azureidentities"].namespaced


def test_installing_again_writes_nothing(lab, installed):
    mark = lab.kube_mark()
    assert lab.install_pod_identity_crds() == installed
    assert lab.kube_writes(mark, include_dry_run=True) == []


def test_the_documented_identity_and_binding_are_stored_and_the_pods_found(api, namespace):
    objects = k8s.CustomObjectsApi(api)
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "azureidentities", _identity("demo"))
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "azureidentitybindings", _binding("demo"))
    identity = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, "azureidentities", "demo")
    assert identity["spec"]["type"] == 0 and identity["spec"]["clientID"]
    [binding] = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, "azureidentitybindings")["items"]
    assert binding["spec"] == {"azureIdentity": "demo", "selector": "demo"}
    # A pod takes the binding through the label `aadpodidbinding: <selector>` (the project's getting-started page).
    core = k8s.CoreV1Api(api)
    pod = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="demo", labels={"aadpodidbinding": binding["spec"]["selector"]}),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="demo", image="mcr.microsoft.com/azure-cli")]),
    )
    core.create_namespaced_pod(namespace, pod)  # stored, never scheduled: no kubelet runs (docs/lab.md §3.2)
    selected = core.list_namespaced_pod(namespace, label_selector=f"aadpodidbinding={binding['spec']['selector']}")
    assert [p.metadata.name for p in selected.items] == ["demo"]
    # No MIC: nobody turns the match into an AzureAssignedIdentity.
    assigned = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, "azureassignedidentities")
    assert assigned["items"] == []


def test_the_other_two_kinds_are_stored(api, namespace):
    objects = k8s.CustomObjectsApi(api)
    exception = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AzurePodIdentityException",
        "metadata": {"name": "mic-exception"},
        "spec": {"podLabels": {"app": "mic", "component": "mic"}},
    }
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "azurepodidentityexceptions", exception)
    assigned = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AzureAssignedIdentity",
        "metadata": {"name": "demo-pod-demo"},
        "spec": {
            "azureIdentityRef": _identity("demo") | {"metadata": {"name": "demo", "namespace": namespace}},
            "azureBindingRef": _binding("demo") | {"metadata": {"name": "demo-binding", "namespace": namespace}},
            "pod": "demo",
            "podNamespace": namespace,
            "nodename": "aks-nodepool1-0",
        },
    }
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "azureassignedidentities", assigned)
    stored = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, "azureassignedidentities", "demo-pod-demo")
    assert stored["spec"]["azureIdentityRef"]["spec"]["type"] == 0
    assert stored["spec"]["azureBindingRef"]["spec"]["selector"] == "demo"


@pytest.mark.parametrize(
    ("plural", "body", "field"),
    [
        ("azureidentities", _identity("bad", type="UserAssignedMSI"), "spec.type"),  # an integer: 0, 1 or 2
        ("azureidentities", _identity("bad", clientID=123), "spec.clientID"),
        ("azureidentitybindings", _binding("bad", weight="high"), "spec.weight"),
        ("azureidentitybindings", _binding("bad", selector=["bad"]), "spec.selector"),
    ],
)
def test_the_schema_refuses_wrong_types(api, namespace, plural, body, field):
    with pytest.raises(k8s.ApiException) as refused:
        k8s.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
    assert refused.value.status == 422
    assert field in refused.value.body


def test_unknown_fields_are_pruned_or_refused_when_strict(api, namespace):
    """Manifests written with capitalised keys (`AzureIdentity:`, `Selector:`) lose them to structural pruning; a
    strict client is told (fieldValidation, https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation)."""
    objects = k8s.CustomObjectsApi(api)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AzureIdentityBinding",
        "metadata": {"name": "old-style"},
        "spec": {"AzureIdentity": "demo", "Selector": "demo"},
    }
    with pytest.raises(k8s.ApiException) as refused:
        objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "azureidentitybindings", body, field_validation="Strict"
        )
    assert refused.value.status == 400  # "Strict: ... fail the request with a BadRequest error" (the page above)
    assert "unknown field" in refused.value.body and "spec.Selector" in refused.value.body
    stored = objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "azureidentitybindings", body)
    assert stored["spec"] == {}
