"""role_assignment on the lab: check mode -> create -> no-op -> diff -> absent, faults (PrincipalNotFound, 429, 503,
a concurrent creation answered by 409 RoleAssignmentExists), bad input; verified with our own SDK clients and the
emulator's state."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters
from azure.mgmt.msi import ManagedServiceIdentityClient

from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.role_assignment import assignment_name
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import ROLE_READER
from tests.integration.runner import run_module
from tests.integration.sdk import sdk_client

pytestmark = pytest.mark.lab

ARM_SCOPE = "https://management.core.windows.net/.default"
MANAGED_IDENTITY_OPERATOR = "f1a07417-d97a-45cb-824c-7a7467783830"  # a built-in role this collection has no GUID for


# --- our own view of Azure ----------------------------------------------------------------------------------------
def arm_requests(lab, since: int) -> list[dict[str, Any]]:
    """ARM requests since ``since``, without the cloud metadata document (read once per run, not an ARM call)."""
    return [r for r in lab.requests(since) if r["plane"] == "arm" and not r["path"].startswith("/metadata/")]


@pytest.fixture(scope="module")
def authorization(lab) -> AuthorizationManagementClient:
    return sdk_client(lab, AuthorizationManagementClient)


@pytest.fixture(scope="module")
def msi(lab) -> ManagedServiceIdentityClient:
    return sdk_client(lab, ManagedServiceIdentityClient)


def assignments_in_state(lab, principal_id: str) -> list[dict[str, Any]]:
    """Every role assignment of the principal, from the emulator's own state (not through any API)."""
    return [
        body
        for body in lab.state()["resources"].values()
        if body.get("type") == "Microsoft.Authorization/roleAssignments"
        and body["properties"]["principalId"].lower() == principal_id.lower()
    ]


@pytest.fixture
def identity(lab, msi, authorization):
    """A fresh user-assigned identity (unique name); afterwards it and every assignment naming it are deleted."""
    rg = lab.seed["resource_group"]
    name = f"id-ra-{uuid.uuid4().hex[:10]}"
    created = msi.user_assigned_identities.create_or_update(rg, name, {"location": "eastus"})
    yield created
    subscription = f"/subscriptions/{lab.env['AZURE_SUBSCRIPTION_ID']}"
    for assignment in authorization.role_assignments.list_for_scope(
        subscription, filter=f"principalId eq '{created.principal_id}'"
    ):
        authorization.role_assignments.delete(assignment.scope, assignment.name)
    msi.user_assigned_identities.delete(rg, name)


@pytest.fixture
def faults(lab):
    """Faults a test injects are cleared whatever happens."""
    yield lab
    lab.clear_faults()


def reader_definition_id(lab) -> str:
    return (
        f"/subscriptions/{lab.env['AZURE_SUBSCRIPTION_ID']}/providers/Microsoft.Authorization/roleDefinitions/"
        f"{ROLE_READER}"
    )


def rg_scope(lab) -> str:
    return f"/subscriptions/{lab.env['AZURE_SUBSCRIPTION_ID']}/resourceGroups/{lab.seed['resource_group']}"


