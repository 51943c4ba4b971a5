"""reconcile/service_account.py: validation, plan decisions (pure), and apply through a fake CoreV1Api.

The fake stands in for the kubernetes client's ``CoreV1Api`` only: it returns the client's own models and raises
its real ``ApiException`` with Kubernetes ``Status`` bodies, and honours ``dryRun`` as the API server does.
"""

from __future__ import annotations

import copy
import datetime
import json
import typing as t
import uuid

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import (
    CREATE,
    DELETE,
    NONE,
    RACE_ATTEMPTS,
    UPDATE,
    Plan,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import service_account as sa
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ANNOTATION_CLIENT_ID,
    ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION,
    ANNOTATION_TENANT_ID,
    LABEL_USE,
)
from tests.unit.conftest import kube_answer

CLIENT = "6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c"
OTHER_CLIENT = "0b8e2c1d-4a5f-4e3b-8c9d-7e6f5a4b3c2d"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def desired(**overrides: t.Any) -> sa.DesiredServiceAccount:
    values: dict[str, t.Any] = {"namespace": "orders", "name": "orders-api", "client_id": CLIENT}
    values.update(overrides)
    return sa.DesiredServiceAccount(**values)


def actual(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> dict[str, t.Any]:
    return sa.normalize_service_account(
        {
            "metadata": {
                "namespace": "orders",
                "name": "orders-api",
                "uid": "uid-1",
                "labels": labels or {},
                "annotations": annotations or {},
            }
        }
    )


# --- A fake CoreV1Api -------------------------------------------------------------------------------------------
def api_error(status: int, reason: str, message: str, kind: str | None = None, headers: dict | None = None):
    exc = ApiException(status=status, reason=reason)
    status_body: dict[str, t.Any] = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message}
    status_body.update({"reason": reason, "code": status})
    if kind:
        status_body["details"] = {"kind": kind}
    exc.body = json.dumps(status_body)
    exc.headers = headers or {}
    return exc


def not_found(kind: str, name: str) -> ApiException:
    return api_error(404, "NotFound", f'{kind} "{name}" not found', kind)


