"""What every failover runbook shares: parameters, load, fault, markers, steady state, verdict.

A runbook makes one ``Procedure`` and calls it step by step::

    p = Procedure.start("db-failover", inv, mode, params, objectives, confirm=confirm)
    steady_state(inv)                   # pre-flight: the whole stack, as a table
    p.start_load(load_rps, duration_s)  # drill only
    p.inject(fault)                     # drill only
    p.mark("detected") ...              # markers for the timeline
    p.stop_load(); p.evaluate(primary)  # what the clients saw, lost writes
    p.wait_steady(); p.save(dir)        # steady state again, result.json
    p.check()                           # raise when the verdict failed

Incident mode never starts load or injects anything, and a destructive step
runs only when ``confirm`` is true (``Procedure.allowed``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from faultbook.drills.faults import Fault
from faultbook.drills.impact import DrillResult
from faultbook.drills.traffic import LoadSpec, Traffic
from faultbook.errors import DrillAborted, FaultbookError, ParameterError
from faultbook.inventory import Inventory
from faultbook.results import Run, Step, iso
from faultbook.stack import failover, haproxy, monitoring, vip

log = logging.getLogger(__name__)

MODES = ("incident", "drill")


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


def steady_state(inv: Inventory, ignore_alerts: tuple[str, ...] = ()) -> SteadyState:
    """The stack is healthy: one primary with every standby streaming, no alert firing."""
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
        names = sorted(set(firing["alertname"]) - set(ignore_alerts)) if len(firing) else []
        if names:
            problems.append("alerts firing: " + ", ".join(names))
    except FaultbookError as exc:
        problems.append(f"Prometheus: {exc}")
    return SteadyState(not problems, problems, primary, state)


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

    @classmethod
    def start(
        cls,
        runbook: str,
        inv: Inventory,
        mode: str,
        params: Mapping[str, Any],
        objectives: Mapping[str, float] | None = None,
        confirm: bool = False,
    ) -> Procedure:
        run = Run.start(runbook, "incident" if mode == "incident" else "drill", params)
        run.objectives = dict(objectives or {})
        return cls(runbook, inv, mode, run, confirm=confirm)

    @property
    def drill(self) -> bool:
        """Unattended with load: drill mode (and planned operations such as switchover)."""
        return self.mode != "incident"

    def allowed(self, what: str) -> bool:
        """A destructive step may run: drill mode, or incident mode with confirm=True."""
        if self.drill or self.confirm:
            return True
        self.run.skip(what, "needs confirm=True in incident mode")
        print(f"SKIPPED: {what} — re-run with confirm=True to do it")
        return False

    def mark(self, name: str, at: datetime | None = None) -> datetime:
        ts = at or now()
        self.markers[name] = ts
        return ts

    # ------------------------------------------------------------ load, fault
    def start_load(self, rps: float, duration_s: float, warmup_s: float = 3.0) -> Traffic:
        # Room for three seconds of requests in flight: a latency spike must show as
        # latency, not as the load generator's own "client saturated" refusals.
        spec = LoadSpec(rps=rps, duration_s=duration_s, max_in_flight=max(64, int(rps * 3)))
        self.traffic = Traffic.for_inventory(self.inv, spec).start()
        time.sleep(warmup_s)
        recs = self.traffic.records()
        if len(recs) and not recs["ok"].any():
            self.traffic.stop()
            raise DrillAborted("no request succeeded during the warm-up: the stack is not serving")
        return self.traffic

    def inject(self, fault: Fault) -> None:
        self.fault = fault
        fault.inject()
        self.mark("fault injected", fault.injected_at)

    def revert(self) -> None:
        if self.fault is not None:
            self.fault.revert()

    # ---------------------------------------------------------------- result
    def stop_load(self, settle_s: float = 5.0) -> pd.DataFrame:
        """Keep the load a little past recovery, then stop it and return the records."""
        if self.traffic is None:
            return pd.DataFrame()
        deadline = time.monotonic() + settle_s
        while self.traffic.running and time.monotonic() < deadline:
            time.sleep(0.2)
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
        """Wait until the stack is back in steady state; record the step."""
        started = now()
        deadline = time.monotonic() + timeout_s
        while True:
            s = steady_state(self.inv)
            if s.ok or time.monotonic() > deadline:
                break
            time.sleep(2)
        # Recorded, not raised: the measurements are saved first; check() fails the run.
        step = Step("steady state after", iso(started), iso(now()), "ok" if s.ok else "failed")
        step.detail = str(s)
        self.run.steps.append(step)
        return s

    def check(self) -> None:
        """Raise when the verdict failed, so papermill and nbval see a failing runbook."""
        if self.run.verdict != "pass":
            raise DrillAborted(self.verdict())
