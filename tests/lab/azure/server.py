"""HTTPS front of the Azure emulator: routing, ARM conventions, request log, fault injection, lab control API.

Route modules (arm.py, aks.py, identity_binding.py, msi.py, authorization.py, keyvault.py, entra.py, oidc.py)
register handlers on ``ROUTER`` with ``@route(...)``; this file knows nothing about any resource type.

Planes, told apart the way Azure tells them apart:
- ``vault``: requests whose Host is ``<vault>.<keyVaultDns suffix>`` (Key Vault's data plane has a host per vault);
- ``entra``, ``oidc``, ``arm``: the rest, by path. ``/_lab/...`` is the lab's own control API (no auth).
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import throttle
from .state import State
from .tokens import TokenError

JSON = "application/json; charset=utf-8"


@dataclass
class Request:
    method: str
    path: str  # percent-decoded, without the query string
    query: dict[str, str]  # first value per key; keys lower-cased (ARM treats query names case-insensitively)
    headers: dict[str, str]  # keys lower-cased
    body: bytes
    host: str  # Host header, lower-cased, with port
    plane: str = "arm"
    params: dict[str, str] = field(default_factory=dict)
    principal: dict[str, Any] | None = None  # claims of the validated bearer token, when the route needs one
    vault: str | None = None  # vault name, on the vault plane
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise ArmError(
                400, "InvalidRequestContent", f"The request content was invalid and could not be deserialized: '{exc}'."
            ) from exc

    @property
    def api_version(self) -> str | None:
        return self.query.get("api-version")

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode("utf-8"), keep_blank_values=True).items()}


@dataclass
class Response:
    status: int
    body: Any = None  # dict/list -> JSON; bytes/str -> as is; None -> empty
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON


class ArmError(Exception):
    """Raised by handlers; becomes the ARM error body {"error": {"code", "message"}} (common-types ErrorResponse)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> Response:
        error = {"code": self.code, "message": self.message, **self.extra}
        return Response(self.status, {"error": error}, dict(self.headers))


class RawError(Exception):
    """A handler-chosen response that is not ARM-shaped (Entra's OAuth errors, for example)."""

    def __init__(self, response: Response):
        super().__init__(response.status)
        self.response = response


Handler = Callable[[Request, State], Response]


@dataclass
class Route:
    methods: tuple[str, ...]
    pattern: re.Pattern[str]
    handler: Handler
    plane: str
    auth: str | None  # None | "arm" | "vault": which audience the bearer token must carry


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(self, methods: str | tuple[str, ...], pattern: str, *, plane: str = "arm", auth: str | None = "arm"):
        """Register a handler. ``pattern`` is matched case-insensitively against the whole path (ARM paths are
        case-insensitive); named groups become ``request.params``."""
        methods = (methods,) if isinstance(methods, str) else methods

        def decorate(handler: Handler) -> Handler:
            compiled = re.compile(f"^{pattern}/?$", re.IGNORECASE)
            self.routes.append(Route(tuple(m.upper() for m in methods), compiled, handler, plane, auth))
            return handler

        return decorate

    def match(self, request: Request) -> tuple[Route | None, bool]:
        path_matched = False
        for candidate in self.routes:
            if candidate.plane != request.plane:
                continue
            found = candidate.pattern.match(request.path)
            if not found:
                continue
            path_matched = True
            if request.method in candidate.methods:
                request.params = {k: v for k, v in found.groupdict().items() if v is not None}
                return candidate, True
        return None, path_matched


ROUTER = Router()
route = ROUTER.route


