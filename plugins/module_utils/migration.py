# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Migration from aad-pod-identity (deprecated) to Microsoft Entra Workload ID: the pure planner.

aad-pod-identity gives a pod an Azure identity when the pod carries the label ``aadpodidbinding: <selector>`` and an
``AzureIdentityBinding`` with that ``spec.selector`` names (``spec.azureIdentity``) an ``AzureIdentity``; NMI then
answers the pod's calls to the instance metadata endpoint (IMDS) with that identity's tokens
(https://azure.github.io/aad-pod-identity/docs/concepts/azureidentitybinding/). Microsoft's migration guide
(https://learn.microsoft.com/azure/aks/workload-identity-migrate-from-pod-identity) replaces that with the same
user-assigned identity federated with a ServiceAccount, and, for applications whose Azure Identity library cannot
use workload identity yet, the migration sidecar that proxies IMDS calls.

The planner's rules (each one is a function below, unit-tested):

- A workload (Deployment, StatefulSet, DaemonSet, CronJob) is selected by a binding when its pod template's
  ``aadpodidbinding`` label equals the binding's selector. The binding's AzureIdentity is the one of that name in the
  binding's namespace, else the only one of that name in another namespace (aad-pod-identity matches across
  namespaces by default). An AzureIdentity annotated ``aadpodidentity.k8s.io/Behavior: namespaced`` only selects
  pods of its own namespace (https://azure.github.io/aad-pod-identity/docs/configure/match_pods_in_namespace/).
- Only ``type: 0`` (a user-assigned managed identity: ``resourceID``, ``clientID``) has an equivalent: the same
  identity, ``create: false``. Types 1 and 2 are service principals
  (https://azure.github.io/aad-pod-identity/docs/concepts/azureidentity/): unsupported, they need a new identity.
- The ServiceAccount: the workload's own when it runs as one other than ``default``; else a new one named after the
  binding (in the workload's namespace). Every pod the binding selected had that identity already, so workloads of
  one binding and namespace sharing one ServiceAccount widen nothing, and cost one federated credential instead of
  one each (an identity holds 20). ``default`` is never annotated: every pod of the namespace runs as it.
- One fleet item per ServiceAccount (a ServiceAccount carries one client ID), listing its workloads under
  ``patch_workloads``; ``proxy_sidecar: true`` unless the application is said to use an Azure Identity library that
  supports workload identity.
- Unsupported, named and left alone: a service principal AzureIdentity; a binding whose AzureIdentity does not exist
  (or is ambiguous); a resourceID that is not a user-assigned identity of this subscription; a workload selected by
  two bindings; a ServiceAccount its workloads would need for two identities; a binding that selects nothing; a pod
  with no owner workload this migration can patch (a bare pod, a Job's).
- The ``aadpodidbinding`` label stays on the pod templates: once the binding is deleted it selects nothing, and
  taking it off is a second rollout best done in the application's own manifests after aad-pod-identity (NMI) is
  uninstalled.
- A binding is removable (``remove_pod_identity``) only when everything it selects migrated and was proven in this
  run and nothing unsupported still uses it; an AzureIdentity only when every binding naming it is removed.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.kubernetes import (
    POD_IDENTITY_BEHAVIOR_ANNOTATION,
)

POD_IDENTITY_LABEL = "aadpodidbinding"
USER_ASSIGNED_IDENTITY = 0  # AzureIdentity spec.type: 0 user-assigned identity, 1 and 2 service principals
DEFAULT_SERVICE_ACCOUNT = "default"
MIGRATION_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob")

# Per workload, where it stands.
PLANNED = "planned"  # would be migrated
MIGRATED = "migrated"  # converged by the fleet in this run
PROVEN = "proven"  # converged and its chain proven in this run
FAILED = "failed"
UNSUPPORTED = "unsupported"
LABEL_ONLY = "label_only"  # labelled, but no binding selects it (removed already, or never there)
NEXT_STEP = {
    PLANNED: "run with state: migrated to set up the workload identity equivalent",
    MIGRATED: "prove the chain (prove: true), then remove aad-pod-identity's objects (remove_pod_identity: true)",
    PROVEN: "remove aad-pod-identity's objects (remove_pod_identity: true); restart the workload's pods if they have "
    "not rolled out yet",
    FAILED: "fix the cause named in error and run again",
    UNSUPPORTED: "migrate it by hand (the reason names why): the module leaves it and its binding alone",
    LABEL_ONLY: "nothing selects it any more: take the aadpodidbinding label out of its manifests once aad-pod-identity "
    "is uninstalled",
}


@dataclass
class Workload:
    kind: str
    namespace: str
    name: str
    service_account: str | None
    selector: str
    uses_workload_identity: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass
class Plan:
    workloads: list[dict[str, t.Any]] = field(default_factory=list)
    items: list[dict[str, t.Any]] = field(default_factory=list)
    bindings: list[dict[str, t.Any]] = field(default_factory=list)
    azure_identities: list[dict[str, t.Any]] = field(default_factory=list)
    unsupported: list[dict[str, str]] = field(default_factory=list)


# --- Reading what was found -------------------------------------------------------------------------------------
def parse_identity_resource_id(resource_id: t.Any, subscription_id: str | None) -> tuple[str, str] | str:
    """(resource group, name) of a user-assigned identity's resource ID, or why it cannot be used."""
    parts = str(resource_id or "").strip("/").split("/")
    lowered = [p.lower() for p in parts]
    shape = ["subscriptions", None, "resourcegroups", None, "providers", "microsoft.managedidentity"]
    if len(parts) != 8 or any(want is not None and want != got for want, got in zip(shape, lowered, strict=False)):
        return f"resourceID {resource_id!r} is not the resource ID of a user-assigned managed identity"
    if lowered[6] != "userassignedidentities" or not parts[7]:
        return f"resourceID {resource_id!r} is not the resource ID of a user-assigned managed identity"
    if subscription_id and lowered[1] != subscription_id.lower():
        return (
            f"resourceID {resource_id!r} is in subscription {parts[1]}, not {subscription_id} the module works in "
            "(run it once per subscription)"
        )
    return parts[3], parts[7]


def selected_workloads(workloads: t.Iterable[t.Mapping[str, t.Any]]) -> list[Workload]:
    """The workloads (normalised by the PodTemplates gateway) whose pod template carries the aadpodidbinding label."""
    found = []
    for workload in workloads:
        selector = (workload.get("labels") or {}).get(POD_IDENTITY_LABEL)
        if workload.get("kind") in MIGRATION_KINDS and selector is not None:
            found.append(
                Workload(
                    kind=workload["kind"],
                    namespace=workload["namespace"],
                    name=workload["name"],
                    service_account=workload.get("service_account"),
                    selector=str(selector),
                    uses_workload_identity=bool(workload.get("workload_identity")),
                )
            )
    return sorted(found, key=lambda w: (w.namespace, w.kind, w.name))


def binding_identity(
    binding: t.Mapping[str, t.Any], identities: list[dict[str, t.Any]]
) -> tuple[dict[str, t.Any] | None, str | None]:
    """The AzureIdentity a binding names, or why there is none: its own namespace first, else the only one of that
    name elsewhere."""
    name = binding["spec"].get("azureIdentity")
    named = [i for i in identities if i["name"] == name]
    own = [i for i in named if i["namespace"] == binding["namespace"]]
    if own:
        return own[0], None
    if len(named) == 1:
        return named[0], None
    if not named:
        return None, f"names AzureIdentity {name!r}, which does not exist"
    where = ", ".join(sorted(f"{i['namespace']}/{i['name']}" for i in named))
    return None, f"names AzureIdentity {name!r}, which exists in several namespaces ({where}) but not its own"


def identity_problem(identity: t.Mapping[str, t.Any], subscription_id: str | None) -> str | None:
    """Why an AzureIdentity has no workload identity equivalent, or None."""
    spec = identity["spec"]
    kind = spec.get("type", USER_ASSIGNED_IDENTITY)
    if str(kind) != str(USER_ASSIGNED_IDENTITY):
        return (
            f"AzureIdentity {identity['namespace']}/{identity['name']} is a service principal (type {kind}): workload "
            "identity has no equivalent without a new identity (create a user-assigned managed identity, grant it what "
            "the service principal had, and set the workload up with the workload role)"
        )
    parsed = parse_identity_resource_id(spec.get("resourceID"), subscription_id)
    if isinstance(parsed, str):
        return f"AzureIdentity {identity['namespace']}/{identity['name']}: {parsed}"
    return None


def selects(binding: t.Mapping[str, t.Any], identity: t.Mapping[str, t.Any] | None, workload: Workload) -> bool:
    if workload.selector != binding["spec"].get("selector"):
        return False
    namespaced = identity is not None and identity["annotations"].get(POD_IDENTITY_BEHAVIOR_ANNOTATION) == "namespaced"
    return not namespaced or workload.namespace == identity["namespace"] == binding["namespace"]


def new_service_account(workload: Workload, binding: t.Mapping[str, t.Any]) -> tuple[str, bool]:
    """The ServiceAccount the workload runs as after the migration, and whether it is a new one."""
    if workload.service_account and workload.service_account != DEFAULT_SERVICE_ACCOUNT:
        return workload.service_account, False
    return binding["name"], True


def pod_owner(pod: t.Mapping[str, t.Any], readable: set[tuple[str, str, str]]) -> str | None:
    """Why a labelled pod has no owner workload this migration patches, or None when it has one. A ReplicaSet's pods
    belong to the Deployment named by the ReplicaSet's name without its hash, a Job's to the CronJob named by the
    Job's name without its schedule suffix, when those were read."""
    metadata = pod.get("metadata") or {}
    namespace = metadata.get("namespace")
    owners = [o for o in metadata.get("ownerReferences") or [] if o.get("controller", True)]
    if not owners:
        return "has no owner workload (a bare pod: re-create it from a Deployment, or by hand with workload identity)"
    owner = owners[0]
    kind, name = owner.get("kind"), str(owner.get("name") or "")
    candidates = {
        "ReplicaSet": ("Deployment", name.rsplit("-", 1)[0]),
        "Job": ("CronJob", name.rsplit("-", 1)[0]),
        "StatefulSet": ("StatefulSet", name),
        "DaemonSet": ("DaemonSet", name),
    }
    if kind in candidates and (candidates[kind][0], namespace, candidates[kind][1]) in readable:
        return None
    if kind == "Job":
        return (
            f"is owned by Job {name}, whose pod template cannot be changed (re-create the Job with workload identity)"
        )
    return f"is owned by {kind} {name}, not a workload this migration patches"


# --- The plan ---------------------------------------------------------------------------------------------------
def plan(
    *,
    identities: list[dict[str, t.Any]],
    bindings: list[dict[str, t.Any]],
    workloads: list[dict[str, t.Any]],
    pods: list[dict[str, t.Any]],
    subscription_id: str | None,
    sdk_supports_workload_identity: bool = False,
    proxy_sidecar_port: int | None = None,
) -> Plan:
    """The migration of everything found: AzureIdentity and AzureIdentityBinding objects (normalised by the
    PodIdentityObjects gateway), workloads (by the PodTemplates gateway), pods (API dicts)."""
    result = Plan()
    labelled = selected_workloads(workloads)
    readable = {(w["kind"], w["namespace"], w["name"]) for w in workloads}
    result.bindings, choices = _bindings(bindings, identities, labelled, subscription_id)
    result.workloads = [_workload_view(workload, choices.get(workload.key, [])) for workload in labelled]
    for view, workload in zip(result.workloads, labelled, strict=True):
        if view["status"] == PLANNED:
            _plan_workload(view, workload, choices[workload.key][0], subscription_id, sdk_supports_workload_identity)
    _refuse_shared_service_accounts(result.workloads)
    result.items = _items(result.workloads, proxy_sidecar_port)
    for pod in sorted(pods, key=_pod_key):
        _check_pod(pod, readable, result.bindings, result)
    for binding in result.bindings:
        blocked = [v["label"] for v in result.workloads if binding["label"] in v["bindings"] and v["status"] != PLANNED]
        if binding["status"] == PLANNED and blocked:
            binding.update(
                status=UNSUPPORTED, reason=f"selects workloads that cannot be migrated: {', '.join(blocked)}"
            )
    result.azure_identities = _identity_views(identities, result.bindings)
    pods_found = result.unsupported
    result.unsupported = [
        {"object": v["label"], "reason": v["reason"]} for v in result.workloads if v["status"] == UNSUPPORTED
    ]
    result.unsupported += [
        {"object": b["object"], "reason": b["reason"]} for b in result.bindings if b["status"] == UNSUPPORTED
    ]
    result.unsupported += pods_found
    return result


def _pod_key(pod: t.Mapping[str, t.Any]) -> tuple[str, str]:
    metadata = pod.get("metadata") or {}
    return (str(metadata.get("namespace")), str(metadata.get("name")))


def _plan_workload(
    view: dict[str, t.Any],
    workload: Workload,
    chosen: tuple[dict[str, t.Any], dict[str, t.Any]],
    subscription_id: str | None,
    sdk_supports_workload_identity: bool,
) -> None:
    binding, identity = chosen
    group, name = t.cast(tuple, parse_identity_resource_id(identity["spec"].get("resourceID"), subscription_id))
    account, created = new_service_account(workload, binding)
    view.update(
        identity={"name": name, "resource_group": group, "client_id": identity["spec"].get("clientID")},
        service_account=account,
        service_account_new=created,
        proxy_sidecar=not sdk_supports_workload_identity,
        item=f"{workload.namespace}/{account}",
    )


def _refuse_shared_service_accounts(views: list[dict[str, t.Any]]) -> None:
    """A ServiceAccount its workloads would need for two identities carries neither: each is named unsupported."""
    needed: dict[str, set[tuple[str, str]]] = {}
    for view in views:
        if view["status"] == PLANNED:
            identity = view["identity"]
            needed.setdefault(view["item"], set()).add((identity["resource_group"].lower(), identity["name"].lower()))
    for view in views:
        if view["status"] == PLANNED and len(needed[view["item"]]) > 1:
            _unsupported(
                view,
                f"ServiceAccount {view['item']} would carry {len(needed[view['item']])} identities (its workloads are "
                "bound to different ones); a ServiceAccount carries one client ID",
            )


def _items(views: list[dict[str, t.Any]], proxy_sidecar_port: int | None) -> list[dict[str, t.Any]]:
    """One fleet item per ServiceAccount, its workloads under patch_workloads."""
    items: dict[str, dict[str, t.Any]] = {}
    for view in views:
        if view["status"] != PLANNED:
            continue
        identity = view["identity"]
        item = items.setdefault(
            view["item"],
            _item(
                view["namespace"],
                view["service_account"],
                identity["resource_group"],
                identity["name"],
                view["proxy_sidecar"],
            ),
        )
        item["patch_workloads"].append({"kind": view["kind"], "name": view["name"]})
        if proxy_sidecar_port is not None and view["proxy_sidecar"]:
            item["proxy_sidecar_port"] = proxy_sidecar_port
    return [items[name] for name in sorted(items)]


def _bindings(
    bindings: list[dict[str, t.Any]],
    identities: list[dict[str, t.Any]],
    labelled: list[Workload],
    subscription_id: str | None,
) -> tuple[list[dict[str, t.Any]], dict[tuple[str, str, str], list[tuple[dict, dict]]]]:
    """Per binding its view, and per workload the (binding, identity) pairs that select it."""
    views = []
    choices: dict[tuple[str, str, str], list[tuple[dict, dict]]] = {}
    for binding in sorted(bindings, key=lambda b: (b["namespace"], b["name"])):
        identity, missing = binding_identity(binding, identities)
        problem = missing or (identity_problem(identity, subscription_id) if identity else None)
        chosen = [w for w in labelled if selects(binding, identity, w)]
        for workload in chosen:
            pair = (binding, {"problem": f"AzureIdentityBinding {binding['namespace']}/{binding['name']}: {problem}"})
            choices.setdefault(workload.key, []).append(pair if problem else (binding, identity))
        label = f"{binding['namespace']}/{binding['name']}"
        status, reason = PLANNED, ""
        if problem:
            status, reason = UNSUPPORTED, problem
        elif not chosen:
            status, reason = (
                UNSUPPORTED,
                f"selects no workload (selector {binding['spec'].get('selector')!r}); left alone: delete it by hand if "
                "no pod needs it",
            )
        views.append(
            {
                "object": f"AzureIdentityBinding {label}",
                "label": label,
                "namespace": binding["namespace"],
                "name": binding["name"],
                "uid": binding.get("uid"),
                "selector": binding["spec"].get("selector"),
                "azure_identity": f"{identity['namespace']}/{identity['name']}" if identity else None,
                "workloads": [w.label for w in chosen],
                "status": status,
                "reason": reason,
                "removable": False,
                "removed": False,
            }
        )
    return views, choices


def _workload_view(workload: Workload, chosen: list[tuple[dict, dict]]) -> dict[str, t.Any]:
    view: dict[str, t.Any] = {
        "kind": workload.kind,
        "namespace": workload.namespace,
        "name": workload.name,
        "label": workload.label,
        "selector": workload.selector,
        "service_account_before": workload.service_account or DEFAULT_SERVICE_ACCOUNT,
        "bindings": [f"{pair[0]['namespace']}/{pair[0]['name']}" for pair in chosen],
        "status": PLANNED,
        "reason": "",
    }
    if not chosen:
        view["status"] = LABEL_ONLY
        view["reason"] = f"no AzureIdentityBinding has the selector {workload.selector!r}" + (
            " (it uses workload identity already)" if workload.uses_workload_identity else ""
        )
    elif len(chosen) > 1:
        _unsupported(
            view,
            f"selected by {len(chosen)} AzureIdentityBindings ({', '.join(view['bindings'])}): aad-pod-identity gave it "
            "every identity they name; workload identity gives a ServiceAccount one",
        )
    elif "problem" in chosen[0][1]:
        _unsupported(view, chosen[0][1]["problem"])
    view["next_step"] = NEXT_STEP[view["status"]]
    return view


def _unsupported(view: dict[str, t.Any], reason: str) -> None:
    view.update(status=UNSUPPORTED, reason=reason, next_step=NEXT_STEP[UNSUPPORTED])


def _item(namespace: str, account: str, group: str, name: str, proxy_sidecar: bool) -> dict[str, t.Any]:
    """A fleet item (the workload role's workload_items schema)."""
    return {
        "name": f"{namespace}/{account}",
        "namespace": namespace,
        "service_account": account,
        "identity": {"name": name, "resource_group": group, "create": False},
        "patch_workloads": [],
        "proxy_sidecar": proxy_sidecar,
    }


def _check_pod(
    pod: dict[str, t.Any], readable: set[tuple[str, str, str]], bindings: list[dict[str, t.Any]], result: Plan
) -> None:
    """A labelled pod without an owner workload this migration patches keeps its bindings from being removed."""
    metadata = pod.get("metadata") or {}
    selector = (metadata.get("labels") or {}).get(POD_IDENTITY_LABEL)
    if selector is None:
        return
    problem = pod_owner(pod, readable)
    if problem is None:
        return
    label = f"Pod {metadata.get('namespace')}/{metadata.get('name')}"
    result.unsupported.append({"object": label, "reason": f"{problem}; it selects aadpodidbinding={selector}"})
    for binding in bindings:
        if binding["selector"] == selector and binding["status"] == PLANNED:
            binding["status"], binding["reason"] = UNSUPPORTED, f"{label} {problem}"


def _identity_views(identities: list[dict[str, t.Any]], bindings: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
    views = []
    for identity in sorted(identities, key=lambda i: (i["namespace"], i["name"])):
        label = f"{identity['namespace']}/{identity['name']}"
        views.append(
            {
                "object": f"AzureIdentity {label}",
                "label": label,
                "namespace": identity["namespace"],
                "name": identity["name"],
                "uid": identity.get("uid"),
                "type": identity["spec"].get("type", USER_ASSIGNED_IDENTITY),
                "client_id": identity["spec"].get("clientID"),
                "resource_id": identity["spec"].get("resourceID"),
                "bindings": [b["label"] for b in bindings if b["azure_identity"] == label],
                "removable": False,
                "removed": False,
            }
        )
    return views


# --- After the fleet ran ----------------------------------------------------------------------------------------
def settle(
    result: Plan,
    outcomes: t.Mapping[str, t.Mapping[str, t.Any]],
    proven: t.Mapping[str, bool],
    *,
    check_mode: bool = False,
) -> None:
    """Each planned workload's status from its item's fleet outcome (by item name) and proof, and then which
    bindings and AzureIdentity objects may go: a binding when every workload it selects is proven, an AzureIdentity
    when every binding naming it may go. In check mode nothing ran: a workload that would not fail stays planned and
    counts as proven (what would be removed once it is)."""
    for view in result.workloads:
        if view["status"] != PLANNED or view.get("item") not in outcomes:
            continue
        outcome = outcomes[view["item"]]
        if outcome.get("failed"):
            view.update(status=FAILED, reason=outcome.get("error") or "", failed_step=outcome.get("failed_step"))
        elif check_mode:
            view["status"] = PLANNED
        elif proven.get(view["item"]):
            view["status"] = PROVEN
        else:
            view["status"] = MIGRATED
        if (
            outcome.get("client_id")
            and view["identity"]["client_id"]
            and (outcome["client_id"].lower() != str(view["identity"]["client_id"]).lower())
        ):
            view.setdefault("warnings", []).append(
                f"the AzureIdentity's clientID {view['identity']['client_id']} is not the client ID of "
                f"{view['identity']['name']} ({outcome['client_id']}); the ServiceAccount carries the identity's"
            )
        view["next_step"] = NEXT_STEP[view["status"]]
    by_label = {v["label"]: v for v in result.workloads}
    for binding in result.bindings:
        done = (PROVEN, PLANNED) if check_mode else (PROVEN,)
        binding["removable"] = binding["status"] == PLANNED and all(
            by_label[w]["status"] in done for w in binding["workloads"]
        )
    removable = {b["label"] for b in result.bindings if b["removable"]}
    for identity in result.azure_identities:
        identity["removable"] = bool(identity["bindings"]) and set(identity["bindings"]) <= removable


# --- The flow: read -> plan -> (converge -> prove -> remove) ----------------------------------------------------
def read_found(objects: t.Any, labelled: t.Any, namespaces: list[str]) -> dict[str, t.Any]:
    """What the planner needs, through the gateways: AzureIdentity and AzureIdentityBinding objects, the workloads of
    each kind and the labelled pods, across namespaces or in each one given. ``crds`` is false when aad-pod-identity's
    CRDs are not installed (then there is nothing to migrate)."""
    scopes: list[str | None] = list(namespaces) or [None]
    found: dict[str, t.Any] = {"crds": True, "identities": [], "bindings": [], "workloads": [], "pods": []}
    for key, kind in (("identities", "AzureIdentity"), ("bindings", "AzureIdentityBinding")):
        for scope in scopes:
            listed = objects.list(kind, scope)
            found["crds"] = found["crds"] and listed is not None
            found[key] += listed or []
    if not found["bindings"]:
        return found  # nothing selects anything: the workloads need not be read
    for scope in scopes:
        for kind in MIGRATION_KINDS:
            found["workloads"] += labelled.workloads(kind, scope)
        found["pods"] += labelled.pods(POD_IDENTITY_LABEL, scope)
    return found


def removal_order(result: Plan) -> list[dict[str, t.Any]]:
    """The objects to delete, bindings first (so no binding ever names a deleted AzureIdentity)."""
    return [b for b in result.bindings if b["removable"]] + [i for i in result.azure_identities if i["removable"]]
