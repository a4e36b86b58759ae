"""The decision: which link of the chain is broken, what proves it, and what fixes it.

``diagnose(evidence)`` is pure: the same evidence gives the same diagnosis, so every
case is tested on recorded evidence (tests/unit/test_triage.py). The links are
checked from the database outwards, because a broken link further in shows up as a
symptom at every hop in front of it (a lost primary fails every web node's /readyz,
so the lbs mark every web node down):

1. **two primaries** (split brain) → db-failover, for a person; a primary that refuses
   writes (``default_transaction_read_only``) → a person;
2. **the primary lost**: no db host is primary; the standbys' ``primary_conninfo``
   names the one they follow; down (no SSH), frozen (its port accepts but never
   answers, psql times out) or stopped → db-failover with that target;
3. **web → primary**: a web node that answers SSH cannot reach the primary's port.
   Some web nodes: that node's path (drain it with web-node-failure, or repair the
   path). Every web node while the standbys or the mon hosts reach it: the path from
   the web tier (a planned switchover to a standby the web tier reaches, or repair
   the path). Nobody reaches it: the primary's own network;
4. **web nodes**: no SSH answer, the ledger unit not active, /healthz or /readyz failing
   although the primary is reachable → web-node-failure;
5. **lb → web**: a web node ready on itself but not UP on an lb (the path, or drained);
6. **lbs**: an lb unreachable or its HAProxy, keepalived or /healthz down, no VIP
   holder, or two → lb-failover;
7. **the VIP** failing (or slow) although every link behind it holds;
8. **standbys**, **backup repository**, **monitoring**: they do not fail a client's
   request now, but they are links of the chain.

The first broken link is the diagnosis; any later one is listed under ``also``.
A proposal with ``hand_over`` may be started unattended by the alert receiver when
a route of the runbook is allow-listed (docs/alerts.md); the others are for a person.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from faultbook.triage.evidence import (
    PG_PORT,
    PGBACKREST_PORT,
    DbEvidence,
    Evidence,
    LbEvidence,
    Reach,
)
from faultbook.triage.verdict import (
    Diagnosis,
    Finding,
    Proposal,
    db_state,
    grouped,
    lb_view,
    listed,
    web_state,
)

__all__ = ["Diagnosis", "Finding", "Proposal", "diagnose"]

# The VIP's /readyz slower than this is a finding of its own (symptom "latency"). It is
# one probe, not a percentile: the bound is loose so a busy lab does not trip it.
SLOW_S = 2.0


# ---------------------------------------------------------------------- facts
@dataclass(frozen=True)
class _Facts:
    ev: Evidence
    primaries: tuple[str, ...]
    primary: str | None  # the one primary, or the host the standbys follow when none is

    def reaches_to(self, host: str) -> list[Reach]:
        """Every probe of HOST's PostgreSQL port (web nodes, other db hosts, mon hosts)."""
        out: list[Reach] = []
        for w in self.ev.webs:
            r = w.reach_to(host)
            if r is not None:
                out.append(r)
        for d in self.ev.dbs:
            r = d.reach_to(host)
            if r is not None and d.name != host:
                out.append(r)
        for m in self.ev.mons:
            r = m.reach_to(host)
            if r is not None:
                out.append(r)
        return out


def _facts(ev: Evidence) -> _Facts:
    primaries = tuple(d.name for d in ev.dbs if d.role == "primary")
    if len(primaries) == 1:
        return _Facts(ev, primaries, primaries[0])
    followed = Counter(d.upstream for d in ev.dbs if d.role == "standby" and d.upstream)
    if followed:
        return _Facts(ev, primaries, followed.most_common(1)[0][0])
    others = [d.name for d in ev.dbs if d.role != "standby"]
    return _Facts(ev, primaries, others[0] if len(others) == 1 and not primaries else None)


# ---------------------------------------------------------------------- rules
def _split_brain(f: _Facts) -> Finding | None:
    if len(f.primaries) < 2:
        return None
    return Finding(
        link=f"the database: {listed(f.primaries)} are all primary",
        summary=f"{listed(f.primaries)} all accept writes (split brain)",
        evidence=tuple(db_state(d) for d in f.ev.dbs),
        proposals=(
            Proposal(
                "db-failover",
                {},
                "fence every primary but one; which one keeps the acknowledged writes is a "
                "person's call",
            ),
        ),
    )


