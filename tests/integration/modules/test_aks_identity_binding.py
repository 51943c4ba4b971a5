"""aks_identity_binding and aks_identity_binding_info on the lab: check mode -> create -> no-op (one list) -> diff ->
info -> absent (check, real, again); clashes of name and identity, missing cluster, group and identity, bad input,
wait: false, and no secret in the output.

Every cluster and identity here is made by the test itself with the SDK, in a resource group of its own; the seeded
aks-wid-lab is never touched. State is read back with SDK clients of the test's own, never with the module.
"""

from __future__ import annotations

import time
import uuid

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.containerservice import models as aks_models
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.resource.resources import ResourceManagementClient

from tests.integration.inprocess import Probed, run_inprocess
from tests.integration.runner import run_module
from tests.integration.sdk import sdk_client

pytestmark = pytest.mark.lab

ARM_SCOPE = "https://management.core.windows.net/.default"
FAST = {"lro_polling_interval": 0.2}  # the emulator sends no Retry-After: poll quickly
CREDENTIAL = "aks-identity-binding"


# --- helpers and fixtures --------------------------------------------------------------------------------------------
def arm_requests(lab, since: int) -> list[dict]:
    """ARM requests since ``since``, without the cloud metadata document (read once per run, not an ARM call)."""
    return [r for r in lab.requests(since) if r["plane"] == "arm" and not r["path"].startswith("/metadata/")]


def calls(lab, since: int) -> list[tuple[str, str]]:
    """(method, path without query) of the ARM requests since ``since``."""
    return [(r["method"], r["path"].split("?")[0]) for r in arm_requests(lab, since)]


def arm_methods(probed: Probed) -> list[str]:
    """The methods of the ARM requests an in-process run made (token requests and the cloud metadata aside)."""
    return [r["method"] for r in probed.azure if r["plane"] == "arm" and not r["path"].startswith("/metadata/")]


def warnings_of(probed: Probed, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The module's warnings: in its result, or printed to stderr where ansible-core 2.19 takes the test process for
    the controller."""
    found = probed.result.get("warnings") or []
    found = [w if isinstance(w, str) else str((w.get("event") or {}).get("msg", "")) for w in found]
    printed = capsys.readouterr().err
    return found + [line.split(": ", 1)[1] for line in printed.splitlines() if line.startswith("[WARNING]: ")]


def eventually(read, done, timeout: float = 20.0):
    """Read until ``done(value)``: the emulator settles an operation on the first read after its time."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


@pytest.fixture(scope="module")
def sdk(lab) -> dict:
    return {
        "aks": sdk_client(lab, ContainerServiceClient, polling_interval=0.2),
        "msi": sdk_client(lab, ManagedServiceIdentityClient, polling_interval=0.2),
        "resources": sdk_client(lab, ResourceManagementClient, polling_interval=0.2),
    }


@pytest.fixture(scope="module")
def group(lab, sdk):
    """A resource group of our own (letters, digits and '-': the binding API's rule for the identity's group), with
    quick long-running operations; deleted with everything in it at the end."""
    previous = lab.settings()["lro_seconds"]
    lab.settings(lro_seconds=0.5)
    name = f"rg-ib-{uuid.uuid4().hex[:8]}"
    sdk["resources"].resource_groups.create_or_update(name, {"location": "eastus"})
    try:
        yield name
    finally:
        sdk["resources"].resource_groups.begin_delete(name).result()
        lab.settings(lro_seconds=previous)


def make_cluster(sdk: dict, group: str) -> str:
    name = f"aks-ib-{uuid.uuid4().hex[:8]}"
    body = {
        "location": "eastus",
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "dnsPrefix": name,
            "agentPoolProfiles": [{"name": "system", "count": 1, "vmSize": "Standard_D4ds_v5", "mode": "System"}],
            "oidcIssuerProfile": {"enabled": True},
        },
    }
    sdk["aks"].managed_clusters.begin_create_or_update(group, name, aks_models.ManagedCluster(body)).result()
    return name


def make_identity(sdk: dict, group: str) -> tuple[str, dict]:
    name = f"id-ib-{uuid.uuid4().hex[:8]}"
    identity = sdk["msi"].user_assigned_identities.create_or_update(group, name, {"location": "eastus"})
    return name, identity


