"""The runbooks' step helpers: what every drill notebook would otherwise write by hand.

A runbook cell calls one of these and shows what it returns. They hold the
boilerplate the notebooks used to copy (objectives from ``max_*`` parameters with
-1 for "none", the parameter list handed to ``Procedure.start``, the fault's
construction, the current primary) and the
backup-restore runbook's parameter checks, so that each piece is tested once here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faultbook import inventory as inventory_mod
from faultbook import secrets
from faultbook.backup import repair, restore, targets
from faultbook.drills import faults
from faultbook.drills.impact import DrillResult
from faultbook.drills.procedure import MODES, Procedure, check_params
from faultbook.errors import FaultbookError, ParameterError, RestoreTargetError
from faultbook.paths import RUNBOOKS_DIR
from faultbook.stack import detect, psql

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrillSpec:
    """What a drill runbook accepts: its modes, its faults and the group its target is in."""

    modes: tuple[str, ...]
    faults: tuple[str, ...]
    group: str
    unit: str = ""  # the unit a process or service fault acts on
    promql: str = ""  # the series the closing timeline shows
    prom_title: str = ""


# The faults each drill accepts: those that make its target lost to its detection (the
# primary silent on its port, a web node marked down by HAProxy, the VIP moving). A
# frozen primary is fenced (powered off in the lab) and its freeze ends with it. delay-loss,
# disk-full and clock-skew do not make a target lost (a slow or full primary still answers):
# they belong to a drill that injects, holds, reverts and observes (docs/drills.md#game-day).
DRILLS: dict[str, DrillSpec] = {
    "db-failover": DrillSpec(
        ("incident", "drill", "switchover"),
        ("host-crash", "partition", "process-freeze"),
        "db",
        unit="postgresql@15-main.service",
        promql='pg_replication_is_replica{job="postgres"}',
        prom_title="pg_replication_is_replica (0 = primary)",
    ),
    "web-node-failure": DrillSpec(
        MODES,
        ("service-kill", "service-stop", "process-freeze", "host-crash", "partition"),
        "web",
        unit="ledger.service",
        promql='haproxy_server_status{job="haproxy",proxy="web",state="UP"}',
        prom_title="HAProxy backend web: server UP (1) per lb and server",
    ),
    "lb-failover": DrillSpec(
        MODES,
        ("host-crash", "service-stop", "process-freeze", "partition"),
        "lb",
        unit="keepalived.service",
        promql='probe_success{job="blackbox_https"}',
        prom_title="blackbox probe of the VIP over HTTPS (1 = success)",
    ),
    # A fault that leaves its target answering, held under load, reverted, observed
    # (drills.observe); the target is any host. Its timeline shows the VIP's probe.
    "fault-observe": DrillSpec(
        MODES,
        ("delay-loss", "disk-full", "clock-skew", "process-freeze", "service-stop"),
        "all",
        promql='probe_success{job="blackbox_https"}',
        prom_title="blackbox probe of the VIP over HTTPS (1 = success)",
    ),
}

# Objective parameters of the drill runbooks and the metric each one bounds; -1 means none.
OBJECTIVES = {
    "max_rto_s": "rto_s",
    "max_lost_writes": "lost_writes",
    "max_failed_requests": "failed_requests",
}
# Parameters the runner sets, never recorded as the run's parameters.
RUNNER_SET = ("result_dir",)


def declared(runbook: str, ns: Mapping[str, Any]) -> dict[str, Any]:
    """The runbook's declared parameters (its cell tagged ``parameters``) with their values."""
    import papermill

    names = papermill.inspect_notebook(str(RUNBOOKS_DIR / f"{runbook}.ipynb"))
    return {k: ns[k] for k in names if k in ns and k not in RUNNER_SET}


def objectives(ns: Mapping[str, Any]) -> dict[str, float]:
    """``{metric: limit}`` from the ``max_*`` parameters that are not -1."""
    out = {}
    for param, metric in OBJECTIVES.items():
        if param not in ns:
            continue
        v = ns[param]
        if v == -1:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
            raise ParameterError(f"{param} must be a number >= 0, or -1 for none; got {v!r}")
        out[metric] = float(v)
    return out


