"""The real Azure Workload Identity mutating webhook (v1.6.0), run as a local process against the lab's apiserver.

What it injects into a pod labelled ``azure.workload.identity/use: "true"`` (the AZURE_* env and the projected
service-account token volume) is what AKS's managed webhook injects, so tests can check a workload's view of
workload identity with a server-side dry run (docs/lab.md §5).

Each lab's webhook listens on a free loopback port of its own, so labs run side by side, each with its webhook.
Upstream's cmd/webhook/main.go has no flag for that port (controller-runtime's default, 9443 on every interface),
so the binary is built from the lab's own entry point, cmd/lab-webhook/main.go, which wires upstream's unchanged
pkg/webhook the same way and adds ``--webhook-host``/``--webhook-port`` (docs/lab.md §5).

With a ``CustomTokenEndpoint`` it also runs v1.6.0's custom token endpoint, which AKS uses for identity bindings: pods
annotated ``azure.workload.identity/use-<suffix>: "true"`` get AZURE_KUBERNETES_TOKEN_PROXY, AZURE_KUBERNETES_SNI_NAME
and AZURE_KUBERNETES_CA_FILE, the CA from a ConfigMap in the projected volume, and a token for the custom audience
(docs/lab.md §5).

Binary: tests/lab/.build/bin/azure-wi-webhook, built by build.sh (``build()``; a no-op when up to date).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.lab import pki
from tests.lab.kube import controlplane

log = logging.getLogger(__name__)

WEBHOOK_DIR = Path(__file__).resolve().parent
BUILD_SCRIPT = WEBHOOK_DIR / "build.sh"
BINARY = WEBHOOK_DIR.parent / ".build" / "bin" / "azure-wi-webhook"

HOST = "127.0.0.1"  # the webhook listens on loopback only (--webhook-host)
PATH = "/mutate-v1-pod"  # where cmd/lab-webhook/main.go registers the pod mutator, as upstream's main does
# Names from upstream's deploy/azure-wi-webhook.yaml (v1.6.0); wid_verify looks for the webhook by this name.
CONFIGURATION_NAME = "azure-wi-webhook-mutating-webhook-configuration"
WEBHOOK_NAME = "mutation.azure-workload-identity.io"
USE_LABEL = "azure.workload.identity/use"
USER = "lab-azure-wi-webhook"  # the webhook's user name at the apiserver (its client certificate's CN)

_START_ATTEMPTS = 3  # a free port can be taken by someone else before the webhook binds it: pick another
_PID_FILE = "azure-wi-webhook.pid"
_PORT_FILE = "azure-wi-webhook.port"  # the admission port, for running()
_LOG_FILE = "azure-wi-webhook.log"


class WebhookError(RuntimeError):
    """The webhook could not be built, started or registered."""


@dataclass(frozen=True)
class CustomTokenEndpoint:
    """v1.6.0's custom token endpoint settings (flags of cmd/webhook/main.go, env of pkg/config/config.go), as the
    upstream chart passes them (charts/workload-identity-webhook: customTokenEndpoint.*)."""

    # --custom-token-endpoint-annotation-suffix: the pod annotation is azure.workload.identity/use-<suffix>
    annotation_suffix: str
    audience: str  # --custom-token-endpoint-audience: the projected token's audience for annotated pods
    token_proxy: str  # AZURE_KUBERNETES_TOKEN_PROXY, injected as is
    sni_name: str  # AZURE_KUBERNETES_SNI_NAME, injected as is
    # AZURE_KUBERNETES_CA_CONFIGMAP_NAME: a ConfigMap (key ca.crt) projected into the token volume at ca-cert/ca.crt,
    # the file AZURE_KUBERNETES_CA_FILE names. LAB CHOICE, as upstream's e2e does it: not AZURE_KUBERNETES_CA_DATA, as
    # with it v1.6.0 injects both variables, which azure-identity refuses (docs/lab.md §5, azure-behaviour §10).
    ca_configmap: str

    @property
    def annotation(self) -> str:
        return f"azure.workload.identity/use-{self.annotation_suffix}"


@dataclass
class Webhook:
    """How the lab's webhook runs; recorded in lab.json under ``webhook``."""

    enabled: bool
    reason: str | None = None  # why it is not enabled
    url: str | None = None
    port: int | None = None  # the admission port, on 127.0.0.1
    authority_host: str | None = None
    pid: int | None = None
    health_url: str | None = None
    log: str | None = None
    # The custom token endpoint, when enabled: CustomTokenEndpoint's fields plus "annotation".
    custom_token_endpoint: dict[str, str] | None = None

    def record(self) -> dict[str, Any]:
        return asdict(self)


def build() -> Path:
    """Build (or confirm up to date) the webhook binary; build.sh owns the staleness check and the lock."""
    try:
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError) as error:
        raise WebhookError(
            f"Failed to build the Azure Workload Identity webhook with {BUILD_SCRIPT}: {error}"
        ) from error
    return BINARY


