"""``python -m faultbook.alerts.bench``: the autopilot drills N times each, segment by segment.

For each scenario (a primary crash, the same with one mon host down first, a
killed web service, a powered-off web host, the load balancer holding the VIP
crashed) it runs ``alerts.drill.run`` RUNS times and reports p50/p95/max of each
segment (fault → alert firing → notification → runbook started → writes back),
of the client-visible write outage, and the lost writes of every run.

The lab's routes fold repeats of one alert into one run for a minute or two
(their ``window``), which back-to-back drills would trip over. The bench
therefore restarts the receiver on a copy of the inventory's routing file with
every window set to ``--window`` seconds, and restarts it on the real file at
the end, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from faultbook import inventory
from faultbook.alerts import drill, routes, service
from faultbook.errors import FaultbookError, ParameterError
from faultbook.report.bench import _pct, machine

SCENARIOS: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "db-crash": ("db", "host-crash", []),
    "db-crash-mon-down": ("db", "host-crash", [("host-crash", "{mon}")]),
    "web-kill": ("web", "service-kill", []),
    "web-crash": ("web", "host-crash", []),
    "lb-crash": ("lb", "host-crash", []),
}
SEGMENTS = (
    "fault_to_firing",
    "firing_to_notified",
    "notified_to_started",
    "started_to_writes_back",
    "fault_to_writes_back",
    "write_outage",
    "fault_to_run_finished",
)


def bench_routes(inv: inventory.Inventory, window_s: float, where: Path) -> Path:
    """A copy of the inventory's routing file with every route's window set to WINDOW_S."""
    src = routes.default_path(inv)
    doc = yaml.safe_load(src.read_text())
    doc.setdefault("defaults", {})["window"] = f"{window_s:g}s"
    for r in doc.get("routes") or []:
        if "window" in r:
            r["window"] = f"{window_s:g}s"
    out = where / "alert-routes.bench.yml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    routes.load(inv, out)  # the same validation the receiver applies
    return out


def run(runs: int, only: list[str], out: Path, window_s: float) -> dict[str, Any]:
    if runs < 1:
        raise ParameterError(f"--runs must be at least 1, got {runs}")
    inv = inventory.load("lab")
    mon = inv.group("mon")[0].name
    result: dict[str, Any] = {"machine": machine(), "runs": runs, "scenarios": {}}
    with tempfile.TemporaryDirectory(prefix="faultbook-bench-") as tmp:
        file = bench_routes(inv, window_s, Path(tmp))
        service.stop(inv)
        service.start(inv, routes_file=file)
        try:
            for name in only or list(SCENARIOS):
                tier, fault, pre = SCENARIOS[name]
                pre_faults = [(k, h.format(mon=mon)) for k, h in pre]
                rows = []
                for i in range(runs):
                    d = out / "alerts" / name / f"run{i + 1}"
                    d.mkdir(parents=True, exist_ok=True)
                    r = drill.run(inv, tier, fault, pre_faults=pre_faults, result_dir=str(d))
                    res = r.result
                    row = {
                        "verdict": r.procedure.run.verdict,
                        "target": r.target,
                        "runs": [f"{e.get('runbook')} ({e.get('alertname')})" for e in r.runs],
                        "lost_writes": res.lost_writes if res else None,
                        "failed_requests": res.failed_requests if res else None,
                        "total_requests": res.total_requests if res else None,
                        **r.segments,
                    }
                    rows.append(row)
                    print(f"{name} run {i + 1}: {r.summary()}", file=sys.stderr)
                result["scenarios"][name] = {"rows": rows, "summary": _summary(rows)}
        finally:
            service.stop(inv)
            service.start(inv)
    out.mkdir(parents=True, exist_ok=True)
    (out / "alerts.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for k in SEGMENTS:
        xs = [float(r[k]) for r in rows if r.get(k) is not None]
        s[k] = (
            {"p50": _pct(xs, 0.5), "p95": _pct(xs, 0.95), "max": round(max(xs), 2)} if xs else None
        )
    s["lost_writes_max"] = max((r["lost_writes"] or 0) for r in rows)
    s["passed"] = sum(r["verdict"] == "pass" for r in rows)
    return s


def table(result: dict[str, Any]) -> str:
    """A Markdown table: one row per scenario and segment, p50 / p95 / max in seconds."""
    lines = ["| scenario | segment | p50 s | p95 s | max s |", "|---|---|---|---|---|"]
    for name, sc in result["scenarios"].items():
        for k in SEGMENTS:
            v = sc["summary"].get(k)
            if v:
                lines.append(f"| {name} | {k} | {v['p50']} | {v['p95']} | {v['max']} |")
        s = sc["summary"]
        lines.append(
            f"| {name} | passed / lost writes (max) | {s['passed']}/{len(sc['rows'])} | "
            f"{s['lost_writes_max']} | |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m faultbook.alerts.bench")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", action="append", default=[], choices=list(SCENARIOS))
    ap.add_argument("--out", type=Path, default=Path("reports/bench"))
    ap.add_argument("--window", type=float, default=20.0, help="route window in seconds")
    a = ap.parse_args(argv)
    # SIGTERM (a CI timeout, kill) ends the bench through its finally: the
    # receiver goes back to the inventory's own routes.
    signal.signal(signal.SIGTERM, lambda _s, _f: sys.exit(143))
    try:
        result = run(a.runs, a.only, a.out, a.window)
    except FaultbookError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
