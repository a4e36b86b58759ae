"""The web tier: HAProxy's view of the web hosts, the VIP, and the procedures that act on them.

Read (no change anywhere):
    ``haproxy_servers``   every lb × backend × server from HAProxy's stats CSV
                          (``http://<lb>:8404/stats;csv``, basic auth with the
                          vault's ``vault_haproxy_stats_password``);
    ``failed_backends``   the servers of a backend that are not UP, as the stats
                          pages and Prometheus (``haproxy_server_status``) see them;
    ``vip_holder``        the lb host that holds the VIP (``ip -o -4 addr`` over SSH);
    ``lb_status``         per lb: reachable, VIP, units, VRRP state, /healthz;
    ``vrrp_transitions``  keepalived's "Entering ... STATE" lines since a time.

Act (one playbook each, see playbooks/):
    ``drain`` / ``enable``  web_drain.yml / web_enable.yml on every lb host;
    ``recover``             web_recover.yml on one web host;
    ``lb_recover``          lb_recover.yml on one lb host.

A host that is not in the right group is refused before anything runs
(InventoryError naming the host and the valid choices). An lb that does not
answer is a row saying so, never an exception, so the tables stay usable in
the middle of an incident.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import shlex
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import requests

from faultbook import ansible, monitoring, secrets, ssh
from faultbook.errors import (
    ConfigError,
    DrillAborted,
    FaultbookError,
    InventoryError,
    ParameterError,
)
from faultbook.inventory import Inventory

log = logging.getLogger(__name__)

# Defaults of the haproxy role (playbooks/roles/haproxy/defaults/main.yml);
# an inventory may override them as variables of the same name.
STATS_PORT = 8404
STATS_USER = "admin"
PASSWORD_VAR = "vault_haproxy_stats_password"
# Prometheus job that scrapes HAProxy's exporter (role monitoring).
HAPROXY_JOB = "haproxy"

SERVER_COLUMNS = (
    "lb",
    "backend",
    "server",
    "status",
    "weight",
    "check_status",
    "current_sessions",
    "total_sessions",
    "error",
)
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
# Row status of an lb whose stats page did not answer, and of one that answered wrongly.
UNREACHABLE = "unreachable"
ERROR = "error"
DRAIN_STATES = ("drain", "maint")


class WebTierError(FaultbookError):
    """The web tier is in a state the caller must resolve (e.g. two lb hosts hold the VIP)."""


# ---------------------------------------------------------------------- parsing
def parse_stats_csv(text: str, lb: str) -> list[dict[str, Any]]:
    """Server rows (not FRONTEND/BACKEND) of HAProxy's ``show stat`` CSV, in SERVER_COLUMNS."""
    body = text.lstrip()
    if not body.startswith("# pxname,"):
        raise ValueError("not HAProxy stats CSV (no '# pxname,' header)")
    rows = []
    for r in csv.DictReader(io.StringIO(body[2:])):
        if r.get("svname") in ("FRONTEND", "BACKEND", None):
            continue
        rows.append(
            {
                "lb": lb,
                "backend": r["pxname"],
                "server": r["svname"],
                "status": r.get("status", ""),
                "weight": _int(r.get("weight")),
                # HAProxy prefixes "* " while a check is running: the last result follows.
                "check_status": (r.get("check_status") or "").removeprefix("* "),
                "current_sessions": _int(r.get("scur")),
                "total_sessions": _int(r.get("stot")),
                "error": "",
            }
        )
    return rows


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v not in (None, "") else None
    except ValueError:
        return None


def is_up(status: str) -> bool:
    """HAProxy's stats status for a server in rotation: "UP", or "UP 1/2" (one check failed)."""
    return status == "UP" or status.startswith("UP ")


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


# ------------------------------------------------------------ validation helpers
def _member(inv: Inventory, host: str, group: str) -> str:
    names = [h.name for h in inv.group(group)]
    if host not in names:
        raise InventoryError(
            f"{host!r} is not a host of group {group} in {inv.path.name}; "
            f"choose one of: {', '.join(names)}"
        )
    return host


def _lb_hosts(inv: Inventory) -> list[str]:
    return [h.name for h in inv.group("lb")]


