"""The audit log's hash chain, its tamper tests, and retention with a prune entry."""

from __future__ import annotations

import json
import multiprocessing
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakeruns import fake_result

from faultbook.archive import audit, retention, store
from faultbook.cli import main
from faultbook.errors import ParameterError


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("FAULTBOOK_HOME", str(h))
    monkeypatch.setenv("FAULTBOOK_TRIGGER", "user:tester")
    return h


def _archive(tmp_path: Path, n: int, runbook: str = "db-failover", day: int = 1) -> list[Path]:
    out = []
    for i in range(n):
        src = tmp_path / f"src-{runbook}-{day}-{i}"
        fake_result(src, runbook, started=f"2026-11-{day:02d}T10:{i:02d}:00.000Z")
        out.append(store.archive(src, runbook, params={"mode": "drill"}))
    return out


def _lines(home: Path) -> list[str]:
    return (home / "audit.jsonl").read_text().splitlines()


def _write(home: Path, lines: list[str]) -> None:
    (home / "audit.jsonl").write_text("".join(line + "\n" for line in lines))


def test_each_entry_is_chained_to_the_one_before(home: Path, tmp_path: Path) -> None:
    _archive(tmp_path, 3)
    es = audit.entries(home)
    assert [e["seq"] for e in es] == [1, 2, 3]
    assert es[0]["prev"] == audit.GENESIS
    for before, e in zip(es, es[1:], strict=False):
        assert e["prev"] == before["hash"]
        assert e["hash"] == audit.chain_hash(before["hash"], e)
    rep = audit.verify(home)
    assert rep.ok and rep.entries == 3 and rep.files == 18
    assert rep.summary().startswith("audit OK: 3 entries (3 run), 18 archived files")


def test_an_edited_entry_is_named(home: Path, tmp_path: Path) -> None:
    _archive(tmp_path, 4)
    lines = _lines(home)
    e = json.loads(lines[1])
    e["verdict"] = "fail"
    lines[1] = json.dumps(e, sort_keys=True)
    _write(home, lines)
    rep = audit.verify(home)
    assert not rep.ok
    assert rep.summary().startswith("audit FAILED: entry 2 (run db-failover, ")
    assert "was edited" in rep.summary()


def test_an_edit_that_recomputes_its_hash_breaks_the_next_link(home: Path, tmp_path: Path) -> None:
    _archive(tmp_path, 3)
    lines = _lines(home)
    e = json.loads(lines[0])
    e["trigger"] = "user:someone-else"
    e["hash"] = audit.chain_hash(e["prev"], e)
    lines[0] = json.dumps(e, sort_keys=True)
    _write(home, lines)
    first = min(audit.verify(home).problems, key=lambda p: p.line)
    assert "entry 2" in first.text and "does not follow entry 1" in first.text


def test_a_removed_entry_is_found(home: Path, tmp_path: Path) -> None:
    _archive(tmp_path, 4)
    lines = _lines(home)
    del lines[1]
    _write(home, lines)
    rep = audit.verify(home)
    assert "entry 3 (run db-failover" in rep.summary()
    assert "comes where entry 2 should" in rep.summary()


def test_reordered_entries_are_found(home: Path, tmp_path: Path) -> None:
    _archive(tmp_path, 4)
    lines = _lines(home)
    lines[1], lines[2] = lines[2], lines[1]
    _write(home, lines)
    assert "entry 3 (run db-failover" in audit.verify(home).summary()


def test_entries_cut_off_the_end_are_found(home: Path, tmp_path: Path) -> None:
    folders = _archive(tmp_path, 3)
    _write(home, _lines(home)[:-1])
    rep = audit.verify(home)
    texts = [p.text for p in rep.problems]
    assert any("audit.head records entry 3" in t for t in texts)
    orphan = f"{folders[-1].relative_to(home)} is in the archive but no audit entry records it"
    assert orphan in texts


def test_a_changed_archived_file_is_named(home: Path, tmp_path: Path) -> None:
    folders = _archive(tmp_path, 3)
    result = folders[1] / "result.json"
    doc = json.loads(result.read_text())
    doc["verdict"] = "pass" if doc["verdict"] == "fail" else "fail"
    result.write_text(json.dumps(doc))
    rep = audit.verify(home)
    assert not rep.ok
    assert rep.summary().startswith("audit FAILED: entry 2 (run db-failover")
    assert f"{folders[1].name}/result.json changed" in rep.summary()


def test_a_missing_or_added_file_is_named(home: Path, tmp_path: Path) -> None:
    folders = _archive(tmp_path, 2)
    (folders[0] / "traffic.csv").unlink()
    (folders[1] / "extra.txt").write_text("x")
    texts = [p.text for p in audit.verify(home).problems]
    assert any("traffic.csv is missing" in t for t in texts)
    assert any("extra.txt was added after" in t for t in texts)


def test_a_torn_line_is_flagged_and_the_next_writer_starts_afresh(
    home: Path, tmp_path: Path
) -> None:
    _archive(tmp_path, 1)
    with open(home / "audit.jsonl", "a") as f:
        f.write('{"seq": 2, "kind": "ru')
    _archive(tmp_path, 1, day=2)
    es = audit.entries(home)
    assert [e["seq"] for e in es] == [1, 2] and es[1]["prev"] == es[0]["hash"]
    rep = audit.verify(home)
    assert [p.text for p in rep.problems] == [
        "line 2 is not a complete audit entry (torn or edited)"
    ]


def _append_many(home: str, n: int) -> None:
    os.environ["FAULTBOOK_HOME"] = home
    for i in range(n):
        audit.append({"kind": "run-skipped", "reason": f"busy {i}"})


