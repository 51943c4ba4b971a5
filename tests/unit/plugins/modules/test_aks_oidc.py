"""aks_oidc through main(): the real SDK and azure-core pipeline (retries, LRO polling) against a scripted ARM on
a local HTTPS server. Only the credential is replaced (a static token); every request and PUT body is recorded."""

from __future__ import annotations

import copy
import json
import re
import time
import typing as t

import pytest
from ansible.module_utils import _internal
from ansible.module_utils.common import warnings as ansible_warnings
from azure.core.credentials import AccessToken

from ansible_collections.aks.workload_identity.plugins.module_utils import azure_client
from ansible_collections.aks.workload_identity.plugins.modules import aks_oidc
from tests.unit.conftest import module_args

SUB = "11111111-2222-3333-4444-555555555555"
ISSUER = (
    "https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0328c7fa-e740-4752-af1c-182a774aacc7/"
)
CLUSTER_PATH = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/(?P<group>[^/]+)/providers/Microsoft\.ContainerService/managedClusters/"
    r"(?P<name>[^/]+)$",
    re.IGNORECASE,
)
GROUP_PATH = re.compile(r"^/subscriptions/[^/]+/resourcegroups/(?P<group>[^/]+)$", re.IGNORECASE)
OPERATION_PATH = re.compile(r"/providers/Microsoft\.ContainerService/locations/[^/]+/operations/(?P<id>[^/]+)$")
READ_ONLY = ("provisioningState", "powerState", "currentKubernetesVersion", "fqdn")


def cluster_body(
    name: str = "c1", oidc: bool = False, workload_identity: bool | None = None, state: str = "Succeeded"
) -> dict:
    properties: dict[str, t.Any] = {
        "provisioningState": state,
        "powerState": {"code": "Running"},
        "kubernetesVersion": "1.33",
        "currentKubernetesVersion": "1.33.5",
        "dnsPrefix": f"{name}-rg1-111111",
        "fqdn": f"{name}-abc.hcp.eastus.azmk8s.io",
        "agentPoolProfiles": [
            {
                "name": "nodepool1",
                "count": 2,
                "vmSize": "Standard_D4ds_v5",
                "mode": "System",
                "provisioningState": state,
                "nodeLabels": {"pool": "system"},
                "futureAgentPoolField": [1, 2],
            }
        ],
        "networkProfile": {"networkPlugin": "kubenet", "podCidr": "10.244.0.0/16"},
        "addonProfiles": {"omsagent": {"enabled": False}},
        "oidcIssuerProfile": {"enabled": oidc, **({"issuerURL": ISSUER} if oidc else {})},
        "securityProfile": {} if workload_identity is None else {"workloadIdentity": {"enabled": workload_identity}},
        "futureClusterField": {"x": "y"},
    }
    return {
        "id": f"/subscriptions/{SUB}/resourcegroups/rg1/providers/Microsoft.ContainerService/managedClusters/{name}",
        "location": "eastus",
        "name": name,
        "tags": {"team": "a"},
        "type": "Microsoft.ContainerService/ManagedClusters",
        "properties": properties,
        "identity": {"type": "SystemAssigned", "principalId": "p", "tenantId": "t"},
        "sku": {"name": "Base", "tier": "Free"},
    }


