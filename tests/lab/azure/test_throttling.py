"""Tests of the emulator's traffic models: Azure's documented throttling (token buckets, throttle.py), the ARM
latency setting and the concurrency accounting behind GET /_lab/concurrency.

The bucket tests drive a fake clock; the tests against a running emulator go through real HTTPS and, where an
exact Retry-After matters, freeze the emulator's throttle clock instead of racing the wall clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.lab.azure import msi as _msi_routes  # noqa: F401 (importing it registers its limits, as its routes)
from tests.lab.azure import throttle
from tests.lab.azure.inprocess import RunningEmulator, running_emulator
from tests.lab.azure.throttle import Decision, Need, Throttle

MSI_API = "2024-11-30"
RG_API = "2025-04-01"
AUDIENCE = "api://AzureADTokenExchange"
SUB = "00000000-0000-4000-8000-00000000a11b"
MSI = "Microsoft.ManagedIdentity"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _identity_path(name: str, group: str = "rg-wid-lab", subscription: str = SUB) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"


def _credential_path(identity: str, name: str) -> str:
    return f"{_identity_path(identity)}/federatedIdentityCredentials/{name}"


# ---------------------------------------------------------------------------------------------------------------
# The buckets, with a fake clock


def test_a_bucket_refills_at_its_rate_up_to_its_capacity():
    clock = FakeClock()
    buckets = Throttle(clock)
    need = Need(("k",), rate=2.0, capacity=2.0)
    assert buckets.admit([need]).admitted and buckets.admit([need]).admitted
    assert buckets.admit([need]) == Decision(0.5)  # empty: one token comes back in 1/rate seconds
    clock.advance(0.5)
    assert buckets.admit([need]).admitted
    clock.advance(60)
    assert buckets.tokens(("k",)) == 2.0  # never more than the capacity
    buckets.reset()
    assert buckets.tokens(("k",)) is None


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one():
    assert Decision(0.0).admitted and not Decision(0.01).admitted
    assert [Decision(w).retry_after for w in (0.01, 0.5, 1.0, 1.01, 3.95, 4.0)] == [1, 1, 1, 2, 4, 4]


def test_a_rejected_request_takes_no_token():
    clock = FakeClock()
    buckets = Throttle(clock)
    full, slow = Need(("full",), 10.0, 10.0), Need(("slow",), 0.25, 1.0)
    assert buckets.admit([full, slow]).admitted
    for _attempt in range(5):  # retried before Retry-After: rejected again, and the other bucket keeps its tokens
        assert buckets.admit([full, slow]) == Decision(4.0)
    assert buckets.tokens(("full",)) == 9.0
    clock.advance(3.0)
    assert buckets.admit([slow]) == Decision(1.0)  # the wait shrinks with time, not with retries
    clock.advance(1.0)
    assert buckets.admit([full, slow]).admitted
    assert buckets.tokens(("full",)) == 9.0  # refilled to its capacity of 10, less this request's token


def test_requests_are_classified_by_route_and_charge_the_documented_buckets():
    identity = _identity_path("id-a").lower()
    group = f"/subscriptions/{SUB}/resourcegroups/rg-wid-lab"
    expected = {
        ("PUT", _identity_path("id-a")): ("write", identity),
        ("PATCH", _identity_path("id-a")): ("write", identity),
        ("GET", _identity_path("id-a") + "/"): ("read", identity),
        ("DELETE", _identity_path("id-a")): ("delete", identity),
        ("GET", _identity_path("").rstrip("/")): ("list", group),
        ("GET", f"/subscriptions/{SUB}/providers/Microsoft.ManagedIdentity/userAssignedIdentities"): (
            "list",
            f"/subscriptions/{SUB}",
        ),
        ("PUT", _credential_path("id-a", "fic")): ("write", identity),
        ("GET", _credential_path("id-a", "fic")): ("read", identity),
        ("DELETE", _credential_path("id-a", "fic")): ("delete", identity),
        ("GET", _credential_path("id-a", "")): ("list", identity),
    }
    for (method, path), (operation, resource) in expected.items():
        found = throttle.LIMITS.classify(method, path)
        assert (found.provider, found.operation, found.resource, found.subscription) == (
            MSI,
            operation,
            resource,
            SUB,
        ), (method, path)
    # Not a route: no provider limit (ARM's bucket still applies to what reaches a route).
    assert throttle.LIMITS.classify("PATCH", _credential_path("id-a", "fic")) is None
    assert throttle.LIMITS.classify("GET", f"{group}/providers/Microsoft.ContainerService/managedClusters/c") is None
    rates = {need.key: (need.rate, need.capacity) for need in throttle.needs("PUT", _credential_path("id-a", "f"))}
    assert rates == {
        ("arm", "write", "subscription", SUB): (10.0, 200.0),
        (MSI, "write", "tenant", ""): (10.0, 10.0),
        (MSI, "write", "subscription", SUB): (2.0, 2.0),
        (MSI, "write", "resource", identity): (0.25, 1.0),
    }
    rates = {need.key: (need.rate, need.capacity) for need in throttle.needs("GET", _identity_path("id-a"))}
    assert rates == {
        ("arm", "read", "subscription", SUB): (25.0, 250.0),
        (MSI, "read", "tenant", ""): (30.0, 30.0),
        (MSI, "read", "subscription", SUB): (10.0, 10.0),
        (MSI, "read", "resource", identity): (0.5, 1.0),
    }
    assert [n.key for n in throttle.needs("GET", "/subscriptions")] == [("arm", "read", "tenant", "")]


def test_per_resource_and_per_subscription_limits():
    clock = FakeClock()
    buckets = Throttle(clock)

    def put(identity: str, credential: str = "fic") -> Decision:
        return buckets.admit(throttle.needs("PUT", _credential_path(identity, credential)))

    assert put("id-a").admitted
    assert put("id-a", "other") == Decision(4.0)  # 0.25/s per identity
    assert put("id-b").admitted  # another identity: its own bucket; the subscription's 2/s burst has room
    assert put("id-c") == Decision(0.5)  # 2/s per subscription: the third write in the same instant waits
    clock.advance(0.5)
    assert put("id-c").admitted
    clock.advance(3.5)
    assert put("id-a", "other").admitted


def test_arm_buckets_are_per_subscription_and_operation_type():
    clock = FakeClock()
    buckets = Throttle(clock)
    reads = throttle.needs("GET", f"/subscriptions/{SUB}/resourcegroups")
    for _request in range(250):
        assert buckets.admit(reads).admitted
    assert buckets.admit(reads) == Decision(1 / 25)
    assert buckets.admit(throttle.needs("GET", "/subscriptions/other/resourcegroups")).admitted
    assert buckets.admit(throttle.needs("PUT", f"/subscriptions/{SUB}/resourcegroups/rg")).admitted


# ---------------------------------------------------------------------------------------------------------------
# Against a running emulator


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[RunningEmulator]:
    with running_emulator(tmp_path_factory.mktemp("emulator")) as running:
        yield running


@pytest.fixture
def emulator(lab: RunningEmulator) -> Iterator[RunningEmulator]:
    lab.state.reset()
    lab.server.faults.clear()
    lab.server.in_flight.reset()
    lab.state.update_settings({"fic_write_seconds": 0.0})
    yield lab
    lab.state.throttle.clock = time.monotonic
    lab.state.reset()


def _session(emulator: RunningEmulator) -> requests.Session:
    """HTTPS with the deployer's ARM token and the lab CA (trust_env off, so REQUESTS_CA_BUNDLE cannot interfere)."""
    return emulator.session(emulator.token())