@pytest.fixture
def cluster(sdk, group) -> str:
    return make_cluster(sdk, group)


@pytest.fixture
def identity(sdk, group) -> tuple[str, dict]:
    return make_identity(sdk, group)


def bindings_of(sdk: dict, group: str, cluster: str) -> dict[str, str]:
    """{binding name: identity resource ID}, read with the test's own SDK client."""
    found = sdk["aks"].identity_bindings.list_by_managed_cluster(group, cluster)
    return {b.name: b.properties.managed_identity.resource_id for b in found}


def credentials_of(sdk: dict, group: str, identity: str) -> dict[str, tuple]:
    found = sdk["msi"].federated_identity_credentials.list(group, identity)
    return {c.name: (c.issuer, c.subject, list(c.audiences)) for c in found}


def sdk_bind(sdk: dict, group: str, cluster: str, name: str, identity_id: str) -> None:
    body = aks_models.IdentityBinding(
        properties=aks_models.IdentityBindingProperties(
            managed_identity=aks_models.IdentityBindingManagedIdentityProfile(resource_id=identity_id)
        )
    )
    sdk["aks"].identity_bindings.begin_create_or_update(group, cluster, name, body).result()


# --- the lifecycle ---------------------------------------------------------------------------------------------------
def test_lifecycle(lab, sdk, group, cluster, identity):
    identity_name, model = identity
    args = {"resource_group": group, "cluster_name": cluster, "identity_name": identity_name, **FAST}
    name = identity_name.replace("-", "")  # the default name: the identity's letters and digits
    bindings_path = f"/managedClusters/{cluster}/identityBindings"

    seq = lab.last_seq()
    check = run_module("aks_identity_binding", args, env=lab.env, check=True, diff=True)
    assert not check.failed, check.output
    assert check.changed and check["action"] == "create"
    assert lab.writes(seq) == []
    read = calls(lab, seq)
    assert [method for method, _path in read] == ["GET", "GET"]  # the list, the identity
    assert read[0][1].endswith(bindings_path) and read[1][1].endswith(f"/userAssignedIdentities/{identity_name}")
    predicted = check["identity_binding"]
    assert predicted["name"] == name and predicted["issuer_url"] is None
    assert (predicted["client_id"], predicted["principal_id"], predicted["tenant_id"]) == (
        model.client_id,
        model.principal_id,
        model.tenant_id,
    )
    assert check["diff"] == {"before": {}, "after": predicted}
    assert bindings_of(sdk, group, cluster) == {}
    assert CREDENTIAL not in credentials_of(sdk, group, identity_name)

    seq = lab.last_seq()
    created = run_module("aks_identity_binding", args, env=lab.env, diff=True)
    assert not created.failed, created.output
    assert created.changed and created["action"] == "create"
    binding = created["identity_binding"]
    assert binding["provisioning_state"] == "Succeeded"
    assert binding["id"].lower() == predicted["id"].lower()
    assert binding["identity_id"].lower() == model.id.lower()
    assert (created["client_id"], created["principal_id"], created["tenant_id"]) == (
        model.client_id,
        model.principal_id,
        model.tenant_id,
    )
    assert created["issuer_url"] == binding["issuer_url"]
    assert created["issuer_url"].endswith(f"/{model.tenant_id}/{model.client_id}")  # azure-behaviour §10
    assert created["credential_name"] == CREDENTIAL
    assert created["diff"] == {"before": {}, "after": binding}
    writes = [(r["method"], r["path"].split("?")[0].rsplit("/", 1)[-1]) for r in lab.writes(seq)]
    assert writes == [("PUT", name)]
    assert bindings_of(sdk, group, cluster) == {name: binding["identity_id"]}
    # AKS's shared credential, on the identity, with the binding's issuer.
    assert credentials_of(sdk, group, identity_name)[CREDENTIAL][0] == created["issuer_url"]

    seq = lab.last_seq()
    again = run_module("aks_identity_binding", args, env=lab.env, diff=True)
    assert not again.failed and not again.changed and again["action"] == "none"
    requests = calls(lab, seq)
    assert len(requests) == 1 and requests[0][0] == "GET" and requests[0][1].endswith(bindings_path)  # one list
    assert again["identity_binding"] == binding
    assert again["diff"] == {"before": binding, "after": binding}

    # The info module: every binding, or one by name; reads only.
    seq = lab.last_seq()
    listed = run_module("aks_identity_binding_info", {"resource_group": group, "cluster_name": cluster}, env=lab.env)
    assert not listed.failed and not listed.changed
    assert listed["identity_bindings"] == [binding] and listed["credential_name"] == CREDENTIAL
    one = run_module(
        "aks_identity_binding_info", {"resource_group": group, "cluster_name": cluster, "name": name}, env=lab.env
    )
    assert one["identity_bindings"] == [binding]
    none = run_module(
        "aks_identity_binding_info", {"resource_group": group, "cluster_name": cluster, "name": "nosuch"}, env=lab.env
    )
    assert not none.failed and none["identity_bindings"] == []
    assert lab.writes(seq) == [] and [m for m, _p in calls(lab, seq)] == ["GET"] * 3

    absent_args = {**args, "state": "absent"}
    seq = lab.last_seq()
    absent_check = run_module("aks_identity_binding", absent_args, env=lab.env, check=True, diff=True)
    assert absent_check.changed and absent_check["action"] == "delete"
    assert absent_check["diff"] == {"before": binding, "after": {}}
    assert lab.writes(seq) == [] and name in bindings_of(sdk, group, cluster)

    seq = lab.last_seq()
    absent = run_module("aks_identity_binding", absent_args, env=lab.env, diff=True)
    assert not absent.failed, absent.output
    assert absent.changed and absent["identity_binding"] == {} and absent["issuer_url"] is None
    assert absent["diff"] == {"before": binding, "after": {}}
    assert [(r["method"], r["path"].split("?")[0].rsplit("/", 1)[-1]) for r in lab.writes(seq)] == [("DELETE", name)]
    assert bindings_of(sdk, group, cluster) == {}
    with pytest.raises(ResourceNotFoundError):
        sdk["aks"].identity_bindings.get(group, cluster, name)
    # AKS does not garbage-collect the credential (identity-bindings-concepts, FAQ).
    assert CREDENTIAL in credentials_of(sdk, group, identity_name)

    seq = lab.last_seq()
    gone = run_module("aks_identity_binding", absent_args, env=lab.env)
    assert not gone.failed and not gone.changed and gone["action"] == "none"
    assert [m for m, _p in calls(lab, seq)] == ["GET"]


