"""What every failover runbook shares: parameters, load, fault, markers, steady state, verdict.

A runbook makes one ``Procedure`` and calls it step by step::

    p = Procedure.start("db-failover", inv, mode, params, objectives, confirm=confirm)
    steady_state(inv)                   # pre-flight: the whole stack, as a table
    p.preflight(alert="NoWritablePrimary", hosts=[...], backups=True)  # what the drill needs
    p.start_load(load_rps, duration_s)  # drill only
    p.inject(fault)                     # drill only: journaled first, watchdog for lab faults
    p.mark("detected") ...              # markers for the timeline
    p.stop_load(); p.evaluate(primary)  # what the clients saw, lost writes
    p.wait_steady(); p.save(dir)        # steady state again, result.json
    p.check()                           # raise when the verdict failed

Incident mode never starts load or injects anything, and a destructive step
runs only when the person at the notebook confirms it, or ``confirm`` is true
(``Procedure.allowed``, ``drills.confirm``).

Faults go through the run's journal (``drills.journal``, in ``result_dir`` or
``$FAULTBOOK_RUN_DIR``, which ``faultbook run`` sets): written before the
fault is injected, marked injected and reverted, so ``faultbook run`` can
revert whatever the notebook left behind, however it ended. A lab fault also
gets a detached watchdog (``drills.watchdog``) bounded by the drill's duration.
``start_load`` and ``inject`` run the pre-flight (``drills.preflight``) with the
runbook's defaults when the notebook has not run it itself.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from faultbook.drills import confirm as confirm_mod
from faultbook.drills import preflight as preflight_mod
from faultbook.drills import watchdog
from faultbook.drills.faults import Fault
from faultbook.drills.impact import DrillResult
from faultbook.drills.journal import Entry, Journal
from faultbook.drills.traffic import LoadSpec, Traffic
from faultbook.errors import (
    ConditionTimeout,
    DrillAborted,
    FaultbookError,
    ParameterError,
)
from faultbook.inventory import Inventory
from faultbook.poll import poll, until
from faultbook.results import Run, Step, iso
from faultbook.stack import failover, haproxy, monitoring, vip

log = logging.getLogger(__name__)

MODES = ("incident", "drill")
# Where `faultbook run` tells a notebook's kernel its run directory (the journal's home).
RUN_DIR_ENV = "FAULTBOOK_RUN_DIR"
# A lab fault's watchdog deadline: the drill's load duration plus this (detection,
# failover and the notebook's own revert all fit in it); at most the fault's max_s.
WATCHDOG_GRACE_S = 120.0


def check_params(
    mode: str,
    load_rps: float,
    duration_s: float,
    objectives: Mapping[str, Any],
    modes: tuple[str, ...] = MODES,
) -> None:
    """One-line ParameterError for a mistyped mode, a bad rate or a malformed objective."""
    if mode not in modes:
        raise ParameterError(f"mode must be one of {', '.join(modes)}, got {mode!r}")
    if not 0 < load_rps <= 500:
        raise ParameterError(f"load_rps must be in (0, 500] requests/s, got {load_rps!r}")
    if not 10 <= duration_s <= 1800:
        raise ParameterError(f"duration_s must be in [10, 1800] seconds, got {duration_s!r}")
    for k, v in objectives.items():
        if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
            raise ParameterError(f"objective {k!r} must be a number >= 0, got {v!r}")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SteadyState:
    ok: bool
    problems: list[str]
    primary: str | None
    table: pd.DataFrame

    def __str__(self) -> str:
        if self.ok:
            return (
                f"steady state: primary {self.primary}, every standby streaming, every web node "
                "UP, VIP held, no alert firing"
            )
        return "not in steady state: " + "; ".join(self.problems)


# Alerts labelled signal=event count what the last minute's logs said (PostgreSQL FATAL
# lines, refused SSH logins): a drill's failover and the security audit make them by
# design. They page and route as usual; they say nothing about the stack's state now.
EVENT_SIGNAL = "event"


def steady_state(
    inv: Inventory,
    ignore_alerts: tuple[str, ...] = (),
    pre_existing: frozenset[tuple[str, str]] = frozenset(),
) -> SteadyState:
    """The stack is healthy: one primary with every standby streaming, no alert firing
    (alerts labelled ``signal: event`` aside: they count recent log lines, not a state).

    ``pre_existing`` (alertname, instance) pairs are not problems: alerts on hosts the
    run does not act on that were firing before it started (``Procedure.outside``).
    """
    problems: list[str] = []
    state = failover.cluster_state(inv)
    prim = failover.primaries(state)
    primary = prim[0] if len(prim) == 1 else None
    if primary is None:
        problems.append(f"expected one primary, found {prim or 'none'}")
    else:
        try:
            if failover.quorum_ok(inv) != primary:
                problems.append(f"{primary} lacks a streaming standby or a sync standby")
        except FaultbookError as exc:
            problems.append(str(exc))
    for row in state.to_dict("records"):
        if row["role"] in ("unreachable", "down"):
            problems.append(f"{row['host']} is {row['role']} ({row['error']})")
    try:
        web = haproxy.failed_backends(inv)
        if web.failed:
            problems.append(web.summary())
        if vip.vip_holder(inv) is None:
            problems.append("no load balancer holds the VIP")
        for row in vip.lb_status(inv).to_dict("records"):
            if not (
                row["reachable"] and row["haproxy"] == "active" and row["keepalived"] == "active"
            ):
                problems.append(
                    f"{row['lb']}: haproxy {row['haproxy']}, keepalived {row['keepalived']}"
                )
    except FaultbookError as exc:
        problems.append(f"web tier: {exc}")
    try:
        firing = monitoring.alerts(inv)
        names = (
            sorted(
                {
                    str(r["alertname"])
                    for r in firing.to_dict("records")
                    if (str(r["alertname"]), str(r["instance"])) not in pre_existing
                    and (r["labels"] or {}).get("signal") != EVENT_SIGNAL
                }
                - set(ignore_alerts)
            )
            if len(firing)
            else []
        )
        if names:
            problems.append("alerts firing: " + ", ".join(names))
    except FaultbookError as exc:
        problems.append(f"Prometheus: {exc}")
    return SteadyState(not problems, problems, primary, state)


def wait_steady_state(
    inv: Inventory,
    timeout_s: float = 120.0,
    ignore_alerts: tuple[str, ...] = (),
    pre_existing: frozenset[tuple[str, str]] = frozenset(),
) -> SteadyState:
    """Steady state, waited for up to timeout_s (``poll``); the last state seen, ok or not."""
    last: list[SteadyState] = []

    def attempt(_t: float) -> SteadyState | None:
        s = steady_state(inv, ignore_alerts, pre_existing)
        last[:] = [s]
        return s if s.ok else None

    try:
        return poll(
            attempt, timeout_s, what="steady state", interval_s=2.0, seen=lambda: str(last[0])
        )
    except ConditionTimeout:
        return last[0]


def firing_outside(inv: Inventory, runbook: str) -> frozenset[tuple[str, str]]:
    """(alertname, instance) firing now on hosts outside RUNBOOK's tiers (``preflight.NEEDS``
    groups); empty when Prometheus cannot say."""
    needs = preflight_mod.NEEDS.get(runbook, preflight_mod.DEFAULT_NEEDS)
    mine = set(preflight_mod.hosts_of(inv, needs.groups))
    try:
        firing = monitoring.alerts(inv, state="firing")
    except FaultbookError as exc:
        log.warning("cannot read the alerts firing at the start: %s", exc)
        return frozenset()
    return frozenset(
        (str(r["alertname"]), str(r["instance"]))
        for r in firing.to_dict("records")
        if str(r["instance"]) in inv.hosts and str(r["instance"]) not in mine
    )


@dataclass
class Procedure:
    runbook: str
    inv: Inventory
    mode: str
    run: Run
    confirm: bool = False
    traffic: Traffic | None = None
    fault: Fault | None = None
    markers: dict[str, datetime | None] = field(default_factory=dict)
    result: DrillResult | None = None
    result_dir: str = ""
    duration_s: float | None = None
    preflight_report: preflight_mod.Report | None = None
    entry: Entry | None = None
    # (alertname, instance) firing at the start on hosts outside the runbook's tiers.
    outside: frozenset[tuple[str, str]] = frozenset()
    # Who is asked before a destructive step in incident mode (tests inject their own).
    ask: confirm_mod.Asker = field(default=confirm_mod.ask_in_notebook, repr=False)
    _journal: Journal | None = field(default=None, repr=False)

    @classmethod
    def start(
        cls,
        runbook: str,
        inv: Inventory,
        mode: str,
        params: Mapping[str, Any],
        objectives: Mapping[str, float] | None = None,
        confirm: bool = False,
        result_dir: str | None = None,
    ) -> Procedure:
        run = Run.start(runbook, "incident" if mode == "incident" else "drill", params)
        run.objectives = dict(objectives or {})
        where = result_dir or os.environ.get(RUN_DIR_ENV, "")
        duration = params.get("duration_s")
        return cls(
            runbook,
            inv,
            mode,
            run,
            confirm=confirm,
            result_dir=where,
            duration_s=float(duration) if isinstance(duration, int | float) else None,
            outside=firing_outside(inv, runbook) if mode == "incident" else frozenset(),
        )

    @property
    def journal(self) -> Journal:
        """The run's fault journal (a temporary directory when there is no run directory)."""
        if self._journal is None:
            where = self.result_dir or tempfile.mkdtemp(prefix=f"faultbook-{self.runbook}-")
            self._journal = Journal(where)
        return self._journal

    @property
    def drill(self) -> bool:
        """Unattended with load: drill mode (and planned operations such as switchover)."""
        return self.mode != "incident"

    def allowed(self, what: str, host: str = "") -> bool:
        """A destructive step may run: drill mode; in incident mode ``confirm=True`` (a
        standing confirmation) or the person at the notebook typing HOST (``drills.confirm``;
        "yes" when no single host is concerned). Confirmations and refusals go into
        result.json; a refused or unconfirmed step is recorded as skipped."""
        if self.drill:
            return True
        expect = host or "yes"
        c = confirm_mod.decide(what, expect, self.confirm, self.ask)
        if c is None:
            self.run.skip(what, "needs confirm=True in incident mode (nobody to ask: unattended)")
            sys.stdout.write(f"SKIPPED: {what} — re-run with confirm=True to do it\n")
            return False
        self.run.confirmations.append(c.to_dict())
        if not c.granted:
            why = f"refused by {c.by} at {c.at}: typed {c.answer!r}, not {expect!r}"
            self.run.skip(what, why)
            sys.stdout.write(f"SKIPPED: {what} — {why}\n")
            return False
        sys.stdout.write(f"CONFIRMED: {what} ({c.by}, {c.at})\n")
        return True

    def mark(self, name: str, at: datetime | None = None) -> datetime:
        ts = at or now()
        self.markers[name] = ts
        return ts

    # -------------------------------------------------------------- pre-flight
    def preflight(
        self,
        alert: str | None = None,
        hosts: Sequence[str] | None = None,
        backups: bool | None = None,
        prometheus: bool | None = None,
    ) -> preflight_mod.Report:
        """Prove what the drill depends on; raise PreflightFailed (exit 1) before any fault.

        Unset arguments come from the runbook's defaults (``preflight.NEEDS``); the
        alert is only required in drill mode (it is what detects the injected fault).
        Recorded as step "dependencies".
        """
        needs = preflight_mod.NEEDS.get(self.runbook, preflight_mod.DEFAULT_NEEDS)
        if alert is None and self.mode == "drill":
            alert = needs.alert
        if hosts is None:
            hosts = preflight_mod.hosts_of(self.inv, needs.groups)
        with self.run.step("dependencies") as st:
            rep = preflight_mod.check(
                self.inv,
                alert=alert,
                hosts=list(hosts),
                backups=needs.backups if backups is None else backups,
                prometheus=needs.prometheus if prometheus is None else prometheus,
            )
            self.preflight_report = rep
            self.run.preflight = {"ok": rep.ok, "checks": [c.to_dict() for c in rep.checks]}
            st.detail = rep.reason
            rep.require()
        return rep

    def _require_preflight(self) -> None:
        if self.preflight_report is None:
            self.preflight()

    # ------------------------------------------------------------ load, fault
    def start_load(self, rps: float, duration_s: float, warmup_s: float = 3.0) -> Traffic:
        self._require_preflight()
        self.duration_s = duration_s
        # Room for every request of one client timeout in flight: requests that wait
        # out an outage (the app holds them in its retry) must show as latency or as
        # their own answer, not as the load generator's "client saturated" refusals.
        in_flight = max(64, math.ceil(rps * LoadSpec.timeout_s))
        spec = LoadSpec(rps=rps, duration_s=duration_s, max_in_flight=in_flight)
        self.traffic = Traffic.for_inventory(self.inv, spec).start()
        time.sleep(warmup_s)
        recs = self.traffic.records()
        if len(recs) and not recs["ok"].any():
            self.traffic.stop()
            raise DrillAborted("no request succeeded during the warm-up: the stack is not serving")
        return self.traffic

    def fault_budget_s(self, fault: Fault) -> float:
        """How long a fault may last before the watchdog reverts it: the drill's duration
        plus ``WATCHDOG_GRACE_S``, never more than the fault's own max_s."""
        if self.duration_s is None:
            return fault.max_s
        return min(fault.max_s, self.duration_s + WATCHDOG_GRACE_S)

    def inject(self, fault: Fault, max_s: float | None = None) -> None:
        """Journal the fault, start its watchdog (lab faults), then inject it.

        ``max_s`` bounds how long it may last (default ``fault_budget_s``).
        """
        self._require_preflight()
        self.fault = fault
        self._journaled_inject(fault, max_s, own=True)
        self.mark("fault injected", fault.injected_at)

    def inject_also(self, fault: Fault, max_s: float | None = None) -> None:
        """A further fault before the drill's own (a mon host down, then the primary):
        journaled, watched and reverted like it, but not the fault the drill measures."""
        self._require_preflight()
        self._journaled_inject(fault, max_s, own=False)
        self.mark(f"{fault.kind} {fault.target}", fault.injected_at)

    def _journaled_inject(self, fault: Fault, max_s: float | None, own: bool) -> Entry:
        """Journal, watch (lab faults), inject; ``own``: it is the drill's fault (``entry``)."""
        fault.prepare()
        j = self.journal
        entry = j.intent(fault, max_s if max_s is not None else self.fault_budget_s(fault))
        if own:
            self.entry = entry
        if entry.lab:
            pid = watchdog.start(j, entry)
            log.info("watchdog %d guards %s until %s", pid, fault.describe(), entry.deadline)
        try:
            fault.inject()
        except BaseException as exc:
            j.inject_failed(entry, f"{type(exc).__name__}: {exc}")
            raise
        j.injected(entry, fault.injected_at)
        return entry

    def revert(self) -> None:
        """Revert the fault; journaled. A fault the runner or watchdog already reverted is
        left alone (its time of revert is the journal's)."""
        if self.fault is None:
            return
        if self.entry is None:
            self.fault.revert()
            return
        j = self.journal
        with j.locked():
            current = j.entry(self.entry.id)
            if current is not None and not current.pending:
                log.warning(
                    "%s was already reverted by %s", self.fault.describe(), current.reverted_by
                )
                if self.fault.reverted_at is None and current.reverted_at:
                    self.fault.reverted_at = datetime.fromisoformat(
                        current.reverted_at.replace("Z", "+00:00")
                    )
                return
            try:
                self.fault.revert()
            except BaseException as exc:
                j.revert_failed(self.entry, "procedure", f"{type(exc).__name__}: {exc}")
                raise
            j.reverted(
                self.entry, "procedure", "reverted", self.fault.describe(), self.fault.reverted_at
            )

    def revert_all(self) -> None:
        """Revert the drill's own fault, then every other journaled fault not yet
        reverted (``inject_also``'s), newest first."""
        self.revert()
        self.journal.rollback_pending(by="procedure")

    # ---------------------------------------------------------------- result
    def stop_load(self, settle_s: float = 5.0) -> pd.DataFrame:
        """Keep the load a little past recovery, then stop it and return the records."""
        if self.traffic is None:
            return pd.DataFrame()
        traffic = self.traffic
        until(lambda: not traffic.running, settle_s, interval_s=0.2)
        self.traffic.stop()
        return self.traffic.records()

    def evaluate(self, primary: str | None) -> DrillResult | None:
        """DrillResult from the load's records; lost writes checked on PRIMARY."""
        if self.traffic is None:
            return None
        recs = self.traffic.records()
        acked = self.traffic.acked_ids()
        present = failover.present_ids(self.inv, primary, acked) if primary else None
        fault_at = self.fault.injected_at if self.fault else None
        self.result = DrillResult.from_records(recs, fault_at=fault_at, present_ids=present)
        self.result.apply(self.run)
        if self.result.outages:
            worst = max(self.result.outages, key=lambda o: o.duration_s)
            if worst.recovered:
                self.markers.setdefault("recovered", worst.end)
        return self.result

    def save(self, result_dir: str) -> Path | None:
        """Write result.json (and the traffic records) into result_dir."""
        self.run.fault = self.fault.to_dict() if self.fault else None
        if self.traffic is None and self.run.objectives:
            # No client load ran (incident mode): client-side objectives do not apply.
            self.run.skip("objectives", "no client load in incident mode: nothing measured")
            self.run.objectives = {}
        det = self.markers.get("detected")
        rec = self.markers.get("recovered")
        self.run.detected_at = iso(det) if det else None
        self.run.recovered_at = iso(rec) if rec else None
        self.run.finish()
        if result_dir and self.traffic is not None:
            Path(result_dir).mkdir(parents=True, exist_ok=True)
            self.traffic.save(Path(result_dir) / "traffic.csv")
        return self.run.save(result_dir)

    def verdict(self) -> str:
        failed = [f"{s.name}: {s.detail}" for s in self.run.steps if s.status == "failed"]
        missed = [
            f"{o['metric']}={o['value']} > {o['limit']}"
            for o in self.run.objective_report()
            if not o["met"]
        ]
        if not failed and not missed:
            return f"PASS: {self.runbook} ({self.mode})"
        return "FAIL: " + "; ".join(failed + missed)

    def wait_steady(self, timeout_s: float = 120.0) -> SteadyState:
        """Wait until the stack is back in steady state; record the step.

        In incident mode an alert that was already firing at the start on a host
        outside the runbook's tiers (a mon host down during a db failover) is named
        in the detail, not held against the run: this run neither caused nor fixes it.
        """
        started = now()
        s = wait_steady_state(self.inv, timeout_s, pre_existing=self.outside)
        # Recorded, not raised: the measurements are saved first; check() fails the run.
        step = Step("steady state after", iso(started), iso(now()), "ok" if s.ok else "failed")
        step.detail = str(s)
        if self.outside:
            pairs = ", ".join(f"{a} {i}" for a, i in sorted(self.outside))
            step.detail += f" (firing before this run, outside its tiers: {pairs})"
        self.run.steps.append(step)
        return s

    def check(self) -> None:
        """Raise when the verdict failed, so papermill and nbval see a failing runbook."""
        if self.run.verdict != "pass":
            raise DrillAborted(self.verdict())
