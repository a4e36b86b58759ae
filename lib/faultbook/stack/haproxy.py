"""HAProxy's view of the web hosts, and the procedures that act on a web node.

Read (no change anywhere):
    ``haproxy_servers``   every lb x backend x server from HAProxy's stats CSV
                          (``http://<lb>:8404/stats;csv``, basic auth with the
                          vault's ``vault_haproxy_stats_password``);
    ``failed_backends``   the servers of a backend that are not UP, as the stats
                          pages and Prometheus (``haproxy_server_status``) see them.

Act (one playbook each, see playbooks/):
    ``drain`` / ``enable``  web_drain.yml / web_enable.yml on every lb host;
    ``recover``             web_recover.yml on one web host.

A host that is not in the right group is refused before anything runs. An lb that does
not answer is a row saying so, never an exception, so the tables stay usable in the middle
of an incident.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import requests

from faultbook import ansible, secrets
from faultbook.errors import (
    ConditionTimeout,
    ConfigError,
    DrillAborted,
    FaultbookError,
    ParameterError,
    ParseError,
)
from faultbook.inventory import Inventory
from faultbook.poll import poll
from faultbook.stack import http, monitoring

log = logging.getLogger(__name__)


# Defaults of the haproxy role (playbooks/roles/haproxy/defaults/main.yml);
# an inventory may override them as variables of the same name.
STATS_PORT = 8404


STATS_USER = "admin"


PASSWORD_VAR = "vault_haproxy_stats_password"  # noqa: S105 - the name of a vault variable


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


# Row status of an lb whose stats page did not answer, and of one that answered wrongly.
UNREACHABLE = "unreachable"


ERROR = "error"


DRAIN_STATES = ("drain", "maint")


# ---------------------------------------------------------------------- parsing
def parse_stats_csv(text: str, lb: str) -> list[dict[str, Any]]:
    """Server rows (not FRONTEND/BACKEND) of HAProxy's ``show stat`` CSV, in SERVER_COLUMNS."""
    body = text.lstrip()
    if not body.startswith("# pxname,"):
        raise ParseError("not HAProxy stats CSV (no '# pxname,' header)")
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


def _fetch_stats(url: str, user: str, password: str, timeout: float) -> str:
    """GET ``<url>/stats;csv`` with basic auth; raise requests' errors as they come."""
    with http.session() as s:
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
    lbs = [h.name for h in inv.group("lb")]
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
    inv.member(host, "web")
    if state not in DRAIN_STATES:
        raise ParameterError(f"drain state {state!r} is not one of: {', '.join(DRAIN_STATES)}")
    return ansible.run_playbook(
        "web_drain.yml", inv, extravars={"web_host": host, "haproxy_drain_state": state}
    )


def enable(inv: Inventory, host: str) -> ansible.PlaybookResult:
    """Return web host ``host`` to rotation on every lb and wait until it is UP in backend web."""
    inv.member(host, "web")
    return ansible.run_playbook("web_enable.yml", inv, extravars={"web_host": host})


def recover(inv: Inventory, host: str, force_restart: bool = False) -> ansible.PlaybookResult:
    """Restart ledger on web host ``host`` if it is not running or not alive (always, with
    ``force_restart``), then wait until its /readyz answers 200 (web_recover.yml).
    In the lab a powered-off host is booted first."""
    from faultbook.lab.lab import power_on

    inv.member(host, "web")
    power_on(inv, host)
    return ansible.run_playbook(
        "web_recover.yml",
        inv,
        extravars={"web_host": host, "ledger_recover_force_restart": force_restart},
        limit=host,
    )


# ------------------------------------------------------------ runbook steps
ALIVE_BACKEND = "web_alive"  # the same servers, checked on /healthz only


def pick_targets(health: BackendHealth, target: str, mode: str, inv: Inventory) -> list[str]:
    """The web hosts this run deals with, in inventory order; empty when there is nothing
    to do.

    drill: [TARGET], or (empty) the first web host of the inventory; every web node must
    be UP first. incident: every failed backend server, all of them in one run. A TARGET
    named in incident mode must be a web host; when it is UP again it is left alone (an
    alert that has cleared by the time the run starts must not drain a healthy node),
    while the other failed nodes are still handled. When every web node is out while
    some still answer /healthz, the fault is behind the tier: DrillAborted, nothing
    drained (asks backend web_alive only then).
    """
    if target:
        inv.member(target, "web")
    if mode == "drill":
        if health.failed:
            raise DrillAborted(f"a drill needs every web node UP first; {health.summary()}")
        if not target:
            target = inv.group("web")[0].name
            log.info("no target given: the drill fails %s, the first web host", target)
        return [target]
    if target and target not in health.failed:
        log.info("%s is UP in HAProxy: nothing to do for it", target)
    web = [h.name for h in inv.group("web")]
    if web and set(web) <= set(health.failed):
        # The whole tier is out. Nodes that still answer /healthz (backend web_alive) but
        # not /readyz are alive and waiting on something behind them: draining and
        # restarting them fixes nothing and leaves no node in rotation.
        dead = failed_backends(inv, ALIVE_BACKEND)
        alive = [n for n in web if n not in dead]
        if alive:
            raise DrillAborted(
                f"every web node fails /readyz, and {', '.join(alive)} still answer "
                "/healthz: the cause lies behind the web tier (the database, or the path "
                "to it), not in a web node; nothing drained. Run triage: faultbook run "
                "triage -p symptom 5xx"
            )
    return list(health.failed)


def wait_marked_down(
    inv: Inventory, hosts: str | Sequence[str], timeout_s: float, poll_s: float = 0.25
) -> BackendHealth | None:
    """Wait until HAProxy stats or Prometheus report every one of HOSTS not UP; None if that
    never happened within TIMEOUT_S (e.g. systemd restarted the app before the health
    checks failed)."""
    want = [hosts] if isinstance(hosts, str) else list(hosts)
    try:
        return poll(
            lambda t: (
                h
                if all(x in (h := failed_backends(inv, timeout=min(t, 2.0))) for x in want)
                else None
            ),
            timeout_s,
            what=f"HAProxy marking {', '.join(want)} down",
            interval_s=poll_s,
        )
    except ConditionTimeout:
        return None
