"""Unit tests for faultbook.restore: the parts that need no host.

pgBackRest and pg_waldump output is as PostgreSQL 15 / pgBackRest 2.45 print
it on the lab; the failing variants are built from it. Records frames have
the columns and dtypes faultbook.traffic gives them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from faultbook import inventory as inv_mod
from faultbook.backup import forensics, preflight, repair, repository, restore, targets, verify, wal
from faultbook.drills import proofs, traffic
from faultbook.errors import BackupError, InventoryError, UsageError
from faultbook.stack import psql

FIXTURES = Path(__file__).parent / "fixtures"
LABEL = "20261127-211013F"
RELPATH = "base/16387/16389"
T0 = datetime(2026, 11, 27, 21, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# ------------------------------------------------------------------- verify
VERIFY_OK = f"""\
stanza: main
status: ok
  archiveId: 15-1, total WAL checked: 7, total valid WAL: 7
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
  backup: {LABEL}, status: valid, total files checked: 1260, total valid files: 1260
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
"""


def test_verify_of_a_sound_backup_is_ok() -> None:
    v = verify.parse_verify(VERIFY_OK, LABEL)
    assert v.ok
    assert (v.label, v.status) == (LABEL, "ok")
    assert (v.files, v.valid_files, v.wal, v.valid_wal) == (1260, 1260, 7, 7)
    assert v.problems == ()
    assert v.text == VERIFY_OK
    assert "text" not in repr(v)


def test_verify_with_files_missing_from_the_backup() -> None:
    text = f"""\
stanza: main
status: error
  archiveId: 15-1, total WAL checked: 7, total valid WAL: 7
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
  backup: {LABEL}, status: invalid, total files checked: 1260, total valid files: 1258
    missing: 2, checksum invalid: 0, size invalid: 0, other: 0
