"""Stress: how much client load the stack carries through the VIP within an SLO, then
a soak below that.

The load is ``faultbook.drills.traffic``: open loop (request ``i`` is due at
``start + i / rps`` whatever happened to the ones before), so a slow stack shows as
latency and errors, never as a lower offered rate. ``ramp`` offers ``start_rps``,
then ``step_rps`` more each ``step_s`` seconds, up to ``max_rps``, and stops at
the first step that breaks the SLO (p99 latency above ``p99_ms``, or more than
``max_error_rate`` of the sent requests failed). The capacity is the highest
offered rate that held it.

The client is on the controller and can saturate before the stack does: a due
request that finds every worker busy is not sent ("client saturated"). Such a
step does not measure the stack, so the ramp stops there and the capacity is
said to be bounded by the client, not by the SLO.

``soak`` then holds ``soak_fraction`` of the capacity for ``soak_s`` and checks
the same SLO, and that every write acknowledged meanwhile is on the primary.

The runbook (runbooks/stress.ipynb): ``begin`` checks its parameters and starts
the record; ``record`` puts the figures and the verdict into it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from faultbook.drills import procedure
from faultbook.drills.procedure import SteadyState
from faultbook.drills.traffic import SATURATED, LoadSpec, Traffic
from faultbook.errors import ParameterError
from faultbook.inventory import Inventory
from faultbook.results import Run

# incident: read-only (the plan and the stack's state, no load); drill: ramp and soak.
MODES = ("incident", "drill")
MAX_STEPS = 40
MAX_SECONDS = 3600.0


def _number(name: str, value: object, low: float, high: float, low_open: bool = True) -> float:
    """VALUE as a float within (LOW, HIGH] (or [LOW, HIGH]); one-line ParameterError."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > low if low_open else v >= low) and v <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ParameterError(
            f"{name}={value!r} is invalid: expected a number in {bracket}{low:g}, {high:g}]"
        )
    return float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SLO:
    """Latency and errors the clients accept: p99 at most ``p99_ms``, and at most
    ``max_error_rate`` of the requests sent failing."""

    p99_ms: float
    max_error_rate: float

    def __post_init__(self) -> None:
        _number("slo_p99_ms", self.p99_ms, 0, 60_000)
        _number("slo_error_rate", self.max_error_rate, 0, 1, low_open=False)

    def __str__(self) -> str:
        return f"p99 <= {self.p99_ms:g} ms and errors <= {self.max_error_rate:.2%}"


@dataclass(frozen=True)
class Plan:
    """The ramp (offered rates and how long each), and the soak after it."""

    start_rps: float = 25.0
    step_rps: float = 25.0
    max_rps: float = 400.0
    step_s: float = 10.0
    soak_fraction: float = 0.7
    soak_s: float = 60.0
    post_ratio: float = 0.5
    max_in_flight: int = 128

    def __post_init__(self) -> None:
        _number("start_rps", self.start_rps, 0, 1000)
        _number("step_rps", self.step_rps, 0, 1000)
        _number("max_rps", self.max_rps, 0, 1000)
        if self.max_rps < self.start_rps:
            raise ParameterError(
                f"max_rps={self.max_rps!r} is below start_rps={self.start_rps!r}: "
                "expected max_rps >= start_rps"
            )
        _number("step_s", self.step_s, 0, 600)
        _number("soak_fraction", self.soak_fraction, 0, 1)
        _number("soak_s", self.soak_s, 0, MAX_SECONDS)
        _number("post_ratio", self.post_ratio, 0, 1, low_open=False)
        if isinstance(self.max_in_flight, bool) or not isinstance(self.max_in_flight, int):
            raise ParameterError(
                f"max_in_flight={self.max_in_flight!r} is invalid: expected an integer in [1, 1024]"
            )
        _number("max_in_flight", self.max_in_flight, 1, 1024, low_open=False)
        if len(self.rates()) > MAX_STEPS:
            raise ParameterError(
                f"the ramp from {self.start_rps:g} to {self.max_rps:g} rps by {self.step_rps:g} "
                f"has {len(self.rates())} steps: expected at most {MAX_STEPS} (a larger step_rps)"
            )

    def rates(self) -> list[float]:
        """The offered rates, from start_rps by step_rps, the last one max_rps at most."""
        n = math.floor(round((self.max_rps - self.start_rps) / self.step_rps, 9)) + 1
        return [round(self.start_rps + i * self.step_rps, 6) for i in range(n)]

    def table(self) -> pd.DataFrame:
        """What the ramp will offer, step by step, and the soak (its rate once measured)."""
        rows = [
            {"phase": f"ramp {i + 1}", "offered_rps": r, "seconds": self.step_s}
            for i, r in enumerate(self.rates())
        ]
        rows.append(
            {"phase": "soak", "offered_rps": float("nan"), "seconds": self.soak_s}
            | {"note": f"{self.soak_fraction:.0%} of the capacity the ramp finds"}
        )
        return pd.DataFrame(rows).fillna({"note": ""})


