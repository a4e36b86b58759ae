"""The pgBackRest repository: what it holds, its status, its WAL archive, and taking a backup.

Frames
    ``backups``  one row per backup, oldest first: ``label``, ``type`` (full,
                 diff, incr), ``prior`` (the backup it builds on), ``start``
                 and ``stop`` (UTC), ``duration_s``, ``lsn_start``,
                 ``lsn_stop``, ``wal_start``, ``wal_stop`` (the WAL segments
                 the backup needs), ``size`` and ``delta`` (database bytes in
                 the backup / copied by it), ``repo_size`` and ``repo_delta``
                 (the same in the repository, compressed), ``error`` (page
                 checksum errors), ``archive_min`` and ``archive_max`` (the
                 stanza's archived WAL for the backup's database).

WAL continuity
    ``check_archive`` lists the stanza's archive (``repo-ls``), fetches the
    newest timeline's history file (``repo-get``) and checks with
    ``faultbook.backup.wal.wal_archive_continuity`` that every segment from the
    oldest backup's ``wal_start`` onwards is there, along that history.

Everything that talks to hosts goes through ``faultbook.ssh`` (``pgbackrest``: the one
command runner, as the repository's owner) or ``faultbook.ansible`` (``run_backup``:
playbooks/backup_now.yml).
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from faultbook import ssh
from faultbook.backup.targets import _aware, _iso
from faultbook.backup.wal import (
    WAL_SEGMENT_SIZE,
    HistoryEntry,
    WalContinuity,
    parse_history,
    wal_archive_continuity,
    wal_files,
)
from faultbook.errors import BackupError, UsageError
from faultbook.inventory import Inventory

log = logging.getLogger(__name__)


DEFAULT_STANZA = "main"


# The OS users that may own a pgBackRest repository, tried in this order: the
# pgbackrest role runs everything as postgres; other installations use pgbackrest.
REPO_USERS = ("postgres", "pgbackrest")


BACKUP_TYPES = ("full", "diff", "incr")


BACKUP_COLUMNS = (
    "label",
    "type",
    "prior",
    "start",
    "stop",
    "duration_s",
    "lsn_start",
    "lsn_stop",
    "wal_start",
    "wal_stop",
    "size",
    "delta",
    "repo_size",
    "repo_delta",
    "error",
    "archive_min",
    "archive_max",
)


# ------------------------------------------------------------ the repository
def repo_host(inv: Inventory) -> str:
    """The repository host: ``pgbackrest_repo_host`` if the inventory sets it, else backup[0]."""
    name = inv.vars.get("pgbackrest_repo_host")
    return inv.host(str(name)).name if name else inv.group("backup")[0].name


def stanza_name(inv: Inventory) -> str:
    return str(inv.vars.get("pgbackrest_stanza", DEFAULT_STANZA))


def _error_line(text: str) -> str:
    """pgBackRest's ERROR lines (or the last line) of its output, as one line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR:" in ln]
    return " | ".join(errors or lines[-1:]) or "no output"


def as_owner(
    inv: Inventory, script: str, timeout: float = 60.0, stdin: bytes | None = None
) -> ssh.CommandResult:
    """Run the shell SCRIPT on the repository host as the repository's owner.

    The owner is the first of REPO_USERS that exists there (the pgbackrest role
    makes it ``postgres``; a dedicated ``pgbackrest`` user is the other common
    layout). The one place that knows who owns the repository.
    """
    host = repo_host(inv)
    r = None
    for user in REPO_USERS:
        r = ssh.run(
            inv,
            host,
            f"cd /tmp && sudo -n -u {user} sh -c {shlex.quote(script)}",
            timeout,
            stdin=stdin,
        )
        if "unknown user" not in r.stderr:
            break
    assert r is not None
    return r


def pgbackrest(inv: Inventory, args: Sequence[str], timeout: float = 60.0) -> str:
    """Run ``pgbackrest ARGS`` on the repository host as the repository's owner; its stdout.

    Raises BackupError with pgBackRest's error line when the command fails.
    """
    cmd_args = " ".join(shlex.quote(a) for a in args)
    r = as_owner(inv, f"exec pgbackrest {cmd_args}", timeout)
    if not r.ok:
        last = _error_line(r.stderr or r.stdout)
        raise BackupError(f"pgbackrest {cmd_args} on {repo_host(inv)} failed: {last}")
    return r.stdout