"""
    v = verify.parse_verify(text, LABEL)
    assert not v.ok
    assert v.status == "error"
    assert (v.files, v.valid_files) == (1260, 1258)
    assert v.problems == ("missing: 2, checksum invalid: 0, size invalid: 0, other: 0",)


def test_verify_with_an_invalid_wal_checksum() -> None:
    text = VERIFY_OK.replace("status: ok", "status: error").replace(
        "total valid WAL: 7\n    missing: 0, checksum invalid: 0",
        "total valid WAL: 6\n    missing: 0, checksum invalid: 1",
    )
    v = verify.parse_verify(text, LABEL)
    assert not v.ok
    assert (v.wal, v.valid_wal) == (7, 6)
    assert (v.files, v.valid_files) == (1260, 1260)
    assert v.problems == ("missing: 0, checksum invalid: 1, size invalid: 0, other: 0",)


def test_an_invalid_backup_is_an_error_even_when_the_stanza_says_ok() -> None:
    text = VERIFY_OK.replace("status: valid", "status: invalid")
    v = verify.parse_verify(text, LABEL)
    assert v.status == "error" and not v.ok
    assert v.problems == ()


def test_verify_that_does_not_report_the_backup() -> None:
    other = "20261127-180535F"
    text = VERIFY_OK.replace(LABEL, other)
    v = verify.parse_verify(text, LABEL)
    assert not v.ok
    assert (v.files, v.valid_files) == (0, 0)
    assert v.problems == (f"verify did not report backup {LABEL}",)
    assert verify.parse_verify(text, other).ok


def test_a_status_other_than_ok_fails() -> None:
    v = verify.parse_verify(VERIFY_OK.replace("status: ok", "status: error"), LABEL)
    assert v.status == "error" and v.problems == () and not v.ok


def test_verify_without_any_status_is_unknown() -> None:
    v = verify.parse_verify("", LABEL)
    assert v.status == "unknown" and not v.ok
    assert v.problems == (f"verify did not report backup {LABEL}",)


def test_a_backup_with_no_files_is_not_ok() -> None:
    text = VERIFY_OK.replace("total files checked: 1260, total valid files: 1260", "") + (
        f"  backup: {LABEL}, status: valid, total files checked: 0, total valid files: 0\n"
    )
    v = verify.parse_verify(text, LABEL)
    assert v.files == v.valid_files == 0 and not v.ok


# ------------------------------------------------------------- pg_waldump
def heap(xid: int, lsn: str, prev: str, off: int, rel: str = "1663/16387/16389") -> str:
    return (
        f"rmgr: Heap        len (rec/tot):     54/    54, tx: {xid:>10}, lsn: {lsn}, "
        f"prev {prev}, desc: DELETE off {off} flags 0x00 KEYS_UPDATED , "
        f"blkref #0: rel {rel} blk 0"
    )


def commit(xid: int, lsn: str, prev: str, when: str, rest: str = "") -> str:
    return (
        f"rmgr: Transaction len (rec/tot):     34/    34, tx: {xid:>10}, lsn: {lsn}, "
        f"prev {prev}, desc: COMMIT {when} UTC{rest}"
    )


def abort(xid: int, lsn: str, prev: str, when: str) -> str:
    return (
        f"rmgr: Transaction len (rec/tot):     34/    34, tx: {xid:>10}, lsn: {lsn}, "
        f"prev {prev}, desc: ABORT {when} UTC"
    )


BRIEF_EXAMPLE = """\
rmgr: Heap        len (rec/tot):     54/    54, tx:       1420, lsn: 0/08002180, prev 0/08002158, desc: DELETE off 2 flags 0x00 KEYS_UPDATED , blkref #0: rel 1663/16387/16389 blk 0
rmgr: Heap        len (rec/tot):     54/    54, tx:       1420, lsn: 0/080021B8, prev 0/08002180, desc: DELETE off 3 flags 0x00 KEYS_UPDATED , blkref #0: rel 1663/16387/16389 blk 0
rmgr: Transaction len (rec/tot):     34/    34, tx:       1420, lsn: 0/08002228, prev 0/080021F0, desc: COMMIT 2026-11-27 21:11:31.660977 UTC
rmgr: Transaction len (rec/tot):     34/    34, tx:       1417, lsn: 0/08002108, prev 0/080020C8, desc: COMMIT 2026-11-27 21:11:31.479587 UTC
"""  # noqa: E501

DROP_RELS = (
    "; rels: base/16387/16389 base/16387/16392 base/16387/16393"
    "; dropped stats: 2/16387/16389 2/16387/16392 2/16387/16393"
    "; inval msgs: catcache 80 catcache 79 relcache 16389 snapshot 2608"
)

# A stretch of WAL: an insert, two deletes of other tables, a delete of 3 rows
# (1417), one of 2 rows (1420), an aborted delete, one still running, and the
# table dropped (1440). pg_waldump prints records in LSN order.
WAL = "\n".join(
    [
        "rmgr: Standby     len (rec/tot):     50/    50, tx:          0, lsn: 0/08000028, "
        "prev 0/07FFFFB0, desc: RUNNING_XACTS nextXid 1417 latestCompletedXid 1416 "
        "oldestRunningXid 1417",
        "rmgr: Heap        len (rec/tot):     87/    87, tx:       1416, lsn: 0/08000060, "
        "prev 0/08000028, desc: INSERT off 9 flags 0x00, blkref #0: rel 1663/16387/16389 blk 3",
        commit(1416, "0/080000B8", "0/08000060", "2026-11-27 21:11:30.902114"),
        heap(1417, "0/08002000", "0/080000B8", 4),
        heap(1418, "0/08002038", "0/08002000", 1, rel="1663/16387/16400"),
        heap(1417, "0/08002070", "0/08002038", 5),
        heap(1419, "0/08002090", "0/08002070", 1, rel="1663/16387/163890"),
        heap(1417, "0/080020C8", "0/08002090", 6),
        commit(1418, "0/080020E8", "0/080020C8", "2026-11-27 21:11:31.401008"),
        commit(1417, "0/08002108", "0/080020E8", "2026-11-27 21:11:31.479587"),
        commit(1419, "0/08002130", "0/08002108", "2026-11-27 21:11:31.501221"),
        heap(1420, "0/08002180", "0/08002158", 2),
        heap(1420, "0/080021B8", "0/08002180", 3),
        "rmgr: Btree       len (rec/tot):     64/    64, tx:       1420, lsn: 0/080021F0, "
        "prev 0/080021B8, desc: INSERT_LEAF off 12, blkref #0: rel 1663/16387/16395 blk 1",
        commit(1420, "0/08002228", "0/080021F0", "2026-11-27 21:11:31.660977"),
        heap(1430, "0/08002300", "0/08002228", 7),
        heap(1430, "0/08002338", "0/08002300", 8),
        abort(1430, "0/08002370", "0/08002338", "2026-11-27 21:12:00.120733"),
        heap(1431, "0/080023A8", "0/08002370", 9),
        commit(1440, "0/08003F10", "0/08003E98", "2026-11-27 21:15:02.004411", DROP_RELS),
    ]
)


def test_the_brief_example_finds_the_delete_of_1420() -> None:
    found = forensics.parse_waldump(BRIEF_EXAMPLE, RELPATH)
    assert found == [
        forensics.BadChange(
            "delete", 1420, 2, "0/08002228", datetime(2026, 11, 27, 21, 11, 31, 660977, UTC), "wal"
        )
    ]


def test_waldump_finds_committed_deletes_and_the_drop_in_commit_order() -> None:
    found = forensics.parse_waldump(WAL, RELPATH)
    assert [(b.kind, b.xid, b.rows, b.commit_lsn) for b in found] == [
        ("delete", 1417, 3, "0/08002108"),
        ("delete", 1420, 2, "0/08002228"),
        ("drop", 1440, 0, "0/08003F10"),
    ]
    assert {b.source for b in found} == {"wal"}
    assert found[0].commit_time == datetime(2026, 11, 27, 21, 11, 31, 479587, UTC)
    assert found[2].commit_time == datetime(2026, 11, 27, 21, 15, 2, 4411, UTC)


def test_commit_times_are_utc_aware() -> None:
    for b in forensics.parse_waldump(WAL, RELPATH):
        assert b.commit_time.tzinfo is not None
        assert b.commit_time.utcoffset() == timedelta(0)
        assert isinstance(b.commit_time, datetime)


def test_deletes_of_another_relation_are_ignored() -> None:
    found = forensics.parse_waldump(WAL, RELPATH)
    assert {1418, 1419}.isdisjoint(b.xid for b in found)
    other = forensics.parse_waldump(WAL, "base/16387/16400")
    assert [(b.kind, b.xid, b.rows) for b in other] == [("delete", 1418, 1)]


def test_an_aborted_or_unfinished_delete_is_ignored() -> None:
    found = forensics.parse_waldump(WAL, RELPATH)
    assert {1430, 1431}.isdisjoint(b.xid for b in found)
    only_aborted = "\n".join(
        [
            heap(1430, "0/08002300", "0/08002228", 7),
            abort(1430, "0/08002370", "0/08002300", "2026-11-27 21:12:00.120733"),
            heap(1431, "0/080023A8", "0/08002370", 9),
        ]
    )
    assert forensics.parse_waldump(only_aborted, RELPATH) == []


def test_a_commit_that_drops_the_file_is_a_drop() -> None:
    text = commit(1440, "0/08003F10", "0/08003E98", "2026-11-27 21:15:02.004411", DROP_RELS)
    (b,) = forensics.parse_waldump(text, RELPATH)
    assert (b.kind, b.xid, b.rows, b.commit_lsn) == ("drop", 1440, 0, "0/08003F10")
    # The same commit dropped other files; another table's path only in "dropped stats"
    # or as a prefix of a longer file number is not this table.
    assert [b.kind for b in forensics.parse_waldump(text, "base/16387/16392")] == ["drop"]
    assert forensics.parse_waldump(text, "base/16387/1638") == []
    assert forensics.parse_waldump(text, "base/16387/16395") == []


def test_a_truncate_of_another_table_is_not_a_drop() -> None:
    text = commit(
        1450, "0/08004000", "0/08003F10", "2026-11-27 21:16:00.5", "; rels: base/16387/16400"
    )
    assert forensics.parse_waldump(text, RELPATH) == []


def test_deletes_in_a_subtransaction_count_for_the_transaction_that_commits_them() -> None:
    # BEGIN; SAVEPOINT s; DELETE ...; RELEASE s; COMMIT: the heap records carry the
    # subtransaction's xid, the commit record lists it under subxacts.
    text = "\n".join(
        [
            heap(1421, "0/08002180", "0/08002158", 2),
            heap(1421, "0/080021B8", "0/08002180", 3),
            heap(1420, "0/080021F0", "0/080021B8", 4),
            commit(
                1420, "0/08002228", "0/080021F0", "2026-11-27 21:11:31.660977", "; subxacts: 1421"
            ),
        ]
    )
    (b,) = forensics.parse_waldump(text, RELPATH)
    assert (b.kind, b.xid, b.rows, b.commit_lsn) == ("delete", 1420, 3, "0/08002228")


def test_waldump_results_are_in_commit_lsn_order_whatever_the_input_order() -> None:
    later = [
        heap(1420, "0/08002180", "0/08002158", 2),
        commit(1420, "1/00000028", "0/0", "2026-11-27 21:11:32"),
    ]
    earlier = [
        heap(1417, "0/08002000", "0/0", 4),
        commit(1417, "0/08002108", "0/0", "2026-11-27 21:11:31"),
    ]
    found = forensics.parse_waldump("\n".join(later + earlier), RELPATH)
    assert [b.xid for b in found] == [1417, 1420]
    assert found[0].commit_time == datetime(2026, 11, 27, 21, 11, 31, tzinfo=UTC)


def test_no_waldump_output_is_no_change() -> None:
    assert forensics.parse_waldump("", RELPATH) == []


def test_pick_the_newest_qualifying_change() -> None:
    found = forensics.parse_waldump(WAL, RELPATH)
    assert forensics.pick_bad_change(found).xid == 1440  # the drop, whatever min_rows
    assert forensics.pick_bad_change(found, min_rows=100).xid == 1440
    deletes = [b for b in found if b.kind == "delete"]
    assert forensics.pick_bad_change(deletes).xid == 1420
    assert forensics.pick_bad_change(deletes, min_rows=2).xid == 1420
    assert forensics.pick_bad_change(deletes, min_rows=3).xid == 1417


def test_pick_raises_when_nothing_qualifies() -> None:
    deletes = [b for b in forensics.parse_waldump(WAL, RELPATH) if b.kind == "delete"]
    with pytest.raises(BackupError, match="no transaction that deleted 4\\+ rows"):
        forensics.pick_bad_change(deletes, min_rows=4)
    with pytest.raises(BackupError, match="give the time of the change as bad_change_time"):
        forensics.pick_bad_change([])


def test_changes_frame() -> None:
    found = forensics.parse_waldump(WAL, RELPATH)
    df = forensics.changes_frame(found)
    assert list(df.columns) == ["kind", "xid", "rows", "commit_lsn", "commit_time"]
    assert list(df["kind"]) == ["delete", "delete", "drop"]
    assert list(df["xid"]) == [1417, 1420, 1440]
    assert list(df["rows"]) == [3, 2, 0]
    assert list(df["commit_lsn"]) == ["0/08002108", "0/08002228", "0/08003F10"]
    assert df["commit_time"].iloc[1] == pd.Timestamp("2026-11-27T21:11:31.660977Z")
    empty = forensics.changes_frame([])
    assert empty.empty and list(empty.columns) == list(df.columns)


def test_the_target_of_a_bad_change_is_its_commit_lsn() -> None:
    b = forensics.parse_waldump(BRIEF_EXAMPLE, RELPATH)[0]
    t = b.target()
    assert t.kind == "lsn" and t.value == "0/08002228"
    assert t.lsn == psql.parse_lsn("0/08002228")
    assert t.pgbackrest_options() == ["--type=lsn", "--target=0/8002228"]


def test_a_bad_change_given_as_a_time() -> None:
    when = datetime(2026, 11, 27, 22, 11, 31, tzinfo=UTC)
    cet = when.astimezone(timezone(timedelta(hours=1)))
    assert cet.hour == 23
    b = forensics.bad_change_from_time(cet)
    assert (b.kind, b.xid, b.rows, b.commit_lsn, b.source) == ("given", 0, 0, "", "parameter")
    assert b.commit_time == when and b.commit_time.utcoffset() == timedelta(0)


def test_immediate_target() -> None:
    assert targets.IMMEDIATE.pgbackrest_options() == ["--type=immediate"]
    assert str(targets.IMMEDIATE) == "immediate"


def test_lsn_after() -> None:
    assert targets.lsn_after("0/08002228", "0/08002108")
    assert targets.lsn_after("1/0", "0/FFFFFFFF")
    assert not targets.lsn_after("0/08002108", "0/08002108")


# ------------------------------------------------------------ ledger proofs
def records(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """A traffic records frame from (seq, kind, sent_s, answered_s, status, order_id, key)."""
    data = []
    for seq, kind, sent, answered, status, order_id, key in rows:
        ok = status in (200, 201) and (kind == "GET" or order_id is not None)
        data.append(
            {
                "seq": seq,
                "kind": kind,
                "sent_at": at(sent).isoformat(),
                "answered_at": at(answered).isoformat(),
                "latency_ms": (answered - sent) * 1000,
                "status": status,
                "ok": ok,
                "order_id": order_id,
                "idempotency_key": key,
                "error": "" if ok else ("timeout" if status == 0 else f"HTTP {status}"),
            }
        )
    return traffic.normalize_records(pd.DataFrame(data))


def restored(rows: list[tuple[int, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": pd.Series([i for i, _ in rows], dtype="int64"),
            "idempotency_key": [k for _, k in rows],
            "customer": ["drill"] * len(rows),
            "amount_cents": pd.Series([100 * i for i, _ in rows], dtype="int64"),
            "created_at": pd.Series([T0] * len(rows), dtype="datetime64[ns, UTC]"),
        }
    )


CUT = at(10)

# Acknowledged before the cut: 1 (k1), 2 (k2). Failed before the cut: k3.
# In flight across the cut: 4 (k4). Sent after it: 5 (k5), k6 (timed out).
# GETs of 1 and of 99 (an id not in the copy) before the cut, one after.
RECORDS = records(
    [
        (0, "POST", 0.0, 0.05, 201, 1, "k1"),
        (1, "GET", 1.0, 1.02, 200, 1, ""),
        (2, "POST", 2.0, 2.05, 201, 2, "k2"),
        (3, "POST", 3.0, 3.20, 503, None, "k3"),
        (4, "GET", 4.0, 4.01, 200, 99, ""),
        (5, "POST", 9.9, 10.10, 201, 4, "k4"),
        (6, "POST", 11.0, 11.05, 201, 5, "k5"),
        (7, "POST", 12.0, 17.00, 0, None, "k6"),
        (8, "GET", 13.0, 13.01, 200, 5, ""),
    ]
)


def test_records_have_the_traffic_dtypes() -> None:
    assert list(RECORDS.columns) == list(traffic.COLUMNS)
    assert str(RECORDS["order_id"].dtype) == "Int64"
    assert str(RECORDS["answered_at"].dtype) == "datetime64[ns, UTC]"
    assert RECORDS["order_id"].isna().sum() == 2


def test_an_exact_restore_to_a_time() -> None:
    p = proofs.prove_pitr(RECORDS, restored([(1, "k1"), (2, "k2")]), CUT)
    assert p.ok
    assert (p.cut_from, p.cut_to) == (CUT, CUT)
    assert (p.acked_before, p.sent_after, p.uncertain, p.rows) == (2, 2, 1, 2)
    assert (p.missing, p.unexpected) == ((), ())
    assert p.summary() == (
        "EXACT: 2 writes acknowledged before the target, 0 of them missing; "
        "2 sent after it, 0 of them present; 1 in flight at the target"
    )


def test_a_write_in_flight_at_the_cut_may_or_may_not_be_there() -> None:
    for copy in ([(1, "k1"), (2, "k2")], [(1, "k1"), (2, "k2"), (4, "k4")]):
        p = proofs.prove_pitr(RECORDS, restored(copy), CUT)
        assert p.ok and p.uncertain == 1 and p.rows == len(copy)


def test_a_missing_acknowledged_write() -> None:
    p = proofs.prove_pitr(RECORDS, restored([(1, "k1")]), CUT)
    assert not p.ok
    assert p.missing == (2,)
    assert p.summary().startswith("WRONG: 2 writes acknowledged before the target, 1 of them")


def test_an_acknowledged_id_holding_another_key_is_missing() -> None:
    p = proofs.prove_pitr(RECORDS, restored([(1, "k1"), (2, "other")]), CUT)
    assert p.missing == (2,) and not p.ok


def test_an_unexpected_write_sent_after_the_cut() -> None:
    p = proofs.prove_pitr(RECORDS, restored([(1, "k1"), (2, "k2"), (5, "k5")]), CUT)
    assert not p.ok
    assert p.unexpected == ("k5",) and p.missing == ()
    # A write the client saw fail (a timeout) that committed all the same is unexpected too.
    p = proofs.prove_pitr(RECORDS, restored([(1, "k1"), (2, "k2"), (6, "k6")]), CUT)
    assert p.unexpected == ("k6",)


def test_gets_are_not_writes() -> None:
    # The GET of 99 was answered OK before the cut: 99 is not in the copy, yet not missing.
    p = proofs.prove_pitr(RECORDS, restored([(1, "k1"), (2, "k2")]), CUT)
    assert p.acked_before == 2 and 99 not in p.missing
    gets_only = RECORDS[RECORDS["kind"] == "GET"]
    q = proofs.prove_pitr(gets_only, restored([(1, "k1")]), CUT)
    assert (q.acked_before, q.sent_after, q.uncertain) == (0, 0, 0)
    assert not q.ok  # nothing acknowledged before the target proves nothing


def test_kind_is_compared_without_case() -> None:
    lower = RECORDS.assign(kind=RECORDS["kind"].str.lower())
    p = proofs.prove_pitr(lower, restored([(1, "k1"), (2, "k2")]), CUT)
    assert p.ok and p.acked_before == 2


def test_failed_writes_before_the_cut_are_not_missing() -> None:
    p = proofs.prove_pitr(RECORDS, restored([(1, "k1"), (2, "k2")]), CUT)
    assert p.missing == ()
    assert p.acked_before + p.sent_after + p.uncertain == 5  # 6 POSTs, one failed before


def test_a_bracketed_target() -> None:
    # An LSN target made between 10 s and 12.5 s: writes sent in the bracket are uncertain.
    cut_to = at(12.5)
    with_late = pd.concat(
        [RECORDS, records([(9, "POST", 14.0, 14.05, 201, 8, "k8")])], ignore_index=True
    )
    copy = restored([(1, "k1"), (2, "k2"), (5, "k5")])
    p = proofs.prove_pitr(with_late, copy, CUT, cut_to)
    assert p.ok
    assert (p.cut_from, p.cut_to) == (CUT, cut_to)
    assert (p.acked_before, p.sent_after, p.uncertain) == (2, 1, 3)
    assert not proofs.prove_pitr(with_late, copy, CUT).ok  # k5 after a time target at 10 s
    bad = proofs.prove_pitr(with_late, restored([(1, "k1"), (2, "k2"), (8, "k8")]), CUT, cut_to)
    assert bad.unexpected == ("k8",)


def test_recovered_rows_are_exactly_the_deleted_ones() -> None:
    copy = restored([(i, f"k{i}") for i in range(1, 7)])
    r = proofs.prove_recovered(copy, [1, 2, 3, 5], deleted={4, 6})
    assert r.ok
    assert r.ids == {4, 6}
    assert list(r.rows["id"]) == [4, 6] and list(r.rows.index) == [0, 1]
    assert (r.expected, r.missing, r.extra) == ((4, 6), (), ())


def test_a_deleted_row_not_in_the_copy_is_missing() -> None:
    copy = restored([(i, f"k{i}") for i in range(1, 7)])
    r = proofs.prove_recovered(copy, [1, 2, 3, 5], deleted=[4, 6, 7])
    assert not r.ok
    assert (r.expected, r.missing, r.extra) == ((4, 6, 7), (7,), ())


def test_a_row_gone_from_production_that_was_not_deleted_is_extra() -> None:
    copy = restored([(i, f"k{i}") for i in range(1, 7)])
    r = proofs.prove_recovered(copy, np.array([1, 2, 3, 5]), deleted=[4])
    assert not r.ok
    assert (r.missing, r.extra) == ((), (6,))


def test_without_the_deleted_ids_everything_that_came_back_is_expected() -> None:
    copy = restored([(i, f"k{i}") for i in range(1, 7)])
    r = proofs.prove_recovered(copy, {1, 2, 3, 5})
    assert r.ok and r.expected == (4, 6) and (r.missing, r.extra) == ((), ())
    none_back = proofs.prove_recovered(copy, range(1, 7))
    assert not none_back.ok and none_back.rows.empty


# ---------------------------------------------------------------- copy-back
COPY_CSV = (
    "7,0b6f3c52-94f1-4d0e-9a8e-2f1b7d3c9e01,O'Brien,1250,2026-11-27 21:11:31.479587+00\n"
    '8,5d1e0a7c-3b2f-4c8e-8d6a-1e9f0c4b2a77,"Smith, J",0,2026-11-27 21:11:31.5+00\n'
    "9,c2a9e4f1-7d3b-4a6c-9e8f-0b1d2c3e4f5a,NA,99,2026-11-27 21:11:32+00\n"
)


def test_rows_read_what_copy_prints() -> None:
    df = repair._rows(COPY_CSV)
    assert list(df.columns) == repair.LEDGER_COLUMNS
    assert list(df["id"]) == [7, 8, 9]
    # A customer called "NA" is a name, not a NULL (orders.customer is NOT NULL).
    assert list(df["customer"]) == ["O'Brien", "Smith, J", "NA"]
    assert list(df["amount_cents"]) == [1250, 0, 99]
    assert str(df["created_at"].dtype).startswith("datetime64[") and "UTC" in str(
        df["created_at"].dtype
    )
    assert df["created_at"].iloc[1] == pd.Timestamp("2026-11-27T21:11:31.5Z")


def test_no_rows_is_an_empty_frame_with_the_columns() -> None:
    df = repair._rows("\n")
    assert df.empty and list(df.columns) == repair.LEDGER_COLUMNS
    assert repair.copy_back_csv(df) == ""


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (None, ""),
        (float("nan"), ""),
        (np.float64("nan"), ""),
        (pd.NaT, ""),
        (42, '"42"'),
        (0, '"0"'),
        (np.int64(-7), '"-7"'),
        (1250.0, '"1250"'),
        ("O'Brien", '"O\'Brien"'),
        ('say "hi"', '"say ""hi"""'),
        ("123", '"123"'),
        ("", '""'),
        ("NA", '"NA"'),
        (pd.Timestamp("2026-11-27T21:11:31.479587Z"), '"2026-11-27T21:11:31.479587+00:00"'),
        (datetime(2026, 11, 27, 21, 11, 31, tzinfo=UTC), '"2026-11-27T21:11:31+00:00"'),
    ],
)
def test_csv_field_keeps_null_apart_from_an_empty_string(value: Any, field: str) -> None:
    assert repair._csv_field(value) == field


