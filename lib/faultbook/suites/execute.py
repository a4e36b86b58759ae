"""``faultbook suite run``: a suite's entries in turn, under the inventory's run lock.

The whole suite holds ``lock.hold`` on the inventory, so no other run (``faultbook
run``, the alert receiver, another schedule) acts on the stack meanwhile. Each
entry:

1. waits (``steady_timeout_s``) for steady state — the check the runbooks' closing
   uses, ``drills.procedure.wait_steady_state`` — unless it says
   ``require_steady_state: false``; out of steady state it is *skipped*, with the
   problems as its reason;
2. resolves its role targets (``suites.targets``), skipped when a role has no host;
3. runs through ``report.runner.run`` into OUT/<entry name>/ with papermill's
   execution timeout (``--entry-timeout``, else the entry's ``timeout_s``, else
   the suite's ``entry_timeout_s``; papermill's timeout bounds each cell), which
   rolls back and archives it whatever the ending;
4. passes when its result.json's verdict is "pass" and every suite-level metric
   limit holds.

A skipped entry, and a suite refused because the inventory is busy, is an audit
entry (``run-skipped``) and, when an automaton started it (``schedule:…``,
``alert:…``), a decision-log ``run-skipped`` event: overlap is recorded, never
piled up. A scheduled suite's outcome is announced (``announce``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faultbook import decisions, lock
from faultbook import inventory as inventory_mod
from faultbook.archive import audit
from faultbook.drills import procedure
from faultbook.errors import FaultbookError, InventoryBusy
from faultbook.report import runner
from faultbook.results import evaluate_objectives, utcnow
from faultbook.suites.model import Entry, Suite
from faultbook.suites.targets import StackView, resolve_all

log = logging.getLogger(__name__)

STATUSES = ("pass", "fail", "skipped")


@dataclass
class EntryResult:
    entry: Entry
    status: str  # pass | fail | skipped
    reason: str = ""  # why it was skipped, or what failed
    out_dir: Path | None = None
    doc: dict[str, Any] | None = None  # its result.json
    archived: Path | None = None
    params: dict[str, Any] = field(default_factory=dict)  # as run, targets resolved
    limits: list[dict[str, Any]] = field(default_factory=list)  # the suite's metric limits
    seconds: float = 0.0
    interrupted: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry": self.entry.name,
            "runbook": self.entry.runbook,
            "status": self.status,
            "reason": self.reason,
            "out_dir": str(self.out_dir) if self.out_dir else None,
            "archived": str(self.archived) if self.archived else None,
            "verdict": (self.doc or {}).get("verdict"),
            "metrics": (self.doc or {}).get("metrics", {}),
            "limits": self.limits,
            "seconds": round(self.seconds, 1),
        }


@dataclass
class SuiteResult:
    suite: Suite
    inventory: str
    trigger: str
    started_at: str
    finished_at: str = ""
    entries: list[EntryResult] = field(default_factory=list)
    busy: str = ""  # the lock holder, when the suite could not start
    out_dir: Path = Path(".")

    @property
    def verdict(self) -> str:
        """fail when an entry failed; skipped when none failed but some were skipped."""
        statuses = {e.status for e in self.entries}
        if self.busy or "fail" in statuses:
            return "fail" if "fail" in statuses else "skipped"
        return "skipped" if "skipped" in statuses or not statuses else "pass"

    @property
    def exit_code(self) -> int:
        if self.busy:
            return InventoryBusy.exit_code
        interrupted = next((e.interrupted for e in self.entries if e.interrupted), None)
        if interrupted:
            return 128 + interrupted
        return 0 if self.verdict == "pass" else 1

    def counts(self) -> dict[str, int]:
        return {s: sum(e.status == s for e in self.entries) for s in STATUSES}

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite.name,
            "inventory": self.inventory,
            "trigger": self.trigger,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "verdict": self.verdict,
            "busy": self.busy or None,
            "out_dir": str(self.out_dir),
            "counts": self.counts(),
            "entries": [e.to_dict() for e in self.entries],
        }


RunFn = Callable[..., Any]
SteadyFn = Callable[[inventory_mod.Inventory, float], procedure.SteadyState]


def _steady(inv: inventory_mod.Inventory, timeout_s: float) -> procedure.SteadyState:
    return procedure.wait_steady_state(inv, timeout_s=timeout_s)


def automated(trigger: str) -> bool:
    """A run an automaton started (a schedule, an alert), not a person."""
    return not trigger.startswith("user:")


def record_skipped(
    trigger: str, suite: str, reason: str, entry: Entry | None = None, inventory: str = ""
) -> None:
    """A run that did not start: an audit entry, and a decision for an automaton's run."""
    fields: dict[str, Any] = {
        "trigger": trigger,
        "suite": suite,
        "inventory": inventory,
        "reason": reason,
    }
    if entry is not None:
        fields |= {"entry": entry.name, "runbook": entry.runbook}
    try:
        audit.append({"kind": "run-skipped", **fields})
    except FaultbookError as exc:
        log.error("the skipped run is not in the audit log: %s", exc)
    if automated(trigger):
        decisions.record("run-skipped", **fields)


