# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The workloads of a fleet: the item schema of the workload role, its defaults, and every input rule, written once.

An item is one ServiceAccount and what makes it a workload identity: its user-assigned managed identity, the
federated credential, role grants, an optional settings ConfigMap and the pod templates to opt in. The fleet
modules take the role's ``workload_items`` as they are (``ITEM_SPEC`` is the role's argument spec, checked equal by
a unit test) and, where a role accepts them, the entries of ``workload_results`` (``identity_name`` and
``identity_resource_group`` instead of ``identity``, ``configmap`` by name, ``patched_workloads``).

Everything here is pure: ``parse_items`` gives ``Item`` objects and "items[i] (name): field: rule" errors, before
any request is made.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.aks.workload_identity.plugins.module_utils.inputs import spec_errors
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import (
    federated_credential,
    identity_binding,
    role_assignment,
    service_account,
    settings_configmap,
    workload_patch,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    DEFAULT_PROXY_SIDECAR_PORT,
    FEDERATIONS,
    MAX_FEDERATED_CREDENTIALS_PER_IDENTITY,
    default_identity_binding_name,
    service_account_subject,
    validate_federated_credential_name,
    validate_identity_binding_name,
    validate_identity_name,
    validate_issuer,
    validate_location,
    validate_resource_group_name,
    validate_uuid,
)

FEDERATED_CREDENTIAL, IDENTITY_BINDING = FEDERATIONS
# The workload role's workload_items options (roles/workload/meta/argument_specs.yml; a unit test keeps them equal).
ITEM_SPEC: dict[str, dict[str, t.Any]] = {
    "name": {"type": "str", "required": True},
    "namespace": {"type": "str", "required": True},
    "service_account": {"type": "str", "required": True},
    "identity": {
        "type": "dict",
        "required": True,
        "options": {
            "name": {"type": "str", "required": True},
            "resource_group": {"type": "str", "required": True},
            "location": {"type": "str"},
            "create": {"type": "bool", "default": True},
        },
    },
    "credential_name": {"type": "str"},
    "federation": {"type": "str", "choices": list(FEDERATIONS), "default": FEDERATED_CREDENTIAL},
    "identity_binding_name": {"type": "str"},
    "grants": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {"role": {"type": "str", "required": True}, "scope": {"type": "str", "required": True}},
    },
    "token_expiration": {"type": "int"},
    "tenant_annotation": {"type": "bool", "default": True},
    "create_namespace": {"type": "bool", "default": False},
    "labels": {"type": "dict", "default": {}},
    "annotations": {"type": "dict", "default": {}},
    "configmap": {
        "type": "dict",
        "options": {"name": {"type": "str"}, "data": {"type": "dict", "default": {}}},
    },
    "patch_workloads": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {
            "kind": {"type": "str", "required": True, "choices": list(workload_patch.KINDS)},
            "name": {"type": "str", "required": True},
        },
    },
    "proxy_sidecar": {"type": "bool"},
    "proxy_sidecar_port": {"type": "int", "default": DEFAULT_PROXY_SIDECAR_PORT},
}
# Keys of a workload_results entry that are outputs of the workload role, not inputs: ignored as input, except the
# client ID and issuer the workload was set up with, which verification compares with what it finds.
RESULT_KEYS = frozenset(
    {
        "subject",
        "identity_name",
        "identity_resource_group",
        "identity_id",
        "client_id",
        "principal_id",
        "tenant_id",
        "issuer",
        "binding_issuer_url",
        "patched_workloads",
        "manifest_snippet",
        "changed",
        "failed",
        "failed_step",
        "error",
        "error_code",
        "actions",
        "warnings",
        # state absent and verification outputs
        "federated_credential",
        "federated_credential_deleted",
        "service_account_removed",
        "configmap_removed",
        "grants_removed",
        "grants_kept",
        "pod_templates_changed",
        "identity_binding_deleted",
        "binding_access_removed",
        "proof",
        "pod_proof",
        "passed",
        "problems",
        "pod_proof_ready",
        "keyvault_url",
    }
)
PLACEHOLDER_CLIENT_ID = "00000000-0000-0000-0000-000000000000"  # stands in to validate before an identity exists


