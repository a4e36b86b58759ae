from __future__ import annotations

import re

import pandas as pd
import pytest

from faultbook.drills import rollback
from faultbook.stack import failover
from faultbook.stack.failover import PromotionRefused


def state(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"host": h, "role": role, "receive_lsn": lsn, "reachable": role != "unreachable"}
            for h, role, lsn in rows
        ]
    )


def test_lsn_to_int_orders_across_the_slash() -> None:
    assert failover.lsn_to_int("0/FFFFFFFF") < failover.lsn_to_int("1/0")  # type: ignore[operator]
    assert failover.lsn_to_int("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert failover.lsn_to_int("") is None


def test_parse_state_of_a_standby() -> None:
    row = failover.parse_state("db2", "true|0/5000060|0/5000060||3|streaming|10.77.0.31\n")
    assert row["role"] == "standby"
    assert row["timeline"] == 3
    assert row["upstream"] == "10.77.0.31"


def test_parse_state_of_a_primary() -> None:
    row = failover.parse_state("db1", "false|||0/7000000|1||\n")
    assert row["role"] == "primary"
    assert row["flush_lsn"] == "0/7000000"


def test_most_advanced_standby_is_chosen_and_proven() -> None:
    s = state(
        ("db1", "unreachable", ""), ("db2", "standby", "0/5000100"), ("db3", "standby", "0/5000200")
    )
    c = failover.choose_candidate(s, "db1")
    assert c.host == "db3"
    assert c.proven
    assert "0/5000200" in c.reason


def test_higher_segment_beats_longer_string() -> None:
    s = state(
        ("db1", "unreachable", ""), ("db2", "standby", "1/10"), ("db3", "standby", "0/FFFFFF00")
    )
    assert failover.choose_candidate(s, "db1").host == "db2"


def test_refuses_when_a_standby_cannot_answer() -> None:
    s = state(
        ("db1", "unreachable", ""), ("db2", "standby", "0/5000100"), ("db3", "unreachable", "")
    )
    with pytest.raises(PromotionRefused, match="db3 cannot answer"):
        failover.choose_candidate(s, "db1")


def test_force_promotes_unproven_and_says_so() -> None:
    s = state(("db1", "unreachable", ""), ("db2", "standby", "0/5000100"), ("db3", "down", ""))
    c = failover.choose_candidate(s, "db1", force=True)
    assert c.host == "db2"
    assert not c.proven
    assert "force=True" in c.reason


def test_refuses_while_the_old_primary_still_runs() -> None:
    s = state(("db1", "primary", ""), ("db2", "standby", "0/5000100"), ("db3", "standby", "0/5"))
    with pytest.raises(PromotionRefused, match="fence it"):
        failover.choose_candidate(s, "db1")


def test_larger_quorum_tolerates_one_missing_standby() -> None:
    s = state(
        ("db1", "unreachable", ""),
        ("db2", "standby", "0/5000100"),
        ("db3", "unreachable", ""),
        ("db4", "standby", "0/5000300"),
    )
    assert failover.choose_candidate(s, "db1", quorum=2).host == "db4"


def test_no_standby_at_all() -> None:
    s = state(("db1", "unreachable", ""), ("db2", "down", ""), ("db3", "unreachable", ""))
    with pytest.raises(PromotionRefused, match="no standby answers"):
        failover.choose_candidate(s, "db1", force=True)


class FakeInv:
    vars: dict[str, object] = {}

    def __init__(self, hosts: list[str]) -> None:
        self._hosts = hosts

    def group(self, name: str) -> list[object]:
        return [type("H", (), {"name": h})() for h in self._hosts]

    def member(self, host: str, group: str) -> None:
        assert host in self._hosts


def script_host(monkeypatch: pytest.MonkeyPatch, answers: dict) -> list:
    """ssh.run / run_many stand-ins: each host (or ``(host, subcommand)``) answers
    (rc, stdout); a host's ``hold`` succeeds unless given; calls are recorded."""
    from faultbook import ssh

    calls: list[tuple[str, str]] = []

    def run(inv: object, host: str, cmd: str, timeout: float = 0, sudo: bool = False, stdin=None):
        assert sudo, "the failover script runs as root"
        fed = (stdin() if callable(stdin) else stdin or b"").decode().strip()
        calls.append((host, f"{cmd} <{fed}" if fed else cmd))
        sub = cmd.split()[1] if len(cmd.split()) > 1 else ""
        lsn_given = re.fullmatch(r"[0-9A-F]+/[0-9A-F]+", fed)
        if sub == "promote" and cmd.split()[2] == "-" and not lsn_given:
            return ssh.CommandResult(host, 3, "result=refused reason=no-lsn-given\n", "")
        default = {"hold": (0, "result=holding\n"), "release": (0, "result=released\n")}.get(
            sub, answers.get(host)
        )
        rc, out = answers.get((host, sub), default)
        return ssh.CommandResult(host, rc, out, "")

    def run_many(inv: object, hosts: list[str], cmd: str, timeout: float = 0, sudo: bool = False):
        return {h: run(inv, h, cmd, timeout, sudo) for h in hosts}

    monkeypatch.setattr(failover.ssh, "run", run)
    monkeypatch.setattr(failover.ssh, "run_many", run_many)
    return calls


def test_parse_fields_takes_the_last_key_value_line() -> None:
    out = "NOTICE: something\nresult=promoted host=db2 flushed_lsn=0/5000060 ms=412\n"
    assert failover.parse_fields(out) == {
        "result": "promoted",
        "host": "db2",
        "flushed_lsn": "0/5000060",
        "ms": "412",
    }
    assert failover.parse_fields("") == {}


def test_fast_promote_checks_the_proof_lsn_then_repoints_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = script_host(
        monkeypatch,
        {
            "db2": (0, "result=promoted host=db2 ms=300\n"),
            "db3": (0, "result=followed upstream=db2\n"),
        },
    )
    cand = failover.Candidate("db2", "0/5000200", True, "proof")
    done = failover.fast_promote(FakeInv(["db1", "db2", "db3"]), cand, "db1")  # type: ignore[arg-type]
    assert calls[0] == ("db2", f"{failover.FAILOVER_SCRIPT} promote 0/5000200")
    assert calls[1] == ("db3", f"{failover.FAILOVER_SCRIPT} follow db2")
    assert all(h != "db1" for h, _ in calls), "the fenced old primary is never asked"
    assert done.result == "promoted" and done.followers == {"db3": "followed"}
    assert "db3: followed" in str(done)


def test_fast_promote_refusal_is_a_promotion_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = script_host(
        monkeypatch, {"db2": (3, "result=refused reason=flushed-lsn-0/4000000-below-0/5000200\n")}
    )
    cand = failover.Candidate("db2", "0/5000200", True, "proof")
    with pytest.raises(PromotionRefused, match="below-0/5000200"):
        failover.fast_promote(FakeInv(["db1", "db2", "db3"]), cand, "db1")  # type: ignore[arg-type]
    assert [h for h, _ in calls] == ["db2"], "nothing is repointed at a refused candidate"


def test_fast_promote_script_failure_names_host_and_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    script_host(monkeypatch, {"db2": (1, "")})
    cand = failover.Candidate("db2", "0/5000200", True, "proof")
    with pytest.raises(failover.StackError, match=r"db2: .* promote failed \(exit 1\)"):
        failover.fast_promote(FakeInv(["db1", "db2", "db3"]), cand, "db1")  # type: ignore[arg-type]


def test_fast_switchover_promotes_at_the_shutdown_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = script_host(
        monkeypatch,
        {
            "db1": (0, "result=demoted host=db1 checkpoint_lsn=0/6000028 ms=210\n"),
            "db2": (0, "result=promoted host=db2 ms=120 wait_ms=1 slots_ms=20 promote_ms=90\n"),
            "db3": (0, "result=followed upstream=db2\n"),
        },
    )
    done = failover.fast_switchover(FakeInv(["db1", "db2", "db3"]), "db1", "db2", catch_up_s=7)  # type: ignore[arg-type]
    # Before the pause every standby holds (the candidate and the one that will follow it).
    assert set(calls[:2]) == {
        ("db2", f"{failover.FAILOVER_SCRIPT} hold"),
        ("db3", f"{failover.FAILOVER_SCRIPT} hold"),
    }
    assert calls[2] == ("db1", f"{failover.FAILOVER_SCRIPT} demote")
    # Then, at once: the candidate, waiting since before the demote, reads the shutdown
    # checkpoint's LSN and promotes, while the other standby follows it.
    assert set(calls[3:5]) == {
        ("db2", f"{failover.FAILOVER_SCRIPT} promote - 7 <0/6000028"),
        ("db3", f"{failover.FAILOVER_SCRIPT} follow db2"),
    }
    # After the pause the follower's hold ends (the candidate's ended with its promote).
    assert calls[5:] == [("db3", f"{failover.FAILOVER_SCRIPT} release")]
    assert done.demoted and done.demoted["checkpoint_lsn"] == "0/6000028"
    assert "script 120 ms: wait 1, slots 20, promote 90" in str(done)


def test_fast_switchover_without_a_checkpoint_stops_before_promoting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = script_host(
        monkeypatch,
        {"db1": (0, "result=demoted host=db1 checkpoint_lsn=\n"), "db2": (0, "result=holding\n")},
    )
    monkeypatch.setattr(
        failover, "cluster_state", lambda inv: state(("db1", "down", ""), ("db2", "standby", "0/1"))
    )
    with pytest.raises(failover.StackError, match="is not an LSN.*left as found"):
        failover.fast_switchover(FakeInv(["db1", "db2", "db3"]), "db1", "db2")  # type: ignore[arg-type]
    assert sorted(h for h, _ in calls[:2]) == ["db2", "db3"]  # both standbys held
    # The candidate's promote, started before the demote, is handed no LSN: it refuses.
    assert sorted(calls[2:]) == [
        ("db1", f"{failover.FAILOVER_SCRIPT} demote"),
        ("db2", f"{failover.FAILOVER_SCRIPT} promote - 10 <none"),
    ], "nothing is promoted without the checkpoint"


DEMOTED = (0, "result=demoted host=db1 checkpoint_lsn=0/6000028\n")
NOT_FINISHED = (1, "result=failed reason=promote-did-not-finish\n")


def failed_switchover(
    monkeypatch: pytest.MonkeyPatch, promote: tuple[int, str], after: tuple[str, str, str]
) -> tuple[list, str]:
    """db1 -> db2, db2's promote answering PROMOTE, the cluster found as AFTER (db2's
    and db3's roles and db2's LSN) by the undo; the calls and the error raised."""
    calls = script_host(
        monkeypatch, {"db1": DEMOTED, "db2": promote, "db3": (0, "result=followed\n")}
    )
    db2_role, db2_lsn, db3_role = after
    monkeypatch.setattr(
        failover,
        "cluster_state",
        lambda inv: state(
            ("db1", "down", ""), ("db2", db2_role, db2_lsn), ("db3", db3_role, "0/5")
        ),
    )
    with pytest.raises(failover.StackError, match="switchover db1 -> db2 failed") as exc:
        failover.fast_switchover(FakeInv(["db1", "db2", "db3"]), "db1", "db2")  # type: ignore[arg-type]
    return calls, str(exc.value)


def test_a_refused_switchover_starts_the_old_primary_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The candidate refused before asking for a promotion: nothing is primary, so the
    old primary comes back and every standby follows it again."""
    refused = (3, "result=refused reason=flushed-lsn-0/5000000-below-0/6000028\n")
    calls, error = failed_switchover(monkeypatch, refused, ("standby", "0/5000000", "standby"))
    assert "refused" in error and "db1 started again as the primary" in error
    after = calls[calls.index(("db1", f"{failover.FAILOVER_SCRIPT} start")) :]
    assert set(after[1:]) == {
        ("db2", f"{failover.FAILOVER_SCRIPT} follow db1"),
        ("db3", f"{failover.FAILOVER_SCRIPT} follow db1"),
    }


def test_a_switchover_that_promoted_rejoins_the_old_primary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rejoined: list[tuple[str, str]] = []
    monkeypatch.setattr(
        failover, "rejoin", lambda inv, host, primary: rejoined.append((host, primary))
    )
    _, error = failed_switchover(monkeypatch, NOT_FINISHED, ("primary", "", "standby"))
    assert "db2 did promote: db1 rejoined" in error
    assert rejoined == [("db1", "db2")]


def test_a_promotion_that_may_still_finish_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not refused, nothing primary yet: starting the old primary could meet a late
    promotion (two primaries), so nothing is started."""
    calls, error = failed_switchover(monkeypatch, NOT_FINISHED, ("standby", "0/6", "standby"))
    assert "left as found" in error
    assert ("db1", f"{failover.FAILOVER_SCRIPT} start") not in calls


def stragglers_world(
    monkeypatch: pytest.MonkeyPatch,
    roles: dict[str, str],
    streaming: list[str],
    fail: tuple[str, ...] = (),
) -> list[tuple[str, str]]:
    """cluster_state, replication and rejoin stand-ins for ``rejoin_stragglers``: the
    quorum never comes back by itself; each rejoin is recorded (HOST, PRIMARY)."""
    rejoined: list[tuple[str, str]] = []

    def rejoin(inv: object, host: str, primary: str) -> None:
        if host in fail:
            raise failover.StackError(f"db_rejoin.yml failed on {host}")
        rejoined.append((host, primary))

    monkeypatch.setattr(failover, "quorum_ok", lambda inv: None)
    monkeypatch.setattr(
        failover, "cluster_state", lambda inv: state(*((h, r, "") for h, r in roles.items()))
    )
    monkeypatch.setattr(
        failover,
        "replication",
        lambda inv, p: pd.DataFrame(
            {"standby": streaming, "state": ["streaming"] * len(streaming)}
        ),
    )
    monkeypatch.setattr(failover, "rejoin", rejoin)
    return rejoined


def test_stragglers_are_rejoined_to_the_one_primary(monkeypatch: pytest.MonkeyPatch) -> None:
    # db2 crashed as the primary and was replaced by db1; db3 is a standby that stopped
    # streaming. Both are rejoined to db1; db1 itself is left alone.
    rejoined = stragglers_world(
        monkeypatch, {"db1": "primary", "db2": "down", "db3": "standby"}, streaming=[]
    )
    out = rollback.rejoin_stragglers(FakeInv(["db1", "db2", "db3"]), wait_s=0.01)
    assert rejoined == [("db2", "db1"), ("db3", "db1")]
    assert [(r["host"], r["outcome"]) for r in out] == [("db2", "rejoined"), ("db3", "rejoined")]


def test_a_streaming_standby_is_not_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    rejoined = stragglers_world(
        monkeypatch,
        {"db1": "primary", "db2": "down", "db3": "standby"},
        streaming=["db3"],
        fail=("db2",),
    )
    out = rollback.rejoin_stragglers(FakeInv(["db1", "db2", "db3"]), wait_s=0.01)
    assert rejoined == []
    (r,) = out
    assert r["outcome"] == "failed" and "db_rejoin.yml failed on db2" in r["detail"]


@pytest.mark.parametrize(
    "roles",
    [
        {"db1": "primary", "db2": "primary", "db3": "standby"},  # split brain: a person decides
        {"db1": "down", "db2": "down", "db3": "standby"},  # no primary to follow
    ],
)
def test_nothing_is_rejoined_without_exactly_one_primary(
    monkeypatch: pytest.MonkeyPatch, roles: dict[str, str]
) -> None:
    rejoined = stragglers_world(monkeypatch, roles, streaming=[])
    assert rollback.rejoin_stragglers(FakeInv(list(roles)), wait_s=0.01) == []
    assert rejoined == []


def test_a_cluster_that_comes_back_by_itself_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rejoined = stragglers_world(monkeypatch, {"db1": "primary", "db2": "down"}, streaming=[])
    monkeypatch.setattr(failover, "quorum_ok", lambda inv: "db1")
    assert rollback.rejoin_stragglers(FakeInv(["db1", "db2"]), wait_s=5) == []
    assert rejoined == []
