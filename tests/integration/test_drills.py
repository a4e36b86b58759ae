"""The failover drills, run by papermill exactly as `faultbook run` runs them.

Each drill injects a real fault under real client load through the VIP and
must leave the stack in steady state for the next one. The assertions are the
invariants of the failover issue, read from result.json: no acknowledged
write lost, no failed request where the design promises none, the cluster
back to three db nodes with a synchronous standby. No wall-clock limits.

The web service-kill, the primary's host crash and the VIP holder's crash run
in test_schedule.py, as the smoke suite's entries started by cron, with the
same invariants.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from faultbook import inventory as inv_mod
from faultbook.drills import procedure
from faultbook.errors import FaultbookError
from faultbook.lab.lab import Lab
from faultbook.report import runner
from faultbook.stack import failover

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def inv(lab: Lab) -> inv_mod.Inventory:
    return lab.inv


def drill(name: str, out: Path, **params: Any) -> dict[str, Any]:
    outcome = runner.run(name, {"mode": "drill", **params}, out)
    doc = json.loads((out / "result.json").read_text())
    failed = [f"{s['name']}: {s['detail']}" for s in doc["steps"] if s["status"] == "failed"]
    assert outcome.exit_code == 0, f"{name} {params}: verdict {doc['verdict']}; {failed}"
    assert doc["mode"] == "drill"
    assert doc["metrics"]["lost_writes_checked"] is True
    assert doc["metrics"]["total_requests"] > 0
    assert doc["metrics"]["acked_writes"] > 0
    return doc


def assert_steady(inv: inv_mod.Inventory) -> None:
    state = procedure.steady_state(inv)
    assert state.ok, str(state)
    rep = failover.replication(inv, state.primary or "")
    assert set(rep["state"]) == {"streaming"} and len(rep) == len(inv.group("db")) - 1
    assert rep["sync_state"].isin(["sync", "quorum"]).any()


@pytest.mark.extended  # the smoke suite of test_schedule drills the web tier
def test_web_node_host_crash_under_load(inv: inv_mod.Inventory, tmp_path: Path) -> None:
    doc = drill("web-node-failure", tmp_path, target="web3", fault="host-crash")
    assert doc["metrics"]["failed_requests"] == 0
    assert doc["metrics"]["lost_writes"] == 0
    assert_steady(inv)


def test_switchover_under_load(inv: inv_mod.Inventory, tmp_path: Path) -> None:
    before = procedure.steady_state(inv).primary
    doc = drill("db-failover", tmp_path, mode="switchover")
    assert doc["metrics"]["lost_writes"] == 0
    # A planned switchover fails nothing: writes wait through the pause, then land.
    assert doc["metrics"]["failed_requests"] == 0
    assert procedure.steady_state(inv).primary != before
    assert_steady(inv)


def test_partition_of_the_primary_then_heal(inv: inv_mod.Inventory, tmp_path: Path) -> None:
    doc = drill("db-failover", tmp_path, fault="partition")
    # Every write a client saw acknowledged is on the new primary: had the
    # partitioned old primary acknowledged one, it would be missing here.
    assert doc["metrics"]["lost_writes"] == 0
    assert doc["fault"]["kind"] == "partition" and doc["fault"]["reverted_at"]
    assert_steady(inv)


def test_bad_parameters_change_nothing(inv: inv_mod.Inventory, tmp_path: Path) -> None:
    primary = procedure.steady_state(inv).primary
    for params, needle in [
        ({"mode": "drll"}, "mode"),
        ({"mode": "drill", "fault": "meteor"}, "fault"),
        ({"mode": "drill", "target": "db9"}, "db9"),
        ({"mode": "drill", "load_rps": -5.0}, "load_rps"),
    ]:
        try:
            outcome = runner.run("db-failover", runner.validate("db-failover", params), tmp_path)
        except FaultbookError as exc:  # a usage error before anything runs
            assert exc.exit_code == 2 and needle in str(exc)
            continue
        doc = json.loads((tmp_path / "result.json").read_text())
        # Found inside the notebook, before anything ran: a usage error, as `faultbook run` does.
        assert outcome.exit_code == 2, (needle, outcome.exit_code)
        assert any(needle in s["detail"] for s in doc["steps"]), doc["steps"]
    assert procedure.steady_state(inv).primary == primary  # nothing was failed over