def test_copy_back_loads_rows_as_csv_data_never_as_sql() -> None:
    rows = repair._rows(COPY_CSV)
    data = repair.copy_back_input(rows).decode()
    head, rest = data.split("FROM STDIN WITH (FORMAT csv);\n", 1)
    csv_part, tail = rest.split("\\.\n", 1)
    assert head.startswith("BEGIN;\nCREATE TEMP TABLE faultbook_copy_back (LIKE orders")
    assert "ON CONFLICT DO NOTHING" in tail and tail.rstrip().endswith("COMMIT;")
    # The CSV reads back as the very rows, every column.
    back = repair._rows(csv_part)
    pd.testing.assert_frame_equal(back, rows, check_dtype=False)
    assert "O'Brien" in csv_part and "INSERT" not in csv_part


def test_copy_back_of_no_rows_is_no_data() -> None:
    assert repair.copy_back_csv(repair._rows("")) == ""


def test_copy_back_refuses_the_end_of_data_marker_as_a_value() -> None:
    rows = restored([(1, "k1")])
    rows["customer"] = ["x"]
    rows["idempotency_key"] = ["\\."]
    assert "\\." in repair.copy_back_csv(rows)  # quoted inside a line: only data
    rows = rows.iloc[:0]
    assert repair.copy_back_csv(rows) == ""


