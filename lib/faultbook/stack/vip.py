"""The load balancers and the VIP: who holds it, each lb's state, keepalived's VRRP
transitions, and the lb procedures.

    ``vip_holder``        the lb host that holds the VIP (``ip -o -4 addr`` over SSH);
    ``lb_status``         per lb: reachable, VIP, units, VRRP state, /healthz;
    ``vrrp_transitions``  keepalived's "Entering ... STATE" lines since a time;
    ``lb_recover``        lb_recover.yml on one lb host.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import requests

from faultbook import ansible, ssh
from faultbook.errors import (
    ConditionTimeout,
    DrillAborted,
    FaultbookError,
    InventoryError,
    ParameterError,
    ParseError,
    WebTierError,
)
from faultbook.inventory import Inventory
from faultbook.poll import poll
from faultbook.stack import http
from faultbook.stack.haproxy import _stats_url

log = logging.getLogger(__name__)


LB_COLUMNS = (
    "lb",
    "reachable",
    "holds_vip",
    "haproxy",
    "keepalived",
    "vrrp_state",
    "healthz",
    "error",
)


_INET = re.compile(r"\binet (\d{1,3}(?:\.\d{1,3}){3})/\d+")


def ipv4_addresses(ip_addr_output: str) -> set[str]:
    """The IPv4 addresses in ``ip -o -4 addr show`` output."""
    return set(_INET.findall(ip_addr_output))


@dataclass(frozen=True)
class VrrpTransition:
    """One keepalived state change, as its journal line says it."""

    host: str
    at: datetime
    instance: str
    state: str  # MASTER, BACKUP or FAULT


_VRRP = re.compile(
    r"^(?P<ts>\S+)\s+\S+\s+Keepalived_vrrp\[\d+\]:\s+\((?P<inst>[^)]+)\)\s+"
    r"Entering (?P<state>[A-Z]+) STATE"
)


def parse_vrrp_journal(text: str, host: str) -> list[VrrpTransition]:
    """Transitions in ``journalctl -u keepalived -o short-iso-precise`` output, oldest first."""
    out = []
    for line in text.splitlines():
        m = _VRRP.match(line.strip())
        if not m:
            continue
        try:
            at = datetime.strptime(m["ts"], "%Y-%m-%dT%H:%M:%S.%f%z")
        except ValueError:
            at = datetime.fromisoformat(m["ts"])
        out.append(VrrpTransition(host, at.astimezone(UTC), m["inst"], m["state"]))
    return out


def _lb_hosts(inv: Inventory) -> list[str]:
    return [h.name for h in inv.group("lb")]


def lb_recover(inv: Inventory, host: str) -> ansible.PlaybookResult:
    """Start HAProxy (waiting for its /healthz) and keepalived on lb host ``host``
    (lb_recover.yml). keepalived rejoins as BACKUP: the VIP does not move.
    In the lab a powered-off host is booted first."""
    from faultbook.lab.lab import power_on

    inv.member(host, "lb")
    power_on(inv, host)
    return ansible.run_playbook("lb_recover.yml", inv, extravars={"lb_host": host}, limit=host)


# --------------------------------------------------------------- VIP and VRRP
def _vip(inv: Inventory) -> str:
    vip = inv.vars.get("vip")
    if not vip:
        raise InventoryError(f"{inv.path}: all.vars has no 'vip'")
    return str(vip)


def holders(inv: Inventory, addr_outputs: Mapping[str, str]) -> list[str]:
    """The lb hosts whose ``ip -o -4 addr show`` output carries the VIP, in inventory order."""
    vip = _vip(inv)
    return [lb for lb in _lb_hosts(inv) if vip in ipv4_addresses(addr_outputs.get(lb, ""))]


def _check_single(inv: Inventory, found: list[str]) -> str | None:
    if len(found) > 1:
        raise WebTierError(
            f"the VIP {_vip(inv)} is held by {' and '.join(found)} at once (split brain)"
        )
    return found[0] if found else None


def vip_holder(
    inv: Inventory, timeout: float = 5.0, among: Sequence[str] | None = None
) -> str | None:
    """The lb host that holds the VIP now, or None when no reachable lb does.

    Raises WebTierError naming both hosts when two hold it. An lb that
    cannot be reached over SSH is logged and left out. AMONG limits the
    lbs asked (e.g. leave out one known to be dead).
    """
    out: dict[str, str] = {}
    lbs = list(among) if among is not None else _lb_hosts(inv)
    for lb, r in ssh.run_many(inv, lbs, "ip -o -4 addr show", timeout=timeout).items():
        if isinstance(r, ssh.CommandResult) and r.ok:
            out[lb] = r.stdout
        else:
            log.warning("vip_holder: cannot read the addresses of %s: %s", lb, _why(r))
    return _check_single(inv, holders(inv, out))


def _why(r: ssh.CommandResult | FaultbookError) -> str:
    if isinstance(r, ssh.CommandResult):
        return f"rc={r.rc}: {r.stderr.strip()[:200]}"
    return str(r)


# One SSH round trip per lb; sections separated by marker lines.
_MARK = "@@faultbook@@"


LB_PROBE = (
    f"systemctl is-active haproxy.service; echo {_MARK}; "
    f"systemctl is-active keepalived.service; echo {_MARK}; "
    f"ip -o -4 addr show; echo {_MARK}; "
    "journalctl -u keepalived.service -o short-iso-precise --no-pager -n 2000 "
    "| grep -E 'Entering [A-Z]+ STATE' | tail -n 1; true"
)


def parse_lb_probe(text: str, lb: str, vip: str) -> dict[str, Any]:
    """The fields of LB_PROBE's output: haproxy, keepalived, holds_vip, vrrp_state."""
    parts = [p.strip() for p in text.split(_MARK)]
    if len(parts) != 4:
        raise ParseError(f"{lb}: unexpected probe output ({len(parts)} sections, expected 4)")
    haproxy_state, keepalived_state, addrs, journal = parts
    last = parse_vrrp_journal(journal, lb)
    vrrp = last[-1].state if last else "unknown"
    return {
        "haproxy": haproxy_state or "unknown",
        "keepalived": keepalived_state or "unknown",
        "holds_vip": vip in ipv4_addresses(addrs),
        "vrrp_state": vrrp if keepalived_state == "active" else "stopped",
    }


