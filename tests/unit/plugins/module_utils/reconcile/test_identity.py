"""reconcile/identity.py: the plan for every case, from normalised actual + desired (no network)."""

from __future__ import annotations

import pytest

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import CREATE, DELETE, NONE, UPDATE
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.identity import (
    DesiredIdentity,
    desired_tags,
    identity_id,
    plan,
    same_location,
)

SUB = "11111111-2222-3333-4444-555555555555"
ID = f"/subscriptions/{SUB}/resourcegroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"
ACTUAL = {
    "id": ID,
    "name": "id1",
    "location": "westeurope",
    "tags": {"team": "a", "owner": "x"},
    "client_id": "3f2a9c1b-0d4e-4c6b-9a8f-1e2d3c4b5a69",
    "principal_id": "5e1a0f5c-8b9d-4c3e-a2f1-0d6b7c8e9f10",
    "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
}


def desired(**kwargs) -> DesiredIdentity:
    return DesiredIdentity(resource_group="rg1", name="id1", **kwargs)


def test_identity_id_is_the_azure_resource_id():
    assert identity_id(SUB, "rg1", "id1") == ID


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [("West Europe", "westeurope", True), ("EASTUS", "eastus", True), ("eastus", "eastus2", False), (None, "x", False)],
)
def test_locations_compare_as_arm_stores_them(a, b, same):
    assert same_location(a, b) is same


# --- create ---------------------------------------------------------------------------------------------------------
def test_missing_identity_is_created_in_the_given_location_with_predicted_id():
    decided = plan(None, desired(location="West Europe", tags={"team": "a"}), subscription_id=SUB)
    assert decided.action == CREATE and decided.changed
    assert decided.before is None
    assert decided.after == {
        "id": ID,
        "resource_group": "rg1",
        "name": "id1",
        "location": "westeurope",
        "tags": {"team": "a"},
        "client_id": None,
        "principal_id": None,
        "tenant_id": None,
    }
    assert decided.diff() == {"before": {}, "after": decided.after}


def test_create_uses_the_resolved_resource_group_location_when_none_is_given():
    decided = plan(None, desired(), location="northeurope")
    assert decided.after["location"] == "northeurope"
    assert decided.after["tags"] == {}
    assert decided.after["id"] is None  # no subscription known: not predicted


def test_create_without_any_location_is_refused():
    with pytest.raises(WorkloadIdentityError, match="location: is required"):
        plan(None, desired())


# --- update / no-op -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tags", "purge", "expected"),
    [
        (None, True, {"team": "a", "owner": "x"}),  # tags omitted: untouched
        (None, False, {"team": "a", "owner": "x"}),
        ({"team": "a", "owner": "x"}, True, {"team": "a", "owner": "x"}),
        ({"team": "a"}, False, {"team": "a", "owner": "x"}),  # merge: nothing new
    ],
)
def test_nothing_to_do(tags, purge, expected):
    decided = plan(ACTUAL, desired(tags=tags, purge_tags=purge, location="westeurope"))
    assert decided.action == NONE and not decided.changed
    assert decided.before == decided.after == ACTUAL
    assert expected == ACTUAL["tags"]


@pytest.mark.parametrize(
    ("tags", "purge", "expected"),
    [
        ({"team": "b"}, True, {"team": "b"}),  # exact: owner dropped
        ({"team": "b"}, False, {"team": "b", "owner": "x"}),  # merged
        ({}, True, {}),  # purge all
        ({"new": "1"}, False, {"team": "a", "owner": "x", "new": "1"}),
    ],
)
def test_tag_changes_are_an_update_of_the_tags_only(tags, purge, expected):
    decided = plan(ACTUAL, desired(tags=tags, purge_tags=purge))
    assert decided.action == UPDATE
    assert decided.after == {**ACTUAL, "tags": expected}
    assert decided.before == ACTUAL


def test_empty_tags_without_purge_change_nothing():
    assert plan(ACTUAL, desired(tags={}, purge_tags=False)).action == NONE


def test_location_in_another_spelling_is_not_a_move():
    assert plan(ACTUAL, desired(location="West Europe")).action == NONE


def test_a_different_location_is_refused_before_any_write():
    with pytest.raises(WorkloadIdentityError) as caught:
        plan(ACTUAL, desired(location="eastus"))
    assert caught.value.code == "LocationImmutable"
    assert "location:" in caught.value.message and "'westeurope'" in caught.value.message
    assert "cannot move" in caught.value.message


# --- absent ----------------------------------------------------------------------------------------------------------
def test_absent_and_missing_is_nothing():
    decided = plan(None, desired(state="absent"))
    assert decided.action == NONE and decided.before is None and decided.after is None
    assert decided.diff() == {"before": {}, "after": {}}


def test_absent_and_present_is_a_delete_whatever_the_location():
    decided = plan(ACTUAL, desired(state="absent", location="eastus"))
    assert decided.action == DELETE and decided.before == ACTUAL and decided.after is None


def test_desired_tags_helper():
    assert desired_tags(None, desired(tags=None)) == {}
    assert desired_tags({"a": "1"}, desired(tags={"b": "2"}, purge_tags=False)) == {"a": "1", "b": "2"}