def check(inv: Inventory) -> str:
    """``pgbackrest check`` from the repository host: archiving and backups both work
    (after a failover: against the new primary)."""
    pgbackrest(inv, [f"--stanza={stanza_name(inv)}", "check"], timeout=120)
    return f"pgbackrest check passed on {repo_host(inv)}"


def info(inv: Inventory, timeout: float = 60.0) -> list[dict[str, Any]]:
    """``pgbackrest info --output=json`` from the repository host, as pgBackRest sends it."""
    out = pgbackrest(inv, ["info", "--output=json"], timeout=timeout)
    try:
        data = json.loads(out)
    except ValueError:
        raise BackupError(f"pgbackrest info did not answer JSON: {out.strip()[:200]}") from None
    return list(data)


def stanza(info_json: Sequence[Mapping[str, Any]], name: str = DEFAULT_STANZA) -> dict[str, Any]:
    """One stanza's section of ``info``; BackupError naming the stanzas there are."""
    for s in info_json:
        if s.get("name") == name:
            return dict(s)
    known = ", ".join(str(s.get("name")) for s in info_json) or "none"
    raise BackupError(f"the repository has no stanza {name!r}; stanzas: {known}")


def repository_status(
    info_json: Sequence[Mapping[str, Any]], name: str = DEFAULT_STANZA
) -> tuple[int, str]:
    """The stanza's status (0 ok, 2 no valid backups, 6 backup running, 99 other...) and message.

    Repository errors (an unreadable repository, a wrong cipher passphrase)
    are appended to the message.
    """
    s = stanza(info_json, name)
    status = s.get("status") or {}
    code = int(status.get("code", 99))
    message = str(status.get("message", "no status"))
    bad = [
        f"repo{r.get('key')}: {r['status'].get('message', '')}"
        for r in s.get("repo") or []
        if (r.get("status") or {}).get("code", 0) != 0
    ]
    if bad:
        message = f"{message} ({'; '.join(bad)})"
    return code, " ".join(message.split())


def check_repository(info_json: Sequence[Mapping[str, Any]], name: str = DEFAULT_STANZA) -> None:
    """Raise BackupError unless the stanza reports status ok (code 0)."""
    code, message = repository_status(info_json, name)
    if code != 0:
        raise BackupError(f"pgBackRest stanza {name!r} is not ok: status {code}: {message}")


def backup_running(info_json: Sequence[Mapping[str, Any]], name: str = DEFAULT_STANZA) -> bool:
    """True when pgBackRest holds the stanza's backup lock (a backup or expire runs)."""
    lock = (stanza(info_json, name).get("status") or {}).get("lock") or {}
    return bool((lock.get("backup") or {}).get("held"))


# ------------------------------------------------------------------ backups
def _archive_for_db(s: Mapping[str, Any], db_id: Any) -> tuple[str | None, str | None]:
    for a in s.get("archive") or []:
        if (a.get("database") or {}).get("id") == db_id:
            return a.get("min"), a.get("max")
    return None, None


def archive_range(
    info_json: Sequence[Mapping[str, Any]], name: str = DEFAULT_STANZA
) -> tuple[str | None, str | None]:
    """The oldest and newest archived WAL segment of the stanza's current database.

    (None, None) when nothing is archived. The current database is the
    newest one in ``db`` (a ``stanza-upgrade`` adds one).
    """
    s = stanza(info_json, name)
    dbs = s.get("db") or []
    if not dbs:
        return None, None
    current = max(dbs, key=lambda d: int(d.get("id", 0)))
    return _archive_for_db(s, current.get("id"))


def _utc_from_epoch(value: Any) -> Any:
    return pd.Timestamp(int(value), unit="s", tz="UTC") if value is not None else pd.NaT


