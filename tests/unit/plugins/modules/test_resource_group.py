"""resource_group through main(): only the SDK client is a fake (returning SDK models, raising azure-core errors)."""

from __future__ import annotations

import json
import typing as t

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.resource.resources.models import ResourceGroup

from ansible_collections.aks.workload_identity.plugins.module_utils import azure_client
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import resource_group as reconciler
from ansible_collections.aks.workload_identity.plugins.modules import resource_group
from tests.unit.conftest import failure, module_args

SUB = "11111111-2222-3333-4444-555555555555"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SECRET = "super-secret-value-42"
AUTH = {"subscription_id": SUB, "client_id": "3f2a9c1b-0d4e-4c6b-9a8f-1e2d3c4b5a69", "secret": SECRET, "tenant": TENANT}
PREFIX = f"/subscriptions/{SUB}/resourceGroups/"


class Response:
    """Just enough of an azure-core HTTP response for HttpResponseError to parse an ARM error body."""

    def __init__(self, status: int, code: str, message: str):
        self.status_code, self.reason, self.headers, self.request = status, "Reason", {}, None
        self.content_type = "application/json; charset=utf-8"
        self._text = json.dumps({"error": {"code": code, "message": message}})

    def text(self, encoding: str | None = None) -> str:
        return self._text

    def body(self) -> bytes:
        return self._text.encode()


def arm_error(status: int, code: str, message: str, cls: type = HttpResponseError) -> HttpResponseError:
    return cls(response=Response(status, code, message))


class Poller:
    """An LROPoller that finishes (or not) when waited for."""

    def __init__(self, on_done: t.Callable[[], None], finishes: bool = True) -> None:
        self.on_done, self.finishes, self.waited = on_done, finishes, None

    def wait(self, timeout: float | None = None) -> None:
        self.waited = timeout
        if self.finishes:
            self.on_done()

    def done(self) -> bool:
        return self.finishes

    def status(self) -> str:
        return "Succeeded" if self.finishes else "InProgress"

    def result(self) -> None:
        return None


