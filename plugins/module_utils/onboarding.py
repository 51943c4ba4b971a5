# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Self-service onboarding: the request an application team writes on its ServiceAccount, the platform team's
policy, and what one reconcile does with them. Written once; the ``onboarding_requests`` module and the EDA event
source (``extensions/eda/plugins/event_source/service_accounts.py``, a unit test keeps its prefix equal) use it.

A request is a set of annotations on a ServiceAccount::

    aks.workload-identity/request-identity: id-orders                      # required: the identity to act as
    aks.workload-identity/request-grants: Key Vault Secrets User@orders-vault  # optional: role@scope alias, ...
    aks.workload-identity/request-federation: identity_binding             # optional, federated_credential default

The reconcile is level-triggered: it reads every ServiceAccount and the registry (a ConfigMap in a namespace of the
platform team's that records what onboarding applied, so that a withdrawn request or a deleted ServiceAccount is
taken down even when its event was missed), and plans per ServiceAccount one decision. Everything here is pure.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import typing as t
from dataclasses import dataclass, field

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.aks.workload_identity.plugins.module_utils.inputs import spec_errors
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import role_assignment
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ANNOTATION_USE_IDENTITY_BINDING,
    FEDERATIONS,
    LABEL_USE,
    validate_identity_name,
    validate_location,
    validate_namespace,
    validate_resource_group_name,
)

ANNOTATION_DOMAIN = "aks.workload-identity/"
REQUEST_PREFIX = ANNOTATION_DOMAIN + "request-"  # the EDA source watches exactly these keys
REQUEST_IDENTITY = REQUEST_PREFIX + "identity"
REQUEST_GRANTS = REQUEST_PREFIX + "grants"
REQUEST_FEDERATION = REQUEST_PREFIX + "federation"
REQUEST_KEYS = (REQUEST_IDENTITY, REQUEST_GRANTS, REQUEST_FEDERATION)
# Written by the reconcile for the requester to read (kubectl get sa -o yaml / describe); never a request key, so
# that writing them triggers no event.
STATUS_ANNOTATION = ANNOTATION_DOMAIN + "onboarding-status"
MESSAGE_ANNOTATION = ANNOTATION_DOMAIN + "onboarding-message"

ONBOARDED, REFUSED, FAILED, OFFBOARDED = "onboarded", "refused", "failed", "offboarded"
PENDING = "pending"  # recorded before the first write of a request, so that a crash leaves it to be taken down
# The Kubernetes Event per outcome: (type, reason). Reasons are UpperCamelCase, as the Event API asks.
EVENTS = {
    ONBOARDED: ("Normal", "Onboarded"),
    REFUSED: ("Warning", "OnboardingRefused"),
    FAILED: ("Warning", "OnboardingFailed"),
    OFFBOARDED: ("Normal", "Offboarded"),
}
EVENT_COMPONENT = "aks-workload-identity-onboarding"
MAX_MESSAGE = 1024  # an Event's note is at most 1 kB (events.k8s.io/v1 Event.note)

DEFAULT_REGISTRY_NAMESPACE = "aks-wid-onboarding"
DEFAULT_REGISTRY_NAME = "onboarding-registry"
SCOPE_ALIAS_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
IDENTITY_PATTERN = re.compile(r"^[a-zA-Z0-9_*?\[\]-]{1,128}$")  # an identity name, or a glob of one
GRANT_SEPARATORS = re.compile(r"[,;\n]")

NAMESPACE_SPEC: dict[str, dict[str, t.Any]] = {
    "identities": {"type": "list", "elements": "str", "required": True},
    "grants": {"type": "list", "elements": "str", "default": []},
    "federations": {"type": "list", "elements": "str", "default": ["federated_credential"]},
}
POLICY_SPEC: dict[str, dict[str, t.Any]] = {
    "identity_resource_group": {"type": "str", "required": True},
    "identity_location": {"type": "str"},
    "create_identities": {"type": "bool", "default": True},
    "delete_identities": {"type": "bool", "default": False},
    "scopes": {"type": "dict", "default": {}},
    "namespaces": {"type": "dict", "required": True},
}


