"""From a notification to decisions and runs: the pipeline the receiver and ``replay`` share.

For each alert of a notification, in order: firing only (else "resolved"), a route
(else "no route", or "refused" when the alert names a host the inventory lacks),
dedupe ("duplicate"), throttle ("throttled"), then the route's policy:

- ``prepare``: a prefilled copy of the runbook in a new incident directory
  ``$FAULTBOOK_HOME/incidents/<UTC stamp>-<runbook>/`` (papermill's
  ``prepare_only``), decision "prepared";
- ``diagnose`` / ``autopilot``: the inventory's run lock is checked ("locked" when
  busy and the route skips), then ``faultbook run`` starts as a child process in its
  own session (decision "diagnosed" / "ran"); when it ends, event "run-finished" with
  its exit status and verdict. A run that failed pages: its record says ``page: true``
  and a prepared incident notebook follows (decision "prepared").

Every decision goes to the decision log (``faultbook.decisions``) with the alert, the
route, the policy, the runbook, its parameters (secrets redacted) and the payload file.
Nothing here blocks the event loop: runs are child processes, a notebook is prepared
in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faultbook import decisions, lock
from faultbook.alerts import guard as guards
from faultbook.alerts import handover
from faultbook.alerts.payload import Alert, Notification
from faultbook.alerts.routes import Route, Routes
from faultbook.errors import FaultbookError
from faultbook.inventory import Inventory
from faultbook.paths import faultbook_home, state_dir
from faultbook.results import redact

log = logging.getLogger(__name__)

TRIGGER_ENV = "FAULTBOOK_TRIGGER"
EXIT_BUSY = 75  # faultbook run: the inventory's run lock stayed held (errors.InventoryBusy)

# Builds a run's command line: (runbook, parameters, run dir, lock wait in seconds).
Command = Callable[[str, Mapping[str, Any], Path, float], list[str]]


@dataclass(frozen=True)
class Decision:
    """One decision on one alert (or on a notification refused as a whole)."""

    decision: str
    reason: str
    alertname: str | None = None
    fingerprint: str | None = None
    route: str | None = None
    policy: str | None = None
    runbook: str | None = None
    parameters: dict[str, Any] | None = None
    run_dir: str | None = None
    incident_dir: str | None = None
    payload_file: str | None = None

    def fields(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def faultbook_run(runbook: str, params: Mapping[str, Any], out: Path, wait_s: float) -> list[str]:
    """``faultbook run RUNBOOK -p NAME VALUE … --out DIR --lock-wait S`` in this interpreter."""
    argv = [sys.executable, "-m", "faultbook.cli", "run", runbook]
    for k, v in params.items():
        argv += ["-p", k, cli_value(v)]
    return [*argv, "--out", str(out), "--lock-wait", f"{wait_s:g}"]


def cli_value(v: Any) -> str:
    """A parameter as ``-p`` takes it (``runner.coerce`` reads it back)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | dict):
        return json.dumps(v)
    return str(v)


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def new_dir(parent: Path, name: str) -> Path:
    """``parent/<UTC stamp>-<name>``, made new (``-2``, ``-3`` … when the second is taken)."""
    parent.mkdir(parents=True, exist_ok=True)
    base = f"{stamp()}-{name}"
    for n in range(1, 1000):
        d = parent / (base if n == 1 else f"{base}-{n}")
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent}/{base}: too many directories this second")


def alerts_dir(inv: Inventory) -> Path:
    return state_dir(inv, create=True) / "alerts"


def save_payload(inv: Inventory, body: bytes) -> Path:
    """Keep an accepted webhook body under state_dir(inv)/alerts/payloads/ for replay."""
    d = alerts_dir(inv) / "payloads"
    d.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(body).hexdigest()[:12]
    path = d / f"{stamp()}-{digest}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(body)
    tmp.rename(path)
    return path


def prepare_notebook(runbook: str, params: Mapping[str, Any], context: Mapping[str, Any]) -> Path:
    """A prefilled, unexecuted copy of RUNBOOK in a new incident directory; returns it."""
    import papermill

    from faultbook.report import runner

    d = new_dir(faultbook_home(create=True) / "incidents", runbook)
    papermill.execute_notebook(
        str(runner.runbook_path(runbook)),
        str(d / f"{runbook}.ipynb"),
        parameters={**params, "result_dir": str(d)},
        prepare_only=True,
        kernel_name="python3",
        progress_bar=False,
        log_output=False,
    )
    (d / "alert.json").write_text(json.dumps(dict(context), indent=2, default=str) + "\n")
    log.warning(
        "prepared %s for %s in %s; open it with: faultbook notebook --open %s",
        runbook,
        context.get("alertname"),
        d,
        d,
    )
    return d


