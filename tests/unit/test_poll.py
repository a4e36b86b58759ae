"""poll(): the one bounded wait."""

from __future__ import annotations

import time

import pytest

from faultbook.errors import AlertTimeout, ConditionTimeout, PrometheusError, SSHError
from faultbook.poll import poll, until


def test_returns_the_first_value_that_is_not_none() -> None:
    answers = iter([None, None, 0, 5])
    assert poll(lambda t: next(answers), 5, what="x", interval_s=0.01) == 0


def test_times_out_naming_what_and_what_it_last_saw() -> None:
    t0 = time.monotonic()
    with pytest.raises(
        ConditionTimeout, match=r"the VIP moving not met within 0.2 s; last seen: lb1"
    ):
        poll(lambda t: None, 0.2, what="the VIP moving", interval_s=0.05, seen=lambda: "lb1")
    assert time.monotonic() - t0 < 2


def test_transient_errors_are_retried_and_quoted_others_propagate() -> None:
    def flaky(t: float) -> None:
        raise PrometheusError("no answer", transient=True)

    with pytest.raises(AlertTimeout, match="last error: no answer"):
        poll(
            flaky, 0.1, what="alert", interval_s=0.02, error=AlertTimeout, transient=lambda e: True
        )

    def broken(t: float) -> None:
        raise SSHError("db1", "refused")

    with pytest.raises(SSHError):
        poll(broken, 5, what="x")


def test_the_attempt_gets_a_bounded_time_and_at_least_one_try() -> None:
    seen: list[float] = []
    assert poll(lambda t: seen.append(t) or t, 0, what="x") == 0.5
    assert seen == [0.5]
    assert poll(lambda t: t, 60, what="x", max_attempt_s=3) == 3


def test_until_is_a_yes_or_no() -> None:
    assert until(lambda: True, 0)
    assert not until(lambda: False, 0.05, interval_s=0.01)
