"""reconcile/cluster.py: input rules, normalising, every plan decision, model edits, and the reconciler's I/O
choreography (wait for a busy cluster, re-plan, retry a 409/412) over a fake containerservice client."""

from __future__ import annotations

import copy
import enum
import json
import typing as t

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.containerservice import models as aks_models
from azure.mgmt.containerservice._utils.model_base import SdkJSONEncoder

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.azure import set_oidc_settings
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import CREATE, DELETE, NONE, UPDATE
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import cluster as rc

SUB = "11111111-2222-3333-4444-555555555555"
TARGET = "AKS cluster 'c1' in resource group 'rg1'"
CLUSTER_ID = f"/subscriptions/{SUB}/resourcegroups/rg1/providers/Microsoft.ContainerService/managedClusters/c1"
ISSUER = (
    "https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0328c7fa-e740-4752-af1c-182a774aacc7/"
)


def cluster_body(oidc: bool = False, workload_identity: bool | None = None, state: str = "Succeeded") -> dict:
    """A GET body shaped like AKS's (azure-behaviour §2), with fields the SDK does not know, to prove they survive a
    round trip."""
    security: dict[str, t.Any] = {}
    if workload_identity is not None:
        security["workloadIdentity"] = {"enabled": workload_identity}
    oidc_profile: dict[str, t.Any] = {"enabled": oidc}
    if oidc:
        oidc_profile["issuerURL"] = ISSUER
    return {
        "id": CLUSTER_ID,
        "location": "eastus",
        "name": "c1",
        "tags": {"team": "a"},
        "type": "Microsoft.ContainerService/ManagedClusters",
        "eTag": None,
        "properties": {
            "provisioningState": state,
            "powerState": {"code": "Running"},
            "kubernetesVersion": "1.33",
            "currentKubernetesVersion": "1.33.5",
            "dnsPrefix": "c1-rg1-111111",
            "fqdn": "c1-rg1-111111-abc.hcp.eastus.azmk8s.io",
            "agentPoolProfiles": [
                {
                    "name": "nodepool1",
                    "count": 2,
                    "vmSize": "Standard_D4ds_v5",
                    "mode": "System",
                    "provisioningState": state,
                    "nodeLabels": {"pool": "system"},
                    "futureAgentPoolField": {"x": 1},
                }
            ],
            "networkProfile": {"networkPlugin": "azure", "networkPluginMode": "overlay", "podCidr": "10.244.0.0/16"},
            "addonProfiles": {
                "azureKeyvaultSecretsProvider": {"enabled": True, "config": {"enableSecretRotation": "true"}}
            },
            "oidcIssuerProfile": oidc_profile,
            "securityProfile": security,
            "futureClusterField": {"enabled": True},
        },
        "identity": {"type": "SystemAssigned", "principalId": "p", "tenantId": "t"},
        "sku": {"name": "Base", "tier": "Free"},
    }


def model(**kwargs: t.Any) -> aks_models.ManagedCluster:
    body = cluster_body(**kwargs)
    del body["eTag"]
    return aks_models.ManagedCluster(body)


def normalized(**kwargs: t.Any) -> dict:
    return rc.normalize_cluster(model(**kwargs), "rg1")


def put_body(cluster: t.Any) -> dict:
    """What the SDK sends for a model: read-only fields left out."""
    return json.loads(json.dumps(cluster, cls=SdkJSONEncoder, exclude_readonly=True))


# --- input rules -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("oidc", "wi", "errors"),
    [(True, True, 0), (True, False, 0), (False, False, 0), (False, True, 1)],
)
def test_workload_identity_requires_the_issuer(oidc, wi, errors):
    found = rc.validate_oidc_settings(oidc, wi)
    assert len(found) == errors
    if errors:
        assert found[0].startswith("workload_identity: requires oidc_issuer")


