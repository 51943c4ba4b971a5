"""pacing.py: nothing is slowed until the managed identity provider throttles; then one schedule per subscription
and per throttled identity, at Microsoft's documented rates, honouring Retry-After. Driven with a fake clock."""

from __future__ import annotations

import pytest

from ansible_collections.aks.workload_identity.plugins.module_utils.pacing import Pacer, classify

SUB = "/subscriptions/00000000-0000-4000-8000-00000000a11b"
BASE = "https://management.azure.com"
IDENTITY = f"{BASE}{SUB}/resourceGroups/rg-apps/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-a"
OTHER = f"{BASE}{SUB}/resourceGroups/rg-apps/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-b"
CREDENTIAL = f"{IDENTITY}/federatedIdentityCredentials/fic1?api-version=2024-11-30"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pacer(clock: Clock) -> Pacer:
    return Pacer(clock=clock, sleep=clock.sleep)


@pytest.mark.parametrize(
    ("method", "url", "kind", "resource"),
    [
        ("PUT", IDENTITY, "write", f"{SUB}/resourcegroups/rg-apps/identities/id-a".lower()),
        ("PATCH", IDENTITY, "write", f"{SUB}/resourcegroups/rg-apps/identities/id-a".lower()),
        ("PUT", CREDENTIAL, "write", f"{SUB}/resourcegroups/rg-apps/identities/id-a".lower()),
        ("DELETE", CREDENTIAL, "delete", f"{SUB}/resourcegroups/rg-apps/identities/id-a".lower()),
        ("GET", IDENTITY, "get", f"{SUB}/resourcegroups/rg-apps/identities/id-a".lower()),
        (
            "GET",
            f"{IDENTITY}/federatedIdentityCredentials",
            "list",
            f"{SUB}/resourcegroups/rg-apps/identities/id-a".lower(),
        ),
        (
            "GET",
            f"{BASE}{SUB}/resourceGroups/rg-apps/providers/Microsoft.ManagedIdentity/userAssignedIdentities?x=1",
            "list",
            f"{SUB}/resourcegroups/rg-apps".lower(),
        ),
        ("GET", f"{BASE}{SUB}/providers/Microsoft.ManagedIdentity/userAssignedIdentities", "list", SUB.lower()),
    ],
)
def test_managed_identity_requests_are_classified(method, url, kind, resource):
    operation = classify(method, url)
    assert (operation.kind, operation.subscription, operation.resource) == (kind, SUB.lower(), resource)


def test_other_requests_are_never_paced(pacer, clock):
    assert classify("PUT", f"{BASE}{SUB}/resourceGroups/rg/providers/Microsoft.Authorization/roleAssignments/x") is None
    pacer.after("PUT", f"{BASE}{SUB}/providers/Microsoft.Authorization/roleAssignments/x", 429, 5)
    for _request in range(10):
        pacer.before("PUT", f"{BASE}{SUB}/providers/Microsoft.Authorization/roleAssignments/x")
    assert clock.slept == [] and pacer.throttled == 0


def test_nothing_waits_before_the_first_429(pacer, clock):
    for _request in range(20):
        pacer.before("PUT", IDENTITY)
        pacer.after("PUT", IDENTITY, 201)
    assert clock.slept == []


def test_after_a_429_writes_take_turns_at_two_per_second_per_subscription(pacer, clock):
    pacer.after("PUT", OTHER, 429)  # throttled on id-b: the subscription's writes are paced from now on
    for _request in range(4):
        pacer.before(
            "PUT",
            f"{BASE}{SUB}/resourceGroups/rg-apps/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-new",
        )
    assert clock.slept == [0.5, 0.5, 0.5]  # the first goes at once, then one every 1/2 s
    assert pacer.throttled == 1 and pacer.waited == pytest.approx(1.5)


def test_a_throttled_identity_gets_one_write_per_four_seconds_and_its_retry_after(pacer, clock):
    pacer.after("PUT", CREDENTIAL, 429, retry_after=3)
    pacer.before("PUT", CREDENTIAL)  # waits out Retry-After on the identity
    pacer.before("PUT", CREDENTIAL)  # then the identity's 0.25 writes per second
    assert clock.slept == [3.0, 4.0]


def test_kinds_of_operation_are_paced_separately(pacer, clock):
    pacer.after("PUT", IDENTITY, 429)
    pacer.before("GET", f"{IDENTITY}/federatedIdentityCredentials")  # a list is not a write: not paced
    pacer.before("GET", f"{OTHER}/federatedIdentityCredentials")
    assert clock.slept == []


def test_the_azure_core_hooks_read_the_response(pacer, clock):
    class Http:
        def __init__(self, method, url, status=200, headers=None):
            self.method, self.url, self.status_code, self.headers = method, url, status, headers or {}

    class Pipeline:
        def __init__(self, request, response=None):
            self.http_request, self.http_response = request, response

    request = Http("PUT", CREDENTIAL)
    pacer.response_hook(Pipeline(request, Http("PUT", CREDENTIAL, 429, {"Retry-After": "2"})))
    pacer.request_hook(Pipeline(request))
    assert pacer.throttled == 1 and clock.slept == [2.0]
    pacer.response_hook(
        Pipeline(request, Http("PUT", CREDENTIAL, 429, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}))
    )
    assert pacer.throttled == 2  # an HTTP date is azure-core's to wait out
