"""The game day: suites/gameday.yml validates and covers the plan, and the fault x tier
matrix is written from fake archived runs (tests/unit/fakeruns.py). No lab."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakeruns import fake_result

from faultbook.archive import store
from faultbook.drills import faults, steps
from faultbook.errors import SuiteError
from faultbook.suites import gameday, model

# Which tier of the matrix a role targets, per runbook.
COLUMN = {
    ("web-node-failure", "web"): "web",
    ("db-failover", "primary"): "db primary",
    ("lb-failover", "vip-holder"): "lb",
    ("fault-observe", "primary"): "db primary",
    ("fault-observe", "web"): "web",
    ("fault-observe", "any-standby"): "db standby",
    ("fault-observe", "backup"): "backup",
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("FAULTBOOK_HOME", str(h))
    monkeypatch.setenv("FAULTBOOK_TRIGGER", "user:gameday")
    return h


# ------------------------------------------------------------------ the suite and the plan
def test_the_gameday_suite_validates_and_every_drill_accepts_its_fault() -> None:
    s = model.load("gameday")
    assert s.name == "gameday" and s.entries[0].runbook == "health-check"
    for e in s.entries[1:]:
        if e.runbook == "stress":
            assert e.params["mode"] == "drill", e.name  # the load the -at-soak entries take
            continue
        fault = e.params["fault"]
        assert e.params["mode"] == "drill" and fault in steps.DRILLS[e.runbook].faults, e.name
        assert e.limits == {} and e.objectives()["lost_writes"] == 0, e.name
        ((target),) = e.targets
        assert target.param == "target"
        cell = next(c for c in gameday.PLAN if c.entry == e.name)
        also = e.params.get("also_fault")
        # A second host lost during the drill: its cell is that host's tier.
        column = also.split("@")[1] if also else COLUMN[(e.runbook, target.role)]
        assert (cell.fault, cell.column) == (fault, column), e.name


def test_the_plan_covers_the_game_day_and_says_what_the_rest_needs() -> None:
    names = {e.name for e in model.load("gameday").entries}
    cells = {(c.fault, c.column, c.note): c for c in gameday.PLAN}
    wanted = [
        ("process-freeze", "web"),
        ("process-freeze", "db primary"),
        ("process-freeze", "lb"),
        ("delay-loss", "db primary"),
        ("delay-loss", "web"),
        ("partition", "db primary"),
        ("partition", "web"),
        ("partition", "lb"),
        ("disk-full", "db standby"),
        ("disk-full", "db primary"),
        ("disk-full", "backup"),
        ("host-crash", "backup"),  # during a db failover
        ("host-crash", "mon"),  # during a db failover
    ]
    for fault, column in wanted:
        assert any(f == fault and c == column for f, c, _ in cells), (fault, column)
    # the whole catalogue, but the security audit's drill (not an availability fault) and
    # triage's path cut (no drill offers it yet)
    game_day = {k for k, c in faults.CATALOGUE.items() if c.game_day}
    assert game_day == set(faults.CATALOGUE) - {"exposed-listener", "path-cut"}
    assert {c.fault for c in gameday.PLAN} == game_day
    assert len({c.entry for c in gameday.PLAN}) == len(gameday.PLAN)
    for c in gameday.PLAN:
        assert c.column in gameday.COLUMNS
        if c.entry not in names:
            assert c.needs and all(part in gameday.NEEDS for part in c.needs.split(", "))
    assert names - {c.entry for c in gameday.PLAN} == {"health-check", "stress-capacity"}
    soaked = [e for e in model.load("gameday").entries if e.load_from]
    assert {e.runbook for e in soaked} == {"db-failover", "web-node-failure", "lb-failover"}
    assert {e.load_from for e in soaked} == {"stress-capacity"}


def test_the_suites_comments_propose_every_entry_it_lacks() -> None:
    text = (model.SUITES_DIR / "gameday.yml").read_text()
    names = {e.name for e in model.load("gameday").entries}
    for c in gameday.PLAN:
        if c.entry not in names:
            assert f"#  - name: {c.entry}" in text, c.entry


# ------------------------------------------------------------------ fake suite runs
METRICS = {
    "rto_s": 4.25,
    "lost_writes": 0,
    "acked_writes": 400,
    "failed_requests": 3,
    "total_requests": 900,
    "p50_ms": 12.5,
    "p99_ms": 900.0,
}


def _entry_run(
    suite_dir: Path, home: Path, entry: str, runbook: str, fault: str, **kw: Any
) -> tuple[Path, dict[str, Any]]:
    """A run of ENTRY as `suite run` leaves it: SUITE_DIR/ENTRY, then archived."""
    src = suite_dir / entry
    doc = fake_result(src, runbook, fault=fault, metrics=dict(METRICS), **kw)
    folder = store.archive(src, runbook, params=doc["parameters"])
    return folder, doc


def _suite_run(tmp_path: Path, home: Path, stamp: str, summary: bool = True) -> Path:
    where = tmp_path / "reports" / f"suite-gameday-{stamp}"
    day = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T10:00:00.000Z"
    ok, _ = _entry_run(
        where, home, "web-process-freeze", "web-node-failure", "process-freeze", started=day
    )
    bad, _ = _entry_run(
        where,
        home,
        "db-primary-process-freeze",
        "db-failover",
        "process-freeze",
        verdict="fail",
        started=day,
    )
    if summary:
        entries = [
            {"entry": "health-check", "runbook": "health-check", "status": "pass", "reason": ""},
            {
                "entry": "web-process-freeze",
                "runbook": "web-node-failure",
                "status": "pass",
                "reason": "",
                "archived": str(ok),
                "metrics": METRICS,
            },
            {
                "entry": "db-primary-process-freeze",
                "runbook": "db-failover",
                "status": "fail",
                "reason": "verify: lost writes: 2",
                "archived": str(bad),
            },
            {
                "entry": "lb-vip-holder-partition",
                "runbook": "lb-failover",
                "status": "skipped",
                "reason": "not in steady state: lb2: haproxy inactive, keepalived active",
            },
        ]
        (where / "suite.json").write_text(
            json.dumps(
                {
                    "suite": "gameday",
                    "trigger": "user:alice",
                    "started_at": day,
                    "verdict": "fail",
                    "entries": entries,
                }
            )
        )
    return where


def test_the_matrix_of_the_latest_game_day(tmp_path: Path, home: Path) -> None:
    _suite_run(tmp_path, home, "20261120T100000Z")  # an older game day
    where = _suite_run(tmp_path, home, "20261127T100000Z")
    other = tmp_path / "reports" / "suite-smoke-20261128T100000Z"  # a later suite, not a game day
    _entry_run(
        other,
        home,
        "web-process-freeze",
        "web-node-failure",
        "service-kill",
        started="2026-11-28T10:00:00.000Z",
    )

    game = gameday.latest(home=home)
    assert game is not None and game.where == where.resolve()
    assert game.counts() == {"pass": 2, "fail": 1, "skipped": 1}
    freeze = game.outcomes["web-process-freeze"]
    assert freeze.status == "pass" and freeze.fault == "process-freeze" and freeze.target == "h1"
    assert freeze.folder.endswith("-web-node-failure")

    out = gameday.write(tmp_path / "docs" / "gameday.md", home=home)
    page = out.read_text()
    assert page.startswith("# Game day\n") and "suite-gameday-20261127T100000Z" in page
    assert "by user:alice: 2 passed, 1 failed, 1 skipped (verdict fail)." in page
    row = next(ln for ln in page.splitlines() if ln.startswith("| `process-freeze` |"))
    web, primary, standby, lb, backup, mon = row.split(" | ")[1:7]
    assert web == (
        "`web-process-freeze` (ledger.service)<br>**PASS** · RTO 4.2 s · lost 0 of 400 · "
        "failed 3 of 900"
    )
    assert primary.startswith("`db-primary-process-freeze` (postgresql@15-main)<br>**FAIL**")
    assert primary.endswith("<br>what failed: verify: lost writes: 2")
    assert lb.startswith("`lb-vip-holder-process-freeze`") and lb.endswith("<br>not run")
    assert standby == backup == "" and mon.rstrip(" |") == ""
    part = next(ln for ln in page.splitlines() if ln.startswith("| `partition` |"))
    assert "**skipped**: not in steady state: lb2: haproxy inactive" in part
    disk = next(ln for ln in page.splitlines() if ln.startswith("| `disk-full` |"))
    assert "`db-primary-wal-disk-full` (pg_wal)<br>not run" in disk  # in the suite, not run
    skew = next(ln for ln in page.splitlines() if ln.startswith("| `clock-skew` |"))
    assert "`backup-clock-skew` (real hosts)<br>not drilled yet: needs a whole host's clock" in skew
    assert "`db-primary-clock-skew` (postgresql@15-main, libfaketime)<br>not run" in skew
    assert "`web-clock-skew` (real hosts)<br>not drilled yet: needs a Python 3.11" in skew
    assert "## Not drilled yet" in page and "a whole host's clock: lab hosts share" in page
    entries = page.split("## Entries", 1)[1]
    assert (
        "| `db-primary-process-freeze` | db-failover | process-freeze | h1 | fail | 4.2 s | 0 | 3 |"
        in entries
    )
    assert "| `web-service-kill` | web-node-failure | service-kill |  | not run |" in entries


def test_a_game_day_cut_short_is_read_from_the_archive(tmp_path: Path, home: Path) -> None:
    where = _suite_run(tmp_path, home, "20261127T100000Z", summary=False)  # no suite.json
    game = gameday.latest(home=home)
    assert game is not None and set(game.outcomes) == {
        "web-process-freeze",
        "db-primary-process-freeze",
    }
    bad = game.outcomes["db-primary-process-freeze"]
    assert bad.status == "fail" and bad.reason == "verify: lost writes: 2"
    assert game.started == "2026-11-27T10:00:00Z"
    same = gameday.latest(where, home=home)
    assert same is not None and same.outcomes == game.outcomes


def test_no_game_day_yet_still_writes_the_plan(tmp_path: Path, home: Path) -> None:
    page = gameday.write(tmp_path / "gameday.md", home=home).read_text()
    assert "No game day has run yet" in page and "`web-partition`<br>not run" in page


def test_the_command_line(tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = _suite_run(tmp_path, home, "20261127T100000Z")
    out = tmp_path / "m.md"
    assert gameday.main(["matrix", "--suite-dir", str(where), "--out", str(out)]) == 0
    assert "**PASS**" in out.read_text() and str(out) in capsys.readouterr().out
    assert (
        gameday.main(["matrix", "--suite-dir", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    )
    assert "faultbook: --suite-dir" in capsys.readouterr().err
    with pytest.raises(SuiteError, match="no suite.json there"):
        gameday.latest(tmp_path / "nowhere", home=home)
