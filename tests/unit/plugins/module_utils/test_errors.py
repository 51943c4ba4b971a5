"""errors.py: the collection exception, the wrapper decorator factory and the retry helper."""

from __future__ import annotations

import email.utils
import time
import types

import pytest

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import (
    REDACTED,
    WorkloadIdentityError,
    describe_failure,
    retry,
    retry_after_from_exception,
)


# --- WorkloadIdentityError -----------------------------------------------------------------------------------
def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:  # any exception: we want its traceback attached
        return caught


def test_error_carries_fields_and_original_traceback():
    original = _raised(ValueError("boom"))
    error = WorkloadIdentityError("Failed to x: boom", code="Conflict", status=409, target="'y'", exception=original)
    assert str(error) == error.message == "Failed to x: boom"
    assert (error.code, error.status, error.target, error.original) == ("Conflict", 409, "'y'", original)
    kwargs = error.to_fail_kwargs()
    assert kwargs["msg"] == "Failed to x: boom"
    assert (kwargs["error_code"], kwargs["status"]) == ("Conflict", 409)
    assert "ValueError: boom" in kwargs["exception"]
    assert "_raised" in kwargs["exception"]  # the original frame, not ours


def test_fail_kwargs_always_have_code_and_status_keys():
    kwargs = WorkloadIdentityError("plain").to_fail_kwargs()
    assert kwargs == {"msg": "plain", "error_code": None, "status": None}


def test_fail_kwargs_use_own_traceback_once_raised():
    error = _raised(WorkloadIdentityError("raised here"))
    assert "WorkloadIdentityError: raised here" in error.to_fail_kwargs()["exception"]


@pytest.mark.parametrize("secret", ["s3cr3t-value", "x"])
def test_fail_kwargs_redact_secrets_everywhere(secret):
    original = _raised(RuntimeError(f"token request with {secret} failed"))
    error = WorkloadIdentityError(f"Failed: {secret}", exception=original)
    kwargs = error.to_fail_kwargs(redact=[secret, None, ""])
    assert secret not in kwargs["msg"] and secret not in kwargs["exception"]
    assert REDACTED in kwargs["msg"] and REDACTED in kwargs["exception"]


@pytest.mark.parametrize(
    ("action", "target", "code", "message", "expected"),
    [
        ("read identity", "'id1'", "ResourceNotFound", "gone", "Failed to read identity 'id1': ResourceNotFound: gone"),
        ("read identity", None, None, "gone", "Failed to read identity: gone"),
        ("read identity", "'id1'", "X", "", "Failed to read identity 'id1': X: no details given"),
        ("read", "'a'", "AADSTS700211", "AADSTS700211: No match", "Failed to read 'a': AADSTS700211: No match"),
    ],
)
def test_describe_failure(action, target, code, message, expected):
    assert describe_failure(action, target, code, message) == expected


# --- retry_after_from_exception --------------------------------------------------------------------------------
def _with_headers(headers, on_response=True):
    exc = Exception("throttled")
    if on_response:
        exc.response = types.SimpleNamespace(headers=headers)
    else:
        exc.headers = headers
    return exc


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"Retry-After-Ms": "1500"}, 1.5),
        ({"x-ms-retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_values(headers, expected):
    assert retry_after_from_exception(_with_headers(headers)) == expected
    assert retry_after_from_exception(_with_headers(headers, on_response=False)) == expected


def test_retry_after_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_from_exception(_with_headers({"Retry-After": when})) <= 31


def test_retry_after_without_headers():
    assert retry_after_from_exception(ValueError()) is None


# --- retry ------------------------------------------------------------------------------------------------------
class FakeTime:
    """A clock that only moves when the code under test sleeps (and optionally while it calls)."""

    def __init__(self, call_cost: float = 0.0):
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.call_cost = call_cost

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky:
    def __init__(self, failures, result="ok", time_=None):
        self.failures = list(failures)
        self.calls = 0
        self.result = result
        self.time = time_

    def __call__(self):
        self.calls += 1
        if self.time is not None:
            self.time.now += self.time.call_cost
        if self.failures:
            raise self.failures.pop(0)
        return self.result


class Retryable(Exception):
    pass


def _retry(call, fake, **kwargs):
    options = {
        "should_retry": lambda exc: isinstance(exc, Retryable),
        "timeout": 60,
        "sleep": fake.sleep,
        "clock": fake.clock,
        "retry_after": None,
        "random": lambda: 1.0,
    }
    options.update(kwargs)
    return retry(call, **options)


def test_retry_returns_first_success_without_sleeping():
    fake = FakeTime()
    assert _retry(Flaky([]), fake) == "ok"
    assert fake.sleeps == []


def test_retry_backs_off_exponentially_up_to_max_delay():
    fake = FakeTime()
    call = Flaky([Retryable()] * 6)
    assert _retry(call, fake, timeout=1000, initial_delay=1.0, max_delay=8.0) == "ok"
    assert call.calls == 7
    assert fake.sleeps == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]  # random() == 1.0 -> the cap itself


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.999])
def test_retry_full_jitter_stays_within_zero_and_cap(draw):
    fake = FakeTime()
    _retry(Flaky([Retryable()] * 5), fake, timeout=1000, initial_delay=2.0, max_delay=10.0, random=lambda: draw)
    caps = [2.0, 4.0, 8.0, 10.0, 10.0]
    assert fake.sleeps == pytest.approx([draw * cap for cap in caps])
    assert all(0 <= slept <= cap for slept, cap in zip(fake.sleeps, caps, strict=True))


