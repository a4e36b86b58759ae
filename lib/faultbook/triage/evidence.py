"""What triage knows about each hop of the chain, and the probes that find it out.

The chain, from the client inwards::

    VIP ─▶ lb (HAProxy, keepalived) ─▶ web node (ledger) ─▶ primary ─▶ standbys, backup
                                                         ▲
                                         monitoring ─────┘ (mon hosts probe the primary too)

Each hop is a frozen dataclass. A host that could not be asked is still a hop
(``reachable`` False, ``error`` saying why), never an exception: triage runs in
the middle of an incident.

**Reachability** between hosts is asked on the source host itself, over SSH
(``reach_command``): bash opens a TCP connection to each target with
``/dev/tcp``, bounded by coreutils ``timeout``; for PostgreSQL it then sends an
SSLRequest (8 bytes) that the postmaster answers with one byte before any
authentication (as ``stack.detect`` does). The outcome tells the failures
apart:

| outcome   | what happened                                                          |
|-----------|------------------------------------------------------------------------|
| answers   | connected (and, for PostgreSQL, the server answered)                   |
| silent    | connected, no answer within the timeout: a frozen server               |
| timeout   | no TCP answer within the timeout: host down, or packets dropped on the way |
| refused   | a reset: nothing listens, or a firewall rejects                        |
| blocked   | the source's own firewall drops its packets (connect: not permitted)   |
| no-route  | no route to the host (ARP or ICMP said so)                             |
| closed    | connected, then closed without an answer                               |
| error     | anything else (the text says what)                                     |
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

PG_PORT = 5432
PGBACKREST_PORT = 8432
LEDGER_PORT = 8000
LEDGER_UNIT = "ledger.service"
POSTGRES_UNIT = "postgresql@15-main.service"
REACH_TIMEOUT_S = 2.0
HTTP_TIMEOUT_S = 2.0

OUTCOMES = ("answers", "silent", "timeout", "refused", "blocked", "no-route", "closed", "error")
# What each outcome means, for evidence lines.
MEANING = {
    "answers": "answers",
    "silent": "accepts the connection but does not answer (frozen?)",
    "timeout": "no TCP answer (down, or packets dropped on the way)",
    "refused": "refuses the connection (nothing listens, or a reject rule)",
    "blocked": "is blocked by the source's own firewall",
    "no-route": "has no route",
    "closed": "closes the connection without answering",
    "error": "fails",
}
SYMPTOMS = ("vip-probe", "5xx", "latency", "writes-fail")

_MARK = "@@faultbook-triage@@"
# PostgreSQL's SSLRequest (length 8, code 80877103) as printf octal escapes.
_SSL_REQUEST = r"\0\0\0\10\4\322\26\57"
_CONNECT_FAILED = 97  # the inner script's exit status when the connect itself fails


# ------------------------------------------------------------------ reachability
@dataclass(frozen=True)
class Reach:
    """One connection attempt from SOURCE to TARGET's PORT, made on SOURCE."""

    source: str
    target: str
    port: int
    outcome: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "answers"

    def describe(self) -> str:
        text = (
            f"{self.source} → {self.target}:{self.port}: {MEANING.get(self.outcome, self.outcome)}"
        )
        return text if self.ok or not self.detail else f"{text} ({self.detail})"


def reach_command(
    targets: Sequence[tuple[str, int, bool]], timeout_s: float = REACH_TIMEOUT_S
) -> str:
    """A shell command trying every (address, port, postgres) at once; one line each:
    ``reach ADDRESS PORT RC TEXT``. ``postgres``: send an SSLRequest and read the answer."""
    parts = []
    for address, port, pg in targets:
        inner = f"exec 3<>/dev/tcp/{address}/{int(port)} || exit {_CONNECT_FAILED}; echo connected"
        if pg:
            inner += f"; printf '{_SSL_REQUEST}' >&3; head -c1 <&3"
        parts.append(
            f"( out=$(timeout {timeout_s:g} bash -c {shlex.quote(inner)} 2>&1); rc=$?; "
            f'echo "reach {address} {int(port)} $rc $(printf %s "$out" | tr "\\n" " ")" ) &'
        )
    return " ".join(parts) + " wait" if parts else "true"


def classify(rc: int, text: str, postgres: bool) -> tuple[str, str]:
    """(outcome, detail) of one ``reach`` line's exit status and output."""
    words = text.split()
    connected = "connected" in words
    if rc == 0 and connected:
        if not postgres or (words and words[-1] in ("S", "N")):
            return "answers", ""
        return "closed", "connected, closed without an answer"
    if rc == 124:
        return ("silent", "") if connected else ("timeout", "")
    low = text.lower()
    why = text.strip().rsplit(": ", 1)[-1] if text.strip() else f"exit {rc}"
    for needle, outcome in (
        ("refused", "refused"),
        ("not permitted", "blocked"),
        ("no route", "no-route"),
        ("unreachable", "no-route"),
    ):
        if needle in low:
            return outcome, why
    return "error", why


