"""Data faults a backup-restore drill makes on the primary: a restore target made now (a time,
the current LSN or a named restore point), and the accidental DELETE of the drill's own rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from faultbook.backup import targets
from faultbook.backup.targets import as_target_time
from faultbook.errors import UsageError
from faultbook.inventory import Inventory
from faultbook.stack import psql


# ------------------------------------------------------------------ drills
@dataclass(frozen=True)
class DrillTarget:
    """A restore target made during a drill, bracketed by the controller's clock."""

    target: targets.RestoreTarget
    cut_from: datetime  # just before the target was made
    cut_to: datetime  # just after


def make_target(inv: Inventory, primary: str, kind: str, name: str = "") -> DrillTarget:
    """Make a restore target of ``kind`` now: the time, the current LSN, or a restore point."""
    t0 = datetime.now(UTC)
    if kind == "time":
        return DrillTarget(as_target_time(t0), t0, t0)
    if kind == "lsn":
        lsn = psql.psql(inv, primary, "SELECT pg_current_wal_lsn()")
        t1 = datetime.now(UTC)
        return DrillTarget(targets.parse_target("lsn", lsn), t0, t1)
    if kind == "name":
        point = name or f"faultbook-{t0:%Y%m%dT%H%M%S}"
        targets.parse_target("name", point)  # refuses a bad name before it is created
        psql.psql(inv, primary, f"SELECT pg_create_restore_point('{point}')")
        t1 = datetime.now(UTC)
        return DrillTarget(targets.parse_target("name", point), t0, t1)
    raise UsageError(f"a drill makes a time, lsn or name target, not {kind!r}")


def bad_change(
    inv: Inventory, primary: str, customer: str, since: datetime
) -> tuple[set[int], datetime]:
    """The drill's accidental DELETE: every third order of ``customer`` since ``since``.

    Only the drill's own rows are touched. Returns the ids it deleted and the
    time just before it ran.
    """
    at = datetime.now(UTC)
    out = psql.psql(
        inv,
        primary,
        "DELETE FROM orders WHERE customer = :'customer' AND created_at >= :'since' "
        "AND id % 3 = 0 RETURNING id",
        db="ledger",
        timeout=60,
        params={"customer": customer, "since": since.astimezone(UTC).isoformat()},
    )
    # One id per line; psql ends with the command tag ("DELETE 57"), not an id.
    ids = {int(line) for line in out.splitlines() if line.strip().isdigit()}
    return ids, at
