# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Azure gateways: clusters, resource groups, user-assigned identities, federated credentials, role assignments and
definitions, key vaults, AKS identity bindings. Each method is one SDK call (one request, or one per page of a list),
its normalisation and its error translation; nothing here decides anything.

``azure`` is an ``AzureModule`` (or anything with its client properties: ``msi``, ``authorization``,
``containerservice``, ``resources``, ``keyvault_mgmt``, ``subscription_id``, ``polling_interval``, ``calls``).

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import enum
import time
import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import (
    CODE_CONCURRENT_FIC_WRITES,
    azure_call,
    azure_error_code,
    azure_error_parts,
    is_azure_not_found,
    wait_for_lro,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError, retry
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways import ApiCalls
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    BUILTIN_ROLES,
    role_definition_guid,
    sort_permissions,
)

try:
    from azure.core import MatchConditions
    from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters
except ImportError:  # AzureModule.require() reports the missing package before any call
    MatchConditions = RoleAssignmentCreateParameters = None
try:
    from azure.mgmt.containerservice import models as aks_models
except ImportError:
    aks_models = None
try:
    from azure.mgmt.keyvault.models import (
        AccessPolicyEntry,
        Permissions,
        VaultAccessPolicyParameters,
        VaultAccessPolicyProperties,
    )
except ImportError:
    AccessPolicyEntry = Permissions = VaultAccessPolicyParameters = VaultAccessPolicyProperties = None

IDENTITY_PROVIDER = "Microsoft.ManagedIdentity/userAssignedIdentities"
_BUILTIN_NAMES = {guid: name for name, guid in BUILTIN_ROLES.items()}
# azure-behaviour §4: 400 when a second credential on one identity has the same (issuer, subject).
_DUPLICATE_PAIR = "issuer and subject combination already exists"
# GET of a role definition that does not exist: 404 RoleDefinitionDoesNotExist (the code AzAPICall handles since
# github.com/JulianHayward/AzAPICall/pull/23; the spec, authorization-RoleDefinitionsCalls.json, names no code).
_ROLE_DEFINITION_MISSING = "RoleDefinitionDoesNotExist"


def _counter(azure: t.Any, calls: ApiCalls | None) -> ApiCalls:
    """The counter to count in: the one given, else the module's (``azure.calls``), else a private one."""
    if calls is not None:
        return calls
    found = getattr(azure, "calls", None)
    return found if isinstance(found, ApiCalls) else ApiCalls()


def _pages(calls: ApiCalls, operation: str, pager: t.Any) -> list[t.Any]:
    """Every item of an azure-core ItemPaged, counting one request per page."""
    items: list[t.Any] = []
    for page in pager.by_page():
        calls.add(operation)
        items.extend(page)
    return items


def _data(model: t.Any) -> dict[str, t.Any]:
    return model.as_dict() if hasattr(model, "as_dict") else dict(model or {})


def _plain(value: t.Any) -> t.Any:
    return value.value if isinstance(value, enum.Enum) else value


def resource_group_of(resource_id: str | None) -> str | None:
    """The resource group named in an ARM ID (``resourceGroups`` in any case), or None."""
    parts = (resource_id or "").split("/")
    lowered = [p.lower() for p in parts]
    return parts[lowered.index("resourcegroups") + 1] if "resourcegroups" in lowered[:-1] else None


class _Gateway:
    def __init__(self, azure: t.Any, calls: ApiCalls | None = None) -> None:
        self.azure = azure
        self.calls = _counter(azure, calls)

    def _call(self, operation: str, call: t.Callable[[], t.Any], action: str, target: str, **kwargs: t.Any) -> t.Any:
        self.calls.add(operation)
        return azure_call(call, action, target, **kwargs)


# --- Resource groups ------------------------------------------------------------------------------------------
def normalize_resource_group(group: t.Any) -> dict[str, t.Any]:
    """An azure-mgmt-resource ResourceGroup model (or its REST dict) as the collection returns it."""
    data = _data(group)
    properties = data.get("properties") or {}
    return {
        "id": data.get("id"),
        "name": data.get("name"),
        "location": data.get("location"),
        "tags": dict(data.get("tags") or {}),
        "managed_by": data.get("managed_by", data.get("managedBy")),
        "provisioning_state": properties.get("provisioning_state", properties.get("provisioningState")),
    }


