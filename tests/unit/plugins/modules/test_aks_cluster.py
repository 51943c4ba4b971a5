"""aks_cluster through main(), over the same scripted HTTPS ARM as the aks_oidc tests (real SDK, real LRO polling)."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.aks.workload_identity.plugins.modules import aks_cluster
from tests.unit.plugins.modules import test_aks_oidc as shared
from tests.unit.plugins.modules.test_aks_oidc import CLUSTER_PATH, GROUP_PATH, ISSUER, SUB, cluster_body, run, warnings

# The scripted ARM and the module arguments of the aks_oidc tests, as fixtures of this module too.
arm = shared.arm
base_args = shared.base_args

NEW = {"resource_group": "rg-new", "name": "aks-new", "location": "eastus", "node_count": 1}


def methods(arm) -> list[str]:
    return [request[0] for request in arm.arm_requests()]


def test_creates_group_and_cluster_with_both_features(capsys, arm, base_args):
    result = run(capsys, aks_cluster, {**base_args, **NEW, "tags": {"env": "demo"}, "_ansible_diff": True})
    assert result["changed"] is True and result["resource_group_created"] is True
    assert result["issuer_url"] == ISSUER
    assert (result["oidc_issuer_enabled"], result["workload_identity_enabled"]) == (True, True)
    assert result["provisioning_state"] == "Succeeded"
    assert result["diff"]["before"] == {}
    assert result["diff"]["after"]["agent_pools"] == [
        {"name": "nodepool1", "count": 1, "vm_size": None, "mode": "System"}
    ]
    (group_put,) = [body for method, path, body in arm.requests if method == "PUT" and GROUP_PATH.match(path)]
    assert group_put == {"location": "eastus", "tags": {}}
    (sent,) = arm.puts()
    assert sent == {
        "location": "eastus",
        "tags": {"env": "demo"},
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "dnsPrefix": f"aks-new-rg-new-{SUB[:6]}",
            "agentPoolProfiles": [
                {
                    "name": "nodepool1",
                    "count": 1,
                    "mode": "System",
                    "osType": "Linux",
                    "type": "VirtualMachineScaleSets",
                }
            ],
            "enableRBAC": True,
            "oidcIssuerProfile": {"enabled": True},
            "securityProfile": {"workloadIdentity": {"enabled": True}},
        },
    }
    assert methods(arm)[:3] == ["GET", "PUT", "PUT"]


def test_check_mode_creates_nothing(capsys, arm, base_args):
    result = run(capsys, aks_cluster, {**base_args, **NEW, "_ansible_check_mode": True, "_ansible_diff": True})
    assert result["changed"] is True and result["resource_group_created"] is True
    assert result["id"].endswith("/resourcegroups/rg-new/providers/Microsoft.ContainerService/managedClusters/aks-new")
    assert result["issuer_url"] is None and result["diff"]["after"]["oidc_issuer_enabled"] is True
    assert arm.writes() == [] and methods(arm) == ["GET"]


def test_existing_group_is_not_recreated(capsys, arm, base_args):
    arm.groups.add("rg-new")
    result = run(capsys, aks_cluster, {**base_args, **NEW})
    assert result["changed"] is True and result["resource_group_created"] is False
    assert not [write for write in arm.writes() if GROUP_PATH.match(write[1])]


def test_no_op_is_one_get(capsys, arm, base_args):
    arm.clusters["c1"] = cluster_body(oidc=True, workload_identity=True)
    result = run(capsys, aks_cluster, {**base_args, "location": "eastus"})
    assert result["changed"] is False and result["resource_group_created"] is False
    assert result["issuer_url"] == ISSUER
    ((method, path),) = arm.arm_requests()
    assert method == "GET" and CLUSTER_PATH.match(path)


def test_existing_cluster_only_gets_the_oidc_settings(capsys, arm, base_args):
    arm.clusters["c1"] = cluster_body(oidc=False)
    read = copy.deepcopy(arm.clusters["c1"])
    result = run(capsys, aks_cluster, {**base_args, "node_count": 5, "vm_size": "Standard_B2s", "tags": {}})
    assert result["changed"] is True and result["issuer_url"] == ISSUER
    (sent,) = arm.puts()
    assert sent["properties"]["agentPoolProfiles"][0]["count"] == 2
    assert sent["properties"]["agentPoolProfiles"][0]["vmSize"] == "Standard_D4ds_v5"
    assert sent["tags"] == read["tags"]
    (drift,) = [w for w in warnings(result) if "left these differences alone" in w]
    assert "has 2 nodes, not 5" in drift and "'Standard_B2s'" in drift and "tags are" in drift


def test_location_is_required_to_create(capsys, arm, base_args):
    result = run(capsys, aks_cluster, {**base_args, "name": "aks-new"})
    assert result["failed"] is True and result["error_code"] == "InvalidParameter"
    assert "location: is required to create the cluster" in result["msg"]
    assert arm.writes() == []


def test_missing_group_without_create_resource_group(capsys, arm, base_args):
    result = run(capsys, aks_cluster, {**base_args, **NEW, "create_resource_group": False})
    assert result["failed"] is True and result["error_code"] == "ResourceGroupNotFound"
    assert result["msg"] == (
        "resource_group: resource group 'rg-new' does not exist and create_resource_group is false; create the "
        "group first or set create_resource_group: true"
    )
    assert arm.writes() == []
    checked = run(
        capsys, aks_cluster, {**base_args, **NEW, "create_resource_group": False, "_ansible_check_mode": True}
    )
    assert checked["failed"] is True and checked["msg"].startswith("resource_group: resource group 'rg-new'")
    assert arm.writes() == []


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"node_count": 0}, "node_count: must be between 1 and 1000, got 0"),
        ({"kubernetes_version": "latest"}, "kubernetes_version: must look like 1.33 or 1.33.5"),
        ({"name": "_x"}, "name: must be 1-63 letters"),
        ({"resource_group": "rg new"}, "resource_group: 'rg new' is not a valid resource group name"),
        ({"wait_timeout": -1}, "wait_timeout: must be between 1 and 86400 seconds, got -1"),
        ({"wait_timeout": 10**12}, "wait_timeout: must be between 1 and 86400 seconds"),
        ({"node_count": 1001}, "node_count: must be between 1 and 1000, got 1001"),
        ({"vm_size": "Standard DS2 v2"}, "vm_size: must be an Azure VM size such as Standard_D4ds_v5"),
        ({"location": "west/europe"}, "location: must be an Azure region name"),
        ({"tags": {"team": 1}}, "tags.team: tag values must be strings"),
        ({"tags": {"a<b": "x"}}, "tags.a<b: tag names must not contain"),
    ],
)
def test_bad_input_fails_before_any_request(capsys, arm, base_args, overrides, words):
    result = run(capsys, aks_cluster, {**base_args, **NEW, **overrides})
    assert result["failed"] is True and result["error_code"] == "InvalidParameter"
    assert result["msg"].startswith("Invalid input: ") and words in result["msg"]
    assert any(words in error for error in result["errors"])
    assert arm.requests == []


def test_wait_false_returns_creating_with_the_issuer(capsys, arm, base_args):
    result = run(capsys, aks_cluster, {**base_args, **NEW, "wait": False})
    assert result["changed"] is True
    assert (result["provisioning_state"], result["issuer_url"]) == ("Creating", ISSUER)
    assert methods(arm) == ["GET", "PUT", "PUT"]


def test_failed_create_is_reported(capsys, arm, base_args):
    arm.operation_script = [{"status": "Failed", "error": {"code": "QuotaExceeded", "message": "Not enough cores"}}]
    result = run(capsys, aks_cluster, {**base_args, **NEW})
    assert result["failed"] is True and result["error_code"] == "QuotaExceeded"
    assert result["msg"] == (
        "Failed to create AKS cluster 'aks-new' in resource group 'rg-new': QuotaExceeded: Not enough cores"
    )


def test_absent_deletes_the_cluster_not_the_group(capsys, arm, base_args):
    arm.clusters["c1"] = cluster_body(oidc=True, workload_identity=True)
    result = run(capsys, aks_cluster, {**base_args, "state": "absent", "_ansible_diff": True})
    assert result["changed"] is True and result["cluster"] == {}
    assert result["diff"]["after"] == {} and result["diff"]["before"]["name"] == "c1"
    assert "c1" not in arm.clusters and "rg1" in arm.groups
    assert [write[0] for write in arm.writes()] == ["DELETE"]
    assert "issuer_url" not in result


def test_absent_in_check_mode(capsys, arm, base_args):
    arm.clusters["c1"] = cluster_body()
    result = run(capsys, aks_cluster, {**base_args, "state": "absent", "_ansible_check_mode": True})
    assert result["changed"] is True
    assert arm.writes() == [] and "c1" in arm.clusters


@pytest.mark.parametrize("groups", [{"rg1"}, set()])
def test_absent_when_already_gone(capsys, arm, base_args, groups):
    arm.groups = groups
    result = run(capsys, aks_cluster, {**base_args, "state": "absent"})
    assert result["changed"] is False
    assert methods(arm) == ["GET"]