@dataclass(frozen=True)
class IdentityRef:
    name: str
    resource_group: str
    location: str | None = None
    create: bool = True

    @property
    def key(self) -> tuple[str, str]:
        """Azure resource names are case-insensitive: two spellings are one identity."""
        return (self.resource_group.lower(), self.name.lower())

    @property
    def label(self) -> str:
        return f"managed identity '{self.name}' in resource group '{self.resource_group}'"


@dataclass(frozen=True)
class Grant:
    role: str
    scope: str


@dataclass(frozen=True)
class PodTemplateRef:
    kind: str
    name: str


@dataclass(frozen=True)
class ConfigMapSpec:
    name: str
    data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Item:
    """One workload, with the role's defaults filled in."""

    index: int
    name: str
    namespace: str
    service_account: str
    identity: IdentityRef
    credential_name: str | None = None
    federation: str = FEDERATED_CREDENTIAL
    identity_binding_name: str | None = None
    grants: tuple[Grant, ...] = ()
    token_expiration: int | None = None
    tenant_annotation: bool = True
    create_namespace: bool = False
    labels: dict[str, t.Any] = field(default_factory=dict)
    annotations: dict[str, t.Any] = field(default_factory=dict)
    configmap: ConfigMapSpec | None = None
    patch_workloads: tuple[PodTemplateRef, ...] = ()
    proxy_sidecar: bool | None = None
    proxy_sidecar_port: int = DEFAULT_PROXY_SIDECAR_PORT
    # From a workload_results entry: what the workload was set up with (verification compares).
    expected_client_id: str | None = None
    expected_issuer: str | None = None

    @property
    def subject(self) -> str:
        return service_account_subject(self.namespace, self.service_account)

    @property
    def uses_binding(self) -> bool:
        return self.federation == IDENTITY_BINDING

    @property
    def binding_name(self) -> str:
        """The identity binding's name on the cluster: given, or derived from the identity's name."""
        return self.identity_binding_name or default_identity_binding_name(self.identity.name)

    @property
    def where(self) -> str:
        return f"items[{self.index}] ({self.name})"

    def view(self) -> dict[str, str]:
        """What every per-workload result starts with."""
        return {
            "name": self.name,
            "namespace": self.namespace,
            "service_account": self.service_account,
            "subject": self.subject,
            "identity_name": self.identity.name,
            "identity_resource_group": self.identity.resource_group,
        }

    @property
    def service_account_label(self) -> str:
        return f"ServiceAccount '{self.namespace}/{self.service_account}'"


# --- Parsing ----------------------------------------------------------------------------------------------------
def _from_result(raw: dict[str, t.Any]) -> dict[str, t.Any]:
    """A workload_results entry in the item shape (an item is returned as it is)."""
    item = {key: value for key, value in raw.items() if key not in RESULT_KEYS}
    if "identity" not in raw and ("identity_name" in raw or "identity_resource_group" in raw):
        item["identity"] = {"name": raw.get("identity_name"), "resource_group": raw.get("identity_resource_group")}
    if raw.get("credential_name") == "":  # a check-mode result: the name is not known until the issuer is
        del item["credential_name"]
    if isinstance(raw.get("configmap"), str):
        item["configmap"] = {"name": raw["configmap"]} if raw["configmap"] else None
    if "patch_workloads" not in raw and raw.get("patched_workloads"):
        item["patch_workloads"] = raw["patched_workloads"]
    return item


def _where(index: int, raw: t.Any) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"items[{index}] ({name})" if isinstance(name, str) and name else f"items[{index}]"


