"""The lab's Kubernetes control plane: a real etcd + kube-apiserver run as detached local processes.

The binaries come from ``KUBEBUILDER_ASSETS`` (a folder holding ``kube-apiserver`` and ``etcd``, as envtest
uses) when that is set and complete, otherwise from our own ``kube-testenv`` (embedded etcd + kube-apiserver in
one process, built from the official Go modules by ``build.sh``).

The processes outlive the Python process that started them (the lab's ``up`` command exits while the lab keeps
running); their pids are recorded in the work folder, and ``stop()`` ends them.

CLI: ``python -m tests.lab.kube.controlplane build | start --workdir DIR | stop --workdir DIR``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.lab.pki import KeyPair, create_ca, issue, write_rsa_key

log = logging.getLogger(__name__)

KUBE_DIR = Path(__file__).resolve().parent
BUILD_SCRIPT = KUBE_DIR / "build.sh"
KUBE_TESTENV = KUBE_DIR.parent / ".build" / "bin" / "kube-testenv"

RESTRICTED_NAMESPACE = "lab-restricted"
ADMIN_USER = "lab-admin"
RESTRICTED_USER = "lab-restricted-user"
CLUSTER_NAME = "lab"

# Stop order matters: the apiserver first, so its graceful shutdown can still reach etcd.
_PROCESSES = ("kube-testenv", "kube-apiserver", "etcd")
_STOP_GRACE_SECONDS = 30.0


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or configured."""


class BuildError(ControlPlaneError):
    """kube-testenv could not be built (no Go toolchain, no module proxy, compile error)."""


@dataclass
class ControlPlane:
    url: str  # https://127.0.0.1:<port>
    admin_kubeconfig: Path
    restricted_kubeconfig: Path
    restricted_namespace: str  # the namespace the restricted user's Role is bound in
    workdir: Path


# ---------------------------------------------------------------------------------------------------------------
# Binaries


def build() -> Path:
    """Build (or confirm up to date) tests/lab/.build/bin/kube-testenv; build.sh owns the staleness check."""
    try:
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise BuildError(f"Failed to build kube-testenv with {BUILD_SCRIPT}: {error}") from error
    return KUBE_TESTENV


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_binaries() -> dict:
    """Which binaries run the control plane.

    Returns ``{"mode": "envtest", "kube-apiserver": Path, "etcd": Path}`` when KUBEBUILDER_ASSETS names a folder
    holding both executables, else ``{"mode": "kube-testenv", "kube-testenv": Path}`` (built if missing or
    older than its sources; raises BuildError when that fails).
    """
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        apiserver, etcd = Path(assets) / "kube-apiserver", Path(assets) / "etcd"
        if _is_executable(apiserver) and _is_executable(etcd):
            return {"mode": "envtest", "kube-apiserver": apiserver, "etcd": etcd}
        log.warning("KUBEBUILDER_ASSETS=%s lacks kube-apiserver or etcd; using kube-testenv", assets)
    return {"mode": "kube-testenv", "kube-testenv": build()}


# ---------------------------------------------------------------------------------------------------------------
# Processes


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (/proc/<pid>/stat field 22): guards stop() against pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


_children: dict[int, subprocess.Popen] = {}  # kept so this process can reap what it started


def _launch(workdir: Path, name: str, command: Sequence[str]) -> subprocess.Popen:
    log_file = (workdir / f"{name}.log").open("ab")
    with log_file:
        process = subprocess.Popen(
            list(command),
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # detached: survives the launcher and its terminal's signals
        )
    _children[process.pid] = process
    (workdir / f"{name}.pid").write_text(f"{process.pid} {_start_time(process.pid) or ''}\n")
    return process


