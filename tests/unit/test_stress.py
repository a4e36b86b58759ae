"""The stress runbook's library: its parameters, the ramp's stopping rule, the capacity,
the record. The ramp runs here against a simulated stack (the records a stack with a
given service rate would produce); on the lab it runs against the real one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from faultbook import results
from faultbook.drills import stress, traffic
from faultbook.errors import ParameterError, VerdictFailed
from faultbook.report import plots

SLO = stress.SLO(500.0, 0.001)


def records(n: int, latency_ms: float, failed: int = 0, saturated: int = 0) -> pd.DataFrame:
    """N requests (half POST), LATENCY_MS each; FAILED of them HTTP 503, SATURATED of
    them not sent."""
    t0 = datetime(2026, 12, 7, tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        sent = t0 + timedelta(milliseconds=10 * i)
        not_sent = i < saturated
        bad = saturated <= i < saturated + failed
        rows.append(
            {
                "seq": i,
                "kind": "POST" if i % 2 else "GET",
                "sent_at": sent,
                "answered_at": sent + timedelta(milliseconds=latency_ms),
                "latency_ms": float("nan") if not_sent else latency_ms,
                "status": 0 if not_sent else (503 if bad else 200),
                "ok": not (not_sent or bad),
                "order_id": i if not (not_sent or bad) else None,
                "idempotency_key": "",
                "error": traffic.SATURATED if not_sent else ("HTTP 503" if bad else ""),
            }
        )
    return traffic.normalize_records(pd.DataFrame(rows, columns=list(traffic.COLUMNS)))


def stack(service_rps: float, client_rps: float = 10_000) -> stress.Runner:
    """A simulated stack: latency 20 ms while the offered rate is below SERVICE_RPS,
    10 s (timeouts, failed) above it; a client that cannot send more than CLIENT_RPS."""

    def run(rps: float, seconds: float) -> pd.DataFrame:
        n = int(rps * seconds)
        saturated = max(0, int((rps - client_rps) * seconds))
        if rps <= service_rps:
            return records(n, 20.0, saturated=saturated)
        return records(n, 10_000.0, failed=n // 10, saturated=saturated)

    return run


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"start_rps": float("nan")}, "start_rps=nan is invalid"),
        ({"step_rps": -5}, "step_rps=-5 is invalid"),
        ({"max_rps": 20.0, "start_rps": 50.0}, "max_rps=20.0 is below start_rps=50.0"),
        ({"step_s": 0}, "step_s=0 is invalid"),
        ({"soak_fraction": 1.5}, "soak_fraction=1.5 is invalid"),
        ({"soak_s": 7200}, "soak_s=7200 is invalid"),
        ({"max_in_flight": True}, "max_in_flight=True is invalid"),
        ({"start_rps": 1, "step_rps": 1, "max_rps": 100}, "has 100 steps: expected at most 40"),
    ],
)
def test_bad_plans_are_one_line_errors(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ParameterError, match=needle.replace("(", r"\(").replace(")", r"\)")) as e:
        stress.Plan(**kwargs)
    assert "\n" not in str(e.value)


def test_bad_slo_and_mode() -> None:
    with pytest.raises(ParameterError, match="slo_p99_ms=-1 is invalid"):
        stress.SLO(-1, 0.01)
    with pytest.raises(ParameterError, match=r"slo_error_rate=nan is invalid"):
        stress.SLO(100, float("nan"))
    with pytest.raises(
        ParameterError, match="mode='stres' is invalid: expected one of incident, drill"
    ):
        stress.check_mode("stres")


def test_the_rates_go_from_start_by_step_never_above_max() -> None:
    assert stress.Plan(25, 25, 400).rates()[:3] == [25, 50, 75]
    assert stress.Plan(25, 25, 400).rates()[-1] == 400
    assert len(stress.Plan(25, 25, 400).rates()) == 16
    assert stress.Plan(10, 30, 100).rates() == [10, 40, 70, 100]
    assert stress.Plan(10, 40, 100).rates() == [10, 50, 90]
    plan = stress.Plan(10, 40, 100).table()
    assert list(plan["phase"]) == ["ramp 1", "ramp 2", "ramp 3", "soak"]


def test_step_stats_count_latency_errors_and_saturation() -> None:
    ok = stress.step_stats(records(200, 20.0), 20, 10, SLO)
    assert ok["holds_slo"] and ok["sent"] == 200 and ok["failed"] == 0
    assert ok["p99_ms"] == 20.0 and ok["achieved_rps"] == 20.0
    slow = stress.step_stats(records(200, 900.0), 20, 10, SLO)
    assert not slow["holds_slo"] and "p99 900 ms > 500 ms" in slow["why"]
    errors = stress.step_stats(records(1000, 20.0, failed=2), 100, 10, SLO)
    assert not errors["holds_slo"] and errors["error_rate"] == 0.002
    assert "errors 0.20% > 0.10%" in errors["why"]
    client = stress.step_stats(records(100, 20.0, saturated=5), 10, 10, SLO)
    assert not client["holds_slo"] and client["saturated"] == 5 and client["sent"] == 95
    assert "the client saturated (5 requests not sent)" in client["why"]


def test_the_ramp_stops_at_the_first_broken_step_and_names_the_capacity() -> None:
    seen: list[float] = []
    steps = stress.ramp(
        None,  # type: ignore[arg-type]
        stress.Plan(50, 50, 400, step_s=2),
        SLO,
        run=stack(service_rps=180),
        on_step=lambda row: seen.append(row["offered_rps"]),
    )
    assert list(steps["offered_rps"]) == seen == [50, 100, 150, 200]
    assert list(steps["holds_slo"]) == [True, True, True, False]
    cap = stress.capacity(steps)
    assert (cap.rps, cap.bound) == (150, "slo")
    assert "capacity 150 requests/s (the SLO broke above it: at 200 rps: p99" in str(cap)
    assert stress.soak_rps(cap, stress.Plan(soak_fraction=0.7)) == 105


def test_a_saturated_client_bounds_the_capacity_not_the_stack() -> None:
    steps = stress.ramp(
        None,  # type: ignore[arg-type]
        stress.Plan(50, 50, 400, step_s=2),
        SLO,
        run=stack(service_rps=1000, client_rps=120),
    )
    cap = stress.capacity(steps)
    assert (cap.rps, cap.bound) == (100, "client")
    assert "the client saturated above it" in str(cap)


def test_every_step_held_up_to_max_rps() -> None:
    steps = stress.ramp(None, stress.Plan(50, 50, 100, step_s=1), SLO, run=stack(1000))  # type: ignore[arg-type]
    cap = stress.capacity(steps)
    assert (cap.rps, cap.bound) == (100, "max_rps")


def test_nothing_held_means_no_soak_and_a_failed_verdict() -> None:
    steps = stress.ramp(None, stress.Plan(50, 50, 100, step_s=1), SLO, run=stack(10))  # type: ignore[arg-type]
    cap = stress.capacity(steps)
    assert cap.rps is None and "no step held the SLO" in str(cap)
    run = results.Run.start("stress", "drill", {})
    v = stress.record(run, steps, cap)
    assert not v.ok and run.verdict == "fail"
    with pytest.raises(VerdictFailed, match="no step held the SLO"):
        stress.check(v)


def test_the_record_conforms_to_the_result_schema() -> None:
    steps = stress.ramp(None, stress.Plan(50, 50, 200, step_s=1), SLO, run=stack(120))  # type: ignore[arg-type]
    cap = stress.capacity(steps)
    soaked = stress.step_stats(records(700, 25.0), 70, 10, SLO)
    run = results.Run.start("stress", "drill", {"mode": "drill"})
    v = stress.record(run, steps, cap, soaked, (350, 0))
    doc = run.to_dict()
    assert v.ok and doc["verdict"] == "pass", doc
    assert results.validate(doc) == []
    m = doc["metrics"]
    assert m["capacity_rps"] == 100 and m["capacity_client_bound"] is False
    assert m["soak_rps"] == 70 and m["lost_writes"] == 0 and m["acked_writes"] == 350
    assert m["total_requests"] == int(steps["sent"].sum()) + 700
    lost = results.Run.start("stress", "drill", {})
    assert not stress.record(lost, steps, cap, soaked, (350, 2)).ok
    assert "2 of 350 acknowledged writes are missing" in lost.steps[-1].detail
    assert "2 of 350 acknowledged writes missing" in stress.soak_summary(soaked, (350, 2))


def test_the_incident_mode_record_passes_with_nothing_measured() -> None:
    run = results.Run.start("stress", "incident", {})
    v = stress.record(run)
    assert v.ok and results.validate(run.to_dict()) == []
    assert stress.soak_summary(None, None).startswith("no soak")


def test_the_chart_marks_the_slo_and_the_capacity() -> None:
    steps = stress.ramp(None, stress.Plan(50, 50, 200, step_s=1), SLO, run=stack(120))  # type: ignore[arg-type]
    fig = plots.stress_chart(steps, 500.0, 100.0)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "SLO p99 500 ms" in labels and "capacity 100 req/s" in labels
    assert "SLO broken" in labels
    assert (
        plots.stress_chart(steps.iloc[0:0], 500.0).axes[0].texts[0].get_text() == "no ramp step ran"
    )


def test_a_saturated_client_with_a_slow_stack_is_bounded_by_the_slo() -> None:
    """At 125 rps on the lab both happened: the workers filled up because answers took
    a second. That step says nothing about the stack doing more: the SLO bounds it."""

    def run(rps: float, seconds: float) -> pd.DataFrame:
        n = int(rps * seconds)
        if rps <= 100:
            return records(n, 20.0)
        return records(n, 1800.0, saturated=n // 5)

    steps = stress.ramp(None, stress.Plan(50, 25, 200, step_s=2), SLO, run=run)  # type: ignore[arg-type]
    cap = stress.capacity(steps)
    assert (cap.rps, cap.bound) == (100, "slo")
    assert "the SLO broke above it" in str(cap) and "the client saturated" in str(cap)
    assert list(steps["stack_holds"]) == [True, True, True, False]
