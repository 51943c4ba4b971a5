# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The docs' verification pod, run for real: labelled, using the ServiceAccount, reading a Key Vault secret.

Microsoft's walk-through ("Deploy and configure workload identity on AKS", and the azure-workload-identity quick
start) proves the chain by deploying the msal-go sample pod with KEYVAULT_URL and SECRET_NAME and reading its log.
The sample (github.com/Azure/azure-workload-identity, examples/msal-go/main.go) logs ``successfully got secret``
with the secret's value, or ``failed to get secret from keyvault`` with the error, and exits 1. So the log is read
only to find which of the two lines it holds: the secret's value is never returned, and only failure lines (which
carry the error, not the secret) are quoted, with anything token-like removed.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import re
import time
import typing as t
from dataclasses import dataclass, field

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.kubernetes import (
    Namespaces,
    Nodes,
    Pods,
    ServiceAccounts,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ENV_CLIENT_ID,
    ENV_TENANT_ID,
    LABEL_USE,
    LABEL_USE_VALUE,
    validate_container_image,
    validate_keyvault_object_name,
    validate_keyvault_url,
    validate_namespace,
    validate_service_account_name,
    validate_wait_timeout,
)

DEFAULT_IMAGE = "ghcr.io/azure/azure-workload-identity/msal-go:latest"
SUCCESS_LINE = "successfully got secret"
FAILURE_LINE = "failed to get secret from keyvault"
# What the webhook injects into every container (Azure/azure-workload-identity pkg/webhook/webhook.go and consts.go).
INJECTED_ENV = (ENV_CLIENT_ID, ENV_TENANT_ID, "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST")
# Waiting reasons that never resolve by waiting longer.
STUCK_REASONS = {
    "ErrImagePull": "the node cannot pull image {image}",
    "ImagePullBackOff": "the node cannot pull image {image}",
    "InvalidImageName": "image {image} is not a valid image reference",
    "CreateContainerConfigError": "the container's configuration is invalid",
}
POLL_SECONDS = 2.0
LOG_TAIL_LINES = 50
_TOKENISH = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_SECRET_FIELD = re.compile(r'(secret=)("[^"]*"|\S+)')

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass(frozen=True)
class PodRequest:
    namespace: str
    service_account: str
    keyvault_url: str
    secret_name: str
    image: str = DEFAULT_IMAGE
    timeout: float = 180.0
    keep_pod: bool = False
    node_selector: t.Mapping[str, str] = field(default_factory=lambda: {"kubernetes.io/os": "linux"})


def validate(request: PodRequest) -> list[str]:
    """Every input rule, as "field: rule" messages, checked before any request."""
    return [
        *validate_namespace(request.namespace),
        *validate_service_account_name(request.service_account),
        *validate_keyvault_url(request.keyvault_url),  # the sample reads KEYVAULT_URL + the secret's path
        *validate_keyvault_object_name(request.secret_name),
        *validate_container_image(request.image),
        *validate_wait_timeout(request.timeout, "timeout"),
    ]


def pod_body(request: PodRequest) -> dict[str, t.Any]:
    """The docs' sample pod: the label on the pod, the ServiceAccount, the vault and secret to read."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "wid-verify-",
            "namespace": request.namespace,
            "labels": {LABEL_USE: LABEL_USE_VALUE, "app.kubernetes.io/managed-by": "aks.workload_identity"},
        },
        "spec": {
            "serviceAccountName": request.service_account,
            "restartPolicy": "Never",
            "nodeSelector": dict(request.node_selector),
            "containers": [
                {
                    "name": "oidc",
                    "image": request.image,
                    "env": [
                        {"name": "KEYVAULT_URL", "value": request.keyvault_url},
                        {"name": "SECRET_NAME", "value": request.secret_name},
                    ],
                }
            ],
        },
    }


def injected_env(pod: t.Any) -> list[str]:
    """Names of the webhook's variables present in every container of the stored pod."""
    containers = pod.spec.containers or []
    names = [{variable.name for variable in (container.env or [])} for container in containers]
    return [name for name in INJECTED_ENV if names and all(name in found for found in names)]


def redact_log_line(line: str) -> str:
    return _SECRET_FIELD.sub(r"\1<redacted>", _TOKENISH.sub("<token>", line))


def read_log_verdict(log: str) -> tuple[str | None, list[str]]:
    """(PASSED | FAILED | None, failure lines redacted). Success lines are never returned: they carry the secret."""
    lines = log.splitlines()
    failures = [redact_log_line(line) for line in lines if FAILURE_LINE in line]
    if any(SUCCESS_LINE in line for line in lines):
        return PASSED, []
    if failures:
        return FAILED, failures[-3:]
    return None, []


@dataclass
class Proof:
    status: str
    reason: str = ""
    cause: str | None = None
    fix: str | None = None
    pod_name: str | None = None
    injected_env: list[str] = field(default_factory=list)
    log_excerpt: list[str] = field(default_factory=list)
    schedulable_nodes: int | None = None
    created: bool = False
    deleted: bool = False

    def as_dict(self) -> dict[str, t.Any]:
        return dict(self.__dict__)


