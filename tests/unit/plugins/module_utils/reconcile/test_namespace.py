"""reconcile/namespace.py: validation, plan decisions (pure), contents listing and apply through a fake API.

The fake stands in for the kubernetes client's API objects only: it returns the client's own models, raises its
real ``ApiException`` with Kubernetes ``Status`` bodies, honours ``dryRun`` and ``limit`` (with
``remainingItemCount``, as the API server does for a list without selectors).
"""

from __future__ import annotations

import copy
import typing as t
import uuid

import pytest
from kubernetes import client as k8s

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import CREATE, DELETE, NONE, UPDATE
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import namespace as ns
from tests.unit.plugins.module_utils.reconcile.test_service_account import api_error, not_found


class FakeApi:
    """Namespaces and a few namespaced objects in memory; one instance serves core_v1, apps_v1 and batch_v1."""

    def __init__(self) -> None:
        self.namespaces: dict[str, dict[str, t.Any]] = {}
        self.objects: dict[str, dict[str, list[str]]] = {}  # resource -> namespace -> names
        self.calls: list[tuple[str, dict[str, t.Any]]] = []

    def add(self, name: str, labels=None, terminating=False) -> None:
        self.namespaces[name] = {"uid": str(uuid.uuid4()), "labels": dict(labels or {}), "terminating": terminating}
        self.objects.setdefault("service_account", {})[name] = ["default"]
        self.objects.setdefault("config_map", {})[name] = ["kube-root-ca.crt"]

    def put(self, resource: str, namespace: str, *names: str) -> None:
        self.objects.setdefault(resource, {}).setdefault(namespace, []).extend(names)

    def writes(self) -> list[str]:
        return [n for n, kw in self.calls if n.split("_")[0] in ("create", "patch", "delete")]

    def _model(self, name: str) -> k8s.V1Namespace:
        found = self.namespaces[name]
        return k8s.V1Namespace(
            metadata=k8s.V1ObjectMeta(
                name=name,
                uid=found["uid"],
                labels=found["labels"] or None,
                deletion_timestamp="2026-11-22T10:00:00Z" if found["terminating"] else None,
            ),
            status=k8s.V1NamespaceStatus(phase="Terminating" if found["terminating"] else "Active"),
        )

    def read_namespace(self, name: str) -> k8s.V1Namespace:
        self.calls.append(("read_namespace", {"name": name}))
        if name not in self.namespaces:
            raise not_found("namespaces", name)
        return self._model(name)

    def create_namespace(self, body: dict, dry_run: str | None = None) -> k8s.V1Namespace:
        self.calls.append(("create_namespace", {"body": copy.deepcopy(body), "dry_run": dry_run}))
        name = body["metadata"]["name"]
        if name in self.namespaces:
            raise api_error(409, "AlreadyExists", f'namespaces "{name}" already exists', "namespaces")
        self.add(name, body["metadata"].get("labels"))
        model = self._model(name)
        if dry_run == "All":
            del self.namespaces[name]
        return model

    def patch_namespace(self, name: str, body: dict, dry_run: str | None = None) -> k8s.V1Namespace:
        self.calls.append(("patch_namespace", {"body": copy.deepcopy(body), "dry_run": dry_run}))
        saved = copy.deepcopy(self.namespaces[name])
        for key, value in body["metadata"]["labels"].items():
            if value is None:
                self.namespaces[name]["labels"].pop(key, None)
            else:
                self.namespaces[name]["labels"][key] = value
        model = self._model(name)
        if dry_run == "All":
            self.namespaces[name] = saved
        return model

    def delete_namespace(self, name: str, body: dict | None = None, dry_run: str | None = None) -> k8s.V1Status:
        self.calls.append(("delete_namespace", {"body": copy.deepcopy(body), "dry_run": dry_run}))
        if name not in self.namespaces:
            raise not_found("namespaces", name)
        if body["preconditions"]["uid"] != self.namespaces[name]["uid"]:
            raise api_error(409, "Conflict", "the UID in the precondition does not match", "Namespace")
        if body.get("dryRun") != ["All"]:  # with a DeleteOptions body only its dryRun counts
            self.namespaces[name]["terminating"] = True
        return k8s.V1Status(status="Success")

    def __getattr__(self, method: str) -> t.Callable[..., t.Any]:
        if not method.startswith("list_namespaced_"):
            raise AttributeError(method)
        resource = method.removeprefix("list_namespaced_")

        def listing(namespace: str, limit: int | None = None) -> t.Any:
            self.calls.append((method, {"namespace": namespace, "limit": limit}))
            names = self.objects.get(resource, {}).get(namespace, [])
            page = names[:limit] if limit else names
            remaining = len(names) - len(page) or None
            items = [k8s.V1ObjectMeta(name=n) for n in page]
            return k8s.V1PodList(
                items=[k8s.V1Pod(metadata=meta) for meta in items],
                metadata=k8s.V1ListMeta(remaining_item_count=remaining),
            )

        return listing


@pytest.fixture
def api() -> FakeApi:
    fake = FakeApi()
    fake.add("orders", {"team": "payments"})
    return fake


def reconciler(api: FakeApi, dry_run: bool = False, **kwargs: t.Any) -> ns.NamespaceReconciler:
    clients = {"core_v1": api, "apps_v1": api, "batch_v1": api}
    return ns.NamespaceReconciler(clients, dry_run=dry_run, sleep=lambda _seconds: None, **kwargs)


