"""Triage's chain-walking decisions, on recorded evidence (tests/unit/triage_fixtures.py:
probe output as the hosts print it, the lbs' rows as the stack library returns them).
The parsers turn it into evidence, and ``diagnose`` must name the right link and the
right runbook for each case."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from triage_fixtures import (
    ANSWERS,
    BLOCKED,
    DBS,
    NAMES,
    NO_READ_WRITE,
    REFUSED,
    SILENT,
    TIMEOUT,
    WEBS,
    both_lbs_mark,
    cut_web2,
    cut_web_tier,
    db_text,
    evidence,
    lb,
    primary_gone,
    reach_lines,
    web_text,
)

from faultbook.errors import ParameterError, VerdictFailed
from faultbook.results import validate
from faultbook.triage import collect, steps
from faultbook.triage import evidence as ev
from faultbook.triage.diagnose import diagnose


# ---------------------------------------------------------------- the probes
@pytest.mark.parametrize(
    ("line", "postgres", "outcome"),
    [
        (ANSWERS, True, "answers"),
        ("0 connected N", True, "answers"),
        ("0 connected", False, "answers"),
        ("0 connected", True, "closed"),
        (SILENT, True, "silent"),
        (TIMEOUT, True, "timeout"),
        (REFUSED, True, "refused"),
        (BLOCKED, True, "blocked"),
        ("97 bash: connect: No route to host bash: line 1: x: No route to host", True, "no-route"),
        ("1 bash: weird", True, "error"),
    ],
)
def test_each_reach_outcome_is_told_apart(line: str, postgres: bool, outcome: str) -> None:
    rc, _, text = line.partition(" ")
    assert ev.classify(int(rc), text, postgres)[0] == outcome


def test_a_blocked_probe_keeps_the_kernel_s_words() -> None:
    (r,) = ev.parse_reach(f"reach 10.77.0.31 5432 {BLOCKED}", "web2", NAMES)
    assert (r.source, r.target, r.outcome) == ("web2", "db1", "blocked")
    assert r.detail == "Operation not permitted"
    assert "web2 → db1:5432" in r.describe() and "firewall" in r.describe()


def test_the_reach_command_runs_every_target_at_once_with_a_bound() -> None:
    cmd = ev.reach_command([("10.77.0.31", 5432, True), ("10.77.0.41", 8432, False)], 2)
    assert cmd.count("timeout 2 bash -c") == 2 and cmd.endswith("wait")
    assert cmd.count(") &") == 2 and cmd.count("head -c1") == 1  # no SSLRequest to pgBackRest


def test_a_web_probe_reads_the_app_and_its_database_view() -> None:
    w = ev.parse_web_probe(
        "web2",
        web_text(readyz="503", body=NO_READ_WRITE, peers=("db2",), me="web2"),
        NAMES,
    )
    assert (w.service, w.healthz, w.readyz, w.db_peers) == ("active", 200, 503, ("db2",))
    assert w.readyz_reason.startswith("ready: no read-write database host")
    assert [r.target for r in w.reach] == list(DBS) and all(r.ok for r in w.reach)


def test_a_dead_app_is_a_status_of_0_not_an_error() -> None:
    w = ev.parse_web_probe(
        "web2", web_text(service="inactive", healthz="000", readyz="000", body=""), NAMES
    )
    assert (w.service, w.healthz, w.readyz, w.alive) == ("inactive", 0, 0, False)
    assert w.readyz_reason == "no answer"


def test_a_db_probe_tells_primary_standby_frozen_and_down() -> None:
    primary = ev.parse_db_probe("db1", db_text("db1"), NAMES)
    assert (primary.role, primary.read_only, primary.upstream) == ("primary", False, "")
    standby = ev.parse_db_probe("db2", db_text("db2"), NAMES)
    assert (standby.role, standby.wal_receiver, standby.upstream) == ("standby", "streaming", "db1")
    assert standby.reach_to("backup1", 8432).ok  # type: ignore[union-attr]
    frozen = ev.parse_db_probe("db1", db_text("db1", sql="rc=124"), NAMES)
    assert frozen.role == "no answer" and "no answer within 2 s" in frozen.sql_error
    down = ev.parse_db_probe(
        "db1",
        db_text(
            "db1",
            unit="inactive",
            sql='psql: error: connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" '
            "failed: No such file or directory\nrc=2",
        ),
        NAMES,
    )
    assert down.role == "down" and down.unit == "inactive" and "No such file" in down.sql_error


def test_garbled_probe_output_is_evidence_not_a_crash() -> None:
    assert "unexpected probe output" in ev.parse_web_probe("web1", "nonsense", NAMES).error
    assert "unexpected probe output" in ev.parse_db_probe("db1", "nonsense", NAMES).error


# ---------------------------------------------------------------- decisions
def test_a_healthy_stack_has_nothing_broken() -> None:
    d = diagnose(evidence())
    assert not d.broken and d.proposal is None and d.also == ()
    assert str(d).startswith("NOTHING BROKEN")
    held = " ".join(d.held)
    assert "db1 is the primary; db2 and db3 stream from it" in held
    assert "all 7 probes of db1:5432" in held and "lb1 holds the VIP" in held


def test_a_killed_web_service_names_web_node_failure_for_that_host() -> None:
    dead = ev.parse_web_probe(
        "web2",
        web_text(service="activating", healthz="000", readyz="000", body="", me="web2"),
        NAMES,
    )
    d = diagnose(evidence(webs={"web2": dead}, lbs=both_lbs_mark("web2")))
    assert d.finding is not None and d.finding.link == "web2"
    assert "ledger.service is activating" in d.finding.summary
    assert "lb1 and lb2 mark web2 DOWN" in d.finding.evidence
    p = d.proposal
    assert p is not None and (p.runbook, dict(p.parameters), p.hand_over) == (
        "web-node-failure",
        {"target": "web2"},
        True,
    )
    assert p.command() == "faultbook notebook web-node-failure -p target web2"


def test_a_powered_off_web_node_names_web_node_failure() -> None:
    off = ev.WebEvidence("web3", False, error="no answer on 10.77.0.23:22 within 1.5s")
    d = diagnose(evidence(webs={"web3": off}, lbs=both_lbs_mark("web3")))
    assert d.finding is not None and d.finding.link == "web3"
    assert "web3 does not answer SSH (no answer on 10.77.0.23:22 within 1.5s)" in d.finding.evidence
    assert d.proposal is not None and dict(d.proposal.parameters) == {"target": "web3"}


def test_two_dead_web_nodes_are_one_run_of_web_node_failure() -> None:
    off = ev.WebEvidence("web3", False, error="no answer")
    dead = ev.parse_web_probe(
        "web2", web_text(service="failed", healthz="000", readyz="000", body=""), NAMES
    )
    d = diagnose(evidence(webs={"web2": dead, "web3": off}))
    assert d.finding is not None and d.finding.link == "web2 and web3"
    assert d.proposal is not None and dict(d.proposal.parameters) == {}  # it finds every one


def test_a_crashed_primary_names_db_failover_with_its_host() -> None:
    off = ev.DbEvidence("db1", False, error="no answer on 10.77.0.31:22 within 1.5s")
    d = diagnose(primary_gone(TIMEOUT, off))
    f = d.finding
    assert f is not None and f.link == "the primary db1"
    assert "is down" in f.summary and "web1, web2 and web3 fail /readyz" in f.summary
    assert "db2 and db3 are standbys of db1" in f.evidence
    assert any(
        e.startswith("web1, web2, web3, db2, db3, mon1 and mon2 → db1:5432: no TCP")
        for e in f.evidence
    )
    p = d.proposal
    assert p is not None and (p.runbook, dict(p.parameters), p.hand_over) == (
        "db-failover",
        {"target": "db1"},
        True,
    )
    # Its symptoms are not broken links of their own: not the lbs, the VIP, nor the mon hosts.
    assert d.also == ()


def test_a_frozen_primary_is_told_from_a_dead_one() -> None:
    frozen = ev.parse_db_probe("db1", db_text("db1", sql="rc=124"), NAMES)
    d = diagnose(primary_gone(SILENT, frozen))
    f = d.finding
    assert f is not None and f.link == "the primary db1" and "is frozen" in f.summary
    assert any("accepts the connection but does not answer" in e for e in f.evidence)
    assert d.proposal is not None and dict(d.proposal.parameters) == {"target": "db1"}


def test_a_load_balancer_down_names_lb_failover_and_where_the_vip_went() -> None:
    lbs = (
        ev.LbEvidence(
            "lb1", False, stats_error="http://10.77.0.11:8404 did not answer", error="no answer"
        ),
        lb("lb2", holds=True),
    )
    d = diagnose(evidence(lbs=lbs))
    f = d.finding
    assert f is not None and f.link == "lb1" and f.summary == "lb1 is down; the VIP is on lb2"
    p = d.proposal
    assert p is not None and (p.runbook, dict(p.parameters), p.hand_over) == (
        "lb-failover",
        {"target": "lb1"},
        True,
    )


@pytest.mark.parametrize(
    ("outcome", "said"),
    [(BLOCKED, "blocked by the source's own firewall"), (TIMEOUT, "no TCP answer")],
    ids=["cut-inside-web2", "cut-inside-db1"],
)
def test_a_path_cut_between_one_web_node_and_the_primary(outcome: str, said: str) -> None:
    d = diagnose(cut_web2(outcome))
    f = d.finding
    assert f is not None and f.link == "web2 → db1:5432"
    assert f.summary == (
        "lb1 and lb2 mark web2 down: its /readyz fails, because web2 cannot reach the "
        "primary db1, although web1 and web3 can"
    )
    assert any(e.startswith("web2 → db1:5432") and said in e for e in f.evidence)
    assert "web1 and web3 reach db1:5432" in f.evidence
    drain, repair = f.proposals
    assert (drain.runbook, dict(drain.parameters), drain.hand_over) == (
        "web-node-failure",
        {"target": "web2"},
        False,  # its restart cannot repair a path: a person chooses
    )
    assert repair.runbook == "" and "repair the path web2 → db1:5432" in repair.action
    assert "2 fixes apply" in str(d)


def test_the_primary_cut_off_from_the_whole_web_tier_offers_a_switchover_or_a_repair() -> None:
    d = diagnose(cut_web_tier())
    f = d.finding
    assert f is not None and f.link == "web tier → db1:5432"
    assert "although db2, db3, mon1 and mon2 can" in f.summary
    switch, repair = f.proposals
    assert (switch.runbook, dict(switch.parameters), switch.hand_over) == (
        "db-failover",
        {"mode": "switchover", "new_primary": "db2"},
        False,  # a planned operation: alerts never start one
    )
    assert repair.runbook == "" and "web1, web2 and web3 → db1:5432" in repair.action
    assert d.also == ()  # the lbs marking every node down and the VIP's 503 are its symptoms


def test_a_standby_the_web_tier_cannot_reach_is_not_offered() -> None:
    e = cut_web_tier()
    webs = tuple(
        dataclasses.replace(
            w,
            reach=tuple(
                dataclasses.replace(r, outcome="timeout") if r.target == "db2" else r
                for r in w.reach
            ),
        )
        for w in e.webs
    )
    d = diagnose(dataclasses.replace(e, webs=webs))
    assert d.finding is not None
    assert dict(d.finding.proposals[0].parameters) == {"mode": "switchover", "new_primary": "db3"}


def test_a_primary_nobody_reaches_is_its_own_network() -> None:
    e = cut_web_tier()
    cut = {"db1": TIMEOUT, "db2": ANSWERS, "db3": ANSWERS}
    dbs = {
        "db2": ev.parse_db_probe(
            "db2", db_text("db2", reach={"db1": TIMEOUT, "db3": ANSWERS}), NAMES
        ),
        "db3": ev.parse_db_probe(
            "db3", db_text("db3", reach={"db1": TIMEOUT, "db2": ANSWERS}), NAMES
        ),
    }
    mons = tuple(ev.parse_mon_probe(m, reach_lines(cut), NAMES) for m in ("mon1", "mon2"))
    d = diagnose(
        evidence(webs={w.name: w for w in e.webs}, dbs=dbs, mons=mons, lbs=e.lbs, vip=e.vip)
    )
    assert d.finding is not None and d.finding.link == "the network of db1"
    assert [p.runbook for p in d.finding.proposals] == ["", "db-failover"]
    assert d.finding.proposals[1].command() == (
        "faultbook db fence db1, then faultbook notebook db-failover -p target db1"
    )


def test_an_lb_that_cannot_reach_a_ready_web_node() -> None:
    servers = dict.fromkeys(WEBS, "UP") | {"web3": "DOWN"}
    lbs = (lb("lb1", holds=True, servers=servers), lb("lb2", holds=False))
    d = diagnose(evidence(lbs=lbs))
    assert d.finding is not None and d.finding.link == "lb1 → web3"
    assert [p.runbook for p in d.finding.proposals] == ["", "web-node-failure"]


def test_a_drained_ready_node_is_a_person_s_call() -> None:
    d = diagnose(evidence(lbs=both_lbs_mark("web1", "DRAIN")))
    assert d.finding is not None and d.finding.link == "web1 drained"
    assert d.proposal is not None and not d.proposal.hand_over


def test_split_brain_is_for_a_person() -> None:
    two = ev.parse_db_probe("db2", db_text("db2", sql="false|off||\nrc=0"), NAMES)
    d = diagnose(evidence(dbs={"db2": two}))
    assert d.finding is not None and "db1 and db2 all accept writes" in d.finding.summary
    assert d.proposal is not None and d.proposal.runbook == "db-failover"
    assert not d.proposal.hand_over


def test_a_standby_that_does_not_stream_is_a_rejoin() -> None:
    lagging = ev.parse_db_probe(
        "db3",
        db_text("db3", sql="true|on||10.77.0.31\nrc=0", reach={"db1": REFUSED, "db2": ANSWERS}),
        NAMES,
    )
    d = diagnose(evidence(dbs={"db3": lagging}))
    f = d.finding
    assert f is not None and f.link == "replication db1 → db3"
    assert "wal receiver not running" in f.evidence[0] and "refuses" in f.evidence[0]
    assert f.proposals[0].action.startswith("faultbook db rejoin db3 --primary db1")


def test_the_backup_repository_and_the_archive_path() -> None:
    b = ev.BackupEvidence("backup1", None, error="pgbackrest info on backup1 failed: ERROR: [039]")
    d = diagnose(evidence(backup=b))
    assert d.finding is not None and d.finding.link == "the backup repository on backup1"
    assert d.proposal is not None and dict(d.proposal.parameters) == {"mode": "verify"}
    cut = ev.parse_db_probe("db1", db_text("db1", backup=TIMEOUT), NAMES)
    d = diagnose(evidence(dbs={"db1": cut}))
    assert d.finding is not None and "db1 → backup1:8432" in d.finding.summary


def test_the_vip_alone_failing_is_named_only_when_all_behind_it_holds() -> None:
    d = diagnose(evidence(vip=ev.VipEvidence("10.77.0.10", None, None, error="ConnectTimeout")))
    assert d.finding is not None and d.finding.link == "the VIP 10.77.0.10"
    assert d.proposal is not None and dict(d.proposal.parameters) == {"target": "lb1"}
    slow = diagnose(evidence(vip=ev.VipEvidence("10.77.0.10", 200, 2.5), symptom="latency"))
    assert slow.finding is not None and "answers slowly" in slow.finding.summary


def test_a_lower_link_broken_too_is_listed_under_also() -> None:
    off = ev.WebEvidence("web3", False, error="no answer")
    b = ev.BackupEvidence("backup1", None, error="no answer")
    d = diagnose(evidence(webs={"web3": off}, backup=b))
    assert d.finding is not None and d.finding.link == "web3"
    assert [a.link for a in d.also] == ["the backup repository on backup1"]
    assert "also broken: the backup repository on backup1" in str(d)


# ---------------------------------------------------------------- the runbook's record
def test_the_record_and_the_hand_over_file(tmp_path: Path) -> None:
    run, e = steps.Run.start("triage", "incident", {"symptom": "5xx"}), cut_web2(BLOCKED)
    d = diagnose(e)
    path = steps.record(run, e, d, str(tmp_path))
    doc = json.loads(path.read_text())  # type: ignore[union-attr]
    assert validate(doc) == [] and doc["verdict"] == "fail"
    assert doc["metrics"]["broken"] is True and doc["metrics"]["hand_over"] is False
    handed = steps.read_handover(tmp_path)
    assert handed is not None and handed["finding"]["link"] == "web2 → db1:5432"
    assert handed["finding"]["proposals"][0]["runbook"] == "web-node-failure"
    with pytest.raises(VerdictFailed, match="BROKEN: web2 → db1:5432"):
        steps.check(d)


def test_a_healthy_record_passes(tmp_path: Path) -> None:
    run, e = steps.Run.start("triage", "incident", {}), evidence()
    d = diagnose(e)
    steps.record(run, e, d, str(tmp_path))
    assert json.loads((tmp_path / "result.json").read_text())["verdict"] == "pass"
    assert steps.read_handover(tmp_path)["broken"] is False  # type: ignore[index]
    steps.check(d)
    assert steps.read_handover(tmp_path / "nowhere") is None


def test_every_table_has_a_row_per_host() -> None:
    e = cut_web2(BLOCKED)
    assert list(steps.web_table(e)["web"]) == list(WEBS)
    assert list(steps.db_table(e)["db"]) == list(DBS)
    reach = steps.reach_table(e)
    assert reach.set_index("from").loc["web2", "db1:5432"] == "blocked"
    assert len(steps.lb_table(e)) == 2 and len(steps.vip_table(e)) == 1
    assert list(steps.proposals_table(diagnose(e))[""]) == ["named", "or"]


@pytest.mark.parametrize(
    ("symptom", "mode", "timeout_s", "words"),
    [
        ("errors", "incident", 8.0, "symptom must be one of vip-probe, 5xx, latency, writes-fail"),
        ("5xx", "drill", 8.0, "mode must be incident"),
        ("5xx", "incident", 0.5, "timeout_s must be a number of seconds in [3, 60]"),
    ],
)
def test_bad_parameters_are_one_line(symptom: str, mode: str, timeout_s: float, words: str) -> None:
    with pytest.raises(ParameterError, match=words.replace("[", r"\[").replace("]", r"\]")):
        steps.begin("lab", symptom, mode, timeout_s)


def test_collect_asks_every_hop_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each hop costs its own bound, not the sum: a dead host's 1.5 s SSH connect
    runs alongside the others."""

    def slow(value: object) -> Callable[..., object]:
        def probe(*_a: object, **_k: object) -> object:
            time.sleep(0.5)
            return value

        return probe

    e = evidence()
    monkeypatch.setattr(collect, "probe_vip", slow(e.vip))
    monkeypatch.setattr(collect, "probe_lbs", slow(e.lbs))
    monkeypatch.setattr(collect, "probe_webs", slow(e.webs))
    monkeypatch.setattr(collect, "probe_dbs", slow(e.dbs))
    monkeypatch.setattr(collect, "probe_mons", slow(e.mons))
    monkeypatch.setattr(collect, "probe_backup", slow(e.backup))
    t0 = time.monotonic()
    got = collect.collect(object(), "latency", timeout_s=5)  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 1.4  # six hops of 0.5 s each
    assert got.webs == e.webs and got.symptom == "latency" and not diagnose(got).broken


