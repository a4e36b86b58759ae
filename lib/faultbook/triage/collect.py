"""Gather the evidence of every hop at once, each bounded.

Everything runs in parallel: the VIP probe from the controller, the lbs (``vip.lb_status``
and HAProxy's stats, ``haproxy.haproxy_servers``), one SSH round trip per web, db and mon
host (``ssh.run_many``), and pgBackRest's info on the repository host. A powered-off host
costs SSH's TCP connect (``ssh.CONNECT_TIMEOUT_S``, 1.5 s); a frozen server costs its
probe's own timeout (``evidence.REACH_TIMEOUT_S``); nothing waits longer than
``timeout_s``. Host names and addresses come from the inventory only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests

from faultbook import ssh
from faultbook.backup import repository
from faultbook.errors import FaultbookError, ParameterError, SSHError
from faultbook.inventory import Inventory
from faultbook.stack import haproxy, http, vip
from faultbook.triage import evidence as ev

log = logging.getLogger(__name__)

T = TypeVar("T")


def check_symptom(symptom: str) -> str:
    if symptom not in ev.SYMPTOMS:
        raise ParameterError(f"symptom must be one of {', '.join(ev.SYMPTOMS)}, got {symptom!r}")
    return symptom


def names(inv: Inventory) -> dict[str, str]:
    """Address -> host name (and each name to itself), for the probes' answers."""
    out = {h.address: h.name for h in inv.hosts.values()}
    out.update({h.name: h.name for h in inv.hosts.values()})
    return out


def _hosts(inv: Inventory, group: str) -> list[str]:
    """The group's hosts in inventory order; none when the inventory lacks the group."""
    return list(inv.groups.get(group, ()))


def _pg_port(inv: Inventory) -> int:
    return int(inv.vars.get("postgresql_port", ev.PG_PORT))


def _pg_targets(inv: Inventory, exclude: str = "") -> list[tuple[str, int, bool]]:
    port = _pg_port(inv)
    return [(inv.host(h).address, port, True) for h in _hosts(inv, "db") if h != exclude]


# ---------------------------------------------------------------------- hops
def probe_vip(inv: Inventory, timeout_s: float) -> ev.VipEvidence:
    """GET /readyz through the VIP from the controller (no token needed; it crosses
    lb, web node and the primary), with the inventory's CA."""
    address = str(inv.vars.get("vip", ""))
    if not address:
        return ev.VipEvidence("", None, None, error="the inventory names no vip")
    t0 = time.monotonic()
    try:
        with http.session(inv) as s:
            r = s.get(http.vip_url(inv, "/readyz"), timeout=timeout_s)
    except requests.RequestException as exc:
        return ev.VipEvidence(address, None, None, error=f"{type(exc).__name__}: {exc}"[:300])
    took = time.monotonic() - t0
    return ev.VipEvidence(address, r.status_code, took, body=r.text.strip()[:300])


