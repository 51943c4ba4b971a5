"""wid_verify on the lab: a chain built with the collection's own modules passes end to end (a real kube-apiserver
token exchanged at the emulated Entra ID, a Key Vault secret read with it), and each broken variant fails at the
right step with the right cause and code; propagation is retried (and only propagation); check mode writes
nothing on either side; neither the token nor the secret ever reaches the output.

Broken variants are made with SDK / kubernetes clients of the test's own (fast, and independent of the module
under test); the good chain is made with the collection's modules."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.msi import ManagedServiceIdentityClient
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from ansible_collections.aks.workload_identity.plugins.module_utils import workload_identity as wi
from tests.integration.modules.test_role_assignment import sdk_client
from tests.integration.runner import run_module

pytestmark = pytest.mark.lab

NAMESPACE, SERVICE_ACCOUNT, IDENTITY = "verify-good", "app", "id-verify-good"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.")
Edit = Callable[[dict[str, Any]], dict[str, Any]]
INJECTED = sorted([wi.ENV_CLIENT_ID, wi.ENV_TENANT_ID, wi.ENV_FEDERATED_TOKEN_FILE, wi.ENV_AUTHORITY_HOST])


class Clients:
    def __init__(self, lab) -> None:
        self.msi = sdk_client(lab, ManagedServiceIdentityClient)
        self.authorization = sdk_client(lab, AuthorizationManagementClient)
        self.aks = sdk_client(lab, ContainerServiceClient)
        api = k8s_config.new_client_from_config(config_file=str(lab.admin_kubeconfig))
        self.core = k8s.CoreV1Api(api)
        self.admission = k8s.AdmissionregistrationV1Api(api)


@pytest.fixture(scope="module")
def clients(lab) -> Clients:
    return Clients(lab)


@pytest.fixture(scope="module")
def chain(lab, clients) -> dict[str, Any]:
    """The docs' chain, made with the collection's modules: OIDC issuer, identity, ServiceAccount, federated
    credential, Key Vault Secrets User on the RBAC vault."""
    rg, env = lab.seed["resource_group"], lab.env
    oidc = run_module(
        "aks_oidc",
        {"resource_group": rg, "name": lab.seed["cluster"], "oidc_issuer": True, "workload_identity": True},
        env=env,
    )
    assert not oidc.failed, oidc.output
    identity = run_module("managed_identity", {"resource_group": rg, "name": IDENTITY}, env=env)
    assert not identity.failed, identity.output
    client_id = identity["managed_identity"]["client_id"]
    steps = [
        (
            "wid_service_account",
            {"namespace": NAMESPACE, "name": SERVICE_ACCOUNT, "client_id": client_id, "create_namespace": True},
        ),
        (
            "federated_credential",
            {
                "resource_group": rg,
                "identity_name": IDENTITY,
                "issuer": oidc["issuer_url"],
                "namespace": NAMESPACE,
                "service_account": SERVICE_ACCOUNT,
            },
        ),
        (
            "keyvault_access",
            {
                "vault_name": lab.seed["rbac_vault"],
                "resource_group": rg,
                "identity_name": IDENTITY,
                "identity_resource_group": rg,
            },
        ),
    ]
    for module, args in steps:
        run = run_module(module, args, env=env)
        assert not run.failed, run.output
    return {"issuer": oidc["issuer_url"], "identity": identity["managed_identity"], "client_id": client_id}


@pytest.fixture
def workload(lab, clients, chain):
    """Make a fresh identity + annotated ServiceAccount (+ credentials) with the test's own clients."""
    made: list[tuple[str, str]] = []

    def make(credentials: list[Edit] | None = None, client_id: str | None = None) -> dict[str, Any]:
        """``credentials``: one function per credential, turning the matching credential into the one to make."""
        suffix = uuid.uuid4().hex[:8]
        namespace, name = f"verify-{suffix}", "app"
        rg = lab.seed["resource_group"]
        identity = clients.msi.user_assigned_identities.create_or_update(
            rg, f"id-verify-{suffix}", {"location": "eastus"}
        )
        made.append((namespace, identity.name))
        client_id = client_id or identity.client_id
        clients.core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
        annotations = {wi.ANNOTATION_CLIENT_ID: client_id}
        clients.core.create_namespaced_service_account(
            namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name, annotations=annotations))
        )
        subject = wi.service_account_subject(namespace, name)
        for index, edit in enumerate(credentials or []):
            body = edit({"issuer": chain["issuer"], "subject": subject, "audiences": [wi.DEFAULT_AUDIENCE]})
            clients.msi.federated_identity_credentials.create_or_update(rg, identity.name, f"fic-{index}", body)
        return {"namespace": namespace, "name": name, "identity": identity, "subject": subject, "rg": rg}

    yield make
    for namespace, identity_name in made:
        clients.core.delete_namespace(namespace)
        clients.msi.user_assigned_identities.delete(lab.seed["resource_group"], identity_name)


