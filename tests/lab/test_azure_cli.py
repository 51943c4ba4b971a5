"""The Azure CLI from PyPI, unmodified, walks Microsoft's workload identity tutorial against the lab.

https://learn.microsoft.com/azure/aks/workload-identity-deploy-cluster: enable the OIDC issuer and workload
identity on a new and an existing cluster, read the issuer URL, create the identity, create an RBAC Key Vault and
give yourself "Key Vault Secrets Officer" on it, set a secret, grant the identity "Key Vault Secrets User",
federate it, and then, as the workload itself, sign in with a ServiceAccount token from the real kube-apiserver
(``az login --federated-token``) and read the secret.

The CLI is installed once into a virtual environment of its own under .build/ (its pins differ from the
collection's SDKs), pointed at the lab as at any custom cloud: ``az cloud register`` with the ARM endpoint (the
CLI reads the cloud's metadata from it), instance discovery off (``core.instance_discovery``, the CLI's setting for
Azure Stack and private clouds, as login.microsoftonline.com cannot vouch for the lab's authority), the lab's CA in
``REQUESTS_CA_BUNDLE``, and a home and config folder of the test's own, so nothing on the host changes.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

pytestmark = pytest.mark.lab

AZURE_CLI_VERSION = "2.91.0"  # the release whose identity commands send Microsoft.ManagedIdentity 2025-05-31-preview
REPO = Path(__file__).resolve().parents[2]
CLI_VENV = REPO / ".build" / f"azure-cli-{AZURE_CLI_VERSION}"
AUDIENCE = "api://AzureADTokenExchange"
RESOURCE_GROUP, CLUSTER = "rg-wid-lab", "aks-wid-lab"  # the seeded cluster, wired to the lab's kube-apiserver


def _install_cli() -> Path:
    """The CLI's own virtual environment: ``venv --without-pip`` (no ensurepip needed), filled by this
    interpreter's pip. Done once per machine; a lock keeps concurrent sessions from installing twice."""
    python = CLI_VENV / "bin" / "python"
    done = CLI_VENV / ".installed"
    CLI_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(CLI_VENV.parent / f".{CLI_VENV.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(CLI_VENV)], check=True)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "--python",
                    str(python),
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    f"azure-cli=={AZURE_CLI_VERSION}",
                ],
                check=True,
            )
            done.touch()
    return python


class AzureCli:
    def __init__(self, python: Path, lab, home: Path) -> None:
        self.python = python
        self.env = {
            **os.environ,
            **lab.env,  # the lab's CA (REQUESTS_CA_BUNDLE) and its resolver for <vault>.vault.localhost
            "HOME": str(home),
            "AZURE_CONFIG_DIR": str(home / ".azure"),
            "AZURE_CORE_INSTANCE_DISCOVERY": "false",
            "AZURE_CORE_COLLECT_TELEMETRY": "false",
            "AZURE_CORE_NO_COLOR": "true",
        }

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.python), "-m", "azure.cli", *args, "--only-show-errors"],
            check=False,  # the caller decides: some steps are meant to be refused
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and done.returncode:
            pytest.fail(f"az {' '.join(args[:3])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        return done

    def value(self, *args: str) -> str:
        return self(*args, "--output", "tsv").stdout.strip()

    def json(self, *args: str) -> dict:
        return json.loads(self(*args, "--output", "json").stdout)


@pytest.fixture(scope="module")
def az(lab, tmp_path_factory) -> AzureCli:
    return AzureCli(_install_cli(), lab, tmp_path_factory.mktemp("az-home"))


def _service_account_token(lab, namespace: str, name: str) -> str:
    api = k8s_config.new_client_from_config(config_file=str(lab.admin_kubeconfig))
    core = k8s.CoreV1Api(api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name)))
    request = k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[AUDIENCE]))
    return core.create_namespaced_service_account_token(name, namespace, request).status.token


