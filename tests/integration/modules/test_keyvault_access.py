"""keyvault_access on the lab's two seeded vaults (access policies and RBAC): check mode -> grant -> no-op -> diff ->
absent, other principals' entries untouched, concurrent grants, faults and bad input; verified with our own SDK
clients and the emulator's state."""

from __future__ import annotations

import concurrent.futures
import uuid
from typing import Any

import pytest
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    Permissions,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
)

from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.role_assignment import assignment_name
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ROLE_KEY_VAULT_SECRETS_USER,
)
from tests.integration.modules.test_role_assignment import arm_requests, assignments_in_state
from tests.integration.runner import run_module
from tests.integration.sdk import sdk_client

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def keyvault(lab) -> KeyVaultManagementClient:
    return sdk_client(lab, KeyVaultManagementClient)


@pytest.fixture(scope="module")
def authorization(lab) -> AuthorizationManagementClient:
    return sdk_client(lab, AuthorizationManagementClient)


def vault_in_state(lab, name: str) -> dict[str, Any]:
    """The vault as the emulator stores it (not through any API)."""
    return next(
        body
        for body in lab.state()["resources"].values()
        if body.get("type") == "Microsoft.KeyVault/vaults" and body["name"] == name
    )


def policy_of(lab, vault: str, object_id: str) -> dict[str, Any] | None:
    entries = vault_in_state(lab, vault)["properties"]["accessPolicies"]
    return next((e for e in entries if e["objectId"].lower() == object_id.lower()), None)


def others(lab, vault: str, *object_ids: str) -> list[dict[str, Any]]:
    """Entries of every principal except these, for "untouched" checks."""
    entries = vault_in_state(lab, vault)["properties"]["accessPolicies"]
    return [e for e in entries if e["objectId"].lower() not in {o.lower() for o in object_ids}]


def set_secret_permissions(lab, keyvault, kind: str, object_id: str, secrets: list[str]) -> None:
    entry = AccessPolicyEntry(
        tenant_id=lab.env["AZURE_TENANT"], object_id=object_id, permissions=Permissions(secrets=secrets)
    )
    parameters = VaultAccessPolicyParameters(properties=VaultAccessPolicyProperties(access_policies=[entry]))
    keyvault.vaults.update_access_policy(lab.seed["resource_group"], lab.seed["policy_vault"], kind, parameters)


@pytest.fixture
def identities(lab, msi, keyvault, authorization):
    """Fresh user-assigned identities (unique names), made on demand; afterwards their access policy entries, role
    assignments and the identities themselves are deleted."""
    rg = lab.seed["resource_group"]
    made = []

    def make() -> Any:
        identity = msi.user_assigned_identities.create_or_update(
            rg, f"id-kv-{uuid.uuid4().hex[:10]}", {"location": "eastus"}
        )
        made.append(identity)
        return identity

    yield make
    subscription = f"/subscriptions/{lab.env['AZURE_SUBSCRIPTION_ID']}"
    everything = ["get", "list", "set", "delete", "backup", "restore", "recover", "purge"]
    for identity in made:
        if policy_of(lab, lab.seed["policy_vault"], identity.principal_id):
            set_secret_permissions(lab, keyvault, "remove", identity.principal_id, everything)
        for assignment in authorization.role_assignments.list_for_scope(
            subscription, filter=f"principalId eq '{identity.principal_id}'"
        ):
            authorization.role_assignments.delete(assignment.scope, assignment.name)
        msi.user_assigned_identities.delete(rg, identity.name)


@pytest.fixture
def faults(lab):
    yield lab
    lab.clear_faults()


def policy_vault_args(lab, identity) -> dict[str, Any]:
    return {
        "resource_group": lab.seed["resource_group"],
        "vault_name": lab.seed["policy_vault"],
        "identity_name": identity.name,
    }


def rbac_vault_id(lab) -> str:
    return (
        f"/subscriptions/{lab.env['AZURE_SUBSCRIPTION_ID']}/resourceGroups/{lab.seed['resource_group']}"
        f"/providers/Microsoft.KeyVault/vaults/{lab.seed['rbac_vault']}"
    )


