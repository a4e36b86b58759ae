"""How a run's figures read in the HTML reports (the demo's index, the history site):
units, rounding, a verdict colour, one stylesheet, tables with links.

Counts are whole numbers (``0``, never ``0.0``), thousands separated; seconds get
one decimal below 100 s; latencies are whole milliseconds (``10,004 ms``, never
``10004.248880``); times are UTC to the second (``2026-11-27 10:00:00``); a missing
value is an en dash. Figures and times do not wrap inside a cell; names only after a
slash.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    unit: str = ""  # "s", "ms", "%", "" (a count), "text", "time", "verdict", "link"
    numeric: bool = True
    nowrap: bool = False  # broken after a slash only (``unbroken``): names, times


TEXT_UNITS = ("text", "time", "verdict", "link")


METRIC_COLUMNS = {
    "rto_s": Column("rto_s", "RTO", "s"),
    "lost_writes": Column("lost_writes", "lost writes", ""),
    "failed_requests": Column("failed_requests", "failed requests", ""),
    "total_requests": Column("total_requests", "requests", ""),
    "acked_writes": Column("acked_writes", "acknowledged writes", ""),
    "p50_ms": Column("p50_ms", "p50 latency", "ms"),
    "p99_ms": Column("p99_ms", "p99 latency", "ms"),
}

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330;
       margin: 2rem auto; max-width: 78rem; padding: 0 1.5rem; background: #fbfbfd; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
p.sub { color: #5b6478; margin-top: 0; }
table { border-collapse: collapse; width: 100%; margin: .6rem 0 1.2rem; background: #fff;
        box-shadow: 0 1px 2px rgba(0,0,0,.08); }
th, td { padding: .42rem .7rem; border-bottom: 1px solid #e6e8ee; text-align: left; }
th { background: #f0f2f7; font-weight: 600; font-size: .85rem; color: #3a4256; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num, .nowrap { white-space: nowrap; }
.scroll { overflow-x: auto; }
tr:hover td { background: #f7f9fc; }
.verdict { display: inline-block; min-width: 4.2em; text-align: center; padding: .08rem .5rem;
           border-radius: .8rem; font-weight: 600; font-size: .82rem; }
.verdict-pass { background: #dcf5e3; color: #146c2e; }
.verdict-fail { background: #fde0e0; color: #a11a1a; }
.verdict-skipped, .verdict-none { background: #eceef3; color: #555d70; }
.score { font-size: 2rem; font-weight: 700; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; }
.card { background: #fff; padding: .8rem 1.2rem; border-radius: .5rem; min-width: 9rem;
        box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.card .label { color: #5b6478; font-size: .85rem; }
img { max-width: 100%; background: #fff; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.trends { display: grid; grid-template-columns: repeat(auto-fill, minmax(34rem, 1fr));
          gap: 1rem; }
.trends figure { margin: 0; } .trends figcaption { font-weight: 600; margin: .3rem 0; }
.filters { margin: .5rem 0; } .filters label { margin-right: 1rem; font-size: .9rem; }
a { color: #1b5fc1; text-decoration: none; } a:hover { text-decoration: underline; }
"""


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v == ""


def number(value: Any, unit: str) -> str:
    """VALUE with its unit, rounded for reading."""
    if _missing(value):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, int | float):
        return str(value)
    v = float(value)
    if unit == "s":
        return f"{v:.1f} s" if abs(v) < 100 else f"{v:,.0f} s"
    if unit == "ms":
        return f"{v:,.0f} ms"
    if unit == "%":
        return f"{v:.0f} %"
    if unit == "score":
        return f"{v:.0f}"
    return f"{v:,.0f}" if v.is_integer() or abs(v) >= 10 else f"{v:.2f}"


def when(value: Any) -> str:
    """An ISO 8601 time (``2026-12-06T23:55:37.218Z``) in UTC to the second."""
    if _missing(value):
        return "–"
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S")


def verdict(value: Any) -> str:
    """The verdict as a coloured badge; none (never run) as an en dash."""
    v = str(value) if value else "none"
    if v == "none":
        return "–"
    cls = v if v in ("pass", "fail", "skipped") else "none"
    return f'<span class="verdict verdict-{cls}">{html.escape(v)}</span>'


def unbroken(text: str) -> str:
    """TEXT as HTML that a narrow cell breaks only after a slash
    (``db-failover/`` ``host-crash``), never at a hyphen or a space."""
    parts = text.split("/")
    segments = [p + "/" for p in parts[:-1]] + parts[-1:]
    return "<wbr>".join(f'<span class="nowrap">{html.escape(s)}</span>' for s in segments if s)


def cell(col: Column, row: Mapping[str, Any]) -> str:
    value = row.get(col.key)
    if col.unit == "verdict":
        return f"<td>{verdict(value)}</td>"
    if col.unit == "time":
        return f'<td class="nowrap">{html.escape(when(value))}</td>'
    if col.unit in ("link", "text") or not col.numeric:
        text = str(value) if not _missing(value) else "–"
        shown = unbroken(text) if col.nowrap else html.escape(text)
        href = row.get(f"{col.key}_href") if col.unit == "link" else None
        if href:
            shown = f'<a href="{html.escape(str(href))}">{shown}</a>'
        return f"<td>{shown}</td>"
    return f'<td class="num">{number(value, col.unit)}</td>'


def table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    table_id: str = "",
    row_data: Sequence[str] = (),
) -> str:
    """An HTML table; ROW_DATA keys become data-* attributes (for the filters)."""
    head = "".join(
        f'<th class="num">{html.escape(c.label)}</th>'
        if c.numeric and c.unit not in TEXT_UNITS
        else f"<th>{html.escape(c.label)}</th>"
        for c in columns
    )
    body = []
    for r in rows:
        attrs = "".join(f' data-{k}="{html.escape(str(r.get(k, "")))}"' for k in row_data)
        body.append(f"<tr{attrs}>" + "".join(cell(c, r) for c in columns) + "</tr>")
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    return (
        f"<div class='scroll'><table{ident}><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def page(title: str, body: str, subtitle: str = "") -> str:
    sub = f'<p class="sub">{html.escape(subtitle)}</p>' if subtitle else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{sub}{body}</body></html>\n"
    )
