"""pod_proof.py: the verification pod's life through a fake CoreV1Api that returns the client's own models.

The fake plays the API server and the kubelet: it stores the pod (the webhook's mutation is simulated by
adding env, or not), moves it through phases, and serves a log. The logic under test (skip decisions, webhook
check, verdict from the log, redaction, clean-up) is the real one.
"""

from __future__ import annotations

import typing as t

import pytest
from kubernetes import client as k8s

from ansible_collections.aks.workload_identity.plugins.module_utils import pod_proof as pp
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from tests.unit.plugins.module_utils.reconcile.test_service_account import api_error, not_found

SECRET = "Hello!-the-secret-value"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
SUCCESS_LOG = f'I1013 22:49:29.872708 1 main.go:30] "successfully got secret" secret="{SECRET}"\n'
FAILURE_LOG = (
    'E1013 22:49:29.872708 1 main.go:27] "failed to get secret from keyvault" err="AADSTS700213: No matching '
    f"federated identity record found for presented assertion subject 'system:serviceaccount:a:b' {TOKEN}\" "
    'keyvault="" secretName="app-secret"\n'
)


def request(**overrides: t.Any) -> pp.PodRequest:
    values = {
        "namespace": "orders",
        "service_account": "orders-api",
        "keyvault_url": "https://kv-orders.vault.azure.net/",
        "secret_name": "app-secret",
        "timeout": 30.0,
    }
    values.update(overrides)
    return pp.PodRequest(**values)


class FakeCore:
    def __init__(self, nodes: int = 1, inject: bool = True, phases=("Pending", "Running"), log: str = SUCCESS_LOG):
        self.nodes, self.inject, self.phases, self.log = nodes, inject, list(phases), log
        self.accounts = {("orders", "orders-api")}
        self.namespaces = {"orders"}
        self.namespaces_forbidden = False
        self.pods: dict[str, k8s.V1Pod] = {}
        self.calls: list[str] = []
        self.waiting_reason: str | None = None
        self.nodes_forbidden = False

    def list_node(self) -> k8s.V1NodeList:
        self.calls.append("list_node")
        if self.nodes_forbidden:
            raise api_error(403, "Forbidden", 'nodes is forbidden: User "x" cannot list resource "nodes"', "nodes")
        ready = k8s.V1NodeCondition(type="Ready", status="True")
        node = k8s.V1Node(status=k8s.V1NodeStatus(conditions=[ready]), spec=k8s.V1NodeSpec())
        items = [node] * self.nodes
        return k8s.V1NodeList(items=items)

    def read_namespaced_service_account(self, name: str, namespace: str) -> k8s.V1ServiceAccount:
        self.calls.append("read_namespaced_service_account")
        if (namespace, name) not in self.accounts:
            raise not_found("serviceaccounts", name)
        return k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name, namespace=namespace))

    def read_namespace(self, name: str) -> k8s.V1Namespace:
        self.calls.append("read_namespace")
        if self.namespaces_forbidden:
            raise api_error(403, "Forbidden", f'namespaces "{name}" is forbidden', "namespaces")
        if name not in self.namespaces:
            raise not_found("namespaces", name)
        return k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name))

    def create_namespaced_pod(self, namespace: str, body: dict) -> k8s.V1Pod:
        self.calls.append("create_namespaced_pod")
        assert body["metadata"]["labels"]["azure.workload.identity/use"] == "true"
        assert body["spec"]["serviceAccountName"] == "orders-api"
        env = [k8s.V1EnvVar(name=e["name"], value=e["value"]) for e in body["spec"]["containers"][0]["env"]]
        if self.inject:
            env += [k8s.V1EnvVar(name=name, value="x") for name in pp.INJECTED_ENV]
        container = k8s.V1Container(name="oidc", image=body["spec"]["containers"][0]["image"], env=env)
        pod = k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name="wid-verify-abcde", namespace=namespace),
            spec=k8s.V1PodSpec(containers=[container]),
            status=k8s.V1PodStatus(phase="Pending"),
        )
        self.pods[pod.metadata.name] = pod
        return pod

    def read_namespaced_pod(self, name: str, namespace: str) -> k8s.V1Pod:
        self.calls.append("read_namespaced_pod")
        pod = self.pods[name]
        pod.status.phase = self.phases.pop(0) if len(self.phases) > 1 else self.phases[0]
        if self.waiting_reason:
            waiting = k8s.V1ContainerStateWaiting(reason=self.waiting_reason)
            pod.status.container_statuses = [
                k8s.V1ContainerStatus(
                    name="oidc",
                    image="x",
                    image_id="",
                    ready=False,
                    restart_count=0,
                    state=k8s.V1ContainerState(waiting=waiting),
                )
            ]
        return pod

    def read_namespaced_pod_log(self, name: str, namespace: str, tail_lines: int | None = None) -> str:
        self.calls.append("read_namespaced_pod_log")
        return self.log

    def delete_namespaced_pod(self, name: str, namespace: str, body: dict | None = None) -> k8s.V1Status:
        self.calls.append("delete_namespaced_pod")
        assert body["gracePeriodSeconds"] == 0
        self.pods.pop(name)
        return k8s.V1Status(status="Success")


def prover(core: FakeCore, dry_run: bool = False) -> pp.PodProver:
    clock = iter(float(i) for i in range(0, 10000, 5))
    return pp.PodProver(core, dry_run=dry_run, sleep=lambda _seconds: None, clock=lambda: next(clock))


def test_no_node_means_skipped_with_the_reason():
    proof = prover(FakeCore(nodes=0)).prove(request())
    assert proof.status == pp.SKIPPED and "no Ready node that accepts pods" in proof.reason
    assert proof.schedulable_nodes == 0 and not proof.created