class FakeCoreV1:
    """An in-memory API server for ServiceAccounts, namespaces and pods, recording every call."""

    def __init__(self, namespaces: t.Iterable[str] = ("orders",)) -> None:
        self.namespaces = set(namespaces)
        self.terminating: set[str] = set()  # namespaces being deleted
        self.service_accounts: dict[tuple[str, str], dict[str, t.Any]] = {}
        self.pods: list[k8s.V1Pod] = []
        self.calls: list[tuple[str, dict[str, t.Any]]] = []
        self.faults: dict[str, list[BaseException]] = {}  # method -> exceptions raised before doing the work
        self.before_write: t.Callable[[str], None] | None = None  # a racing writer

    # helpers
    def add(self, namespace: str, name: str, labels=None, annotations=None, **extra: t.Any) -> dict[str, t.Any]:
        self.namespaces.add(namespace)
        metadata = {"namespace": namespace, "name": name, "uid": str(uuid.uuid4()), "resourceVersion": "1"}
        metadata.update({"labels": dict(labels or {}), "annotations": dict(annotations or {})})
        self.service_accounts[(namespace, name)] = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": metadata,
            **extra,
        }
        return self.service_accounts[(namespace, name)]

    def add_pod(self, namespace: str, name: str, service_account: str, phase: str | None = None) -> None:
        self.pods.append(
            k8s.V1Pod(
                metadata=k8s.V1ObjectMeta(namespace=namespace, name=name),
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="app")], service_account_name=service_account),
                status=k8s.V1PodStatus(phase=phase),
            )
        )

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
    def _model(document: dict[str, t.Any]) -> k8s.V1ServiceAccount:
        metadata = document["metadata"]
        return k8s.V1ServiceAccount(
            metadata=k8s.V1ObjectMeta(
                namespace=metadata["namespace"],
                name=metadata["name"],
                uid=metadata.get("uid"),
                labels=metadata.get("labels") or None,
                annotations=metadata.get("annotations") or None,
            ),
            secrets=[k8s.V1ObjectReference(name=s["name"]) for s in document.get("secrets", [])] or None,
        )

    # the CoreV1Api surface the reconciler uses
    def read_namespaced_service_account(self, name: str, namespace: str) -> k8s.V1ServiceAccount:
        self._enter("read_namespaced_service_account", name=name, namespace=namespace)
        if (namespace, name) not in self.service_accounts:
            raise not_found("serviceaccounts", name)
        return self._model(self.service_accounts[(namespace, name)])

    def create_namespaced_service_account(self, namespace: str, body: dict, dry_run: str | None = None):
        self._enter("create_namespaced_service_account", namespace=namespace, body=copy.deepcopy(body), dry_run=dry_run)
        if namespace not in self.namespaces:
            raise not_found("namespaces", namespace)
        name = body["metadata"]["name"]
        if (namespace, name) in self.service_accounts:
            raise api_error(409, "AlreadyExists", f'serviceaccounts "{name}" already exists', "serviceaccounts")
        document = copy.deepcopy(body)
        document["metadata"]["uid"] = str(uuid.uuid4())
        if dry_run != "All":
            self.service_accounts[(namespace, name)] = document
        return self._model(document)

    def patch_namespaced_service_account(self, name: str, namespace: str, body: dict, dry_run: str | None = None):
        self._enter(
            "patch_namespaced_service_account",
            name=name,
            namespace=namespace,
            body=copy.deepcopy(body),
            dry_run=dry_run,
        )
        if (namespace, name) not in self.service_accounts:
            raise not_found("serviceaccounts", name)
        document = copy.deepcopy(self.service_accounts[(namespace, name)])
        for section, changes in body.get("metadata", {}).items():  # strategic merge on maps
            values = document["metadata"].setdefault(section, {})
            for key, value in changes.items():
                if value is None:
                    values.pop(key, None)
                else:
                    values[key] = value
        if dry_run != "All":
            self.service_accounts[(namespace, name)] = document
        return self._model(document)

    def delete_namespaced_service_account(self, name: str, namespace: str, body: dict | None = None, dry_run=None):
        self._enter(
            "delete_namespaced_service_account",
            name=name,
            namespace=namespace,
            body=copy.deepcopy(body),
            dry_run=dry_run,
        )
        if (namespace, name) not in self.service_accounts:
            raise not_found("serviceaccounts", name)
        document = self.service_accounts[(namespace, name)]
        precondition = ((body or {}).get("preconditions") or {}).get("uid")
        if precondition and precondition != document["metadata"]["uid"]:
            raise api_error(409, "Conflict", "the UID in the precondition does not match", "ServiceAccount")
        # As the API server: with a DeleteOptions body, only the body's dryRun counts.
        dry = (body or {}).get("dryRun") == ["All"] if body else dry_run == "All"
        if not dry:
            del self.service_accounts[(namespace, name)]
        return k8s.V1Status(status="Success")

    def read_namespace(self, name: str) -> k8s.V1Namespace:
        self._enter("read_namespace", name=name)
        if name not in self.namespaces:
            raise not_found("namespaces", name)
        if name in self.terminating:
            metadata = k8s.V1ObjectMeta(name=name, deletion_timestamp=datetime.datetime.now(datetime.timezone.utc))
            return k8s.V1Namespace(metadata=metadata, status=k8s.V1NamespaceStatus(phase="Terminating"))
        return k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name), status=k8s.V1NamespaceStatus(phase="Active"))

    def create_namespace(self, body: dict, dry_run: str | None = None) -> k8s.V1Namespace:
        self._enter("create_namespace", body=copy.deepcopy(body), dry_run=dry_run)
        name = body["metadata"]["name"]
        if name in self.namespaces:
            raise api_error(409, "AlreadyExists", f'namespaces "{name}" already exists', "namespaces")
        if dry_run != "All":
            self.namespaces.add(name)
        return k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name))

    def list_namespaced_pod(
        self, namespace: str, field_selector: str | None = None, _preload_content: bool = True
    ) -> k8s.V1PodList:
        self._enter("list_namespaced_pod", namespace=namespace, field_selector=field_selector)
        wanted = (field_selector or "").partition("=")[2]
        items = [
            pod
            for pod in self.pods
            if pod.metadata.namespace == namespace and (not wanted or pod.spec.service_account_name == wanted)
        ]
        return kube_answer(k8s.V1PodList(items=items), _preload_content)


@pytest.fixture
def api() -> FakeCoreV1:
    return FakeCoreV1()


def reconciler(api: FakeCoreV1, dry_run: bool = False, **kwargs: t.Any) -> sa.ServiceAccountReconciler:
    sleeps: list[float] = []
    built = sa.ServiceAccountReconciler(api, dry_run=dry_run, sleep=sleeps.append, **kwargs)
    built.sleeps = sleeps  # type: ignore[attr-defined]
    return built


