"""The inventory run lock and the decision log (shared by runs, suites, schedules, alerts)."""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from faultbook import decisions, lock
from faultbook.errors import InventoryBusy, ParameterError


@dataclass
class Inv:
    name: str = "lab"
    is_lab: bool = True


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAULTBOOK_HOME", str(tmp_path))
    return tmp_path


def _hold_for(home: str, seconds: float, ready: object) -> None:
    import os

    os.environ["FAULTBOOK_HOME"] = home
    with lock.hold(Inv(), "run db-failover", trigger="alert:abc"):
        ready.set()  # type: ignore[attr-defined]
        time.sleep(seconds)


def test_second_holder_is_refused_naming_the_first(home: Path) -> None:
    ready = multiprocessing.Event()
    p = multiprocessing.Process(target=_hold_for, args=(str(home), 3.0, ready))
    p.start()
    try:
        assert ready.wait(10)
        assert lock.holder(Inv())["trigger"] == "alert:abc"
        with pytest.raises(InventoryBusy) as err, lock.hold(Inv(), "suite smoke"):
            pass
        assert "run db-failover" in str(err.value) and "alert:abc" in str(err.value)
        assert err.value.exit_code == 75
    finally:
        p.join()
    assert lock.holder(Inv()) is None


def test_a_waiter_gets_the_lock_when_the_holder_ends(home: Path) -> None:
    ready = multiprocessing.Event()
    p = multiprocessing.Process(target=_hold_for, args=(str(home), 0.5, ready))
    p.start()
    assert ready.wait(10)
    with lock.hold(Inv(), "run health-check", wait_s=10) as rec:
        assert rec["what"] == "run health-check"
    p.join()


def test_a_dead_holder_leaves_no_lock(home: Path) -> None:
    ready = multiprocessing.Event()
    p = multiprocessing.Process(target=_hold_for, args=(str(home), 60, ready))
    p.start()
    assert ready.wait(10)
    p.kill()
    p.join()
    assert lock.holder(Inv()) is None


def test_locks_are_per_inventory(home: Path) -> None:
    with lock.hold(Inv(), "a"), lock.hold(Inv("prod", False), "b"):
        assert lock.holder(Inv("prod", False))["what"] == "b"


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_wait_is_a_usage_error(bad: float) -> None:
    with pytest.raises(ParameterError, match="lock wait"), lock.hold(Inv(), "x", wait_s=bad):
        pass


def test_trigger_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAULTBOOK_TRIGGER", "schedule:nightly")
    assert lock.default_trigger() == "schedule:nightly"
    monkeypatch.delenv("FAULTBOOK_TRIGGER")
    assert lock.default_trigger().startswith("user:")


def test_decision_log_appends_and_skips_a_torn_line(home: Path) -> None:
    decisions.record("decision", decision="ran", fingerprint="f1")
    with open(decisions.log_path(), "a") as f:
        f.write('{"at": "torn')
    decisions.record("notification", status="firing")
    got = list(decisions.entries())
    assert [e["event"] for e in got] == ["decision", "notification"]
    assert [e["decision"] for e in decisions.entries(event="decision")] == ["ran"]
    assert got[0]["at"].endswith("Z")


def test_key_matches_the_loaded_inventory() -> None:
    from faultbook import inventory

    inv = inventory.load("lab")
    k = lock.key("lab")
    assert (k.name, k.is_lab) == (inv.name, inv.is_lab)
    assert lock.key("example").is_lab is False


def test_the_lock_is_re_entrant_within_a_process(home: Path) -> None:
    """A suite holds it and each of its runs takes it again; the outer record stays."""
    with lock.hold(Inv(), "suite smoke", drill=True) as outer:
        with lock.hold(Inv(), "run web-node-failure") as inner:
            assert inner is outer or inner == outer
            assert lock.holder(Inv())["what"] == "suite smoke"
        assert lock.holder(Inv())["drill"] is True
    assert lock.holder(Inv()) is None


def _hold_drill(home: str, ready: object, done: object) -> None:
    import os

    os.environ["FAULTBOOK_HOME"] = home
    with lock.hold(Inv(), "run db-failover", drill=True):
        ready.set()  # type: ignore[attr-defined]
        done.wait(10)  # type: ignore[attr-defined]


def test_a_drill_holding_the_lock_is_seen_as_one(home: Path) -> None:
    ready, done = multiprocessing.Event(), multiprocessing.Event()
    p = multiprocessing.Process(target=_hold_drill, args=(str(home), ready, done))
    p.start()
    try:
        assert ready.wait(10)
        assert lock.holder(Inv())["drill"] is True
    finally:
        done.set()
        p.join()


def test_a_drill_inside_a_suite_marks_the_suite_as_one_while_it_runs(home: Path) -> None:
    """The receiver reads the record: a suite's drill entry must read as a drill."""
    with lock.hold(Inv(), "suite smoke"):
        assert lock.holder(Inv())["drill"] is False
        with lock.hold(Inv(), "run db-failover", drill=True):
            assert lock.holder(Inv())["drill"] is True
            assert lock._read_file(Inv())["drill"] is True  # what other processes see
        assert lock.holder(Inv())["drill"] is False
        assert lock._read_file(Inv())["drill"] is False
