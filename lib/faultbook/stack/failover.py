"""The database failover procedure: state, candidate choice, fence, promote, rejoin.

Safety rules this module enforces (docs/runbooks/db-failover.md):

- The old primary is fenced before anything is promoted.
- A standby is promoted only when it can be shown to hold every acknowledged
  commit. With ``synchronous_standby_names = 'ANY k (...)'`` an acknowledged
  commit is flushed on at least k standbys; if fewer than k standbys are
  unreachable, the reachable standby with the highest flushed (received) LSN
  holds every acknowledged commit. Otherwise the choice is refused unless
  ``force=True``.
- After a failover the former primary rejoins only as a standby (pg_rewind,
  or a pgBackRest re-clone); the start guard installed by the postgresql role
  stops it from coming back as a second primary in the meantime.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import requests

from faultbook import ansible, ssh
from faultbook.errors import (
    FaultbookError,
    InventoryError,
    PromotionRefused,
    SSHError,
    StackError,
)
from faultbook.inventory import Inventory
from faultbook.poll import poll
from faultbook.stack import http, psql
from faultbook.stack.psql import parse_lsn

log = logging.getLogger(__name__)


# One query per db host; every column is text so parsing is the same for all.
STATE_SQL = """
SELECT pg_is_in_recovery()::text,
       coalesce(pg_last_wal_receive_lsn()::text, ''),
       coalesce(pg_last_wal_replay_lsn()::text, ''),
       CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_current_wal_flush_lsn()::text END,
       coalesce((SELECT received_tli::text FROM pg_stat_wal_receiver),
                (SELECT timeline_id::text FROM pg_control_checkpoint())),
       coalesce((SELECT status FROM pg_stat_wal_receiver), ''),
       coalesce((SELECT sender_host FROM pg_stat_wal_receiver), '')
