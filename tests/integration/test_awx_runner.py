"""The flows run the way AWX runs a job: ansible-runner, a private data directory, credentials injected by AWX's
credential types, extra variables as a file, and the job's events (what AWX shows its users) free of secrets.

The two injectors below follow AWX's source exactly (ansible/awx):
- awx/main/models/credential/injectors.py, ``azure_rm`` ("Microsoft Azure Resource Manager", fields in
  awx/main/models/credential/__init__.py: subscription, client, secret, tenant, cloud_environment):
  AZURE_SUBSCRIPTION_ID always; AZURE_CLIENT_ID, AZURE_TENANT, AZURE_SECRET when client and tenant are set;
  AZURE_CLOUD_ENVIRONMENT when the credential has one.
- the same file, ``kubernetes_bearer_token`` ("OpenShift or Kubernetes API Bearer Token", fields host,
  bearer_token, verify_ssl (default true), ssl_ca_cert): K8S_AUTH_HOST, K8S_AUTH_API_KEY; with verify_ssl and a CA,
  K8S_AUTH_VERIFY_SSL='True' and the CA written to a temp file under <private_data_dir>/env (mode 0660) whose path
  is K8S_AUTH_SSL_CA_CERT; otherwise K8S_AUTH_VERIFY_SSL='False'. No kubeconfig.
AWX passes the job's environment to ansible-runner as ``envvars`` and writes extra variables to env/extravars.

The Kubernetes credential holds the token of a ServiceAccount bound to the flow's ClusterRole shipped in
extensions/awx/rbac/<flow>.yml, minted with a TokenRequest; the apiserver's audit log shows that the lab's admin
made no request during the jobs, that no flow was refused a request its role should allow, and that the audit
flow's ServiceAccount only read. Each test owns its workload (namespace, ServiceAccount, identity names).

The day-2 flows likewise: rotate_issuer with the token of a ServiceAccount on the NEW cluster (the lab's second
cluster, green), migrate_pod_identity with aad-pod-identity's CRDs installed, and onboard with the EDA automation's
own least privilege (extensions/eda/rbac/onboarding.yml: the same playbook, the policy in the extra variables).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import COLLECTIONS, REPO
from tests.integration.automation import service_account_login

ansible_runner = pytest.importorskip("ansible_runner")
kubernetes = pytest.importorskip("kubernetes")

pytestmark = pytest.mark.lab

RBAC = REPO / "extensions" / "awx" / "rbac"
AUTOMATION_NAMESPACE = "awx-automation"
SERVICE_ACCOUNTS = {
    "workload": "aks-wid-workload",
    "verify": "aks-wid-verify",
    "teardown": "aks-wid-teardown",
    "audit": "aks-wid-audit",
    "site": "aks-wid-site",
    "rotate_issuer": "aks-wid-rotate-issuer",
    "migrate_pod_identity": "aks-wid-migrate-pod-identity",
    "onboard": "aks-wid-onboarding",
}
# onboard runs the playbook the EDA rulebook runs: its least privilege is the EDA automation's, in its own namespace.
RBAC_FILES = {"onboard": REPO / "extensions" / "eda" / "rbac" / "onboarding.yml"}
ACCOUNT_NAMESPACES = {"onboard": "aks-wid-onboarding"}
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
# The workload this module owns, apart from the ones other tests of the session converge on the same lab.
NAMESPACE, SERVICE_ACCOUNT, IDENTITY = "awx-orders", "orders-api", "id-awx-orders"
# The read-only verbs (the lab's audit policy logs get and list; a watch would show as one too).
READ_VERBS = {"get", "list", "watch"}


# --------------------------------------------------------------------------- AWX's injectors, as AWX writes them
def inject_azure_rm(inputs: dict[str, str], env: dict[str, str], private_data_dir: Path) -> None:
    client, tenant = inputs.get("client", ""), inputs.get("tenant", "")
    env["AZURE_SUBSCRIPTION_ID"] = inputs.get("subscription", "")
    if client and tenant:
        env["AZURE_CLIENT_ID"] = client
        env["AZURE_TENANT"] = tenant
        env["AZURE_SECRET"] = inputs.get("secret", "")
    else:
        env["AZURE_AD_USER"] = inputs.get("username", "")
        env["AZURE_PASSWORD"] = inputs.get("password", "")
    if "cloud_environment" in inputs:
        env["AZURE_CLOUD_ENVIRONMENT"] = inputs["cloud_environment"]


def inject_kubernetes_bearer_token(inputs: dict[str, Any], env: dict[str, str], private_data_dir: Path) -> None:
    env["K8S_AUTH_HOST"] = inputs.get("host", "")
    env["K8S_AUTH_API_KEY"] = inputs.get("bearer_token", "")
    if inputs.get("verify_ssl", True) and "ssl_ca_cert" in inputs:
        env["K8S_AUTH_VERIFY_SSL"] = "True"
        handle, path = tempfile.mkstemp(dir=private_data_dir / "env")
        with os.fdopen(handle, "w") as file:
            os.chmod(path, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IWGRP)
            file.write(inputs["ssl_ca_cert"])
        env["K8S_AUTH_SSL_CA_CERT"] = path  # to_container_path() is the identity outside a container
    else:
        env["K8S_AUTH_VERIFY_SSL"] = "False"


# --------------------------------------------------------------------------- the lab side: RBAC, tokens
def _admin_client(lab, cluster: str | None = None) -> Any:
    """The lab admin's client of the first cluster, or of the cluster added as ``cluster``."""
    return kubernetes.config.new_client_from_config(str(lab.kubeconfig(cluster)))


