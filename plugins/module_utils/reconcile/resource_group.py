# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reconciler of an Azure resource group: read, plan, apply, report.

A no-op run is one GET of the group. Creating it adds one PUT; a tag change one PATCH; a delete one DELETE and,
when waiting, a GET of the deletion's operation status until it ends.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import wait_for_lro
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.azure import (
    ResourceGroups,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import (
    CREATE,
    DELETE,
    NONE,
    UPDATE,
    Plan,
    merge_owned,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    validate_resource_group_name,
)


@dataclass(frozen=True)
class DesiredResourceGroup:
    """What the user asked for. ``location``/``tags`` None mean "not set": keep what is there."""

    name: str
    state: str = "present"
    location: str | None = None
    tags: dict[str, str] | None = None
    purge_tags: bool = True

    @property
    def target(self) -> str:
        return f"'{self.name}'"


def validate_name(name: str) -> list[str]:
    """Azure's naming rule ("field: rule" messages, empty when valid)."""
    return validate_resource_group_name(name, "name")


def check_input(desired: DesiredResourceGroup) -> None:
    """Fail on input Azure would refuse, before any request."""
    errors = validate_name(desired.name)
    if errors:
        raise WorkloadIdentityError("; ".join(errors), code="InvalidParameter", target=desired.target)


def resource_group_id(subscription_id: str, name: str) -> str:
    """The group's resource ID as ARM returns it (``resourceGroups`` in camel case, unlike nested resources)."""
    return f"/subscriptions/{subscription_id}/resourceGroups/{name}"


def normalize_location(location: str | None) -> str | None:
    """ARM stores locations as lower-case names without spaces: "West Europe" is "westeurope"."""
    return location.replace(" ", "").lower() if location else location


def desired_tags(current: t.Mapping[str, str] | None, desired: DesiredResourceGroup) -> dict[str, str]:
    """Tags after the change: unset -> untouched; set + purge_tags -> exactly these; set -> merged in."""
    if desired.tags is None:
        return dict(current or {})
    if desired.purge_tags:
        return dict(desired.tags)
    return merge_owned(current, desired.tags)


# --- plan (pure) ---------------------------------------------------------------------------------------------------
def plan(actual: dict[str, t.Any] | None, desired: DesiredResourceGroup, *, subscription_id: str | None = None) -> Plan:
    """Decide. ``actual`` is the normalised group or None; ``subscription_id`` lets a create predict the ID."""
    check_input(desired)
    if desired.state == "absent":
        return _plan_absent(actual, desired)
    if actual is None:
        return _plan_create(desired, subscription_id)
    location = normalize_location(desired.location)
    if location and location != normalize_location(actual.get("location")):
        raise WorkloadIdentityError(
            f"location: resource group {desired.target} is in {actual.get('location')!r}; Azure cannot move a "
            f"resource group to {location!r}. Omit location or set it to {actual.get('location')!r}",
            code="LocationImmutable",
            target=desired.target,
        )
    after = {**actual, "tags": desired_tags(actual.get("tags"), desired)}
    if after["tags"] == actual.get("tags"):
        return Plan(NONE, actual, actual, reason="the resource group is as requested")
    return Plan(UPDATE, actual, after, reason="the tags differ")


def _plan_absent(actual: dict[str, t.Any] | None, desired: DesiredResourceGroup) -> Plan:
    if actual is None:
        return Plan(NONE, None, None, reason="the resource group does not exist")
    if actual.get("managed_by"):
        # AKS's node resource group (MC_...) is managed by its cluster: ARM refuses to delete it directly
        # (DeniedByManagedResourceGroup in practice); say what to delete instead, before writing anything.
        raise WorkloadIdentityError(
            f"Resource group {desired.target} is managed by {actual['managed_by']}; delete that resource instead, "
            "which deletes the group with it",
            code="ManagedResourceGroup",
            target=desired.target,
        )
    return Plan(DELETE, actual, None, reason="the resource group exists")


def _plan_create(desired: DesiredResourceGroup, subscription_id: str | None) -> Plan:
    if not desired.location:
        raise WorkloadIdentityError(
            f"location: is required to create resource group {desired.target}", code="InvalidParameter"
        )
    after = {
        "id": resource_group_id(subscription_id, desired.name) if subscription_id else None,
        "name": desired.name,
        "location": normalize_location(desired.location),
        "tags": desired_tags(None, desired),
        "managed_by": None,
        "provisioning_state": "Succeeded",
    }
    return Plan(CREATE, None, after, reason="the resource group does not exist")


# --- apply (through the gateway) -----------------------------------------------------------------------------------
def read_resource_group(azure: t.Any, name: str) -> dict[str, t.Any] | None:
    return ResourceGroups(azure).get(name)


def apply(
    azure: t.Any, desired: DesiredResourceGroup, decided: Plan, *, wait: bool = True, wait_timeout: float = 1800
) -> dict[str, t.Any] | None:
    """Carry out a plan; the group as Azure returns it afterwards (None once deleted or while being deleted)."""
    groups = ResourceGroups(azure)
    after = decided.after or {}
    if decided.action == CREATE:
        return groups.create_or_update(desired.name, after["location"], after["tags"])
    if decided.action == UPDATE:
        return groups.update_tags(desired.name, after["tags"])
    if decided.action == DELETE:
        # ARM deletes a group asynchronously (202 + Location), taking every resource in it along.
        poller = groups.begin_delete(desired.name, wait=wait)
        if poller is not None and wait:
            wait_for_lro(poller, wait_timeout, f"delete resource group {desired.target}")
        return None
    return decided.after


def reconcile(
    azure: t.Any, desired: DesiredResourceGroup, *, wait: bool = True, wait_timeout: float = 1800
) -> tuple[Plan, dict[str, t.Any] | None]:
    """Read, plan, apply unless in check mode. Returns the plan and the group afterwards (None when absent)."""
    check_input(desired)  # before the first request
    actual = read_resource_group(azure, desired.name)
    decided = plan(actual, desired, subscription_id=azure.subscription_id)
    if azure.check_mode or not decided.changed:
        return decided, decided.after
    return decided, apply(azure, desired, decided, wait=wait, wait_timeout=wait_timeout)