# --- the lifecycle ------------------------------------------------------------------------------------------------
def test_lifecycle_with_identity_by_name(lab, authorization, identity):
    scope = rg_scope(lab)
    args = {
        "scope": scope,
        "role": "Reader",
        "identity_resource_group": lab.seed["resource_group"],
        "identity_name": identity.name,
    }
    name = assignment_name(scope, identity.principal_id, ROLE_READER)

    seq = lab.last_seq()
    check = run_module("role_assignment", args, env=lab.env, check=True, diff=True)
    assert not check.failed, check.output
    assert check.changed and check["diff"]["before"] == {}
    assert check["diff"]["after"]["name"] == name and check["diff"]["after"]["principal_id"] == identity.principal_id
    assert lab.writes(seq) == []
    assert assignments_in_state(lab, identity.principal_id) == []

    seq = lab.last_seq()
    created = run_module("role_assignment", args, env=lab.env, diff=True)
    assert not created.failed, created.output
    assert created.changed and created["diff"]["before"] == {}
    assert [(w["method"], w["status"]) for w in lab.writes(seq)] == [("PUT", 201)]
    listed = list(
        authorization.role_assignments.list_for_scope(scope, filter=f"principalId eq '{identity.principal_id}'")
    )
    assert [(a.name, a.scope, a.principal_type) for a in listed] == [(name, scope, "ServicePrincipal")]
    assert listed[0].role_definition_id.endswith(f"/roleDefinitions/{ROLE_READER}")
    result = created["role_assignment"]
    assert result == created["diff"]["after"]
    assert (result["id"], result["role_name"], result["principal_id"]) == (
        listed[0].id,
        "Reader",
        identity.principal_id,
    )
    assert check["role_assignment"]["id"] == result["id"]  # check mode predicted the assignment exactly

    seq = lab.last_seq()
    again = run_module("role_assignment", args, env=lab.env, diff=True)
    assert not again.failed and not again.changed
    # A no-op run: the identity's GET and one list of its assignments at the scope.
    requests = arm_requests(lab, seq)
    assert [r["method"] for r in requests] == ["GET", "GET"]
    assert requests[1]["path"].endswith("/providers/Microsoft.Authorization/roleAssignments")
    assert requests[1]["query"]["$filter"] == f"principalId eq '{identity.principal_id}'"
    assert again["diff"]["before"] == again["diff"]["after"] == result

    seq = lab.last_seq()
    check_absent = run_module("role_assignment", {**args, "state": "absent"}, env=lab.env, check=True, diff=True)
    assert not check_absent.failed and check_absent.changed
    assert check_absent["diff"] == {"before": result, "after": {}}
    assert lab.writes(seq) == [] and len(assignments_in_state(lab, identity.principal_id)) == 1

    seq = lab.last_seq()
    removed = run_module("role_assignment", {**args, "state": "absent"}, env=lab.env)
    assert not removed.failed and removed.changed and removed["role_assignment"] == {}
    assert [(w["method"], w["path"].rsplit("/", 1)[1]) for w in lab.writes(seq)] == [("DELETE", name)]
    assert assignments_in_state(lab, identity.principal_id) == []

    seq = lab.last_seq()
    gone = run_module("role_assignment", {**args, "state": "absent"}, env=lab.env)
    assert not gone.failed and not gone.changed and lab.writes(seq) == []


def test_existing_assignment_under_another_name_is_kept_and_removed_by_triple(lab, authorization, identity):
    scope = rg_scope(lab)
    other_name = str(uuid.uuid4())
    authorization.role_assignments.create(
        scope,
        other_name,
        RoleAssignmentCreateParameters(
            role_definition_id=reader_definition_id(lab),
            principal_id=identity.principal_id,
            principal_type="ServicePrincipal",
        ),
    )
    args = {"scope": scope.lower() + "/", "role": ROLE_READER, "principal_id": identity.principal_id}
    seq = lab.last_seq()
    kept = run_module("role_assignment", args, env=lab.env)
    assert not kept.failed and not kept.changed and kept["role_assignment"]["name"] == other_name
    assert [r["method"] for r in arm_requests(lab, seq)] == ["GET"]  # principal_id + GUID: one list, nothing else
    removed = run_module("role_assignment", {**args, "state": "absent"}, env=lab.env)
    assert removed.changed and assignments_in_state(lab, identity.principal_id) == []


def test_role_by_other_name_costs_one_definition_list(lab, identity):
    args = {"scope": rg_scope(lab), "role": "managed identity operator", "principal_id": identity.principal_id}
    created = run_module("role_assignment", args, env=lab.env)
    assert not created.failed, created.output
    assert created["role_assignment"]["role_name"] == "Managed Identity Operator"
    assert created["role_assignment"]["role_definition_id"].endswith(MANAGED_IDENTITY_OPERATOR)
    seq = lab.last_seq()
    again = run_module("role_assignment", args, env=lab.env)
    assert not again.changed
    paths = [r["path"].rsplit("/", 1)[1] for r in arm_requests(lab, seq)]
    assert paths == ["roleDefinitions", "roleAssignments"]


