"""Restores onto a scratch host, and the proof of exactly which data came back.

Restoring
    ``restore`` runs playbooks/db_restore.yml on a host of the ``restore``
    group (never a db host): pgBackRest restores a backup, PostgreSQL replays
    WAL to the target and promotes, and the copy answers queries on that
    host's local socket. ``wipe`` (playbooks/db_restore_wipe.yml) deletes it.

Pre-flight (``preflight``)
    The repository's status, the age of the newest full and differential
    backups, the WAL archive's continuity, the restore host's free space,
    and that the repository passphrase in hand opens the repository.

Proof against the client ledger (``prove_pitr``, ``prove_recovered``)
    The load generator records every write it sent and every id the stack
    acknowledged. A restore to a target is exact when every write acknowledged
    before the target is in the copy and no write sent after it is.

The bad change (``find_bad_change``)
    pg_waldump on the primary's pg_wal finds the transaction that deleted
    the most rows of a table (or dropped/truncated it): its xid, its commit
    record's LSN and its commit time. A restore to that LSN, exclusive, stops
    just before the transaction committed.

Repair (``copy_back``)
    Rows that are in the restored copy but no longer in production go back
    into production with their original ids; rows written since are not
    touched. See docs/runbooks/backup-restore.md for why this and not
    promoting the copy.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from faultbook import ansible, backup, ssh, stack
from faultbook.errors import BackupError, FaultbookError, PassphraseError, UsageError
from faultbook.inventory import Inventory
from faultbook.wal import WalSegment, format_lsn, parse_lsn

log = logging.getLogger(__name__)

PG_VERSION = 15
PG_BIN = f"/usr/lib/postgresql/{PG_VERSION}/bin"
PG_DATA = f"/var/lib/postgresql/{PG_VERSION}/main"
RESTORE_TASK = "Restore | Restore from the repository"

# Free space a restore needs beyond the backup's size: WAL replayed into
# pg_wal and the server's own files.
SPACE_MARGIN = 1.10
SPACE_EXTRA_BYTES = 256 * 1024 * 1024


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
    target: backup.RestoreTarget,
    label: str = "",
    exclusive: bool = False,
    process_max: int | None = None,
    delta: bool | None = None,
    event_handler: Any = None,
) -> RestoreRun:
    """Restore onto ``host`` up to ``target`` and promote the copy there."""
    host = scratch_host(inv, host)
    df = backup.backups(backup.info(inv), backup.stanza_name(inv))
    if label:
        backup.check_label(df, label)
    chosen = label or backup.backup_for_target(df, target)
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


# ------------------------------------------------------------------- verify
@dataclass(frozen=True)
class VerifyResult:
    """``pgbackrest verify`` of one backup and the WAL it needs."""

    label: str
    status: str
    files: int
    valid_files: int
    wal: int
    valid_wal: int
    problems: tuple[str, ...]
    text: str = field(repr=False, default="")

    @property
    def ok(self) -> bool:
        return self.status == "ok" and not self.problems and self.files == self.valid_files > 0


_VERIFY_BACKUP = re.compile(
    r"backup: (?P<label>\S+), status: (?P<status>[^,]+), total files checked: (?P<n>\d+), "
    r"total valid files: (?P<v>\d+)"
)
_VERIFY_WAL = re.compile(r"total WAL checked: (?P<n>\d+), total valid WAL: (?P<v>\d+)")
_VERIFY_BAD = re.compile(
    r"missing: (\d+), checksum invalid: (\d+), size invalid: (\d+), other: (\d+)"
)


def parse_verify(text: str, label: str) -> VerifyResult:
    """Read ``pgbackrest verify --output=text --verbose`` for backup ``label``."""
    status = ""
    m = re.search(r"^\s*status: (\S+)", text, re.M)
    if m:
        status = m.group(1)
    files = valid = wal = valid_wal = 0
    b = next((x for x in _VERIFY_BACKUP.finditer(text) if x.group("label") == label), None)
    if b:
        files, valid = int(b.group("n")), int(b.group("v"))
        if b.group("status") != "valid":
            status = status if status != "ok" else "error"
    for w in _VERIFY_WAL.finditer(text):
        wal += int(w.group("n"))
        valid_wal += int(w.group("v"))
    problems = tuple(
        line.strip()
        for line in text.splitlines()
        if (mb := _VERIFY_BAD.search(line)) and any(int(x) for x in mb.groups())
    )
    if b is None:
        problems += (f"verify did not report backup {label}",)
    return VerifyResult(label, status or "unknown", files, valid, wal, valid_wal, problems, text)


def verify(inv: Inventory, label: str) -> VerifyResult:
    """``pgbackrest verify`` of backup ``label`` (its files and the WAL it needs)."""
    args = [f"--stanza={backup.stanza_name(inv)}", "verify", f"--set={label}"]
    try:
        out = backup.pgbackrest(inv, [*args, "--output=text", "--verbose"], timeout=1800)
    except BackupError as exc:
        # verify exits non-zero when it finds a problem; its report is the message.
        return VerifyResult(label, "error", 0, 0, 0, 0, (str(exc),))
    return parse_verify(out, label)


# --------------------------------------------------------------- passphrase
def check_passphrase(inv: Inventory, passphrase: str) -> None:
    """BackupError (exit 2) unless ``passphrase`` opens the repository.

    The passphrase reaches pgBackRest on the repository host through its
    standard input and an environment variable, never a command line.
    """
    host = backup.repo_host(inv)
    name = backup.stanza_name(inv)
    script = (
        "IFS= read -r PGBACKREST_REPO1_CIPHER_PASS; export PGBACKREST_REPO1_CIPHER_PASS; "
        f"cd /tmp && exec pgbackrest --stanza={shlex.quote(name)} --output=json info"
    )
    for user in backup.REPO_USERS:
        r = ssh.run(
            inv,
            host,
            f"sudo -n -u {user} sh -c {shlex.quote(script)}",
            timeout=60,
            stdin=(passphrase + "\n").encode(),
        )
        if "unknown user" not in r.stderr:
            break
    import json

    problem = ""
    if not r.ok:
        problem = backup._error_line(r.stderr or r.stdout)
    else:
        try:
            code, message = backup.repository_status(json.loads(r.stdout, strict=False), name)
        except (ValueError, BackupError) as exc:
            code, message = 99, str(exc)
        if code not in (0, 2):
            problem = message
    if problem:
        problem = "".join(c if c.isprintable() else " " for c in problem)
        problem = " ".join(problem.split())[:200]
        raise PassphraseError(
            f"the repository passphrase does not open stanza {name!r} on {host} "
            f"(pgBackRest: {problem}); expected the passphrase the repository was created with"
        )


# ---------------------------------------------------------------- pre-flight
@dataclass(frozen=True)
class Preflight:
    """What every backup-restore mode checks before it touches anything."""

    status: str
    backups: pd.DataFrame = field(repr=False)
    ages: dict[str, Any]
    archive: Any  # faultbook.wal.WalContinuity
    free_bytes: int
    needed_bytes: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> pd.DataFrame:
        def age(kind: str) -> str:
            a = self.ages.get(kind, {}).get("age")
            return "none" if a is None else f"{a.total_seconds() / 3600:.1f} h"

        rows = [
            ("repository", self.status),
            ("newest full backup", f"{self.ages.get('full', {}).get('label')} ({age('full')} old)"),
            ("newest diff backup", f"{self.ages.get('diff', {}).get('label')} ({age('diff')} old)"),
            ("WAL archive", self.archive.summary() if self.archive is not None else "unknown"),
            (
                "restore host space",
                f"{backup.human_bytes(self.free_bytes)} free, "
                f"{backup.human_bytes(self.needed_bytes)} needed",
            ),
        ]
        return pd.DataFrame(rows, columns=["check", "result"])


def needed_bytes(backups_df: pd.DataFrame) -> int:
    """Space a restore of the newest backup needs on the scratch host."""
    if backups_df.empty:
        return 0
    size = backups_df["size"].dropna()
    biggest = int(size.max()) if len(size) else 0
    return int(biggest * SPACE_MARGIN) + SPACE_EXTRA_BYTES


def preflight(
    inv: Inventory,
    host: str,
    now: datetime | None = None,
    max_full_age_h: float = 8 * 24,
    max_diff_age_h: float = 2 * 24,
    passphrase: str | None = None,
) -> Preflight:
    """Check the repository, backup ages, WAL continuity and the scratch host's space.

    Raises on what makes any restore impossible (unknown host: exit 2; no
    backup, unreadable repository, too little space, wrong passphrase);
    stale backups and archive gaps are ``problems`` the runbook reports and
    stops on.
    """
    host = scratch_host(inv, host)
    now = now or datetime.now(UTC)
    if passphrase is not None:
        check_passphrase(inv, passphrase)
    info_json = backup.info(inv)
    name = backup.stanza_name(inv)
    code, message = backup.repository_status(info_json, name)
    df = backup.backups(info_json, name)
    problems: list[str] = []
    if code != 0:
        problems.append(f"stanza {name} status {code}: {message}")
    backup._require_backups(df)
    ages = backup.latest_by_type(df, now)
    for kind, limit in (("full", max_full_age_h), ("diff", max_diff_age_h)):
        age = ages[kind]["age"]
        newer_full = kind == "diff" and ages["full"]["age"] is not None
        if age is None and not newer_full:
            problems.append(f"no {kind} backup")
        elif age is not None and age.total_seconds() > limit * 3600:
            if kind == "diff" and ages["full"]["age"].total_seconds() <= limit * 3600:
                continue  # a full backup newer than the limit covers it
            problems.append(f"newest {kind} backup is {age.total_seconds() / 3600:.1f} h old")
    archive = backup.check_archive(inv, info_json)
    if not archive.ok:
        problems.append(f"WAL archive: {archive.summary()}")
    free = backup.free_space_bytes(inv, host, PG_DATA)
    need = needed_bytes(df)
    backup.check_space(need, free, f"{host}:{PG_DATA}")
    return Preflight(
        status=f"{code} {message}",
        backups=df,
        ages=ages,
        archive=archive,
        free_bytes=free,
        needed_bytes=need,
        problems=tuple(problems),
    )


# ---------------------------------------------------------- the WAL archive
def archive_now(inv: Inventory, primary: str, timeout_s: float = 60.0) -> str:
    """Close the primary's current WAL segment and wait until it is archived.

    Until then a restore cannot reach a target in it. Returns the segment.
    """
    import time

    out = stack.psql(inv, primary, "SELECT pg_walfile_name(pg_switch_wal()), pg_current_wal_lsn()")
    segment = out.split("|")[0].strip()
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        last = stack.psql(
            inv, primary, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver"
        ).strip()
        if re.fullmatch(r"[0-9A-F]{24}", last) and _seg_key(last) >= _seg_key(segment):
            return segment
        time.sleep(0.5)
    raise BackupError(
        f"WAL segment {segment} was not archived within {timeout_s:g}s "
        f"(last archived: {last or 'none'}); check archiving with `pgbackrest check`"
    )


def _seg_key(name: str) -> tuple[int, int]:
    s = WalSegment.parse(name)
    return s.timeline, s.number()


# ----------------------------------------------------------- the bad change
@dataclass(frozen=True)
class BadChange:
    """A destructive transaction found in the WAL."""

    kind: str  # "delete" or "drop" (DROP TABLE / TRUNCATE: the table's file is dropped)
    xid: int
    rows: int  # heap tuples it deleted (0 for drop)
    commit_lsn: str
    commit_time: datetime
    source: str  # where T came from: "wal" or "parameter"

    def target(self) -> backup.RestoreTarget:
        """Restore to just before the commit: this LSN, exclusive."""
        return backup.parse_target("lsn", self.commit_lsn)


_WD_HEAP = re.compile(r"^rmgr: Heap2?\s.*?tx:\s+(\d+), lsn: ([0-9A-F]+/[0-9A-F]+).*desc: DELETE")
_WD_COMMIT = re.compile(
    r"^rmgr: Transaction\s.*?tx:\s+(\d+), lsn: ([0-9A-F]+/[0-9A-F]+).*desc: COMMIT "
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (\w+)(.*)$"
)


def parse_waldump(text: str, relpath: str, db_dir: str = "") -> list[BadChange]:
    """Destructive committed transactions on ``relpath`` ("base/DB/REL") in pg_waldump output.

    Heap DELETE records are counted per xid for the relation (pg_waldump's
    ``rel SPC/DB/REL``); a COMMIT that drops the relation's file is a
    DROP TABLE or TRUNCATE. With ``db_dir`` ("base/DB"), a COMMIT that drops
    any file of that database counts as a drop too: after a DROP TABLE the
    table has no file to name, and a TRUNCATE gives it a new one. Only
    committed transactions are returned, in commit order.
    """
    spc_rel = "1663/" + relpath.split("/", 1)[1] if relpath.startswith("base/") else relpath
    deletes: dict[int, int] = {}
    out: list[BadChange] = []
    for line in text.splitlines():
        m = _WD_HEAP.match(line)
        if m and f"rel {spc_rel} " in line + " ":
            xid = int(m.group(1))
            deletes[xid] = deletes.get(xid, 0) + 1
            continue
        c = _WD_COMMIT.match(line)
        if not c:
            continue
        xid, lsn, ts, tz, rest = int(c.group(1)), c.group(2), c.group(3), c.group(4), c.group(5)
        when = pd.Timestamp(f"{ts} {tz}").tz_convert("UTC").to_pydatetime()
        dropped = (
            bool(relpath) and re.search(rf"rels:[^;]*\b{re.escape(relpath)}\b", rest) is not None
        )
        if db_dir and not dropped:
            dropped = re.search(rf"rels:[^;]*\b{re.escape(db_dir)}/\d+\b", rest) is not None
        # Deletes in committed subtransactions (savepoints) carry their own xids.
        subs = re.search(r"; subxacts:((?: \d+)+)", rest)
        xids = [xid, *(int(x) for x in subs.group(1).split())] if subs else [xid]
        rows = sum(deletes.get(x, 0) for x in xids)
        if rows or dropped:
            kind = "drop" if dropped else "delete"
            out.append(BadChange(kind, xid, rows, lsn, when, "wal"))
    return sorted(out, key=lambda b: parse_lsn(b.commit_lsn))


def bad_changes(
    inv: Inventory,
    primary: str,
    table: str = "orders",
    db: str = "ledger",
    since_lsn: str | None = None,
) -> list[BadChange]:
    """Every committed DELETE (or DROP/TRUNCATE) on ``table`` in the primary's pg_wal, oldest first.

    pg_waldump reads from ``since_lsn`` (default: the oldest segment still in
    pg_wal) to the end of the WAL, on the primary, as postgres.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", table):
        raise UsageError(f"table name {table!r} is not a plain identifier")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", db):
        raise UsageError(f"database name {db!r} is not a plain identifier")
    dboid = stack.psql(inv, primary, f"SELECT oid FROM pg_database WHERE datname = '{db}'")
    if not dboid.isdigit():
        raise BackupError(f"the primary {primary} has no database {db!r}")
    # The table may be gone (DROP TABLE): then only drops of the database's files count.
    relpath = stack.psql(
        inv, primary, f"SELECT coalesce(pg_relation_filepath(to_regclass('{table}')), '')", db=db
    )
    tli = int(stack.psql(inv, primary, "SELECT timeline_id FROM pg_control_checkpoint()"))
    start = since_lsn
    if start is None:
        r = ssh.run(inv, primary, f"sudo -n ls {PG_DATA}/pg_wal", timeout=15)
        names = sorted(n for n in r.stdout.split() if re.fullmatch(r"[0-9A-F]{24}", n))
        mine = [n for n in names if int(n[:8], 16) == tli] or names
        if not mine:
            raise BackupError(f"no WAL segment in {primary}:{PG_DATA}/pg_wal")
        start = format_lsn(WalSegment.parse(mine[0]).number() * 16 * 1024 * 1024)
    heap = f"rel 1663/{relpath.split('/', 1)[1]} .*|" if relpath else ""
    script = (
        f"cd {PG_DATA}/pg_wal && TZ=UTC {PG_BIN}/pg_waldump -p . -t {tli} -s {start} 2>/dev/null "
        f"| grep -E '{heap}^rmgr: Transaction .*desc: COMMIT' "
        "| grep -E 'desc: (DELETE|COMMIT)'; true"
    )
    r = ssh.run(
        inv, primary, f"cd /tmp && sudo -n -u postgres sh -c {shlex.quote(script)}", timeout=300
    )
    return parse_waldump(r.stdout, relpath, db_dir=f"base/{dboid}")


