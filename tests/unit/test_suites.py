"""Suites: validation on load, role targets, a run with each entry from steady state."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner
from fakeruns import fake_result

from faultbook import decisions, lock
from faultbook import inventory as inventory_mod
from faultbook.archive import audit, store
from faultbook.cli import main
from faultbook.drills.impact import DrillResult
from faultbook.drills.procedure import SteadyState
from faultbook.errors import StackError, SuiteError
from faultbook.suites import demo, execute, model, targets
from faultbook.suites.model import Target


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("FAULTBOOK_HOME", str(h))
    monkeypatch.setenv("FAULTBOOK_TRIGGER", "schedule:nightly")
    return h


def _suite(tmp_path: Path, text: str, name: str = "t") -> Path:
    p = tmp_path / f"{name}.yml"
    p.write_text(text)
    return p


# ------------------------------------------------------------------ validation
def test_the_shipped_suites_load_and_name_no_host() -> None:
    assert {"smoke", "nightly", "demo", "gameday"} <= set(model.available())
    hosts = set(inventory_mod.load("lab").hosts)
    for name in model.available():
        s = model.load(name)
        assert s.entries
        text = model.suite_path(name).read_text()
        assert not [h for h in hosts if h in text], f"{name} names a host"


def test_smoke_has_the_health_check_and_one_drill_per_tier() -> None:
    books = [e.runbook for e in model.load("smoke").entries]
    assert books[0] == "health-check"
    assert sorted(books[1:]) == ["backup-restore", "db-failover", "lb-failover", "web-node-failure"]


def test_nightly_runs_every_fault_of_every_drill() -> None:
    from faultbook.drills.steps import DRILLS, RESTORE_MODES

    entries = model.load("nightly").entries
    for runbook, spec in DRILLS.items():
        if runbook == "fault-observe":
            continue  # the observed faults run in the game day (disk-full needs its data disks)
        got = {e.params.get("fault") for e in entries if e.runbook == runbook}
        assert set(spec.faults) <= got, runbook
    modes = {e.params["mode"] for e in entries if e.runbook == "backup-restore"}
    assert modes == set(RESTORE_MODES)


def test_the_demo_suite_is_what_the_readme_says_make_demo_does() -> None:
    s = model.load("demo")
    assert s.report == "demo"
    got = [
        (e.name, e.runbook, e.params.get("mode"), e.params.get("fault"), list(e.targets))
        for e in s.entries
    ]
    assert got == [
        ("health-check", "health-check", None, None, []),
        ("web-node-kill", "web-node-failure", "drill", "service-kill", [Target("web")]),
        ("db-primary-crash", "db-failover", "drill", "host-crash", [Target("primary")]),
        ("lb-master-crash", "lb-failover", "drill", "host-crash", [Target("vip-holder")]),
        ("pitr", "backup-restore", "pitr", None, []),
    ]
    pitr = s.entries[-1].params
    assert pitr["drill"] is True and pitr["target_kind"] == "name"
    assert not s.entries[0].require_steady_state  # read-only: it reports a broken stack too


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "runbook: db-failover\n    parameters: {tagret: db1}",
            "suite t, entry 2 (db-failover): unknown parameter 'tagret' for db-failover",
        ),
        ("runbook: db-falover", "suite t, entry 2 (db-falover): unknown runbook 'db-falover'"),
        (
            "runbook: db-failover\n    parameters: {load_rps: fast}",
            "suite t, entry 2 (db-failover): parameter 'load_rps' expects float, got 'fast'",
        ),
        (
            "runbook: db-failover\n    parameters: {load_rps: .nan}",
            "entry 2 (db-failover): parameter 'load_rps' expects a finite number",
        ),
        (
            "name: kill\n    runbook: web-node-failure\n    target: {role: primay}",
            "suite t, entry 2 (kill): unknown role 'primay'; expected one of primary, standby",
        ),
        (
            "runbook: web-node-failure\n    target: {role: web}\n    parameters: {target: web2}",
            "parameter 'target' is given twice",
        ),
        (
            "runbook: health-check\n    target: {role: web}",
            "target param 'target' is not a parameter of the runbook",
        ),
        (
            "runbook: db-failover\n    parameters: {inventory: prod}",
            "entry 2 (db-failover): parameter 'inventory' is set by the suite run",
        ),
        (
            "runbook: db-failover\n    objectives: {rto: 3}",
            "entry 2 (db-failover): unknown objective 'rto'; expected one of the runbook's "
            "max_rto_s, max_lost_writes, max_failed_requests or a metric",
        ),
        (
            "runbook: db-failover\n    objectives: {p99_ms: -5}",
            "objective 'p99_ms' must be a number >= 0",
        ),
        ("runbook: db-failover\n    timeout_s: 0", "timeout_s must be a number of seconds > 0"),
        ("runbook: db-failover\n    retries: 3", "unknown key 'retries'"),
        ("runbook: health-check", "entry 2 (health-check): the name is taken"),
        (
            "runbook: db-failover\n    load_from: health-check",
            "entry 2 (db-failover): load_from 'health-check' is not an earlier stress entry; "
            "expected one of (none: add a stress entry before it)",
        ),
    ],
)
def test_a_bad_entry_is_named(tmp_path: Path, entry: str, message: str) -> None:
    text = f"entries:\n  - runbook: health-check\n  - {entry}\n"
    with pytest.raises(SuiteError) as err:
        model.load(_suite(tmp_path, text))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_objectives_become_parameters_or_suite_limits(tmp_path: Path) -> None:
    s = model.load(
        _suite(
            tmp_path,
            "entries:\n  - runbook: db-failover\n    parameters: {mode: drill}\n"
            "    objectives: {rto_s: 12, max_lost_writes: 0, p99_ms: 1500}\n",
        )
    )
    (e,) = s.entries
    assert e.params["max_rto_s"] == 12.0 and e.params["max_lost_writes"] == 0.0
    assert e.limits == {"p99_ms": 1500.0}
    assert e.objectives() == {"rto_s": 12.0, "lost_writes": 0.0, "p99_ms": 1500.0}


def test_the_known_metrics_are_what_a_drill_records() -> None:
    from fakeruns import records

    empty = records()
    recorded = DrillResult.from_records(empty, fault_at=None, present_ids=None).metrics()
    assert set(model.METRICS) <= set(recorded)


def test_bad_yaml_and_unknown_suites_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(
        SuiteError, match=r"suite t: .*t.yml at line 3, column 1: expected the node content"
    ):
        model.load(_suite(tmp_path, "entries:\n  - runbook: [\n"))
    with pytest.raises(SuiteError, match="unknown suite 'smok'; expected a YAML file or one of"):
        model.load("smok")
    with pytest.raises(SuiteError, match="'entries' must be a non-empty list"):
        model.load(_suite(tmp_path, "name: x\n"))


# --------------------------------------------------------------------- roles
def _state(primary: str = "db1", standbys: tuple[str, ...] = ("db2", "db3")) -> pd.DataFrame:
    rows = [{"host": primary, "role": "primary"}] + [
        {"host": h, "role": "standby"} for h in standbys
    ]
    return pd.DataFrame(rows)


def _view(**kw: Any) -> targets.StackView:
    inv = inventory_mod.load("lab")
    defaults: dict[str, Any] = {
        "cluster_state": lambda _inv: _state(),
        "vip_holder": lambda _inv: "lb2",
        "failed_web": lambda _inv: ["web1"],
        "switchover_candidate": lambda _inv, primary: "db3",
    }
    return targets.StackView(inv, **(defaults | kw))


def test_roles_resolve_against_the_stack() -> None:
    v = _view()
    assert targets.resolve("primary", v) == "db1"
    assert targets.resolve("standby", v) == "db3"
    assert targets.resolve("any-standby", v) == "db2"
    assert targets.resolve("web", v) == "web2"  # web1 is down in HAProxy
    assert targets.resolve("vip-holder", v) == "lb2"
    assert targets.resolve("lb", v) == "lb1"
    got = targets.resolve_all([Target("primary"), Target("standby", "new_primary")], v)
    assert got == {"target": "db1", "new_primary": "db3"}


def test_the_stack_is_asked_once_per_view() -> None:
    calls = []
    v = _view(cluster_state=lambda _inv: calls.append(1) or _state("db2", ("db1",)))
    assert targets.resolve("primary", v) == "db2"
    assert targets.resolve("any-standby", v) == "db1"
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("role", "view", "message"),
    [
        ("primary", {"cluster_state": lambda _i: _state().assign(role="standby")}, "found none"),
        ("vip-holder", {"vip_holder": lambda _i: None}, "no lb host holds the VIP"),
        ("web", {"failed_web": lambda _i: ["web1", "web2", "web3"]}, "every web host is down"),
    ],
)
def test_a_role_nobody_plays_is_an_error_naming_it(
    role: str, view: dict[str, Any], message: str
) -> None:
    with pytest.raises(StackError) as err:
        targets.resolve_all([Target(role)], _view(**view))
    assert f"target {{role: {role}}}" in str(err.value) and message in str(err.value)


# ----------------------------------------------------------------------- run
class FakeRunner:
    """report.runner.run's stand-in: writes a result (and archives it) per call."""

    def __init__(self, verdicts: dict[str, str] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any], float | None]] = []
        self.verdicts = verdicts or {}

    def __call__(
        self, runbook: str, params: dict[str, Any], out: Path, execution_timeout_s: float | None
    ) -> Any:
        self.calls.append((runbook, params, execution_timeout_s))
        fake_result(out, runbook, verdict=self.verdicts.get(runbook, "pass"), fault=None)
        archived = store.archive(out, runbook, params=params)
        return SimpleNamespace(result=out / "result.json", archived=archived, interrupted=None)