class ResourceGroups(_Gateway):
    def get(self, name: str) -> dict[str, t.Any] | None:
        """The group, or None when it does not exist. One GET."""
        found = self._call(
            "resources.resource_groups.get",
            lambda: self.azure.resources.resource_groups.get(name),
            "read resource group",
            f"'{name}'",
            none_if_not_found=True,
        )
        return normalize_resource_group(found) if found is not None else None

    def create_or_update(self, name: str, location: str, tags: dict[str, str]) -> dict[str, t.Any]:
        created = self._call(
            "resources.resource_groups.create_or_update",
            lambda: self.azure.resources.resource_groups.create_or_update(name, {"location": location, "tags": tags}),
            "create resource group",
            f"'{name}'",
        )
        return normalize_resource_group(created)

    def update_tags(self, name: str, tags: dict[str, str]) -> dict[str, t.Any]:
        # PATCH (ResourceGroupPatchable) replaces the tags and leaves the rest alone; a PUT would reset managedBy.
        updated = self._call(
            "resources.resource_groups.update",
            lambda: self.azure.resources.resource_groups.update(name, {"tags": tags}),
            "update the tags of resource group",
            f"'{name}'",
        )
        return normalize_resource_group(updated)

    def begin_delete(self, name: str, *, wait: bool) -> t.Any:
        """The deletion's poller, or None when the group is already gone (ARM deletes asynchronously, 202)."""
        return self._call(
            "resources.resource_groups.begin_delete",
            lambda: self.azure.resources.resource_groups.begin_delete(
                name, polling_interval=self.azure.polling_interval, polling=wait
            ),
            "delete resource group",
            f"'{name}'",
            none_if_not_found=True,
        )


# --- User-assigned managed identities -------------------------------------------------------------------------
def identity_id(subscription_id: str, resource_group: str, name: str) -> str:
    """The identity's resource ID as Azure returns it (lower-case ``resourcegroups``, azure-behaviour §2)."""
    return f"/subscriptions/{subscription_id}/resourcegroups/{resource_group}/providers/{IDENTITY_PROVIDER}/{name}"


def normalize_identity(identity: t.Any) -> dict[str, t.Any]:
    """An azure-mgmt-msi Identity model (or its REST dict) as the collection returns it."""
    data = _data(identity)
    properties = data.get("properties") or {}
    return {
        "id": data.get("id"),
        "name": data.get("name"),
        "resource_group": resource_group_of(data.get("id")),
        "location": data.get("location"),
        "tags": dict(data.get("tags") or {}),
        "client_id": data.get("client_id") or properties.get("clientId"),
        "principal_id": data.get("principal_id") or properties.get("principalId"),
        "tenant_id": data.get("tenant_id") or properties.get("tenantId"),
    }


def _identity_target(resource_group: str, name: str) -> str:
    return f"'{name}' in resource group '{resource_group}'"


class Identities(_Gateway):
    def get(self, resource_group: str, name: str) -> dict[str, t.Any] | None:
        """The identity, or None when it (or its resource group) does not exist. One GET."""
        found = self._call(
            "msi.user_assigned_identities.get",
            lambda: self.azure.msi.user_assigned_identities.get(resource_group, name),
            "read managed identity",
            _identity_target(resource_group, name),
            none_if_not_found=True,
        )
        return normalize_identity(found) if found is not None else None

    def list_in_resource_group(self, resource_group: str) -> list[dict[str, t.Any]] | None:
        """Every identity of the group (one request per page), or None when the group does not exist."""
        operations = self.azure.msi.user_assigned_identities
        found = azure_call(
            lambda: _pages(
                self.calls,
                "msi.user_assigned_identities.list_by_resource_group",
                operations.list_by_resource_group(resource_group),
            ),
            "list the managed identities of resource group",
            f"'{resource_group}'",
            none_if_not_found=True,
        )
        return None if found is None else [normalize_identity(i) for i in found]

    def list_in_subscription(self) -> list[dict[str, t.Any]]:
        operations = self.azure.msi.user_assigned_identities
        found = azure_call(
            lambda: _pages(
                self.calls, "msi.user_assigned_identities.list_by_subscription", operations.list_by_subscription()
            ),
            "list managed identities",
            f"in subscription '{self.azure.subscription_id}'",
        )
        return [normalize_identity(i) for i in found]

    def find_by_client_id(self, client_id: str) -> dict[str, t.Any] | None:
        """The identity with this client ID: one list of the subscription's identities (paged)."""
        for identity in self.list_in_subscription():
            if str(identity.get("client_id") or "").lower() == client_id.lower():
                return identity
        return None

    def create_or_update(self, resource_group: str, name: str, location: str, tags: dict[str, str]) -> dict[str, t.Any]:
        created = self._call(
            "msi.user_assigned_identities.create_or_update",
            lambda: self.azure.msi.user_assigned_identities.create_or_update(
                resource_group, name, {"location": location, "tags": tags}
            ),
            "create managed identity",
            _identity_target(resource_group, name),
        )
        return normalize_identity(created)

    def update_tags(self, resource_group: str, name: str, tags: dict[str, str]) -> dict[str, t.Any]:
        # PATCH (IdentityUpdate) replaces the tags and leaves everything else alone.
        updated = self._call(
            "msi.user_assigned_identities.update",
            lambda: self.azure.msi.user_assigned_identities.update(resource_group, name, {"tags": tags}),
            "update the tags of managed identity",
            _identity_target(resource_group, name),
        )
        return normalize_identity(updated)

    def delete(self, resource_group: str, name: str) -> None:
        """Delete the identity; Azure deletes its federated credentials with it (not its role assignments)."""
        self._call(
            "msi.user_assigned_identities.delete",
            lambda: self.azure.msi.user_assigned_identities.delete(resource_group, name),
            "delete managed identity",
            _identity_target(resource_group, name),
            none_if_not_found=True,
        )