# --- access policies ------------------------------------------------------------------------------------------------
def test_access_policy_lifecycle(lab, identities):
    identity = identities()
    vault = lab.seed["policy_vault"]
    args = policy_vault_args(lab, identity)
    untouched = others(lab, vault, identity.principal_id)
    assert untouched, "the seeded deployer entry should be there"
    expected = {"tenant_id": lab.env["AZURE_TENANT"], "object_id": identity.principal_id, "secret_permissions": ["get"]}

    seq = lab.last_seq()
    check = run_module("keyvault_access", args, env=lab.env, check=True, diff=True)
    assert not check.failed, check.output
    assert check.changed and check["diff"] == {"before": {}, "after": expected}
    assert check["keyvault_access"]["model"] == "access_policy"
    assert lab.writes(seq) == [] and policy_of(lab, vault, identity.principal_id) is None

    seq = lab.last_seq()
    granted = run_module("keyvault_access", args, env=lab.env, diff=True)
    assert not granted.failed, granted.output
    assert granted.changed and granted["diff"] == {"before": {}, "after": expected}
    assert [(w["method"], w["path"].rsplit("/", 1)[1]) for w in lab.writes(seq)] == [("PUT", "add")]
    entry = policy_of(lab, vault, identity.principal_id)
    assert entry["permissions"]["secrets"] == ["get"] and entry["tenantId"] == lab.env["AZURE_TENANT"]
    assert others(lab, vault, identity.principal_id) == untouched
    access = granted["keyvault_access"]
    assert access["access_policy"] == expected and access["role_assignment"] == {}
    assert access["principal_id"] == identity.principal_id
    assert access["vault"]["name"] == vault and access["vault"]["enable_rbac_authorization"] is False
    assert access["vault"]["vault_uri"] == vault_in_state(lab, vault)["properties"]["vaultUri"]

    seq = lab.last_seq()
    again = run_module("keyvault_access", args, env=lab.env, diff=True)
    assert not again.failed and not again.changed
    # A no-op run: the identity's GET and the vault's GET (its access policies come with it).
    requests = arm_requests(lab, seq)
    assert [(r["method"], r["path"].split("/providers/")[1].split("/")[0]) for r in requests] == [
        ("GET", "Microsoft.ManagedIdentity"),
        ("GET", "Microsoft.KeyVault"),
    ]
    assert again["diff"]["before"] == again["diff"]["after"] == expected

    seq = lab.last_seq()
    check_absent = run_module("keyvault_access", {**args, "state": "absent"}, env=lab.env, check=True, diff=True)
    assert check_absent.changed and check_absent["diff"] == {"before": expected, "after": {}}
    assert lab.writes(seq) == [] and policy_of(lab, vault, identity.principal_id) is not None

    seq = lab.last_seq()
    removed = run_module("keyvault_access", {**args, "state": "absent"}, env=lab.env)
    assert not removed.failed and removed.changed and removed["keyvault_access"]["access_policy"] == {}
    assert [(w["method"], w["path"].rsplit("/", 1)[1]) for w in lab.writes(seq)] == [("PUT", "remove")]
    assert policy_of(lab, vault, identity.principal_id) is None
    assert others(lab, vault, identity.principal_id) == untouched

    seq = lab.last_seq()
    gone = run_module("keyvault_access", {**args, "state": "absent"}, env=lab.env)
    assert not gone.failed and not gone.changed and lab.writes(seq) == []


def test_absent_removes_only_what_it_granted(lab, keyvault, identities):
    identity = identities()
    vault = lab.seed["policy_vault"]
    set_secret_permissions(lab, keyvault, "add", identity.principal_id, ["set"])  # granted by someone else
    args = {**policy_vault_args(lab, identity), "secret_permissions": ["get", "list"]}
    granted = run_module("keyvault_access", args, env=lab.env)
    assert granted.changed and granted["keyvault_access"]["access_policy"]["secret_permissions"] == [
        "get",
        "list",
        "set",
    ]
    assert sorted(policy_of(lab, vault, identity.principal_id)["permissions"]["secrets"]) == ["get", "list", "set"]
    removed = run_module("keyvault_access", {**args, "state": "absent"}, env=lab.env)
    assert removed.changed and removed["keyvault_access"]["access_policy"]["secret_permissions"] == ["set"]
    assert policy_of(lab, vault, identity.principal_id)["permissions"]["secrets"] == ["set"]