def _steady_after(n_ok: int) -> Any:
    seen = []

    def steady(_inv: Any, _timeout: float) -> SteadyState:
        seen.append(1)
        ok = len(seen) <= n_ok
        return SteadyState(
            ok, [] if ok else ["db2 is unreachable (timeout)"], "db1", pd.DataFrame()
        )

    return steady


def _run(suite: model.Suite, out: Path, **kw: Any) -> execute.SuiteResult:
    defaults: dict[str, Any] = {
        "run": FakeRunner(),
        "steady": _steady_after(99),
        "view": lambda inv: _view(),
    }
    return execute.run_suite(suite, "lab", out, **(defaults | kw))


def test_each_entry_runs_in_turn_with_its_targets_and_timeout(home: Path, tmp_path: Path) -> None:
    fake = FakeRunner()
    res = _run(model.load("smoke"), tmp_path / "out", run=fake, entry_timeout_s=300)
    assert [c[0] for c in fake.calls] == [e.runbook for e in model.load("smoke").entries]
    web = fake.calls[1][1]
    assert web["target"] == "web2" and web["inventory"] == "lab" and web["mode"] == "drill"
    assert fake.calls[2][1]["target"] == "db1" and fake.calls[3][1]["target"] == "lb2"
    assert {c[2] for c in fake.calls} == {300}
    assert res.verdict == "pass" and res.exit_code == 0
    doc = json.loads((tmp_path / "out" / "suite.json").read_text())
    assert doc["counts"] == {"pass": 5, "fail": 0, "skipped": 0}
    assert len(store.runs(home)) == 5 and audit.verify(home).ok


