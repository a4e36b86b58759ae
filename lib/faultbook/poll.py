"""The one way faultbook waits for a condition: ``poll`` until a value appears or a deadline.

Every wait in the library (an alert firing, a server marked down, the VIP moving, a WAL
segment archived, the cluster back in quorum, steady state) goes through ``poll``, so
each one is bounded, says what it waited for, and fails the same way: ConditionTimeout
(or the error class the caller names) with the last thing it saw.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from faultbook.errors import ConditionTimeout, FaultbookError

log = logging.getLogger(__name__)

T = TypeVar("T")


def poll(
    attempt: Callable[[float], T | None],
    timeout_s: float,
    *,
    what: str,
    interval_s: float = 0.5,
    transient: Callable[[FaultbookError], bool] = lambda exc: False,
    seen: Callable[[], str] | None = None,
    error: type[FaultbookError] = ConditionTimeout,
    min_attempt_s: float = 0.5,
    max_attempt_s: float = 5.0,
) -> T:
    """Call ``attempt(attempt_timeout_s)`` until it returns something other than None.

    ``attempt`` gets the time it may spend on one try (the remaining time, clamped to
    ``min_attempt_s``..``max_attempt_s``). A FaultbookError for which ``transient``
    is true counts as "not yet" (and is quoted if the wait times out); any other
    exception propagates at once. After ``timeout_s`` without a value, raises
    ``error`` naming ``what``, the timeout, and ``seen()`` (what the condition last
    looked like) or the last transient error. At least one attempt is always made.
    """
    deadline = time.monotonic() + max(timeout_s, 0.0)
    last_error = ""
    while True:
        remaining = deadline - time.monotonic()
        try:
            value = attempt(max(min_attempt_s, min(max_attempt_s, remaining)))
        except FaultbookError as exc:
            if not transient(exc):
                raise
            last_error = str(exc)
            log.debug("%s: %s (retrying)", what, exc)
            value = None
        if value is not None:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = seen() if seen is not None else ""
            why = f"; last seen: {detail}" if detail else ""
            if last_error:
                why += f"; last error: {last_error}"
            raise error(f"{what} not met within {timeout_s:g} s{why}")
        time.sleep(min(interval_s, remaining))


def until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    """``poll`` for a yes/no condition that is no error when it times out: whether
    ``check()`` became true within ``timeout_s`` (it is always asked at least once)."""
    try:
        return poll(
            lambda _t: True if check() else None, timeout_s, what="condition", interval_s=interval_s
        )
    except ConditionTimeout:
        return False
