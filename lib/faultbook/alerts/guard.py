"""The guardrails between an alert and a run, each a small unit the dispatcher asks in turn.

- ``firing``: only firing alerts act; a resolved one is recorded as "resolved".
- ``Guard.duplicate``: an alert whose fingerprint has a run in flight, or was acted on
  within its route's window, is a "duplicate" (Alertmanager re-sends a group's alerts
  every group_interval, and two Prometheus servers fire the same alert). So is an alert
  that would start the same runbook with the same parameters as a run in flight or
  within the window (HostDown web2 and HAProxyServerDown web2 are one failure).
- ``Guard.throttled``: at most ``max_runs`` runs per alert name per route per window
  (a flapping alert, whose fingerprint changes with its labels, triggers one run).
- ``locked``: the inventory's run lock (``faultbook.lock``) is held and the route says
  ``lock: skip`` (``wait`` lets the run wait for it, bounded by ``lock_wait``), or a
  drill holds it (whatever the route says: the drill recovers from its own faults).

"Acted" means a decision ran, diagnosed or prepared. The guard's memory is seeded from
the decision log, so a restarted receiver and ``faultbook alerts replay`` see what was
done before.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from faultbook import lock
from faultbook.alerts.payload import Alert
from faultbook.alerts.routes import Route

ACTED = ("ran", "diagnosed", "prepared")
# How far back the decision log is read at start (longer than any sensible window).
SEED_HORIZON_S = 24 * 3600.0


@dataclass(frozen=True)
class Verdict:
    """A guard's refusal: the decision (duplicate, throttled, locked, resolved) and why."""

    decision: str
    reason: str


@dataclass(frozen=True)
class Acted:
    at: float  # epoch seconds
    fingerprint: str
    route: str
    alertname: str
    action: str
    where: str = ""  # run or incident directory


def action_key(runbook: str, parameters: Mapping[str, Any]) -> str:
    """What a run does, for "the same run": its runbook and its (redacted) parameters."""
    return f"{runbook} " + json.dumps(dict(parameters), sort_keys=True, default=str)


def firing(alert: Alert) -> Verdict | None:
    if alert.firing:
        return None
    return Verdict("resolved", f"{alert.name} resolved; only firing alerts act")


@dataclass
class Guard:
    """Dedupe and throttle state: what was acted on, and the runs still in flight."""

    clock: Callable[[], float] = time.time
    acted: list[Acted] = field(default_factory=list)
    in_flight: dict[str, str] = field(default_factory=dict)  # fingerprint -> run dir
    in_flight_actions: dict[str, str] = field(default_factory=dict)  # action -> run dir

    def duplicate(self, alert: Alert, route: Route, action: str) -> Verdict | None:
        fp = alert.fingerprint
        if fp in self.in_flight:
            return Verdict(
                "duplicate", f"fingerprint {fp} has a run in flight ({self.in_flight[fp]})"
            )
        if action in self.in_flight_actions:
            return Verdict(
                "duplicate",
                f"the same run ({_short(action)}) is in flight ({self.in_flight_actions[action]})",
            )
        since = self.clock() - route.window_s
        for a in reversed(self.acted):
            if a.at < since:
                continue
            if a.fingerprint == fp:
                return Verdict(
                    "duplicate",
                    f"fingerprint {fp} was acted on {self._ago(a)} by route {a.route} "
                    f"({a.where or 'no directory'}), within the route's window "
                    f"of {route.window_s:g} s",
                )
            if a.action == action:
                return Verdict(
                    "duplicate",
                    f"the same run ({_short(action)}) was started {self._ago(a)} for "
                    f"{a.alertname} {a.fingerprint} ({a.where or 'no directory'}), within "
                    f"the route's window of {route.window_s:g} s",
                )
        return None

    def throttled(self, alert: Alert, route: Route) -> Verdict | None:
        since = self.clock() - route.window_s
        recent = [
            a
            for a in self.acted
            if a.at >= since and a.route == route.name and a.alertname == alert.name
        ]
        if len(recent) < route.max_runs:
            return None
        return Verdict(
            "throttled",
            f"route {route.name} already acted {len(recent)} time(s) on {alert.name} within "
            f"{route.window_s:g} s (at most {route.max_runs}); last {self._ago(recent[-1])}",
        )

    def note(self, alert: Alert, route: Route, action: str, where: str = "") -> None:
        """Record an action now (before any await, so a concurrent webhook sees it)."""
        self.acted.append(
            Acted(self.clock(), alert.fingerprint, route.name, alert.name, action, where)
        )
        self._forget()

    def unnote(self, alert: Alert, route: Route, action: str) -> None:
        """Take back the last ``note`` of this alert and action (it cleared before acting),
        so a real failure of the same alert soon after is not a duplicate."""
        for i in range(len(self.acted) - 1, -1, -1):
            a = self.acted[i]
            if (a.fingerprint, a.route, a.action) == (alert.fingerprint, route.name, action):
                del self.acted[i]
                return

    def start(self, alert: Alert, action: str, run_dir: str) -> None:
        self.in_flight[alert.fingerprint] = run_dir
        self.in_flight_actions[action] = run_dir

    def finish(self, alert: Alert, action: str) -> None:
        self.in_flight.pop(alert.fingerprint, None)
        self.in_flight_actions.pop(action, None)

    def seed(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Remember the actions in decision-log entries (event "decision") of the last day."""
        horizon = self.clock() - SEED_HORIZON_S
        n = 0
        for e in entries:
            if e.get("event") != "decision" or e.get("decision") not in ACTED:
                continue
            at = _epoch(e.get("at"))
            if at is None or at < horizon or not e.get("fingerprint") or not e.get("route"):
                continue
            action = action_key(str(e.get("runbook")), e.get("parameters") or {})
            where = str(e.get("run_dir") or e.get("incident_dir") or "")
            self.acted.append(
                Acted(
                    at,
                    str(e["fingerprint"]),
                    str(e["route"]),
                    str(e.get("alertname")),
                    action,
                    where,
                )
            )
            n += 1
        self.acted.sort(key=lambda a: a.at)
        return n

    def _forget(self) -> None:
        horizon = self.clock() - SEED_HORIZON_S
        if self.acted and self.acted[0].at < horizon:
            self.acted = [a for a in self.acted if a.at >= horizon]

    def _ago(self, a: Acted) -> str:
        return f"{max(0.0, self.clock() - a.at):.0f} s ago"


def locked(inv: lock._Named, route: Route) -> Verdict | None:
    """The inventory's run lock is held and the route does not wait for it, or a drill
    holds it: a drill's faults are deliberate and it recovers from them itself, so no
    recovery is queued behind it (it would act on a stack the drill has already fixed)."""
    holder = lock.holder(inv)
    if holder is None:
        return None
    if holder.get("drill"):
        return Verdict(
            "locked",
            f"inventory {inv.name} is in a drill: {lock._describe(holder)} injects its "
            "faults on purpose and recovers from them itself; nothing started",
        )
    if route.lock == "wait" and route.lock_wait_s > 0:
        return None  # the run itself waits, bounded (faultbook run --lock-wait)
    return Verdict(
        "locked",
        f"inventory {inv.name} is busy: {lock._describe(holder)} holds its run lock "
        f"(route {route.name}: lock {route.lock})",
    )


def _epoch(at: Any) -> float | None:
    if not isinstance(at, str):
        return None
    try:
        return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _short(action: str, limit: int = 120) -> str:
    return action if len(action) <= limit else action[: limit - 1] + "…"