# ------------------------------------------------------------ scratch host
INVENTORY = """\
all:
  children:
    db:
      hosts:
        db1: {ansible_host: 192.0.2.11}
        db2: {ansible_host: 192.0.2.12}
    restore:
      hosts:
        restore1: {ansible_host: 192.0.2.21}
        db2: {}
    web:
      hosts:
        web1: {ansible_host: 192.0.2.31}
"""


def load_inventory(tmp_path: Path, text: str) -> inv_mod.Inventory:
    p = tmp_path / "hosts.yml"
    p.write_text(text)
    return inv_mod.load(p)


def test_a_restore_host_is_a_scratch_host(tmp_path: Path) -> None:
    inv = load_inventory(tmp_path, INVENTORY)
    assert restore.scratch_host(inv, "restore1") == "restore1"


def test_an_unknown_host_lists_the_known_ones(tmp_path: Path) -> None:
    inv = load_inventory(tmp_path, INVENTORY)
    with pytest.raises(InventoryError, match="unknown host 'restore9'.*known hosts: db1, db2"):
        restore.scratch_host(inv, "restore9")


@pytest.mark.parametrize("host", ["db1", "db2", "web1"])
def test_a_db_host_or_a_host_outside_group_restore_is_refused(tmp_path: Path, host: str) -> None:
    inv = load_inventory(tmp_path, INVENTORY)
    with pytest.raises(UsageError) as exc:
        restore.scratch_host(inv, host)
    assert not isinstance(exc.value, InventoryError) and exc.value.exit_code == 2
    assert str(exc.value) == (
        f"restore host {host!r} is not a scratch host: expected a host of group restore "
        "that is not a db host (restore1, db2)"
    )