# --- validate ---------------------------------------------------------------------------------------------------
def test_valid_input_has_no_errors():
    assert sa.validate(desired(tenant_id=TENANT, token_expiration=86400, labels={"app.kubernetes.io/name": "x"})) == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"namespace": "Orders"}, "namespace: must be an RFC 1123 label"),
        ({"namespace": "a" * 64}, "namespace: must be at most 63 characters"),
        ({"name": "orders_api"}, "name: must be an RFC 1123 subdomain"),
        ({"name": ""}, "name: is required"),
        ({"client_id": "not-a-guid"}, "client_id: must be a GUID"),
        ({"client_id": None}, "client_id: must be a GUID"),
        ({"tenant_id": "contoso.onmicrosoft.com"}, "tenant_id: must be a GUID"),
        ({"token_expiration": 3599}, "token_expiration: must be between 3600 and 86400 seconds, got 3599"),
        ({"token_expiration": 86401}, "token_expiration: must be between 3600 and 86400 seconds, got 86401"),
        ({"labels": {"bad key": "x"}}, "labels: key 'bad key': name part must be"),
        ({"labels": {"Example.com/x": "y"}}, "labels: key 'Example.com/x': prefix must be a DNS subdomain"),
        ({"labels": {"/x": "y"}}, "labels: key '/x': prefix must be a DNS subdomain"),
        ({"labels": {"team": "a b"}}, "labels.team: must be at most 63 letters"),
        ({"labels": {"team": "x" * 64}}, "labels.team: must be at most 63 letters"),
        ({"labels": {"version": 2}}, "labels.version: must be a string (quote it), got int"),
        ({"annotations": {"note": True}}, "annotations.note: must be a string (quote it), got bool"),
        ({"annotations": {"x" * 64: "y"}}, "name part must be 1-63"),
        ({"annotations": {"big": "x" * (256 * 1024)}}, "annotations: keys and values must total at most 262144"),
        (
            {"annotations": {ANNOTATION_CLIENT_ID: OTHER_CLIENT}},
            f"annotations: key {ANNOTATION_CLIENT_ID!r} is owned by this module; set it with the client_id option",
        ),
        (
            {"annotations": {ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION: "7200"}},
            "set it with the token_expiration option",
        ),
        ({"annotations": {ANNOTATION_TENANT_ID: TENANT}}, "set it with the tenant_id option"),
    ],
)
def test_invalid_input_names_the_field_and_the_rule(overrides, expected):
    errors = sa.validate(desired(**overrides))
    assert any(expected in error for error in errors), errors


def test_absent_needs_no_client_id_and_empty_tenant_means_remove():
    assert sa.validate(desired(state="absent", client_id=None)) == []
    assert sa.validate(desired(tenant_id="")) == []


@pytest.mark.parametrize(
    "key", ["team", "app.kubernetes.io/name", "example.com/a_b.c-d", "a", "x" * 63, "azure.workload.identity/use"]
)
def test_qualified_names_accepted(key):
    assert sa.validate_qualified_name(key, "labels") == []


@pytest.mark.parametrize("key", ["", "-a", "a-", "a/b/c", "a b", "x" * 64, "UPPER.example/x", 5])
def test_qualified_names_rejected(key):
    assert sa.validate_qualified_name(key, "labels")


def test_null_values_are_valid_they_remove_keys():
    assert sa.validate(desired(labels={"team": None}, annotations={"note": None})) == []


# --- normalize --------------------------------------------------------------------------------------------------
def test_normalize_model_and_dict_agree():
    metadata = {
        "namespace": "orders",
        "name": "orders-api",
        "uid": "u1",
        "labels": {"team": "x"},
        "annotations": {ANNOTATION_CLIENT_ID: CLIENT, ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION: "7200"},
    }
    model = k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(**metadata))
    expected = {
        **metadata,
        "client_id": CLIENT,
        "tenant_id": None,
        "token_expiration": 7200,
    }
    assert sa.normalize_service_account(model) == expected
    assert sa.normalize_service_account({"metadata": metadata}) == expected


def test_normalize_tolerates_missing_maps_and_garbage_expiration():
    result = sa.normalize_service_account(
        {
            "metadata": {
                "name": "a",
                "namespace": "b",
                "annotations": {ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION: "1h"},
            }
        }
    )
    assert result["labels"] == {}
    assert result["token_expiration"] is None


# --- plan (pure) ------------------------------------------------------------------------------------------------
def test_plan_create_sets_only_what_was_asked():
    decided = sa.plan(None, desired(labels={"team": "orders", "gone": None}, annotations={"note": "hi"}))
    assert decided.action == CREATE
    assert decided.before is None
    assert decided.after == {
        "namespace": "orders",
        "name": "orders-api",
        "labels": {"team": "orders"},
        "annotations": {"note": "hi", ANNOTATION_CLIENT_ID: CLIENT},
        "client_id": CLIENT,
        "tenant_id": None,
        "token_expiration": None,
    }
    assert sa.create_body(decided)["metadata"] == {
        "name": "orders-api",
        "namespace": "orders",
        "labels": {"team": "orders"},
        "annotations": {"note": "hi", ANNOTATION_CLIENT_ID: CLIENT},
    }