# --- Federated identity credentials ---------------------------------------------------------------------------
def normalize_credential(credential: t.Any) -> dict[str, t.Any]:
    """An azure-mgmt-msi FederatedIdentityCredential model (or its REST dict) as the collection returns it."""
    data = _data(credential)
    properties = data.get("properties") or {}
    return {
        "id": data.get("id"),
        "name": data.get("name"),
        "issuer": data.get("issuer", properties.get("issuer")),
        "subject": data.get("subject", properties.get("subject")),
        "audiences": list(data.get("audiences", properties.get("audiences")) or []),
    }


def credential_id(identity: str, name: str) -> str:
    return f"{identity}/federatedIdentityCredentials/{name}"


def is_parent_missing(exc: BaseException) -> bool:
    """azure-behaviour §4: a credential write on an identity Azure does not see (yet) gets 404 "The parent
    user-assigned identity doesn't exist." Its code is UNVERIFIED (ARM's nested-resource 404 is
    ParentResourceNotFound), so any "not found" 404 counts, except a missing resource group, which no wait will fix."""
    return is_azure_not_found(exc) and azure_error_code(exc) != "ResourceGroupNotFound"


def is_concurrent_write(exc: BaseException) -> bool:
    """azure-behaviour §4: 409 ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity, another write
    on the identity."""
    return azure_error_code(exc) == CODE_CONCURRENT_FIC_WRITES


def is_duplicate_pair(exc: BaseException | None) -> bool:
    """azure-behaviour §4: 400 "Issuer and subject combination already exists for this Managed Identity."."""
    if exc is None or getattr(exc, "status_code", None) != 400:
        return False
    return _DUPLICATE_PAIR in azure_error_parts(exc)[1].lower()


class FederatedCredentials(_Gateway):
    def list(self, resource_group: str, identity_name: str) -> list[dict[str, t.Any]] | None:
        """All credentials of the identity (every page), or None when the identity is not found."""
        operations = self.azure.msi.federated_identity_credentials
        found = azure_call(
            lambda: _pages(
                self.calls, "msi.federated_identity_credentials.list", operations.list(resource_group, identity_name)
            ),
            "list the federated credentials of managed identity",
            _identity_target(resource_group, identity_name),
            none_if_not_found=True,
        )
        return None if found is None else [normalize_credential(c) for c in found]

    def put(
        self,
        resource_group: str,
        identity_name: str,
        credential: dict[str, t.Any],
        *,
        action: str = "create",
        retry_timeout: float = 60.0,
        identity_known: bool = False,
    ) -> dict[str, t.Any]:
        """Create or update one credential. Retried (jittered) for at most ``retry_timeout`` seconds on what
        azure-core does not retry: a concurrent write on the identity (409), and, only for an identity known to exist
        (``identity_known``: created by this run or read moments ago), Azure not seeing it yet (404); a 404 on any
        other identity means it is missing, which no wait cures. 429 and 5xx are azure-core's."""
        operations = self.azure.msi.federated_identity_credentials
        name = credential["name"]
        body = {"issuer": credential["issuer"], "subject": credential["subject"], "audiences": credential["audiences"]}

        def transient(exc: BaseException) -> bool:
            return is_concurrent_write(exc) or (identity_known and is_parent_missing(exc))

        def attempt() -> t.Any:
            self.calls.add("msi.federated_identity_credentials.create_or_update")
            return operations.create_or_update(resource_group, identity_name, name, body)

        written = azure_call(
            lambda: _writes_retry(attempt, transient, retry_timeout),
            f"{action} federated credential '{name}' on managed identity",
            _identity_target(resource_group, identity_name),
        )
        return normalize_credential(written)

    def delete(self, resource_group: str, identity_name: str, name: str, *, retry_timeout: float = 60.0) -> None:
        """Delete one credential; a 404 means it (or its identity) is gone already."""
        operations = self.azure.msi.federated_identity_credentials

        def attempt() -> t.Any:
            self.calls.add("msi.federated_identity_credentials.delete")
            return operations.delete(resource_group, identity_name, name)

        azure_call(
            lambda: _writes_retry(attempt, is_concurrent_write, retry_timeout),
            f"delete federated credential '{name}' on managed identity",
            _identity_target(resource_group, identity_name),
            none_if_not_found=True,
        )