class FakeResourceGroups:
    """The resource_groups operations: an in-memory store answering like ARM."""

    def __init__(self) -> None:
        self.store: dict[str, dict[str, t.Any]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.fail_on: dict[str, HttpResponseError] = {}
        self.delete_finishes = True
        self.polling: list[t.Any] = []
        self.pollers: list[Poller] = []

    def _maybe_fail(self, operation: str) -> None:
        if operation in self.fail_on:
            raise self.fail_on[operation]

    def _model(self, name: str) -> ResourceGroup:
        # azure-mgmt-resource < 24 has msrest models (deserialize); later ones are mappings of the REST body.
        if hasattr(ResourceGroup, "deserialize"):
            return ResourceGroup.deserialize(self.store[name])
        return ResourceGroup(self.store[name])

    def get(self, name: str) -> ResourceGroup:
        self.calls.append(("get", name))
        self._maybe_fail("get")
        if name not in self.store:
            raise arm_error(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
        return self._model(name)

    def create_or_update(self, name: str, body: dict) -> ResourceGroup:
        self.calls.append(("put", name))
        self._maybe_fail("put")
        self.store[name] = {
            "id": PREFIX + name,
            "name": name,
            "type": "Microsoft.Resources/resourceGroups",
            "location": body["location"],
            "tags": body.get("tags") or {},
            "properties": {"provisioningState": "Succeeded"},
        }
        return self._model(name)

    def update(self, name: str, body: dict) -> ResourceGroup:
        self.calls.append(("patch", name))
        self.store[name]["tags"] = body["tags"]
        return self._model(name)

    def begin_delete(self, name: str, polling_interval: float | None = None, polling: t.Any = True) -> Poller:
        self.calls.append(("delete", name))
        self._maybe_fail("delete")
        self.polling.append(polling)
        poller = Poller(lambda: self.store.pop(name, None), self.delete_finishes)
        self.pollers.append(poller)
        return poller


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch) -> FakeResourceGroups:
    fake = FakeResourceGroups()

    def resource_client(credential, subscription_id, **kwargs):
        assert subscription_id == SUB
        return type("Resources", (), {"resource_groups": fake})()

    monkeypatch.setattr(azure_client, "ResourceManagementClient", resource_client)
    return fake


def run(capsys: pytest.CaptureFixture[str], args: dict[str, t.Any], check: bool = False) -> dict[str, t.Any]:
    payload = {**AUTH, "name": "rg1", **args}
    if check:
        payload["_ansible_check_mode"] = True
    with module_args(payload), pytest.raises(SystemExit):
        resource_group.main()
    return json.loads(capsys.readouterr().out)


def fail(capsys: pytest.CaptureFixture[str], args: dict[str, t.Any]) -> dict[str, t.Any]:
    with module_args({**AUTH, "name": "rg1", **args}):
        return failure(capsys, resource_group.main)


def test_check_mode_create_reads_only_and_predicts(groups, capsys):
    result = run(capsys, {"location": "East US", "tags": {"team": "a"}}, check=True)
    assert result["changed"] is True
    assert groups.calls == [("get", "rg1")] and groups.store == {}
    assert result["resource_group"] == {
        "id": PREFIX + "rg1",
        "name": "rg1",
        "location": "eastus",
        "tags": {"team": "a"},
        "managed_by": None,
        "provisioning_state": "Succeeded",
    }
    assert result["diff"]["before"] == {}


def test_create_then_no_op_with_one_get(groups, capsys):
    created = run(capsys, {"location": "eastus", "tags": {"n": "1"}})
    assert created["changed"] is True and groups.calls == [("get", "rg1"), ("put", "rg1")]
    assert created["resource_group"]["tags"] == {"n": "1"}
    groups.calls.clear()
    again = run(capsys, {"location": "eastus", "tags": {"n": "1"}})
    assert again["changed"] is False and groups.calls == [("get", "rg1")]
    assert again["diff"]["before"] == again["diff"]["after"] == created["resource_group"]


def test_location_is_required_to_create_only(groups, capsys):
    result = fail(capsys, {})
    assert result["error_code"] == "InvalidParameter" and result["msg"].startswith("location: is required")
    assert groups.calls == [("get", "rg1")]
    run(capsys, {"location": "eastus"})
    assert run(capsys, {})["changed"] is False  # an existing group needs no location


def test_tags_omitted_are_untouched_and_merge_or_purge(groups, capsys):
    run(capsys, {"location": "eastus", "tags": {"team": "a", "owner": "x"}})
    assert run(capsys, {})["changed"] is False
    merged = run(capsys, {"tags": {"cost": "1"}, "purge_tags": False})
    assert merged["changed"] is True and merged["resource_group"]["tags"] == {"team": "a", "owner": "x", "cost": "1"}
    assert groups.calls[-1] == ("patch", "rg1")
    purged = run(capsys, {"tags": {"team": "b"}}, check=True)
    assert purged["changed"] is True and purged["diff"]["after"]["tags"] == {"team": "b"}
    assert groups.store["rg1"]["tags"] == {"team": "a", "owner": "x", "cost": "1"}  # check mode: untouched


@pytest.mark.parametrize("location", ["westus", "West US"])
def test_location_change_fails_before_any_write(groups, capsys, location):
    run(capsys, {"location": "East US"})
    groups.calls.clear()
    result = fail(capsys, {"location": location})
    assert result["error_code"] == "LocationImmutable" and "cannot move" in result["msg"]
    assert groups.calls == [("get", "rg1")]


def test_absent_check_mode_then_delete_waits_then_no_op(groups, capsys):
    run(capsys, {"location": "eastus"})
    check = run(capsys, {"state": "absent"}, check=True)
    assert check["changed"] is True and "rg1" in groups.store
    assert check["diff"]["after"] == {} and check["diff"]["before"]["name"] == "rg1"
    deleted = run(capsys, {"state": "absent", "wait_timeout": 60})
    assert deleted["changed"] is True and deleted["resource_group"] == {} and "rg1" not in groups.store
    assert groups.polling == [True] and groups.pollers[0].waited == 60
    groups.calls.clear()
    assert run(capsys, {"state": "absent"})["changed"] is False
    assert groups.calls == [("get", "rg1")]


def test_absent_without_wait_does_not_poll(groups, capsys):
    run(capsys, {"location": "eastus"})
    groups.delete_finishes = False
    result = run(capsys, {"state": "absent", "wait": False})
    assert result["changed"] is True and groups.polling == [False] and groups.pollers[0].waited is None


def test_a_deletion_that_does_not_finish_in_time_fails_saying_so(groups, capsys):
    run(capsys, {"location": "eastus"})
    groups.delete_finishes = False
    result = fail(capsys, {"state": "absent", "wait_timeout": 5})
    assert result["error_code"] == "OperationTimeout"
    assert "delete resource group 'rg1'" in result["msg"] and "5 seconds" in result["msg"]


def test_a_managed_group_is_never_deleted(groups, capsys):
    cluster = f"/subscriptions/{SUB}/resourcegroups/rg1/providers/Microsoft.ContainerService/managedClusters/c1"
    groups.store["MC_rg1_c1"] = {
        "id": PREFIX + "MC_rg1_c1",
        "name": "MC_rg1_c1",
        "location": "eastus",
        "managedBy": cluster,
        "properties": {"provisioningState": "Succeeded"},
    }
    result = fail(capsys, {"name": "MC_rg1_c1", "state": "absent"})
    assert result["error_code"] == "ManagedResourceGroup" and cluster in result["msg"]
    assert [call[0] for call in groups.calls] == ["get"]


@pytest.mark.parametrize("name", ["", "a" * 91, "ends-with-dot.", "has space", "slash/no"])
def test_invalid_names_fail_before_any_request(groups, capsys, name):
    result = fail(capsys, {"name": name, "location": "eastus"})
    assert result["msg"].startswith("Invalid input: name:")
    assert groups.calls == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"location": "east/us"}, "location: must be an Azure region name"),
        ({"location": "eastus", "tags": {"n": 1}}, "tags.n: tag values must be strings"),
        ({"location": "eastus", "tags": {"a/b": "x"}}, "tags.a/b: tag names must not contain"),
        ({"location": "eastus", "tags": {"Team": "a", "team": "b"}}, "Azure tag names ignore case"),
        ({"location": "eastus", "tags": {f"t{i}": "x" for i in range(51)}}, "tags: Azure allows at most 50 tags"),
        ({"location": "eastus", "tags": {"n": "v" * 257}}, "tags.n: tag values must be at most 256"),
        ({"state": "absent", "wait_timeout": 0}, "wait_timeout: must be between 1 and 86400 seconds, got 0"),
        ({"state": "absent", "wait_timeout": 10**12}, "wait_timeout: must be between 1 and 86400 seconds"),
    ],
)
def test_bad_values_fail_before_any_request_naming_option_and_rule(groups, capsys, args, words):
    result = fail(capsys, args)
    assert result["error_code"] == "InvalidParameter" and result["msg"].startswith("Invalid input: ")
    assert words in result["msg"] and any(words in error for error in result["errors"])
    assert groups.calls == []


