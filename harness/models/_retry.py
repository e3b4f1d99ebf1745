"""When and how long the gateway retries an upstream call: the openai SDK's errors mapped
to a tenacity policy that fits an overnight run.

Why: a fixed two retries turned a rate limiter's 429 storm into a stopped run. Here a call
is retried on what is the endpoint's state, not the request's fault (429, 408, 409, any 5xx,
no connection, a timeout), with exponential backoff and full jitter (so many waiting callers
do not return in lockstep), never sooner than the endpoint's ``Retry-After``/``retry-after-ms``,
until a total time is spent; then the last error is raised as before, and the gateway
records it as an endpoint failure (an infrastructure error, resumable). Each retry is logged.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import tenacity

__all__ = ["DEFAULT_RETRY_SECONDS", "RETRY_LISTENER", "acall_with_retries", "call_with_retries",
           "is_retryable",
           "retry_after", "retry_seconds_setting"]

T = TypeVar("T")
log = logging.getLogger("harness.models.gateway")

DEFAULT_RETRY_SECONDS = 300.0
"""Five minutes of retries: well inside the seed agent's own 600 s model timeout, so the
agent hears the gateway's verdict rather than timing out and sending the call again."""
MAX_BACKOFF_SECONDS = 60.0

RETRY_LISTENER: ContextVar[Callable[[str], None] | None] = ContextVar("ratchet_retry_listener",
                                                                      default=None)
"""Told (with the error's first line) each time a call in this context (thread or task) is about to be retried:
the gateway's way to know that a task's call is waiting out an endpoint failure, so a run
that ends meanwhile is the endpoint's failure, not the agent's."""


def retry_seconds_setting() -> float:
    """``RATCHET_RETRY_SECONDS`` (seconds of retries per call, 0: none), else the default."""
    value = os.environ.get("RATCHET_RETRY_SECONDS")
    if value is None:
        return DEFAULT_RETRY_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ValueError(f"RATCHET_RETRY_SECONDS must be a number of seconds >= 0, not {value!r}")
    return seconds


def is_retryable(exc: BaseException) -> bool:
    """Whether `exc` is the endpoint's state (retry) rather than the request's fault."""
    import openai  # lazily: importing the gateway should not cost the SDK's import

    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def retry_after(exc: BaseException | None) -> float | None:
    """Seconds the endpoint asked to wait (``retry-after-ms``, ``retry-after`` as seconds or
    an HTTP date), or None."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
        if (value := headers.get("retry-after")) is not None:
            try:
                return max(0.0, float(value))
            except ValueError:
                when = email.utils.parsedate_to_datetime(value)
                return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None
    return None


class _Backoff(tenacity.wait.wait_base):
    """Full-jitter exponential backoff, but never less than the endpoint's Retry-After."""

    def __init__(self) -> None:
        self._jitter = tenacity.wait_random_exponential(multiplier=0.5, max=MAX_BACKOFF_SECONDS)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        asked = retry_after(outcome.exception() if outcome else None)
        return max(asked or 0.0, self._jitter(retry_state))


def _log_retry(total: float) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        status = getattr(exc, "status_code", None)
        what = f"HTTP {status}" if status else type(exc).__name__
        first_line = str(exc).splitlines()[0][:200] if exc and str(exc) else ""
        log.warning("upstream %s; retry %d in %.1f s (%.0f s of %.0f s spent): %s", what,
                    state.attempt_number, state.upcoming_sleep, state.seconds_since_start or 0.0,
                    total, first_line)
        if (listener := RETRY_LISTENER.get()) is not None:
            listener(f"{what}: {first_line}" if first_line else what)
    return before_sleep


def _policy(total_seconds: float) -> dict[str, Any]:
    """This module's retry policy as tenacity settings, for the blocking and the async caller."""
    return dict(retry=tenacity.retry_if_exception(is_retryable), wait=_Backoff(),
                stop=tenacity.stop_before_delay(total_seconds),
                before_sleep=_log_retry(total_seconds), reraise=True)


def call_with_retries(call: Callable[[], T], total_seconds: float, *,
                      sleep: Callable[[float], Any] = time.sleep) -> T:
    """`call()`, retried per this module's policy for at most `total_seconds` (a sleep that
    would end past it is not taken); the last error is raised as it was."""
    return tenacity.Retrying(sleep=sleep, **_policy(total_seconds))(call)


async def acall_with_retries(call: Callable[[], Awaitable[T]], total_seconds: float, *,
                             sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> T:
    """`call_with_retries` for a coroutine function (``async def``: tenacity calls anything
    else as a plain function), sleeping without holding the loop."""
    return await tenacity.AsyncRetrying(sleep=sleep, **_policy(total_seconds))(call)
