"""reconcile/role_assignment.py: the rules and the plan for every case from normalised actual + desired, then the
thin Azure calls against a fake SDK client (SDK models in, azure-core errors out)."""

from __future__ import annotations

import json
import typing as t

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.mgmt.authorization.v2022_04_01.models import RoleAssignment, RoleDefinition

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways import azure as azure_gateway
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.azure import normalize_role_assignment
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import CREATE, DELETE, NONE
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import role_assignment as reconciler
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.role_assignment import (
    DesiredRoleAssignment,
    Role,
    assignment_name,
    matching_assignments,
    normalize_scope,
    plan_role_assignment,
    reconcile_role_assignment,
    require_principal,
    resolve_principal,
    resolve_role,
    role_definition_id_for_scope,
    same_scope,
    validate_principal_type,
    validate_role,
    validate_scope,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ROLE_KEY_VAULT_SECRETS_USER,
    ROLE_READER,
)
from tests.unit.conftest import Pager

SUB = "11111111-2222-3333-4444-555555555555"
RG_SCOPE = f"/subscriptions/{SUB}/resourceGroups/rg1"
VAULT_SCOPE = f"{RG_SCOPE}/providers/Microsoft.KeyVault/vaults/kv1"
PRINCIPAL = "6e2b2a5c-1f0e-4a57-9c1c-1b5d3a4e8f90"
OTHER_PRINCIPAL = "0a0b0c0d-1111-2222-3333-444455556666"
READER = Role(ROLE_READER, "Reader")
CUSTOM_GUID = "9f0a5e2c-1b1b-4c4c-8d8d-2e2e2e2e2e2e"
UNKNOWN_GUID = "0e0e0e0e-1111-4222-8333-444444444444"


def assignment(scope: str = RG_SCOPE, principal: str = PRINCIPAL, guid: str = ROLE_READER, name: str = "a1") -> dict:
    """A normalised assignment as list_principal_assignments returns it."""
    return {
        "id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}",
        "name": name,
        "scope": scope,
        "role_definition_id": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
        "role_name": None,
        "principal_id": principal,
        "principal_type": "ServicePrincipal",
    }


def desired(state: str = "present", principal: str | None = PRINCIPAL, scope: str = RG_SCOPE, role=READER):
    return DesiredRoleAssignment(scope, role, principal, "ServicePrincipal", state)


# --- rules ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scope", "normalized"),
    [("/subscriptions/x/", "/subscriptions/x"), ("subscriptions/x", "/subscriptions/x"), ("/", "/"), ("", "/")],
)
def test_scopes_are_normalised_without_trailing_slash(scope, normalized):
    assert normalize_scope(scope) == normalized


def test_scopes_compare_without_case_or_trailing_slash():
    assert same_scope(RG_SCOPE.replace("resourceGroups", "resourcegroups").upper() + "/", RG_SCOPE)
    assert not same_scope(VAULT_SCOPE, RG_SCOPE)


@pytest.mark.parametrize(
    ("scope", "problem"),
    [
        (RG_SCOPE, None),
        (VAULT_SCOPE + "/", None),
        ("/", None),
        ("/providers/Microsoft.Management/managementGroups/mg1", None),
        ("", "scope: is required"),
        ("subscriptions/x", "scope: must be an ARM resource ID starting with '/'"),
        (" /subscriptions/" + SUB, "scope: must be an ARM resource ID"),
        (f"/subscriptions/{SUB}//resourceGroups/rg1", "scope: must be an ARM resource ID"),
        ("/subscriptions/not-a-guid/resourceGroups/rg1", "scope: the subscription in the scope must be a GUID"),
    ],
)
def test_scope_validation_names_the_field_and_rule(scope, problem):
    errors = validate_scope(scope)
    assert errors[0].startswith(problem) if problem else errors == [], errors


