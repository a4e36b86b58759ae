"""The game day: the whole fault catalogue on every tier where it makes sense, and its matrix.

``suites/gameday.yml`` runs every fault the runbooks can drill (``make gameday``: lab up,
``faultbook suite run gameday``, then this module). ``PLAN`` is the game day as it should
be: one cell per (fault, tier) that makes sense, named by its suite entry, with what an
entry the suite cannot run yet needs. The matrix reads the latest game-day suite run::

    python -m faultbook.suites.gameday matrix [--suite-dir DIR] [--out docs/gameday.md]

DIR is the suite run's ``--out``: its ``suite.json`` says what each entry did (also the
skipped ones) and which archived run holds it. Without ``--suite-dir`` the latest run is
found in the archive: its runs' directories (``archive.json``'s ``out_dir``) are entries
of a suite run directory called ``suite-gameday-*`` (``suite run``'s default) or holding a
``suite.json`` of the gameday suite; the one with the newest run wins. Each cell of the
page has the run's RTO, lost writes and failed requests and its verdict, or what failed
(the failed steps and the objectives missed), or why it was skipped; a planned cell the
suite cannot run says what it needs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faultbook.archive import store
from faultbook.drills import faults
from faultbook.errors import FaultbookError, SuiteError
from faultbook.paths import REPO_ROOT
from faultbook.results import evaluate_objectives
from faultbook.suites import model

SUITE = "gameday"
DEFAULT_OUT = REPO_ROOT / "docs" / "gameday.md"
COLUMNS = ("web", "db primary", "db standby", "lb", "backup", "mon")
MAX_REASON = 300

BACKUP_CLOCK = "a whole host's clock"
PYTHON_CLOCK = "a Python 3.11 service's clock"
# What the suite lacks for a planned cell, in full (the page says it once).
NEEDS: dict[str, str] = {
    BACKUP_CLOCK: (
        "lab hosts share the controller's kernel clock, so a whole host's clock cannot be "
        "skewed there, only one unit's (clock-skew's unit=, through libfaketime). The backup "
        "host's clock matters to the `pgbackrest backup` command, which no unit runs: on real "
        "hosts the fault-observe runbook skews the whole host"
    ),
    PYTHON_CLOCK: (
        "the ledger (Python 3.11, gunicorn) dies under bookworm's libfaketime 0.9.10: "
        "time.sleep calls clock_nanosleep with TIMER_ABSTIME, which that version breaks "
        "(EINVAL with DONT_FAKE_MONOTONIC, a hang without it: libfaketime#426), and the lab "
        "cannot skew a whole host. On real hosts the fault-observe runbook skews the whole "
        "web host"
    ),
}


@dataclass(frozen=True)
class Cell:
    """One planned drill: a fault on a tier, run as suite entry ``entry``."""

    entry: str
    fault: str
    column: str
    note: str = ""  # what the cell adds (which unit, during what)
    needs: str = ""  # what the suite lacks to run it (shown while it is not in the suite)


PLAN: tuple[Cell, ...] = (
    Cell("web-process-freeze", "process-freeze", "web", "ledger.service"),
    Cell("db-primary-process-freeze", "process-freeze", "db primary", "postgresql@15-main"),
    Cell("lb-vip-holder-process-freeze", "process-freeze", "lb", "keepalived, VIP holder"),
    Cell("web-partition", "partition", "web"),
    Cell("db-primary-partition", "partition", "db primary"),
    Cell("lb-vip-holder-partition", "partition", "lb", "VIP holder"),
    Cell("web-delay-loss", "delay-loss", "web"),
    Cell("db-primary-delay-loss", "delay-loss", "db primary"),
    Cell("db-standby-disk-full", "disk-full", "db standby", "pg_wal"),
    Cell("db-primary-wal-disk-full", "disk-full", "db primary", "pg_wal"),
    Cell("backup-disk-full", "disk-full", "backup", "the repository"),
    Cell("db-primary-clock-skew", "clock-skew", "db primary", "postgresql@15-main, libfaketime"),
    Cell("web-clock-skew", "clock-skew", "web", "real hosts", PYTHON_CLOCK),
    Cell("backup-clock-skew", "clock-skew", "backup", "real hosts", BACKUP_CLOCK),
    Cell("web-service-kill", "service-kill", "web", "ledger.service"),
    Cell("web-service-stop", "service-stop", "web", "ledger.service"),
    Cell("lb-keepalived-stop", "service-stop", "lb", "keepalived, VIP holder"),
    Cell("web-host-crash", "host-crash", "web"),
    Cell("db-primary-crash", "host-crash", "db primary"),
    Cell("lb-vip-holder-crash", "host-crash", "lb", "VIP holder"),
    Cell("web-service-kill-at-soak", "service-kill", "web", "at the soak load"),
    Cell("db-primary-crash-at-soak", "host-crash", "db primary", "at the soak load"),
    Cell("lb-vip-holder-crash-at-soak", "host-crash", "lb", "VIP holder, at the soak load"),
    Cell("db-failover-backup-lost", "host-crash", "backup", "during a db failover"),
    Cell("db-failover-mon-lost", "host-crash", "mon", "during a db failover"),
)


@dataclass(frozen=True)
class Outcome:
    """What one entry of a suite run did."""

    entry: str
    status: str  # pass | fail | skipped
    metrics: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""  # what failed, or why it was skipped
    runbook: str = ""
    fault: str = ""
    target: str = ""
    folder: str = ""  # the archived run's folder name


@dataclass(frozen=True)
class GameDay:
    """One game-day suite run: where it ran, when, and each entry's outcome."""

    where: Path
    started: str
    outcomes: dict[str, Outcome]
    trigger: str = ""
    verdict: str = ""

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "fail": 0, "skipped": 0}
        for o in self.outcomes.values():
            out[o.status] = out.get(o.status, 0) + 1
        return out


