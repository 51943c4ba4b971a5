# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The logic of wid_verify, without I/O: token claims, claims against federated credentials, the diagnosis of
Entra, Key Vault and ARM refusals, the decision to retry (propagation only), and redaction.

Pure functions over plain dicts and strings, so the unit tests feed them the values and error texts Azure sends.
The order of the chain (and of the ``steps`` in the module's result) is ``STEPS``.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import difflib
import json
import re
import time
import typing as t
from dataclasses import dataclass, field

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import REDACTED
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    issuer_near_miss,
    parse_service_account_subject,
    subject_near_miss,
)

# --- Steps and statuses -----------------------------------------------------------------------------------------
SERVICEACCOUNT = "serviceaccount"
CLUSTER = "cluster"
CREDENTIAL = "credential"
TOKEN = "token"
EXCHANGE = "exchange"
ACCESS = "access"
WEBHOOK = "webhook"
STEPS = (SERVICEACCOUNT, CLUSTER, CREDENTIAL, TOKEN, EXCHANGE, ACCESS, WEBHOOK)
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"

# --- Entra codes (azure-behaviour §6) ---------------------------------------------------------------------------
NO_MATCH_CODES = frozenset({"AADSTS70021", "AADSTS700211", "AADSTS700213", "AADSTS7002138", "AADSTS700212"})
# azure-behaviour §4: for some minutes after a federated credential is created, token requests can fail with
# AADSTS70021; a credential Entra does not see yet is reported like an absent one, issuer first (700211) or subject
# (700213): Azure/azure-workload-identity#1200. Retried only when ARM already holds a credential matching the token
# exactly.
PROPAGATION_EXCHANGE_CODES = frozenset({"AADSTS70021", "AADSTS700211", "AADSTS700213"})
# azure-behaviour §7: a new role assignment takes a while to apply (403 first, success minutes later); Key Vault's
# answer carries innererror ForbiddenByRbac, ARM's is AuthorizationFailed ("If access was recently granted, please
# refresh").
PROPAGATION_ACCESS_CODES = frozenset({"ForbiddenByRbac", "AuthorizationFailed"})
ACCESS_POLICY_DENIED = "AccessDenied"  # Key Vault access-policy vault: innererror AccessDenied

# Azure RBAC actions a read needs (learn.microsoft.com/azure/role-based-access-control/permissions/security).
KEYVAULT_GET_SECRET_ACTION = "Microsoft.KeyVault/vaults/secrets/getSecret/action"  # azure-behaviour §7, a data action

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_KEYVAULT_ACTION = re.compile(r"Action:\s*'(?P<action>[^']+)'")
_KEYVAULT_RESOURCE = re.compile(r"Resource:\s*'(?P<resource>[^']+)'")
_ARM_ACTION_SCOPE = re.compile(r"perform action '(?P<action>[^']+)' over scope '(?P<scope>[^']+)'")
_ENTRA_TRAILER = re.compile(r"\s*Trace ID:.*$", re.DOTALL)
MAX_MESSAGE = 400  # characters of a service message quoted in a cause


# --- Redaction ------------------------------------------------------------------------------------------------
def redact(text: t.Any, secrets: t.Iterable[str | None] = ()) -> str:
    """``text`` with every secret and anything shaped like a JWT replaced by ``********``.

    A ServiceAccount token is a JWT (RFC 7519 compact form: three base64url parts, the header starting
    ``eyJ``); masking the shape keeps a token out even of service messages that would echo it.
    """
    result = str(text if text is not None else "")
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        result = result.replace(secret, REDACTED)
    return _JWT.sub(REDACTED, result)


