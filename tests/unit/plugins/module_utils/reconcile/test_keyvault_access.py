"""reconcile/keyvault_access.py: vault normalisation, the access policy plan for every case (pure), the choice of
permission model and the calls it makes against fake SDK clients (SDK models in, azure-core errors out)."""

from __future__ import annotations

import json
import typing as t

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.authorization.v2022_04_01.models import RoleAssignment
from azure.mgmt.keyvault.models import Vault

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.azure import normalize_vault
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import CREATE, DELETE, NONE, UPDATE
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.keyvault_access import (
    MODEL_ACCESS_POLICY,
    MODEL_RBAC,
    DesiredKeyVaultAccess,
    identity_policy,
    parse_vault_id,
    permission_change,
    plan_access_policy,
    reconcile_keyvault_access,
    validate_secret_permissions,
    validate_vault_id,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.role_assignment import assignment_name
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ROLE_KEY_VAULT_SECRETS_USER,
    sort_permissions,
)
from tests.unit.conftest import Pager
from tests.unit.plugins.module_utils.reconcile.test_role_assignment import FakeResourceGroups, _Definitions

SUB = "11111111-2222-3333-4444-555555555555"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
PRINCIPAL = "6e2b2a5c-1f0e-4a57-9c1c-1b5d3a4e8f90"
OTHER = "0a0b0c0d-1111-2222-3333-444455556666"
APP = "3f2a9c1b-0d4e-4c6b-9a8f-1e2d3c4b5a69"


def vault_id(name: str = "kv1") -> str:
    return f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/{name}"


def policy(object_id: str, secrets: list[str], application_id: str | None = None, **others: list[str]) -> dict:
    entry = {"tenantId": TENANT, "objectId": object_id, "permissions": {"secrets": secrets, **others}}
    if application_id:
        entry["applicationId"] = application_id
    return entry


def arm_vault(name: str = "kv1", rbac: bool = False, policies: list[dict] | None = None) -> dict:
    return {
        "id": vault_id(name),
        "name": name,
        "type": "Microsoft.KeyVault/vaults",
        "location": "eastus",
        "properties": {
            "tenantId": TENANT,
            "sku": {"family": "A", "name": "standard"},
            "accessPolicies": policies or [],
            "enableRbacAuthorization": rbac,
            "vaultUri": f"https://{name}.vault.azure.net/",
        },
    }


def vault(rbac: bool = False, policies: list[dict] | None = None) -> dict:
    return normalize_vault(Vault(arm_vault(rbac=rbac, policies=policies)))


# --- rules ----------------------------------------------------------------------------------------------------------
def test_vault_ids_parse_and_validate():
    assert parse_vault_id(vault_id()) == (SUB, "rg1", "kv1")
    assert parse_vault_id(vault_id().replace("resourceGroups", "resourcegroups") + "/") == (SUB, "rg1", "kv1")
    assert parse_vault_id("/subscriptions/x/resourceGroups/rg1") is None
    assert validate_vault_id(vault_id()) == []
    assert validate_vault_id("kv1")[0].startswith("vault_id: must be a Key Vault resource ID")
    assert validate_vault_id(vault_id().replace(SUB, "sub"))[0].startswith("vault_id: the subscription")


@pytest.mark.parametrize(
    ("value", "problem"),
    [(["get"], None), (["Get", "list"], None), ([], "must list at least one"), (["read"], "unknown permissions")],
)
def test_secret_permissions_validation(value, problem):
    errors = validate_secret_permissions(value)
    assert problem in errors[0] if problem else errors == [], errors


def test_permissions_are_lowercased_deduplicated_and_in_portal_order():
    assert sort_permissions(["List", "get", "GET", "purge", "zzz"]) == ["get", "list", "purge", "zzz"]


def test_vault_normalises_from_the_sdk_model_and_from_json():
    expected = {
        "id": vault_id(),
        "name": "kv1",
        "resource_group": "rg1",
        "location": "eastus",
        "vault_uri": "https://kv1.vault.azure.net/",
        "tenant_id": TENANT,
        "enable_rbac_authorization": False,
        "access_policies": [
            {
                "tenant_id": TENANT,
                "object_id": OTHER,
                "application_id": None,
                "permissions": {"keys": ["get"], "secrets": ["get", "list"], "certificates": [], "storage": []},
            }
        ],
    }
    raw = arm_vault(policies=[policy(OTHER, ["List", "get"], keys=["get"])])
    assert normalize_vault(Vault(raw)) == expected
    assert normalize_vault(raw) == expected