""".strip().replace("\n", " ")

STATE_COLUMNS = [
    "host",
    "reachable",
    "role",
    "timeline",
    "receive_lsn",
    "replay_lsn",
    "flush_lsn",
    "wal_receiver",
    "upstream",
    "error",
]


def lsn_to_int(lsn: str | None) -> int | None:
    """An LSN comparable across hosts; '' or None -> None."""
    return parse_lsn(lsn) if lsn else None


def parse_state(host: str, out: str) -> dict[str, Any]:
    fields = (out.strip().split("|") + [""] * 7)[:7]
    in_recovery, receive, replay, flush, tli, receiver, upstream = fields
    return {
        "host": host,
        "reachable": True,
        "role": "standby" if in_recovery == "true" else "primary",
        "timeline": int(tli) if tli.isdigit() else None,
        "receive_lsn": receive,
        "replay_lsn": replay,
        "flush_lsn": flush,
        "wal_receiver": receiver,
        "upstream": upstream,
        "error": "",
    }


def cluster_state(
    inv: Inventory, timeout: float = 3.0, hosts: Iterable[str] | None = None
) -> pd.DataFrame:
    """Each db host (or HOSTS): reachable, primary or standby, LSNs, whom it streams from."""
    hosts = list(hosts) if hosts is not None else [h.name for h in inv.group("db")]
    cmd = f"cd /tmp && sudo -n -u postgres psql -X -A -t -c {ssh._quote(STATE_SQL)}"
    results = ssh.run_many(inv, hosts, cmd, timeout=timeout)
    rows = []
    for host in hosts:
        res = results[host]
        if isinstance(res, SSHError):
            rows.append(
                {"host": host, "reachable": False, "role": "unreachable", "error": res.message}
            )
        elif not res.ok:
            err = (res.stderr or res.stdout).strip().splitlines()
            rows.append(
                {"host": host, "reachable": True, "role": "down", "error": err[-1] if err else ""}
            )
        else:
            rows.append(parse_state(host, res.stdout))
    return pd.DataFrame(rows).reindex(columns=STATE_COLUMNS)


def primaries(state: pd.DataFrame) -> list[str]:
    return list(state.loc[state["role"] == "primary", "host"])


def replication(inv: Inventory, primary: str) -> pd.DataFrame:
    """pg_stat_replication on the primary: who streams, sync state, lag."""
    sql = (
        "SELECT application_name, client_addr, state, sync_state, sent_lsn, flush_lsn, "
        "replay_lsn, coalesce(extract(epoch FROM replay_lag), 0) FROM pg_stat_replication "
        "ORDER BY application_name"
    )
    out = psql.psql(inv, primary, sql)
    cols = ["standby", "address", "state", "sync_state", "sent_lsn", "flush_lsn", "replay_lsn"]
    rows = []
    for line in out.splitlines():
        f = line.split("|")
        if len(f) >= 8:
            rows.append(dict(zip(cols, f[:7], strict=True)) | {"replay_lag_s": float(f[7] or 0)})
    return pd.DataFrame(rows, columns=[*cols, "replay_lag_s"])


def slots(inv: Inventory, primary: str) -> pd.DataFrame:
    sql = (
        "SELECT slot_name, active::text, coalesce(restart_lsn::text, ''), "
        "coalesce(wal_status, '') FROM pg_replication_slots ORDER BY slot_name"
    )
    rows = [line.split("|") for line in psql.psql(inv, primary, sql).splitlines() if line]
    return pd.DataFrame(rows, columns=["slot", "active", "restart_lsn", "wal_status"])


def sync_quorum(inv: Inventory) -> int:
    return int(inv.vars.get("postgresql_sync_quorum", 1))


@dataclass(frozen=True)
class Candidate:
    host: str
    lsn: str
    proven: bool
    reason: str


def choose_candidate(
    state: pd.DataFrame, old_primary: str, quorum: int = 1, force: bool = False
) -> Candidate:
    """The standby to promote: the most advanced one, if it provably holds every ack."""
    if old_primary in primaries(state):
        raise PromotionRefused(
            f"{old_primary} still answers as a primary: fence it before promoting anything"
        )
    others = state[state["host"] != old_primary]
    standbys = others[others["role"] == "standby"]
    missing = sorted(set(others["host"]) - set(standbys["host"]))
    if standbys.empty:
        raise PromotionRefused(f"no standby answers (unreachable or down: {', '.join(missing)})")
    ranked = standbys.assign(
        _lsn=[lsn_to_int(x) or 0 for x in standbys["receive_lsn"]]
    ).sort_values(["_lsn", "host"], ascending=[False, True])
    best = ranked.iloc[0]
    proven = len(missing) < quorum
    if proven:
        reason = (
            f"{best['host']} has the highest flushed LSN {best['receive_lsn']} of "
            f"{len(standbys)} standbys; with ANY {quorum} every acknowledged commit is on at "
            f"least {quorum} of them and at most {len(missing)} cannot answer"
        )
    else:
        reason = (
            f"cannot prove {best['host']} holds every acknowledged commit: "
            f"{', '.join(missing)} cannot answer and the quorum is ANY {quorum}"
        )
        if not force:
            raise PromotionRefused(reason + "; pass force=True to promote anyway (may lose writes)")
        reason += " — promoted anyway (force=True)"
    return Candidate(str(best["host"]), str(best["receive_lsn"]), proven, reason)


def choose_for(inv: Inventory, old: str, force: bool = False) -> Candidate:
    """The standby to promote in place of OLD: every other db host's state, the quorum,
    and ``choose_candidate``'s proof (PromotionRefused when there is none)."""
    others = [h.name for h in inv.group("db") if h.name != old]
    return choose_candidate(cluster_state(inv, hosts=others), old, sync_quorum(inv), force)


def fence(inv: Inventory, host: str) -> str:
    """Make sure HOST cannot acknowledge another write. Returns what was done."""
    inv.member(host, "db")
    if inv.is_lab:
        from faultbook.lab.lab import Lab

        lab = Lab(inv)
        if lab.pid(host) is None:
            return f"{host} is powered off already (lab)"
        lab.crash(host)
        return f"{host} powered off (lab power control)"
    playbook = str(inv.vars.get("db_fence_playbook", "db_fence.yml"))
    ansible.run_playbook(playbook, inv, extravars={"db_fence_host": host})
    return f"{host} fenced by {playbook}"