@pytest.fixture
def http(emulator) -> requests.Session:
    return _session(emulator)


def _lab(emulator: RunningEmulator, path: str, method: str = "GET", body: Any = None) -> Any:
    response = requests.request(method, f"{emulator.base_url}/_lab/{path}", json=body, verify=str(emulator.ca_file))
    response.raise_for_status()
    return response.json() if response.content else None


def _put_identity(emulator, http: requests.Session, name: str) -> requests.Response:
    return http.put(f"{emulator.base_url}{_identity_path(name)}?api-version={MSI_API}", json={"location": "eastus"})


def _put_credential(emulator, http: requests.Session, identity: str, name: str) -> requests.Response:
    body = {
        "properties": {"issuer": "https://issuer.example/", "subject": f"system:sa:{name}", "audiences": [AUDIENCE]}
    }
    return http.put(f"{emulator.base_url}{_credential_path(identity, name)}?api-version={MSI_API}", json=body)


def _frozen(emulator: RunningEmulator) -> FakeClock:
    clock = FakeClock()
    emulator.state.throttle.clock = clock
    emulator.state.throttle.reset()
    return clock


def test_a_second_credential_write_on_one_identity_is_throttled(emulator, http):
    assert _put_identity(emulator, http, "id-wl").status_code == 201  # throttling still off
    assert _lab(emulator, "settings", "POST", {"throttling": 1})["throttling"] == 1.0
    since = _lab(emulator, "requests")["last_seq"]
    assert _put_credential(emulator, http, "id-wl", "fic-one").status_code == 201
    throttled = _put_credential(emulator, http, "id-wl", "fic-two")
    assert throttled.status_code == 429
    assert 3 <= int(throttled.headers["Retry-After"]) <= 4  # one write per 4 s per identity
    assert throttled.json() == {
        "error": {
            "code": "TooManyRequests",
            "message": "The request is being throttled as the limit has been reached for operation type. "
            "Please try again later.",
        }
    }
    again = _put_credential(emulator, http, "id-wl", "fic-two")  # too early: rejected again, no token taken
    assert again.status_code == 429 and int(again.headers["Retry-After"]) <= int(throttled.headers["Retry-After"])
    logged = _lab(emulator, f"requests?since={since}")["requests"]
    assert [(r["status"], r.get("throttled")) for r in logged] == [(201, None), (429, True), (429, True)]
    assert emulator.state.get(_credential_path("id-wl", "fic-two")) is None