class PodProver:
    """Creates the sample pod, waits for its verdict in the log, and deletes it again (through the gateways)."""

    def __init__(self, core_v1: t.Any, *, clock: t.Callable[[], float] = time.monotonic, **caller: t.Any) -> None:
        self.pods = Pods(core_v1, **caller)
        self.nodes = Nodes(core_v1, calls=self.pods.calls, **caller)
        self.accounts = ServiceAccounts(core_v1, calls=self.pods.calls, **caller)
        self.namespaces = Namespaces(core_v1, calls=self.pods.calls, **caller)
        self.dry_run = self.pods.dry_run
        self.sleep = self.pods.sleep
        self.clock = clock

    def schedulable_nodes(self) -> int | None:
        """Ready nodes that accept pods; None when the caller may not list nodes (then the pod is tried)."""
        return self.nodes.schedulable()

    def prove(self, request: PodRequest) -> Proof:
        self._require_service_account(request)
        nodes = self.schedulable_nodes()
        if nodes == 0:
            return Proof(
                SKIPPED,
                reason="the cluster has no Ready node that accepts pods, so no pod can run (a control plane without "
                "nodes, such as this collection's lab); the token exchange was proven without a pod",
                schedulable_nodes=0,
            )
        if self.dry_run:
            return Proof(SKIPPED, reason="check mode: the verification pod would be created", schedulable_nodes=nodes)
        pod = self.pods.create(request.namespace, pod_body(request))
        proof = Proof(FAILED, pod_name=pod.metadata.name, schedulable_nodes=nodes, created=True)
        try:
            self._judge(request, pod, proof)
        finally:
            if not request.keep_pod:
                self._delete(request, proof)
        return proof

    def _require_service_account(self, request: PodRequest) -> None:
        """The pod's parents, read before anything else (check mode too): a missing ServiceAccount, or namespace,
        fails naming the option, and nothing is created."""
        if self.accounts.read(request.namespace, request.service_account) is not None:
            return
        target = f"'{request.namespace}/{request.service_account}'"
        try:
            namespace_missing = self.namespaces.read(request.namespace) is None
        except WorkloadIdentityError as error:
            if error.status != 403:  # may not read namespaces: name the ServiceAccount, which is missing either way
                raise
            namespace_missing = False
        if namespace_missing:
            raise WorkloadIdentityError(
                f"namespace: namespace '{request.namespace}' does not exist, so ServiceAccount {target} does not "
                "either; create both (aks.workload_identity.wid_service_account with create_namespace: true)",
                code="NotFound",
                status=404,
                target=target,
            )
        raise WorkloadIdentityError(
            f"service_account: ServiceAccount {target} does not exist; create and annotate it with "
            "aks.workload_identity.wid_service_account (the workload role does)",
            code="NotFound",
            status=404,
            target=target,
        )

    def _judge(self, request: PodRequest, pod: t.Any, proof: Proof) -> None:
        proof.injected_env = injected_env(pod)
        missing = [name for name in INJECTED_ENV if name not in proof.injected_env]
        if missing:
            proof.cause = (
                f"the workload identity webhook did not mutate pod {pod.metadata.name}: {', '.join(missing)} not "
                "injected although the pod carries the label azure.workload.identity/use=true"
            )
            proof.fix = (
                "enable workload identity on the cluster (aks_oidc workload_identity: true), which installs the "
                "webhook, and check that its MutatingWebhookConfiguration selects pods with that label"
            )
            return
        deadline = self.clock() + request.timeout
        while True:
            current = self.pods.read(request.namespace, pod.metadata.name)
            stuck = self._stuck(current, request)
            if stuck:
                proof.cause, proof.fix = stuck, "fix the pod's image or configuration (option image), then run again"
                return
            if current.status.phase in ("Running", "Succeeded", "Failed"):
                log = self.pods.log(request.namespace, pod.metadata.name, LOG_TAIL_LINES)
                verdict, failures = read_log_verdict(log or "")
                if verdict == PASSED:
                    proof.status = PASSED
                    return
                if verdict == FAILED or current.status.phase == "Failed":
                    proof.log_excerpt = failures
                    proof.cause = "the pod could not read the secret with its workload identity (see log_excerpt)"
                    proof.fix = "run aks.workload_identity.wid_verify for this ServiceAccount: it names the broken link"
                    return
            if self.clock() >= deadline:
                proof.cause = (
                    f"no verdict from pod {pod.metadata.name} after {request.timeout:g} s (phase "
                    f"{current.status.phase})"
                )
                proof.fix = (
                    "look at the pod's events (kubectl describe pod) and raise timeout if the image pulls slowly"
                )
                return
            self.sleep(POLL_SECONDS)

    @staticmethod
    def _stuck(pod: t.Any, request: PodRequest) -> str | None:
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting if status.state else None
            if waiting is not None and waiting.reason in STUCK_REASONS:
                return STUCK_REASONS[waiting.reason].format(image=request.image) + f" ({waiting.reason})"
        return None

    def _delete(self, request: PodRequest, proof: Proof) -> None:
        self.pods.delete_now(request.namespace, t.cast(str, proof.pod_name))
        proof.deleted = True