def test_plan_create_with_every_setting():
    decided = sa.plan(None, desired(tenant_id=TENANT, token_expiration=7200))
    assert decided.after["annotations"] == {
        ANNOTATION_CLIENT_ID: CLIENT,
        ANNOTATION_TENANT_ID: TENANT,
        ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION: "7200",
    }
    assert decided.after["token_expiration"] == 7200


def test_plan_nothing_to_do_when_equal():
    decided = sa.plan(actual(annotations={ANNOTATION_CLIENT_ID: CLIENT}), desired())
    assert decided.action == NONE
    assert not decided.changed
    assert decided.before == decided.after


def test_plan_keeps_a_client_id_that_differs_only_by_letter_case():
    existing = actual(annotations={ANNOTATION_CLIENT_ID: CLIENT.upper(), ANNOTATION_TENANT_ID: TENANT.upper()})
    decided = sa.plan(existing, desired(tenant_id=TENANT))
    assert decided.action == NONE
    assert decided.after["client_id"] == CLIENT.upper()


def test_plan_update_keeps_keys_it_does_not_own():
    existing = actual(
        labels={"helm.sh/chart": "x-1.0"},
        annotations={
            ANNOTATION_CLIENT_ID: OTHER_CLIENT,
            "meta.helm.sh/release-name": "x",
            ANNOTATION_TENANT_ID: TENANT,
        },
    )
    decided = sa.plan(existing, desired())
    assert decided.action == UPDATE
    assert decided.reason == "annotations differ"
    assert decided.after["labels"] == {"helm.sh/chart": "x-1.0"}
    assert decided.after["annotations"] == {
        ANNOTATION_CLIENT_ID: CLIENT,
        "meta.helm.sh/release-name": "x",
        ANNOTATION_TENANT_ID: TENANT,  # tenant_id not set: left alone
    }
    assert sa.patch_body(decided) == {"metadata": {"annotations": {ANNOTATION_CLIENT_ID: CLIENT}}}


@pytest.mark.parametrize(
    ("tenant_id", "expected"),
    [(None, TENANT), ("", None), (OTHER_CLIENT, OTHER_CLIENT)],
    ids=["unset-leaves-alone", "empty-removes", "value-sets"],
)
def test_plan_tenant_id(tenant_id, expected):
    existing = actual(annotations={ANNOTATION_CLIENT_ID: CLIENT, ANNOTATION_TENANT_ID: TENANT})
    decided = sa.plan(existing, desired(tenant_id=tenant_id))
    assert decided.after["tenant_id"] == expected
    assert decided.action == (NONE if expected == TENANT else UPDATE)


def test_plan_token_expiration_unset_leaves_it_alone_and_set_writes_a_string():
    existing = actual(annotations={ANNOTATION_CLIENT_ID: CLIENT, ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION: "7200"})
    assert sa.plan(existing, desired()).action == NONE
    decided = sa.plan(existing, desired(token_expiration=3600))
    assert sa.patch_body(decided) == {
        "metadata": {"annotations": {ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION: "3600"}}
    }


def test_plan_null_removes_only_the_named_keys():
    existing = actual(labels={"team": "a", "keep": "b"}, annotations={ANNOTATION_CLIENT_ID: CLIENT, "note": "x"})
    decided = sa.plan(existing, desired(labels={"team": None, "new": "c"}, annotations={"note": None}))
    assert decided.action == UPDATE
    assert decided.reason == "labels and annotations differ"
    assert sa.patch_body(decided) == {
        "metadata": {"labels": {"new": "c", "team": None}, "annotations": {"note": None}},
    }
    # removing a key that is not there is no change
    assert sa.plan(actual(annotations={ANNOTATION_CLIENT_ID: CLIENT}), desired(labels={"x": None})).action == NONE


def test_plan_absent_deletes_an_existing_service_account():
    decided = sa.plan(actual(annotations={ANNOTATION_CLIENT_ID: CLIENT}), desired(state="absent"))
    assert decided.action == DELETE
    assert decided.after is None
    assert decided.diff()["after"] == {}


@pytest.mark.parametrize("remove", [sa.REMOVE_SERVICE_ACCOUNT, sa.REMOVE_ANNOTATIONS])
def test_plan_absent_when_already_absent_is_nothing(remove):
    decided = sa.plan(None, desired(state="absent", remove=remove))
    assert decided.action == NONE
    assert decided.diff() == {"before": {}, "after": {}}