def _writes_retry(
    call: t.Callable[[], t.Any], should_retry: t.Callable[[BaseException], bool], timeout: float
) -> t.Any:
    # Writes on one identity are serialised by Azure; short jittered waits let parallel writers interleave.
    return retry(call, should_retry=should_retry, timeout=timeout, initial_delay=0.5, max_delay=8.0, sleep=_sleep)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # looked up per call, so tests can stub the clock


# --- Role assignments and definitions -------------------------------------------------------------------------
def normalize_role_assignment(assignment: t.Any, role_name: str | None = None) -> dict[str, t.Any]:
    """An azure-mgmt-authorization RoleAssignment (or its flat or ARM-shaped dict) as this collection returns it."""
    data = _data(assignment)
    properties = data.get("properties") or {}

    def field(snake: str, camel: str) -> t.Any:
        return data.get(snake) if data.get(snake) is not None else properties.get(camel)

    definition_id = field("role_definition_id", "roleDefinitionId")
    guid = role_definition_guid(definition_id or "")
    return {
        "id": data.get("id"),
        "name": data.get("name"),
        "scope": field("scope", "scope"),
        "role_definition_id": definition_id,
        "role_name": role_name or _BUILTIN_NAMES.get(guid or ""),
        "principal_id": field("principal_id", "principalId"),
        "principal_type": field("principal_type", "principalType"),
    }


class RoleAssignments(_Gateway):
    def list_for_principal(self, scope: str, principal_id: str) -> list[dict[str, t.Any]]:
        """One list: the principal's assignments at, above and below the scope."""
        operations = self.azure.authorization.role_assignments
        found = azure_call(
            lambda: _pages(
                self.calls,
                "authorization.role_assignments.list_for_scope",
                operations.list_for_scope(scope, filter=f"principalId eq '{principal_id}'"),
            ),
            "list role assignments",
            f"of principal '{principal_id}' at scope '{scope}'",
        )
        return [normalize_role_assignment(a) for a in found]

    def list_at_scope(self, scope: str) -> list[dict[str, t.Any]]:
        """One list for every principal: the assignments at or above the scope (``$filter=atScope()``); many
        workloads granted at one scope are read in one request (per page)."""
        operations = self.azure.authorization.role_assignments
        found = azure_call(
            lambda: _pages(
                self.calls,
                "authorization.role_assignments.list_for_scope",
                operations.list_for_scope(scope, filter="atScope()"),
            ),
            "list role assignments",
            f"at scope '{scope}'",
        )
        return [normalize_role_assignment(a) for a in found]

    def list_in_subscription(self) -> list[dict[str, t.Any]]:
        """Every assignment of the subscription (at, above and below it)."""
        operations = self.azure.authorization.role_assignments
        found = azure_call(
            lambda: _pages(
                self.calls, "authorization.role_assignments.list_for_subscription", operations.list_for_subscription()
            ),
            "list role assignments",
            f"in subscription '{self.azure.subscription_id}'",
        )
        return [normalize_role_assignment(a) for a in found]

    def create(
        self,
        scope: str,
        name: str,
        role_definition_id: str,
        principal_id: str,
        principal_type: str,
        *,
        retry_while: t.Callable[[BaseException], bool] | None = None,
        retry_timeout: float = 0.0,
        description: str = "",
    ) -> dict[str, t.Any]:
        parameters = RoleAssignmentCreateParameters(
            role_definition_id=role_definition_id, principal_id=principal_id, principal_type=principal_type
        )

        def attempt() -> t.Any:
            self.calls.add("authorization.role_assignments.create")
            return self.azure.authorization.role_assignments.create(scope, name, parameters)

        created = azure_call(
            lambda: retry(
                attempt, should_retry=retry_while or (lambda exc: False), timeout=retry_timeout, sleep=_sleep
            ),
            "create role assignment",
            description or f"'{name}' at scope '{scope}'",
        )
        return normalize_role_assignment(created)

    def delete(self, scope: str, name: str) -> None:
        """Delete one assignment; already gone is fine."""
        self._call(
            "authorization.role_assignments.delete",
            lambda: self.azure.authorization.role_assignments.delete(scope, name),
            "delete role assignment",
            f"'{name}' at scope '{scope}'",
            none_if_not_found=True,
        )


