"""HTTP to the stack: the one session factory, the VIP's URL and the inventory's CA.

Every HTTP client in faultbook (client load, Prometheus, HAProxy's stats, the VIP) gets
its session here, so none of them goes through a proxy from the environment and every
TLS connection is checked against the inventory's CA.
"""

from __future__ import annotations

from pathlib import Path

import requests

from faultbook.inventory import Inventory
from faultbook.paths import state_dir


def ca_file(inv: Inventory) -> Path:
    """The CA that signed the stack's certificates (the pki role keeps it per inventory)."""
    return state_dir(inv) / "pki" / "ca.crt"


def vip_url(inv: Inventory, path: str = "/") -> str:
    return f"https://{inv.vars['vip']}{path}"


def session(inv: Inventory | None = None) -> requests.Session:
    """A requests session for stack traffic.

    trust_env is off: REQUESTS_CA_BUNDLE in the environment would otherwise
    override ``verify``, and stack traffic must never go through a proxy.
    With an inventory, certificates are verified against its CA.
    """
    s = requests.Session()
    s.trust_env = False
    if inv is not None:
        s.verify = str(ca_file(inv))
    return s
