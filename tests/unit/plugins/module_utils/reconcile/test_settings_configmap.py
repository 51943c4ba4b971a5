"""reconcile/settings_configmap.py: validation, plan decisions (pure), and apply through a fake CoreV1Api.

The fake stands in for the kubernetes client's ``CoreV1Api`` only (ConfigMaps and namespaces): it returns the
client's own models, raises its real ``ApiException`` with Kubernetes ``Status`` bodies, and honours ``dryRun``.
"""

from __future__ import annotations

import copy
import typing as t
import uuid

import pytest
from kubernetes import client as k8s

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import CREATE, DELETE, NONE, UPDATE
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import settings_configmap as cm
from tests.unit.plugins.module_utils.reconcile.test_service_account import api_error, not_found

CLIENT = "6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
VAULT = "https://kv-orders.vault.azure.net/"


def desired(**overrides: t.Any) -> cm.DesiredConfigMap:
    values: dict[str, t.Any] = {
        "namespace": "orders",
        "name": "orders-api-azure-identity",
        "client_id": CLIENT,
        "data": {"KEYVAULT_URL": VAULT},
    }
    values.update(overrides)
    return cm.DesiredConfigMap(**values)


class FakeCoreV1:
    """ConfigMaps and namespaces in memory, recording every call."""

    def __init__(self, namespaces: t.Iterable[str] = ("orders",)) -> None:
        self.namespaces = set(namespaces)
        self.configmaps: dict[tuple[str, str], dict[str, t.Any]] = {}
        self.calls: list[tuple[str, dict[str, t.Any]]] = []
        self.faults: dict[str, list[BaseException]] = {}
        self.before_write: t.Callable[[str], None] | None = None

    def add(self, namespace: str, name: str, data=None, labels=None, binary=None) -> dict[str, t.Any]:
        self.namespaces.add(namespace)
        document = {
            "metadata": {"namespace": namespace, "name": name, "uid": str(uuid.uuid4()), "labels": dict(labels or {})},
            "data": dict(data or {}),
            "binaryData": dict(binary or {}),
        }
        self.configmaps[(namespace, name)] = document
        return document

    def methods(self) -> list[str]:
        return [call[0] for call in self.calls]

    def writes(self, persisted_only: bool = True) -> list[str]:
        writes = [(n, kw) for n, kw in self.calls if n.startswith(("create", "patch", "delete"))]
        return [n for n, kw in writes if not (persisted_only and kw.get("dry_run") == "All")]

    def _enter(self, method: str, **kwargs: t.Any) -> None:
        self.calls.append((method, kwargs))
        queue = self.faults.get(method)
        if queue:
            raise queue.pop(0)
        if self.before_write and method.startswith(("create", "patch", "delete")):
            self.before_write(method)

    @staticmethod
    def _model(document: dict[str, t.Any]) -> k8s.V1ConfigMap:
        metadata = document["metadata"]
        return k8s.V1ConfigMap(
            metadata=k8s.V1ObjectMeta(
                namespace=metadata["namespace"],
                name=metadata["name"],
                uid=metadata.get("uid"),
                labels=metadata.get("labels") or None,
            ),
            data=document.get("data") or None,
            binary_data=document.get("binaryData") or None,
        )

    def read_namespaced_config_map(self, name: str, namespace: str) -> k8s.V1ConfigMap:
        self._enter("read_namespaced_config_map", name=name, namespace=namespace)
        if (namespace, name) not in self.configmaps:
            raise not_found("configmaps", name)
        return self._model(self.configmaps[(namespace, name)])

    def create_namespaced_config_map(self, namespace: str, body: dict, dry_run: str | None = None):
        self._enter("create_namespaced_config_map", namespace=namespace, body=copy.deepcopy(body), dry_run=dry_run)
        if namespace not in self.namespaces:
            raise not_found("namespaces", namespace)
        name = body["metadata"]["name"]
        if (namespace, name) in self.configmaps:
            raise api_error(409, "AlreadyExists", f'configmaps "{name}" already exists', "configmaps")
        document = copy.deepcopy(body)
        document["metadata"]["uid"] = str(uuid.uuid4())
        if dry_run != "All":
            self.configmaps[(namespace, name)] = document
        return self._model(document)

    def patch_namespaced_config_map(self, name: str, namespace: str, body: dict, dry_run: str | None = None):
        self._enter(
            "patch_namespaced_config_map", name=name, namespace=namespace, body=copy.deepcopy(body), dry_run=dry_run
        )
        if (namespace, name) not in self.configmaps:
            raise not_found("configmaps", name)
        document = copy.deepcopy(self.configmaps[(namespace, name)])
        sections = [(document["metadata"].setdefault("labels", {}), (body.get("metadata") or {}).get("labels") or {})]
        sections.append((document.setdefault("data", {}), body.get("data") or {}))
        for values, changes in sections:  # strategic merge on maps
            for key, value in changes.items():
                if value is None:
                    values.pop(key, None)
                else:
                    values[key] = value
        if dry_run != "All":
            self.configmaps[(namespace, name)] = document
        return self._model(document)

    def delete_namespaced_config_map(self, name: str, namespace: str, body: dict | None = None, dry_run=None):
        self._enter(
            "delete_namespaced_config_map", name=name, namespace=namespace, body=copy.deepcopy(body), dry_run=dry_run
        )
        if (namespace, name) not in self.configmaps:
            raise not_found("configmaps", name)
        precondition = ((body or {}).get("preconditions") or {}).get("uid")
        if precondition and precondition != self.configmaps[(namespace, name)]["metadata"]["uid"]:
            raise api_error(409, "Conflict", "the UID in the precondition does not match", "ConfigMap")
        if (body or {}).get("dryRun") != ["All"]:  # with a DeleteOptions body only its dryRun counts
            del self.configmaps[(namespace, name)]
        return k8s.V1Status(status="Success")

    def read_namespace(self, name: str) -> k8s.V1Namespace:
        self._enter("read_namespace", name=name)
        if name not in self.namespaces:
            raise not_found("namespaces", name)
        return k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name), status=k8s.V1NamespaceStatus(phase="Active"))

    def create_namespace(self, body: dict, dry_run: str | None = None) -> k8s.V1Namespace:
        self._enter("create_namespace", body=copy.deepcopy(body), dry_run=dry_run)
        name = body["metadata"]["name"]
        if name in self.namespaces:
            raise api_error(409, "AlreadyExists", f'namespaces "{name}" already exists', "namespaces")
        if dry_run != "All":
            self.namespaces.add(name)
        return k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name))


