"""Is a restored copy sound? ``pgbackrest verify`` of a backup, the copy compared with the
primary (count and MD5 over every column), and pg_amcheck of its tables and indexes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from faultbook import ssh
from faultbook.backup import repository
from faultbook.backup.repair import LEDGER_COLUMNS, _rows, ledger_rows
from faultbook.backup.restore import PG_BIN
from faultbook.errors import BackupError
from faultbook.inventory import Inventory
from faultbook.stack import psql


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
    args = [f"--stanza={repository.stanza_name(inv)}", "verify", f"--set={label}"]
    try:
        out = repository.pgbackrest(inv, [*args, "--output=text", "--verbose"], timeout=1800)
    except BackupError as exc:
        # verify exits non-zero when it finds a problem; its report is the message.
        return VerifyResult(label, "error", 0, 0, 0, 0, (str(exc),))
    return parse_verify(out, label)


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


# Count and MD5 over every column, in id order, of the rows created before :'before'
# and inserted by a transaction older than :below (the copy's next xid; no limit: -1).
DIGEST_SQL = (
    "SELECT count(*), coalesce(md5(string_agg(md5(t::text), '' ORDER BY id)), '') "
    "FROM orders t WHERE created_at < :'before' "
    "AND (:below < 0 OR xmin::text::bigint < :below)"
)


def _digest(
    inv: Inventory, host: str, before: datetime, db: str, below_xid: int | None = None
) -> list[str]:
    below = -1 if below_xid is None else int(below_xid)  # -1: no limit (see DIGEST_SQL)
    params = {"before": before.astimezone(UTC).isoformat(), "below": below}
    return psql.psql(inv, host, DIGEST_SQL, db=db, timeout=600, params=params).split("|")


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
    exists = psql.psql(inv, host, "SELECT to_regclass('orders') IS NOT NULL", db=db) == "t"
    # A row the primary got after the backup but with an old created_at (a
    # copy-back repair puts deleted rows back with their ids and times) is not
    # in the backup. So the primary's side counts only rows inserted by a
    # transaction older than the copy's next transaction id (same xid epoch).
    below: int | None = None
    if exists:
        copy_next = int(psql.psql(inv, host, NEXT_XID_SQL, db=db))
        prim_next = int(psql.psql(inv, primary, NEXT_XID_SQL, db=db))
        if copy_next >> 32 == prim_next >> 32:
            below = copy_next & 0xFFFFFFFF
    r_out = _digest(inv, host, before, db) if exists else ["0", ""]
    p_out = _digest(inv, primary, before, db, below)
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