@pytest.mark.parametrize(
    ("role", "problem"),
    [
        ("Reader", None),
        ("Storage Blob Data Reader", None),
        (ROLE_READER, None),
        (f"/providers/Microsoft.Authorization/roleDefinitions/{ROLE_READER}", None),
        (f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{ROLE_READER}", None),
        ("", "role: is required"),
        ("/providers/Microsoft.Authorization/roleDefinitions/reader", "role: a role definition ID must end in"),
    ],
)
def test_role_validation(role, problem):
    errors = validate_role(role)
    assert errors[0].startswith(problem) if problem else errors == [], errors


def test_principal_type_validation():
    assert validate_principal_type("ServicePrincipal") == []
    assert validate_principal_type("MSI")[0].startswith("principal_type: must be one of")


@pytest.mark.parametrize(
    ("scope", "expected_prefix"),
    [
        (RG_SCOPE, f"/subscriptions/{SUB}"),
        (VAULT_SCOPE, f"/subscriptions/{SUB}"),
        ("/providers/Microsoft.Management/managementGroups/mg1", ""),
    ],
)
def test_role_definition_id_is_sent_under_the_scopes_subscription(scope, expected_prefix):
    assert role_definition_id_for_scope(scope, ROLE_READER.upper()) == (
        f"{expected_prefix}/providers/Microsoft.Authorization/roleDefinitions/{ROLE_READER}"
    )


def test_assignment_names_are_deterministic_guids_of_the_triple():
    name = assignment_name(RG_SCOPE, PRINCIPAL, ROLE_READER)
    assert name == assignment_name(RG_SCOPE.upper() + "/", PRINCIPAL.upper(), ROLE_READER.upper())
    assert len(name) == 36 and name[14] == "5"  # a version 5 UUID
    assert len({name, assignment_name(VAULT_SCOPE, PRINCIPAL, ROLE_READER)}) == 2
    assert len({name, assignment_name(RG_SCOPE, OTHER_PRINCIPAL, ROLE_READER)}) == 2
    assert len({name, assignment_name(RG_SCOPE, PRINCIPAL, ROLE_KEY_VAULT_SECRETS_USER)}) == 2


def test_desired_assignment_reads_as_the_created_one():
    wanted = desired()
    name = assignment_name(RG_SCOPE, PRINCIPAL, ROLE_READER)
    assert wanted.as_dict() == {
        "id": f"{RG_SCOPE}/providers/Microsoft.Authorization/roleAssignments/{name}",
        "name": name,
        "scope": RG_SCOPE,
        "role_definition_id": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{ROLE_READER}",
        "role_name": "Reader",
        "principal_id": PRINCIPAL,
        "principal_type": "ServicePrincipal",
    }
    root = DesiredRoleAssignment("/", READER, PRINCIPAL).as_dict()
    assert root["id"].startswith("/providers/Microsoft.Authorization/roleAssignments/")
    assert DesiredRoleAssignment(RG_SCOPE, READER, None).as_dict()["id"] is None


ARM_ASSIGNMENT = {
    "id": f"{RG_SCOPE}/providers/Microsoft.Authorization/roleAssignments/a1",
    "name": "a1",
    "type": "Microsoft.Authorization/roleAssignments",
    "properties": {
        "scope": RG_SCOPE,
        "roleDefinitionId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{ROLE_READER}",
        "principalId": PRINCIPAL,
        "principalType": "ServicePrincipal",
    },
}


@pytest.mark.parametrize(
    "source",
    [RoleAssignment.deserialize(ARM_ASSIGNMENT), ARM_ASSIGNMENT, RoleAssignment.deserialize(ARM_ASSIGNMENT).as_dict()],
    ids=["sdk-model", "arm-json", "flat-dict"],
)
def test_assignments_normalise_from_models_and_dicts(source):
    expected = assignment()
    expected["role_name"] = "Reader"  # a built-in role this collection knows by GUID
    assert normalize_role_assignment(source) == expected
    assert normalize_role_assignment(source, "Custom")["role_name"] == "Custom"


def test_only_assignments_exactly_at_the_scope_match():
    inherited = assignment(scope=f"/subscriptions/{SUB}", name="up")
    below = assignment(scope=VAULT_SCOPE, name="down")
    other_role = assignment(guid=ROLE_KEY_VAULT_SECRETS_USER, name="role")
    other_principal = assignment(principal=OTHER_PRINCIPAL, name="who")
    exact = assignment(scope=RG_SCOPE.lower() + "/", principal=PRINCIPAL.upper(), name="exact")
    found = matching_assignments(
        [inherited, below, other_role, other_principal, exact], RG_SCOPE, PRINCIPAL, ROLE_READER
    )
    assert [a["name"] for a in found] == ["exact"]
    assert matching_assignments([exact], RG_SCOPE, None, ROLE_READER) == []


# --- plans ----------------------------------------------------------------------------------------------------------
def test_missing_assignment_is_created_under_the_deterministic_name():
    decided = plan_role_assignment([assignment(scope=f"/subscriptions/{SUB}", name="up")], desired())
    assert decided.action == CREATE and decided.changed
    assert decided.before is None and decided.after == desired().as_dict()
    assert decided.diff() == {"before": {}, "after": decided.after}


def test_existing_assignment_under_any_name_is_left_alone():
    existing = assignment(name="created-by-the-portal")
    decided = plan_role_assignment([existing], desired())
    assert decided.action == NONE and not decided.changed
    assert decided.before == decided.after == dict(existing, role_name="Reader")
    assert decided.warnings == []


def test_duplicates_are_reported_and_the_first_kept():
    decided = plan_role_assignment([assignment(name="a1"), assignment(name="a2")], desired())
    assert decided.action == NONE and decided.after["name"] == "a1"
    assert "2 assignments" in decided.warnings[0] and "a1, a2" in decided.warnings[0]


def test_absent_deletes_the_assignment_of_the_triple():
    decided = plan_role_assignment(
        [assignment(), assignment(scope=f"/subscriptions/{SUB}", name="up")], desired("absent")
    )
    assert decided.action == DELETE and decided.after is None
    assert decided.before["name"] == "a1"
    assert decided.diff() == {"before": decided.before, "after": {}}


def test_absent_with_several_assignments_says_so():
    decided = plan_role_assignment([assignment(name="a1"), assignment(name="a2")], desired("absent"))
    assert decided.action == DELETE and "2 assignments" in decided.reason


def test_absent_without_assignment_is_nothing_to_do():
    decided = plan_role_assignment([assignment(scope=VAULT_SCOPE)], desired("absent"))
    assert decided.action == NONE and decided.before is None and decided.after is None


def test_unknown_principal_in_check_mode_is_a_create_with_a_warning():
    decided = plan_role_assignment([], desired(principal=None))
    assert decided.action == CREATE and decided.after["principal_id"] is None and decided.after["name"] is None
    assert "does not exist yet" in decided.warnings[0]
    assert plan_role_assignment([], desired("absent", principal=None)).action == NONE


# --- Azure calls, against a fake SDK client --------------------------------------------------------------------------
class Response:
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        self.status_code, self.reason, self.headers, self.request = status, "Reason", headers or {}, None
        self.content_type = "application/json; charset=utf-8"
        self._text = json.dumps({"error": {"code": code, "message": message}})

    def text(self, encoding: str | None = None) -> str:
        return self._text

    def body(self) -> bytes:
        return self._text.encode()


def arm_error(status: int, code: str, message: str, cls: type = HttpResponseError) -> HttpResponseError:
    return cls(response=Response(status, code, message))


class FakeAuthorization:
    """role_assignments + role_definitions answering like ARM: triple uniqueness, 409 RoleAssignmentExists."""

    def __init__(self) -> None:
        self.assignments: dict[str, dict[str, t.Any]] = {}
        self.definitions = [
            {"id": f"/providers/Microsoft.Authorization/roleDefinitions/{ROLE_READER}", "name": ROLE_READER,
             "properties": {"roleName": "Reader"}},
            {"id": f"/providers/Microsoft.Authorization/roleDefinitions/{CUSTOM_GUID}", "name": CUSTOM_GUID,
             "properties": {"roleName": "Orders Reader"}},
        ]  # fmt: skip
        self.calls: list[tuple[str, ...]] = []
        self.create_errors: list[HttpResponseError] = []
        self.before_create: t.Callable[[], None] | None = None
        self.role_assignments = self
        self.role_definitions = _Definitions(self)

    def add(self, scope: str, principal: str, guid: str, name: str) -> None:
        self.assignments[name] = {
            "id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}",
            "name": name,
            "properties": {
                "scope": scope,
                "roleDefinitionId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
                "principalId": principal,
                "principalType": "ServicePrincipal",
            },
        }

    def list_for_scope(self, scope: str, filter: str | None = None):
        self.calls.append(("list", scope, filter or ""))
        if "/resourceGroups/rg-missing" in scope:
            raise arm_error(404, "ResourceGroupNotFound", "Resource group 'rg-missing' could not be found.")
        principal = (filter or "").split("'")[1]
        return Pager(
            RoleAssignment.deserialize(a)
            for a in self.assignments.values()
            if a["properties"]["principalId"] == principal
        )

    def create(self, scope: str, name: str, parameters: t.Any) -> RoleAssignment:
        self.calls.append(("put", scope, name))
        if self.before_create:
            self.before_create()
        if self.create_errors:
            raise self.create_errors.pop(0)
        guid = parameters.role_definition_id.rsplit("/", 1)[1]
        for existing in self.assignments.values():
            props = existing["properties"]
            if (props["scope"], props["principalId"], props["roleDefinitionId"].rsplit("/", 1)[1]) == (
                scope,
                parameters.principal_id,
                guid,
            ) and existing["name"] != name:
                raise arm_error(409, "RoleAssignmentExists", "The role assignment already exists.", ResourceExistsError)
        self.add(scope, parameters.principal_id, guid, name)
        self.assignments[name]["properties"]["principalType"] = parameters.principal_type
        return RoleAssignment.deserialize(self.assignments[name])

    def delete(self, scope: str, name: str) -> None:
        self.calls.append(("delete", scope, name))
        self.assignments.pop(name, None)


class _Definitions:
    def __init__(self, parent: FakeAuthorization) -> None:
        self.parent = parent

    def list(self, scope: str, filter: str | None = None):
        self.parent.calls.append(("definitions", scope, filter or ""))
        wanted = (filter or "").split("'", 1)[1].rsplit("'", 1)[0].replace("''", "'").lower()
        return Pager(
            RoleDefinition.deserialize(d)
            for d in self.parent.definitions
            if d["properties"]["roleName"].lower() == wanted
        )

    def get_by_id(self, role_id: str) -> RoleDefinition:
        self.parent.calls.append(("definition", role_id))
        for definition in self.parent.definitions:
            if definition["name"] == role_id.rsplit("/", 1)[1]:
                return RoleDefinition.deserialize(definition)
        message = f"The specified role definition with ID '{role_id.rsplit('/', 1)[1]}' does not exist."
        raise arm_error(404, "RoleDefinitionDoesNotExist", message)


class FakeResourceGroups:
    """resource_groups.get: only the groups in ``existing``."""

    def __init__(self, existing: t.Iterable[str] = ("rg1",)) -> None:
        self.existing = set(existing)
        self.calls: list[str] = []

    def get(self, name: str) -> t.Any:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.mgmt.resource.resources.models import ResourceGroup

        self.calls.append(name)
        if name not in self.existing:
            message = f"Resource group '{name}' could not be found."
            raise arm_error(404, "ResourceGroupNotFound", message, ResourceNotFoundError)
        return ResourceGroup(location="eastus")


class FakeAzure:
    subscription_id = SUB

    def __init__(self) -> None:
        self.authorization = FakeAuthorization()
        self.groups = FakeResourceGroups()
        self.resources = type("Resources", (), {"resource_groups": self.groups})()


@pytest.fixture
def azure() -> FakeAzure:
    return FakeAzure()


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(azure_gateway.time, "sleep", slept.append)
    return slept


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("Reader", Role(ROLE_READER, "Reader")),
        ("Key Vault Secrets User", Role(ROLE_KEY_VAULT_SECRETS_USER, "Key Vault Secrets User")),
        (ROLE_READER.upper(), Role(ROLE_READER, "Reader")),
        (f"/providers/Microsoft.Authorization/roleDefinitions/{ROLE_READER}", Role(ROLE_READER, "Reader")),
    ],
)
def test_known_names_guids_and_ids_resolve_without_a_request(azure, role, expected):
    assert resolve_role(azure, RG_SCOPE, role) == expected
    assert azure.authorization.calls == []


