"""aks_cluster on the lab: check mode -> create (resource group included) -> no-op -> drift warning -> existing
cluster -> absent (check, real, again), bad input, faults. Names are unique; the wired rg-wid-demo/aks-wid-demo
pair is left to the flow that owns it. State is checked with our own SDK clients and the emulator's state."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import ResourceNotFoundError

from tests.integration.modules import test_aks_oidc as shared
from tests.integration.modules.test_aks_oidc import FAST, arm_requests, make_cluster, stored, without_oidc_changes
from tests.integration.runner import run_module

# SDK clients and quick long-running operations, as fixtures of this module too.
clients = shared.clients
fast_operations = shared.fast_operations

pytestmark = pytest.mark.lab


@pytest.fixture
def names(lab, clients, fast_operations):
    """A resource group name (not created) and a cluster name; the group is deleted afterwards if it exists."""
    resources = clients[1]
    suffix = uuid.uuid4().hex[:8]
    group, cluster = f"rg-p5-aks-{suffix}", f"aks-p5-{suffix}"
    assert (group, cluster) != ("rg-wid-demo", "aks-wid-demo")
    yield group, cluster
    if resources.resource_groups.check_existence(group):
        resources.resource_groups.begin_delete(group).result()


@pytest.fixture
def no_faults(lab):
    yield
    lab.clear_faults()


def test_lifecycle(lab, clients, names):
    aks, resources = clients
    group, name = names
    args = {"resource_group": group, "name": name, "location": "eastus", "node_count": 1, "tags": {"env": "p5"}, **FAST}

    seq = lab.last_seq()
    check = run_module("aks_cluster", args, env=lab.env, check=True, diff=True)
    assert not check.failed, check.output
    assert check.changed and check["resource_group_created"] is True
    assert check["diff"]["before"] == {} and check["diff"]["after"]["oidc_issuer_enabled"] is True
    assert check["issuer_url"] is None
    assert lab.writes(seq) == []
    assert [(r["method"], r["status"]) for r in arm_requests(lab, seq)] == [("GET", 404)]
    assert not resources.resource_groups.check_existence(group)

    seq = lab.last_seq()
    created = run_module("aks_cluster", args, env=lab.env, diff=True)
    assert not created.failed, created.output
    assert created.changed and created["resource_group_created"] is True
    assert created["provisioning_state"] == "Succeeded"
    assert resources.resource_groups.get(group).location == "eastus"
    cluster = aks.managed_clusters.get(group, name)
    assert cluster.oidc_issuer_profile.enabled and cluster.security_profile.workload_identity.enabled
    assert cluster.enable_rbac and cluster.identity.type == "SystemAssigned"
    assert [(p.name, p.count, p.mode) for p in cluster.agent_pool_profiles] == [("nodepool1", 1, "System")]
    assert cluster.tags == {"env": "p5"}
    assert created["issuer_url"] == cluster.oidc_issuer_profile.issuer_url
    assert created["id"] == cluster.id and check["id"] == cluster.id  # check mode predicted the ID
    assert created["diff"]["before"] == {} and created["diff"]["after"]["issuer_url"] == created["issuer_url"]
    writes = [(r["method"], r["path"].rsplit("/", 1)[-1]) for r in lab.writes(seq)]
    assert writes == [("PUT", group), ("PUT", name)]

    seq = lab.last_seq()
    again = run_module("aks_cluster", args, env=lab.env, verbosity=3)
    assert not again.failed and not again.changed and again["resource_group_created"] is False
    assert [r["method"] for r in arm_requests(lab, seq)] == ["GET"]  # a no-op run is one GET
    assert again["issuer_url"] == created["issuer_url"]
    assert lab.env["AZURE_SECRET"] not in again.output

    seq = lab.last_seq()
    drift = run_module("aks_cluster", {**args, "node_count": 4, "kubernetes_version": "1.35"}, env=lab.env)
    assert not drift.failed and not drift.changed
    assert "left these differences alone" in drift.output and "has 1 nodes, not 4" in drift.output
    assert lab.writes(seq) == []

    seq = lab.last_seq()
    absent_args = {"resource_group": group, "name": name, "state": "absent", **FAST}
    absent_check = run_module("aks_cluster", absent_args, env=lab.env, check=True, diff=True)
    assert absent_check.changed and absent_check["diff"]["after"] == {}
    assert absent_check["diff"]["before"]["issuer_url"] == created["issuer_url"]
    assert lab.writes(seq) == []
    assert aks.managed_clusters.get(group, name).provisioning_state == "Succeeded"

    absent = run_module("aks_cluster", absent_args, env=lab.env)
    assert not absent.failed, absent.output
    assert absent.changed and absent["cluster"] == {}
    with pytest.raises(ResourceNotFoundError):
        aks.managed_clusters.get(group, name)
    assert resources.resource_groups.check_existence(group)  # never the resource group

    seq = lab.last_seq()
    gone = run_module("aks_cluster", absent_args, env=lab.env)
    assert not gone.failed and not gone.changed
    assert [r["method"] for r in arm_requests(lab, seq)] == ["GET"]


def test_existing_cluster_only_gets_oidc_and_workload_identity(lab, clients, names):
    aks, resources = clients
    group, name = names
    resources.resource_groups.create_or_update(group, {"location": "eastus"})
    before = make_cluster(aks, group, name, oidc=False)
    original = stored(lab, before.id)

    run = run_module("aks_cluster", {"resource_group": group, "name": name, "node_count": 9, **FAST}, env=lab.env)
    assert not run.failed, run.output
    assert run.changed and run["resource_group_created"] is False
    assert "restarts its API server" in run.output and "not 9" in run.output
    after = aks.managed_clusters.get(group, name)
    assert after.oidc_issuer_profile.enabled and after.security_profile.workload_identity.enabled
    assert run["issuer_url"] == after.oidc_issuer_profile.issuer_url
    # Node pools, networking, add-ons, tags: exactly as they were.
    assert without_oidc_changes(stored(lab, before.id)) == without_oidc_changes(original)


def test_wait_false_create(lab, clients, names):
    aks = clients[0]
    group, name = names
    started = run_module(
        "aks_cluster", {"resource_group": group, "name": name, "location": "eastus", "wait": False}, env=lab.env
    )
    assert not started.failed, started.output
    assert started.changed and started["provisioning_state"] == "Creating"
    assert started["issuer_url"] == aks.managed_clusters.get(group, name).oidc_issuer_profile.issuer_url
    assert started["cluster"]["agent_pools"][0]["count"] == 3  # az aks create's default


@pytest.mark.parametrize(
    ("overrides", "code", "words"),
    [
        ({"location": None}, "InvalidParameter", "location: is required to create the cluster"),
        ({"create_resource_group": False}, "ResourceGroupNotFound", "create_resource_group is false"),
    ],
)
def test_refusals_after_the_read_write_nothing(lab, names, overrides, code, words):
    group, name = names
    args = {"resource_group": group, "name": name, "location": "eastus", **overrides}
    seq = lab.last_seq()
    run = run_module("aks_cluster", {k: v for k, v in args.items() if v is not None}, env=lab.env)
    assert run.failed and run["error_code"] == code and words in run["msg"]
    assert lab.writes(seq) == []


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"node_count": 0}, "node_count: must be between 1 and 1000, got 0"),
        ({"kubernetes_version": "stable"}, "kubernetes_version: must look like 1.33 or 1.33.5"),
        ({"name": "-bad-"}, "name: must be 1-63 letters"),
    ],
)
def test_bad_input_fails_before_any_request(lab, names, overrides, words):
    group, name = names
    seq = lab.last_seq()
    run = run_module(
        "aks_cluster", {"resource_group": group, "name": name, "location": "eastus", **overrides}, env=lab.env
    )
    assert run.failed and run["error_code"] == "InvalidParameter" and words in run["msg"]
    assert lab.requests(seq) == []


def test_create_converges_through_throttling_and_unavailable_status(lab, clients, names, no_faults):
    aks = clients[0]
    group, name = names
    lab.fault(method="PUT", path=f"managedClusters/{name}$", action="status", status=429, retry_after=1, count=1)
    lab.fault(method="GET", path=r"/locations/eastus/operations/", action="status", status=503, count=1)
    seq = lab.last_seq()
    run = run_module("aks_cluster", {"resource_group": group, "name": name, "location": "eastus", **FAST}, env=lab.env)
    assert not run.failed, run.output
    assert run.changed and run["provisioning_state"] == "Succeeded"
    requests = arm_requests(lab, seq)
    assert [r["status"] for r in requests if r["method"] == "PUT" and name in r["path"]] == [429, 201]
    assert 503 in [r["status"] for r in requests if "/operations/" in r["path"]]
    assert len(list(aks.managed_clusters.list_by_resource_group(group))) == 1
    assert run["issuer_url"] == aks.managed_clusters.get(group, name).oidc_issuer_profile.issuer_url