def _definition_fields(definition: t.Any) -> tuple[str | None, str | None]:
    data = _data(definition)
    name = data.get("role_name") or (data.get("properties") or {}).get("roleName")
    guid = role_definition_guid(data.get("id") or "") or role_definition_guid(data.get("name") or "")
    return guid, name if isinstance(name, str) else None


class RoleDefinitions(_Gateway):
    def find_by_name(self, scope: str, role_name: str) -> dict[str, str]:
        """``{guid: name}`` of the definitions visible at the scope with exactly this name (case-insensitive):
        one list with ``$filter=roleName eq '<name>'``."""
        quoted = role_name.replace("'", "''")  # OData string literal
        definitions = azure_call(
            lambda: _pages(
                self.calls,
                "authorization.role_definitions.list",
                self.azure.authorization.role_definitions.list(scope, filter=f"roleName eq '{quoted}'"),
            ),
            "look up role definition",
            f"'{role_name}' at scope '{scope}'",
        )
        named = {}
        for definition in definitions:
            guid, name = _definition_fields(definition)
            if guid and name and name.lower() == role_name.lower():
                named[guid] = name
        return named

    def names(self, scope: str) -> dict[str, str]:
        """``{guid: name}`` of every definition visible at the scope (one list, paged)."""
        definitions = azure_call(
            lambda: _pages(
                self.calls, "authorization.role_definitions.list", self.azure.authorization.role_definitions.list(scope)
            ),
            "list role definitions",
            f"at scope '{scope}'",
        )
        found = {}
        for definition in definitions:
            guid, name = _definition_fields(definition)
            if guid and name:
                found[guid] = name
        return found

    def get(self, definition_id: str) -> dict[str, str | None] | None:
        """``{"guid", "name"}`` of one definition by its ID, or None when it does not exist (404
        RoleDefinitionDoesNotExist). One GET."""
        try:
            definition = self._call(
                "authorization.role_definitions.get_by_id",
                lambda: self.azure.authorization.role_definitions.get_by_id(definition_id),
                "read role definition",
                definition_id,
            )
        except WorkloadIdentityError as exc:
            # RoleDefinitionDoesNotExist is Authorization's own 404 code, not one of ARM's generic ones.
            if exc.status == 404 and (exc.code == _ROLE_DEFINITION_MISSING or is_azure_not_found(exc)):
                return None
            raise
        guid, name = _definition_fields(definition)
        return {"guid": guid or role_definition_guid(definition_id), "name": name}

    def permissions(self, definition_id: str) -> list[dict[str, list[str]]]:
        """The permissions of one definition, by its ID. One GET."""
        definition = self._call(
            "authorization.role_definitions.get_by_id",
            lambda: self.azure.authorization.role_definitions.get_by_id(definition_id),
            "read role definition",
            definition_id,
        )
        return [
            {
                "actions": list(p.actions or []),
                "not_actions": list(p.not_actions or []),
                "data_actions": list(p.data_actions or []),
                "not_data_actions": list(p.not_data_actions or []),
            }
            for p in definition.permissions or []
        ]


# --- AKS clusters ---------------------------------------------------------------------------------------------
def cluster_target(resource_group: str, name: str) -> str:
    return f"AKS cluster '{name}' in resource group '{resource_group}'"


def normalize_cluster(cluster: t.Any, resource_group: str) -> dict[str, t.Any]:
    """A ManagedCluster model as this collection returns it; ``issuer_url`` is Azure's string, never rewritten."""
    oidc = cluster.oidc_issuer_profile
    security = cluster.security_profile
    workload_identity = security.workload_identity if security is not None else None
    return {
        "id": cluster.id,
        "name": cluster.name,
        "resource_group": resource_group,
        "location": cluster.location,
        "kubernetes_version": cluster.kubernetes_version,
        "current_kubernetes_version": cluster.current_kubernetes_version,
        "provisioning_state": _plain(cluster.provisioning_state),
        "oidc_issuer_enabled": bool(oidc is not None and oidc.enabled),
        "issuer_url": oidc.issuer_url if oidc is not None else None,
        "workload_identity_enabled": bool(workload_identity is not None and workload_identity.enabled),
        "tags": dict(cluster.tags or {}),
        "agent_pools": [
            {"name": pool.name, "count": pool.count, "vm_size": pool.vm_size, "mode": _plain(pool.mode)}
            for pool in cluster.agent_pool_profiles or []
        ],
    }