def _account(flow: str) -> tuple[Path, str, str]:
    """The flow's RBAC file, and the namespace and name of the ServiceAccount it binds."""
    namespace = ACCOUNT_NAMESPACES.get(flow, AUTOMATION_NAMESPACE)
    return RBAC_FILES.get(flow, RBAC / f"{flow}.yml"), namespace, SERVICE_ACCOUNTS[flow]


def _kubernetes_credential(lab, flow: str, cluster: str | None = None) -> dict[str, Any]:
    """The inputs of an AWX "OpenShift or Kubernetes API Bearer Token" credential for ``flow``'s ServiceAccount, on
    the lab's first cluster or on the cluster added as ``cluster``."""
    path, namespace, name = _account(flow)
    login = service_account_login(lab, path, namespace, name, cluster)
    return {"host": login["host"], "bearer_token": login["token"], "verify_ssl": True, "ssl_ca_cert": login["ca_pem"]}


def _azure_credential(lab) -> dict[str, str]:
    return {
        "subscription": lab.env["AZURE_SUBSCRIPTION_ID"],
        "client": lab.env["AZURE_CLIENT_ID"],
        "secret": lab.env["AZURE_SECRET"],
        "tenant": lab.env["AZURE_TENANT"],
        "cloud_environment": lab.env["AZURE_CLOUD_ENVIRONMENT"],
    }


def _extravars(
    lab, namespace: str = NAMESPACE, service_account: str = SERVICE_ACCOUNT, identity: str = IDENTITY
) -> dict[str, Any]:
    """What AWX merges from the job template's extra variables and the survey's answers (extensions/awx/), for the
    workload ``namespace``/``service_account`` with the managed identity ``identity``."""
    port = lab.env["LAB_EMULATOR_URL"].rsplit(":", 1)[1]
    return {
        "cluster_resource_group": "rg-wid-lab",
        "cluster_name": "aks-wid-lab",
        "workload_items": [
            {
                "name": namespace,
                "namespace": namespace,
                "service_account": service_account,
                "create_namespace": True,
                "identity": {"name": identity, "resource_group": "rg-wid-lab"},
                "grants": [
                    {
                        "role": "Reader",
                        "scope": f"/subscriptions/{lab.env['AZURE_SUBSCRIPTION_ID']}/resourceGroups/rg-wid-lab",
                    }
                ],
                "configmap": {"data": {"KEYVAULT_URL": f"https://kv-wid-rbac.vault.localhost:{port}/"}},
            }
        ],
        "keyvault_access_vault_name": "kv-wid-rbac",
        "keyvault_access_vault_resource_group": "rg-wid-lab",
        "keyvault_access_identities": [{"name": identity, "resource_group": "rg-wid-lab"}],
        "verify_secret_name": "app-secret",
        "verify_pod_proof": True,
    }


# --------------------------------------------------------------------------- one AWX job
class Job:
    def __init__(self, runner: Any, private_data_dir: Path, secrets: list[str]) -> None:
        self.runner, self.private_data_dir, self.secrets = runner, private_data_dir, secrets
        self.stdout = Path(runner.stdout.name).read_text()
        self.events_text = "\n".join(
            p.read_text() for p in sorted((Path(runner.config.artifact_dir) / "job_events").glob("*.json"))
        )

    @property
    def changed(self) -> int:
        return (self.runner.stats or {}).get("changed", {}).get("localhost", 0)

    def leaks(self) -> list[str]:
        shown = self.stdout + "\n" + self.events_text
        found = [f"secret #{i}" for i, secret in enumerate(self.secrets) if secret and secret in shown]
        return found + [f"JWT-looking string {m[:12]}..." for m in JWT.findall(shown)]