# --- The policy ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NamespacePolicy:
    identities: tuple[str, ...]  # names or fnmatch globs
    grants: frozenset[tuple[str, str]]  # (role casefolded, scope alias)
    federations: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    identity_resource_group: str
    identity_location: str | None
    create_identities: bool
    delete_identities: bool
    scopes: dict[str, str]
    namespaces: dict[str, NamespacePolicy]


def parse_grant(text: str) -> tuple[str, str] | None:
    """``Role name@scope-alias`` as (role, alias); None when it has no ``@`` or an empty side."""
    role, sep, alias = text.strip().rpartition("@")
    role, alias = role.strip(), alias.strip()
    return (role, alias) if sep and role and alias else None


def split_grants(text: str) -> list[str]:
    return [part.strip() for part in GRANT_SEPARATORS.split(text) if part.strip()]


def parse_policy(raw: t.Any) -> tuple[Policy | None, list[str]]:
    """The policy option, every rule checked before any request; errors read ``policy.<path>: rule``."""
    if not isinstance(raw, dict):
        return None, [f"policy: must be a dictionary, got {type(raw).__name__}"]
    problems = spec_errors(POLICY_SPEC, raw)
    result = ArgumentSpecValidator(POLICY_SPEC).validate(raw)
    problems = problems or list(result.errors.messages)
    if problems:
        return None, [f"policy: {p}" for p in problems]
    values = result.validated_parameters
    errors = validate_resource_group_name(values["identity_resource_group"], "policy.identity_resource_group")
    errors += validate_location(values["identity_location"], "policy.identity_location")
    scopes: dict[str, str] = {}
    for alias, scope in values["scopes"].items():
        where = f"policy.scopes.{alias}"
        if not isinstance(alias, str) or not SCOPE_ALIAS_PATTERN.match(alias):
            errors.append(f"{where}: an alias is 1-63 lower-case letters, digits and '-', got {alias!r}")
        errors += role_assignment.validate_scope(scope, where)
        scopes[str(alias)] = scope
    namespaces: dict[str, NamespacePolicy] = {}
    if not values["namespaces"]:
        errors.append("policy.namespaces: must allow at least one namespace")
    for name, spec in values["namespaces"].items():
        parsed, problems = _namespace_policy(str(name), spec, scopes)
        errors += problems
        if parsed is not None:
            namespaces[str(name)] = parsed
    if errors:
        return None, errors
    policy = Policy(
        identity_resource_group=values["identity_resource_group"],
        identity_location=values["identity_location"],
        create_identities=values["create_identities"],
        delete_identities=values["delete_identities"],
        scopes=scopes,
        namespaces=namespaces,
    )
    return policy, []


def _namespace_policy(name: str, raw: t.Any, scopes: dict[str, str]) -> tuple[NamespacePolicy | None, list[str]]:
    where = f"policy.namespaces.{name}"
    errors = validate_namespace(name, where)
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        return None, [*errors, f"{where}: must be a dictionary, got {type(raw).__name__}"]
    problems = spec_errors(NAMESPACE_SPEC, raw)
    result = ArgumentSpecValidator(NAMESPACE_SPEC).validate(raw)
    problems = problems or list(result.errors.messages)
    if problems:
        return None, [*errors, *(f"{where}: {p}" for p in problems)]
    values = result.validated_parameters
    if not values["identities"]:
        errors.append(
            f"{where}.identities: must allow at least one identity (a name or a pattern such as 'id-orders-*')"
        )
    for index, pattern in enumerate(values["identities"]):
        if not IDENTITY_PATTERN.match(pattern):
            errors.append(
                f"{where}.identities[{index}]: an identity name or a pattern of one (letters, digits, '-', '_' and "
                f"the wildcards '*', '?', '[...]'), got {pattern!r}"
            )
    grants = set()
    for index, text in enumerate(values["grants"]):
        grant = parse_grant(text)
        if grant is None:
            errors.append(f"{where}.grants[{index}]: must read 'Role name@scope alias', got {text!r}")
            continue
        errors += role_assignment.validate_role(grant[0], f"{where}.grants[{index}]")
        if grant[1] not in scopes:
            errors.append(f"{where}.grants[{index}]: scope alias {grant[1]!r} is not defined under policy.scopes")
        grants.add((grant[0].casefold(), grant[1]))
    for index, federation in enumerate(values["federations"]):
        if federation not in FEDERATIONS:
            errors.append(f"{where}.federations[{index}]: must be one of {', '.join(FEDERATIONS)}, got {federation!r}")
    if errors:
        return None, errors
    return NamespacePolicy(tuple(values["identities"]), frozenset(grants), tuple(values["federations"])), []