@pytest.mark.parametrize(
    ("group", "name", "expected"),
    [
        ("rg1", "aks-1", []),
        ("rg.with_(all)-chars", "a", []),
        ("rg.", "aks", ["resource_group: 'rg.' is not a valid resource group name"]),
        ("rg 1", "aks", ["resource_group: 'rg 1' is not a valid resource group name"]),
        ("r" * 91, "aks", ["resource_group: "]),
        ("rg1", "bad name", ["name: must be 1-63 letters"]),
        ("rg1", "-x", ["name: must be 1-63 letters"]),
        ("rg1", "a" * 64, ["name: must be 1-63 letters"]),
        ("", "", ["resource_group: ", "name: "]),
    ],
)
def test_cluster_reference_rules(group, name, expected):
    found = rc.validate_cluster_reference(group, name)
    assert len(found) == len(expected)
    for message, start in zip(found, expected, strict=True):
        assert message.startswith(start)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (rc.ClusterSpec(), []),
        (rc.ClusterSpec(location="eastus", node_count=1, vm_size="Standard_B2s", kubernetes_version="1.33.5"), []),
        (rc.ClusterSpec(node_count=0), ["node_count: must be between 1 and 1000, got 0"]),
        (rc.ClusterSpec(node_count=1001), ["node_count: must be between 1 and 1000, got 1001"]),
        (rc.ClusterSpec(kubernetes_version="v1.33"), ["kubernetes_version: must look like 1.33 or 1.33.5"]),
        (rc.ClusterSpec(kubernetes_version="1"), ["kubernetes_version: must look like"]),
        (rc.ClusterSpec(vm_size=" "), ["vm_size: must be an Azure VM size such as Standard_D4ds_v5"]),
        (rc.ClusterSpec(vm_size="Standard D2s"), ["vm_size: must be an Azure VM size"]),
        (rc.ClusterSpec(vm_size="Standard_D2s/v3"), ["vm_size: must be an Azure VM size"]),
        (rc.ClusterSpec(vm_size="D2s"), ["vm_size: must be an Azure VM size"]),
        (rc.ClusterSpec(vm_size="Standard_" + "D" * 60), ["vm_size: must be an Azure VM size"]),
        (rc.ClusterSpec(vm_size="Standard_DS2_v2"), []),
        (rc.ClusterSpec(vm_size="Standard_M16-4ms"), []),  # a constrained-vCPU size
        (rc.ClusterSpec(vm_size="Basic_A0"), []),
        (rc.ClusterSpec(location=""), ["location: must be an Azure region name"]),
        (rc.ClusterSpec(location="west/europe"), ["location: must be an Azure region name"]),
        (rc.ClusterSpec(location="West Europe"), []),
        (rc.ClusterSpec(tags={"n": 1}), ["tags.n: tag values must be strings"]),
        (rc.ClusterSpec(tags={"a%b": "x"}), ["tags.a%b: tag names must not contain"]),
        (rc.ClusterSpec(node_count=True), ["node_count: must be between 1 and 1000"]),
        (rc.ClusterSpec(node_count=0, vm_size=""), ["node_count:", "vm_size:"]),
    ],
)
def test_cluster_spec_rules(spec, expected):
    found = rc.validate_cluster_spec(spec)
    assert len(found) == len(expected)
    for message, start in zip(found, expected, strict=True):
        assert message.startswith(start)


def test_input_error_names_every_rule():
    error = rc.input_error(["name: a", "node_count: b"])
    assert error.code == "InvalidParameter"
    assert error.message == "Invalid input: name: a; node_count: b"


@pytest.mark.parametrize(
    ("name", "group", "expected"),
    [
        ("aks-wid-demo", "rg-wid-demo", "aks-wid-de-rg-wid-demo-111111"),
        ("1cluster", "rg", "a1cluster-rg-111111"),
        ("my_cluster.x", "my.group_name(1)", "myclusterx-mygroupname1-111111"),
        ("c", "a-very-long-resource-group-name", "c-a-very-long-reso-111111"),
    ],
)
def test_default_dns_prefix_is_azure_clis(name, group, expected):
    assert rc.default_dns_prefix(name, group, SUB) == expected


@pytest.mark.parametrize(("given", "expected"), [("East US", "eastus"), ("eastus", "eastus"), (None, None)])
def test_normalize_location(given, expected):
    assert rc.normalize_location(given) == expected


# --- normalising ---------------------------------------------------------------------------------------------------
def test_normalize_cluster_keeps_the_issuer_exactly():
    found = normalized(oidc=True, workload_identity=True)
    assert found == {
        "id": CLUSTER_ID,
        "name": "c1",
        "resource_group": "rg1",
        "location": "eastus",
        "kubernetes_version": "1.33",
        "current_kubernetes_version": "1.33.5",
        "provisioning_state": "Succeeded",
        "oidc_issuer_enabled": True,
        "issuer_url": ISSUER,
        "workload_identity_enabled": True,
        "tags": {"team": "a"},
        "agent_pools": [{"name": "nodepool1", "count": 2, "vm_size": "Standard_D4ds_v5", "mode": "System"}],
    }
    mode = found["agent_pools"][0]["mode"]
    assert isinstance(mode, str) and not isinstance(mode, enum.Enum)  # an enum would not be JSON "System"


def test_normalize_cluster_without_profiles():
    body = cluster_body()
    del body["properties"]["oidcIssuerProfile"], body["properties"]["securityProfile"], body["eTag"]
    found = rc.normalize_cluster(aks_models.ManagedCluster(body), "rg1")
    assert (found["oidc_issuer_enabled"], found["issuer_url"], found["workload_identity_enabled"]) == (
        False,
        None,
        False,
    )


