"""SQL on the db hosts: ``psql`` over SSH as the postgres superuser, LSNs, and which host
is the primary."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from faultbook import ssh
from faultbook.errors import FaultbookError, ParseError, SSHError, StackError
from faultbook.inventory import Inventory

_LSN = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")


def parse_lsn(value: str) -> int:
    """'16/B374D848' -> its byte position; ValueError naming the text otherwise (callers
    that parse what a person typed turn it into a one-line usage error)."""
    text = str(value).strip()
    if not _LSN.fullmatch(text):
        raise ParseError(f"{value!r} is not an LSN (expected hex 'X/Y', e.g. 0/3000060)")
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(lsn: int) -> str:
    """Byte position -> 'X/Y' as PostgreSQL prints it."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def psql(
    inv: Inventory,
    host: str,
    sql: str,
    db: str = "postgres",
    timeout: float = 15,
    params: Mapping[str, object] | None = None,
) -> str:
    """Run SQL as the postgres superuser over the local socket on a db host; tuples only.

    Values never go into the SQL text: ``params`` become psql variables, and the SQL
    refers to them as ``:'name'`` (a quoted literal), ``:"name"`` (a quoted
    identifier) or ``:name`` (as is: only for numbers). psql quotes them itself, so
    a value holding a quote is data, not SQL. With ``params`` the SQL is read from
    standard input (psql does not interpolate variables in ``-c``).
    """
    base = f"cd /tmp && sudo -u postgres psql -X -A -t -v ON_ERROR_STOP=1 -d {shlex.quote(db)}"
    if params:
        names = "".join(f" -v {shlex.quote(f'{k}={v}')}" for k, v in params.items())
        r = ssh.run(inv, host, f"{base}{names} -f -", timeout=timeout, stdin=sql.encode())
    else:
        r = ssh.run(inv, host, f"{base} -c {shlex.quote(sql)}", timeout=timeout)
    if not r.ok:
        raise StackError(f"psql on {host} failed: {r.stderr.strip()}")
    return r.stdout.strip()


def current_lsn(inv: Inventory, host: str) -> str:
    """The primary's current WAL write position, as PostgreSQL prints it."""
    return psql(inv, host, "SELECT pg_current_wal_lsn()")


def primary(inv: Inventory) -> str:
    """The db host that is not in recovery; raise unless there is exactly one."""
    found = []
    for h in inv.group("db"):
        try:
            if psql(inv, h.name, "SELECT pg_is_in_recovery()", timeout=5) == "f":
                found.append(h.name)
        except (FaultbookError, SSHError):
            continue
    if len(found) != 1:
        raise StackError(f"expected exactly one writable primary, found {found or 'none'}")
    return found[0]
