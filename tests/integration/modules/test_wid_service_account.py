"""wid_service_account against the lab's real kube-apiserver, run through ansible-playbook.

State is checked with the kubernetes client on the admin kubeconfig, never with the module. Request counts come
from the API server's own ``apiserver_request_total`` metric (the lab runs no controllers, so between two scrapes
only this module and this test talk to it).
"""

from __future__ import annotations

import base64
import collections
import json
import ssl
import urllib.request
import uuid

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from tests.integration.runner import run_module

pytestmark = pytest.mark.lab

MODULE = "wid_service_account"
CLIENT = "6f0c1b2a-8d3e-4f5a-9b7c-1d2e3f4a5b6c"
OTHER_CLIENT = "0b8e2c1d-4a5f-4e3b-8c9d-7e6f5a4b3c2d"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID_KEY = "azure.workload.identity/client-id"
RESOURCES = ("serviceaccounts", "pods", "namespaces")


# --- Helpers ----------------------------------------------------------------------------------------------------
class Admin:
    """The lab's admin user through the kubernetes client, plus the API server's request counters."""

    def __init__(self, kubeconfig: str) -> None:
        self.configuration = k8s.Configuration()
        k8s_config.load_kube_config(
            config_file=kubeconfig, client_configuration=self.configuration, persist_config=False
        )
        self.core = k8s.CoreV1Api(k8s.ApiClient(self.configuration))
        self.rbac = k8s.RbacAuthorizationV1Api(self.core.api_client)

    def service_account(self, namespace: str, name: str) -> k8s.V1ServiceAccount | None:
        try:
            return self.core.read_namespaced_service_account(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def namespace_exists(self, name: str) -> bool:
        try:
            self.core.read_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def new_namespace(self, prefix: str = "wid-sa") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def add_pod(self, namespace: str, name: str, service_account: str) -> None:
        # The lab disables the ServiceAccount admission plugin and runs no kubelet: the pod is only an object.
        self.core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": name},
                "spec": {"serviceAccountName": service_account, "containers": [{"name": "app", "image": "busybox"}]},
            },
        )

    def request_counts(self) -> collections.Counter:
        """``(verb, resource, dry_run) -> count`` from the API server's apiserver_request_total counter."""
        context = ssl.create_default_context(cafile=self.configuration.ssl_ca_cert)
        context.load_cert_chain(self.configuration.cert_file, self.configuration.key_file)
        with urllib.request.urlopen(self.configuration.host + "/metrics", context=context, timeout=30) as response:
            text = response.read().decode()
        counts: collections.Counter = collections.Counter()
        for line in text.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels_text, _space, value = line.rpartition(" ")
            labels = dict(part.split("=", 1) for part in labels_text[len("apiserver_request_total{") : -1].split('",'))
            labels = {key: val.strip('"') for key, val in labels.items()}
            if labels.get("resource") in RESOURCES and labels["verb"] != "WATCH":  # informers inside the server watch
                counts[(labels["verb"], labels["resource"], labels.get("dry_run", ""))] += int(float(value))
        return counts


@pytest.fixture(scope="module")
def admin(lab) -> Admin:
    return Admin(str(lab.admin_kubeconfig))


def requests_during(admin: Admin, action) -> tuple:
    """Run ``action()`` and return (its result, the API server requests made meanwhile, as a dict)."""
    before = admin.request_counts()
    result = action()
    after = admin.request_counts()
    delta = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
    return result, delta


def run(lab, args, **kwargs):
    return run_module(MODULE, args, env=lab.env, **kwargs)


def restricted_env(lab) -> dict[str, str]:
    return {**lab.env, "K8S_AUTH_KUBECONFIG": str(lab.restricted_kubeconfig)}