def test_normalize_a_cluster_with_workload_identity_never_set():
    found = normalized(oidc=True)
    assert found["workload_identity_enabled"] is False


# --- plan_oidc -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("actual_oidc", "actual_wi", "want_oidc", "want_wi", "action", "reason"),
    [
        (False, None, True, True, UPDATE, "enable the OIDC issuer and enable workload identity"),
        (False, None, True, False, UPDATE, "enable the OIDC issuer"),
        (False, False, True, True, UPDATE, "enable the OIDC issuer and enable workload identity"),
        (True, None, True, True, UPDATE, "enable workload identity"),
        (True, False, True, True, UPDATE, "enable workload identity"),
        (True, True, True, False, UPDATE, "disable workload identity"),
        (True, True, True, True, NONE, "the OIDC issuer and workload identity are as requested"),
        (True, None, True, False, NONE, "the OIDC issuer and workload identity are as requested"),
        (True, False, True, False, NONE, "the OIDC issuer and workload identity are as requested"),
        (False, None, False, False, NONE, "the OIDC issuer and workload identity are as requested"),
    ],
)
def test_plan_oidc_decisions(actual_oidc, actual_wi, want_oidc, want_wi, action, reason):
    actual = normalized(oidc=actual_oidc, workload_identity=actual_wi)
    plan = rc.plan_oidc(actual, want_oidc, want_wi, TARGET)
    assert (plan.action, plan.reason) == (action, reason)
    assert plan.before == actual
    assert plan.after["oidc_issuer_enabled"] is (want_oidc or actual_oidc)
    assert plan.after["workload_identity_enabled"] is want_wi
    # The issuer URL is Azure's to assign: a plan never invents one.
    assert plan.after["issuer_url"] == actual["issuer_url"]
    unchanged = {k: v for k, v in plan.after.items() if k not in ("oidc_issuer_enabled", "workload_identity_enabled")}
    assert unchanged == {
        k: v for k, v in actual.items() if k not in ("oidc_issuer_enabled", "workload_identity_enabled")
    }


def test_enabling_the_issuer_warns_what_it_does():
    plan = rc.plan_oidc(normalized(oidc=False), True, True, TARGET)
    assert len(plan.warnings) == 1
    warning = plan.warnings[0]
    assert TARGET in warning
    for words in ("restarts its API server", "changes the issuer", "does not support disabling"):
        assert words in warning


def test_no_warning_when_the_issuer_is_already_on():
    assert rc.plan_oidc(normalized(oidc=True), True, True, TARGET).warnings == []


def test_disabling_the_issuer_is_refused():
    with pytest.raises(WorkloadIdentityError) as caught:
        rc.plan_oidc(normalized(oidc=True, workload_identity=False), False, False, TARGET)
    assert caught.value.code == "OIDCIssuerCannotBeDisabled"
    assert caught.value.message.startswith(
        f"Failed to disable the OIDC issuer of {TARGET}: OIDCIssuerCannotBeDisabled: oidc_issuer: AKS does not support"
    )


@pytest.mark.parametrize("state", ["Failed", "Canceled"])
def test_updating_a_failed_cluster_says_so(state):
    plan = rc.plan_oidc(normalized(oidc=True, state=state), True, True, TARGET)
    assert plan.action == UPDATE
    assert any(f"provisioning state {state!r}" in warning for warning in plan.warnings)


# --- plan_create / plan_existing_cluster / plan_absent -------------------------------------------------------------
def test_plan_create():
    spec = rc.ClusterSpec(location="East US", node_count=1, vm_size="Standard_B2s", tags={"env": "demo"})
    plan = rc.plan_create(spec, SUB, "rg1", "c1")
    assert (plan.action, plan.before, plan.changed) == (CREATE, None, True)
    assert plan.after == {
        "id": CLUSTER_ID,
        "name": "c1",
        "resource_group": "rg1",
        "location": "eastus",
        "kubernetes_version": None,
        "current_kubernetes_version": None,
        "provisioning_state": None,
        "oidc_issuer_enabled": True,
        "issuer_url": None,
        "workload_identity_enabled": True,
        "tags": {"env": "demo"},
        "agent_pools": [{"name": "nodepool1", "count": 1, "vm_size": "Standard_B2s", "mode": "System"}],
    }


def test_plan_create_defaults_to_three_nodes():
    plan = rc.plan_create(rc.ClusterSpec(location="eastus"), SUB, "rg1", "c1")
    assert plan.after["agent_pools"][0]["count"] == 3


