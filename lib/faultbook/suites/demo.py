"""``faultbook demo`` as a suite: suites/demo.yml run like any suite (the inventory's
lock, each entry from steady state, role targets, every run archived), then the
demo's report (``report.demo.write_report``: summary.md, summary.csv, timeline.png,
index.html) over what ran."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faultbook.report import demo as demo_report
from faultbook.suites import execute, model

SUITE = "demo"


def report(res: execute.SuiteResult, out: Path) -> Path:
    """The demo report over a finished suite run in OUT; returns OUT/index.html."""
    done = [
        demo_report.Done(
            e.entry.name,
            e.entry.runbook,
            out / e.entry.name,
            skipped=e.reason if e.status == "skipped" else "",
        )
        for e in res.entries
    ]
    return demo_report.write_report(out, done)


def build(out: Path, inventory: str = "lab", **kwargs: Any) -> Path:
    """Run the demo suite into OUT and write its report; returns OUT/index.html.

    KWARGS go to ``execute.run_suite`` (entry_timeout_s, and the tests' fakes).
    """
    res = execute.run_suite(model.load(SUITE), inventory, out, **kwargs)
    return report(res, Path(out))
