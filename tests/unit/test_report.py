from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fakeruns
import pandas as pd

from faultbook.drills.traffic import save_records
from faultbook.report import demo as report
from faultbook.results import Run

T0 = pd.Timestamp("2026-11-27T10:00:00Z")


def _records(n: int, fail_from: int, fail_to: int) -> pd.DataFrame:
    return fakeruns.records(n, fail_from, fail_to)


DEMO = (  # suites/demo.yml's entries
    ("health-check", "health-check"),
    ("web-node-kill", "web-node-failure"),
    ("db-primary-crash", "db-failover"),
    ("lb-master-crash", "lb-failover"),
    ("pitr", "backup-restore"),
)


def fake_run(runbook: str, params: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    mode = params.get("mode", "incident")
    run = Run.start(runbook, mode if mode in ("incident", "drill") else "drill", params)
    if runbook != "health-check":
        run.metrics.update(rto_s=2.5, lost_writes=0, failed_requests=7, total_requests=50)
        run.fault = {
            "kind": "host-crash",
            "target": "x1",
            "injected_at": "2026-11-27T10:00:01.000Z",
            "reverted_at": "2026-11-27T10:00:04.000Z",
        }
        run.detected_at = "2026-11-27T10:00:01.050Z"
        run.recovered_at = "2026-11-27T10:00:01.100Z"
        save_records(_records(50, 10, 17), out / "traffic.csv")
    run.finish()
    run.save(out)
    (out / f"{runbook}.html").write_text("<html><body>executed</body></html>\n")


def _done(tmp_path: Path, skip: str = "") -> list[report.Done]:
    done = []
    for name, runbook in DEMO:
        d = tmp_path / name
        if name != skip:
            fake_run(runbook, {"mode": "drill"}, d)
        why = "not in steady state" if name == skip else ""
        done.append(report.Done(name, runbook, d, skipped=why))
    return done


def test_demo_report_has_summary_timeline_and_links(tmp_path: Path) -> None:
    index = report.write_report(tmp_path, _done(tmp_path))
    table = pd.read_csv(tmp_path / "summary.csv")
    assert list(table["drill"]) == [name for name, _ in DEMO]
    drills = table[table["runbook"] != "health-check"]
    assert set(drills["rto_s"]) == {2.5} and set(drills["failed_requests"]) == {7}
    assert (tmp_path / "timeline.png").stat().st_size > 1000
    assert (tmp_path / "summary.png").stat().st_size > 1000
    md = (tmp_path / "summary.md").read_text()
    assert "| db-primary-crash |" in md and "host-crash on x1" in md
    html = index.read_text()
    for name, runbook in DEMO:
        assert f'href="{name}/{runbook}.html"' in html
    assert "2.5 s" in html and ">7<" in html and ">7.0<" not in html


def test_a_skipped_entry_is_a_row_with_its_reason_and_no_link(tmp_path: Path) -> None:
    html = report.write_report(tmp_path, _done(tmp_path, skip="pitr")).read_text()
    table = pd.read_csv(tmp_path / "summary.csv")
    row = table[table["drill"] == "pitr"].iloc[0]
    assert row["verdict"] == "skipped" and row["proof"] == "not in steady state"
    assert 'href="pitr/' not in html
    assert "pitr (backup-restore): not run (not in steady state)" in html


def test_close_markers_get_labels_side_by_side() -> None:
    from faultbook.report import plots

    # lines 0.5 pt apart: each label a label's width right of the one before
    offsets = plots._label_offsets([100.0, 100.5, 101.0, 300.0])
    at = [x + dx for x, dx in zip([100.0, 100.5, 101.0, 300.0], offsets, strict=True)]
    assert at[1] - at[0] >= plots.LABEL_GAP_PT and at[2] - at[1] >= plots.LABEL_GAP_PT
    assert offsets[3] == 2.0  # a marker far away keeps its label beside it
    assert plots._label_offsets([50.0, 10.0]) == [2.0, 2.0]  # order does not matter
    t = T0 + pd.Timedelta(seconds=1)
    marks = {
        "fault injected": t.to_pydatetime(),
        "detected": (t + pd.Timedelta(milliseconds=50)).to_pydatetime(),
        "recovered": (t + pd.Timedelta(milliseconds=100)).to_pydatetime(),
    }
    fig = plots.combined_timeline([("db", _records(50, 10, 17), marks)])
    (ax,) = fig.axes
    labels = [a for a in ax.texts if a.get_text() in marks]
    assert [a.get_text() for a in labels] == list(marks)
    dx = [a.xyann[0] for a in labels]  # offsets in points right of each line
    assert dx[0] < dx[1] < dx[2]
    legend = ax.get_legend()
    assert legend is not None and legend.get_bbox_to_anchor().x0 > ax.bbox.x1  # outside


def test_markers_come_from_result_json() -> None:
    doc = json.loads(
        json.dumps(
            {
                "fault": {"injected_at": "2026-11-27T10:00:01.000Z"},
                "detected_at": None,
                "recovered_at": "2026-11-27T10:00:05.500Z",
            }
        )
    )
    m = report.markers(doc)
    assert m["fault injected"] == T0.to_pydatetime() + pd.Timedelta(seconds=1)
    assert m["detected"] is None
    assert m["recovered"] is not None and m["recovered"].second == 5
