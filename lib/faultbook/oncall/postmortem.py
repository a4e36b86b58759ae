"""A postmortem draft from archived runs: ``postmortem.md`` and ``postmortem.html``.

Read for each run folder (an archived run, an incident folder, a ``--out`` directory):
``result.json`` (required), ``archive.json``, ``alert.json`` (a prepared incident) and
``traffic.csv`` (the client records); and the decision log's entries from ``before_s``
before the first run started to the last run's end (the alert and the receiver's
decisions that led to the runs).

No invented text: every line of the draft is a value from those records, a heading, or
a marked placeholder (``render.Todo``) for what only a person knows: the summary, the
cause, the error-log lines (the stack has no central logs), lessons and actions.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from faultbook import decisions as decision_log
from faultbook.errors import IncidentError
from faultbook.oncall import render
from faultbook.oncall.render import UL, Block, H, Img, P, Table, Todo
from faultbook.results import evaluate_objectives, validate

BEFORE_S = 600.0  # how far before the first run the decision log is read (the alert)
PLOT = "timeline-{n}.png"


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def utc(t: datetime | None) -> str:
    if t is None:
        return "—"
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Record:
    """One run's records."""

    path: Path
    doc: dict[str, Any]
    meta: dict[str, Any]
    alert: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def runbook(self) -> str:
        return str(self.doc.get("runbook", "?"))

    @property
    def started(self) -> datetime | None:
        return parse_time(self.doc.get("started_at"))

    @property
    def finished(self) -> datetime | None:
        return parse_time(self.doc.get("finished_at"))

    @property
    def traffic(self) -> Path | None:
        p = self.path / "traffic.csv"
        return p if p.is_file() else None