def parse_reach(
    text: str, source: str, names: Mapping[str, str], postgres_ports: tuple[int, ...] = (PG_PORT,)
) -> tuple[Reach, ...]:
    """The ``reach`` lines of a probe's output; NAMES maps addresses to host names."""
    out = []
    for line in text.splitlines():
        parts = line.split(" ", 4)
        if len(parts) < 4 or parts[0] != "reach":
            continue
        address, port_s, rc_s = parts[1], parts[2], parts[3]
        rest = parts[4] if len(parts) > 4 else ""
        try:
            port, rc = int(port_s), int(rc_s)
        except ValueError:
            continue
        outcome, detail = classify(rc, rest, port in postgres_ports)
        out.append(Reach(source, names.get(address, address), port, outcome, detail))
    return tuple(sorted(out, key=lambda r: (r.target, r.port)))


# ------------------------------------------------------------------------- hops
@dataclass(frozen=True)
class VipEvidence:
    """The VIP from the controller: HTTPS GET /readyz (the path a client's request takes)."""

    vip: str
    status: int | None  # HTTP status; None: no answer
    latency_s: float | None
    error: str = ""
    body: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass(frozen=True)
class LbEvidence:
    name: str
    reachable: bool
    haproxy: str | None = None
    keepalived: str | None = None
    holds_vip: bool | None = None
    vrrp_state: str | None = None
    healthz: bool = False  # HAProxy's /healthz on the stats port answers the controller
    servers: Mapping[str, str] = field(default_factory=dict)  # backend web: server -> status
    stats_error: str = ""
    error: str = ""

    @property
    def healthy(self) -> bool:
        return (
            self.reachable
            and self.haproxy == "active"
            and self.keepalived == "active"
            and self.healthz
        )


@dataclass(frozen=True)
class WebEvidence:
    name: str
    reachable: bool
    error: str = ""
    service: str = ""  # systemd's active state of the ledger unit
    healthz: int | None = None  # HTTP status on the host itself; 0: no answer
    readyz: int | None = None
    readyz_reason: str = ""  # the app's own words when /readyz is not 200
    db_peers: tuple[str, ...] = ()  # db hosts it holds established connections to
    reach: tuple[Reach, ...] = ()  # to each db host's PostgreSQL port

    def reach_to(self, host: str) -> Reach | None:
        return next((r for r in self.reach if r.target == host), None)

    @property
    def alive(self) -> bool:
        return self.reachable and self.service == "active" and self.healthz == 200


@dataclass(frozen=True)
class DbEvidence:
    name: str
    reachable: bool
    error: str = ""
    unit: str = ""  # systemd's active state of PostgreSQL
    role: str = ""  # primary, standby, "no answer" (psql timed out), down (psql failed), ""
    read_only: bool | None = None
    wal_receiver: str = ""  # pg_stat_wal_receiver.status ("streaming"); "" when none
    upstream: str = ""  # the host its primary_conninfo names (a standby's primary)
    sql_error: str = ""
    reach: tuple[Reach, ...] = ()  # to the other db hosts (5432) and the backup hosts (8432)

    def reach_to(self, host: str, port: int = PG_PORT) -> Reach | None:
        return next((r for r in self.reach if r.target == host and r.port == port), None)


@dataclass(frozen=True)
class MonEvidence:
    name: str
    reachable: bool
    error: str = ""
    reach: tuple[Reach, ...] = ()  # to each db host's PostgreSQL port

    def reach_to(self, host: str) -> Reach | None:
        return next((r for r in self.reach if r.target == host), None)


@dataclass(frozen=True)
class BackupEvidence:
    host: str
    status_code: int | None  # pgBackRest's stanza status (0 ok); None: not read
    message: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code == 0


@dataclass(frozen=True)
class Evidence:
    """Every hop, as collected at one moment (``collected_at``, UTC) in ``took_s``."""

    symptom: str
    collected_at: datetime
    took_s: float
    vip: VipEvidence
    lbs: tuple[LbEvidence, ...]
    webs: tuple[WebEvidence, ...]
    dbs: tuple[DbEvidence, ...]
    mons: tuple[MonEvidence, ...] = ()
    backup: BackupEvidence | None = None

    def db(self, name: str) -> DbEvidence | None:
        return next((d for d in self.dbs if d.name == name), None)

    def summary(self) -> str:
        return (
            f"{len(self.lbs)} lbs, {len(self.webs)} web nodes, {len(self.dbs)} db hosts, "
            f"{len(self.mons)} mon hosts and the backup repository asked in {self.took_s:.1f} s"
        )