def _exited(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie someone else has to reap
    except OSError:
        return True


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _exited(pid):
            return True
        time.sleep(0.1)
    return _exited(pid)


def _stop_one(pid_file: Path) -> None:
    fields = pid_file.read_text().split()
    pid, recorded_start = int(fields[0]), (fields[1] if len(fields) > 1 else None)
    if recorded_start and _start_time(pid) not in (None, recorded_start):
        log.info("%s: pid %s now belongs to another process; nothing to stop", pid_file.name, pid)
        return
    if not _exited(pid):
        # SIGTERM: graceful apiserver shutdown, then kube-testenv closes its embedded etcd. A second signal
        # would make the apiserver exit at once (docs/lab.md §1.1), so escalate straight to SIGKILL.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_exit(pid, _STOP_GRACE_SECONDS):
            log.warning("%s (pid %s) ignored SIGTERM; killing its process group", pid_file.stem, pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            _wait_exit(pid, 10)
    _children.pop(pid, None)


def running(workdir: Path) -> bool:
    """Whether the control plane started in ``workdir`` still runs: every process it recorded is alive (and is still
    the process recorded, not a reused pid)."""
    workdir = Path(workdir)
    pid_files = [workdir / f"{name}.pid" for name in _PROCESSES if (workdir / f"{name}.pid").exists()]
    for pid_file in pid_files:
        fields = pid_file.read_text().split()
        pid, recorded_start = int(fields[0]), (fields[1] if len(fields) > 1 else None)
        if _exited(pid) or (recorded_start and _start_time(pid) != recorded_start):
            return False
    return bool(pid_files)


def stop(workdir: Path) -> None:
    """Stop the control plane started in ``workdir`` and wait for its processes to exit. Idempotent."""
    workdir = Path(workdir)
    for name in _PROCESSES:
        pid_file = workdir / f"{name}.pid"
        if pid_file.exists():
            _stop_one(pid_file)
            pid_file.unlink(missing_ok=True)


def _log_tail(workdir: Path, lines: int = 30) -> str:
    tails = []
    for name in _PROCESSES:
        path = workdir / f"{name}.log"
        if path.exists():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {path} ---\n" + "\n".join(text))
    return "\n".join(tails)


# ---------------------------------------------------------------------------------------------------------------
# Certificates, flags, kubeconfigs


def _write_public_key(private_key_path: Path, public_key_path: Path) -> None:
    key = serialization.load_pem_private_key(private_key_path.read_bytes(), password=None)
    public_key_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _apiserver_args(port: int, pki: Path, ca: KeyPair, issuer_url: str, jwks_uri: str) -> list[str]:
    """kube-apiserver flags: envtest's defaults plus the lab's own PKI and issuer (docs/lab.md §3.1, §3.2)."""
    return [
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={pki}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={ca.cert}",
        "--authorization-mode=RBAC",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--allow-privileged=true",
        # No controller-manager creates `default` service accounts, so the plugin would reject every pod.
        "--disable-admission-plugins=ServiceAccount",
        # The issuer is hosted by another lab server (the emulated AKS OIDC endpoint); --api-audiences stays
        # unset so api://AzureADTokenExchange tokens cannot authenticate to this apiserver (docs/lab.md §3.2).
        f"--service-account-issuer={issuer_url}",
        f"--service-account-jwks-uri={jwks_uri}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        # Less background work; endpoint reconciling would publish 127.0.0.1 as the `kubernetes` Service.
        "--enable-priority-and-fairness=false",
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        # An audit log of every write (dry runs included, marked dryRun in the URI) lets tests prove that check
        # mode wrote nothing to the API server.
        f"--audit-policy-file={_write_audit_policy(pki.parent / 'audit-policy.yaml')}",
        f"--audit-log-path={pki.parent / AUDIT_LOG}",
        "--audit-log-format=json",
        "--audit-log-mode=blocking",
    ]


AUDIT_LOG = "audit.log"
_WRITE_VERBS = ["create", "update", "patch", "delete", "deletecollection"]
# Reads are logged too, so the benchmark (tests/bench.py) can count every request a flow makes; watches are not
# (one long request each, and the webhook keeps one open).
_READ_VERBS = ["get", "list"]


def _write_audit_policy(path: Path) -> Path:
    """Metadata-level events for requests by people and tools; the apiserver's own bookkeeping is left out."""
    policy = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "None", "users": ["system:apiserver"]},
            {"level": "None", "userGroups": ["system:nodes"]},
            {"level": "Metadata", "verbs": _WRITE_VERBS + _READ_VERBS},
            {"level": "None"},
        ],
    }
    path.write_text(json.dumps(policy))
    return path


def audit_writes(workdir: Path, since: int = 0) -> list[dict]:
    """Write events recorded after line ``since`` of the audit log: [{verb, uri, user, code, dry_run}, ...]."""
    return [event for event in audit_requests(workdir, since) if event["verb"] in _WRITE_VERBS]


def audit_requests(workdir: Path, since: int = 0) -> list[dict]:
    """Every logged request (reads and writes) after line ``since`` of the audit log."""
    log = workdir / AUDIT_LOG
    if not log.exists():
        return []
    events = []
    for line in log.read_text().splitlines()[since:]:
        event = json.loads(line)
        uri = event.get("requestURI", "")
        events.append(
            {
                "verb": event.get("verb"),
                "uri": uri,
                "user": event.get("user", {}).get("username"),
                "code": event.get("responseStatus", {}).get("code"),
                "dry_run": "dryRun=All" in uri,
            }
        )
    return events