def test_concurrent_grants_to_two_identities_both_land(lab, identities):
    first, second = identities(), identities()
    vault = lab.seed["policy_vault"]
    untouched = others(lab, vault, first.principal_id, second.principal_id)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = list(
            pool.map(
                lambda identity: run_module("keyvault_access", {**policy_vault_args(lab, identity)}, env=lab.env),
                [first, second],
            )
        )
    assert all(run.changed and not run.failed for run in runs), [run.output for run in runs]
    assert policy_of(lab, vault, first.principal_id)["permissions"]["secrets"] == ["get"]
    assert policy_of(lab, vault, second.principal_id)["permissions"]["secrets"] == ["get"]
    assert others(lab, vault, first.principal_id, second.principal_id) == untouched


def test_bare_client_id_costs_one_identity_list(lab, identities):
    identity = identities()
    args = {
        "resource_group": lab.seed["resource_group"],
        "vault_name": lab.seed["policy_vault"],
        "identity_client_id": identity.client_id,
    }
    granted = run_module("keyvault_access", args, env=lab.env)
    assert granted.changed and granted["keyvault_access"]["principal_id"] == identity.principal_id
    seq = lab.last_seq()
    again = run_module("keyvault_access", args, env=lab.env)
    assert not again.changed
    paths = [r["path"] for r in arm_requests(lab, seq)]
    assert len(paths) == 2 and paths[0].endswith("/providers/Microsoft.ManagedIdentity/userAssignedIdentities")


def test_throttled_policy_update_is_retried(faults, identities):
    lab = faults
    identity = identities()
    lab.fault(method="PUT", path=r"/accessPolicies/add$", status=429, retry_after=1, count=1)
    seq = lab.last_seq()
    run = run_module("keyvault_access", policy_vault_args(lab, identity), env=lab.env)
    assert not run.failed and run.changed, run.output
    assert [(w["method"], w["status"]) for w in lab.writes(seq)] == [("PUT", 429), ("PUT", 200)]
    assert policy_of(lab, lab.seed["policy_vault"], identity.principal_id)["permissions"]["secrets"] == ["get"]


# --- RBAC -------------------------------------------------------------------------------------------------------------
def test_rbac_lifecycle(lab, authorization, identities):
    identity = identities()
    vault_id = rbac_vault_id(lab)
    args = {"vault_id": vault_id, "principal_id": identity.principal_id}
    name = assignment_name(vault_id, identity.principal_id, ROLE_KEY_VAULT_SECRETS_USER)

    seq = lab.last_seq()
    check = run_module("keyvault_access", args, env=lab.env, check=True, diff=True)
    assert not check.failed, check.output
    assert check.changed and check["keyvault_access"]["model"] == "rbac" and check["diff"]["before"] == {}
    assert check["diff"]["after"]["name"] == name
    assert lab.writes(seq) == [] and assignments_in_state(lab, identity.principal_id) == []

    seq = lab.last_seq()
    granted = run_module("keyvault_access", args, env=lab.env, diff=True)
    assert not granted.failed and granted.changed, granted.output
    assert [(w["method"], w["path"].rsplit("/", 1)[1]) for w in lab.writes(seq)] == [("PUT", name)]
    listed = list(
        authorization.role_assignments.list_for_scope(vault_id, filter=f"principalId eq '{identity.principal_id}'")
    )
    assert [(a.name, a.scope) for a in listed] == [(name, vault_id)]
    assert listed[0].role_definition_id.endswith(ROLE_KEY_VAULT_SECRETS_USER)
    access = granted["keyvault_access"]
    assert (
        access["role_assignment"]["id"] == listed[0].id
        and access["role_assignment"]["role_name"] == "Key Vault Secrets User"
    )
    assert access["access_policy"] == {} and access["vault"]["enable_rbac_authorization"] is True
    assert granted["diff"] == {"before": {}, "after": access["role_assignment"]}

    seq = lab.last_seq()
    again = run_module("keyvault_access", args, env=lab.env)
    assert not again.changed
    # A no-op run on an RBAC vault: the vault's GET and one list of the principal's assignments at it.
    assert [r["path"].rsplit("/", 1)[1] for r in arm_requests(lab, seq)] == [lab.seed["rbac_vault"], "roleAssignments"]

    seq = lab.last_seq()
    check_absent = run_module("keyvault_access", {**args, "state": "absent"}, env=lab.env, check=True)
    assert check_absent.changed and lab.writes(seq) == []

    seq = lab.last_seq()
    removed = run_module("keyvault_access", {**args, "state": "absent"}, env=lab.env)
    assert removed.changed and removed["keyvault_access"]["role_assignment"] == {}
    assert [w["method"] for w in lab.writes(seq)] == ["DELETE"]
    assert assignments_in_state(lab, identity.principal_id) == []
    assert not run_module("keyvault_access", {**args, "state": "absent"}, env=lab.env).changed