def parse_items(
    raw_items: t.Any, *, default_location: str | None = None, accept_results: bool = False
) -> tuple[list[Item], list[str]]:
    """Items from the module's ``items`` option: the role's schema, its defaults, and the checks of type, required
    keys and choices Ansible applies to a role's argument spec. Errors name the item and the key."""
    if not isinstance(raw_items, list) or not raw_items:
        return [], ["items: must list at least one workload"]
    items: list[Item] = []
    errors: list[str] = []
    validator = ArgumentSpecValidator(ITEM_SPEC)
    for index, raw in enumerate(raw_items):
        where = _where(index, raw)
        if not isinstance(raw, dict):
            errors.append(f"{where}: must be a dictionary, got {type(raw).__name__}")
            continue
        shaped = _from_result(raw) if accept_results else raw
        # The values as written first: Ansible's conversion would turn `name: yes` into "True".
        problems = spec_errors(ITEM_SPEC, shaped)
        result = validator.validate(shaped)
        problems = problems or list(result.errors.messages) or _unset_required(result.validated_parameters)
        if problems:
            errors += [f"{where}: {problem}" for problem in problems]
            continue
        items.append(_item(index, result.validated_parameters, raw if accept_results else {}, default_location))
    return items, errors


def _unset_required(values: dict[str, t.Any]) -> list[str]:
    """A required key given as null passes Ansible's check (it is present) but names nothing."""
    problems = [f"{key}: is required" for key in ("name", "namespace", "service_account") if values.get(key) is None]
    identity = values.get("identity") or {}
    problems += [f"identity.{key}: is required" for key in ("name", "resource_group") if identity.get(key) is None]
    for index, grant in enumerate(values.get("grants") or []):
        problems += [f"grants[{index}].{key}: is required" for key in ("role", "scope") if grant.get(key) is None]
    for index, target in enumerate(values.get("patch_workloads") or []):
        problems += [
            f"patch_workloads[{index}].{key}: is required" for key in ("kind", "name") if target.get(key) is None
        ]
    return problems


def _item(index: int, values: dict[str, t.Any], raw: dict[str, t.Any], default_location: str | None) -> Item:
    identity = values["identity"]
    configmap = values.get("configmap")
    return Item(
        index=index,
        name=values["name"],
        namespace=values["namespace"],
        service_account=values["service_account"],
        identity=IdentityRef(
            name=identity["name"],
            resource_group=identity["resource_group"],
            location=identity.get("location") or default_location or None,
            create=identity["create"],
        ),
        credential_name=values.get("credential_name") or None,
        federation=values["federation"],
        identity_binding_name=values.get("identity_binding_name") or None,
        grants=tuple(Grant(g["role"], g["scope"]) for g in values["grants"]),
        token_expiration=values.get("token_expiration"),
        tenant_annotation=values["tenant_annotation"],
        create_namespace=values["create_namespace"],
        labels=dict(values["labels"]),
        annotations=dict(values["annotations"]),
        configmap=None
        if configmap is None
        else ConfigMapSpec(
            name=configmap.get("name") or f"{values['service_account']}-azure-identity",
            data=dict(configmap.get("data") or {}),
        ),
        patch_workloads=tuple(PodTemplateRef(p["kind"], p["name"]) for p in values["patch_workloads"]),
        proxy_sidecar=values.get("proxy_sidecar"),
        proxy_sidecar_port=values["proxy_sidecar_port"],
        expected_client_id=raw.get("client_id") or None,
        expected_issuer=raw.get("issuer") or None,
    )


# --- Rules ------------------------------------------------------------------------------------------------------
def desired_service_account(
    item: Item, client_id: str | None, tenant_id: str | None
) -> service_account.DesiredServiceAccount:
    return service_account.DesiredServiceAccount(
        namespace=item.namespace,
        name=item.service_account,
        client_id=client_id,
        tenant_id=tenant_id if (tenant_id and item.tenant_annotation) else None,
        token_expiration=item.token_expiration,
        labels=item.labels,
        annotations=item.annotations,
        create_namespace=item.create_namespace,
    )


def desired_configmap(item: Item, client_id: str | None, tenant_id: str | None) -> settings_configmap.DesiredConfigMap:
    spec = t.cast(ConfigMapSpec, item.configmap)
    return settings_configmap.DesiredConfigMap(
        namespace=item.namespace,
        name=spec.name,
        data=spec.data,
        client_id=client_id,
        tenant_id=tenant_id or None,
        create_namespace=item.create_namespace,
    )


def desired_credential(
    item: Item, issuer: str | None, state: str = "present"
) -> federated_credential.DesiredCredential:
    return federated_credential.DesiredCredential(
        resource_group=item.identity.resource_group,
        identity_name=item.identity.name,
        name=item.credential_name,
        issuer=issuer,
        subject=item.subject,
        state=state,
    )