def verify(lab, made: dict[str, Any], check: bool = False, verbosity: int = 0, **args: Any):
    base = {
        "namespace": made["namespace"],
        "service_account": made["name"],
        "cluster_resource_group": lab.seed["resource_group"],
        "cluster_name": lab.seed["cluster"],
        "webhook_dry_run": False,
    }
    return run_module("wid_verify", {**base, **args}, env=lab.env, check=check, verbosity=verbosity)


def steps(run) -> dict[str, str]:
    return {step["name"]: step["status"] for step in run["steps"]}


def grant_secrets_user(lab, clients, principal_id: str) -> None:
    sub, rg = lab.env["AZURE_SUBSCRIPTION_ID"], lab.seed["resource_group"]
    scope = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{lab.seed['rbac_vault']}"
    role = f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{wi.ROLE_KEY_VAULT_SECRETS_USER}"
    clients.authorization.role_assignments.create(
        scope,
        str(uuid.uuid4()),
        {"role_definition_id": role, "principal_id": principal_id, "principal_type": "ServicePrincipal"},
    )


@pytest.fixture
def propagation(lab):
    previous = lab.settings()
    yield lab.settings
    lab.settings(
        credential_propagation_seconds=previous["credential_propagation_seconds"],
        role_propagation_seconds=previous["role_propagation_seconds"],
    )


# --------------------------------------------------------------------------------------------- the good chain
def test_good_chain_passes_and_leaks_nothing(lab, chain):
    good = {"namespace": NAMESPACE, "name": SERVICE_ACCOUNT}
    run = verify(
        lab,
        good,
        verbosity=3,
        identity_resource_group=lab.seed["resource_group"],
        identity_name=IDENTITY,
        keyvault=lab.seed["rbac_vault"],
        secret_name=lab.seed["secret_name"],
    )
    assert not run.failed, run.output
    assert run["passed"] and run["failed_step"] is None and not run.changed
    assert steps(run) == {
        "serviceaccount": "passed",
        "cluster": "passed",
        "credential": "passed",
        "token": "passed",
        "exchange": "passed",
        "access": "passed",
        "webhook": "skipped",
    }
    assert run["claims"]["iss"] == chain["issuer"] and run["claims"]["sub"] == "system:serviceaccount:verify-good:app"
    assert run["claims"]["aud"] == [wi.DEFAULT_AUDIENCE]
    assert run["credential"]["issuer"] == chain["issuer"]
    assert run["expected"]["client_id"] == chain["client_id"]
    assert run["access"] == {"kind": "keyvault", "target": run["access"]["target"], "status": "passed"}
    assert run["attempts"] == 2 and run["progress"] == []
    assert lab.seed["secret_value"] not in run.output
    assert lab.env["AZURE_SECRET"] not in run.output
    assert not JWT.search(run.output)  # no token, not even at -vvv


def test_secret_value_only_on_request(lab, chain):
    run = verify(
        lab,
        {"namespace": NAMESPACE, "name": SERVICE_ACCOUNT},
        keyvault=lab.seed["rbac_vault"],
        secret_name=lab.seed["secret_name"],
        return_secret_value=True,
    )
    assert run["passed"] and run["access"]["secret_value"] == lab.seed["secret_value"]


def test_check_mode_writes_nothing_and_mints_no_token(lab, chain):
    seq, mark = lab.last_seq(), lab.kube_mark()
    run = verify(
        lab,
        {"namespace": NAMESPACE, "name": SERVICE_ACCOUNT},
        check=True,
        keyvault=lab.seed["rbac_vault"],
        secret_name=lab.seed["secret_name"],
        webhook_dry_run=True,
    )
    assert not run.failed, run.output
    assert run["passed"] and run["claims"] is None
    assert steps(run)["credential"] == "passed"
    assert {steps(run)[s] for s in ("token", "exchange", "access")} == {"skipped"}
    assert lab.writes(seq) == []
    assert lab.kube_writes(mark) == []