def test_rbac_principal_not_found_is_retried(faults, identities):
    lab = faults
    identity = identities()
    vault_id = rbac_vault_id(lab)
    name = assignment_name(vault_id, identity.principal_id, ROLE_KEY_VAULT_SECRETS_USER)
    lab.fault(method="PUT", path=f"/roleAssignments/{name}$", status=400, code="PrincipalNotFound", count=2)
    run = run_module("keyvault_access", {"vault_id": vault_id, "identity_name": identity.name}, env=lab.env)
    assert not run.failed and run.changed, run.output
    assert [a["name"] for a in assignments_in_state(lab, identity.principal_id)] == [name]


# --- bad input, missing things, secrets -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"vault_id": "kv-wid-policy", "principal_id": str(uuid.uuid4())}, "vault_id: must be a Key Vault resource ID"),
        (
            {"resource_group": "rg-wid-lab", "vault_name": "kv-wid-policy", "principal_id": "nope"},
            "principal_id: must be a GUID",
        ),
        (
            {
                "resource_group": "rg-wid-lab",
                "vault_name": "kv-wid-policy",
                "identity_client_id": "c",
                "identity_name": "x",
            },
            "identity_client_id: must be a GUID",
        ),
    ],
)
def test_bad_input_fails_before_any_request(lab, args, problem):
    seq = lab.last_seq()
    run = run_module("keyvault_access", args, env=lab.env)
    assert run.failed and run["error_code"] == "InvalidParameter" and problem in run["msg"], run.output
    assert arm_requests(lab, seq) == [] and lab.writes(seq) == []


def test_missing_vault_and_identity_fail_with_codes_before_any_write(lab, identities):
    identity = identities()
    seq = lab.last_seq()
    no_vault = run_module(
        "keyvault_access",
        {
            "resource_group": lab.seed["resource_group"],
            "vault_name": f"kv-none-{uuid.uuid4().hex[:6]}",
            "principal_id": identity.principal_id,
        },
        env=lab.env,
    )
    assert no_vault.failed and no_vault["error_code"] == "ResourceNotFound" and "key vault 'kv-none-" in no_vault["msg"]
    no_identity = run_module(
        "keyvault_access", {**policy_vault_args(lab, identity), "identity_name": "id-none"}, env=lab.env
    )
    assert no_identity.failed and no_identity["error_code"] == "IdentityNotFound"
    assert "managed identity 'id-none'" in no_identity["msg"]
    assert lab.writes(seq) == []


def test_secret_never_in_output_even_verbose(lab, identities):
    identity = identities()
    run = run_module("keyvault_access", policy_vault_args(lab, identity), env=lab.env, verbosity=3, diff=True)
    assert not run.failed and run.changed
    assert lab.env["AZURE_SECRET"] not in run.output