def test_writers_in_several_processes_keep_one_chain(home: Path) -> None:
    home.mkdir()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(home), 25)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    es = audit.entries(home)
    assert [e["seq"] for e in es] == list(range(1, 101))
    assert audit.verify(home).ok


def test_prune_keeps_n_runs_or_d_days_per_runbook_and_verify_still_passes(
    home: Path, tmp_path: Path
) -> None:
    old = _archive(tmp_path, 4, "db-failover", day=1)
    other = _archive(tmp_path, 1, "lb-failover", day=1)
    recent = _archive(tmp_path, 1, "db-failover", day=20)
    now = datetime(2026, 11, 25, tzinfo=UTC)
    p = retention.Policy(keep_runs=2, keep_days=10)
    victims = retention.select(store.runs(home), p, now)
    # db-failover: the two newest (day 20 and old[3]) kept; lb-failover's only run kept
    assert [v.path for v in victims] == old[:3]
    done = retention.prune(p, now=now)
    assert done.removed == [str(f.relative_to(home)) for f in old[:3]]
    assert all(not f.exists() for f in old[:3]) and old[3].exists() and other[0].exists()
    assert recent[0].exists()
    entry = audit.entries(home)[-1]
    assert entry["kind"] == "prune" and [r["entry"] for r in entry["removed"]] == [1, 2, 3]
    rep = audit.verify(home)
    assert rep.ok, rep.summary()
    assert rep.kinds == {"run": 6, "prune": 1}


def test_a_prune_entry_does_not_excuse_a_run_it_did_not_remove(home: Path, tmp_path: Path) -> None:
    folders = _archive(tmp_path, 3)
    retention.prune(retention.Policy(2, 0), now=datetime(2026, 12, 1, tzinfo=UTC))
    assert not folders[0].exists()
    import shutil

    shutil.rmtree(folders[2])
    rep = audit.verify(home)
    assert "entry 3 (run db-failover" in rep.summary() and "no prune removed it" in rep.summary()


def test_the_policy_comes_from_the_flags_the_config_the_inventory(home: Path) -> None:
    home.mkdir()
    assert retention.policy() == retention.DEFAULT
    inv = {"archive_keep_runs": 7, "archive_keep_days": 3}
    assert retention.policy(inventory_vars=inv) == retention.Policy(7, 3.0)
    (home / "archive.yml").write_text("keep_runs: 9\n")
    assert retention.policy(inventory_vars=inv) == retention.Policy(9, 3.0)
    assert retention.policy(keep="4", days="1.5", inventory_vars=inv) == retention.Policy(4, 1.5)


@pytest.mark.parametrize(
    ("keep", "days", "message"),
    [
        ("-1", None, "--keep must be a whole number of runs >= 0, got '-1'"),
        ("nan", None, "--keep must be a whole number of runs >= 0, got 'nan'"),
        ("2.5", None, "--keep must be a whole number of runs >= 0, got '2.5'"),
        (None, "-3", "--days must be a number of days >= 0, got '-3'"),
        (None, "nan", "--days must be a number of days >= 0, got 'nan'"),
        (None, "inf", "--days must be a number of days >= 0, got 'inf'"),
        ("0", "0", "would remove every run"),
    ],
)
def test_bad_retention_values_are_refused(
    home: Path, keep: str | None, days: str | None, message: str
) -> None:
    home.mkdir()
    with pytest.raises(ParameterError) as err:
        retention.policy(keep=keep, days=days)
    assert message in str(err.value)


def test_a_bad_config_value_names_the_file(home: Path) -> None:
    home.mkdir()
    (home / "archive.yml").write_text("keep_days: -2\n")
    with pytest.raises(ParameterError, match=r"archive.yml: keep_days must be a number"):
        retention.policy()


def test_cli_verify_and_prune(home: Path, tmp_path: Path) -> None:
    folders = _archive(tmp_path, 3)
    cli = CliRunner()
    ok = cli.invoke(main, ["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith("audit OK: 3 entries") and ok.output.count("\n") == 1
    bad = cli.invoke(main, ["archive", "prune", "--keep", "nan"])
    assert bad.exit_code == 2
    assert bad.output.strip().splitlines() == [
        "faultbook: error: --keep must be a whole number of runs >= 0, got 'nan'"
    ]
    dry = cli.invoke(main, ["archive", "prune", "--keep", "1", "--days", "0", "--dry-run"])
    assert dry.exit_code == 0 and "would remove 2 runs" in dry.output and folders[0].exists()
    done = cli.invoke(main, ["archive", "prune", "--keep", "1", "--days", "0"])
    assert done.exit_code == 0 and "removed 2 runs" in done.output
    assert cli.invoke(main, ["audit", "verify"]).exit_code == 0
    (folders[2] / "result.json").write_text("{}")
    failed = cli.invoke(main, ["audit", "verify"])
    assert failed.exit_code == 1
    assert "entry 3 (run db-failover" in failed.output and "result.json changed" in failed.output
    assert failed.output.count("\n") == 1


def test_verify_with_no_log_and_no_runs_is_ok(home: Path) -> None:
    assert audit.verify(home).ok
    orphan = home / "runs" / "20261127T100000Z-db-failover"
    orphan.mkdir(parents=True)
    assert "no audit log" in audit.verify(home).summary()


def test_old_runs_age_out(home: Path, tmp_path: Path) -> None:
    _archive(tmp_path, 2)
    now = datetime(2026, 11, 1, 10, 0, tzinfo=UTC) + timedelta(days=5)
    assert len(retention.select(store.runs(home), retention.Policy(0, 4), now)) == 2
    assert retention.select(store.runs(home), retention.Policy(0, 6), now) == []