def _healthz(inv: Inventory, lb: str, timeout: float) -> bool:
    try:
        with http.session() as s:
            return s.get(f"{_stats_url(inv, lb)}/healthz", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def lb_status(inv: Inventory, timeout: float = 5.0) -> pd.DataFrame:
    """One row per lb host: LB_COLUMNS.

    ``reachable`` (SSH answers), ``holds_vip``, ``haproxy`` and ``keepalived``
    (systemd's active state), ``vrrp_state`` (MASTER/BACKUP/FAULT from
    keepalived's last "Entering ... STATE" journal line; "stopped" when the
    unit is not active), ``healthz`` (HAProxy's /healthz on the stats port
    answers 200 from here). Values an unreachable lb cannot give are None.
    Does not raise when two lbs hold the VIP: the column shows it.
    """
    lbs = _lb_hosts(inv)
    vip = _vip(inv)
    results = ssh.run_many(inv, lbs, LB_PROBE, timeout=timeout, sudo=True)
    with ThreadPoolExecutor(max_workers=max(1, len(lbs))) as pool:
        health = dict(zip(lbs, pool.map(lambda lb: _healthz(inv, lb, timeout), lbs), strict=True))
    rows = []
    for lb in lbs:
        row: dict[str, Any] = dict.fromkeys(LB_COLUMNS)
        row.update(lb=lb, reachable=False, healthz=health[lb], error="")
        r = results[lb]
        if isinstance(r, ssh.CommandResult):
            row["reachable"] = True
            try:
                row.update(parse_lb_probe(r.stdout, lb, vip))
            except ValueError as exc:
                row["error"] = str(exc)
        else:
            row["error"] = str(r)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(LB_COLUMNS))