def test_credential_writes_on_different_identities_pass(emulator, http):
    for name in ("id-a", "id-b"):
        assert _put_identity(emulator, http, name).status_code == 201
    _lab(emulator, "settings", "POST", {"throttling": 1})
    assert [_put_credential(emulator, http, name, "fic").status_code for name in ("id-a", "id-b")] == [201, 201]


def test_a_third_identity_create_in_the_same_second_is_throttled(emulator, http):
    clock = _frozen(emulator)
    _lab(emulator, "settings", "POST", {"throttling": 1})
    statuses = [_put_identity(emulator, http, f"id-{i}") for i in range(3)]
    assert [r.status_code for r in statuses] == [201, 201, 429]  # 2 a second per subscription
    assert statuses[2].headers["Retry-After"] == "1"  # a token is back in 0.5 s
    clock.advance(0.5)
    assert _put_identity(emulator, http, "id-2").status_code == 201


def test_throttling_off_or_switched_off_and_on_again(emulator, http):
    _frozen(emulator)
    assert _put_identity(emulator, http, "id-wl").status_code == 201
    statuses = [_put_credential(emulator, http, "id-wl", f"fic-{i}").status_code for i in range(3)]
    statuses += [_put_identity(emulator, http, f"id-{i}").status_code for i in range(3)]
    assert statuses == [201] * 6  # off by default: no limit
    _lab(emulator, "settings", "POST", {"throttling": 1})
    assert _put_credential(emulator, http, "id-wl", "fic-3").status_code == 201
    assert _put_credential(emulator, http, "id-wl", "fic-4").status_code == 429
    _lab(emulator, "settings", "POST", {"throttling": 0})
    _lab(emulator, "settings", "POST", {"throttling": 1})  # the clock stood still: only a reset refills
    assert _put_credential(emulator, http, "id-wl", "fic-4").status_code == 201
    assert _put_credential(emulator, http, "id-wl", "fic-5").status_code == 429
    key = (MSI, "write", "resource", _identity_path("id-wl").lower())
    assert emulator.state.throttle.tokens(key) is not None
    _lab(emulator, "reset", "POST", {})
    assert emulator.state.throttle.tokens(key) is None and _lab(emulator, "settings")["throttling"] == 0.0