def _run_job(lab, root: Path, flow: str, credentials: dict[str, dict[str, Any]], extravars: dict) -> Job:
    private_data_dir = Path(tempfile.mkdtemp(prefix=f"{flow}-", dir=root))
    for folder in ("project", "inventory", "env"):
        (private_data_dir / folder).mkdir()
    (private_data_dir / "project" / f"{flow}.yml").write_text(
        f"---\n- name: The collection's {flow} flow\n  ansible.builtin.import_playbook: aks.workload_identity.{flow}\n"
    )
    # An execution environment's Python is the one with the SDKs: here, this virtual environment's.
    (private_data_dir / "inventory" / "hosts").write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    (private_data_dir / "env" / "extravars").write_text(yaml.safe_dump(extravars))
    home = private_data_dir / "home"
    home.mkdir()
    envvars = {
        # What the execution environment image provides: the collection, its Python tools, an empty home.
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
        "HOME": str(home),
        "ANSIBLE_NOCOLOR": "1",
        # The lab's endpoints are signed by its own CA: an image for a private cloud trusts it this way. Real Azure
        # needs nothing here. The resolver makes the lab's vault names (*.vault.localhost) resolve to loopback.
        "REQUESTS_CA_BUNDLE": lab.env["AZURE_CA_BUNDLE"],
        "PYTHONPATH": lab.env["PYTHONPATH"],
    }
    secrets = []
    if "azure_rm" in credentials:
        inject_azure_rm(credentials["azure_rm"], envvars, private_data_dir)
        secrets.append(credentials["azure_rm"]["secret"])
    if "kubernetes_bearer_token" in credentials:
        inject_kubernetes_bearer_token(credentials["kubernetes_bearer_token"], envvars, private_data_dir)
        secrets.append(credentials["kubernetes_bearer_token"]["bearer_token"])
    runner = ansible_runner.run(
        private_data_dir=str(private_data_dir),
        playbook=f"{flow}.yml",
        inventory=str(private_data_dir / "inventory" / "hosts"),
        envvars=envvars,
        quiet=True,
        timeout=900,
    )
    return Job(runner, private_data_dir, secrets)


