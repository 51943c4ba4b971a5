"""Bring the whole lab up or down: the Azure emulator and a real kube-apiserver, wired together.

    python -m tests.lab build     # build the kube-apiserver and webhook binaries (no-op when up to date)
    python -m tests.lab up        # build what is missing, start everything, write .run/lab.env and .run/lab.json
    python -m tests.lab down      # stop everything
    python -m tests.lab status    # say what runs where
    python -m tests.lab env       # print the env file (source it: set -a; . tests/lab/.run/lab.env; set +a)
    python -m tests.lab add-cluster green   # a second cluster (own apiserver, etcd, keys, issuer), on demand
    python -m tests.lab remove-cluster green
    python -m tests.lab pod-identity-crds   # AAD Pod Identity's CRDs on the (first) apiserver, on demand

The wiring: the emulated AKS cluster's OIDC issuer URL is https://127.0.0.1:<emulator>/<tenant>/<uuid>/,
which is also the kube-apiserver's --service-account-issuer; the emulator publishes the apiserver's JWKS there,
so a token the real apiserver signs can be exchanged at the emulated Entra ID, as on AKS.

The real Azure Workload Identity webhook runs against the apiserver too, on a free loopback port of each lab's own,
injecting the AZURE_* env and the token volume into labelled pods as on AKS; any number of labs can run side by
side, each with its webhook (see webhook/__init__.py).

Identity bindings: the webhook runs with v1.6.0's custom token endpoint as AKS configures it (annotation
azure.workload.identity/use-identity-binding, audience api://AKSIdentityBinding), pointing pods at the AKS token proxy
the emulator serves on a port of its own (azure/token_proxy.py), with a certificate for the injected SNI name issued
by the lab CA, which pods read from the ConfigMap kube-root-ca.crt (docs/lab.md §5, azure-behaviour §10).

More clusters, on demand (docs/lab.md §8): add-cluster NAME starts another control plane (its own kube-testenv, etcd
data, cluster CA and service-account key) whose --service-account-issuer is a new AKS-shaped issuer on the emulator,
and registers it there as the AKS cluster <seed cluster>-NAME (OIDC issuer and workload identity on), wired like the
first: the emulator publishes that apiserver's keys at its issuer. No webhook and no token proxy serve it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import pki, webhook
from .azure.seed import make_seed
from .azure.state import DEFAULT_SUBSCRIPTION, DEFAULT_TENANT
from .kube import controlplane

REPO = Path(__file__).resolve().parents[2]
DEFAULT_WORKDIR = REPO / "tests" / "lab" / ".run"
RESOLVER = REPO / "tests" / "lab" / "resolver"  # sitecustomize: names under localhost are loopback
# Clusters whose issuer is the lab's kube-apiserver: the seeded one, and the one the from-nothing flow creates.
WIRED_CLUSTERS = [["rg-wid-lab", "aks-wid-lab"], ["rg-wid-demo", "aks-wid-demo"]]

# Identity bindings (docs/lab.md §5, azure-behaviour §10). The webhook's custom token endpoint as AKS sets it up: the
# annotation suffix and audience of upstream's own e2e (scripts/ci-e2e.sh of azure-workload-identity v1.6.0), the
# audience AKS's kubelet credential provider asks for identity bindings too (Azure/AgentBaker e2e: "serviceAccount
# TokenAudience: api://AKSIdentityBinding"), and the CA from the ConfigMap every namespace gets (kube-root-ca.crt).
TOKEN_PROXY_ANNOTATION_SUFFIX = "identity-binding"
TOKEN_PROXY_AUDIENCE = "api://AKSIdentityBinding"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
TOKEN_PROXY_USER = "lab-aks-token-proxy"  # the proxy's user at the apiserver (its client certificate's CN)


@dataclass
class Lab:
    """A running lab, as recorded in lab.json; what tests and playbooks need to reach it."""

    workdir: Path
    emulator_url: str
    ca_file: Path
    kube_url: str
    admin_kubeconfig: Path
    restricted_kubeconfig: Path
    restricted_namespace: str
    seed: dict[str, Any]
    env: dict[str, str]
    emulator_pid: int
    # The Azure Workload Identity webhook: webhook.Webhook.record() ({"enabled": bool, "url": str, "port": int, ...}).
    webhook: dict[str, Any] = field(default_factory=lambda: {"enabled": False, "reason": "not started"})
    # The AKS token proxy of identity bindings: {"url", "sni_name", "ca_file", "audience", "annotation", "ca_configmap"}.
    token_proxy: dict[str, Any] = field(default_factory=dict)
    # Clusters added with add_cluster(), by name: add_cluster()'s record (docs/lab.md §8).
    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)

    # -------------------------------------------------------------- the emulator's control API, for tests
    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.emulator_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return self._call("GET", f"/_lab/requests?since={since}")["requests"]

    def last_seq(self) -> int:
        return self._call("GET", "/_lab/requests?since=999999999")["last_seq"]

    def writes(self, since: int = 0) -> list[dict[str, Any]]:
        """Requests since ``since`` that could change Azure state (token requests excluded)."""
        return [
            r
            for r in self.requests(since)
            if r["method"] in ("PUT", "PATCH", "POST", "DELETE") and r["plane"] in ("arm", "vault")
        ]

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/_lab/state")

    def fault(self, **rule: Any) -> dict[str, Any]:
        return self._call("POST", "/_lab/faults", rule)

    def clear_faults(self) -> None:
        self._call("DELETE", "/_lab/faults")

    def settings(self, **values: float) -> dict[str, Any]:
        return self._call("POST", "/_lab/settings", values)

    def reset(self) -> None:
        self._call("POST", "/_lab/reset", {})

    def concurrency(self) -> dict[str, Any]:
        """Requests in flight per plane (and their maximum), and the most writes at once per identity."""
        return self._call("GET", "/_lab/concurrency")

    def reset_concurrency(self) -> None:
        self._call("DELETE", "/_lab/concurrency")

    # -------------------------------------------------------------- what kube-controller-manager would do
    def publish_root_ca(self, namespace: str) -> None:
        """Put the ConfigMap kube-root-ca.crt (key ca.crt: the cluster CA) in ``namespace``, as kube-controller-
        manager's root CA publisher does in every namespace ("Managing Service Accounts",
        https://kubernetes.io/docs/reference/access-authn-authz/service-accounts-admin/). The lab runs no
        controller-manager (docs/lab.md §3.2); identity-binding pods project this ConfigMap (docs/lab.md §5)."""
        from kubernetes import client, config

        body = {"metadata": {"name": ROOT_CA_CONFIGMAP}, "data": {"ca.crt": self.ca_file.read_text()}}
        with config.new_client_from_config(config_file=str(self.admin_kubeconfig)) as api:
            core = client.CoreV1Api(api)
            try:
                core.create_namespaced_config_map(namespace, body)
            except client.ApiException as error:
                if error.status != 409:
                    raise
                core.replace_namespaced_config_map(ROOT_CA_CONFIGMAP, namespace, body)

    # -------------------------------------------------------------- the kube-apiservers' audit logs, for tests
    # ``cluster``: None for the lab's first apiserver, or the name given to add_cluster().
    def _kube_dir(self, cluster: str | None) -> Path:
        if cluster is None:
            return self.workdir / "kube"
        if cluster not in self.clusters:
            raise KeyError(f"no cluster {cluster!r} in this lab (add_cluster() adds one)")
        return Path(self.clusters[cluster]["workdir"])

    def kube_mark(self, cluster: str | None = None) -> int:
        return controlplane.audit_mark(self._kube_dir(cluster))

    def kube_writes(
        self, since: int = 0, *, include_dry_run: bool = False, cluster: str | None = None
    ) -> list[dict[str, Any]]:
        """Writes the apiserver accepted or refused after ``since`` (dry runs excluded unless asked)."""
        events = controlplane.audit_writes(self._kube_dir(cluster), since)
        return [e for e in events if include_dry_run or not e["dry_run"]]

    def kube_requests(self, since: int = 0, *, cluster: str | None = None) -> list[dict[str, Any]]:
        """Reads and writes the lab's admin (the identity the collection's modules use) sent after ``since``."""
        events = controlplane.audit_requests(self._kube_dir(cluster), since)
        return [e for e in events if e["user"] == controlplane.ADMIN_USER]

    # -------------------------------------------------------------- on demand: more clusters, more CRDs
    def add_cluster(self, name: str) -> dict[str, Any]:
        """Start (or, when it runs already, return) the cluster ``name``: see add_cluster() below. Updates this
        object's ``clusters`` and ``env`` as well as lab.json and lab.env."""
        info = add_cluster(self.workdir, name)
        latest = Lab.load(self.workdir)
        self.clusters, self.env = latest.clusters, latest.env
        return info

    def remove_cluster(self, name: str) -> None:
        """Stop the cluster ``name`` and take it out of the emulator and the settings: see remove_cluster() below."""
        remove_cluster(self.workdir, name)
        latest = Lab.load(self.workdir)
        self.clusters, self.env = latest.clusters, latest.env

    def kubeconfig(self, cluster: str | None = None) -> Path:
        """The admin kubeconfig of the first apiserver, or of the cluster added as ``cluster``."""
        return self.admin_kubeconfig if cluster is None else Path(self.clusters[cluster]["admin_kubeconfig"])

    def install_pod_identity_crds(self, cluster: str | None = None) -> list[str]:
        """AAD Pod Identity's four CRDs (aadpodidentity.k8s.io/v1) on the apiserver, Established; idempotent. No
        controller (MIC, NMI) runs: the objects are only stored (docs/lab.md §9)."""
        from .kube import crds  # here: `up` needs no YAML parser

        return crds.install(self.kubeconfig(cluster))

    @classmethod
    def load(cls, workdir: Path = DEFAULT_WORKDIR) -> Lab:
        record = json.loads((workdir / "lab.json").read_text())
        paths = {"workdir", "ca_file", "admin_kubeconfig", "restricted_kubeconfig"}
        return cls(**{k: Path(v) if k in paths else v for k, v in record.items()})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _healthy(lab: Lab) -> bool:
    if lab.webhook.get("enabled") and not webhook.running(lab.workdir / "webhook"):
        return False  # pods labelled for workload identity would all be refused (failurePolicy Fail)
    try:
        return _alive(lab.emulator_pid) and lab._call("GET", "/_lab/health")["status"] == "ok"
    except OSError:
        return False