def audit_mark(workdir: Path) -> int:
    """The current length of the audit log, to pass as ``since`` later."""
    log = workdir / AUDIT_LOG
    return len(log.read_text().splitlines()) if log.exists() else 0


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _write_kubeconfig(
    path: Path, url: str, ca: KeyPair, user: str, client: KeyPair, context: str, cluster: str = CLUSTER_NAME
) -> Path:
    # JSON is YAML: kubectl, the kubernetes client and kubernetes.core read it, and no YAML library is needed.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": url, "certificate-authority-data": _b64(ca.cert)}}],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": _b64(client.cert), "client-key-data": _b64(client.key)},
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Readiness and post-start objects


def _wait_ready(url: str, ca: KeyPair, admin: KeyPair, processes: Sequence[subprocess.Popen], timeout: float) -> None:
    context = ssl.create_default_context(cafile=str(ca.cert))
    context.load_cert_chain(str(admin.cert), str(admin.key))
    deadline = time.monotonic() + timeout
    last_error: object = None
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise ControlPlaneError(f"{process.args[0]} exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", context=context, timeout=5) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as error:
            last_error = f"HTTP {error.code}"  # 500 while post-start hooks (RBAC bootstrap...) still run
        except (OSError, ssl.SSLError) as error:
            last_error = error
        time.sleep(0.25)
    raise ControlPlaneError(f"{url}/readyz not ready after {timeout:.0f}s (last: {last_error})")


def _wait_etcd(client_url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ControlPlaneError(f"etcd exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{client_url}/health", timeout=2) as response:
                if json.load(response).get("health") == "true":
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise ControlPlaneError(f"etcd at {client_url} not healthy after {timeout:.0f}s")


def _restricted_role(namespace: str) -> dict:
    """What a least-privileged workload identity operator needs in its namespace, and no more.

    - serviceaccounts: full lifecycle, since workload identity is configured by annotating and labelling them;
    - serviceaccounts/token create: TokenRequest, to obtain a federated token for a service account;
    - configmaps: get/list/create/update/patch/delete, for identity settings handed to workloads;
    - pods, deployments/statefulsets/daemonsets, jobs/cronjobs: read and patch only, to label pod templates
      (azure.workload.identity/use) and restart rollouts; never create or delete workloads.
    """
    read_patch = ["get", "list", "watch", "patch"]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "lab-workload-identity-operator", "namespace": namespace},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["serviceaccounts"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            },
            {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "verbs": ["get", "list", "create", "update", "patch", "delete"],
            },
            {"apiGroups": [""], "resources": ["pods"], "verbs": read_patch},
            {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"], "verbs": read_patch},
            {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": read_patch},
        ],
    }


def _apply_lab_objects(admin_kubeconfig: Path, namespace: str) -> None:
    # Imported here: building and stopping need no kubernetes client.
    from kubernetes import client, config

    with config.new_client_from_config(config_file=str(admin_kubeconfig)) as api:
        rbac = client.RbacAuthorizationV1Api(api)
        # Entra (and the lab's emulator) fetch the OIDC discovery document and JWKS without credentials; the
        # bootstrap policy binds the discovery role only to system:serviceaccounts (docs/lab.md §4).
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": "lab-oidc-discovery-anonymous"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:service-account-issuer-discovery",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:unauthenticated"}
                ],
            }
        )
        client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
        role = _restricted_role(namespace)
        rbac.create_namespaced_role(namespace, role)
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": role["metadata"]["name"], "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": RESTRICTED_USER}],
            },
        )


# ---------------------------------------------------------------------------------------------------------------
# Start


def _launch_envtest(workdir: Path, binaries: dict, apiserver_args: list[str], timeout: float) -> list:
    """Separate etcd and kube-apiserver processes, etcd flagged as envtest does (docs/lab.md §2)."""
    client_url, peer_url = f"http://127.0.0.1:{_free_port()}", f"http://127.0.0.1:{_free_port()}"
    etcd_args = [
        str(binaries["etcd"]),
        f"--data-dir={workdir / 'etcd-data'}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=default={peer_url}",
    ]
    etcd_help = subprocess.run([etcd_args[0], "--help"], capture_output=True, text=True, check=False)
    if "unsafe-no-fsync" in etcd_help.stdout + etcd_help.stderr:  # as envtest: only if this etcd knows it
        etcd_args.append("--unsafe-no-fsync=true")
    etcd = _launch(workdir, "etcd", etcd_args)
    _wait_etcd(client_url, etcd, timeout)
    apiserver = _launch(
        workdir, "kube-apiserver", [str(binaries["kube-apiserver"]), *apiserver_args, f"--etcd-servers={client_url}"]
    )
    return [etcd, apiserver]