def probe_lbs(inv: Inventory, timeout_s: float) -> tuple[ev.LbEvidence, ...]:
    """Each lb over SSH (units, VIP, VRRP), its /healthz, and its HAProxy's view of
    backend ``web`` (stats CSV), the two asked at once."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        status_f = pool.submit(vip.lb_status, inv, timeout_s)
        servers_f = pool.submit(haproxy.haproxy_servers, inv, min(timeout_s, 3.0))
        status, servers = status_f.result(), _or_error(servers_f.result)
    out = []
    for row in status.to_dict("records"):
        lb = str(row["lb"])
        table: dict[str, str] = {}
        stats_error = ""
        if isinstance(servers, str):
            stats_error = servers
        else:
            mine = servers[servers["lb"] == lb]
            errors = mine[mine["server"] == ""]
            if len(errors):
                stats_error = str(errors.iloc[0]["error"])
            for r in mine[mine["backend"] == "web"].to_dict("records"):
                table[str(r["server"])] = str(r["status"])
        out.append(
            ev.LbEvidence(
                lb,
                bool(row["reachable"]),
                haproxy=row["haproxy"],
                keepalived=row["keepalived"],
                holds_vip=None if row["holds_vip"] is None else bool(row["holds_vip"]),
                vrrp_state=row["vrrp_state"],
                healthz=bool(row["healthz"]),
                servers=table,
                stats_error=stats_error,
                error=str(row["error"] or ""),
            )
        )
    return tuple(out)


def _or_error(fn: Callable[[], T]) -> T | str:
    try:
        return fn()
    except FaultbookError as exc:
        return str(exc)


def probe_webs(inv: Inventory, timeout_s: float) -> tuple[ev.WebEvidence, ...]:
    hosts = _hosts(inv, "web")
    if not hosts:
        return ()
    port = int(inv.vars.get("ledger_port", ev.LEDGER_PORT))
    cmd = ev.web_probe(port, ev.LEDGER_UNIT, _pg_targets(inv))
    return _each(inv, hosts, cmd, timeout_s, ev.parse_web_probe, ev.WebEvidence)


def probe_dbs(inv: Inventory, timeout_s: float) -> tuple[ev.DbEvidence, ...]:
    hosts = _hosts(inv, "db")
    backups = [(inv.host(h).address, ev.PGBACKREST_PORT, False) for h in _hosts(inv, "backup")]
    unit = str(inv.vars.get("postgresql_unit", ev.POSTGRES_UNIT))
    m = names(inv)

    def one(h: str) -> ev.DbEvidence:
        try:
            r = ssh.run(inv, h, ev.db_probe(unit, _pg_targets(inv, h) + backups), timeout_s)
        except SSHError as exc:
            return ev.DbEvidence(h, False, error=exc.message)
        return ev.parse_db_probe(h, r.stdout, m)

    return tuple(_parallel(one, hosts))


def probe_mons(inv: Inventory, timeout_s: float) -> tuple[ev.MonEvidence, ...]:
    hosts = _hosts(inv, "mon")
    if not hosts:
        return ()
    cmd = ev.mon_probe(_pg_targets(inv))
    return _each(inv, hosts, cmd, timeout_s, ev.parse_mon_probe, ev.MonEvidence)


def _each(
    inv: Inventory,
    hosts: list[str],
    cmd: str,
    timeout_s: float,
    parse: Callable[[str, str, Mapping[str, str]], T],
    unreachable: Callable[..., T],
) -> tuple[T, ...]:
    """One SSH round trip per host, all at once: each host's parsed answer, or
    ``unreachable(host, False, error=...)`` for a host that did not answer."""
    found = ssh.run_many(inv, hosts, cmd, timeout=timeout_s)
    m = names(inv)
    return tuple(
        unreachable(h, False, error=r.message) if isinstance(r, SSHError) else parse(h, r.stdout, m)
        for h in hosts
        for r in (found[h],)
    )


def probe_backup(inv: Inventory, timeout_s: float) -> ev.BackupEvidence | None:
    if not _hosts(inv, "backup"):
        return None
    host = repository.repo_host(inv)
    try:
        info = repository.info(inv, timeout=timeout_s)
        code, message = repository.repository_status(info, repository.stanza_name(inv))
    except (FaultbookError, SSHError) as exc:
        return ev.BackupEvidence(host, None, error=str(exc)[:300])
    return ev.BackupEvidence(host, code, message)


def _parallel(fn: Callable[[str], T], items: list[str]) -> list[T]:
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(items))) as pool:
        return list(pool.map(fn, items))


def collect(inv: Inventory, symptom: str, timeout_s: float = 8.0) -> ev.Evidence:
    """Every hop's evidence at once; each part bounded by TIMEOUT_S (SSH commands and
    HTTP) or less. Never raises for a host that does not answer: that is evidence."""
    check_symptom(symptom)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    http_s = min(timeout_s, 3.0)
    jobs: dict[str, Callable[[], Any]] = {
        "vip": lambda: probe_vip(inv, http_s),
        "lbs": lambda: probe_lbs(inv, http_s),
        "webs": lambda: probe_webs(inv, timeout_s),
        "dbs": lambda: probe_dbs(inv, timeout_s),
        "mons": lambda: probe_mons(inv, timeout_s),
        "backup": lambda: probe_backup(inv, timeout_s),
    }
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {k: pool.submit(fn) for k, fn in jobs.items()}
        got = {k: f.result() for k, f in futures.items()}
    return ev.Evidence(
        symptom=symptom,
        collected_at=started,
        took_s=time.monotonic() - t0,
        vip=got["vip"],
        lbs=got["lbs"],
        webs=got["webs"],
        dbs=got["dbs"],
        mons=got["mons"],
        backup=got["backup"],
    )
