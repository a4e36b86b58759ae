"""HTTP to the stack: the one session factory, the VIP's URL and the inventory's CA.

Every HTTP client in faultbook (client load, Prometheus, HAProxy's stats, the VIP) gets
its session here, so none of them goes through a proxy from the environment and every
TLS connection is checked against the inventory's CA.

Credentials come from the inventory's vault and are attached here, never by callers:

- ``ledger_session``: the ledger API's bearer token of one client (``LEDGER_CLIENTS``;
  the vault's ``vault_ledger_token_<client>``), sent to the VIP only.
- ``monitoring_session``: basic auth of user ``faultbook`` for Prometheus and
  Alertmanager (``vault_monitoring_faultbook_password``), which serve HTTPS.

Neither an auth object's ``repr`` nor an error message here holds a secret.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase, HTTPBasicAuth

from faultbook import secrets
from faultbook.errors import ParameterError
from faultbook.inventory import Inventory
from faultbook.paths import state_dir

# The ledger API's clients of ours, each with its own token (role ledger's
# ledger_api_tokens): the library (drills' load, runbooks, the alert benchmark),
# `make bench`'s wrk, the lab's integration tests.
LEDGER_CLIENTS = ("faultbook", "bench", "tests")
# Prometheus' and Alertmanager's basic-auth user for the controller (role monitoring).
MONITORING_USER = "faultbook"
MONITORING_PASSWORD_VAR = "vault_monitoring_faultbook_password"  # noqa: S105 - a variable name


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


def ledger_token_var(client: str) -> str:
    if client not in LEDGER_CLIENTS:
        raise ParameterError(
            f"ledger client {client!r} is unknown; expected one of {', '.join(LEDGER_CLIENTS)}"
        )
    return f"vault_ledger_token_{client}"


def ledger_token(inv: Inventory, client: str = "faultbook") -> str:
    """The bearer token of one ledger client, from the inventory's vault."""
    return secrets.require(
        inv,
        ledger_token_var(client),
        f"the ledger refuses /orders requests of client {client} without it",
    )


class BearerAuth(AuthBase):
    """``Authorization: Bearer`` on requests to one host only; its repr hides the token."""

    def __init__(self, token: str, host: str) -> None:
        self._token = token
        self.host = host

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if urlsplit(str(r.url)).hostname == self.host:
            r.headers["Authorization"] = f"Bearer {self._token}"
        return r

    def __repr__(self) -> str:
        return f"BearerAuth(host={self.host!r}, token=***)"


def ledger_session(inv: Inventory, client: str = "faultbook") -> requests.Session:
    """A session for the ledger API through the VIP, carrying CLIENT's bearer token."""
    s = session(inv)
    s.auth = BearerAuth(ledger_token(inv, client), str(inv.vars["vip"]))
    return s


def monitoring_auth(inv: Inventory) -> HTTPBasicAuth:
    """Basic auth for Prometheus and Alertmanager (their web config admits this user)."""
    password = secrets.require(
        inv,
        MONITORING_PASSWORD_VAR,
        "Prometheus and Alertmanager answer 401 without it",
    )
    return _HiddenBasicAuth(MONITORING_USER, password)


class _HiddenBasicAuth(HTTPBasicAuth):
    def __repr__(self) -> str:
        return f"HTTPBasicAuth(username={self.username!r}, password=***)"


def monitoring_session(inv: Inventory) -> requests.Session:
    """A session for the mon hosts' Prometheus and Alertmanager: their CA, basic auth."""
    s = session(inv)
    s.auth = monitoring_auth(inv)
    return s