def _start_emulator(workdir: Path, ca: pki.KeyPair, port: int, config: dict[str, Any], timeout: float = 60) -> int:
    tls = pki.issue(
        ca,
        workdir / "pki",
        "emulator",
        "aks-wid-lab-emulator",
        dns_names=("localhost", "*.localhost", "*.vault.localhost"),
        ip_addresses=("127.0.0.1", "::1"),
    )
    ready = workdir / "emulator.ready"
    ready.unlink(missing_ok=True)
    settings = {
        "host": "127.0.0.1",
        "port": port,
        "cert": str(tls.cert),
        "key": str(tls.key),
        "ready_file": str(ready),
        **config,
    }
    config_file = workdir / "emulator.json"
    config_file.write_text(json.dumps(settings, indent=2))
    config_file.chmod(0o600)  # holds the lab deployer's secret
    with open(workdir / "emulator.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.lab.azure", "--config", str(config_file)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # the lab outlives `up`
        )
    (workdir / "emulator.pid").write_text(str(process.pid))
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the Azure emulator did not start; see {workdir / 'emulator.log'}")
        time.sleep(0.1)
    return process.pid


def _ca_bundle(workdir: Path, lab_ca: Path) -> Path:
    """The system's trusted CAs plus the lab CA: one bundle that reaches both the lab and the real Azure."""
    import certifi

    system = Path(ssl.get_default_verify_paths().cafile or certifi.where())
    if not system.exists():
        system = Path(certifi.where())
    bundle = workdir / "ca-bundle.pem"
    bundle.write_text(system.read_text() + "\n" + lab_ca.read_text())
    return bundle