def _run_notebook(tmp_path: Path, symptom: str) -> dict[str, Any]:
    """Every code cell of runbooks/triage.ipynb in order, as papermill would run them, with
    the parameters injected after the parameters cell."""
    import nbformat

    from faultbook.paths import RUNBOOKS_DIR

    nb = nbformat.read(str(RUNBOOKS_DIR / "triage.ipynb"), as_version=4)
    ns: dict[str, Any] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        exec(compile(cell.source, "triage.ipynb", "exec"), ns)  # noqa: S102 - our own runbook
        if "parameters" in cell.metadata.get("tags", []):
            ns.update(symptom=symptom, result_dir=str(tmp_path))
    return ns


def test_the_runbook_runs_end_to_end_on_a_healthy_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        collect, "collect", lambda inv, symptom, timeout_s: evidence(symptom=symptom)
    )
    ns = _run_notebook(tmp_path, "latency")
    assert not ns["diagnosis"].broken and ns["run"].verdict == "pass"
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["runbook"] == "triage" and doc["parameters"]["symptom"] == "latency"
    assert [s["name"] for s in doc["steps"]] == ["collect", "diagnose"]


def test_the_runbook_fails_naming_the_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collect, "collect", lambda inv, symptom, timeout_s: cut_web2(BLOCKED))
    with pytest.raises(VerdictFailed, match="BROKEN: web2 → db1:5432"):
        _run_notebook(tmp_path, "5xx")
    assert steps.read_handover(tmp_path)["finding"]["link"] == "web2 → db1:5432"  # type: ignore[index]


