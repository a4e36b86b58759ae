"""Rollback after a drill, whatever its ending: revert what the journal says is left.

``faultbook run`` (``report.runner``) calls ``rollback(run_dir)`` once the notebook has
ended — normally, with a failed cell, a cell timeout, a dead kernel, Ctrl-C or SIGTERM.
It reverts every fault the run's journal (``drills.journal``) does not record as
reverted (``Journal.rollback_pending``: each fault probed first, so one already
reverted is only recorded, and under the journal's lock, so the watchdog and the
runner never both act), checks steady state (bounded, ``poll``) and returns
result.json's ``rollback``::

    {"faults": [{kind, target, outcome: "reverted"|"already reverted"|"failed",
                 detail, at, by: "runner"|"watchdog"}],
     "steady_state": {ok, detail, problems, primary, checked_at}}

``record`` writes it into result.json: the verdict "fail" (the drill failed, even when
the stack is back) and a step "rollback".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faultbook.drills import procedure
from faultbook.drills.faults import Fault
from faultbook.drills.journal import Entry, Journal
from faultbook.errors import ConditionTimeout, FaultbookError
from faultbook.inventory import Inventory
from faultbook.poll import poll
from faultbook.results import iso
from faultbook.results import validate as validate_result
from faultbook.stack import failover

log = logging.getLogger(__name__)

STEADY_TIMEOUT_S = 180.0


def rollback(
    out_dir: Path,
    *,
    make: Callable[[Entry], Fault] | None = None,
    steady: Callable[[list[Entry]], dict[str, Any]] | None = None,
    repair: Callable[[list[Entry]], list[dict[str, str]]] | None = None,
    ended_badly: bool = False,
) -> dict[str, Any] | None:
    """Revert every fault journaled in OUT_DIR and not recorded as reverted; check steady state.

    Returns result.json's ``rollback`` (None when the drill reverted all its faults
    itself, or journaled none): the faults the runner or the watchdog reverted, each
    with its outcome, the db hosts it rejoined, and the steady state afterwards.
    ``make`` rebuilds a fault from an entry, ``repair`` rejoins what stayed out and
    ``steady`` checks steady state (defaults: ``journal.rebuild``,
    ``rejoin_stragglers`` and ``procedure.wait_steady_state`` on the entries'
    inventory), for tests. With
    ``ended_badly`` (the notebook did not finish) a run that journaled any fault gets a
    rollback entry even when nothing was left to revert: the steady state afterwards.
    """
    journal = Journal(out_dir)
    if not journal.exists():
        return None
    journal.rollback_pending(by="runner", make=make)
    entries = journal.entries()
    rolled = [e for e in entries if e.pending or e.reverted_by != "procedure"]
    if not rolled and not (ended_badly and entries):
        return None
    items: list[dict[str, Any]] = []
    for e in rolled:
        if e.pending:  # the revert failed
            detail = e.failures[-1] if e.failures else "not reverted"
            items.append(
                {
                    "kind": e.kind,
                    "target": e.target,
                    "outcome": "failed",
                    "detail": detail,
                    "at": iso(datetime.now(UTC)),
                    "by": "runner",
                }
            )
        else:
            items.append(
                {
                    "kind": e.kind,
                    "target": e.target,
                    "outcome": e.outcome or "reverted",
                    "detail": e.detail,
                    "at": e.reverted_at,
                    "by": e.reverted_by or "runner",
                }
            )
    repairs = (repair or _repair)(rolled or entries)
    state = (steady or _steady)(rolled or entries)
    return {"faults": items} | ({"repairs": repairs} if repairs else {}) | {"steady_state": state}


def _repair(entries: list[Entry]) -> list[dict[str, str]]:
    from faultbook import inventory as inventory_mod

    try:
        inv = inventory_mod.load(entries[0].inventory)
        if not inv.groups.get("db"):  # an inventory without databases: nothing to rejoin
            return []
        return rejoin_stragglers(inv)
    except Exception as exc:  # noqa: BLE001 - the record matters more than the exception
        return [
            {
                "host": "db",
                "primary": "",
                "outcome": "failed",
                "detail": f"db hosts not checked: {type(exc).__name__}: {exc}",
            }
        ]


def _steady(entries: list[Entry]) -> dict[str, Any]:
    from faultbook import inventory as inventory_mod

    try:
        inv = inventory_mod.load(entries[0].inventory)
        s = procedure.wait_steady_state(inv, STEADY_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - the record matters more than the exception
        return {
            "ok": False,
            "detail": f"steady state not checked: {type(exc).__name__}: {exc}",
            "problems": [str(exc)],
            "primary": None,
            "checked_at": iso(datetime.now(UTC)),
        }
    return {
        "ok": s.ok,
        "detail": str(s),
        "problems": list(s.problems),
        "primary": s.primary,
        "checked_at": iso(datetime.now(UTC)),
    }


def rejoin_stragglers(inv: Inventory, wait_s: float = 30.0) -> list[dict[str, str]]:
    """After a drill that failed before its own rejoin: every db host that is not a
    streaming standby of the one primary is rejoined to it (``failover.rejoin``), once WAIT_S has
    shown it will not come back by itself. Nothing is done unless exactly one primary
    runs: with none or two, which one to follow is a person's call (the incident mode).
    Each straggler as {host, primary, outcome: "rejoined"|"failed", detail}."""
    try:
        poll(
            lambda _t: failover.quorum_ok(inv),
            wait_s,
            what="every standby streaming",
            transient=lambda exc: True,
        )
        return []
    except ConditionTimeout:
        pass
    state = failover.cluster_state(inv)
    prim = failover.primaries(state)
    if len(prim) != 1:
        return []
    primary = prim[0]
    try:
        rep = failover.replication(inv, primary)
        streaming = set(rep.loc[rep["state"] == "streaming", "standby"])
    except FaultbookError:
        return []
    out: list[dict[str, str]] = []
    for host in state["host"]:
        if host == primary or host in streaming:
            continue
        try:
            failover.rejoin(inv, host, primary)
            out.append(
                {
                    "host": host,
                    "primary": primary,
                    "outcome": "rejoined",
                    "detail": f"{host} rejoined as a standby of {primary}",
                }
            )
        except FaultbookError as exc:
            out.append(
                {
                    "host": host,
                    "primary": primary,
                    "outcome": "failed",
                    "detail": f"{host} not rejoined to {primary}: {exc}",
                }
            )
    return out


def journaled_fault(out_dir: Path) -> dict[str, Any] | None:
    """result.json's ``fault`` from the journal (its last fault), for a result the runner
    writes because the notebook could not."""
    entries = Journal(out_dir).entries()
    if not entries:
        return None
    e = entries[-1]
    return {
        "kind": e.kind,
        "target": e.target,
        "injected_at": e.injected_at,
        "reverted_at": e.reverted_at,
        "detail": e.describe()
        + (f" (injection failed: {e.inject_error})" if e.inject_error else ""),
    }


def summary(rb: Mapping[str, Any]) -> str:
    faults = "; ".join(
        f"{f['kind']} on {f['target']}: {f['outcome']}" + (f" by {f['by']}" if f.get("by") else "")
        for f in rb["faults"]
    )
    faults = faults or "nothing left to revert (the drill had reverted its faults)"
    repairs = "".join(f"; {r['detail']}" for r in rb.get("repairs", []))
    st = rb["steady_state"]
    return (
        f"{faults}{repairs}; then "
        f"{st['detail'] if st['ok'] else 'NOT in steady state: ' + st['detail']}"
    )


def record(result: Path, rb: dict[str, Any]) -> None:
    doc = json.loads(result.read_text())
    doc["rollback"] = rb
    doc["verdict"] = "fail"  # the drill failed, even though the stack is back
    ok = rb["steady_state"]["ok"] and all(
        f["outcome"] != "failed" for f in [*rb["faults"], *rb.get("repairs", [])]
    )
    now = iso(datetime.now(UTC))
    doc["steps"].append(
        {
            "name": "rollback",
            "started_at": now,
            "finished_at": now,
            # Reverting what a drill left is a failure of the drill: "failed", so that the
            # verdict says why; only a check that found nothing to revert and the stack
            # steady is "ok".
            "status": "ok" if ok and not rb["faults"] and not rb.get("repairs") else "failed",
            "detail": (
                ("reverted what the drill left: " if rb["faults"] or rb.get("repairs") else "")
                if ok
                else "ROLLBACK INCOMPLETE: "
            )
            + summary(rb),
        }
    )
    problems = validate_result(doc)
    if problems:  # keep the record anyway: it says what was left on the stack
        log.warning("result.json with its rollback departs from the schema: %s", problems)
    result.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def retire_journal(out_dir: Path) -> None:
    """A journal left in OUT_DIR by an earlier run: revert what it left, keep it aside."""
    old = Journal(out_dir)
    if not old.exists():
        return
    for r in old.rollback_pending(by="runner"):
        log.warning("earlier run in %s left %s on %s: %s", out_dir, r.kind, r.target, r.outcome)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    old.path.rename(out_dir / f"faults-{stamp}.jsonl")
