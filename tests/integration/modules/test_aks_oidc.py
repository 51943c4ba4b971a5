"""aks_oidc on the lab: check mode -> enable -> no-op -> diff -> refusals, busy clusters, wait: false, faults.

Every cluster here is created by the test itself (unique names, OIDC issuer off) in a resource group of its own;
the seeded aks-wid-lab is never touched. State is checked with our own SDK client and the emulator's state.
"""

from __future__ import annotations

import copy
import uuid

import pytest
from azure.identity import ClientSecretCredential
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.containerservice import models as aks_models
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.resource.resources import models as resource_models

from tests.integration.runner import run_module

pytestmark = pytest.mark.lab

ARM_SCOPE = "https://management.core.windows.net/.default"
FAST = {"lro_polling_interval": 0.2}  # the emulator sends no Retry-After: poll quickly


# --- helpers shared with test_aks_cluster.py ---------------------------------------------------------------------
def arm_requests(lab, since: int) -> list[dict]:
    """ARM requests since ``since``, without the cloud metadata document (read once per run, not an ARM call)."""
    return [r for r in lab.requests(since) if r["plane"] == "arm" and not r["path"].startswith("/metadata/")]


def sdk_clients(lab) -> tuple[ContainerServiceClient, ResourceManagementClient]:
    env = lab.env
    credential = ClientSecretCredential(
        env["AZURE_TENANT"],
        env["AZURE_CLIENT_ID"],
        env["AZURE_SECRET"],
        authority=lab.emulator_url,
        disable_instance_discovery=True,
        connection_verify=env["AZURE_CA_BUNDLE"],
    )
    common = {
        "base_url": lab.emulator_url,
        "credential_scopes": [ARM_SCOPE],
        "connection_verify": env["AZURE_CA_BUNDLE"],
        "polling_interval": 0.2,
    }
    subscription = env["AZURE_SUBSCRIPTION_ID"]
    return ContainerServiceClient(credential, subscription, **common), ResourceManagementClient(
        credential, subscription, **common
    )


def stored(lab, resource_id: str) -> dict | None:
    """The cluster exactly as the emulator keeps it (= what a GET returns)."""
    return lab.state()["resources"].get(resource_id.lower())


def without_oidc_changes(body: dict) -> dict:
    """A cluster body minus what enabling the issuer and workload identity may change."""
    body = copy.deepcopy(body)
    properties = body["properties"]
    properties.pop("oidcIssuerProfile")
    properties.get("securityProfile", {}).pop("workloadIdentity", None)
    properties.pop("provisioningState")
    for pool in properties["agentPoolProfiles"]:
        pool.pop("provisioningState")
    return body


def make_cluster(
    aks: ContainerServiceClient, group: str, name: str, *, oidc: bool = False
) -> aks_models.ManagedCluster:
    """A cluster with more than aks_oidc knows about (two pools, kubenet, an add-on, authorized IP ranges), so a
    round trip that dropped anything would show."""
    body = {
        "location": "eastus",
        "tags": {"team": "p5", "cost-center": "4711"},
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "kubernetesVersion": "1.33",
            "dnsPrefix": name,
            "agentPoolProfiles": [
                {"name": "system", "count": 2, "vmSize": "Standard_D4ds_v5", "mode": "System", "maxPods": 42,
                 "nodeLabels": {"team": "p5"}},
                {"name": "user1", "count": 1, "vmSize": "Standard_D8ds_v5", "mode": "User",
                 "nodeTaints": ["gpu=true:NoSchedule"]},
            ],
            "networkProfile": {"networkPlugin": "kubenet", "podCidr": "10.200.0.0/16"},
            "addonProfiles": {"azureKeyvaultSecretsProvider": {"enabled": True, "config": {"enableSecretRotation": "true"}}},
            "apiServerAccessProfile": {"authorizedIPRanges": ["203.0.113.0/24"]},
            "autoUpgradeProfile": {"upgradeChannel": "patch"},
            "oidcIssuerProfile": {"enabled": oidc},
        },
    }  # fmt: skip
    return aks.managed_clusters.begin_create_or_update(group, name, aks_models.ManagedCluster(body)).result()


@pytest.fixture(scope="module")
def clients(lab):
    return sdk_clients(lab)


@pytest.fixture(scope="module")
def aks(clients) -> ContainerServiceClient:
    return clients[0]


@pytest.fixture(scope="module")
def fast_operations(lab):
    """Long-running operations of one second (restored afterwards: the lab is shared)."""
    previous = lab.settings()["lro_seconds"]
    lab.settings(lro_seconds=1)
    try:
        yield
    finally:
        lab.settings(lro_seconds=previous)