# --- The request --------------------------------------------------------------------------------------------------
@dataclass
class Request:
    namespace: str
    service_account: str
    uid: str
    annotations: dict[str, str]  # the request keys only
    identity: str | None = None
    grants: list[tuple[str, str]] = field(default_factory=list)  # (role as written, alias)
    federation: str = FEDERATIONS[0]
    problems: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return registry_key(self.namespace, self.service_account)

    @property
    def digest(self) -> str:
        """Of the request annotations as written: a change of any of them is a new request."""
        text = json.dumps(self.annotations, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def registry_key(namespace: str, service_account: str) -> str:
    """A ConfigMap key (``[-._a-zA-Z0-9]+``); a namespace has no dot, so the first dot splits it back."""
    return f"{namespace}.{service_account}"


def request_annotations(annotations: t.Mapping[str, t.Any] | None) -> dict[str, str]:
    return {k: str(v) for k, v in (annotations or {}).items() if k.startswith(REQUEST_PREFIX)}


def read_request(service_account: t.Mapping[str, t.Any]) -> Request | None:
    """The request on a ServiceAccount (an API dict), or None when it carries none; problems of form are kept on
    the request (it is refused with them)."""
    metadata = service_account.get("metadata") or {}
    wanted = request_annotations(metadata.get("annotations"))
    if not wanted:
        return None
    request = Request(metadata.get("namespace", ""), metadata.get("name", ""), metadata.get("uid", ""), wanted)
    unknown = sorted(set(wanted) - set(REQUEST_KEYS))
    if unknown:
        request.problems.append(f"unknown request annotation {', '.join(unknown)} (known: {', '.join(REQUEST_KEYS)})")
    identity = wanted.get(REQUEST_IDENTITY, "").strip()
    if not identity:
        request.problems.append(f"{REQUEST_IDENTITY}: is required, the name of the identity to act as")
    else:
        request.identity = identity
        request.problems += validate_identity_name(identity, REQUEST_IDENTITY)
    for text in split_grants(wanted.get(REQUEST_GRANTS, "")):
        grant = parse_grant(text)
        if grant is None:
            request.problems.append(f"{REQUEST_GRANTS}: each grant reads 'Role name@scope alias', got {text!r}")
        else:
            request.grants.append(grant)
    federation = wanted.get(REQUEST_FEDERATION, "").strip() or FEDERATIONS[0]
    request.federation = federation
    if federation not in FEDERATIONS:
        request.problems.append(f"{REQUEST_FEDERATION}: must be one of {', '.join(FEDERATIONS)}, got {federation!r}")
    return request


def refusals(request: Request, policy: Policy) -> list[str]:
    """Why the policy refuses the request; empty when it is allowed. Every reason is named, not only the first."""
    reasons = list(request.problems)
    allowed = policy.namespaces.get(request.namespace)
    if allowed is None:
        return [*reasons, f"namespace {request.namespace} is not open to self-service onboarding"]
    if request.identity and not any(fnmatch.fnmatchcase(request.identity, p) for p in allowed.identities):
        reasons.append(
            f"identity {request.identity} is not allowed in namespace {request.namespace} "
            f"(allowed: {', '.join(allowed.identities)})"
        )
    for role, alias in request.grants:
        if alias not in policy.scopes:
            reasons.append(f"grant {role}@{alias}: no scope is called {alias!r}")
        elif (role.casefold(), alias) not in allowed.grants:
            reasons.append(f"grant {role}@{alias} is not allowed in namespace {request.namespace}")
    if request.federation in FEDERATIONS and request.federation not in allowed.federations:
        reasons.append(f"federation {request.federation} is not allowed in namespace {request.namespace}")
    return reasons


def item_for(request: Request, policy: Policy) -> dict[str, t.Any]:
    """The workload role's item of an allowed request (the fleet engine's input, checked by its rules again)."""
    identity: dict[str, t.Any] = {
        "name": request.identity,
        "resource_group": policy.identity_resource_group,
        "create": policy.create_identities,
    }
    if policy.identity_location:
        identity["location"] = policy.identity_location
    grants, seen = [], set()
    for role, alias in request.grants:
        if (role.casefold(), alias) not in seen:
            seen.add((role.casefold(), alias))
            grants.append({"role": role, "scope": policy.scopes[alias]})
    return {
        "name": request.key,
        "namespace": request.namespace,
        "service_account": request.service_account,
        "identity": identity,
        "federation": request.federation,
        "grants": grants,
    }


# --- The registry -------------------------------------------------------------------------------------------------
def record_for(item: dict[str, t.Any], request: Request, status: str) -> dict[str, t.Any]:
    """What the registry keeps of an applied request: enough to take it down with no request left to read."""
    return {
        "uid": request.uid,
        "digest": request.digest,
        "status": status,
        "identity": {"name": item["identity"]["name"], "resource_group": item["identity"]["resource_group"]},
        "federation": item["federation"],
        "grants": item["grants"],
    }


def item_of_record(key: str, record: dict[str, t.Any]) -> dict[str, t.Any]:
    namespace, _sep, name = key.partition(".")
    return {
        "name": key,
        "namespace": namespace,
        "service_account": name,
        "identity": {**record["identity"], "create": False},
        "federation": record.get("federation") or FEDERATIONS[0],
        "grants": list(record.get("grants") or []),
    }


def parse_registry(data: t.Mapping[str, t.Any] | None) -> tuple[dict[str, dict[str, t.Any]], list[str]]:
    """The registry ConfigMap's data; an entry that is not a record is reported and left alone (never guessed)."""
    records, problems = {}, []
    for key, text in (data or {}).items():
        try:
            record = json.loads(text)
            if not isinstance(record, dict) or not isinstance(record.get("identity"), dict):
                raise ValueError("not a record")
            records[key] = record
        except ValueError:
            problems.append(f"registry entry {key} is not a record written by onboarding; left alone")
    return records, problems


# --- The plan -----------------------------------------------------------------------------------------------------
APPLY, REFUSE, OFFBOARD = "apply", "refuse", "offboard"


@dataclass
class Decision:
    key: str
    namespace: str
    service_account: str
    action: str
    request: Request | None = None
    record: dict[str, t.Any] | None = None
    item: dict[str, t.Any] | None = None  # APPLY: the item to converge
    replaced: dict[str, t.Any] | None = None  # APPLY: the recorded item to take down first (other identity)
    revoked: list[dict[str, t.Any]] = field(default_factory=list)  # APPLY: recorded grants the request dropped
    prove: bool = False  # APPLY: new or changed, or not proven yet
    reasons: list[str] = field(default_factory=list)
    exists: bool = True  # the ServiceAccount exists
    held: str | None = None  # APPLY: why the replaced chain or the revoked grants could not be taken down


def _same_chain(item: dict[str, t.Any], recorded: dict[str, t.Any]) -> bool:
    return (
        item["identity"]["name"].lower() == recorded["identity"]["name"].lower()
        and item["identity"]["resource_group"].lower() == recorded["identity"]["resource_group"].lower()
        and item["federation"] == recorded["federation"]
    )


def _grant_key(grant: t.Mapping[str, str]) -> tuple[str, str]:
    return grant["role"].casefold(), role_assignment.normalize_scope(grant["scope"]).lower()


def plan(
    service_accounts: list[dict[str, t.Any]], records: dict[str, dict[str, t.Any]], policy: Policy
) -> list[Decision]:
    """One decision per ServiceAccount that asks, and per record whose request is gone, in a stable order."""
    decisions: list[Decision] = []
    asking: set[str] = set()
    for account in service_accounts:
        request = read_request(account)
        if request is None:
            continue
        asking.add(request.key)
        record = records.get(request.key)
        decision = Decision(request.key, request.namespace, request.service_account, APPLY, request, record)
        decision.reasons = refusals(request, policy)
        if decision.reasons:
            decision.action = REFUSE
        else:
            _plan_apply(decision, request, record, policy)
        decisions.append(decision)
    for key, record in records.items():
        if key in asking:
            continue
        namespace, _sep, name = key.partition(".")
        present = any(
            (a.get("metadata") or {}).get("namespace") == namespace and (a.get("metadata") or {}).get("name") == name
            for a in service_accounts
        )
        decision = Decision(key, namespace, name, OFFBOARD, None, record, item=item_of_record(key, record))
        decision.exists = present
        decision.reasons = ["the request was withdrawn" if present else "the ServiceAccount was deleted"]
        decisions.append(decision)
    return sorted(decisions, key=lambda d: d.key)


def _plan_apply(decision: Decision, request: Request, record: dict[str, t.Any] | None, policy: Policy) -> None:
    decision.item = item_for(request, policy)
    if record is None:
        decision.prove = True
        return
    recorded = item_of_record(request.key, record)
    if not _same_chain(decision.item, recorded):
        decision.replaced = recorded
    else:
        wanted = {_grant_key(g) for g in decision.item["grants"]}
        decision.revoked = [g for g in recorded["grants"] if _grant_key(g) not in wanted]
    decision.prove = record.get("digest") != request.digest or record.get("status") != ONBOARDED


def staying_items(decisions: list[Decision]) -> list[dict[str, t.Any]]:
    """What stays after this reconcile: the applied requests, and what a refused change leaves in place."""
    items = [d.item for d in decisions if d.action == APPLY and d.item is not None]
    items += [item_of_record(d.key, d.record) for d in decisions if d.action == REFUSE and d.record is not None]
    return items


def message(decision: Decision, outcome: str, detail: str = "") -> str:
    """The onboarding-message annotation and the Event's message: what happened and what to do, within 1 kB."""
    request = decision.request
    if outcome == REFUSED:
        kept = (
            f" The onboarding applied earlier (identity {decision.record['identity']['name']}) stays."
            if decision.record
            else ""
        )
        text = f"Request refused: {'; '.join(decision.reasons)}.{kept} Change the request annotations to retry."
    elif outcome == ONBOARDED and request is not None:
        grants = ", ".join(f"{r}@{a}" for r, a in request.grants) or "no grants"
        pods = f"label the pods {LABEL_USE}=true"
        if request.federation == FEDERATIONS[1]:  # the webhook points them at the AKS token proxy only on request
            pods += f" and annotate them {ANNOTATION_USE_IDENTITY_BINDING}=true"
        text = (
            f"Onboarded: identity {request.identity}{detail} trusts this ServiceAccount "
            f"({request.federation}); {grants}. Run the pods as this ServiceAccount, {pods}."
        )
    elif outcome == OFFBOARDED:
        text = (
            f"Offboarded: {decision.reasons[0]}; the identity's trust of this ServiceAccount and its grants are gone."
        )
    else:
        text = f"Onboarding failed: {detail}. The next event or resync retries."
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def event_name(service_account: str, uid: str, outcome: str, text: str) -> str:
    """One Event per ServiceAccount, outcome and message: a repeated reconcile finds it and writes no other."""
    digest = hashlib.sha256(f"{uid}\n{outcome}\n{text}".encode()).hexdigest()[:12]
    suffix = f".onboarding.{digest}"
    # A DNS subdomain of at most 253 characters; a cut ServiceAccount name must not end in '.' or '-'.
    return service_account[: 253 - len(suffix)].rstrip(".-") + suffix


def event_body(
    namespace: str, account: dict[str, t.Any], outcome: str, text: str, now: str, name: str
) -> dict[str, t.Any]:
    """A core v1 Event about the ServiceAccount (involvedObject), as ``kubectl describe serviceaccount`` lists."""
    kind, reason = EVENTS[outcome]
    metadata = account.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "namespace": namespace,
            "name": metadata.get("name"),
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
        },
        "reason": reason,
        "message": text,
        "type": kind,
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "source": {"component": EVENT_COMPONENT},
        "reportingComponent": EVENT_COMPONENT,
        "reportingInstance": EVENT_COMPONENT,
    }
