"""The triage runbook's steps: its parameters, a table per hop, result.json and the
hand-over file the alert receiver reads.

Triage only reads: it has the one mode ``incident`` (the receiver's ``diagnose``
policy runs it so), no ``confirm``, and never changes a host. What it names goes
into ``triage.json`` next to result.json (``HANDOVER_FILE``, ``Diagnosis.to_dict``):
the receiver starts the named runbook from there only when the proposal allows a
hand-over and a route of that runbook is allow-listed (``alerts.dispatch``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from faultbook import inventory as inventory_mod
from faultbook import logs
from faultbook.errors import ParameterError, VerdictFailed
from faultbook.inventory import Inventory
from faultbook.results import Run
from faultbook.triage import evidence as ev
from faultbook.triage.collect import check_symptom
from faultbook.triage.diagnose import Diagnosis

RUNBOOK = "triage"
MODES = ("incident",)
HANDOVER_FILE = "triage.json"
ERRORS_LOOKBACK = "-15min"  # the symptom began before the run: the error lines of that window


def begin(inventory: str, symptom: str, mode: str, timeout_s: float) -> tuple[Run, Inventory]:
    """Check the parameters (one-line ParameterError), load the inventory, start the record."""
    if mode not in MODES:
        raise ParameterError(f"mode must be {' or '.join(MODES)} (triage only reads), got {mode!r}")
    check_symptom(symptom)
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or math.isnan(timeout_s)
        or not 3 <= timeout_s <= 60
    ):
        raise ParameterError(f"timeout_s must be a number of seconds in [3, 60], got {timeout_s!r}")
    inv = inventory_mod.load(inventory)
    params = {"inventory": inventory, "symptom": symptom, "mode": mode, "timeout_s": timeout_s}
    return Run.start(RUNBOOK, mode, params), inv


# ------------------------------------------------------------------------ tables
def vip_table(e: ev.Evidence) -> pd.DataFrame:
    holders = [lb.name for lb in e.lbs if lb.holds_vip]
    v = e.vip
    return pd.DataFrame(
        [
            {
                "vip": v.vip,
                "held_by": ", ".join(holders) or "nobody",
                "GET /readyz": v.status if v.status is not None else "no answer",
                "latency_s": v.latency_s,
                "said": v.error or v.body,
            }
        ]
    )


def lb_table(e: ev.Evidence) -> pd.DataFrame:
    rows = []
    for lb in e.lbs:
        rows.append(
            {
                "lb": lb.name,
                "ssh": "answers" if lb.reachable else "no answer",
                "holds_vip": lb.holds_vip,
                "haproxy": lb.haproxy,
                "keepalived": lb.keepalived,
                "vrrp": lb.vrrp_state,
                "healthz": lb.healthz,
                "backend web": ", ".join(f"{s} {st}" for s, st in lb.servers.items())
                or lb.stats_error,
                "error": lb.error,
            }
        )
    return pd.DataFrame(rows)


def _reach_cell(reaches: tuple[ev.Reach, ...], port: int = ev.PG_PORT) -> str:
    return ", ".join(f"{r.target} {r.outcome}" for r in reaches if r.port == port)


def web_table(e: ev.Evidence) -> pd.DataFrame:
    rows = []
    for w in e.webs:
        rows.append(
            {
                "web": w.name,
                "ssh": "answers" if w.reachable else "no answer",
                "ledger": w.service,
                "healthz": w.healthz,
                "readyz": w.readyz,
                "readyz says": w.readyz_reason,
                "connected to": ", ".join(w.db_peers),
                "reaches :5432": _reach_cell(w.reach),
                "error": w.error,
            }
        )
    return pd.DataFrame(rows)


def db_table(e: ev.Evidence) -> pd.DataFrame:
    rows = []
    for d in e.dbs:
        rows.append(
            {
                "db": d.name,
                "ssh": "answers" if d.reachable else "no answer",
                "postgresql": d.unit,
                "role": d.role,
                "read_only": d.read_only,
                "wal_receiver": d.wal_receiver,
                "follows": d.upstream,
                "reaches :5432": _reach_cell(d.reach),
                "reaches backup": _reach_cell(d.reach, ev.PGBACKREST_PORT),
                "error": d.error or d.sql_error,
            }
        )
    return pd.DataFrame(rows)


def reach_table(e: ev.Evidence) -> pd.DataFrame:
    """Who reaches whom: a row per source host, a column per target host and port."""
    sources: list[tuple[str, tuple[ev.Reach, ...], bool]] = [
        (w.name, w.reach, w.reachable) for w in e.webs
    ]
    sources += [(d.name, d.reach, d.reachable) for d in e.dbs]
    sources += [(m.name, m.reach, m.reachable) for m in e.mons]
    columns: list[str] = []
    rows = []
    for name, reaches, reachable in sources:
        row: dict[str, Any] = {"from": name}
        for r in reaches:
            col = f"{r.target}:{r.port}"
            if col not in columns:
                columns.append(col)
            row[col] = r.outcome
        if not reachable:
            row["from"] = f"{name} (no SSH)"
        rows.append(row)
    return pd.DataFrame(rows, columns=["from", *sorted(columns)]).fillna("")


def backup_mon_table(e: ev.Evidence) -> pd.DataFrame:
    rows = []
    if e.backup is not None:
        b = e.backup
        rows.append(
            {
                "host": b.host,
                "what": "backup repository",
                "state": "ok" if b.ok else f"status {b.status_code}",
                "said": b.error or b.message,
            }
        )
    for m in e.mons:
        rows.append(
            {
                "host": m.name,
                "what": "monitoring",
                "state": "answers" if m.reachable else "no SSH answer",
                "said": m.error or _reach_cell(m.reach),
            }
        )
    return pd.DataFrame(rows, columns=["host", "what", "state", "said"])


def proposals_table(d: Diagnosis) -> pd.DataFrame:
    rows = []
    if d.finding is not None:
        for i, p in enumerate(d.finding.proposals):
            rows.append(
                {
                    "": "named" if i == 0 else "or",
                    "runbook": p.runbook or "(a person)",
                    "command": p.command(),
                    "unattended hand-over": p.hand_over,
                    "why": p.why,
                }
            )
    return pd.DataFrame(rows, columns=["", "runbook", "command", "unattended hand-over", "why"])


def recent_errors(run: Run, inv: Inventory) -> logs.RunErrors:
    """Every host's error lines (priority err or worse) of the last 15 minutes, read from
    the central logs and kept in result.json (``logs``); a note when no mon host answers.
    Triage acts on no host and the fault began before the run, so the window looks back."""
    return logs.run_errors(inv, None, ERRORS_LOOKBACK).keep(run)


# --------------------------------------------------------------------- record
def record(run: Run, e: ev.Evidence, d: Diagnosis, result_dir: str) -> Path | None:
    """Metrics and verdict into the run (fail when a link is broken), result.json and
    the hand-over file into RESULT_DIR (nothing written when it is empty)."""
    run.metrics.update(
        broken=d.broken,
        also_broken=len(d.also),
        hand_over=bool(d.proposal and d.proposal.hand_over),
        collect_s=round(e.took_s, 3),
    )
    with run.step("diagnose") as st:
        st.detail = str(d).splitlines()[0]
    if d.broken:
        run.fail("verdict", str(d).splitlines()[0])
    run.finish()
    path = run.save(result_dir)
    if result_dir:
        out = Path(result_dir) / HANDOVER_FILE
        out.write_text(json.dumps(d.to_dict(), indent=2) + "\n")
    return path


def read_handover(run_dir: str | Path) -> dict[str, Any] | None:
    """The diagnosis a triage run left in RUN_DIR, or None when it left none readable."""
    try:
        doc = json.loads((Path(run_dir) / HANDOVER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def check(d: Diagnosis) -> None:
    """Raise when a link is broken, so papermill, nbval and the receiver see it."""
    if d.broken:
        raise VerdictFailed(str(d).splitlines()[0])