class FakeArm:
    """Just enough ARM + AKS: a cluster store, resource groups, async operations, scripted failures."""

    def __init__(self, server: t.Any):
        self.url = server.url
        self.clusters: dict[str, dict] = {}
        self.groups: set[str] = {"rg1"}
        self.requests: list[tuple[str, str, t.Any]] = []
        self.put_errors: list[tuple[int, str, str]] = []  # answered to the next cluster PUTs, in order
        self.operation_script: list[dict] = [{"status": "InProgress"}, {"status": "Succeeded"}]
        self.operations: dict[str, dict] = {}
        server.routes["/"] = self.handle

    # -- helpers for tests
    def arm_requests(self) -> list[tuple[str, str]]:
        return [(request[0], request[1]) for request in self.requests if not request[1].startswith("/metadata")]

    def puts(self) -> list[t.Any]:
        return [body for method, path, body in self.requests if method == "PUT" and CLUSTER_PATH.match(path)]

    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.arm_requests() if m in ("PUT", "PATCH", "POST", "DELETE")]

    # -- the server
    def handle(self, request: t.Any) -> tuple[int, dict[str, str], bytes]:
        path = request.path.split("?", 1)[0]
        body = json.loads(request.body) if request.body else None
        self.requests.append((request.method, path, body))
        if path == "/metadata/endpoints":
            return self.json(200, self.metadata())
        if match := OPERATION_PATH.search(path):
            return self.operation(match["id"])
        if match := GROUP_PATH.match(path):
            self.groups.add(match["group"])
            return self.json(201, {"id": path, "name": match["group"], "location": body["location"]})
        if match := CLUSTER_PATH.match(path):
            return getattr(self, request.method.lower())(match["group"], match["name"], body)
        return self.json(404, {"error": {"code": "NotFound", "message": path}})

    def metadata(self) -> dict:
        return {
            "name": "Unit",
            "resourceManager": self.url + "/",
            "authentication": {"loginEndpoint": self.url, "audiences": ["https://management.unit.test/"]},
        }

    def get(self, group: str, name: str, body: t.Any) -> tuple[int, dict, bytes]:
        if group not in self.groups:
            return self.error(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found.")
        if name not in self.clusters:
            return self.error(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.ContainerService/managedClusters/{name}' under resource group '{group}' was not found.",
            )
        return self.json(200, self.clusters[name])

    def put(self, group: str, name: str, body: t.Any) -> tuple[int, dict, bytes]:
        if self.put_errors:
            status, code, message = self.put_errors.pop(0)
            return self.error(status, code, message)
        existing = self.clusters.get(name)
        stored = copy.deepcopy(body)
        stored.update(id=cluster_body(name)["id"], name=name, type="Microsoft.ContainerService/ManagedClusters")
        properties = stored["properties"]
        properties["provisioningState"] = "Updating" if existing else "Creating"
        if properties.get("oidcIssuerProfile", {}).get("enabled"):
            properties["oidcIssuerProfile"]["issuerURL"] = ISSUER
        self.clusters[name] = stored
        operation = f"op{len(self.operations) + 1}"
        self.operations[operation] = {"cluster": name, "script": list(self.operation_script)}
        return self.json(200 if existing else 201, stored, {"Azure-AsyncOperation": self.operation_url(operation)})

    def delete(self, group: str, name: str, body: t.Any) -> tuple[int, dict, bytes]:
        if name not in self.clusters:
            return 204, {}, b""
        self.clusters[name]["properties"]["provisioningState"] = "Deleting"
        operation = f"op{len(self.operations) + 1}"
        self.operations[operation] = {"cluster": name, "script": list(self.operation_script), "delete": True}
        url = self.operation_url(operation)
        return 202, {"Azure-AsyncOperation": url, "Location": url}, b""

    def operation(self, operation_id: str) -> tuple[int, dict, bytes]:
        operation = self.operations[operation_id]
        step = operation["script"].pop(0) if len(operation["script"]) > 1 else operation["script"][0]
        if step["status"] == "Succeeded":
            if operation.get("delete"):
                self.clusters.pop(operation["cluster"], None)
            elif operation["cluster"] in self.clusters:
                self.clusters[operation["cluster"]]["properties"]["provisioningState"] = "Succeeded"
        return self.json(200, {"name": operation_id, "startTime": "2026-01-01T00:00:00Z", **step})

    def operation_url(self, operation: str) -> str:
        return (
            f"{self.url}/subscriptions/{SUB}/providers/Microsoft.ContainerService/locations/eastus/operations/"
            f"{operation}?api-version=2016-03-30"
        )

    @staticmethod
    def json(status: int, document: t.Any, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
        return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(document).encode()

    def error(self, status: int, code: str, message: str) -> tuple[int, dict, bytes]:
        return self.json(status, {"error": {"code": code, "message": message}})


class StaticToken:
    def get_token(self, *scopes: str, **kwargs: t.Any) -> AccessToken:
        return AccessToken("unit-test-token", int(time.time()) + 3600)


@pytest.fixture
def arm(https_server: t.Any, monkeypatch: pytest.MonkeyPatch) -> FakeArm:
    # Importing ansible's controller code makes module warnings go to the controller's display; on a target
    # they are part of the result, which is what these tests read.
    monkeypatch.setattr(_internal, "is_controller", False)
    monkeypatch.setattr(ansible_warnings, "_global_warnings", {})  # one run's warnings, not the session's
    monkeypatch.setattr(
        azure_client,
        "build_credential",
        lambda cloud, params: azure_client.CredentialChoice(StaticToken(), "a unit-test token"),
    )
    return FakeArm(https_server)


@pytest.fixture
def base_args(arm: FakeArm, pki: t.Any) -> dict[str, t.Any]:
    return {
        "subscription_id": SUB,
        "cloud_environment": f"{arm.url}/metadata/endpoints",
        "ca_bundle": str(pki.ca_file),
        "secret": "never-printed-secret",
        "client_id": "3f2a9c1b-0d4e-4c6b-9a8f-1e2d3c4b5a69",
        "tenant": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "lro_polling_interval": 0.01,
        "resource_group": "rg1",
        "name": "c1",
    }


def run(capsys: pytest.CaptureFixture[str], module: t.Any, args: dict[str, t.Any]) -> dict[str, t.Any]:
    with module_args(args), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)


def warnings(result: dict[str, t.Any]) -> list[str]:
    """Warning texts, whether the result carries strings (ansible-core < 2.19) or warning summaries."""
    return [item if isinstance(item, str) else item["event"]["msg"] for item in result.get("warnings", [])]


def without_read_only(body: dict) -> dict:
    body = copy.deepcopy(body)
    for key in ("id", "name", "type"):
        body.pop(key, None)
    body["identity"] = {"type": body["identity"]["type"]}
    for key in READ_ONLY:
        body["properties"].pop(key, None)
    for pool in body["properties"]["agentPoolProfiles"]:
        pool.pop("provisioningState", None)
    body["properties"]["oidcIssuerProfile"].pop("issuerURL", None)
    return body


# --- tests ------------------------------------------------------------------------------------------------------
def test_enables_both_and_sends_the_cluster_back_as_read(capsys, arm, base_args):
    arm.clusters["c1"] = cluster_body(oidc=False)
    read = copy.deepcopy(arm.clusters["c1"])
    result = run(capsys, aks_oidc, {**base_args, "_ansible_diff": True})
    assert result["changed"] is True
    assert result["issuer_url"] == ISSUER
    assert (result["oidc_issuer_enabled"], result["workload_identity_enabled"]) == (True, True)
    assert result["provisioning_state"] == "Succeeded"
    assert result["id"] == read["id"]
    assert result["diff"]["before"]["oidc_issuer_enabled"] is False
    assert result["diff"]["after"]["issuer_url"] == ISSUER
    assert any("restarts its API server" in warning for warning in warnings(result))
    # The PUT body is the GET body minus read-only fields, with only the two settings changed.
    (sent,) = arm.puts()
    expected = without_read_only(read)
    expected["properties"]["oidcIssuerProfile"] = {"enabled": True}
    expected["properties"]["securityProfile"] = {"workloadIdentity": {"enabled": True}}
    assert sent == expected
    methods = [request[0] for request in arm.arm_requests()]
    assert methods[:2] == ["GET", "PUT"] and methods[-1] == "GET" and set(methods[2:]) == {"GET"}


def test_no_op_is_one_get(capsys, arm, base_args):
    arm.clusters["c1"] = cluster_body(oidc=True, workload_identity=True)
    result = run(capsys, aks_oidc, base_args)
    assert result["changed"] is False
    assert result["issuer_url"] == ISSUER
    ((method, path),) = arm.arm_requests()
    assert method == "GET" and CLUSTER_PATH.match(path)
    assert warnings(result) == []


def test_check_mode_writes_nothing_and_warns(capsys, arm, base_args):
    arm.clusters["c1"] = cluster_body(oidc=False)
    result = run(capsys, aks_oidc, {**base_args, "_ansible_check_mode": True, "_ansible_diff": True})
    assert result["changed"] is True
    assert result["issuer_url"] is None and result["oidc_issuer_enabled"] is True
    assert result["diff"]["after"]["workload_identity_enabled"] is True
    assert any("cannot" in w or "does not support disabling" in w for w in warnings(result))
    assert arm.writes() == []


def test_disable_workload_identity(capsys, arm, base_args):
    arm.clusters["c1"] = cluster_body(oidc=True, workload_identity=True)
    result = run(capsys, aks_oidc, {**base_args, "workload_identity": False})
    assert result["changed"] is True and result["workload_identity_enabled"] is False
    assert result["oidc_issuer_enabled"] is True and result["issuer_url"] == ISSUER
    (sent,) = arm.puts()
    assert sent["properties"]["securityProfile"] == {"workloadIdentity": {"enabled": False}}
    assert sent["properties"]["oidcIssuerProfile"] == {"enabled": True}


def test_refuses_to_disable_the_issuer_before_any_write(capsys, arm, base_args):
    arm.clusters["c1"] = cluster_body(oidc=True, workload_identity=False)
    result = run(capsys, aks_oidc, {**base_args, "oidc_issuer": False, "workload_identity": False})
    assert result["failed"] is True
    assert result["error_code"] == "OIDCIssuerCannotBeDisabled"
    assert "AKS does not support disabling the OIDC issuer" in result["msg"]
    assert arm.writes() == []


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"oidc_issuer": False, "workload_identity": True}, "workload_identity: requires oidc_issuer"),
        ({"name": "bad name"}, "name: must be 1-63 letters"),
        ({"resource_group": "rg."}, "resource_group: 'rg.' is not a valid resource group name"),
        ({"wait_timeout": 0}, "wait_timeout: must be between 1 and 86400 seconds, got 0"),
        # Once a traceback: Python's thread wait overflowed on the poller's timeout (OverflowError).
        ({"wait_timeout": 10**12}, "wait_timeout: must be between 1 and 86400 seconds, got 1e+12"),
    ],
)
def test_bad_input_fails_before_any_request(capsys, arm, base_args, overrides, words):
    result = run(capsys, aks_oidc, {**base_args, **overrides})
    assert result["failed"] is True and result["error_code"] == "InvalidParameter"
    assert result["msg"].startswith("Invalid input: ") and words in result["msg"]
    assert arm.requests == []