def test_the_identity_entry_is_found_by_object_id_alone_in_the_vaults_tenant():
    entries = [
        policy(PRINCIPAL, ["set"], application_id=APP),  # a compound identity: another principal
        dict(policy(PRINCIPAL, ["delete"]), tenantId="00000000-0000-0000-0000-000000000000"),
        policy(PRINCIPAL.upper(), ["get"]),
    ]
    found = identity_policy(vault(policies=entries), PRINCIPAL)
    assert found is not None and found["permissions"]["secrets"] == ["get"]
    assert identity_policy(vault(policies=entries), None) is None


# --- access policy plans --------------------------------------------------------------------------------------------
def view(secrets: list[str], object_id: str = PRINCIPAL) -> dict:
    return {"tenant_id": TENANT, "object_id": object_id, "secret_permissions": secrets}


def test_no_entry_is_created_with_the_permissions():
    decided = plan_access_policy(vault(policies=[policy(OTHER, ["get"])]), PRINCIPAL, ["get"], "present")
    assert decided.action == CREATE and decided.before is None and decided.after == view(["get"])
    assert permission_change(decided) == ("add", ["get"])


def test_entry_with_the_permissions_is_left_alone_even_with_more():
    decided = plan_access_policy(vault(policies=[policy(PRINCIPAL, ["list", "Get"])]), PRINCIPAL, ["get"], "present")
    assert decided.action == NONE and decided.before == decided.after == view(["get", "list"])


def test_missing_permissions_are_added_and_existing_ones_kept():
    decided = plan_access_policy(vault(policies=[policy(PRINCIPAL, ["set"])]), PRINCIPAL, ["list", "get"], "present")
    assert decided.action == UPDATE
    assert decided.before == view(["set"]) and decided.after == view(["get", "list", "set"])
    assert permission_change(decided) == ("add", ["get", "list"])


def test_absent_takes_away_only_the_listed_permissions():
    decided = plan_access_policy(vault(policies=[policy(PRINCIPAL, ["get", "set"])]), PRINCIPAL, ["get"], "absent")
    assert decided.action == UPDATE and decided.after == view(["set"])
    assert permission_change(decided) == ("remove", ["get"])


def test_absent_removes_an_entry_left_empty():
    decided = plan_access_policy(vault(policies=[policy(PRINCIPAL, ["get"])]), PRINCIPAL, ["get", "list"], "absent")
    assert decided.action == DELETE and decided.after is None
    assert decided.diff() == {"before": view(["get"]), "after": {}}
    assert permission_change(decided) == ("remove", ["get"])


def test_absent_keeps_an_entry_with_other_kinds_of_permission():
    entries = [policy(PRINCIPAL, ["get"], keys=["get"])]
    decided = plan_access_policy(vault(policies=entries), PRINCIPAL, ["get"], "absent")
    assert decided.action == UPDATE and decided.after == view([])


@pytest.mark.parametrize("entries", [[], [policy(PRINCIPAL, ["set"])], [policy(OTHER, ["get"])]])
def test_absent_without_those_permissions_is_nothing_to_do(entries):
    assert plan_access_policy(vault(policies=entries), PRINCIPAL, ["get"], "absent").action == NONE


def test_unknown_identity_in_check_mode_is_a_create_with_a_warning():
    decided = plan_access_policy(vault(), None, ["get"], "present")
    assert decided.action == CREATE and decided.after == view(["get"], object_id=None)
    assert "does not exist yet" in decided.warnings[0]
    assert plan_access_policy(vault(), None, ["get"], "absent").action == NONE


# --- the model choice and its calls, against fake clients --------------------------------------------------------
class Response:
    def __init__(self, status: int, code: str, message: str):
        self.status_code, self.reason, self.headers, self.request = status, "Reason", {}, None
        self.content_type = "application/json; charset=utf-8"
        self._text = json.dumps({"error": {"code": code, "message": message}})

    def text(self, encoding: str | None = None) -> str:
        return self._text

    def body(self) -> bytes:
        return self._text.encode()