class Clusters(_Gateway):
    def get_model(self, resource_group: str, name: str) -> tuple[t.Any, bool]:
        """(the ManagedCluster model as read, or None; whether the resource group exists): one GET answers both."""
        try:
            model = self._call(
                "containerservice.managed_clusters.get",
                lambda: self.azure.containerservice.managed_clusters.get(resource_group, name),
                "read",
                cluster_target(resource_group, name),
            )
        except WorkloadIdentityError as exc:
            if not is_azure_not_found(exc):
                raise
            return None, exc.code != "ResourceGroupNotFound"
        return model, True

    def get(self, resource_group: str, name: str) -> dict[str, t.Any] | None:
        """The cluster, normalised, or None when it (or its resource group) does not exist. One GET."""
        model, _group_exists = self.get_model(resource_group, name)
        return normalize_cluster(model, resource_group) if model is not None else None

    def begin_put(self, resource_group: str, name: str, model: t.Any, action: str, *, wait: bool) -> t.Any:
        kwargs: dict[str, t.Any] = {}
        if getattr(model, "e_tag", None):
            # Optimistic concurrency: a change made between our GET and PUT fails with 412 instead of being
            # overwritten by the body we read; the reconciler then reads again and re-plans.
            kwargs.update(etag=model.e_tag, match_condition=MatchConditions.IfNotModified)
        return self._call(
            "containerservice.managed_clusters.begin_create_or_update",
            lambda: self.azure.containerservice.managed_clusters.begin_create_or_update(
                resource_group, name, model, polling_interval=self.azure.polling_interval, polling=wait, **kwargs
            ),
            action,
            cluster_target(resource_group, name),
        )

    def begin_delete(self, resource_group: str, name: str, *, wait: bool) -> t.Any:
        return self._call(
            "containerservice.managed_clusters.begin_delete",
            lambda: self.azure.containerservice.managed_clusters.begin_delete(
                resource_group, name, polling_interval=self.azure.polling_interval, polling=wait
            ),
            "delete",
            cluster_target(resource_group, name),
        )


def set_oidc_settings(cluster: t.Any, oidc_issuer: bool, workload_identity: bool) -> None:
    """Set the two settings on the ManagedCluster model as read; a setting already right is not touched, so a
    cluster that never had ``securityProfile.workloadIdentity`` does not gain one for nothing."""
    if oidc_issuer and not (cluster.oidc_issuer_profile and cluster.oidc_issuer_profile.enabled):
        if cluster.oidc_issuer_profile is None:
            cluster.oidc_issuer_profile = aks_models.ManagedClusterOIDCIssuerProfile(enabled=True)
        else:
            cluster.oidc_issuer_profile.enabled = True
    security = cluster.security_profile
    current = bool(security and security.workload_identity and security.workload_identity.enabled)
    if current != bool(workload_identity):
        if security is None:
            security = cluster.security_profile = aks_models.ManagedClusterSecurityProfile()
        security.workload_identity = aks_models.ManagedClusterSecurityProfileWorkloadIdentity(
            enabled=bool(workload_identity)
        )


def new_cluster_model(
    *,
    location: str,
    tags: dict[str, str] | None,
    kubernetes_version: str | None,
    dns_prefix: str,
    pool_name: str,
    node_count: int,
    vm_size: str | None,
) -> t.Any:
    """The body ``az aks create --enable-oidc-issuer --enable-workload-identity`` sends, minus what AKS defaults."""
    pool = aks_models.ManagedClusterAgentPoolProfile(
        name=pool_name,
        count=node_count,
        vm_size=vm_size,  # None: AKS picks a size with capacity in the region
        mode="System",
        os_type="Linux",
        type="VirtualMachineScaleSets",
    )
    properties = aks_models.ManagedClusterProperties(
        kubernetes_version=kubernetes_version,  # None: the service's default version
        dns_prefix=dns_prefix,
        agent_pool_profiles=[pool],
        enable_rbac=True,
        oidc_issuer_profile=aks_models.ManagedClusterOIDCIssuerProfile(enabled=True),
        security_profile=aks_models.ManagedClusterSecurityProfile(
            workload_identity=aks_models.ManagedClusterSecurityProfileWorkloadIdentity(enabled=True)
        ),
    )
    return aks_models.ManagedCluster(
        location=location,
        tags=dict(tags) if tags else None,
        identity=aks_models.ManagedClusterIdentity(type="SystemAssigned"),
        properties=properties,
    )