def test_an_inventory_without_group_restore(tmp_path: Path) -> None:
    inv = load_inventory(tmp_path, "all:\n  hosts:\n    h1: {ansible_host: 192.0.2.1}\n")
    with pytest.raises(UsageError, match=r"\(the inventory has none\)"):
        restore.scratch_host(inv, "h1")


def test_the_lab_has_a_scratch_host() -> None:
    inv = inv_mod.load("lab")
    name = inv.group("restore")[0].name
    assert restore.scratch_host(inv, name) == name
    with pytest.raises(UsageError):
        restore.scratch_host(inv, inv.group("db")[0].name)


# -------------------------------------------------------------- pre-flight
def lab_backups() -> pd.DataFrame:
    return repository.backups(json.loads((FIXTURES / "pgbackrest-info-lab.json").read_text()))


def test_needed_bytes_is_the_biggest_backup_with_a_margin() -> None:
    df = lab_backups()
    assert list(df["size"]) == [30747670, 32943204]
    assert preflight.needed_bytes(df) == int(32943204 * 1.10) + 256 * 1024 * 1024
    assert preflight.needed_bytes(df.iloc[:0]) == 0
    no_sizes = df.assign(size=[None, None])
    assert preflight.needed_bytes(no_sizes) == preflight.SPACE_EXTRA_BYTES
    one = pd.DataFrame({"size": [10 * 2**30, None]})
    assert preflight.needed_bytes(one) == int(10 * 2**30 * 1.10) + 256 * 2**20


