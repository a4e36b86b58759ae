from __future__ import annotations

import pandas as pd
import pytest

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


def test_probe_lost_asks_both_signals_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lost primary makes each signal wait out its timeout: both wait together (each
    probe waits for the other at a barrier, which only concurrent probes get past)."""
    import threading

    both = threading.Barrier(2, timeout=5)

    def state(inv: object, timeout: float) -> pd.DataFrame:
        both.wait()
        return pd.DataFrame(
            [{"host": "db1", "role": "unreachable"}, {"host": "db2", "role": "standby"}]
        )

    def reach(inv: object, host: str, timeout: float) -> bool:
        both.wait()
        return False

    monkeypatch.setattr(failover, "cluster_state", state)
    monkeypatch.setattr(failover, "clients_reach", reach)
    probe, lost = failover.probe_lost(object(), "db1")  # type: ignore[arg-type]
    assert list(probe["host"]) == ["db1", "db2"] and "db1 does not answer" in lost

    def alive(inv: object, timeout: float) -> pd.DataFrame:
        return pd.DataFrame([{"host": "db1", "role": "primary"}])

    monkeypatch.setattr(failover, "cluster_state", alive)
    monkeypatch.setattr(failover, "clients_reach", lambda inv, host, timeout: True)
    with pytest.raises(PromotionRefused, match="answers as a primary"):
        failover.probe_lost(object(), "db1")  # type: ignore[arg-type]
