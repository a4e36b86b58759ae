"""A route's ``settle``: act only if the alert still fires after it (a symptom that clears
by itself starts nothing, and does not count against the next real failure)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alerts_fixtures import alert, body, fake_command

from faultbook import decisions, inventory
from faultbook.alerts import dispatch, payload, routes
from faultbook.errors import RoutesError

ROUTES = """
autopilot_allow: [web-node-down]
routes:
  - name: web-node-down
    match: {alertname: HAProxyServerDown, host_group: web}
    host_label: [server]
    runbook: web-node-failure
    policy: autopilot
    parameters: {target: "{host}"}
    settle: 0.3s
    window: 2m
unrouted:
  - {alert: HostDown, reason: test}
"""


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAULTBOOK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FAKE_RUN_EXIT", raising=False)
    return tmp_path / "home"


def _run(tmp: Path, firing: list[bool], alerts: list[dict[str, Any]]) -> list[str]:
    lab = inventory.load("lab")
    f = tmp / "routes.yml"
    f.write_text(ROUTES)
    table = routes.load(lab, f)
    answers = iter(firing)

    async def go() -> None:
        d = dispatch.Dispatcher(
            lab, table, command=fake_command(tmp), still_firing=lambda a: next(answers)
        )
        for a in alerts:
            await d.handle(payload.parse(body(a)), None)
            await d.drain(30)

    asyncio.run(go())
    return [e["decision"] for e in decisions.entries(event="decision")]


def test_an_alert_that_clears_while_settling_runs_nothing(tmp_path: Path) -> None:
    a = alert("HAProxyServerDown", {"server": "web2", "instance": "lb1"})
    got = _run(tmp_path, [False, True], [a, a])
    # Cleared the first time; the same alert firing again is acted on (not a duplicate).
    assert got == ["settling", "cleared", "settling", "ran"]
    assert [e["runbook"] for e in decisions.entries(event="run-finished")] == ["web-node-failure"]


def test_a_repeat_while_settling_is_a_duplicate(tmp_path: Path) -> None:
    lab = inventory.load("lab")
    f = tmp_path / "routes.yml"
    f.write_text(ROUTES)
    table = routes.load(lab, f)
    a = payload.parse(body(alert("HAProxyServerDown", {"server": "web2", "instance": "lb1"})))

    async def go() -> None:
        d = dispatch.Dispatcher(
            lab, table, command=fake_command(tmp_path), still_firing=lambda a: True
        )
        await d.handle(a, None)
        await d.handle(a, None)  # Alertmanager's repeat, within the settle time
        await d.drain(30)

    asyncio.run(go())
    assert [e["decision"] for e in decisions.entries(event="decision")] == [
        "settling",
        "duplicate",
        "ran",
    ]


def test_settle_is_validated(tmp_path: Path) -> None:
    f = tmp_path / "routes.yml"
    f.write_text(ROUTES.replace("settle: 0.3s", "settle: soon"))
    with pytest.raises(RoutesError, match="settle"):
        routes.load(inventory.load("lab"), f)


def test_a_recovery_preempts_a_read_only_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """backup1 down starts a read-only health-check that holds the inventory; the primary
    is lost next: the diagnosis is stopped, the failover does not wait behind it."""
    from dataclasses import replace

    from faultbook import lock

    lab = inventory.load("lab")
    t = routes.load(lab)
    table = replace(t, routes=tuple(replace(r, settle_s=0.0) for r in t.routes))
    monkeypatch.setenv("FAKE_RUN_SLEEP", "60")

    async def go() -> None:
        d = dispatch.Dispatcher(lab, table, command=fake_command(tmp_path))
        await d.handle(payload.parse(body(alert("HostDown", {"instance": "backup1"}))), None)
        for _ in range(200):  # until the read-only run holds the lock
            if lock.holder(lock.key(str(lab.path))):
                break
            await asyncio.sleep(0.05)
        monkeypatch.setenv("FAKE_RUN_SLEEP", "0")
        await d.handle(payload.parse(body(alert("NoWritablePrimary", fingerprint="0f"))), None)
        await d.drain(30)  # shorter than the diagnosis: only a preempted one lets it end

    asyncio.run(go())
    got = [e["decision"] for e in decisions.entries(event="decision")]
    assert got == ["diagnosed", "preempted", "ran"]
    done = {e["runbook"]: e for e in decisions.entries(event="run-finished")}
    assert done["db-failover"]["exit_status"] == 0
    assert done["health-check"]["preempted"] and not done["health-check"]["page"]


def test_no_recovery_is_queued_behind_a_drill(tmp_path: Path) -> None:
    """A drill crashes the primary on purpose and recovers itself: the receiver starts
    nothing, even for a route that would wait for the lock."""
    from faultbook import lock

    lab = inventory.load("lab")
    table = routes.load(lab)

    async def go() -> None:
        d = dispatch.Dispatcher(lab, table, command=fake_command(tmp_path))
        with lock.hold(lock.key(str(lab.path)), "run db-failover", drill=True):
            await d.handle(payload.parse(body(alert("NoWritablePrimary", fingerprint="d1"))), None)
        await d.drain(10)

    asyncio.run(go())
    got = [(e["decision"], e["reason"]) for e in decisions.entries(event="decision")]
    assert [g[0] for g in got] == ["locked"] and "in a drill" in got[0][1]
    assert list(decisions.entries(event="run-finished")) == []