def check_mode(mode: object) -> str:
    if mode not in MODES:
        raise ParameterError(f"mode={mode!r} is invalid: expected one of {', '.join(MODES)}")
    return str(mode)


STEP_COLUMNS = [
    "offered_rps",
    "seconds",
    "due",
    "sent",
    "ok",
    "failed",
    "saturated",
    "achieved_rps",
    "p50_ms",
    "p99_ms",
    "error_rate",
    "holds_slo",
    "stack_holds",
    "why",
]


def step_stats(
    records: pd.DataFrame, offered_rps: float, seconds: float, slo: SLO
) -> dict[str, Any]:
    """One step's figures from its traffic records: what was offered, sent and
    answered, the latency of the requests sent (failures included: a timeout is a
    slow answer), the error rate among them, and whether the SLO held."""
    saturated = records["error"] == SATURATED
    sent = records[~saturated]
    failed = int((~sent["ok"]).sum())
    p50 = float(sent["latency_ms"].quantile(0.5)) if len(sent) else float("nan")
    p99 = float(sent["latency_ms"].quantile(0.99)) if len(sent) else float("nan")
    rate = failed / len(sent) if len(sent) else 1.0
    stack_holds = bool(len(sent)) and p99 <= slo.p99_ms and rate <= slo.max_error_rate
    why = []
    if int(saturated.sum()):
        why.append(f"the client saturated ({int(saturated.sum())} requests not sent)")
    if not len(sent):
        why.append("nothing was sent")
    elif p99 > slo.p99_ms:
        why.append(f"p99 {p99:.0f} ms > {slo.p99_ms:g} ms")
    if len(sent) and rate > slo.max_error_rate:
        why.append(f"errors {rate:.2%} > {slo.max_error_rate:.2%}")
    return {
        "offered_rps": offered_rps,
        "seconds": seconds,
        "due": int(len(records)),
        "sent": int(len(sent)),
        "ok": int(sent["ok"].sum()),
        "failed": failed,
        "saturated": int(saturated.sum()),
        "achieved_rps": round(int(sent["ok"].sum()) / seconds, 1),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "error_rate": rate,
        "holds_slo": not why,
        "stack_holds": stack_holds,  # the requests sent met the SLO (saturation aside)
        "why": "; ".join(why),
    }


def load(inv: Inventory, rps: float, seconds: float, plan: Plan) -> Traffic:
    """Open-loop client load at RPS for SECONDS through the VIP (it stops by itself)."""
    spec = LoadSpec(
        rps=rps,
        duration_s=seconds,
        post_ratio=plan.post_ratio,
        max_in_flight=plan.max_in_flight,
        customer="stress",
    )
    return Traffic.for_inventory(inv, spec)


Runner = Callable[[float, float], pd.DataFrame]


def _runner(inv: Inventory, plan: Plan) -> Runner:
    def run(rps: float, seconds: float) -> pd.DataFrame:
        traffic = load(inv, rps, seconds, plan).start()
        traffic.wait()
        return traffic.records()

    return run