def _json(path: Path, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise IncidentError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    except ValueError as exc:
        raise IncidentError(f"{path}: the {what} is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise IncidentError(f"{path}: the {what} is not a JSON object")
    return doc


def load(run_dir: str | Path) -> Record:
    """One run folder's records; a one-line IncidentError when it has no usable result."""
    path = Path(run_dir)
    if not path.is_dir():
        raise IncidentError(
            f"run {str(run_dir)!r}: no such folder; expected an archived run "
            "($FAULTBOOK_HOME/runs/…), an incident folder or a run's --out directory"
        )
    result = path / "result.json"
    if not result.is_file():
        raise IncidentError(
            f"run {str(run_dir)!r}: no result.json; expected a finished run's folder"
        )
    doc = _json(result, "result.json")
    problems = validate(doc)
    if problems:
        raise IncidentError(f"{result}: not a result.json document: {problems[0]}")
    meta = _json(path / "archive.json", "archive.json") if (path / "archive.json").exists() else {}
    alert = _json(path / "alert.json", "alert.json") if (path / "alert.json").exists() else {}
    return Record(path, doc, meta, alert)


def window(records: Sequence[Record], before_s: float = BEFORE_S) -> tuple[datetime, datetime]:
    """From BEFORE_S before the first run started to the last run's end."""
    starts = [r.started for r in records if r.started]
    ends = [t for r in records for t in (r.finished, r.started) if t]
    now = datetime.now(UTC)
    return (min(starts, default=now) - timedelta(seconds=before_s), max(ends, default=now))


def decisions_in(start: datetime, end: datetime, path: Path | None = None) -> list[dict[str, Any]]:
    out = []
    for e in decision_log.entries(path):
        at = parse_time(e.get("at"))
        if at is not None and start <= at <= end:
            out.append(e)
    return out


# ----------------------------------------------------------------------- timeline
@dataclass(frozen=True)
class Event:
    at: datetime
    source: str
    what: str


def _decision_text(e: Mapping[str, Any]) -> str:
    ev = str(e.get("event"))
    if ev == "notification":
        if e.get("accepted") is False:
            return f"notification refused: {e.get('reason', '')}"
        return f"notification ({e.get('status', '?')}): {e.get('alerts', '?')} alert(s)"
    if ev == "decision":
        who = " → ".join(str(e[k]) for k in ("alertname", "runbook") if e.get(k))
        policy = f" ({e['policy']})" if e.get("policy") else ""
        return f"decision {e.get('decision')}: {who}{policy}: {e.get('reason', '')}".strip()
    if ev == "run-finished":
        page = "; paged" if e.get("page") else ""
        return (
            f"run-finished {e.get('runbook', '?')}: exit status {e.get('exit_status')}, "
            f"verdict {e.get('verdict')}{page}"
        )
    rest = {k: v for k, v in e.items() if k not in ("at", "event")}
    return f"{ev}: {json.dumps(rest, default=str, sort_keys=True)}"


def _confirmation_time(c: Mapping[str, Any]) -> datetime | None:
    for k in ("at", "answered_at", "asked_at"):
        t = parse_time(c.get(k))
        if t:
            return t
    return None


def _confirmation(c: Mapping[str, Any]) -> str:
    """A confirmation as the record has it: ``drills.confirm``'s fields in words, anything
    else (an older or foreign record) as its JSON."""
    if {"what", "host", "granted", "by"} <= set(c):
        verb = "confirmed" if c["granted"] else "refused"
        typed = "" if c.get("answer") in (None, "confirm=True") else f" (typed {c['answer']!r})"
        return f"confirmation: {c['what']} on {c['host']}: {verb} by {c['by']}{typed}"
    return f"confirmation: {json.dumps(c, default=str, sort_keys=True)}"


def run_events(r: Record) -> list[Event]:
    d, src = r.doc, r.name
    ev: list[Event] = []

    def add(t: Any, what: str) -> None:
        at = parse_time(t) if not isinstance(t, datetime) else t
        if at is not None:
            ev.append(Event(at, src, what))

    if r.alert:
        add(r.alert.get("starts_at"), f"alert {r.alert.get('alertname', '?')} firing")
    add(d.get("started_at"), f"{r.runbook} ({d.get('mode')}) started")
    fault = d.get("fault") or {}
    if fault:
        what = f"fault {fault.get('kind')} on {fault.get('target')}"
        add(fault.get("injected_at"), f"{what} injected")
        add(fault.get("reverted_at"), f"{what} reverted")
    add(d.get("detected_at"), "detected")
    for s in d.get("steps") or []:
        detail = f": {s['detail']}" if s.get("detail") else ""
        add(s.get("finished_at") or s.get("started_at"), f"step {s['name']} {s['status']}{detail}")
    for c in d.get("confirmations") or []:
        add(_confirmation_time(c), _confirmation(c))
    for f in (d.get("rollback") or {}).get("faults") or []:
        add(f.get("at"), f"rollback: {f.get('kind')} on {f.get('target')}: {f.get('outcome')}")
    add(d.get("recovered_at"), "recovered")
    add(d.get("finished_at"), f"{r.runbook} finished: verdict {d.get('verdict')}")
    return ev


def timeline(records: Sequence[Record], entries: Iterable[Mapping[str, Any]]) -> list[Event]:
    ev = [e for r in records for e in run_events(r)]
    for e in entries:
        at = parse_time(e.get("at"))
        if at is not None:
            ev.append(Event(at, "decision log", _decision_text(e)))
    return sorted(ev, key=lambda e: e.at)


# ------------------------------------------------------------------------ sections
def _num(v: Any) -> str:
    if v is None or isinstance(v, bool):
        return "—" if v is None else str(v).lower()
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".")
    return str(v)


def _seconds(a: datetime | None, b: datetime | None) -> str:
    return _num(round((b - a).total_seconds(), 3)) if a and b else "—"


IMPACT = (
    ("RTO (s)", "rto_s"),
    ("failed requests", "failed_requests"),
    ("total requests", "total_requests"),
    ("lost writes", "lost_writes"),
    ("acked writes", "acked_writes"),
    ("p99 (ms)", "p99_ms"),
)


def impact(records: Sequence[Record]) -> Table:
    rows = []
    for r in records:
        m = r.doc.get("metrics") or {}
        rows.append([r.name, *(_num(m.get(k)) for _, k in IMPACT), _seconds(r.started, r.finished)])
    return Table(["run", *(h for h, _ in IMPACT), "duration (s)"], rows)


def missed(records: Sequence[Record]) -> list[str]:
    out = []
    for r in records:
        for o in evaluate_objectives(r.doc.get("metrics") or {}, r.doc.get("objectives") or {}):
            if not o["met"]:
                out.append(
                    f"{r.name}: {o['metric']} = {_num(o['value'])}, objective ≤ {o['limit']}"
                )
    return out


def step_problems(records: Sequence[Record]) -> list[str]:
    out = []
    for r in records:
        steps = r.doc.get("steps") or []
        counts = Counter(s["name"] for s in steps)
        for s in steps:
            if s["status"] in ("failed", "skipped"):
                detail = f": {s['detail']}" if s.get("detail") else ""
                out.append(f"{r.name}: step {s['name']} {s['status']}{detail}")
        for name, n in counts.items():
            if n > 1:
                statuses = ", ".join(s["status"] for s in steps if s["name"] == name)
                out.append(f"{r.name}: step {name} ran {n} times ({statuses})")
        rb = r.doc.get("rollback")
        if rb:
            st = rb.get("steady_state") or {}
            out.append(
                f"{r.name}: rollback by the runner: {len(rb.get('faults') or [])} fault(s); "
                f"steady state {'ok' if st.get('ok') else 'NOT ok'}: {st.get('detail', '')}"
            )
    return out


def hosts(records: Sequence[Record]) -> list[str]:
    found: list[str] = []
    for r in records:
        d = r.doc
        params = d.get("parameters") or {}
        cands = [(d.get("fault") or {}).get("target"), params.get("target")]
        cands += [params.get("new_primary")]
        cands += [f.get("target") for f in (d.get("rollback") or {}).get("faults") or []]
        cands += [c.get(k) for c in d.get("confirmations") or [] for k in ("host", "target")]
        labels = r.alert.get("labels") or {}
        cands += [labels.get("host"), labels.get("instance")]
        found += [str(c) for c in cands if c and str(c) not in found]
    return list(dict.fromkeys(found))


def plots(records: Sequence[Record], out: Path) -> list[Img]:
    """The timeline figure (``report.plots.timeline``) of each run with client records;
    a run folder's own ``timeline*.png`` when it has no records but a figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from faultbook.drills.traffic import load_records
    from faultbook.report import plots as report_plots

    imgs = []
    for n, r in enumerate(records, 1):
        name = PLOT.format(n=n)
        if r.traffic is not None:
            df = load_records(r.traffic)
            if df.empty:
                continue
            fault = r.doc.get("fault") or {}
            markers = {
                "fault injected": parse_time(fault.get("injected_at")),
                "detected": parse_time(r.doc.get("detected_at")),
                "recovered": parse_time(r.doc.get("recovered_at")),
            }
            fig = report_plots.timeline(df, markers, title=f"{r.name} (UTC)")
            fig.savefig(out / name, dpi=90)
            plt.close(fig)
        else:
            own = sorted(r.path.glob("timeline*.png"))
            if not own:
                continue
            shutil.copy2(own[0], out / name)
        imgs.append(Img(name, f"timeline of {r.name}"))
    return imgs


def draft(
    records: Sequence[Record], entries: Sequence[Mapping[str, Any]], imgs: Sequence[Img]
) -> tuple[str, list[Block]]:
    runbooks = ", ".join(dict.fromkeys(r.runbook for r in records))
    first = min((r.started for r in records if r.started), default=None)
    title = f"Postmortem draft: {runbooks}, {utc(first)[:10]}"
    ev = timeline(records, entries)
    b: list[Block] = [H(1, title), Todo("summary: what happened, who noticed, how it ended")]
    b.append(H(2, "Runs"))
    b.append(
        Table(
            ["run", "runbook", "mode", "trigger", "started (UTC)", "finished (UTC)", "verdict"],
            [
                [
                    r.name,
                    r.runbook,
                    str(r.doc.get("mode")),
                    str(
                        r.meta.get("trigger")
                        or (f"alert {r.alert['alertname']}" if r.alert.get("alertname") else "—")
                    ),
                    utc(r.started),
                    utc(r.finished),
                    str(r.doc.get("verdict")),
                ]
                for r in records
            ],
        )
    )
    b += [H(2, "Impact as clients saw it"), impact(records)]
    if ev:
        b.append(
            P(
                f"First record {utc(ev[0].at)}, last {utc(ev[-1].at)}: "
                f"{_seconds(ev[0].at, ev[-1].at)} s."
            )
        )
    b.append(Todo("impact in words: who was affected and how"))
    b += [
        H(2, "Timeline (UTC)"),
        Table(["time (UTC)", "source", "event"], [[utc(e.at), e.source, e.what] for e in ev]),
    ]
    if imgs:
        b += [H(2, "Timeline plot"), *imgs]
    b += [
        H(2, "Objectives missed"),
        UL(missed(records) or ["none: every objective in the records was met"]),
    ]
    b += [
        H(2, "Steps failed, skipped or retried"),
        UL(step_problems(records) or ["none: every recorded step is ok"]),
    ]
    involved = hosts(records)
    b.append(H(2, "Hosts involved"))
    b.append(UL(involved) if involved else Todo("hosts involved: none named in the records"))
    b += [
        H(2, "Error-log lines"),
        Todo(
            f"error-log lines of {', '.join(involved) or 'the hosts involved'} "
            "(no central logs yet: journalctl on each host)"
        ),
    ]
    b += [H(2, "Cause"), Todo("cause: what failed, and why")]
    b += [H(2, "Lessons"), Todo("lessons: what went well, what did not, where we were lucky")]
    b += [H(2, "Actions"), Todo("actions: what, who, by when (one per line)")]
    b.append(H(2, "Sources"))
    b.append(
        UL(
            [str(r.path.resolve()) for r in records]
            + [f"decision log: {len(entries)} entries in the window"]
        )
    )
    return title, b


def write(
    run_dirs: Sequence[str | Path],
    out: Path,
    *,
    before_s: float = BEFORE_S,
    decisions_path: Path | None = None,
) -> tuple[Path, Path]:
    """Write OUT/postmortem.md, OUT/postmortem.html and the timeline figures."""
    records = [load(d) for d in run_dirs]  # every folder checked before anything is written
    start, end = window(records, before_s)
    entries = decisions_in(start, end, decisions_path)
    out.mkdir(parents=True, exist_ok=True)
    imgs = plots(records, out)
    title, blocks = draft(records, entries, imgs)
    md = out / "postmortem.md"
    md.write_text(render.markdown(blocks))
    page = out / "postmortem.html"
    page.write_text(render.html_page(title, blocks))
    return md, page
