"""The Event-Driven Ansible source extensions/eda/plugins/event_source/service_accounts.py: its pure parts
(fingerprints, diffs, coalescing), its arguments, and the Source/Watcher logic driven without an API server
(tests/integration/test_eda_service_accounts_source.py runs it against the lab's kube-apiserver)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "extensions" / "eda" / "plugins" / "event_source" / "service_accounts.py"


def _load():
    spec = importlib.util.spec_from_file_location("eda_service_accounts_source", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


src = _load()
P = "aks.workload-identity/request-"
A = {P + "identity": "id-orders"}
B = {P + "identity": "id-orders", P + "grants": "Key Vault Secrets User@orders-vault"}


def fp(annotations):
    return src.fingerprint(annotations, P)


def change(uid, before, after, deleted=False, namespace="ns", name=None):
    return src.Change(uid, namespace, name or uid, fp(before), fp(after), deleted)


# --------------------------------------------------------------------------- fingerprints
def test_default_prefix_is_the_collections():
    assert src.DEFAULT_ANNOTATION_PREFIX == "aks.workload-identity/request-"


def test_fingerprint_ignores_status_client_id_and_other_annotations():
    noisy = {
        **B,
        "aks.workload-identity/onboarding-status": "done",
        "aks.workload-identity/onboarding-message": "ok",
        "azure.workload.identity/client-id": "0000",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
    }
    assert fp(noisy) == fp(B)
    assert fp(B) == (
        (P + "grants", "Key Vault Secrets User@orders-vault"),
        (P + "identity", "id-orders"),
    )


@pytest.mark.parametrize("annotations", [None, {}, {"aks.workload-identity/onboarding-status": "done"}])
def test_no_request_is_the_empty_fingerprint(annotations):
    assert fp(annotations) == ()


def test_fingerprint_is_order_independent_and_value_sensitive():
    assert fp(dict(reversed(list(B.items())))) == fp(B)
    assert fp({P + "identity": "id-payments"}) != fp(A)


def test_fingerprint_honours_another_prefix():
    assert src.fingerprint({"x/req-a": "1", P + "identity": "i"}, "x/req-") == (("x/req-a", "1"),)


# --------------------------------------------------------------------------- classify, observe, diff
@pytest.mark.parametrize(
    ("before", "after", "deleted", "expected"),
    [
        ({}, A, False, "requested"),
        (A, B, False, "changed"),
        (A, {}, False, "withdrawn"),
        (A, A, False, None),
        ({}, {}, False, None),
        (A, {}, True, "deleted"),
        ({}, {}, True, None),
    ],
)
def test_classify(before, after, deleted, expected):
    assert src.classify(change("u", before, after, deleted)) == expected


def test_observe_reports_request_changes_only():
    state: dict = {}

    def seen(kind, annotations, uid="u1"):
        found = src.observe(state, kind, uid, "ns", "sa", annotations, P)
        return src.classify(found) if found else None

    assert seen("ADDED", {"other": "x"}) is None
    assert seen("MODIFIED", A) == "requested"
    assert seen("MODIFIED", {**A, "aks.workload-identity/onboarding-status": "done"}) is None
    assert seen("MODIFIED", {**A, "azure.workload.identity/client-id": "c"}) is None
    assert seen("MODIFIED", B) == "changed"
    assert seen("MODIFIED", {}) == "withdrawn"
    assert seen("DELETED", {}) is None  # no request when deleted: nothing to clean up
    assert "u1" not in state
    assert seen("ADDED", A, uid="u2") == "requested"
    assert seen("DELETED", A, uid="u2") == "deleted"
    assert seen("DELETED", A, uid="u3") == "deleted"  # never seen before, deleted with a request


def test_diff_states_finds_every_kind_including_missed_deletions():
    def entry(annotations, name):
        return src.Entry("ns", name, fp(annotations))

    old = {
        "kept": entry(A, "kept"),
        "changed": entry(A, "changed"),
        "withdrawn": entry(A, "withdrawn"),
        "deleted": entry(A, "deleted"),
        "plain-deleted": entry({}, "plain-deleted"),
        "plain": entry({}, "plain"),
    }
    new = {
        "kept": entry(A, "kept"),
        "changed": entry(B, "changed"),
        "withdrawn": entry({}, "withdrawn"),
        "plain": entry(A, "plain"),
        "created": entry(B, "created"),
        "created-plain": entry({}, "created-plain"),
    }
    found = {c.uid: src.classify(c) for c in src.diff_states(old, new)}
    assert found == {
        "changed": "changed",
        "withdrawn": "withdrawn",
        "deleted": "deleted",
        "plain": "requested",
        "created": "requested",
    }
    assert src.diff_states(new, new) == []


# --------------------------------------------------------------------------- coalescing
@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([({}, A), (A, B)], "requested"),  # requested then changed
        ([(A, B), (B, {})], "withdrawn"),  # changed then withdrawn
        ([(A, {}), ({}, B)], "changed"),  # withdrawn then requested again, differently
        ([(A, {}), ({}, A)], "changed"),  # undone within the window: a run meanwhile may have seen it gone
        ([({}, A), (A, {})], "withdrawn"),  # came and went: a run meanwhile may have onboarded it
        ([({}, A), (A, B), (B, B, True)], "deleted"),  # requested then deleted
        ([(A, B), (B, B, True)], "deleted"),
        ([(A, B), (B, A), (A, B)], "changed"),
    ],
)
def test_coalesce_keeps_one_change_per_service_account(steps, expected):
    changes = [change("u", *step) for step in steps]
    merged = src.coalesce(changes)
    assert [src.classify(c) for c in merged] == ([expected] if expected else [])


def test_coalesce_keeps_service_accounts_apart():
    merged = src.coalesce(
        [change("a", {}, A), change("b", A, {}), change("a", A, B), change("c", {}, A), change("c", A, {})]
    )
    assert [(c.uid, src.classify(c)) for c in merged] == [("a", "requested"), ("b", "withdrawn"), ("c", "withdrawn")]


def test_event_shape_is_sorted_and_complete():
    event = src.make_event(
        "change", [change("u2", {}, A, namespace="b", name="x"), change("u1", A, {}, namespace="a", name="y")]
    )
    assert event == {
        "onboarding": {
            "trigger": "change",
            "changes": [
                {"namespace": "a", "service_account": "y", "uid": "u1", "change": "withdrawn"},
                {"namespace": "b", "service_account": "x", "uid": "u2", "change": "requested"},
            ],
        }
    }


# --------------------------------------------------------------------------- arguments
def test_defaults():
    settings = src.parse_args({}, environ={})
    assert settings == src.Settings({}, None, P, 2.0, 600.0)


def test_rulebook_values_and_eda_keys():
    settings = src.parse_args(
        {
            "namespaces": ["orders", "payments", "orders"],
            "debounce_seconds": "0.5",
            "resync_seconds": 0,
            "validate_certs": "false",
            "eda_feedback_queue": object(),
        },
        environ={},
    )
    assert settings.namespaces == ("orders", "payments")
    assert (settings.debounce_seconds, settings.resync_seconds) == (0.5, 0.0)
    assert settings.connection == {"validate_certs": False}


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({"debounce_seconds": -1}, "debounce_seconds"),
        ({"debounce_seconds": "soon"}, "debounce_seconds"),
        ({"resync_seconds": True}, "resync_seconds"),
        ({"resync_seconds": "inf"}, "resync_seconds"),
        ({"namespaces": "orders"}, "namespaces"),
        ({"namespaces": []}, "namespaces"),
        ({"namespaces": ["orders", ""]}, "namespaces"),
        ({"annotation_prefix": ""}, "annotation_prefix"),
        ({"annotation_prefix": 3}, "annotation_prefix"),
        ({"validate_certs": "maybe"}, "validate_certs"),
        ({"kubeconfig": {"clusters": []}}, "kubeconfig"),
        ({"namespace": ["orders"]}, "namespace"),
    ],
)
def test_bad_arguments_are_named(args, named):
    with pytest.raises(src.SourceError, match=rf"\b{named}\b"):
        src.parse_args(args, environ={})


ENV = {
    "K8S_AUTH_HOST": "https://api.example:6443/",
    "K8S_AUTH_API_KEY": "secret-token-value",
    "K8S_AUTH_SSL_CA_CERT": "/ca.pem",
    "K8S_AUTH_VERIFY_SSL": "True",
}


def test_connection_comes_from_k8s_auth_variables_when_no_argument_is_given():
    settings = src.parse_args({}, environ=ENV)
    assert settings.connection == {
        "host": "https://api.example:6443/",
        "api_key": "secret-token-value",
        "ca_cert": "/ca.pem",
        "validate_certs": True,
    }
    configuration, source = src.build_configuration(settings.connection, ENV)
    assert configuration.host == "https://api.example:6443"
    assert configuration.get_api_key_with_prefix("authorization") == "Bearer secret-token-value"
    assert (configuration.ssl_ca_cert, configuration.verify_ssl) == ("/ca.pem", True)
    assert "secret-token-value" not in source


def test_any_connection_argument_turns_the_variables_off(tmp_path):
    settings = src.parse_args({"kubeconfig": str(tmp_path / "missing")}, environ=ENV)
    assert settings.connection == {"kubeconfig": str(tmp_path / "missing")}
    with pytest.raises(src.SourceError, match="cannot load the Kubernetes connection") as error:
        src.build_configuration(settings.connection, ENV)
    assert "secret-token-value" not in str(error.value)


def test_no_connection_at_all_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(src.SourceError, match="no connection settings"):
        src.build_configuration({}, {})


def test_docstring_documents_every_argument_and_a_valid_example():
    doc = src.__doc__
    for name in src.ARGS:
        assert f"\n    {name}:" in doc, name
    example = yaml.safe_load(doc.split("Example:\n-------\n", 1)[1])
    source = example[0]["sources"][0]
    assert set(source) == {"aks.workload_identity.service_accounts"}
    assert set(source["aks.workload_identity.service_accounts"]) <= set(src.ARGS)


# --------------------------------------------------------------------------- Source: startup, debounce, resync
def _listed(scope, **service_accounts):
    return ("listed", scope, {uid: ("ns", uid, annotations) for uid, annotations in service_accounts.items()})


def _event(scope, kind, uid, annotations):
    return ("event", scope, kind, (uid, "ns", uid, annotations))


def _summary(event):
    body = event["onboarding"]
    return body["trigger"], [(c["uid"], c["change"]) for c in body["changes"]]


class Driver:
    """A Source stepped on a fake clock (the real one waits on its inbox with these deadlines)."""

    def __init__(self, scopes=(None,), debounce=2.0, resync=600.0):
        self.queue: asyncio.Queue = asyncio.Queue()
        settings = src.Settings({}, None, P, debounce, resync)
        self.source = src.Source(settings, self.queue, list(scopes))

    def at(self, now, *items):
        for item in items:
            self.source.handle(item)
        asyncio.run(self.source.step(now))
        events = []
        while not self.queue.empty():
            events.append(_summary(self.queue.get_nowait()))
        return events


def test_startup_comes_once_every_scope_is_listed_even_empty():
    driver = Driver(scopes=("a", "b"))
    assert driver.at(0, _listed("a", u1=A, u2={"other": "x"})) == []
    assert driver.at(1, _event("a", "MODIFIED", "u2", A)) == []  # before startup: the startup event covers it
    assert driver.at(2, _listed("b")) == [("startup", [("u1", "requested"), ("u2", "requested")])]
    assert driver.at(10) == []
    assert driver.at(20) == []  # and no change event repeats it
    assert Driver().at(0, _listed(None)) == [("startup", [])]


def test_changes_are_debounced_into_one_event():
    driver = Driver(debounce=2.0)
    driver.at(0, _listed(None, u1=A, u2={}))
    assert driver.at(10, _event(None, "MODIFIED", "u1", B)) == []
    assert driver.at(11, _event(None, "MODIFIED", "u2", A), _event(None, "ADDED", "u3", A)) == []
    assert driver.at(11.9, _event(None, "MODIFIED", "u3", {})) == []  # requested then withdrawn: still told
    assert driver.at(12) == [("change", [("u1", "changed"), ("u2", "requested"), ("u3", "withdrawn")])]
    assert driver.at(13, _event(None, "MODIFIED", "u1", {**B, "aks.workload-identity/onboarding-status": "ok"})) == []
    assert driver.at(20) == []


def test_a_relist_emits_what_the_watch_missed():
    driver = Driver(debounce=0)
    driver.at(0, _listed(None, u1=A, u2=A, u3={}))
    assert driver.at(5, _listed(None, u2={}, u3=B)) == [
        ("change", [("u1", "deleted"), ("u2", "withdrawn"), ("u3", "requested")])
    ]


def test_resync_comes_when_nothing_was_emitted_for_resync_seconds():
    driver = Driver(debounce=1.0, resync=60.0)
    assert driver.at(0, _listed(None, u1=A)) == [("startup", [("u1", "requested")])]
    assert driver.at(59) == []
    assert driver.at(60) == [("resync", [("u1", "requested")])]
    assert driver.at(100, _event(None, "MODIFIED", "u1", {})) == []
    assert driver.at(101) == [("change", [("u1", "withdrawn")])]
    assert driver.at(160) == []  # the change event restarted the countdown
    assert driver.at(161) == [("resync", [])]
    disabled = Driver(resync=0)
    disabled.at(0, _listed(None))
    assert disabled.at(10_000) == []
    assert disabled.source.timeout(10_000) is None


def test_a_worker_failure_ends_the_source():
    with pytest.raises(src.SourceError, match="listing ServiceAccounts in all namespaces failed: HTTP 403"):
        Driver().at(0, ("fatal", None, "listing ServiceAccounts in all namespaces failed: HTTP 403 Forbidden"))


# --------------------------------------------------------------------------- Watcher without a server
def _service_account(uid, annotations):
    return types.SimpleNamespace(
        metadata=types.SimpleNamespace(uid=uid, namespace="ns", name=uid, annotations=annotations)
    )


class FakeApi:
    def __init__(self, pages):
        self.pages, self.calls = pages, []

    def list_service_account_for_all_namespaces(self, **kwargs):
        self.calls.append(kwargs)
        items, token = self.pages[len(self.calls) - 1]
        return types.SimpleNamespace(
            items=items, metadata=types.SimpleNamespace(resource_version=str(len(self.calls)), _continue=token)
        )


def test_watcher_pages_lists_watches_and_relists_after_410(monkeypatch):
    api = FakeApi(
        [
            ([_service_account("u1", A)], "next"),
            ([_service_account("u2", None)], None),
            ([_service_account("u2", A)], None),
        ]
    )
    posted, watched = [], []
    watcher = src.Watcher(api, None, posted.append)

    def stream(resource_version):
        watched.append(resource_version)
        if len(watched) == 1:
            yield {"type": "BOOKMARK", "raw_object": {"metadata": {"resourceVersion": "7"}}}
            yield {"type": "MODIFIED", "raw_object": {"metadata": {"uid": "u1", "namespace": "ns", "name": "u1"}}}
            return  # the server ended the watch: watch again from the last resourceVersion
        if len(watched) == 2:
            raise src.ApiException(status=410, reason="Gone")
        watcher.stopping.set()
        yield from ()

    monkeypatch.setattr(watcher, "stream", stream)
    monkeypatch.setattr(watcher, "back_off", pytest.fail)  # 410 is no error: list again at once
    watcher.run()
    assert api.calls[1]["_continue"] == "next"
    assert watched == ["2", "7", "3"]
    assert posted == [
        ("listed", None, {"u1": ("ns", "u1", A), "u2": ("ns", "u2", {})}),
        ("event", None, "MODIFIED", ("u1", "ns", "u1", {})),
        ("listed", None, {"u2": ("ns", "u2", A)}),
    ]


@pytest.mark.parametrize(("status", "fatal"), [(403, True), (401, True), (500, False)])
def test_watcher_gives_up_only_when_the_first_list_is_refused(monkeypatch, status, fatal):
    posted = []

    class Refusing:
        def list_service_account_for_all_namespaces(self, **kwargs):
            raise src.ApiException(status=status, reason="Refused")

    watcher = src.Watcher(Refusing(), None, posted.append)
    monkeypatch.setattr(watcher, "back_off", lambda exc: watcher.stopping.set())
    watcher.run()
    assert posted == (
        [("fatal", None, f"listing ServiceAccounts in all namespaces failed: HTTP {status} Refused")] if fatal else []
    )
