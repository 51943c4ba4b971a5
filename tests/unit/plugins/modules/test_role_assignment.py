"""role_assignment through main(): only the SDK clients are fakes (returning SDK models, raising azure-core errors)."""

from __future__ import annotations

import json
import typing as t

import pytest

from ansible_collections.aks.workload_identity.plugins.module_utils import azure_client
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways import azure as azure_gateway
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.role_assignment import assignment_name
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import ROLE_READER
from ansible_collections.aks.workload_identity.plugins.modules import role_assignment
from tests.unit.conftest import module_args
from tests.unit.plugins.module_utils.reconcile.test_role_assignment import (
    CUSTOM_GUID,
    IDENTITY,
    PRINCIPAL,
    RG_SCOPE,
    SUB,
    UNKNOWN_GUID,
    FakeAuthorization,
    FakeIdentities,
    FakeResourceGroups,
    arm_error,
)

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SECRET = "super-secret-value-42"
AUTH = {"subscription_id": SUB, "client_id": "0f0f0f0f-1111-4222-8333-444444444444", "secret": SECRET, "tenant": TENANT}
NAME = assignment_name(RG_SCOPE, PRINCIPAL, ROLE_READER)


class Clients:
    def __init__(self) -> None:
        self.authorization = FakeAuthorization()
        self.identities = FakeIdentities([IDENTITY])
        self.groups = FakeResourceGroups()


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch) -> Clients:
    clients = Clients()

    def authorization_client(credential, subscription_id, **kwargs):
        assert subscription_id == SUB and kwargs["base_url"] == "https://management.azure.com/"
        return clients.authorization

    def msi_client(credential, subscription_id, **kwargs):
        return type("Msi", (), {"user_assigned_identities": clients.identities})()

    monkeypatch.setattr(azure_client, "AuthorizationManagementClient", authorization_client)

    def resource_client(credential, subscription_id, **kwargs):
        return type("Resources", (), {"resource_groups": clients.groups})()

    monkeypatch.setattr(azure_client, "ManagedServiceIdentityClient", msi_client)
    monkeypatch.setattr(azure_client, "ResourceManagementClient", resource_client)
    monkeypatch.setattr(azure_gateway.time, "sleep", lambda seconds: None)
    return clients


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Warnings the module gives. Under pytest ansible-core 2.19 believes it is the controller and prints them
    instead of returning them, so record them at AzureModule.warn."""
    recorded: list[str] = []
    monkeypatch.setattr(azure_client.AzureModule, "warn", lambda self, message: recorded.append(message))
    return recorded


def run(
    capsys: pytest.CaptureFixture[str], args: dict[str, t.Any], check: bool = False, diff: bool = True
) -> dict[str, t.Any]:
    payload = {**AUTH, "scope": RG_SCOPE, "role": "Reader", **args}
    if check:
        payload["_ansible_check_mode"] = True
    payload["_ansible_diff"] = diff
    with module_args(payload), pytest.raises(SystemExit):
        role_assignment.main()
    return json.loads(capsys.readouterr().out)


def kinds(clients: Clients) -> list[str]:
    return [call[0] for call in clients.authorization.calls]


def test_check_mode_reads_once_and_predicts(sdk, capsys):
    result = run(capsys, {"principal_id": PRINCIPAL}, check=True)
    assert result["changed"] is True and kinds(sdk) == ["list"]
    assert result["role_assignment"]["name"] == NAME and result["principal_id"] == PRINCIPAL
    assert result["diff"] == {"before": {}, "after": result["role_assignment"]}
    assert sdk.authorization.assignments == {}


def test_create_then_no_op_with_one_request(sdk, capsys):
    created = run(capsys, {"principal_id": PRINCIPAL})
    assert created["changed"] is True and kinds(sdk) == ["list", "put"]
    assert created["role_assignment"] == {
        "id": f"{RG_SCOPE}/providers/Microsoft.Authorization/roleAssignments/{NAME}",
        "name": NAME,
        "scope": RG_SCOPE,
        "role_definition_id": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{ROLE_READER}",
        "role_name": "Reader",
        "principal_id": PRINCIPAL,
        "principal_type": "ServicePrincipal",
    }
    sdk.authorization.calls.clear()
    again = run(capsys, {"principal_id": PRINCIPAL, "scope": RG_SCOPE.lower() + "/"})
    assert again["changed"] is False and kinds(sdk) == ["list"]
    assert again["diff"]["before"] == again["diff"]["after"] == created["role_assignment"]


def test_identity_by_name_adds_one_get(sdk, capsys):
    result = run(capsys, {"identity_name": "id1", "identity_resource_group": "rg1"})
    assert result["changed"] is True and result["principal_id"] == PRINCIPAL
    assert sdk.identities.calls == ["get rg1/id1"] and kinds(sdk) == ["list", "put"]


def test_absent_check_mode_then_delete_then_no_op(sdk, capsys):
    run(capsys, {"principal_id": PRINCIPAL})
    check = run(capsys, {"principal_id": PRINCIPAL, "state": "absent"}, check=True)
    assert check["changed"] is True and NAME in sdk.authorization.assignments
    assert check["diff"]["after"] == {} and check["diff"]["before"]["name"] == NAME
    deleted = run(capsys, {"principal_id": PRINCIPAL, "state": "absent"})
    assert deleted["changed"] is True and deleted["role_assignment"] == {} and sdk.authorization.assignments == {}
    sdk.authorization.calls.clear()
    assert run(capsys, {"principal_id": PRINCIPAL, "state": "absent"})["changed"] is False
    assert kinds(sdk) == ["list"]


@pytest.mark.parametrize(
    ("args", "problems"),
    [
        ({"scope": "subscriptions/x", "principal_id": PRINCIPAL}, ["scope: must be an ARM resource ID"]),
        ({"scope": f"/subscriptions/{SUB}/resourceGroups/rg?x", "principal_id": PRINCIPAL}, ["scope: must be an"]),
        ({"scope": f"/subscriptions/{SUB}/resourceGroups/rg.", "principal_id": PRINCIPAL}, ["scope: 'rg.' is not"]),
        ({"scope": f"{RG_SCOPE}/providers/Microsoft.KeyVault", "principal_id": PRINCIPAL}, ["/providers/<namespace>"]),
        ({"scope": "/subscriptions/sub1", "principal_id": PRINCIPAL}, ["scope: the subscription in the scope must"]),
        ({"principal_id": "not-a-guid"}, ["principal_id: must be a GUID"]),
        ({"identity_name": "x", "identity_resource_group": "rg1"}, ["identity_name: must be 3-128 letters"]),
        ({"identity_name": "id1", "identity_resource_group": "rg/1"}, ["identity_resource_group: 'rg/1' is not"]),
        (
            {"role": "/providers/Microsoft.Authorization/roleDefinitions/x", "principal_id": "p"},
            ["role: a role definition ID must end in", "principal_id: must be a GUID"],
        ),
    ],
)
def test_bad_input_fails_before_any_request_naming_field_and_rule(sdk, capsys, args, problems):
    result = run(capsys, args)
    assert result["failed"] is True and result["error_code"] == "InvalidParameter"
    assert result["msg"].startswith("Invalid input: ")
    assert all(problem in result["msg"] for problem in problems), result["msg"]
    assert sdk.authorization.calls == [] and sdk.identities.calls == []


@pytest.mark.parametrize("check", [False, True])
def test_an_unknown_role_definition_is_found_by_reading_before_any_write(sdk, capsys, check):
    result = run(capsys, {"principal_id": PRINCIPAL, "role": UNKNOWN_GUID}, check=check)
    assert result["failed"] is True and result["error_code"] == "RoleDefinitionDoesNotExist"
    assert result["msg"].startswith(f"role: role definition {UNKNOWN_GUID} does not exist")
    assert kinds(sdk) == ["definition"]


def test_a_custom_role_guid_is_read_once_and_named(sdk, capsys):
    result = run(capsys, {"principal_id": PRINCIPAL, "role": CUSTOM_GUID})
    assert result["changed"] is True and result["role_assignment"]["role_name"] == "Orders Reader"
    assert kinds(sdk) == ["definition", "list", "put"]


@pytest.mark.parametrize("check", [False, True])
def test_a_scope_in_a_missing_resource_group_fails_naming_scope(sdk, capsys, check):
    scope = f"/subscriptions/{SUB}/resourceGroups/rg-missing"
    result = run(capsys, {"principal_id": PRINCIPAL, "scope": scope}, check=check)
    assert result["failed"] is True and result["msg"] == "scope: resource group 'rg-missing' does not exist"
    assert kinds(sdk) == ["list"]


def test_a_missing_resource_group_of_the_identity_fails_naming_it(sdk, capsys):
    result = run(capsys, {"identity_name": "id1", "identity_resource_group": "rg-gone"})
    assert result["failed"] is True and result["error_code"] == "ResourceGroupNotFound"
    assert result["msg"].startswith("identity_resource_group: resource group 'rg-gone' does not exist")
    assert sdk.groups.calls == ["rg-gone"] and sdk.authorization.calls == []


def test_principal_id_and_identity_are_mutually_exclusive(sdk, capsys):
    result = run(capsys, {"principal_id": PRINCIPAL, "identity_name": "id1", "identity_resource_group": "rg1"})
    assert result["failed"] is True and "mutually exclusive" in result["msg"]
    result = run(capsys, {})
    assert result["failed"] is True and "one of the following is required" in result["msg"]


def test_missing_identity_fails_but_check_mode_and_absent_do_not(sdk, capsys, warnings):
    args = {"identity_name": "nope", "identity_resource_group": "rg1"}
    failed = run(capsys, args)
    assert failed["failed"] is True and failed["error_code"] == "IdentityNotFound"
    assert failed["msg"].startswith("identity_name: managed identity 'nope' in resource group 'rg1' does not exist")
    assert sdk.authorization.calls == []
    predicted = run(capsys, args, check=True)
    assert predicted["changed"] is True and predicted["principal_id"] is None
    assert any("managed identity 'nope' in resource group 'rg1' does not exist" in w for w in warnings)
    absent = run(capsys, {**args, "state": "absent"})
    assert absent["changed"] is False and sdk.authorization.calls == []


def test_azure_errors_name_the_action_target_and_code_and_hide_the_secret(sdk, capsys):
    sdk.authorization.create_errors = [
        arm_error(403, "AuthorizationFailed", f"The client does not have authorization {SECRET}")
    ]
    result = run(capsys, {"principal_id": PRINCIPAL})
    assert result["failed"] is True and result["error_code"] == "AuthorizationFailed" and result["status"] == 403
    assert result["msg"].startswith(
        f"Failed to create role assignment of role 'Reader' ({ROLE_READER}) to principal '{PRINCIPAL}' at scope "
        f"'{RG_SCOPE}': AuthorizationFailed: "
    )
    assert SECRET not in json.dumps(result)


def test_principal_not_found_is_retried_until_it_works(sdk, capsys):
    sdk.authorization.create_errors = [arm_error(400, "PrincipalNotFound", "Principal x does not exist.")] * 2
    result = run(capsys, {"principal_id": PRINCIPAL})
    assert result["changed"] is True and kinds(sdk) == ["list", "put", "put", "put"]


def test_concurrent_creation_under_another_name_is_present_unchanged(sdk, capsys, warnings):
    def concurrent_run() -> None:
        sdk.authorization.before_create = None
        sdk.authorization.add(RG_SCOPE, PRINCIPAL, ROLE_READER, "by-someone-else")

    sdk.authorization.before_create = concurrent_run
    result = run(capsys, {"principal_id": PRINCIPAL})
    assert result["changed"] is False and result["role_assignment"]["name"] == "by-someone-else"
    assert len(warnings) == 1 and "RoleAssignmentExists" in warnings[0]
