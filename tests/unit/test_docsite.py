"""make docs: the mkdocs hook (README as the home page, runbook parameters tables, the
scorecard and an executed example per runbook, make docs-examples)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakeruns import fake_result

from faultbook.archive import store
from faultbook.oncall import docsite
from faultbook.paths import REPO_ROOT
from faultbook.report import runner
from faultbook.suites import history


def test_the_parameters_table_is_the_notebooks_cell() -> None:
    table = docsite.parameters_table("health-check")
    declared = [p for p in runner.parameters("health-check") if p not in runner.RUNNER_PARAMS]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == declared
    assert "| `timeout_s` | float | `10.0` | seconds to wait for each host's SSH answer |" in rows
    assert "result_dir" not in "".join(rows)
    assert "modes `drill`, `incident`" in table


def test_the_table_goes_at_the_marker_or_ends_the_parameters_section() -> None:
    assert "| `timeout_s` |" in docsite.with_parameters(
        f"# hc\n\n{docsite.MARKER}\n", "health-check"
    )
    page = "# hc\n\n## Parameters\n\nhand-written\n\n## Steps\n\n1. ssh\n"
    out = docsite.with_parameters(page, "health-check")
    params, steps = out.index("## Parameters"), out.index("## Steps")
    assert params < out.index("hand-written") < out.index("| `timeout_s` |") < steps
    assert docsite.with_parameters("# hc\n", "health-check").count("## Parameters") == 1


def test_a_hand_written_table_that_drifted_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    page = (
        "## Parameters\n\n| name | type |\n|---|---|\n| `inventory` | str |\n"
        "| `timeout` | float |\n| `result_dir` | str |\n"
    )
    with caplog.at_level(logging.WARNING, logger="mkdocs.hooks.faultbook"):
        docsite.with_parameters(page, "health-check", "runbooks/health-check.md")
    text = caplog.text
    assert "lists `timeout`, which the notebook does not declare" in text
    assert "lacks `timeout_s`, which the notebook declares" in text
    assert "result_dir" not in text  # the runner's own parameter


def test_the_readme_links_become_site_links() -> None:
    text = (
        "[a](docs/alerts.md#guardrails) [b](runbooks/db-failover.ipynb) [c](LICENSE) "
        "[d](docs/roles/) [e](https://example.org/x.md) [f](#top)"
    )
    out = docsite.readme_for_site(text, {"db-failover"}, {"alerts.md", "roles/pki.md"})
    assert out == (
        "[a](alerts.md#guardrails) [b](runbooks/db-failover.md) c d "
        "[e](https://example.org/x.md) [f](#top)"
    )


def test_folder_links_and_their_generated_index(tmp_path) -> None:
    assert docsite.folder_links("see [roles](roles/) and [x](../runbooks/#a)") == (
        "see [roles](roles/index.md) and [x](../runbooks/index.md#a)"
    )
    (tmp_path / "roles").mkdir()
    (tmp_path / "roles" / "pki.md").write_text("# pki: the CA\n")
    found = docsite.folders({"index.md", "roles/pki.md", "runbooks/index.md", "runbooks/x.md"})
    assert found == {"roles": ["roles/pki.md"]}
    assert docsite.folder_index("roles", ["roles/pki.md"], tmp_path) == (
        "# roles\n\n- [pki: the CA](pki.md)\n"
    )


# ------------------------------------------------ executed examples and the scorecard
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A FAULTBOOK_HOME with no archive yet."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("FAULTBOOK_HOME", str(h))
    return h


def _archive(
    home: Path, runbook: str, started: str, *, html: bool = True, **kw: Any
) -> store.ArchivedRun:
    out = home.parent / f"out-{runbook}-{started}"
    fake_result(out, runbook, started=started, **kw)
    (out / f"{runbook}.html").write_text(f"<html><body>{runbook} run of {started}</body></html>")
    if not html:
        (out / f"{runbook}.html").unlink()
    folder = store.archive(out, runbook, params={}, trigger="schedule:nightly", home=home)
    return next(r for r in store.runs(home) if r.path == folder)


@pytest.fixture
def runs(home: Path) -> dict[str, store.ArchivedRun]:
    """db-failover: two drills that passed, a newer failed drill, a newer incident and a
    newer drill without its HTML; lb-failover: a failed drill, a newer incident."""
    return {
        "old-pass": _archive(home, "db-failover", "2026-11-28T03:00:00Z"),
        "pass": _archive(home, "db-failover", "2026-11-29T03:00:00Z"),
        "fail": _archive(
            home, "db-failover", "2026-11-30T03:00:00Z", verdict="fail", fault="partition"
        ),
        "incident": _archive(
            home, "db-failover", "2026-11-30T04:00:00Z", mode="incident", fault=None
        ),
        "no-html": _archive(home, "db-failover", "2026-11-30T05:00:00Z", html=False),
        "lb-fail": _archive(home, "lb-failover", "2026-11-29T03:00:00Z", verdict="fail"),
        "lb-incident": _archive(
            home, "lb-failover", "2026-11-30T03:00:00Z", mode="incident", fault=None
        ),
    }


def test_the_example_is_the_newest_drill_that_passed_else_the_newest_run(
    runs: dict[str, store.ArchivedRun],
) -> None:
    archived = store.runs()
    assert docsite.choose(archived, "db-failover") == runs["pass"]
    assert docsite.choose(archived, "lb-failover") == runs["lb-incident"]
    assert docsite.choose(archived, "web-node-failure") is None
    ex = docsite.example("db-failover", archived)
    assert ex is not None and ex.html == runs["pass"].path / "db-failover.html"
    assert ex.describe() == (
        "run of 2026-11-29 03:00:00 UTC, mode drill (`db-failover/host-crash`), verdict "
        "**pass**, trigger `schedule:nightly`; from the run archive "
        f"(`runs/{runs['pass'].name}`)"
    )


def test_with_no_archive_the_pages_say_so_and_which_command_makes_one(
    home: Path, tmp_path: Path
) -> None:
    found = docsite.gather(docsite._runbooks(), tmp_path / "docs", now=NOW)
    assert found.examples == {} and found.history is None and found.unreadable == ""
    page = docsite.with_runs("# db-failover\n", "db-failover", found)
    assert "## Latest scorecard\n\nNo run has been recorded yet in the run archive" in page
    assert "No executed example of db-failover exists yet" in page
    assert "`faultbook run db-failover -p mode drill`" in page
    assert "`make docs-examples`" in page and "<iframe" not in page
    assert "`faultbook run backup-restore -p drill true`" in docsite.example_section(
        "backup-restore", None
    )
    assert "No run has been recorded yet" in docsite.scorecard_page(None)


def test_an_unreadable_archive_is_no_archive(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FAULTBOOK_HOME", "relative/home")
    found = docsite.gather(["db-failover"], tmp_path, now=NOW)
    assert found.history is None and "relative path" in found.unreadable
    assert "it could not be read: FAULTBOOK_HOME='relative/home'" in docsite.scorecard_page(
        found.history, found.unreadable
    )


def _commit(docs: Path, runbook: str, started: str, trigger: str = "user:lead") -> Path:
    folder = docs / docsite.EXAMPLES / runbook
    fake_result(folder, runbook, started=started)
    (folder / f"{runbook}.html").write_text(f"<html>committed {runbook}</html>")
    (folder / store.META).write_text(json.dumps({"runbook": runbook, "trigger": trigger}))
    return folder


def test_the_committed_example_is_the_fallback(
    runs: dict[str, store.ArchivedRun], tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    _commit(docs, "web-node-failure", "2026-11-20T03:00:00Z")
    _commit(docs, "db-failover", "2026-11-20T03:00:00Z")
    archived = store.runs()
    web = docsite.example("web-node-failure", archived, docs)
    assert web is not None and web.html == docs / "examples/web-node-failure/web-node-failure.html"
    assert web.describe() == (
        "run of 2026-11-20 03:00:00 UTC, mode drill (`web-node-failure/host-crash`), verdict "
        "**pass**, trigger `user:lead`; committed in `docs/examples/web-node-failure/` "
        "(`make docs-examples`)"
    )
    db = docsite.example("db-failover", archived, docs)  # the archive first
    assert db is not None and db.run == runs["pass"]
    assert docsite.example("lb-failover", [], docs) is None


def test_a_committed_example_without_its_result_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _commit(tmp_path / "docs", "health-check", "2026-11-20T03:00:00Z")
    (folder / "result.json").unlink()
    with caplog.at_level(logging.WARNING, logger="mkdocs.hooks.faultbook"):
        assert docsite.committed("health-check", tmp_path / "docs") is None
    assert "docs/examples/health-check has no readable result.json" in caplog.text


def test_docs_examples_copies_each_runbooks_example(
    runs: dict[str, store.ArchivedRun], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "docs" / "examples"
    (dest / "db-failover").mkdir(parents=True)
    (dest / "db-failover" / "stale.html").write_text("an older copy")
    assert docsite.main(["examples", "--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    assert f"db-failover: {runs['pass'].path} (drill, pass) -> {dest / 'db-failover'}" in out
    assert f"web-node-failure: no archived run with its notebook's HTML; {dest}" in out
    assert sorted(p.name for p in (dest / "db-failover").iterdir()) == [
        "archive.json",
        "db-failover.html",
        "result.json",
    ]
    assert (dest / "db-failover" / "db-failover.html").read_text() == (
        runs["pass"].path / "db-failover.html"
    ).read_text()
    ex = docsite.committed("db-failover", dest.parent)  # what the hook then reads
    assert ex is not None and ex.run.started == runs["pass"].started
    assert ex.run.trigger == "schedule:nightly"


def test_docs_examples_with_no_archive_is_one_line_and_exit_1(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert docsite.main(["examples", "--dest", str(tmp_path / "ex")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("docsite: error: no archived run to copy into ") and err.count("\n") == 1
    assert not (tmp_path / "ex").exists()


def test_the_scorecard_lines_are_the_historys(runs: dict[str, store.ArchivedRun]) -> None:
    found = docsite.gather(["db-failover", "health-check"], now=NOW)
    data = history.collect(None, Path("."), NOW)
    assert found.history is not None and found.history["score"] == data["score"]
    tier = data["score"]["tiers"]["database"]
    section = docsite.scorecard_section("db-failover", found.history)
    lines = section.splitlines()
    assert (
        "Latest run: 2026-11-30 05:00:00 UTC, `db-failover/host-crash`, verdict **pass** "
        "(5 run(s) archived; as of 2026-12-01 12:00:00 UTC, when this site was built)."
    ) in lines
    assert (
        "| `db-failover/host-crash` | pass | 2026-11-30 05:00:00 | passed recently | 100 | 3 |"
        in lines
    )
    assert "| `db-failover/partition` | fail | 2026-11-30 03:00:00 | failed | 50 | 1 |" in lines
    assert f"Tier **database**: score **{tier:.0f}** (the mean of its drills); " in section
    assert f"overall **{data['score']['overall']:.0f}**" in section
    assert "[the scorecard](../scorecard.md)" in section
    health = docsite.scorecard_section("health-check", found.history)
    assert "No run of health-check has been recorded yet" in health
    assert "health-check is not a drill, so it is not scored." in health
    page = docsite.scorecard_page(found.history)
    assert f"| **overall** | **{data['score']['overall']:.0f}** |" in page
    assert f"| database | {tier:.0f} |" in page and "| web | 0 |" in page
    assert "| `lb-failover/host-crash` | load balancer | fail |" in page


def test_the_scorecard_and_example_go_at_the_marker_or_end_the_page(
    runs: dict[str, store.ArchivedRun],
) -> None:
    found = docsite.gather(["db-failover"], now=NOW)
    page = f"# db\n\n{docsite.RUNS_MARKER}\n\n## Limits\n"
    out = docsite.with_runs(page, "db-failover", found, "../../examples/db-failover.html")
    assert (
        out.index("## Latest scorecard") < out.index("## Executed example") < out.index("## Limits")
    )
    assert "[The executed notebook](../examples/db-failover.html): run of 2026-11-29" in out
    assert '<iframe src="../../examples/db-failover.html"' in out
    end = docsite.with_runs("# db\n\n## Limits\n", "db-failover", found)
    assert end.index("## Limits") < end.index("## Latest scorecard")
    assert "<iframe" not in end


def test_mkdocs_build_strict_publishes_the_examples(
    runs: dict[str, store.ArchivedRun], tmp_path: Path
) -> None:
    """A real ``mkdocs build --strict`` of docs/ with the fake archive: db-failover's and
    lb-failover's examples from the archive (db-failover's over a committed one),
    web-node-failure's the committed one, health-check none."""
    docs = tmp_path / "site-docs"
    shutil.copytree(REPO_ROOT / "docs", docs)
    shutil.rmtree(docs / docsite.EXAMPLES, ignore_errors=True)  # only this test's
    _commit(docs, "db-failover", "2026-11-20T03:00:00Z")
    _commit(docs, "web-node-failure", "2026-11-20T03:00:00Z")
    config = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())
    config["docs_dir"] = str(docs)
    config["hooks"] = [str(REPO_ROOT / h) for h in config["hooks"]]
    cfg = tmp_path / "mkdocs.yml"
    cfg.write_text(yaml.safe_dump(config))
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(cfg), "-d", str(site)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    examples = site / docsite.EXAMPLES
    assert sorted(p.name for p in examples.iterdir()) == [
        "db-failover.html",
        "lb-failover.html",
        "web-node-failure.html",
    ]
    assert (examples / "db-failover.html").read_text() == (
        runs["pass"].path / "db-failover.html"
    ).read_text()
    assert (
        examples / "web-node-failure.html"
    ).read_text() == "<html>committed web-node-failure</html>"
    db = (site / "runbooks" / "db-failover" / "index.html").read_text()
    assert '<a href="../../examples/db-failover.html">The executed notebook</a>' in db
    assert '<iframe src="../../examples/db-failover.html"' in db
    assert f"from the run archive (<code>runs/{runs['pass'].name}</code>)" in db
    web = (site / "runbooks" / "web-node-failure" / "index.html").read_text()
    assert "committed in <code>docs/examples/web-node-failure/</code>" in web
    lb = (site / "runbooks" / "lb-failover" / "index.html").read_text()
    assert '<a href="../../examples/lb-failover.html">' in lb  # the archive's incident run
    hc = (site / "runbooks" / "health-check" / "index.html").read_text()
    assert "No executed example of health-check exists yet" in hc
    assert "overall" in (site / "scorecard" / "index.html").read_text()