@pytest.mark.parametrize(
    ("spec", "differences"),
    [
        (rc.ClusterSpec(), []),
        (rc.ClusterSpec(location="East US", node_count=2, vm_size="standard_d4ds_v5", tags={"team": "a"}), []),
        (rc.ClusterSpec(kubernetes_version="1.33"), []),
        (rc.ClusterSpec(kubernetes_version="1.33.5"), []),
        (rc.ClusterSpec(location="westeurope"), ["location is 'eastus', not 'westeurope'"]),
        (rc.ClusterSpec(kubernetes_version="1.34"), ["kubernetes_version is '1.33', not '1.34'"]),
        (rc.ClusterSpec(node_count=5), ["node pool 'nodepool1' has 2 nodes, not 5"]),
        (rc.ClusterSpec(vm_size="Standard_B2s"), ["node pool 'nodepool1' runs 'Standard_D4ds_v5', not 'Standard_B2s'"]),
        (rc.ClusterSpec(tags={}), ["tags are {'team': 'a'}, not {}"]),
    ],
)
def test_existing_cluster_differences_are_warned_not_changed(spec, differences):
    actual = normalized(oidc=True, workload_identity=True)
    assert rc.drift(actual, spec) == differences
    plan = rc.plan_existing_cluster(actual, spec, TARGET)
    assert plan.action == NONE
    if differences:
        assert len(plan.warnings) == 1
        assert all(difference in plan.warnings[0] for difference in differences)
        assert "changes only its OIDC issuer and workload identity" in plan.warnings[0]
    else:
        assert plan.warnings == []


def test_existing_cluster_gets_both_features():
    plan = rc.plan_existing_cluster(normalized(oidc=False), rc.ClusterSpec(node_count=9), TARGET)
    assert plan.action == UPDATE
    assert plan.after["oidc_issuer_enabled"] and plan.after["workload_identity_enabled"]
    assert len(plan.warnings) == 2  # what enabling the issuer does, and the node count left alone


@pytest.mark.parametrize(
    ("actual", "action"),
    [(None, NONE), ({"provisioning_state": "Succeeded"}, DELETE), ({"provisioning_state": "Deleting"}, NONE)],
)
def test_plan_absent(actual, action):
    plan = rc.plan_absent(actual)
    assert plan.action == action
    assert plan.after is None


# --- model edits ---------------------------------------------------------------------------------------------------
def test_set_oidc_settings_changes_only_the_two_settings():
    cluster = model(oidc=False)
    before = put_body(cluster)
    set_oidc_settings(cluster, True, True)
    after = put_body(cluster)
    assert after["properties"].pop("oidcIssuerProfile") == {"enabled": True}
    assert after["properties"].pop("securityProfile") == {"workloadIdentity": {"enabled": True}}
    del before["properties"]["oidcIssuerProfile"], before["properties"]["securityProfile"]
    assert after == before
    # Unknown fields go back as read; read-only ones are not sent.
    assert after["properties"]["futureClusterField"] == {"enabled": True}
    assert after["properties"]["agentPoolProfiles"][0]["futureAgentPoolField"] == {"x": 1}
    assert "provisioningState" not in after["properties"]
    assert "provisioningState" not in after["properties"]["agentPoolProfiles"][0]
    assert "fqdn" not in after["properties"] and "id" not in after


def test_set_oidc_settings_leaves_workload_identity_unset_when_not_asked():
    cluster = model(oidc=False)
    set_oidc_settings(cluster, True, False)
    assert put_body(cluster)["properties"]["securityProfile"] == {}


def test_set_oidc_settings_creates_missing_profiles():
    body = cluster_body()
    del body["properties"]["oidcIssuerProfile"], body["properties"]["securityProfile"], body["eTag"]
    cluster = aks_models.ManagedCluster(body)
    set_oidc_settings(cluster, True, True)
    sent = put_body(cluster)["properties"]
    assert sent["oidcIssuerProfile"] == {"enabled": True}
    assert sent["securityProfile"] == {"workloadIdentity": {"enabled": True}}


def test_set_oidc_settings_disables_workload_identity():
    cluster = model(oidc=True, workload_identity=True)
    set_oidc_settings(cluster, True, False)
    sent = put_body(cluster)["properties"]
    assert sent["securityProfile"] == {"workloadIdentity": {"enabled": False}}
    assert sent["oidcIssuerProfile"] == {"enabled": True}  # issuerURL is read-only: not sent