@pytest.mark.parametrize(
    "role",
    [
        CUSTOM_GUID,
        CUSTOM_GUID.upper(),
        f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{CUSTOM_GUID}",
    ],
)
def test_other_guids_and_ids_cost_one_get_of_the_definition(azure, role):
    assert resolve_role(azure, RG_SCOPE, role) == Role(CUSTOM_GUID, "Orders Reader")
    definition = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{CUSTOM_GUID}"
    assert azure.authorization.calls == [("definition", definition)]


@pytest.mark.parametrize("role", [UNKNOWN_GUID, f"/providers/Microsoft.Authorization/roleDefinitions/{UNKNOWN_GUID}"])
def test_an_unknown_role_definition_is_found_by_reading_and_names_the_option(azure, role):
    with pytest.raises(WorkloadIdentityError) as caught:
        resolve_role(azure, RG_SCOPE, role)
    assert caught.value.code == "RoleDefinitionDoesNotExist" and caught.value.status == 404
    assert caught.value.message.startswith(f"role: role definition {UNKNOWN_GUID} does not exist")
    assert [c[0] for c in azure.authorization.calls] == ["definition"]


def test_other_errors_reading_a_role_definition_are_reported(azure, monkeypatch):
    def forbidden(role_id):
        raise arm_error(403, "AuthorizationFailed", "no read")

    monkeypatch.setattr(azure.authorization.role_definitions, "get_by_id", forbidden)
    with pytest.raises(WorkloadIdentityError) as caught:
        resolve_role(azure, RG_SCOPE, CUSTOM_GUID)
    assert caught.value.code == "AuthorizationFailed" and caught.value.message.startswith(
        "Failed to read role definition"
    )