@pytest.fixture
def api() -> FakeCoreV1:
    return FakeCoreV1()


def reconciler(api: FakeCoreV1, dry_run: bool = False) -> cm.ConfigMapReconciler:
    return cm.ConfigMapReconciler(api, dry_run=dry_run, sleep=lambda _seconds: None)


# --- validate ---------------------------------------------------------------------------------------------------
def test_valid_input_has_no_errors():
    assert cm.validate(desired(tenant_id=TENANT, labels={"app.kubernetes.io/part-of": "orders"})) == []
    assert cm.validate(desired(client_id="", tenant_id="")) == []  # "" removes the key


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"namespace": "Orders"}, "namespace: must be an RFC 1123 label"),
        ({"name": "Orders_Settings"}, "name: must be an RFC 1123 subdomain"),
        ({"client_id": "not-a-guid"}, "client_id: must be a GUID"),
        ({"tenant_id": "contoso.onmicrosoft.com"}, "tenant_id: must be a GUID"),
        ({"data": {"bad key": "x"}}, "data: key 'bad key' must be 1-253 letters"),
        ({"data": {"..": "x"}}, "data: key '..' must be 1-253 letters"),
        ({"data": {"PORT": 8080}}, "data.PORT: must be a string (quote it), got int"),
        ({"data": {"AZURE_CLIENT_ID": CLIENT}}, "data: key 'AZURE_CLIENT_ID' is set with the client_id option"),
        ({"data": {"AZURE_TENANT_ID": TENANT}}, "data: key 'AZURE_TENANT_ID' is set with the tenant_id option"),
        ({"data": {"BIG": "x" * (1024 * 1024)}}, "data: keys and values must total at most 1048576 bytes"),
        ({"data": []}, "data: must be a dictionary"),
        ({"labels": {"team": "a b"}}, "labels.team: must be at most 63 letters"),
        ({"labels": {"team": 1}}, "labels.team: must be a string (quote it), got int"),
        ({"labels": {"bad key": "x"}}, "labels: key 'bad key': name part must be"),
    ],
)
def test_invalid_input_is_named(overrides, expected):
    errors = cm.validate(desired(**overrides))
    assert any(error.startswith(expected) for error in errors), errors


