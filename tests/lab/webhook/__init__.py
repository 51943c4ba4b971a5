"""The real Azure Workload Identity mutating webhook (v1.6.0), run as a local process against the lab's apiserver.

What it injects into a pod labelled ``azure.workload.identity/use: "true"`` (the AZURE_* env and the projected
service-account token volume) is what AKS's managed webhook injects, so tests can check a workload's view of
workload identity with a server-side dry run (kube-testenv.md §5).

The webhook serves admission requests on port 9443 of every interface: controller-runtime's default webhook
port, which the webhook's command line does not expose (cmd/webhook/main.go of v1.6.0 only passes CertDir and
TLSOpts to webhook.NewServer). So on one machine one lab at a time can run it. ``start`` claims the port under a
machine-wide lock; a lab that finds it held by anything else comes up without the webhook and records why (its
lab.json says ``webhook.enabled: false, port_busy: true``). Only the lab that runs the webhook registers the
MutatingWebhookConfiguration, so no apiserver ever calls another lab's webhook.

Binary: tests/lab/.build/bin/azure-wi-webhook, built by build.sh (``build()``; a no-op when up to date).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
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

PORT = 9443  # controller-runtime's default webhook port; not configurable by the webhook's flags (see above)
PATH = "/mutate-v1-pod"  # where cmd/webhook/main.go registers the pod mutator
# Names from upstream's deploy/azure-wi-webhook.yaml (v1.6.0); wid_verify looks for the webhook by this name.
CONFIGURATION_NAME = "azure-wi-webhook-mutating-webhook-configuration"
WEBHOOK_NAME = "mutation.azure-workload-identity.io"
USE_LABEL = "azure.workload.identity/use"
USER = "lab-azure-wi-webhook"  # the webhook's user name at the apiserver (its client certificate's CN)

# One lock for every lab on the machine: claiming port 9443 (probe, start, wait until it listens) is one step.
_PORT_LOCK = Path(tempfile.gettempdir()) / f"aks-wid-lab-webhook-{PORT}.lock"
# Set in the webhook's environment: tells a later lab which lab's webhook holds the port.
_WORKDIR_MARKER = "AKS_WID_LAB_WEBHOOK_WORKDIR"
_PID_FILE = "azure-wi-webhook.pid"
_LOG_FILE = "azure-wi-webhook.log"


class WebhookError(RuntimeError):
    """The webhook could not be built, started or registered."""


@dataclass
class Webhook:
    """How the lab's webhook runs; recorded in lab.json under ``webhook``."""

    enabled: bool
    reason: str | None = None  # why it is not enabled
    port_busy: bool = False  # not enabled because another process holds port 9443 (a test may skip then)
    url: str | None = None
    authority_host: str | None = None
    pid: int | None = None
    health_url: str | None = None
    log: str | None = None

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
# Who holds port 9443