# --- The lifecycle ----------------------------------------------------------------------------------------------
def test_lifecycle(lab, admin):
    namespace = admin.new_namespace()
    name = f"api-{uuid.uuid4().hex[:6]}"
    args = {"namespace": namespace, "name": name, "client_id": CLIENT, "labels": {"team": "orders"}}

    # check mode: changed, the API server only dry-ran the create, nothing exists
    checked, calls = requests_during(admin, lambda: run(lab, args, check=True, diff=True))
    assert not checked.failed, checked.output
    assert checked.changed
    # the namespace is read before a create, so that a missing one fails before any write
    assert calls == {
        ("GET", "serviceaccounts", ""): 1,
        ("GET", "namespaces", ""): 1,
        ("POST", "serviceaccounts", "All"): 1,
    }
    assert admin.service_account(namespace, name) is None
    assert checked["diff"]["before"] == {}
    assert checked["diff"]["after"]["annotations"] == {CLIENT_ID_KEY: CLIENT}
    assert checked["service_account"]["uid"] is None

    # apply
    applied, calls = requests_during(admin, lambda: run(lab, args))
    assert applied.changed, applied.output
    assert calls == {
        ("GET", "serviceaccounts", ""): 1,
        ("GET", "namespaces", ""): 1,
        ("POST", "serviceaccounts", ""): 1,
    }
    stored = admin.service_account(namespace, name)
    assert stored.metadata.annotations == {CLIENT_ID_KEY: CLIENT}
    assert stored.metadata.labels == {"team": "orders"}
    assert applied["service_account"]["uid"] == stored.metadata.uid
    assert applied["subject"] == f"system:serviceaccount:{namespace}:{name}"

    # re-run: no change, exactly one request (a GET)
    again, calls = requests_during(admin, lambda: run(lab, args))
    assert not again.changed, again.output
    assert calls == {("GET", "serviceaccounts", ""): 1}

    # someone else's keys and fields, then a client ID change: only our key moves
    admin.core.patch_namespaced_service_account(
        name,
        namespace,
        {
            "metadata": {"labels": {"helm.sh/chart": "orders-1.0"}, "annotations": {"meta.helm.sh/release-name": "x"}},
            "secrets": [{"name": "orders-token"}],
            "imagePullSecrets": [{"name": "registry"}],
        },
    )
    changed_args = {**args, "client_id": OTHER_CLIENT, "token_expiration": 7200}
    preview = run(lab, changed_args, check=True, diff=True)
    assert preview.changed
    assert preview["diff"]["before"]["client_id"] == CLIENT
    assert preview["diff"]["after"]["client_id"] == OTHER_CLIENT
    assert preview["diff"]["after"]["token_expiration"] == 7200
    assert preview["diff"]["after"]["labels"] == {"team": "orders", "helm.sh/chart": "orders-1.0"}
    assert admin.service_account(namespace, name).metadata.annotations[CLIENT_ID_KEY] == CLIENT  # dry run only

    updated, calls = requests_during(admin, lambda: run(lab, changed_args, diff=True))
    assert updated.changed
    # a changed client ID on an existing ServiceAccount: one pod list (no pods use it yet) and the patch
    assert calls == {
        ("GET", "serviceaccounts", ""): 1,
        ("LIST", "pods", ""): 1,
        ("PATCH", "serviceaccounts", ""): 1,
    }
    assert updated["stale_pods"] == []
    stored = admin.service_account(namespace, name)
    assert stored.metadata.annotations == {
        CLIENT_ID_KEY: OTHER_CLIENT,
        "azure.workload.identity/service-account-token-expiration": "7200",
        "meta.helm.sh/release-name": "x",
    }
    assert stored.metadata.labels == {"team": "orders", "helm.sh/chart": "orders-1.0"}
    assert [s.name for s in stored.secrets] == ["orders-token"]
    assert [s.name for s in stored.image_pull_secrets] == ["registry"]

    # absent, check mode first: dry-run delete, the ServiceAccount stays
    absent = {"namespace": namespace, "name": name, "state": "absent"}
    checked, calls = requests_during(admin, lambda: run(lab, absent, check=True, diff=True))
    assert checked.changed
    assert checked["diff"]["after"] == {}
    assert calls[("DELETE", "serviceaccounts", "All")] == 1
    assert admin.service_account(namespace, name) is not None
    assert admin.service_account(namespace, name).metadata.uid == stored.metadata.uid

    removed = run(lab, absent)
    assert removed.changed
    assert removed["service_account"] == {}
    assert admin.service_account(namespace, name) is None

    gone, calls = requests_during(admin, lambda: run(lab, absent))
    assert not gone.changed
    assert calls == {("GET", "serviceaccounts", ""): 1}


