"""The fault journal, the rollback it drives (faultbook run's and the watchdog's) and
Procedure's use of it, with fake faults: no lab needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from faultbook import inventory as inv_mod
from faultbook.drills import faults, journal, preflight, procedure, rollback, watchdog
from faultbook.errors import PreflightFailed
from faultbook.paths import LAB_INVENTORY
from faultbook.poll import poll
from faultbook.results import Run, validate


@pytest.fixture
def lab() -> inv_mod.Inventory:
    return inv_mod.load(LAB_INVENTORY)


@dataclass
class Fake(faults.Fault):
    """A fault on a dict: ``world["on"]`` is whether it holds; reverts are counted."""

    kind: ClassVar[str] = "fake"
    world: dict[str, Any] = field(default_factory=lambda: {"on": False, "reverts": 0})
    fail_revert: bool = False
    on_lab: bool = False

    @property
    def lab_side(self) -> bool:
        return self.on_lab

    def _inject(self) -> None:
        self.world["on"] = True

    def _revert(self) -> None:
        if self.fail_revert:
            raise faults.FaultError("the host said no")
        self.world["on"] = False
        self.world["reverts"] += 1

    def in_effect(self) -> bool:
        return bool(self.world["on"])


def fake_maker(world: dict[str, Any], lab: inv_mod.Inventory, **kw: Any) -> Any:
    """Rebuild an entry as a Fake acting on WORLD (what another process would do)."""
    return lambda e: Fake(lab, e.target, world=world, **kw)


def lines(j: journal.Journal) -> list[dict[str, Any]]:
    return [json.loads(x) for x in j.path.read_text().splitlines()]


def test_intent_is_written_before_the_fault_and_names_what_rebuilds_it(
    tmp_path: Path, lab: inv_mod.Inventory
) -> None:
    j = journal.Journal(tmp_path)
    f = faults.make("service-stop", lab, "web1", unit="ledger.service", max_s=120)
    e = j.intent(f, max_s=60)
    (rec,) = lines(j)
    assert rec["event"] == "intent" and rec["kind"] == "service-stop" and rec["target"] == "web1"
    assert rec["options"] == {"max_s": 120, "unit": "ledger.service"}
    assert rec["inventory"] == str(LAB_INVENTORY.resolve())
    assert rec["max_s"] == 60 and rec["lab"] is False
    assert rec["owner"]["pid"] == os.getpid() and journal.alive(rec["owner"])
    assert e.pending and e.injected_at is None
    # Reconstructible by another process: the same fault from the entry alone.
    g = journal.rebuild(j.entries()[0])
    assert isinstance(g, faults.ServiceStop) and g.unit == "ledger.service" and g.max_s == 120


def test_host_crash_spec_carries_its_services(lab: inv_mod.Inventory) -> None:
    f = faults.make("host-crash", lab, "db1", units=["postgresql@15-main.service"])
    assert f.spec() == {"max_s": 600.0, "units": ["postgresql@15-main.service"]}
    assert f.lab_side
    assert faults.make("partition", lab, "db1").lab_side  # the lab's link, not a host table
    assert not faults.make("service-kill", lab, "web1", unit="ledger.service").lab_side


def test_events_fold_into_pending_and_reverted(tmp_path: Path, lab: inv_mod.Inventory) -> None:
    j = journal.Journal(tmp_path)
    a = j.intent(Fake(lab, "web1"))
    b = j.intent(Fake(lab, "web2", on_lab=True))
    j.injected(a)
    j.injected(b)
    assert [e.id for e in j.pending()] == ["f1", "f2"]
    assert [e.id for e in j.pending(lab_only=True)] == ["f2"]
    j.reverted(a, "procedure", detail="done")
    (left,) = j.pending()
    assert left.id == "f2" and left.injected_at
    done = j.entry("f1")
    assert done is not None and done.reverted_by == "procedure" and done.outcome == "reverted"


def test_a_torn_last_line_is_skipped(tmp_path: Path, lab: inv_mod.Inventory) -> None:
    j = journal.Journal(tmp_path)
    j.intent(Fake(lab, "web1"))
    with j.path.open("a") as fh:
        fh.write('{"event": "reverted", "id": "f1", "at"')  # killed mid-write
    assert [e.id for e in j.pending()] == ["f1"]


def test_rollback_reverts_once_and_is_idempotent(tmp_path: Path, lab: inv_mod.Inventory) -> None:
    world = {"on": True, "reverts": 0}
    j = journal.Journal(tmp_path)
    e = j.intent(Fake(lab, "web1"))
    j.injected(e)
    r1 = j.rollback(e, "runner", fake_maker(world, lab))
    assert (r1.outcome, r1.by) == ("reverted", "runner") and world == {"on": False, "reverts": 1}
    r2 = j.rollback(e, "watchdog", fake_maker(world, lab))  # already recorded: nothing done
    assert (r2.outcome, r2.by) == ("reverted", "runner") and world["reverts"] == 1
    assert [x["event"] for x in lines(j)] == ["intent", "injected", "reverted"]


def test_rollback_of_a_fault_already_reverted_elsewhere(
    tmp_path: Path, lab: inv_mod.Inventory
) -> None:
    world = {"on": False, "reverts": 0}  # e.g. the notebook reverted it, then died
    j = journal.Journal(tmp_path)
    j.intent(Fake(lab, "web1"))
    (r,) = j.rollback_pending("runner", make=fake_maker(world, lab))
    assert r.outcome == "already reverted" and world["reverts"] == 0
    assert not j.pending()


def test_a_failed_revert_is_recorded_and_stays_pending(
    tmp_path: Path, lab: inv_mod.Inventory
) -> None:
    world = {"on": True, "reverts": 0}
    j = journal.Journal(tmp_path)
    e = j.intent(Fake(lab, "web1"))
    r = j.rollback(e, "runner", fake_maker(world, lab, fail_revert=True))
    assert r.outcome == "failed" and "the host said no" in r.detail
    (still,) = j.pending()
    assert still.failures and "the host said no" in still.failures[0]


def _procedure(tmp_path: Path, lab: inv_mod.Inventory) -> procedure.Procedure:
    run = Run.start("web-node-failure", "drill", {"mode": "drill"})
    p = procedure.Procedure("web-node-failure", lab, "drill", run, result_dir=str(tmp_path))
    p.preflight_report = preflight.Report([])  # proven (no lab here)
    return p


def test_procedure_inject_and_revert_go_through_the_journal(
    tmp_path: Path, lab: inv_mod.Inventory
) -> None:
    p = _procedure(tmp_path, lab)
    f = Fake(lab, "web2")
    p.inject(f)
    assert f.world["on"]
    assert [x["event"] for x in lines(p.journal)] == ["intent", "injected"]
    p.revert()
    p.revert()  # twice: still one revert
    assert f.world == {"on": False, "reverts": 1}
    recs = lines(p.journal)
    assert [x["event"] for x in recs] == ["intent", "injected", "reverted"]
    assert recs[2]["by"] == "procedure"
    assert rollback.rollback(tmp_path) is None  # nothing left for the runner


def test_procedure_leaves_a_fault_the_runner_reverted_alone(
    tmp_path: Path, lab: inv_mod.Inventory
) -> None:
    p = _procedure(tmp_path, lab)
    f = Fake(lab, "web2")
    p.inject(f)
    assert p.entry is not None
    p.journal.rollback(p.entry, "watchdog", fake_maker(f.world, lab))
    p.revert()
    assert f.world["reverts"] == 1 and f.reverted_at is not None


def test_a_failed_injection_stays_pending(tmp_path: Path, lab: inv_mod.Inventory) -> None:
    class Broken(Fake):
        def _inject(self) -> None:
            self.world["on"] = True  # half-way, then:
            raise faults.FaultError("lost the connection")

    p = _procedure(tmp_path, lab)
    with pytest.raises(faults.FaultError):
        p.inject(Broken(lab, "web1"))
    (e,) = p.journal.pending()
    assert e.inject_error and "lost the connection" in e.inject_error


def test_budget_is_the_drill_duration_plus_grace(lab: inv_mod.Inventory, tmp_path: Path) -> None:
    p = _procedure(tmp_path, lab)
    f = Fake(lab, "web1", max_s=600)
    assert p.fault_budget_s(f) == 600  # no load: the fault's own max_s
    p.duration_s = 30
    assert p.fault_budget_s(f) == 30 + procedure.WATCHDOG_GRACE_S
    assert p.fault_budget_s(Fake(lab, "web1", max_s=60)) == 60


def no_repair(entries: list[journal.Entry]) -> list[dict[str, str]]:
    return []


def recorded(run_dir: Path, rb: dict[str, Any]) -> dict[str, Any]:
    """A db-failover run's result.json in RUN_DIR, with the rollback RB recorded into it."""
    r = Run.start("db-failover", "drill", {})
    r.finish()
    r.save(run_dir)
    rollback.record(run_dir / "result.json", rb)
    doc: dict[str, Any] = json.loads((run_dir / "result.json").read_text())
    return doc


