"""The autopilot drill: a real fault under client load, and nobody touching anything.

The drill injects the fault and measures what clients saw; everything between
is the alert path's own work: Prometheus fires, Alertmanager notifies the
receiver, the receiver's route starts the runbook (``faultbook run … -p
confirm True``), and the runbook fences, promotes or recovers. The drill then
reads the decision log and the run's result.json to split the time into
segments:

    fault → alert firing     the alert's ``startsAt`` (Prometheus: scrape, evaluation, ``for:``)
    → notification received  the receiver's ``notification`` entry (Alertmanager's group_wait)
    → runbook started        the run's result.json ``started_at`` (process, kernel, imports)
    → writes back            the first acknowledged write after the outage (the procedure)

The drill does not hold the inventory's run lock while it waits: the run the
receiver starts must take it. It refuses to start when anybody else holds it.
Its own faults are journaled like any drill's and reverted however it ends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from faultbook import decisions, lock
from faultbook.drills import faults, procedure, steps
from faultbook.drills.procedure import Procedure, now
from faultbook.errors import ConditionTimeout, DrillAborted, ParameterError
from faultbook.inventory import Inventory
from faultbook.poll import poll
from faultbook.stack import monitoring, psql, vip

log = logging.getLogger(__name__)

RUNBOOK = "autopilot"
# What each tier's fault looks like, which alert the route acts on, which runbook it starts.
TIERS: dict[str, tuple[str, str]] = {
    "db": ("NoWritablePrimary", "db-failover"),
    "web": ("HAProxyServerDown", "web-node-failure"),
    "lb": ("HostDown", "lb-failover"),
}
FAULTS: dict[str, tuple[str, ...]] = {
    "db": ("host-crash",),
    "web": ("service-kill", "host-crash"),
    "lb": ("host-crash",),
}
# How long the drill waits for runs that hold the inventory, before and after.
IDLE_TIMEOUT_S = 180.0
# With no run started this long after the fault, and a steady stack, it healed itself.
QUIET_S = 30.0


@dataclass
class AutopilotResult:
    """What one autopilot drill saw: the client's view, the receiver's runs, the segments."""

    tier: str
    fault: str
    target: str
    runs: list[dict[str, Any]]
    finished: dict[str, Any] | None
    segments: dict[str, float | None]
    procedure: Procedure
    pre_faults: list[str] = field(default_factory=list)

    @property
    def result(self) -> Any:
        return self.procedure.result

    def summary(self) -> str:
        r = self.result
        seg = ", ".join(f"{k} {v:.2f} s" for k, v in self.segments.items() if v is not None)
        runs = ", ".join(f"{e.get('runbook')} ({e.get('alertname')})" for e in self.runs)
        runs = f"runs started by the receiver: {runs or 'none'}"
        fin = self.finished or {}
        outcome = (
            "healed by itself, no alert started a run"
            if fin.get("self_healed")
            else f"exit {fin.get('exit_status')}, verdict {fin.get('verdict')}"
        )
        client = (
            f"write outage {r.rto_s:.2f} s, {r.lost_writes} lost of {r.acked_writes} acknowledged, "
            f"{r.failed_requests} failed of {r.total_requests}"
            if r is not None
            else "no client load measured"
        )
        return f"{self.fault} on {self.target}: {runs} ({outcome}); {client}; {seg}"


def target_for(inv: Inventory, tier: str) -> str:
    """Who the fault hits: the primary, the VIP holder, or the first web host."""
    if tier == "db":
        return psql.primary(inv)
    if tier == "lb":
        holder = vip.vip_holder(inv)
        if holder is None:
            raise DrillAborted("no load balancer holds the VIP: the stack is not serving")
        return holder
    return inv.group("web")[0].name


def _check(tier: str, fault: str) -> None:
    if tier not in TIERS:
        raise ParameterError(f"tier {tier!r} is not one of {', '.join(TIERS)}")
    if fault not in FAULTS[tier]:
        raise ParameterError(
            f"fault {fault!r} is not an autopilot drill for tier {tier}; "
            f"expected one of {', '.join(FAULTS[tier])}"
        )


def _ts(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _since(entries: Sequence[dict[str, Any]], t0: datetime) -> list[dict[str, Any]]:
    return [e for e in entries if (_ts(e.get("at")) or t0) >= t0]


def run(
    inv: Inventory,
    tier: str,
    fault: str,
    *,
    target: str = "",
    pre_faults: Sequence[tuple[str, str]] = (),
    load_rps: float = 20.0,
    duration_s: float = 60.0,
    timeout_s: float = 150.0,
    result_dir: str = "",
) -> AutopilotResult:
    """Inject ``fault`` on ``tier`` under load; wait for the receiver's run; measure.

    ``pre_faults`` (kind, host) are injected first, in order, each journaled
    (e.g. ``[("host-crash", "mon1")]``: one mon host down before the primary).
    The receiver must be running with the tier's route on autopilot.
    """
    _check(tier, fault)
    alert, runbook = TIERS[tier]
    _wait_idle(inv, IDLE_TIMEOUT_S)
    params = {"tier": tier, "fault": fault, "load_rps": load_rps, "duration_s": duration_s}
    p = Procedure.start(RUNBOOK, inv, "drill", params, result_dir=result_dir)
    p.preflight(alert=alert, hosts=[h.name for h in inv.hosts.values()])
    victim = target or target_for(inv, tier)
    done: list[str] = []
    for kind, host in pre_faults:
        extra = faults.make(kind, inv, host)
        p.inject_also(extra)
        done.append(extra.describe())
        log.info("pre-fault: %s", extra.describe())
    if pre_faults:
        # The surviving Prometheus must notice its peer is gone before the real fault.
        monitoring.wait_for_alert(inv, "MonitoringHostDown", timeout_s=30)
    p.start_load(load_rps, duration_s)
    unit = steps.DRILLS[runbook].unit  # the runbook's own drills act on the same unit
    options = {"unit": unit} if fault.startswith("service") and unit else {}
    t0 = now()
    with p.run.step("inject fault") as st:
        p.inject(faults.make(fault, inv, victim, **options))
        st.detail = f"{fault} on {victim}"
    with p.run.step("autopilot run") as st:
        finished = poll(
            lambda _t: _finished(t0, runbook) or _healed(inv, t0, runbook),
            timeout_s,
            what=f"the receiver's {runbook} run for {alert} to finish",
            interval_s=0.5,
        )
        st.detail = (
            "the fault healed by itself before any alert started a run (nothing ran)"
            if finished.get("self_healed")
            else f"{runbook}: exit {finished.get('exit_status')}, verdict {finished.get('verdict')}"
        )
    with p.run.step("follow-up runs") as st:
        # Other alerts of the same fault may have started runs of their own (a web
        # node still marked down for a moment after the failover): they end first.
        _wait_idle(inv, IDLE_TIMEOUT_S)
        st.detail = "no run holds the inventory"
    with p.run.step("client impact") as st:
        p.stop_load(settle_s=3.0)
        primary = psql.primary(inv)
        result = p.evaluate(primary)
        st.detail = "" if result is None else f"{result.lost_writes} lost of {result.acked_writes}"
    p.revert_all()  # the runbook may have reverted some already
    p.wait_steady(timeout_s=180)
    runs = [
        e
        for e in _since(list(decisions.entries(event="decision")), t0)
        if e.get("decision") in ("ran", "diagnosed")
    ]
    segments = _segments(p, t0, finished, runs)
    p.run.metrics.update({f"{k}_s": v for k, v in segments.items()})
    p.run.metrics["autopilot_runs"] = len(runs)
    if result_dir:
        p.save(result_dir)
    return AutopilotResult(tier, fault, victim, runs, finished, segments, p, done)


def _wait_idle(inv: Inventory, timeout_s: float) -> None:
    """Wait until no run holds the inventory's lock; DrillAborted naming the holder if
    one still does after ``timeout_s``."""
    key = lock.key(str(inv.path))
    last: list[dict[str, Any]] = []

    def idle(_t: float) -> bool | None:
        holder = lock.holder(key)
        last[:] = [holder] if holder else []
        return True if holder is None else None

    try:
        poll(idle, timeout_s, what="no run holding the inventory", interval_s=0.5)
    except ConditionTimeout:
        h = last[0] if last else {}
        raise DrillAborted(
            f"inventory {inv.name} is still busy ({h.get('what')}, {h.get('trigger')}) "
            f"after {timeout_s:g} s: an autopilot drill needs the stack to itself"
        ) from None


def _healed(inv: Inventory, t0: datetime, runbook: str) -> dict[str, Any] | None:
    """The fault healed by itself (systemd restarted a killed service before the alert's
    ``for:``): ``QUIET_S`` after the fault, no run of RUNBOOK was started or is settling,
    and the stack is steady. Then there was nothing for the receiver to do."""
    if (now() - t0).total_seconds() < QUIET_S:
        return None
    acted = [
        e
        for e in _since(list(decisions.entries(event="decision")), t0)
        if e.get("runbook") == runbook and e.get("decision") in ("ran", "settling")
    ]
    if acted:
        return None
    state = procedure.steady_state(inv)
    return {"self_healed": True, "exit_status": None, "verdict": None} if state.ok else None


def _finished(t0: datetime, runbook: str) -> dict[str, Any] | None:
    for e in _since(list(decisions.entries(event="run-finished")), t0):
        if e.get("runbook") == runbook:
            return e
    return None


def _segments(
    p: Procedure, t0: datetime, finished: dict[str, Any], runs: list[dict[str, Any]]
) -> dict[str, float | None]:
    fault_at = p.fault.injected_at if p.fault else t0
    first = next((e for e in runs if e.get("run_dir") == finished.get("run_dir")), {})
    firing = _alert_starts_at(first.get("payload_file"), first.get("fingerprint"))
    notified = _notified_at(first.get("payload_file"), t0)
    started = _run_started(finished.get("run_dir"))
    back = None
    r = p.result
    # Writes come back only after an outage: with none (HAProxy routed around a dead
    # web node, the VIP moved within a request's retries) there is no such moment.
    if r is not None and r.outages and r.time_to_first_write_s is not None:
        back = r.time_to_first_write_s

    def delta(a: datetime | None, b: datetime | None) -> float | None:
        return None if a is None or b is None else round((b - a).total_seconds(), 3)

    writes_back = None if back is None or fault_at is None else fault_at.timestamp() + back
    return {
        "fault_to_firing": delta(fault_at, firing),
        "firing_to_notified": delta(firing, notified),
        "notified_to_started": delta(notified, started),
        "started_to_writes_back": None
        if writes_back is None or started is None
        else round(writes_back - started.timestamp(), 3),
        "fault_to_writes_back": back,
        "write_outage": r.rto_s if r is not None else None,
        # When the receiver's run ended: the stack recovered without anyone.
        "fault_to_run_finished": delta(fault_at, _ts(finished.get("at"))),
    }


def _alert_starts_at(payload_file: str | None, fingerprint: str | None) -> datetime | None:
    if not payload_file or not Path(payload_file).exists():
        return None
    doc = json.loads(Path(payload_file).read_text())
    for a in doc.get("alerts") or []:
        if a.get("fingerprint") == fingerprint:
            return _ts(a.get("startsAt"))
    return None


def _notified_at(payload_file: str | None, t0: datetime) -> datetime | None:
    for e in _since(list(decisions.entries(event="notification")), t0):
        if payload_file and e.get("payload_file") == payload_file:
            return _ts(e.get("at"))
    return None


def _run_started(run_dir: str | None) -> datetime | None:
    if not run_dir:
        return None
    f = Path(run_dir) / "result.json"
    if not f.exists():
        return None
    return _ts(json.loads(f.read_text()).get("started_at"))