class Faults:
    """Per-route fault injection, set by tests through POST /_lab/faults.

    A rule: {"method": "PUT" | "*", "path": regex (case-insensitive, searched), "plane": optional,
             "action": "status" | "latency" | "drop", "status": 429, "code": "...", "message": "...",
             "retry_after": seconds, "latency": seconds, "count": N (default 1; 0 = forever), "after": skip N first}
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[dict[str, Any]] = []

    def add(self, rule: dict[str, Any]) -> dict[str, Any]:
        rule = {"method": "*", "count": 1, "after": 0, "action": "status", **rule, "id": str(uuid.uuid4()), "hits": 0}
        re.compile(rule["path"])
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._rules]

    def take(self, request: Request) -> dict[str, Any] | None:
        with self._lock:
            for rule in self._rules:
                if rule["method"] not in ("*", request.method):
                    continue
                if rule.get("plane") and rule["plane"] != request.plane:
                    continue
                if not re.search(rule["path"], request.path, re.IGNORECASE):
                    continue
                if rule["after"] > 0:
                    rule["after"] -= 1
                    continue
                rule["hits"] += 1
                if rule["count"] and rule["hits"] >= rule["count"]:
                    self._rules.remove(rule)
                return dict(rule)
        return None


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []
        self._seq = 0

    def add(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._entries.append(entry)

    def since(self, seq: int) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self._entries if e["seq"] > seq]

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._seq


class InFlight:
    """Requests in flight per plane, and writes in flight per resource (an identity: see ``_charged_resource``),
    with their maxima since the last reset: what tests read to prove a client's parallelism bound."""

    PLANES = ("arm", "entra", "vault", "oidc")  # not "lab": the control API is not traffic

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now = dict.fromkeys(self.PLANES, 0)
        self._max = dict.fromkeys(self.PLANES, 0)
        self._writes: dict[str, int] = {}
        self._max_writes: dict[str, int] = {}

    def enter(self, plane: str, written: str | None) -> Callable[[], None]:
        """Count a request in; returns its ``leave``, which counts it out once however often it is called."""
        if plane not in self._now:
            return lambda: None
        with self._lock:
            self._now[plane] += 1
            self._max[plane] = max(self._max[plane], self._now[plane])
            if written:
                self._writes[written] = self._writes.get(written, 0) + 1
                self._max_writes[written] = max(self._max_writes.get(written, 0), self._writes[written])
        left = False

        def leave() -> None:  # called by the request's own thread only
            nonlocal left
            if left:
                return
            left = True
            with self._lock:
                self._now[plane] -= 1
                if written:
                    self._writes[written] -= 1
                    if not self._writes[written]:
                        del self._writes[written]

        return leave

    def reset(self) -> None:
        """Maxima restart from what is in flight now (requests under way still finish and leave)."""
        with self._lock:
            self._max = dict(self._now)
            self._max_writes = dict(self._writes)

    def view(self) -> dict[str, Any]:
        with self._lock:
            return {
                "planes": {p: {"in_flight": self._now[p], "max": self._max[p]} for p in self.PLANES},
                "max_writes_per_identity": dict(self._max_writes),
            }


