"""faultbook postmortem: drafts from fixture runs, nothing invented, bad run folders refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakeruns import fake_result

from faultbook import cli
from faultbook.errors import IncidentError
from faultbook.oncall import postmortem


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("FAULTBOOK_HOME", str(h))
    return h


def invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli.main, list(args))
    return res.exit_code, res.output


def decision_log(home: Path, entries: list[dict]) -> None:
    with open(home / "decisions.jsonl", "w") as f:
        for e in entries:
            f.write(json.dumps(e) + "\n")


def incident_runs(tmp_path: Path) -> tuple[Path, Path]:
    """An autopilot run that failed (an objective missed, a step retried) and the incident
    a person then ran by hand."""
    auto = tmp_path / "runs" / "20261127T100000Z-db-failover"
    fake_result(
        auto,
        "db-failover",
        started="2026-11-27T10:00:00.000Z",
        verdict="fail",
        metrics={"rto_s": 42.5, "lost_writes": 0, "failed_requests": 7, "total_requests": 900},
    )
    doc = json.loads((auto / "result.json").read_text())
    doc["objectives"] = {"rto_s": 30.0, "lost_writes": 0}
    doc["finished_at"] = "2026-11-27T10:01:00.000Z"
    doc["detected_at"] = "2026-11-27T10:00:01.500Z"
    doc["recovered_at"] = "2026-11-27T10:00:43.000Z"
    step = {"status": "failed", "detail": "ConditionTimeout: no primary after 10 s"}
    doc["steps"] = [
        {"name": "promote", "started_at": "2026-11-27T10:00:02.000Z",
         "finished_at": "2026-11-27T10:00:12.000Z", **step},
        {"name": "promote", "started_at": "2026-11-27T10:00:12.000Z",
         "finished_at": "2026-11-27T10:00:14.000Z", "status": "ok", "detail": "db2"},
    ]  # fmt: skip
    (auto / "result.json").write_text(json.dumps(doc))
    (auto / "archive.json").write_text(json.dumps({"trigger": "alert:fp1"}))
    manual = tmp_path / "incidents" / "20261127T100500Z-health-check"
    fake_result(
        manual,
        "health-check",
        started="2026-11-27T10:05:00.000Z",
        mode="incident",
        fault=None,
        metrics={"hosts_down": 0},
    )
    doc = json.loads((manual / "result.json").read_text())
    doc["confirmations"] = [{"step": "boot", "host": "db1", "answer": "yes",
                             "at": "2026-11-27T10:05:10.000Z"}]  # fmt: skip
    (manual / "result.json").write_text(json.dumps(doc))
    (manual / "traffic.csv").unlink()
    return auto, manual


def test_a_draft_from_two_runs_and_the_decision_log(home: Path, tmp_path: Path) -> None:
    auto, manual = incident_runs(tmp_path)
    decision_log(
        home,
        [
            {"at": "2026-11-27T08:00:00.000Z", "event": "decision", "decision": "ran",
             "alertname": "OldAlert", "reason": "long before"},
            {"at": "2026-11-27T09:59:58.000Z", "event": "notification", "status": "firing",
             "alerts": 1, "accepted": True},
            {"at": "2026-11-27T09:59:58.100Z", "event": "decision", "decision": "ran",
             "alertname": "PostgresPrimaryDown", "runbook": "db-failover", "policy": "autopilot",
             "reason": "route db-primary-down"},
            {"at": "2026-11-27T10:01:01.000Z", "event": "run-finished", "runbook": "db-failover",
             "exit_status": 1, "verdict": "fail", "page": True},
        ],
    )  # fmt: skip
    out = tmp_path / "pm"
    code, text = invoke("postmortem", str(auto), str(manual), "--out", str(out))
    assert code == 0, text
    md = (out / "postmortem.md").read_text()
    page = (out / "postmortem.html").read_text()
    assert md.startswith("# Postmortem draft: db-failover, health-check, 2026-11-27")
    for section in ("Impact as clients saw it", "Timeline (UTC)", "Objectives missed",
                    "Steps failed, skipped or retried", "Cause", "Lessons", "Actions"):  # fmt: skip
        assert f"## {section}" in md and section in page
    for todo in ("summary", "cause", "lessons", "actions", "error-log lines"):
        assert f"<!-- TODO: {todo}" in md and f"<!-- TODO: {todo}" in page
    assert page.count('class="todo"') == md.count("**TODO:**")
    # impact: the record's figures, not prose
    assert "| 20261127T100000Z-db-failover | 42.5 | 7 | 900 | 0 | — | — | 60 |" in md
    # timeline: the decision log in the window (not the entry two hours before), the steps,
    # the confirmation, detection and recovery, in time order
    assert "OldAlert" not in md
    times = re.findall(r"^\| (2026-11-27 \S+Z) \|", md, re.M)
    assert times == sorted(times) and len(times) >= 10
    for event in (
        "decision ran: PostgresPrimaryDown → db-failover (autopilot): route db-primary-down",
        "notification (firing): 1 alert(s)",
        "run-finished db-failover: exit status 1, verdict fail; paged",
        "step promote failed: ConditionTimeout: no primary after 10 s",
        "| detected |",
        "| recovered |",
        'confirmation: {"answer": "yes", "at": "2026-11-27T10:05:10.000Z", "host": "db1"',
        "fault host-crash on h1 injected",
    ):
        assert event in md, event
    assert "- 20261127T100000Z-db-failover: rto_s = 42.5, objective ≤ 30.0" in md
    assert "- 20261127T100000Z-db-failover: step promote ran 2 times (failed, ok)" in md
    assert "- h1\n- db1" in md  # the hosts involved: the fault's target, the confirmation's
    # the timeline plot from the drill's client records; none for the run without them
    assert (out / "timeline-1.png").stat().st_size > 1000
    assert not (out / "timeline-2.png").exists()
    assert "![timeline of 20261127T100000Z-db-failover](timeline-1.png)" in md
    assert '<img src="timeline-1.png"' in page


def test_every_line_comes_from_the_record_or_is_marked(home: Path, tmp_path: Path) -> None:
    """No prose of its own: each line is a heading, a table row, a list item, an image, a
    TODO placeholder or the one line of figures under the impact table."""
    auto, manual = incident_runs(tmp_path)
    md_path, _ = postmortem.write([auto, manual], tmp_path / "pm")
    for line in md_path.read_text().splitlines():
        if not line.strip():
            continue
        assert re.match(r"^(#|\| |\|---|- |!\[|<!-- TODO: |\*\*TODO:\*\* |First record )", line), (
            line
        )


def test_record_text_cannot_inject_markup(home: Path, tmp_path: Path) -> None:
    auto, _ = incident_runs(tmp_path)
    doc = json.loads((auto / "result.json").read_text())
    doc["steps"][0]["detail"] = "<script>alert(1)</script> | pipe"
    (auto / "result.json").write_text(json.dumps(doc))
    md_path, page = postmortem.write([auto], tmp_path / "pm")
    assert "<script>" not in md_path.read_text() and "<script>" not in page.read_text()
    assert "\\| pipe" in md_path.read_text()


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: None, "no such folder"),
        (lambda d: d.mkdir(), "no result.json; expected a finished run's folder"),
        (lambda d: (d.mkdir(), (d / "result.json").write_text("{not json")), "is not JSON"),
        (lambda d: (d.mkdir(), (d / "result.json").write_text("[]")), "is not a JSON object"),
        (
            lambda d: (d.mkdir(), (d / "result.json").write_text('{"runbook": "x"}')),
            "not a result.json document",
        ),
    ],
)
def test_bad_run_dirs_are_one_line_and_write_nothing(
    home: Path, tmp_path: Path, make: object, expected: str
) -> None:
    good, _ = incident_runs(tmp_path)
    bad = tmp_path / "bad"
    make(bad)  # type: ignore[operator]
    out = tmp_path / "pm"
    code, text = invoke("postmortem", str(good), str(bad), "--out", str(out))
    assert code == 2, text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faultbook: error: ") and expected in lines[0]
    assert "Traceback" not in text
    assert not out.exists()
    with pytest.raises(IncidentError):
        postmortem.load(bad)


def test_postmortem_needs_a_run_dir() -> None:
    code, text = invoke("postmortem")
    assert code == 2 and "Missing argument 'RUN_DIR...'" in text


def test_a_confirmation_reads_as_words() -> None:
    from faultbook.oncall.postmortem import _confirmation

    c = {
        "what": "drain web2 on every lb",
        "host": "web2",
        "granted": False,
        "answer": "web3",
        "by": "alice",
        "at": "2026-12-07T03:15:02.000Z",
    }
    assert _confirmation(c) == (
        "confirmation: drain web2 on every lb on web2: refused by alice (typed 'web3')"
    )
    c.update(granted=True, answer="confirm=True", by="parameter confirm=True")
    assert _confirmation(c).endswith("confirmed by parameter confirm=True")