def run_suite(
    suite: Suite,
    inventory: str = "lab",
    out: Path | None = None,
    *,
    entry_timeout_s: float | None = None,
    trigger: str | None = None,
    run: RunFn = runner.run,
    steady: SteadyFn = _steady,
    view: Callable[[inventory_mod.Inventory], StackView] = StackView,
    load: Callable[[str], inventory_mod.Inventory] = inventory_mod.load,
    lock_wait_s: float = 0.0,
) -> SuiteResult:
    """Run SUITE's entries in turn on INVENTORY into OUT (see the module's docstring)."""
    inv = load(inventory)
    trigger = trigger or lock.default_trigger()
    if out is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = Path("reports") / f"suite-{suite.name}-{stamp}"
    out = runner.prepare_out_dir(out)
    res = SuiteResult(suite, inventory, trigger, utcnow(), out_dir=out)
    try:
        with lock.hold(inv, f"suite {suite.name}", wait_s=lock_wait_s, trigger=trigger):
            for entry in suite.entries:
                r = _run_entry(
                    suite,
                    entry,
                    inv,
                    inventory,
                    out,
                    entry_timeout_s,
                    run,
                    steady,
                    view,
                    soak_rate(entry, res.entries),
                )
                res.entries.append(r)
                if r.status == "skipped":
                    record_skipped(trigger, suite.name, r.reason, entry, inventory)
                if r.interrupted:
                    break
    except InventoryBusy as exc:
        res.busy = str(exc)
        record_skipped(trigger, suite.name, str(exc), inventory=inventory)
    res.finished_at = utcnow()
    (out / "suite.json").write_text(json.dumps(res.to_dict(), indent=2, default=str) + "\n")
    return res


# The drills' load_rps bound (drills.procedure.check_params).
MAX_DRILL_RPS = 500.0


def soak_rate(entry: Entry, done: list[EntryResult]) -> float | str | None:
    """The load_rps of an entry with ``load_from``: the soak rate its stress entry
    measured (at most the drills' bound), or why there is none (the entry is then
    skipped); None for an entry without ``load_from``."""
    if entry.load_from is None:
        return None
    source = next((r for r in done if r.entry.name == entry.load_from), None)
    rate = ((source.doc or {}).get("metrics") or {}).get("soak_rps") if source else None
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not rate > 0:
        status = source.status if source else "not run"
        return f"no soak load: {entry.load_from} measured none ({status})"
    return min(float(rate), MAX_DRILL_RPS)