def test_plan_absent_remove_annotations_strips_ours_and_keeps_the_rest():
    existing = actual(
        labels={"team": "a", "keep": "b"},
        annotations={
            ANNOTATION_CLIENT_ID: CLIENT,
            ANNOTATION_TENANT_ID: TENANT,
            ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION: "7200",
            "note": "x",
            "foreign": "y",
        },
    )
    decided = sa.plan(
        existing, desired(state="absent", remove=sa.REMOVE_ANNOTATIONS, labels={"team": "a"}, annotations={"note": "x"})
    )
    assert decided.action == UPDATE
    assert decided.after["labels"] == {"keep": "b"}
    assert decided.after["annotations"] == {"foreign": "y"}
    assert sa.patch_body(decided)["metadata"]["annotations"] == {
        ANNOTATION_CLIENT_ID: None,
        ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION: None,
        ANNOTATION_TENANT_ID: None,
        "note": None,
    }
    stripped = actual(labels={"keep": "b"}, annotations={"foreign": "y"})
    assert sa.plan(stripped, desired(state="absent", remove=sa.REMOVE_ANNOTATIONS)).action == NONE


def test_plan_warns_about_the_use_label_on_a_service_account():
    decided = sa.plan(None, desired(labels={LABEL_USE: "true"}))
    assert decided.action == CREATE
    assert any("put it on the pod template" in warning for warning in decided.warnings)


@pytest.mark.parametrize(
    ("before", "wanted", "affects"),
    [
        (None, desired(), False),  # create: no pod can run as it yet
        ({ANNOTATION_CLIENT_ID: CLIENT}, desired(), False),  # no change
        ({ANNOTATION_CLIENT_ID: OTHER_CLIENT}, desired(), True),
        ({ANNOTATION_CLIENT_ID: CLIENT}, desired(tenant_id=TENANT), True),
        ({ANNOTATION_CLIENT_ID: CLIENT}, desired(token_expiration=7200), True),
        ({ANNOTATION_CLIENT_ID: CLIENT}, desired(labels={"team": "x"}), False),  # labels only
        ({}, desired(), False),  # first annotation on a plain ServiceAccount: nothing injected before
        ({ANNOTATION_CLIENT_ID: CLIENT}, desired(state="absent"), True),
        ({}, desired(state="absent"), False),  # deleting a ServiceAccount without our settings
        ({ANNOTATION_CLIENT_ID: CLIENT}, desired(state="absent", remove=sa.REMOVE_ANNOTATIONS), True),
    ],
)
def test_which_plans_affect_running_pods(before, wanted, affects):
    existing = None if before is None else actual(annotations=before)
    assert sa.settings_change_affects_pods(sa.plan(existing, wanted)) is affects


def test_restart_warning_names_at_most_five_pods_and_the_change():
    decided = sa.plan(actual(annotations={ANNOTATION_CLIENT_ID: OTHER_CLIENT}), desired())
    pods = [f"pod-{i}" for i in range(7)]
    warning = sa.restart_warning(decided, desired(), pods)
    assert f"client_id {OTHER_CLIENT!r} -> {CLIENT!r}" in warning
    assert "7 pod(s)" in warning
    assert "pod-0, pod-1, pod-2, pod-3, pod-4 and 2 more" in warning
    assert "pod-5" not in warning
    deleted = sa.plan(actual(annotations={ANNOTATION_CLIENT_ID: CLIENT}), desired(state="absent"))
    assert "'orders/orders-api' is deleted; 1 pod(s)" in sa.restart_warning(deleted, desired(), ["p"])


def test_patch_body_of_a_plan_without_changes_is_empty():
    same = {"labels": {"a": "b"}, "annotations": {}}
    assert sa.patch_body(Plan(NONE, same, same)) == {"metadata": {}}


# --- apply through the fake API server --------------------------------------------------------------------------
def test_create(api):
    outcome = reconciler(api).reconcile(desired(labels={"team": "orders"}))
    assert outcome.changed and outcome.plan.action == CREATE
    # the namespace is read before the create, so that a missing one fails before any write
    assert api.methods() == ["read_namespaced_service_account", "read_namespace", "create_namespaced_service_account"]
    stored = api.service_accounts[("orders", "orders-api")]["metadata"]
    assert stored["annotations"] == {ANNOTATION_CLIENT_ID: CLIENT}
    assert stored["labels"] == {"team": "orders"}
    assert outcome.service_account["uid"] == stored["uid"]
    assert outcome.stale_pods == []
    assert not outcome.namespace_created


def test_create_in_check_mode_is_a_dry_run(api):
    outcome = reconciler(api, dry_run=True).reconcile(desired())
    assert outcome.changed
    assert api.calls[-1][0] == "create_namespaced_service_account" and api.calls[-1][1]["dry_run"] == "All"
    assert api.service_accounts == {}
    assert outcome.service_account["uid"] is None  # the dry run's uid will never exist
    assert outcome.service_account["client_id"] == CLIENT