# -------------------------------------------------------------- HAProxy stats
def _stats_password(inv: Inventory) -> str:
    pw = secrets.read_vault(inv).get(PASSWORD_VAR)
    if not pw:
        raise ConfigError(
            f"the vault of inventory {inv.name!r} has no {PASSWORD_VAR}; "
            "the HAProxy stats page needs it"
        )
    return str(pw)


def _stats_url(inv: Inventory, lb: str) -> str:
    port = int(inv.host(lb).vars.get("haproxy_stats_port", STATS_PORT))
    return f"http://{inv.host(lb).address}:{port}"


def _session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # stack traffic never goes through a proxy from the environment
    return s


def _fetch_stats(url: str, user: str, password: str, timeout: float) -> str:
    """GET ``<url>/stats;csv`` with basic auth; raise requests' errors as they come."""
    with _session() as s:
        r = s.get(f"{url}/stats;csv", auth=(user, password), timeout=timeout)
    if r.status_code != 200:
        hint = f" (is {PASSWORD_VAR} right?)" if r.status_code == 401 else ""
        raise requests.HTTPError(f"HTTP {r.status_code} from {url}/stats;csv{hint}")
    return r.text


def _one_lb_stats(inv: Inventory, lb: str, password: str, timeout: float) -> list[dict[str, Any]]:
    user = str(inv.host(lb).vars.get("haproxy_stats_user", STATS_USER))
    url = _stats_url(inv, lb)
    try:
        text = _fetch_stats(url, user, password, timeout)
    except (requests.ConnectionError, requests.Timeout) as exc:
        return [_lb_row(lb, UNREACHABLE, f"{url} did not answer: {type(exc).__name__}")]
    except requests.RequestException as exc:
        return [_lb_row(lb, ERROR, str(exc))]
    try:
        return parse_stats_csv(text, lb)
    except ValueError as exc:
        return [_lb_row(lb, ERROR, f"{url}/stats;csv: {exc}")]


