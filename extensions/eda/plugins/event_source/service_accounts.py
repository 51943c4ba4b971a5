"""service_accounts.py - an ansible-rulebook event source for workload identity onboarding requests.

Watches Kubernetes ServiceAccounts and puts an event on the queue when an app team adds, changes or removes
an onboarding request: the annotations whose key starts with ``annotation_prefix``
(``aks.workload-identity/request-identity``, ``aks.workload-identity/request-grants``, ...). Every other
annotation is ignored, so the status annotations the playbook writes back
(``aks.workload-identity/onboarding-status``, ``aks.workload-identity/onboarding-message``) and the client id
the webhook or fleet writes (``azure.workload.identity/client-id``) never trigger a run.

The event is a trigger for a level-triggered playbook, which re-reads the cluster itself: after the initial
list one ``startup`` event always comes (even with no requests, so removals made while the rulebook was down
are caught), then changes are debounced into one ``change`` event per burst, and a ``resync`` event comes when
nothing was emitted for ``resync_seconds``. After a watch error or an expired resource version the source
lists again and emits what differs from what it knew (deletions missed meanwhile included).

Arguments:
---------
    kubeconfig:       Path of a kubeconfig file. Default: none.
    context:          Context of the kubeconfig. Default: its current context.
    host:             URL of the API server; with api_key, nothing else is read. Default: none.
    api_key:          Bearer token (never logged). Default: none.
    ca_cert:          Path of the API server's CA bundle. Default: none.
    validate_certs:   Verify the API server's certificate. Default: true.
                      When none of these six is given, each comes from its variable, as the collection's
                      modules read them and AWX's Kubernetes credential injects them: K8S_AUTH_KUBECONFIG,
                      K8S_AUTH_CONTEXT, K8S_AUTH_HOST, K8S_AUTH_API_KEY, K8S_AUTH_SSL_CA_CERT,
                      K8S_AUTH_VERIFY_SSL. Then: host with api_key; else kubeconfig and/or context; else
                      KUBECONFIG; else ~/.kube/config; else the pod's in-cluster ServiceAccount.
    namespaces:       List of namespaces to watch, one list+watch each. Default: one cluster-wide list+watch.
    annotation_prefix: Prefix of the request annotations. Default: "aks.workload-identity/request-".
    debounce_seconds: After the first change, collect further changes this long, then put one event.
                      Default: 2.
    resync_seconds:   Put a "resync" event when no event was put for this long (any event restarts the
                      countdown: each one makes the playbook reconcile everything). 0 disables. Default: 600.

Events:
------
    {"onboarding": {"trigger": "startup" | "change" | "resync",
                    "changes": [{"namespace": "orders", "service_account": "orders-api", "uid": "...",
                                 "change": "requested" | "changed" | "withdrawn" | "deleted"}]}}
    startup and resync list every ServiceAccount that carries a request, as "requested".

Example:
-------
    - name: Onboard workload identities on request
      hosts: localhost
      sources:
        - aks.workload_identity.service_accounts:
            namespaces:
              - orders
              - payments
            debounce_seconds: 2
            resync_seconds: 600
      rules:
        - name: Reconcile the requested workloads
          condition: event.onboarding is defined
          action:
            run_playbook:
              name: aks.workload_identity.workload
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import random
import socket
import threading
import typing as t

try:
    from kubernetes import client as kube_client
    from kubernetes import config as kube_config
    from kubernetes import watch as kube_watch
    from kubernetes.client.exceptions import ApiException
except ImportError:  # main() says so; the pure functions work without it
    kube_client = kube_config = kube_watch = None

    class ApiException(Exception):  # type: ignore[no-redef]
        status: int | None = None


DEFAULT_ANNOTATION_PREFIX = "aks.workload-identity/request-"
DEFAULT_DEBOUNCE_SECONDS = 2.0
DEFAULT_RESYNC_SECONDS = 600.0
# Server-side watch timeout, spread like client-go's reflector (minWatchTimeout 5 min * [1, 2)) so that many
# sources do not all re-watch at the same moment; the read timeout is longer, so an idle watch is not an error.
WATCH_TIMEOUT_SECONDS = 300
WATCH_READ_SLACK_SECONDS = 30
REQUEST_TIMEOUT = (10, 60)  # (connect, read) of the list requests
LIST_PAGE_SIZE = 500
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
STOP_JOIN_SECONDS = 5.0

CONNECTION_ARGS = ("kubeconfig", "context", "host", "api_key", "ca_cert", "validate_certs")
# The variables the collection's modules fall back to, as AWX's Kubernetes credential type injects them.
CONNECTION_ENV = {
    "kubeconfig": "K8S_AUTH_KUBECONFIG",
    "context": "K8S_AUTH_CONTEXT",
    "host": "K8S_AUTH_HOST",
    "api_key": "K8S_AUTH_API_KEY",
    "ca_cert": "K8S_AUTH_SSL_CA_CERT",
    "validate_certs": "K8S_AUTH_VERIFY_SSL",
}
ARGS = (*CONNECTION_ARGS, "namespaces", "annotation_prefix", "debounce_seconds", "resync_seconds")
TRUE_WORDS = ("1", "true", "yes", "on", "y", "t")
FALSE_WORDS = ("0", "false", "no", "off", "n", "f")

LOGGER = logging.getLogger("aks.workload_identity.service_accounts")

Fingerprint = tuple[tuple[str, str], ...]


class Entry(t.NamedTuple):
    """What the source remembers of one ServiceAccount."""

    namespace: str
    name: str
    fingerprint: Fingerprint


State = dict[str, Entry]  # uid -> entry


class Change(t.NamedTuple):
    """One ServiceAccount's request annotations going from ``before`` to ``after`` (or the object deleted)."""

    uid: str
    namespace: str
    name: str
    before: Fingerprint
    after: Fingerprint
    deleted: bool = False
    transient: bool = False  # a request came and went (or changed and changed back) within one window