def test_inherited_assignment_does_not_count_at_a_child_scope(lab, authorization, identity):
    subscription_scope = f"/subscriptions/{lab.env['AZURE_SUBSCRIPTION_ID']}"
    run = run_module(
        "role_assignment",
        {"scope": subscription_scope, "role": "Reader", "principal_id": identity.principal_id},
        env=lab.env,
    )
    assert run.changed
    child = run_module(
        "role_assignment",
        {"scope": rg_scope(lab), "role": "Reader", "principal_id": identity.principal_id},
        env=lab.env,
    )
    assert child.changed  # the one above is inherited, not this scope's
    scopes = sorted(a["properties"]["scope"] for a in assignments_in_state(lab, identity.principal_id))
    assert scopes == sorted([subscription_scope, rg_scope(lab)])
    removed = run_module(
        "role_assignment",
        {"scope": rg_scope(lab), "role": "Reader", "principal_id": identity.principal_id, "state": "absent"},
        env=lab.env,
    )
    assert removed.changed
    assert [a["properties"]["scope"] for a in assignments_in_state(lab, identity.principal_id)] == [subscription_scope]


# --- bad input ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"scope": "resourceGroups/rg", "role": "Reader", "principal_id": str(uuid.uuid4())}, "scope: must be"),
        ({"role": "Reader", "principal_id": "not-a-guid"}, "principal_id: must be a GUID"),
        ({"role": "/providers/Microsoft.Authorization/roleDefinitions/x", "principal_id": str(uuid.uuid4())}, "role: "),
    ],
)
def test_bad_input_fails_before_any_request(lab, args, problem):
    args = {"scope": rg_scope(lab), **args}
    seq = lab.last_seq()
    run = run_module("role_assignment", args, env=lab.env)
    assert run.failed and run["error_code"] == "InvalidParameter" and problem in run["msg"], run.output
    assert arm_requests(lab, seq) == [] and lab.writes(seq) == []


def test_unknown_role_name_fails_before_any_write(lab, identity):
    seq = lab.last_seq()
    run = run_module(
        "role_assignment",
        {"scope": rg_scope(lab), "role": "No Such Role", "principal_id": identity.principal_id},
        env=lab.env,
    )
    assert run.failed and run["error_code"] == "RoleDefinitionNotFound" and "role: " in run["msg"]
    assert lab.writes(seq) == []


def test_azure_errors_carry_code_and_target(lab, identity):
    missing_group = (
        f"/subscriptions/{lab.env['AZURE_SUBSCRIPTION_ID']}/resourceGroups/rg-missing-{uuid.uuid4().hex[:6]}"
    )
    run = run_module(
        "role_assignment",
        {"scope": missing_group, "role": "Reader", "principal_id": identity.principal_id},
        env=lab.env,
    )
    assert run.failed and run["error_code"] == "ResourceGroupNotFound"
    assert run["msg"] == f"scope: resource group '{missing_group.rsplit('/', 1)[1]}' does not exist"


# --- faults -------------------------------------------------------------------------------------------------------
def test_principal_not_found_twice_then_success(faults, identity):
    lab = faults
    scope = rg_scope(lab)
    name = assignment_name(scope, identity.principal_id, ROLE_READER)
    lab.fault(
        method="PUT",
        path=f"/roleAssignments/{name}$",
        status=400,
        code="PrincipalNotFound",
        message=f"Principal {identity.principal_id.replace('-', '')} does not exist in the directory.",
        count=2,
    )
    seq = lab.last_seq()
    run = run_module(
        "role_assignment", {"scope": scope, "role": "Reader", "principal_id": identity.principal_id}, env=lab.env
    )
    assert not run.failed and run.changed, run.output
    assert [(w["method"], w["status"]) for w in lab.writes(seq)] == [("PUT", 400), ("PUT", 400), ("PUT", 201)]
    assert [a["name"] for a in assignments_in_state(lab, identity.principal_id)] == [name]  # no duplicates