def backups(info_json: Sequence[Mapping[str, Any]], name: str = DEFAULT_STANZA) -> pd.DataFrame:
    """One row per backup of the stanza, oldest first (columns in ``BACKUP_COLUMNS``)."""
    s = stanza(info_json, name)
    rows = []
    for b in s.get("backup") or []:
        ts = b.get("timestamp") or {}
        lsn = b.get("lsn") or {}
        wal = b.get("archive") or {}
        binfo = b.get("info") or {}
        repo = binfo.get("repository") or {}
        amin, amax = _archive_for_db(s, (b.get("database") or {}).get("id"))
        start, stop = _utc_from_epoch(ts.get("start")), _utc_from_epoch(ts.get("stop"))
        rows.append(
            {
                "label": str(b["label"]),
                "type": str(b.get("type", "")),
                "prior": b.get("prior"),
                "start": start,
                "stop": stop,
                "duration_s": (stop - start).total_seconds() if ts else float("nan"),
                "lsn_start": lsn.get("start"),
                "lsn_stop": lsn.get("stop"),
                "wal_start": wal.get("start"),
                "wal_stop": wal.get("stop"),
                "size": binfo.get("size"),
                "delta": binfo.get("delta"),
                "repo_size": repo.get("size"),
                "repo_delta": repo.get("delta"),
                "error": bool(b.get("error", False)),
                "archive_min": amin,
                "archive_max": amax,
            }
        )
    df = pd.DataFrame(rows, columns=list(BACKUP_COLUMNS))
    for col in ("start", "stop"):
        df[col] = pd.Series(pd.to_datetime(df[col], utc=True), dtype="datetime64[ns, UTC]")
    for col in ("size", "delta", "repo_size", "repo_delta"):
        df[col] = df[col].astype("Int64")
    df["duration_s"] = df["duration_s"].astype("float64")
    df["error"] = df["error"].astype(bool)
    text_cols = ("prior", "lsn_start", "lsn_stop", "wal_start", "wal_stop")
    for col in (*text_cols, "archive_min", "archive_max"):
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    return df.sort_values(["stop", "label"], kind="stable").reset_index(drop=True)


def latest_by_type(backups_df: pd.DataFrame, now: datetime) -> dict[str, dict[str, Any]]:
    """For each backup type: the newest backup's label, stop time and age (None without one)."""
    out: dict[str, dict[str, Any]] = {}
    for kind in BACKUP_TYPES:
        part = backups_df[backups_df["type"] == kind]
        if part.empty:
            out[kind] = {"label": None, "stop": None, "age": None}
            continue
        row = part.iloc[-1]
        stop = row["stop"].to_pydatetime()
        out[kind] = {"label": row["label"], "stop": stop, "age": _aware(now, "now") - stop}
    return out


# ------------------------------------------------------------- WAL archive
def archive_id(info_json: Sequence[Mapping[str, Any]], name: str = DEFAULT_STANZA) -> str:
    """The archive id of the stanza's current database, e.g. "15-1"."""
    s = stanza(info_json, name)
    dbs = s.get("db") or []
    if not dbs:
        raise BackupError(f"stanza {name!r} has no database in its info")
    current = max(dbs, key=lambda d: int(d.get("id", 0)))
    return f"{current['version']}-{current['id']}"


def archive_files(
    inv: Inventory, info_json: Sequence[Mapping[str, Any]] | None = None
) -> list[str]:
    """Every file under the stanza's current archive (``repo-ls --recurse``), relative paths."""
    name = stanza_name(inv)
    aid = archive_id(info_json if info_json is not None else info(inv), name)
    out = pgbackrest(
        inv,
        [f"--stanza={name}", "repo-ls", f"archive/{name}/{aid}", "--recurse", "--output=json"],
        timeout=120,
    )
    listing = json.loads(out)
    return sorted(p for p, meta in listing.items() if meta.get("type") == "file")


def timeline_history(
    inv: Inventory, timeline: int, info_json: Sequence[Mapping[str, Any]] | None = None
) -> list[HistoryEntry]:
    """The history file of ``timeline`` from the archive (``repo-get`` decrypts it)."""
    if timeline <= 1:
        return []
    name = stanza_name(inv)
    aid = archive_id(info_json if info_json is not None else info(inv), name)
    out = pgbackrest(
        inv, [f"--stanza={name}", "repo-get", f"archive/{name}/{aid}/{timeline:08X}.history"]
    )
    return parse_history(out)


