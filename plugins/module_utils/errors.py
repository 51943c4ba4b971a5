# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one exception of this collection, a decorator factory for thin SDK wrappers, and the retry helper.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import email.utils
import functools
import inspect
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


def error_handler(
    convert: t.Callable[[BaseException, str, str | None], WorkloadIdentityError],
    handled: tuple[type[BaseException], ...],
    is_not_found: t.Callable[[BaseException], bool],
) -> t.Callable[..., t.Callable[[_F], _F]]:
    """Build a decorator factory for thin SDK wrappers of one API family (Azure, Kubernetes).

    The factory takes ``action``, ``target`` (a ``str.format`` template filled from the wrapped function's
    arguments, e.g. ``"identity '{name}'"``) and ``none_if_not_found`` (reads: "not found" becomes ``None``).
    Exceptions of the ``handled`` types become ``WorkloadIdentityError``; a ``WorkloadIdentityError`` passes.
    """

    def factory(action: str, target: str | None = None, *, none_if_not_found: bool = False) -> t.Callable[[_F], _F]:
        def decorator(func: _F) -> _F:
            signature = inspect.signature(func)

            @functools.wraps(func)
            def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
                try:
                    return func(*args, **kwargs)
                except WorkloadIdentityError:
                    raise
                except handled as exc:
                    if none_if_not_found and is_not_found(exc):
                        return None
                    raise convert(exc, action, _fill_target(target, signature, args, kwargs)) from exc

            return t.cast(_F, wrapper)

        return decorator

    return factory


def _fill_target(
    template: str | None, signature: inspect.Signature, args: tuple[t.Any, ...], kwargs: dict[str, t.Any]
) -> str | None:
    if not template:
        return template
    try:
        bound = signature.bind_partial(*args, **kwargs)
        bound.apply_defaults()
        return template.format(**bound.arguments)
    except (KeyError, IndexError, TypeError, ValueError):
        return template


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
