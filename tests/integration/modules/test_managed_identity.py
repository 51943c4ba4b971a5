"""managed_identity on the lab: check mode -> create -> no-op -> diff -> absent, verified with the MSI SDK client."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import ResourceNotFoundError

from tests.integration.runner import run_module

pytestmark = pytest.mark.lab


def arm_requests(lab, since: int) -> list[dict]:
    """ARM requests since ``since``, without the cloud metadata document (read once per run, not an ARM call)."""
    return [r for r in lab.requests(since) if r["plane"] == "arm" and not r["path"].startswith("/metadata/")]


@pytest.fixture
def name(msi, lab):
    value = f"id-mi-{uuid.uuid4().hex[:10]}"
    yield value
    msi.user_assigned_identities.delete(lab.seed["resource_group"], value)


def test_lifecycle(lab, msi, name):
    rg = lab.seed["resource_group"]
    args = {"resource_group": rg, "name": name, "tags": {"team": "orders", "tier": "1"}}

    seq = lab.last_seq()
    check = run_module("managed_identity", args, env=lab.env, check=True, diff=True)
    assert not check.failed, check.output
    assert check.changed and check["diff"]["before"] == {}
    assert check["managed_identity"]["client_id"] is None
    assert lab.writes(seq) == []
    # A create in check mode reads the identity and the resource group's location, nothing else.
    assert [(r["method"], r["status"]) for r in arm_requests(lab, seq)] == [("GET", 404), ("GET", 200)]
    with pytest.raises(ResourceNotFoundError):
        msi.user_assigned_identities.get(rg, name)

    created = run_module("managed_identity", args, env=lab.env)
    assert not created.failed, created.output
    assert created.changed
    actual = msi.user_assigned_identities.get(rg, name)
    identity = created["managed_identity"]
    assert identity["client_id"] == actual.client_id and identity["principal_id"] == actual.principal_id
    assert identity["tenant_id"] == actual.tenant_id == lab.env["AZURE_TENANT"]
    assert identity["id"] == actual.id and identity["location"] == actual.location
    assert actual.tags == {"team": "orders", "tier": "1"}
    assert check["managed_identity"]["id"].lower() == actual.id.lower()  # check mode predicted the ID

    seq = lab.last_seq()
    again = run_module("managed_identity", args, env=lab.env)
    assert not again.failed and not again.changed
    assert [r["method"] for r in arm_requests(lab, seq)] == ["GET"]  # a no-op run is one GET
    assert again["managed_identity"] == identity

    seq = lab.last_seq()
    merged = run_module(
        "managed_identity",
        {**args, "tags": {"cost": "4711"}, "purge_tags": False},
        env=lab.env,
        diff=True,
    )
    assert merged.changed
    assert merged["diff"]["before"]["tags"] == {"team": "orders", "tier": "1"}
    assert merged["diff"]["after"]["tags"] == {"team": "orders", "tier": "1", "cost": "4711"}
    assert {k: v for k, v in merged["diff"]["after"].items() if k != "tags"} == {
        k: v for k, v in merged["diff"]["before"].items() if k != "tags"
    }
    assert [r["method"] for r in arm_requests(lab, seq)] == ["GET", "PATCH"]
    assert msi.user_assigned_identities.get(rg, name).tags == {"team": "orders", "tier": "1", "cost": "4711"}

    untouched = run_module("managed_identity", {"resource_group": rg, "name": name}, env=lab.env)
    assert not untouched.changed  # tags omitted: left as they are

    seq = lab.last_seq()
    absent_check = run_module("managed_identity", {**args, "state": "absent"}, env=lab.env, check=True, diff=True)
    assert absent_check.changed and absent_check["diff"]["after"] == {}
    assert absent_check["diff"]["before"]["client_id"] == identity["client_id"]
    assert lab.writes(seq) == []
    assert msi.user_assigned_identities.get(rg, name).client_id == identity["client_id"]

    absent = run_module("managed_identity", {**args, "state": "absent"}, env=lab.env)
    assert absent.changed and absent["managed_identity"] == {}
    with pytest.raises(ResourceNotFoundError):
        msi.user_assigned_identities.get(rg, name)

    seq = lab.last_seq()
    gone = run_module("managed_identity", {**args, "state": "absent"}, env=lab.env)
    assert not gone.failed and not gone.changed
    assert [r["method"] for r in arm_requests(lab, seq)] == ["GET"]


def test_location_change_fails_before_any_write(lab, msi, name):
    rg = lab.seed["resource_group"]
    first = run_module("managed_identity", {"resource_group": rg, "name": name, "location": "westeurope"}, env=lab.env)
    assert first.changed and first["managed_identity"]["location"] == "westeurope"
    seq = lab.last_seq()
    moved = run_module("managed_identity", {"resource_group": rg, "name": name, "location": "eastus"}, env=lab.env)
    assert moved.failed and "location:" in moved["msg"] and "cannot move" in moved["msg"]
    assert moved["error_code"] == "LocationImmutable"
    assert lab.writes(seq) == []
    assert msi.user_assigned_identities.get(rg, name).location == "westeurope"


def test_missing_resource_group_fails_before_any_write(lab):
    seq = lab.last_seq()
    run = run_module(
        "managed_identity", {"resource_group": f"rg-missing-{uuid.uuid4().hex[:6]}", "name": "id-x"}, env=lab.env
    )
    assert run.failed and run["error_code"] == "ResourceGroupNotFound" and "rg-missing-" in run["msg"]
    assert lab.writes(seq) == []


def test_invalid_name_fails_before_any_request(lab):
    seq = lab.last_seq()
    run = run_module(
        "managed_identity", {"resource_group": lab.seed["resource_group"], "name": "id.with.dots"}, env=lab.env
    )
    assert run.failed and "name: must be 3-128 letters" in run["msg"]
    assert [r for r in lab.requests(seq) if r["plane"] == "arm"] == []


def test_throttled_and_unavailable_writes_are_retried_by_the_sdk(lab, msi, name):
    """azure-core's RetryPolicy handles 429 (honouring Retry-After) and 503; the module adds no retry of its own."""
    rg = lab.seed["resource_group"]
    path = f"/userAssignedIdentities/{name}$"
    try:
        lab.fault(method="PUT", path=path, status=429, retry_after=1, count=1)
        lab.fault(method="PUT", path=path, status=503, count=1, after=0)
        seq = lab.last_seq()
        run = run_module("managed_identity", {"resource_group": rg, "name": name}, env=lab.env)
        assert not run.failed, run.output
        assert run.changed
        puts = [r["status"] for r in arm_requests(lab, seq) if r["method"] == "PUT"]
        assert puts == [429, 503, 201]
        assert msi.user_assigned_identities.get(rg, name).client_id == run["managed_identity"]["client_id"]
    finally:
        lab.clear_faults()


def test_secret_never_appears_in_verbose_output(lab, name):
    rg = lab.seed["resource_group"]
    secret = lab.env["AZURE_SECRET"]
    run = run_module("managed_identity", {"resource_group": rg, "name": name}, env=lab.env, verbosity=3)
    assert run.changed
    failed = run_module(
        "managed_identity", {"resource_group": rg, "name": name, "location": "westeurope"}, env=lab.env, verbosity=3
    )
    assert failed.failed
    assert secret not in run.output and secret not in failed.output