def check_archive(
    inv: Inventory,
    info_json: Sequence[Mapping[str, Any]] | None = None,
    segment_size: int = WAL_SEGMENT_SIZE,
) -> WalContinuity:
    """Continuity of the repository's archive from the oldest backup's first segment onwards."""
    info_json = info_json if info_json is not None else info(inv)
    files = archive_files(inv, info_json)
    newest = wal_files(files, segment_size).newest_timeline
    history = timeline_history(inv, newest, info_json) if newest > 1 else []
    df = backups(info_json, stanza_name(inv))
    required = df["wal_start"].dropna()
    return wal_archive_continuity(
        files,
        history=history,
        timeline=newest or None,
        required_from=str(required.iloc[0]) if len(required) else None,
        segment_size=segment_size,
    )


# ------------------------------------------------------------------- space
def free_space_bytes(inv: Inventory, host: str, path: str) -> int:
    """Bytes available to root at ``path`` on ``host`` (its nearest existing parent).

    An inventory host that is not known raises InventoryError (exit 2).
    """
    h = inv.host(host)
    script = (
        f"p={shlex.quote(path)}; "
        'while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname "$p"); done; '
        'df -B1 --output=avail "$p"'
    )
    r = ssh.run(inv, h, script, timeout=15)
    lines = r.stdout.split()
    if not r.ok or len(lines) < 2 or not lines[-1].isdigit():
        raise BackupError(f"cannot read the free space of {host}:{path}: {_error_line(r.stderr)}")
    return int(lines[-1])


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_space(needed: int, available: int, where: str = "the target") -> None:
    """BackupError when ``available`` bytes are fewer than ``needed``."""
    if available < needed:
        raise BackupError(
            f"not enough space on {where}: the restore needs {human_bytes(needed)}, "
            f"{human_bytes(available)} is free ({human_bytes(needed - available)} short)"
        )


# ---------------------------------------------------------- on-demand backup
@dataclass(frozen=True)
class BackupRun:
    """An on-demand backup: its label and the playbook's outcome."""

    label: str
    type: str
    duration_s: float
    row: dict[str, Any] = field(repr=False, default_factory=dict)


def run_backup(inv: Inventory, backup_type: str = "incr", event_handler: Any = None) -> BackupRun:
    """Take a backup now with playbooks/backup_now.yml; the new backup's row.

    The playbook starts the repository host's ``pgbackrest-backup@TYPE``
    service (the one the timers start) and waits for it.
    """
    from faultbook import ansible

    if backup_type not in BACKUP_TYPES:
        raise UsageError(
            f"unknown backup type {backup_type!r}; expected one of {', '.join(BACKUP_TYPES)}"
        )
    before = set(backups(info(inv), stanza_name(inv))["label"])
    t0 = time.monotonic()
    ansible.run_playbook(
        "backup_now.yml",
        inv,
        extravars={"backup_type": backup_type, "pgbackrest_repo_host": repo_host(inv)},
        event_handler=event_handler,
    )
    duration = time.monotonic() - t0
    df = backups(info(inv), stanza_name(inv))
    new = df[~df["label"].isin(before)]
    if new.empty:
        raise BackupError(
            f"backup_now.yml succeeded but the repository shows no new backup "
            f"(newest: {df['label'].iloc[-1] if len(df) else 'none'})"
        )
    row = {str(k): v for k, v in new.iloc[-1].to_dict().items()}
    return BackupRun(str(row["label"]), str(row["type"]), duration, row)


_SIZES = ("size", "repo_size")


def table(backups_df: pd.DataFrame) -> str:
    """A plain-text table of backups for the CLI."""
    if backups_df.empty:
        return "no backups"
    head = (
        f"{'LABEL':<34} {'TYPE':<5} {'STOP (UTC)':<20} {'DUR':>5} "
        f"{'SIZE':>10} {'REPO':>10} {'WAL START':<24} WAL STOP"
    )
    lines = [head]
    for r in backups_df.to_dict("records"):
        stop = _iso(r["stop"])[:-1].replace("T", " ")
        size, repo = (human_bytes(float(r[c])) if pd.notna(r[c]) else "-" for c in _SIZES)
        lines.append(
            f"{r['label']:<34} {r['type']:<5} {stop:<20} {r['duration_s']:>4.0f}s "
            f"{size:>10} {repo:>10} {r['wal_start'] or '-':<24} {r['wal_stop'] or '-'}"
        )
    return "\n".join(lines)