# ------------------------------------------------------------------ reading
def what_failed(doc: Mapping[str, Any]) -> str:
    """A result.json's failed steps and missed objectives, in one line."""
    parts = [
        f"{s.get('name')}: {s.get('detail') or 'failed'}"
        for s in doc.get("steps") or []
        if s.get("status") == "failed"
    ]
    parts += [
        f"{o['metric']}={o['value']} > {o['limit']}"
        for o in evaluate_objectives(doc.get("metrics") or {}, doc.get("objectives") or {})
        if not o["met"]
    ]
    return "; ".join(parts)


def from_result(entry: str, doc: Mapping[str, Any], folder: str = "") -> Outcome:
    """An entry's outcome from its run's result.json alone."""
    verdict = doc.get("verdict")
    fault = doc.get("fault") or {}
    params = doc.get("parameters") or {}
    return Outcome(
        entry,
        "pass" if verdict == "pass" else "fail",
        dict(doc.get("metrics") or {}),
        "" if verdict == "pass" else (what_failed(doc) or f"verdict {verdict}"),
        str(doc.get("runbook") or ""),
        str(fault.get("kind") or params.get("fault") or ""),
        str(fault.get("target") or params.get("target") or ""),
        folder,
    )


def _is_gameday(directory: Path, suite: str) -> bool:
    if directory.name.startswith(f"suite-{suite}-"):
        return True
    doc = store.read_json(directory / "suite.json")
    return doc is not None and doc.get("suite") == suite


def _by_suite_dir(runs: Iterable[store.ArchivedRun]) -> dict[Path, list[store.ArchivedRun]]:
    out: dict[Path, list[store.ArchivedRun]] = {}
    for r in runs:
        where = r.meta.get("out_dir")
        if isinstance(where, str) and where:
            out.setdefault(Path(where).parent, []).append(r)
    return out