def _read_only_primary(f: _Facts) -> Finding | None:
    d = f.ev.db(f.primary) if len(f.primaries) == 1 and f.primary else None
    if d is None or not d.read_only:
        return None
    return Finding(
        f"the primary {d.name}",
        f"the primary {d.name} refuses writes: default_transaction_read_only is on",
        (db_state(d),),
        (
            Proposal(
                "",
                {},
                "a setting, not a failure: no runbook changes it",
                action=f"find who set default_transaction_read_only on {d.name} and set it "
                "off (ALTER SYSTEM, then reload)",
            ),
        ),
    )


def _primary_lost(f: _Facts) -> Finding | None:
    if f.primaries:
        return None
    ev = f.ev
    standbys = [d.name for d in ev.dbs if d.role == "standby"]
    if f.primary is None:
        return Finding(
            link="the primary",
            summary="no db host accepts writes and no standby names the one it follows",
            evidence=tuple(db_state(d) for d in ev.dbs),
            proposals=(Proposal("db-failover", {}, "find the lost primary and promote a standby"),),
        )
    p = f.primary
    d = ev.db(p)
    reaches = f.reaches_to(p)
    lines = [db_state(d) if d else f"{p} is not a db host of the inventory"]
    if standbys:
        lines.append(
            f"{listed(standbys)} {'is a standby' if len(standbys) == 1 else 'are standbys'} of {p}"
        )
    lines += grouped(reaches)
    lines += [web_state(w) for w in ev.webs if w.reachable and w.readyz != 200][:1]
    if d is None or not d.reachable:
        state = "is down: it does not answer SSH and its port answers nobody"
    elif d.role == "no answer" or any(r.outcome == "silent" for r in reaches):
        state = "is frozen: its port accepts connections but PostgreSQL answers nobody"
    else:
        state = f"is not serving: PostgreSQL is {d.unit}"
    failing = [w.name for w in ev.webs if w.reachable and w.readyz != 200]
    tail = f"; {listed(failing)} fail /readyz" if failing else ""
    return Finding(
        link=f"the primary {p}",
        summary=f"the primary {p} {state}{tail}",
        evidence=tuple(lines),
        proposals=(
            Proposal(
                "db-failover",
                {"target": p},
                f"fence {p}, promote the standby that holds every acknowledged commit, "
                f"rejoin {p} once it is back",
                hand_over=True,
            ),
        ),
    )


