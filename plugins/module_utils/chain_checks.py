# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Does a workload's chain agree? The agreement checks, written once, over what was read (no I/O).

identity exists (and is the one the workload was set up with) -> the ServiceAccount exists and its client-id
annotation is the identity's client ID -> a federated credential of the identity trusts the issuer and the
ServiceAccount's subject for the webhook's audience (decided by the federated credential reconciler's own plan,
so "would the module change it" and "does it agree" cannot differ) -> each grant is assigned.

Each problem is one sentence naming the objects and values; the verify role and workloads_verify report them,
wid_verify and wid_info share the credential comparison (trust_check.compare_credentials) and the rules of
workload_identity.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import (
    CREATE,
    UPDATE,
    federated_credential,
    role_assignment,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import ANNOTATION_CLIENT_ID
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_items import Item, desired_credential


def identity_label(item: Item) -> str:
    return f"managed identity {item.identity.name} (resource group {item.identity.resource_group})"


def identity_problems(item: Item, identity: dict[str, t.Any] | None, error: str | None = None) -> list[str]:
    label = identity_label(item)
    if error:
        return [f"cannot read {label}: {error}"]
    if identity is None:
        return [f"{label} does not exist"]
    if item.expected_client_id and item.expected_client_id.lower() != str(identity.get("client_id")).lower():
        return [
            f"{label} has client ID {identity.get('client_id')}, but the workload was set up with "
            f"{item.expected_client_id}: the identity was created again, so its ServiceAccount, credential and grants "
            "must be set up again"
        ]
    return []


def service_account_problems(
    item: Item, service_account: dict[str, t.Any] | None, identity: dict[str, t.Any] | None, error: str | None = None
) -> list[str]:
    label = f"ServiceAccount {item.namespace}/{item.service_account}"
    if error:
        return [f"cannot read {label}: {error}"]
    if service_account is None:
        return [f"{label} does not exist"]
    annotated = service_account.get("client_id")
    if identity is not None and str(annotated or "").lower() != str(identity.get("client_id") or "").lower():
        return [
            f"{label} has annotation {ANNOTATION_CLIENT_ID} {annotated or '(none)'}, but the client ID of "
            f"{identity_label(item)} is {identity.get('client_id')}"
        ]
    return []


def credential_problems(
    item: Item, credentials: list[dict[str, t.Any]] | None, issuer: str | None, error: str | None = None
) -> tuple[list[str], str]:
    """The problems and the name of the credential that agrees ("" when none does)."""
    label = identity_label(item)
    if error:
        return [f"cannot read the federated credentials of {label}: {error}"], ""
    if not issuer:
        return [f"no OIDC issuer URL is known to check the federated credential of {label} against"], ""
    try:
        plan = federated_credential.plan(credentials or [], desired_credential(item, issuer))
    except WorkloadIdentityError as exc:  # the identity's 20 credentials are used up, none of them this one
        return [f"no federated credential on {label} trusts issuer {issuer} for subject {item.subject}: {exc}"], ""
    if plan.action == CREATE:
        named = f" named '{item.credential_name}'" if item.credential_name else ""
        # The plan's warnings name near misses: an issuer that differs only by its trailing slash, a subject only
        # by letter case.
        return [
            f"no federated credential{named} on {label} trusts issuer {issuer} for subject {item.subject}",
            *plan.warnings,
        ], ""
    if plan.action == UPDATE:
        before, after = plan.before or {}, plan.after or {}
        credential = f"federated credential '{before.get('name')}' on {label}"
        problems = []
        if before.get("issuer") != after.get("issuer"):
            problems.append(
                f"{credential} trusts issuer {before.get('issuer')}, but the cluster issuer is {after.get('issuer')} "
                "(Entra compares them exactly, trailing slash included: the token exchange fails with AADSTS70021)"
            )
        if before.get("subject") != after.get("subject"):
            problems.append(
                f"{credential} trusts subject {before.get('subject')}, but the subject of ServiceAccount "
                f"{item.namespace}/{item.service_account} is {after.get('subject')}"
            )
        if before.get("audiences") != after.get("audiences"):
            problems.append(
                f"{credential} has audience {', '.join(before.get('audiences') or [])}, but the webhook requests "
                f"tokens for {', '.join(after.get('audiences') or [])}"
            )
        return problems, ""
    return [], str((plan.after or {}).get("name") or "")


def grant_problems(
    item: Item,
    principal_id: str | None,
    assignments: t.Mapping[str, list[dict[str, t.Any]]],
    roles: t.Mapping[tuple[str, str], role_assignment.Role],
    errors: t.Mapping[str, t.Any] | None = None,
) -> list[str]:
    """A problem per grant not assigned to the identity at its scope. ``assignments`` by lower-case scope;
    ``errors`` what could not be read, keyed as the fleet's snapshot keys them."""
    problems = []
    for grant in item.grants:
        scope = role_assignment.normalize_scope(grant.scope)
        error = (errors or {}).get(f"assignments:{scope.lower()}") or (errors or {}).get(
            f"role:{(grant.role, grant.scope)}"
        )
        if error:
            problems.append(f"cannot read the assignments of role {grant.role} at {grant.scope}: {error}")
            continue
        role = roles[(grant.role, grant.scope)]
        found = role_assignment.matching_assignments(assignments.get(scope.lower(), []), scope, principal_id, role.guid)
        if not found:
            problems.append(f"role {grant.role} is not assigned to {identity_label(item)} at {grant.scope}")
    return problems