def test_new_cluster_model_is_az_aks_create():
    spec = rc.ClusterSpec(location="eastus", node_count=1, tags={"env": "demo"})
    body = put_body(rc.new_model(spec, "aks-wid-demo", "rg-wid-demo", SUB))
    assert body == {
        "location": "eastus",
        "tags": {"env": "demo"},
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "dnsPrefix": "aks-wid-de-rg-wid-demo-111111",
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


def test_new_cluster_model_with_every_option():
    spec = rc.ClusterSpec(location="eastus", node_count=2, vm_size="Standard_B2s", kubernetes_version="1.32")
    properties = put_body(rc.new_model(spec, "c1", "rg1", SUB))["properties"]
    assert properties["kubernetesVersion"] == "1.32"
    assert properties["agentPoolProfiles"][0]["vmSize"] == "Standard_B2s"
    assert properties["agentPoolProfiles"][0]["count"] == 2


# --- module results ------------------------------------------------------------------------------------------------
def test_module_result_present():
    actual = normalized(oidc=False)
    plan = rc.plan_oidc(actual, True, True, TARGET)
    after = normalized(oidc=True, workload_identity=True)
    values = rc.module_result(rc.ClusterResult(plan, after), diff=True)
    assert values["changed"] is True
    assert values["issuer_url"] == ISSUER
    assert values["id"] == CLUSTER_ID
    assert (values["oidc_issuer_enabled"], values["workload_identity_enabled"]) == (True, True)
    assert values["cluster"] == after
    assert values["diff"] == {"before": actual, "after": after}


def test_module_result_absent_has_no_cluster_keys():
    plan = rc.plan_absent(normalized())
    values = rc.module_result(rc.ClusterResult(plan, None), diff=False)
    assert values == {"changed": True, "cluster": {}}


# --- the reconciler over a fake SDK client ---------------------------------------------------------------------------
class FakeResponse:
    def __init__(self, status: int, body: t.Any, headers: dict[str, str] | None = None):
        self.status_code = status
        self.reason = "Reason"
        self.headers = headers or {}
        self._text = json.dumps(body)
        self.content_type = "application/json"
        self.request = None

    def text(self, encoding: str | None = None) -> str:
        return self._text

    def body(self) -> bytes:
        return self._text.encode()


def arm_error(status: int, code: str, message: str = "m", cls: type = HttpResponseError) -> HttpResponseError:
    return cls(response=FakeResponse(status, {"error": {"code": code, "message": message}}))


NOT_FOUND = arm_error(404, "ResourceNotFound", "The Resource was not found.", ResourceNotFoundError)
GROUP_NOT_FOUND = arm_error(
    404, "ResourceGroupNotFound", "Resource group 'rg1' could not be found.", ResourceNotFoundError
)
BUSY = arm_error(409, "OperationNotAllowed", "Another operation (Updating) is in progress", ResourceExistsError)


class FakePoller:
    def __init__(self, result: t.Any):
        self._result = result

    def wait(self, timeout: float | None = None) -> None:
        pass

    def done(self) -> bool:
        return True

    def status(self) -> str:
        return "Succeeded"

    def result(self) -> t.Any:
        return self._result


class FakeClusters:
    """managed_clusters: GETs answer from ``reads`` (a body, None for 404, or an exception); PUTs from ``puts``."""

    def __init__(self, reads: list[t.Any], puts: list[t.Any] | None = None):
        self.reads = list(reads)
        self.puts = list(puts or [])
        self.calls: list[tuple[str, t.Any, dict]] = []

    def get(self, resource_group: str, name: str) -> t.Any:
        self.calls.append(("GET", None, {}))
        answer = self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]
        if isinstance(answer, Exception):
            raise answer
        if answer is None:
            raise NOT_FOUND
        body = copy.deepcopy(answer)
        if body.get("eTag") is None:
            body.pop("eTag", None)
        return aks_models.ManagedCluster(body)

    def begin_create_or_update(self, resource_group: str, name: str, cluster: t.Any, **kwargs: t.Any) -> FakePoller:
        self.calls.append(("PUT", put_body(cluster), kwargs))
        answer = self.puts.pop(0) if self.puts else _as_succeeded(cluster)
        if isinstance(answer, Exception):
            raise answer
        return FakePoller(answer)

    def begin_delete(self, resource_group: str, name: str, **kwargs: t.Any) -> FakePoller:
        self.calls.append(("DELETE", None, kwargs))
        return FakePoller(None)

    def methods(self) -> list[str]:
        return [call[0] for call in self.calls]


def _as_succeeded(cluster: t.Any) -> t.Any:
    body = json.loads(json.dumps(cluster, cls=SdkJSONEncoder))
    body.setdefault("properties", {})["provisioningState"] = "Succeeded"
    if body["properties"].get("oidcIssuerProfile", {}).get("enabled"):
        body["properties"]["oidcIssuerProfile"]["issuerURL"] = ISSUER
    return aks_models.ManagedCluster(body)