def test_check_mode_finds_a_mismatch_without_a_token(lab, workload, chain):
    made = workload([lambda b: {**b, "issuer": b["issuer"].rstrip("/")}])
    run = verify(lab, made, check=True, fail_on_error=False)
    assert not run.failed and not run["passed"]
    assert run["failed_step"] == "credential" and "trailing slash" in run["cause"]
    assert run["error_code"] == "AADSTS700211"  # what Entra would answer


def test_fail_on_error_false_returns_the_diagnosis(lab, workload):
    made = workload([])
    run = verify(lab, made, fail_on_error=False)
    assert not run.failed and run["passed"] is False
    assert run["failed_step"] == "credential" and "has no federated credentials" in run["cause"]
    assert run["error_code"] == "AADSTS700211"


# --------------------------------------------------------------------------------------------- broken variants
def same(body: dict[str, Any]) -> dict[str, Any]:
    return body


@pytest.mark.parametrize(
    ("edit", "code", "fragment"),
    [
        (lambda b: {**b, "issuer": b["issuer"].rstrip("/")}, "AADSTS700211", "trailing slash"),
        (lambda b: {**b, "subject": b["subject"].replace(":app", ":App")}, "AADSTS7002138", "letter case"),
        (
            lambda b: {**b, "subject": "system:serviceaccount:verify-other:app"},
            "AADSTS700213",
            "namespace 'verify-other'",
        ),
        (lambda b: {**b, "audiences": ["api://SomethingElse"]}, "AADSTS700212", "audience"),
    ],
    ids=["issuer-trailing-slash", "subject-case", "wrong-namespace", "wrong-audience"],
)
def test_credential_mismatch_is_diagnosed_and_not_retried(lab, workload, edit, code, fragment):
    made = workload([edit])
    run = verify(lab, made, propagation_timeout=60, retry_interval=1)
    assert run.failed and not run["passed"]
    assert run["failed_step"] == "credential", run["cause"]
    assert run["error_code"] == code
    assert fragment in run["cause"]
    assert run["attempts"] == 1 and run["progress"] == []  # a definite mismatch is never retried
    assert steps(run)["exchange"] == "failed" and steps(run)["token"] == "passed"


def test_unknown_client_id(lab, workload):
    made = workload([], client_id=str(uuid.uuid4()))
    run = verify(lab, made)
    assert run["failed_step"] == "exchange" and run["error_code"] == "AADSTS700016"
    assert made["identity"].client_id not in run["cause"] and "knows no application" in run["cause"]
    assert steps(run)["credential"] == "skipped"


def test_missing_annotation(lab, clients, workload):
    made = workload([])
    clients.core.patch_namespaced_service_account(
        made["name"], made["namespace"], {"metadata": {"annotations": {wi.ANNOTATION_CLIENT_ID: None}}}
    )
    run = verify(lab, made, fail_on_error=False)
    assert run["failed_step"] == "serviceaccount" and run["error_code"] == "MissingAnnotation"


def test_oidc_issuer_off(lab, clients, workload):
    rg, name = lab.seed["resource_group"], f"aks-nooidc-{uuid.uuid4().hex[:6]}"
    previous = lab.settings()["lro_seconds"]
    lab.settings(lro_seconds=0.2)
    try:
        clients.aks.managed_clusters.begin_create_or_update(
            rg,
            name,
            {
                "location": "eastus",
                "identity": {"type": "SystemAssigned"},
                "properties": {
                    "dnsPrefix": name,
                    "agentPoolProfiles": [
                        {"name": "nodepool1", "count": 1, "vmSize": "Standard_DS2_v2", "mode": "System"}
                    ],
                    "oidcIssuerProfile": {"enabled": False},
                },
            },
            polling_interval=0.2,
        ).result()
        made = workload([same])
        run = verify(lab, made, cluster_name=name, fail_on_error=False)
    finally:
        lab.settings(lro_seconds=previous)
        clients.aks.managed_clusters.begin_delete(rg, name, polling_interval=0.2).result()
    assert run["failed_step"] == "cluster" and run["error_code"] == "OIDCIssuerNotEnabled"
    assert "aks_oidc" in run["fix"] and run["expected"]["issuer"] == run["claims"]["iss"]


# --------------------------------------------------------------------------------------------- access
def test_missing_grant_fails_at_once(lab, workload):
    made = workload([same])
    run = verify(
        lab, made, keyvault=lab.seed["rbac_vault"], secret_name=lab.seed["secret_name"], propagation_timeout=60
    )
    assert run["failed_step"] == "access" and run["error_code"] == "ForbiddenByRbac"
    assert "has no role assignment" in run["cause"] and "Key Vault Secrets User" in run["fix"]
    assert run["progress"] == [] and run["attempts"] == 2  # one exchange, one read: not retried