def test_a_cut_the_lbs_have_not_seen_yet_says_what_is_seen() -> None:
    e = cut_web2(BLOCKED)
    unmarked = dataclasses.replace(e, lbs=(lb("lb1", holds=True), lb("lb2", holds=False)))
    f = diagnose(unmarked).finding
    assert f is not None and f.summary == (
        "web2's /readyz fails, because web2 cannot reach the primary db1, although web1 and "
        "web3 can"
    )
    still = dataclasses.replace(
        unmarked,
        webs=tuple(dataclasses.replace(w, readyz=200) if w.name == "web2" else w for w in e.webs),
    )
    f = diagnose(still).finding
    assert f is not None and f.summary.endswith("; web2's /readyz still answers 200")


def test_collect_turns_each_source_s_answers_into_evidence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The glue of ``collect`` on the lab inventory, every source answering with what
    it returns on the lab (web3 powered off: its SSH connect gives up)."""
    import pandas as pd

    from faultbook import inventory as inv_mod
    from faultbook import ssh
    from faultbook.errors import SSHError
    from faultbook.stack import haproxy, vip

    lab = inv_mod.load("lab")
    dead = "web3"

    def one(host: str, command: str) -> ssh.CommandResult:
        if "curl" in command:
            return ssh.CommandResult(host, 0, web_text(me=host), "")
        if "psql" in command:
            return ssh.CommandResult(host, 0, db_text(host), "")
        return ssh.CommandResult(host, 0, reach_lines(dict.fromkeys(DBS, ANSWERS)), "")

    def run_many(inv: object, hosts: list[str], command: str, **kw: object) -> dict[str, object]:
        return {
            h: SSHError(h, "no answer on 10.77.0.23:22 within 1.5s")
            if h == dead
            else one(h, command)
            for h in hosts
        }

    def run(inv: object, host: str, command: str, *a: object, **kw: object) -> ssh.CommandResult:
        if command.startswith("cd /tmp && sudo -n -u postgres sh -c"):  # pgbackrest info
            info = Path(__file__).parent / "fixtures" / "pgbackrest-info-lab.json"
            return ssh.CommandResult(host, 0, info.read_text(), "")
        return one(host, command)

    lbs = pd.DataFrame(
        [
            ["lb1", True, True, "active", "active", "MASTER", True, ""],
            ["lb2", True, False, "active", "active", "BACKUP", True, ""],
        ],
        columns=list(vip.LB_COLUMNS),
    )
    servers = pd.DataFrame(
        [
            [lb, backend, w, "DOWN" if w == dead else "UP", 1, "L7OK", 0, 10, ""]
            for lb in ("lb1", "lb2")
            for backend in ("web", "web_alive")
            for w in WEBS
        ],
        columns=list(haproxy.SERVER_COLUMNS),
    )

    class Answer:
        status_code, text = 200, '{"status": "ready"}'

    class Session:
        def __enter__(self) -> Session:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def get(self, url: str, timeout: float) -> Answer:
            assert url == "https://10.77.0.10/readyz"
            return Answer()

    monkeypatch.setattr(ssh, "run_many", run_many)
    monkeypatch.setattr(ssh, "run", run)
    monkeypatch.setattr(vip, "lb_status", lambda inv, timeout: lbs)
    monkeypatch.setattr(haproxy, "haproxy_servers", lambda inv, timeout: servers)
    monkeypatch.setattr(collect.http, "session", lambda inv: Session())
    e = collect.collect(lab, "5xx", 5)
    assert [w.name for w in e.webs] == list(WEBS) and not e.webs[2].reachable
    assert e.lbs[0].servers == {"web1": "UP", "web2": "UP", "web3": "DOWN"}
    assert e.lbs[0].holds_vip is True and e.lbs[1].holds_vip is False
    assert [d.role for d in e.dbs] == ["primary", "standby", "standby"]
    assert e.dbs[1].upstream == "db1" and e.dbs[0].reach_to("backup1", 8432) is not None
    assert [m.name for m in e.mons] == ["mon1", "mon2"] and all(r.ok for r in e.mons[0].reach)
    assert e.backup is not None and e.backup.host == "backup1" and e.backup.ok, e.backup
    assert e.vip.status == 200
    d = diagnose(e)
    assert d.finding is not None and d.finding.link == dead, str(d)
    assert d.proposal is not None and dict(d.proposal.parameters) == {"target": dead}


def test_no_standby_streaming_means_writes_hang() -> None:
    sql = "true|on||10.77.0.31\nrc=0"
    dbs = {h: ev.parse_db_probe(h, db_text(h, sql=sql), NAMES) for h in ("db2", "db3")}
    d = diagnose(evidence(dbs=dbs, symptom="writes-fail"))
    assert d.finding is not None and d.finding.link == "replication db1 → db2 and db3"
    assert d.finding.summary.endswith("no standby streams, so every commit waits: writes hang")


def test_a_read_only_primary_is_named() -> None:
    ro = ev.parse_db_probe("db1", db_text("db1", sql="false|on||\nrc=0"), NAMES)
    d = diagnose(evidence(dbs={"db1": ro}, symptom="writes-fail"))
    assert d.finding is not None and "refuses writes" in d.finding.summary
    assert d.proposal is not None and d.proposal.runbook == ""