def latest(
    suite_dir: Path | None = None, home: Path | None = None, suite: str = SUITE
) -> GameDay | None:
    """The latest game-day suite run (or the one in SUITE_DIR); None when there is none."""
    groups = _by_suite_dir(store.runs(home))
    if suite_dir is None:
        found = [d for d in groups if _is_gameday(d, suite)]
        if not found:
            return None
        where = max(found, key=lambda d: max(r.started for r in groups[d]))
    else:
        where = Path(suite_dir).resolve()
        if not (where / "suite.json").is_file() and where not in groups:
            raise SuiteError(
                f"--suite-dir {suite_dir}: no suite.json there and no archived run from it"
            )
    archived = {Path(str(r.meta["out_dir"])).name: r for r in groups.get(where, [])}
    summary = store.read_json(where / "suite.json") or {}
    outcomes: dict[str, Outcome] = {}
    for e in summary.get("entries") or []:
        name = str(e.get("entry"))
        run = _archived(e.get("archived")) or archived.get(name)
        if run is not None and run.doc is not None and e.get("status") != "skipped":
            got = from_result(name, run.doc, run.name)
            reason = str(e.get("reason") or "") or got.reason
            outcomes[name] = Outcome(
                name,
                str(e.get("status") or got.status),
                got.metrics,
                reason,
                got.runbook,
                got.fault,
                got.target,
                got.folder,
            )
            continue
        outcomes[name] = Outcome(
            name,
            str(e.get("status") or "fail"),
            dict(e.get("metrics") or {}),
            str(e.get("reason") or ""),
            str(e.get("runbook") or ""),
        )
    for name, run in archived.items():  # a suite cut short wrote no suite.json
        if name not in outcomes and run.doc is not None:
            outcomes[name] = from_result(name, run.doc, run.name)
    runs = groups.get(where, [])
    started = str(
        summary.get("started_at")
        or (min(r.started for r in runs).strftime("%Y-%m-%dT%H:%M:%SZ") if runs else "")
    )
    return GameDay(
        where,
        started,
        outcomes,
        str(summary.get("trigger") or (runs[0].trigger if runs else "")),
        str(summary.get("verdict") or ""),
    )


def _archived(path: Any) -> store.ArchivedRun | None:
    if not isinstance(path, str) or not path:
        return None
    folder = Path(path)
    parsed = store.parse_name(folder.name)
    doc = store.read_json(folder / "result.json")
    if parsed is None or doc is None:
        return None
    return store.ArchivedRun(folder, str(doc.get("runbook") or parsed[1]), parsed[0], doc)


# ------------------------------------------------------------------ writing
def _md(text: str, limit: int = MAX_REASON) -> str:
    """Text for a Markdown table cell: one line, pipes escaped, bounded."""
    one = " ".join(str(text).split())
    if len(one) > limit:
        one = one[: limit - 1] + "…"
    return one.replace("|", "\\|").replace("<", "&lt;")