def pick_bad_change(found: Sequence[BadChange], min_rows: int = 1) -> BadChange:
    """The newest drop, or the newest DELETE of at least ``min_rows`` rows."""
    for b in reversed(found):
        if b.kind == "drop" or b.rows >= min_rows:
            return b
    raise BackupError(
        f"no transaction that deleted {min_rows}+ rows (or dropped the table) is in the WAL "
        "still on the primary; give the time of the change as bad_change_time"
    )


def find_bad_change(
    inv: Inventory,
    primary: str,
    table: str = "orders",
    db: str = "ledger",
    min_rows: int = 1,
    since_lsn: str | None = None,
) -> BadChange:
    """The newest destructive transaction on ``table`` in the primary's WAL (pg_waldump)."""
    return pick_bad_change(bad_changes(inv, primary, table, db, since_lsn), min_rows)


def changes_frame(found: Sequence[BadChange]) -> pd.DataFrame:
    cols = ["kind", "xid", "rows", "commit_lsn", "commit_time"]
    return pd.DataFrame([{c: getattr(b, c) for c in cols} for b in found], columns=cols)


def bad_change_from_time(when: datetime) -> BadChange:
    """T given by the person: restore to just before this time."""
    when = when.astimezone(UTC)
    return BadChange("given", 0, 0, "", when, "parameter")