@pytest.mark.parametrize(
    ("groups", "code", "words"),
    [
        ({"rg1"}, "ResourceNotFound", "name: AKS cluster 'c1' in resource group 'rg1' does not exist; create it"),
        (set(), "ResourceGroupNotFound", "resource_group: resource group 'rg1' does not exist"),
    ],
)
@pytest.mark.parametrize("check", [False, True])
def test_missing_cluster_or_group(capsys, arm, base_args, groups, code, words, check):
    arm.groups = groups
    result = run(capsys, aks_oidc, {**base_args, "_ansible_check_mode": check})
    assert result["failed"] is True and result["error_code"] == code
    assert result["msg"].startswith(words)
    assert "Traceback" not in result["msg"]
    assert arm.writes() == []


def test_failed_operation_is_reported_with_its_code(capsys, arm, base_args):
    arm.clusters["c1"] = cluster_body(oidc=False)
    arm.operation_script = [
        {"status": "InProgress"},
        {"status": "Failed", "error": {"code": "ControlPlaneAddOnsNotReady", "message": "Pods not in Running status"}},
    ]
    result = run(capsys, aks_oidc, base_args)
    assert result["failed"] is True
    assert result["error_code"] == "ControlPlaneAddOnsNotReady"
    assert result["msg"] == (
        "Failed to enable the OIDC issuer and enable workload identity on AKS cluster 'c1' in resource group 'rg1': "
        "ControlPlaneAddOnsNotReady: Pods not in Running status"
    )


