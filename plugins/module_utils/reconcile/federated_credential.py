# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reconciler of one federated identity credential on a user-assigned managed identity.

Azure identifies a credential by its (issuer, subject) pair, unique per identity (azure-behaviour §4); the name is a
label. So every decision is taken from ONE list of the identity's credentials: whether the pair exists (nothing to
do, or adopt it under its own name), whether the name exists with another pair (update it in place: issuer and
subject may change, the name may not), whether another credential differs only cosmetically (a warning: Entra
compares exactly), and whether the identity's 20 credentials are used up. A no-op run is that one list request.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.azure import (
    FederatedCredentials,
    ResourceGroups,
    credential_id,
    identity_id,
    is_duplicate_pair,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import (
    ADOPT,
    CREATE,
    DELETE,
    NONE,
    UPDATE,
    Plan,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    DEFAULT_AUDIENCE,
    MAX_FEDERATED_CREDENTIALS_PER_IDENTITY,
    default_federated_credential_name,
    issuer_near_miss,
    parse_service_account_subject,
    service_account_subject,
    subject_near_miss,
    validate_federated_credential,
    validate_federated_credential_name,
    validate_https_url,
    validate_issuer,
    validate_namespace,
    validate_service_account_name,
    validate_service_account_subject,
    validate_subject,
)

DEFAULT_RETRY_TIMEOUT = 60.0  # seconds spent at most retrying one write (see is_transient_write_error)


@dataclass(frozen=True)
class DesiredCredential:
    """What the user asked for. ``name`` None: the default name to create, the (issuer, subject) pair to delete."""

    resource_group: str
    identity_name: str
    name: str | None = None
    issuer: str | None = None
    subject: str | None = None
    audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,)
    state: str = "present"

    @property
    def identity_target(self) -> str:
        return f"identity '{self.identity_name}' in resource group '{self.resource_group}'"

    @property
    def create_name(self) -> str | None:
        """The name to create under: the given one, else the collection's default for a ServiceAccount subject."""
        if self.name:
            return self.name
        parsed = parse_service_account_subject(self.subject or "")
        if parsed is None or not self.issuer:
            return None
        return default_federated_credential_name(self.issuer, *parsed)


def desired_subject(
    subject: str | None, namespace: str | None, service_account: str | None
) -> tuple[str | None, list[str]]:
    """The subject from O(subject) or from O(namespace) + O(service_account), and "field: rule" errors."""
    if namespace is None and service_account is None:
        return subject, []
    errors = [*validate_namespace(namespace), *validate_service_account_name(service_account)]
    return (None if errors else service_account_subject(namespace, service_account)), errors


def _claims(issuer: str | None, subject: str | None, audiences: t.Any = None) -> list[str]:
    """The issuer, subject (and audiences) rules, with the stricter issuer URL and ServiceAccount subject rules."""
    errors = (
        validate_federated_credential("unnamed", issuer, subject, audiences)
        if audiences is not None
        else [*validate_issuer(issuer), *validate_subject(subject)]
    )
    if not validate_issuer(issuer):
        # OpenID Connect Discovery 1.0 section 3: the issuer is an https URL "with no query or fragment
        # components"; Entra fetches its discovery document from it, so user information cannot be meant either.
        errors += validate_https_url(issuer, "issuer")
    return errors + validate_service_account_subject(subject)


def validate(desired: DesiredCredential) -> list[str]:
    """Every rule checked before a request is sent, as "field: rule" messages (empty when valid)."""
    if desired.state == "absent":
        if desired.name:
            return validate_federated_credential_name(desired.name)
        if not desired.issuer or not desired.subject:
            return ["name: is required to delete a credential unless issuer and subject identify it"]
        return _claims(desired.issuer, desired.subject)
    errors = []
    if desired.name is not None:
        errors += validate_federated_credential_name(desired.name)
    elif (
        # A subject that is not a ServiceAccount's gives no default name (a malformed one is reported as such).
        desired.subject
        and parse_service_account_subject(desired.subject) is None
        and not validate_subject(desired.subject)
        and not validate_service_account_subject(desired.subject)
    ):
        errors.append(
            "name: is required when the subject is not a Kubernetes ServiceAccount subject "
            "(system:serviceaccount:<namespace>:<service account>), as no default name can be made from it"
        )
    return errors + _claims(desired.issuer, desired.subject, desired.audiences)


