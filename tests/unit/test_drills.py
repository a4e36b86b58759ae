"""Unit tests for faultbook.drills on hand-built traffic records."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from faultbook.drills import impact as drills
from faultbook.drills import traffic
from faultbook.drills.impact import DrillResult
from faultbook.errors import ParameterError
from faultbook.results import BASE_METRICS, Run, validate

T = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def at(s: float) -> datetime:
    return T + timedelta(seconds=s)


class Records:
    """Builds a records frame: times are seconds after T."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.next_id = 1

    def add(
        self,
        kind: str,
        sent: float,
        ok: bool = True,
        latency: float = 0.01,
        status: int | None = None,
        order_id: int | None = None,
        error: str = "",
    ) -> Records:
        if status is None:
            status = (201 if kind == "POST" else 200) if ok else 503
        if kind == "POST" and ok and order_id is None:
            order_id = self.next_id
            self.next_id += 1
        self.rows.append(
            {
                "seq": len(self.rows),
                "kind": kind,
                "sent_at": at(sent),
                "answered_at": at(sent + latency),
                "latency_ms": latency * 1000 if status else math.nan,
                "status": status,
                "ok": ok,
                "order_id": order_id,
                "idempotency_key": f"k{len(self.rows)}" if kind == "POST" else "",
                "error": error or ("" if ok else f"HTTP {status}" if status else "timeout"),
            }
        )
        return self

    def posts(self, start: float, stop: float, every: float = 0.1, **kw: Any) -> Records:
        t = start
        while t < stop - 1e-9:
            self.add("POST", t, **kw)
            t = round(t + every, 6)
        return self

    def frame(self) -> pd.DataFrame:
        return traffic._frame(self.rows)


def test_no_failures() -> None:
    df = Records().posts(0, 10).frame()
    r = DrillResult.from_records(df, fault_at=at(5), present_ids=range(1, 101))
    assert r.rto_s == 0.0
    assert r.outages == [] and r.recovered
    assert r.lost_writes == 0 and r.lost_ids == []
    assert r.acked_writes == 100 == r.total_requests
    assert r.failed_requests == r.failed_writes == r.failed_reads == 0
    # first POST sent at/after 5.0 s is the one sent at 5.0, answered at 5.01
    assert r.time_to_first_write_s == pytest.approx(0.01)


def test_clean_outage_in_the_middle() -> None:
    rec = Records().posts(0, 3).posts(3, 5, ok=False).posts(5, 8)
    df = rec.frame()
    r = DrillResult.from_records(df, fault_at=at(3.0), present_ids=range(1, 61))
    assert len(r.outages) == 1
    o = r.outages[0]
    # from the ack before (sent 2.9, answered 2.91) to the ack after (sent 5.0, answered 5.01)
    assert o.start == at(2.91) and o.end == at(5.01)
    assert o.duration_s == pytest.approx(2.1)
    assert o.failed_writes == 20 and o.recovered
    assert r.rto_s == pytest.approx(2.1)
    assert r.recovered
    assert r.time_to_first_write_s == pytest.approx(2.01)
    assert r.failed_writes == 20 == r.failed_requests
    assert r.acked_writes == 60


def test_failures_up_to_the_end() -> None:
    df = Records().posts(0, 2).posts(2, 4, ok=False, latency=0.5, status=0).frame()
    r = DrillResult.from_records(df, fault_at=at(2), present_ids=None)
    assert not r.recovered
    (o,) = r.outages
    assert not o.recovered
    # from the last ack (1.9 + 0.01) to the end of the run (last answer: 3.9 + 0.5)
    assert o.start == at(1.91) and o.end == at(4.4)
    assert r.rto_s == pytest.approx(4.4 - 1.91)
    assert r.time_to_first_write_s is None
    m = r.metrics()
    assert m["recovered"] is False and m["outages"] == 1


def test_all_writes_failing_from_the_start() -> None:
    df = Records().posts(0, 1, ok=False).frame()
    r = DrillResult.from_records(df, fault_at=None, present_ids=[])
    assert r.rto_s == pytest.approx(0.91)  # run start (0.0) to run end (0.9 + 0.01)
    assert not r.recovered and r.acked_writes == 0 and r.lost_writes == 0


def test_stall_without_failures() -> None:
    # writes just stop being answered for 3 s (e.g. requests queued), none fails
    rec = Records().posts(0, 2).add("POST", 2.0, latency=3.0).posts(5.1, 6)
    r = DrillResult.from_records(rec.frame(), fault_at=at(2.0), present_ids=None)
    assert len(r.outages) == 1
    o = r.outages[0]
    assert o.failed_writes == 0 and o.recovered
    # ack of 1.9 (at 1.91) to the ack of the slow POST (at 5.0)
    assert o.start == at(1.91) and o.end == at(5.0)
    assert r.rto_s == pytest.approx(3.09)
    assert r.failed_requests == 0
    # the same gap is no outage when stall_s is longer
    assert (
        DrillResult.from_records(rec.frame(), fault_at=None, present_ids=None, stall_s=4).outages
        == []
    )


def test_gap_at_the_end_without_posts_is_no_outage() -> None:
    rec = Records().posts(0, 1)
    rec.add("GET", 4.0, order_id=1)
    r = DrillResult.from_records(rec.frame(), fault_at=None, present_ids=None)
    assert r.outages == [] and r.rto_s == 0.0 and r.recovered