def _launch_kube_testenv(workdir: Path, binary: Path, apiserver_args: list[str]) -> list:
    command = [
        str(binary),
        f"--etcd-data-dir={workdir / 'etcd-data'}",
        f"--etcd-client-port={_free_port()}",
        f"--etcd-peer-port={_free_port()}",
        "--",
        *apiserver_args,
    ]
    return [_launch(workdir, "kube-testenv", command)]


def start(
    workdir: Path,
    ca: KeyPair,
    issuer_url: str,
    jwks_uri: str,
    port: int | None = None,
    timeout: float = 180,
    cluster_name: str = CLUSTER_NAME,
) -> ControlPlane:
    """Start a fresh control plane in ``workdir`` and return how to reach it.

    ``issuer_url`` is used verbatim as the tokens' ``iss`` (Entra compares it exactly, trailing slash included);
    ``jwks_uri`` is what the apiserver's discovery document advertises. ``timeout`` bounds the wait for
    readiness (not a first build of kube-testenv). Anything left running in ``workdir`` is stopped first.
    ``cluster_name`` names the cluster in the kubeconfigs (contexts ``<name>-admin``, ``<name>-restricted``), so the
    kubeconfigs of two control planes can be merged.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    binaries = find_binaries()
    stop(workdir)
    shutil.rmtree(workdir / "etcd-data", ignore_errors=True)  # the lab's cluster state is disposable

    pki = workdir / "pki"
    issue(ca, pki, "apiserver", "kube-apiserver", dns_names=("localhost",), ip_addresses=("127.0.0.1",))
    admin = issue(ca, pki, "admin", ADMIN_USER, organizations=("system:masters",), client=True)
    restricted = issue(ca, pki, "restricted", RESTRICTED_USER, client=True)
    _write_public_key(write_rsa_key(pki / "sa.key"), pki / "sa.pub")

    port = port or _free_port()
    url = f"https://127.0.0.1:{port}"
    plane = ControlPlane(
        url=url,
        admin_kubeconfig=_write_kubeconfig(
            workdir / "admin.kubeconfig", url, ca, ADMIN_USER, admin, f"{cluster_name}-admin", cluster_name
        ),
        restricted_kubeconfig=_write_kubeconfig(
            workdir / "restricted.kubeconfig",
            url,
            ca,
            RESTRICTED_USER,
            restricted,
            f"{cluster_name}-restricted",
            cluster_name,
        ),
        restricted_namespace=RESTRICTED_NAMESPACE,
        workdir=workdir,
    )

    apiserver_args = _apiserver_args(port, pki, ca, issuer_url, jwks_uri)
    began = time.monotonic()
    try:
        if binaries["mode"] == "envtest":
            processes = _launch_envtest(workdir, binaries, apiserver_args, timeout)
        else:
            processes = _launch_kube_testenv(workdir, binaries["kube-testenv"], apiserver_args)
        _wait_ready(url, ca, admin, processes, timeout)
        log.info("kube-apiserver at %s ready in %.1fs", url, time.monotonic() - began)
        _apply_lab_objects(plane.admin_kubeconfig, plane.restricted_namespace)
    except Exception as error:
        tail = _log_tail(workdir)
        stop(workdir)
        raise ControlPlaneError(f"Failed to start the control plane in {workdir}: {error}\n{tail}") from error
    return plane


# ---------------------------------------------------------------------------------------------------------------
# CLI (manual use and CI prebuild)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.kube.controlplane")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build kube-testenv (no-op when up to date)")
    start_parser = commands.add_parser("start", help="start a control plane in WORKDIR (its own CA in WORKDIR/ca)")
    start_parser.add_argument("--workdir", type=Path, required=True)
    start_parser.add_argument("--port", type=int)
    start_parser.add_argument("--issuer-url", help="default: the apiserver itself, https://127.0.0.1:<port>/")
    start_parser.add_argument("--jwks-uri", help="default: <issuer-url>openid/v1/jwks")
    stop_parser = commands.add_parser("stop", help="stop the control plane in WORKDIR")
    stop_parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.command == "build":
        print(build())
    elif args.command == "start":
        port = args.port or _free_port()
        issuer_url = args.issuer_url or f"https://127.0.0.1:{port}/"
        jwks_uri = args.jwks_uri or issuer_url.rstrip("/") + "/openid/v1/jwks"
        plane = start(args.workdir, create_ca(args.workdir / "ca"), issuer_url, jwks_uri, port=port)
        print(json.dumps({key: str(value) for key, value in vars(plane).items()}, indent=2))
    else:
        stop(args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