# -------------------------------------------------------------- the ledger
def ledger_rows(
    inv: Inventory, host: str, since: datetime | None = None, db: str = "ledger"
) -> pd.DataFrame:
    """Rows of ``orders`` on ``host`` (created at or after ``since``): every column."""
    where = ""
    if since is not None:
        where = f" WHERE created_at >= '{since.astimezone(UTC).isoformat()}'"
    out = stack.psql(
        inv,
        host,
        "COPY (SELECT id, idempotency_key, customer, amount_cents, created_at FROM orders"
        f"{where} ORDER BY id) TO STDOUT WITH (FORMAT csv)",
        db=db,
        timeout=300,
    )
    return _rows(out)


LEDGER_COLUMNS = ["id", "idempotency_key", "customer", "amount_cents", "created_at"]


def _rows(csv_text: str) -> pd.DataFrame:
    import io

    if not csv_text.strip():
        df = pd.DataFrame({c: pd.Series(dtype="object") for c in LEDGER_COLUMNS})
        df["id"] = df["id"].astype("int64")
        df["created_at"] = pd.to_datetime(df["created_at"], utc=True)
        return df
    df = pd.read_csv(
        io.StringIO(csv_text),
        names=["id", "idempotency_key", "customer", "amount_cents", "created_at"],
        dtype={"idempotency_key": str, "customer": str},
        keep_default_na=False,  # a customer named "NA" or "null" is not NULL
        na_values=[""],
    )
    df["created_at"] = pd.to_datetime(df["created_at"], utc=True, format="ISO8601")
    return df