class FakeVaults:
    """vaults.get and vaults.update_access_policy with Key Vault's per-identity merge."""

    def __init__(self) -> None:
        self.store: dict[str, dict[str, t.Any]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.bodies: list[dict[str, t.Any]] = []

    def get(self, resource_group: str, name: str) -> Vault:
        self.calls.append(("get", name))
        if name not in self.store:
            message = f"The Resource 'Microsoft.KeyVault/vaults/{name}' under resource group '{resource_group}' was not found."
            raise ResourceNotFoundError(response=Response(404, "ResourceNotFound", message))
        return Vault(self.store[name])

    def update_access_policy(self, resource_group: str, name: str, kind: str, parameters: t.Any) -> t.Any:
        body = json.loads(json.dumps(parameters.as_dict()))  # what goes on the wire
        self.calls.append(("access-policy", name, kind))
        self.bodies.append(body)
        policies = self.store[name]["properties"]["accessPolicies"]
        for change in body["properties"]["accessPolicies"]:
            entry = next((p for p in policies if p["objectId"] == change["objectId"]), None)
            wanted = change["permissions"]["secrets"]
            if kind == "add":
                if entry is None:
                    policies.append(change)
                else:
                    entry["permissions"]["secrets"] += [p for p in wanted if p not in entry["permissions"]["secrets"]]
            elif entry is not None:
                entry["permissions"]["secrets"] = [p for p in entry["permissions"]["secrets"] if p not in wanted]
                if not any(entry["permissions"].values()):
                    policies.remove(entry)
        return parameters


class FakeAuthorization:
    def __init__(self) -> None:
        self.assignments: dict[str, dict[str, t.Any]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.role_assignments = self
        self.definitions: list[dict[str, t.Any]] = []  # no custom roles: a GUID that is not built in is unknown
        self.role_definitions = _Definitions(self)

    def list_for_scope(self, scope: str, filter: str | None = None):
        self.calls.append(("list", scope))
        return Pager(RoleAssignment.deserialize(a) for a in self.assignments.values())

    def create(self, scope: str, name: str, parameters: t.Any) -> RoleAssignment:
        self.calls.append(("put", scope, name))
        self.assignments[name] = {
            "id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}",
            "name": name,
            "properties": {
                "scope": scope,
                "roleDefinitionId": parameters.role_definition_id,
                "principalId": parameters.principal_id,
                "principalType": parameters.principal_type,
            },
        }
        return RoleAssignment.deserialize(self.assignments[name])

    def delete(self, scope: str, name: str) -> None:
        self.calls.append(("delete", scope, name))
        self.assignments.pop(name, None)


class FakeAzure:
    subscription_id = SUB

    def __init__(self) -> None:
        self.keyvault_mgmt = type("KeyVault", (), {"vaults": FakeVaults()})()
        self.authorization = FakeAuthorization()
        self.groups = FakeResourceGroups()
        self.resources = type("Resources", (), {"resource_groups": self.groups})()

    @property
    def vaults(self) -> FakeVaults:
        return self.keyvault_mgmt.vaults


@pytest.fixture
def azure() -> FakeAzure:
    return FakeAzure()


def wanted(state: str = "present", **kwargs: t.Any) -> DesiredKeyVaultAccess:
    return DesiredKeyVaultAccess(principal_id=kwargs.pop("principal_id", PRINCIPAL), state=state, **kwargs)


def test_access_policy_vault_gets_a_merged_entry_then_no_op_is_one_get(azure):
    azure.vaults.store["kv1"] = arm_vault(policies=[policy(OTHER, ["get", "list"])])
    outcome = reconcile_keyvault_access(azure, "rg1", "kv1", wanted(), check_mode=False)
    assert outcome.model == MODEL_ACCESS_POLICY and outcome.plan.action == CREATE
    assert outcome.access_policy == view(["get"]) and outcome.role_assignment is None
    assert azure.vaults.calls == [("get", "kv1"), ("access-policy", "kv1", "add")]
    # The body is the REST shape (camelCase), built from the SDK's models, with only our identity in it.
    assert azure.vaults.bodies == [
        {
            "properties": {
                "accessPolicies": [{"tenantId": TENANT, "objectId": PRINCIPAL, "permissions": {"secrets": ["get"]}}]
            }
        }
    ]
    assert azure.vaults.store["kv1"]["properties"]["accessPolicies"][0] == policy(OTHER, ["get", "list"])
    azure.vaults.calls.clear()
    again = reconcile_keyvault_access(azure, "rg1", "kv1", wanted(), check_mode=False)
    assert again.plan.action == NONE and azure.vaults.calls == [("get", "kv1")]
    assert azure.authorization.calls == []


def test_access_policy_check_mode_writes_nothing(azure):
    azure.vaults.store["kv1"] = arm_vault()
    outcome = reconcile_keyvault_access(azure, "rg1", "kv1", wanted(secret_permissions=("get", "list")), True)
    assert outcome.plan.action == CREATE and outcome.access_policy == view(["get", "list"])
    assert azure.vaults.calls == [("get", "kv1")] and azure.vaults.store["kv1"]["properties"]["accessPolicies"] == []


def test_access_policy_absent_removes_only_the_listed_permissions(azure):
    azure.vaults.store["kv1"] = arm_vault(policies=[policy(PRINCIPAL, ["get", "set"]), policy(OTHER, ["get"])])
    outcome = reconcile_keyvault_access(azure, "rg1", "kv1", wanted("absent"), check_mode=False)
    assert outcome.plan.action == UPDATE and outcome.access_policy == view(["set"])
    assert azure.vaults.calls[-1] == ("access-policy", "kv1", "remove")
    assert azure.vaults.store["kv1"]["properties"]["accessPolicies"] == [
        policy(PRINCIPAL, ["set"]),
        policy(OTHER, ["get"]),
    ]


def test_rbac_vault_gets_key_vault_secrets_user_at_the_vault_scope(azure):
    azure.vaults.store["kv1"] = arm_vault(rbac=True)
    outcome = reconcile_keyvault_access(azure, "rg1", "kv1", wanted(), check_mode=False)
    name = assignment_name(vault_id(), PRINCIPAL, ROLE_KEY_VAULT_SECRETS_USER)
    assert outcome.model == MODEL_RBAC and outcome.plan.action == CREATE and outcome.access_policy is None
    assert outcome.role_assignment["name"] == name and outcome.role_assignment["scope"] == vault_id()
    assert outcome.role_assignment["role_name"] == "Key Vault Secrets User"
    assert azure.authorization.calls == [("list", vault_id()), ("put", vault_id(), name)]
    assert [c[0] for c in azure.vaults.calls] == ["get"]
    azure.authorization.calls.clear()
    again = reconcile_keyvault_access(azure, "rg1", "kv1", wanted(), check_mode=False)
    assert again.plan.action == NONE and azure.authorization.calls == [("list", vault_id())]
    removed = reconcile_keyvault_access(azure, "rg1", "kv1", wanted("absent"), check_mode=False)
    assert removed.plan.action == DELETE and azure.authorization.assignments == {}


def test_missing_vault_fails_present_and_is_nothing_to_do_absent(azure):
    with pytest.raises(WorkloadIdentityError) as caught:
        reconcile_keyvault_access(azure, "rg1", "kv-missing", wanted(), check_mode=True)
    assert caught.value.code == "ResourceNotFound"
    assert caught.value.message.startswith("vault_name: key vault 'kv-missing' does not exist in resource group 'rg1'")
    assert azure.vaults.calls == [("get", "kv-missing")] and azure.groups.calls == ["rg1"]
    gone = reconcile_keyvault_access(azure, "rg1", "kv-missing", wanted("absent"), check_mode=False)
    assert gone.model is None and gone.plan.action == NONE


@pytest.mark.parametrize(("options", "named"), [({}, "resource_group"), ({"group_option": "vault_id"}, "vault_id")])
def test_missing_resource_group_of_the_vault_names_the_option_that_gave_it(azure, options, named):
    with pytest.raises(WorkloadIdentityError) as caught:
        reconcile_keyvault_access(azure, "rg-gone", "kv1", wanted(), check_mode=False, **options)
    assert caught.value.code == "ResourceGroupNotFound"
    assert caught.value.message == f"{named}: resource group 'rg-gone' does not exist"


def test_unknown_role_on_an_rbac_vault_is_found_by_reading_before_any_write(azure):
    azure.vaults.store["kv1"] = arm_vault(rbac=True)
    unknown = "0e0e0e0e-1111-4222-8333-444444444444"
    with pytest.raises(WorkloadIdentityError) as caught:
        reconcile_keyvault_access(azure, "rg1", "kv1", wanted(role=unknown), check_mode=False)
    assert caught.value.code == "RoleDefinitionDoesNotExist" and caught.value.message.startswith("role: ")
    assert [c[0] for c in azure.authorization.calls] == ["definition"]


def test_other_read_errors_carry_their_code(azure):
    def forbidden(resource_group: str, name: str) -> Vault:
        raise HttpResponseError(response=Response(403, "AuthorizationFailed", "The client does not have authorization"))

    azure.vaults.get = forbidden
    with pytest.raises(WorkloadIdentityError) as caught:
        reconcile_keyvault_access(azure, "rg1", "kv1", wanted(), check_mode=False)
    assert caught.value.code == "AuthorizationFailed" and caught.value.status == 403
    assert caught.value.message.startswith(
        "Failed to read key vault 'kv1' in resource group 'rg1': AuthorizationFailed:"
    )
