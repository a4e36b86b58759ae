"""fault-observe: inject a fault that does not make its target lost, hold it under
client load, revert it, and measure what the clients saw.

The failover runbooks drill the faults their detection sees: a primary silent on
its port, a web node HAProxy marks down, the VIP moving. Other faults leave the
target answering: delay and loss on its link, a full data filesystem, a skewed
clock, a frozen or stopped unit the stack routes around. Nothing is failed over;
the question is what clients saw meanwhile, whether every acknowledged write
survived, and whether writes come back once the fault is reverted. This module is
the runbook's (runbooks/fault-observe.ipynb) library:

- ``make_fault``: the fault from the runbook's parameters, checked before anything
  runs. Each fault takes the options its class declares (``delay_ms``,
  ``loss_pct``; ``path``, ``leave_mib``, ``max_gib``; ``offset_s``, ``unit``);
  a unit fault with no ``unit`` gets the target's main unit (``MAIN_UNITS``).
- ``hold``: the fault in effect for ``hold_s``, the load going on.
- ``writes_back``: after the revert, the first write acknowledged (the
  "recovered" marker), waited for up to ``timeout_s``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from faultbook.drills import faults
from faultbook.drills.procedure import Procedure, SteadyState, steady_state
from faultbook.drills.steps import DRILLS
from faultbook.errors import ConditionTimeout, ParameterError, PreflightFailed
from faultbook.inventory import Inventory

# The faults this runbook drills: those that leave the target answering.
FAULTS = DRILLS["fault-observe"].faults

# The unit a unit fault acts on when none is given: the host's first group's service.
MAIN_UNITS = {
    "db": "postgresql@15-main.service",
    "web": "ledger.service",
    "lb": "haproxy.service",
    "backup": "pgbackrest.service",
    "mon": "prometheus.service",
}
# The fault options a runbook parameter may carry (each fault takes those it declares).
OPTIONS = ("delay_ms", "loss_pct", "path", "leave_mib", "max_gib", "offset_s", "unit")


def main_unit(inv: Inventory, host: str) -> str:
    """The service a unit fault on HOST acts on by default (``MAIN_UNITS``)."""
    groups = inv.host(host).groups
    for g in groups:
        if g in MAIN_UNITS:
            return MAIN_UNITS[g]
    raise ParameterError(
        f"no default unit for {host} (groups {', '.join(groups) or 'none'}); give unit"
    )


def make_fault(inv: Inventory, kind: str, target: str, params: Mapping[str, Any]) -> faults.Fault:
    """The fault of KIND on TARGET with the options of PARAMS its class declares; a bad
    kind, target or option is a one-line error before anything runs."""
    faults.require_kind(kind, FAULTS)
    if not target:
        raise ParameterError(f"fault-observe needs a target host for {kind}; got none")
    inv.host(target)
    cls = faults.CATALOGUE[kind]
    declared = {f.name for f in dataclasses.fields(cls)}
    options = {k: params[k] for k in OPTIONS if k in declared and k in params}
    for k, v in list(options.items()):
        if isinstance(v, float) and math.isnan(v):
            raise ParameterError(f"{k}=nan is invalid for {kind}: expected a number")
        if v == "" and k in ("path", "unit"):
            del options[k]  # the fault's own default (a path by group; no unit: see below)
    if "unit" in declared and "unit" not in options and issubclass(cls, faults._UnitFault):
        options["unit"] = main_unit(inv, target)
    return faults.make(kind, inv, target, **options)


def check_hold(hold_s: object, duration_s: object) -> float:
    """HOLD_S within (0, 1800] and shorter than the load's DURATION_S (the load must
    still run when the fault is reverted, to see writes come back)."""
    if (
        isinstance(hold_s, bool)
        or not isinstance(hold_s, int | float)
        or not (math.isfinite(hold_s) and 0 < hold_s <= 1800)
    ):
        raise ParameterError(f"hold_s={hold_s!r} is invalid: expected seconds in (0, 1800]")
    if isinstance(duration_s, int | float) and hold_s >= duration_s:
        raise ParameterError(
            f"hold_s={hold_s!r} must be shorter than duration_s={duration_s!r}: the load must "
            "outlast the fault to show writes coming back"
        )
    return float(hold_s)


def hold(p: Procedure, hold_s: float) -> str:
    """Keep the fault in effect for HOLD_S (the load going on); what the clients saw
    meanwhile, in one line."""
    start = p.markers.get("fault injected")
    time.sleep(hold_s)
    if p.traffic is None:
        return f"held {hold_s:g} s"
    recs = p.traffic.records()
    if start is not None:
        recs = recs[recs["sent_at"] >= start]
    failed = int((~recs["ok"]).sum())
    p99 = recs["latency_ms"].quantile(0.99) if len(recs) else float("nan")
    return (
        f"held {hold_s:g} s: {len(recs)} requests, {failed} failed, "
        f"p99 {p99:.0f} ms while the fault was in effect"
    )


def writes_back(p: Procedure, timeout_s: float = 120.0) -> datetime:
    """The first write acknowledged after the fault's revert: marked "recovered" and
    returned. ConditionTimeout when none comes within TIMEOUT_S (the load stopped, or
    the stack did not recover)."""
    since = p.markers.get("fault reverted")
    traffic = p.traffic
    if since is None or traffic is None:
        raise ConditionTimeout("no reverted fault and client load to see writes come back")
    deadline = time.monotonic() + timeout_s
    while True:
        recs = traffic.records()
        ok = recs[(recs["kind"] == "POST") & recs["ok"] & (recs["sent_at"] >= since)]
        if len(ok):
            at: datetime = ok["answered_at"].min().to_pydatetime()
            p.mark("recovered", at)
            return at
        if time.monotonic() >= deadline or not traffic.running:
            raise ConditionTimeout(
                f"no write acknowledged within {timeout_s:g}s after the fault's revert"
                + ("" if traffic.running else " (the client load had stopped)")
            )
        time.sleep(0.2)


def preflight(p: Procedure) -> SteadyState:
    """Steady state before anything is done (the step "pre-flight"); a drill starts
    only from it (PreflightFailed), the incident mode shows it."""
    with p.run.step("pre-flight") as st:
        state = steady_state(p.inv)
        st.detail = str(state)
        if p.drill and not state.ok:
            raise PreflightFailed(f"{state}: a drill starts only from steady state")
    return state


def revert(p: Procedure) -> datetime:
    """Revert the drill's fault (journaled, ``Procedure.revert``) and mark when."""
    p.revert()
    at = p.fault.reverted_at if p.fault is not None else None
    return p.mark("fault reverted", at)