def test_throttled_write_is_retried_after_retry_after(faults, identity):
    lab = faults
    scope = rg_scope(lab)
    name = assignment_name(scope, identity.principal_id, ROLE_READER)
    lab.fault(method="PUT", path=f"/roleAssignments/{name}$", status=429, retry_after=2, count=1)
    lab.fault(method="GET", path=r"/providers/Microsoft\.Authorization/roleAssignments$", status=503, count=1)
    seq = lab.last_seq()
    run = run_module(
        "role_assignment", {"scope": scope, "role": "Reader", "principal_id": identity.principal_id}, env=lab.env
    )
    assert not run.failed and run.changed, run.output
    requests = arm_requests(lab, seq)
    assert [(r["method"], r["status"]) for r in requests] == [("GET", 503), ("GET", 200), ("PUT", 429), ("PUT", 201)]
    assert requests[3]["time"] - requests[2]["time"] >= 2.0  # Retry-After honoured
    assert [a["name"] for a in assignments_in_state(lab, identity.principal_id)] == [name]


def test_concurrent_creation_under_another_name_is_present_unchanged(faults, authorization, identity):
    """Another run assigns the same triple (under a random name) between this module's list and its PUT: Azure
    answers 409 RoleAssignmentExists, which this module reports as present, unchanged, with a warning."""
    lab = faults
    scope = rg_scope(lab)
    name = assignment_name(scope, identity.principal_id, ROLE_READER)
    # Hold the module's PUT for a while in the emulator, to open the window a concurrent run needs.
    lab.fault(method="PUT", path=f"/roleAssignments/{name}$", action="latency", latency=4, count=1)
    list(authorization.role_assignments.list_for_scope(scope, filter="atScope()"))  # our token, fetched beforehand
    seq = lab.last_seq()
    outcome: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: outcome.update(
            run=run_module(
                "role_assignment",
                {"scope": scope, "role": "Reader", "principal_id": identity.principal_id},
                env=lab.env,
            )
        )
    )
    worker.start()
    deadline = time.monotonic() + 60
    while not any(r["path"].endswith("/roleAssignments") and r["method"] == "GET" for r in arm_requests(lab, seq)):
        assert time.monotonic() < deadline and worker.is_alive(), "the module never listed the assignments"
        time.sleep(0.05)
    other_name = str(uuid.uuid4())
    authorization.role_assignments.create(
        scope,
        other_name,
        RoleAssignmentCreateParameters(
            role_definition_id=reader_definition_id(lab),
            principal_id=identity.principal_id,
            principal_type="ServicePrincipal",
        ),
    )
    worker.join(120)
    run = outcome["run"]
    assert not run.failed, run.output
    assert not run.changed and run["role_assignment"]["name"] == other_name
    assert "RoleAssignmentExists" in run.output  # the warning
    module_puts = [w for w in lab.writes(seq) if w["path"].endswith(name)]
    assert [(w["method"], w["status"]) for w in module_puts] == [("PUT", 409)]
    assert [a["name"] for a in assignments_in_state(lab, identity.principal_id)] == [other_name]


# --- secrets ------------------------------------------------------------------------------------------------------
def test_secret_never_in_output_even_verbose(lab, identity):
    args = {"scope": rg_scope(lab), "role": "Reader", "principal_id": identity.principal_id}
    run = run_module("role_assignment", args, env=lab.env, verbosity=3)
    assert not run.failed and run.changed
    assert lab.env["AZURE_SECRET"] not in run.output
    failed = run_module("role_assignment", {**args, "role": "No Such Role"}, env=lab.env, verbosity=3)
    assert failed.failed and lab.env["AZURE_SECRET"] not in failed.output