def test_identity_by_resource_id_and_wait_false(lab, sdk, group, cluster, identity):
    _identity_name, model = identity
    # The identity provider answers 'resourcegroups'; the module sends the spec's 'resourceGroups'.
    args = {"resource_group": group, "cluster_name": cluster, "identity_id": model.id, "name": "byid", **FAST}
    started = run_module("aks_identity_binding", {**args, "wait": False}, env=lab.env)
    assert not started.failed, started.output
    assert started.changed and started["identity_binding"]["provisioning_state"] == "Creating"
    assert "/resourceGroups/" in started["identity_binding"]["identity_id"]
    settled = eventually(
        lambda: sdk["aks"].identity_bindings.get(group, cluster, "byid"),
        lambda b: b.properties.provisioning_state == "Succeeded",
    )
    assert settled.properties.provisioning_state == "Succeeded"
    again = run_module("aks_identity_binding", args, env=lab.env)
    assert not again.failed and not again.changed
    assert again["identity_binding"]["provisioning_state"] == "Succeeded"
    gone = run_module("aks_identity_binding", {**args, "state": "absent", "wait": False}, env=lab.env)
    assert gone.changed and gone["action"] == "delete"
    assert eventually(lambda: bindings_of(sdk, group, cluster), lambda found: found == {}) == {}


# --- clashes ---------------------------------------------------------------------------------------------------------
def test_an_identity_bound_under_another_name_is_refused_without_a_write(lab, sdk, group, cluster, identity):
    identity_name, model = identity
    sdk_bind(sdk, group, cluster, "legacy", model.id)
    seq = lab.last_seq()
    run = run_module(
        "aks_identity_binding",
        {"resource_group": group, "cluster_name": cluster, "identity_name": identity_name, **FAST},
        env=lab.env,
    )
    assert run.failed and run["error_code"] == "IdentityAlreadyBound"
    assert run["msg"].startswith("name: managed identity") and "Set name: legacy" in run["msg"]
    assert lab.writes(seq) == []
    # Given that name, the binding is found as it is.
    adopted = run_module(
        "aks_identity_binding",
        {"resource_group": group, "cluster_name": cluster, "identity_name": identity_name, "name": "legacy"},
        env=lab.env,
    )
    assert not adopted.failed and not adopted.changed