def _lb_row(lb: str, status: str, error: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(SERVER_COLUMNS)
    row.update(lb=lb, backend="", server="", status=status, check_status="", error=error)
    return row


def haproxy_servers(inv: Inventory, timeout: float = 3.0) -> pd.DataFrame:
    """One row per lb host × backend × server, from each lb's stats CSV.

    Columns: SERVER_COLUMNS. ``status`` is HAProxy's (UP, UP 1/2, DOWN, DRAIN,
    MAINT, no check, ...). An lb whose stats page does not answer is one row
    with status "unreachable" (an HTTP error: "error") and the reason in ``error``.
    """
    lbs = _lb_hosts(inv)
    password = _stats_password(inv)
    with ThreadPoolExecutor(max_workers=max(1, len(lbs))) as pool:
        parts = list(pool.map(lambda lb: _one_lb_stats(inv, lb, password, timeout), lbs))
    df = pd.DataFrame([r for p in parts for r in p], columns=list(SERVER_COLUMNS))
    for col in ("weight", "current_sessions", "total_sessions"):
        df[col] = df[col].astype("Int64")
    return df


# ------------------------------------------------------------- failed backends
@dataclass(frozen=True)
class BackendHealth:
    """Which servers of a backend are not UP, and which source saw what.

    Iterating, ``len`` and ``in`` act on ``failed``: the servers that either
    source reports not UP on at least one lb. ``stats`` and ``prometheus`` map
    each such server to ``{lb: status}`` as that source reports it (drained
    and maintenance servers included: they are out of rotation too).
    """

    backend: str
    failed: tuple[str, ...]
    stats: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    prometheus: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    unreachable_lbs: tuple[str, ...] = ()
    prometheus_error: str | None = None

    def __iter__(self) -> Iterator[str]:
        return iter(self.failed)

    def __len__(self) -> int:
        return len(self.failed)

    def __contains__(self, server: object) -> bool:
        return server in self.failed

    @property
    def sources_agree(self) -> bool:
        """Both sources answered and name the same servers."""
        return self.prometheus_error is None and set(self.stats) == set(self.prometheus)

    def summary(self) -> str:
        if not self.failed:
            text = f"every server of backend {self.backend} is UP"
        else:
            parts = []
            for s in self.failed:
                seen = {**self.prometheus.get(s, {}), **self.stats.get(s, {})}
                parts.append(f"{s} ({', '.join(f'{lb}: {st}' for lb, st in sorted(seen.items()))})")
            text = f"backend {self.backend}: not UP: {'; '.join(parts)}"
        if self.unreachable_lbs:
            text += f"; stats unreachable on {', '.join(self.unreachable_lbs)}"
        if self.prometheus_error:
            text += f"; Prometheus: {self.prometheus_error}"
        return text


def stats_not_up(
    servers: pd.DataFrame, backend: str, expected: list[str]
) -> tuple[dict[str, dict[str, str]], tuple[str, ...]]:
    """From a ``haproxy_servers`` frame: {server: {lb: status}} for servers not UP, and the
    lbs that did not answer. A server of ``expected`` missing from a backend is "absent"."""
    bad: dict[str, dict[str, str]] = {}
    unanswered = []
    for lb, rows in servers.groupby("lb", sort=False):
        if (rows["status"].isin([UNREACHABLE, ERROR]) & (rows["server"] == "")).any():
            unanswered.append(str(lb))
            continue
        mine = rows[rows["backend"] == backend]
        seen = dict(zip(mine["server"], mine["status"], strict=True))
        for s in expected:
            status = seen.get(s, "absent")
            if not is_up(status):
                bad.setdefault(s, {})[str(lb)] = status
        for s, status in seen.items():
            if s not in expected and not is_up(status):
                bad.setdefault(s, {})[str(lb)] = status
    return bad, tuple(unanswered)


def _prom_query(inv: Inventory, expr: str, timeout: float) -> list[dict[str, Any]]:
    return monitoring.raw_query(inv, expr, timeout=timeout)


def prometheus_not_up(results: list[dict[str, Any]], inv: Inventory) -> dict[str, dict[str, str]]:
    """From ``haproxy_server_status == 1`` series: {server: {lb: state}} for states not UP."""
    by_addr = {h.address: h.name for h in inv.hosts.values()}
    bad: dict[str, dict[str, str]] = {}
    for r in results:
        m = r.get("metric", {})
        state = str(m.get("state", ""))
        if state == "UP":
            continue
        inst = str(m.get("instance", ""))
        lb = inst if inst in inv.hosts else by_addr.get(inst.rsplit(":", 1)[0], inst)
        bad.setdefault(str(m.get("server", "")), {})[lb] = state
    return bad


def failed_backends(inv: Inventory, backend: str = "web", timeout: float = 3.0) -> BackendHealth:
    """The servers of ``backend`` that are not UP on some reachable lb, by either source.

    Sources: each lb's stats CSV (``haproxy_servers``) and Prometheus'
    ``haproxy_server_status{job="haproxy",proxy=<backend>} == 1`` (the
    exporter sets 1 on the series whose ``state`` label is current). A source
    that does not answer is recorded, not raised. The result iterates like a
    list of server names.
    """
    expected = [h.name for h in inv.group("web")]
    stats, unreachable = stats_not_up(haproxy_servers(inv, timeout=timeout), backend, expected)
    prom: dict[str, dict[str, str]] = {}
    prom_error = None
    expr = f'haproxy_server_status{{job="{HAPROXY_JOB}",proxy="{backend}"}} == 1'
    try:
        prom = prometheus_not_up(_prom_query(inv, expr, timeout), inv)
    except FaultbookError as exc:  # PrometheusError: no answer, or the query was refused
        prom_error = f"{type(exc).__name__}: {exc}"
    order = {s: i for i, s in enumerate(expected)}
    failed = sorted(set(stats) | set(prom), key=lambda s: (order.get(s, len(order)), s))
    return BackendHealth(backend, tuple(failed), stats, prom, unreachable, prom_error)


# --------------------------------------------------------------- procedures
def drain(inv: Inventory, host: str, state: str = "drain") -> ansible.PlaybookResult:
    """Take web host ``host`` out of rotation on every lb (web_drain.yml).

    ``state``: "drain" (requests in flight finish, checks go on) or "maint"
    (checks stop too). Both backends, web and web_alive, stop sending it new
    requests. A HAProxy reload or restart undoes it.
    """
    _member(inv, host, "web")
    if state not in DRAIN_STATES:
        raise ParameterError(f"drain state {state!r} is not one of: {', '.join(DRAIN_STATES)}")
    return ansible.run_playbook(
        "web_drain.yml", inv, extravars={"web_host": host, "haproxy_drain_state": state}
    )


def enable(inv: Inventory, host: str) -> ansible.PlaybookResult:
    """Return web host ``host`` to rotation on every lb and wait until it is UP in backend web."""
    _member(inv, host, "web")
    return ansible.run_playbook("web_enable.yml", inv, extravars={"web_host": host})


def recover(inv: Inventory, host: str, force_restart: bool = False) -> ansible.PlaybookResult:
    """Restart ledger on web host ``host`` if it is not running or not alive (always, with
    ``force_restart``), then wait until its /readyz answers 200 (web_recover.yml)."""
    _member(inv, host, "web")
    return ansible.run_playbook(
        "web_recover.yml",
        inv,
        extravars={"web_host": host, "ledger_recover_force_restart": force_restart},
        limit=host,
    )


def lb_recover(inv: Inventory, host: str) -> ansible.PlaybookResult:
    """Start HAProxy (waiting for its /healthz) and keepalived on lb host ``host``
    (lb_recover.yml). keepalived rejoins as BACKUP: the VIP does not move."""
    _member(inv, host, "lb")
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
        raise ValueError(f"{lb}: unexpected probe output ({len(parts)} sections, expected 4)")
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
        with _session() as s:
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
    _member(inv, host, "lb")
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


# ------------------------------------------------------------ runbook steps
def pick_target(health: BackendHealth, target: str, mode: str, inv: Inventory) -> str | None:
    """The web host this run deals with, or None when there is nothing to do.

    drill: TARGET (a web host). incident: TARGET, or the one failed backend server.
    """
    if target:
        _member(inv, target, "web")
    if mode == "drill":
        if not target:
            raise ParameterError("a web-node drill needs target: the web host to fail")
        if health.failed:
            raise DrillAborted(f"a drill needs every web node UP first; {health.summary()}")
        return target
    if target:
        return target
    if not health.failed:
        return None
    if len(health.failed) > 1:
        raise ParameterError(
            f"several web nodes are down ({', '.join(health.failed)}); set target to one of them"
        )
    return health.failed[0]


def wait_marked_down(
    inv: Inventory, host: str, timeout_s: float, poll_s: float = 0.25
) -> BackendHealth | None:
    """Wait until HAProxy stats or Prometheus report HOST not UP; None if that never happened
    within TIMEOUT_S (e.g. systemd restarted the app before the health checks failed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        health = failed_backends(inv, timeout=2.0)
        if host in health:
            return health
        time.sleep(poll_s)
    return None


def pick_lb(
    lbs: pd.DataFrame, holder: str | None, target: str, mode: str, inv: Inventory
) -> str | None:
    """The lb this run deals with, or None when there is nothing to do.

    drill: TARGET or the VIP holder (both lbs must be healthy). incident: TARGET,
    or the one lb that is unreachable or whose haproxy/keepalived is not active.
    """
    if target:
        _member(inv, target, "lb")
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
        return target or holder
    if target:
        return target
    if not sick:
        return None
    if len(sick) > 1:
        raise ParameterError(f"several lbs are unhealthy ({', '.join(sick)}); set target")
    return sick[0]


def wait_vip_moved(inv: Inventory, old: str, timeout_s: float, poll_s: float = 0.2) -> str:
    """Wait until another lb than OLD holds the VIP; return its name."""
    deadline = time.monotonic() + timeout_s
    seen: str | None = None
    others = [lb for lb in _lb_hosts(inv) if lb != old]
    while time.monotonic() < deadline:
        try:
            seen = vip_holder(inv, timeout=2.0, among=others)
        except WebTierError:
            seen = None  # two holders for a moment: keep waiting for one
        if seen is not None and seen != old:
            return seen
        time.sleep(poll_s)
    raise WebTierError(f"the VIP did not leave {old} within {timeout_s:g}s (holder: {seen})")


def require_healthy(lbs: pd.DataFrame, lb: str) -> None:
    row = lbs[lbs["lb"] == lb]
    if row.empty or not bool(row.iloc[0]["healthz"]) or row.iloc[0]["haproxy"] != "active":
        raise WebTierError(f"{lb} holds the VIP but its HAProxy is not healthy")


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