def test_other_names_cost_one_filtered_list_at_the_scope(azure):
    assert resolve_role(azure, RG_SCOPE + "/", "orders reader") == Role(CUSTOM_GUID, "Orders Reader")
    assert azure.authorization.calls == [("definitions", RG_SCOPE, "roleName eq 'orders reader'")]


def test_unknown_role_name_fails_naming_the_option(azure):
    with pytest.raises(WorkloadIdentityError) as caught:
        resolve_role(azure, RG_SCOPE, "Nobody's Role")
    assert caught.value.code == "RoleDefinitionNotFound" and caught.value.message.startswith("role: ")
    assert azure.authorization.calls[0][2] == "roleName eq 'Nobody''s Role'"  # OData quoting


def test_ambiguous_role_name_fails(azure):
    azure.authorization.definitions.append(
        {"id": "/providers/Microsoft.Authorization/roleDefinitions/0f0f0f0f-0000-4000-8000-000000000001",
         "name": "0f0f0f0f-0000-4000-8000-000000000001", "properties": {"roleName": "Orders Reader"}}
    )  # fmt: skip
    with pytest.raises(WorkloadIdentityError) as caught:
        resolve_role(azure, RG_SCOPE, "Orders Reader")
    assert caught.value.code == "AmbiguousRoleName"