def promote(inv: Inventory, host: str, exclude: Iterable[str] = ()) -> ansible.PlaybookResult:
    inv.member(host, "db")
    return ansible.run_playbook(
        "db_promote.yml",
        inv,
        extravars={"db_new_primary": host, "db_exclude": ",".join(exclude)},
    )


# The postgresql role's failover script (templates/pg-failover.sh.j2): the steps
# inside the write outage, one SSH call each; the playbooks reconcile afterwards.
FAILOVER_SCRIPT = "/usr/local/sbin/faultbook-pg-failover"
REFUSED_EXIT = 3


def parse_fields(out: str) -> dict[str, str]:
    """The failover script's answer: the last line's ``key=value`` pairs."""
    lines = [x for x in out.strip().splitlines() if "=" in x]
    if not lines:
        return {}
    return dict(f.split("=", 1) for f in lines[-1].split() if "=" in f)


def _script(inv: Inventory) -> str:
    """Where the role installed the failover script (the inventory may move it)."""
    return str(inv.vars.get("postgresql_failover_script", FAILOVER_SCRIPT))


def run_script(
    inv: Inventory, host: str, args: str, timeout: float = 30.0, stdin: ssh.Stdin = None
) -> dict[str, str]:
    """Run the failover script on HOST as root; its fields, or PromotionRefused / StackError.
    STDIN: what the script reads (``ssh.run``'s, a callable included)."""
    path = _script(inv)
    res = ssh.run(inv, host, f"{path} {args}", timeout=timeout, sudo=True, stdin=stdin)
    fields = parse_fields(res.stdout)
    what = args.split()[0] if args else "?"
    if res.rc == REFUSED_EXIT:
        why = fields.get("reason", res.stdout.strip())
        raise PromotionRefused(f"{host} refused to {what}: {why}")
    if not res.ok or "result" not in fields:
        err = (res.stderr or res.stdout).strip().splitlines()
        raise StackError(
            f"{host}: {path} {what} failed (exit {res.rc}): {err[-1] if err else 'no output'}"
        )
    return fields


@dataclass(frozen=True)
class FastPromotion:
    """What ``fast_promote`` / ``fast_switchover`` did, and how long each part took."""

    host: str
    result: str
    took_s: float
    followers: dict[str, str]
    demoted: dict[str, str] | None = None
    script: dict[str, str] | None = None  # the promote script's own answer (its times)

    def __str__(self) -> str:
        follow = ", ".join(f"{h}: {r}" for h, r in self.followers.items()) or "none"
        old = (
            f"; demoted at {self.demoted.get('checkpoint_lsn')} (checkpoint "
            f"{self.demoted.get('checkpoint_ms')} ms, stop {self.demoted.get('stop_ms')} ms)"
            if self.demoted
            else ""
        )
        f = self.script or {}
        parts = [
            f"{k.removesuffix('_ms')} {f[k]}"
            for k in ("wait_ms", "slots_ms", "promote_ms")
            if k in f
        ]
        own = f" (script {f['ms']} ms: {', '.join(parts)})" if "ms" in f else ""
        return (
            f"{self.host} {self.result} in {self.took_s:.2f}s{own}{old}; "
            f"standbys repointed: {follow}"
        )


def _repoint(inv: Inventory, new: str, hosts: list[str]) -> dict[str, str]:
    """Point every host of HOSTS at NEW (in parallel); what each answered (errors as text)."""
    if not hosts:
        return {}
    results = ssh.run_many(inv, hosts, f"{_script(inv)} follow {new}", timeout=10.0, sudo=True)
    out = {}
    for host, res in results.items():
        if isinstance(res, SSHError):
            out[host] = f"unreachable ({res.message})"
        else:
            out[host] = parse_fields(res.stdout).get("result") or f"failed (exit {res.rc})"
    return out