def vrrp_transitions(
    inv: Inventory, host: str, since: datetime, timeout: float = 10.0
) -> list[VrrpTransition]:
    """keepalived's state changes on lb ``host`` since ``since`` (timezone-aware), oldest first.

    An lb that rejoined without a flap shows one BACKUP line and no MASTER
    line after ``since``; the peer that kept the VIP shows none.
    """
    inv.member(host, "lb")
    if since.tzinfo is None or since.utcoffset() is None:
        raise ParameterError(f"since={since!r} is naive: expected a timezone-aware datetime")
    cmd = (
        "journalctl -u keepalived.service -o short-iso-precise --no-pager "
        f"--since {shlex.quote('@' + format(since.timestamp(), '.6f'))} "
        "| grep -E 'Entering [A-Z]+ STATE'; true"
    )
    r = ssh.run(inv, host, cmd, timeout=timeout, sudo=True)
    if not r.ok:
        raise WebTierError(f"{host}: journalctl failed: {r.stderr.strip()[:300]}")
    return [t for t in parse_vrrp_journal(r.stdout, host) if t.at >= since]


def pick_lbs(
    lbs: pd.DataFrame, holder: str | None, target: str, mode: str, inv: Inventory
) -> list[str]:
    """The lbs this run deals with, in inventory order; empty when there is nothing to do.

    drill: [TARGET or the VIP holder] (both lbs must be healthy). incident: every lb that
    is unreachable or whose haproxy/keepalived is not active or /healthz fails, both of
    them in one run; a TARGET named in incident mode is added even when it looks healthy
    (the person says it must be restarted).
    """
    if target:
        inv.member(target, "lb")
    sick = [
        str(r["lb"])
        for r in lbs.to_dict("records")
        if not (
            r["reachable"]
            and r["haproxy"] == "active"
            and r["keepalived"] == "active"
            and r["healthz"]
        )
    ]
    if mode == "drill":
        if sick or holder is None:
            raise DrillAborted(
                "an lb drill needs both lbs healthy and the VIP held "
                f"(unhealthy: {sick or 'none'}, VIP holder: {holder})"
            )
        return [target or holder]
    if target and target not in sick:
        sick.append(target)
    order = {lb: i for i, lb in enumerate(_lb_hosts(inv))}
    return sorted(sick, key=lambda lb: order.get(lb, len(order)))


def wait_vip_moved(
    inv: Inventory, old: str | Sequence[str], timeout_s: float, poll_s: float = 0.2
) -> str | None:
    """Wait until an lb other than OLD (one lb or several) holds the VIP; return its name.
    None at once when every lb is in OLD: no other lb can take it."""
    gone = {old} if isinstance(old, str) else set(old)
    others = [lb for lb in _lb_hosts(inv) if lb not in gone]
    if not others:
        return None
    return poll(
        lambda t: vip_holder(inv, timeout=min(t, 2.0), among=others),
        timeout_s,
        what=f"the VIP leaving {', '.join(sorted(gone))}",
        interval_s=poll_s,
        transient=lambda exc: isinstance(exc, WebTierError),  # two holders for a moment
        error=WebTierError,
    )


def wait_vip_held(inv: Inventory, timeout_s: float, poll_s: float = 0.2) -> str:
    """Wait until some lb holds the VIP; return its name."""
    return poll(
        lambda t: vip_holder(inv, timeout=min(t, 2.0)),
        timeout_s,
        what="an lb taking the VIP",
        interval_s=poll_s,
        transient=lambda exc: isinstance(exc, WebTierError),
        error=WebTierError,
    )


def require_healthy(lbs: pd.DataFrame, lb: str) -> None:
    row = lbs[lbs["lb"] == lb]
    if row.empty or not bool(row.iloc[0]["healthz"]) or row.iloc[0]["haproxy"] != "active":
        raise WebTierError(f"{lb} holds the VIP but its HAProxy is not healthy")