# --- plan -------------------------------------------------------------------------------------------------------
def normalized(data=None, labels=None, binary=None) -> dict[str, t.Any]:
    return cm.normalize_configmap(
        {
            "metadata": {
                "namespace": "orders",
                "name": "orders-api-azure-identity",
                "uid": "u",
                "labels": labels or {},
            },
            "data": data or {},
            "binaryData": binary or {},
        }
    )


def test_plan_create_holds_only_our_keys():
    decided = cm.plan(None, desired(tenant_id=TENANT, labels={"team": "orders"}))
    assert decided.action == CREATE
    assert decided.after["data"] == {"AZURE_CLIENT_ID": CLIENT, "AZURE_TENANT_ID": TENANT, "KEYVAULT_URL": VAULT}
    assert decided.after["labels"] == {"team": "orders"}


def test_plan_update_keeps_other_keys_and_binary_data():
    current = normalized(data={"OTHER": "x", "KEYVAULT_URL": "https://old/"}, binary={"cert": "AAAA"})
    decided = cm.plan(current, desired())
    assert decided.action == UPDATE
    assert decided.after["data"] == {"OTHER": "x", "KEYVAULT_URL": VAULT, "AZURE_CLIENT_ID": CLIENT}
    assert decided.after["binary_data_keys"] == ["cert"]


def test_plan_is_a_no_op_when_the_keys_match():
    current = normalized(data={"AZURE_CLIENT_ID": CLIENT, "KEYVAULT_URL": VAULT, "OTHER": "x"})
    assert cm.plan(current, desired()).action == NONE


def test_unset_options_leave_keys_alone_and_empty_strings_remove_them():
    current = normalized(data={"AZURE_CLIENT_ID": CLIENT, "AZURE_TENANT_ID": TENANT})
    assert cm.plan(current, desired(client_id=None, data={})).action == NONE
    decided = cm.plan(current, desired(tenant_id="", data={}))
    assert decided.after["data"] == {"AZURE_CLIENT_ID": CLIENT}


def test_absent_deletes_or_removes_only_our_keys():
    current = normalized(data={"AZURE_CLIENT_ID": CLIENT, "KEYVAULT_URL": VAULT, "OTHER": "x"})
    assert cm.plan(current, desired(state="absent")).action == DELETE
    keys = cm.plan(current, desired(state="absent", remove="keys"))
    assert keys.action == UPDATE
    assert keys.after["data"] == {"OTHER": "x"}
    assert cm.plan(None, desired(state="absent")).action == NONE
    assert cm.plan(None, desired(state="absent", remove="keys")).action == NONE


def test_patch_body_names_only_changed_keys():
    current = normalized(data={"KEYVAULT_URL": "https://old/", "OTHER": "x"})
    assert cm.patch_body(cm.plan(current, desired())) == {"data": {"AZURE_CLIENT_ID": CLIENT, "KEYVAULT_URL": VAULT}}
    removal = cm.plan(current, desired(state="absent", remove="keys", labels={"team": None}))
    assert cm.patch_body(removal) == {"data": {"KEYVAULT_URL": None}}