def fast_promote(inv: Inventory, cand: Candidate, old: str) -> FastPromotion:
    """Promote CAND (chosen by ``choose_for``, OLD fenced) in one SSH call, then repoint
    the other standbys at it (one call each, in parallel).

    The script re-checks on the candidate that its flushed LSN is still at least
    the one the proof was made with, creates the other hosts' slots, promotes and
    waits until it accepts writes. ``promote`` (db_promote.yml) reconciles
    afterwards and finds nothing left to change."""
    import time

    inv.member(cand.host, "db")
    started = time.monotonic()
    fields = run_script(inv, cand.host, f"promote {cand.lsn}")
    others = [h.name for h in inv.group("db") if h.name not in (old, cand.host)]
    followers = _repoint(inv, cand.host, others)
    took = time.monotonic() - started
    return FastPromotion(cand.host, fields["result"], took, followers, None, fields)


def fast_switchover(inv: Inventory, old: str, new: str, catch_up_s: int = 10) -> FastPromotion:
    """A planned switchover. Before the pause NEW is told to expect its promotion
    (``hold``: slots for the others, restore_command out of the way, and the
    timeline history files the promotion will look up asked of the archive now,
    not in the pause). In the pause:
    OLD checkpoints and stops cleanly (its WAL senders send everything up to the
    shutdown checkpoint); then, at once, NEW waits until it has flushed that
    checkpoint (CATCH_UP_S at most, else it refuses) and promotes, while the other
    standbys switch to following NEW. Then ``rejoin`` brings OLD back as a standby
    once writes are back. A failure in the pause is undone (``undo_switchover``)
    before it is raised."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    inv.member(old, "db")
    inv.member(new, "db")
    standbys = [new, *(h.name for h in inv.group("db") if h.name not in (old, new))]
    # Every standby's restore_command stays out of the archive during the pause: the
    # candidate's promotion and the others' switch to its timeline need no round trip.
    with ThreadPoolExecutor(max_workers=len(standbys), thread_name_prefix="hold") as ex:
        list(ex.map(lambda h: run_script(inv, h, "hold"), standbys))
    started = time.monotonic()
    try:
        demoted, fields, followers = _switch(inv, old, new, catch_up_s)
    except FaultbookError as exc:
        undo = undo_switchover(inv, old, new, refused=isinstance(exc, PromotionRefused))
        raise StackError(f"switchover {old} -> {new} failed: {exc}; {undo}") from None
    took = time.monotonic() - started
    for h in standbys[1:]:  # the hold ends now, not when it expires (best effort)
        try:
            run_script(inv, h, "release")
        except FaultbookError as exc:
            log.warning("%s: could not end the hold (it expires by itself): %s", h, exc)
    return FastPromotion(new, fields["result"], took, followers, demoted, fields)


def _switch(
    inv: Inventory, old: str, new: str, catch_up_s: int
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """The pause: NEW's promote is started first and waits on its stdin; OLD demotes;
    the shutdown checkpoint's LSN goes to NEW the moment the demote reports it (no
    round trip between the two), and NEW promotes once it has flushed that LSN,
    while the other standbys switch to following it (their slots exist since
    ``hold``: they cascade from NEW, then follow it onto the new timeline). A demote
    that fails hands NEW no LSN: it refuses and promotes nothing. Returns the
    demote's, the promote's and the followers' answers."""
    from concurrent.futures import Future, ThreadPoolExecutor

    others = [h.name for h in inv.group("db") if h.name not in (old, new)]
    demote_timeout = 60.0
    handoff: Future[bytes] = Future()  # what NEW's promote reads: the LSN, or a refusal
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="switchover") as ex:
        promoting = ex.submit(
            run_script,
            inv,
            new,
            f"promote - {int(catch_up_s)}",
            demote_timeout + catch_up_s + 75.0,
            lambda: handoff.result(timeout=demote_timeout + 5),
        )
        try:
            demoted = run_script(inv, old, "demote", demote_timeout)
            lsn = demoted.get("checkpoint_lsn", "")
            parse_lsn(lsn)  # ParseError when the demote reported none
        except BaseException:
            handoff.set_result(b"none\n")  # not an LSN: NEW refuses, promotes nothing
            raise
        handoff.set_result(f"{lsn}\n".encode())
        repointing = ex.submit(_repoint, inv, new, others)
        return demoted, promoting.result(), repointing.result()