# ---------------------------------------------------------------------------------------------------------------
# Processes and ports


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` itself holds the listening socket on ``port`` (not merely someone answering)."""
    return bool(_listening_inodes(port) & _socket_inodes(pid))


def _recorded(workdir: Path) -> tuple[int, int] | None:
    """The pid and admission port of the webhook started in ``workdir``."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((workdir / _PID_FILE).read_text().split()[0]), int((workdir / _PORT_FILE).read_text())
    return None


# ---------------------------------------------------------------------------------------------------------------
# Start and stop


def _write_environment_file(path: Path, authority_host: str) -> Path:
    """An Azure environment file naming the lab's Entra login endpoint as the cloud's AD endpoint.

    The webhook injects AZURE_AUTHORITY_HOST from ``azure.EnvironmentFromName(AZURE_ENVIRONMENT)``
    .ActiveDirectoryEndpoint (pkg/webhook/webhook.go getAzureAuthorityHost, pkg/config/config.go of v1.6.0); it has
    no setting for the authority itself. go-autorest's EnvironmentFromName reads the name "AzureStackCloud" from
    the JSON file named by AZURE_ENVIRONMENT_FILEPATH (autorest/azure/environments.go v0.11.30), which is how a
    custom cloud's endpoints reach it.
    """
    path.write_text(json.dumps({"name": "AzureStackCloud", "activeDirectoryEndpoint": authority_host}, indent=2))
    return path


def _wait_ready(process: subprocess.Popen, health_url: str, timeout: float) -> None:
    """Until /readyz answers 200: the webhook server has started and answers TLS (cmd/lab-webhook/main.go)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise WebhookError(f"the webhook exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(health_url, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}"
        except OSError as error:
            last = error
        time.sleep(0.2)
    raise WebhookError(f"{health_url} not ready after {timeout:.0f}s (last: {last})")


def _log_size(path: Path) -> int:
    with contextlib.suppress(OSError):
        return path.stat().st_size
    return 0


def _log_tail(path: Path, since: int = 0, lines: int = 30) -> str:
    """The last ``lines`` lines the webhook logged after byte ``since`` (the log is appended across starts)."""
    with contextlib.suppress(OSError), path.open("rb") as log_file:
        log_file.seek(since)
        text = log_file.read().decode(errors="replace")
        return f"--- {path} ---\n" + "\n".join(text.splitlines()[-lines:])
    return ""


def start(
    workdir: Path,
    ca: pki.KeyPair,
    kubeconfig: Path,
    tenant_id: str,
    authority_host: str,
    timeout: float = 60,
    custom_token_endpoint: CustomTokenEndpoint | None = None,
) -> Webhook:
    """Start the webhook for the lab whose apiserver ``kubeconfig`` reaches, on a free loopback port, and register it
    there.

    Raises WebhookError when the binary is missing and cannot be built, or the webhook fails to start or register.
    """
    binary = build()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    stop(workdir)
    log_path = workdir / _LOG_FILE
    for attempt in range(1, _START_ATTEMPTS + 1):
        since = _log_size(log_path)
        process, port, health_url = _launch(
            workdir, binary, ca, kubeconfig, tenant_id, authority_host, custom_token_endpoint
        )
        try:
            _wait_ready(process, health_url, timeout)
            if not _listens(process.pid, port):  # /readyz dials the port, which someone else could answer
                raise WebhookError(f"the webhook is up but does not hold port {port}")
            break
        except WebhookError as error:
            tail = _log_tail(log_path, since)
            stop(workdir)
            if "address already in use" in tail and attempt < _START_ATTEMPTS:
                log.info("a port picked for the webhook was taken before it listened; picking others")
                continue
            raise WebhookError(f"Failed to start the Azure Workload Identity webhook: {error}\n{tail}") from error
    url = f"https://{HOST}:{port}{PATH}"
    try:
        _register(kubeconfig, url, ca)
    except Exception as error:
        stop(workdir)
        raise WebhookError(f"Failed to register the MutatingWebhookConfiguration: {error}") from error
    return Webhook(
        enabled=True,
        url=url,
        port=port,
        authority_host=authority_host,
        pid=process.pid,
        health_url=health_url,
        log=str(log_path),
        custom_token_endpoint=(
            {**asdict(custom_token_endpoint), "annotation": custom_token_endpoint.annotation}
            if custom_token_endpoint
            else None
        ),
    )


def _launch(
    workdir: Path,
    binary: Path,
    ca: pki.KeyPair,
    kubeconfig: Path,
    tenant_id: str,
    authority_host: str,
    custom_token_endpoint: CustomTokenEndpoint | None,
) -> tuple[subprocess.Popen, int, str]:
    """Start the webhook on free loopback ports; returns the process, its admission port and its /readyz URL."""
    certs = workdir / "certs"
    # The apiserver calls https://127.0.0.1:<port>; tls.crt/tls.key are the names controller-runtime's webhook
    # server reads from --webhook-cert-dir.
    pki.issue(ca, certs, "tls", "azure-wi-webhook", dns_names=("localhost",), ip_addresses=(HOST,))
    port, health, metrics = _free_port(), _free_port(), _free_port()
    environment_file = _write_environment_file(workdir / "azure-environment.json", authority_host)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KUBECONFIG": str(_own_kubeconfig(workdir, ca, kubeconfig)),
        "AZURE_TENANT_ID": tenant_id,  # required; the injected AZURE_TENANT_ID unless the SA names one
        "AZURE_ENVIRONMENT": "AzureStackCloud",
        "AZURE_ENVIRONMENT_FILEPATH": str(environment_file),
    }
    command = [
        str(binary),
        # Upstream's built-in rotator wants a Secret and a Service DNS name that do not exist here, and the lab's
        # entry point leaves it out; the flag says so explicitly (docs/lab.md §5).
        "--disable-cert-rotation",
        f"--webhook-cert-dir={certs}",
        f"--webhook-host={HOST}",
        f"--webhook-port={port}",
        f"--health-addr={HOST}:{health}",
        f"--metrics-addr={HOST}:{metrics}",
        "--log-level=info",
    ]
    if custom_token_endpoint:
        # Upstream's own e2e configures the feature the same way for identity bindings (scripts/ci-e2e.sh of
        # v1.6.0: suffix identity-binding, audience api://AKSIdentityBinding, CA from the ConfigMap kube-root-ca.crt).
        command += [
            f"--custom-token-endpoint-annotation-suffix={custom_token_endpoint.annotation_suffix}",
            f"--custom-token-endpoint-audience={custom_token_endpoint.audience}",
        ]
        env.update(
            {
                "AZURE_KUBERNETES_TOKEN_PROXY": custom_token_endpoint.token_proxy,
                "AZURE_KUBERNETES_SNI_NAME": custom_token_endpoint.sni_name,
                "AZURE_KUBERNETES_CA_CONFIGMAP_NAME": custom_token_endpoint.ca_configmap,
            }
        )
    with (workdir / _LOG_FILE).open("ab") as log_file:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the lab outlives `up`
        )
    controlplane._children[process.pid] = process  # so stop() can reap it when this process started it
    (workdir / _PID_FILE).write_text(f"{process.pid} {controlplane._start_time(process.pid) or ''}\n")
    (workdir / _PORT_FILE).write_text(f"{port}\n")
    return process, port, f"http://{HOST}:{health}/readyz"


def _own_kubeconfig(workdir: Path, ca: pki.KeyPair, admin_kubeconfig: Path) -> Path:
    """A kubeconfig for the webhook's own user, so the apiserver's audit log tells its reads from the tests'.

    In system:masters for simplicity: it only reads ServiceAccounts (and ConfigMaps for the proxy CA) itself.
    """
    server = json.loads(admin_kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    user = pki.issue(ca, workdir / "certs", "client", USER, organizations=("system:masters",), client=True)
    return controlplane._write_kubeconfig(workdir / "webhook.kubeconfig", server, ca, USER, user, USER)


def _register(kubeconfig: Path, url: str, ca: pki.KeyPair) -> None:
    """Upstream's MutatingWebhookConfiguration (deploy/azure-wi-webhook.yaml, v1.6.0), pointed at our URL."""
    from kubernetes import client, config  # imported here: building and stopping need no kubernetes client

    body = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION_NAME, "labels": {"azure-workload-identity.io/system": "true"}},
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "admissionReviewVersions": ["v1", "v1beta1"],
                "clientConfig": {"url": url, "caBundle": base64.b64encode(ca.cert.read_bytes()).decode()},
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "objectSelector": {"matchLabels": {USE_LABEL: "true"}},  # the pod's label
                "reinvocationPolicy": "IfNeeded",
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
                # None: the apiserver calls it for dry-run requests too (admissionregistration/v1 sideEffects).
                "sideEffects": "None",
            }
        ],
    }
    with config.new_client_from_config(config_file=str(kubeconfig)) as api:
        client.AdmissionregistrationV1Api(api).create_mutating_webhook_configuration(body)


def running(workdir: Path) -> bool:
    """Whether the webhook this work folder records is alive and still holds its admission port."""
    recorded = _recorded(Path(workdir))
    return recorded is not None and not controlplane._exited(recorded[0]) and _listens(*recorded)


def stop(workdir: Path) -> None:
    """Stop the webhook started in ``workdir`` (if any) and wait for it to exit. Idempotent."""
    pid_file = Path(workdir) / _PID_FILE
    if pid_file.exists():
        controlplane._stop_one(pid_file)
        pid_file.unlink(missing_ok=True)
    (Path(workdir) / _PORT_FILE).unlink(missing_ok=True)