def _web_to_primary(f: _Facts) -> Finding | None:
    p = f.primary
    if p is None or len(f.primaries) != 1:
        return None
    ev = f.ev
    asked = [w for w in ev.webs if w.reachable and w.reach_to(p) is not None]
    cut = [w for w in asked if not w.reach_to(p).ok]  # type: ignore[union-attr]
    if not cut:
        return None
    fine = [w.name for w in asked if w not in cut]
    cut_names = [w.name for w in cut]
    lines = grouped([w.reach_to(p) for w in cut])  # type: ignore[misc]
    for w in cut:
        lines.append(web_state(w))
        down, seen = lb_view(ev, w.name)
        if seen:
            lines.append(seen)
    repair = Proposal(
        "",
        {},
        "the path itself: nothing else is wrong on either side",
        action=f"repair the path {listed(cut_names)} → {p}:{PG_PORT} (nftables on both hosts: "
        "`nft list ruleset`; the link between them)",
    )
    if fine:
        lines.append(f"{listed(fine)} reach{'es' if len(fine) == 1 else ''} {p}:{PG_PORT}")
        first = cut[0].name
        down, _ = lb_view(ev, first)
        because = f"{listed(cut_names)} cannot reach the primary {p}, although {listed(fine)} can"
        if cut[0].readyz == 200:
            summary = f"{because}; {first}'s /readyz still answers 200"
        elif down:
            summary = f"{listed(down)} mark {first} down: its /readyz fails, because {because}"
        else:
            summary = f"{first}'s /readyz fails, because {because}"
        drain = Proposal(
            "web-node-failure",
            {"target": first} if len(cut) == 1 else {},
            f"drain {listed(cut_names)} on every lb so it stays out of rotation until the path "
            "is repaired (its restart cannot repair a path)",
        )
        return Finding(
            f"{listed(cut_names)} → {p}:{PG_PORT}", summary, tuple(lines), (drain, repair)
        )
    standbys_ok = [
        d.name for d in ev.dbs if d.name != p and (r := d.reach_to(p)) is not None and r.ok
    ]
    mons_ok = [m.name for m in ev.mons if (r := m.reach_to(p)) is not None and r.ok]
    if standbys_ok or mons_ok:
        lines.append(f"{listed(standbys_ok + mons_ok)} reach {p}:{PG_PORT}")
        reached = [
            d.name
            for d in ev.dbs
            if d.role == "standby"
            and d.upstream == p
            and d.wal_receiver == "streaming"
            and all((r := w.reach_to(d.name)) is not None and r.ok for w in asked)
        ]
        proposals = []
        if reached:
            lines.append(f"every web node reaches {listed(reached)}")
            proposals.append(
                Proposal(
                    "db-failover",
                    {"mode": "switchover", "new_primary": reached[0]},
                    f"move the primary to {reached[0]}, a streaming standby every web node "
                    "reaches (planned: no acknowledged write lost); repair the path afterwards",
                )
            )
        proposals.append(repair)
        return Finding(
            f"web tier → {p}:{PG_PORT}",
            f"no web node can reach the primary {p}, although {listed(standbys_ok + mons_ok)} "
            "can: the path from the web tier is cut",
            tuple(lines),
            tuple(proposals),
        )
    behind = [r for d in ev.dbs if d.name != p and (r := d.reach_to(p)) is not None]
    behind += [r for m in ev.mons if (r := m.reach_to(p)) is not None]
    return Finding(
        f"the network of {p}",
        f"the primary {p} answers SSH but no host reaches its PostgreSQL port",
        tuple(lines + grouped(behind)),
        (
            Proposal("", {}, f"{p} itself is cut off", action=f"repair the network of {p}"),
            Proposal(
                "db-failover",
                {"target": p},
                "the failover detects a primary only once it stops answering the controller too",
                action=f"faultbook db fence {p}",
            ),
        ),
    )


def _web_nodes(f: _Facts) -> Finding | None:
    ev = f.ev
    p = f.primary
    bad = []
    for w in ev.webs:
        reaches_primary = p is not None and (r := w.reach_to(p)) is not None and r.ok
        if not w.alive or (w.readyz != 200 and reaches_primary):
            bad.append(w)
    if not bad:
        return None
    lines = []
    for w in bad:
        lines.append(web_state(w))
        _, seen = lb_view(ev, w.name)
        if seen:
            lines.append(seen)
    names = [w.name for w in bad]
    what = "down" if all(not w.alive for w in bad) else "not ready"
    return Finding(
        link=listed(names),
        summary=f"{listed(names)} {'is' if len(bad) == 1 else 'are'} {what}: "
        + "; ".join(web_state(w).split(": ", 1)[-1] for w in bad),
        evidence=tuple(lines),
        proposals=(
            Proposal(
                "web-node-failure",
                {"target": names[0]} if len(bad) == 1 else {},
                "drain, restart (or power on), verify /readyz and re-enable",
                hand_over=True,
            ),
        ),
    )


def _lb_to_web(f: _Facts) -> Finding | None:
    ev = f.ev
    for w in ev.webs:
        if not (w.alive and w.readyz == 200):
            continue
        down, seen = lb_view(ev, w.name)
        down = [lb for lb in down if any(x.name == lb and x.healthy for x in ev.lbs)]
        if not down:
            continue
        states = {lb.servers[w.name] for lb in ev.lbs if lb.name in down}
        drained = all(s.startswith(("DRAIN", "MAINT")) for s in states)
        lines = [seen, f"{w.name} answers /readyz 200 on itself"]
        if drained:
            return Finding(
                f"{w.name} drained",
                f"{w.name} is ready but drained on {listed(down)} ({listed(sorted(states))})",
                tuple(lines),
                (
                    Proposal(
                        "web-node-failure",
                        {"target": w.name},
                        "verify and re-enable it (someone drained it: re-enabling is a "
                        "person's call)",
                    ),
                ),
            )
        return Finding(
            f"{listed(down)} → {w.name}",
            f"{seen} although {w.name} answers /readyz on itself: the path from "
            f"{listed(down)} to {w.name} is cut",
            tuple(lines),
            (
                Proposal(
                    "",
                    {},
                    "the path itself",
                    action=f"repair the path {listed(down)} → {w.name} (nftables on both hosts; "
                    "the link)",
                ),
                Proposal(
                    "web-node-failure",
                    {"target": w.name},
                    f"drain {w.name} until the path is repaired",
                ),
            ),
        )
    return None


