"""The lab runs the real Azure Workload Identity webhook (v1.6.0): a labelled pod's server-side dry run comes back
with what AKS's webhook injects, an unlabelled one comes back untouched, and a dry run writes nothing.

What v1.6.0 injects: docs/lab.md §5 (pkg/webhook/webhook.go, pkg/webhook/consts.go). The lab runs it with the custom
token endpoint AKS uses for identity bindings: a pod annotated ``azure.workload.identity/use-identity-binding: "true"``
also gets the AKS token proxy's address, SNI name and CA file, and its token is for ``api://AKSIdentityBinding``.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from kubernetes import client as k8s
from kubernetes import config as k8s_config

pytestmark = pytest.mark.lab

USE_LABEL = "azure.workload.identity/use"
CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
TENANT_ID_ANNOTATION = "azure.workload.identity/tenant-id"
TOKEN_FILE = "/var/run/secrets/azure/wi/token/azure-identity-token"  # v1.6.0; v1.5.x used .../azure/tokens/
AUDIENCE = "api://AzureADTokenExchange"
# Identity bindings (docs/lab.md §5): the pod annotation, the token audience and where the CA file lands.
IDENTITY_BINDING_ANNOTATION = "azure.workload.identity/use-identity-binding"
IDENTITY_BINDING_AUDIENCE = "api://AKSIdentityBinding"
CA_FILE = "/var/run/secrets/azure/wi/ca-cert/ca.crt"  # pkg/webhook/consts.go CAFilePath under VolumeMountPath
PROXY_VARIABLES = (
    "AZURE_KUBERNETES_TOKEN_PROXY",
    "AZURE_KUBERNETES_SNI_NAME",
    "AZURE_KUBERNETES_CA_FILE",
    "AZURE_KUBERNETES_CA_DATA",
)


@pytest.fixture(scope="module")
def core(lab):
    hook = lab.webhook
    assert hook.get("enabled"), f"the lab's webhook is not running: {hook.get('reason')}"
    with k8s_config.new_client_from_config(config_file=str(lab.admin_kubeconfig)) as api:
        yield k8s.CoreV1Api(api)


@pytest.fixture
def namespace(core):
    name = f"wh-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    return name  # left behind: no namespace controller finalizes deletions in the lab (docs/lab.md §3.2)


def _service_account(core, namespace: str, annotations: dict[str, str]) -> str:
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "workload", "annotations": annotations}})
    return "workload"


def _dry_run_pod(
    core, namespace: str, service_account: str, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> k8s.V1Pod:
    pod = {
        "metadata": {"name": "probe", "labels": labels, "annotations": annotations or {}},
        "spec": {
            "serviceAccountName": service_account,
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "app", "image": "busybox"}],
        },
    }
    return core.create_namespaced_pod(namespace, pod, dry_run="All")


def _env(container: k8s.V1Container) -> dict[str, str]:
    return {item.name: item.value for item in container.env or []}


def _token_volumes(pod: k8s.V1Pod) -> list[tuple[k8s.V1Volume, k8s.V1ServiceAccountTokenProjection]]:
    found = []
    for volume in pod.spec.volumes or []:
        for source in volume.projected.sources if volume.projected else []:
            if source.service_account_token is not None:
                found.append((volume, source.service_account_token))
    return found


def test_labelled_pod_gets_workload_identity_injected(lab, core, namespace):
    client_id = str(uuid.uuid4())
    account = _service_account(core, namespace, {CLIENT_ID_ANNOTATION: client_id})
    mark = lab.kube_mark()

    pod = _dry_run_pod(core, namespace, account, {USE_LABEL: "true"})

    login_endpoint = requests.get(lab.env["AZURE_CLOUD_ENVIRONMENT"], verify=lab.env["AZURE_CA_BUNDLE"], timeout=30)
    expected = {
        "AZURE_CLIENT_ID": client_id,
        "AZURE_TENANT_ID": lab.env["AZURE_TENANT"],  # the webhook's own: the SA names no tenant
        "AZURE_FEDERATED_TOKEN_FILE": TOKEN_FILE,
        # The lab's Entra login endpoint, as AKS injects its cloud's (https://login.microsoftonline.com/).
        "AZURE_AUTHORITY_HOST": login_endpoint.json()["authentication"]["loginEndpoint"],
    }
    for container in [*pod.spec.init_containers, *pod.spec.containers]:
        env = _env(container)
        assert {name: env.get(name) for name in expected} == expected, container.name
        mounts = [m for m in container.volume_mounts or [] if m.mount_path == "/var/run/secrets/azure/wi"]
        assert len(mounts) == 1 and mounts[0].read_only, container.name

    [(volume, token)] = _token_volumes(pod)
    assert volume.name == mounts[0].name
    assert (token.audience, token.path, token.expiration_seconds) == (AUDIENCE, "token/azure-identity-token", 3600)

    # A dry run is admitted (webhooks included) but never stored: the audit log shows it only as a dry run.
    assert lab.kube_writes(mark) == []
    [event] = lab.kube_writes(mark, include_dry_run=True)
    assert (event["verb"], event["code"], event["dry_run"]) == ("create", 201, True)
    with pytest.raises(k8s.ApiException) as missing:
        core.read_namespaced_pod("probe", namespace)
    assert missing.value.status == 404


def test_service_account_tenant_overrides_the_webhook_tenant(core, namespace):
    tenant = str(uuid.uuid4())
    account = _service_account(core, namespace, {CLIENT_ID_ANNOTATION: str(uuid.uuid4()), TENANT_ID_ANNOTATION: tenant})

    pod = _dry_run_pod(core, namespace, account, {USE_LABEL: "true"})

    assert _env(pod.spec.containers[0])["AZURE_TENANT_ID"] == tenant


def test_unlabelled_pod_is_left_alone(lab, core, namespace):
    account = _service_account(core, namespace, {CLIENT_ID_ANNOTATION: str(uuid.uuid4())})
    mark = lab.kube_mark()

    for labels in ({}, {USE_LABEL: "false"}):
        pod = _dry_run_pod(core, namespace, account, labels)

        for container in [*pod.spec.init_containers, *pod.spec.containers]:
            assert not [name for name in _env(container) if name.startswith("AZURE_")], container.name
            assert not container.volume_mounts, container.name
        assert _token_volumes(pod) == []
    assert lab.kube_writes(mark) == []


def test_identity_binding_pod_gets_the_token_proxy_and_its_audience(lab, core, namespace):
    """v1.6.0's custom token endpoint as AKS runs it for identity bindings (docs/lab.md §5): the proxy's address and
    SNI name as the webhook was given them, the CA file from the ConfigMap kube-root-ca.crt projected into the same
    volume, and a token for api://AKSIdentityBinding instead of api://AzureADTokenExchange."""
    hook = lab.webhook["custom_token_endpoint"]
    assert hook["annotation"] == IDENTITY_BINDING_ANNOTATION == lab.env["LAB_WEBHOOK_TOKEN_PROXY_ANNOTATION"]
    assert hook["audience"] == IDENTITY_BINDING_AUDIENCE == lab.env["LAB_WEBHOOK_TOKEN_PROXY_AUDIENCE"]
    client_id = str(uuid.uuid4())
    account = _service_account(core, namespace, {CLIENT_ID_ANNOTATION: client_id})

    pod = _dry_run_pod(core, namespace, account, {USE_LABEL: "true"}, {IDENTITY_BINDING_ANNOTATION: "true"})

    expected = {
        "AZURE_CLIENT_ID": client_id,
        "AZURE_TENANT_ID": lab.env["AZURE_TENANT"],
        "AZURE_FEDERATED_TOKEN_FILE": TOKEN_FILE,
        "AZURE_AUTHORITY_HOST": lab.emulator_url + "/",
        "AZURE_KUBERNETES_TOKEN_PROXY": lab.env["LAB_TOKEN_PROXY_URL"],
        "AZURE_KUBERNETES_SNI_NAME": lab.env["LAB_TOKEN_PROXY_SNI_NAME"],
        "AZURE_KUBERNETES_CA_FILE": CA_FILE,
    }
    for container in [*pod.spec.init_containers, *pod.spec.containers]:
        env = _env(container)
        assert {name: env.get(name) for name in expected} == expected, container.name
        # With the CA from a ConfigMap the webhook injects no CA data: azure-identity refuses both at once.
        assert "AZURE_KUBERNETES_CA_DATA" not in env, container.name
    assert lab.env["LAB_TOKEN_PROXY_URL"].startswith("https://127.0.0.1:")

    [volume] = [v for v in pod.spec.volumes if v.projected]
    token, config_map = volume.projected.sources
    assert token.service_account_token.audience == IDENTITY_BINDING_AUDIENCE
    assert (token.service_account_token.path, token.service_account_token.expiration_seconds) == (
        "token/azure-identity-token",
        3600,
    )
    assert (config_map.config_map.name, config_map.config_map.optional) == ("kube-root-ca.crt", False)
    assert [(i.key, i.path) for i in config_map.config_map.items] == [("ca.crt", "ca-cert/ca.crt")]