class FakeGroups:
    def __init__(self) -> None:
        self.created: list[tuple[str, t.Any]] = []

    def create_or_update(self, name: str, group: dict) -> dict:
        self.created.append((name, group["location"]))
        return {"id": f"/subscriptions/{SUB}/resourceGroups/{name}", "name": name, **group}


class FakeAzure:
    subscription_id = SUB
    polling_interval = 5.0
    check_mode = False

    def __init__(self, clusters: FakeClusters):
        self.containerservice = type("Aks", (), {"managed_clusters": clusters})()
        self.groups = FakeGroups()
        self.resources = type("Resources", (), {"resource_groups": self.groups})()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def reconciler(clusters: FakeClusters, clock: Clock | None = None, **kwargs: t.Any) -> rc.ClusterReconciler:
    clock = clock or Clock()
    return rc.ClusterReconciler(FakeAzure(clusters), "rg1", "c1", sleep=clock.sleep, clock=clock, **kwargs)


def test_no_op_is_one_get():
    clusters = FakeClusters([cluster_body(oidc=True, workload_identity=True)])
    result = reconciler(clusters).ensure_oidc(True, True)
    assert clusters.methods() == ["GET"]
    assert result.plan.action == NONE
    assert result.cluster["issuer_url"] == ISSUER


def test_check_mode_makes_no_write():
    clusters = FakeClusters([cluster_body(oidc=False)])
    result = reconciler(clusters, check_mode=True).ensure_oidc(True, True)
    assert clusters.methods() == ["GET"]
    assert result.plan.action == UPDATE
    assert result.cluster["oidc_issuer_enabled"] is True and result.cluster["issuer_url"] is None


def test_update_sends_the_cluster_as_read():
    clusters = FakeClusters([cluster_body(oidc=False)])
    result = reconciler(clusters).ensure_oidc(True, True)
    assert clusters.methods() == ["GET", "PUT"]
    sent, kwargs = clusters.calls[1][1:]
    expected = put_body(model(oidc=False))
    expected["properties"]["oidcIssuerProfile"] = {"enabled": True}
    expected["properties"]["securityProfile"] = {"workloadIdentity": {"enabled": True}}
    assert sent == expected
    assert kwargs == {"polling_interval": 5.0, "polling": True}
    assert result.cluster["issuer_url"] == ISSUER and result.cluster["provisioning_state"] == "Succeeded"


def test_update_uses_if_match_when_the_cluster_has_an_etag():
    body = cluster_body(oidc=False)
    body["eTag"] = "etag-1"
    clusters = FakeClusters([body])
    reconciler(clusters).ensure_oidc(True, True)
    kwargs = clusters.calls[1][2]
    assert kwargs["etag"] == "etag-1" and kwargs["match_condition"] == MatchConditions.IfNotModified


def test_a_412_reads_again_and_replans():
    body = cluster_body(oidc=False)
    body["eTag"] = "etag-1"
    changed_meanwhile = cluster_body(oidc=True, workload_identity=True)
    clusters = FakeClusters([body, changed_meanwhile], puts=[arm_error(412, "PreconditionFailed")])
    result = reconciler(clusters).ensure_oidc(True, True)
    assert clusters.methods() == ["GET", "PUT", "GET"]
    assert result.plan.action == NONE  # somebody else enabled both meanwhile


def test_wait_false_returns_the_put_answer():
    updating = aks_models.ManagedCluster(
        {
            **cluster_body(oidc=True),
            "properties": {
                "provisioningState": "Updating",
                "oidcIssuerProfile": {"enabled": True, "issuerURL": ISSUER},
            },
        }
    )
    clusters = FakeClusters([cluster_body(oidc=False)], puts=[updating])
    result = reconciler(clusters, wait=False).ensure_oidc(True, True)
    assert clusters.calls[1][2]["polling"] is False
    assert (result.cluster["provisioning_state"], result.cluster["issuer_url"]) == ("Updating", ISSUER)


def test_a_busy_cluster_is_waited_for_then_replanned():
    clock = Clock()
    clusters = FakeClusters(
        [
            cluster_body(oidc=False, state="Updating"),
            cluster_body(oidc=False, state="Updating"),
            cluster_body(oidc=False),
        ]
    )
    result = reconciler(clusters, clock).ensure_oidc(True, True)
    assert clusters.methods() == ["GET", "GET", "GET", "PUT"]
    assert clock.sleeps == [5.0, 5.0]
    assert result.plan.changed


def test_a_busy_cluster_that_ends_as_wanted_is_not_written():
    clusters = FakeClusters(
        [cluster_body(oidc=False, state="Updating"), cluster_body(oidc=True, workload_identity=True)]
    )
    result = reconciler(clusters).ensure_oidc(True, True)
    assert clusters.methods() == ["GET", "GET"]
    assert result.plan.action == NONE