def test_create_then_no_op_with_one_list(azure):
    first = reconcile_role_assignment(azure, desired(), check_mode=False)
    name = assignment_name(RG_SCOPE, PRINCIPAL, ROLE_READER)
    assert first.plan.action == CREATE and first.assignment["name"] == name
    assert first.assignment["role_name"] == "Reader"
    assert azure.authorization.calls == [("list", RG_SCOPE, f"principalId eq '{PRINCIPAL}'"), ("put", RG_SCOPE, name)]
    azure.authorization.calls.clear()
    again = reconcile_role_assignment(azure, desired(), check_mode=False)
    assert again.plan.action == NONE and again.assignment == first.assignment
    assert [c[0] for c in azure.authorization.calls] == ["list"]


def test_check_mode_only_reads(azure):
    outcome = reconcile_role_assignment(azure, desired(), check_mode=True)
    assert outcome.plan.action == CREATE and outcome.assignment == desired().as_dict()
    assert [c[0] for c in azure.authorization.calls] == ["list"] and azure.authorization.assignments == {}


def test_unknown_principal_makes_no_request(azure):
    outcome = reconcile_role_assignment(azure, desired(principal=None), check_mode=True)
    assert outcome.plan.action == CREATE and azure.authorization.calls == []


def test_absent_deletes_every_assignment_of_the_triple_and_nothing_else(azure):
    azure.authorization.add(RG_SCOPE, PRINCIPAL, ROLE_READER, "a1")
    azure.authorization.add(RG_SCOPE.lower(), PRINCIPAL, ROLE_READER, "a2")
    azure.authorization.add(f"/subscriptions/{SUB}", PRINCIPAL, ROLE_READER, "inherited")
    azure.authorization.add(RG_SCOPE, PRINCIPAL, ROLE_KEY_VAULT_SECRETS_USER, "other-role")
    outcome = reconcile_role_assignment(azure, desired("absent"), check_mode=False)
    assert outcome.plan.action == DELETE and outcome.assignment is None
    assert sorted(azure.authorization.assignments) == ["inherited", "other-role"]
    azure.authorization.calls.clear()
    assert reconcile_role_assignment(azure, desired("absent"), check_mode=False).plan.action == NONE
    assert [c[0] for c in azure.authorization.calls] == ["list"]