def claims_vip(inv: Inventory, host: str, timeout: float = 5.0) -> bool | None:
    """Whether lb HOST has the VIP on an interface: in the lab read from its network
    namespace (so also while its link is cut), elsewhere over SSH (a partition keeps the
    controller's SSH). None when it cannot be read: a host that is off holds nothing."""
    try:
        if inv.is_lab:
            from faultbook.lab.lab import Lab

            out = Lab(inv).addresses(host)
        else:
            r = ssh.run(inv, host, "ip -o -4 addr show", timeout=timeout)
            if not r.ok:
                return None
            out = r.stdout
    except FaultbookError:
        return None
    return _vip(inv) in ipv4_addresses(out)


def vip_lines(ip_addr_output: str, address: str) -> list[tuple[str, str]]:
    """(ADDRESS/PREFIX, device) of each ``ip -o -4 addr show`` line that holds ADDRESS."""
    found = []
    for line in ip_addr_output.splitlines():
        f = line.split()
        if len(f) >= 4 and f[2] == "inet" and f[3].split("/")[0] == address:
            found.append((f[3], f[1]))
    return found


def stand_down(inv: Inventory, host: str, timeout_s: float) -> str:
    """Before lb HOST comes back while another lb holds the VIP: it must no longer claim
    the VIP, or it takes the VIP back by priority when it comes back (VRRP resolves two
    masters by priority: nothing keeps the one that took over). A cut-off lb gives it up
    by itself (keepalived's isolation check puts it in FAULT); a frozen keepalived cannot,
    so after TIMEOUT_S it is fenced: killed with SIGKILL, which sends no advert, and the
    VIP address removed. keepalived is started again by the rejoin, as BACKUP. What was
    seen or done, as text."""
    started = datetime.now(UTC)
    try:
        poll(
            lambda _t: claims_vip(inv, host) is not True or None,
            timeout_s,
            what=f"{host} gives up the VIP",
            interval_s=0.25,
        )
        took = (datetime.now(UTC) - started).total_seconds()
        return f"{host} no longer claims the VIP (seen after {took:.1f} s)"
    except ConditionTimeout:
        pass
    vip = _vip(inv)
    r = ssh.run(inv, host, "ip -o -4 addr show", timeout=10)
    if not r.ok:
        raise WebTierError(
            f"{host} still claims the VIP after {timeout_s:.0f} s and cannot be fenced: {_why(r)}"
        )
    dels = [
        f"ip addr del {shlex.quote(a)} dev {shlex.quote(d)}" for a, d in vip_lines(r.stdout, vip)
    ]
    script = "; ".join(["systemctl kill --signal=SIGKILL keepalived.service", *dels])
    done = ssh.run(inv, host, script, timeout=20, sudo=True)
    if not done.ok or claims_vip(inv, host):
        raise WebTierError(f"{host}: fencing its keepalived failed: {_why(done)}")
    return (
        f"{host} still claimed the VIP after {timeout_s:.0f} s: its keepalived was killed "
        "(SIGKILL: no advert) and the VIP address removed, so that it comes back as BACKUP"
    )


def require_no_flap(inv: Inventory, holder: str, back: str, since: datetime) -> None:
    """After BACK rejoined: HOLDER still holds the VIP and logged no VRRP transition since."""
    now_holder = vip_holder(inv)
    if now_holder != holder:
        raise WebTierError(f"the VIP moved from {holder} to {now_holder} when {back} came back")
    back_row = lb_status(inv)
    back_row = back_row[back_row["lb"] == back]
    if back_row.empty or back_row.iloc[0]["vrrp_state"] not in ("BACKUP", "unknown"):
        state = "unreachable" if back_row.empty else back_row.iloc[0]["vrrp_state"]
        raise WebTierError(f"{back} came back as {state}, not BACKUP")
    flaps = vrrp_transitions(inv, holder, since)
    if flaps:
        what = ", ".join(f"{t.state} at {t.at:%H:%M:%S}" for t in flaps)
        raise WebTierError(f"{holder} changed VRRP state after {back} came back: {what}")
