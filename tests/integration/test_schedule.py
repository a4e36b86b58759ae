"""Drills on a schedule, end to end: cron runs the smoke suite as it would at 3 a.m.

`faultbook schedule add smoke --cron …` (the CLI, as a person types it) puts a
cron line on this controller, whose next run falls within a minute. Cron, not
the test, starts `faultbook suite run smoke`. The test checks what an operator
would look at the next morning:

- every entry passed, with the invariants of the drills it ran (no
  acknowledged write lost, no failed request where none is promised, the
  primary and the VIP moved, the stack back in steady state);
- each run is in the archive (notebook, HTML, result.json, traffic records,
  fault journal) and in the audit log, started by ``schedule:NAME``;
- a second run started while the scheduled one holds the inventory's lock is
  recorded as skipped, with the holder named;
- `faultbook history` lists the runs, from the schedule;
- `faultbook audit verify` passes, fails once an archived result.json is
  edited (naming the entry), and passes again once it is put back.

These entries replace test_drills.py's own web service-kill, primary crash
and VIP holder crash drills: the same runbooks, run the scheduled way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from faultbook import inventory as inv_mod
from faultbook import lock
from faultbook.archive import audit, store
from faultbook.drills import procedure
from faultbook.lab.lab import Lab
from faultbook.paths import faultbook_home
from faultbook.stack import failover, haproxy, vip

pytestmark = pytest.mark.integration

NAME = "it-smoke"
FB = [sys.executable, "-m", "faultbook.cli"]


@pytest.fixture(scope="module")
def inv(lab: Lab) -> inv_mod.Inventory:
    return lab.inv


def fb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FB, *args], capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )


def next_minute() -> str:
    """A cron expression for the next whole minute that cron can still see coming
    (it reads /etc/cron.d when it wakes, at each minute's start)."""
    now = datetime.now()  # cron's own clock: local time
    at = (now + timedelta(minutes=1 if now.second < 45 else 2)).replace(second=0)
    return f"{at.minute} {at.hour} * * *"


def wait_for(path: Path, newer_than: float, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_mtime > newer_than:
            return
        time.sleep(2)
    raise AssertionError(f"{path} was not written within {timeout_s:.0f}s")


def wait_holding(inv: inv_mod.Inventory, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        holder = lock.holder(inv)
        if holder and holder.get("trigger") == f"schedule:{NAME}":
            return holder
        time.sleep(1)
    raise AssertionError(f"cron did not start the suite within {timeout_s:.0f}s")


def assert_steady(inv: inv_mod.Inventory) -> None:
    state = procedure.steady_state(inv)
    assert state.ok, str(state)
    rep = failover.replication(inv, state.primary or "")
    assert set(rep["state"]) == {"streaming"} and len(rep) == len(inv.group("db")) - 1
    assert rep["sync_state"].isin(["sync", "quorum"]).any()


def entry_doc(suite: dict[str, Any], name: str) -> dict[str, Any]:
    entry = next(e for e in suite["entries"] if e["entry"] == name)
    assert entry["status"] == "pass", f"{name}: {entry['status']} {entry['reason']}"
    doc = store.read_json(Path(entry["archived"]) / "result.json")
    assert doc is not None, f"{name}: no result.json in {entry['archived']}"
    return doc


def test_a_scheduled_smoke_suite_lands_in_the_archive_audit_and_history(
    inv: inv_mod.Inventory, tmp_path: Path
) -> None:
    home = faultbook_home()
    primary = procedure.steady_state(inv).primary
    holder_lb = vip.vip_holder(inv)
    before = {r.path.name for r in store.runs(home)}
    out = home / "schedules" / NAME / "last" / "suite.json"
    started = time.time()

    added = fb("schedule", "add", "smoke", "--cron", next_minute(), "--name", NAME)
    assert added.returncode == 0, added.stderr
    try:
        assert NAME in fb("schedule", "list").stdout
        wait_holding(inv, 150)
        # A second run while the scheduled one holds the lock: recorded as skipped.
        second = fb("suite", "run", "smoke", env={"FAULTBOOK_TRIGGER": "schedule:it-second"})
        assert second.returncode == 75, second.stdout + second.stderr
        assert f"schedule:{NAME}" in second.stderr
        wait_for(out, started, 1500)
    finally:
        removed = fb("schedule", "remove", NAME)
    assert removed.returncode == 0, removed.stderr
    assert NAME not in fb("schedule", "list").stdout

    # The audit log and the archive outlive a test run: only what this run added counts.
    since = datetime.fromtimestamp(started, UTC).isoformat(timespec="milliseconds")[:23]
    skipped = [
        e
        for e in audit.entries(home)
        if e.get("trigger") == "schedule:it-second" and str(e.get("at", "")) >= since
    ]
    assert [e["kind"] for e in skipped] == ["run-skipped"]
    assert f"schedule:{NAME}" in skipped[0]["reason"]

    suite = json.loads(out.read_text())
    assert suite["trigger"] == f"schedule:{NAME}" and suite["verdict"] == "pass", suite

    web = entry_doc(suite, "web-service-kill")
    assert web["metrics"]["failed_requests"] == 0 and web["metrics"]["lost_writes"] == 0
    assert web["fault"]["kind"] == "service-kill" and web["fault"]["reverted_at"]
    assert web["fault"]["target"] not in haproxy.failed_backends(inv)

    db = entry_doc(suite, "db-primary-crash")
    assert db["metrics"]["lost_writes_checked"] is True and db["metrics"]["acked_writes"] > 0
    assert db["metrics"]["lost_writes"] == 0
    assert db["metrics"]["failed_reads"] == 0  # reads go to a standby meanwhile
    assert db["fault"]["target"] == primary

    lb = entry_doc(suite, "lb-vip-holder-crash")
    assert lb["metrics"]["lost_writes"] == 0
    assert lb["fault"]["target"] == holder_lb

    entry_doc(suite, "backup-verify")
    assert procedure.steady_state(inv).primary not in (None, primary)
    assert vip.vip_holder(inv) not in (None, holder_lb)  # nopreempt: it stays moved
    assert_steady(inv)

    # The archive: one folder per entry, each with its files, each in the audit log.
    new = [r for r in store.runs(home) if r.path.name not in before]
    assert len(new) == len(suite["entries"]) == 5
    entries = {
        e.get("path"): e for e in audit.entries(home) if e.get("trigger") == f"schedule:{NAME}"
    }
    for run in new:
        names = {p.name for p in run.path.iterdir()}
        wanted = {"result.json", "archive.json", f"{run.runbook}.ipynb", f"{run.runbook}.html"}
        assert wanted <= names, (run.path, names)
        assert f"runs/{run.path.name}" in entries, f"{run.path.name} has no audit entry"
    drill = next(r for r in new if r.runbook == "db-failover")
    assert {"traffic.csv", "faults.jsonl"} <= {p.name for p in drill.path.iterdir()}

    # History: the runs, from the schedule.
    site = tmp_path / "history"
    hist = fb("history", "--out", str(site), "--json")
    assert hist.returncode == 0, hist.stderr
    rows = json.loads(hist.stdout)["runs"]
    folders = {str(r.path) for r in new}
    ours = [r for r in rows if r["folder"] in folders]
    assert {r["trigger"] for r in ours} == {f"schedule:{NAME}"}
    assert {r["source"] for r in ours} == {"schedule"}
    assert len(ours) == 5, ours
    assert (site / "index.html").is_file()

    # The audit trail: verified; an edited result.json is found; put back, verified.
    ok = fb("audit", "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    target = drill.path / "result.json"
    original = target.read_bytes()
    try:
        target.write_bytes(original.replace(b'"lost_writes": 0', b'"lost_writes": 1', 1))
        assert target.read_bytes() != original
        bad = fb("audit", "verify")
        assert bad.returncode == 1
        assert drill.path.name in bad.stdout + bad.stderr
    finally:
        target.write_bytes(original)
    assert fb("audit", "verify").returncode == 0