def test_a_name_taken_by_another_identity_is_refused_without_a_write(lab, sdk, group, cluster, identity):
    _identity_name, model = identity
    other_name, _other = make_identity(sdk, group)
    sdk_bind(sdk, group, cluster, "taken", model.id)
    seq = lab.last_seq()
    args = {"resource_group": group, "cluster_name": cluster, "identity_name": other_name, "name": "taken"}
    for state in ("present", "absent"):
        for check in (True, False):
            run = run_module("aks_identity_binding", {**args, "state": state}, env=lab.env, check=check)
            assert run.failed and run["error_code"] == "IdentityBindingNameTaken", (state, check, run.result)
            assert run["msg"].startswith("name: identity binding 'taken'")
    assert lab.writes(seq) == []
    assert bindings_of(sdk, group, cluster) == {"taken": model.id}


# --- missing parents -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("check", [False, True], ids=["run", "check"])
def test_a_missing_cluster_or_group_is_found_by_reading_and_nothing_is_written(lab, sdk, group, identity, check):
    identity_name, _model = identity
    missing_group = f"rg-ib-missing-{uuid.uuid4().hex[:6]}"
    cases = [
        ({"resource_group": group, "cluster_name": "aks-ib-missing"}, "cluster_name: AKS cluster 'aks-ib-missing'"),
        (
            {"resource_group": missing_group, "cluster_name": "aks-ib-missing", "identity_resource_group": group},
            f"resource_group: resource group '{missing_group}' does not exist",
        ),
    ]
    for module in ("aks_identity_binding", "aks_identity_binding_info"):
        for where, start in cases:
            args = {**where, "identity_name": identity_name} if module == "aks_identity_binding" else dict(where)
            if module == "aks_identity_binding_info":
                args.pop("identity_resource_group", None)
            probed = run_inprocess(lab, module, args, check=check)
            assert probed.failed, (module, probed.result)
            assert probed.msg.startswith(start), (module, probed.msg)
            assert "Traceback" not in probed.msg
            assert probed.writes == []
            assert arm_methods(probed) == ["GET", "GET"], probed.requests  # the list (404), the group


def test_a_missing_cluster_has_nothing_to_delete(lab, group):
    probed = run_inprocess(
        lab,
        "aks_identity_binding",
        {"resource_group": group, "cluster_name": "aks-ib-missing", "name": "x1", "state": "absent"},
    )
    assert not probed.failed and probed.result["changed"] is False, probed.result
    assert probed.writes == []


def test_a_missing_identity_fails_a_run_and_is_a_warning_in_check_mode(lab, sdk, group, cluster, capsys):
    missing_group = f"rg-ib-missing-{uuid.uuid4().hex[:6]}"
    base = {"resource_group": group, "cluster_name": cluster}
    cases = [
        ({"identity_name": f"id-ib-missing-{uuid.uuid4().hex[:6]}"}, "identity_name: managed identity 'id-ib-missing"),
        (
            {"identity_name": "id-ib-x1", "identity_resource_group": missing_group},
            f"identity_resource_group: resource group '{missing_group}' does not exist",
        ),
        (
            {
                "identity_id": f"/subscriptions/{lab.env['AZURE_SUBSCRIPTION_ID']}/resourceGroups/{group}/providers/"
                f"Microsoft.ManagedIdentity/userAssignedIdentities/id-ib-missing-{uuid.uuid4().hex[:6]}"
            },
            "identity_id: managed identity 'id-ib-missing",
        ),
    ]
    for identity_args, start in cases:
        probed = run_inprocess(lab, "aks_identity_binding", {**base, **identity_args})
        assert probed.failed and probed.msg.startswith(start), probed.result
        assert probed.result["error_code"] == "ResourceNotFound"
        assert probed.writes == []
        checked = run_inprocess(lab, "aks_identity_binding", {**base, **identity_args}, check=True)
        assert not checked.failed and checked.result["changed"] is True, checked.result
        assert any(w.startswith(start) for w in warnings_of(checked, capsys)), checked.result
        assert checked.writes == []
    assert bindings_of(sdk, group, cluster) == {}