# ------------------------------------------------------------------------ probes
def web_probe(port: int, unit: str, targets: Sequence[tuple[str, int, bool]]) -> str:
    """One SSH round trip on a web node: the unit, /healthz and /readyz on the node itself,
    its established PostgreSQL connections, and its reach to each db host."""
    url = f"http://127.0.0.1:{int(port)}"
    t = f"{HTTP_TIMEOUT_S:g}"
    return _alongside(
        targets,
        f"systemctl is-active {shlex.quote(unit)}; echo {_MARK}; "
        f"curl -s -o /dev/null -m {t} -w '%{{http_code}}' {url}/healthz; echo; echo {_MARK}; "
        f"curl -s -m {t} -w '\\n%{{http_code}}' {url}/readyz; echo; echo {_MARK}; "
        f"ss -Htn state established '( dport = :{PG_PORT} )'; echo {_MARK}",
    )


def _alongside(targets: Sequence[tuple[str, int, bool]], checks: str) -> str:
    """CHECKS, with the reach probe of TARGETS running meanwhile (its lines printed last):
    the host's probe costs the longest of the two, not their sum."""
    return (
        f't=$(mktemp); ( {reach_command(targets)} ) >"$t" 2>&1 & {checks}; '
        'wait; cat "$t"; rm -f "$t"'
    )


def _code(text: str) -> int:
    text = text.strip()
    return int(text) if text.isdigit() else 0


def _reason(body: str) -> str:
    """The app's JSON ``reason`` (ledger's 503 body), or ''."""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    return str(doc.get("reason") or "") if isinstance(doc, dict) else ""


def parse_web_probe(name: str, text: str, names: Mapping[str, str]) -> WebEvidence:
    parts = text.split(_MARK)
    if len(parts) != 5:
        return WebEvidence(name, True, error=f"unexpected probe output ({len(parts)} sections)")
    service, healthz, readyz, conns, reach = (p.strip() for p in parts)
    lines = readyz.splitlines()
    ready_code = _code(lines[-1]) if lines else 0
    body = " ".join(lines[:-1]).strip()
    reason = ""
    if ready_code != 200:
        reason = (_reason(body) or body)[:300] or "no answer"
    peers = sorted(
        {
            names.get(a, a)
            for a in re.findall(rf"(\d{{1,3}}(?:\.\d{{1,3}}){{3}}):{PG_PORT}\b", conns)
        }
    )
    return WebEvidence(
        name,
        True,
        service=service.splitlines()[-1] if service else "unknown",
        healthz=_code(healthz),
        readyz=ready_code,
        readyz_reason=reason,
        db_peers=tuple(peers),
        reach=parse_reach(reach, name, names),
    )


# The primary_conninfo's host only: the setting may hold a password.
DB_SQL = (
    "SELECT pg_is_in_recovery()::text, "
    "current_setting('default_transaction_read_only'), "
    "coalesce((SELECT status FROM pg_stat_wal_receiver), ''), "
    "coalesce(substring(current_setting('primary_conninfo') from 'host=''?([^ '']+)'), '')"
)


def db_probe(unit: str, targets: Sequence[tuple[str, int, bool]]) -> str:
    """One SSH round trip on a db host: PostgreSQL's unit, its role (psql bounded by
    ``timeout``: a frozen server does not hold the probe), and its reach to the other
    db hosts and the backup repository."""
    psql = (
        f"cd /tmp && timeout {REACH_TIMEOUT_S:g} sudo -n -u postgres psql -X -A -t "
        f"-c {shlex.quote(DB_SQL)} 2>&1; echo rc=$?"
    )
    return _alongside(
        targets, f"systemctl is-active {shlex.quote(unit)}; echo {_MARK}; {psql}; echo {_MARK}"
    )


def parse_db_probe(name: str, text: str, names: Mapping[str, str]) -> DbEvidence:
    parts = text.split(_MARK)
    if len(parts) != 3:
        return DbEvidence(name, True, error=f"unexpected probe output ({len(parts)} sections)")
    unit, sql, reach = (p.strip() for p in parts)
    lines = [ln for ln in sql.splitlines() if ln.strip()]
    rc = _code(lines[-1].removeprefix("rc=")) if lines and lines[-1].startswith("rc=") else -1
    out = lines[:-1]
    role, read_only, receiver, upstream, err = "", None, "", "", ""
    if rc == 124:
        role, err = "no answer", f"psql got no answer within {REACH_TIMEOUT_S:g} s"
    elif rc != 0 or not out or out[-1].count("|") != 3:
        role, err = "down", (out[-1] if out else f"psql exit {rc}")[:300]
    else:
        in_recovery, ro, receiver, up = out[-1].split("|")
        role = "standby" if in_recovery == "true" else "primary"
        read_only = ro == "on" or in_recovery == "true"
        upstream = names.get(up, up) if role == "standby" else ""
    return DbEvidence(
        name,
        True,
        unit=unit.splitlines()[-1] if unit else "unknown",
        role=role,
        read_only=read_only,
        wal_receiver=receiver,
        upstream=upstream,
        sql_error=err,
        reach=parse_reach(reach, name, names),
    )


def mon_probe(targets: Sequence[tuple[str, int, bool]]) -> str:
    return reach_command(targets)


def parse_mon_probe(name: str, text: str, names: Mapping[str, str]) -> MonEvidence:
    return MonEvidence(name, True, reach=parse_reach(text, name, names))