@pytest.fixture
def awx_environment(monkeypatch, tmp_path):
    """The job's process sees only what AWX gives it: nothing of the test session's settings, no kubeconfig."""
    for name in list(os.environ):
        if name.startswith(("AZURE_", "K8S_", "KUBE", "LAB_", "ANSIBLE_", "REQUESTS_CA", "SSL_CERT")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    (tmp_path / "empty-home").mkdir()
    return tmp_path


def _assert_success(job: Job, flow: str) -> None:
    assert job.runner.status == "successful", f"{flow} job {job.runner.status} (rc {job.runner.rc}):\n{job.stdout}"
    assert job.leaks() == [], f"the {flow} job's events show secrets: {job.leaks()}"


def test_workload_and_verify_as_awx_jobs(lab, awx_environment):
    azure = _azure_credential(lab)
    extravars = _extravars(lab)
    root = awx_environment

    # cluster and keyvault touch Azure only: their job templates need the Azure credential alone.
    # The credentials first: every Kubernetes request of the jobs must then come with the ServiceAccounts' tokens.
    workload = {"azure_rm": azure, "kubernetes_bearer_token": _kubernetes_credential(lab, "workload")}
    verify = {"azure_rm": azure, "kubernetes_bearer_token": _kubernetes_credential(lab, "verify")}
    mark = lab.kube_mark()

    # cluster and keyvault touch Azure only: their job templates need the Azure credential alone.
    job = _run_job(lab, root, "cluster", {"azure_rm": azure}, extravars)
    _assert_success(job, "cluster")

    job = _run_job(lab, root, "workload", workload, extravars)
    _assert_success(job, "workload")
    assert job.changed > 0

    again = _run_job(lab, root, "workload", workload, extravars)
    _assert_success(again, "workload (second run)")
    assert again.changed == 0, f"the second workload run changed something:\n{again.stdout}"

    job = _run_job(lab, root, "keyvault", {"azure_rm": azure}, extravars)
    _assert_success(job, "keyvault")

    job = _run_job(lab, root, "verify", verify, extravars)
    _assert_success(job, "verify")
    assert "1 of 1 workloads passed." in job.stdout
    assert "exchange passed, access passed" in job.stdout
    assert job.changed == 0

    assert lab.kube_requests(mark) == [], "a job reached Kubernetes as the lab's admin, not with its bearer token"
    service_account = kubernetes.client.CoreV1Api(_admin_client(lab)).read_namespaced_service_account(
        SERVICE_ACCOUNT, NAMESPACE
    )
    assert service_account.metadata.annotations.get("azure.workload.identity/client-id")


def test_too_little_rbac_fails_with_a_clear_error(lab, awx_environment):
    """The verify flow's ServiceAccount may not create ServiceAccounts: the workload flow says so and stops."""
    extravars = _extravars(lab)
    extravars["workload_items"][0] |= {"name": "awx-denied", "namespace": "awx-denied", "service_account": "denied-api"}
    credentials = {"azure_rm": _azure_credential(lab), "kubernetes_bearer_token": _kubernetes_credential(lab, "verify")}
    job = _run_job(lab, awx_environment, "workload", credentials, extravars)
    assert job.runner.status == "failed", job.stdout
    # "Failed to list ConfigMaps in namespace 'awx-denied': Forbidden: ... cannot list resource "configmaps" ..."
    assert "Forbidden" in job.stdout, job.stdout
    assert f'"system:serviceaccount:{AUTOMATION_NAMESPACE}:{SERVICE_ACCOUNTS["verify"]}" cannot' in job.stdout
    assert job.leaks() == []


def _requests_by(lab, mark: int, flow: str, cluster: str | None = None) -> list[dict[str, Any]]:
    """What the flow's ServiceAccount asked the apiserver (of ``cluster``) after ``mark`` (its audit log: verb, uri,
    user, code)."""
    from tests.lab.kube import controlplane

    _path, namespace, name = _account(flow)
    user = f"system:serviceaccount:{namespace}:{name}"
    kube = Path(lab.workdir) / "kube" if cluster is None else Path(lab.clusters[cluster]["workdir"])
    return [e for e in controlplane.audit_requests(kube, mark) if e["user"] == user]


def _arm_resources_of(lab, identity: str) -> list[str]:
    """The emulator's resources under the managed identity (itself and its federated credentials)."""
    return [r for r in lab.state()["resources"] if f"/userassignedidentities/{identity}".lower() in r.lower()]


def test_teardown_as_awx_job_takes_a_workload_down(lab, awx_environment):
    """A workload of its own, made by the workload flow, taken down by the teardown flow with its own token; the
    second teardown changes nothing."""
    namespace, service_account, identity = "awx-teardown", "teardown-api", "id-awx-teardown"
    azure = _azure_credential(lab)
    extravars = _extravars(lab, namespace, service_account, identity) | {"teardown_delete_namespaces": [namespace]}
    workload = {"azure_rm": azure, "kubernetes_bearer_token": _kubernetes_credential(lab, "workload")}
    teardown = {"azure_rm": azure, "kubernetes_bearer_token": _kubernetes_credential(lab, "teardown")}
    mark = lab.kube_mark()

    # The cluster flow first (its OIDC issuer on): this test may be the session's first to use the lab.
    _assert_success(_run_job(lab, awx_environment, "cluster", {"azure_rm": azure}, extravars), "cluster")
    _assert_success(_run_job(lab, awx_environment, "workload", workload, extravars), "workload")
    _assert_success(_run_job(lab, awx_environment, "keyvault", {"azure_rm": azure}, extravars), "keyvault")
    assert _arm_resources_of(lab, identity), "the workload flow made no identity"
    teardown_mark = lab.kube_mark()

    job = _run_job(lab, awx_environment, "teardown", teardown, extravars)
    _assert_success(job, "teardown")
    assert job.changed > 0
    assert f"Identity {identity} (rg-wid-lab): deleted" in job.stdout, job.stdout
    writes = {(e["verb"], e["uri"].split("?")[0]) for e in _requests_by(lab, teardown_mark, "teardown")}
    assert writes >= {
        ("delete", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}"),
        ("delete", f"/api/v1/namespaces/{namespace}/configmaps/{service_account}-azure-identity"),
        ("delete", f"/api/v1/namespaces/{namespace}"),
    }, writes

    again = _run_job(lab, awx_environment, "teardown", teardown, extravars)
    _assert_success(again, "teardown (second run)")
    assert again.changed == 0, f"the second teardown changed something:\n{again.stdout}"

    assert lab.kube_requests(mark) == [], "a job reached Kubernetes as the lab's admin, not with its bearer token"
    assert [e for e in _requests_by(lab, teardown_mark, "teardown") if e["code"] == 403] == []
    assert _arm_resources_of(lab, identity) == []
    core = kubernetes.client.CoreV1Api(_admin_client(lab))
    with pytest.raises(kubernetes.client.ApiException) as gone:
        core.read_namespaced_service_account(service_account, namespace)
    assert gone.value.status == 404
    # The lab runs no namespace controller: the namespace stays Terminating (on a cluster it then goes).
    try:
        assert core.read_namespace(namespace).metadata.deletion_timestamp is not None
    except kubernetes.client.ApiException as error:
        assert error.status == 404


def test_audit_as_awx_job_only_reads(lab, awx_environment):
    """The audit flow with its read-only token: the apiserver saw only reads from it, and its report maps the
    workload the workload flow made; the same token cannot run the workload flow (Forbidden)."""
    namespace, service_account, identity = "awx-audit", "audit-api", "id-awx-audit"
    azure = _azure_credential(lab)
    extravars = _extravars(lab, namespace, service_account, identity)
    report = awx_environment / "audit-report"
    extravars |= {"audit_output_dir": str(report)}
    workload = {"azure_rm": azure, "kubernetes_bearer_token": _kubernetes_credential(lab, "workload")}
    audit = {"azure_rm": azure, "kubernetes_bearer_token": _kubernetes_credential(lab, "audit")}
    mark = lab.kube_mark()

    _assert_success(_run_job(lab, awx_environment, "cluster", {"azure_rm": azure}, extravars), "cluster")
    _assert_success(_run_job(lab, awx_environment, "workload", workload, extravars), "workload")
    audit_mark = lab.kube_mark()
    job = _run_job(lab, awx_environment, "audit", audit, extravars)
    _assert_success(job, "audit")
    requests = _requests_by(lab, audit_mark, "audit")
    assert requests, "the audit job sent nothing with its ServiceAccount's token"
    assert {e["verb"] for e in requests} <= READ_VERBS, sorted({(e["verb"], e["uri"]) for e in requests})
    assert lab.kube_writes(audit_mark, include_dry_run=True) == [], "something wrote during the audit job"
    assert [e for e in requests if e["code"] == 403] == [], "the audit ClusterRole lacks a read the flow makes"
    entries = json.loads((report / "audit.json").read_text())["map"]
    mapped = [e for e in entries if (e["namespace"], e["service_account"]) == (namespace, service_account)]
    assert mapped and mapped[0]["annotated"] and mapped[0]["credentials"], entries

    # The audit token cannot write: the workload flow stops at its first write (or list) with the apiserver's answer.
    denied = _extravars(lab, "awx-audit-denied", "denied-api", identity)
    job = _run_job(lab, awx_environment, "workload", audit, denied)
    assert job.runner.status == "failed", job.stdout
    assert "Forbidden" in job.stdout, job.stdout
    assert f'"system:serviceaccount:{AUTOMATION_NAMESPACE}:{SERVICE_ACCOUNTS["audit"]}" cannot' in job.stdout
    assert job.leaks() == []
    assert {e["verb"] for e in _requests_by(lab, audit_mark, "audit") if (e["code"] or 0) < 400} <= READ_VERBS

    assert lab.kube_requests(mark) == [], "a job reached Kubernetes as the lab's admin, not with its bearer token"


def test_site_as_awx_job(lab, awx_environment):
    """The whole chain in one job with the site flow's token: set up, proven; the second run changes nothing."""
    namespace, service_account, identity = "awx-site", "site-api", "id-awx-site"
    extravars = _extravars(lab, namespace, service_account, identity)
    site = {"azure_rm": _azure_credential(lab), "kubernetes_bearer_token": _kubernetes_credential(lab, "site")}
    mark = lab.kube_mark()

    job = _run_job(lab, awx_environment, "site", site, extravars)
    _assert_success(job, "site")
    assert job.changed > 0
    assert "1 of 1 workloads passed." in job.stdout
    assert "exchange passed, access passed" in job.stdout

    again = _run_job(lab, awx_environment, "site", site, extravars)
    _assert_success(again, "site (second run)")
    assert again.changed == 0, f"the second site run changed something:\n{again.stdout}"
    assert "1 of 1 workloads passed." in again.stdout

    assert lab.kube_requests(mark) == [], "a job reached Kubernetes as the lab's admin, not with its bearer token"
    assert [e for e in _requests_by(lab, mark, "site") if e["code"] == 403] == []
    service_account_object = kubernetes.client.CoreV1Api(_admin_client(lab)).read_namespaced_service_account(
        service_account, namespace
    )
    assert service_account_object.metadata.annotations.get("azure.workload.identity/client-id")


# --------------------------------------------------------------------------- the day-2 flows
@pytest.fixture(scope="module")
def cluster_issuer(lab) -> dict[str, str]:
    """The lab's cluster with its OIDC issuer on (what the cluster flow does), set up with the lab's admin: a day-2
    test may be the session's first to use the lab. Returns the names the flows' extra variables use."""
    from tests.integration.runner import run_module

    group, cluster = lab.seed["resource_group"], lab.seed["cluster"]
    done = run_module("aks_oidc", {"resource_group": group, "name": cluster}, env=lab.env)
    assert not done.failed, done.result
    vault = f"/subscriptions/{lab.env['AZURE_SUBSCRIPTION_ID']}/resourceGroups/{group}/providers/Microsoft.KeyVault/vaults/{lab.seed['rbac_vault']}"
    return {"cluster_resource_group": group, "cluster_name": cluster, "vault_id": vault}


def _msi(lab) -> Any:
    from azure.mgmt.msi import ManagedServiceIdentityClient

    from tests.integration.sdk import sdk_client

    return sdk_client(lab, ManagedServiceIdentityClient)


def _writes_by(lab, mark: int, flow: str, cluster: str | None = None) -> list[tuple[str, str]]:
    """The flow's writes after ``mark``, but for what its proofs send and nothing stores: TokenRequests (a token is
    minted) and dry runs (the webhook's view of a pod)."""
    requests = _requests_by(lab, mark, flow, cluster)
    return [
        (e["verb"], e["uri"])
        for e in requests
        if e["verb"] not in READ_VERBS
        and not e["dry_run"]
        and not (e["verb"] == "create" and e["uri"].split("?")[0].endswith("/token"))
    ]


def _assert_least_privilege(lab, marks: dict[str | None, int], flow: str, cluster: str | None = None) -> None:
    """No request as the lab's admin on any cluster since ``marks``, none of the flow's refused (403)."""
    for name, mark in marks.items():
        assert lab.kube_requests(mark, cluster=name) == [], f"a job reached {name or 'the first cluster'} as the admin"
    requests = _requests_by(lab, marks[cluster], flow, cluster)
    assert requests, f"the {flow} job sent nothing with its ServiceAccount's token"
    refused = [(e["verb"], e["uri"]) for e in requests if e["code"] == 403]
    assert refused == [], f"the {flow} ClusterRole lacks what the flow asks: {refused}"


def test_rotate_issuer_as_awx_job(lab, awx_environment, cluster_issuer):
    """Workloads set up on the lab's cluster (blue) move to the second cluster's (green's) issuer in one job whose
    Kubernetes credential is a ServiceAccount's token on green: green's credentials and ServiceAccounts added, the
    chains proven with green's tokens, blue's credentials retired; the second run changes nothing."""
    from tests.integration.runner import run_module

    green = lab.add_cluster("green")
    tag = uuid.uuid4().hex[:4]
    identity, group = f"id-awx-rot-{tag}", cluster_issuer["cluster_resource_group"]
    # api's namespace is new on green; worker's was deployed there before the rotation, its ServiceAccount too
    # (without the identity's annotation), as a blue/green cut-over deploys the application first.
    namespaces = {"api": f"awx-rot-{tag}", "worker": f"awx-rot-{tag}-deployed"}
    items = [
        {
            "name": f"awx-rot-{account}",
            "namespace": namespace,
            "service_account": f"awx-rot-{account}",
            "create_namespace": True,
            "identity": {"name": identity, "resource_group": group},
            "grants": [{"role": "Key Vault Secrets User", "scope": cluster_issuer["vault_id"]}],
        }
        for account, namespace in namespaces.items()
    ]
    green_core = kubernetes.client.CoreV1Api(_admin_client(lab, "green"))
    green_core.create_namespace({"metadata": {"name": namespaces["worker"]}})
    green_core.create_namespaced_service_account(namespaces["worker"], {"metadata": {"name": "awx-rot-worker"}})
    # Blue as the workload flow leaves it (set up with the lab's admin: not what this test is about).
    cluster = {k: cluster_issuer[k] for k in ("cluster_resource_group", "cluster_name")}
    done = run_module("workloads", {"items": items, **cluster}, env=lab.env)
    assert not done.failed and done.changed, done.result
    extravars = cluster | {
        "workload_items": items,
        "issuer_rotation_old_cluster_name": cluster["cluster_name"],
        "issuer_rotation_new_cluster_name": green["cluster"],
        "issuer_rotation_new_cluster_resource_group": green["resource_group"],
        "issuer_rotation_retire_old": True,
        "keyvault_access_vault_name": lab.seed["rbac_vault"],
        "verify_secret_name": lab.seed["secret_name"],
    }
    rotate = {
        "azure_rm": _azure_credential(lab),
        "kubernetes_bearer_token": _kubernetes_credential(lab, "rotate_issuer", "green"),
    }
    marks = {None: lab.kube_mark(), "green": lab.kube_mark("green")}

    job = _run_job(lab, awx_environment, "rotate_issuer", rotate, extravars)
    _assert_success(job, "rotate_issuer")
    assert job.changed > 0
    assert "Stages: 2 retired" in job.stdout, job.stdout

    seq, again_mark = lab.last_seq(), lab.kube_mark("green")
    again = _run_job(lab, awx_environment, "rotate_issuer", rotate, extravars)
    _assert_success(again, "rotate_issuer (second run)")
    assert again.changed == 0, f"the second rotation changed something:\n{again.stdout}"
    assert "Stages: 2 retired" in again.stdout, again.stdout
    assert lab.writes(seq) == [], "the second rotation wrote to Azure"
    assert _writes_by(lab, again_mark, "rotate_issuer", "green") == []

    _assert_least_privilege(lab, marks, "rotate_issuer", "green")
    # Only green was reached, and only with the token (blue's audit log has no request of the flow's account).
    assert _requests_by(lab, marks[None], "rotate_issuer") == []
    # The result, with the test's own clients: the identity trusts green's issuer only, once per ServiceAccount...
    msi = _msi(lab)
    credentials = list(msi.federated_identity_credentials.list(group, identity))
    assert {c.issuer for c in credentials} == {green["issuer"]}, [(c.name, c.issuer) for c in credentials]
    assert sorted(c.subject for c in credentials) == sorted(
        f"system:serviceaccount:{namespace}:awx-rot-{account}" for account, namespace in namespaces.items()
    )
    # ...and green's ServiceAccounts carry its client ID.
    client_id = msi.user_assigned_identities.get(group, identity).client_id
    for account, namespace in namespaces.items():
        annotations = green_core.read_namespaced_service_account(f"awx-rot-{account}", namespace).metadata.annotations
        assert annotations["azure.workload.identity/client-id"] == client_id


def test_migrate_pod_identity_as_awx_job(lab, awx_environment, cluster_issuer, monkeypatch):
    """A namespace as aad-pod-identity left it (an AzureIdentity, its binding, two labelled Deployments) migrated,
    proven and its aad-pod-identity objects removed by one job with the flow's token; the second run changes
    nothing."""
    from tests.integration.molecule_checks import pod_identity

    tag = uuid.uuid4().hex[:4]
    namespace, group = f"awx-pim-{tag}", cluster_issuer["cluster_resource_group"]
    msi = _msi(lab)
    identity = msi.user_assigned_identities.create_or_update(group, f"id-awx-pim-{tag}", {"location": "eastus"})
    lab.install_pod_identity_crds()
    admin = _admin_client(lab)
    with monkeypatch.context() as patched:  # the planting script reads the admin's kubeconfig from the environment
        patched.setenv("K8S_AUTH_KUBECONFIG", str(lab.admin_kubeconfig))
        assert pod_identity.prepare(admin, namespace, namespace, identity.id, identity.client_id)["changed"]
    # The binding selects one workload of each other kind the migration patches, all running as default.
    template = pod_identity.deployment(f"{namespace}-more", namespace, None)["spec"]["template"]
    selector = {"matchLabels": {"app": f"{namespace}-more"}}
    apps, batch, more = kubernetes.client.AppsV1Api(admin), kubernetes.client.BatchV1Api(admin), f"{namespace}-more"
    apps.create_namespaced_stateful_set(
        namespace,
        {"metadata": {"name": more}, "spec": {"selector": selector, "serviceName": more, "template": template}},
    )
    apps.create_namespaced_daemon_set(
        namespace, {"metadata": {"name": more}, "spec": {"selector": selector, "template": template}}
    )
    job_spec = {"template": {"metadata": template["metadata"], "spec": {**template["spec"], "restartPolicy": "Never"}}}
    batch.create_namespaced_cron_job(
        namespace, {"metadata": {"name": more}, "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": job_spec}}}
    )
    extravars = {
        "cluster_resource_group": group,
        "cluster_name": cluster_issuer["cluster_name"],
        "pod_identity_migration_state": "migrated",
        "pod_identity_migration_namespaces": [namespace],
        "pod_identity_migration_remove_pod_identity": True,
        "pod_identity_migration_fail_on_unsupported": True,
    }
    migrate = {
        "azure_rm": _azure_credential(lab),
        "kubernetes_bearer_token": _kubernetes_credential(lab, "migrate_pod_identity"),
    }
    marks = {None: lab.kube_mark()}

    job = _run_job(lab, awx_environment, "migrate_pod_identity", migrate, extravars)
    _assert_success(job, "migrate_pod_identity")
    assert job.changed > 0

    seq, again_mark = lab.last_seq(), lab.kube_mark()
    again = _run_job(lab, awx_environment, "migrate_pod_identity", migrate, extravars)
    _assert_success(again, "migrate_pod_identity (second run)")
    assert again.changed == 0, f"the second migration changed something:\n{again.stdout}"
    assert lab.writes(seq) == [], "the second migration wrote to Azure"
    assert _writes_by(lab, again_mark, "migrate_pod_identity") == []

    _assert_least_privilege(lab, marks, "migrate_pod_identity")
    # The result, with the kubernetes client and the SDK: aad-pod-identity's objects gone, the ServiceAccounts
    # annotated, the pod templates moved to them with the workload identity label and the migration sidecar...
    found = pod_identity.show(admin, namespace)
    assert (found["azureidentities"], found["azureidentitybindings"]) == ([], []), found
    deployments, accounts = found["deployments"], found["service_accounts"]
    for deployment, account in (
        (f"{namespace}-api", f"{namespace}-api-sa"),
        (f"{namespace}-worker", f"{namespace}-binding"),
    ):
        assert accounts[account]["azure.workload.identity/client-id"] == identity.client_id, found
        assert deployments[deployment]["service_account_name"] == account, found
        assert deployments[deployment]["template_labels"]["azure.workload.identity/use"] == "true", found
        assert deployments[deployment]["template_annotations"]["azure.workload.identity/inject-proxy-sidecar"] == "true"
    templates = [
        apps.read_namespaced_stateful_set(more, namespace).spec.template,
        apps.read_namespaced_daemon_set(more, namespace).spec.template,
        batch.read_namespaced_cron_job(more, namespace).spec.job_template.spec.template,
    ]
    for template in templates:
        assert template.spec.service_account_name == f"{namespace}-binding", template
        assert template.metadata.labels["azure.workload.identity/use"] == "true", template
    # ...and the identity trusts the cluster's issuer for both.
    credentials = list(msi.federated_identity_credentials.list(group, identity.name))
    assert {c.issuer for c in credentials} == {lab.state()["config"]["kube_issuer_url"]}
    assert sorted(c.subject for c in credentials) == [
        f"system:serviceaccount:{namespace}:{namespace}-api-sa",
        f"system:serviceaccount:{namespace}:{namespace}-binding",
    ]