def short_message(message: str | None) -> str:
    """A service message for a cause: Entra's trace trailer dropped, whitespace folded, at most 400 characters."""
    text = " ".join(_ENTRA_TRAILER.sub("", message or "").split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


# --- Claims ---------------------------------------------------------------------------------------------------
def decode_claims(token: str) -> dict[str, t.Any]:
    """The payload of a JWT, decoded WITHOUT verifying it (Entra verifies; we only read iss/sub/aud/exp).

    Raises ValueError naming the problem, never the token.
    """
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise ValueError("the token is not a JWT (it does not have three dot-separated parts)")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise ValueError(f"the token's payload is not base64url-encoded JSON ({type(exc).__name__})") from None
    if not isinstance(claims, dict):
        raise ValueError("the token's payload is not a JSON object")
    return claims


def audiences_of(claims: t.Mapping[str, t.Any]) -> list[str]:
    """RFC 7519 §4.1.3: ``aud`` is a string or an array of strings."""
    audience = claims.get("aud")
    if isinstance(audience, list):
        return [str(a) for a in audience]
    return [str(audience)] if audience else []


def claims_view(claims: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """What the module returns of a token: iss, sub, aud (a list) and exp. Never the token."""
    return {"iss": claims.get("iss"), "sub": claims.get("sub"), "aud": audiences_of(claims), "exp": claims.get("exp")}


def timestamp(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(float(epoch), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- Diagnoses ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Diagnosis:
    """What broke: the step, one sentence of cause naming the values, one of fix, the raw code, and whether it
    may be propagation (then, and only then, the caller retries)."""

    step: str
    cause: str
    fix: str
    code: str | None = None
    propagation: bool = False


def token_issuer_mismatch(expected_issuer: str, token_issuer: str, source: str) -> Diagnosis:
    """The token's ``iss`` is not the issuer the credentials must trust (the cluster's, or issuer_url)."""
    near = issuer_near_miss(expected_issuer, token_issuer)
    detail = f": {near}" if near else ""
    return Diagnosis(
        TOKEN,
        f"the ServiceAccount token's issuer {token_issuer!r} is not the expected issuer {expected_issuer!r} "
        f"({source}){detail}",
        "point the Kubernetes connection at the cluster whose OIDC issuer the federated credential trusts, or "
        "correct issuer_url / cluster_name",
        "IssuerMismatch",
    )


# --- Claims against federated credentials ---------------------------------------------------------------------
@dataclass(frozen=True)
class CredentialCheck:
    """The result of comparing the token's (or, in check mode, the expected) claims with ARM's credentials.

    ``status`` is passed (``match`` holds the credential matching exactly), failed (``diagnosis`` says why; a
    definite mismatch, never retried) or skipped (the credentials could not be read; ``reason`` says why).
    """

    status: str
    match: dict[str, t.Any] | None = None
    diagnosis: Diagnosis | None = None
    reason: str | None = None


def _credential_failure(cause: str, fix: str, code: str) -> CredentialCheck:
    return CredentialCheck(FAILED, diagnosis=Diagnosis(CREDENTIAL, cause, fix, code))


def compare_credentials(
    credentials: t.Sequence[t.Mapping[str, t.Any]], issuer: str, subject: str, audience: str, identity: str
) -> CredentialCheck:
    """Compare (issuer, subject, audience) with an identity's federated credentials exactly, as Entra does
    (azure-behaviour §4).

    A mismatch is explained by the nearest credential: a trailing slash, whitespace or letter case in the issuer,
    letter case or another namespace/ServiceAccount in the subject, another audience. ``code`` is the AADSTS code
    Entra gives for it (azure-behaviour §6), which the exchange then confirms.
    """
    for credential in credentials:
        if (
            credential.get("issuer") == issuer
            and credential.get("subject") == subject
            and audience in (credential.get("audiences") or [])
        ):
            return CredentialCheck(PASSED, match=dict(credential))
    create = (
        f"create a federated credential on {identity} with issuer {issuer!r}, subject {subject!r} and audience "
        f"{audience!r} (aks.workload_identity.federated_credential)"
    )
    if not credentials:
        return _credential_failure(f"{identity} has no federated credentials", create, "AADSTS700211")
    # An identity is often shared by several ServiceAccounts, each with its own credential: the credentials for
    # this exact subject are the ones meant for this ServiceAccount, so they explain a mismatch first; the others
    # belong to other workloads and only matter as near misses of the subject.
    for_subject = [c for c in credentials if c.get("subject") == subject]
    if for_subject:
        matching_issuer = [c for c in for_subject if c.get("issuer") == issuer]
        if not matching_issuer:
            return _issuer_mismatch(for_subject, issuer, subject, identity, create)
        credential = matching_issuer[0]
        return _credential_failure(
            f"federated credential '{credential.get('name')}' trusts audience(s) "
            f"{list(credential.get('audiences') or [])} but the token's audience is {audience!r}",
            f"use audience {audience!r} in the credential, or request the token with the audience the credential "
            "trusts (the workload identity webhook requests api://AzureADTokenExchange)",
            "AADSTS700212",
        )
    same_issuer = [c for c in credentials if c.get("issuer") == issuer]
    if same_issuer:
        return _subject_mismatch(same_issuer, subject, identity, create)
    return _issuer_mismatch(credentials, issuer, subject, identity, create)


def _issuer_mismatch(
    credentials: t.Sequence[t.Mapping[str, t.Any]], issuer: str, subject: str, identity: str, create: str
) -> CredentialCheck:
    fix = (
        f"set the credential's issuer to exactly {issuer!r}, the cluster's OIDC issuer as aks_oidc returns it "
        "(Entra compares it character by character)"
    )
    # The credential for this subject first: it is the one meant for this ServiceAccount.
    ordered = sorted(credentials, key=lambda c: c.get("subject") != subject)
    for credential in ordered:
        near = issuer_near_miss(credential.get("issuer"), issuer)
        if near:
            cause = f"federated credential '{credential.get('name')}' trusts issuer {credential.get('issuer')!r} "
            cause += f"but the token's issuer is {issuer!r}: {near.split(';', maxsplit=1)[0]}"
            if "trailing slash" in near:
                has = "has" if str(credential.get("issuer")).endswith("/") else "lacks"
                cause += f" (the credential's issuer {has} a trailing slash the token's issuer "
                cause += f"{'lacks' if has == 'has' else 'has'})"
            return _credential_failure(cause, fix, "AADSTS700211")
    for credential in ordered:
        if credential.get("subject") == subject:
            return _credential_failure(
                f"federated credential '{credential.get('name')}' trusts subject {subject!r} but issuer "
                f"{credential.get('issuer')!r}, not the token's issuer {issuer!r} (a credential for another cluster?)",
                fix,
                "AADSTS700211",
            )
    return _credential_failure(
        f"none of the {len(credentials)} federated credential(s) of {identity} trusts the token's issuer {issuer!r}",
        create,
        "AADSTS700211",
    )


_NOT_A_TYPO = 3
TYPO_SIMILARITY = 0.8  # difflib ratio from which a differing name reads as a typo rather than another workload


def _typo_rank(configured_subject: str, wanted: tuple[str, str] | None) -> int:
    """How likely a credential's subject is a mistyped version of ours: 0 = the same ServiceAccount name in another
    namespace; 1 = the same namespace and a name that differs by a typo; _NOT_A_TYPO = another workload's subject
    (an identity shared by several ServiceAccounts has one credential for each)."""
    configured = parse_service_account_subject(configured_subject)
    if not (configured and wanted):
        return _NOT_A_TYPO
    same_namespace, same_name = configured[0] == wanted[0], configured[1] == wanted[1]
    if same_name and not same_namespace:
        return 0
    if same_namespace and not same_name:
        close = difflib.SequenceMatcher(None, configured[1], wanted[1]).ratio() >= TYPO_SIMILARITY
        return 1 if close else _NOT_A_TYPO
    return _NOT_A_TYPO


def _subject_mismatch(
    same_issuer: t.Sequence[t.Mapping[str, t.Any]], subject: str, identity: str, create: str
) -> CredentialCheck:
    fix = f"set the credential's subject to exactly {subject!r} (case-sensitive)"
    for credential in same_issuer:
        near = subject_near_miss(credential.get("subject"), subject)
        if near:
            code = "AADSTS7002138" if "letter case" in near else "AADSTS700213"
            cause = f"federated credential '{credential.get('name')}' trusts subject {credential.get('subject')!r} "
            cause += f"but the token's subject is {subject!r}: {near.split(';', maxsplit=1)[0]}"
            return _credential_failure(cause, fix, code)
    wanted = parse_service_account_subject(subject)
    for credential in sorted(same_issuer, key=lambda c: _typo_rank(str(c.get("subject") or ""), wanted)):
        configured = parse_service_account_subject(str(credential.get("subject") or ""))
        if _typo_rank(str(credential.get("subject") or ""), wanted) >= _NOT_A_TYPO:
            break
        which = "namespace" if configured[0] != wanted[0] else "ServiceAccount name"
        index = 0 if which == "namespace" else 1
        return _credential_failure(
            f"federated credential '{credential.get('name')}' trusts subject {credential.get('subject')!r} whose "
            f"{which} {configured[index]!r} differs from the ServiceAccount's {which} {wanted[index]!r} (subject "
            f"{subject!r})",
            fix,
            "AADSTS700213",
        )
    return _credential_failure(
        f"no federated credential of {identity} trusts subject {subject!r} for the issuer (it trusts "
        f"{sorted(str(c.get('subject')) for c in same_issuer)})",
        create,
        "AADSTS700213",
    )


# --- Entra's answer to the exchange ---------------------------------------------------------------------------
def diagnose_exchange(
    code: str | None,
    message: str | None,
    check: CredentialCheck | None,
    *,
    client_id: str,
    tenant_id: str,
    claims: t.Mapping[str, t.Any],
) -> Diagnosis:
    """Why Entra refused to exchange the token, from its AADSTS code (azure-behaviour §6) and the comparison with ARM.

    A no-match code when ARM holds a credential matching the token exactly can only be propagation
    (azure-behaviour §4); when the comparison found a mismatch, the mismatch is the cause, whatever code Entra chose
    to report it with.
    """
    said = short_message(message)
    issuer, subject = claims.get("iss"), claims.get("sub")
    if code in NO_MATCH_CODES:
        if check is not None and check.status == PASSED and code in PROPAGATION_EXCHANGE_CODES:
            name = (check.match or {}).get("name")
            return Diagnosis(
                EXCHANGE,
                f"Entra refuses the token with {code} although federated credential '{name}' matches its issuer, "
                "subject and audience exactly in Azure Resource Manager: the credential has not propagated to "
                "Entra ID yet",
                "wait a few minutes and run again, or raise propagation_timeout (new credentials can take minutes)",
                code,
                propagation=True,
            )
        if check is not None and check.status == FAILED and check.diagnosis is not None:
            return Diagnosis(check.diagnosis.step, check.diagnosis.cause, check.diagnosis.fix, code)
        return Diagnosis(EXCHANGE, _no_match_cause(code, issuer, subject, claims, said), _NO_MATCH_FIX, code)
    known = _exchange_table(code, client_id=client_id, tenant_id=tenant_id, claims=claims, said=said)
    if known is not None:
        return known
    return Diagnosis(
        EXCHANGE,
        f"Entra ID refused the token exchange for client ID {client_id!r}: {said or code or 'no details given'}",
        "look the code up in https://learn.microsoft.com/entra/identity-platform/reference-error-codes",
        code,
    )


_NO_MATCH_FIX = (
    "compare the identity's federated credentials with the token's claims (issuer, subject and audience must be "
    "equal character by character); give identity_resource_group and identity_name so wid_verify can compare them"
)


def _no_match_cause(code: str, issuer: t.Any, subject: t.Any, claims: t.Mapping[str, t.Any], said: str) -> str:
    what = {
        "AADSTS700211": f"trusts the token's issuer {issuer!r}",
        "AADSTS700213": f"trusts the token's subject {subject!r}",
        "AADSTS7002138": f"trusts the token's subject {subject!r} with the same letter case",
        "AADSTS700212": f"trusts the token's audience {audiences_of(claims)}",
    }.get(code, f"matches the token's issuer {issuer!r}, subject {subject!r} and audience {audiences_of(claims)}")
    return f"no federated credential of the identity {what} ({code}: {said})"


def _exchange_table(
    code: str | None, *, client_id: str, tenant_id: str, claims: t.Mapping[str, t.Any], said: str
) -> Diagnosis | None:
    issuer = str(claims.get("iss") or "")
    discovery = issuer.rstrip("/") + "/.well-known/openid-configuration"
    table: dict[str, tuple[str, str]] = {
        "AADSTS700016": (
            f"Entra ID knows no application or managed identity with client ID {client_id!r} in tenant {tenant_id!r}",
            "set the ServiceAccount's azure.workload.identity/client-id annotation (or client_id) to the client ID "
            "the managed identity reports (aks.workload_identity.managed_identity returns it), in the right tenant",
        ),
        "AADSTS90002": (
            f"Entra ID does not know tenant {tenant_id!r}",
            "set the azure.workload.identity/tenant-id annotation (or tenant_id) to the identity's tenant",
        ),
        "AADSTS700024": (
            f"the token is not within its valid time range for Entra ID (expires {timestamp(claims.get('exp'))}, "
            f"valid from {timestamp(claims.get('nbf') or claims.get('iat'))}): a clock is off ({said})",
            "synchronise the clocks of the cluster's nodes and the machine running Ansible (NTP) and run again",
        ),
        # azure-behaviour §6: AADSTS50166 (and 501661) = the issuer's discovery document or JWKS could not be fetched.
        "AADSTS50166": (
            f"Entra ID could not fetch the issuer's discovery document {discovery} or its keys",
            "enable the cluster's OIDC issuer (aks.workload_identity.aks_oidc) and make sure the issuer URL is "
            "reachable from the internet; a private issuer cannot be used",
        ),
        "AADSTS50013": (
            f"the token's signature does not verify with the keys published by {issuer!r} ({said})",
            "the cluster's signing keys may have been rotated: request a new token and make sure the credential "
            "trusts the issuer of this cluster",
        ),
    }
    table["AADSTS501661"] = table["AADSTS50166"]
    if code not in table:
        return None
    cause, fix = table[code]
    return Diagnosis(EXCHANGE, cause, fix, code)


# --- Access (Key Vault secret, ARM read) ----------------------------------------------------------------------
def denied_action(message: str | None) -> tuple[str | None, str | None]:
    """``(action, scope)`` from a Key Vault ForbiddenByRbac (azure-behaviour §7) or ARM AuthorizationFailed message."""
    text = message or ""
    arm = _ARM_ACTION_SCOPE.search(text)
    if arm:
        return arm.group("action"), arm.group("scope")
    action, resource = _KEYVAULT_ACTION.search(text), _KEYVAULT_RESOURCE.search(text)
    return (action.group("action") if action else None), (resource.group("resource") if resource else None)


def scope_covers(scope: str | None, resource: str | None) -> bool:
    """An assignment at ``scope`` applies to ``resource`` at or below it (ARM ids compare case-insensitively)."""
    outer = "/" + (scope or "").strip().strip("/").lower()
    inner = "/" + (resource or "").strip().strip("/").lower()
    return outer == "/" or inner == outer or inner.startswith(outer + "/")


def _wildcard(pattern: str) -> re.Pattern[str]:
    # learn.microsoft.com/azure/role-based-access-control/role-definitions#actions-format: '*' matches any run of
    # characters, and operation strings are case-insensitive.
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$", re.IGNORECASE)


def permissions_allow(permissions: t.Iterable[t.Mapping[str, t.Any]], action: str, *, data: bool) -> bool:
    """Whether a role definition's permissions allow ``action`` (a data action when ``data``), NotActions applied."""
    allow, deny = ("data_actions", "not_data_actions") if data else ("actions", "not_actions")
    for permission in permissions:
        if any(_wildcard(p).match(action) for p in permission.get(allow) or []) and not any(
            _wildcard(p).match(action) for p in permission.get(deny) or []
        ):
            return True
    return False


@dataclass(frozen=True)
class GrantCheck:
    """Whether a role assignment grants the refused action: present / absent / unknown (could not be checked)."""

    state: str
    assignment: dict[str, t.Any] | None = None
    reason: str | None = None


GRANT_PRESENT, GRANT_ABSENT, GRANT_UNKNOWN = "present", "absent", "unknown"


def evaluate_grant(
    assignments: t.Sequence[t.Mapping[str, t.Any]],
    definitions: t.Mapping[str, list[dict[str, t.Any]] | None],
    action: str,
    resource: str,
    *,
    data: bool,
) -> GrantCheck:
    """Does one of the principal's assignments, at the resource or above, allow ``action``?

    ``definitions`` maps a roleDefinitionId (lower-case) to its permissions, or None when it could not be read,
    which makes the answer unknown (then the refusal may still be propagation).
    """
    unknown = None
    for assignment in assignments:
        if not scope_covers(assignment.get("scope"), resource):
            continue
        permissions = definitions.get(str(assignment.get("role_definition_id") or "").lower())
        if permissions is None:
            unknown = assignment
            continue
        if permissions_allow(permissions, action, data=data):
            return GrantCheck(GRANT_PRESENT, dict(assignment))
    if unknown is not None:
        return GrantCheck(GRANT_UNKNOWN, dict(unknown), "its role definition could not be read")
    return GrantCheck(GRANT_ABSENT)


def diagnose_access(
    kind: str,
    target: str,
    code: str | None,
    message: str | None,
    *,
    principal: str,
    grant: GrantCheck | None = None,
    waited: float | None = None,
) -> Diagnosis:
    """Why the secret read (``kind`` keyvault) or the ARM GET (``kind`` arm) failed; ``grant`` from evaluate_grant.

    ``waited`` is set once the propagation retries are spent; until then a refusal with a grant present or
    unknown is reported with ``propagation=True``.
    """
    said = short_message(message)
    action, scope = denied_action(message)
    action = action or (KEYVAULT_GET_SECRET_ACTION if kind == "keyvault" else "read")
    resource = scope or target
    if code in PROPAGATION_ACCESS_CODES:
        return _rbac_refusal(kind, code, action, resource, principal, grant, waited)
    if code == ACCESS_POLICY_DENIED:
        return Diagnosis(
            ACCESS,
            f"Key Vault {target} uses access policies and none gives {principal} the secret permission 'get' ({said})",
            "add an access policy with secret permission get for the identity (aks.workload_identity.keyvault_access)",
            code,
        )
    if code in ("SecretNotFound", "ResourceNotFound", "ResourceGroupNotFound", "NotFound"):
        return Diagnosis(
            ACCESS,
            f"{target} does not exist ({said})",
            "check the secret, vault or resource ID given to wid_verify",
            code,
        )
    return Diagnosis(ACCESS, f"reading {target} failed: {said or code}", "see the error code", code)


def _rbac_refusal(
    kind: str,
    code: str,
    action: str,
    resource: str,
    principal: str,
    grant: GrantCheck | None,
    waited: float | None,
) -> Diagnosis:
    service = "Key Vault" if kind == "keyvault" else "Azure Resource Manager"
    role = "Key Vault Secrets User" if kind == "keyvault" else "Reader"
    if grant is not None and grant.state == GRANT_ABSENT:
        return Diagnosis(
            ACCESS,
            f"{principal} has no role assignment allowing {action!r} on {resource!r} (nor above it), so {service} "
            f"refuses with {code}",
            f"assign a role that allows it, e.g. '{role}', on {resource!r} (aks.workload_identity.keyvault_access or "
            "role_assignment)",
            code,
        )
    if grant is not None and grant.state == GRANT_PRESENT:
        name = (grant.assignment or {}).get("name")
        scope = (grant.assignment or {}).get("scope")
        what = f"role assignment '{name}' at {scope!r} allows {action!r}"
    else:
        reason = grant.reason if grant is not None and grant.reason else "the role assignments could not be read"
        what = f"whether a role assignment allows {action!r} could not be checked ({reason})"
    if waited is None:
        return Diagnosis(ACCESS, f"{service} refuses with {code}; {what}", "", code, propagation=True)
    return Diagnosis(
        ACCESS,
        f"{service} still refuses {action!r} on {resource!r} with {code} after {waited:.0f} s although {what}: "
        "the role assignment has not propagated yet",
        "wait (role assignments can take up to 10 minutes to take effect) and run again, or raise propagation_timeout",
        code,
    )


# --- Retrying what may be propagation -------------------------------------------------------------------------
@dataclass
class Progress:
    """Timestamped lines, one per attempt that is retried (the module returns them as ``progress``)."""

    lines: list[str] = field(default_factory=list)
    now: t.Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.timezone.utc)

    def add(self, line: str) -> str:
        entry = f"{self.now().strftime('%Y-%m-%dT%H:%M:%SZ')} {line}"
        self.lines.append(entry)
        return entry


_O = t.TypeVar("_O")


def backoff(attempt: int, interval: float, maximum: float = 30.0) -> float:
    """Seconds to wait after the ``attempt``-th refusal: interval, 2x, 4x ... capped at ``maximum``
    (never below ``interval``)."""
    return min(max(interval, maximum), interval * (2 ** max(0, attempt - 1)))


def retry_while_propagating(
    attempt: t.Callable[[], _O],
    propagating: t.Callable[[_O], str | None],
    *,
    timeout: float,
    interval: float,
    progress: Progress,
    sleep: t.Callable[[float], None] = time.sleep,
    clock: t.Callable[[], float] = time.monotonic,
    log: t.Callable[[str], None] | None = None,
) -> tuple[_O, int, float]:
    """Run ``attempt()`` until ``propagating(outcome)`` returns None or ``timeout`` seconds are spent.

    ``propagating`` returns a short description of a refusal that may be propagation (a progress line is written
    for each retry), or None for an outcome to keep (success or a definite failure: never retried).
    Returns the last outcome, the number of attempts and the seconds waited.
    """
    start = clock()
    attempts = 0
    while True:
        outcome = attempt()
        attempts += 1
        why = propagating(outcome)
        elapsed = clock() - start
        if why is None or elapsed >= timeout:
            return outcome, attempts, elapsed
        delay = min(backoff(attempts, interval), timeout - elapsed)
        line = progress.add(
            f"attempt {attempts}: {why}; retrying in {delay:.0f} s ({elapsed:.0f} of {timeout:.0f} s spent)"
        )
        if log is not None:
            log(line)
        sleep(max(0.0, delay))