def test_a_no_op_on_a_busy_cluster_waits_when_asked():
    clusters = FakeClusters(
        [
            cluster_body(oidc=True, workload_identity=True, state="Updating"),
            cluster_body(oidc=True, workload_identity=True),
        ]
    )
    result = reconciler(clusters).ensure_oidc(True, True)
    assert clusters.methods() == ["GET", "GET"]
    assert result.cluster["provisioning_state"] == "Succeeded"


def test_a_no_op_on_a_busy_cluster_with_wait_false_returns_at_once():
    clusters = FakeClusters([cluster_body(oidc=True, workload_identity=True, state="Updating")])
    result = reconciler(clusters, wait=False).ensure_oidc(True, True)
    assert clusters.methods() == ["GET"]
    assert result.cluster["provisioning_state"] == "Updating"


def test_a_busy_cluster_with_wait_false_fails_clearly():
    clusters = FakeClusters([cluster_body(oidc=False, state="Upgrading")])
    with pytest.raises(WorkloadIdentityError) as caught:
        reconciler(clusters, wait=False).ensure_oidc(True, True)
    assert clusters.methods() == ["GET"]
    assert caught.value.code == "OperationNotAllowed"
    assert "'Upgrading': another operation is running" in caught.value.message


def test_check_mode_on_a_busy_cluster_warns():
    clusters = FakeClusters([cluster_body(oidc=False, state="Updating")])
    result = reconciler(clusters, check_mode=True).ensure_oidc(True, True)
    assert clusters.methods() == ["GET"]
    assert any("another operation is running" in warning for warning in result.plan.warnings)


def test_waiting_for_a_busy_cluster_times_out():
    clock = Clock()
    clusters = FakeClusters([cluster_body(oidc=False, state="Updating")])
    with pytest.raises(WorkloadIdentityError) as caught:
        reconciler(clusters, clock, wait_timeout=12).ensure_oidc(True, True)
    assert caught.value.code == "OperationTimeout"
    assert (
        caught.value.message == f"Timed out after 12 seconds waiting for the {TARGET} to finish its current operation"
    )
    assert "PUT" not in clusters.methods()
    assert sum(clock.sleeps) == 12


def test_a_409_operation_not_allowed_waits_and_tries_again():
    clusters = FakeClusters([cluster_body(oidc=False)], puts=[BUSY])
    result = reconciler(clusters).ensure_oidc(True, True)
    assert clusters.methods() == ["GET", "PUT", "GET", "PUT"]
    assert result.plan.changed


def test_a_409_during_a_new_operation_waits_for_it():
    clock = Clock()
    clusters = FakeClusters(
        [cluster_body(oidc=False), cluster_body(oidc=False, state="Updating"), cluster_body(oidc=False)], puts=[BUSY]
    )
    result = reconciler(clusters, clock).ensure_oidc(True, True)
    assert clusters.methods() == ["GET", "PUT", "GET", "GET", "PUT"]
    assert clock.sleeps == [5.0]
    assert result.plan.changed


def test_a_409_that_waiting_does_not_cure_is_reported():
    clusters = FakeClusters([cluster_body(oidc=False)], puts=[BUSY, BUSY, BUSY])
    with pytest.raises(WorkloadIdentityError) as caught:
        reconciler(clusters).ensure_oidc(True, True)
    assert clusters.methods() == ["GET", "PUT", "GET", "PUT", "GET"]
    assert caught.value.code == "OperationNotAllowed" and caught.value.status == 409


def test_repeated_412s_give_up():
    body = cluster_body(oidc=False)
    body["eTag"] = "etag-1"
    clusters = FakeClusters([body], puts=[arm_error(412, "PreconditionFailed")] * 5)
    with pytest.raises(WorkloadIdentityError) as caught:
        reconciler(clusters).ensure_oidc(True, True)
    assert caught.value.status == 412
    assert clusters.methods().count("PUT") == 4


@pytest.mark.parametrize(
    ("state", "busy"),
    [
        ("Succeeded", False),
        ("Failed", False),
        ("Canceled", False),
        ("Updating", True),
        ("Upgrading", True),
        ("Creating", True),
        (None, False),
    ],
)
def test_is_busy(state, busy):
    assert rc.is_busy(state) is busy


def test_a_409_with_wait_false_is_reported():
    clusters = FakeClusters([cluster_body(oidc=False)], puts=[BUSY])
    with pytest.raises(WorkloadIdentityError) as caught:
        reconciler(clusters, wait=False).ensure_oidc(True, True)
    assert caught.value.code == "OperationNotAllowed"
    assert caught.value.message.startswith(
        f"Failed to enable the OIDC issuer and enable workload identity on {TARGET}: OperationNotAllowed:"
    )


