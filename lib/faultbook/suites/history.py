"""``faultbook history``: a static HTML site from the archive.

OUT/index.html has the reliability score per tier and overall (``suites.score``),
the latest verdict per drill with its RTO p50/p95/max, lost writes and failed
requests, every archived run in a table that filters by runbook, verdict and
source (user, schedule, alert), each row linking to its executed notebook's
HTML in the archive, and the decision log's entries (``faultbook.decisions``:
the alert receiver's decisions, skipped and announced runs). OUT/trends/<drill>.png
plots each drill's RTO, lost writes and failed requests over time (UTC);
OUT/history.json holds the same data.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from faultbook import decisions
from faultbook.archive import present, store
from faultbook.suites import score as score_mod

RUN_COLUMNS = (
    present.Column("started", "started (UTC)", "link", nowrap=True),
    present.Column("drill", "drill / runbook", "text", nowrap=True),
    present.Column("tier", "tier", "text"),
    present.Column("verdict", "verdict", "verdict"),
    present.Column("source", "source", "text"),
    present.METRIC_COLUMNS["rto_s"],
    present.METRIC_COLUMNS["lost_writes"],
    present.METRIC_COLUMNS["failed_requests"],
    present.METRIC_COLUMNS["total_requests"],
    present.METRIC_COLUMNS["p99_ms"],
)
DRILL_COLUMNS = (
    present.Column("drill", "drill", "text", nowrap=True),
    present.Column("tier", "tier", "text", nowrap=True),
    present.Column("verdict", "latest", "verdict"),
    present.Column("last", "latest run (UTC)", "link", nowrap=True),
    present.Column("status", "score basis", "text"),
    present.Column("score", "score", "score"),
    present.Column("runs", "runs", ""),
    present.Column("rto_p50", "RTO p50", "s"),
    present.Column("rto_p95", "RTO p95", "s"),
    present.Column("rto_max", "RTO max", "s"),
    present.Column("lost_writes", "lost writes (all runs)", ""),
    present.Column("failed_requests", "failed requests (median)", ""),
)
DECISION_COLUMNS = (
    present.Column("at", "at (UTC)", "time"),
    present.Column("event", "event", "text"),
    present.Column("what", "decision / outcome", "text"),
    present.Column("detail", "detail", "text"),
)


def source(trigger: str) -> str:
    """user, schedule or alert, from a trigger (``schedule:nightly``)."""
    kind = trigger.split(":", 1)[0] if trigger else ""
    return kind if kind in ("user", "schedule", "alert") else (kind or "unknown")


def run_rows(runs: Iterable[store.ArchivedRun], out: Path) -> list[dict[str, Any]]:
    rows = []
    for r in runs:
        doc = r.doc or {}
        m = doc.get("metrics") or {}
        key = score_mod.drill_key(doc)
        page = store.notebook_html(r)
        rows.append(
            {
                "started": r.started.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                "started_href": os.path.relpath(page, out) if page else None,
                "at": r.started.isoformat(),
                "runbook": r.runbook,
                "drill": key or f"{r.runbook} ({doc.get('mode', '?')})",
                "is_drill": key is not None,
                "tier": score_mod.TIERS.get(r.runbook, "stack"),
                "verdict": r.verdict or "none",
                "trigger": r.trigger,
                "source": source(r.trigger),
                "folder": str(r.path),
                **{k: m.get(k) for k in present.METRIC_COLUMNS},
            }
        )
    return rows


def _quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile with linear interpolation (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def drill_rows(
    rows: Sequence[Mapping[str, Any]], card: score_mod.Scorecard
) -> list[dict[str, Any]]:
    out = []
    for s in card.drills:
        mine = [r for r in rows if r["drill"] == s.drill.key]
        rto = [float(r["rto_s"]) for r in mine if isinstance(r.get("rto_s"), int | float)]
        lost = [r["lost_writes"] for r in mine if isinstance(r.get("lost_writes"), int | float)]
        failed = [
            float(r["failed_requests"])
            for r in mine
            if isinstance(r.get("failed_requests"), int | float)
        ]
        last = max(mine, key=lambda r: r["at"]) if mine else None
        out.append(
            {
                "drill": s.drill.key,
                "tier": s.drill.tier,
                "verdict": s.last_verdict or "none",
                "last": last["started"] if last else None,
                "last_href": last["started_href"] if last else None,
                "status": {"recent": "passed recently", "stale": "passed, stale"}.get(
                    s.status, s.status
                ),
                "score": s.score,
                "runs": s.runs,
                "rto_p50": _quantile(rto, 0.5),
                "rto_p95": _quantile(rto, 0.95),
                "rto_max": max(rto) if rto else None,
                "lost_writes": sum(lost) if lost else None,
                "failed_requests": _quantile(failed, 0.5),
            }
        )
    return out


def trend(rows: Sequence[Mapping[str, Any]], drill: str) -> Figure:
    """RTO, lost writes and failed requests of one drill over time; a dot per run,
    green when it passed and red when it failed."""
    mine = sorted((r for r in rows if r["drill"] == drill), key=lambda r: r["at"])
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")  # 640 px: a column of the page
    axes = fig.subplots(3, 1, sharex=True)
    when = [datetime.fromisoformat(r["at"]) for r in mine]
    colours = ["#1f9d48" if r["verdict"] == "pass" else "#d22f2f" for r in mine]
    for ax, (key, label) in zip(
        axes,
        (
            ("rto_s", "RTO (s)"),
            ("lost_writes", "lost writes"),
            ("failed_requests", "failed requests"),
        ),
        strict=True,
    ):
        pts = [
            (t, r[key], c)
            for t, r, c in zip(when, mine, colours, strict=True)
            if isinstance(r.get(key), int | float)
        ]
        if pts:  # clip_on=False: a dot on the axis (0 lost writes) is drawn whole
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.plot(xs, ys, color="#8a94a8", lw=1, zorder=1, clip_on=False)
            ax.scatter(xs, ys, c=[p[2] for p in pts], s=28, zorder=2, clip_on=False)
        ax.set_ylabel(label)
        if key != "rto_s":  # counts: whole ticks, and room above an all-zero series
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(0, max([1.0, *(float(p[1]) * 1.1 for p in pts)]))
        else:
            ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    locator = AutoDateLocator(minticks=3, maxticks=8)
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes[-1].set_xlabel("run started (UTC)")
    fig.suptitle(f"{drill}: {len(mine)} run(s)")
    return fig


def decision_rows(entries: Iterable[Mapping[str, Any]], limit: int = 200) -> list[dict[str, Any]]:
    rows = []
    for e in list(entries)[-limit:]:
        what = e.get("decision") or e.get("verdict") or e.get("status") or ""
        detail = (
            e.get("reason")
            or e.get("alertname")
            or (f"suite {e['suite']}" if e.get("suite") else "")
            or e.get("fingerprint")
            or ""
        )
        rows.append({"at": e.get("at"), "event": e.get("event"), "what": what, "detail": detail})
    return list(reversed(rows))


def _filters(rows: Sequence[Mapping[str, Any]]) -> str:
    def select(key: str, label: str) -> str:
        opts = "".join(
            f'<option value="{html.escape(v)}">{html.escape(v)}</option>'
            for v in sorted({str(r[key]) for r in rows})
        )
        sel = f'<select data-filter="{key}"><option value="">all</option>{opts}</select>'
        return f"<label>{label} {sel}</label>"

    script = (
        "<script>document.querySelectorAll('select[data-filter]').forEach(s=>s.onchange=()=>{"
        "const f={};document.querySelectorAll('select[data-filter]')"
        ".forEach(x=>f[x.dataset.filter]=x.value);"
        "document.querySelectorAll('#runs tbody tr').forEach(tr=>{tr.style.display="
        "Object.entries(f).every(([k,v])=>!v||tr.dataset[k]===v)?'':'none'})});</script>"
    )
    boxes = select("runbook", "runbook") + select("verdict", "verdict") + select("source", "source")
    return f'<div class="filters">{boxes}</div>{script}'


def collect(
    home: Path | None = None,
    out: Path = Path("."),
    now: datetime | None = None,
    recent_days: float = score_mod.RECENT_DAYS,
) -> dict[str, Any]:
    """The history as data: runs, the scorecard, per-drill figures, decisions."""
    archived = store.runs(home)
    rows = run_rows(archived, out)
    card = score_mod.score(((r.started, r.doc or {}) for r in archived), now, recent_days)
    return {
        "generated_at": (now or datetime.now(UTC)).isoformat(),
        "recent_days": recent_days,
        "score": {"overall": card.overall, "tiers": card.tiers},
        "drills": drill_rows(rows, card),
        "runs": rows,
        "decisions": decision_rows(decisions.entries(home / decisions.FILENAME if home else None)),
        "_card": card,
    }


def build(
    out: Path,
    home: Path | None = None,
    now: datetime | None = None,
    recent_days: float = score_mod.RECENT_DAYS,
) -> dict[str, Any]:
    """Write the site into OUT; returns the history data (``collect``)."""
    out.mkdir(parents=True, exist_ok=True)
    data = collect(home, out, now, recent_days)
    card: score_mod.Scorecard = data["_card"]
    trends = out / "trends"
    trends.mkdir(exist_ok=True)
    imgs = []
    for d in data["drills"]:
        if d["runs"]:
            name = d["drill"].replace("/", "_") + ".png"
            trend(data["runs"], d["drill"]).savefig(trends / name, dpi=100)
            imgs.append(
                f"<figure><figcaption>{html.escape(d['drill'])}</figcaption>"
                f"<img src='trends/{name}' alt='trend of {html.escape(d['drill'])}'></figure>"
            )
    cards = "".join(
        f'<div class="card"><div class="label">{html.escape(t)}</div>'
        f'<div class="score">{v:.0f}</div></div>'
        for t, v in [("overall", card.overall), *sorted(card.tiers.items())]
    )
    body = (
        f"<h2>Reliability score</h2><div class='cards'>{cards}</div>"
        f"<p class='sub'>Per drill: passed within {card.recent_days:g} days 100, "
        "passed longer ago 75, "
        "failed 50, never run 0; a tier is the mean of its drills, overall the mean of the tiers "
        "(docs/drills.md).</p>"
        "<h2>Latest verdict per drill</h2>"
        + present.table(data["drills"], DRILL_COLUMNS)
        + f"<h2>Every run ({len(data['runs'])})</h2>"
        + _filters(data["runs"])
        + present.table(
            list(reversed(data["runs"])), RUN_COLUMNS, "runs", ("runbook", "verdict", "source")
        )
        + "<h2>Trends</h2>"
        + (f"<div class='trends'>{''.join(imgs)}</div>" if imgs else "<p>no drill has run yet</p>")
        + f"<h2>Decision log (latest {len(data['decisions'])})</h2>"
        + (
            present.table(data["decisions"], DECISION_COLUMNS)
            if data["decisions"]
            else "<p>no decision recorded yet (alerts, skipped runs, drill outcomes)</p>"
        )
    )
    (out / "index.html").write_text(
        present.page(
            "faultbook history",
            body,
            f"generated {present.when(data['generated_at'])} UTC from the run archive",
        )
    )
    (out / "history.json").write_text(json_text(data))
    return data


def json_text(data: Mapping[str, Any]) -> str:
    return (
        json.dumps({k: v for k, v in data.items() if not k.startswith("_")}, indent=2, default=str)
        + "\n"
    )


def junit_items(data: Mapping[str, Any]) -> list[Any]:
    """One JUnit case per drill: its latest run (never run: skipped)."""
    from faultbook.suites.junit import Case, case_from_result

    out: list[Any] = []
    for d in data["drills"]:
        latest = [r for r in data["runs"] if r["drill"] == d["drill"]]
        if not latest:
            out.append(
                Case(d["drill"], f"faultbook.{d['drill'].split('/')[0]}", 0.0, skipped="never run")
            )
            continue
        run = max(latest, key=lambda r: r["at"])
        doc = json.loads((Path(run["folder"]) / "result.json").read_text())
        out.append(case_from_result(doc, d["drill"]))
    return out