# --- Key vaults -----------------------------------------------------------------------------------------------
def normalize_access_policy(entry: t.Any) -> dict[str, t.Any]:
    # azure-mgmt-keyvault 14 models are mappings of the REST (camelCase) names; as_dict() gives the same.
    data = _data(entry)
    permissions = data.get("permissions") or {}
    return {
        "tenant_id": data.get("tenantId"),
        "object_id": data.get("objectId"),
        "application_id": data.get("applicationId"),
        "permissions": {
            kind: sort_permissions(permissions.get(kind) or [])
            for kind in ("keys", "secrets", "certificates", "storage")
        },
    }


def normalize_vault(vault: t.Any) -> dict[str, t.Any]:
    data = _data(vault)
    properties = data.get("properties") or {}
    return {
        "id": data.get("id"),
        "name": data.get("name"),
        "resource_group": resource_group_of(data.get("id")),
        "location": data.get("location"),
        "vault_uri": properties.get("vaultUri"),
        "tenant_id": properties.get("tenantId"),
        "enable_rbac_authorization": bool(properties.get("enableRbacAuthorization")),
        "access_policies": [normalize_access_policy(p) for p in properties.get("accessPolicies") or []],
    }


class Vaults(_Gateway):
    def get(self, resource_group: str, name: str) -> dict[str, t.Any] | None:
        """The vault, or None when it (or its resource group) does not exist. One GET."""
        found = self._call(
            "keyvault.vaults.get",
            lambda: self.azure.keyvault_mgmt.vaults.get(resource_group, name),
            "read key vault",
            f"'{name}' in resource group '{resource_group}'",
            none_if_not_found=True,
        )
        return normalize_vault(found) if found is not None else None

    def update_access_policy(self, vault: dict[str, t.Any], kind: str, object_id: str, secrets: list[str]) -> None:
        """accessPolicies/add or /remove for one identity. azure-mgmt-keyvault 14 sends a plain dict as it is (its
        keys would go out snake_case), so the body is built from its model classes."""
        parameters = VaultAccessPolicyParameters(
            properties=VaultAccessPolicyProperties(
                access_policies=[
                    AccessPolicyEntry(
                        tenant_id=vault["tenant_id"],
                        object_id=object_id,
                        permissions=Permissions(secrets=list(secrets)),
                    )
                ]
            )
        )
        self._call(
            "keyvault.vaults.update_access_policy",
            lambda: self.azure.keyvault_mgmt.vaults.update_access_policy(
                vault["resource_group"], vault["name"], kind, parameters
            ),
            f"{kind} secret permissions {', '.join(secrets)} {'to' if kind == 'add' else 'from'} the access policy",
            f"of object ID '{object_id}' on key vault '{vault['name']}'",
        )


# --- AKS identity bindings ------------------------------------------------------------------------------------
# Microsoft.ContainerService/managedClusters/identityBindings (azure-behaviour §10): a proxy resource under a
# cluster mapping one user-assigned identity to it. Stable since api-version 2026-04-01; azure-mgmt-containerservice
# has the operation group since 41.3.0.
IDENTITY_BINDINGS_SDK = "azure-mgmt-containerservice >= 41.3.0"
DEFAULT_IDENTITY_BINDING_WAIT = 600.0  # seconds; the docs give no duration for a binding's operation


def identity_binding_target(resource_group: str, cluster_name: str, name: str) -> str:
    return f"identity binding '{name}' on {cluster_target(resource_group, cluster_name)}"


def _after_segment(resource_id: str | None, segment: str) -> str | None:
    """The name following ``segment`` (any case) in an ARM ID, or None."""
    parts = (resource_id or "").split("/")
    lowered = [p.lower() for p in parts]
    return parts[lowered.index(segment) + 1] if segment in lowered[:-1] else None