@pytest.mark.parametrize("name", ["rg", "MC_rg-1_(x).y", "a" * 90])
def test_valid_names(name):
    assert reconciler.validate_name(name) == []


def test_delete_of_a_group_gone_meanwhile_is_not_an_error(groups, capsys):
    run(capsys, {"location": "eastus"})
    groups.fail_on["delete"] = arm_error(404, "ResourceGroupNotFound", "gone", ResourceNotFoundError)
    result = run(capsys, {"state": "absent"})
    assert result["changed"] is True and result["resource_group"] == {}


def test_azure_errors_name_the_action_and_object_and_hide_the_secret(groups, capsys):
    groups.fail_on["put"] = arm_error(403, "AuthorizationFailed", f"client secret {SECRET} lacks write")
    result = fail(capsys, {"location": "eastus"})
    assert result["msg"].startswith("Failed to create resource group 'rg1': AuthorizationFailed:")
    assert result["status"] == 403
    assert SECRET not in json.dumps(result)


def test_argument_spec_is_the_documented_one():
    import yaml

    documented = yaml.safe_load(resource_group.DOCUMENTATION)["options"]
    assert set(documented) == set(resource_group.ARGUMENT_SPEC)
    for name, spec in resource_group.ARGUMENT_SPEC.items():
        assert documented[name]["type"] == spec["type"]
        assert documented[name].get("default") == spec.get("default")