def begin(runbook: str, ns: Mapping[str, Any]) -> Procedure:
    """Check a drill runbook's parameters, load its inventory and start its record.

    Every parameter error (a mistyped mode, a fault the runbook does not know, a
    target that is not in the right group of the inventory) is a one-line
    ParameterError or InventoryError before anything runs.
    """
    spec = DRILLS[runbook]
    goals = objectives(ns)
    check_params(ns["mode"], ns["load_rps"], ns["duration_s"], goals, modes=spec.modes)
    faults.require_kind(ns["fault"], spec.faults)
    if "detect_threshold_s" in ns:
        detect.check_thresholds(ns["detect_threshold_s"], ns["probe_interval_s"])
    inv = inventory_mod.load(ns["inventory"])
    if ns.get("target"):
        inv.member(ns["target"], spec.group)
    if ns.get("also_fault"):
        if ns["mode"] != "drill":
            raise ParameterError(
                f"also_fault={ns['also_fault']!r} is for drill mode only; mode is {ns['mode']!r}"
            )
        parse_also(inv, ns["also_fault"], spec.group)
    params = declared(runbook, ns)
    return Procedure.start(
        runbook, inv, ns["mode"], params, goals, confirm=bool(ns.get("confirm", False))
    )


def fault(p: Procedure, kind: str, target: str) -> faults.Fault:
    """The runbook's fault of ``kind`` on ``target`` (a unit fault acts on the runbook's unit)."""
    spec = DRILLS[p.runbook]
    options = {} if kind in ("host-crash", "partition") or not spec.unit else {"unit": spec.unit}
    return faults.make(kind, p.inv, target, **options)


# The second faults a drill may add before its own (``also_fault``): a whole host's.
ALSO_KINDS = ("host-crash", "partition", "delay-loss")


def parse_also(inv: inventory_mod.Inventory, spec: str, own_group: str) -> tuple[str, str]:
    """``KIND@GROUP`` -> (KIND, the group's first host): a second fault, on a host of
    another tier than the drill's own (the backup host or a mon host lost while the
    primary is). One-line ParameterError otherwise."""
    kind, sep, group = str(spec).partition("@")
    if not sep or not kind or not group:
        raise ParameterError(
            f"also_fault={spec!r} is invalid: expected KIND@GROUP, e.g. host-crash@backup"
        )
    if kind not in ALSO_KINDS:
        raise ParameterError(
            f"also_fault kind {kind!r} is invalid: expected one of {', '.join(ALSO_KINDS)}"
        )
    if group == own_group or group == "all":
        raise ParameterError(
            f"also_fault group {group!r} is invalid: expected another group than the "
            f"drill's own ({own_group})"
        )
    hosts = inv.group(group)  # InventoryError naming the known groups
    if not hosts:
        raise ParameterError(f"also_fault group {group!r} has no host in {inv.path}")
    return kind, hosts[0].name


def also_fault(p: Procedure, spec: str) -> faults.Fault:
    """The drill's second fault (``parse_also``), to inject with ``Procedure.inject_also``
    before its own."""
    kind, host = parse_also(p.inv, spec, DRILLS[p.runbook].group)
    return faults.make(kind, p.inv, host)


def client_impact(p: Procedure, settle_s: float = 3.0) -> DrillResult:
    """Stop the load and measure what clients saw; lost writes counted on the current primary."""
    p.stop_load(settle_s=settle_s)
    result = p.evaluate(psql.primary(p.inv))
    if result is None:
        raise FaultbookError("no client load ran: nothing to measure")
    return result


# ------------------------------------------------------------ backup-restore
RESTORE_MODES = ("verify", "pitr", "recover-from-bad-change")


@dataclass
class RestoreSetup:
    """The backup-restore runbook's checked parameters."""

    p: Procedure
    host: str  # the scratch host
    passphrase: str | None  # what pre-flight checks against the repository (None: not checked)
    bad_at: datetime | None  # recover: the time of the bad change, when given
    target: targets.RestoreTarget | None  # pitr incident: the parsed target
    note: str = ""

    def __str__(self) -> str:
        mode = self.p.run.parameters.get("mode", "")
        drill = " (drill)" if self.p.drill else ""
        extra = f"\nNOTE: {self.note}" if self.note else ""
        return f"mode {mode}{drill}; scratch host {self.host}{extra}"


