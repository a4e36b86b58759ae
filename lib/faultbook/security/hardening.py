"""Checks of the hardening controls (issue 16's second half), gated by ``security_hardening``.

These controls are added by the hardening change (docs/security.md, "Hardening
controls"). Until the inventory sets ``security_hardening: true`` each check
is *skipped* with severity info and a note, so the audit passes on a stack
that does not have them yet; once set, a missing control is a high finding.

- ``hsts``: the VIP's HTTPS answer carries Strict-Transport-Security (testssl
  ``-h``, run with the TLS check);
- ``ledger-auth``: a POST /orders without a token is refused (401 or 403). The
  body is empty JSON, which the app rejects as invalid anyway, so an
  unprotected endpoint answers 400/422 and nothing is written even then;
- ``prometheus-auth`` / ``alertmanager-auth``: each mon host's API answers 401
  without credentials, over TLS (a plain-HTTP answer is a finding too).
"""

from __future__ import annotations

from collections.abc import Callable

import requests

from faultbook.inventory import Inventory
from faultbook.security.findings import Finding, passed, skipped
from faultbook.stack import http

NOTE = "hardening not deployed (security_hardening is not true): checked once it is"


def enabled(inv: Inventory) -> bool:
    v = inv.vars.get("security_hardening", False)
    return v is True or str(v).lower() in ("true", "yes", "1")


def gate(
    inv: Inventory, check: str, hosts: list[str], run: Callable[[], list[Finding]]
) -> list[Finding]:
    """Run the check when hardening is on; otherwise one info skip per host."""
    if not enabled(inv):
        return [
            skipped(
                check,
                h,
                NOTE,
                "set security_hardening: true once the hardening change is provisioned",
            )
            for h in hosts
        ]
    return run()


def hsts(host: str, present: bool, detail: str) -> list[Finding]:
    if present:
        return [passed("hsts", host, f"Strict-Transport-Security: {detail}")]
    return [
        Finding(
            "hsts",
            host,
            "high",
            f"the VIP sends no HSTS header ({detail})",
            "http-response set-header Strict-Transport-Security in the haproxy role",
        )
    ]


def ledger_auth(inv: Inventory, timeout: float = 5.0) -> list[Finding]:
    s = http.session(inv)
    try:
        r = s.post(http.vip_url(inv, "/orders"), json={}, timeout=timeout)
    except requests.RequestException as exc:
        return [Finding("ledger-auth", "VIP", "high", f"POST /orders did not answer: {exc}", "")]
    if r.status_code in (401, 403):
        return [passed("ledger-auth", "VIP", f"POST /orders without a token: {r.status_code}")]
    return [
        Finding(
            "ledger-auth",
            "VIP",
            "high",
            f"POST /orders without a token answered {r.status_code}, not 401/403",
            "require the per-client bearer token on the write endpoint",
        )
    ]


def api_auth(
    inv: Inventory, check: str, port: int, path: str, timeout: float = 5.0
) -> list[Finding]:
    out: list[Finding] = []
    s = http.session(inv)
    for h in inv.group("mon"):
        plain = f"http://{h.address}:{port}{path}"
        tls = f"https://{h.address}:{port}{path}"
        try:
            r = s.get(plain, timeout=timeout)
            # Go's TLS server answers plain HTTP with this 400 and serves nothing.
            tls_only = r.status_code == 400 and "HTTPS server" in r.text
            if not tls_only:
                out.append(
                    Finding(
                        check,
                        h.name,
                        "high",
                        f"{plain} answers {r.status_code} over plain HTTP",
                        "serve it with TLS and basic auth (web config file)",
                    )
                )
                continue
        except requests.RequestException:
            pass  # a TLS listener that closes plain HTTP connections: expected
        try:
            r = s.get(tls, timeout=timeout)
        except requests.RequestException as exc:
            out.append(Finding(check, h.name, "high", f"{tls} did not answer: {exc}", ""))
            continue
        if r.status_code == 401:
            out.append(passed(check, h.name, f"{tls} without credentials: 401"))
        else:
            out.append(
                Finding(
                    check,
                    h.name,
                    "high",
                    f"{tls} without credentials answered {r.status_code}, not 401",
                    "basic auth in the web config file",
                )
            )
    return out