@dataclass(frozen=True)
class PitrProof:
    """A restored copy against the ledger of what clients were told."""

    cut_from: datetime
    cut_to: datetime
    acked_before: int  # writes acknowledged before the target
    sent_after: int  # writes sent after the target
    uncertain: int  # sent before, answered after: either outcome is correct
    missing: tuple[int, ...]  # acknowledged before the target, not in the copy
    unexpected: tuple[str, ...]  # sent after the target, in the copy (idempotency keys)
    rows: int  # ledger rows of this load in the copy

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected and self.acked_before > 0

    def summary(self) -> str:
        verdict = "EXACT" if self.ok else "WRONG"
        return (
            f"{verdict}: {self.acked_before} writes acknowledged before the target, "
            f"{len(self.missing)} of them missing; {self.sent_after} sent after it, "
            f"{len(self.unexpected)} of them present; {self.uncertain} in flight at the target"
        )


def _writes(records: pd.DataFrame) -> pd.DataFrame:
    return records[records["kind"].astype(str).str.upper() == "POST"]


def prove_pitr(
    records: pd.DataFrame,
    restored: pd.DataFrame,
    cut_from: datetime,
    cut_to: datetime | None = None,
) -> PitrProof:
    """Check a restored copy against the load's records for a target between two instants.

    ``cut_from``..``cut_to`` brackets the target as the client saw it (equal
    for a time target; the call that created an LSN or restore point for
    the others). Every write answered OK before ``cut_from`` must be in the
    copy (by id and idempotency key); no write sent after ``cut_to`` may be.
    """
    cut_to = cut_to or cut_from
    w = _writes(records)
    a = pd.Timestamp(cut_from)
    b = pd.Timestamp(cut_to)
    acked = w[w["ok"] & w["order_id"].notna() & (w["answered_at"] < a)]
    after = w[w["sent_at"] > b]
    uncertain = len(w) - len(acked) - len(after) - len(w[~w["ok"] & (w["answered_at"] < a)])
    keys = set(restored["idempotency_key"].astype(str))
    ids = set(int(i) for i in restored["id"])
    missing = tuple(
        sorted(
            int(oid)
            for oid, key in zip(acked["order_id"], acked["idempotency_key"], strict=True)
            if int(oid) not in ids or str(key) not in keys
        )
    )
    unexpected = tuple(sorted(str(k) for k in after["idempotency_key"] if str(k) in keys))
    return PitrProof(
        cut_from=cut_from,
        cut_to=cut_to,
        acked_before=len(acked),
        sent_after=len(after),
        uncertain=max(uncertain, 0),
        missing=missing,
        unexpected=unexpected,
        rows=len(restored),
    )