def test_principal_not_found_is_retried_then_succeeds(azure, no_sleep):
    message = "Principal 6e2b2a5c does not exist in the directory."
    azure.authorization.create_errors = [arm_error(400, "PrincipalNotFound", message)] * 2
    outcome = reconcile_role_assignment(azure, desired(), check_mode=False)
    assert outcome.plan.action == CREATE and len(azure.authorization.assignments) == 1
    assert [c[0] for c in azure.authorization.calls] == ["list", "put", "put", "put"]
    assert len(no_sleep) == 2


def test_principal_not_found_is_retried_for_a_bounded_time(azure, monkeypatch):
    monkeypatch.setattr(reconciler, "PRINCIPAL_NOT_FOUND_TIMEOUT", 0.0)
    azure.authorization.create_errors = [arm_error(400, "PrincipalNotFound", "Principal x does not exist.")] * 5
    with pytest.raises(WorkloadIdentityError) as caught:
        reconcile_role_assignment(azure, desired(), check_mode=False)
    assert caught.value.code == "PrincipalNotFound" and caught.value.status == 400
    assert caught.value.message.startswith(f"Failed to create role assignment of role 'Reader' ({ROLE_READER}) to ")
    assert [c[0] for c in azure.authorization.calls] == ["list", "put"]


def test_other_errors_are_not_retried(azure):
    azure.authorization.create_errors = [arm_error(403, "AuthorizationFailed", "no")]
    with pytest.raises(WorkloadIdentityError) as caught:
        reconcile_role_assignment(azure, desired(), check_mode=False)
    assert caught.value.code == "AuthorizationFailed"
    assert [c[0] for c in azure.authorization.calls] == ["list", "put"]


def test_assignment_created_concurrently_under_another_name_counts_as_present(azure):
    def concurrent_run() -> None:
        azure.authorization.before_create = None
        azure.authorization.add(RG_SCOPE, PRINCIPAL, ROLE_READER, "from-another-run")

    azure.authorization.before_create = concurrent_run
    outcome = reconcile_role_assignment(azure, desired(), check_mode=False)
    assert outcome.plan.action == NONE and not outcome.plan.changed
    assert outcome.assignment["name"] == "from-another-run"
    assert "RoleAssignmentExists" in outcome.plan.warnings[0]
    assert [c[0] for c in azure.authorization.calls] == ["list", "put", "list"]
    assert list(azure.authorization.assignments) == ["from-another-run"]


def test_role_assignment_exists_that_cannot_be_seen_is_reported(azure):
    azure.authorization.create_errors = [
        arm_error(409, "RoleAssignmentExists", "The role assignment already exists.", ResourceExistsError)
    ]
    with pytest.raises(WorkloadIdentityError) as caught:
        reconcile_role_assignment(azure, desired(), check_mode=False)
    assert caught.value.code == "RoleAssignmentExists" and caught.value.status == 409


# --- principals -----------------------------------------------------------------------------------------------------
class FakeIdentities:
    def __init__(self, identities: list[dict[str, t.Any]]) -> None:
        self.identities = identities
        self.calls: list[str] = []

    def get(self, resource_group: str, name: str) -> t.Any:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.mgmt.msi.models import Identity

        self.calls.append(f"get {resource_group}/{name}")
        for identity in self.identities:
            if identity["name"] == name and f"/resourcegroups/{resource_group.lower()}/" in identity["id"].lower():
                return Identity.deserialize(identity)
        raise arm_error(404, "ResourceNotFound", f"The Resource '{name}' was not found.", ResourceNotFoundError)

    def list_by_subscription(self):
        from azure.mgmt.msi.models import Identity

        self.calls.append("list")
        return Pager(Identity.deserialize(i) for i in self.identities)


