"""The ledger's rows on a host, and the copy-back repair: rows that are in a restored copy
but no longer in production go back with their original ids (``ON CONFLICT DO NOTHING``);
rows written since are not touched. docs/runbooks/backup-restore.md says why this and not
promoting the copy.
"""

from __future__ import annotations

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
    where = ""
    if since is not None:
        where = f" WHERE created_at >= '{since.astimezone(UTC).isoformat()}'"
    out = psql.psql(
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
