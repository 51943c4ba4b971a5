# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reconciler of a user-assigned managed identity: read, plan, apply, report.

A no-op run is one GET of the identity. Creating it adds one GET of the resource group (it must exist: found
missing by reading, not by a failed PUT; its location is the default) and one PUT; a tag change is one PATCH; a
delete is one DELETE.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.azure import (
    Identities,
    ResourceGroups,
    identity_id,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import (
    CREATE,
    DELETE,
    NONE,
    UPDATE,
    Plan,
    merge_owned,
)


@dataclass(frozen=True)
class DesiredIdentity:
    """What the user asked for. ``location``/``tags`` None mean "not set": keep what is there."""

    resource_group: str
    name: str
    state: str = "present"
    location: str | None = None
    tags: dict[str, str] | None = None
    purge_tags: bool = True

    @property
    def target(self) -> str:
        return f"'{self.name}' in resource group '{self.resource_group}'"


def same_location(a: str | None, b: str | None) -> bool:
    """ARM stores locations as lower-case names without spaces: "West Europe" is "westeurope"."""
    return (a or "").replace(" ", "").lower() == (b or "").replace(" ", "").lower()


def desired_tags(current: t.Mapping[str, str] | None, desired: DesiredIdentity) -> dict[str, str]:
    """Tags after the change: unset -> untouched; set + purge_tags -> exactly these; set -> merged in."""
    if desired.tags is None:
        return dict(current or {})
    if desired.purge_tags:
        return dict(desired.tags)
    return merge_owned(current, desired.tags)


# --- plan (pure) ---------------------------------------------------------------------------------------------------
def plan(
    actual: dict[str, t.Any] | None,
    desired: DesiredIdentity,
    *,
    location: str | None = None,
    subscription_id: str | None = None,
) -> Plan:
    """Decide. ``actual`` is the normalised identity or None; ``location`` the one to create in (needed only for
    a create, resolved by the caller); ``subscription_id`` lets a create predict the ID."""
    if desired.state == "absent":
        if actual is None:
            return Plan(NONE, None, None, reason="the identity does not exist")
        return Plan(DELETE, actual, None, reason="the identity exists")
    if actual is None:
        return _plan_create(desired, location or desired.location, subscription_id)
    if desired.location and not same_location(desired.location, actual.get("location")):
        raise WorkloadIdentityError(
            f"location: managed identity {desired.target} is in {actual.get('location')!r}; Azure cannot move a "
            f"user-assigned managed identity to {desired.location!r}. Omit location (or set it to "
            f"{actual.get('location')!r}), or delete the identity and create it again, which gives it a new client ID "
            "and principal ID: its federated credentials, role assignments and ServiceAccount annotations must then "
            "be made again",
            code="LocationImmutable",
            target=desired.target,
        )
    after = {**actual, "tags": desired_tags(actual.get("tags"), desired)}
    if after["tags"] == actual.get("tags"):
        return Plan(NONE, actual, actual, reason="the identity is as requested")
    return Plan(UPDATE, actual, after, reason="the tags differ")


def _plan_create(desired: DesiredIdentity, location: str | None, subscription_id: str | None) -> Plan:
    if not location:
        raise WorkloadIdentityError(
            f"location: is required to create managed identity {desired.target}", code="InvalidParameter"
        )
    after = {
        "id": identity_id(subscription_id, desired.resource_group, desired.name) if subscription_id else None,
        "name": desired.name,
        "resource_group": desired.resource_group,
        "location": location.replace(" ", "").lower(),  # as ARM stores it
        "tags": desired_tags(None, desired),
        # Azure makes these on create; unknown until then (check mode).
        "client_id": None,
        "principal_id": None,
        "tenant_id": None,
    }
    return Plan(CREATE, None, after, reason="the identity does not exist")


# --- read and apply (the SDK boundary) ----------------------------------------------------------------------------
def resource_group_location(azure: t.Any, resource_group: str) -> str:
    """The location of a resource group, which must exist: where an identity goes when none is given. One GET."""
    group = ResourceGroups(azure).get(resource_group)
    if group is None:
        raise WorkloadIdentityError(
            f"resource_group: resource group '{resource_group}' does not exist; create it first",
            code="ResourceGroupNotFound",
            status=404,
            target=resource_group,
        )
    return group["location"]


def apply(azure: t.Any, desired: DesiredIdentity, decided: Plan) -> dict[str, t.Any] | None:
    """Carry out a plan; the identity as Azure returns it afterwards (None once deleted)."""
    identities = Identities(azure)
    after = decided.after or {}
    if decided.action == CREATE:
        return identities.create_or_update(desired.resource_group, desired.name, after["location"], after["tags"])
    if decided.action == UPDATE:
        return identities.update_tags(desired.resource_group, desired.name, after["tags"])
    if decided.action == DELETE:
        identities.delete(desired.resource_group, desired.name)
        return None
    return decided.after


def reconcile(azure: t.Any, desired: DesiredIdentity) -> tuple[Plan, dict[str, t.Any] | None]:
    """Read, plan, apply unless in check mode. Returns the plan and the identity afterwards (None when absent)."""
    actual = Identities(azure).get(desired.resource_group, desired.name)
    location = desired.location
    if actual is None and desired.state == "present":
        # A 404 on the identity may mean its group is missing too; a PUT would then fail (ResourceGroupNotFound)
        # after the fact, so read the group first, in check mode too.
        group_location = resource_group_location(azure, desired.resource_group)
        location = location or group_location
    decided = plan(actual, desired, location=location, subscription_id=azure.subscription_id)
    if azure.check_mode or not decided.changed:
        return decided, decided.after
    return decided, apply(azure, desired, decided)
