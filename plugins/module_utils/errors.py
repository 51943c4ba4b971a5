# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one exception of this collection and the retry helper.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import email.utils
import random as _random
import time
import traceback
import typing as t

REDACTED = "********"

_F = t.TypeVar("_F", bound=t.Callable[..., t.Any])
_T = t.TypeVar("_T")


class WorkloadIdentityError(Exception):
    """A failure this collection reports to the user: what was being done to which object, and why.

    ``code`` is the service's own error code (an ARM ``error.code``, an ``AADSTSnnnn`` number, a Kubernetes
    ``Status.reason``), ``status`` the HTTP status when there was a response, ``target`` the object being
    worked on. The original exception and its traceback are kept for ``fail_json(exception=...)``.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        target: str | None = None,
        exception: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.target = target
        self.original = exception
        self.traceback: str | None = None
        if exception is not None:
            self.traceback = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))

    def __str__(self) -> str:
        return self.message

    def to_fail_kwargs(self, redact: t.Iterable[str | None] = ()) -> dict[str, t.Any]:
        """Keyword arguments for ``module.fail_json(**...)``; every value in ``redact`` is masked everywhere."""
        secrets = sorted({value for value in redact if value}, key=len, reverse=True)

        def mask(text: str) -> str:
            for secret in secrets:
                text = text.replace(secret, REDACTED)
            return text

        kwargs: dict[str, t.Any] = {"msg": mask(self.message), "error_code": self.code, "status": self.status}
        formatted = self.traceback
        if formatted is None and self.__traceback__ is not None:
            formatted = "".join(traceback.format_exception(type(self), self, self.__traceback__))
        if formatted:
            kwargs["exception"] = mask(formatted)
        return kwargs


def describe_failure(action: str, target: str | None, code: str | None, message: str) -> str:
    """The collection's one failure sentence: ``Failed to <action> <target>: <code>: <message>``."""
    subject = f"{action} {target}" if target else action
    message = (message or "").strip() or "no details given"
    if code and not message.startswith(f"{code}:"):
        return f"Failed to {subject}: {code}: {message}"
    return f"Failed to {subject}: {message}"


def retry_after_from_exception(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait, from a Retry-After header on the exception's response.

    Understands azure-core errors (``exc.response.headers``), kubernetes ``ApiException`` (``exc.headers``),
    ``retry-after-ms`` / ``x-ms-retry-after-ms`` and both forms of Retry-After (seconds or an HTTP date).
    """
    headers = getattr(exc, "headers", None)
    response = getattr(exc, "response", None)
    if headers is None and response is not None:
        headers = getattr(response, "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("x-ms-retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = _header(headers, name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            pass
        if scale == 1.0:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return None
            return max(0.0, when.timestamp() - time.time())
    return None


def _header(headers: t.Any, name: str) -> str | None:
    try:
        items = headers.items()
    except AttributeError:
        return None
    for key, value in items:
        if str(key).lower() == name:
            return str(value).strip()
    return None


def retry(
    call: t.Callable[[], _T],
    *,
    should_retry: t.Callable[[BaseException], bool],
    timeout: float,
    initial_delay: float = 1.0,
    max_delay: float = 15.0,
    on_retry: t.Callable[[BaseException, int, float], None] | None = None,
    sleep: t.Callable[[float], None] = time.sleep,
    clock: t.Callable[[], float] = time.monotonic,
    retry_after: t.Callable[[BaseException], float | None] | None = retry_after_from_exception,
    random: t.Callable[[], float] = _random.random,
) -> _T:
    """Call ``call()`` until it succeeds, retrying what ``should_retry`` accepts for at most ``timeout`` seconds.

    Only for conditions azure-core and urllib3 do not retry themselves (see the callers' comments). Waits use
    full-jitter exponential backoff: attempt ``n`` sleeps ``random() * min(max_delay, initial_delay * 2**(n-1))``
    seconds, never less than a Retry-After the server sent. No sleep goes past the deadline; when the deadline
    (or a Retry-After beyond it) leaves no room for another attempt, the last exception is raised unchanged.
    ``on_retry(exception, attempt, delay)`` is called before each sleep (for logging).
    """
    deadline = clock() + max(0.0, timeout)
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:  # the predicate decides; everything else is re-raised as is
            if not should_retry(exc):
                raise
            attempt += 1
            cap = min(max_delay, initial_delay * (2 ** (attempt - 1)))
            delay = random() * cap
            hinted = retry_after(exc) if retry_after is not None else None
            remaining = deadline - clock()
            if remaining <= 0 or (hinted is not None and hinted > remaining):
                raise
            if hinted is not None:
                delay = max(delay, hinted)
            delay = min(delay, remaining)
            if on_retry is not None:
                on_retry(exc, attempt, delay)
            sleep(delay)
