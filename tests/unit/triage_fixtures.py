"""Recorded evidence for triage's unit tests: what the probes print on the hosts (the
web, db and mon probes of ``triage.evidence``, bash's own connect errors, curl's
status codes, ``ss -Htn``) and the lbs' rows as ``vip.lb_status`` and
``haproxy.haproxy_servers`` return them, turned into evidence by the parsers; and
the evidence of each fault case."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from faultbook.triage import evidence as ev

M = "@@faultbook-triage@@"
ADDR = {
    "web1": "10.77.0.21",
    "web2": "10.77.0.22",
    "web3": "10.77.0.23",
    "db1": "10.77.0.31",
    "db2": "10.77.0.32",
    "db3": "10.77.0.33",
    "backup1": "10.77.0.41",
}
NAMES = {a: n for n, a in ADDR.items()} | {n: n for n in ADDR}
DBS = ("db1", "db2", "db3")
WEBS = ("web1", "web2", "web3")

# bash's words, as the reach probe records them (exit status, then its output).
ANSWERS = "0 connected S"
SILENT = "124 connected"
TIMEOUT = "124 "
BLOCKED = (
    "97 bash: connect: Operation not permitted "
    "bash: line 1: /dev/tcp/10.77.0.31/5432: Operation not permitted"
)
REFUSED = "97 bash: connect: Connection refused bash: line 1: /dev/tcp/x/5432: Connection refused"
NO_READ_WRITE = (
    '{"status": "unavailable", "reason": "ready: no read-write database host: connection to '
    'server at \\"10.77.0.31\\", port 5432 failed: timeout expired; connection to server at '
    '\\"10.77.0.32\\", port 5432 failed: session is read-only"}'
)


def reach_lines(outcomes: dict[str, str], port: int = 5432) -> str:
    return "\n".join(f"reach {ADDR[h]} {port} {o}" for h, o in outcomes.items())


def web_text(
    *,
    service: str = "active",
    healthz: str = "200",
    readyz: str = "200",
    body: str = '{"status": "ready"}',
    peers: tuple[str, ...] = ("db1",),
    reach: dict[str, str] | None = None,
    me: str = "web1",
) -> str:
    conns = "\n".join(
        f"0      0      {ADDR[me]}:{41000 + i}      {ADDR[p]}:5432" for i, p in enumerate(peers)
    )
    reach = reach or dict.fromkeys(DBS, ANSWERS)
    return f"{service}\n{M}\n{healthz}\n{M}\n{body}\n{readyz}\n\n{M}\n{conns}\n{M}\n" + reach_lines(
        reach
    )


def db_text(
    me: str,
    *,
    unit: str = "active",
    sql: str | None = None,
    reach: dict[str, str] | None = None,
    backup: str = "0 connected",
) -> str:
    if sql is None:
        sql = "false|off||\nrc=0" if me == "db1" else "true|on|streaming|10.77.0.31\nrc=0"
    reach = reach if reach is not None else {h: ANSWERS for h in DBS if h != me}
    return (
        f"{unit}\n{M}\n{sql}\n{M}\n"
        + reach_lines(reach)
        + "\n"
        + reach_lines({"backup1": backup}, 8432)
    )


def lb(
    name: str, *, holds: bool, servers: dict[str, str] | None = None, **kw: Any
) -> ev.LbEvidence:
    base = ev.LbEvidence(
        name,
        True,
        haproxy="active",
        keepalived="active",
        holds_vip=holds,
        vrrp_state="MASTER" if holds else "BACKUP",
        healthz=True,
        servers=servers or dict.fromkeys(WEBS, "UP"),
    )
    return dataclasses.replace(base, **kw)


def evidence(
    *,
    webs: dict[str, ev.WebEvidence] | None = None,
    dbs: dict[str, ev.DbEvidence] | None = None,
    lbs: tuple[ev.LbEvidence, ...] | None = None,
    vip: ev.VipEvidence | None = None,
    mons: tuple[ev.MonEvidence, ...] | None = None,
    backup: ev.BackupEvidence | None = None,
    symptom: str = "vip-probe",
) -> ev.Evidence:
    w = {h: ev.parse_web_probe(h, web_text(me=h), NAMES) for h in WEBS} | (webs or {})
    d = {h: ev.parse_db_probe(h, db_text(h), NAMES) for h in DBS} | (dbs or {})
    return ev.Evidence(
        symptom=symptom,
        collected_at=datetime(2026, 12, 7, 7, 0, tzinfo=UTC),
        took_s=1.2,
        vip=vip or ev.VipEvidence("10.77.0.10", 200, 0.02, body='{"status": "ready"}'),
        lbs=lbs or (lb("lb1", holds=True), lb("lb2", holds=False)),
        webs=tuple(w[h] for h in WEBS),
        dbs=tuple(d[h] for h in DBS),
        mons=mons
        if mons is not None
        else tuple(
            ev.parse_mon_probe(m, reach_lines(dict.fromkeys(DBS, ANSWERS)), NAMES)
            for m in ("mon1", "mon2")
        ),
        backup=backup or ev.BackupEvidence("backup1", 0, "ok"),
    )


def both_lbs_mark(web: str, status: str = "DOWN") -> tuple[ev.LbEvidence, ...]:
    servers = dict.fromkeys(WEBS, "UP") | {web: status}
    return (lb("lb1", holds=True, servers=servers), lb("lb2", holds=False, servers=servers))


def primary_gone(web_reach: str, db1: ev.DbEvidence) -> ev.Evidence:
    webs = {
        h: ev.parse_web_probe(
            h,
            web_text(
                readyz="503",
                body=NO_READ_WRITE,
                peers=(),
                reach={"db1": web_reach, "db2": ANSWERS, "db3": ANSWERS},
                me=h,
            ),
            NAMES,
        )
        for h in WEBS
    }
    standby = "true|on||10.77.0.31\nrc=0"  # no wal receiver any more
    dbs = {
        "db1": db1,
        "db2": ev.parse_db_probe(
            "db2", db_text("db2", sql=standby, reach={"db1": web_reach, "db3": ANSWERS}), NAMES
        ),
        "db3": ev.parse_db_probe(
            "db3", db_text("db3", sql=standby, reach={"db1": web_reach, "db2": ANSWERS}), NAMES
        ),
    }
    mons = tuple(
        ev.parse_mon_probe(
            m, reach_lines({"db1": web_reach, "db2": ANSWERS, "db3": ANSWERS}), NAMES
        )
        for m in ("mon1", "mon2")
    )
    every = dict.fromkeys(WEBS, "DOWN")
    lbs = (lb("lb1", holds=True, servers=every), lb("lb2", holds=False, servers=every))
    vip = ev.VipEvidence("10.77.0.10", 503, 0.6, body=NO_READ_WRITE)
    return evidence(webs=webs, dbs=dbs, mons=mons, lbs=lbs, vip=vip, symptom="writes-fail")


def cut_web2(outcome: str) -> ev.Evidence:
    web2 = ev.parse_web_probe(
        "web2",
        web_text(
            readyz="503",
            body=NO_READ_WRITE,
            peers=(),
            reach={"db1": outcome, "db2": ANSWERS, "db3": ANSWERS},
            me="web2",
        ),
        NAMES,
    )
    return evidence(webs={"web2": web2}, lbs=both_lbs_mark("web2"), symptom="5xx")


def cut_web_tier() -> ev.Evidence:
    webs = {
        h: ev.parse_web_probe(
            h,
            web_text(
                readyz="503",
                body=NO_READ_WRITE,
                peers=(),
                reach={"db1": TIMEOUT, "db2": ANSWERS, "db3": ANSWERS},
                me=h,
            ),
            NAMES,
        )
        for h in WEBS
    }
    every = dict.fromkeys(WEBS, "DOWN")
    return evidence(
        webs=webs,
        lbs=(lb("lb1", holds=True, servers=every), lb("lb2", holds=False, servers=every)),
        vip=ev.VipEvidence("10.77.0.10", 503, 0.5),
    )