def desired_pod_template(
    item: Item, target: PodTemplateRef, state: str = "present"
) -> workload_patch.DesiredPodTemplate:
    return workload_patch.DesiredPodTemplate(
        namespace=item.namespace,
        kind=target.kind,
        name=target.name,
        service_account=item.service_account if state == "present" else None,
        state=state,
        proxy_sidecar=item.proxy_sidecar if state == "present" else None,
        proxy_sidecar_port=item.proxy_sidecar_port,
        identity_binding=item.uses_binding if state == "present" else None,
    )


def validate_item(item: Item, *, state: str, issuer: str | None) -> list[str]:
    """The domain rules of one item, through each reconciler's own validate (no second copy of a rule)."""
    errors = [
        *validate_identity_name(item.identity.name, "identity.name"),
        *validate_resource_group_name(item.identity.resource_group, "identity.resource_group"),
    ]
    errors += validate_location(item.identity.location, "identity.location")
    account = service_account.validate(
        desired_service_account(item, PLACEHOLDER_CLIENT_ID if state == "present" else None, None)
    )
    # The reconciler calls the ServiceAccount's name "name"; here that is the item's service_account.
    errors += [
        f"service_account:{e[len('name:') :]}" if e.startswith("name:") else e for e in account if "client_id" not in e
    ]
    if item.credential_name is not None:
        errors += validate_federated_credential_name(item.credential_name, "credential_name")
        if item.uses_binding:
            errors.append(
                "credential_name: only applies with federation: federated_credential; an identity binding uses the "
                "credential AKS manages"
            )
    if item.uses_binding:
        errors += identity_binding.spec_name_errors(item.identity.name, "identity.name")
        errors += identity_binding.spec_name_errors(item.identity.resource_group, "identity.resource_group")
    if item.identity_binding_name is not None:
        errors += validate_identity_binding_name(item.identity_binding_name, "identity_binding_name")
        if not item.uses_binding:
            errors.append("identity_binding_name: only applies with federation: identity_binding")
    if state == "present" and issuer and not item.uses_binding:
        errors += [
            e
            for e in federated_credential.validate(desired_credential(item, issuer))
            if not e.startswith(("issuer:", "name:"))  # the issuer is checked once; the name above, by its option
        ]
    for index, grant in enumerate(item.grants):
        errors += role_assignment.validate_scope(grant.scope, f"grants[{index}].scope")
        errors += role_assignment.validate_role(grant.role, f"grants[{index}].role")
    if item.configmap is not None:
        placeholder = PLACEHOLDER_CLIENT_ID if state == "present" else None
        errors += [f"configmap.{e}" for e in settings_configmap.validate(desired_configmap(item, placeholder, None))]
    port_check = workload_patch.DesiredPodTemplate(
        item.namespace, "Deployment", "port-check", item.service_account, proxy_sidecar_port=item.proxy_sidecar_port
    )
    errors += [e for e in workload_patch.validate(port_check) if e.startswith("proxy_sidecar_port")]
    for index, target in enumerate(item.patch_workloads):
        problems = workload_patch.validate(desired_pod_template(item, target, state))
        errors += [f"patch_workloads[{index}].{e}" for e in problems if not e.startswith(("proxy", "namespace"))]
    return [f"{item.where}: {error}" for error in dict.fromkeys(errors)]


def validate_fleet(
    items: list[Item], *, state: str, issuer: str | None, tenant_id: str | None, cluster_named: bool = True
) -> list[str]:
    """Every rule over the whole list: each item's, unique names and ServiceAccounts, and the items that share an
    identity agreeing on it and fitting into its 20 federated credentials. ``cluster_named`` false: no cluster is
    named, which items using an identity binding (a child of the cluster) need."""
    errors: list[str] = []
    if not cluster_named:
        errors += [
            f"{item.where}: federation: identity_binding needs the cluster (cluster_resource_group and cluster_name) "
            "the identity is bound to"
            for item in items
            if item.uses_binding
        ]
    if issuer:
        errors += validate_issuer(issuer, "issuer_url")
    if tenant_id:
        errors += validate_uuid(tenant_id, "tenant_id")
    for item in items:
        errors += validate_item(item, state=state, issuer=issuer)
    errors += _duplicates(items, "name", lambda item: item.name)
    errors += _duplicates(
        items,
        "service_account",
        lambda item: (item.namespace, item.service_account),
        "(a ServiceAccount carries one client ID; list the Kubernetes workloads that share it under one item's "
        "patch_workloads)",
    )
    if state == "present":
        for members in identity_groups(items).values():
            errors += _identity_agreement(members)
    return errors