# --- reconcile through the fake API ---------------------------------------------------------------------------
def test_create_then_read_only(api):
    outcome = reconciler(api).reconcile(desired())
    assert outcome.changed
    assert api.configmaps[("orders", "orders-api-azure-identity")]["data"] == {
        "AZURE_CLIENT_ID": CLIENT,
        "KEYVAULT_URL": VAULT,
    }
    assert outcome.configmap["uid"] == api.configmaps[("orders", "orders-api-azure-identity")]["metadata"]["uid"]
    api.calls.clear()
    again = reconciler(api).reconcile(desired())
    assert not again.changed
    assert api.methods() == ["read_namespaced_config_map"]


def test_check_mode_dry_runs_and_hides_the_uid(api):
    outcome = reconciler(api, dry_run=True).reconcile(desired())
    assert outcome.changed
    assert api.configmaps == {}
    assert api.writes() == []
    assert outcome.configmap["uid"] is None


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "check-mode"])
def test_missing_namespace_is_found_by_reading_before_any_write(api, dry_run):
    with pytest.raises(
        WorkloadIdentityError,
        match=r"^namespace: namespace 'payments' does not exist; set create_namespace: true or create it first$",
    ):
        reconciler(api, dry_run=dry_run).reconcile(desired(namespace="payments"))
    assert api.methods() == ["read_namespaced_config_map", "read_namespace"]
    assert api.writes(persisted_only=False) == []


def test_missing_namespace_is_created_first_with_create_namespace(api):
    outcome = reconciler(api).reconcile(desired(namespace="payments", create_namespace=True))
    assert outcome.namespace_created
    assert api.methods() == [
        "read_namespaced_config_map",
        "read_namespace",
        "create_namespace",
        "create_namespaced_config_map",
    ]
    assert ("payments", "orders-api-azure-identity") in api.configmaps


def test_check_mode_in_a_namespace_still_to_create_writes_nothing(api):
    outcome = reconciler(api, dry_run=True).reconcile(desired(namespace="payments", create_namespace=True))
    assert outcome.changed and outcome.namespace_created
    assert "payments" not in api.namespaces
    assert api.writes() == []
    assert outcome.configmap["data"]["AZURE_CLIENT_ID"] == CLIENT


def test_delete_uses_a_uid_precondition_and_dry_run_in_the_body(api):
    stored = api.add("orders", "orders-api-azure-identity", data={"AZURE_CLIENT_ID": CLIENT})
    checked = reconciler(api, dry_run=True).reconcile(desired(state="absent"))
    assert checked.changed and ("orders", "orders-api-azure-identity") in api.configmaps
    body = api.calls[-1][1]["body"]
    assert body["dryRun"] == ["All"] and body["preconditions"] == {"uid": stored["metadata"]["uid"]}
    outcome = reconciler(api).reconcile(desired(state="absent"))
    assert outcome.changed and outcome.configmap is None
    assert api.configmaps == {}


def test_a_racing_creator_makes_us_read_and_plan_again(api):
    def racer(method: str) -> None:
        api.before_write = None
        api.add("orders", "orders-api-azure-identity", data={"AZURE_CLIENT_ID": CLIENT, "KEYVAULT_URL": VAULT})

    api.before_write = racer
    outcome = reconciler(api).reconcile(desired())
    assert not outcome.changed  # the racer wrote exactly what we wanted
    assert api.methods().count("read_namespaced_config_map") == 2


def test_a_configmap_that_keeps_changing_fails_after_three_rounds(api):
    api.add("orders", "orders-api-azure-identity", data={})
    api.faults["patch_namespaced_config_map"] = [not_found("configmaps", "x")] * 3
    api.faults["read_namespaced_config_map"] = []
    with pytest.raises(WorkloadIdentityError, match="kept changing under us"):
        reconciler(api).reconcile(desired())