class Settings(t.NamedTuple):
    connection: dict[str, t.Any]
    namespaces: tuple[str, ...] | None
    annotation_prefix: str
    debounce_seconds: float
    resync_seconds: float


class SourceError(Exception):
    """A failure the source cannot recover from (bad arguments, connection settings, access refused)."""


# --------------------------------------------------------------------------- pure functions
def fingerprint(annotations: t.Mapping[str, t.Any] | None, prefix: str = DEFAULT_ANNOTATION_PREFIX) -> Fingerprint:
    """The request annotations only, as sorted (key, value) pairs; ``()`` means no request."""
    return tuple(sorted((key, str(value)) for key, value in (annotations or {}).items() if key.startswith(prefix)))


def classify(change: Change) -> str | None:
    """``requested``, ``changed``, ``withdrawn``, ``deleted``, or None when the request did not change."""
    if change.deleted:
        return "deleted" if change.before or change.transient else None
    if not change.before:
        return "requested" if change.after else ("withdrawn" if change.transient else None)
    if not change.after:
        return "withdrawn"
    return "changed" if change.after != change.before or change.transient else None


def observe(
    state: State, kind: str, uid: str, namespace: str, name: str, annotations: t.Any, prefix: str
) -> Change | None:
    """Apply one watch event (ADDED, MODIFIED, DELETED) to ``state``; the change it makes to a request, if any."""
    previous = state.get(uid)
    if kind == "DELETED":
        state.pop(uid, None)
        before = previous.fingerprint if previous else fingerprint(annotations, prefix)
        change = Change(uid, namespace, name, before, (), deleted=True)
    else:
        entry = Entry(namespace, name, fingerprint(annotations, prefix))
        state[uid] = entry
        change = Change(uid, namespace, name, previous.fingerprint if previous else (), entry.fingerprint)
    return change if classify(change) else None


def diff_states(old: State, new: State) -> list[Change]:
    """The request changes between two lists of the same scope (what a relist found that the watch missed)."""
    changes = []
    for uid, entry in new.items():
        previous = old.get(uid)
        change = Change(uid, entry.namespace, entry.name, previous.fingerprint if previous else (), entry.fingerprint)
        if classify(change):
            changes.append(change)
    for uid, entry in old.items():
        if uid not in new and entry.fingerprint:
            changes.append(Change(uid, entry.namespace, entry.name, entry.fingerprint, (), deleted=True))
    return changes