def _run_entry(
    suite: Suite,
    entry: Entry,
    inv: inventory_mod.Inventory,
    inventory: str,
    out: Path,
    entry_timeout_s: float | None,
    run: RunFn,
    steady: SteadyFn,
    view: Callable[[inventory_mod.Inventory], StackView],
    load: float | str | None = None,
) -> EntryResult:
    t0 = time.monotonic()
    if isinstance(load, str):
        return EntryResult(entry, "skipped", load)
    if entry.require_steady_state:
        try:
            state = steady(inv, suite.steady_timeout_s)
        except FaultbookError as exc:
            return EntryResult(entry, "skipped", f"steady state unknown: {exc}")
        if not state.ok:
            return EntryResult(entry, "skipped", str(state))
    try:
        hosts = resolve_all(entry.targets, view(inv))
    except FaultbookError as exc:
        return EntryResult(entry, "skipped", str(exc))
    params = {**entry.params, "inventory": inventory, **hosts}
    if load is not None:
        params["load_rps"] = load
    d = out / entry.name
    timeout = entry_timeout_s or entry.timeout_s or suite.entry_timeout_s
    log.info("suite %s: entry %d %s (%s)", suite.name, entry.index, entry.name, entry.runbook)
    outcome = run(entry.runbook, params, d, execution_timeout_s=timeout)
    doc = json.loads(Path(outcome.result).read_text())
    limits = evaluate_objectives(doc.get("metrics", {}), entry.limits)
    problems = [f"{s['name']}: {s['detail']}" for s in doc["steps"] if s["status"] == "failed"]
    problems += [
        f"{o['metric']}={o['value']} > {o['limit']}"
        for o in evaluate_objectives(doc.get("metrics", {}), doc.get("objectives", {})) + limits
        if not o["met"]
    ]
    ok = doc.get("verdict") == "pass" and all(o["met"] for o in limits)
    return EntryResult(
        entry,
        "pass" if ok else "fail",
        "; ".join(problems) if not ok else "",
        d,
        doc,
        getattr(outcome, "archived", None),
        params,
        limits,
        time.monotonic() - t0,
        getattr(outcome, "interrupted", None),
    )


# --------------------------------------------------------------- announcing
def outcome_message(res: SuiteResult) -> dict[str, Any]:
    """The JSON a scheduled suite posts: the suite, its verdict, each entry in one line."""
    return {
        "source": "faultbook",
        "kind": "drill-outcome",
        "suite": res.suite.name,
        "inventory": res.inventory,
        "trigger": res.trigger,
        "verdict": res.verdict,
        "started_at": res.started_at,
        "finished_at": res.finished_at,
        "counts": res.counts(),
        "busy": res.busy or None,
        "entries": [
            {
                "entry": e.entry.name,
                "runbook": e.entry.runbook,
                "status": e.status,
                "reason": e.reason,
                "rto_s": ((e.doc or {}).get("metrics") or {}).get("rto_s"),
                "archived": str(e.archived) if e.archived else None,
            }
            for e in res.entries
        ],
    }


def announce(
    res: SuiteResult,
    inv: inventory_mod.Inventory,
    post: Callable[[str, Mapping[str, Any]], None] | None = None,
) -> str:
    """Post the outcome to the inventory's ``drill_webhook_url``; in the lab (or with no
    URL) record it in the decision log as ``drill-outcome``. Returns where it went."""
    msg = outcome_message(res)
    url = inv.vars.get("drill_webhook_url")
    if inv.is_lab or not url:
        decisions.record("drill-outcome", **msg)
        return str(decisions.log_path())
    try:
        (post or _post)(str(url), msg)
    except FaultbookError as exc:
        decisions.record("drill-outcome", **msg, webhook_error=str(exc))
        raise
    return str(url)


def _post(url: str, body: Mapping[str, Any]) -> None:
    import requests

    from faultbook.stack import http

    try:
        r = http.session().post(url, json=dict(body), timeout=10)
    except requests.RequestException as exc:
        raise FaultbookError(f"drill webhook {url}: {type(exc).__name__}: {exc}") from None
    if r.status_code >= 300:
        raise FaultbookError(f"drill webhook {url} answered HTTP {r.status_code}")
