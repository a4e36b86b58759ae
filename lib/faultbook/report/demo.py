"""The demo report: the health check, the drills and a PITR drill in turn, one directory to read.

``faultbook demo --out DIR`` runs each runbook with papermill into DIR/<name>/
(executed notebook, HTML, result.json, traffic.csv), then writes (``write_report``)

- DIR/summary.csv and DIR/summary.md: RTO, lost writes and failed requests per drill,
  and the ledger proof of the point-in-time restore drill;
- DIR/summary.png: the same as a chart;
- DIR/timeline.png: every drill's requests per second on one figure, aligned on its fault;
- DIR/index.html: the table (units, rounded numbers, a verdict colour, each row
  linking to its executed notebook) and the figures.

The same runbooks ship as the ``demo`` suite (suites/demo.yml, no host names: its
targets are roles), which ``suites.demo`` runs under the inventory's lock, from
steady state, and reports with ``write_report``; ``DEMO`` below is that suite's
list for callers that run the items directly, and a unit test keeps the two equal.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from faultbook import lock
from faultbook.archive import present
from faultbook.drills.traffic import load_records
from faultbook.report import plots, runner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    name: str  # directory and table name
    runbook: str
    params: dict[str, Any]


DEMO: tuple[Item, ...] = (
    Item("health-check", "health-check", {}),
    Item("web-node-kill", "web-node-failure", {"mode": "drill"}),
    Item("db-primary-crash", "db-failover", {"mode": "drill", "fault": "host-crash"}),
    Item("lb-master-crash", "lb-failover", {"mode": "drill"}),
    Item("pitr", "backup-restore", {"mode": "pitr", "drill": True, "target_kind": "name"}),
)


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def summary_row(name: str, doc: dict[str, Any]) -> dict[str, Any]:
    m = doc.get("metrics", {})
    fault = doc.get("fault") or {}
    return {
        "drill": name,
        "runbook": doc.get("runbook"),
        "verdict": doc.get("verdict"),
        "fault": f"{fault.get('kind')} on {fault.get('target')}" if fault else "",
        "rto_s": m.get("rto_s"),
        "lost_writes": m.get("lost_writes"),
        "failed_requests": m.get("failed_requests"),
        "total_requests": m.get("total_requests"),
        "p99_ms": m.get("p99_ms"),
        "proof": next((s["detail"] for s in doc.get("steps", []) if s.get("name") == "prove"), ""),
    }


def markers(doc: dict[str, Any]) -> dict[str, datetime | None]:
    fault = doc.get("fault") or {}
    return {
        "fault injected": _ts(fault.get("injected_at")),
        "detected": _ts(doc.get("detected_at")),
        "recovered": _ts(doc.get("recovered_at")),
    }


@dataclass(frozen=True)
class Done:
    """One finished (or skipped) item of the demo: where its run directory is."""

    name: str
    runbook: str
    directory: Path
    skipped: str = ""  # why it did not run (a suite entry out of steady state)
    extra: dict[str, Any] = field(default_factory=dict)


LOCK_WAIT_S = 300.0


def build(
    out: Path,
    items: Sequence[Item] = DEMO,
    run: Callable[[str, dict[str, Any], Path], Any] = runner.run,
) -> Path:
    """Run ITEMS into OUT and write the summary files; returns OUT/index.html.

    The demo holds the lab's run lock from its first run to its last, as a drill
    (waiting up to ``LOCK_WAIT_S`` for a run in progress): no run an alert starts
    slips in between two of its drills, and none is queued behind them.
    """
    out.mkdir(parents=True, exist_ok=True)
    done = []
    with lock.hold(lock.key("lab"), "demo", wait_s=LOCK_WAIT_S, drill=True):
        for item in items:
            d = out / item.name
            log.info("demo: running %s", item.name)
            run(item.runbook, item.params, d)
            done.append(Done(item.name, item.runbook, d))
    return write_report(out, done)


def write_report(out: Path, done: Sequence[Done]) -> Path:
    """summary.csv, summary.md, summary.png, timeline.png and index.html for DONE."""
    rows, timelines = [], []
    for item in done:
        result = item.directory / "result.json"
        if item.skipped or not result.exists():
            rows.append(skipped_row(item.name, item.runbook, item.skipped or "no result.json"))
            continue
        doc = json.loads(result.read_text())
        rows.append(summary_row(item.name, doc))
        traffic = item.directory / "traffic.csv"
        if traffic.exists():
            timelines.append((item.name, load_records(traffic), markers(doc)))
    table = pd.DataFrame(rows)
    table.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(_markdown(table))
    drills = table[table["rto_s"].notna()] if len(table) else table
    plots.drills_summary_chart(drills).savefig(out / "summary.png", dpi=110)
    plots.combined_timeline(timelines).savefig(out / "timeline.png", dpi=110)
    index = out / "index.html"
    index.write_text(_index(table, done, out))
    return index


def skipped_row(name: str, runbook: str, why: str) -> dict[str, Any]:
    return {
        "drill": name,
        "runbook": runbook,
        "verdict": "skipped",
        "fault": "",
        "rto_s": None,
        "lost_writes": None,
        "failed_requests": None,
        "total_requests": None,
        "p99_ms": None,
        "proof": why,
    }


def _markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for rec in table.to_dict("records"):
        lines.append("| " + " | ".join(_cell(rec[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "-"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else f"{v:.2f}"
    return str(v)


INDEX_COLUMNS = (
    present.Column("drill", "drill", "link"),
    present.Column("runbook", "runbook", "text"),
    present.Column("verdict", "verdict", "verdict"),
    present.Column("fault", "fault", "text"),
    present.METRIC_COLUMNS["rto_s"],
    present.METRIC_COLUMNS["lost_writes"],
    present.METRIC_COLUMNS["failed_requests"],
    present.METRIC_COLUMNS["total_requests"],
    present.METRIC_COLUMNS["p99_ms"],
    present.Column("proof", "proof / note", "text"),
)


def _index(table: pd.DataFrame, done: Sequence[Done], out: Path) -> str:
    records: list[dict[str, Any]] = [
        {str(k): v for k, v in r.items()}
        for r in table.astype(object).where(table.notna(), None).to_dict("records")
    ]
    for rec, item in zip(records, done, strict=True):
        page = item.directory / f"{item.runbook}.html"
        if page.exists():
            rec["drill_href"] = str(page.relative_to(out)) if page.is_relative_to(out) else page
    links = "".join(
        f'<li><a href="{html.escape(i.name)}/{html.escape(i.runbook)}.html">{html.escape(i.name)}'
        f"</a> ({html.escape(i.runbook)})</li>"
        for i in done
    )
    body = (
        present.table(records, INDEX_COLUMNS)
        + "<h2>Timeline</h2><img src='timeline.png' alt='requests per second of every drill'>"
        + "<h2>Summary</h2><img src='summary.png' alt='RTO per drill'>"
        + f"<h2>Executed runbooks</h2><ul>{links}</ul>"
    )
    return present.page(
        "faultbook demo report",
        body,
        "the health check, a drill per tier and a point-in-time restore, in turn",
    )