def _env(
    lab_base: str,
    seed: dict[str, Any],
    ca_file: Path,
    plane: controlplane.ControlPlane,
    tenant: str,
    subscription: str,
    token_proxy: dict[str, Any],
) -> dict[str, str]:
    """The settings a playbook needs, named as AWX's Azure and Kubernetes credentials inject them, and the LAB_*
    settings only tests need."""
    return {
        "AZURE_CLOUD_ENVIRONMENT": f"{lab_base}/metadata/endpoints?api-version=2022-09-01",
        "AZURE_SUBSCRIPTION_ID": subscription,
        "AZURE_TENANT": tenant,
        "AZURE_CLIENT_ID": seed["deployer_client_id"],
        "AZURE_SECRET": seed["deployer_secret"],
        "AZURE_CA_BUNDLE": str(ca_file),
        "REQUESTS_CA_BUNDLE": str(ca_file),  # for any other requests-based client (az CLI, the SDKs' samples)
        "K8S_AUTH_KUBECONFIG": str(plane.admin_kubeconfig),
        "LAB_EMULATOR_URL": lab_base,
        "LAB_RESTRICTED_KUBECONFIG": str(plane.restricted_kubeconfig),
        # Identity bindings, for tests: what the webhook injects into pods annotated LAB_WEBHOOK_TOKEN_PROXY_ANNOTATION
        # (AZURE_KUBERNETES_TOKEN_PROXY, AZURE_KUBERNETES_SNI_NAME, the token audience) and the file the ConfigMap
        # kube-root-ca.crt holds (AZURE_KUBERNETES_CA_FILE in a pod). Real AKS gives modules none of these.
        "LAB_WEBHOOK_TOKEN_PROXY_ANNOTATION": token_proxy["annotation"],
        "LAB_WEBHOOK_TOKEN_PROXY_AUDIENCE": token_proxy["audience"],
        "LAB_TOKEN_PROXY_URL": token_proxy["url"],
        "LAB_TOKEN_PROXY_SNI_NAME": token_proxy["sni_name"],
        "LAB_TOKEN_PROXY_CA_FILE": token_proxy["ca_file"],
        # The vaults' hosts are names under localhost: Python processes started with this resolve them to loopback
        # themselves (tests/lab/resolver/sitecustomize.py), whatever the host's resolver does.
        "PYTHONPATH": str(RESOLVER),
    }