def test_operation_timeout(capsys, arm, base_args):
    arm.clusters["c1"] = cluster_body(oidc=False)
    arm.operation_script = [{"status": "InProgress"}]
    result = run(capsys, aks_oidc, {**base_args, "wait_timeout": 1, "lro_polling_interval": 0.2})
    assert result["failed"] is True and result["error_code"] == "OperationTimeout"
    assert "waiting to enable the OIDC issuer and enable workload identity on AKS cluster 'c1'" in result["msg"]


def test_wait_false_returns_updating_with_the_issuer(capsys, arm, base_args):
    arm.clusters["c1"] = cluster_body(oidc=False)
    result = run(capsys, aks_oidc, {**base_args, "wait": False})
    assert result["changed"] is True
    assert (result["provisioning_state"], result["issuer_url"]) == ("Updating", ISSUER)
    assert [request[0] for request in arm.arm_requests()] == ["GET", "PUT"]  # no polling


def test_busy_cluster_is_awaited_then_updated(capsys, arm, base_args):
    arm.clusters["c1"] = cluster_body(oidc=False, state="Upgrading")
    reads = 0
    original = arm.get

    def get(group: str, name: str, body: t.Any) -> t.Any:
        nonlocal reads
        reads += 1
        if reads == 3:  # the upgrade ends while we wait
            arm.clusters["c1"]["properties"]["provisioningState"] = "Succeeded"
        return original(group, name, body)

    arm.get = get
    result = run(capsys, aks_oidc, base_args)
    assert result["changed"] is True and result["provisioning_state"] == "Succeeded"
    methods = [request[0] for request in arm.arm_requests()]
    assert methods[:4] == ["GET", "GET", "GET", "PUT"]