def _same_name(a: str | None, b: str | None) -> bool:
    return (a or "").lower() == (b or "").lower()  # ARM resource names are case-insensitive


def _by_name(credentials: list[dict[str, t.Any]], name: str | None) -> dict[str, t.Any] | None:
    return next((c for c in credentials if name and _same_name(c["name"], name)), None)


def _by_pair(credentials: list[dict[str, t.Any]], issuer: str | None, subject: str | None) -> dict[str, t.Any] | None:
    # Exact comparison, as Entra matches a token's iss and sub (azure-behaviour §4).
    return next((c for c in credentials if (c["issuer"], c["subject"]) == (issuer, subject)), None)


def near_miss_warnings(credentials: list[dict[str, t.Any]], desired: DesiredCredential) -> list[str]:
    """A warning per credential whose issuer and subject equal the requested ones but for a trailing slash, case
    or padding: one of the two never matches a token, and the exchange fails with AADSTS70021."""
    warnings = []
    for credential in credentials:
        issuer_note = issuer_near_miss(desired.issuer, credential["issuer"])
        subject_note = subject_near_miss(desired.subject, credential["subject"])
        issuer_close = issuer_note is not None or credential["issuer"] == desired.issuer
        subject_close = subject_note is not None or credential["subject"] == desired.subject
        if issuer_close and subject_close and (issuer_note or subject_note):
            notes = "; ".join(note for note in (issuer_note, subject_note) if note)
            warnings.append(
                f"Federated credential '{credential['name']}' on {desired.identity_target} is close to the requested "
                f"one: {notes}. A token matches at most one of the two; for the other the exchange fails with "
                "AADSTS70021 (No matching federated identity record found)"
            )
    return warnings


# --- plan (pure) ---------------------------------------------------------------------------------------------------
def missing_identity_message(desired: DesiredCredential, group_exists: bool = True) -> str:
    """Why the identity's credentials could not be listed, naming the option to fix."""
    if not group_exists:
        return f"resource_group: resource group '{desired.resource_group}' does not exist"
    return (
        f"identity_name: managed {desired.identity_target} does not exist; create it first "
        "(aks.workload_identity.managed_identity)"
    )


def plan(
    credentials: list[dict[str, t.Any]] | None,
    desired: DesiredCredential,
    *,
    identity: str | None = None,
    missing: str | None = None,
) -> Plan:
    """Decide from the identity's normalised credentials (None: the identity was not found, ``missing`` says
    why). ``identity`` is the identity's resource ID, to predict a new credential's ID."""
    found = credentials or []
    if desired.state == "absent":
        return _plan_absent(found, desired)
    warnings = near_miss_warnings(found, desired)
    if credentials is None:
        # Check mode only (a real run fails): an earlier task of the play may create the identity.
        warnings.append(
            f"{missing or missing_identity_message(desired)}; the credential can only be created once the identity "
            "exists (check mode: an earlier task would create it)"
        )
    audiences = list(desired.audiences)
    pair = _by_pair(found, desired.issuer, desired.subject)
    if pair is not None:
        wanted = {**pair, "audiences": audiences}
        if desired.name and not _same_name(pair["name"], desired.name):
            warnings.append(
                f"The issuer and subject are already federated on {desired.identity_target} by credential "
                f"'{pair['name']}'; using it instead of creating '{desired.name}' (Azure allows one credential per "
                "issuer and subject)"
            )
            if wanted == pair:
                return Plan(ADOPT, pair, pair, warnings, f"credential '{pair['name']}' has the issuer and subject")
        if wanted == pair:
            return Plan(NONE, pair, pair, warnings, "the credential is as requested")
        return Plan(UPDATE, pair, wanted, warnings, "the audiences differ")
    named = _by_name(found, desired.create_name)
    if named is not None:
        # Issuer and subject may change in place; only the name is immutable (azure-behaviour §4).
        wanted = {**named, "issuer": desired.issuer, "subject": desired.subject, "audiences": audiences}
        return Plan(UPDATE, named, wanted, warnings, "the issuer or subject differ")
    if len(found) >= MAX_FEDERATED_CREDENTIALS_PER_IDENTITY:
        raise WorkloadIdentityError(
            f"Cannot create federated credential '{desired.create_name}' on {desired.identity_target}: it already "
            f"has {len(found)} of the {MAX_FEDERATED_CREDENTIALS_PER_IDENTITY} federated credentials Azure allows per "
            f"identity ({', '.join(sorted(c['name'] for c in found))}). Delete one, or use another identity",
            code="FederatedCredentialLimitReached",
            target=desired.identity_target,
        )
    name = desired.create_name
    after = {
        "id": credential_id(identity, name) if identity else None,
        "name": name,
        "issuer": desired.issuer,
        "subject": desired.subject,
        "audiences": audiences,
    }
    return Plan(CREATE, None, after, warnings, "no credential has the issuer and subject")


