"""Incidents as they look: several nodes of a tier down at once, one of them powered off.

Two web nodes down (one powered off) are recovered in JupyterLab by the browser test
(test_oncall_browser.py), with confirmations typed in; this file covers the lbs.

Real faults on the lab (a host powered off, a unit stopped), then the tier's runbook in
incident mode, run by papermill as `faultbook run -p confirm true` runs it (the
standing confirmation of an unattended run). Each must bring every failed node back in
one run, say what it did for each, record its confirmations, and leave the stack in
steady state. The alert receiver is stopped (make integration): autopilot must not act
on these faults alongside the test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from faultbook import inventory as inv_mod
from faultbook import ssh
from faultbook.drills import procedure
from faultbook.lab.lab import Lab
from faultbook.report import runner
from faultbook.stack import vip

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def inv(lab: Lab) -> inv_mod.Inventory:
    return lab.inv


def incident(name: str, out: Path, **params: Any) -> dict[str, Any]:
    outcome = runner.run(name, {"mode": "incident", "confirm": True, **params}, out)
    doc: dict[str, Any] = json.loads((out / "result.json").read_text())
    failed = [f"{s['name']}: {s['detail']}" for s in doc["steps"] if s["status"] == "failed"]
    assert outcome.exit_code == 0, f"{name}: verdict {doc['verdict']}; {failed}"
    assert doc["mode"] == "incident"
    return doc


@pytest.mark.extended  # the browser incident covers an incident run
def test_both_load_balancers_down_in_one_run(
    lab: Lab, inv: inv_mod.Inventory, tmp_path: Path
) -> None:
    holder = vip.vip_holder(inv)
    other = next(lb for lb in ("lb1", "lb2") if lb != holder)
    lab.crash(other)  # the backup first, so that the VIP has nowhere to go
    r = ssh.run(inv, str(holder), "systemctl stop keepalived.service haproxy.service", sudo=True)
    assert r.ok, r.stderr
    try:
        doc = incident("lb-failover", tmp_path)
    finally:
        lab.boot(other)
    names = [s["name"] for s in doc["steps"] if s["status"] == "ok"]
    assert f"power on {other}" in names
    assert {f"rejoin {holder}", f"rejoin {other}"} <= set(names)
    assert {c["host"] for c in doc["confirmations"]} == {"lb1", "lb2"}
    lbs = vip.lb_status(inv)
    assert lbs["holds_vip"].sum() == 1 and set(lbs["keepalived"]) == {"active"}
    assert procedure.steady_state(inv).ok