def test_no_op_is_one_read(api):
    api.add("orders", "orders-api", annotations={ANNOTATION_CLIENT_ID: CLIENT})
    api.add_pod("orders", "p1", "orders-api")
    outcome = reconciler(api).reconcile(desired())
    assert not outcome.changed
    assert api.methods() == ["read_namespaced_service_account"]


def test_update_patches_only_our_keys_and_keeps_everything_else(api):
    api.add(
        "orders",
        "orders-api",
        labels={"helm.sh/chart": "x"},
        annotations={ANNOTATION_CLIENT_ID: OTHER_CLIENT, "foreign": "y"},
        secrets=[{"name": "token-abc"}],
    )
    outcome = reconciler(api).reconcile(desired(token_expiration=7200))
    assert outcome.plan.action == UPDATE
    name, kwargs = api.calls[-1]
    assert name == "patch_namespaced_service_account"
    assert kwargs["body"] == {
        "metadata": {"annotations": {ANNOTATION_CLIENT_ID: CLIENT, ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION: "7200"}}
    }
    stored = api.service_accounts[("orders", "orders-api")]
    assert stored["metadata"]["labels"] == {"helm.sh/chart": "x"}
    assert stored["metadata"]["annotations"]["foreign"] == "y"
    assert stored["secrets"] == [{"name": "token-abc"}]
    assert outcome.plan.after["annotations"]["foreign"] == "y"


def test_update_in_check_mode_changes_nothing(api):
    api.add("orders", "orders-api", annotations={ANNOTATION_CLIENT_ID: OTHER_CLIENT})
    outcome = reconciler(api, dry_run=True).reconcile(desired())
    assert outcome.changed
    assert outcome.service_account["client_id"] == CLIENT  # as the dry run computed it
    assert api.service_accounts[("orders", "orders-api")]["metadata"]["annotations"] == {
        ANNOTATION_CLIENT_ID: OTHER_CLIENT
    }
    assert api.writes() == []


def test_delete_uses_the_uid_precondition(api):
    stored = api.add("orders", "orders-api")
    outcome = reconciler(api).reconcile(desired(state="absent"))
    assert outcome.plan.action == DELETE
    assert outcome.service_account is None
    assert api.calls[-1][1]["body"]["preconditions"] == {"uid": stored["metadata"]["uid"]}
    assert api.service_accounts == {}


def test_delete_in_check_mode_puts_dry_run_in_the_body(api):
    api.add("orders", "orders-api")
    outcome = reconciler(api, dry_run=True).reconcile(desired(state="absent"))
    assert outcome.changed
    name, kwargs = api.calls[-1]
    assert name == "delete_namespaced_service_account"
    assert kwargs["body"]["dryRun"] == ["All"]
    assert kwargs["dry_run"] == "All"
    assert ("orders", "orders-api") in api.service_accounts


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "check-mode"])
def test_missing_namespace_without_create_namespace_is_found_by_reading_with_no_write(api, dry_run):
    with pytest.raises(WorkloadIdentityError) as caught:
        reconciler(api, dry_run=dry_run).reconcile(desired(namespace="payments"))
    assert str(caught.value) == (
        "namespace: namespace 'payments' does not exist; set create_namespace: true or create it first"
    )
    assert caught.value.status == 404
    assert api.methods() == ["read_namespaced_service_account", "read_namespace"]
    assert api.writes(persisted_only=False) == []


def test_namespace_being_deleted_is_refused_before_the_create(api):
    api.terminating.add("orders")
    with pytest.raises(WorkloadIdentityError, match=r"^namespace: namespace 'orders' is being deleted"):
        reconciler(api).reconcile(desired(create_namespace=True))
    assert api.writes(persisted_only=False) == []


def test_namespace_that_may_not_be_read_leaves_it_to_the_create(api):
    # A namespaced Role cannot grant get on namespaces: the create is sent and the API server's 404 tells.
    api.faults["read_namespace"] = [api_error(403, "Forbidden", 'namespaces "payments" is forbidden', "namespaces")]
    with pytest.raises(WorkloadIdentityError, match=r"^namespace: namespace 'payments' does not exist"):
        reconciler(api).reconcile(desired(namespace="payments"))
    assert api.writes() == ["create_namespaced_service_account"]  # refused by the server, nothing stored
    api.faults["read_namespace"] = [api_error(403, "Forbidden", 'namespaces "orders" is forbidden', "namespaces")]
    assert reconciler(api).reconcile(desired()).plan.action == CREATE