def undo_switchover(inv: Inventory, old: str, new: str, refused: bool) -> str:
    """After a switchover failed in its pause, back to one primary with every standby
    following it. NEW, if it did promote: OLD is rejoined as its standby. OLD, if
    nothing is primary and NEW REFUSED (its script never asked for a promotion):
    OLD is started again and the standbys follow it. Anything else is left as found
    (a promotion that may still finish must not meet a restarted OLD). What was
    done, as text."""
    try:
        found = primaries(cluster_state(inv))
        others = [h.name for h in inv.group("db") if h.name not in (old, new)]
        if found == [new]:
            rejoin(inv, old, new)
            return f"{new} did promote: {old} rejoined as its standby"
        if not found and refused:
            run_script(inv, old, "start")
            back = _repoint(inv, old, [new, *others])
            return f"nothing was promoted: {old} started again as the primary ({back})"
        return f"left as found: primary {', '.join(found)}; run the incident mode"
    except FaultbookError as exc:
        return f"could not put it back ({exc}): run the incident mode"


def reconcile(inv: Inventory, new: str, old: str) -> str:
    """After the fast path, with writes back: db_promote.yml, the procedure of record, on
    every db host but OLD. It should find nothing left to change; what it changed is
    reported (a standby that could not be repointed in the outage, a missing slot)."""
    res = promote(inv, new, exclude=[old])
    changed = {h: s.changed for h, s in sorted(res.stats.items()) if s.changed}
    if not changed:
        return f"db_promote.yml: nothing left to change on {', '.join(sorted(res.stats))}"
    return "db_promote.yml changed " + ", ".join(f"{h}: {n}" for h, n in changed.items())


def switchover(inv: Inventory, old: str, new: str) -> ansible.PlaybookResult:
    inv.member(old, "db")
    inv.member(new, "db")
    return ansible.run_playbook(
        "db_switchover.yml", inv, extravars={"db_old_primary": old, "db_new_primary": new}
    )


def rejoin(
    inv: Inventory, host: str, primary: str, method: str | None = None
) -> ansible.PlaybookResult:
    """Bring HOST back as a standby of PRIMARY (powering it on first in the lab)."""
    inv.member(host, "db")
    inv.member(primary, "db")
    if method is not None and method not in ("auto", "rewind", "reclone"):
        raise InventoryError(f"rejoin method must be auto, rewind or reclone, got {method!r}")
    from faultbook.lab.lab import power_on

    power_on(inv, host)  # lab: the start guard keeps PostgreSQL down: another primary exists
    return ansible.run_playbook(
        "db_rejoin.yml",
        inv,
        extravars={"db_rejoin_host": host, "db_primary": primary}
        | ({"postgresql_rejoin_method": method} if method else {}),
    )


def wait_quorum(inv: Inventory, timeout_s: float = 120.0) -> str:
    """Wait until every standby streams from one primary with a sync standby; its name."""
    return poll(
        lambda _t: quorum_ok(inv),
        timeout_s,
        what="every standby streaming from one primary",
        transient=lambda exc: True,
    )


def quorum_ok(inv: Inventory, expected_standbys: int | None = None) -> str | None:
    """The primary's name when it has every other db host streaming and a sync standby."""
    state = cluster_state(inv)
    prim = primaries(state)
    if len(prim) != 1:
        return None
    rep = replication(inv, prim[0])
    want = expected_standbys if expected_standbys is not None else len(inv.group("db")) - 1
    streaming = rep[rep["state"] == "streaming"]
    synced = streaming[streaming["sync_state"].isin(["sync", "quorum"])]
    if len(streaming) >= want and len(synced) >= sync_quorum(inv):
        return prim[0]
    return None


