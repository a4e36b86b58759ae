"""Talk to a provisioned stack: the app through the VIP, Prometheus, HAProxy, PostgreSQL.

Small helpers shared by runbooks, drills and tests. Everything goes through
the addresses in the inventory and TLS checked against the inventory's CA.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import requests

from faultbook import monitoring, ssh
from faultbook.errors import FaultbookError
from faultbook.inventory import Inventory
from faultbook.paths import faultbook_home


def ca_file(inv: Inventory) -> Path:
    """The CA that signed the stack's certificates (the pki role keeps it per inventory)."""
    base = faultbook_home() / ("lab" if inv.is_lab else f"inventories/{inv.name}")
    return base / "pki" / "ca.crt"


def vip_url(inv: Inventory, path: str = "/") -> str:
    return f"https://{inv.vars['vip']}{path}"


def session(inv: Inventory) -> requests.Session:
    """A session that verifies the stack's certificates against the inventory's CA.

    trust_env is off: REQUESTS_CA_BUNDLE in the environment would otherwise
    override ``verify``, and stack traffic must never go through a proxy.
    """
    s = requests.Session()
    s.trust_env = False
    s.verify = str(ca_file(inv))
    return s


def _plain() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # never through a proxy from the environment
    return s


def prometheus_url(inv: Inventory) -> str:
    return monitoring.prometheus_url(inv)


def prom_query(inv: Inventory, expr: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The raw ``result`` list of an instant query (see ``monitoring.query`` for a DataFrame)."""
    return monitoring.raw_query(inv, expr, timeout=timeout)


def firing_alerts(inv: Inventory, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Raw firing alerts (see ``monitoring.alerts`` for a DataFrame)."""
    return [a for a in monitoring.raw_alerts(inv, timeout=timeout) if a.get("state") == "firing"]


def psql(inv: Inventory, host: str, sql: str, db: str = "postgres", timeout: float = 15) -> str:
    """Run SQL as the postgres superuser over the local socket on a db host; tuples only."""
    cmd = (
        f"cd /tmp && sudo -u postgres psql -X -A -t -v ON_ERROR_STOP=1 -d {db} "
        f"-c {shlex.quote(sql)}"
    )
    r = ssh.run(inv, host, cmd, timeout=timeout)
    if not r.ok:
        raise FaultbookError(f"psql on {host} failed: {r.stderr.strip()}")
    return r.stdout.strip()


def primary(inv: Inventory) -> str:
    """The db host that is not in recovery; raise unless there is exactly one."""
    found = []
    for h in inv.group("db"):
        try:
            if psql(inv, h.name, "SELECT pg_is_in_recovery()", timeout=5) == "f":
                found.append(h.name)
        except (FaultbookError, ssh.SSHError):
            continue
    if len(found) != 1:
        raise FaultbookError(f"expected exactly one writable primary, found {found or 'none'}")
    return found[0]


def pgbackrest_info(inv: Inventory) -> list[dict[str, Any]]:
    """Raw ``pgbackrest info --output=json`` of the repository host (see ``backup.info``)."""
    from faultbook import backup

    return backup.info(inv)