@pytest.fixture(scope="module")
def group(lab, clients, fast_operations):
    """A resource group of our own, deleted with everything in it at the end."""
    resources = clients[1]
    name = f"rg-p5-oidc-{uuid.uuid4().hex[:8]}"
    resources.resource_groups.create_or_update(name, resource_models.ResourceGroup(location="eastus"))
    yield name
    resources.resource_groups.begin_delete(name).result()


@pytest.fixture
def cluster(aks, group):
    """A fresh cluster with the OIDC issuer off."""
    name = f"aks-p5-{uuid.uuid4().hex[:8]}"
    make_cluster(aks, group, name)
    return name


@pytest.fixture
def no_faults(lab):
    yield
    lab.clear_faults()


# --- tests -------------------------------------------------------------------------------------------------------
def test_lifecycle(lab, aks, group, cluster):
    args = {"resource_group": group, "name": cluster, **FAST}
    read = aks.managed_clusters.get(group, cluster)
    original = stored(lab, read.id)

    seq = lab.last_seq()
    check = run_module("aks_oidc", args, env=lab.env, check=True, diff=True)
    assert not check.failed, check.output
    assert check.changed
    assert check["issuer_url"] is None and check["oidc_issuer_enabled"] and check["workload_identity_enabled"]
    assert check["diff"]["before"]["oidc_issuer_enabled"] is False
    assert check["diff"]["after"]["oidc_issuer_enabled"] is True
    assert "restarts its API server" in check.output  # the warning, in check mode too
    assert lab.writes(seq) == []
    assert [r["method"] for r in arm_requests(lab, seq)] == ["GET"]
    assert stored(lab, read.id) == original

    enabled = run_module("aks_oidc", args, env=lab.env, diff=True)
    assert not enabled.failed, enabled.output
    assert enabled.changed and enabled["provisioning_state"] == "Succeeded"
    after = aks.managed_clusters.get(group, cluster)
    assert after.oidc_issuer_profile.enabled and after.security_profile.workload_identity.enabled
    assert enabled["issuer_url"] == after.oidc_issuer_profile.issuer_url  # exact, trailing slash and all
    assert enabled["issuer_url"].endswith("/")
    assert enabled["id"] == after.id
    assert enabled["diff"]["before"]["issuer_url"] is None
    assert enabled["diff"]["after"]["issuer_url"] == enabled["issuer_url"]
    # The PUT sent the cluster as read: nothing but the two settings (and provisioning states) changed.
    now = stored(lab, read.id)
    assert without_oidc_changes(now) == without_oidc_changes(original)
    assert now["properties"]["oidcIssuerProfile"] == {"enabled": True, "issuerURL": enabled["issuer_url"]}
    assert now["properties"]["securityProfile"] == {
        **original["properties"]["securityProfile"],
        "workloadIdentity": {"enabled": True},
    }
    assert [r["method"] for r in arm_requests(lab, seq)].count("PUT") == 1

    seq = lab.last_seq()
    again = run_module("aks_oidc", args, env=lab.env, verbosity=3)
    assert not again.failed and not again.changed
    assert again["issuer_url"] == enabled["issuer_url"]
    assert [r["method"] for r in arm_requests(lab, seq)] == ["GET"]  # a no-op run is one GET
    assert lab.env["AZURE_SECRET"] not in again.output

    disabled = run_module("aks_oidc", {**args, "workload_identity": False}, env=lab.env, diff=True)
    assert disabled.changed and disabled["workload_identity_enabled"] is False
    assert disabled["diff"]["before"]["workload_identity_enabled"] is True
    assert disabled["diff"]["after"]["workload_identity_enabled"] is False
    changed = {k for k in disabled["diff"]["after"] if disabled["diff"]["after"][k] != disabled["diff"]["before"][k]}
    assert changed == {"workload_identity_enabled"}
    state = aks.managed_clusters.get(group, cluster)
    assert state.security_profile.workload_identity.enabled is False
    assert state.oidc_issuer_profile.enabled and state.oidc_issuer_profile.issuer_url == enabled["issuer_url"]

    assert run_module("aks_oidc", args, env=lab.env).changed  # on again

    seq = lab.last_seq()
    refused = run_module("aks_oidc", {**args, "oidc_issuer": False, "workload_identity": False}, env=lab.env)
    assert refused.failed and refused["error_code"] == "OIDCIssuerCannotBeDisabled"
    assert "AKS does not support disabling the OIDC issuer" in refused["msg"]
    assert lab.writes(seq) == []


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"oidc_issuer": False, "workload_identity": True}, "workload_identity: requires oidc_issuer"),
        ({"name": "not a name!"}, "name: must be 1-63 letters"),
    ],
)
def test_bad_input_fails_before_any_request(lab, group, overrides, words):
    seq = lab.last_seq()
    run = run_module("aks_oidc", {"resource_group": group, "name": "aks-x", **overrides}, env=lab.env)
    assert run.failed and run["error_code"] == "InvalidParameter" and words in run["msg"]
    assert lab.requests(seq) == []  # not even a token request


