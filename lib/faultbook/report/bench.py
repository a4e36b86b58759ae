"""Benchmarks behind docs/benchmarks.md (`make bench`). Figures, never assertions.

    python -m faultbook.bench drills [--runs 5] [--only db-crash ...] [--out DIR]

runs each failover drill N times on a provisioned lab and reports p50, p95
and max of its figure (client-visible write outage, or failed requests).

    python -m faultbook.bench lab [--runs N] [--cold]

measures `faultbook lab up` (cold: no image cached; warm: image cached,
until all hosts are SSH-ready and systemd running) and `faultbook lab down`.
The cold run uses a throwaway FAULTBOOK_HOME so the cached image is kept.

    python -m faultbook.bench restore [--seed-mib 1024] [--runs 3] [--no-matrix]

seeds pgbench tables on the primary, takes full backups and restores them
onto the scratch host with a cold page cache: restore time, restored and
verified time, and the ratio to a raw copy of the same bytes on the same
disk; with the matrix, compression types, process-max and delta restore.
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

from faultbook.backup import repository, restore, targets
from faultbook.errors import BenchError, FaultbookError
from faultbook.lab import net
from faultbook.lab.lab import Lab
from faultbook.report import seeding
from faultbook.stack import http, psql


def _timed(args: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "faultbook.cli", *args], env=env, capture_output=True, text=True
    )
    dt = time.monotonic() - t0
    if proc.returncode != 0:
        raise BenchError(f"`faultbook {' '.join(args)}` failed: {proc.stderr.strip()}")
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
        raise BenchError("the lab is up; run `faultbook lab down` before benchmarking it")
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


def bench_provision(runs: int) -> dict[str, Any]:
    """A freshly booted lab provisioned from scratch, then idempotent re-runs."""
    from faultbook import ansible

    env = dict(os.environ)
    _timed(["lab", "down"], env)
    _timed(["lab", "up", "--no-provision"], env)
    lab = Lab()
    first = ansible.run_playbook("site.yml", lab.inv)
    reruns = []
    for _ in range(runs):
        r = ansible.run_playbook("site.yml", lab.inv)
        reruns.append(r.duration_s)
        if r.changed:
            raise BenchError(f"re-run changed {r.changed} things: not idempotent")
    return {
        "machine": machine(),
        "fresh_provision_s": round(first.duration_s, 1),
        "rerun_s": _stats(reruns),
    }


def _wrk(
    url: str,
    seconds: int,
    conns: int,
    threads: int,
    script: str | None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(
        [*cmd, url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        env={**os.environ, **(env or {})},
    ).stdout
    res: dict[str, Any] = {"cmd": " ".join([*cmd, url])}
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            res["rps"] = float(parts[1])
        elif parts[:1] in (["50%"], ["99%"]):
            res[f"p{parts[0][:-1]}"] = parts[1]
        elif "requests in" in line:
            res["requests"] = int(parts[0])
        elif line.strip().startswith("Non-2xx"):
            res["non_2xx"] = int(parts[-1])
        elif line.strip().startswith("Socket errors"):
            res["socket_errors"] = line.split(":", 1)[1].strip()
    return res


def _process_tree(leader: int) -> tuple[int, int]:
    """RSS (KiB) and CPU time (clock ticks) of every process under LEADER (one lab host)."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    rss = ticks = 0
    todo = list(kids.get(leader, []))
    while todo:
        pid = todo.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // 1024
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
        todo += kids.get(pid, [])
    return rss, ticks