def coalesce(changes: t.Iterable[Change]) -> list[Change]:
    """One change per ServiceAccount: from its state before the first change to its state after the last one.

    Requested then changed is requested; changed then withdrawn is withdrawn. A request that came and went
    within the window (requested then withdrawn or deleted, or changed and changed back) is still reported,
    as withdrawn, deleted or changed: a playbook run already under way may have seen the passing state, and only
    another run puts it right.
    """
    merged: dict[str, Change] = {}
    for change in changes:
        first = merged.get(change.uid)
        merged[change.uid] = change if first is None else change._replace(before=first.before, transient=True)
    return [change for change in merged.values() if classify(change)]


def change_records(changes: t.Iterable[Change]) -> list[dict[str, str]]:
    records = [
        {"namespace": c.namespace, "service_account": c.name, "uid": c.uid, "change": classify(c) or ""}
        for c in changes
    ]
    return sorted(records, key=lambda record: (record["namespace"], record["service_account"], record["uid"]))


def requesters(state: State) -> list[Change]:
    """Every ServiceAccount of ``state`` carrying a request, as a change from no request (startup, resync)."""
    return [Change(uid, e.namespace, e.name, (), e.fingerprint) for uid, e in state.items() if e.fingerprint]


def make_event(trigger: str, changes: t.Iterable[Change]) -> dict[str, t.Any]:
    return {"onboarding": {"trigger": trigger, "changes": change_records(changes)}}


