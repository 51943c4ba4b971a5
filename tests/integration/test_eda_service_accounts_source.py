"""The Event-Driven Ansible source extensions/eda/plugins/event_source/service_accounts.py against the lab's real
kube-apiserver: ``main(queue, args)`` runs as ansible-rulebook runs it (a task on an asyncio loop, cancelled at
shutdown) while the test annotates ServiceAccounts through its own client and reads the queue."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
import threading
import uuid

import pytest

from tests.conftest import REPO

kubernetes = pytest.importorskip("kubernetes")
urllib3 = pytest.importorskip("urllib3")

pytestmark = pytest.mark.lab

PLUGIN = REPO / "extensions" / "eda" / "plugins" / "event_source" / "service_accounts.py"
PREFIX = "aks.workload-identity/request-"
REQUEST = {PREFIX + "identity": "id-orders", PREFIX + "federation": "identity_binding"}
DEBOUNCE = 0.3
QUIET = 1.5  # how long "no event" is awaited: five debounce windows


def _load():
    spec = importlib.util.spec_from_file_location("eda_service_accounts_source_lab", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


src = _load()


class Cluster:
    """The test's side of the cluster: its own namespace, written with its own (admin) client."""

    def __init__(self, lab) -> None:
        self.api_client = kubernetes.config.new_client_from_config(str(lab.admin_kubeconfig))
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.namespace = f"eda-source-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace({"metadata": {"name": self.namespace}})

    def create(self, name: str, annotations: dict | None = None) -> str:
        body = {"metadata": {"name": name, "annotations": annotations or {}}}
        return self.core.create_namespaced_service_account(self.namespace, body).metadata.uid

    def annotate(self, name: str, annotations: dict) -> None:
        """A merge patch: None removes an annotation, the others are left alone."""
        self.core.patch_namespaced_service_account(name, self.namespace, {"metadata": {"annotations": annotations}})

    def delete(self, name: str) -> None:
        self.core.delete_namespaced_service_account(name, self.namespace)

    def close(self) -> None:
        with contextlib.suppress(kubernetes.client.exceptions.ApiException):
            self.core.delete_collection_namespaced_service_account(self.namespace)
            self.core.delete_namespace(self.namespace)
        self.api_client.close()


@pytest.fixture
def cluster(lab):
    created = Cluster(lab)
    yield created
    created.close()


def _changes(event: dict, namespace: str) -> list[tuple[str, str]]:
    """(service_account, change) of ``namespace`` only: a cluster-wide watch sees other tests' namespaces too."""
    return sorted(
        (c["service_account"], c["change"]) for c in event["onboarding"]["changes"] if c["namespace"] == namespace
    )