def ramp(
    inv: Inventory,
    plan: Plan,
    slo: SLO,
    run: Runner | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Offer each of the plan's rates for step_s; stop after the first step that
    breaks the SLO or saturates the client. One row per step run (STEP_COLUMNS)."""
    run = run or _runner(inv, plan)
    rows = []
    for rps in plan.rates():
        row = step_stats(run(rps, plan.step_s), rps, plan.step_s, slo)
        rows.append(row)
        if on_step is not None:
            on_step(row)
        if not row["holds_slo"]:
            break
    return pd.DataFrame(rows, columns=STEP_COLUMNS)


@dataclass(frozen=True)
class Capacity:
    """The highest offered rate that held the SLO, and what stopped the ramp there."""

    rps: float | None
    bound: str  # "slo" | "client" | "max_rps"
    why: str

    def __str__(self) -> str:
        if self.rps is None:
            return f"no step held the SLO: {self.why}"
        what = {
            "slo": "the SLO broke above it",
            "client": "the client saturated above it: the stack's own limit is higher",
            "max_rps": "the ramp's max_rps: the stack's own limit is higher",
        }[self.bound]
        return f"capacity {self.rps:g} requests/s ({what}: {self.why})"


def capacity(steps: pd.DataFrame) -> Capacity:
    """Capacity from a ramp's steps (``ramp``'s frame)."""
    held = steps[steps["holds_slo"].astype(bool)]
    best = float(held["offered_rps"].max()) if len(held) else None
    broke = steps[~steps["holds_slo"].astype(bool)]
    if broke.empty:
        last = steps.iloc[-1] if len(steps) else None
        why = (
            f"every step held, up to {last['offered_rps']:g} rps"
            if last is not None
            else "no step ran"
        )
        return Capacity(best, "max_rps", why)
    first = broke.iloc[0]
    # The client bounds the figure only when what it did send still met the SLO: a step
    # whose latency broke too says nothing about the stack being able to do more.
    bound = "client" if int(first["saturated"]) and bool(first["stack_holds"]) else "slo"
    return Capacity(best, bound, f"at {first['offered_rps']:g} rps: {first['why']}")


def soak_rps(cap: Capacity, plan: Plan) -> float:
    """The soak's offered rate: soak_fraction of the capacity (ParameterError-free:
    a ramp that held nothing leaves nothing to soak at, a FaultbookError)."""
    from faultbook.errors import FaultbookError

    if cap.rps is None:
        raise FaultbookError(f"no soak: {cap}")
    return max(1.0, round(cap.rps * plan.soak_fraction, 1))


def soak(
    inv: Inventory, rps: float, plan: Plan, slo: SLO, run: Runner | None = None
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Hold RPS for soak_s; the step's figures (``step_stats``) and the records."""
    records = (run or _runner(inv, plan))(rps, plan.soak_s)
    return step_stats(records, rps, plan.soak_s, slo), records


def lost_writes(inv: Inventory, records: pd.DataFrame) -> tuple[int, int]:
    """(acknowledged, missing on the primary) among RECORDS' POSTs."""
    from faultbook.stack import failover, psql

    acked = records.loc[(records["kind"] == "POST") & records["ok"], "order_id"].dropna()
    ids = {int(x) for x in acked}
    present = failover.present_ids(inv, psql.primary(inv), ids)
    return len(ids), len(ids - present)


def begin(ns: dict[str, Any]) -> tuple[Run, Inventory, Plan, SLO]:
    """The stress runbook's parameters checked (one-line ParameterError), its
    inventory loaded and its record started."""
    from faultbook import inventory as inventory_mod

    mode = check_mode(ns["mode"])
    slo = SLO(ns["slo_p99_ms"], ns["slo_error_rate"])
    plan = Plan(
        start_rps=ns["start_rps"],
        step_rps=ns["step_rps"],
        max_rps=ns["max_rps"],
        step_s=ns["step_s"],
        soak_fraction=ns["soak_fraction"],
        soak_s=ns["soak_s"],
        post_ratio=ns["post_ratio"],
        max_in_flight=ns["max_in_flight"],
    )
    inv = inventory_mod.load(ns["inventory"])
    names = [f for f in Plan.__dataclass_fields__] + ["slo_p99_ms", "slo_error_rate", "inventory"]
    run = Run.start("stress", mode, {k: ns[k] for k in ["mode", *names]})
    return run, inv, plan, slo


@dataclass(frozen=True)
class Verdict:
    ok: bool
    problems: tuple[str, ...]

    def __str__(self) -> str:
        return "PASS" if self.ok else "FAIL: " + "; ".join(self.problems)


def record(
    run: Run,
    steps: pd.DataFrame | None = None,
    cap: Capacity | None = None,
    soaked: dict[str, Any] | None = None,
    writes: tuple[int, int] | None = None,
) -> Verdict:
    """The figures into the run's metrics; the verdict: the soak held the SLO and
    lost no acknowledged write (a ramp alone, or the incident mode, passes)."""
    m = run.metrics
    sent = int(steps["sent"].sum()) if steps is not None else 0
    failed = int(steps["failed"].sum()) if steps is not None else 0
    if soaked is not None:
        sent += soaked["sent"]
        failed += soaked["failed"]
    m.update(
        rto_s=None,
        lost_writes=writes[1] if writes else None,
        acked_writes=writes[0] if writes else None,
        failed_requests=failed if steps is not None else None,
        total_requests=sent if steps is not None else None,
        p50_ms=soaked["p50_ms"] if soaked else None,
        p99_ms=soaked["p99_ms"] if soaked else None,
        capacity_rps=cap.rps if cap else None,
        capacity_client_bound=(cap.bound == "client") if cap else None,
        ramp_steps=len(steps) if steps is not None else None,
        soak_rps=soaked["offered_rps"] if soaked else None,
        soak_error_rate=soaked["error_rate"] if soaked else None,
    )
    problems = []
    if cap is not None and cap.rps is None:
        problems.append(str(cap))
    if soaked is not None and not soaked["holds_slo"]:
        problems.append(f"the soak at {soaked['offered_rps']:g} rps broke the SLO: {soaked['why']}")
    if writes is not None and writes[1]:
        problems.append(f"{writes[1]} of {writes[0]} acknowledged writes are missing")
    for why in problems:
        run.fail("verdict", why)
    run.finish()
    return Verdict(not problems, tuple(problems))