def _lb_line(lb: LbEvidence) -> str:
    if not lb.reachable:
        return f"{lb.name} does not answer SSH ({lb.error})"
    return (
        f"{lb.name}: haproxy {lb.haproxy}, keepalived {lb.keepalived}, VRRP {lb.vrrp_state}, "
        f"/healthz {'200' if lb.healthz else 'fails'}" + (", holds the VIP" if lb.holds_vip else "")
    )


def _lbs(f: _Facts) -> Finding | None:
    ev = f.ev
    holders = [lb.name for lb in ev.lbs if lb.holds_vip]
    sick = [lb for lb in ev.lbs if not lb.healthy]
    lines = [_lb_line(lb) for lb in ev.lbs]
    if len(holders) > 1:
        return Finding(
            f"the VIP {ev.vip.vip}",
            f"{listed(holders)} hold the VIP at once",
            tuple(lines),
            (Proposal("lb-failover", {}, "a VRRP split brain: restart one lb, for a person"),),
        )
    if sick:
        names = [lb.name for lb in sick]
        moved = f"; the VIP is on {holders[0]}" if holders else "; no lb holds the VIP"
        return Finding(
            listed(names),
            f"{listed(names)} {'is' if len(sick) == 1 else 'are'} down{moved}",
            tuple(lines),
            (
                Proposal(
                    "lb-failover",
                    {"target": names[0]} if len(sick) == 1 else {},
                    "bring the lb back as BACKUP without moving the VIP (booted if powered off)",
                    hand_over=True,
                ),
            ),
        )
    if not holders:
        return Finding(
            f"the VIP {ev.vip.vip}",
            "no lb holds the VIP although every lb is up",
            tuple(lines),
            (Proposal("lb-failover", {}, "restart keepalived on the lbs", hand_over=True),),
        )
    return None


def _vip(f: _Facts) -> Finding | None:
    v = f.ev.vip
    holder = next((lb.name for lb in f.ev.lbs if lb.holds_vip), "")
    slow = v.ok and v.latency_s is not None and v.latency_s > SLOW_S
    if v.ok and not slow:
        return None
    seen = (
        f"GET https://{v.vip}/readyz took {v.latency_s:.2f} s"
        if slow
        else f"GET https://{v.vip}/readyz: {v.status or 'no answer'} {v.error or v.body}".strip()
    )
    return Finding(
        f"the VIP {v.vip}",
        f"the VIP {'answers slowly' if slow else 'fails'} although every link behind it holds",
        (seen, f"{holder or 'no lb'} holds the VIP"),
        (
            Proposal(
                "lb-failover",
                {"target": holder} if holder else {},
                f"restart HAProxy and keepalived on {holder or 'the lbs'}",
            ),
            Proposal("health-check", {}, "load, memory and disk of every host"),
        ),
    )


def _standbys(f: _Facts) -> Finding | None:
    p = f.primary
    if p is None or len(f.primaries) != 1:
        return None
    bad: list[tuple[DbEvidence, str]] = []
    for d in f.ev.dbs:
        if d.name == p:
            continue
        if not d.reachable or d.role != "standby":
            bad.append((d, db_state(d)))
        elif d.wal_receiver != "streaming" or d.upstream != p:
            receiver = d.wal_receiver or "not running"
            why = f"wal receiver {receiver}, following {d.upstream or 'nobody'}"
            r = d.reach_to(p)
            if r is not None and not r.ok:
                why += f"; {r.describe()}"
            bad.append((d, f"{d.name} does not stream from {p} ({why})"))
    if not bad:
        return None
    names = [d.name for d, _ in bad]
    first = names[0]
    others = [d.name for d in f.ev.dbs if d.name != p]
    # Synchronous commit waits for a quorum of standbys (ANY 1 at least): with none
    # streaming, every write hangs though /readyz (no commit) still answers 200.
    hang = (
        "; no standby streams, so every commit waits: writes hang"
        if set(names) >= set(others)
        else ""
    )
    return Finding(
        f"replication {p} → {listed(names)}",
        f"{listed(names)} {'does' if len(bad) == 1 else 'do'} not stream from the primary {p}"
        + hang,
        tuple(line for _, line in bad),
        (
            Proposal(
                "",
                {},
                "a standby back in the quorum",
                action=f"faultbook db rejoin {first} --primary {p} (power it on first if it "
                "is off)",
            ),
        ),
    )