def test_client_id_change_names_the_pods_that_keep_the_old_identity(lab, admin):
    namespace = admin.new_namespace()
    name = f"api-{uuid.uuid4().hex[:6]}"
    assert run(lab, {"namespace": namespace, "name": name, "client_id": CLIENT}).changed
    admin.add_pod(namespace, "api-0", name)
    admin.add_pod(namespace, "api-1", name)
    admin.add_pod(namespace, "unrelated", "default")

    unchanged = run(lab, {"namespace": namespace, "name": name, "client_id": CLIENT.upper()})
    assert not unchanged.changed  # the same GUID in another letter case: nothing to restart for
    assert unchanged["stale_pods"] == []

    result = run(lab, {"namespace": namespace, "name": name, "client_id": OTHER_CLIENT})
    assert result.changed
    assert result["stale_pods"] == ["api-0", "api-1"]
    output = " ".join(result.output.split())  # the warning is wrapped on screen
    assert "2 pod(s) use it" in output and "api-0, api-1" in output and "until they are restarted" in output
    assert "unrelated" not in output


def test_remove_annotations_keeps_a_service_account_owned_by_someone_else(lab, admin):
    namespace = admin.new_namespace()
    name = f"grafana-{uuid.uuid4().hex[:6]}"
    admin.core.create_namespaced_service_account(
        namespace, {"metadata": {"name": name, "labels": {"app": "grafana"}, "annotations": {"owner": "helm"}}}
    )
    args = {"namespace": namespace, "name": name, "client_id": CLIENT, "tenant_id": TENANT}
    assert run(lab, args).changed
    strip = {"namespace": namespace, "name": name, "state": "absent", "remove": "annotations"}
    checked = run(lab, strip, check=True)
    assert checked.changed
    assert admin.service_account(namespace, name).metadata.annotations[CLIENT_ID_KEY] == CLIENT
    stripped = run(lab, strip)
    assert stripped.changed
    stored = admin.service_account(namespace, name)
    assert stored.metadata.annotations == {"owner": "helm"}
    assert stored.metadata.labels == {"app": "grafana"}
    assert not run(lab, strip).changed


# --- Namespaces -------------------------------------------------------------------------------------------------
def test_missing_namespace_fails_clearly_and_create_namespace_creates_it(lab, admin):
    namespace = f"wid-sa-new-{uuid.uuid4().hex[:8]}"
    args = {"namespace": namespace, "name": "worker", "client_id": CLIENT}

    failed, calls = requests_during(admin, lambda: run(lab, args))
    assert failed.failed
    assert failed["msg"] == (
        f"namespace: namespace '{namespace}' does not exist; set create_namespace: true or create it first"
    )
    # found missing by reading: the ServiceAccount's GET, then the namespace's; nothing is sent to be written
    assert calls == {("GET", "serviceaccounts", ""): 1, ("GET", "namespaces", ""): 1}
    assert not admin.namespace_exists(namespace)

    args["create_namespace"] = True
    checked, calls = requests_during(admin, lambda: run(lab, args, check=True))
    assert checked.changed and checked["namespace_created"]
    assert calls[("POST", "namespaces", "All")] == 1
    assert ("POST", "namespaces", "") not in calls
    assert not admin.namespace_exists(namespace)
    assert checked["service_account"]["client_id"] == CLIENT

    created = run(lab, args)
    assert created.changed and created["namespace_created"]
    assert admin.namespace_exists(namespace)
    assert admin.service_account(namespace, "worker").metadata.annotations == {CLIENT_ID_KEY: CLIENT}

    again, calls = requests_during(admin, lambda: run(lab, args))
    assert not again.changed and not again["namespace_created"]
    assert calls == {("GET", "serviceaccounts", ""): 1}