def test_runner_rollback_records_what_it_did(tmp_path: Path, lab: inv_mod.Inventory) -> None:
    world = {"on": True, "reverts": 0}
    j = journal.Journal(tmp_path)
    j.injected(j.intent(Fake(lab, "db1")))
    done = j.intent(Fake(lab, "web1"))
    j.reverted(done, "procedure")  # the drill reverted this one itself: not a rollback
    seen: list[list[journal.Entry]] = []

    def steady(entries: list[journal.Entry]) -> dict[str, Any]:
        seen.append(entries)
        return {"ok": True, "detail": "steady state: fake"}

    rb = rollback.rollback(tmp_path, make=fake_maker(world, lab), steady=steady, repair=no_repair)
    assert rb is not None
    (item,) = rb["faults"]
    assert (item["kind"], item["target"], item["outcome"], item["by"]) == (
        "fake",
        "db1",
        "reverted",
        "runner",
    )
    assert item["at"].endswith("Z") and world["reverts"] == 1
    assert rb["steady_state"] == {"ok": True, "detail": "steady state: fake"}
    assert [e.target for e in seen[0]] == ["db1"]
    # result.json: verdict fail, a rollback step, and still valid.
    doc = recorded(tmp_path, rb)
    assert doc["verdict"] == "fail" and doc["rollback"] == rb
    assert doc["steps"][-1]["name"] == "rollback" and "db1" in doc["steps"][-1]["detail"]
    assert validate(doc) == []


