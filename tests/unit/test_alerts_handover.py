"""Triage hands over: a symptom alert runs triage read-only; the runbook it names runs
unattended only where triage allows it and a route of that runbook is allow-listed,
else it is prepared for a person. The diagnoses are real ones, made by
``triage.diagnose`` from the recorded evidence of tests/unit/triage_fixtures.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import triage_fixtures as rec
from alerts_fixtures import alert, body, fake_command

from faultbook import decisions, inventory
from faultbook.alerts import dispatch, handover, payload, routes
from faultbook.errors import RoutesError
from faultbook.triage import evidence as ev
from faultbook.triage.diagnose import diagnose


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAULTBOOK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FAKE_RUN_EXIT", raising=False)
    return tmp_path / "home"


def web2_down() -> dict[str, Any]:
    off = ev.WebEvidence("web2", False, error="no answer on 10.77.0.22:22 within 1.5s")
    return diagnose(rec.evidence(webs={"web2": off}, lbs=rec.both_lbs_mark("web2"))).to_dict()


def web2_cut() -> dict[str, Any]:
    return diagnose(rec.cut_web2(rec.BLOCKED)).to_dict()


# ---------------------------------------------------------------- the plan (pure)
def test_an_allow_listed_runbook_is_handed_over_with_confirm() -> None:
    lab = inventory.load("lab")
    h = handover.plan(routes.load(lab), lab, web2_down(), Path("/runs/t"))
    assert h is not None and h.route is not None and h.route.name == "web-node-down"
    assert h.parameters == {
        "inventory": str(lab.path),
        "mode": "incident",
        "target": "web2",
        "confirm": True,
    }
    assert h.reason == (
        "triage (/runs/t) names web2; handed over to web-node-failure by route "
        "web-node-down (allow-listed)"
    )


def test_without_an_allow_listed_route_it_is_prepared() -> None:
    example = inventory.load("example")
    h = handover.plan(routes.load(example), example, web2_down(), Path("/runs/t"))
    assert h is not None and h.route is None and h.parameters["confirm"] is False
    assert h.reason.endswith(
        "no route of web-node-failure is in autopilot_allow of alert-routes.yml: prepared instead"
    )


def test_a_fix_triage_leaves_to_a_person_is_prepared_even_when_allow_listed() -> None:
    lab = inventory.load("lab")
    h = handover.plan(routes.load(lab), lab, web2_cut(), Path("/runs/t"))
    assert h is not None and h.route is None and h.runbook == "web-node-failure"
    assert "web-node-failure is for a person: drain web2" in h.reason
    assert h.parameters["confirm"] is False and h.parameters["target"] == "web2"


def test_a_switchover_is_never_started_by_an_alert() -> None:
    lab = inventory.load("lab")
    doc = diagnose(rec.cut_web_tier()).to_dict()
    doc["finding"]["proposals"][0]["hand_over"] = True  # even if a diagnosis said so
    h = handover.plan(routes.load(lab), lab, doc, Path("/runs/t"))
    assert h is not None and h.route is None
    assert "db-failover in mode switchover is never started by an alert" in h.reason
    assert h.parameters["new_primary"] == "db2"


def test_nothing_to_run_when_nothing_broke_or_the_fix_is_a_person_s_action() -> None:
    lab = inventory.load("lab")
    table = routes.load(lab)
    assert handover.plan(table, lab, diagnose(rec.evidence()).to_dict(), Path("/r")) is None
    doc = web2_cut()
    doc["finding"]["proposals"] = doc["finding"]["proposals"][1:]  # the repair only
    assert handover.plan(table, lab, doc, Path("/r")) is None


def test_a_parameter_the_runbook_lacks_is_refused() -> None:
    lab = inventory.load("lab")
    doc = web2_down()
    doc["finding"]["proposals"][0]["parameters"] = {"node": "web2"}
    with pytest.raises(RoutesError, match="triage proposed parameter 'node'"):
        handover.plan(routes.load(lab), lab, doc, Path("/r"))


# ---------------------------------------------------------------- the receiver
def _receive(tmp: Path, diagnosis: dict[str, Any], inv_name: str = "lab") -> list[dict]:
    """VIPProbeFailing through the inventory's own routes; the fake triage run leaves
    DIAGNOSIS as its triage.json. Returns the decisions."""
    inv = inventory.load(inv_name)
    inner = fake_command(tmp)

    def command(runbook: str, params: Any, out: Path, wait_s: float) -> list[str]:
        if runbook == "triage":
            (out / "triage.json").write_text(json.dumps(diagnosis))
        return inner(runbook, params, out, wait_s)

    async def go() -> None:
        d = dispatch.Dispatcher(inv, routes.load(inv), command=command, still_firing=lambda a: True)
        await d.handle(payload.parse(body(alert("VIPProbeFailing", {"instance": "vip"}))), None)
        await d.drain(60)

    asyncio.run(go())
    return list(decisions.entries(event="decision"))


def test_the_receiver_runs_the_named_runbook_after_triage(tmp_path: Path) -> None:
    got = _receive(tmp_path, web2_down())
    assert [(e["decision"], e["runbook"]) for e in got] == [
        ("diagnosed", "triage"),
        ("ran", "web-node-failure"),
    ]
    assert got[0]["parameters"]["symptom"] == "vip-probe"
    ran = got[1]
    assert ran["route"] == "web-node-down" and ran["policy"] == "autopilot"
    assert ran["parameters"]["target"] == "web2" and ran["parameters"]["confirm"] is True
    assert ran["reason"].startswith(f"triage ({got[0]['run_dir']}) names web2")
    argv = json.loads((Path(ran["run_dir"]) / "argv.json").read_text())
    assert argv["params"]["target"] == "web2" and argv["params"]["confirm"] == "true"
    finished = [e["runbook"] for e in decisions.entries(event="run-finished")]
    assert finished == ["triage", "web-node-failure"]


def test_the_receiver_prepares_what_triage_leaves_to_a_person(tmp_path: Path) -> None:
    got = _receive(tmp_path, web2_cut())
    assert [(e["decision"], e["runbook"]) for e in got] == [
        ("diagnosed", "triage"),
        ("prepared", "web-node-failure"),
    ]
    prepared = Path(got[1]["incident_dir"])
    assert (prepared / "web-node-failure.ipynb").is_file()
    assert "is for a person" in got[1]["reason"]


def test_the_receiver_prepares_when_the_inventory_allow_lists_nothing(tmp_path: Path) -> None:
    got = _receive(tmp_path, web2_down(), "example")
    assert [e["decision"] for e in got] == ["diagnosed", "prepared"]
    assert "no route of web-node-failure is in autopilot_allow" in got[1]["reason"]


def test_nothing_broken_hands_over_nothing(tmp_path: Path) -> None:
    got = _receive(tmp_path, diagnose(rec.evidence()).to_dict())
    assert [e["decision"] for e in got] == ["diagnosed"]
