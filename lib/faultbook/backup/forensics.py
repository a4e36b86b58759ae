"""The bad change: pg_waldump on the primary's pg_wal finds the transaction that deleted the
most rows of a table (or dropped/truncated it): its xid, its commit record's LSN and its
commit time. A restore to that LSN, exclusive, stops just before the transaction committed.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from faultbook import ssh
from faultbook.backup import targets
from faultbook.backup.restore import PG_BIN, PG_DATA
from faultbook.backup.wal import WalSegment
from faultbook.errors import BackupError, UsageError
from faultbook.inventory import Inventory
from faultbook.stack import psql
from faultbook.stack.psql import format_lsn, parse_lsn


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

    def target(self) -> targets.RestoreTarget:
        """Restore to just before the commit: this LSN, exclusive."""
        return targets.parse_target("lsn", self.commit_lsn)


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
    dboid = psql.psql(
        inv, primary, "SELECT oid FROM pg_database WHERE datname = :'db'", params={"db": db}
    )
    if not dboid.isdigit():
        raise BackupError(f"the primary {primary} has no database {db!r}")
    # The table may be gone (DROP TABLE): then only drops of the database's files count.
    relpath = psql.psql(
        inv,
        primary,
        "SELECT coalesce(pg_relation_filepath(to_regclass(:'table')), '')",
        db=db,
        params={"table": table},
    )
    tli = int(psql.psql(inv, primary, "SELECT timeline_id FROM pg_control_checkpoint()"))
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
