"""Alerts reach runbooks: the lab's real Alertmanager cluster posts to the real receiver.

Bad input is refused with a 4xx and runs nothing. Then the primary is crashed
under client load with nobody touching anything: the receiver's autopilot
route starts db-failover from NoWritablePrimary, which fences, promotes and
rejoins. The invariants: no acknowledged write lost, the stack steady again,
and exactly one run for the alert. The same must hold with one mon host
crashed first. No wall-clock limits.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from faultbook import decisions
from faultbook import inventory as inv_mod
from faultbook.alerts import drill, server, service
from faultbook.drills import faults, procedure
from faultbook.lab.lab import Lab
from faultbook.poll import poll

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def inv(lab: Lab) -> Iterator[inv_mod.Inventory]:
    """The receiver on the lab's own routes for this module only: the other integration
    tests inject faults outside any run (no run lock), and autopilot would act on them."""
    service.start(lab.inv)  # `faultbook lab up` starts it; a no-op when it is up
    try:
        yield lab.inv
    finally:
        service.stop(lab.inv)


def _url(inv: inv_mod.Inventory) -> str:
    host, port = server.listen_address(inv)
    return f"http://{host}:{port}/"


def _payload(version: str = "4") -> dict[str, Any]:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {
        "version": version,
        "groupKey": '{}:{alertname="NoWritablePrimary"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "faultbook-webhook",
        "groupLabels": {"alertname": "NoWritablePrimary"},
        "commonLabels": {"alertname": "NoWritablePrimary", "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://10.77.0.51:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "NoWritablePrimary", "severity": "critical"},
                "annotations": {},
                "startsAt": now,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://10.77.0.51:9090/graph",
                "fingerprint": "badinputtest0001",
            }
        ],
    }


def _since(t0: str, event: str) -> list[dict[str, Any]]:
    return [e for e in decisions.entries(event=event) if e["at"] >= t0]


def test_bad_input_gets_a_4xx_and_runs_nothing(inv: inv_mod.Inventory) -> None:
    url, token = _url(inv), server.token(inv)
    good = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    t0 = decisions.now_iso()
    cases = [
        ("malformed JSON", b"{not json", good, 400),
        ("wrong payload version", json.dumps(_payload("3")).encode(), good, (400, 422)),
        ("body over 1 MiB", b"{" + b" " * (1024 * 1024 + 10) + b"}", good, 413),
        (
            "missing token",
            json.dumps(_payload()).encode(),
            {"Content-Type": "application/json"},
            401,
        ),
        (
            "wrong token",
            json.dumps(_payload()).encode(),
            {"Authorization": "Bearer not-the-token", "Content-Type": "application/json"},
            403,
        ),
    ]
    with requests.Session() as s:
        s.trust_env = False
        for what, body, headers, expected in cases:
            r = s.post(url, data=body, headers=headers, timeout=10)
            ok = (
                r.status_code in expected
                if isinstance(expected, tuple)
                else r.status_code == expected
            )
            assert ok, f"{what}: HTTP {r.status_code} {r.text[:200]}"
    refused = _since(t0, "decision")
    assert [e["decision"] for e in refused] == ["refused"] * len(cases), refused
    assert not [e for e in _since(t0, "decision") if e["decision"] in ("ran", "diagnosed")]
    assert service.status(inv)["up"]


def _story(r: drill.AutopilotResult) -> str:
    """What went wrong in the receiver's run: its steps that did not pass, the tail of
    its log, and every decision since the fault (a failed autopilot run says why)."""
    lines = [f"finished: {r.finished}"]
    run_dir = Path((r.finished or {}).get("run_dir") or "/nonexistent")
    if (run_dir / "result.json").exists():
        steps = json.loads((run_dir / "result.json").read_text()).get("steps", [])
        lines += [f"step {s['name']}: {s['status']} {s['detail'][:300]}" for s in steps]
    if (run_dir / "run.log").exists():
        lines += (run_dir / "run.log").read_text(errors="replace").splitlines()[-25:]
    lines += [
        f"{e['at']} {e.get('decision')} {e.get('alertname')} {e.get('runbook')}: "
        f"{str(e.get('reason'))[:160]}"
        for e in r.runs
    ]
    return "\n".join(lines)


def _assert_autopilot(r: drill.AutopilotResult, inv: inv_mod.Inventory) -> None:
    res = r.result
    assert res is not None and res.acked_writes > 0
    assert res.lost_writes == 0, f"lost acknowledged writes: {res.lost_ids}"
    assert r.finished is not None and r.finished["exit_status"] == 0, _story(r)
    assert r.finished["verdict"] == "pass"
    db_runs = [e for e in r.runs if e.get("alertname") == "NoWritablePrimary"]
    assert len(db_runs) == 1, f"expected one db-failover run for the alert, got {db_runs}"
    # Any other run the fault's alerts started must have made nothing worse.
    for e in r.runs:
        result = Path(e["run_dir"]) / "result.json"
        if e["decision"] == "ran" and result.exists():  # no result: it found the lock held
            assert json.loads(result.read_text())["verdict"] == "pass", e
    assert r.procedure.run.verdict == "pass", r.procedure.verdict()
    state = procedure.steady_state(inv)
    assert state.ok, str(state)


def test_autopilot_fails_over_a_crashed_primary(inv: inv_mod.Inventory, tmp_path: Path) -> None:
    r = drill.run(inv, "db", "host-crash", result_dir=str(tmp_path))
    _assert_autopilot(r, inv)
    assert r.segments["fault_to_writes_back"] is not None


@pytest.mark.extended  # autopilot's crash case covers the route
def test_autopilot_with_one_mon_host_down(inv: inv_mod.Inventory, tmp_path: Path) -> None:
    mon = inv.group("mon")[0].name
    r = drill.run(
        inv, "db", "host-crash", pre_faults=[("host-crash", mon)], result_dir=str(tmp_path)
    )
    _assert_autopilot(r, inv)
    assert Lab(inv).pid(mon) is not None, f"{mon} was not booted again"


def test_a_symptom_alert_runs_triage_which_prepares_the_fix(inv: inv_mod.Inventory) -> None:
    """A cut inside the primary against the whole web tier: every web node fails
    /readyz, so HAProxy's backend has no server up and the VIP probe fails (symptoms;
    the primary itself stays writable, so NoWritablePrimary does not inhibit them). The
    receiver runs triage read-only; triage names the cut and proposes a switchover to a
    standby the web tier reaches, which alerts never start: it is prepared for a person.
    The cut reverts itself (max_s) and is rolled back here; the stack is steady again."""
    state = procedure.wait_steady_state(inv, timeout_s=180)
    assert state.ok and state.primary, str(state)
    webs = [h.name for h in inv.group("web")]
    t0 = decisions.now_iso()
    fault = faults.make("path-cut", inv, state.primary, peers=webs, max_s=240)
    fault.prepare()
    fault.inject()
    try:

        def prepared(_t: float) -> list[dict[str, Any]] | None:
            got = [e for e in _since(t0, "decision") if e["decision"] == "prepared"]
            return [e for e in got if e.get("runbook") == "db-failover"] or None

        handed = poll(prepared, 240, what="db-failover prepared after triage", interval_s=2)
    finally:
        fault.rollback()
    made = _since(t0, "decision")
    # The triage run may have started a moment before t0: a symptom of an earlier test's
    # fault (LedgerErrorRate after a crash) starts the same read-only run, and this cut's
    # alerts are then duplicates of it. Its hand-over names the cut either way.
    link = f"web tier → {state.primary}:5432"
    assert "triage (" in handed[0]["reason"] and f"names {link}" in handed[0]["reason"], handed
    assert not [e for e in made if e["decision"] == "ran"], made  # nothing unattended
    params = handed[0]["parameters"]
    assert params["mode"] == "switchover" and params["new_primary"] != state.primary, handed
    after = procedure.wait_steady_state(inv, timeout_s=180)
    assert after.ok, str(after)