def test_an_entry_out_of_steady_state_is_skipped_and_recorded(home: Path, tmp_path: Path) -> None:
    fake = FakeRunner()
    res = _run(model.load("smoke"), tmp_path / "out", run=fake, steady=_steady_after(1))
    statuses = [e.status for e in res.entries]
    # the health check needs no steady state; the first drill had it, the rest did not
    assert statuses == ["pass", "pass", "skipped", "skipped", "skipped"]
    assert res.entries[2].reason == "not in steady state: db2 is unreachable (timeout)"
    assert res.verdict == "skipped" and res.exit_code == 1
    skipped = [e for e in audit.entries(home) if e["kind"] == "run-skipped"]
    assert [e["entry"] for e in skipped] == [
        "db-primary-crash",
        "lb-vip-holder-crash",
        "backup-verify",
    ]
    events = list(decisions.entries(event="run-skipped"))
    assert len(events) == 3 and events[0]["trigger"] == "schedule:nightly"
    assert audit.verify(home).ok


def test_a_person_s_skipped_entry_is_audited_but_not_a_decision(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAULTBOOK_TRIGGER", "user:alice")
    _run(model.load("smoke"), tmp_path / "out", steady=_steady_after(0))
    assert any(e["kind"] == "run-skipped" for e in audit.entries(home))
    assert list(decisions.entries(event="run-skipped")) == []


def test_a_busy_inventory_skips_the_suite_and_records_it(home: Path, tmp_path: Path) -> None:
    fake = FakeRunner()
    inv = inventory_mod.load("lab")
    from lock_fixtures import held_elsewhere

    with held_elsewhere(inv.name, inv.is_lab, "run db-failover", trigger="user:bob"):
        res = _run(model.load("smoke"), tmp_path / "out", run=fake)
    assert fake.calls == [] and res.exit_code == 75 and res.verdict == "skipped"
    assert "run db-failover" in res.busy
    (entry,) = audit.entries(home)
    assert entry["kind"] == "run-skipped" and "is busy" in entry["reason"]
    (event,) = decisions.entries(event="run-skipped")
    assert event["suite"] == "smoke"


def test_the_suite_holds_the_lock_while_it_runs(home: Path, tmp_path: Path) -> None:
    seen = []

    class Spy(FakeRunner):
        def __call__(self, *a: Any, **kw: Any) -> Any:
            seen.append(lock.holder(inventory_mod.load("lab")))
            return super().__call__(*a, **kw)

    _run(model.load("smoke"), tmp_path / "out", run=Spy())
    assert seen and all(h and h["what"] == "suite smoke" and h["pid"] == os.getpid() for h in seen)


def test_a_role_without_a_host_skips_the_entry(home: Path, tmp_path: Path) -> None:
    res = _run(
        model.load("smoke"), tmp_path / "out", view=lambda inv: _view(vip_holder=lambda _i: None)
    )
    lb = res.entries[3]
    assert (
        lb.status == "skipped"
        and lb.reason == "target {role: vip-holder}: no lb host holds the VIP"
    )


def test_a_missed_suite_limit_fails_the_entry(home: Path, tmp_path: Path) -> None:
    p = _suite(
        tmp_path,
        "entries:\n  - runbook: db-failover\n    parameters: {mode: drill}\n"
        "    objectives: {p99_ms: 500}\n",
    )
    res = _run(model.load(p), tmp_path / "out")
    (e,) = res.entries
    assert e.status == "fail" and "p99_ms=10004.24888 > 500" in e.reason
    assert res.exit_code == 1


def test_a_failed_runbook_fails_the_suite(home: Path, tmp_path: Path) -> None:
    res = _run(model.load("smoke"), tmp_path / "out", run=FakeRunner({"db-failover": "fail"}))
    assert [e.status for e in res.entries].count("fail") == 1
    assert "verify: lost writes: 2" in res.entries[2].reason and res.verdict == "fail"


def test_the_outcome_goes_to_the_decision_log_in_the_lab(home: Path, tmp_path: Path) -> None:
    res = _run(model.load("smoke"), tmp_path / "out")
    where = execute.announce(res, inventory_mod.load("lab"))
    assert where.endswith("decisions.jsonl")
    (event,) = decisions.entries(event="drill-outcome")
    assert event["suite"] == "smoke" and event["verdict"] == "pass"
    assert [e["status"] for e in event["entries"]] == ["pass"] * 5


def test_the_outcome_is_posted_to_the_inventory_s_webhook(home: Path, tmp_path: Path) -> None:
    res = _run(model.load("smoke"), tmp_path / "out")
    lab = inventory_mod.load("lab")
    inv = inventory_mod.Inventory(
        Path(tmp_path / "prod" / "hosts.yml"),
        lab.hosts,
        lab.groups,
        {**lab.vars, "drill_webhook_url": "https://pager.example/hook"},
    )
    posted = []
    where = execute.announce(res, inv, post=lambda url, body: posted.append((url, body)))
    assert where == "https://pager.example/hook"
    assert posted[0][1]["kind"] == "drill-outcome" and posted[0][1]["counts"]["pass"] == 5
    assert list(decisions.entries(event="drill-outcome")) == []


DEMO_BOOKS = [e.runbook for e in model.load("demo").entries]


def test_the_demo_runs_as_a_suite_and_keeps_its_report(home: Path, tmp_path: Path) -> None:
    fake = FakeRunner()
    out = tmp_path / "demo"
    done = demo.build(out, run=fake, steady=_steady_after(99), view=lambda inv: _view())
    assert [c[0] for c in fake.calls] == DEMO_BOOKS
    assert fake.calls[1][1]["target"] == "web2"  # a role, resolved
    assert fake.calls[3][1]["target"] == "lb2" and fake.calls[3][1]["fault"] == "host-crash"
    assert {c[2] for c in fake.calls} == {900}  # the suite's entry_timeout_s
    for name in ("summary.md", "summary.csv", "timeline.png", "summary.png", "index.html"):
        assert (out / name).exists(), name
    assert done.index == out / "index.html" and done.exit_code == 0
    assert done.suite.verdict == "pass" and (out / "suite.json").exists()
    page = done.index.read_text()
    for e in model.load("demo").entries:
        assert f'href="{e.name}/{e.runbook}.html"' in page
    assert 'class="verdict verdict-pass"' in page and "10,004 ms" in page
    assert "10004.24888" not in page and ">0.0<" not in page
    assert len(store.runs(home)) == 5 and audit.verify(home).ok


def test_the_demo_holds_the_lock_as_a_drill_from_first_to_last(home: Path, tmp_path: Path) -> None:
    seen = []

    class Spy(FakeRunner):
        def __call__(self, *a: Any, **kw: Any) -> Any:
            seen.append(lock.holder(inventory_mod.load("lab")))
            return super().__call__(*a, **kw)

    demo.build(tmp_path / "demo", run=Spy(), steady=_steady_after(99), view=lambda inv: _view())
    assert len(seen) == len(DEMO_BOOKS)
    for h in seen:  # the health check too: no alert's run slips in between
        assert h and h["what"] == "suite demo" and h["drill"] is True and h["pid"] == os.getpid()
    assert lock.holder(inventory_mod.load("lab")) is None


def test_a_failed_or_skipped_demo_entry_fails_the_demo(home: Path, tmp_path: Path) -> None:
    done = demo.build(
        tmp_path / "demo",
        run=FakeRunner({"db-failover": "fail"}),
        steady=_steady_after(2),  # web-node-kill and db-primary-crash in steady state only
        view=lambda inv: _view(),
    )
    assert [e.status for e in done.suite.entries] == ["pass", "pass", "fail", "skipped", "skipped"]
    assert done.exit_code == 1 and done.index is not None
    table = pd.read_csv(tmp_path / "demo" / "summary.csv")
    assert list(table["verdict"]) == ["pass", "pass", "fail", "skipped", "skipped"]


def test_a_busy_lab_skips_the_demo_and_records_it(home: Path, tmp_path: Path) -> None:
    from lock_fixtures import held_elsewhere

    fake = FakeRunner()
    inv = inventory_mod.load("lab")
    with held_elsewhere(inv.name, inv.is_lab, "run db-failover", trigger="user:bob"):
        done = demo.build(tmp_path / "demo", lock_wait_s=0.0, run=fake)
    assert fake.calls == [] and done.exit_code == 75 and done.index is None
    assert "run db-failover" in done.suite.busy
    (entry,) = audit.entries(home)
    assert entry["kind"] == "run-skipped" and entry["suite"] == "demo"


def test_cli_demo_runs_the_suite_and_exits_with_its_status(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = demo.build
    verdicts: dict[str, str] = {}

    def build(out: Path, inventory: str = "lab", **kw: Any) -> demo.DemoRun:
        assert inventory == "lab" and kw == {}
        return real(
            out, run=FakeRunner(verdicts), steady=_steady_after(99), view=lambda inv: _view()
        )

    monkeypatch.setattr(demo, "build", build)
    out = tmp_path / "demo"
    r = CliRunner().invoke(main, ["demo", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "| db-primary-crash |" in r.output  # summary.md
    assert f"report: {(out / 'index.html').resolve()}" in r.output
    assert "demo: PASS (5 passed, 0 failed, 0 skipped)" in r.output
    verdicts["lb-failover"] = "fail"
    r = CliRunner().invoke(main, ["demo", "--out", str(out)])
    assert r.exit_code == 1 and "demo: FAIL (4 passed, 1 failed, 0 skipped)" in r.output


def test_cli_suite_check_and_list(home: Path, tmp_path: Path) -> None:
    cli = CliRunner()
    ok = cli.invoke(main, ["suite", "check", "smoke"])
    assert ok.exit_code == 0 and "suite smoke: 5 entries, valid" in ok.output
    bad = _suite(tmp_path, "entries:\n  - runbook: db-failover\n    parameters: {tagret: x}\n")
    r = cli.invoke(main, ["suite", "check", str(bad)])
    assert r.exit_code == 2
    assert r.output.startswith("faultbook: error: suite t, entry 1 (db-failover): unknown param")
    listed = cli.invoke(main, ["suite", "list"])
    assert "nightly:" in listed.output and "target={role: primary}" in listed.output


STRESS_THEN_DRILL = """
entries:
  - name: capacity
    runbook: stress
    parameters: {mode: drill}
  - name: crash-at-soak
    runbook: db-failover
    parameters: {mode: drill}
    load_from: capacity
"""


class StressRunner(FakeRunner):
    """The stress entry records SOAK as its soak rate (None: it measured none)."""

    def __init__(self, soak: float | None, verdict: str = "pass") -> None:
        super().__init__({"stress": verdict})
        self.soak = soak

    def __call__(self, runbook: str, params: dict[str, Any], out: Path, **kw: Any) -> Any:
        done = super().__call__(runbook, params, out, **kw)
        if runbook == "stress":
            doc = json.loads((out / "result.json").read_text())
            doc["metrics"]["soak_rps"] = self.soak
            (out / "result.json").write_text(json.dumps(doc))
        return done


def test_a_drill_runs_at_the_soak_load_its_stress_entry_measured(
    home: Path, tmp_path: Path
) -> None:
    suite = model.load(_suite(tmp_path, STRESS_THEN_DRILL))
    assert suite.entries[1].load_from == "capacity"
    fake = StressRunner(soak=140.0)
    res = _run(suite, tmp_path / "out", run=fake)
    assert [c[0] for c in fake.calls] == ["stress", "db-failover"]
    assert fake.calls[1][1]["load_rps"] == 140.0
    assert res.verdict == "pass"
    capped = StressRunner(soak=900.0)
    _run(suite, tmp_path / "out2", run=capped)
    assert capped.calls[1][1]["load_rps"] == execute.MAX_DRILL_RPS


@pytest.mark.parametrize(("soak", "verdict"), [(None, "fail"), (0.0, "pass")])
def test_no_soak_load_skips_the_drill_with_the_reason(
    home: Path, tmp_path: Path, soak: float | None, verdict: str
) -> None:
    suite = model.load(_suite(tmp_path, STRESS_THEN_DRILL))
    fake = StressRunner(soak=soak, verdict=verdict)
    res = _run(suite, tmp_path / "out", run=fake)
    assert [c[0] for c in fake.calls] == ["stress"]
    skipped = res.entries[1]
    assert skipped.status == "skipped"
    assert skipped.reason == f"no soak load: capacity measured none ({res.entries[0].status})"


def test_load_from_needs_a_runbook_with_a_load(tmp_path: Path) -> None:
    text = STRESS_THEN_DRILL.replace("runbook: db-failover", "runbook: health-check").replace(
        "parameters: {mode: drill}\n    load_from", "load_from"
    )
    with pytest.raises(SuiteError, match="load_from needs a runbook with load_rps; health-check"):
        model.load(_suite(tmp_path, text))
