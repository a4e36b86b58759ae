"""Restores onto a scratch host (a host of group ``restore`` that is no db host), and wiping it.

``restore`` runs playbooks/db_restore.yml: pgBackRest restores a backup, PostgreSQL replays
WAL to the target and promotes, and the copy answers on that host's local socket. ``wipe``
(playbooks/db_restore_wipe.yml) deletes it; ``scratch`` wipes it when a block fails.
``archive_now`` closes the primary's WAL segment and waits until it is archived.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from faultbook import ansible, ssh
from faultbook.backup import repository, targets
from faultbook.backup.wal import WalSegment
from faultbook.errors import BackupError, FaultbookError, UsageError
from faultbook.inventory import Inventory
from faultbook.poll import poll
from faultbook.stack import psql

log = logging.getLogger(__name__)


PG_VERSION = 15


PG_BIN = f"/usr/lib/postgresql/{PG_VERSION}/bin"


PG_DATA = f"/var/lib/postgresql/{PG_VERSION}/main"


RESTORE_TASK = "Restore | Restore from the repository"


# ------------------------------------------------------------ the scratch host
def scratch_host(inv: Inventory, host: str) -> str:
    """``host`` if it may receive a restore: in the inventory, in group restore, not a db host."""
    name = inv.host(host).name  # InventoryError (exit 2) listing the known hosts
    restore_hosts = [h.name for h in inv.group("restore")] if "restore" in inv.groups else []
    db_hosts = {h.name for h in inv.group("db")} if "db" in inv.groups else set()
    if name not in restore_hosts or name in db_hosts:
        raise UsageError(
            f"restore host {name!r} is not a scratch host: expected a host of group restore "
            f"that is not a db host ({', '.join(restore_hosts) or 'the inventory has none'})"
        )
    return name


@dataclass(frozen=True)
class RestoreRun:
    """One restore onto a scratch host and what it cost."""

    host: str
    target: str
    label: str
    options: tuple[str, ...]
    restore_s: float  # pgbackrest restore alone
    total_s: float  # the playbook: stop, restore, replay, promote
    size: int  # database bytes the backup holds
    process_max: int
    delta: bool
    log_lines: tuple[str, ...] = field(default=(), repr=False)

    def recovery_log(self) -> str:
        """PostgreSQL's recovery lines of the restore (where replay stopped and why)."""
        return "\n".join("   " + line.split("LOG:", 1)[-1].strip() for line in self.log_lines)

    @property
    def throughput(self) -> float:
        """Bytes per second of the pgbackrest restore step."""
        return self.size / self.restore_s if self.restore_s > 0 else float("nan")


def _task_result(events: Iterable[dict[str, Any]], task: str) -> dict[str, Any]:
    for ev in events:
        if ev.get("event") == "runner_on_ok":
            data = ev.get("event_data") or {}
            if data.get("task") == task:
                return dict(data.get("res") or {})
    return {}


def _seconds(delta: str) -> float:
    """Ansible's command delta "0:00:12.345678" -> 12.345678."""
    h, m, s = delta.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def restore(
    inv: Inventory,
    host: str,
    target: targets.RestoreTarget,
    label: str = "",
    exclusive: bool = False,
    process_max: int | None = None,
    delta: bool | None = None,
    event_handler: Any = None,
) -> RestoreRun:
    """Restore onto ``host`` up to ``target`` and promote the copy there."""
    host = scratch_host(inv, host)
    df = repository.backups(repository.info(inv), repository.stanza_name(inv))
    if label:
        targets.check_label(df, label)
    chosen = label or targets.backup_for_target(df, target)
    options = target.pgbackrest_options()
    if exclusive:
        if target.kind not in ("time", "lsn"):
            raise UsageError(f"an exclusive restore needs a time or lsn target, not {target.kind}")
        options.append("--target-exclusive")
    evars: dict[str, Any] = {"restore_host": host, "pgbackrest_restore_options": options}
    # A label pgBackRest would choose itself is passed only when asked for:
    # for a time target pgBackRest picks the newest backup before it.
    if label:
        evars["pgbackrest_restore_set"] = label
    elif target.kind in ("lsn", "name", "latest", "immediate"):
        evars["pgbackrest_restore_set"] = chosen
    if process_max is not None:
        evars["pgbackrest_restore_process_max"] = int(process_max)
    if delta is not None:
        evars["pgbackrest_restore_delta"] = bool(delta)
    result = ansible.run_playbook(
        "db_restore.yml", inv, extravars=evars, event_handler=event_handler
    )
    res = _task_result(result.events, RESTORE_TASK)
    restore_s = _seconds(str(res.get("delta", "0:0:0")))
    row = df[df["label"] == chosen].iloc[0]
    logs = _task_result(result.events, "Restore | Read where recovery stopped")
    lines = tuple((logs.get("ansible_facts") or {}).get("pgbackrest_restore_stop_line") or ())
    return RestoreRun(
        host=host,
        target=str(target) + (" (exclusive)" if exclusive else ""),
        label=chosen,
        options=tuple(options),
        restore_s=restore_s,
        total_s=result.duration_s,
        size=int(row["size"]) if pd.notna(row["size"]) else 0,
        process_max=int(process_max) if process_max is not None else 0,
        delta=bool(delta),
        log_lines=lines,
    )


def wipe(inv: Inventory, host: str, event_handler: Any = None) -> None:
    """Stop the scratch cluster on ``host`` and delete what was restored there."""
    host = scratch_host(inv, host)
    ansible.run_playbook(
        "db_restore_wipe.yml", inv, extravars={"restore_host": host}, event_handler=event_handler
    )


def data_files(inv: Inventory, host: str) -> int:
    """How many files the scratch host's data directory holds (0 after ``wipe``)."""
    r = ssh.run(inv, host, f"sudo -n find {PG_DATA} -mindepth 1 | wc -l", timeout=30)
    if not r.ok:
        raise BackupError(f"cannot list {host}:{PG_DATA}: {r.stderr.strip()}")
    return int(r.stdout.strip() or 0)


# ---------------------------------------------------------- the WAL archive
def archive_now(inv: Inventory, primary: str, timeout_s: float = 60.0) -> str:
    """Close the primary's current WAL segment and wait until it is archived.

    Until then a restore cannot reach a target in it. Returns the segment.
    """
    out = psql.psql(inv, primary, "SELECT pg_walfile_name(pg_switch_wal()), pg_current_wal_lsn()")
    segment = out.split("|")[0].strip()
    last = [""]

    def archived(t: float) -> str | None:
        last[0] = psql.psql(
            inv, primary, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", timeout=t
        ).strip()
        done = re.fullmatch(r"[0-9A-F]{24}", last[0]) and _seg_key(last[0]) >= _seg_key(segment)
        return segment if done else None

    return poll(
        archived,
        timeout_s,
        what=f"WAL segment {segment} archived (check archiving with `pgbackrest check`)",
        seen=lambda: f"last archived {last[0] or 'none'}",
        error=BackupError,
    )


def _seg_key(name: str) -> tuple[int, int]:
    s = WalSegment.parse(name)
    return s.timeline, s.number()


class scratch:
    """Wipe the scratch host if the block fails, so a failed step leaves no copy behind."""

    def __init__(self, inv: Inventory, host: str) -> None:
        self.inv = inv
        self.host = host

    def __enter__(self) -> scratch:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            try:
                wipe(self.inv, self.host)
            except FaultbookError as err:
                log.warning("wiping %s after a failure failed too: %s", self.host, err)