def _plan_absent(found: list[dict[str, t.Any]], desired: DesiredCredential) -> Plan:
    if desired.name:
        named = _by_name(found, desired.name)
        if named is None:
            return Plan(NONE, None, None, reason=f"no credential is named '{desired.name}'")
        return Plan(DELETE, named, None, reason="the credential exists")
    pair = _by_pair(found, desired.issuer, desired.subject)
    if pair is not None:
        return Plan(DELETE, pair, None, reason="a credential has the issuer and subject")
    warnings = [f"{warning}; it was not deleted" for warning in near_miss_warnings(found, desired)]
    return Plan(NONE, None, None, warnings, "no credential has the issuer and subject")


# --- apply (through the gateway) -----------------------------------------------------------------------------------
def apply(
    azure: t.Any,
    desired: DesiredCredential,
    decided: Plan,
    *,
    timeout: float = DEFAULT_RETRY_TIMEOUT,
    identity_known: bool = False,
) -> dict[str, t.Any] | None:
    """Carry out a plan; the credential as Azure returns it afterwards (None once deleted)."""
    credentials = FederatedCredentials(azure)
    if decided.action in (CREATE, UPDATE):
        return credentials.put(
            desired.resource_group,
            desired.identity_name,
            decided.after or {},
            action=decided.action,
            retry_timeout=timeout,
            identity_known=identity_known,
        )
    if decided.action == DELETE:
        credentials.delete(
            desired.resource_group, desired.identity_name, (decided.before or {})["name"], retry_timeout=timeout
        )
        return None
    return decided.after


@dataclass
class Outcome:
    """A reconciler run: the plan, the credential afterwards (None when absent) and the identity's count."""

    plan: Plan
    credential: dict[str, t.Any] | None
    credential_count: int


def reconcile(azure: t.Any, desired: DesiredCredential, *, timeout: float = DEFAULT_RETRY_TIMEOUT) -> Outcome:
    """Validate, list once, plan, apply unless in check mode."""
    errors = validate(desired)
    if errors:
        raise WorkloadIdentityError(
            f"Invalid federated credential on {desired.identity_target}: {'; '.join(errors)}", code="InvalidParameter"
        )
    gateway = FederatedCredentials(azure)
    credentials = gateway.list(desired.resource_group, desired.identity_name)
    identity = identity_id(azure.subscription_id, desired.resource_group, desired.identity_name)
    missing = None
    if credentials is None and desired.state == "present":
        # Found missing by reading (the list's 404, then one GET of the group to name the right option): no write
        # is sent, as a PUT would only come back 404 again and again.
        group_exists = ResourceGroups(azure).get(desired.resource_group) is not None
        missing = missing_identity_message(desired, group_exists)
        if not azure.check_mode:
            raise WorkloadIdentityError(
                missing,
                code="ResourceNotFound" if group_exists else "ResourceGroupNotFound",
                status=404,
                target=desired.identity_target,
            )
    decided = plan(credentials, desired, identity=identity, missing=missing)
    count = len(credentials or []) + {CREATE: 1, DELETE: -1}.get(decided.action, 0)
    if azure.check_mode or not decided.changed:
        return Outcome(decided, decided.after, count)
    try:
        written = apply(azure, desired, decided, timeout=timeout, identity_known=credentials is not None)
        return Outcome(decided, written, count)
    except WorkloadIdentityError as exc:
        if decided.action != CREATE or not is_duplicate_pair(exc.original):
            raise
        # Someone created the same issuer and subject between our list and our write (a parallel run): use theirs.
        credentials = gateway.list(desired.resource_group, desired.identity_name)
        again = plan(credentials, desired, identity=identity)
        if again.changed:
            raise
        return Outcome(again, again.after, len(credentials or []))