@dataclass(frozen=True)
class Recovered:
    """Rows in the restored copy that production no longer has."""

    rows: pd.DataFrame = field(repr=False)
    expected: tuple[int, ...]  # what the bad change deleted, when known
    missing: tuple[int, ...]  # deleted, yet not in the copy
    extra: tuple[int, ...]  # in the copy and gone from production, not deleted by the change

    @property
    def ids(self) -> set[int]:
        return set(int(i) for i in self.rows["id"])

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra and len(self.rows) > 0


def prove_recovered(
    restored: pd.DataFrame, production_ids: Iterable[int], deleted: Iterable[int] | None = None
) -> Recovered:
    """The rows that came back: in the copy, not in production; against what was deleted."""
    prod = set(int(i) for i in production_ids)
    back = restored[~restored["id"].astype(int).isin(prod)].reset_index(drop=True)
    got = set(int(i) for i in back["id"])
    exp = set(int(i) for i in deleted) if deleted is not None else got
    return Recovered(
        rows=back,
        expected=tuple(sorted(exp)),
        missing=tuple(sorted(exp - got)),
        extra=tuple(sorted(got - exp)),
    )


def production_ids(inv: Inventory, primary: str, db: str = "ledger") -> set[int]:
    out = stack.psql(inv, primary, "SELECT id FROM orders", db=db, timeout=300)
    return {int(x) for x in out.split()}