def make_preflight(ages: dict[str, Any], archive: Any) -> preflight.Preflight:
    return preflight.Preflight(
        status="0 ok",
        backups=lab_backups(),
        ages=ages,
        archive=archive,
        free_bytes=10 * 2**30,
        needed_bytes=300 * 2**20,
        problems=(),
    )


def test_preflight_table() -> None:
    now = datetime(2026, 11, 27, 21, 5, 38, tzinfo=UTC)
    ages = repository.latest_by_type(lab_backups(), now)
    archive = wal.WalContinuity(
        first="000000010000000000000001",
        last="000000090000000000000031",
        timelines=(1, 9),
        segments=49,
    )
    p = make_preflight(ages, archive)
    assert p.ok
    t = p.table()
    assert list(t.columns) == ["check", "result"]
    assert dict(zip(t["check"], t["result"], strict=True)) == {
        "repository": "0 ok",
        "newest full backup": "20261127-180535F (3.0 h old)",
        "newest diff backup": "None (none old)",
        "WAL archive": "49 segments 000000010000000000000001..000000090000000000000031 "
        "on timelines 1 -> 9: continuous",
        "restore host space": "10.0 GiB free, 300.0 MiB needed",
    }


def test_preflight_table_without_ages_or_archive() -> None:
    p = make_preflight({}, None)
    t = dict(p.table().to_numpy().tolist())
    assert t["newest full backup"] == "None (none old)"
    assert t["WAL archive"] == "unknown"
    assert not preflight.Preflight(
        "2 missing", lab_backups(), {}, None, 0, 0, problems=("no full backup",)
    ).ok