def test_missing_access_policy(lab, workload):
    made = workload([same])
    run = verify(lab, made, keyvault=lab.seed["policy_vault"], secret_name=lab.seed["secret_name"])
    assert run["failed_step"] == "access" and run["error_code"] == "AccessDenied"
    assert "access policies" in run["cause"] and "keyvault_access" in run["fix"]


def test_arm_read_missing_then_granted(lab, clients, workload):
    made = workload([same])
    sub, rg = lab.env["AZURE_SUBSCRIPTION_ID"], lab.seed["resource_group"]
    resource_group_id = f"/subscriptions/{sub}/resourceGroups/{rg}"
    run = verify(lab, made, arm_resource_id=resource_group_id)
    assert run["failed_step"] == "access" and run["error_code"] == "AuthorizationFailed"
    assert "has no role assignment" in run["cause"] and "Reader" in run["fix"]
    granted = run_module(
        "role_assignment",
        {
            "scope": resource_group_id,
            "role": "Reader",
            "identity_name": made["identity"].name,
            "identity_resource_group": rg,
        },
        env=lab.env,
    )
    assert not granted.failed, granted.output
    run = verify(lab, made, arm_resource_id=resource_group_id)
    assert run["passed"] and run["access"]["kind"] == "arm" and run["access"]["status"] == "passed"


def test_grant_still_propagating_fails_after_timeout(lab, clients, workload, propagation):
    made = workload([same])
    propagation(role_propagation_seconds=600)
    grant_secrets_user(lab, clients, made["identity"].principal_id)
    run = verify(
        lab,
        made,
        keyvault=lab.seed["rbac_vault"],
        secret_name=lab.seed["secret_name"],
        propagation_timeout=4,
        retry_interval=1,
    )
    assert run["failed_step"] == "access" and run["error_code"] == "ForbiddenByRbac"
    assert "not propagated yet" in run["cause"]
    assert run["progress"] and run["attempts"] >= 3


def test_grant_propagating_passes_after_retries(lab, clients, workload, propagation):
    made = workload([same])
    propagation(role_propagation_seconds=15)
    grant_secrets_user(lab, clients, made["identity"].principal_id)
    run = verify(
        lab,
        made,
        keyvault=lab.seed["rbac_vault"],
        secret_name=lab.seed["secret_name"],
        propagation_timeout=90,
        retry_interval=1,
    )
    assert not run.failed, run.output
    assert run["passed"] and run["progress"] and run["attempts"] > 2
    assert all("ForbiddenByRbac" in line for line in run["progress"])


def test_credential_still_propagating_fails_after_timeout(lab, workload, propagation):
    propagation(credential_propagation_seconds=600)
    made = workload([same])
    run = verify(lab, made, propagation_timeout=4, retry_interval=1)
    assert run["failed_step"] == "exchange" and run["error_code"] == "AADSTS700211"
    assert "has not propagated" in run["cause"] and steps(run)["credential"] == "passed"
    assert run["progress"] and run["attempts"] >= 3


def test_credential_propagating_passes_after_retries(lab, workload, propagation):
    propagation(credential_propagation_seconds=15)
    made = workload([same])
    run = verify(lab, made, propagation_timeout=90, retry_interval=1)
    assert not run.failed, run.output
    assert run["passed"] and run["progress"] and run["attempts"] > 1


# --------------------------------------------------------------------------------------------- webhook
def test_webhook_dry_run(lab, clients, chain):
    seq, mark = lab.last_seq(), lab.kube_mark()
    run = verify(lab, {"namespace": NAMESPACE, "name": SERVICE_ACCOUNT}, webhook_dry_run=True)
    assert not run.failed, run.output
    assert [w["uri"].split("?")[0].rsplit("/", 1)[-1] for w in lab.kube_writes(mark)] == ["token"]  # the TokenRequest
    assert lab.writes(seq) == []
    installed = any(
        webhook.name == "mutation.azure-workload-identity.io"
        for configuration in clients.admission.list_mutating_webhook_configuration().items
        for webhook in configuration.webhooks or []
    )
    if installed:
        assert run["webhook"]["status"] == "passed", run["webhook"]
        assert sorted(run["webhook"]["injected_env"]) == INJECTED and run["webhook"]["token_volume"] is True
    else:
        assert run["webhook"]["status"] == "skipped" and "MutatingWebhookConfiguration" in run["webhook"]["reason"]