# --- Bad input --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"client_id": "not-a-guid"}, "client_id: must be a GUID"),
        ({"namespace": "Bad_Namespace"}, "namespace: must be an RFC 1123 label"),
        ({"token_expiration": 100000}, "token_expiration: must be between 3600 and 86400 seconds, got 100000"),
        ({"annotations": {CLIENT_ID_KEY: CLIENT}}, "is owned by this module; set it with the client_id option"),
    ],
)
def test_bad_input_fails_before_any_request(lab, admin, args, expected):
    full = {"namespace": "default", "name": f"bad-{uuid.uuid4().hex[:6]}", "client_id": CLIENT, **args}
    result, calls = requests_during(admin, lambda: run(lab, full))
    assert result.failed
    assert expected in result["msg"]
    assert calls == {}


# --- RBAC -------------------------------------------------------------------------------------------------------
def test_least_privileged_user_in_its_namespace(lab, admin):
    env = restricted_env(lab)
    namespace, name = lab.restricted_namespace, f"app-{uuid.uuid4().hex[:6]}"
    args = {"namespace": namespace, "name": name, "client_id": CLIENT}
    assert run_module(MODULE, args, env=env).changed
    admin.add_pod(namespace, f"{name}-pod", name)
    updated = run_module(MODULE, {**args, "client_id": OTHER_CLIENT}, env=env)
    assert updated.changed
    assert updated["stale_pods"] == [f"{name}-pod"]
    assert run_module(MODULE, {**args, "state": "absent"}, env=env).changed
    assert admin.service_account(namespace, name) is None


def test_forbidden_namespace_names_the_verb_and_namespace(lab):
    result = run_module(MODULE, {"namespace": "default", "name": "nope", "client_id": CLIENT}, env=restricted_env(lab))
    assert result.failed
    assert result["msg"].startswith("Failed to read ServiceAccount 'default/nope': Forbidden: ")
    assert 'cannot get resource "serviceaccounts"' in result["msg"]
    assert 'in the namespace "default"' in result["msg"]
    assert result["error_code"] == "Forbidden"


def test_forbidden_pod_list_degrades_to_a_warning(lab, admin):
    # A namespace where the restricted user may manage ServiceAccounts but not list pods.
    namespace = admin.new_namespace("wid-sa-rbac")
    role = {
        "metadata": {"name": "serviceaccounts-only"},
        "rules": [{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "create", "patch", "delete"]}],
    }
    admin.rbac.create_namespaced_role(namespace, role)
    admin.rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "serviceaccounts-only"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "serviceaccounts-only"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "lab-restricted-user"}],
        },
    )
    env = restricted_env(lab)
    args = {"namespace": namespace, "name": "worker", "client_id": CLIENT}
    assert run_module(MODULE, args, env=env).changed
    admin.add_pod(namespace, "worker-0", "worker")
    result = run_module(MODULE, {**args, "client_id": OTHER_CLIENT}, env=env)
    assert not result.failed, result.output
    assert result.changed
    assert result["stale_pods"] is None
    output = " ".join(result.output.split())
    assert "Could not check which pods use ServiceAccount" in output
    assert 'cannot list resource "pods"' in output
    assert admin.service_account(namespace, "worker").metadata.annotations[CLIENT_ID_KEY] == OTHER_CLIENT


# --- Secrets ----------------------------------------------------------------------------------------------------
def test_no_secret_in_verbose_output(lab, admin):
    namespace = admin.new_namespace()
    args = {"namespace": namespace, "name": "leak-check", "client_id": CLIENT}
    result = run(lab, args, verbosity=3, diff=True)
    assert result.changed
    assert lab.env["AZURE_SECRET"] not in result.output
    kubeconfig = json.loads(lab.admin_kubeconfig.read_text())
    key_data = kubeconfig["users"][0]["user"]["client-key-data"]
    private_key = base64.b64decode(key_data).decode()
    body = "".join(line for line in private_key.splitlines() if "PRIVATE KEY" not in line)
    assert key_data not in result.output
    assert body[:40] not in result.output