def bench_hosts(seconds: int) -> dict[str, Any]:
    """What each lab host costs at rest: its processes' RSS, and their CPU over SECONDS."""
    from faultbook.lab.lab import Lab

    if seconds < 1:
        raise BenchError(f"--seconds must be at least 1, got {seconds}")
    lab = Lab()
    leaders = {h: lab.pid(h) for h in lab.inv.hosts}
    if any(p is None for p in leaders.values()):
        down = [h for h, p in leaders.items() if p is None]
        raise BenchError(f"every lab host must be running; not running: {', '.join(down)}")
    before = {h: _process_tree(int(p or 0)) for h, p in leaders.items()}
    time.sleep(seconds)
    after = {h: _process_tree(int(p or 0)) for h, p in leaders.items()}
    hz = os.sysconf("SC_CLK_TCK")
    rows = {
        h: {
            "rss_mib": round(after[h][0] / 1024),
            "cpu_pct_of_a_core": round(100 * (after[h][1] - before[h][1]) / hz / seconds, 1),
        }
        for h in leaders
    }
    total_cpu = round(sum(r["cpu_pct_of_a_core"] for r in rows.values()), 1)
    total_rss = sum(r["rss_mib"] for r in rows.values())
    return {
        "machine": machine(),
        "seconds": seconds,
        "hosts": rows,
        "total": {"rss_mib": total_rss, "cpu_pct_of_a_core": total_cpu},
    }


def bench_vip(seconds: int) -> dict[str, Any]:
    """Sustained GET and POST through the VIP over HTTPS (wrk, bounded in time)."""

    lab = Lab()
    base = http.vip_url(lab.inv, "")
    sess = http.ledger_session(lab.inv, "bench")
    r = sess.post(
        f"{base}/orders",
        json={"customer": "bench", "amount_cents": 1},
        headers={"Idempotency-Key": f"bench-seed-{time.time_ns()}"},
        timeout=10,
    )
    r.raise_for_status()
    oid = r.json()["id"]
    scripts = Path(__file__).parent / "bench_data"
    # The token reaches wrk's Lua scripts through the environment, which only
    # root and this user can read (/proc/PID/environ), never through argv (ps).
    env = {"FAULTBOOK_LEDGER_TOKEN": http.ledger_token(lab.inv, "bench")}
    return {
        "machine": machine(),
        "get": _wrk(f"{base}/orders/{oid}", seconds, 32, 2, str(scripts / "get_order.lua"), env),
        "post": _wrk(base, seconds, 16, 2, str(scripts / "post_orders.lua"), env),
    }


def _stats(xs: list[float]) -> dict[str, float]:
    return {
        "runs": len(xs),
        "p50": round(statistics.median(xs), 2),
        "max": round(max(xs), 2),
        "min": round(min(xs), 2),
    }


# The drills of the failover issue and the figure each one is judged by.
DRILLS: dict[str, tuple[str, dict[str, Any], str]] = {
    "db-crash": ("db-failover", {"fault": "host-crash"}, "rto_s"),
    "db-switchover": ("db-failover", {"mode": "switchover"}, "rto_s"),
    "db-partition": ("db-failover", {"fault": "partition"}, "rto_s"),
    "lb-crash": ("lb-failover", {}, "rto_s"),
    "web-kill-100rps": (
        "web-node-failure",
        {"fault": "service-kill", "target": "web2", "load_rps": 100.0},
        "failed_requests",
    ),
}


def _pct(xs: list[float], q: float) -> float:
    ys = sorted(xs)
    k = (len(ys) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ys) - 1)
    return round(ys[lo] + (ys[hi] - ys[lo]) * (k - lo), 2)


def bench_drills(runs: int, only: list[str], out: Path) -> dict[str, Any]:
    """Run each drill RUNS times through papermill; p50/p95/max of its key figure."""
    from faultbook.report import runner

    result: dict[str, Any] = {"machine": machine(), "runs": runs, "drills": {}}
    for name in only or list(DRILLS):
        book, params, key = DRILLS[name]
        rows = []
        for i in range(runs):
            d = out / name / f"run{i + 1}"
            outcome = runner.run(book, {"mode": "drill", **params}, d)
            doc = json.loads(outcome.result.read_text())
            m = doc["metrics"]
            rows.append(
                {
                    "verdict": doc["verdict"],
                    key: m.get(key),
                    "lost_writes": m.get("lost_writes"),
                    "failed_requests": m.get("failed_requests"),
                    "failed_writes": m.get("failed_writes"),
                    "failed_reads": m.get("failed_reads"),
                    "total_requests": m.get("total_requests"),
                    "time_to_first_write_s": m.get("time_to_first_write_s"),
                    "steps": {
                        st["name"]: _step_s(st) for st in doc["steps"] if st["status"] == "ok"
                    },
                }
            )
            print(f"{name} run {i + 1}: {key}={m.get(key)} lost={m.get('lost_writes')}", flush=True)
            if doc["verdict"] != "pass":
                print(f"  verdict {doc['verdict']}: see {d}", flush=True)
        xs = [float(r[key]) for r in rows if r[key] is not None]
        result["drills"][name] = {
            "runbook": book,
            "params": params,
            "figure": key,
            "p50": _pct(xs, 0.5) if xs else None,
            "p95": _pct(xs, 0.95) if xs else None,
            "max": round(max(xs), 2) if xs else None,
            "lost_writes_total": sum(int(r["lost_writes"] or 0) for r in rows),
            "failed_reads_total": sum(int(r["failed_reads"] or 0) for r in rows),
            "passed": sum(r["verdict"] == "pass" for r in rows),
            "steps": step_stats(rows),
            "runs": rows,
        }
    return result


