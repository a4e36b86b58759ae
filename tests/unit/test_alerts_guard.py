"""The guardrails: firing only, dedupe by fingerprint (and by the same run), throttle per
alert name, the inventory run lock (also in `faultbook run`)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from faultbook import decisions, inventory, lock
from faultbook.alerts import guard, routes
from faultbook.alerts.payload import Alert
from faultbook.cli import main


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAULTBOOK_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def table() -> routes.Routes:
    return routes.load(inventory.load("lab"))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _alert(name: str = "HostDown", fp: str = "aa", status: str = "firing", **labels: str) -> Alert:
    return Alert(status, {"alertname": name, **labels}, {}, datetime.now(UTC), None, fp)


def test_only_firing_alerts_act() -> None:
    assert guard.firing(_alert()) is None
    v = guard.firing(_alert(status="resolved"))
    assert v is not None and v.decision == "resolved" and "HostDown resolved" in v.reason


def test_a_fingerprint_acted_on_within_the_window_is_a_duplicate(table: routes.Routes) -> None:
    clock = Clock()
    g = guard.Guard(clock)
    r = table.route("web-node-down")
    a = _alert(fp="f1", instance="web1")
    assert g.duplicate(a, r, "act-1") is None
    g.note(a, r, "act-1", "/runs/1")
    clock.now += r.window_s - 1
    v = g.duplicate(a, r, "act-other")
    assert v is not None and v.decision == "duplicate" and "fingerprint f1" in v.reason
    assert "/runs/1" in v.reason
    clock.now += 2  # past the window
    assert g.duplicate(a, r, "act-other") is None


def test_a_run_in_flight_makes_a_duplicate_whatever_the_window(table: routes.Routes) -> None:
    g = guard.Guard(Clock())
    r = dataclasses.replace(table.route("web-node-down"), window_s=0.0)
    a = _alert(fp="f2")
    g.start(a, "act", "/runs/2")
    v = g.duplicate(a, r, "other")
    assert v is not None and "in flight (/runs/2)" in v.reason
    v = g.duplicate(_alert(fp="f3"), r, "act")  # another alert, the same run
    assert v is not None and "the same run" in v.reason
    g.finish(a, "act")
    assert g.duplicate(a, r, "act") is None


def test_the_same_run_for_another_alert_is_a_duplicate(table: routes.Routes) -> None:
    """HostDown web2 and HAProxyServerDown web2 are one failure: one run."""
    g = guard.Guard(Clock())
    r = table.route("web-node-down")
    key = guard.action_key("web-node-failure", {"target": "web2", "confirm": True})
    g.note(_alert("HostDown", fp="h1"), r, key, "/runs/3")
    same = guard.action_key("web-node-failure", {"confirm": True, "target": "web2"})
    v = g.duplicate(_alert("HAProxyServerDown", fp="s1"), r, same)
    assert v is not None and v.decision == "duplicate" and "HostDown h1" in v.reason
    other = guard.action_key("web-node-failure", {"confirm": True, "target": "web3"})
    assert g.duplicate(_alert("HAProxyServerDown", fp="s2"), r, other) is None


def test_throttle_counts_runs_per_alert_name_per_route(table: routes.Routes) -> None:
    clock = Clock()
    g = guard.Guard(clock)
    r = table.route("web-node-down")  # max_runs 1 per 600 s
    g.note(_alert("HostDown", fp="x1"), r, "a1")
    v = g.throttled(_alert("HostDown", fp="x2"), r)
    assert v is not None and v.decision == "throttled"
    assert "route web-node-down already acted 1 time(s) on HostDown" in v.reason
    assert g.throttled(_alert("HAProxyServerDown", fp="x3"), r) is None  # another name
    assert g.throttled(_alert("HostDown", fp="x4"), table.route("lb-down")) is None
    clock.now += 601
    assert g.throttled(_alert("HostDown", fp="x5"), r) is None
    two = dataclasses.replace(r, max_runs=2)
    g.note(_alert("HostDown", fp="x6"), two, "a2")
    assert g.throttled(_alert("HostDown", fp="x7"), two) is None
    g.note(_alert("HostDown", fp="x7"), two, "a3")
    assert g.throttled(_alert("HostDown", fp="x8"), two) is not None


def test_a_flapping_alert_triggers_one_run(table: routes.Routes) -> None:
    """Firing, resolved, firing again: the same fingerprint, within the window."""
    clock = Clock()
    g = guard.Guard(clock)
    r = table.route("lost-primary")
    a = _alert("NoWritablePrimary", fp="flap")
    acted = 0
    step = r.window_s / 6  # five flaps, all within the window of the first
    for _ in range(5):
        if g.duplicate(a, r, "k") is None and g.throttled(a, r) is None:
            g.note(a, r, "k")
            acted += 1
        clock.now += step
    assert acted == 1


def test_the_guard_remembers_the_decision_log(table: routes.Routes) -> None:
    r = table.route("lost-primary")
    decisions.record(
        "decision",
        decision="ran",
        fingerprint="logged",
        route="lost-primary",
        alertname="NoWritablePrimary",
        runbook="db-failover",
        parameters={"mode": "incident"},
        run_dir="/runs/x",
    )
    decisions.record("decision", decision="duplicate", fingerprint="other", route="lost-primary")
    g = guard.Guard()
    assert g.seed(decisions.entries()) == 1
    v = g.duplicate(_alert("NoWritablePrimary", fp="logged"), r, "k")
    assert v is not None and "/runs/x" in v.reason
    assert g.duplicate(_alert("NoWritablePrimary", fp="other"), r, "k") is None
    old = guard.Guard(lambda: datetime.now(UTC).timestamp() + 2 * guard.SEED_HORIZON_S)
    assert old.seed(decisions.entries()) == 0


def test_a_held_lock_is_locked_for_a_route_that_skips(table: routes.Routes) -> None:
    key = lock.key("lab")
    skip = table.route("host-down")
    wait = table.route("lost-primary")
    assert (skip.lock, wait.lock, wait.lock_wait_s) == ("skip", "wait", 120.0)
    assert guard.locked(key, skip) is None
    with lock.hold(key, "run db-failover", trigger="alert:abc"):
        v = guard.locked(key, skip)
        assert v is not None and v.decision == "locked"
        assert "run db-failover" in v.reason and "alert:abc" in v.reason
        assert guard.locked(key, wait) is None  # the run waits for it itself
        assert guard.locked(key, dataclasses.replace(wait, lock_wait_s=0.0)) is not None
    assert guard.locked(key, skip) is None


def test_faultbook_run_refuses_a_busy_inventory_with_75(home: Path) -> None:
    from lock_fixtures import held_elsewhere

    with held_elsewhere("lab", True, "suite smoke", trigger="schedule:nightly"):
        res = CliRunner().invoke(main, ["run", "health-check", "--out", str(home / "out")])
    assert res.exit_code == 75, res.output
    assert "suite smoke" in res.output and "schedule:nightly" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_faultbook_run_lock_wait_must_be_finite_and_not_negative(value: str) -> None:
    res = CliRunner().invoke(main, ["run", "health-check", "--lock-wait", value])
    assert res.exit_code == 2 and "--lock-wait must be a number of seconds >= 0" in res.output
