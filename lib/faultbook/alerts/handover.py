"""Triage hands over: the runbook a triage run names, unattended only where allowed.

A symptom alert (the VIP probe failing, a backend without a server) starts the
``triage`` runbook read-only (policy ``diagnose``). When it ends, its ``triage.json``
(``triage.steps.HANDOVER_FILE``) names the broken link and the runbook that fixes it,
first of its proposals. ``plan`` decides what follows:

- the proposal allows an unattended hand-over (``hand_over``: a lost primary, a dead
  web node or lb), its mode is not one alerts never start (drill, switchover), and a
  route of that runbook is in ``autopilot_allow`` with policy autopilot: that route
  runs it with ``confirm=True`` (decision "ran", the reason naming triage's run);
- otherwise the runbook is prepared for a person with triage's parameters filled in
  (decision "prepared", the reason saying why it was not run);
- a proposal that is a person's action, not a runbook, or nothing broken: no plan
  (a failed triage run then pages and is prepared like any failed run).

The parameters come from triage's proposal, checked against the runbook's own
parameters cell and typed (``report.runner``); an unknown one is a ``RoutesError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faultbook.alerts.guard import Guard
from faultbook.alerts.routes import REFUSED_MODES, Route, Routes
from faultbook.errors import RoutesError
from faultbook.inventory import Inventory
from faultbook.report import runner

TRIAGE = "triage"


@dataclass(frozen=True)
class HandOver:
    runbook: str
    parameters: dict[str, Any]  # typed; confirm=True only when ``route`` runs it
    route: Route | None  # the allow-listed autopilot route that runs it; None: prepare it
    reason: str
    link: str


def read(run_dir: Path) -> dict[str, Any] | None:
    """The diagnosis a triage run left in RUN_DIR (None: none readable)."""
    from faultbook.triage.steps import read_handover  # pandas and the stack: only when needed

    return read_handover(run_dir)


def plan(routes: Routes, inv: Inventory, doc: Mapping[str, Any], run_dir: Path) -> HandOver | None:
    """What follows a triage run whose diagnosis is DOC (see the module's docstring)."""
    finding = doc.get("finding")
    if not isinstance(finding, dict):
        return None
    proposals = finding.get("proposals") or []
    first = proposals[0] if proposals and isinstance(proposals[0], dict) else {}
    runbook = str(first.get("runbook") or "")
    if not runbook:
        return None
    link = str(finding.get("link") or "?")
    values: dict[str, Any] = {
        "inventory": str(inv.path),
        "mode": "incident",
        **dict(first.get("parameters") or {}),
    }
    said = f"triage ({run_dir}) names {link}"
    allowed = [r for r in routes.routes if r.runbook == runbook and r.effective == "autopilot"]
    route: Route | None = None
    if not first.get("hand_over"):
        why = f"{runbook} is for a person: {first.get('why') or 'no reason given'}"
    elif values["mode"] in REFUSED_MODES:
        why = f"{runbook} in mode {values['mode']} is never started by an alert"
    elif not allowed:
        why = f"no route of {runbook} is in autopilot_allow of {routes.path.name}"
    else:
        route = allowed[0]
        why = f"handed over to {runbook} by route {route.name} (allow-listed)"
    params = typed(runbook, values, confirm=route is not None)
    if route is None:
        why += ": prepared instead"
    return HandOver(runbook, params, route, f"{said}; {why}", link)


def typed(runbook: str, values: Mapping[str, Any], *, confirm: bool) -> dict[str, Any]:
    """VALUES checked against RUNBOOK's parameters cell and converted to their types;
    ``confirm`` set when the runbook has it."""
    declared = runner.parameters(runbook)
    out: dict[str, Any] = {}
    for k, v in values.items():
        if k not in declared or k in runner.RUNNER_PARAMS:
            raise RoutesError(
                f"triage proposed parameter {k!r}, which runbook {runbook} does not declare"
            )
        out[k] = runner.coerce(declared[k], v)
    if "confirm" in declared:
        out["confirm"] = confirm
    return out


def recent(guard: Guard, action: str, window_s: float) -> str | None:
    """Why the same run (ACTION) must not start again: in flight, or started within
    WINDOW_S (by any alert; the triage run's own alert already counts as acted on)."""
    if action in guard.in_flight_actions:
        return f"the same run is in flight ({guard.in_flight_actions[action]})"
    since = guard.clock() - window_s
    for a in reversed(guard.acted):
        if a.at >= since and a.action == action:
            return (
                f"the same run was started for {a.alertname} {a.fingerprint} "
                f"({a.where or 'no directory'}) within the route's window of {window_s:g} s"
            )
    return None