def test_check_mode_creates_nothing():
    core = FakeCore()
    proof = prover(core, dry_run=True).prove(request())
    assert (
        proof.status == pp.SKIPPED
        and proof.reason.startswith("check mode")
        and "create_namespaced_pod" not in core.calls
    )


def test_passes_on_the_success_line_and_never_returns_the_secret():
    core = FakeCore()
    proof = prover(core).prove(request())
    assert proof.status == pp.PASSED and proof.created and proof.deleted and core.pods == {}
    assert proof.injected_env == list(pp.INJECTED_ENV)
    assert SECRET not in repr(proof.as_dict())


def test_nodes_that_cannot_be_listed_do_not_stop_the_check():
    core = FakeCore()
    core.nodes_forbidden = True
    proof = prover(core).prove(request())
    assert proof.status == pp.PASSED and proof.schedulable_nodes is None


def test_failure_line_is_quoted_without_the_token():
    proof = prover(FakeCore(log=FAILURE_LOG)).prove(request())
    assert proof.status == pp.FAILED and proof.deleted
    assert len(proof.log_excerpt) == 1 and "AADSTS700213" in proof.log_excerpt[0]
    assert TOKEN not in proof.log_excerpt[0] and "<token>" in proof.log_excerpt[0]
    assert "wid_verify" in proof.fix


def test_webhook_that_did_not_mutate_is_the_cause():
    proof = prover(FakeCore(inject=False)).prove(request())
    assert proof.status == pp.FAILED and proof.deleted
    assert "webhook did not mutate" in proof.cause and "AZURE_FEDERATED_TOKEN_FILE" in proof.cause


def test_image_that_cannot_be_pulled_fails_fast():
    core = FakeCore(phases=("Pending",))
    core.waiting_reason = "ImagePullBackOff"
    proof = prover(core).prove(request(image="registry.invalid/msal-go:1"))
    assert proof.status == pp.FAILED and "cannot pull image registry.invalid/msal-go:1" in proof.cause
    assert core.calls.count("read_namespaced_pod") == 1


def test_no_verdict_before_the_timeout():
    core = FakeCore(phases=("Pending",))
    proof = prover(core).prove(request(timeout=20.0))
    assert proof.status == pp.FAILED and "no verdict from pod wid-verify-abcde after 20 s" in proof.cause
    assert proof.deleted


@pytest.mark.parametrize(
    ("nodes", "dry_run"), [(1, False), (0, False), (1, True)], ids=["nodes", "no-nodes", "check-mode"]
)
def test_missing_service_account_fails_naming_the_option_before_anything_else(nodes, dry_run):
    core = FakeCore(nodes=nodes)
    core.accounts.clear()
    with pytest.raises(WorkloadIdentityError, match=r"^service_account: ServiceAccount 'orders/orders-api' does not"):
        prover(core, dry_run=dry_run).prove(request())
    assert core.calls == ["read_namespaced_service_account", "read_namespace"]


def test_missing_namespace_is_named_when_it_is_the_cause():
    core = FakeCore()
    with pytest.raises(WorkloadIdentityError, match=r"^namespace: namespace 'payments' does not exist"):
        prover(core).prove(request(namespace="payments"))
    assert "create_namespaced_pod" not in core.calls


def test_namespaces_that_may_not_be_read_still_name_the_service_account():
    core = FakeCore()
    core.namespaces_forbidden = True
    with pytest.raises(WorkloadIdentityError, match=r"^service_account: ServiceAccount 'payments/orders-api'"):
        prover(core).prove(request(namespace="payments"))


def test_validation_names_fields():
    errors = pp.validate(request(keyvault_url="kv-orders", secret_name="bad name", timeout=0))
    assert any(e.startswith("keyvault_url: must be the vault's https URL") for e in errors)
    assert any(e.startswith("secret_name: must be 1-127") for e in errors)
    assert "timeout: must be between 1 and 86400 seconds, got 0" in errors


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"image": "ÄÖ"}, "image: must be a container image reference"),
        ({"image": "a?b"}, "image: must be a container image reference"),
        ({"image": "x" * 300}, "image: the image name before the tag must be at most 255"),
        ({"timeout": 10**12}, "timeout: must be between 1 and 86400 seconds"),
        ({"secret_name": "s" * 128}, "secret_name: must be 1-127"),
        ({"keyvault_url": "https://kv.vault.azure.net/secrets/x"}, "keyvault_url: must be the vault's https URL"),
        ({"keyvault_url": "https://kv.vault.azure.net/?x=1"}, "keyvault_url: must be the vault's https URL"),
        ({"keyvault_url": "http://kv.vault.azure.net/"}, "keyvault_url: must be the vault's https URL"),
        ({"service_account": "a" * 254}, "service_account: must be at most 253 characters"),
    ],
)
def test_values_the_pod_or_the_vault_would_refuse(overrides, expected):
    assert any(e.startswith(expected) for e in pp.validate(request(**overrides))), pp.validate(request(**overrides))


def test_valid_request_has_no_errors():
    assert pp.validate(request(image="localhost:5000/mirror/msal-go:v1.2@sha256:" + "a" * 64)) == []
    assert pp.validate(request(keyvault_url="https://kv-wid-rbac.vault.localhost:8443/")) == []


def test_success_lines_are_never_quoted_even_with_failures_before():
    verdict, lines = pp.read_log_verdict(FAILURE_LOG + SUCCESS_LOG)
    assert verdict == pp.PASSED and lines == []
    assert pp.redact_log_line(f'x secret="{SECRET}" y') == "x secret=<redacted> y"
