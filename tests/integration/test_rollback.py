"""Rollbacks always run: a drill that fails, is refused or is killed leaves the stack as it was.

Each test runs `faultbook run` as a user would (a subprocess), breaks the drill on
purpose, and checks invariants afterwards: the fault reverted (and recorded so in
result.json or the journal), the stack in steady state. Every wait is bounded
(``poll``); no assertion is about how fast anything was.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faultbook import inventory as inv_mod
from faultbook.drills import journal, procedure, watchdog
from faultbook.errors import PrometheusError
from faultbook.lab.lab import Lab
from faultbook.poll import poll
from faultbook.results import validate
from faultbook.stack import failover, haproxy, monitoring

pytestmark = pytest.mark.integration

FAULTBOOK = str(Path(sys.executable).with_name("faultbook"))
RUN_TIMEOUT_S = 900  # a whole drill plus its rollback; far above what one takes
STEADY_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def inv(lab: Lab) -> inv_mod.Inventory:
    return lab.inv


@pytest.fixture(autouse=True)
def steady_around(inv: inv_mod.Inventory) -> Iterator[None]:
    """Each test starts from steady state and must leave the stack in it."""
    s = procedure.wait_steady_state(inv, STEADY_TIMEOUT_S)
    assert s.ok, f"not in steady state before the test: {s}"
    yield
    s = procedure.wait_steady_state(inv, STEADY_TIMEOUT_S)
    assert s.ok, f"the test left the stack out of steady state: {s}"


def faultbook_run(out: Path, runbook: str, **params: Any) -> subprocess.CompletedProcess[str]:
    argv = [FAULTBOOK, "run", runbook, "--out", str(out)]
    for k, v in params.items():
        argv += ["-p", k, str(v)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)


def assert_steady(inv: inv_mod.Inventory) -> procedure.SteadyState:
    state = procedure.wait_steady_state(inv, STEADY_TIMEOUT_S)
    assert state.ok, str(state)
    rep = failover.replication(inv, state.primary or "")
    assert set(rep["state"]) == {"streaming"} and len(rep) == len(inv.group("db")) - 1
    return state


def test_failed_detection_rolls_back_the_crashed_primary(
    lab: Lab, inv: inv_mod.Inventory, tmp_path: Path
) -> None:
    before = procedure.steady_state(inv).primary
    assert before is not None
    # Detection cannot be met: the probes watch from before the pre-flight, so the
    # silence they saw before the detect step counts, and a crash a few seconds earlier
    # could already pass the default 1.5 s threshold within any timeout. A 30 s
    # threshold with a 1 s timeout cannot: the notebook stops after crashing the primary.
    res = faultbook_run(
        tmp_path, "db-failover", mode="drill", detect_timeout_s=1, detect_threshold_s=30
    )
    assert res.returncode == 1, res.stdout + res.stderr
    doc = json.loads((tmp_path / "result.json").read_text())
    assert validate(doc) == []
    assert doc["verdict"] == "fail"
    rb = doc["rollback"]
    (item,) = rb["faults"]
    assert (item["kind"], item["target"]) == ("host-crash", before)
    assert item["outcome"] == "reverted", item
    assert rb["steady_state"]["ok"] is True, rb["steady_state"]
    assert doc["fault"] is not None and doc["fault"]["target"] == before
    assert any(s["name"] == "rollback" for s in doc["steps"])
    assert not journal.Journal(tmp_path).pending()
    assert lab.pid(before) is not None  # powered on again
    after = assert_steady(inv)
    assert after.primary == before  # nothing was promoted: the old primary serves again


def test_a_drill_killed_after_its_promotion_gets_its_old_primary_rejoined(
    lab: Lab, inv: inv_mod.Inventory, tmp_path: Path
) -> None:
    # SIGTERM once a standby is primary: the drill dies between its promotion and its
    # rejoin. Reverting the crash powers the old primary on, but its start guard keeps it
    # down (another primary exists): the runner's rollback must rejoin it as a standby.
    before = procedure.steady_state(inv).primary
    assert before is not None
    others = [h.name for h in inv.group("db") if h.name != before]
    argv = [FAULTBOOK, "run", "db-failover", "--out", str(tmp_path), "-p", "mode", "drill"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        new = poll(
            lambda _t: next(
                iter(failover.primaries(failover.cluster_state(inv, hosts=others))), None
            ),
            300,
            what=f"a standby promoted in place of {before}",
            interval_s=0.5,
            transient=lambda exc: True,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 128 + signal.SIGTERM, out
    doc = json.loads((tmp_path / "result.json").read_text())
    assert validate(doc) == [] and doc["verdict"] == "fail"
    rb = doc["rollback"]
    # The old primary is rejoined; so is the other standby when the SIGTERM came before
    # the drill repointed it (it then streams from no one).
    repaired = {(r["host"], r["primary"], r["outcome"]) for r in rb["repairs"]}
    assert (before, new, "rejoined") in repaired, rb
    assert repaired <= {(h, new, "rejoined") for h in others if h != new} | {
        (before, new, "rejoined")
    }, rb
    assert rb["steady_state"]["ok"] is True, rb["steady_state"]
    assert not journal.Journal(tmp_path).pending()
    after = assert_steady(inv)
    assert after.primary == new


def test_monitoring_down_refuses_before_any_fault(
    lab: Lab, inv: inv_mod.Inventory, tmp_path: Path
) -> None:
    mons = [h.name for h in inv.group("mon")]  # every one: a single mon host down is no reason
    primary = procedure.steady_state(inv).primary
    assert primary is not None
    for mon in mons:
        lab.crash(mon)
    try:
        res = faultbook_run(tmp_path, "db-failover", mode="drill")
        assert res.returncode == 1, res.stdout + res.stderr
        refused = [ln for ln in res.stderr.splitlines() if "drill refused" in ln]
        assert len(refused) == 1, res.stderr
        assert "Prometheus" in refused[0] and all(m in refused[0] for m in mons)
        assert "Traceback" not in res.stderr
        doc = json.loads((tmp_path / "result.json").read_text())
        assert validate(doc) == []
        assert doc["verdict"] == "fail" and doc["fault"] is None and "rollback" not in doc
        assert [s["name"] for s in doc["steps"] if s["status"] == "failed"] == ["pre-flight"]
        assert journal.Journal(tmp_path).entries() == []  # nothing was injected
        assert not (tmp_path / "traffic.csv").exists()  # nor any client load started
        assert lab.pid(primary) is not None
        state = failover.cluster_state(inv)
        assert failover.primaries(state) == [primary]  # the primary untouched
    finally:
        for mon in mons:
            lab.boot(mon)
        poll(
            lambda t: monitoring.raw_alerts(inv, timeout=t) is not None or None,
            STEADY_TIMEOUT_S,
            what=f"Prometheus on {mon} answers again",
            transient=lambda exc: isinstance(exc, PrometheusError),
            interval_s=1.0,
        )


def test_sigkill_of_the_controller_still_powers_the_node_on(
    lab: Lab, inv: inv_mod.Inventory, tmp_path: Path
) -> None:
    node = inv.group("web")[-1].name
    argv = [FAULTBOOK, "run", "web-node-failure", "--out", str(tmp_path)]
    for k, v in {"mode": "drill", "fault": "host-crash", "target": node, "duration_s": 15}.items():
        argv += ["-p", k, str(v)]
    with (tmp_path.parent / f"{tmp_path.name}.log").open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    j = journal.Journal(tmp_path)
    try:
        entry = poll(
            lambda _t: next((e for e in j.entries() if e.injected_at), None),
            300,
            what=f"host-crash of {node} journaled as injected",
            interval_s=0.05,
        )
    finally:
        # The controller dies at once, before the drill can drain or recover anything:
        # `faultbook run` and its notebook's kernel (the owner the journal names).
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    owner = int(entry.owner["pid"]) if journal.alive(entry.owner) else None
    if owner is not None:
        os.kill(owner, signal.SIGKILL)
    try:
        assert entry.lab and entry.kind == "host-crash" and entry.target == node
        # Nobody is left but the watchdog: it powers the node on, bounded by max_s + margin.
        poll(
            lambda _t: lab.pid(node),
            entry.max_s + watchdog.MARGIN_S,
            what=f"{node} powered on by the watchdog",
            interval_s=1.0,
        )
        done = poll(
            lambda _t: x if (x := j.entry(entry.id)) is not None and not x.pending else None,
            entry.max_s + watchdog.MARGIN_S,
            what="the watchdog's record in the journal",
            interval_s=1.0,
        )
        assert done.reverted_by == "watchdog" and done.outcome == "reverted", done
        log_text = watchdog.log_path(tmp_path, entry).read_text()
        assert "rolled back" in log_text and "exiting" in log_text
        poll(
            lambda _t: None if haproxy.failed_backends(inv).failed else True,
            STEADY_TIMEOUT_S,
            what=f"HAProxy has {node} UP again",
            interval_s=1.0,
        )
    finally:
        if lab.pid(node) is None:  # leave the stack whole even when the test failed
            lab.boot(node)


def test_sigterm_to_the_runner_reverts_a_frozen_service(
    inv: inv_mod.Inventory, tmp_path: Path
) -> None:
    node = inv.group("web")[0].name
    argv = [FAULTBOOK, "run", "web-node-failure", "--out", str(tmp_path)]
    for k, v in {
        "mode": "drill",
        "fault": "process-freeze",
        "target": node,
        "duration_s": 15,
    }.items():
        argv += ["-p", k, str(v)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    j = journal.Journal(tmp_path)
    try:
        poll(
            lambda _t: next((e for e in j.entries() if e.injected_at), None),
            300,
            what=f"process-freeze on {node} journaled as injected",
            interval_s=0.05,
        )
    finally:
        proc.send_signal(signal.SIGTERM)  # what a CI job's timeout or `kill` sends
    out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 128 + signal.SIGTERM, out
    doc = json.loads((tmp_path / "result.json").read_text())
    assert validate(doc) == [] and doc["verdict"] == "fail"
    (item,) = doc["rollback"]["faults"]
    assert (item["kind"], item["target"], item["by"]) == ("process-freeze", node, "runner")
    # Reverted by the runner, or (had the drill reached its own revert) already reverted.
    assert item["outcome"] in ("reverted", "already reverted"), item
    assert doc["rollback"]["steady_state"]["ok"] is True, doc["rollback"]
    assert not faults_in_effect(inv, item)


def faults_in_effect(inv: inv_mod.Inventory, item: dict[str, Any]) -> bool:
    from faultbook.drills import faults

    return faults.make(item["kind"], inv, item["target"], unit="ledger.service").in_effect()