@pytest.mark.parametrize("annotations", [{}, {IDENTITY_BINDING_ANNOTATION: "false"}])
def test_a_pod_without_the_identity_binding_annotation_gets_no_token_proxy(core, namespace, annotations):
    account = _service_account(core, namespace, {CLIENT_ID_ANNOTATION: str(uuid.uuid4())})

    pod = _dry_run_pod(core, namespace, account, {USE_LABEL: "true"}, annotations)

    for container in [*pod.spec.init_containers, *pod.spec.containers]:
        env = _env(container)
        assert env["AZURE_FEDERATED_TOKEN_FILE"] == TOKEN_FILE, container.name  # plain workload identity still
        assert not [name for name in PROXY_VARIABLES if name in env], container.name
    [(volume, token)] = _token_volumes(pod)
    assert token.audience == AUDIENCE
    assert [source.config_map for source in volume.projected.sources] == [None]


def test_webhook_listens_on_a_loopback_port_of_its_own(lab):
    """Not upstream's fixed :9443 on every interface (docs/lab.md §5): the lab's port, on 127.0.0.1 only."""
    from tests.lab import webhook

    hook = lab.webhook
    assert hook["port"] != 9443
    assert hook["url"] == f"https://127.0.0.1:{hook['port']}/mutate-v1-pod"
    assert webhook._listens(hook["pid"], hook["port"])
    assert webhook.running(lab.workdir / "webhook")


