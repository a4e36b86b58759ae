"""The demo report: one directory to read over the demo suite's runs.

``faultbook demo --out DIR`` runs the ``demo`` suite (suites/demo.yml, through
``suites.demo``: the health check, a drill per tier and a PITR drill, each into
DIR/<entry>/ with its executed notebook, HTML, result.json and traffic.csv), then
``write_report`` writes

- DIR/summary.csv and DIR/summary.md: RTO, lost writes and failed requests per drill,
  and the ledger proof of the point-in-time restore drill;
- DIR/summary.png: the same as a chart;
- DIR/timeline.png: every drill's requests per second on one figure, aligned on its fault;
- DIR/index.html: the table (units, rounded numbers, a verdict colour, each row
  linking to its executed notebook) and the figures.

``faultbook suite run demo`` writes the same report.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from faultbook.archive import present
from faultbook.drills.traffic import load_records
from faultbook.report import plots


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
    _save(plots.drills_summary_chart(drills), out / "summary.png")
    _save(plots.combined_timeline(timelines), out / "timeline.png")
    index = out / "index.html"
    index.write_text(_index(table, done, out))
    return index


def _save(fig: Figure, path: Path) -> None:
    """Write FIG to PATH and free it (the plots are pyplot figures)."""
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    present.Column("drill", "drill", "link", nowrap=True),
    present.Column("runbook", "runbook", "text", nowrap=True),
    present.Column("verdict", "verdict", "verdict"),
    present.Column("fault", "fault", "text", nowrap=True),
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
    links = []
    for rec, item in zip(records, done, strict=True):
        page = item.directory / f"{item.runbook}.html"
        name = f"{html.escape(item.name)} ({html.escape(item.runbook)})"
        if page.exists() and not item.skipped:
            rec["drill_href"] = str(page.relative_to(out) if page.is_relative_to(out) else page)
            links.append(f'<li><a href="{html.escape(rec["drill_href"])}">{name}</a></li>')
        else:
            links.append(f"<li>{name}: not run ({html.escape(str(rec.get('proof') or ''))})</li>")
    body = (
        present.table(records, INDEX_COLUMNS)
        + "<h2>Timeline</h2><img src='timeline.png' alt='requests per second of every drill'>"
        + "<h2>Summary</h2><img src='summary.png' alt='RTO per drill'>"
        + f"<h2>Executed runbooks</h2><ul>{''.join(links)}</ul>"
    )
    return present.page(
        "faultbook demo report",
        body,
        "the health check, a drill per tier and a point-in-time restore, in turn",
    )
