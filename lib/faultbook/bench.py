"""Benchmarks behind docs/benchmarks.md (`make bench`). Figures, never assertions.

    python -m faultbook.bench lab [--runs N] [--cold]

measures `faultbook lab up` (cold: no image cached; warm: image cached,
until all hosts are SSH-ready and systemd running) and `faultbook lab down`.
The cold run uses a throwaway FAULTBOOK_HOME so the cached image is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from faultbook.lab import net
from faultbook.lab.lab import Lab


def _timed(args: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "faultbook.cli", *args], env=env, capture_output=True, text=True
    )
    dt = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"`faultbook {' '.join(args)}` failed: {proc.stderr.strip()}")
    return dt


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = int(next(ln.split()[1] for ln in meminfo if ln.startswith("MemTotal")))
    return {
        "cpus": os.cpu_count(),
        "mem_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def bench_lab(runs: int, cold: bool) -> dict[str, Any]:
    if net.link_exists(Lab().bridge):
        raise SystemExit("the lab is up; run `faultbook lab down` before benchmarking it")
    env = dict(os.environ)
    out: dict[str, Any] = {"machine": machine(), "hosts": len(Lab().inv.hosts)}
    if cold:
        home = tempfile.mkdtemp(prefix="faultbook-bench-", dir="/var/tmp")
        try:
            cenv = {**env, "FAULTBOOK_HOME": home}
            out["cold_up_s"] = round(_timed(["lab", "up"], cenv), 1)
            _timed(["lab", "down"], cenv)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    _timed(["lab", "image"], env)
    ups, downs = [], []
    for _ in range(runs):
        ups.append(_timed(["lab", "up"], env))
        downs.append(_timed(["lab", "down"], env))
    out["warm_up_s"] = _stats(ups)
    out["down_s"] = _stats(downs)
    return out


def _stats(xs: list[float]) -> dict[str, float]:
    return {
        "runs": len(xs),
        "p50": round(statistics.median(xs), 2),
        "max": round(max(xs), 2),
        "min": round(min(xs), 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m faultbook.bench")
    sub = ap.add_subparsers(dest="what", required=True)
    lab = sub.add_parser("lab", help="lab up (cold and warm) and lab down")
    lab.add_argument("--runs", type=int, default=5)
    lab.add_argument("--no-cold", dest="cold", action="store_false")
    a = ap.parse_args(argv)
    result = bench_lab(a.runs, a.cold)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
