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