def test_busy_cluster_with_wait_false_fails_without_writing(capsys, arm, base_args):
    arm.clusters["c1"] = cluster_body(oidc=False, state="Updating")
    result = run(capsys, aks_oidc, {**base_args, "wait": False})
    assert result["failed"] is True and result["error_code"] == "OperationNotAllowed"
    assert "another operation is running" in result["msg"]
    assert arm.writes() == []


def test_409_operation_not_allowed_is_retried_after_reading_again(capsys, arm, base_args):
    arm.clusters["c1"] = cluster_body(oidc=False)
    arm.put_errors = [
        (409, "OperationNotAllowed", "Operation is not allowed: Another operation (Updating) is in progress")
    ]
    result = run(capsys, aks_oidc, base_args)
    assert result["changed"] is True
    assert len(arm.puts()) == 2


def test_other_put_errors_name_the_action_and_cluster(capsys, arm, base_args):
    arm.clusters["c1"] = cluster_body(oidc=False)
    arm.put_errors = [(400, "InvalidParameter", "The value of parameter x is invalid.")]
    result = run(capsys, aks_oidc, base_args)
    assert result["failed"] is True and result["status"] == 400
    assert result["msg"] == (
        "Failed to enable the OIDC issuer and enable workload identity on AKS cluster 'c1' in resource group "
        "'rg1': InvalidParameter: The value of parameter x is invalid."
    )


def test_the_secret_never_appears(capsys, arm, base_args):
    arm.put_errors = [(400, "InvalidParameter", "echo never-printed-secret back")]
    arm.clusters["c1"] = cluster_body(oidc=False)
    with module_args(base_args), pytest.raises(SystemExit):
        aks_oidc.main()
    printed = capsys.readouterr().out
    assert "never-printed-secret" not in printed