def test_the_tutorial_runs_on_the_lab_with_the_azure_cli(az, lab):
    env = lab.env
    suffix = uuid.uuid4().hex[:6]
    identity, vault, namespace, account = f"id-cli-{suffix}", f"kv-cli-{suffix}", f"cli-{suffix}", "workload"

    az("cloud", "register", "--name", "AksWorkloadIdentityLab", "--endpoint-resource-manager", env["LAB_EMULATOR_URL"])
    az("cloud", "set", "--name", "AksWorkloadIdentityLab")
    # --password=: a secret may start with '-' (as the CLI's help says)
    az("login", "--service-principal", "--username", env["AZURE_CLIENT_ID"], f"--password={env['AZURE_SECRET']}",
       "--tenant", env["AZURE_TENANT"], "--output", "none")  # fmt: skip
    assert az.value("account", "show", "--query", "id") == env["AZURE_SUBSCRIPTION_ID"]

    # A new cluster with both features, as the tutorial's first step (the CLI polls the create to its end)
    created = az.json(
        "aks", "create", "--resource-group", RESOURCE_GROUP, "--name", f"aks-cli-{suffix}", "--node-count", "1",
        "--enable-oidc-issuer", "--enable-workload-identity", "--no-ssh-key",
    )  # fmt: skip
    assert created["provisioningState"] == "Succeeded"
    assert created["securityProfile"]["workloadIdentity"]["enabled"] is True
    assert created["storageProfile"]["diskCsiDriver"]["enabled"] is True  # AKS's defaults come back

    # An existing cluster: the update, then the issuer URL the federated credential must carry exactly
    az("aks", "update", "--resource-group", RESOURCE_GROUP, "--name", CLUSTER, "--enable-oidc-issuer",
       "--enable-workload-identity", "--output", "none")  # fmt: skip
    issuer = az.value("aks", "show", "--resource-group", RESOURCE_GROUP, "--name", CLUSTER,
                      "--query", "oidcIssuerProfile.issuerUrl")  # fmt: skip
    assert issuer.startswith(env["LAB_EMULATOR_URL"] + "/" + env["AZURE_TENANT"] + "/") and issuer.endswith("/")

    az("identity", "create", "--name", identity, "--resource-group", RESOURCE_GROUP, "--location", "eastus",
       "--output", "none")  # fmt: skip
    client_id, principal_id = az.value(
        "identity", "show", "--name", identity, "--resource-group", RESOURCE_GROUP,
        "--query", "[clientId, principalId]",
    ).split()  # fmt: skip

    # The vault, and the tutorial's "Key Vault Secrets Officer" for whoever sets the secret
    vault_id = az.value(
        "keyvault", "create", "--name", vault, "--resource-group", RESOURCE_GROUP, "--location", "eastus",
        "--enable-rbac-authorization", "true", "--query", "id",
    )  # fmt: skip
    az("role", "assignment", "create", "--assignee-object-id", lab.seed["deployer_object_id"],
       "--assignee-principal-type", "ServicePrincipal", "--role", "Key Vault Secrets Officer", "--scope", vault_id,
       "--output", "none")  # fmt: skip
    az("keyvault", "secret", "set", "--vault-name", vault, "--name", "my-secret", "--value", "Hello!",
       "--output", "none")  # fmt: skip
    az("role", "assignment", "create", "--assignee-object-id", principal_id, "--assignee-principal-type",
       "ServicePrincipal", "--role", "Key Vault Secrets User", "--scope", vault_id, "--output", "none")  # fmt: skip

    az("identity", "federated-credential", "create", "--name", f"fic-{suffix}", "--identity-name", identity,
       "--resource-group", RESOURCE_GROUP, "--issuer", issuer,
       "--subject", f"system:serviceaccount:{namespace}:{account}", "--audience", AUDIENCE,
       "--output", "none")  # fmt: skip
    listed = az.json("identity", "federated-credential", "list", "--identity-name", identity,
                     "--resource-group", RESOURCE_GROUP)  # fmt: skip
    assert [(c["issuer"], c["subject"]) for c in listed] == [(issuer, f"system:serviceaccount:{namespace}:{account}")]

    # The workload: a token from the real kube-apiserver, exchanged by the CLI, then the secret read with it
    token = _service_account_token(lab, namespace, account)
    az("logout")
    az("login", "--service-principal", "--username", client_id, "--tenant", env["AZURE_TENANT"],
       f"--federated-token={token}", "--allow-no-subscriptions", "--output", "none")  # fmt: skip
    assert az.value("keyvault", "secret", "show", "--vault-name", vault, "--name", "my-secret", "--query", "value") == (
        "Hello!"
    )
    # ...and only that: the identity holds no role that lets it write the secret
    refused = az("keyvault", "secret", "set", "--vault-name", vault, "--name", "my-secret", "--value", "x", check=False)
    assert refused.returncode != 0 and "Forbidden" in refused.stderr