def test_apply_without_a_namespace_read_still_names_the_option(api):
    # The fleet reads namespaces itself and calls apply(): a namespace deleted since is told by the create.
    built = reconciler(api)
    decided = sa.plan(None, desired(namespace="payments"))
    with pytest.raises(WorkloadIdentityError, match=r"^namespace: namespace 'payments' does not exist"):
        built.apply(None, desired(namespace="payments"), decided)
    assert "read_namespace" not in api.methods()


def test_create_namespace(api):
    outcome = reconciler(api).reconcile(desired(namespace="payments", create_namespace=True))
    assert outcome.namespace_created
    assert api.methods() == [
        "read_namespaced_service_account",
        "read_namespace",
        "create_namespace",
        "create_namespaced_service_account",
    ]
    assert "payments" in api.namespaces
    assert ("payments", "orders-api") in api.service_accounts


def test_create_namespace_in_check_mode_dry_runs_both(api):
    outcome = reconciler(api, dry_run=True).reconcile(desired(namespace="payments", create_namespace=True))
    assert outcome.changed and outcome.namespace_created
    assert api.methods() == ["read_namespaced_service_account", "read_namespace", "create_namespace"]
    assert api.calls[-1][1]["dry_run"] == "All"
    assert "payments" not in api.namespaces
    assert outcome.service_account["client_id"] == CLIENT
    assert outcome.service_account["uid"] is None


def test_create_namespace_that_appeared_meanwhile_is_fine(api):
    def racing(method: str) -> None:
        if method == "create_namespace":
            api.namespaces.add("payments")

    api.before_write = racing
    outcome = reconciler(api).reconcile(desired(namespace="payments", create_namespace=True))
    assert outcome.changed
    assert ("payments", "orders-api") in api.service_accounts


def test_create_that_races_another_writer_reads_again_and_patches(api):
    def racing(method: str) -> None:
        if method == "create_namespaced_service_account" and not api.service_accounts:
            api.add("orders", "orders-api", annotations={"foreign": "x"})

    api.before_write = racing
    outcome = reconciler(api).reconcile(desired())
    assert outcome.plan.action == UPDATE
    assert api.methods() == [
        "read_namespaced_service_account",
        "read_namespace",
        "create_namespaced_service_account",
        "read_namespaced_service_account",
        "patch_namespaced_service_account",
    ]
    assert api.service_accounts[("orders", "orders-api")]["metadata"]["annotations"] == {
        "foreign": "x",
        ANNOTATION_CLIENT_ID: CLIENT,
    }


def test_patch_of_a_service_account_deleted_meanwhile_creates_it(api):
    api.add("orders", "orders-api", annotations={ANNOTATION_CLIENT_ID: OTHER_CLIENT})

    def racing(method: str) -> None:
        if method == "patch_namespaced_service_account":
            api.service_accounts.clear()

    api.before_write = racing
    outcome = reconciler(api).reconcile(desired())
    assert outcome.plan.action == CREATE
    assert api.service_accounts[("orders", "orders-api")]["metadata"]["annotations"] == {ANNOTATION_CLIENT_ID: CLIENT}


def test_delete_of_a_recreated_service_account_reads_again(api):
    api.add("orders", "orders-api")
    recreated = []

    def racing(method: str) -> None:
        if method == "delete_namespaced_service_account" and not recreated:
            recreated.append(api.add("orders", "orders-api"))  # new uid

    api.before_write = racing
    outcome = reconciler(api).reconcile(desired(state="absent"))
    assert outcome.plan.action == DELETE
    deletes = [kw for name, kw in api.calls if name == "delete_namespaced_service_account"]
    assert deletes[-1]["body"]["preconditions"]["uid"] == recreated[0]["metadata"]["uid"]
    assert api.service_accounts == {}


def test_delete_of_a_service_account_gone_meanwhile_is_no_change(api):
    api.add("orders", "orders-api")
    api.before_write = lambda method: api.service_accounts.clear()
    outcome = reconciler(api).reconcile(desired(state="absent"))
    assert not outcome.changed


def test_a_service_account_that_keeps_changing_fails_after_three_rounds(api):
    api.add("orders", "orders-api")

    def racing(method: str) -> None:
        api.add("orders", "orders-api")

    api.before_write = racing
    with pytest.raises(WorkloadIdentityError, match="kept changing under us"):
        reconciler(api).reconcile(desired(state="absent"))
    assert api.methods().count("read_namespaced_service_account") == RACE_ATTEMPTS


