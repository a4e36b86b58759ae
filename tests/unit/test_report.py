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
        save_records(_records(50, 10, 17), out / "traffic.csv")
    run.finish()
    run.save(out)


def test_demo_report_has_summary_timeline_and_links(tmp_path: Path) -> None:
    index = report.build(tmp_path, run=fake_run)
    table = pd.read_csv(tmp_path / "summary.csv")
    assert list(table["drill"]) == [i.name for i in report.DEMO]
    drills = table[table["runbook"] != "health-check"]
    assert set(drills["rto_s"]) == {2.5} and set(drills["failed_requests"]) == {7}
    assert (tmp_path / "timeline.png").stat().st_size > 1000
    assert (tmp_path / "summary.png").stat().st_size > 1000
    md = (tmp_path / "summary.md").read_text()
    assert "| db-primary-crash |" in md and "host-crash on x1" in md
    html = index.read_text()
    for item in report.DEMO:
        assert f"{item.name}/{item.runbook}.html" in html


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