def test_arm_latency_delays_arm_requests_only(emulator, http):
    _lab(emulator, "settings", "POST", {"arm_latency_seconds": 0.2})
    since = _lab(emulator, "requests")["last_seq"]
    group = f"{emulator.base_url}/subscriptions/{SUB}/resourceGroups/rg-wid-lab?api-version={RG_API}"
    assert http.get(group).status_code == 200
    _lab(emulator, "settings", "POST", {"arm_latency_seconds": 60})
    entra = f"{emulator.base_url}/{emulator.config.tenant_id}/v2.0/.well-known/openid-configuration"
    assert http.get(entra, timeout=30).status_code == 200  # would time out had Entra waited too
    logged = _lab(emulator, f"requests?since={since}")["requests"]
    assert [r["plane"] for r in logged] == ["arm", "entra"]
    assert logged[0]["duration"] >= 0.2 and logged[1]["duration"] < 60


def _in_parallel(emulator, calls: list, latency: float) -> list[requests.Response]:
    """Run the calls at once on their own connections, each ARM request held ``latency`` s by the emulator."""
    sessions = [_session(emulator) for _call in calls]
    for session in sessions:  # connect (TLS) before the start line, so only the requests themselves race
        session.get(f"{emulator.base_url}/_lab/health").raise_for_status()
    _lab(emulator, "settings", "POST", {"arm_latency_seconds": latency})
    start = threading.Barrier(len(calls))
    results: list[requests.Response] = []

    def run(session: requests.Session, call) -> None:
        start.wait()
        results.append(call(session))

    threads = [threading.Thread(target=run, args=(s, c)) for s, c in zip(sessions, calls, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _lab(emulator, "settings", "POST", {"arm_latency_seconds": 0})
    return results


def test_concurrency_reports_parallel_requests_per_plane(emulator):
    _lab(emulator, "concurrency", "DELETE")
    group = f"{emulator.base_url}/subscriptions/{SUB}/resourceGroups/rg-wid-lab?api-version={RG_API}"
    results = _in_parallel(emulator, [lambda s: s.get(group)] * 4, latency=0.5)
    assert [r.status_code for r in results] == [200] * 4
    seen = _lab(emulator, "concurrency")
    assert seen["planes"]["arm"]["max"] >= 4 and seen["planes"]["arm"]["in_flight"] == 0
    assert set(seen["planes"]) == {"arm", "entra", "vault", "oidc"}
    assert seen["max_writes_per_identity"] == {}  # reads only
    _lab(emulator, "concurrency", "DELETE")
    assert _lab(emulator, "concurrency")["planes"]["arm"] == {"in_flight": 0, "max": 0}


def test_concurrency_counts_writes_per_identity(emulator, http):
    _put_identity(emulator, http, "id-wl")
    _put_identity(emulator, http, "id-two")
    _lab(emulator, "concurrency", "DELETE")
    for name in ("fic-1", "fic-2", "fic-3"):  # serial writes, credentials and the identity itself
        assert _put_credential(emulator, http, "id-wl", name).status_code == 201
    assert http.delete(f"{emulator.base_url}{_credential_path('id-wl', 'fic-3')}?api-version={MSI_API}").ok
    assert http.get(f"{emulator.base_url}{_identity_path('id-wl')}?api-version={MSI_API}").ok  # a read: not counted
    wl, two = _identity_path("id-wl").lower(), _identity_path("id-two").lower()
    assert _lab(emulator, "concurrency")["max_writes_per_identity"] == {wl: 1}
    _in_parallel(
        emulator,
        [
            lambda s: _put_credential(emulator, s, "id-wl", "fic-4"),
            lambda s: _put_credential(emulator, s, "id-wl", "fic-5"),
            lambda s: _put_credential(emulator, s, "id-two", "fic-1"),
        ],
        latency=0.5,
    )
    assert _lab(emulator, "concurrency")["max_writes_per_identity"] == {wl: 2, two: 1}
    _lab(emulator, "reset", "POST", {})
    assert _lab(emulator, "concurrency")["max_writes_per_identity"] == {}