def up(workdir: Path = DEFAULT_WORKDIR, *, quiet: bool = False) -> Lab:
    workdir = workdir.resolve()
    if (workdir / "lab.json").exists():
        existing = Lab.load(workdir)
        if _healthy(existing):
            return existing
        down(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    build()  # builds kube-apiserver and the webhook on first use (minutes), before anything starts
    ca = pki.create_ca(workdir / "pki")
    emulator_port, kube_port, proxy_port = _free_port(), _free_port(), _free_port()
    base = f"https://127.0.0.1:{emulator_port}"
    seed = make_seed()
    issuer = f"{base}/{DEFAULT_TENANT}/{seed['cluster_issuer_uuid']}/"  # AKS's path shape and trailing slash
    token_proxy, proxy_settings = _token_proxy(workdir, ca, proxy_port)
    config = {
        "base_url": base,
        "vault_dns_suffix": f"vault.localhost:{emulator_port}",
        "tenant_id": DEFAULT_TENANT,
        "subscription_id": DEFAULT_SUBSCRIPTION,
        "kube_apiserver_url": f"https://127.0.0.1:{kube_port}",
        "kube_issuer_url": issuer,
        "kube_ca_file": str(ca.cert),
        "ca_file": str(ca.cert),
        "wired_clusters": WIRED_CLUSTERS,
        "seed": seed,
        "token_proxy": proxy_settings,
    }
    emulator_pid = _start_emulator(workdir, ca, emulator_port, config)
    try:
        plane = controlplane.start(workdir / "kube", ca, issuer, issuer + "openid/v1/jwks", port=kube_port)
    except Exception:
        _stop_pid(workdir / "emulator.pid")
        raise
    try:
        _authorize_token_proxy(plane.admin_kubeconfig)
        # AZURE_AUTHORITY_HOST in pods: the emulator's Entra login endpoint (its cloud metadata's loginEndpoint).
        hook = webhook.start(
            workdir / "webhook",
            ca,
            plane.admin_kubeconfig,
            DEFAULT_TENANT,
            base + "/",
            custom_token_endpoint=webhook.CustomTokenEndpoint(
                annotation_suffix=TOKEN_PROXY_ANNOTATION_SUFFIX,
                audience=TOKEN_PROXY_AUDIENCE,
                token_proxy=token_proxy["url"],
                sni_name=token_proxy["sni_name"],
                ca_configmap=ROOT_CA_CONFIGMAP,
            ),
        )
    except Exception:
        controlplane.stop(workdir / "kube")
        _stop_pid(workdir / "emulator.pid")
        raise
    env = _env(base, seed, _ca_bundle(workdir, ca.cert), plane, DEFAULT_TENANT, DEFAULT_SUBSCRIPTION, token_proxy)
    lab = Lab(
        workdir,
        base,
        ca.cert,
        plane.url,
        plane.admin_kubeconfig,
        plane.restricted_kubeconfig,
        plane.restricted_namespace,
        seed,
        env,
        emulator_pid,
        hook.record(),
        token_proxy,
    )
    env_file = _save(lab)
    if not quiet:
        print(f"lab up in {time.monotonic() - started:.1f}s: Azure emulator {base}, kube-apiserver {plane.url}")
        print(f"webhook: {_describe_webhook(lab.webhook)}")
        print(f"AKS token proxy: {token_proxy['url']} (SNI {token_proxy['sni_name']})")
        print(f"settings: {env_file}  (set -a; . {env_file}; set +a)")
    return lab


def _save(lab: Lab) -> Path:
    """Write lab.json and lab.env (owner-only: they hold the deployer's secret); returns the env file."""
    record = {k: str(v) if isinstance(v, Path) else v for k, v in lab.__dict__.items()}
    for name, path in (("lab.json", json.dumps(record, indent=2)), ("lab.env", _env_text(lab.env))):
        temporary = lab.workdir / f".{name}.tmp"
        temporary.write_text(path)
        temporary.chmod(0o600)
        temporary.replace(lab.workdir / name)  # readers never see half a file
    return lab.workdir / "lab.env"


def _env_text(env: dict[str, str]) -> str:
    return "".join(f"{k}={json.dumps(v)}\n" for k, v in env.items())


# ---------------------------------------------------------------------------------------------- more clusters
CLUSTER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")  # short: it becomes part of an AKS cluster name and env names


def cluster_env(name: str, info: dict[str, Any]) -> dict[str, str]:
    """The settings of an added cluster, as lab.env carries them: LAB_CLUSTER_<NAME>_* (NAME upper-cased, - as _)."""
    prefix = "LAB_CLUSTER_" + name.upper().replace("-", "_") + "_"
    return {
        prefix + "KUBECONFIG": info["admin_kubeconfig"],
        prefix + "RESTRICTED_KUBECONFIG": info["restricted_kubeconfig"],
        prefix + "ISSUER": info["issuer"],
        prefix + "RESOURCE_GROUP": info["resource_group"],
        prefix + "NAME": info["cluster"],
    }


@contextlib.contextmanager
def _locked(workdir: Path):
    """One add_cluster() at a time per lab, across processes (tests and playbooks may ask at once)."""
    with open(workdir / "clusters.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _apiserver_ready(url: str, ca_file: str) -> bool:
    # /readyz is readable without credentials (the bootstrap ClusterRole system:public-info-viewer).
    context = ssl.create_default_context(cafile=ca_file)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(url + "/readyz", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def add_cluster(workdir: Path, name: str, *, quiet: bool = True) -> dict[str, Any]:
    """Start another cluster in the running lab, or return it when it runs already (idempotent).

    Its control plane is its own (a kube-testenv process, etcd data, cluster CA, service-account signing key, in
    <workdir>/clusters/<name>/); its --service-account-issuer is https://<emulator>/<tenant>/<new guid>/, AKS's
    path shape; the emulator then registers the AKS cluster <seed cluster>-<name> in the seeded resource group with
    the OIDC issuer and workload identity on and that issuer, and publishes the apiserver's keys there (POST
    /_lab/clusters). Returns {"name", "cluster", "resource_group", "id", "issuer", "url", "admin_kubeconfig",
    "restricted_kubeconfig", "ca_file", "workdir", "started_seconds"}. A cluster whose processes died is started
    again with the same issuer (and fresh keys and data)."""
    workdir = workdir.resolve()
    if not CLUSTER_NAME.match(name or ""):
        raise ValueError(f"cluster name {name!r}: 1-20 of [a-z0-9-], starting with a letter")
    with _locked(workdir):
        lab = Lab.load(workdir)
        if not _healthy(lab):
            raise RuntimeError(f"the lab in {workdir} is not running; start it first (python -m tests.lab up)")
        info = lab.clusters.get(name)
        if not (
            info and controlplane.running(Path(info["workdir"])) and _apiserver_ready(info["url"], info["ca_file"])
        ):
            info = _start_cluster(lab, name, info)
        registered = _register_cluster(lab, name, info)  # again when running: the emulator may have been reset
        info = {**info, "id": registered["id"]}
        lab.clusters[name] = info
        lab.env.update(cluster_env(name, info))
        env_file = _save(lab)
    if not quiet:
        print(f"cluster {name}: AKS {info['resource_group']}/{info['cluster']}, kube-apiserver {info['url']}")
        print(f"issuer: {info['issuer']}")
        print(f"settings: {env_file}  (set -a; . {env_file}; set +a)")
    return info


def remove_cluster(workdir: Path, name: str) -> None:
    """Undo add_cluster(): the emulator forgets the wiring and deletes the AKS cluster resource, the control plane
    stops, lab.json and lab.env lose the cluster. Its folder stays (logs, audit log). No-op for an unknown name."""
    workdir = workdir.resolve()
    with _locked(workdir):
        lab = Lab.load(workdir)
        info = lab.clusters.pop(name, None)
        if info is None:
            return
        try:
            lab._call("DELETE", f"/_lab/clusters/{name}")
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise
        controlplane.stop(Path(info["workdir"]))
        for key in cluster_env(name, info):
            lab.env.pop(key, None)
        _save(lab)


def _start_cluster(lab: Lab, name: str, previous: dict[str, Any] | None) -> dict[str, Any]:
    started = time.monotonic()
    base = lab.workdir / "clusters" / name
    # Its own cluster CA, as every AKS cluster has one; the lab CA's admin certificate gets nowhere here.
    ca = pki.create_ca(base / "pki", common_name=f"aks-workload-identity-lab-{name}-ca")
    tenant = lab.env["AZURE_TENANT"]
    issuer = (previous or {}).get("issuer") or f"{lab.emulator_url}/{tenant}/{uuid.uuid4()}/"
    plane = controlplane.start(base / "kube", ca, issuer, issuer + "openid/v1/jwks", cluster_name=f"lab-{name}")
    return {
        "name": name,
        "cluster": f"{lab.seed['cluster']}-{name}",
        "resource_group": lab.seed["resource_group"],
        "issuer": issuer,
        "url": plane.url,
        "admin_kubeconfig": str(plane.admin_kubeconfig),
        "restricted_kubeconfig": str(plane.restricted_kubeconfig),
        "restricted_namespace": plane.restricted_namespace,
        "ca_file": str(ca.cert),
        "workdir": str(plane.workdir),
        "started_seconds": round(time.monotonic() - started, 2),
    }


def _register_cluster(lab: Lab, name: str, info: dict[str, Any]) -> dict[str, Any]:
    body = {
        "name": name,
        "resource_group": info["resource_group"],
        "cluster": info["cluster"],
        "apiserver_url": info["url"],
        "issuer_url": info["issuer"],
        "ca_file": info["ca_file"],
    }
    try:
        return lab._call("POST", "/_lab/clusters", body)
    except Exception:
        controlplane.stop(Path(info["workdir"]))  # an unregistered cluster is of no use; leave nothing running
        raise


def _token_proxy(workdir: Path, ca: pki.KeyPair, port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The AKS token proxy's settings: (what tests see, what the emulator serving it needs).

    LAB CHOICE (azure-behaviour §10): the SNI name is 46 random hex digits per lab, shaped like the opaque name
    upstream's e2e configures (scripts/ci-e2e.sh of azure-workload-identity v1.6.0); AKS's own is not public. The
    proxy's certificate names it alone and comes from the lab CA, the cluster CA that kube-root-ca.crt carries, as a
    proxy reached through the cluster's API endpoint would present. The URL is the proxy's own loopback port: upstream's
    e2e uses https://kubernetes.default.svc, the in-cluster API address, which the lab's processes cannot reach."""
    sni_name = secrets.token_hex(23)
    tls = pki.issue(ca, workdir / "pki", "token-proxy", "aks-token-proxy", dns_names=(sni_name,))
    client = pki.issue(ca, workdir / "pki", "token-proxy-client", TOKEN_PROXY_USER, client=True)
    url = f"https://127.0.0.1:{port}"
    seen = {
        "url": url,
        "sni_name": sni_name,
        "ca_file": str(ca.cert),
        "audience": TOKEN_PROXY_AUDIENCE,
        "annotation": f"azure.workload.identity/use-{TOKEN_PROXY_ANNOTATION_SUFFIX}",
        "ca_configmap": ROOT_CA_CONFIGMAP,
    }
    served = {
        "port": port,
        "cert": str(tls.cert),
        "key": str(tls.key),
        "sni_name": sni_name,
        "audience": TOKEN_PROXY_AUDIENCE,
        "kube_client_cert": str(client.cert),
        "kube_client_key": str(client.key),
    }
    return seen, served


def _authorize_token_proxy(admin_kubeconfig: Path) -> None:
    """Let the proxy's user create SubjectAccessReviews: the built-in ClusterRole system:auth-delegator (bootstrap
    policy, plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go), made for components that delegate
    authorization decisions to the apiserver."""
    from kubernetes import client, config

    body = {
        "metadata": {"name": TOKEN_PROXY_USER},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": TOKEN_PROXY_USER}],
    }
    with config.new_client_from_config(config_file=str(admin_kubeconfig)) as api:
        client.RbacAuthorizationV1Api(api).create_cluster_role_binding(body)


def _stop_pid(pid_file: Path, timeout: float = 15) -> None:
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().strip() or 0)
    if pid and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child (tests)
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def _describe_webhook(record: dict[str, Any]) -> str:
    if record.get("enabled"):
        return f"Azure Workload Identity webhook {record['url']} (pid {record['pid']}, log {record['log']})"
    return f"not running: {record.get('reason')}"


def build() -> None:
    """Build both binaries (each a no-op when up to date): kube-testenv, then the webhook."""
    controlplane.find_binaries()
    webhook.build()


def down(workdir: Path = DEFAULT_WORKDIR) -> None:
    workdir = workdir.resolve()
    webhook.stop(workdir / "webhook")  # first: it watches the apiserver and would log its going away
    for added in sorted((workdir / "clusters").glob("*/kube")):  # clusters added with add_cluster()
        controlplane.stop(added)
    controlplane.stop(workdir / "kube")
    _stop_pid(workdir / "emulator.pid")
    (workdir / "lab.json").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.lab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command",
        choices=["up", "down", "status", "env", "build", "add-cluster", "remove-cluster", "pod-identity-crds"],
    )
    parser.add_argument("name", nargs="?", help="add-cluster, remove-cluster: the cluster's name (e.g. green)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--cluster", help="pod-identity-crds: an added cluster instead of the first apiserver")
    args = parser.parse_args(argv)
    if args.command == "add-cluster":
        if not args.name:
            parser.error("add-cluster needs a NAME")
        info = add_cluster(args.workdir, args.name)
        print(f"# cluster {args.name}: kube-apiserver {info['url']} (started in {info['started_seconds']}s)")
        print(_env_text(cluster_env(args.name, info)), end="")
    elif args.command == "remove-cluster":
        if not args.name:
            parser.error("remove-cluster needs a NAME")
        remove_cluster(args.workdir, args.name)
        print(f"cluster {args.name} removed")
    elif args.command == "pod-identity-crds":
        names = Lab.load(args.workdir.resolve()).install_pod_identity_crds(args.cluster)
        print("\n".join(names))
    elif args.command == "build":
        build()
    elif args.command == "up":
        up(args.workdir)
    elif args.command == "down":
        down(args.workdir)
        print("lab down")
    elif args.command == "env":
        print((args.workdir / "lab.env").read_text(), end="")
    else:
        if not (args.workdir / "lab.json").exists():
            print("lab: not running")
            return 1
        lab = Lab.load(args.workdir)
        print(
            f"lab: {'running' if _healthy(lab) else 'NOT healthy'}; Azure emulator {lab.emulator_url}; kube-apiserver {lab.kube_url}"
        )
        state = "" if not lab.webhook.get("enabled") or webhook.running(lab.workdir / "webhook") else " (NOT running)"
        print(f"webhook: {_describe_webhook(lab.webhook)}{state}")
        for name, info in lab.clusters.items():
            alive = "running" if controlplane.running(Path(info["workdir"])) else "NOT running"
            print(
                f"cluster {name}: {alive}; AKS {info['resource_group']}/{info['cluster']}; kube-apiserver {info['url']}"
            )
    return 0
