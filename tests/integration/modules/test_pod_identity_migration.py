"""pod_identity_migration on the lab, with aad-pod-identity's CRDs installed (docs/lab.md §9; no NMI or MIC runs):
a namespace holds what a cluster on aad-pod-identity has - a user-assigned identity's AzureIdentity and binding that
two Deployments select (one running as its own ServiceAccount, one as default), and the cases the module must name
and leave alone: a service principal AzureIdentity, a binding that selects nothing, a Deployment selected by two
bindings, a bare labelled pod. State is read with the test's own clients (the emulator's log and the apiserver's
audit log, the kubernetes client), never through the module."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.integration.runner import run_module

pytestmark = pytest.mark.lab

MODULE = "pod_identity_migration"
GROUP, VERSION = "aadpodidentity.k8s.io", "v1"


@pytest.fixture(scope="module")
def api(lab) -> k8s.ApiClient:
    lab.install_pod_identity_crds()
    return k8s_config.new_client_from_config(config_file=str(lab.admin_kubeconfig))


def deployment(name: str, selector: str, service_account: str | None = None) -> dict:
    spec: dict = {"containers": [{"name": "app", "image": "mcr.microsoft.com/azure-cli:latest"}]}
    if service_account:
        spec["serviceAccountName"] = service_account
    labels = {"app": name, "aadpodidbinding": selector}
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def custom(kind: str, name: str, spec: dict) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec}


def planted(lab, api, msi, tag: str) -> dict:
    """The namespace ``tag`` as a cluster on aad-pod-identity left it."""
    group = lab.seed["resource_group"]
    identity = msi.user_assigned_identities.create_or_update(group, f"id-{tag}", {"location": "eastus"})
    core, apps, objects = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.CustomObjectsApi(api)
    core.create_namespace({"metadata": {"name": tag}})
    core.create_namespaced_service_account(tag, {"metadata": {"name": "api-sa"}})
    created = [
        (
            "azureidentities",
            custom("AzureIdentity", "app-id", {"type": 0, "resourceID": identity.id, "clientID": identity.client_id}),
        ),
        (
            "azureidentitybindings",
            custom("AzureIdentityBinding", "app-binding", {"azureIdentity": "app-id", "selector": "app"}),
        ),
        (
            "azureidentities",
            custom(
                "AzureIdentity",
                "sp-id",
                {"type": 1, "clientID": str(uuid.uuid4()), "tenantID": lab.env["AZURE_TENANT"]},
            ),
        ),
        (
            "azureidentitybindings",
            custom("AzureIdentityBinding", "sp-binding", {"azureIdentity": "sp-id", "selector": "sp"}),
        ),
        (
            "azureidentitybindings",
            custom("AzureIdentityBinding", "idle-binding", {"azureIdentity": "app-id", "selector": "idle"}),
        ),
        (
            "azureidentitybindings",
            custom("AzureIdentityBinding", "twin-a", {"azureIdentity": "app-id", "selector": "twin"}),
        ),
        (
            "azureidentitybindings",
            custom("AzureIdentityBinding", "twin-b", {"azureIdentity": "app-id", "selector": "twin"}),
        ),
    ]
    for plural, body in created:
        objects.create_namespaced_custom_object(GROUP, VERSION, tag, plural, body)
    apps.create_namespaced_deployment(tag, deployment("api", "app", "api-sa"))
    apps.create_namespaced_deployment(tag, deployment("worker", "app"))
    apps.create_namespaced_deployment(tag, deployment("legacy", "sp"))
    apps.create_namespaced_deployment(tag, deployment("twin", "twin"))
    pod = {
        "metadata": {"name": "bare", "labels": {"aadpodidbinding": "twin"}},
        "spec": {"containers": [{"name": "app", "image": "mcr.microsoft.com/azure-cli:latest"}]},
    }
    core.create_namespaced_pod(tag, pod)
    return {"identity": identity, "group": group}


def names(api, tag: str, plural: str) -> list[str]:
    listed = k8s.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, tag, plural)
    return sorted(item["metadata"]["name"] for item in listed["items"])


@pytest.fixture(scope="module")
def world(lab, api, msi, cluster) -> dict:
    tag = f"pim{uuid.uuid4().hex[:4]}"
    return {"tag": tag, **planted(lab, api, msi, tag), "args": {**cluster, "namespaces": [tag]}}


def test_planned_writes_nothing_and_names_every_case(lab, world):
    tag = world["tag"]
    for check in (False, True):
        marks = (lab.last_seq(), lab.kube_mark())
        planned = run_module(MODULE, world["args"], env=lab.env, check=check)
        assert not planned.failed and not planned.changed, planned.get("msg")
        assert lab.writes(marks[0]) == []
        assert lab.kube_writes(marks[1], include_dry_run=True) == []
    statuses = {w["name"]: w["status"] for w in planned["workloads"]}
    assert statuses == {"api": "planned", "worker": "planned", "legacy": "unsupported", "twin": "unsupported"}
    assert planned["items"] == [
        {
            "name": f"{tag}/api-sa",
            "namespace": tag,
            "service_account": "api-sa",
            "identity": {"name": f"id-{tag}", "resource_group": world["group"], "create": False},
            "patch_workloads": [{"kind": "Deployment", "name": "api"}],
            "proxy_sidecar": True,
        },
        {
            "name": f"{tag}/app-binding",
            "namespace": tag,
            "service_account": "app-binding",
            "identity": {"name": f"id-{tag}", "resource_group": world["group"], "create": False},
            "patch_workloads": [{"kind": "Deployment", "name": "worker"}],
            "proxy_sidecar": True,
        },
    ]
    reasons = {u["object"]: u["reason"] for u in planned["unsupported"]}
    assert "service principal (type 1)" in reasons[f"Deployment {tag}/legacy"]
    assert "selected by 2 AzureIdentityBindings" in reasons[f"Deployment {tag}/twin"]
    assert "selects no workload" in reasons[f"AzureIdentityBinding {tag}/idle-binding"]
    assert "has no owner workload" in reasons[f"Pod {tag}/bare"]
    assert {b["name"]: b["status"] for b in planned["bindings"]}["app-binding"] == "planned"
    actions = {a["step"] for w in planned["workloads"] if w["status"] == "planned" for a in w["actions"]}
    assert {"service_account", "federated_credential", "pod_templates"} <= actions


def test_migrated_then_removed(lab, api, world):
    tag, args = world["tag"], world["args"]
    # Check mode: the fleet's plan and the removals, no write anywhere.
    marks = (lab.last_seq(), lab.kube_mark())
    preview = run_module(MODULE, {**args, "state": "migrated", "remove_pod_identity": True}, env=lab.env, check=True)
    assert preview.changed and not preview.failed, preview.get("msg")
    assert lab.writes(marks[0]) == [] and lab.kube_writes(marks[1], include_dry_run=True) == []
    assert preview["summary"]["removed"] == 1  # app-binding; app-id is named by other bindings too

    migrated = run_module(MODULE, {**args, "state": "migrated"}, env=lab.env)
    assert migrated.changed and not migrated.failed, migrated.get("msg")
    statuses = {w["name"]: w["status"] for w in migrated["workloads"]}
    assert statuses == {"api": "proven", "worker": "proven", "legacy": "unsupported", "twin": "unsupported"}
    apps = k8s.AppsV1Api(api)
    for name, account in (("api", "api-sa"), ("worker", "app-binding")):
        template = apps.read_namespaced_deployment(name, tag).spec.template
        assert template.spec.service_account_name == account
        assert template.metadata.labels["azure.workload.identity/use"] == "true"
        assert template.metadata.labels["aadpodidbinding"] == "app"  # left, see the module's documentation
        assert template.metadata.annotations["azure.workload.identity/inject-proxy-sidecar"] == "true"
    account = k8s.CoreV1Api(api).read_namespaced_service_account("app-binding", tag)
    assert account.metadata.annotations["azure.workload.identity/client-id"] == world["identity"].client_id

    # Again: nothing changes, and it costs exactly the reads of the first run's plan plus the proofs.
    seq = lab.last_seq()
    again = run_module(MODULE, {**args, "state": "migrated"}, env=lab.env)
    assert not again.changed and not again.failed, again.get("msg")
    assert lab.writes(seq) == []
    # The plan's reads (2 AzureIdentity/binding lists, 4 workload lists, 1 labelled-pod list), the fleet's (cluster,
    # identities of the group, the identity's credentials, ServiceAccounts and Deployments of the namespace), and the
    # proof's agreement reads (the same three ARM reads, the ServiceAccounts).
    assert again["api_calls"] == {
        "containerservice.managed_clusters.get": 2,
        "msi.user_assigned_identities.list_by_resource_group": 2,
        "msi.federated_identity_credentials.list": 2,
        "kubernetes.azureidentities.list": 1,
        "kubernetes.azureidentitybindings.list": 1,
        "kubernetes.deployment.list": 2,
        "kubernetes.stateful_set.list": 1,
        "kubernetes.daemon_set.list": 1,
        "kubernetes.cron_job.list": 1,
        "kubernetes.pods.list": 1,
        "kubernetes.serviceaccounts.list": 2,
    }
    arm = [r for r in lab.requests(seq) if r["plane"] == "arm"]
    assert len(arm) == 1 + 6, arm  # + the cloud's metadata endpoints, read once per process (AZURE_CLOUD_ENVIRONMENT)

    # Removal: only the binding whose workloads were proven, and the AzureIdentity only it used... which idle-binding
    # and the twins name as well, so it stays.
    removed = run_module(MODULE, {**args, "state": "migrated", "remove_pod_identity": True}, env=lab.env)
    assert removed.changed and not removed.failed, removed.get("msg")
    assert names(api, tag, "azureidentitybindings") == ["idle-binding", "sp-binding", "twin-a", "twin-b"]
    assert names(api, tag, "azureidentities") == ["app-id", "sp-id"]
    kept = {i["name"]: i["removable"] for i in removed["azure_identities"]}
    assert kept == {"app-id": False, "sp-id": False}

    final = run_module(MODULE, {**args, "state": "migrated", "remove_pod_identity": True}, env=lab.env)
    assert not final.changed and not final.failed, final.get("msg")
    assert {w["name"]: w["status"] for w in final["workloads"]}["api"] == "label_only"


def test_an_azure_identity_goes_with_its_last_binding(lab, api, msi, cluster):
    tag = f"pim{uuid.uuid4().hex[:4]}"
    identity = msi.user_assigned_identities.create_or_update(
        lab.seed["resource_group"], f"id-{tag}", {"location": "eastus"}
    )
    core, objects = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
    core.create_namespace({"metadata": {"name": tag}})
    spec = {"type": 0, "resourceID": identity.id, "clientID": identity.client_id}
    objects.create_namespaced_custom_object(
        GROUP, VERSION, tag, "azureidentities", custom("AzureIdentity", "one", spec)
    )
    binding = custom("AzureIdentityBinding", "one-binding", {"azureIdentity": "one", "selector": "one"})
    objects.create_namespaced_custom_object(GROUP, VERSION, tag, "azureidentitybindings", binding)
    k8s.AppsV1Api(api).create_namespaced_deployment(tag, deployment("solo", "one", None))
    args = {
        **cluster,
        "namespaces": [tag],
        "state": "migrated",
        "remove_pod_identity": True,
        "sdk_supports_workload_identity": True,
    }
    done = run_module(MODULE, args, env=lab.env, diff=True)
    assert done.changed and not done.failed, done.get("msg")
    assert names(api, tag, "azureidentitybindings") == [] and names(api, tag, "azureidentities") == []
    template = k8s.AppsV1Api(api).read_namespaced_deployment("solo", tag).spec.template
    assert "azure.workload.identity/inject-proxy-sidecar" not in (template.metadata.annotations or {})
    assert [d["before_header"] for d in done["diff"] if "before_header" in d][-2:] == [
        f"AzureIdentityBinding {tag}/one-binding",
        f"AzureIdentity {tag}/one",
    ]


def test_bad_input_is_refused_before_any_request(lab):
    seq = lab.last_seq()
    refused = run_module(
        MODULE,
        {"issuer_url": "http://not-https/", "namespaces": ["Bad_NS"], "remove_pod_identity": True, "prove": False},
        env=lab.env,
    )
    assert refused.failed
    for option in ("issuer_url", "namespaces[0]", "remove_pod_identity"):
        assert option in refused["msg"], refused["msg"]
    assert lab.requests(seq) == []