def _duplicates(items: list[Item], what: str, key: t.Callable[[Item], t.Any], why: str = "") -> list[str]:
    seen: dict[t.Any, Item] = {}
    errors = []
    for item in items:
        first = seen.setdefault(key(item), item)
        if first is not item:
            errors.append(f"{item.where}: {what}: repeats that of {first.where} {why}".rstrip())
    return errors


def _identity_agreement(members: list[Item]) -> list[str]:
    first = members[0]
    errors = []
    for other in members[1:]:
        if other.identity.create != first.identity.create:
            errors.append(f"{other.where}: identity.create: differs from {first.where}, which uses the same identity")
        if (other.identity.location or "").lower() != (first.identity.location or "").lower():
            errors.append(f"{other.where}: identity.location: differs from {first.where}, which uses the same identity")
    bound = [m for m in members if m.uses_binding]
    for other in bound[1:]:
        if other.binding_name != bound[0].binding_name:
            errors.append(
                f"{other.where}: identity_binding_name: differs from {bound[0].where}, which binds the same identity "
                "(one binding per identity and cluster)"
            )
    needed = credentials_needed(members)
    if needed > MAX_FEDERATED_CREDENTIALS_PER_IDENTITY:
        own = [m.name for m in members if not m.uses_binding]
        errors.append(
            f"{first.identity.label} would need {needed} federated credentials ({len(own)} items with their own: "
            f"{', '.join(own)}{'; 1 for its identity binding' if bound else ''}); an identity holds at most "
            f"{MAX_FEDERATED_CREDENTIALS_PER_IDENTITY}. Set federation: identity_binding on these items: a binding "
            "serves any number of ServiceAccounts on the cluster with one credential"
        )
    return errors


def credentials_needed(members: t.Iterable[Item]) -> int:
    """The federated credentials the items of one identity need on one cluster: one each with their own, one
    (AKS's shared aks-identity-binding) for all those using the identity binding."""
    members = list(members)
    return sum(1 for m in members if not m.uses_binding) + (1 if any(m.uses_binding for m in members) else 0)


def identity_groups(items: t.Iterable[Item]) -> dict[tuple[str, str], list[Item]]:
    """The items by identity, in order: what is written strictly in sequence."""
    groups: dict[tuple[str, str], list[Item]] = {}
    for item in items:
        groups.setdefault(item.identity.key, []).append(item)
    return groups


def raw_identity_key(raw: t.Any) -> tuple[str, str]:
    """The identity key of a raw item or workload_results entry (for batching before parsing)."""
    if not isinstance(raw, dict):
        return ("", "")
    identity = raw.get("identity") if isinstance(raw.get("identity"), dict) else {}
    name = identity.get("name") or raw.get("identity_name") or ""
    group = identity.get("resource_group") or raw.get("identity_resource_group") or ""
    return (str(group).lower(), str(name).lower())


def batches(raw_items: list[t.Any], size: int) -> list[list[t.Any]]:
    """The items in batches of about ``size``, in order, never splitting the items of one identity (their
    credentials, budget and the decision to delete the identity belong to one run). A batch grows past ``size``
    only when one identity has more items than that."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    groups: dict[tuple[str, str], list[t.Any]] = {}
    for raw in raw_items:
        groups.setdefault(raw_identity_key(raw), []).append(raw)
    result: list[list[t.Any]] = []
    current: list[t.Any] = []
    for members in groups.values():
        if current and len(current) + len(members) > size:
            result.append(current)
            current = []
        current += members
    if current:
        result.append(current)
    return result
