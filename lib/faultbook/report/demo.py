"""The demo report: the health check, the drills and a PITR drill in turn, one directory to read.

``faultbook demo --out DIR`` runs each runbook with papermill into DIR/<name>/
(executed notebook, HTML, result.json, traffic.csv), then writes

- DIR/summary.csv and DIR/summary.md: RTO, lost writes and failed requests per drill,
  and the ledger proof of the point-in-time restore drill;
- DIR/summary.png: the same as a chart;
- DIR/timeline.png: every drill's requests per second on one figure, aligned on its fault;
- DIR/index.html: links to all of it.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

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
    Item("web-node-kill", "web-node-failure", {"mode": "drill", "target": "web2"}),
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


def build(
    out: Path,
    items: Sequence[Item] = DEMO,
    run: Callable[[str, dict[str, Any], Path], Any] = runner.run,
) -> Path:
    """Run ITEMS into OUT and write the summary files; returns OUT/index.html."""
    out.mkdir(parents=True, exist_ok=True)
    rows, timelines = [], []
    for item in items:
        d = out / item.name
        log.info("demo: running %s", item.name)
        run(item.runbook, item.params, d)
        doc = json.loads((d / "result.json").read_text())
        rows.append(summary_row(item.name, doc))
        traffic = d / "traffic.csv"
        if traffic.exists():
            timelines.append((item.name, load_records(traffic), markers(doc)))
    table = pd.DataFrame(rows)
    table.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(_markdown(table))
    drills = table[table["rto_s"].notna()] if len(table) else table
    plots.drills_summary_chart(drills).savefig(out / "summary.png", dpi=110)
    plots.combined_timeline(timelines).savefig(out / "timeline.png", dpi=110)
    index = out / "index.html"
    index.write_text(_index(table, items))
    return index


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


def _index(table: pd.DataFrame, items: Sequence[Item]) -> str:
    links = "".join(
        f'<li><a href="{html.escape(i.name)}/{html.escape(i.runbook)}.html">{html.escape(i.name)}'
        f"</a> ({html.escape(i.runbook)})</li>"
        for i in items
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>faultbook demo</title></head>"
        "<body><h1>faultbook demo report</h1>"
        f"{table.to_html(index=False, na_rep='-')}"
        "<h2>Timeline</h2><img src='timeline.png' alt='requests per second of every drill'>"
        "<h2>Summary</h2><img src='summary.png' alt='RTO per drill'>"
        f"<h2>Executed runbooks</h2><ul>{links}</ul></body></html>\n"
    )