CLIENT = "3f2a9c1b-0d4e-4c6b-9a8f-1e2d3c4b5a69"
IDENTITY = {
    "id": f"/subscriptions/{SUB}/resourcegroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1",
    "name": "id1",
    "location": "eastus",
    "properties": {"clientId": CLIENT, "principalId": PRINCIPAL, "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47"},
}


@pytest.fixture
def msi(azure) -> FakeIdentities:
    other = dict(IDENTITY, name="id0", properties={"clientId": "c0", "principalId": "p0", "tenantId": "t"})
    azure.msi = type("Msi", (), {"user_assigned_identities": FakeIdentities([other, IDENTITY])})()
    return azure.msi.user_assigned_identities


def test_principal_id_is_used_as_given_without_a_request(azure, msi):
    assert resolve_principal(azure, principal_id=PRINCIPAL).principal_id == PRINCIPAL
    assert msi.calls == []


def test_identity_by_name_is_one_get(azure, msi):
    principal = resolve_principal(azure, identity_resource_group="rg1", identity_name="id1")
    assert principal.principal_id == PRINCIPAL and principal.identity["client_id"] == CLIENT
    assert msi.calls == ["get rg1/id1"]


def test_identity_by_name_must_carry_the_client_id_given(azure, msi):
    assert resolve_principal(azure, client_id=CLIENT.upper(), identity_resource_group="rg1", identity_name="id1")
    with pytest.raises(WorkloadIdentityError) as caught:
        resolve_principal(azure, client_id=OTHER_PRINCIPAL, identity_resource_group="rg1", identity_name="id1")
    assert caught.value.code == "IdentityMismatch" and caught.value.message.startswith("identity_client_id: ")


def test_bare_client_id_is_one_list_of_the_subscription(azure, msi):
    assert resolve_principal(azure, client_id=CLIENT).principal_id == PRINCIPAL
    assert msi.calls == ["list"]
    missing = resolve_principal(azure, client_id=OTHER_PRINCIPAL)
    assert missing.principal_id is None and OTHER_PRINCIPAL in missing.missing


def test_missing_identity_fails_present_but_not_check_mode_or_absent(azure, msi):
    principal = resolve_principal(azure, identity_resource_group="rg1", identity_name="nope")
    assert principal.principal_id is None
    assert principal.missing == "identity_name: managed identity 'nope' in resource group 'rg1' does not exist"
    assert msi.calls == ["get rg1/nope"] and azure.groups.calls == ["rg1"]
    with pytest.raises(WorkloadIdentityError) as caught:
        require_principal(principal, "present", check_mode=False)
    assert caught.value.code == "IdentityNotFound" and caught.value.message.startswith("identity_name: ")
    require_principal(principal, "present", check_mode=True)
    require_principal(principal, "absent", check_mode=False)


@pytest.mark.parametrize("option", ["identity_resource_group", "resource_group"])
def test_missing_resource_group_of_the_identity_names_the_option_that_gave_it(azure, msi, option):
    principal = resolve_principal(azure, identity_resource_group="rg-gone", identity_name="id1", group_option=option)
    assert principal.missing == f"{option}: resource group 'rg-gone' does not exist"
    with pytest.raises(WorkloadIdentityError) as caught:
        require_principal(principal, "present", check_mode=False)
    assert caught.value.code == "ResourceGroupNotFound" and caught.value.message.startswith(f"{option}: ")


def test_missing_client_id_names_the_option(azure, msi):
    missing = resolve_principal(azure, client_id=OTHER_PRINCIPAL)
    assert missing.missing.startswith("identity_client_id: ")


def test_a_scope_in_a_missing_resource_group_is_found_by_the_list(azure):
    scope = f"/subscriptions/{SUB}/resourceGroups/rg-missing"
    with pytest.raises(WorkloadIdentityError) as caught:
        reconcile_role_assignment(azure, desired(scope=scope), check_mode=False)
    assert caught.value.message == "scope: resource group 'rg-missing' does not exist"
    assert caught.value.code == "ResourceGroupNotFound" and [c[0] for c in azure.authorization.calls] == ["list"]