def test_onboard_as_awx_job(lab, awx_environment, cluster_issuer):
    """Two ServiceAccounts ask for an identity: the one within the policy (extra variables) is onboarded and proven,
    the one asking for a grant outside it is refused where its team sees it, by one job with the EDA automation's
    token (extensions/eda/rbac/onboarding.yml); the second run changes nothing."""
    tag = uuid.uuid4().hex[:4]
    namespace, identity, group = f"awx-onb-{tag}", f"id-awx-onb-{tag}", cluster_issuer["cluster_resource_group"]
    core = kubernetes.client.CoreV1Api(_admin_client(lab))
    core.create_namespace({"metadata": {"name": namespace}})
    asked = {"orders": "Key Vault Secrets User@app-vault", "greedy": "Owner@app-vault"}
    for name, grants in asked.items():
        annotations = {
            "aks.workload-identity/request-identity": identity,
            "aks.workload-identity/request-grants": grants,
        }
        core.create_namespaced_service_account(namespace, {"metadata": {"name": name, "annotations": annotations}})
    extravars = {
        "cluster_resource_group": group,
        "cluster_name": cluster_issuer["cluster_name"],
        # A registry of its own: the EDA tests' automation records in the default one.
        "onboarding_registry_name": "awx-onb-registry",
        "onboarding_policy": {
            "identity_resource_group": group,
            "scopes": {"app-vault": cluster_issuer["vault_id"]},
            "namespaces": {namespace: {"identities": ["id-awx-onb-*"], "grants": ["Key Vault Secrets User@app-vault"]}},
        },
    }
    onboard = {"azure_rm": _azure_credential(lab), "kubernetes_bearer_token": _kubernetes_credential(lab, "onboard")}
    marks = {None: lab.kube_mark()}
    try:
        job = _run_job(lab, awx_environment, "onboard", onboard, extravars)
        _assert_success(job, "onboard")
        assert job.changed > 0

        seq, again_mark = lab.last_seq(), lab.kube_mark()
        again = _run_job(lab, awx_environment, "onboard", onboard, extravars)
        _assert_success(again, "onboard (second run)")
        assert again.changed == 0, f"the second onboarding changed something:\n{again.stdout}"
        assert lab.writes(seq) == [], "the second onboarding wrote to Azure"
        assert _writes_by(lab, again_mark, "onboard") == []

        _assert_least_privilege(lab, marks, "onboard")
        # The result, with the SDK and the kubernetes client: orders onboarded (its identity trusts it, its client
        # ID on it), greedy refused with the reason where its team sees it and nothing applied for it.
        msi = _msi(lab)
        client_id = msi.user_assigned_identities.get(group, identity).client_id
        subjects = [c.subject for c in msi.federated_identity_credentials.list(group, identity)]
        assert subjects == [f"system:serviceaccount:{namespace}:orders"]
        status = "aks.workload-identity/onboarding-status"
        orders = core.read_namespaced_service_account("orders", namespace).metadata.annotations
        assert (orders[status], orders["azure.workload.identity/client-id"]) == ("onboarded", client_id)
        greedy = core.read_namespaced_service_account("greedy", namespace).metadata.annotations
        assert greedy[status] == "refused" and "azure.workload.identity/client-id" not in greedy, greedy
        events = core.list_namespaced_event(namespace).items
        reasons = sorted((e.involved_object.name, e.reason) for e in events)
        assert reasons == [("greedy", "OnboardingRefused"), ("orders", "Onboarded")], reasons
        assert "grant Owner@app-vault is not allowed" in next(e.message for e in events if e.reason != "Onboarded")
    finally:
        # The requests go with the test: an onboarding automation later in the session sees only its own.
        for name in asked:
            core.delete_namespaced_service_account(name, namespace)