def test_runner_rollback_reports_a_failed_revert(tmp_path: Path, lab: inv_mod.Inventory) -> None:
    world = {"on": True, "reverts": 0}
    j = journal.Journal(tmp_path)
    j.intent(Fake(lab, "db1"))
    rb = rollback.rollback(
        tmp_path,
        make=fake_maker(world, lab, fail_revert=True),
        steady=lambda e: {"ok": False, "detail": "db1 is down"},
        repair=no_repair,
    )
    assert rb is not None and rb["faults"][0]["outcome"] == "failed"
    assert "ROLLBACK INCOMPLETE" not in rollback.summary(rb)  # the step says that
    assert "NOT in steady state" in rollback.summary(rb)


def test_runner_rollback_rejoins_what_the_drill_left_out(
    tmp_path: Path, lab: inv_mod.Inventory
) -> None:
    # The drill died after its failover and before its rejoin: the crashed primary is
    # back up but stays down (its start guard). The rollback rejoins it, then checks.
    world = {"on": True, "reverts": 0}
    j = journal.Journal(tmp_path)
    j.injected(j.intent(Fake(lab, "db2")))
    order: list[str] = []

    def repair(entries: list[journal.Entry]) -> list[dict[str, str]]:
        order.append("repair")
        return [
            {
                "host": "db2",
                "primary": "db1",
                "outcome": "rejoined",
                "detail": "db2 rejoined as a standby of db1",
            }
        ]

    def steady(entries: list[journal.Entry]) -> dict[str, Any]:
        order.append("steady")
        return {"ok": True, "detail": "steady state: fake"}

    rb = rollback.rollback(tmp_path, make=fake_maker(world, lab), steady=steady, repair=repair)
    assert rb is not None and order == ["repair", "steady"]
    assert rb["repairs"][0]["host"] == "db2"
    assert "db2 rejoined as a standby of db1; then steady state" in rollback.summary(rb)
    doc = recorded(tmp_path, rb)
    step = doc["steps"][-1]
    assert step["status"] == "failed" and step["detail"].startswith("reverted what the drill left")
    assert validate(doc) == []
    # A rejoin that failed makes the rollback incomplete.
    rb["repairs"][0]["outcome"] = "failed"
    rollback.record(tmp_path / "result.json", rb)
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["steps"][-1]["detail"].startswith("ROLLBACK INCOMPLETE")