def normalize_identity_binding(binding: t.Any) -> dict[str, t.Any]:
    """An IdentityBinding model (or its REST dict) as this collection returns it; IDs and the issuer URL exactly as
    Azure sends them (the issuer has no trailing slash, azure-behaviour §10)."""
    data = _data(binding)
    properties = data.get("properties") or {}
    profile = properties.get("managedIdentity") or properties.get("managed_identity") or {}
    issuer = properties.get("oidcIssuer") or properties.get("oidc_issuer") or {}
    return {
        "id": data.get("id"),
        "name": data.get("name"),
        "resource_group": resource_group_of(data.get("id")),
        "cluster_name": _after_segment(data.get("id"), "managedclusters"),
        "identity_id": profile.get("resourceId", profile.get("resource_id")),
        "client_id": profile.get("clientId", profile.get("client_id")),
        "principal_id": profile.get("objectId", profile.get("object_id")),
        "tenant_id": profile.get("tenantId", profile.get("tenant_id")),
        "issuer_url": issuer.get("oidcIssuerUrl", issuer.get("oidc_issuer_url")),
        "provisioning_state": _plain(properties.get("provisioningState", properties.get("provisioning_state"))),
        "etag": data.get("eTag", data.get("e_tag")),
    }


class IdentityBindings(_Gateway):
    """Reads and writes of a cluster's identity bindings. ``create`` and ``delete`` are long-running operations
    (201/202 and a status URL, azure-behaviour §10), polled every ``azure.polling_interval`` seconds."""

    def _operations(self) -> t.Any:
        operations = getattr(self.azure.containerservice, "identity_bindings", None)
        if operations is None:
            raise WorkloadIdentityError(
                f"AKS identity bindings need {IDENTITY_BINDINGS_SDK} on the host that runs the module (the installed "
                "version has no identity_bindings operations); upgrade it",
                code="MissingRequiredLibrary",
            )
        return operations

    def list(self, resource_group: str, cluster_name: str) -> list[dict[str, t.Any]] | None:
        """Every binding of the cluster (one request per page), or None when the cluster (or its resource group)
        does not exist: 404 ParentResourceNotFound or ResourceGroupNotFound."""
        operations = self._operations()
        found = azure_call(
            lambda: _pages(
                self.calls,
                "containerservice.identity_bindings.list_by_managed_cluster",
                operations.list_by_managed_cluster(resource_group, cluster_name),
            ),
            "list the identity bindings of",
            cluster_target(resource_group, cluster_name),
            none_if_not_found=True,
        )
        return None if found is None else [normalize_identity_binding(b) for b in found]

    def get(self, resource_group: str, cluster_name: str, name: str) -> dict[str, t.Any] | None:
        """The binding, or None when it (or its cluster, or their resource group) does not exist. One GET."""
        operations = self._operations()
        found = self._call(
            "containerservice.identity_bindings.get",
            lambda: operations.get(resource_group, cluster_name, name),
            "read",
            identity_binding_target(resource_group, cluster_name, name),
            none_if_not_found=True,
        )
        return normalize_identity_binding(found) if found is not None else None

    def create(
        self,
        resource_group: str,
        cluster_name: str,
        name: str,
        identity_id: str,
        *,
        wait: bool = True,
        timeout: float = DEFAULT_IDENTITY_BINDING_WAIT,
    ) -> dict[str, t.Any]:
        """PUT the binding (``managedIdentity.resourceId`` is its only writable field, and only at creation) and,
        with ``wait``, poll the operation to its end; without, the PUT's own answer (``Creating``)."""
        operations = self._operations()
        body = aks_models.IdentityBinding(
            properties=aks_models.IdentityBindingProperties(
                managed_identity=aks_models.IdentityBindingManagedIdentityProfile(resource_id=identity_id)
            )
        )
        target = identity_binding_target(resource_group, cluster_name, name)
        poller = self._call(
            "containerservice.identity_bindings.begin_create_or_update",
            lambda: operations.begin_create_or_update(
                resource_group, cluster_name, name, body, polling_interval=self.azure.polling_interval, polling=wait
            ),
            "create",
            target,
        )
        created = (
            wait_for_lro(poller, timeout, f"create {target}") if wait else azure_call(poller.result, "create", target)
        )
        return normalize_identity_binding(created)

    def delete(
        self,
        resource_group: str,
        cluster_name: str,
        name: str,
        *,
        wait: bool = True,
        timeout: float = DEFAULT_IDENTITY_BINDING_WAIT,
    ) -> None:
        """DELETE the binding and, with ``wait``, poll the operation to its end; already gone (204, or a 404 for
        its cluster) is fine. AKS leaves the identity's ``aks-identity-binding`` credential in place."""
        operations = self._operations()
        target = identity_binding_target(resource_group, cluster_name, name)
        poller = self._call(
            "containerservice.identity_bindings.begin_delete",
            lambda: operations.begin_delete(
                resource_group, cluster_name, name, polling_interval=self.azure.polling_interval, polling=wait
            ),
            "delete",
            target,
            none_if_not_found=True,
        )
        if poller is not None and wait:
            wait_for_lro(poller, timeout, f"delete {target}")