def _port_free(port: int = PORT) -> bool:
    """Whether a listener on every interface could bind ``port`` now (as the webhook's listener binds ':9443')."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's listeners: TIME_WAIT is no obstacle
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
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


def _listens(pid: int, port: int = PORT) -> bool:
    """Whether process ``pid`` itself holds the listening socket on ``port`` (not merely someone answering)."""
    wanted = _listening_inodes(port)
    return bool(wanted & _socket_inodes(pid))


def _owner(port: int = PORT) -> int | None:
    """The pid listening on ``port``, when this user can see it."""
    wanted = _listening_inodes(port)
    if not wanted:
        return None
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and wanted & _socket_inodes(int(entry.name)):
            return int(entry.name)
    return None


def _environ(pid: int) -> dict[str, str]:
    try:
        items = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return {}
    return dict(item.decode(errors="replace").split("=", 1) for item in items if b"=" in item)


def _lab_of(pid: int) -> Path | None:
    """The lab work folder of a lab webhook process (from its environment), or None for any other process."""
    marker = _environ(pid).get(_WORKDIR_MARKER)
    return Path(marker) if marker else None


def _apiserver_gone(pid: int) -> bool:
    """Whether the apiserver a lab webhook serves is certainly gone: its kubeconfig deleted, or nothing listening."""
    kubeconfig = _environ(pid).get("KUBECONFIG")
    if not kubeconfig:
        return False
    try:
        server = urllib.parse.urlsplit(json.loads(Path(kubeconfig).read_text())["clusters"][0]["cluster"]["server"])
    except FileNotFoundError:
        return True
    except (OSError, ValueError, KeyError, IndexError):
        return False  # not a kubeconfig the lab wrote: leave the process alone
    try:
        with socket.create_connection((server.hostname, server.port or 443), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _recorded_pid(workdir: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((workdir / _PID_FILE).read_text().split()[0])
    return None


def _reclaim_orphan(owner: int) -> bool:
    """Stop ``owner`` if it is a lab webhook whose lab is gone: its work folder no longer records it (deleted,
    or brought down without stopping it), or the apiserver it serves no longer runs (the lab died without `down`).
    """
    workdir = _lab_of(owner)
    if workdir is None:
        return False  # not a lab webhook
    if _recorded_pid(workdir) == owner and not _apiserver_gone(owner):
        return False  # a live lab's
    log.warning("stopping the webhook (pid %s) left behind by the lab in %s, which is gone", owner, workdir)
    pid_file = Path(tempfile.mkdtemp()) / _PID_FILE
    pid_file.write_text(f"{owner} {controlplane._start_time(owner) or ''}\n")
    controlplane._stop_one(pid_file)
    pid_file.unlink()
    pid_file.parent.rmdir()
    return True


def _busy_reason(owner: int | None) -> str:
    if owner is None:
        return f"port {PORT} is in use by a process this user cannot see"
    workdir = _lab_of(owner)
    if workdir is not None:
        return f"port {PORT} is held by the webhook of another lab (pid {owner}, work folder {workdir})"
    return f"port {PORT} is in use by pid {owner}"


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
    """Until /readyz answers 200: the webhook server has started (cmd/webhook/main.go setupProbeEndpoints)."""
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


def _log_tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return f"--- {path} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(
    workdir: Path,
    ca: pki.KeyPair,
    kubeconfig: Path,
    tenant_id: str,
    authority_host: str,
    timeout: float = 60,
) -> Webhook:
    """Start the webhook for the lab whose apiserver ``kubeconfig`` reaches, and register it there.

    Returns ``Webhook(enabled=False, port_busy=True, reason=...)`` when port 9443 belongs to another process;
    raises WebhookError when the binary is missing and cannot be built, or the webhook fails for another reason.
    """
    binary = build()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    stop(workdir)
    with _PORT_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if not _port_free():
            owner = _owner()
            if owner is None or not _reclaim_orphan(owner) or not _port_free():
                reason = _busy_reason(owner)
                log.warning("the lab runs without the Azure Workload Identity webhook: %s", reason)
                return Webhook(enabled=False, port_busy=True, reason=reason)
        process, health_url = _launch(workdir, binary, ca, kubeconfig, tenant_id, authority_host)
        try:
            _wait_ready(process, health_url, timeout)
            if not _listens(process.pid):  # /readyz dials :9443, which could have reached someone else
                raise WebhookError(f"the webhook is up but does not hold port {PORT}")
        except WebhookError as error:
            tail = _log_tail(workdir / _LOG_FILE)
            stop(workdir)
            if "address already in use" in tail:  # lost the port to a process that does not take the lock
                return Webhook(enabled=False, port_busy=True, reason=_busy_reason(_owner()))
            raise WebhookError(f"Failed to start the Azure Workload Identity webhook: {error}\n{tail}") from error
    url = f"https://127.0.0.1:{PORT}{PATH}"
    try:
        _register(kubeconfig, url, ca)
    except Exception as error:
        stop(workdir)
        raise WebhookError(f"Failed to register the MutatingWebhookConfiguration: {error}") from error
    return Webhook(
        enabled=True,
        url=url,
        authority_host=authority_host,
        pid=process.pid,
        health_url=health_url,
        log=str(workdir / _LOG_FILE),
    )


def _launch(
    workdir: Path, binary: Path, ca: pki.KeyPair, kubeconfig: Path, tenant_id: str, authority_host: str
) -> tuple[subprocess.Popen, str]:
    certs = workdir / "certs"
    # The apiserver calls https://127.0.0.1:9443; tls.crt/tls.key are the names controller-runtime's webhook
    # server reads from --webhook-cert-dir.
    pki.issue(ca, certs, "tls", "azure-wi-webhook", dns_names=("localhost",), ip_addresses=("127.0.0.1",))
    health, metrics = _free_port(), _free_port()
    environment_file = _write_environment_file(workdir / "azure-environment.json", authority_host)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KUBECONFIG": str(_own_kubeconfig(workdir, ca, kubeconfig)),
        "AZURE_TENANT_ID": tenant_id,  # required; the injected AZURE_TENANT_ID unless the SA names one
        "AZURE_ENVIRONMENT": "AzureStackCloud",
        "AZURE_ENVIRONMENT_FILEPATH": str(environment_file),
        _WORKDIR_MARKER: str(workdir),
    }
    command = [
        str(binary),
        # The built-in rotator wants a Secret and a Service DNS name that do not exist here (kube-testenv.md §5).
        "--disable-cert-rotation",
        f"--webhook-cert-dir={certs}",
        f"--health-addr=127.0.0.1:{health}",
        f"--metrics-addr=127.0.0.1:{metrics}",
        "--log-level=info",
    ]
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
    return process, f"http://127.0.0.1:{health}/readyz"


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
    """Whether the webhook this work folder records is alive and still holds port 9443."""
    pid = _recorded_pid(Path(workdir))
    return pid is not None and not controlplane._exited(pid) and _listens(pid)


def stop(workdir: Path) -> None:
    """Stop the webhook started in ``workdir`` (if any) and wait for it to exit. Idempotent."""
    pid_file = Path(workdir) / _PID_FILE
    if pid_file.exists():
        controlplane._stop_one(pid_file)
        pid_file.unlink(missing_ok=True)