def test_labs_started_at_once_each_run_their_own_webhook(lab, tmp_path):
    """Two labs brought up side by side (next to the session's) each get a webhook, and each apiserver calls its
    own: the injected AZURE_AUTHORITY_HOST is that lab's emulator."""
    from tests.lab import lab as lab_module

    workdirs = [tmp_path / "first", tmp_path / "second"]
    try:
        with ThreadPoolExecutor(len(workdirs)) as pool:
            labs = list(pool.map(lambda workdir: lab_module.up(workdir, quiet=True), workdirs))

        ports = {other.webhook["port"] for other in [lab, *labs]}
        assert len(ports) == 3 and 9443 not in ports
        for other in labs:
            assert other.webhook["enabled"], other.webhook.get("reason")
            with k8s_config.new_client_from_config(config_file=str(other.admin_kubeconfig)) as api:
                core = k8s.CoreV1Api(api)
                core.create_namespace({"metadata": {"name": "parallel"}})
                client_id = str(uuid.uuid4())
                account = _service_account(core, "parallel", {CLIENT_ID_ANNOTATION: client_id})
                pod = _dry_run_pod(core, "parallel", account, {USE_LABEL: "true"})
            env = _env(pod.spec.containers[0])
            assert env.get("AZURE_CLIENT_ID") == client_id, other.workdir
            assert env.get("AZURE_AUTHORITY_HOST") == other.emulator_url + "/", other.workdir
    finally:
        for workdir in workdirs:
            lab_module.down(workdir)
