"""Self-service onboarding through Event-Driven Ansible, end to end on the lab: the real ansible-rulebook (PyPI, on
Java 17) runs the collection's rulebook extensions/eda/rulebooks/onboarding.yml; its event source watches the real
kube-apiserver and each event runs the onboard playbook through ansible-runner, as ansible-rulebook does.

The automation holds only what extensions/eda/rbac/onboarding.yml grants: the bearer token of its ServiceAccount in
K8S_AUTH_* (no kubeconfig, an empty HOME), and the lab's Azure deployer in AZURE_*. The test plays the application
teams with the lab's admin: a request made before the rulebook starts is onboarded and proven at startup, one
outside the policy is refused where the requester sees it (annotation and Event) with nothing applied, and a
withdrawn request is taken down. State is read with the test's own clients, never through the collection."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import COLLECTIONS, REPO
from tests.integration.automation import service_account_login
from tests.integration.runner import run_module

kubernetes = pytest.importorskip("kubernetes")
pytestmark = pytest.mark.lab

RULEBOOK = "aks.workload_identity.onboarding"
RBAC = REPO / "extensions" / "eda" / "rbac" / "onboarding.yml"
AUTOMATION = ("aks-wid-onboarding", "aks-wid-onboarding")  # namespace, ServiceAccount
IDENTITY, GRANTS = "aks.workload-identity/request-identity", "aks.workload-identity/request-grants"
STATUS, CLIENT_ID = "aks.workload-identity/onboarding-status", "azure.workload.identity/client-id"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
WAIT = 180  # seconds for one reconcile to show: a playbook run with a proof, on a loaded 2-core machine


def rulebook_binary() -> str:
    found = shutil.which("ansible-rulebook", path=str(Path(sys.executable).parent)) or shutil.which("ansible-rulebook")
    if not found or not shutil.which("java"):
        missing = "ansible-rulebook and Java 17 are needed (tests/requirements.txt; the machine's JDK)"
        if os.environ.get("CI"):  # CI installs both: a skip there would hide the EDA flow
            pytest.fail(missing)
        pytest.skip(missing)
    return found


def automation_env(lab, home: Path) -> dict[str, str]:
    """What the rulebook's process gets: the Azure credential, and the automation ServiceAccount's bearer token."""
    login = service_account_login(lab, RBAC, *AUTOMATION)
    ca = home.parent / "kube-ca.crt"
    ca.write_text(login["ca_pem"])
    keep = ("PATH", "LANG", "LC_ALL", "JAVA_HOME", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update({k: v for k, v in lab.env.items() if k.startswith(("AZURE_", "REQUESTS_CA")) or k == "PYTHONPATH"})
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(home),
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "K8S_AUTH_HOST": login["host"],
            "K8S_AUTH_API_KEY": login["token"],
            "K8S_AUTH_SSL_CA_CERT": str(ca),
            "K8S_AUTH_VERIFY_SSL": "True",
        }
    )
    return env


@pytest.fixture(scope="module")
def world(lab, tmp_path_factory) -> dict[str, Any]:
    enabled = run_module("aks_oidc", {"resource_group": lab.seed["resource_group"], "name": "aks-wid-lab"}, env=lab.env)
    assert not enabled.failed, enabled.result
    api_client = kubernetes.config.new_client_from_config(str(lab.admin_kubeconfig))
    core = kubernetes.client.CoreV1Api(api_client)
    tag = f"eda{uuid.uuid4().hex[:4]}"
    apps, closed = f"{tag}-apps", f"{tag}-closed"
    for name in (apps, closed):
        core.create_namespace({"metadata": {"name": name}})
    group, subscription = lab.seed["resource_group"], lab.env["AZURE_SUBSCRIPTION_ID"]
    vault = f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.KeyVault/vaults/{lab.seed['rbac_vault']}"
    root = tmp_path_factory.mktemp("eda")
    (root / "home").mkdir()
    (root / "inventory.yml").write_text(
        yaml.safe_dump({"all": {"hosts": {"localhost": {"ansible_connection": "local"}}}})
    )
    variables = {
        "onboarding_cluster_resource_group": group,
        "onboarding_cluster_name": "aks-wid-lab",
        "onboarding_policy": {
            "identity_resource_group": group,
            "scopes": {"app-vault": vault},
            "namespaces": {apps: {"identities": [f"id-{tag}-*"], "grants": ["Key Vault Secrets User@app-vault"]}},
        },
    }
    (root / "vars.yml").write_text(yaml.safe_dump(variables))
    return {"tag": tag, "apps": apps, "closed": closed, "core": core, "root": root, "group": group}


def wait_for(what: str, probe, timeout: float = WAIT, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(1)
    tail = log.read_text()[-6000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n--- ansible-rulebook's output (tail):\n{tail}")


def status_of(core, namespace: str, name: str) -> str | None:
    found = core.read_namespaced_service_account(name, namespace).metadata.annotations or {}
    return found.get(STATUS)


def reasons(core, namespace: str, name: str) -> list[tuple[str, str, str]]:
    listed = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return sorted((e.type, e.reason, e.message) for e in listed)


def test_rulebook_onboards_refuses_and_tears_down(lab, world):
    from azure.mgmt.msi import ManagedServiceIdentityClient

    from tests.integration.sdk import sdk_client

    core, apps, closed, root, tag, group = (world[k] for k in ("core", "apps", "closed", "root", "tag", "group"))
    msi = sdk_client(lab, ManagedServiceIdentityClient)
    identity = f"id-{tag}-orders"
    # Asked before the automation runs: the startup event must find it.
    core.create_namespaced_service_account(
        apps,
        {
            "metadata": {
                "name": "orders",
                "annotations": {IDENTITY: identity, GRANTS: "Key Vault Secrets User@app-vault"},
            }
        },
    )
    env = automation_env(lab, root / "home")
    log = root / "ansible-rulebook.log"
    mark = lab.kube_mark()
    command = [rulebook_binary(), "-r", RULEBOOK, "-i", str(root / "inventory.yml"), "--vars", str(root / "vars.yml")]
    with log.open("w") as out:
        process = subprocess.Popen(
            command, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        # 1. Onboarded and proven at startup.
        wait_for("orders onboarded", lambda: status_of(core, apps, "orders") == "onboarded", log=log)
        client_id = msi.user_assigned_identities.get(group, identity).client_id
        account = core.read_namespaced_service_account("orders", apps).metadata.annotations
        assert account[CLIENT_ID] == client_id
        subjects = [c.subject for c in msi.federated_identity_credentials.list(group, identity)]
        assert subjects == [f"system:serviceaccount:{apps}:orders"]
        assert [(t, r) for t, r, _m in reasons(core, apps, "orders")] == [("Normal", "Onboarded")]

        # 2. Outside the policy: refused, visible to the requester, nothing applied.
        core.create_namespaced_service_account(
            apps, {"metadata": {"name": "greedy", "annotations": {IDENTITY: identity, GRANTS: "Owner@app-vault"}}}
        )
        core.create_namespaced_service_account(
            closed, {"metadata": {"name": "sneaky", "annotations": {IDENTITY: identity}}}
        )
        wait_for("greedy refused", lambda: status_of(core, apps, "greedy") == "refused", log=log)
        wait_for("sneaky refused", lambda: status_of(core, closed, "sneaky") == "refused", log=log)
        greedy = reasons(core, apps, "greedy")
        assert [(t, r) for t, r, _m in greedy] == [("Warning", "OnboardingRefused")]
        assert "grant Owner@app-vault is not allowed" in greedy[0][2]
        assert "is not open to self-service onboarding" in reasons(core, closed, "sneaky")[0][2]
        for namespace, name in ((apps, "greedy"), (closed, "sneaky")):
            assert CLIENT_ID not in (core.read_namespaced_service_account(name, namespace).metadata.annotations or {})
        assert [c.subject for c in msi.federated_identity_credentials.list(group, identity)] == [
            f"system:serviceaccount:{apps}:orders"
        ]

        # 3. Withdrawn: taken down (the identity stays, as the policy does not delete identities).
        core.patch_namespaced_service_account(
            "orders", apps, {"metadata": {"annotations": {IDENTITY: None, GRANTS: None}}}
        )
        wait_for("orders offboarded", lambda: status_of(core, apps, "orders") == "offboarded", log=log)
        assert list(msi.federated_identity_credentials.list(group, identity)) == []
        assert CLIENT_ID not in core.read_namespaced_service_account("orders", apps).metadata.annotations
        assert ("Normal", "Offboarded") in [(t, r) for t, r, _m in reasons(core, apps, "orders")]
        assert process.poll() is None, "ansible-rulebook stopped"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    output = log.read_text()
    assert output.count("Onboard the ServiceAccounts that ask") >= 3, output[-4000:]  # startup, refusals, withdrawal
    # No secret or token in what the automation printed.
    for secret in (lab.env["AZURE_SECRET"], env["K8S_AUTH_API_KEY"]):
        assert secret not in output
    assert not JWT.search(output)
    # Everything the automation did, it did as its own ServiceAccount, and nothing it tried was forbidden.
    automation = f"system:serviceaccount:{AUTOMATION[0]}:{AUTOMATION[1]}"
    from tests.lab.kube import controlplane

    done = [e for e in controlplane.audit_requests(Path(lab.workdir) / "kube", mark) if e["user"] == automation]
    assert done, "no request of the automation's ServiceAccount in the audit log"
    assert [e for e in done if e["code"] == 403] == []
    # (The source's watch shows in the audit log only once it ends; the refusal and the withdrawal, seen within
    # seconds and long before a resync, show it at work.)
    assert {e["verb"] for e in done} >= {"list", "patch", "create"}