# ---------------------------------------------------------------- restores
def test_seconds_of_an_ansible_delta() -> None:
    assert restore._seconds("0:00:12.345678") == pytest.approx(12.345678)
    assert restore._seconds("1:02:03.5") == pytest.approx(3723.5)
    assert restore._seconds("0:0:0") == 0


def test_task_result_finds_the_first_ok_result_of_the_task() -> None:
    res = {"delta": "0:00:12.345678", "rc": 0, "stdout": ""}
    events: list[dict[str, Any]] = [
        {"event": "playbook_on_start"},
        {"event": "runner_on_start", "event_data": {"task": restore.RESTORE_TASK}},
        {"event": "runner_on_ok", "event_data": None},
        {"event": "runner_on_ok", "event_data": {"task": "Gathering Facts", "res": {"x": 1}}},
        {"event": "runner_on_failed", "event_data": {"task": restore.RESTORE_TASK, "res": {}}},
        {"event": "runner_on_ok", "event_data": {"task": restore.RESTORE_TASK, "res": res}},
        {"event": "runner_on_ok", "event_data": {"task": restore.RESTORE_TASK, "res": {"n": 2}}},
    ]
    got = restore._task_result(events, restore.RESTORE_TASK)
    assert got == res and got is not res
    assert restore._seconds(got["delta"]) == pytest.approx(12.345678)
    assert restore._task_result(events, "Restore | Read where recovery stopped") == {}
    assert restore._task_result(iter(events), "Gathering Facts") == {"x": 1}
    assert restore._task_result([], restore.RESTORE_TASK) == {}
    no_res = [{"event": "runner_on_ok", "event_data": {"task": "t", "res": None}}]
    assert restore._task_result(no_res, "t") == {}