def test_retry_uses_real_randomness_within_bounds():
    fake = FakeTime()
    kwargs = {"timeout": 1000, "initial_delay": 1.0, "max_delay": 4.0, "sleep": fake.sleep, "clock": fake.clock}
    retry(Flaky([Retryable()] * 20), should_retry=lambda exc: True, retry_after=None, **kwargs)
    caps = [min(4.0, 2**n) for n in range(20)]
    assert all(0 <= slept <= cap for slept, cap in zip(fake.sleeps, caps, strict=True))
    assert len(set(fake.sleeps)) > 1


def test_retry_non_retryable_raises_at_once():
    fake = FakeTime()
    call = Flaky([KeyError("final"), Retryable()])
    with pytest.raises(KeyError):
        _retry(call, fake)
    assert call.calls == 1 and fake.sleeps == []


def test_retry_honours_retry_after_as_a_minimum():
    fake = FakeTime()
    call = Flaky([Retryable(), Retryable()])
    _retry(call, fake, retry_after=lambda exc: 5.0, random=lambda: 0.1)
    assert fake.sleeps == [5.0, 5.0]


def test_retry_after_shorter_than_backoff_keeps_backoff():
    fake = FakeTime()
    _retry(Flaky([Retryable()] * 3), fake, retry_after=lambda exc: 0.5, initial_delay=2.0)
    assert fake.sleeps == [2.0, 4.0, 8.0]


def test_retry_reads_retry_after_from_the_exception_by_default():
    fake = FakeTime()
    throttled = _with_headers({"Retry-After": "3"})
    retry(
        Flaky([throttled]),
        should_retry=lambda exc: exc is throttled,
        timeout=60,
        sleep=fake.sleep,
        clock=fake.clock,
        random=lambda: 0.0,
    )
    assert fake.sleeps == [3.0]


def test_retry_total_time_is_bounded_and_last_error_is_raised():
    fake = FakeTime(call_cost=0.5)
    errors = [Retryable(str(n)) for n in range(100)]
    call = Flaky(errors, time_=fake)
    start = fake.now
    with pytest.raises(Retryable) as caught:
        _retry(call, fake, timeout=20, initial_delay=1.0, max_delay=4.0)
    assert fake.now - start <= 20 + 0.5  # the budget plus at most one call in flight
    assert sum(fake.sleeps) <= 20
    assert caught.value is errors[call.calls - 1]


def test_retry_last_sleep_is_clipped_to_the_deadline():
    fake = FakeTime()
    call = Flaky([Retryable()] * 10)
    with pytest.raises(Retryable):
        _retry(call, fake, timeout=10, initial_delay=4.0, max_delay=100.0)
    assert fake.sleeps == [4.0, 6.0]  # 4 + 8 would pass the deadline: the second sleep stops at it
    assert call.calls == 3


def test_retry_gives_up_when_retry_after_is_beyond_the_deadline():
    fake = FakeTime()
    call = Flaky([Retryable(), Retryable()])
    with pytest.raises(Retryable):
        _retry(call, fake, timeout=10, retry_after=lambda exc: 30.0)
    assert fake.sleeps == [] and call.calls == 1


def test_retry_reports_each_retry():
    fake = FakeTime()
    seen = []
    _retry(Flaky([Retryable("a"), Retryable("b")]), fake, on_retry=lambda exc, n, d: seen.append((str(exc), n, d)))
    assert seen == [("a", 1, 1.0), ("b", 2, 2.0)]


def test_retry_zero_timeout_tries_once():
    fake = FakeTime()
    call = Flaky([Retryable()])
    with pytest.raises(Retryable):
        _retry(call, fake, timeout=0)
    assert call.calls == 1
