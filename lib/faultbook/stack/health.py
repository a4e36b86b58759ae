"""Host health over SSH: reachability, systemd state, failed units, uptime, load, memory, disk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from faultbook import inventory as inventory_mod
from faultbook import ssh
from faultbook.errors import ParameterError, SSHError, VerdictFailed
from faultbook.inventory import Inventory
from faultbook.results import Run

# One round trip per host; each line is KEY=VALUE so parsing is trivial and testable.
PROBE = r"""
echo "hostname=$(hostname)"
echo "state=$(systemctl is-system-running 2>/dev/null)"
echo "failed=$(systemctl --failed --plain --no-legend 2>/dev/null \
  | awk '{print $1}' | paste -sd, -)"
echo "uptime_s=$(ps -o etimes= -p 1 | tr -d ' ')"  # PID 1's age: right in containers too
echo "load1=$(cut -d' ' -f1 /proc/loadavg)"
echo "mem_total_kb=$(awk '/^MemTotal:/{print $2}' /proc/meminfo)"
echo "mem_avail_kb=$(awk '/^MemAvailable:/{print $2}' /proc/meminfo)"
echo "disk=$(df -P -B1 / | awk 'NR==2{print $2","$3}')"
"""

COLUMNS = [
    "host",
    "address",
    "groups",
    "reachable",
    "hostname",
    "state",
    "failed_units",
    "uptime_s",
    "load1",
    "mem_used_pct",
    "disk_used_pct",
    "error",
]


def parse_probe(text: str) -> dict[str, object]:
    """Turn the probe's KEY=VALUE lines into typed values."""
    kv = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    mem_total = float(kv.get("mem_total_kb") or 0)
    mem_avail = float(kv.get("mem_avail_kb") or 0)
    size, used = ((kv.get("disk") or "0,0").split(",") + ["0"])[:2]
    return {
        "hostname": kv.get("hostname", ""),
        "state": kv.get("state", "") or "unknown",
        "failed_units": [u for u in (kv.get("failed") or "").split(",") if u],
        "uptime_s": float(kv.get("uptime_s") or "nan"),
        "load1": float(kv.get("load1") or "nan"),
        "mem_used_pct": 100.0 * (1 - mem_avail / mem_total) if mem_total else float("nan"),
        "disk_used_pct": 100.0 * float(used) / float(size) if float(size) else float("nan"),
    }


MODES = ("incident", "drill")


def begin(inventory: str, timeout_s: float, mode: str) -> tuple[Run, Inventory]:
    """Check the health check's parameters (one-line ParameterError), load the inventory
    and start the run's record."""
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not 0 < timeout_s <= 300
    ):
        raise ParameterError(
            f"timeout_s must be a number of seconds in (0, 300], got {timeout_s!r}"
        )
    inv = inventory_mod.load(inventory)
    run = Run.start("health-check", mode, {"inventory": inventory, "timeout_s": timeout_s})
    return run, inv


def describe(inv: Inventory) -> str:
    """One line: the inventory's file, its number of hosts and its groups."""
    groups = ", ".join(sorted(g for g in inv.groups if g != "all"))
    return f"inventory {inv.path}: {len(inv.hosts)} hosts in groups {groups}"


def collect(inv: Inventory, timeout_s: float = 10.0) -> pd.DataFrame:
    """Probe every host in parallel; a host that cannot be reached is a row, not an exception."""
    results = ssh.run_many(inv, None, PROBE, timeout=timeout_s)
    rows = []
    for name, res in results.items():
        h = inv.hosts[name]
        row: dict[str, object] = {
            "host": name,
            "address": h.address,
            "groups": ",".join(h.groups),
        }
        if isinstance(res, SSHError):
            row.update(reachable=False, state="unreachable", failed_units=[], error=res.message)
        else:
            row.update(reachable=True, error="" if res.ok else res.stderr.strip()[:200])
            row.update(parse_probe(res.stdout))
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


class _Row:
    """Attribute access to one row of the health table."""

    def __init__(self, rec: dict[Any, Any]) -> None:
        self.__dict__.update({str(k): v for k, v in rec.items()})

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    problems: list[str]

    def __str__(self) -> str:
        if self.ok:
            return "PASS: every host is reachable and its systemd reports running"
        return "FAIL: " + "; ".join(self.problems)


def verdict(df: pd.DataFrame) -> Verdict:
    """Pass when every host is reachable, reports its own name and systemd is running."""
    problems = []
    for rec in df.to_dict("records"):
        r = _Row(rec)
        if not r.reachable:
            problems.append(f"{r.host} unreachable ({r.error})")
        elif r.state != "running":
            units = ", ".join(r.failed_units) or "none listed"
            problems.append(f"{r.host} systemd {r.state} (failed units: {units})")
        elif r.hostname != r.host:
            problems.append(f"{r.host} answers as {r.hostname!r}")
    return Verdict(not problems, problems)


def record(run: Run, df: pd.DataFrame) -> Verdict:
    """Put the health figures and verdict into a run record."""
    v = verdict(df)
    run.metrics.update(
        hosts_total=int(len(df)),
        hosts_reachable=int(df["reachable"].sum()),
        hosts_running=int((df["state"] == "running").sum()),
    )
    if not v.ok:
        run.fail("verdict", str(v))
    run.finish()
    return v


def check(v: Verdict) -> None:
    """Raise when the verdict failed, so papermill and nbval see a failing runbook."""
    if not v.ok:
        raise VerdictFailed(str(v))
