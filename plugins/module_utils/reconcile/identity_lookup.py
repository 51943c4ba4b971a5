# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Read a user-assigned managed identity by resource group + name, normalised: every module that takes
"the identity by resource_group + name" (federated_credential, role_assignment, keyvault_access) uses this.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import azure_call


def normalize_identity(identity: t.Any) -> dict[str, t.Any]:
    """An azure-mgmt-msi Identity model (or its dict) as the collection returns it."""
    data = identity.as_dict() if hasattr(identity, "as_dict") else dict(identity)
    properties = data.get("properties") or {}
    return {
        "id": data.get("id"),
        "name": data.get("name"),
        "location": data.get("location"),
        "tags": dict(data.get("tags") or {}),
        "client_id": data.get("client_id") or properties.get("clientId"),
        "principal_id": data.get("principal_id") or properties.get("principalId"),
        "tenant_id": data.get("tenant_id") or properties.get("tenantId"),
    }


def read_identity(azure: t.Any, resource_group: str, name: str) -> dict[str, t.Any] | None:
    """The identity, normalised, or None when it (or its resource group) does not exist. One GET."""
    found = azure_call(
        lambda: azure.msi.user_assigned_identities.get(resource_group, name),
        action="read managed identity",
        target=f"'{name}' in resource group '{resource_group}'",
        none_if_not_found=True,
    )
    return normalize_identity(found) if found is not None else None