# Default code and message of an injected fault, by status; a throttled request gets the 429 pair. UNVERIFIED for
# the MSI provider's own throttling: its exact code and message are not published.
_FAULT_DEFAULTS = {
    429: (
        "TooManyRequests",
        "The request is being throttled as the limit has been reached for operation type. Please try again later.",
    ),
    500: ("InternalServerError", "Encountered internal server error. Please try again."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable. Please try again later."),
}


def _fault_response(rule: dict[str, Any]) -> Response:
    status = int(rule.get("status", 500))
    headers = {}
    if rule.get("retry_after") is not None:
        headers["Retry-After"] = str(rule["retry_after"])
    code, message = _FAULT_DEFAULTS.get(status, ("InjectedFault", "Fault injected by the lab."))
    return ArmError(status, rule.get("code") or code, rule.get("message") or message, headers).response()


_WRITES = ("PUT", "PATCH", "DELETE", "POST")


def _charged_resource(request: Request) -> str | None:
    """The resource an ARM write charges, as its provider's limits count it (lower-cased id): for the managed
    identity routes, the identity, credential writes included. None for reads and unregistered routes."""
    if request.plane != "arm" or request.method not in _WRITES:
        return None
    classified = throttle.LIMITS.classify(request.method, request.path)
    return classified.resource if classified else None


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: State, tls: ssl.SSLContext):
        super().__init__(address, _Handler)
        self.state = state
        self.faults = Faults()
        self.log = RequestLog()
        self.in_flight = InFlight()
        self.tls = tls

    def get_request(self):  # TLS per connection, so one bad handshake never blocks the accept loop
        sock, addr = self.socket.accept()
        sock.settimeout(30)
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmulatorServer
    _leave: Callable[[], None]  # counts the current request out of InFlight

    def log_message(self, format: str, *args: Any) -> None:  # the request log replaces stderr chatter
        pass

    def setup(self) -> None:
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):
            self.request.close()
            raise
        super().setup()

    def _dispatch(self) -> None:
        started = time.monotonic()
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=unquote(split.path) or "/",
            query={k.lower(): v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()},
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            host=(self.headers.get("Host") or "").lower(),
        )
        request.plane, request.vault = self.server.state.plane_of(request.host, request.path)
        if "x-ms-client-request-id" in request.headers:
            request.request_id = request.headers["x-ms-client-request-id"]
        # In flight until the response goes out (_send), injected delays included.
        self._leave = self.server.in_flight.enter(request.plane, _charged_resource(request))
        try:
            self._respond(request, started)
        finally:
            self._leave()

    def _respond(self, request: Request, started: float) -> None:
        latency = self.server.state.settings["arm_latency_seconds"]
        if request.plane == "arm" and latency > 0:
            time.sleep(latency)  # stands in for the round trip to management.azure.com (benchmarks)
        response: Response | None = None
        extra: dict[str, Any] = {}
        if request.plane != "lab":
            rule = self.server.faults.take(request)
            if rule and rule["action"] == "latency":
                time.sleep(float(rule.get("latency", 1)))
            elif rule and rule["action"] == "drop":
                self._log(request, 0, started, fault="drop")
                self.close_connection = True
                self.request.shutdown(socket.SHUT_RDWR)
                return
            elif rule:
                response = _fault_response(rule)
        if response is None:
            response = self._throttled(request)
            if response is not None:
                extra["throttled"] = True
        if response is None:
            response = self._handle(request)
        self._log(request, response.status, started, **extra)
        self._send(request, response)

    def _throttled(self, request: Request) -> Response | None:
        """Azure's throttling (lab setting ``throttling``, see throttle.py): a routed ARM request that finds one of
        its buckets empty is answered 429 with Retry-After, before the handler runs."""
        if request.plane != "arm" or not self.server.state.settings["throttling"]:
            return None
        if ROUTER.match(request)[0] is None:  # only requests that reach a real route count
            return None
        decision = self.server.state.throttle.admit(throttle.needs(request.method, request.path))
        if decision.admitted:
            return None
        code, message = _FAULT_DEFAULTS[429]
        return ArmError(429, code, message, {"Retry-After": str(decision.retry_after)}).response()

    def _handle(self, request: Request) -> Response:
        if request.plane == "lab":
            return _lab_api(self.server, request)
        matched, path_known = ROUTER.match(request)
        try:
            if matched is None:
                if path_known:
                    raise ArmError(
                        405,
                        "MethodNotAllowed",
                        f"The requested resource does not support http method '{request.method}'.",
                    )
                raise ArmError(
                    404, "NotFound", f"No HTTP resource was found that matches the request URI '{request.path}'."
                )
            if matched.auth:
                request.principal = self.server.state.authenticate(request, matched.auth)
            return matched.handler(request, self.server.state)
        except ArmError as exc:
            return exc.response()
        except RawError as exc:
            return exc.response
        except TokenError as exc:
            return exc.response()
        except Exception:  # an emulator bug must surface as a 500 with its traceback, not a hung client
            return Response(500, {"error": {"code": "InternalServerError", "message": traceback.format_exc()}})

    def _log(self, request: Request, status: int, started: float, **extra: Any) -> None:
        if request.plane == "lab":
            return
        self.server.log.add(
            {
                "time": time.time(),
                "plane": request.plane,
                "method": request.method,
                "host": request.host,
                "path": request.path,
                "query": request.query,
                "status": status,
                "caller": (request.principal or {}).get("oid"),
                "duration": round(time.monotonic() - started, 4),
                **extra,
            }
        )

    def _send(self, request: Request, response: Response) -> None:
        if isinstance(response.body, (dict, list)):
            payload = json.dumps(response.body).encode()
        elif isinstance(response.body, str):
            payload = response.body.encode()
        else:
            payload = response.body or b""
        self.send_response(response.status)
        headers = {
            "x-ms-request-id": request.request_id,
            "x-ms-correlation-request-id": request.headers.get("x-ms-correlation-request-id", request.request_id),
            "x-ms-client-request-id": request.headers.get("x-ms-client-request-id", request.request_id),
            "Date": self.date_time_string(),
            **response.headers,
        }
        if request.plane == "arm" and request.method in ("PUT", "PATCH", "POST"):
            headers.setdefault("x-ms-ratelimit-remaining-subscription-writes", "1199")  # azure-behaviour §8
        if request.plane == "arm" and request.method == "DELETE":
            headers.setdefault("x-ms-ratelimit-remaining-subscription-deletes", "14999")
        for name, value in headers.items():
            self.send_header(name, value)
        if payload or response.status not in (204, 304):
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        # Counted out just before the response leaves: a client can only send the request that follows this one
        # after reading it, so requests a client sends one after another never overlap in the count.
        self._leave()
        self.end_headers()
        if request.method != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _dispatch


def _lab_api(server: EmulatorServer, request: Request) -> Response:
    """The lab's control API, read by tests: never part of Azure's surface."""
    path = request.path.rstrip("/")
    state = server.state
    if path == "/_lab/health":
        return Response(200, {"status": "ok"})
    if path == "/_lab/requests" and request.method == "GET":
        return Response(
            200, {"last_seq": server.log.last_seq, "requests": server.log.since(int(request.query.get("since", 0)))}
        )
    if path == "/_lab/faults":
        if request.method == "POST":
            return Response(201, server.faults.add(request.json() or {}))
        if request.method == "DELETE":
            server.faults.clear()
            return Response(204)
        return Response(200, {"faults": server.faults.list()})
    if path == "/_lab/state" and request.method == "GET":
        return Response(200, state.snapshot())
    if path == "/_lab/settings":
        if request.method in ("POST", "PATCH"):
            state.update_settings(request.json() or {})
        return Response(200, state.settings_view())
    if path == "/_lab/concurrency":
        if request.method == "DELETE":
            server.in_flight.reset()
            return Response(204)
        return Response(200, server.in_flight.view())
    if path == "/_lab/reset" and request.method == "POST":
        state.reset()
        server.faults.clear()
        server.in_flight.reset()
        return Response(200, {"status": "reset"})
    matched, _path_known = ROUTER.match(request)  # control endpoints route modules register with plane="lab"
    if matched is not None:
        try:
            return matched.handler(request, state)
        except ArmError as exc:
            return exc.response()
    return Response(404, {"error": {"code": "NotFound", "message": f"Unknown lab endpoint {path}"}})