def test_journaled_fault_for_the_runners_own_result(tmp_path: Path, lab: inv_mod.Inventory) -> None:
    assert rollback.journaled_fault(tmp_path) is None
    j = journal.Journal(tmp_path)
    j.injected(j.intent(Fake(lab, "db1")))
    f = rollback.journaled_fault(tmp_path)
    assert f is not None and f["kind"] == "fake" and f["injected_at"] and f["reverted_at"] is None


# ---------------------------------------------------------------- watchdog
@pytest.fixture
def fake_in_catalogue(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Let journal.rebuild make Fakes that act on one shared world."""
    world: dict[str, Any] = {"on": True, "reverts": 0}

    class Shared(Fake):
        def __post_init__(self) -> None:
            super().__post_init__()
            self.world = world

    monkeypatch.setitem(faults.CATALOGUE, "fake", Shared)
    return world


def test_watchdog_reverts_at_the_deadline(
    tmp_path: Path, lab: inv_mod.Inventory, fake_in_catalogue: dict[str, Any]
) -> None:
    j = journal.Journal(tmp_path)
    e = j.intent(Fake(lab, "web1", on_lab=True), max_s=0.5)
    j.injected(e)
    out = watchdog.watch(j, e.id, interval_s=0.05)
    assert out.startswith("the deadline passed: rolled back: reverted")
    assert fake_in_catalogue["reverts"] == 1
    done = j.entry(e.id)
    assert done is not None and done.reverted_by == "watchdog"


def test_watchdog_reverts_when_its_owner_is_gone(
    tmp_path: Path, lab: inv_mod.Inventory, fake_in_catalogue: dict[str, Any]
) -> None:
    j = journal.Journal(tmp_path)
    e = j.intent(Fake(lab, "web1", on_lab=True), max_s=600)
    # The kernel that injected it died: rewrite the owner as a process that has exited.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    rec = lines(j)[0]
    rec["owner"] = {"pid": int(dead.stdout), "start": "0"}
    j.path.write_text(json.dumps(rec) + "\n")
    t0 = datetime.now(UTC)
    out = watchdog.watch(j, e.id, interval_s=0.05)
    assert "is gone: rolled back" in out and fake_in_catalogue["reverts"] == 1
    assert (datetime.now(UTC) - t0).total_seconds() < 600  # not the deadline


def test_watchdog_exits_once_the_drill_reverted(
    tmp_path: Path, lab: inv_mod.Inventory, fake_in_catalogue: dict[str, Any]
) -> None:
    j = journal.Journal(tmp_path)
    e = j.intent(Fake(lab, "web1", on_lab=True), max_s=600)
    j.reverted(e, "procedure")
    out = watchdog.watch(j, e.id, interval_s=0.05)
    assert "reverted by procedure" in out and fake_in_catalogue["reverts"] == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="the lab's state directory needs root")
def test_detached_watchdog_process_ends_by_itself(tmp_path: Path, lab: inv_mod.Inventory) -> None:
    # A real lab fault whose probe is harmless whether or not the lab runs: delay-loss
    # on web1 with no delay process is "already reverted".
    j = journal.Journal(tmp_path)
    f = faults.make("delay-loss", lab, "web1", delay_ms=100)
    e = j.intent(f, max_s=1)
    pid = watchdog.start(j, e)
    assert pid > 0 and pid != os.getpid()
    done = poll(
        lambda _t: x if (x := j.entry(e.id)) is not None and not x.pending else None,
        60,
        what="the watchdog's record",
        interval_s=0.2,
    )
    assert done.reverted_by == "watchdog" and done.outcome == "already reverted"
    poll(lambda _t: journal.process_start(pid) is None or None, 30, what="the watchdog exits")
    log = watchdog.log_path(tmp_path, e).read_text()
    assert "the deadline passed" in log and "exiting" in log


def test_a_run_that_ended_badly_gets_a_steady_state_check(
    tmp_path: Path, lab: inv_mod.Inventory
) -> None:
    j = journal.Journal(tmp_path)
    e = j.intent(Fake(lab, "db1"))
    j.reverted(e, "procedure")  # reverted by the drill, which then died in a later cell
    assert rollback.rollback(tmp_path) is None  # a normal ending: nothing to say
    rb = rollback.rollback(
        tmp_path,
        ended_badly=True,
        steady=lambda e: {"ok": False, "detail": "db1 is down"},
        repair=no_repair,
    )
    assert rb == {"faults": [], "steady_state": {"ok": False, "detail": "db1 is down"}}
    assert "nothing left to revert" in rollback.summary(rb)
    doc = recorded(tmp_path, rb)
    assert doc["steps"][-1]["status"] == "failed" and validate(doc) == []


def test_procedure_preflight_refuses_before_any_fault(
    tmp_path: Path, lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(inv: inv_mod.Inventory, **kw: Any) -> preflight.Report:
        return preflight.Report(
            [preflight.Check("prometheus", False, "Prometheus on mon1 does not answer")]
        )

    monkeypatch.setattr(preflight, "check", broken)
    run = Run.start("db-failover", "drill", {"mode": "drill"})
    p = procedure.Procedure("db-failover", lab, "drill", run, result_dir=str(tmp_path))
    f = Fake(lab, "db1")
    with pytest.raises(PreflightFailed, match="Prometheus on mon1 does not answer"):
        p.inject(f)
    assert not f.world["on"] and not journal.Journal(tmp_path).exists()
    (step,) = run.steps
    assert step.name == "dependencies" and step.status == "failed"
    assert run.preflight == {
        "ok": False,
        "checks": [
            {"check": "prometheus", "ok": False, "detail": "Prometheus on mon1 does not answer"}
        ],
    }


def test_preflight_defaults_come_from_the_runbook(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def record(inv: inv_mod.Inventory, **kw: Any) -> preflight.Report:
        seen.update(kw)
        return preflight.Report([preflight.Check("ssh", True, "ok")])

    monkeypatch.setattr(preflight, "check", record)
    run = Run.start("db-failover", "drill", {"mode": "drill"})
    procedure.Procedure("db-failover", lab, "drill", run).preflight()
    assert seen["alert"] == "NoWritablePrimary" and seen["backups"] is True
    assert {"db1", "db2", "db3", "backup1"} <= set(seen["hosts"])
    seen.clear()
    run = Run.start("db-failover", "drill", {"mode": "switchover"})
    procedure.Procedure("db-failover", lab, "switchover", run).preflight(hosts=["db1"])
    assert seen["alert"] is None and seen["hosts"] == ["db1"]  # no alert waited for


def test_a_reused_run_directory_retires_the_old_journal(
    tmp_path: Path, lab: inv_mod.Inventory, fake_in_catalogue: dict[str, Any]
) -> None:
    old = journal.Journal(tmp_path)
    old.injected(old.intent(Fake(lab, "web1")))  # an earlier run left it injected
    rollback.retire_journal(tmp_path)
    assert fake_in_catalogue["reverts"] == 1  # reverted before the new run starts
    assert not journal.Journal(tmp_path).exists()
    (kept,) = tmp_path.glob("faults-*.jsonl")
    assert "reverted" in kept.read_text()


def test_preflight_needs_one_prometheus_of_the_redundant_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faultbook.errors import PrometheusError
    from faultbook.inventory import Host, Inventory

    inv = Inventory(
        path=tmp_path / "hosts.yml",
        hosts={
            "mon1": Host("mon1", "192.0.2.51", ("mon",)),
            "mon2": Host("mon2", "192.0.2.52", ("mon",)),
        },
        groups={"mon": ("mon1", "mon2")},
        vars={},
    )
    up = {"mon2"}

    def rules(inv: Inventory, host: str) -> list[dict[str, object]]:
        if host not in up:
            raise PrometheusError(f"cannot reach {host}", transient=True)
        return [{"name": "NoWritablePrimary", "health": "ok"}]

    monkeypatch.setattr(preflight, "_rules", rules)
    checks = preflight.check_prometheus(inv, "NoWritablePrimary")
    assert all(c.ok for c in checks)
    assert "mon2 answers" in checks[0].detail and "mon1" in checks[0].detail
    up.clear()
    checks = preflight.check_prometheus(inv, "NoWritablePrimary")
    assert not checks[0].ok and "mon1" in checks[0].detail and "mon2" in checks[0].detail


def test_alerts_outside_the_runbooks_tiers_are_pre_existing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A mon host down before a db failover is named, not held against the failover."""
    import pandas as pd

    from faultbook.stack import monitoring

    inv = inv_mod.load("lab")
    rows = [
        {"alertname": "HostDown", "instance": "mon1"},
        {"alertname": "MonitoringHostDown", "instance": "mon1"},
        {"alertname": "HostDown", "instance": "db1"},
        {"alertname": "NoWritablePrimary", "instance": ""},
    ]
    monkeypatch.setattr(monitoring, "alerts", lambda inv, state="firing": pd.DataFrame(rows))
    got = procedure.firing_outside(inv, "db-failover")
    assert got == {("HostDown", "mon1"), ("MonitoringHostDown", "mon1")}


def test_steady_state_ignores_alerts_that_count_log_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgresFatalBurst (signal=event) follows every failover by design; a state alert
    (ReplicationLagHigh) still makes the stack unsteady."""
    import pandas as pd

    from faultbook.stack import failover, haproxy, monitoring, vip

    inv = inv_mod.load("lab")
    state = pd.DataFrame([{"host": "db1", "role": "primary", "error": ""}])
    monkeypatch.setattr(failover, "cluster_state", lambda inv: state)
    monkeypatch.setattr(failover, "primaries", lambda st: ["db1"])
    monkeypatch.setattr(failover, "quorum_ok", lambda inv: "db1")
    monkeypatch.setattr(haproxy, "failed_backends", lambda inv: haproxy.BackendHealth("web", ()))
    monkeypatch.setattr(vip, "vip_holder", lambda inv: "lb1")
    monkeypatch.setattr(vip, "lb_status", lambda inv: pd.DataFrame([]))
    event = {
        "alertname": "PostgresFatalBurst",
        "instance": "",
        "labels": {"alertname": "PostgresFatalBurst", "signal": "event", "host": "db1"},
    }
    rows = [event]
    monkeypatch.setattr(monitoring, "alerts", lambda inv: pd.DataFrame(rows))
    assert procedure.steady_state(inv).ok
    rows.append({"alertname": "ReplicationLagHigh", "instance": "db2", "labels": {}})
    s = procedure.steady_state(inv)
    assert not s.ok and s.problems == ["alerts firing: ReplicationLagHigh"]


def test_an_inventory_without_databases_has_nothing_to_rejoin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from faultbook import inventory as inventory_mod

    monkeypatch.setattr(
        inventory_mod, "load", lambda path: SimpleNamespace(groups={"web": ["web1"]})
    )
    entry = SimpleNamespace(inventory="hosts.yml")
    assert rollback._repair([entry]) == []  # type: ignore[list-item]
