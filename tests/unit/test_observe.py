"""fault-observe's library: the fault built from the runbook's parameters, the hold's
bounds, writes coming back after the revert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from faultbook import inventory
from faultbook.drills import observe, traffic
from faultbook.errors import ConditionTimeout, InventoryError, ParameterError

PARAMS: dict[str, Any] = {
    "delay_ms": 150.0,
    "loss_pct": 2.0,
    "path": "",
    "leave_mib": 16.0,
    "max_gib": 4.0,
    "offset_s": 120.0,
    "unit": "",
}


@pytest.fixture(scope="module")
def inv() -> inventory.Inventory:
    return inventory.load("lab")


def test_each_fault_takes_the_options_it_declares(inv: inventory.Inventory) -> None:
    f = observe.make_fault(inv, "delay-loss", "db1", PARAMS)
    assert (f.delay_ms, f.loss_pct) == (150.0, 2.0)  # type: ignore[attr-defined]
    assert f.describe() == "delay-loss 150 ms / 2 % on db1"
    d = observe.make_fault(inv, "disk-full", "backup1", PARAMS)
    assert d.max_gib == 4.0 and d.path  # type: ignore[attr-defined]  # the backup host's default


def test_a_unit_fault_without_a_unit_acts_on_the_hosts_main_service(
    inv: inventory.Inventory,
) -> None:
    assert observe.make_fault(inv, "service-stop", "web2", PARAMS).unit == "ledger.service"  # type: ignore[attr-defined]
    frozen = observe.make_fault(inv, "process-freeze", "db2", PARAMS)
    assert frozen.unit == "postgresql@15-main.service"  # type: ignore[attr-defined]
    given = observe.make_fault(inv, "service-stop", "lb1", PARAMS | {"unit": "keepalived.service"})
    assert given.unit == "keepalived.service"  # type: ignore[attr-defined]
    assert observe.main_unit(inv, "mon1") == "prometheus.service"
    with pytest.raises(ParameterError, match="no default unit for restore1"):
        observe.make_fault(inv, "service-stop", "restore1", PARAMS)


@pytest.mark.parametrize(
    ("kind", "target", "params", "error", "needle"),
    [
        ("host-crash", "db1", PARAMS, ParameterError, "fault must be one of delay-loss, disk-full"),
        ("delay-loss", "", PARAMS, ParameterError, "needs a target host"),
        ("delay-loss", "db9", PARAMS, InventoryError, "unknown host 'db9'"),
        ("delay-loss", "db1", PARAMS | {"delay_ms": float("nan")}, ParameterError, "delay_ms=nan"),
        ("delay-loss", "db1", PARAMS | {"delay_ms": -5.0}, ParameterError, "0 <= delay_ms"),
        ("disk-full", "db1", PARAMS | {"leave_mib": -1.0}, ParameterError, "leave_mib must be"),
        ("clock-skew", "db1", PARAMS | {"offset_s": 0.0}, ParameterError, "offset_s must be"),
    ],
)
def test_bad_faults_are_one_line_errors(
    inv: inventory.Inventory, kind: str, target: str, params: dict, error: type, needle: str
) -> None:
    with pytest.raises(error, match=needle) as e:
        observe.make_fault(inv, kind, target, params)
    assert "\n" not in str(e.value)


def test_the_hold_is_bounded_and_shorter_than_the_load() -> None:
    assert observe.check_hold(30.0, 90.0) == 30.0
    for bad in (0, -1, float("nan"), 4000, True, "30"):
        with pytest.raises(ParameterError, match="hold_s="):
            observe.check_hold(bad, 90.0)
    with pytest.raises(ParameterError, match="must be shorter than duration_s=60"):
        observe.check_hold(60.0, 60)


class FakeTraffic:
    """The records a Traffic holds so far, as ``Traffic.records`` returns them."""

    def __init__(self, frames: list[pd.DataFrame], running: bool = True) -> None:
        self.frames = frames
        self.running = running

    def records(self) -> pd.DataFrame:
        return self.frames.pop(0) if len(self.frames) > 1 else self.frames[0]


def recs(t0: datetime, rows: list[tuple[float, str, bool]]) -> pd.DataFrame:
    """(seconds after T0, kind, ok) -> records, each answered 50 ms after it was sent."""
    out = []
    for i, (s, kind, ok) in enumerate(rows):
        sent = t0 + timedelta(seconds=s)
        out.append(
            {
                "seq": i,
                "kind": kind,
                "sent_at": sent,
                "answered_at": sent + timedelta(milliseconds=50),
                "latency_ms": 50.0,
                "status": 201 if ok else 503,
                "ok": ok,
                "order_id": i if ok else None,
                "idempotency_key": "",
                "error": "" if ok else "HTTP 503",
            }
        )
    return traffic.normalize_records(pd.DataFrame(out, columns=list(traffic.COLUMNS)))


def procedure(reverted: datetime, t: FakeTraffic) -> Any:
    marks: dict[str, datetime] = {"fault reverted": reverted}

    def mark(name: str, at: datetime | None = None) -> datetime:
        marks[name] = at or datetime.now(UTC)
        return marks[name]

    return SimpleNamespace(markers=marks, traffic=t, mark=mark)


def test_writes_back_is_the_first_write_acknowledged_after_the_revert() -> None:
    t0 = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    before = recs(t0, [(0, "POST", True), (9, "POST", False), (10.5, "GET", True)])
    after = recs(
        t0, [(0, "POST", True), (9, "POST", False), (10.5, "GET", True), (11, "POST", True)]
    )
    p = procedure(t0 + timedelta(seconds=10), FakeTraffic([before, after]))
    back = observe.writes_back(p, timeout_s=5)
    assert back == t0 + timedelta(seconds=11, milliseconds=50)
    assert p.markers["recovered"] == back


def test_no_write_after_the_revert_is_a_timeout_naming_why() -> None:
    t0 = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    stopped = FakeTraffic([recs(t0, [(0, "POST", True), (11, "POST", False)])], running=False)
    p = procedure(t0 + timedelta(seconds=10), stopped)
    with pytest.raises(ConditionTimeout, match="the client load had stopped"):
        observe.writes_back(p, timeout_s=5)
    assert "recovered" not in p.markers