def _literal(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "NULL"
    if isinstance(value, (int,)) or (hasattr(value, "dtype") and str(value).lstrip("-").isdigit()):
        return str(int(value))
    if isinstance(value, pd.Timestamp):
        value = value.isoformat()
    return "'" + str(value).replace("'", "''") + "'"


def copy_back_sql(rows: pd.DataFrame) -> list[str]:
    """INSERT statements (1000 rows each) that put ``rows`` back with their ids.

    ``ON CONFLICT DO NOTHING``: a row already back (a re-run, or the app
    retrying the same idempotency key) is left alone, so the repair can be
    run again safely.
    """
    cols = ["id", "idempotency_key", "customer", "amount_cents", "created_at"]
    out = []
    records = rows[cols].to_dict("records")
    for i in range(0, len(records), 1000):
        values = ",".join(
            "(" + ",".join(_literal(r[c]) for c in cols) + ")" for r in records[i : i + 1000]
        )
        out.append(f"INSERT INTO orders ({', '.join(cols)}) VALUES {values} ON CONFLICT DO NOTHING")
    return out


def copy_back(inv: Inventory, primary: str, rows: pd.DataFrame, db: str = "ledger") -> int:
    """Insert ``rows`` into production's ``orders`` in one transaction; how many went in."""
    if rows.empty:
        return 0
    statements = copy_back_sql(rows)
    sql = "BEGIN;\n" + ";\n".join(statements) + ";\nCOMMIT;"
    cmd = (
        f"cd /tmp && sudo -n -u postgres psql -X -q -v ON_ERROR_STOP=1 -d {shlex.quote(db)} "
        "-f - && sudo -n -u postgres psql -X -A -t -d "
        + shlex.quote(db)
        + " -c "
        + shlex.quote(
            "SELECT count(*) FROM orders WHERE id = ANY(ARRAY["
            + ",".join(str(int(i)) for i in rows["id"])
            + "]::bigint[])"
        )
    )
    r = ssh.run(inv, primary, cmd, timeout=300, stdin=sql.encode())
    if not r.ok:
        raise FaultbookError(f"copying rows back on {primary} failed: {r.stderr.strip()[:300]}")
    return int(r.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------- compare
@dataclass(frozen=True)
class Comparison:
    """A restored copy against the primary, for rows that existed when the backup ended."""

    before: datetime
    restored_rows: int
    primary_rows: int
    restored_digest: str
    primary_digest: str
    later_rows: int  # rows in the copy created after ``before``
    later_missing: tuple[int, ...]  # of those, not on the primary with every column equal

    @property
    def ok(self) -> bool:
        return (
            self.restored_rows == self.primary_rows
            and self.restored_digest == self.primary_digest
            and not self.later_missing
        )


def _digest_sql(before: datetime, below_xid: int | None = None) -> str:
    older = f" AND xmin::text::bigint < {int(below_xid)}" if below_xid is not None else ""
    return (
        "SELECT count(*), coalesce(md5(string_agg(md5(t::text), '' ORDER BY id)), '') "
        f"FROM orders t WHERE created_at < '{before.astimezone(UTC).isoformat()}'{older}"
    )


NEXT_XID_SQL = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"


def compare(
    inv: Inventory, host: str, primary: str, before: datetime, db: str = "ledger"
) -> Comparison:
    """Compare the copy on ``host`` with ``primary``: every row created before ``before``.

    Rows created before the backup started are identical on both (count and
    an MD5 over every column, in id order), leaving out on the primary rows
    inserted after the backup (their xmin is not older than the copy's next
    xid); rows the copy has from later on must each be on the primary,
    identical.
    """
    # A backup taken before the ledger's table existed restores without it:
    # then the primary must have no row from before the backup either.
    exists = stack.psql(inv, host, "SELECT to_regclass('orders') IS NOT NULL", db=db) == "t"
    # A row the primary got after the backup but with an old created_at (a
    # copy-back repair puts deleted rows back with their ids and times) is not
    # in the backup. So the primary's side counts only rows inserted by a
    # transaction older than the copy's next transaction id (same xid epoch).
    below: int | None = None
    if exists:
        copy_next = int(stack.psql(inv, host, NEXT_XID_SQL, db=db))
        prim_next = int(stack.psql(inv, primary, NEXT_XID_SQL, db=db))
        if copy_next >> 32 == prim_next >> 32:
            below = copy_next & 0xFFFFFFFF
    r_out = (
        stack.psql(inv, host, _digest_sql(before), db=db, timeout=600).split("|")
        if exists
        else ["0", ""]
    )
    p_out = stack.psql(inv, primary, _digest_sql(before, below), db=db, timeout=600).split("|")
    later = ledger_rows(inv, host, since=before, db=db) if exists else _rows("")
    missing: tuple[int, ...] = ()
    if len(later):
        prod = ledger_rows(inv, primary, since=before, db=db)
        merged = later.merge(prod, how="left", on="id", suffixes=("", "_p"), indicator=True)
        same = merged["_merge"] == "both"
        for col in LEDGER_COLUMNS[1:]:  # every column, not only the key
            same &= merged[col] == merged[f"{col}_p"]
        missing = tuple(int(i) for i in merged.loc[~same, "id"])
    return Comparison(
        before=before,
        restored_rows=int(str(r_out[0])),
        primary_rows=int(str(p_out[0])),
        restored_digest=r_out[1],
        primary_digest=p_out[1],
        later_rows=len(later),
        later_missing=missing,
    )


def amcheck(inv: Inventory, host: str, db: str = "ledger") -> str:
    """pg_amcheck of every table and index in ``db`` on the scratch copy ("" = no corruption)."""
    cmd = (
        f"cd /tmp && sudo -n -u postgres psql -X -q -d {db} "
        "-c 'CREATE EXTENSION IF NOT EXISTS amcheck' "
        f"&& sudo -n -u postgres {PG_BIN}/pg_amcheck -d {db} --heapallindexed"
    )
    r = ssh.run(inv, host, cmd, timeout=600)
    if r.ok:
        return ""
    return (r.stdout + r.stderr).strip()[:500] or f"pg_amcheck exited {r.rc}"


def lsn_after(a: str, b: str) -> bool:
    return parse_lsn(a) > parse_lsn(b)


IMMEDIATE = backup.RestoreTarget("immediate", "immediate")

# ------------------------------------------------------------- data volume
SEED_DB = "faultbook_seed"
# pgbench -i: one scale unit is 100,000 accounts, about 15 MiB with its indexes.
SEED_MIB_PER_SCALE = 15.0


def seed_volume(inv: Inventory, primary: str, mib: float, db: str = SEED_DB) -> int:
    """At least ``mib`` MiB of pgbench tables in database ``db`` on the primary; its size in bytes.

    ``pgbench -i`` (server-side generation) when the database holds less;
    nothing when it already holds enough. Replicates and archives like any
    other write, so a full backup afterwards holds it.
    """
    if mib <= 0:
        return 0
    if not 1 <= mib <= 1024 * 1024:
        raise UsageError(f"seed size must be between 1 MiB and 1 TiB, got {mib!r} MiB")
    scale = max(1, int(-(-mib // SEED_MIB_PER_SCALE)))
    exists = stack.psql(inv, primary, f"SELECT 1 FROM pg_database WHERE datname = '{db}'")
    if not exists:
        stack.psql(inv, primary, f"CREATE DATABASE {db}")
    size = int(stack.psql(inv, primary, f"SELECT pg_database_size('{db}')"))
    if size >= mib * 1024 * 1024:
        return size
    cmd = f"cd /tmp && sudo -n -u postgres {PG_BIN}/pgbench -i -q -I dtGvp -s {scale} {db}"
    r = ssh.run(inv, primary, cmd, timeout=3600)
    if not r.ok:
        raise FaultbookError(f"pgbench -i on {primary} failed: {r.stderr.strip()[-300:]}")
    return int(stack.psql(inv, primary, f"SELECT pg_database_size('{db}')"))


def drop_caches(inv: Inventory, host: str) -> None:
    """Empty the page cache that ``host``'s files are in, so a timing starts cold.

    On a real host: its kernel's cache. In the lab every host shares the
    controller's kernel (a container cannot write /proc/sys), so the
    controller drops it.
    """
    r = ssh.run(inv, host, "sync && echo 3 > /proc/sys/vm/drop_caches", sudo=True, timeout=120)
    if r.ok:
        return
    if not inv.is_lab:
        raise BackupError(f"cannot drop the page cache on {host}: {r.stderr.strip()}")
    import subprocess
    from pathlib import Path

    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


RAW_PATH = "/var/lib/postgresql/faultbook-rawcopy"


def raw_copy_s(inv: Inventory, host: str, nbytes: int) -> float:
    """Seconds to copy ``nbytes`` with dd (4 MiB blocks, fsync) on ``host``'s disk, cache cold.

    The machine's physical limit for a restore of that size: the same bytes
    read and written on the same file system, nothing else.
    """
    src, dst = f"{RAW_PATH}.src", f"{RAW_PATH}.dst"
    r = ssh.run(
        inv, host, f"head -c {int(nbytes)} /dev/urandom > {src} && sync", sudo=True, timeout=900
    )
    if not r.ok:
        raise BackupError(f"cannot write {host}:{src}: {r.stderr.strip()}")
    drop_caches(inv, host)
    copy = (
        f"t0=$(date +%s.%N); dd if={src} of={dst} bs=4M conv=fsync status=none; rc=$?; "
        f"t1=$(date +%s.%N); rm -f {src} {dst}; echo $t0 $t1; exit $rc"
    )
    r = ssh.run(inv, host, copy, sudo=True, timeout=900)
    if not r.ok:
        raise BackupError(f"raw copy on {host} failed: {r.stderr.strip()}")
    t0, t1 = (float(x) for x in r.stdout.split()[-2:])
    return t1 - t0


def seed_digest(inv: Inventory, host: str, db: str = SEED_DB) -> str:
    """Row count and an order-independent hash of every row of pgbench_accounts."""
    return stack.psql(
        inv,
        host,
        "SELECT count(*), sum(hashtextextended(t::text, 0)) FROM pgbench_accounts t",
        db=db,
        timeout=600,
    )


# ------------------------------------------------------------------ drills
@dataclass(frozen=True)
class DrillTarget:
    """A restore target made during a drill, bracketed by the controller's clock."""

    target: backup.RestoreTarget
    cut_from: datetime  # just before the target was made
    cut_to: datetime  # just after


def make_target(inv: Inventory, primary: str, kind: str, name: str = "") -> DrillTarget:
    """Make a restore target of ``kind`` now: the time, the current LSN, or a restore point."""
    t0 = datetime.now(UTC)
    if kind == "time":
        return DrillTarget(as_target_time(t0), t0, t0)
    if kind == "lsn":
        lsn = stack.psql(inv, primary, "SELECT pg_current_wal_lsn()")
        t1 = datetime.now(UTC)
        return DrillTarget(backup.parse_target("lsn", lsn), t0, t1)
    if kind == "name":
        point = name or f"faultbook-{t0:%Y%m%dT%H%M%S}"
        backup.parse_target("name", point)  # refuses a bad name before it is created
        stack.psql(inv, primary, f"SELECT pg_create_restore_point('{point}')")
        t1 = datetime.now(UTC)
        return DrillTarget(backup.parse_target("name", point), t0, t1)
    raise UsageError(f"a drill makes a time, lsn or name target, not {kind!r}")


def bad_change(
    inv: Inventory, primary: str, customer: str, since: datetime
) -> tuple[set[int], datetime]:
    """The drill's accidental DELETE: every third order of ``customer`` since ``since``.

    Only the drill's own rows are touched. Returns the ids it deleted and the
    time just before it ran.
    """
    at = datetime.now(UTC)
    sql = (
        f"DELETE FROM orders WHERE customer = {_literal(customer)} "
        f"AND created_at >= '{since.astimezone(UTC).isoformat()}' AND id % 3 = 0 RETURNING id"
    )
    out = stack.psql(inv, primary, sql, db="ledger", timeout=60)
    # One id per line; psql ends with the command tag ("DELETE 57"), not an id.
    ids = {int(line) for line in out.splitlines() if line.strip().isdigit()}
    return ids, at


class scratch:  # noqa: N801 - used as a context manager: ``with restore.scratch(inv, host):``
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


def as_target_time(when: datetime) -> backup.RestoreTarget:
    return backup.parse_target("time", when.astimezone(UTC).isoformat())


__all__: Sequence[str] = (
    "BadChange",
    "Comparison",
    "PitrProof",
    "Preflight",
    "Recovered",
    "RestoreRun",
    "VerifyResult",
)
