# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pacing of requests to the managed identity provider once it has throttled a run.

The provider limits requests per subscription and per resource (the identity; a federated credential counts for
its identity), by kind of operation, and answers 429 with Retry-After past them. azure-core already waits out a
Retry-After and sends the request again, but a fleet run has many workers: each would wait, come back at once and
be throttled again. So the first 429 switches pacing on for that kind of operation: from then on every worker
takes its turn from one schedule per subscription (and per identity that was throttled) at the documented rate,
and the provider sees at most what it allows. A run that is never throttled is never slowed.

The pacer hooks into every management client of a run through azure-core's ``CustomHookPolicy``
(``raw_request_hook``/``raw_response_hook``), which sits after the retry policy, so a retried request takes its
turn again.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import re
import threading
import time
import typing as t
from urllib.parse import urlsplit

# Requests per second per Azure subscription and per resource for user-assigned managed identities
# (learn.microsoft.com/entra/workload-id/workload-identity-federation-considerations, throttling limits):
# create or update 2 / 0.25, get 10 / 0.5, list 5 / 0.25, delete 2 / 0.25.
MANAGED_IDENTITY_LIMITS: dict[str, tuple[float, float]] = {
    "write": (2.0, 0.25),
    "get": (10.0, 0.5),
    "list": (5.0, 0.25),
    "delete": (2.0, 0.25),
}
_IDENTITY_PATH = re.compile(
    r"^(?P<subscription>/subscriptions/[^/]+)(?P<group>/resourcegroups/[^/]+)?"
    r"/providers/microsoft\.managedidentity/userassignedidentities(?P<identity>/[^/]+)?"
    r"(?P<credentials>/federatedidentitycredentials(?P<credential>/[^/]+)?)?/?$"
)


class Operation(t.NamedTuple):
    kind: str  # write, get, list or delete
    subscription: str  # /subscriptions/<id>, lower case
    resource: str  # the identity (or the resource group / subscription a list is of), lower case


def classify(method: str, url: str) -> Operation | None:
    """The managed identity operation a request is, or None for any other request."""
    match = _IDENTITY_PATH.match(urlsplit(url).path.lower())
    if match is None:
        return None
    method = method.upper()
    is_item = bool(match.group("credential")) or (bool(match.group("identity")) and not match.group("credentials"))
    if method in ("PUT", "PATCH"):
        kind = "write"
    elif method == "DELETE":
        kind = "delete"
    elif method == "GET":
        kind = "get" if is_item else "list"
    else:
        return None
    subscription = match.group("subscription")
    if match.group("identity"):
        resource = f"{subscription}{match.group('group') or ''}/identities{match.group('identity')}"
    else:
        resource = f"{subscription}{match.group('group') or ''}"
    return Operation(kind, subscription, resource)


class Pacer:
    """One schedule per throttled (subscription or resource, kind of operation): each request waits for its turn,
    ``1 / rate`` seconds after the previous one. Thread-safe; ``clock`` and ``sleep`` are injectable for tests."""

    def __init__(
        self,
        limits: t.Mapping[str, tuple[float, float]] | None = None,
        *,
        clock: t.Callable[[], float] = time.monotonic,
        sleep: t.Callable[[float], None] = time.sleep,
    ) -> None:
        self.limits = dict(MANAGED_IDENTITY_LIMITS if limits is None else limits)
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._next: dict[tuple[str, str], float] = {}  # paced schedule -> earliest time of its next request
        self.throttled = 0  # 429 answers seen
        self.waited = 0.0  # seconds spent waiting for a turn

    def _schedules(self, operation: Operation) -> list[tuple[tuple[str, str], float]]:
        per_subscription, per_resource = self.limits[operation.kind]
        return [
            ((operation.subscription, operation.kind), per_subscription),
            ((operation.resource, operation.kind), per_resource),
        ]

    def before(self, method: str, url: str) -> None:
        """Wait for the request's turn on every schedule that is paced (none until the first 429)."""
        operation = classify(method, url)
        if operation is None:
            return
        with self._lock:
            now = self.clock()
            paced = [(key, rate) for key, rate in self._schedules(operation) if key in self._next]
            if not paced:
                return
            turn = max([now, *(self._next[key] for key, _rate in paced)])
            for key, rate in paced:
                self._next[key] = turn + 1.0 / rate
        if turn > now:
            self.waited += turn - now
            self.sleep(turn - now)

    def after(self, method: str, url: str, status: int, retry_after: float | None = None) -> None:
        """A 429 paces this kind of operation from now on, for the subscription and for the resource; the resource
        waits at least the Retry-After the service asked for."""
        if status != 429:
            return
        operation = classify(method, url)
        if operation is None:
            return
        with self._lock:
            self.throttled += 1
            now = self.clock()
            for key, _rate in self._schedules(operation):
                self._next.setdefault(key, now)
            if retry_after:
                resource = (operation.resource, operation.kind)
                self._next[resource] = max(self._next[resource], now + retry_after)

    # azure-core CustomHookPolicy callbacks
    def request_hook(self, request: t.Any) -> None:
        http = request.http_request
        self.before(http.method, http.url)

    def response_hook(self, response: t.Any) -> None:
        http = response.http_response
        if http.status_code != 429:
            return
        retry_after = None
        header = http.headers.get("Retry-After") if http.headers else None
        try:
            retry_after = float(header) if header else None
        except ValueError:
            retry_after = None  # an HTTP date: azure-core's own wait honours it
        self.after(response.http_request.method, response.http_request.url, 429, retry_after)