# --------------------------------------------------------------------------- arguments
def _boolean(name: str, value: t.Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise SourceError(f"service_accounts: {name} must be a boolean, got {value!r}")


def _seconds(args: t.Mapping[str, t.Any], name: str, default: float) -> float:
    value = args.get(name, default)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise SourceError(f"service_accounts: {name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _namespaces(value: t.Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(n, str) and n.strip() for n in value):
        raise SourceError(f"service_accounts: namespaces must be a non-empty list of namespace names, got {value!r}")
    return tuple(dict.fromkeys(n.strip() for n in value))


def _connection(args: t.Mapping[str, t.Any], environ: t.Mapping[str, str]) -> dict[str, t.Any]:
    """The connection arguments given; when none is, the K8S_AUTH_* variables (AWX's credential, the modules)."""
    given = {name: args[name] for name in CONNECTION_ARGS if args.get(name) not in (None, "")}
    if not given:
        given = {name: environ[env] for name, env in CONNECTION_ENV.items() if environ.get(env)}
    connection: dict[str, t.Any] = {}
    for name, value in given.items():
        if name == "validate_certs":
            value = _boolean(name, value)
        elif not isinstance(value, str):
            raise SourceError(f"service_accounts: {name} must be a string, got {type(value).__name__}")
        connection[name] = value
    return connection


def parse_args(args: t.Mapping[str, t.Any], environ: t.Mapping[str, str] | None = None) -> Settings:
    """Check the rulebook's arguments; a SourceError names the bad one. ``eda_*`` keys are ansible-rulebook's."""
    unknown = sorted(str(key) for key in args if key not in ARGS and not str(key).startswith("eda_"))
    if unknown:
        raise SourceError(f"service_accounts: unknown argument(s) {', '.join(unknown)}; expected {', '.join(ARGS)}")
    prefix = args.get("annotation_prefix", DEFAULT_ANNOTATION_PREFIX)
    if not isinstance(prefix, str) or not prefix.strip():
        raise SourceError(f"service_accounts: annotation_prefix must be a non-empty string, got {prefix!r}")
    return Settings(
        connection=_connection(args, os.environ if environ is None else environ),
        namespaces=_namespaces(args.get("namespaces")),
        annotation_prefix=prefix.strip(),
        debounce_seconds=_seconds(args, "debounce_seconds", DEFAULT_DEBOUNCE_SECONDS),
        resync_seconds=_seconds(args, "resync_seconds", DEFAULT_RESYNC_SECONDS),
    )


# --------------------------------------------------------------------------- connection
def build_configuration(connection: t.Mapping[str, t.Any], environ: t.Mapping[str, str]) -> tuple[t.Any, str]:
    """A kubernetes client Configuration and where it came from (a sentence without secrets).

    host + api_key: nothing else is read; kubeconfig/context; KUBECONFIG; ~/.kube/config; in-cluster. Then
    host, api_key, ca_cert and validate_certs override what was loaded, as in the collection's modules.
    """
    configuration = kube_client.Configuration()
    host = (connection.get("host") or "").rstrip("/")
    default_kubeconfig = os.path.expanduser("~/.kube/config")
    try:
        if host and connection.get("api_key"):
            source = f"host {host}"
        elif connection.get("kubeconfig") or connection.get("context") or environ.get("KUBECONFIG"):
            path = connection.get("kubeconfig") or environ.get("KUBECONFIG") or default_kubeconfig
            source = f"kubeconfig {path}" + (f" (context {connection['context']})" if connection.get("context") else "")
            kube_config.load_kube_config(
                config_file=path,
                context=connection.get("context"),
                client_configuration=configuration,
                persist_config=False,
            )
        elif os.path.exists(default_kubeconfig):
            source = f"kubeconfig {default_kubeconfig}"
            kube_config.load_kube_config(config_file=default_kubeconfig, client_configuration=configuration)
        elif environ.get("KUBERNETES_SERVICE_HOST"):
            source = "the in-cluster ServiceAccount"
            kube_config.load_incluster_config(client_configuration=configuration)
        else:
            raise kube_config.ConfigException(
                "no connection settings: set kubeconfig or host and api_key (or K8S_AUTH_*, KUBECONFIG)"
            )
    except (kube_config.ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        raise SourceError(f"service_accounts: cannot load the Kubernetes connection: {exc}") from exc
    if host:
        configuration.host = host
    if connection.get("api_key"):
        configuration.api_key = {"authorization": connection["api_key"]}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        configuration.refresh_api_key_hook = None
    if connection.get("ca_cert"):
        configuration.ssl_ca_cert = connection["ca_cert"]
    if connection.get("validate_certs") is not None:
        configuration.verify_ssl = connection["validate_certs"]
    return configuration, source


# --------------------------------------------------------------------------- the list+watch workers (threads)
def _shut_down(response: t.Any) -> None:
    """Shut a watch's socket down, so that a read blocked on it returns at once (as kubernetes' Watch.stop())."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _describe(exc: BaseException) -> str:
    """An error without request headers (an ApiException's str() has the response's, never the token)."""
    status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
    if status is not None:
        return f"HTTP {status} {reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}"


class Watcher(threading.Thread):
    """Lists then watches the ServiceAccounts of one scope (a namespace, or None for all) and posts what it
    sees to the event loop: ``("listed", scope, {uid: (namespace, name, annotations)})``,
    ``("event", scope, kind, (uid, namespace, name, annotations))``,
    ``("fatal", scope, message)``.

    Follows "Efficient detection of changes" (https://kubernetes.io/docs/reference/using-api/api-concepts/
    #efficient-detection-of-changes): watch from the list's resourceVersion with bookmarks, re-watch from the
    last seen one when the server ends the watch, list again on 410 Gone (history compacted) and after errors.
    """

    def __init__(self, api: t.Any, scope: str | None, post: t.Callable[[tuple], None]) -> None:
        super().__init__(name=f"service_accounts-{scope or 'all'}", daemon=True)
        self.api, self.scope, self.post = api, scope, post
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.response: t.Any = None
        self.failures = 0

    def stop(self) -> None:
        with self.lock:
            self.stopping.set()
            response = self.response
        if response is not None:
            _shut_down(response)

    def opened(self, call: t.Callable) -> t.Callable:
        """``call`` (a list function), keeping the watch response it opens for stop(), which may come while the
        request is in flight: then the response is shut down as soon as it is there."""

        @functools.wraps(call)  # Watch reads the return type and the watch parameter from call's doc/signature
        def opening(*args: t.Any, **kwargs: t.Any) -> t.Any:
            response = call(*args, **kwargs)
            with self.lock:
                self.response = response
                stopping = self.stopping.is_set()
            if stopping:
                _shut_down(response)
            return response

        return opening

    def run(self) -> None:
        try:
            self.loop()
        except Exception as exc:  # a bug must end the source loudly, not leave it silent
            self.post(("fatal", self.scope, f"the watch of {self.where} failed: {_describe(exc)}"))

    @property
    def where(self) -> str:
        return f"namespace {self.scope}" if self.scope else "all namespaces"

    def loop(self) -> None:
        listed_once = False
        while not self.stopping.is_set():
            try:
                resource_version = self.list_and_post()
                listed_once = True
                self.watch_from(resource_version)
            except ApiException as exc:
                if exc.status == 410:  # resourceVersion too old: list again at once
                    LOGGER.info("service_accounts: the watch of %s expired (410 Gone); listing again", self.where)
                    continue
                if not listed_once and exc.status in (401, 403, 404):
                    self.post(
                        ("fatal", self.scope, f"listing ServiceAccounts in {self.where} failed: {_describe(exc)}")
                    )
                    return
                self.back_off(exc)
            except Exception as exc:  # connection errors (urllib3, socket, TLS): list again after a pause
                if self.stopping.is_set():
                    return
                self.back_off(exc)

    def back_off(self, exc: BaseException) -> None:
        self.failures += 1
        delay = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** (self.failures - 1))
        delay *= random.uniform(0.8, 1.2)  # jitter, not cryptography
        LOGGER.warning(
            "service_accounts: watching %s failed (%s); listing again in %.1f s", self.where, _describe(exc), delay
        )
        self.stopping.wait(delay)

    def list_and_post(self) -> str:
        items: dict[str, tuple[str, str, dict[str, str]]] = {}
        token, resource_version = None, ""
        while True:
            kwargs = {"limit": LIST_PAGE_SIZE, "_request_timeout": REQUEST_TIMEOUT}
            if token:
                kwargs["_continue"] = token
            if self.scope:
                page = self.api.list_namespaced_service_account(self.scope, **kwargs)
            else:
                page = self.api.list_service_account_for_all_namespaces(**kwargs)
            for item in page.items or []:
                meta = item.metadata
                items[meta.uid] = (meta.namespace, meta.name, dict(meta.annotations or {}))
            resource_version = page.metadata.resource_version or resource_version  # one snapshot for all pages
            token = page.metadata._continue
            if not token:
                break
        self.post(("listed", self.scope, items))
        return resource_version

    def stream(self, resource_version: str) -> t.Iterator[dict[str, t.Any]]:
        timeout = random.randint(WATCH_TIMEOUT_SECONDS, 2 * WATCH_TIMEOUT_SECONDS)
        kwargs = {
            "resource_version": resource_version,
            "allow_watch_bookmarks": True,
            "timeout_seconds": timeout,  # with it, Watch raises 410 instead of retrying on its own
            "_request_timeout": (REQUEST_TIMEOUT[0], timeout + WATCH_READ_SLACK_SECONDS),
        }
        args = (self.scope,) if self.scope else ()
        call = (
            self.api.list_namespaced_service_account if self.scope else self.api.list_service_account_for_all_namespaces
        )
        try:
            yield from kube_watch.Watch().stream(self.opened(call), *args, **kwargs)
        finally:
            with self.lock:
                self.response = None

    def watch_from(self, resource_version: str) -> None:
        """Watch until stopped, then return; raise ApiException (410 Gone: list again) or a connection error."""
        while not self.stopping.is_set():
            for event in self.stream(resource_version):
                if self.stopping.is_set():
                    return
                raw = event.get("raw_object") or {}
                meta = raw.get("metadata") or {}
                resource_version = meta.get("resourceVersion") or resource_version
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED") and meta.get("uid"):
                    self.failures = 0
                    annotations = dict(meta.get("annotations") or {})
                    self.post(
                        (
                            "event",
                            self.scope,
                            event["type"],
                            (meta["uid"], meta.get("namespace", ""), meta.get("name", ""), annotations),
                        )
                    )
            # The server ended the watch (timeout_seconds): watch again from the last resourceVersion seen,
            # bookmarks included (https://kubernetes.io/docs/reference/using-api/api-concepts/#watch-bookmarks).
            self.failures = 0


# --------------------------------------------------------------------------- the asyncio side
class Source:
    """Keeps the known state per scope, turns what the workers post into events, debounces and resyncs."""

    def __init__(self, settings: Settings, queue: asyncio.Queue, scopes: list[str | None]) -> None:
        self.settings, self.queue, self.scopes = settings, queue, scopes
        self.known: dict[str | None, State] = {}
        self.pending: list[Change] = []
        self.started = False
        self.debounce_deadline: float | None = None
        self.resync_deadline: float | None = None

    def all_known(self) -> State:
        state: State = {}
        for scope_state in self.known.values():
            state.update(scope_state)
        return state

    def handle(self, item: tuple) -> None:
        kind, scope = item[0], item[1]
        prefix = self.settings.annotation_prefix
        if kind == "fatal":
            raise SourceError(f"service_accounts: {item[2]}")
        if kind == "listed":
            state = {uid: Entry(ns, name, fingerprint(ann, prefix)) for uid, (ns, name, ann) in item[2].items()}
            if scope in self.known:
                self.pending.extend(diff_states(self.known[scope], state))
            self.known[scope] = state
        elif kind == "event" and scope in self.known:
            change = observe(self.known[scope], item[2], *item[3], prefix)
            if change:
                self.pending.append(change)

    async def put(self, trigger: str, changes: t.Iterable[Change], now: float) -> None:
        event = make_event(trigger, changes)
        LOGGER.info("service_accounts: %s event with %d change(s)", trigger, len(event["onboarding"]["changes"]))
        await self.queue.put(event)
        if self.settings.resync_seconds:
            self.resync_deadline = now + self.settings.resync_seconds

    async def step(self, now: float) -> None:
        """Put what is due at ``now``: the startup event, a debounced change event, a resync event."""
        if not self.started:
            if len(self.known) == len(self.scopes):
                self.started = True
                self.pending.clear()  # the startup event makes the playbook reconcile everything anyway
                await self.put("startup", requesters(self.all_known()), now)
            return
        if self.pending and self.debounce_deadline is None:
            self.debounce_deadline = now + self.settings.debounce_seconds
        if self.debounce_deadline is not None and now >= self.debounce_deadline:
            changes, self.pending, self.debounce_deadline = coalesce(self.pending), [], None
            if changes:
                await self.put("change", changes, now)
        if self.resync_deadline is not None and now >= self.resync_deadline:
            await self.put("resync", requesters(self.all_known()), now)

    def timeout(self, now: float) -> float | None:
        deadlines = [d for d in (self.debounce_deadline, self.resync_deadline) if d is not None]
        return max(0.0, min(deadlines) - now) if deadlines else None

    async def run(self, inbox: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                item = await asyncio.wait_for(inbox.get(), self.timeout(loop.time()))
            except asyncio.TimeoutError:
                item = None
            if item is not None:
                self.handle(item)
                while not inbox.empty():  # what arrived meanwhile belongs to the same step
                    self.handle(inbox.get_nowait())
            await self.step(loop.time())


def _poster(loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue) -> t.Callable[[tuple], None]:
    def post(item: tuple) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the source is gone
            loop.call_soon_threadsafe(inbox.put_nowait, item)

    return post


async def _stop(watchers: list[Watcher]) -> None:
    for watcher in watchers:
        watcher.stop()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STOP_JOIN_SECONDS
    while any(w.is_alive() for w in watchers) and loop.time() < deadline:
        await asyncio.sleep(0.05)


async def main(queue: asyncio.Queue, args: dict[str, t.Any]) -> None:
    """Put onboarding events on ``queue`` until cancelled (the plugin contract of
    https://ansible.readthedocs.io/projects/rulebook/en/stable/sources.html)."""
    settings = parse_args(args)
    if kube_client is None:
        raise SourceError("service_accounts: the kubernetes Python package is required (pip install kubernetes)")
    configuration, source = build_configuration(settings.connection, os.environ)
    scopes: list[str | None] = list(settings.namespaces) if settings.namespaces else [None]
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, len(scopes) + 2)
    api_client = kube_client.ApiClient(configuration)
    LOGGER.info(
        "service_accounts: watching ServiceAccounts in %s through %s",
        ", ".join(s or "all namespaces" for s in scopes),
        source,
    )
    inbox: asyncio.Queue = asyncio.Queue()
    post = _poster(asyncio.get_running_loop(), inbox)
    watchers = [Watcher(kube_client.CoreV1Api(api_client), scope, post) for scope in scopes]
    try:
        for watcher in watchers:
            watcher.start()
        await Source(settings, queue, scopes).run(inbox)
    finally:
        await asyncio.shield(_stop(watchers))
        if not any(w.is_alive() for w in watchers):
            api_client.close()


if __name__ == "__main__":

    class MockQueue(asyncio.Queue):
        """Print the events instead of handing them to ansible-rulebook."""

        async def put(self, item: t.Any) -> None:
            print(item)

    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(MockQueue(), {"debounce_seconds": 2, "resync_seconds": 60}))
