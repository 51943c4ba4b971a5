"""Azure's documented request throttling, as token buckets. Off unless the lab setting ``throttling`` is 1.

Two levels, as Azure has them
(https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/request-limits-and-throttling):
Azure Resource Manager's own buckets, which every ARM request goes through, then the resource provider's limits.
Route modules register their provider's limits here beside their routes (msi.py does), so this file knows no
resource type. Nothing here imports the rest of the lab, and the clock is injected: the buckets are unit-testable.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# ARM's per-subscription buckets (bucket size, refill per second), the same sizes for tenant-level requests. ARM
# keys them per subscription AND per service principal, with a subscription-wide limit 15 times larger; the lab
# keys them per subscription only, the stricter reading.
ARM_BUCKETS: dict[str, tuple[float, float]] = {"read": (250, 25), "write": (200, 10), "delete": (200, 10)}
_SUBSCRIPTION = re.compile(r"^/subscriptions/([^/]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Limit:
    """One published limit: ``rate`` requests a second per ``scope``, in a bucket of ``capacity`` tokens."""

    scope: str  # "tenant" | "subscription" | "resource"
    rate: float
    capacity: float


def per_second(*, tenant: float, subscription: float, resource: float) -> tuple[Limit, ...]:
    """A provider's row of requests-per-second limits. UNVERIFIED: the burst. Azure publishes only the rates, so
    each bucket holds max(1, rate) tokens (a one-second burst, and at least one request however slow the rate)."""
    rates = (("tenant", tenant), ("subscription", subscription), ("resource", resource))
    return tuple(Limit(scope, float(rate), max(1.0, float(rate))) for scope, rate in rates)


@dataclass(frozen=True)
class Need:
    """One token a request must take from the bucket ``key`` (created full on first use)."""

    key: tuple[str, ...]
    rate: float
    capacity: float


@dataclass(frozen=True)
class Classified:
    """What a provider counts a request as: its operation, and the resource its per-resource limit charges."""

    provider: str
    operation: str  # "write" | "read" | "list" | "delete", the rows of the provider's table
    resource: str  # lower-cased ARM id of the resource charged
    subscription: str
    limits: tuple[Limit, ...]

    def needs(self) -> list[Need]:
        keys = {"tenant": "", "subscription": self.subscription, "resource": self.resource}
        # One tenant in the lab, so the tenant-wide bucket needs no tenant id in its key.
        return [
            Need((self.provider, self.operation, limit.scope, keys[limit.scope]), limit.rate, limit.capacity)
            for limit in self.limits
        ]


@dataclass(frozen=True)
class _Rule:
    methods: tuple[str, ...]
    pattern: re.Pattern[str]
    provider: str
    operation: str
    resource: re.Pattern[str]
    limits: tuple[Limit, ...]


class ProviderLimits:
    """Resource providers' limits, registered with the same pattern and methods as the route they throttle (so
    only requests that reach a real route count)."""

    def __init__(self) -> None:
        self._rules: list[_Rule] = []

    def register(
        self,
        methods: str | tuple[str, ...],
        pattern: str,
        *,
        provider: str,
        operation: str,
        resource: str,
        limits: tuple[Limit, ...],
    ) -> None:
        """``pattern`` as given to ``@route``; ``resource`` matches the start of the path, and the part it matches
        (lower-cased) is the resource the per-resource limit charges."""
        methods = (methods,) if isinstance(methods, str) else methods
        self._rules.append(
            _Rule(
                tuple(m.upper() for m in methods),
                re.compile(f"^{pattern}/?$", re.IGNORECASE),
                provider,
                operation,
                re.compile(f"^{resource}", re.IGNORECASE),
                limits,
            )
        )

    def classify(self, method: str, path: str) -> Classified | None:
        for rule in self._rules:
            if method.upper() in rule.methods and rule.pattern.match(path):
                resource = rule.resource.match(path)
                subscription = _SUBSCRIPTION.match(path)
                if resource is None or subscription is None:
                    continue
                return Classified(
                    rule.provider,
                    rule.operation,
                    resource.group(0).lower(),
                    subscription.group(1).lower(),
                    rule.limits,
                )
        return None


LIMITS = ProviderLimits()
limit = LIMITS.register


def arm_operation(method: str) -> str:
    # ARM counts POST as a write: it answers with x-ms-ratelimit-remaining-subscription-writes.
    method = method.upper()
    return "read" if method in ("GET", "HEAD") else "delete" if method == "DELETE" else "write"


def needs(method: str, path: str, limits: ProviderLimits = LIMITS) -> list[Need]:
    """Every token an ARM request must take: ARM's bucket for its subscription (or tenant) and operation type,
    then its provider's, when one is registered for the route."""
    operation = arm_operation(method)
    size, refill = ARM_BUCKETS[operation]
    subscription = _SUBSCRIPTION.match(path)
    scope = ("subscription", subscription.group(1).lower()) if subscription else ("tenant", "")
    found = [Need(("arm", operation, *scope), refill, size)]
    classified = limits.classify(method, path)
    if classified is not None:
        found += classified.needs()
    return found


@dataclass(frozen=True)
class Decision:
    wait: float  # seconds until every bucket the request needs holds a token; 0 = admitted

    @property
    def admitted(self) -> bool:
        return self.wait <= 0

    @property
    def retry_after(self) -> int:
        # Retry-After carries whole seconds (https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3): round up, so
        # a client that waits that long finds a token; at least 1, since the request did find a bucket empty.
        return max(1, math.ceil(self.wait))


class _Bucket:
    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens, self.updated = capacity, now

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait(self) -> float:
        return max(0.0, (1.0 - self.tokens) / self.rate)


class Throttle:
    """The buckets, created full on first use; thread-safe (one lock), the clock injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, ...], _Bucket] = {}

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()

    def admit(self, wanted: Iterable[Need]) -> Decision:
        """Take one token from every bucket, or none. A rejected request consumes nothing: a retry sent before its
        Retry-After has passed is rejected again (the ARM page above says so), as the bucket gives by itself."""
        with self._lock:
            now = self.clock()
            buckets = []
            for need in wanted:
                bucket = self._buckets.get(need.key)
                if bucket is None:
                    bucket = self._buckets[need.key] = _Bucket(need.rate, need.capacity, now)
                bucket.refill(now)
                buckets.append(bucket)
            wait = max((bucket.wait() for bucket in buckets), default=0.0)
            if wait > 0:
                return Decision(wait)
            for bucket in buckets:
                bucket.tokens -= 1
            return Decision(0.0)

    def tokens(self, key: tuple[str, ...]) -> float | None:
        """Tokens left in a bucket as of now (None: never used since the last reset), for tests."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return None
            bucket.refill(self.clock())
            return bucket.tokens