# --- bad input -------------------------------------------------------------------------------------------------------
BAD_INPUTS = [
    ({"name": "id-orders"}, "name: must be 1-63 lower-case letters or digits"),
    ({"name": "Orders"}, "name:"),
    ({"name": 12}, "name: must be a string"),
    ({"cluster_name": "-aks"}, "cluster_name:"),
    ({"resource_group": "rg."}, "resource_group:"),
    ({"identity_name": "id_orders"}, "identity_name: identity bindings accept only"),
    ({"identity_name": "x"}, "identity_name: must be 3-128"),
    ({"identity_resource_group": "rg_ids"}, "identity_resource_group: identity bindings accept only"),
    ({"resource_group": "rg_apps"}, "resource_group (the identity's resource group): identity bindings accept only"),
    ({"identity_name": None, "identity_id": "/subscriptions/x/resourceGroups/rg"}, "identity_id: must be a user"),
    (
        {"identity_name": None, "identity_id": "{sub}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v1"},
        "identity_id: must be a user",
    ),
    (
        {
            "identity_name": None,
            "identity_id": "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-ids/providers/"
            "Microsoft.ManagedIdentity/userAssignedIdentities/id-x1",
        },
        "identity_id: the identity is in subscription 11111111-1111-1111-1111-111111111111",
    ),
    (
        {"identity_id": "{sub}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/i1"},
        "mutually",
    ),
    ({"identity_name": None}, "identity_id"),
    (
        {"identity_name": None, "name": "x1", "state": "absent", "identity_resource_group": "rg-ids"},
        "required by 'identity_resource_group'",
    ),
    ({"wait_timeout": 0}, "wait_timeout"),
    ({"wait_timeout": 10**12}, "wait_timeout"),
    ({"wait_timeout": True}, "wait_timeout: must be a number"),
    ({"state": "info"}, "state"),
]


@pytest.mark.parametrize(("changes", "fragment"), BAD_INPUTS, ids=[case[1][:40] for case in BAD_INPUTS])
def test_bad_input_is_refused_before_any_request(lab, changes, fragment):
    args = {"resource_group": "rg-apps", "cluster_name": "aks-apps", "identity_name": "id-orders"}
    for key, value in changes.items():
        if value is None:
            args.pop(key, None)
        else:
            sub = f"/subscriptions/{lab.env['AZURE_SUBSCRIPTION_ID']}"
            args[key] = value.replace("{sub}", sub) if isinstance(value, str) else value
    probed = run_inprocess(lab, "aks_identity_binding", args)
    assert probed.failed, probed.result
    assert fragment in probed.msg, probed.msg
    assert "Traceback" not in probed.msg
    assert probed.requests == []  # nothing sent at all, not even a token request


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [({"name": "a-b"}, "name:"), ({"cluster_name": "a b"}, "cluster_name:"), ({"resource_group": "rg."}, "resource_")],
)
def test_bad_input_to_the_info_module_is_refused_before_any_request(lab, changes, fragment):
    probed = run_inprocess(
        lab, "aks_identity_binding_info", {"resource_group": "rg-apps", "cluster_name": "aks-apps", **changes}
    )
    assert probed.failed and fragment in probed.msg, probed.result
    assert probed.requests == []


def test_secret_never_appears_in_verbose_output(lab, sdk, group, cluster, identity):
    secret = lab.env["AZURE_SECRET"]
    identity_name, _model = identity
    args = {"resource_group": group, "cluster_name": cluster, "identity_name": identity_name, **FAST}
    ok = run_module("aks_identity_binding", args, env=lab.env, verbosity=3, diff=True)
    info = run_module("aks_identity_binding_info", {"resource_group": group, "cluster_name": cluster}, env=lab.env)
    failed = run_module("aks_identity_binding", {**args, "name": "other"}, env=lab.env, verbosity=3)
    assert ok.changed and not info.failed and failed.failed
    for run in (ok, info, failed):
        assert secret not in run.output