def restore_begin(ns: Mapping[str, Any]) -> RestoreSetup:
    """Check the backup-restore runbook's parameters, before anything runs; start its record."""
    mode, drill = ns["mode"], bool(ns["drill"])
    if mode not in RESTORE_MODES:
        raise ParameterError(f"mode must be one of {', '.join(RESTORE_MODES)}, got {mode!r}")
    if ns["repair"] != "copy-back":
        raise ParameterError(
            f"repair must be 'copy-back' (the only strategy; see the docs), got {ns['repair']!r}"
        )
    for name in ("max_full_age_h", "max_diff_age_h"):
        if not ns[name] > 0:
            raise ParameterError(f"{name} must be a number of hours > 0, got {ns[name]!r}")
    if not ns["seed_mib"] >= 0:
        raise ParameterError(f"seed_mib must be >= 0, got {ns['seed_mib']!r}")
    if ns["bad_change_min_rows"] < 1:
        raise ParameterError(f"bad_change_min_rows must be >= 1, got {ns['bad_change_min_rows']!r}")
    if drill:
        check_params("drill", ns["load_rps"], ns["duration_s"], {})
    if ns["seed_mib"] and not drill:
        raise ParameterError(
            "seed_mib writes a seed database into production: only with drill=True"
        )
    tgt = None
    kind, value = ns["target_kind"], ns["target"]
    if mode == "pitr" and not drill:
        if not value and kind != "latest":
            raise ParameterError("pitr needs a target (or drill=True, which makes one)")
        tgt = targets.parse_target(kind, value)  # one-line error for a malformed target
    if drill and mode == "pitr" and kind not in ("time", "lsn", "name"):
        raise ParameterError(f"a pitr drill makes a time, lsn or name target, not {kind!r}")
    bad_at = (
        targets.parse_target("time", ns["bad_change_time"]).time if ns["bad_change_time"] else None
    )
    now = datetime.now(UTC)
    if bad_at is not None and bad_at > now:
        raise RestoreTargetError(
            f"bad_change_time {ns['bad_change_time']} is in the future "
            f"(it is now {now:%Y-%m-%dT%H:%M:%SZ})"
        )
    inv = inventory_mod.load(ns["inventory"])
    restore_hosts = inv.group("restore") if "restore" in inv.groups else []
    if not ns["restore_host"] and not restore_hosts:
        raise ParameterError(f"{inv.path} has no host in group restore and restore_host is empty")
    host = restore.scratch_host(inv, ns["restore_host"] or restore_hosts[0].name)
    passphrase, note = _passphrase(inv, ns["passphrase_file"])
    params = declared("backup-restore", ns) | {"restore_host": host}
    p = Procedure.start(
        "backup-restore",
        inv,
        "drill" if drill else "incident",
        params,
        {"lost_writes": 0} if drill else {},
        confirm=bool(ns["confirm"]),
    )
    return RestoreSetup(p, host, passphrase, bad_at, tgt, note)


def _passphrase(inv: inventory_mod.Inventory, passphrase_file: str) -> tuple[str | None, str]:
    if passphrase_file:
        path = Path(passphrase_file)
        try:
            return path.read_text().strip(), ""
        except OSError as exc:
            raise ParameterError(
                f"passphrase_file {passphrase_file!r} cannot be read ({exc.strerror}); "
                "expected a readable file holding the repository passphrase"
            ) from None
    found = secrets.read_vault(inv).get("vault_pgbackrest_cipher_pass")
    if found is None:
        return None, (
            "no vault passphrase readable and no passphrase_file: "
            "the repository passphrase is not checked"
        )
    return found, ""


def copy_summary(inv: inventory_mod.Inventory, host: str) -> str:
    """What an incident restore's copy holds, when there is no client ledger to prove it by."""
    count, newest = repair.ledger_summary(inv, host)
    return (
        f"no ledger for an incident restore: the copy holds {count} orders, "
        f"the newest created {newest}"
    )
