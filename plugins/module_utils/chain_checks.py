# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Does a workload's chain agree? The agreement checks, written once, over what was read (no I/O).

identity exists (and is the one the workload was set up with) -> the ServiceAccount exists and its client-id
annotation is the identity's client ID -> a federated credential of the identity trusts the issuer and the
ServiceAccount's subject for the webhook's audience (decided by the federated credential reconciler's own plan,
so "would the module change it" and "does it agree" cannot differ) -> each grant is assigned. A workload that uses
an AKS identity binding instead of a credential of its own is checked by ``binding_problems``: the identity's
binding on the cluster, AKS's ``aks-identity-binding`` credential, and the Kubernetes RBAC grant.

Each problem is one sentence naming the objects and values; the verify role and workloads_verify report them,
wid_verify and wid_info share the credential comparison (trust_check.compare_credentials) and the rules of
workload_identity.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import (
    CREATE,
    UPDATE,
    federated_credential,
    identity_binding,
    identity_binding_access,
    role_assignment,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ANNOTATION_CLIENT_ID,
    IDENTITY_BINDING_CREDENTIAL_NAME,
    IDENTITY_BINDING_RBAC_API_GROUP,
    IDENTITY_BINDING_RBAC_VERB,
    identity_binding_role_name,
    issuer_near_miss,
)
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


# --- Identity bindings (azure-behaviour §10) --------------------------------------------------------------------
# The links of a bound workload's chain a problem is about: the binding on the cluster, AKS's credential on the
# identity, Kubernetes RBAC letting the ServiceAccount use the identity.
BINDING_LINK, CREDENTIAL_LINK, ACCESS_LINK = "binding", "credential", "access"
UNREADABLE = "Unreadable"  # the code of "cannot read ...": nothing could be compared
BINDING_READY = "Succeeded"  # the only provisioning state in which AKS uses a binding
BINDING_FIX = (
    "bind the identity to the cluster with aks.workload_identity.workloads (federation: identity_binding) or "
    "aks.workload_identity.aks_identity_binding"
)


@dataclass(frozen=True)
class BindingProblem:
    """One problem of a bound workload's chain: its link, one sentence naming the objects and values, what to do,
    and the code (the service's, or the collection's own)."""

    link: str
    text: str
    fix: str
    code: str | None = None


def binding_problems(
    *,
    namespace: str,
    service_account: str,
    identity: dict[str, t.Any],
    cluster: str,
    bindings: list[dict[str, t.Any]] | None,
    credentials: list[dict[str, t.Any]] | None,
    review: dict[str, t.Any] | None = None,
    rbac: tuple[dict[str, t.Any] | None, dict[str, t.Any] | None] | None = None,
    binding_name: str | None = None,
    errors: t.Mapping[str, str | None] | None = None,
) -> tuple[list[BindingProblem], dict[str, t.Any] | None]:
    """The problems of a workload that uses the identity binding of ``identity`` (as read: name, resource_group,
    id, client_id) on ``cluster`` (its label), and the binding found (None when there is none).

    ``bindings`` is the cluster's list (None: the cluster does not exist); ``credentials`` the identity's federated
    credentials; ``review`` the API server's answer to "may the ServiceAccount use-managed-identity the client ID"
    (a SubjectAccessReview, ``{"allowed", "reason"}``; None: not asked); ``rbac`` our ClusterRole and
    ClusterRoleBinding of the identity as read, to say why a review was denied; ``binding_name`` the name the
    workload gives its binding (None: any name). ``errors`` says what could not be read: keys ``bindings``,
    ``credentials``, ``review``, ``rbac``. The workload needs no federated credential of its own: AKS's one serves
    every bound ServiceAccount, with the binding's issuer."""
    errors = errors or {}
    label = f"managed identity {identity.get('name')} (resource group {identity.get('resource_group')})"
    problems = _binding_link(label, cluster, bindings, identity.get("id"), binding_name, errors.get("bindings"))
    binding = identity_binding.find_for_identity(bindings or [], identity.get("id"))
    if binding is not None:
        problems += _binding_credential_link(label, binding, credentials, errors.get("credentials"))
    problems += _access_link(namespace, service_account, label, identity.get("client_id"), review, rbac, errors)
    return problems, binding


def _binding_link(
    label: str,
    cluster: str,
    bindings: list[dict[str, t.Any]] | None,
    identity_id: str | None,
    binding_name: str | None,
    error: str | None,
) -> list[BindingProblem]:
    if error:
        return [
            BindingProblem(BINDING_LINK, f"cannot read the identity bindings of {cluster}: {error}", "", UNREADABLE)
        ]
    if bindings is None:
        return [
            BindingProblem(
                BINDING_LINK,
                f"{cluster} does not exist, so {label} cannot be bound to it",
                "check cluster_resource_group and cluster_name",
                "ParentResourceNotFound",
            )
        ]
    binding = identity_binding.find_for_identity(bindings, identity_id)
    if binding is None:
        return [
            BindingProblem(
                BINDING_LINK,
                f"{label} has no identity binding on {cluster}: the AKS token proxy exchanges the tokens of its "
                "ServiceAccounts only for an identity bound to the cluster",
                BINDING_FIX,
                "IdentityBindingNotFound",
            )
        ]
    problems = []
    name, state = binding.get("name"), binding.get("provisioning_state")
    if binding_name and str(name).lower() != binding_name.lower():
        problems.append(
            BindingProblem(
                BINDING_LINK,
                f"{label} is bound to {cluster} as '{name}', not as identity_binding_name '{binding_name}' (a cluster "
                "holds one binding per identity, so the workloads module would refuse to create the second)",
                f"set identity_binding_name to '{name}', or delete binding '{name}' first",
                "IdentityBindingNameMismatch",
            )
        )
    if state != BINDING_READY:
        problems.append(
            BindingProblem(
                BINDING_LINK,
                f"identity binding '{name}' of {label} on {cluster} is {state or 'in no state'}, not "
                f"{BINDING_READY}: AKS exchanges tokens only through a finished binding",
                "wait while it is Creating or Updating; delete and bind again when it is Failed or Canceled",
                "IdentityBindingNotReady",
            )
        )
    return problems