# --- validation ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["default", "kube-system", "kube-public", "kube-node-lease"])
def test_system_namespaces_are_never_deleted(name):
    errors = ns.validate(ns.DesiredNamespace(name=name, state=ns.ABSENT))
    assert errors == [f"name: '{name}' is a namespace every cluster needs; this module never deletes it"]


def test_validation_names_the_field_and_rule():
    errors = ns.validate(ns.DesiredNamespace(name="Orders_1", labels={"bad key!": "x", "team": 5}, wait_timeout=0))
    assert any(e.startswith("name: must be an RFC 1123 label") for e in errors)
    assert any(e.startswith("labels: key 'bad key!'") for e in errors)
    assert "labels.team: must be a string (quote it), got int" in errors
    assert "wait_timeout: must be between 1 and 86400 seconds, got 0" in errors


@pytest.mark.parametrize(
    ("desired", "expected"),
    [
        (ns.DesiredNamespace(name="orders", wait_timeout=10**12), "wait_timeout: must be between 1 and 86400 seconds"),
        (
            ns.DesiredNamespace(name="orders", labels={"kubernetes.io/metadata.name": "other"}),
            "labels: 'kubernetes.io/metadata.name' is set by the API server",
        ),
        (ns.DesiredNamespace(name="o" * 64), "name: must be at most 63 characters, got 64"),
        (ns.DesiredNamespace(name="orders", labels={"team": "x" * 64}), "labels.team: must be at most 63"),
    ],
    ids=["wait-timeout-too-long", "name-label", "name-too-long", "label-value-too-long"],
)
def test_values_kubernetes_would_refuse_or_override(desired, expected):
    assert any(e.startswith(expected) for e in ns.validate(desired)), ns.validate(desired)


# --- plans ---------------------------------------------------------------------------------------------------------
def test_plans(api):
    active = {"name": "orders", "uid": "u", "labels": {"team": "payments"}, "phase": "Active", "terminating": False}
    assert ns.plan(None, ns.DesiredNamespace(name="orders"), None).action == CREATE
    assert ns.plan(active, ns.DesiredNamespace(name="orders", labels={"team": "payments"}), None).action == NONE
    update = ns.plan(active, ns.DesiredNamespace(name="orders", labels={"team": None, "tier": "web"}), None)
    assert update.action == UPDATE and update.after["labels"] == {"tier": "web"}
    assert ns.plan(None, ns.DesiredNamespace(name="orders", state=ns.ABSENT), None).action == NONE
    gone = ns.plan({**active, "terminating": True}, ns.DesiredNamespace(name="orders", state=ns.ABSENT), None)
    assert gone.action == NONE and gone.reason == "the namespace is already being deleted"
    with pytest.raises(WorkloadIdentityError, match="it is being deleted"):
        ns.plan({**active, "terminating": True}, ns.DesiredNamespace(name="orders"), None)


# --- apply ---------------------------------------------------------------------------------------------------------
def test_delete_lists_the_contents_first_and_check_mode_deletes_nothing(api):
    api.put("deployment", "orders", "orders-api")
    api.put("service_account", "orders", "orders-api")
    api.put("pod", "orders", *[f"orders-api-{i}" for i in range(30)])
    outcome = reconciler(api, dry_run=True).reconcile(ns.DesiredNamespace(name="orders", state=ns.ABSENT))
    assert outcome.changed and outcome.plan.action == DELETE
    assert outcome.contents["Deployment"] == {"count": 1, "names": ["orders-api"]}
    assert outcome.contents["ServiceAccount"] == {"count": 1, "names": ["orders-api"]}  # 'default' not counted
    assert outcome.contents["Pod"]["count"] == 30 and len(outcome.contents["Pod"]["names"]) == ns.NAMES_LISTED
    assert "ConfigMap" not in outcome.contents  # only kube-root-ca.crt
    assert outcome.plan.diff()["before"]["contents"] == outcome.contents
    assert not api.namespaces["orders"]["terminating"]
    assert api.writes() == ["delete_namespace"] and api.calls[-1][1]["body"]["dryRun"] == ["All"]
    lists = [name for name, _kw in api.calls if name.startswith("list_")]
    assert len(lists) == len(ns.CONTENT_KINDS)


def test_delete_then_again_is_no_change(api):
    first = reconciler(api).reconcile(ns.DesiredNamespace(name="orders", state=ns.ABSENT))
    assert first.changed and first.namespace["terminating"] and not first.deleted
    api.calls.clear()
    second = reconciler(api).reconcile(ns.DesiredNamespace(name="orders", state=ns.ABSENT))
    assert not second.changed and api.writes() == [] and second.contents is None


def test_wait_times_out_with_a_clear_message(api):
    clock = iter(range(0, 1000, 10))
    slow = reconciler(api, clock=lambda: float(next(clock)))
    with pytest.raises(WorkloadIdentityError, match=r"still Terminating after 30 s: the namespace controller"):
        slow.reconcile(ns.DesiredNamespace(name="orders", state=ns.ABSENT, wait=True, wait_timeout=30))


def test_create_and_label(api):
    created = reconciler(api).reconcile(ns.DesiredNamespace(name="billing", labels={"team": "billing"}))
    assert created.changed and created.namespace["labels"] == {"team": "billing"}
    dry = reconciler(api, dry_run=True).reconcile(ns.DesiredNamespace(name="audit"))
    assert dry.changed and dry.namespace["uid"] is None and "audit" not in api.namespaces
    again = reconciler(api).reconcile(ns.DesiredNamespace(name="billing", labels={"team": "billing"}))
    assert not again.changed