def _num(value: Any, unit: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    if unit == "s":
        return f"{value:.1f} s"
    return f"{value:g}" if isinstance(value, float) and not value.is_integer() else f"{value:.0f}"


def figures(m: Mapping[str, Any]) -> str:
    """RTO, lost writes and failed requests, as a cell reads them."""
    lost = _num(m.get("lost_writes"))
    failed = _num(m.get("failed_requests"))
    if isinstance(m.get("acked_writes"), int | float):
        lost += f" of {_num(m.get('acked_writes'))}"
    if isinstance(m.get("total_requests"), int | float):
        failed += f" of {_num(m.get('total_requests'))}"
    return f"RTO {_num(m.get('rto_s'), 's')} · lost {lost} · failed {failed}"


def cell_text(cell: Cell, outcome: Outcome | None, in_suite: bool) -> str:
    head = f"`{cell.entry}`" + (f" ({_md(cell.note)})" if cell.note else "")
    if outcome is None:
        if not in_suite:
            return f"{head}<br>not drilled yet: needs {_md(cell.needs or 'an entry in the suite')}"
        return f"{head}<br>not run"
    if outcome.status == "skipped":
        return f"{head}<br>**skipped**: {_md(outcome.reason or 'no reason given')}"
    text = f"{head}<br>**{outcome.status.upper()}** · {figures(outcome.metrics)}"
    if outcome.status != "pass":
        text += f"<br>what failed: {_md(outcome.reason or 'no detail recorded')}"
    return text


def matrix(game: GameDay | None, suite: model.Suite, plan: Iterable[Cell] = PLAN) -> str:
    """The game day's page (Markdown): the fault x tier matrix, then every entry."""
    cells = list(plan)
    names = {e.name for e in suite.entries}
    outcomes = game.outcomes if game else {}
    lines = ["# Game day", ""]
    if game is None:
        lines += [
            "No game day has run yet: `make gameday` runs it (docs/drills.md, Game day).",
            "",
        ]
    else:
        c = game.counts()
        lines += [
            f"Suite run `{game.where.name}` started {game.started or '?'}"
            + (f" by {game.trigger}" if game.trigger else "")
            + f": {c['pass']} passed, {c['fail']} failed, {c['skipped']} skipped"
            + (f" (verdict {game.verdict})." if game.verdict else "."),
            "",
        ]
    lines += [
        "Each cell: the suite entry; its verdict with RTO (the longest client-visible "
        "write outage), lost writes (of those acknowledged) and failed requests (of all "
        "sent); what failed, or why it was skipped. An empty cell: the fault does not "
        "apply to that tier.",
        "",
        "| fault | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    kinds = [k for k, c in faults.CATALOGUE.items() if c.game_day]
    kinds += sorted({c.fault for c in cells} - set(faults.CATALOGUE))
    for kind in kinds:
        row = []
        for col in COLUMNS:
            here = [c for c in cells if c.fault == kind and c.column == col]
            row.append(
                "<br><br>".join(cell_text(c, outcomes.get(c.entry), c.entry in names) for c in here)
            )
        lines.append(f"| `{kind}` | " + " | ".join(row) + " |")
    lines += ["", "## Entries", ""]
    lines += [
        "| entry | runbook | fault | target | status | RTO | lost writes | failed requests "
        "| archived run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    planned = {c.entry for c in cells}
    for e in suite.entries:
        o = outcomes.get(e.name)
        lines.append(_entry_row(f"`{e.name}`", e.runbook, str(e.params.get("fault", "")), o))
    for n in sorted(set(outcomes) - names):
        o = outcomes[n]
        lines.append(_entry_row(f"`{n}` (not in the suite now)", o.runbook, o.fault, o))
    todo = [c for c in cells if c.entry not in names]
    if todo:
        lines += ["", "## Not drilled yet", ""]
        lines += [f"- `{c.entry}` ({c.fault}, {c.column}): needs {c.needs}" for c in todo]
        said = {n for c in todo for n in NEEDS if n in c.needs}
        lines += [""] + [f"- {n}: {NEEDS[n]}." for n in NEEDS if n in said]
    unplanned = sorted(names - planned - {"health-check", "stress-capacity"})
    if unplanned:
        lines += ["", f"Entries outside the matrix's plan: {', '.join(unplanned)}."]
    return "\n".join(lines) + "\n"


def _entry_row(name: str, runbook: str, fault: str, o: Outcome | None) -> str:
    m = o.metrics if o else {}
    cols = [
        name,
        runbook,
        _md((o.fault if o else "") or fault),
        _md(o.target) if o else "",
        o.status if o else "not run",
        _num(m.get("rto_s"), "s"),
        _num(m.get("lost_writes")),
        _num(m.get("failed_requests")),
        f"`{o.folder}`" if o and o.folder else "",
    ]
    return "| " + " | ".join(cols) + " |"


def write(
    out: Path = DEFAULT_OUT,
    suite_dir: Path | None = None,
    home: Path | None = None,
    suite: str | Path = SUITE,
) -> Path:
    """Write the matrix of the latest game-day run (or SUITE_DIR's) to OUT."""
    s = model.load(suite)
    game = latest(suite_dir, home, s.name)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(matrix(game, s))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m faultbook.suites.gameday", description=__doc__.split("\n\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("matrix", help="the fault x tier page of the latest game-day run")
    m.add_argument("--suite-dir", type=Path, default=None, help="the suite run's --out")
    m.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the Markdown page to write")
    m.add_argument("--suite", default=SUITE, help="the suite (name or YAML file)")
    args = ap.parse_args(argv)
    try:
        path = write(args.out, args.suite_dir, suite=args.suite)
    except FaultbookError as exc:
        sys.stderr.write(f"faultbook: {exc}\n")
        return exc.exit_code
    sys.stdout.write(f"matrix: {path} ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