def _binding_credential_link(
    label: str, binding: dict[str, t.Any], credentials: list[dict[str, t.Any]] | None, error: str | None
) -> list[BindingProblem]:
    """AKS's one credential on the identity must trust the binding's issuer (its subject and audience are AKS's own
    and not public, azure-behaviour §10: not compared)."""
    if error:
        return [
            BindingProblem(
                CREDENTIAL_LINK, f"cannot read the federated credentials of {label}: {error}", "", UNREADABLE
            )
        ]
    issuer = binding.get("issuer_url")
    managed = next(
        (c for c in credentials or [] if str(c.get("name")).lower() == IDENTITY_BINDING_CREDENTIAL_NAME), None
    )
    again = (
        f"bind the identity again (a PUT of identity binding '{binding.get('name')}' puts the credential back); never "
        f"change or delete {IDENTITY_BINDING_CREDENTIAL_NAME} while a binding uses it"
    )
    if managed is None:
        return [
            BindingProblem(
                CREDENTIAL_LINK,
                f"{label} holds no federated credential {IDENTITY_BINDING_CREDENTIAL_NAME}, which AKS creates with "
                f"the binding: Entra ID refuses the tokens the AKS token proxy presents for it",
                again,
                "AADSTS700211",
            )
        ]
    if issuer and managed.get("issuer") != issuer:
        near = issuer_near_miss(managed.get("issuer"), issuer)
        return [
            BindingProblem(
                CREDENTIAL_LINK,
                f"federated credential {managed.get('name')} on {label} trusts issuer {managed.get('issuer')}, but "
                f"the issuer of identity binding '{binding.get('name')}' is {issuer}"
                + (f" ({near.split(';', maxsplit=1)[0]})" if near else ""),
                again,
                "AADSTS700211",
            )
        ]
    return []


def _access_link(
    namespace: str,
    service_account: str,
    label: str,
    client_id: str | None,
    review: dict[str, t.Any] | None,
    rbac: tuple[dict[str, t.Any] | None, dict[str, t.Any] | None] | None,
    errors: t.Mapping[str, str | None],
) -> list[BindingProblem]:
    account = f"ServiceAccount {namespace}/{service_account}"
    if errors.get("review"):
        return [
            BindingProblem(
                ACCESS_LINK,
                f"cannot ask the API server whether {account} may use {label}: {errors['review']}",
                "",
                UNREADABLE,
            )
        ]
    if review is None or review.get("allowed") or not client_id:
        return []
    said = f" ({review['reason']})" if review.get("reason") else ""
    why = _rbac_explanation(namespace, service_account, client_id, rbac, errors.get("rbac"))
    return [
        BindingProblem(
            ACCESS_LINK,
            f"{account} may not use {label}: Kubernetes RBAC does not grant it the verb {IDENTITY_BINDING_RBAC_VERB} "
            f"on resource {client_id.lower()} of API group {IDENTITY_BINDING_RBAC_API_GROUP}{said}, so the AKS "
            f"token proxy refuses its tokens{why}",
            f"grant it with aks.workload_identity.workloads (federation: identity_binding) or "
            f"aks.workload_identity.wid_identity_binding_access (ClusterRole and ClusterRoleBinding "
            f"{identity_binding_role_name(client_id)})",
            "IdentityBindingAccessDenied",
        )
    ]


def _rbac_explanation(
    namespace: str,
    service_account: str,
    client_id: str,
    rbac: tuple[dict[str, t.Any] | None, dict[str, t.Any] | None] | None,
    error: str | None,
) -> str:
    """Why our ClusterRole and ClusterRoleBinding do not grant it, decided by their reconciler's own plans ("would
    the module change them" and "do they grant it" cannot differ); "" when they were not read."""
    if error:
        return f"; our ClusterRole and ClusterRoleBinding could not be read: {error}"
    if rbac is None:
        return ""
    desired = identity_binding_access.DesiredBindingAccess(client_id, ((namespace, service_account),))
    name = desired.name
    try:
        planned = identity_binding_access.plan(rbac[0], rbac[1], desired)
    except WorkloadIdentityError as exc:  # a foreign roleRef or an aggregated ClusterRole
        return f"; {exc}"
    reasons = []
    if planned.role.action == CREATE:
        reasons.append(f"ClusterRole {name} does not exist")
    elif planned.role.action == UPDATE and planned.role.before.get("rules") != planned.role.after.get("rules"):
        reasons.append(f"ClusterRole {name} has no rule for it")
    if planned.binding.action == CREATE:
        reasons.append(f"ClusterRoleBinding {name} does not exist")
    elif planned.binding.action == UPDATE and planned.binding.before.get("subjects") != planned.binding.after.get(
        "subjects"
    ):
        reasons.append(f"ClusterRoleBinding {name} does not name it as a subject")
    if not reasons:
        return (
            f"; ClusterRole and ClusterRoleBinding {name} do grant it (the API server's authorizer may not have seen "
            "them yet, or a Deny authorizer overrides RBAC)"
        )
    return "; " + " and ".join(reasons)