def check(v: Verdict) -> None:
    """Raise when the verdict failed, so papermill and nbval see a failing runbook."""
    from faultbook.errors import VerdictFailed

    if not v.ok:
        raise VerdictFailed(str(v))


def preflight(run: Run, inv: Inventory, mode: str) -> SteadyState:
    """The stack's steady state before any load; a drill starts only from it
    (PreflightFailed), the incident mode only shows it."""
    from faultbook.errors import PreflightFailed

    with run.step("pre-flight") as st:
        state = procedure.steady_state(inv)
        st.detail = str(state)
        if mode == "drill" and not state.ok:
            raise PreflightFailed(f"{state}: a stress test starts only from steady state")
    return state


def steady_after(run: Run, inv: Inventory, timeout_s: float = 120.0) -> SteadyState:
    """After the load: the stack back in steady state within TIMEOUT_S (a failed step
    otherwise, with what is still wrong)."""
    with run.step("steady state after") as st:
        state = procedure.wait_steady_state(inv, timeout_s)
        st.detail = str(state)
        if not state.ok:
            st.status = "failed"
    return state


def show(row: dict[str, Any]) -> None:
    """One line per ramp step, as it ends (the runbook's progress)."""
    state = "holds" if row["holds_slo"] else f"BROKEN: {row['why']}"
    sys.stdout.write(
        f"{row['offered_rps']:>7g} rps offered: {row['achieved_rps']:>7g} ok/s, "
        f"p50 {row['p50_ms']:g} ms, p99 {row['p99_ms']:g} ms, "
        f"errors {row['error_rate']:.2%} — SLO {state}\n"
    )
    sys.stdout.flush()


def ramp_step(run: Run, inv: Inventory, plan: Plan, slo: SLO) -> pd.DataFrame:
    """The ramp as the run's step "ramp" (its detail: the capacity found)."""
    with run.step("ramp") as st:
        steps = ramp(inv, plan, slo, on_step=show)
        st.detail = str(capacity(steps))
    return steps


def soak_step(
    run: Run, inv: Inventory, cap: Capacity, plan: Plan, slo: SLO
) -> tuple[dict[str, Any] | None, tuple[int, int] | None]:
    """The soak as the run's step "soak", then the lost-writes check of its
    acknowledged writes ("count lost writes"); skipped when the ramp found no
    capacity."""
    if cap.rps is None:
        run.skip("soak", str(cap))
        return None, None
    rps = soak_rps(cap, plan)
    with run.step("soak") as st:
        soaked, records = soak(inv, rps, plan, slo)
        st.detail = (
            f"{rps:g} rps for {plan.soak_s:g} s: p50 {soaked['p50_ms']:g} ms, "
            f"p99 {soaked['p99_ms']:g} ms, errors {soaked['error_rate']:.2%}"
            + ("" if soaked["holds_slo"] else f" — SLO broken: {soaked['why']}")
        )
    with run.step("count lost writes") as st:
        writes = lost_writes(inv, records)
        st.detail = f"{writes[1]} of {writes[0]} acknowledged writes missing on the primary"
    return soaked, writes


def soak_summary(soaked: dict[str, Any] | None, writes: tuple[int, int] | None) -> str:
    """The soak and its writes, in one line (or why there was none)."""
    if soaked is None:
        return "no soak (incident mode, or no ramp step held the SLO)"
    held = "held" if soaked["holds_slo"] else f"BROKEN ({soaked['why']})"
    lost = f"; {writes[1]} of {writes[0]} acknowledged writes missing" if writes else ""
    return (
        f"soak at {soaked['offered_rps']:g} rps for {soaked['seconds']:g} s: p50 "
        f"{soaked['p50_ms']:g} ms, p99 {soaked['p99_ms']:g} ms, errors "
        f"{soaked['error_rate']:.2%}: SLO {held}{lost}"
    )
