"""resource_group on the lab: check mode -> create -> no-op -> diff -> absent (with what is inside), verified with
the Resource Management SDK client and the emulator's state."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.resource.resources import ResourceManagementClient

from tests.integration.runner import run_module

pytestmark = pytest.mark.lab


def arm_requests(lab, since: int) -> list[dict]:
    """ARM requests since ``since``, without the cloud metadata document (read once per run, not an ARM call)."""
    return [r for r in lab.requests(since) if r["plane"] == "arm" and not r["path"].startswith("/metadata/")]


def _client_kwargs(lab) -> tuple[ClientSecretCredential, dict]:
    env = lab.env
    credential = ClientSecretCredential(
        env["AZURE_TENANT"],
        env["AZURE_CLIENT_ID"],
        env["AZURE_SECRET"],
        authority=lab.emulator_url,
        disable_instance_discovery=True,
        connection_verify=env["AZURE_CA_BUNDLE"],
    )
    return credential, {
        "base_url": lab.emulator_url,
        "credential_scopes": ["https://management.core.windows.net/.default"],
        "connection_verify": env["AZURE_CA_BUNDLE"],
    }


@pytest.fixture(scope="module")
def resources(lab) -> ResourceManagementClient:
    """An SDK client of our own, to check what the module did without asking the module."""
    credential, kwargs = _client_kwargs(lab)
    return ResourceManagementClient(credential, lab.env["AZURE_SUBSCRIPTION_ID"], **kwargs)


@pytest.fixture(scope="module")
def msi(lab) -> ManagedServiceIdentityClient:
    credential, kwargs = _client_kwargs(lab)
    return ManagedServiceIdentityClient(credential, lab.env["AZURE_SUBSCRIPTION_ID"], **kwargs)


@pytest.fixture
def name(resources):
    value = f"rg-test-{uuid.uuid4().hex[:10]}"
    yield value
    if resources.resource_groups.check_existence(value):
        resources.resource_groups.begin_delete(value).result()


def test_lifecycle(lab, resources, msi, name):
    args = {"name": name, "location": "East US", "tags": {"purpose": "test", "n": "1"}}

    seq = lab.last_seq()
    check = run_module("resource_group", args, env=lab.env, check=True, diff=True)
    assert not check.failed, check.output
    assert check.changed and check["diff"]["before"] == {}
    assert check["resource_group"]["location"] == "eastus"
    assert lab.writes(seq) == []
    assert [(r["method"], r["status"]) for r in arm_requests(lab, seq)] == [("GET", 404)]
    assert not resources.resource_groups.check_existence(name)

    created = run_module("resource_group", args, env=lab.env)
    assert not created.failed, created.output
    assert created.changed
    actual = resources.resource_groups.get(name)
    group = created["resource_group"]
    assert group["id"] == actual.id == check["resource_group"]["id"]  # check mode predicted the ID
    assert actual.location == "eastus" and actual.tags == {"purpose": "test", "n": "1"}
    assert group["provisioning_state"] == "Succeeded"

    seq = lab.last_seq()
    again = run_module("resource_group", args, env=lab.env)
    assert not again.failed and not again.changed
    assert [r["method"] for r in arm_requests(lab, seq)] == ["GET"]  # a no-op run is one GET
    assert again["resource_group"] == group

    seq = lab.last_seq()
    merged = run_module(
        "resource_group", {"name": name, "tags": {"owner": "me"}, "purge_tags": False}, env=lab.env, diff=True
    )
    assert merged.changed
    assert merged["diff"]["before"]["tags"] == {"purpose": "test", "n": "1"}
    assert merged["diff"]["after"]["tags"] == {"purpose": "test", "n": "1", "owner": "me"}
    assert [r["method"] for r in arm_requests(lab, seq)] == ["GET", "PATCH"]
    assert resources.resource_groups.get(name).tags == {"purpose": "test", "n": "1", "owner": "me"}

    # Deleting a group deletes what is in it: an identity, here.
    identity = run_module("managed_identity", {"resource_group": name, "name": "id-inside"}, env=lab.env)
    assert identity.changed, identity.output

    seq = lab.last_seq()
    absent_check = run_module("resource_group", {"name": name, "state": "absent"}, env=lab.env, check=True, diff=True)
    assert absent_check.changed and absent_check["diff"]["after"] == {}
    assert absent_check["diff"]["before"]["name"] == name
    assert lab.writes(seq) == []
    assert resources.resource_groups.check_existence(name)

    seq = lab.last_seq()
    absent = run_module("resource_group", {"name": name, "state": "absent"}, env=lab.env)
    assert not absent.failed, absent.output
    assert absent.changed and absent["resource_group"] == {}
    methods = [r["method"] for r in arm_requests(lab, seq)]
    assert methods[:2] == ["GET", "DELETE"] and set(methods[2:]) <= {"GET"}  # then polls the deletion
    assert not resources.resource_groups.check_existence(name)
    with pytest.raises(ResourceNotFoundError):
        msi.user_assigned_identities.get(name, "id-inside")
    assert not [key for key in lab.state()["resources"] if f"/resourcegroups/{name.lower()}" in key]

    seq = lab.last_seq()
    gone = run_module("resource_group", {"name": name, "state": "absent"}, env=lab.env)
    assert not gone.failed and not gone.changed
    assert [r["method"] for r in arm_requests(lab, seq)] == ["GET"]


def test_location_change_fails_before_any_write(lab, resources, name):
    first = run_module("resource_group", {"name": name, "location": "eastus"}, env=lab.env)
    assert first.changed, first.output
    seq = lab.last_seq()
    moved = run_module("resource_group", {"name": name, "location": "westus"}, env=lab.env)
    assert moved.failed and moved["error_code"] == "LocationImmutable" and "cannot move" in moved["msg"]
    assert lab.writes(seq) == []
    assert resources.resource_groups.get(name).location == "eastus"


def test_create_without_location_fails_before_any_write(lab, name):
    seq = lab.last_seq()
    run = run_module("resource_group", {"name": name}, env=lab.env)
    assert run.failed and run["msg"].startswith("location: is required")
    assert lab.writes(seq) == []


def test_throttled_delete_is_retried_by_the_sdk(lab, resources, name):
    """azure-core's RetryPolicy handles 429 (honouring Retry-After); the module adds no retry of its own."""
    assert run_module("resource_group", {"name": name, "location": "eastus"}, env=lab.env).changed
    try:
        lab.fault(method="DELETE", path=f"/resourcegroups/{name}$", status=429, retry_after=1, count=1)
        seq = lab.last_seq()
        run = run_module("resource_group", {"name": name, "state": "absent"}, env=lab.env)
        assert not run.failed, run.output
        deletes = [r["status"] for r in arm_requests(lab, seq) if r["method"] == "DELETE"]
        assert deletes == [429, 202]
        assert not resources.resource_groups.check_existence(name)
    finally:
        lab.clear_faults()