def _backup(f: _Facts) -> Finding | None:
    ev = f.ev
    b = ev.backup
    lines = []
    if b is not None and not b.ok:
        lines.append(f"{b.host}: {b.error or f'stanza status {b.status_code}: {b.message}'}")
    if f.primary is not None and b is not None:
        d = ev.db(f.primary)
        r = d.reach_to(b.host, PGBACKREST_PORT) if d else None
        if r is not None and not r.ok:
            lines.append(r.describe())
    if not lines:
        return None
    return Finding(
        f"the backup repository{f' on {b.host}' if b else ''}",
        "backups or WAL archiving are at risk: " + "; ".join(lines),
        tuple(lines),
        (
            Proposal(
                "backup-restore", {"mode": "verify"}, "prove what the repository still restores"
            ),
        ),
    )


def _monitoring(f: _Facts) -> Finding | None:
    lines = []
    # A lost primary answers nobody: the mon hosts' misses of it are its symptom, not theirs.
    primary = f.primary if len(f.primaries) == 1 else None
    for m in f.ev.mons:
        if not m.reachable:
            lines.append(f"{m.name} does not answer SSH ({m.error})")
            continue
        r = m.reach_to(primary) if primary else None
        if r is not None and not r.ok:
            lines.append(r.describe())
    if not lines:
        return None
    return Finding(
        "monitoring",
        "the monitoring does not see the whole chain: " + "; ".join(lines),
        tuple(lines),
        (Proposal("health-check", {}, "every host's reachability and systemd state"),),
    )


RULES: tuple[Callable[[_Facts], Finding | None], ...] = (
    _split_brain,
    _read_only_primary,
    _primary_lost,
    _web_to_primary,
    _web_nodes,
    _lb_to_web,
    _lbs,
    _vip,
    _standbys,
    _backup,
    _monitoring,
)


def _held(f: _Facts) -> tuple[str, ...]:
    ev = f.ev
    out = []
    if ev.vip.status is not None:
        lat = f" in {ev.vip.latency_s:.2f} s" if ev.vip.latency_s is not None else ""
        out.append(f"the VIP {ev.vip.vip} answers /readyz {ev.vip.status}{lat}")
    holder = next((lb.name for lb in ev.lbs if lb.holds_vip), None)
    if holder:
        out.append(
            f"{holder} holds the VIP; {listed([lb.name for lb in ev.lbs])}: HAProxy and "
            "keepalived active, every web server UP"
        )
    if ev.webs:
        peers = sorted({p for w in ev.webs for p in w.db_peers})
        out.append(
            f"{listed([w.name for w in ev.webs])}: ledger active, /healthz and /readyz 200"
            + (f", connected to {listed(peers)}" if peers else "")
        )
    if f.primary:
        others = [d.name for d in ev.dbs if d.name != f.primary]
        out.append(f"{f.primary} is the primary; {listed(others)} stream from it")
        n = len(f.reaches_to(f.primary))
        out.append(f"all {n} probes of {f.primary}:{PG_PORT} (web, standbys, mon) are answered")
    if ev.backup is not None:
        out.append(f"backup repository on {ev.backup.host}: {ev.backup.message}")
    return tuple(out)


def diagnose(ev: Evidence) -> Diagnosis:
    """The broken link (the first rule that finds one), the others, or nothing broken."""
    f = _facts(ev)
    found: list[Finding] = []
    for rule in RULES:
        # The VIP is a finding of its own only when every link behind it holds.
        if rule is _vip and found:
            continue
        x = rule(f)
        if x is not None:
            found.append(x)
    if not found:
        return Diagnosis(ev.symptom, None, (), _held(f))
    return Diagnosis(ev.symptom, found[0], tuple(found[1:]))