class Running:
    """main(queue, args) as a task, and the reads the test makes of its queue."""

    def __init__(self, args: dict) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.create_task(src.main(self.queue, args))

    async def event(self, timeout: float = 15) -> dict:
        getter = asyncio.ensure_future(self.queue.get())
        done, _pending = await asyncio.wait({getter, self.task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if self.task in done:
            getter.cancel()
            raise AssertionError(f"the source ended: {self.task.exception()!r}")
        if getter not in done:
            getter.cancel()
            raise AssertionError(f"no event within {timeout} s")
        return getter.result()

    async def next_for(self, namespace: str, timeout: float = 15) -> tuple[str, list[tuple[str, str]]]:
        """The next event with changes in ``namespace`` (or the next startup/resync event)."""
        while True:
            event = await self.event(timeout)
            changes = _changes(event, namespace)
            if changes or event["onboarding"]["trigger"] != "change":
                return event["onboarding"]["trigger"], changes

    async def quiet(self, namespace: str, seconds: float = QUIET) -> None:
        await asyncio.sleep(seconds)
        while not self.queue.empty():
            event = self.queue.get_nowait()
            assert not _changes(event, namespace), f"unexpected event {event}"

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def _watchers_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("service_accounts-") and t.is_alive()]


def test_onboarding_lifecycle_in_one_namespace(lab, cluster, monkeypatch):
    # Watches that the server ends every 1-2 s: the source must re-watch from the last resourceVersion and
    # miss nothing (https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes).
    monkeypatch.setattr(src, "WATCH_TIMEOUT_SECONDS", 1)
    ns = cluster.namespace
    cluster.create("pre-requested", REQUEST)
    cluster.create("pre-plain", {"aks.workload-identity/onboarding-status": "done"})
    burst = [f"burst-{i}" for i in range(5)]
    for name in burst:
        cluster.create(name)

    async def scenario() -> None:
        source = Running(
            {
                "kubeconfig": str(lab.admin_kubeconfig),
                "namespaces": [ns],
                "debounce_seconds": DEBOUNCE,
                "resync_seconds": 0,
            }
        )
        try:
            assert await source.next_for(ns) == ("startup", [("pre-requested", "requested")])

            await asyncio.to_thread(cluster.annotate, "pre-plain", REQUEST)
            assert await source.next_for(ns) == ("change", [("pre-plain", "requested")])

            # What the playbook and the webhook write back is no request: no event, or we would loop.
            await asyncio.to_thread(
                cluster.annotate,
                "pre-plain",
                {"aks.workload-identity/onboarding-status": "onboarded", "azure.workload.identity/client-id": "0000"},
            )
            await asyncio.to_thread(cluster.annotate, "pre-plain", {"aks.workload-identity/onboarding-message": "ok"})
            await source.quiet(ns)

            await asyncio.to_thread(cluster.annotate, "pre-plain", {PREFIX + "grants": "Key Vault Secrets User@kv"})
            assert await source.next_for(ns) == ("change", [("pre-plain", "changed")])

            for name in burst:  # one patch after the other, each its own request, within one debounce window
                await asyncio.to_thread(cluster.annotate, name, REQUEST)
            assert await source.next_for(ns) == ("change", [(name, "requested") for name in burst])
            await source.quiet(ns, DEBOUNCE * 2)  # and nothing after it

            await asyncio.to_thread(cluster.annotate, "pre-plain", dict.fromkeys([*REQUEST, PREFIX + "grants"]))
            assert await source.next_for(ns) == ("change", [("pre-plain", "withdrawn")])

            await asyncio.to_thread(cluster.delete, "pre-requested")
            assert await source.next_for(ns) == ("change", [("pre-requested", "deleted")])

            await asyncio.to_thread(cluster.delete, "pre-plain")  # no request any more: nothing to clean up
            await source.quiet(ns)
        finally:
            await source.stop()
        assert _watchers_alive() == []  # cancellation stopped the worker threads

    asyncio.run(scenario())


def test_startup_and_resync_cluster_wide(lab, cluster):
    ns = cluster.namespace
    cluster.create("requester", REQUEST)
    cluster.create("plain", {"azure.workload.identity/client-id": "0000"})

    async def scenario() -> None:
        source = Running({"kubeconfig": str(lab.admin_kubeconfig), "debounce_seconds": DEBOUNCE, "resync_seconds": 1})
        try:
            assert await source.next_for(ns) == ("startup", [("requester", "requested")])
            assert await source.next_for(ns, timeout=5) == ("resync", [("requester", "requested")])
            await asyncio.to_thread(cluster.annotate, "plain", REQUEST)
            trigger, changes = await source.next_for(ns)
            while trigger == "resync":  # one may come between the patch and its change event
                trigger, changes = await source.next_for(ns)
            assert (trigger, changes) == ("change", [("plain", "requested")])
            assert await source.next_for(ns, timeout=5) == (
                "resync",
                [("plain", "requested"), ("requester", "requested")],
            )
        finally:
            await source.stop()
        assert _watchers_alive() == []

    asyncio.run(scenario())


def test_a_broken_watch_is_relisted_and_what_it_missed_is_emitted(lab, cluster, monkeypatch):
    """The first watch hangs while ServiceAccounts change, then breaks like a dropped connection: the relist
    must report the withdrawal and the deletion the watch never delivered."""
    ns = cluster.namespace
    cluster.create("kept", REQUEST)
    cluster.create("withdrawn", REQUEST)
    cluster.create("deleted", REQUEST)
    cluster.create("requested")
    gate, streams = threading.Event(), []
    original = src.Watcher.stream

    def broken_once(self, resource_version):
        streams.append(resource_version)
        if len(streams) == 1:
            while not (gate.wait(0.1) or self.stopping.is_set()):
                pass
            raise urllib3.exceptions.ProtocolError("Connection broken: simulated")
        yield from original(self, resource_version)

    monkeypatch.setattr(src.Watcher, "stream", broken_once)
    monkeypatch.setattr(src, "BACKOFF_FIRST_SECONDS", 0.1)

    async def scenario() -> None:
        source = Running(
            {
                "kubeconfig": str(lab.admin_kubeconfig),
                "namespaces": [ns],
                "debounce_seconds": DEBOUNCE,
                "resync_seconds": 0,
            }
        )
        try:
            startup = await source.next_for(ns)
            assert startup == ("startup", [("deleted", "requested"), ("kept", "requested"), ("withdrawn", "requested")])
            await asyncio.to_thread(cluster.annotate, "withdrawn", dict.fromkeys(REQUEST))
            await asyncio.to_thread(cluster.delete, "deleted")
            await asyncio.to_thread(cluster.annotate, "requested", REQUEST)
            await source.quiet(ns, 0.5)  # the hung watch delivers nothing
            gate.set()
            assert await source.next_for(ns) == (
                "change",
                [("deleted", "deleted"), ("requested", "requested"), ("withdrawn", "withdrawn")],
            )
            await asyncio.to_thread(cluster.annotate, "kept", {PREFIX + "identity": "id-other"})
            assert await source.next_for(ns) == ("change", [("kept", "changed")])  # watching again
            assert len(streams) == 2
        finally:
            await source.stop()

    asyncio.run(scenario())


def test_least_privilege_namespaces_and_a_clear_error_when_refused(lab):
    """The lab's restricted user may list and watch ServiceAccounts in its namespace only: with that namespace
    the source starts; cluster-wide, the refused list ends it with an error saying so."""

    async def scenario() -> None:
        args = {"kubeconfig": str(lab.restricted_kubeconfig), "debounce_seconds": DEBOUNCE, "resync_seconds": 0}
        source = Running({**args, "namespaces": [lab.restricted_namespace]})
        try:
            assert (await source.event())["onboarding"]["trigger"] == "startup"
        finally:
            await source.stop()
        queue: asyncio.Queue = asyncio.Queue()
        with pytest.raises(src.SourceError, match=r"listing ServiceAccounts in all namespaces failed: HTTP 403"):
            await asyncio.wait_for(src.main(queue, args), 30)
        assert queue.empty()
        assert _watchers_alive() == []

    asyncio.run(scenario())