def still_acting(inv: Inventory) -> Callable[[Alert], bool]:
    """Whether the alert still calls for action after a route's ``settle``: Alertmanager
    (any mon host) still holds it active, neither inhibited nor silenced. Prometheus
    knows nothing of inhibitions: a web server marked down a moment before its whole
    backend still fires there while Alertmanager suppresses it. When no Alertmanager
    answers, Prometheus decides whether it still fires."""

    def check(alert: Alert) -> bool:
        from faultbook.stack import monitoring

        try:
            return monitoring.alert_still_acts(inv, alert.labels)
        except FaultbookError as exc:
            log.warning("Alertmanager cannot say whether %s still acts: %s", alert.name, exc)
        for a in monitoring.firing_alerts(inv):
            labels = a.get("labels") or {}
            if all(labels.get(k) == v for k, v in alert.labels.items()):
                return True
        return False

    return check


class Dispatcher:
    """Decides on each alert of a notification and starts what its route says."""

    def __init__(
        self,
        inv: Inventory,
        routes: Routes,
        *,
        guard: guards.Guard | None = None,
        command: Command = faultbook_run,
        seed: bool = True,
        replay: bool = False,
        still_firing: Callable[[Alert], bool] | None = None,
    ) -> None:
        self.inv = inv
        self.routes = routes
        self.still_firing = still_firing or still_acting(inv)
        self.guard = guard or guards.Guard()
        self.command = command
        self.replay = replay
        self.lock_key = lock.key(str(inv.path))
        self.runs: set[asyncio.Task[None]] = set()
        # Read-only (diagnose) runs in flight, by run directory: a recovery preempts them.
        self.diagnosing: dict[str, asyncio.subprocess.Process] = {}
        self.preempted: set[str] = set()
        if seed:
            self.guard.seed(decisions.entries(event="decision"))

    # ------------------------------------------------------------------ records
    def _replay(self) -> dict[str, Any]:
        return {"replay": True} if self.replay else {}

    def record(self, d: Decision, **extra: Any) -> Decision:
        fields = d.fields()
        if self.replay:
            fields["replay"] = True
        decisions.record("decision", inventory=self.inv.name, **fields, **extra)
        level = logging.WARNING if d.decision in guards.ACTED else logging.INFO
        log.log(level, "%s: %s (%s)", d.alertname or "-", d.decision, d.reason)
        return d

    def notification(self, n: Notification, payload_file: Path | None, **extra: Any) -> None:
        decisions.record(
            "notification",
            inventory=self.inv.name,
            accepted=True,
            status=n.status,
            receiver=n.receiver,
            group_key=n.group_key,
            alerts=len(n.alerts),
            truncated_alerts=n.truncated_alerts,
            payload_file=str(payload_file) if payload_file else None,
            **self._replay(),
            **extra,
        )

    # ---------------------------------------------------------------- pipeline
    async def handle(
        self, n: Notification, payload_file: Path | None, *, force: bool = False
    ) -> list[Decision]:
        """Record the notification and decide on each of its alerts."""
        self.notification(n, payload_file)
        out = []
        for alert in n.alerts:
            out.append(await self.decide(alert, payload_file, force=force))
        return out

    async def decide(
        self, alert: Alert, payload_file: Path | None, *, force: bool = False
    ) -> Decision:
        base: dict[str, Any] = {
            "alertname": alert.name,
            "fingerprint": alert.fingerprint,
            "payload_file": str(payload_file) if payload_file else None,
        }
        v = guards.firing(alert)
        if v is not None:
            return self.record(Decision(v.decision, v.reason, **base))
        res = self.routes.resolve(alert)
        if res.route is None:
            return self.record(
                Decision("no route", f"no route of {self.routes.path} matches {alert.name}", **base)
            )
        r = res.route
        params = redact(res.parameters)
        base.update(route=r.name, policy=r.effective, runbook=r.runbook, parameters=params)
        if res.refused:
            return self.record(Decision("refused", res.refused, **base))
        action = guards.action_key(r.runbook, params)
        if not force:
            for check in (self.guard.duplicate(alert, r, action), self.guard.throttled(alert, r)):
                if check is not None:
                    return self.record(Decision(check.decision, check.reason, **base))
        if r.effective == "prepare":
            self.guard.note(alert, r, action)
            return await self._prepare(
                alert, r, res.parameters, base, r.fallback or f"route {r.name}: policy prepare"
            )
        v = guards.locked(self.lock_key, r)
        if v is not None:
            return self.record(Decision(v.decision, v.reason, **base))
        if r.settle_s > 0 and not force:
            return self._settle(alert, r, res.parameters, action, base)
        return self._start(alert, r, res.parameters, action, base)

    def _settle(
        self,
        alert: Alert,
        r: Route,
        params: Mapping[str, Any],
        action: str,
        base: Mapping[str, Any],
    ) -> Decision:
        """Act only if the alert still fires after the route's ``settle``: a symptom that
        clears by itself (a web node marked down for a moment after a database failover,
        once Alertmanager's inhibition has lifted) starts nothing."""
        self.guard.note(alert, r, action)
        self.guard.start(alert, action, "(settling)")
        d = self.record(
            Decision(
                "settling",
                f"route {r.name}: acts in {r.settle_s:g} s if {alert.name} still fires",
                **base,
            )
        )
        self._spawn(self._after_settle(alert, r, params, action, base))
        return d

    async def _after_settle(
        self,
        alert: Alert,
        r: Route,
        params: Mapping[str, Any],
        action: str,
        base: Mapping[str, Any],
    ) -> None:
        await asyncio.sleep(r.settle_s)
        try:
            firing = await asyncio.to_thread(self.still_firing, alert)
        except Exception as exc:  # noqa: BLE001 - cannot tell: act, as the alert said
            log.warning("cannot tell whether %s still fires (%s): acting on it", alert.name, exc)
            firing = True
        self.guard.finish(alert, action)
        self.guard.unnote(alert, r, action)
        if not firing:
            self.record(
                Decision(
                    "cleared",
                    f"{alert.name} no longer fires, or Alertmanager now inhibits it, "
                    f"{r.settle_s:g} s after its notification: "
                    "nothing run",
                    **base,
                )
            )
            return
        v = guards.locked(self.lock_key, r)
        if v is not None:
            self.record(Decision(v.decision, v.reason, **base))
            return
        self._start(alert, r, params, action, base)

    async def _prepare(
        self,
        alert: Alert,
        r: Route,
        params: Mapping[str, Any],
        base: Mapping[str, Any],
        reason: str,
    ) -> Decision:
        safe = {**params, "confirm": False} if "confirm" in params else dict(params)
        context = {
            **base,
            "reason": reason,
            "labels": dict(alert.labels),
            "annotations": dict(alert.annotations),
            "starts_at": alert.starts_at,
        }
        try:
            d = await asyncio.to_thread(prepare_notebook, r.runbook, safe, context)
        except Exception as exc:  # noqa: BLE001 - any failure is a decision with its reason
            return self.record(
                Decision(
                    "refused",
                    f"could not prepare {r.runbook}: {type(exc).__name__}: {exc}",
                    **{**base, "policy": "prepare"},
                )
            )
        how = f"open it with: faultbook notebook --open {d}"
        return self.record(
            Decision(
                "prepared",
                f"{reason}; {how}",
                **{**base, "policy": "prepare", "parameters": redact(safe)},
                incident_dir=str(d),
            )
        )

    def _start(
        self,
        alert: Alert,
        r: Route,
        params: Mapping[str, Any],
        action: str,
        base: Mapping[str, Any],
        reason: str = "",
    ) -> Decision:
        run_dir = new_dir(alerts_dir(self.inv) / "runs", r.runbook)
        wait_s = r.lock_wait_s if r.lock == "wait" else 0.0
        argv = self.command(r.runbook, params, run_dir, wait_s)
        self.guard.note(alert, r, action, str(run_dir))
        self.guard.start(alert, action, str(run_dir))
        decision = "ran" if r.effective == "autopilot" else "diagnosed"
        if r.effective == "autopilot":
            self._preempt_diagnoses(base, run_dir)
        d = Decision(
            decision,
            reason
            or f"route {r.name}: policy {r.effective}"
            + (" (confirm=True)" if params.get("confirm") else " (read-only)"),
            **base,
            run_dir=str(run_dir),
        )
        self.record(d)
        self._spawn(self._run(alert, r, params, action, argv, run_dir, base))
        return d

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run CORO in the background; ``drain`` waits for it."""
        task = asyncio.get_running_loop().create_task(coro)
        self.runs.add(task)
        task.add_done_callback(self.runs.discard)

    def _preempt_diagnoses(self, base: Mapping[str, Any], run_dir: Path) -> None:
        """A recovery does not wait behind a read-only look: stop the receiver's own
        diagnose runs (SIGTERM to their session; `faultbook run` ends the notebook and
        frees the inventory's run lock, which the recovery's run is waiting for)."""
        for where, proc in list(self.diagnosing.items()):
            if proc.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            self.preempted.add(where)
            self.record(
                Decision(
                    "preempted",
                    f"read-only run {where} stopped: the autopilot run {run_dir} needs the "
                    "inventory",
                    **base,
                    run_dir=where,
                )
            )

    async def _run(
        self,
        alert: Alert,
        r: Route,
        params: Mapping[str, Any],
        action: str,
        argv: list[str],
        run_dir: Path,
        base: Mapping[str, Any],
    ) -> None:
        env = {**os.environ, TRIGGER_ENV: f"alert:{alert.fingerprint}"}
        output = run_dir / "run.log"
        status: int | None = None
        try:
            with open(output, "ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            if r.effective == "diagnose":
                self.diagnosing[str(run_dir)] = proc
            status = await proc.wait()
        except OSError as exc:
            log.error("cannot start %s: %s", argv[0], exc)
            output.write_text(f"cannot start {argv[0]}: {exc}\n")
            status = 127
        finally:
            self.diagnosing.pop(str(run_dir), None)
            self.guard.finish(alert, action)
        verdict = _verdict(run_dir)
        preempted = str(run_dir) in self.preempted
        self.preempted.discard(str(run_dir))
        failed = status != 0 and not preempted  # a stopped diagnosis pages nobody
        # A triage run names the broken link and its runbook (alerts.handover).
        diagnosis = (
            handover.read(run_dir)
            if r.runbook == handover.TRIAGE and not preempted and status != EXIT_BUSY
            else None
        )
        extra: dict[str, Any] = {"preempted": True} if preempted else {}
        decisions.record(
            "run-finished",
            inventory=self.inv.name,
            alertname=alert.name,
            fingerprint=alert.fingerprint,
            route=r.name,
            policy=r.effective,
            runbook=r.runbook,
            exit_status=status,
            verdict=verdict,
            run_dir=str(run_dir),
            page=failed,
            **extra,
            **self._replay(),
        )
        if status == EXIT_BUSY:
            self.record(
                Decision(
                    "locked",
                    f"the inventory stayed busy for the route's lock_wait "
                    f"({r.lock_wait_s:g} s): {_last_line(output)}",
                    **base,
                    run_dir=str(run_dir),
                )
            )
        elif diagnosis is not None and await self._hand_over(alert, r, diagnosis, run_dir, base):
            pass
        elif failed:
            log.error(
                "%s run for %s failed (exit %s, verdict %s): %s",
                r.runbook,
                alert.name,
                status,
                verdict,
                run_dir,
            )
            await self._prepare(
                alert,
                r,
                params,
                base,
                f"the {r.effective} run of {r.runbook} failed (exit {status}, verdict "
                f"{verdict or 'none'}; {run_dir}): prepared for a person",
            )

    async def _hand_over(
        self,
        alert: Alert,
        r: Route,
        diagnosis: Mapping[str, Any],
        run_dir: Path,
        base: Mapping[str, Any],
    ) -> bool:
        """Start or prepare the runbook a triage run named; False when it named none."""
        try:
            h = handover.plan(self.routes, self.inv, diagnosis, run_dir)
        except FaultbookError as exc:
            self.record(Decision("refused", f"triage ({run_dir}): {exc}", **base))
            return True
        if h is None:
            return False
        params = redact(h.parameters)
        follow = {**base, "runbook": h.runbook, "parameters": params}
        if h.route is None:
            await self._prepare(
                alert, replace(r, runbook=h.runbook), h.parameters, follow, h.reason
            )
            return True
        route = h.route
        follow.update(route=route.name, policy=route.effective)
        action = guards.action_key(h.runbook, params)
        why = handover.recent(self.guard, action, route.window_s)
        if why is not None:
            self.record(Decision("duplicate", f"{h.reason}; but {why}", **follow))
            return True
        v = guards.locked(self.lock_key, route)
        if v is not None:
            self.record(Decision(v.decision, f"{h.reason}; but {v.reason}", **follow))
            return True
        self._start(alert, route, h.parameters, action, follow, reason=h.reason)
        return True

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for every run this dispatcher started (``replay``, tests, shutdown),
        including runs a settling route starts while it waits."""

        async def every() -> None:
            while self.runs:
                await asyncio.gather(*list(self.runs))

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(every(), timeout_s)


def _verdict(run_dir: Path) -> str | None:
    try:
        v = json.loads((run_dir / "result.json").read_text()).get("verdict")
    except (OSError, ValueError, AttributeError):
        return None
    return v if isinstance(v, str) else None


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""
