"""managed_identity through main(): only the SDK clients are fakes (returning SDK models, raising azure-core errors)."""

from __future__ import annotations

import json
import typing as t

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.msi.models import Identity
from azure.mgmt.resource.resources.models import ResourceGroup

from ansible_collections.aks.workload_identity.plugins.module_utils import azure_client
from ansible_collections.aks.workload_identity.plugins.modules import managed_identity
from tests.unit.conftest import failure, module_args

SUB = "11111111-2222-3333-4444-555555555555"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SECRET = "super-secret-value-42"
AUTH = {"subscription_id": SUB, "client_id": "3f2a9c1b-0d4e-4c6b-9a8f-1e2d3c4b5a69", "secret": SECRET, "tenant": TENANT}
PREFIX = f"/subscriptions/{SUB}/resourcegroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/"


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


class FakeIdentities:
    """The user_assigned_identities operations: an in-memory store answering like the service."""

    def __init__(self) -> None:
        self.store: dict[str, dict[str, t.Any]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.fail_on: dict[str, HttpResponseError] = {}

    def _maybe_fail(self, operation: str) -> None:
        if operation in self.fail_on:
            raise self.fail_on[operation]

    def _model(self, name: str) -> Identity:
        return Identity.deserialize(self.store[name])

    def get(self, resource_group: str, name: str) -> Identity:
        self.calls.append(("get", name))
        self._maybe_fail("get")
        if name not in self.store:
            raise arm_error(404, "ResourceNotFound", f"The Resource '{name}' was not found.", ResourceNotFoundError)
        return self._model(name)

    def create_or_update(self, resource_group: str, name: str, body: dict) -> Identity:
        self.calls.append(("put", name))
        self._maybe_fail("put")
        self.store[name] = {
            "id": PREFIX + name,
            "name": name,
            "location": body["location"].replace(" ", "").lower(),
            "tags": body.get("tags") or {},
            "properties": {"clientId": "c-" + name, "principalId": "p-" + name, "tenantId": TENANT},
        }
        return self._model(name)

    def update(self, resource_group: str, name: str, body: dict) -> Identity:
        self.calls.append(("patch", name))
        self.store[name]["tags"] = body["tags"]
        return self._model(name)

    def delete(self, resource_group: str, name: str) -> None:
        self.calls.append(("delete", name))
        self.store.pop(name, None)


class FakeResourceGroups:
    def __init__(self) -> None:
        self.calls = 0

    def get(self, name: str) -> ResourceGroup:
        self.calls += 1
        if name != "rg1":
            raise arm_error(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
        return ResourceGroup(location="westeurope")


class Clients:
    def __init__(self) -> None:
        self.identities = FakeIdentities()
        self.groups = FakeResourceGroups()


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch) -> Clients:
    clients = Clients()

    def msi_client(credential, subscription_id, **kwargs):
        assert subscription_id == SUB
        return type("Msi", (), {"user_assigned_identities": clients.identities})()

    def resource_client(credential, subscription_id, **kwargs):
        return type("Resources", (), {"resource_groups": clients.groups})()

    monkeypatch.setattr(azure_client, "ManagedServiceIdentityClient", msi_client)
    monkeypatch.setattr(azure_client, "ResourceManagementClient", resource_client)
    return clients


def run(capsys: pytest.CaptureFixture[str], args: dict[str, t.Any], check: bool = False) -> dict[str, t.Any]:
    payload = {**AUTH, "resource_group": "rg1", "name": "id1", **args}
    if check:
        payload["_ansible_check_mode"] = True
    with module_args(payload), pytest.raises(SystemExit):
        managed_identity.main()
    return json.loads(capsys.readouterr().out)


def test_check_mode_create_reads_only_and_predicts(sdk, capsys):
    result = run(capsys, {"tags": {"team": "a"}}, check=True)
    assert result["changed"] is True
    assert sdk.identities.calls == [("get", "id1")] and sdk.groups.calls == 1
    assert result["managed_identity"]["id"] == PREFIX + "id1"
    assert result["managed_identity"]["location"] == "westeurope"
    assert result["managed_identity"]["client_id"] is None
    assert result["diff"]["before"] == {}


def test_create_then_no_op_with_one_get(sdk, capsys):
    result = run(capsys, {"tags": {"team": "a", "n": "1"}})
    assert result["changed"] is True
    assert sdk.identities.calls == [("get", "id1"), ("put", "id1")]
    identity = result["managed_identity"]
    assert identity == {
        "id": PREFIX + "id1",
        "name": "id1",
        "resource_group": "rg1",
        "location": "westeurope",
        "tags": {"team": "a", "n": "1"},
        "client_id": "c-id1",
        "principal_id": "p-id1",
        "tenant_id": TENANT,
    }
    sdk.identities.calls.clear()
    again = run(capsys, {"tags": {"team": "a", "n": "1"}})
    assert again["changed"] is False and sdk.identities.calls == [("get", "id1")]
    assert again["diff"]["before"] == again["diff"]["after"] == identity
    assert sdk.groups.calls == 1  # the resource group is read only to create


def test_explicit_location_still_reads_the_resource_group_to_create(sdk, capsys):
    result = run(capsys, {"location": "North Europe"})
    assert result["managed_identity"]["location"] == "northeurope" and sdk.groups.calls == 1
    sdk.groups.calls = 0
    assert run(capsys, {"location": "North Europe"})["changed"] is False and sdk.groups.calls == 0


def test_tags_omitted_are_untouched_and_merge_or_purge(sdk, capsys):
    run(capsys, {"tags": {"team": "a", "owner": "x"}})
    assert run(capsys, {})["changed"] is False
    merged = run(capsys, {"tags": {"cost": "1"}, "purge_tags": False})
    assert merged["changed"] is True and merged["managed_identity"]["tags"] == {"team": "a", "owner": "x", "cost": "1"}
    assert sdk.identities.calls[-1] == ("patch", "id1")
    purged = run(capsys, {"tags": {"team": "b"}}, check=True)
    assert purged["changed"] is True and purged["diff"]["after"]["tags"] == {"team": "b"}
    assert sdk.identities.store["id1"]["tags"] == {"team": "a", "owner": "x", "cost": "1"}  # check mode: untouched


def test_location_change_fails_before_any_write(sdk, capsys):
    run(capsys, {})
    sdk.identities.calls.clear()
    payload = {**AUTH, "resource_group": "rg1", "name": "id1", "location": "eastus"}
    with module_args(payload):
        result = failure(capsys, managed_identity.main)
    assert result["failed"] and result["error_code"] == "LocationImmutable"
    assert "location:" in result["msg"] and "westeurope" in result["msg"]
    assert sdk.identities.calls == [("get", "id1")]


def test_absent_check_mode_then_delete_then_no_op(sdk, capsys):
    run(capsys, {})
    check = run(capsys, {"state": "absent"}, check=True)
    assert check["changed"] is True and "id1" in sdk.identities.store
    assert check["diff"]["after"] == {} and check["diff"]["before"]["name"] == "id1"
    deleted = run(capsys, {"state": "absent"})
    assert deleted["changed"] is True and deleted["managed_identity"] == {} and "id1" not in sdk.identities.store
    sdk.identities.calls.clear()
    assert run(capsys, {"state": "absent"})["changed"] is False
    assert sdk.identities.calls == [("get", "id1")]


@pytest.mark.parametrize("check", [False, True])
@pytest.mark.parametrize("location", [None, "westeurope"])
def test_missing_resource_group_is_found_by_reading_and_nothing_is_written(sdk, capsys, check, location):
    payload = {**AUTH, "resource_group": "rg-missing", "name": "id1", "location": location}
    if check:
        payload["_ansible_check_mode"] = True
    with module_args(payload):
        result = failure(capsys, managed_identity.main)
    assert result["msg"] == "resource_group: resource group 'rg-missing' does not exist; create it first"
    assert result["error_code"] == "ResourceGroupNotFound"
    assert sdk.identities.calls == [("get", "id1")] and sdk.groups.calls == 1


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"resource_group": "rg."}, "resource_group: 'rg.' is not a valid resource group name"),
        ({"resource_group": "a" * 91}, "resource_group: "),
        ({"name": "id"}, "name: must be 3-128 letters"),
        ({"name": "-id1"}, "name: must be 3-128 letters"),
        ({"name": "id.1"}, "name: must be 3-128 letters"),
        ({"location": "west_europe"}, "location: must be an Azure region name"),
        ({"tags": {"n": 1}}, "tags.n: tag values must be strings"),
        ({"tags": {"k": None}}, "tags.k: tag values must be strings"),
        ({"tags": {"a?b": "x"}}, "tags.a?b: tag names must not contain"),
    ],
)
def test_bad_values_fail_before_any_request_naming_option_and_rule(sdk, capsys, args, words):
    with module_args({**AUTH, "resource_group": "rg1", "name": "id1", **args}):
        result = failure(capsys, managed_identity.main)
    assert result["error_code"] == "InvalidParameter" and result["msg"].startswith("Invalid input: ")
    assert words in result["msg"]
    assert sdk.identities.calls == [] and sdk.groups.calls == 0


def test_azure_errors_name_the_action_and_object_and_hide_the_secret(sdk, capsys):
    sdk.identities.fail_on["put"] = arm_error(403, "AuthorizationFailed", f"client secret {SECRET} lacks write")
    payload = {**AUTH, "resource_group": "rg1", "name": "id1", "location": "westeurope"}
    with module_args(payload):
        result = failure(capsys, managed_identity.main)
    assert result["msg"].startswith(
        "Failed to create managed identity 'id1' in resource group 'rg1': AuthorizationFailed:"
    )
    assert result["status"] == 403
    assert SECRET not in json.dumps(result)


def test_argument_spec_is_the_documented_one():
    import yaml

    documented = yaml.safe_load(managed_identity.DOCUMENTATION)["options"]
    assert set(documented) == set(managed_identity.ARGUMENT_SPEC)
    for name, spec in managed_identity.ARGUMENT_SPEC.items():
        assert documented[name]["type"] == spec["type"]
        assert documented[name].get("default") == spec.get("default")