def test_flapping_outages_are_reported_separately() -> None:
    rec = Records().posts(0, 1).posts(1, 1.5, ok=False).posts(1.5, 1.6)
    rec.posts(1.6, 2.0, ok=False).posts(2.0, 3.0)
    r = DrillResult.from_records(rec.frame(), fault_at=at(1.0), present_ids=None)
    assert [o.failed_writes for o in r.outages] == [5, 4]
    assert r.outages[0].end == r.outages[1].start == at(1.51)
    assert [round(o.duration_s, 6) for o in r.outages] == [0.6, 0.5]
    assert r.rto_s == pytest.approx(0.6)


def test_lost_writes() -> None:
    df = Records().posts(0, 1).frame()  # ids 1..10 acknowledged
    r = DrillResult.from_records(df, fault_at=None, present_ids=[1, 2, 3, 5, 6, 7, 8, 11])
    assert r.lost_ids == [4, 9, 10] and r.lost_writes == 3
    assert r.metrics()["lost_writes_checked"] is True
    unchecked = DrillResult.from_records(df, fault_at=None, present_ids=None)
    assert unchecked.lost_writes == 0 and unchecked.lost_ids == []
    assert unchecked.metrics()["lost_writes_checked"] is False
    assert drills.acked_ids(df) == set(range(1, 11))


def test_empty_records() -> None:
    for df in (traffic._frame([]), pd.DataFrame()):
        r = DrillResult.from_records(df, fault_at=T, present_ids=[1])
        assert r.rto_s == 0.0 and r.outages == [] and r.recovered
        assert r.total_requests == r.failed_requests == r.acked_writes == 0
        assert r.p50_ms is None and r.p99_ms is None
        assert r.time_to_first_write_s is None
        assert drills.acked_ids(df) == set()


def test_get_failures_are_not_write_outages() -> None:
    rec = Records().posts(0, 2)
    for i in range(10):
        rec.add("GET", 0.05 + i * 0.1, ok=False, status=404, order_id=1)
    rec.add("GET", 1.5, ok=False, status=0, latency=0.3)
    r = DrillResult.from_records(rec.frame(), fault_at=None, present_ids=None)
    assert r.outages == [] and r.rto_s == 0.0
    assert r.failed_requests == 11 == r.failed_reads
    assert r.failed_writes == 0
    assert r.total_requests == 31


def test_percentiles_over_answered_requests() -> None:
    rec = Records()
    for i in range(1, 101):
        rec.add("POST", i * 0.01, latency=i / 1000)  # 1 .. 100 ms
    rec.add("POST", 2.0, ok=False, status=0, latency=10.0)  # timeout: not answered
    rec.add("POST", 2.1, ok=False, status=503, latency=0.2)  # answered, counts
    r = DrillResult.from_records(rec.frame(), fault_at=None, present_ids=None)
    expected = pd.Series([*range(1, 101), 200], dtype=float)
    assert r.p50_ms == pytest.approx(expected.quantile(0.5)) == pytest.approx(51.0)
    assert r.p99_ms == pytest.approx(expected.quantile(0.99))
    assert r.p99_ms == pytest.approx(100.0)


def test_time_to_first_write_uses_posts_sent_after_the_fault() -> None:
    rec = Records().posts(0, 1)
    rec.add("POST", 0.95, latency=2.0)  # sent before the fault, answered late: not counted
    rec.posts(1.0, 2.0, ok=False).posts(2.0, 2.5)
    r = DrillResult.from_records(rec.frame(), fault_at=at(1.0), present_ids=None)
    assert r.time_to_first_write_s == pytest.approx(1.01)


def test_metrics_apply_and_table() -> None:
    df = Records().posts(0, 1).posts(1, 2, ok=False).posts(2, 3).frame()
    r = DrillResult.from_records(df, fault_at=at(1), present_ids=range(1, 21))
    m = r.metrics()
    assert set(BASE_METRICS) <= set(m)
    extra = {"time_to_first_write_s", "failed_writes", "failed_reads", "outages", "recovered"}
    assert extra <= set(m)
    assert m["rto_s"] == pytest.approx(1.1) and m["outages"] == 1 and m["lost_writes"] == 0
    json.dumps(m)
    run = Run.start("failover", "drill", {})
    r.apply(run)
    assert run.metrics["rto_s"] == r.rto_s and run.metrics["acked_writes"] == 20
    assert validate(run.finish()) == []
    table = r.table()
    assert list(table.columns) == ["metric", "value"]
    assert table.set_index("metric")["value"]["failed_writes"] == 10
    assert len(table) == len(m)


def test_bad_input() -> None:
    df = Records().posts(0, 1).frame()
    with pytest.raises(ParameterError, match="stall_s"):
        DrillResult.from_records(df, fault_at=None, present_ids=None, stall_s=0)
    with pytest.raises(ParameterError, match="naive"):
        DrillResult.from_records(df, fault_at=datetime(2024, 5, 1), present_ids=None)
    with pytest.raises(ParameterError, match="ok"):
        DrillResult.from_records(df.drop(columns=["ok"]), fault_at=None, present_ids=None)


def test_loaded_records_give_the_same_result(tmp_path: Any) -> None:
    df = Records().posts(0, 1).posts(1, 2, ok=False).posts(2, 3).frame()
    back = traffic.load_records(traffic.save_records(df, tmp_path / "r.csv"))
    a = DrillResult.from_records(df, fault_at=at(1), present_ids=range(1, 21))
    b = DrillResult.from_records(back, fault_at=at(1), present_ids=range(1, 21))
    assert a == b