def test_missing_cluster_and_group(lab, group):
    seq = lab.last_seq()
    missing = run_module("aks_oidc", {"resource_group": group, "name": "aks-nowhere"}, env=lab.env)
    assert missing.failed and missing["error_code"] == "ResourceNotFound"
    assert missing["msg"].startswith(f"name: AKS cluster 'aks-nowhere' in resource group '{group}' does not exist")
    no_group = run_module("aks_oidc", {"resource_group": "rg-p5-nowhere", "name": "aks-nowhere"}, env=lab.env)
    assert no_group.failed and no_group["error_code"] == "ResourceGroupNotFound"
    assert no_group["msg"] == "resource_group: resource group 'rg-p5-nowhere' does not exist"
    assert "Traceback" not in missing["msg"] + no_group["msg"]
    assert lab.writes(seq) == []


def test_wait_false_then_wait(lab, aks, group, cluster):
    args = {"resource_group": group, "name": cluster, **FAST}
    lab.settings(lro_seconds=3)
    try:
        started = run_module("aks_oidc", {**args, "wait": False}, env=lab.env)
        assert not started.failed, started.output
        assert started.changed and started["provisioning_state"] == "Updating"
        assert started["issuer_url"]  # already in the PUT's answer (azure-behaviour §5)
        seq = lab.last_seq()
        waited = run_module("aks_oidc", args, env=lab.env)
    finally:
        lab.settings(lro_seconds=1)
    assert not waited.failed and not waited.changed
    assert waited["provisioning_state"] == "Succeeded"
    assert (
        waited["issuer_url"]
        == started["issuer_url"]
        == aks.managed_clusters.get(group, cluster).oidc_issuer_profile.issuer_url
    )
    assert {r["method"] for r in arm_requests(lab, seq)} == {"GET"}


def test_busy_cluster_is_awaited_not_raced(lab, aks, group, cluster):
    args = {"resource_group": group, "name": cluster, **FAST}
    lab.settings(lro_seconds=12)  # outlasts one ansible-playbook start
    try:
        # Somebody else's update (new tags) is running when the module comes.
        current = aks.managed_clusters.get(group, cluster)
        current.tags = {**current.tags, "owner": "someone-else"}
        aks.managed_clusters.begin_create_or_update(group, cluster, current, polling=False)

        seq = lab.last_seq()
        impatient = run_module("aks_oidc", {**args, "wait": False}, env=lab.env)
        assert impatient.failed and impatient["error_code"] == "OperationNotAllowed"
        assert "another operation is running" in impatient["msg"]
        assert lab.writes(seq) == []

        seq = lab.last_seq()
        patient = run_module("aks_oidc", args, env=lab.env)
    finally:
        lab.settings(lro_seconds=1)
    assert not patient.failed, patient.output
    assert patient.changed and patient["provisioning_state"] == "Succeeded"
    puts = [r for r in arm_requests(lab, seq) if r["method"] == "PUT"]
    assert [r["status"] for r in puts] == [200]  # waited: never a 409
    after = aks.managed_clusters.get(group, cluster)
    assert after.tags["owner"] == "someone-else"  # the other change survived: we re-read before writing
    assert after.oidc_issuer_profile.enabled and after.security_profile.workload_identity.enabled


def test_throttling_and_unavailable_operation_status_converge(lab, aks, group, cluster, no_faults):
    args = {"resource_group": group, "name": cluster, **FAST}
    lab.fault(method="PUT", path=f"managedClusters/{cluster}$", action="status", status=429, retry_after=1, count=1)
    lab.fault(method="GET", path=r"/locations/eastus/operations/", action="status", status=503, count=1)
    seq = lab.last_seq()
    run = run_module("aks_oidc", args, env=lab.env)
    assert not run.failed, run.output
    assert run.changed and run["provisioning_state"] == "Succeeded"
    requests = arm_requests(lab, seq)
    puts = [r["status"] for r in requests if r["method"] == "PUT"]
    assert puts == [429, 200]  # retried once after Retry-After, one write landed
    assert 503 in [r["status"] for r in requests if "/operations/" in r["path"]]
    after = aks.managed_clusters.get(group, cluster)
    assert run["issuer_url"] == after.oidc_issuer_profile.issuer_url
    assert after.security_profile.workload_identity.enabled