def test_a_deleting_cluster_is_not_updated():
    clusters = FakeClusters([cluster_body(oidc=False, state="Deleting")])
    with pytest.raises(WorkloadIdentityError, match="the cluster is being deleted"):
        reconciler(clusters).ensure_oidc(True, True)
    assert clusters.methods() == ["GET"]


@pytest.mark.parametrize(
    ("read", "code", "words"),
    [
        (
            None,
            "ResourceNotFound",
            f"name: {TARGET} does not exist; create it first (aks.workload_identity.aks_cluster)",
        ),
        (GROUP_NOT_FOUND, "ResourceGroupNotFound", "resource_group: resource group 'rg1' does not exist"),
    ],
)
def test_missing_cluster_or_group(read, code, words):
    with pytest.raises(WorkloadIdentityError) as caught:
        reconciler(FakeClusters([read])).ensure_oidc(True, True)
    assert caught.value.code == code and caught.value.status == 404
    assert caught.value.message == words


def test_other_read_errors_pass_through():
    denied = arm_error(403, "AuthorizationFailed", "The client does not have authorization")
    with pytest.raises(WorkloadIdentityError) as caught:
        reconciler(FakeClusters([denied])).ensure_oidc(True, True)
    assert (
        caught.value.message == f"Failed to read {TARGET}: AuthorizationFailed: The client does not have authorization"
    )


def test_ensure_present_creates_group_and_cluster():
    clusters = FakeClusters([GROUP_NOT_FOUND])
    owner = reconciler(clusters)
    result = owner.ensure_present(rc.ClusterSpec(location="eastus", node_count=1))
    assert owner.azure.groups.created == [("rg1", "eastus")]
    assert clusters.methods() == ["GET", "PUT"]
    assert result.resource_group_created and result.plan.action == CREATE
    assert result.cluster["issuer_url"] == ISSUER
    assert "etag" not in clusters.calls[1][2]


def test_ensure_present_in_check_mode_creates_nothing():
    clusters = FakeClusters([GROUP_NOT_FOUND])
    owner = reconciler(clusters, check_mode=True)
    result = owner.ensure_present(rc.ClusterSpec(location="eastus"))
    assert owner.azure.groups.created == [] and clusters.methods() == ["GET"]
    assert result.resource_group_created and result.plan.action == CREATE


def test_ensure_present_needs_a_location_to_create():
    with pytest.raises(WorkloadIdentityError, match="location: is required to create the cluster"):
        reconciler(FakeClusters([None])).ensure_present(rc.ClusterSpec())


def test_ensure_present_without_creating_the_group():
    clusters = FakeClusters([GROUP_NOT_FOUND])
    owner = reconciler(clusters)
    with pytest.raises(WorkloadIdentityError) as caught:
        owner.ensure_present(rc.ClusterSpec(location="eastus"), create_resource_group=False)
    assert caught.value.code == "ResourceGroupNotFound"
    assert "create_resource_group is false" in caught.value.message
    assert owner.azure.groups.created == [] and clusters.methods() == ["GET"]


def test_ensure_present_on_an_existing_cluster_only_touches_oidc():
    clusters = FakeClusters([cluster_body(oidc=False)])
    owner = reconciler(clusters)
    result = owner.ensure_present(rc.ClusterSpec(location="eastus", node_count=7))
    assert clusters.methods() == ["GET", "PUT"]
    assert clusters.calls[1][1]["properties"]["agentPoolProfiles"][0]["count"] == 2
    assert owner.azure.groups.created == []
    assert any("has 2 nodes, not 7" in warning for warning in result.plan.warnings)


def test_ensure_absent():
    clusters = FakeClusters([cluster_body(oidc=True)])
    result = reconciler(clusters).ensure_absent()
    assert clusters.methods() == ["GET", "DELETE"]
    assert result.plan.action == DELETE and result.cluster is None


@pytest.mark.parametrize("read", [None, GROUP_NOT_FOUND])
def test_ensure_absent_when_gone(read):
    clusters = FakeClusters([read])
    result = reconciler(clusters).ensure_absent()
    assert clusters.methods() == ["GET"]
    assert result.plan.action == NONE


def test_ensure_absent_in_check_mode():
    clusters = FakeClusters([cluster_body()])
    result = reconciler(clusters, check_mode=True).ensure_absent()
    assert clusters.methods() == ["GET"]
    assert result.plan.action == DELETE


def test_ensure_absent_waits_for_a_deletion_already_running():
    clusters = FakeClusters([cluster_body(state="Deleting"), cluster_body(state="Deleting"), None])
    result = reconciler(clusters).ensure_absent()
    assert clusters.methods() == ["GET", "GET", "GET"]
    assert result.plan.action == NONE