def step_stats(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """p50/p95/max of each step's duration over the runs that have it (the time budget)."""
    names = dict.fromkeys(n for r in rows for n in r["steps"])
    out = {}
    for n in names:
        xs = [float(r["steps"][n]) for r in rows if n in r["steps"]]
        out[n] = {"p50": _pct(xs, 0.5), "p95": _pct(xs, 0.95), "max": round(max(xs), 2)}
    return out


def _full_backup(inv: Any, compress: str) -> tuple[str, float]:

    before = set(repository.backups(repository.info(inv))["label"])
    t0 = time.monotonic()
    repository.pgbackrest(
        inv,
        [
            f"--stanza={repository.stanza_name(inv)}",
            "--type=full",
            f"--compress-type={compress}",
            "--log-level-console=warn",
            "backup",
        ],
        timeout=3600,
    )
    dt = time.monotonic() - t0
    df = repository.backups(repository.info(inv))
    new = df[~df["label"].isin(before)]
    return str(new["label"].iloc[-1]), dt


def bench_restore(seed_mib: float, runs: int, matrix: bool) -> dict[str, Any]:
    """Seed SEED_MIB, back it up, restore it onto the scratch host; against a raw copy.

    With MATRIX: every compression type x process-max once, and a delta
    restore onto the previous copy; then RUNS restores with the role's
    defaults. Each restore starts with a cold page cache.
    """
    from faultbook import inventory

    inv = inventory.load("lab")
    primary = psql.primary(inv)
    host = restore.scratch_host(inv, inv.group("restore")[0].name)
    t0 = time.monotonic()
    size = seeding.seed_volume(inv, primary, seed_mib)
    seed_s = time.monotonic() - t0
    want = seeding.seed_digest(inv, primary)
    print(f"seed: {size / 2**20:.0f} MiB in database {seeding.SEED_DB} ({seed_s:.0f}s)", flush=True)
    result: dict[str, Any] = {
        "machine": machine(),
        "seed_bytes": size,
        "seed_s": round(seed_s, 1),
        "runs": [],
        "backups": [],
    }

    def one(label: str, compress: str, pm: int, delta: bool, tag: str) -> dict[str, Any]:
        if not delta:
            restore.wipe(inv, host)
        seeding.drop_caches(inv, host)
        run = restore.restore(
            inv, host, targets.IMMEDIATE, label=label, process_max=pm, delta=delta
        )
        t1 = time.monotonic()
        got = seeding.seed_digest(inv, host)
        verify_s = time.monotonic() - t1
        raw = seeding.raw_copy_s(inv, host, run.size)
        row = {
            "tag": tag,
            "compress": compress,
            "process_max": pm,
            "delta": delta,
            "bytes": run.size,
            "restore_s": round(run.restore_s, 2),
            "restored_and_up_s": round(run.total_s, 2),
            "verify_s": round(verify_s, 2),
            "restored_and_verified_s": round(run.total_s + verify_s, 2),
            "verified": got == want,
            "raw_copy_s": round(raw, 2),
            "throughput_mib_s": round(run.size / run.restore_s / 2**20, 1),
            "raw_mib_s": round(run.size / raw / 2**20, 1),
            "ratio": round(raw / run.restore_s, 2),
        }
        print(json.dumps(row), flush=True)
        if not row["verified"]:
            raise BenchError(f"restored data differ from the primary: {got} != {want}")
        return row

    configs = [("zst", [1, 2, 4]), ("lz4", [2]), ("none", [2])] if matrix else []
    for compress, pms in configs:
        label, backup_s = _full_backup(inv, compress)
        result["backups"].append(
            {"compress": compress, "label": label, "backup_s": round(backup_s, 1)}
        )
        print(f"full backup {label} ({compress}): {backup_s:.0f}s", flush=True)
        for pm in pms:
            result["runs"].append(one(label, compress, pm, False, "matrix"))
        result["runs"].append(one(label, compress, 2, True, "matrix-delta"))
    label, backup_s = _full_backup(inv, "zst")
    result["backups"].append({"compress": "zst", "label": label, "backup_s": round(backup_s, 1)})
    for _ in range(runs):
        result["runs"].append(one(label, "zst", 2, False, "default"))
    restore.wipe(inv, host)
    main = [r for r in result["runs"] if r["tag"] == "default"]
    if main:
        result["default"] = {
            "restore_s_p50": _pct([r["restore_s"] for r in main], 0.5),
            "restored_and_verified_s_p50": _pct([r["restored_and_verified_s"] for r in main], 0.5),
            "ratio_p50": _pct([r["ratio"] for r in main], 0.5),
        }
    return result


def _step_s(step: dict[str, Any]) -> float:
    from datetime import datetime

    a = datetime.fromisoformat(step["started_at"].replace("Z", "+00:00"))
    b = datetime.fromisoformat(step["finished_at"].replace("Z", "+00:00"))
    return round((b - a).total_seconds(), 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m faultbook.report.bench")
    sub = ap.add_subparsers(dest="what", required=True)
    lab = sub.add_parser("lab", help="lab up (cold and warm) and lab down")
    lab.add_argument("--runs", type=int, default=5)
    lab.add_argument("--no-cold", dest="cold", action="store_false")
    prov = sub.add_parser("provision", help="fresh provisioning and idempotent re-runs")
    prov.add_argument("--runs", type=int, default=3)
    hosts = sub.add_parser("hosts", help="each lab host's memory and idle CPU")
    hosts.add_argument("--seconds", type=int, default=60)
    vip = sub.add_parser("vip", help="GET and POST throughput through the VIP (wrk)")
    vip.add_argument("--seconds", type=int, default=20)
    drills = sub.add_parser("drills", help="each failover drill N times (p50, p95, max)")
    drills.add_argument("--runs", type=int, default=5)
    drills.add_argument("--only", action="append", default=[], choices=list(DRILLS))
    drills.add_argument("--out", type=Path, default=Path("reports/bench"))
    rest = sub.add_parser("restore", help="seed, back up and restore onto the scratch host")
    rest.add_argument("--seed-mib", type=float, default=1024)
    rest.add_argument("--runs", type=int, default=3)
    rest.add_argument("--no-matrix", dest="matrix", action="store_false")
    rest.add_argument("--out", type=Path, default=Path("reports/bench"))
    a = ap.parse_args(argv)
    try:
        result = _bench(a)
    except FaultbookError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result, indent=2))
    return 0


def _bench(a: argparse.Namespace) -> dict[str, Any]:
    if a.what == "restore":
        result = bench_restore(a.seed_mib, a.runs, a.matrix)
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "restore.json").write_text(json.dumps(result, indent=2) + "\n")
    elif a.what == "drills":
        result = bench_drills(a.runs, a.only, a.out)
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "drills.json").write_text(json.dumps(result, indent=2) + "\n")
    elif a.what == "lab":
        result = bench_lab(a.runs, a.cold)
    elif a.what == "provision":
        result = bench_provision(a.runs)
    elif a.what == "hosts":
        result = bench_hosts(a.seconds)
    else:
        result = bench_vip(a.seconds)
    return result


if __name__ == "__main__":
    sys.exit(main())
