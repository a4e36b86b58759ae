"""The archive: every run copied under $FAULTBOOK_HOME/runs/<UTC time>-<runbook>/."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nbformat
import pytest
from fakeruns import fake_result

from faultbook.archive import audit, store
from faultbook.errors import ArchiveError
from faultbook.report import runner


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("FAULTBOOK_HOME", str(h))
    monkeypatch.setenv("FAULTBOOK_TRIGGER", "schedule:nightly")
    return h


def test_a_run_lands_in_runs_with_its_files_and_trigger(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    fake_result(out, "db-failover", started="2026-11-27T10:00:00.123Z")
    folder = store.archive(out, "db-failover", params={"mode": "drill", "vault_token": "s3"})
    assert folder == home / "runs" / "20261127T100000Z-db-failover"
    names = {p.name for p in folder.iterdir()}
    assert names == {
        "db-failover.ipynb",
        "db-failover.html",
        "result.json",
        "traffic.csv",
        "faults.jsonl",
        "archive.json",
    }
    meta = json.loads((folder / "archive.json").read_text())
    assert meta["trigger"] == "schedule:nightly" and meta["out_dir"] == str(out.resolve())
    (entry,) = audit.entries(home)
    assert entry["kind"] == "run" and entry["path"] == "runs/20261127T100000Z-db-failover"
    assert entry["parameters"] == {"mode": "drill", "vault_token": "***"}
    assert entry["trigger"] == "schedule:nightly" and entry["verdict"] == "pass"
    assert set(entry["files"]) == names
    assert entry["files"]["result.json"] == store.sha256_file(folder / "result.json")
    assert (out / "result.json").exists()  # --out keeps its copy


def test_two_runs_in_the_same_second_get_a_suffix(home: Path, tmp_path: Path) -> None:
    made = []
    for i in range(3):
        out = tmp_path / f"out{i}"
        fake_result(out, "lb-failover", started="2026-11-27T10:00:00.000Z")
        made.append(store.archive(out, "lb-failover", params={}).name)
    assert made == [
        "20261127T100000Z-lb-failover",
        "20261127T100000Z-lb-failover-2",
        "20261127T100000Z-lb-failover-3",
    ]
    listed = store.runs(home)
    assert [r.name for r in listed] == made
    assert {r.runbook for r in listed} == {"lb-failover"}
    assert store.parse_name(made[2]) is not None and store.parse_name(made[2])[1] == "lb-failover"


def test_a_reused_out_dir_archives_only_what_this_run_wrote(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    old = out / "web-node-failure.html"
    old.write_text("an earlier run")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    (out / "faults.lock").write_text("")
    since = time.time()
    fake_result(out, "db-failover")
    folder = store.archive(out, "db-failover", params={}, since=since)
    assert not (folder / "web-node-failure.html").exists()
    assert not (folder / "faults.lock").exists()
    assert (folder / "result.json").exists()


def test_an_unwritable_archive_raises_one_line(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    fake_result(out)
    home.mkdir()
    (home / "runs").write_text("not a directory")
    with pytest.raises(ArchiveError) as err:
        store.archive(out, "db-failover", params={})
    assert "cannot archive the run" in str(err.value) and "\n" not in str(err.value)
    assert audit.entries(home) == []


def _tiny_runbook(directory: Path, fail: bool) -> None:
    """A runbook that records a result the way the real ones do, touching no host."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('result_dir = ""\nmode = "drill"\nsecret_key = "x"')
    params.metadata["tags"] = ["parameters"]
    body = (
        "from faultbook.results import Run\n"
        "run = Run.start('tiny', 'drill', {'mode': mode})\n"
        "run.metrics['rto_s'] = 1.5\n"
        "run.finish(); run.save(result_dir)\n"
        "open(result_dir + '/traffic.csv', 'w').write('seq\\n')\n"
    )
    cells = [params, nbformat.v4.new_code_cell(body)]
    if fail:
        cells.append(nbformat.v4.new_code_cell("raise RuntimeError('boom')"))
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, directory / "tiny.ipynb")


@pytest.mark.parametrize("fail", [False, True], ids=["pass", "failed-cell"])
def test_runner_run_archives_every_run_whatever_the_verdict(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool
) -> None:
    books = tmp_path / "runbooks"
    books.mkdir()
    _tiny_runbook(books, fail)
    monkeypatch.setattr(runner, "RUNBOOKS_DIR", books)
    outcome = runner.run("tiny", {"secret_key": "hunter2"}, tmp_path / "out", progress=False)
    assert outcome.summary.verdict == ("fail" if fail else "pass")
    assert outcome.archived is not None and outcome.archived.parent == home / "runs"
    got = {p.name for p in outcome.archived.iterdir()}
    assert {"tiny.ipynb", "tiny.html", "result.json", "traffic.csv", "archive.json"} <= got
    (entry,) = audit.entries(home)
    assert entry["parameters"]["secret_key"] == "***" and entry["runbook"] == "tiny"
    assert entry["verdict"] == outcome.summary.verdict
    assert audit.verify(home).ok


def test_runner_keeps_the_run_when_the_archive_is_unwritable(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    fake_result(out)
    home.mkdir()
    (home / "runs").write_text("")
    assert runner.archive(out, "db-failover", {}) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the run is not archived" in err and str(out) in err
    assert (out / "result.json").exists()
