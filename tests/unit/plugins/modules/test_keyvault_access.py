"""keyvault_access through main(): only the SDK clients are fakes (returning SDK models, raising azure-core errors)."""

from __future__ import annotations

import json
import typing as t

import pytest

from ansible_collections.aks.workload_identity.plugins.module_utils import azure_client
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.role_assignment import assignment_name
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ROLE_KEY_VAULT_SECRETS_USER,
)
from ansible_collections.aks.workload_identity.plugins.modules import keyvault_access
from tests.unit.conftest import module_args
from tests.unit.plugins.module_utils.reconcile.test_keyvault_access import (
    OTHER,
    PRINCIPAL,
    SUB,
    TENANT,
    FakeAuthorization,
    FakeVaults,
    arm_vault,
    policy,
    vault_id,
)
from tests.unit.plugins.module_utils.reconcile.test_role_assignment import (
    CLIENT,
    IDENTITY,
    FakeIdentities,
    FakeResourceGroups,
)

SECRET = "super-secret-value-42"
AUTH = {"subscription_id": SUB, "client_id": "0f0f0f0f-1111-4222-8333-444444444444", "secret": SECRET, "tenant": TENANT}
POLICY_VAULT = {"resource_group": "rg1", "vault_name": "kv-policy"}


class Clients:
    def __init__(self) -> None:
        self.vaults = FakeVaults()
        self.vaults.store["kv-policy"] = arm_vault("kv-policy", policies=[policy(OTHER, ["get", "list"])])
        self.vaults.store["kv-rbac"] = arm_vault("kv-rbac", rbac=True)
        self.authorization = FakeAuthorization()
        self.identities = FakeIdentities([IDENTITY])
        self.groups = FakeResourceGroups()

    def requests(self) -> list[str]:
        calls = [c[0] for c in self.vaults.calls] + [c[0] for c in self.authorization.calls]
        return calls + [c.split()[0] for c in self.identities.calls] + [f"group {g}" for g in self.groups.calls]


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch) -> Clients:
    clients = Clients()
    monkeypatch.setattr(
        azure_client, "KeyVaultManagementClient", lambda *a, **k: type("Kv", (), {"vaults": clients.vaults})()
    )
    monkeypatch.setattr(azure_client, "AuthorizationManagementClient", lambda *a, **k: clients.authorization)
    monkeypatch.setattr(
        azure_client,
        "ResourceManagementClient",
        lambda *a, **k: type("Resources", (), {"resource_groups": clients.groups})(),
    )
    monkeypatch.setattr(
        azure_client,
        "ManagedServiceIdentityClient",
        lambda *a, **k: type("Msi", (), {"user_assigned_identities": clients.identities})(),
    )
    return clients


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Warnings the module gives (ansible-core 2.19 prints them under pytest instead of returning them)."""
    recorded: list[str] = []
    monkeypatch.setattr(azure_client.AzureModule, "warn", lambda self, message: recorded.append(message))
    return recorded


def run(capsys: pytest.CaptureFixture[str], args: dict[str, t.Any], check: bool = False) -> dict[str, t.Any]:
    payload = {**AUTH, **args, "_ansible_diff": True}
    if check:
        payload["_ansible_check_mode"] = True
    with module_args(payload), pytest.raises(SystemExit):
        keyvault_access.main()
    return json.loads(capsys.readouterr().out)


def entries(clients: Clients, vault: str = "kv-policy") -> list[dict[str, t.Any]]:
    return clients.vaults.store[vault]["properties"]["accessPolicies"]


def test_access_policy_vault_check_apply_no_op_absent(sdk, capsys):
    args = {**POLICY_VAULT, "principal_id": PRINCIPAL}
    check = run(capsys, args, check=True)
    assert check["changed"] is True and sdk.requests() == ["get"] and len(entries(sdk)) == 1
    expected = {"tenant_id": TENANT, "object_id": PRINCIPAL, "secret_permissions": ["get"]}
    assert check["diff"] == {"before": {}, "after": expected}

    applied = run(capsys, args)
    assert applied["changed"] is True and applied["keyvault_access"] == {
        "model": "access_policy",
        "vault": {
            "id": vault_id("kv-policy"),
            "name": "kv-policy",
            "resource_group": "rg1",
            "vault_uri": "https://kv-policy.vault.azure.net/",
            "enable_rbac_authorization": False,
        },
        "principal_id": PRINCIPAL,
        "role_assignment": {},
        "access_policy": expected,
    }
    assert entries(sdk) == [policy(OTHER, ["get", "list"]), policy(PRINCIPAL, ["get"])]

    sdk.vaults.calls.clear()
    again = run(capsys, args)
    assert again["changed"] is False and sdk.requests() == ["get"]

    removed_check = run(capsys, {**args, "state": "absent"}, check=True)
    assert removed_check["changed"] is True and len(entries(sdk)) == 2
    assert removed_check["diff"] == {"before": expected, "after": {}}
    removed = run(capsys, {**args, "state": "absent"})
    assert removed["changed"] is True and removed["keyvault_access"]["access_policy"] == {}
    assert entries(sdk) == [policy(OTHER, ["get", "list"])]
    assert run(capsys, {**args, "state": "absent"})["changed"] is False


def test_rbac_vault_by_id_gets_the_role_at_the_vault(sdk, capsys):
    args = {"vault_id": vault_id("kv-rbac"), "principal_id": PRINCIPAL}
    result = run(capsys, args)
    name = assignment_name(vault_id("kv-rbac"), PRINCIPAL, ROLE_KEY_VAULT_SECRETS_USER)
    access = result["keyvault_access"]
    assert result["changed"] is True and access["model"] == "rbac" and access["access_policy"] == {}
    assert access["role_assignment"]["name"] == name and access["role_assignment"]["scope"] == vault_id("kv-rbac")
    assert access["role_assignment"]["role_name"] == "Key Vault Secrets User"
    assert sdk.requests() == ["get", "list", "put"]
    sdk.vaults.calls.clear()
    sdk.authorization.calls.clear()
    assert run(capsys, args)["changed"] is False and sdk.requests() == ["get", "list"]


def test_identity_by_name_defaults_to_the_vaults_resource_group(sdk, capsys):
    result = run(capsys, {**POLICY_VAULT, "identity_name": "id1"})
    assert result["keyvault_access"]["principal_id"] == PRINCIPAL
    assert sdk.identities.calls == ["get rg1/id1"]


def test_bare_client_id_is_one_list_of_identities(sdk, capsys):
    result = run(capsys, {**POLICY_VAULT, "identity_client_id": CLIENT})
    assert result["changed"] is True and result["keyvault_access"]["principal_id"] == PRINCIPAL
    assert sdk.identities.calls == ["list"]


def test_options_for_the_other_model_are_ignored_with_a_warning(sdk, capsys, warnings):
    rbac = run(capsys, {"vault_id": vault_id("kv-rbac"), "principal_id": PRINCIPAL, "secret_permissions": ["list"]})
    assert rbac["changed"] is True and "secret_permissions is ignored" in warnings[0]
    policy_vault = run(capsys, {**POLICY_VAULT, "principal_id": PRINCIPAL, "role": "Key Vault Secrets Officer"})
    assert policy_vault["changed"] is True and "role is ignored" in warnings[1]
    assert sdk.authorization.calls[-1][0] == "put"  # the RBAC run only


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"vault_id": "kv1", "principal_id": PRINCIPAL}, "vault_id: must be a Key Vault resource ID"),
        ({**POLICY_VAULT, "principal_id": "p1"}, "principal_id: must be a GUID"),
        ({**POLICY_VAULT, "identity_client_id": "c1"}, "identity_client_id: must be a GUID"),
        ({**POLICY_VAULT, "principal_id": PRINCIPAL, "secret_permissions": []}, "secret_permissions: must list"),
        (
            {**POLICY_VAULT, "principal_id": PRINCIPAL, "role": "/providers/Microsoft.Authorization/roleDefinitions/x"},
            "role: a role definition ID must end in",
        ),
        (
            {"vault_id": vault_id().replace(SUB, "99999999-2222-3333-4444-555555555555"), "principal_id": PRINCIPAL},
            "vault_id: the vault is in subscription 99999999-2222-3333-4444-555555555555",
        ),
        # Key Vault's naming rule: 3-24 letters, digits and '-', a letter first, no '--', no '-' last.
        ({"resource_group": "rg1", "vault_name": "kv", "principal_id": PRINCIPAL}, "vault_name: 'kv' is not a valid"),
        ({"resource_group": "rg1", "vault_name": "1kv", "principal_id": PRINCIPAL}, "vault_name: '1kv' is not"),
        ({"resource_group": "rg1", "vault_name": "kv--1", "principal_id": PRINCIPAL}, "vault_name: 'kv--1' is not"),
        ({"resource_group": "rg1", "vault_name": "kv-", "principal_id": PRINCIPAL}, "vault_name: 'kv-' is not"),
        ({"resource_group": "rg1", "vault_name": "k" * 25, "principal_id": PRINCIPAL}, "vault_name: 'kkkk"),
        ({"resource_group": "rg1", "vault_name": "kv_1", "principal_id": PRINCIPAL}, "vault_name: 'kv_1' is not"),
        ({"vault_id": vault_id("kv_1"), "principal_id": PRINCIPAL}, "vault_id: 'kv_1' is not a valid key vault"),
        ({"vault_id": vault_id().replace("rg1", "rg."), "principal_id": PRINCIPAL}, "vault_id: 'rg.' is not a valid"),
        ({"resource_group": "rg.", "vault_name": "kv1", "principal_id": PRINCIPAL}, "resource_group: 'rg.' is not"),
        ({**POLICY_VAULT, "identity_name": "x"}, "identity_name: must be 3-128 letters"),
        ({**POLICY_VAULT, "identity_name": "id1", "identity_resource_group": "a/b"}, "identity_resource_group: 'a/b'"),
    ],
)
def test_bad_input_fails_before_any_request(sdk, capsys, args, problem):
    result = run(capsys, args)
    assert result["failed"] is True and result["error_code"] == "InvalidParameter"
    assert result["msg"].startswith("Invalid input: ") and problem in result["msg"], result["msg"]
    assert sdk.requests() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"vault_name": "kv1", "principal_id": PRINCIPAL}, "missing parameter(s) required by 'vault_name'"),
        ({**POLICY_VAULT, "vault_id": vault_id(), "principal_id": PRINCIPAL}, "mutually exclusive"),
        ({**POLICY_VAULT, "principal_id": PRINCIPAL, "identity_name": "id1"}, "mutually exclusive"),
        ({**POLICY_VAULT}, "one of the following is required"),
        ({**POLICY_VAULT, "principal_id": PRINCIPAL, "secret_permissions": ["read"]}, "secret_permissions"),
    ],
)
def test_option_constraints_are_declared(sdk, capsys, args, message):
    result = run(capsys, args)
    assert result["failed"] is True and message in result["msg"], result["msg"]


@pytest.mark.parametrize("check", [False, True])
def test_missing_vault_is_reported_with_its_code(sdk, capsys, check):
    result = run(capsys, {"resource_group": "rg1", "vault_name": "kv-missing", "principal_id": PRINCIPAL}, check)
    assert result["failed"] is True and result["error_code"] == "ResourceNotFound"
    assert result["msg"].startswith("vault_name: key vault 'kv-missing' does not exist in resource group 'rg1'")
    assert sdk.requests() == ["get", "group rg1"]
    gone = run(
        capsys, {"resource_group": "rg1", "vault_name": "kv-missing", "principal_id": PRINCIPAL, "state": "absent"}
    )
    assert (
        gone["changed"] is False and gone["keyvault_access"]["model"] is None and gone["keyvault_access"]["vault"] == {}
    )


def test_missing_identity_in_check_mode_predicts_a_grant(sdk, capsys, warnings):
    result = run(capsys, {**POLICY_VAULT, "identity_name": "id-later"}, check=True)
    assert result["changed"] is True and result["keyvault_access"]["principal_id"] is None
    assert any(w.startswith("identity_name: managed identity 'id-later' in resource group 'rg1'") for w in warnings)
    failed = run(capsys, {**POLICY_VAULT, "identity_name": "id-later"})
    assert failed["failed"] is True and failed["error_code"] == "IdentityNotFound"
    assert failed["msg"].startswith("identity_name: managed identity 'id-later' in resource group 'rg1' does not exist")
    assert [c[0] for c in sdk.vaults.calls] == ["get"]  # the check-mode run's read; the real run failed before


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({"resource_group": "rg-gone", "vault_name": "kv1"}, "resource_group"),
        ({"vault_id": vault_id().replace("rg1", "rg-gone")}, "vault_id"),
    ],
)
def test_missing_resource_group_of_the_vault_names_the_option(sdk, capsys, args, named):
    result = run(capsys, {**args, "principal_id": PRINCIPAL})
    assert result["failed"] is True and result["error_code"] == "ResourceGroupNotFound"
    assert result["msg"] == f"{named}: resource group 'rg-gone' does not exist"
    assert sdk.authorization.calls == [] and sdk.vaults.bodies == []


def test_missing_resource_group_of_the_identity_names_the_option(sdk, capsys):
    result = run(capsys, {**POLICY_VAULT, "identity_name": "id1", "identity_resource_group": "rg-gone"})
    assert result["failed"] is True and result["error_code"] == "ResourceGroupNotFound"
    assert result["msg"].startswith("identity_resource_group: resource group 'rg-gone' does not exist")
    assert sdk.vaults.calls == []


@pytest.mark.parametrize("check", [False, True])
def test_unknown_role_on_an_rbac_vault_fails_before_any_write(sdk, capsys, check):
    unknown = "0e0e0e0e-1111-4222-8333-444444444444"
    result = run(capsys, {"vault_id": vault_id("kv-rbac"), "principal_id": PRINCIPAL, "role": unknown}, check)
    assert result["failed"] is True and result["error_code"] == "RoleDefinitionDoesNotExist"
    assert result["msg"].startswith(f"role: role definition {unknown} does not exist")
    assert sdk.requests() == ["get", "definition"]


def test_secret_is_never_in_the_output(sdk, capsys):
    result = run(capsys, {**POLICY_VAULT, "principal_id": PRINCIPAL})
    assert SECRET not in json.dumps(result)
