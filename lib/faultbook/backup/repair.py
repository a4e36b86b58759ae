"""The ledger's rows on a host, and the copy-back repair: rows that are in a restored copy
but no longer in production go back with their original ids (``ON CONFLICT DO NOTHING``);
rows written since are not touched. docs/runbooks/backup-restore.md says why this and not
promoting the copy.
"""

from __future__ import annotations

import numbers
import shlex
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from faultbook import ssh
from faultbook.errors import FaultbookError
from faultbook.inventory import Inventory
from faultbook.stack import psql


# -------------------------------------------------------------- the ledger
def ledger_rows(
    inv: Inventory, host: str, since: datetime | None = None, db: str = "ledger"
) -> pd.DataFrame:
    """Rows of ``orders`` on ``host`` (created at or after ``since``): every column."""
    since = since or datetime(1970, 1, 1, tzinfo=UTC)
    out = psql.psql(
        inv,
        host,
        "COPY (SELECT id, idempotency_key, customer, amount_cents, created_at FROM orders"
        " WHERE created_at >= :'since' ORDER BY id) TO STDOUT WITH (FORMAT csv)",
        db=db,
        timeout=300,
        params={"since": since.astimezone(UTC).isoformat()},
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


def ledger_summary(inv: Inventory, host: str, db: str = "ledger") -> tuple[int, str]:
    """How many orders ``host`` holds and when the newest was created ("" when none)."""
    out = psql.psql(
        inv, host, "SELECT count(*), coalesce(max(created_at)::text, '') FROM orders", db=db
    )
    count, _, newest = out.partition("|")
    return int(count), newest


def production_ids(inv: Inventory, primary: str, db: str = "ledger") -> set[int]:
    out = psql.psql(inv, primary, "SELECT id FROM orders", db=db, timeout=300)
    return {int(x) for x in out.split()}


# The copy-back, one transaction: the rows go into a temporary table as CSV (data, never
# SQL text), then into orders; rows already there (a re-run, or the app retrying the same
# idempotency key) are left alone, so the repair can be run again safely.
_COPY_BACK_HEAD = """\
BEGIN;
CREATE TEMP TABLE faultbook_copy_back (LIKE orders INCLUDING DEFAULTS) ON COMMIT DROP;
COPY faultbook_copy_back (id, idempotency_key, customer, amount_cents, created_at)
  FROM STDIN WITH (FORMAT csv);
"""
_COPY_BACK_TAIL = """\
INSERT INTO orders (id, idempotency_key, customer, amount_cents, created_at)
  SELECT id, idempotency_key, customer, amount_cents, created_at FROM faultbook_copy_back
  ON CONFLICT DO NOTHING;
SELECT count(*) FROM orders JOIN faultbook_copy_back USING (id);
COMMIT;
"""


def _csv_field(value: Any) -> str:
    """One CSV field for COPY: NULL unquoted and empty, every value quoted (so an empty
    string stays an empty string); whole numbers without a decimal point; times in UTC."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, datetime):  # pd.Timestamp is a datetime
        value = pd.Timestamp(value).tz_convert(UTC).isoformat()
    elif isinstance(value, numbers.Real) and float(value).is_integer():
        value = int(float(value))
    return '"' + str(value).replace('"', '""') + '"'


def copy_back_csv(rows: pd.DataFrame) -> str:
    """``rows`` as the CSV the copy-back loads (every column, NULL as an empty field)."""
    lines = [
        ",".join(_csv_field(r[c]) for c in LEDGER_COLUMNS)
        for r in rows[LEDGER_COLUMNS].to_dict("records")
    ]
    text = "".join(line + "\n" for line in lines)
    if any(line == "\\." for line in lines):
        raise FaultbookError("a row of the copy-back is the end-of-data marker '\\.'")
    return text


def copy_back_input(rows: pd.DataFrame) -> bytes:
    """What psql reads on its standard input for the copy-back: SQL, the CSV data, SQL."""
    return b"".join(
        (_COPY_BACK_HEAD.encode(), copy_back_csv(rows).encode(), b"\\.\n", _COPY_BACK_TAIL.encode())
    )


def copy_back(inv: Inventory, primary: str, rows: pd.DataFrame, db: str = "ledger") -> int:
    """Insert ``rows`` into production's ``orders`` in one transaction; how many went in."""
    if rows.empty:
        return 0
    cmd = (
        "cd /tmp && sudo -n -u postgres psql -X -q -A -t -v ON_ERROR_STOP=1 "
        f"-d {shlex.quote(db)} -f -"
    )
    r = ssh.run(inv, primary, cmd, timeout=300, stdin=copy_back_input(rows))
    if not r.ok:
        raise FaultbookError(f"copying rows back on {primary} failed: {r.stderr.strip()[:300]}")
    return int(r.stdout.strip().splitlines()[-1])