def present_ids(inv: Inventory, primary: str, ids: Iterable[int]) -> set[int]:
    """Which of IDS exist in the ledger on PRIMARY (one range query)."""
    wanted = sorted(set(int(i) for i in ids))
    if not wanted:
        return set()
    out = psql.psql(
        inv,
        primary,
        "SELECT id FROM orders WHERE id BETWEEN :lo AND :hi",
        db="ledger",
        timeout=60,
        params={"lo": int(wanted[0]), "hi": int(wanted[-1])},
    )
    return {int(x) for x in out.split()} & set(wanted)


def old_timeline_rows(inv: Inventory, host: str, since_id: int) -> set[int]:
    """Ids above SINCE_ID in HOST's ledger (used before a rewind, on a healed old primary)."""
    out = psql.psql(
        inv,
        host,
        "SELECT id FROM orders WHERE id > :since",
        db="ledger",
        params={"since": int(since_id)},
    )
    return {int(x) for x in out.split()}


def pick_target(state: pd.DataFrame, primary: str | None, target: str, mode: str) -> str | None:
    """The primary this run deals with, or None when there is nothing to do.

    drill/switchover: the current primary (TARGET, if given, must be it).
    incident: the lost primary — TARGET, or the one db host that is down.
    """
    hosts = list(state["host"])
    if target and target not in hosts:
        raise InventoryError(f"target {target!r} is not a db host; expected one of {hosts}")
    if mode != "incident":
        if primary is None:
            raise PromotionRefused("no single primary to start from; run the incident mode")
        if target and target != primary:
            raise InventoryError(f"target {target!r} is not the primary; the primary is {primary}")
        return primary
    if primary is not None:
        return None  # a writable primary exists: nothing for this runbook to do
    if target:
        return target
    lost = list(state.loc[state["role"].isin(["unreachable", "down"]), "host"])
    if len(lost) != 1:
        raise InventoryError(
            f"cannot tell which host was the primary (down: {lost or 'none'}); set target"
        )
    return str(lost[0])


def switchover_candidate(inv: Inventory, primary: str, wanted: str = "") -> str:
    """WANTED, or the most advanced streaming synchronous standby of PRIMARY."""
    rep = replication(inv, primary)
    ok = rep[(rep["state"] == "streaming") & rep["sync_state"].isin(["sync", "quorum"])]
    if wanted:
        inv.member(wanted, "db")
        if wanted not in set(ok["standby"]):
            raise PromotionRefused(f"{wanted} is not a streaming synchronous standby of {primary}")
        return wanted
    if ok.empty:
        raise PromotionRefused(f"{primary} has no streaming synchronous standby to switch to")
    ranked = ok.assign(_lsn=[lsn_to_int(x) or 0 for x in ok["flush_lsn"]])
    return str(ranked.sort_values(["_lsn", "standby"], ascending=[False, True]).iloc[0]["standby"])


def verify_write(inv: Inventory, primary: str, timeout_s: float = 60.0) -> int:
    """One order through the VIP (retried with the same Idempotency-Key until it is
    acknowledged or TIMEOUT_S passes); it must be on PRIMARY. Returns its id."""
    import uuid

    s = http.ledger_session(inv)
    key = f"verify-{uuid.uuid4()}"
    why = [""]

    def attempt(request_timeout: float) -> requests.Response | None:
        try:
            r = s.post(
                http.vip_url(inv, "/orders"),
                json={"customer": "failover-verify", "amount_cents": 1},
                headers={"Idempotency-Key": key},
                timeout=max(request_timeout, 15),
            )
        except requests.RequestException as exc:
            why[0] = f"{type(exc).__name__}: {exc}"
            return None
        if r.status_code in (200, 201):
            return r
        why[0] = f"HTTP {r.status_code}: {r.text.strip()[:120]}"
        return None

    r = poll(attempt, timeout_s, what="a write through the VIP", seen=lambda: why[0])
    oid = int(r.json()["id"])
    if not present_ids(inv, primary, [oid]):
        raise FaultbookError(f"order {oid} was acknowledged but is not on {primary}")
    return oid