def run(restore_s: float, size: int = 32943204) -> restore.RestoreRun:
    return restore.RestoreRun(
        host="restore1",
        target="lsn 0/08002228 (exclusive)",
        label=LABEL,
        options=("--type=lsn", "--target=0/8002228", "--target-exclusive"),
        restore_s=restore_s,
        total_s=41.0,
        size=size,
        process_max=4,
        delta=False,
        log_lines=("recovery stopping before commit of transaction 1420",),
    )


def test_restore_throughput() -> None:
    assert run(4.0).throughput == pytest.approx(32943204 / 4.0)
    assert np.isnan(run(0.0).throughput)
    assert run(2.0, size=0).throughput == 0
    assert "log_lines" not in repr(run(1.0))


def test_a_drop_of_any_file_of_the_database_counts_when_the_table_is_gone() -> None:
    text = (
        "rmgr: Transaction len (rec/tot):    130/   130, tx:       2001, lsn: 0/09000100, "
        "prev 0/090000C8, desc: COMMIT 2026-11-27 21:40:00.000001 UTC; rels: base/16387/16401 "
        "base/16387/16404; inval msgs: catcache 80\n"
        "rmgr: Transaction len (rec/tot):    130/   130, tx:       2002, lsn: 0/09000200, "
        "prev 0/09000100, desc: COMMIT 2026-11-27 21:40:01.000001 UTC; rels: base/5/16500\n"
    )
    found = forensics.parse_waldump(text, "", db_dir="base/16387")
    assert [(b.kind, b.xid) for b in found] == [("drop", 2001)]
    assert forensics.parse_waldump(text, "") == []