def test_client_id_change_names_the_pods_that_keep_the_old_identity(api):
    api.add("orders", "orders-api", annotations={ANNOTATION_CLIENT_ID: OTHER_CLIENT})
    api.add_pod("orders", "api-1", "orders-api")
    api.add_pod("orders", "api-0", "orders-api")
    api.add_pod("orders", "job-done", "orders-api", phase="Succeeded")
    api.add_pod("orders", "other", "default")
    api.add_pod("payments", "elsewhere", "orders-api")
    outcome = reconciler(api).reconcile(desired())
    assert outcome.stale_pods == ["api-0", "api-1"]
    assert api.methods() == [
        "read_namespaced_service_account",
        "list_namespaced_pod",
        "patch_namespaced_service_account",
    ]
    assert api.calls[1][1]["field_selector"] == "spec.serviceAccountName=orders-api"
    (warning,) = outcome.warnings
    assert "2 pod(s) use it" in warning and "api-0, api-1" in warning and "until they are restarted" in warning


def test_client_id_change_without_pods_does_not_warn(api):
    api.add("orders", "orders-api", annotations={ANNOTATION_CLIENT_ID: OTHER_CLIENT})
    outcome = reconciler(api).reconcile(desired())
    assert outcome.stale_pods == []
    assert outcome.warnings == []


def test_forbidden_pod_list_degrades_to_a_warning(api):
    api.add("orders", "orders-api", annotations={ANNOTATION_CLIENT_ID: OTHER_CLIENT})
    api.faults["list_namespaced_pod"] = [
        api_error(403, "Forbidden", 'pods is forbidden: User "u" cannot list resource "pods" in the namespace "orders"')
    ]
    outcome = reconciler(api).reconcile(desired())
    assert outcome.changed
    assert outcome.stale_pods is None
    (warning,) = outcome.warnings
    assert "Could not check which pods use ServiceAccount 'orders/orders-api'" in warning
    assert 'Forbidden: pods is forbidden: User "u" cannot list resource "pods"' in warning
    assert api.service_accounts[("orders", "orders-api")]["metadata"]["annotations"][ANNOTATION_CLIENT_ID] == CLIENT


def test_forbidden_read_names_the_verb_and_namespace(api):
    message = (
        'serviceaccounts "orders-api" is forbidden: User "lab-restricted-user" cannot get resource '
        '"serviceaccounts" in API group "" in the namespace "orders"'
    )
    api.faults["read_namespaced_service_account"] = [api_error(403, "Forbidden", message)]
    with pytest.raises(WorkloadIdentityError) as caught:
        reconciler(api).reconcile(desired())
    assert str(caught.value) == f"Failed to read ServiceAccount 'orders/orders-api': Forbidden: {message}"
    assert caught.value.code == "Forbidden"
    assert caught.value.status == 403


def test_invalid_from_the_server_is_reported_with_its_reason(api):
    api.faults["create_namespaced_service_account"] = [api_error(422, "Invalid", 'ServiceAccount "x" is invalid: ...')]
    with pytest.raises(WorkloadIdentityError, match=r"^Failed to create ServiceAccount 'orders/orders-api': Invalid: "):
        reconciler(api).reconcile(desired())


@pytest.mark.parametrize("status", [429, 500, 503])
def test_throttling_with_retry_after_is_retried(api, status):
    api.faults["read_namespaced_service_account"] = [
        api_error(status, "TooManyRequests", "slow down", headers={"Retry-After": "2"})
    ]
    built = reconciler(api)
    outcome = built.reconcile(desired())
    assert outcome.plan.action == CREATE
    assert api.methods().count("read_namespaced_service_account") == 2
    assert built.sleeps == [2.0]  # type: ignore[attr-defined]


def test_write_throttled_with_retry_after_is_retried_without_duplicates(api):
    api.faults["create_namespaced_service_account"] = [
        api_error(429, "TooManyRequests", "slow down", headers={"retry-after": "1"})
    ]
    outcome = reconciler(api).reconcile(desired())
    assert outcome.changed
    assert len(api.service_accounts) == 1


@pytest.mark.parametrize(
    ("status", "headers"), [(429, {}), (503, {}), (409, {"Retry-After": "1"}), (400, {"Retry-After": "1"})]
)
def test_errors_without_a_retry_request_are_not_retried(api, status, headers):
    api.faults["read_namespaced_service_account"] = [api_error(status, "Whatever", "no", headers=headers)]
    with pytest.raises(WorkloadIdentityError):
        reconciler(api).reconcile(desired())
    assert api.methods() == ["read_namespaced_service_account"]


def test_retry_gives_up_at_the_timeout(api):
    api.faults["read_namespaced_service_account"] = [
        api_error(429, "TooManyRequests", "slow down", headers={"Retry-After": "30"}) for _attempt in range(5)
    ]
    with pytest.raises(WorkloadIdentityError, match="TooManyRequests: slow down"):
        reconciler(api, retry_timeout=10).reconcile(desired())
    assert api.methods() == ["read_namespaced_service_account"]  # Retry-After beyond the deadline: no wait
