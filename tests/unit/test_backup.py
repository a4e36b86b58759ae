"""Unit tests for faultbook.backup and faultbook.wal: no lab, fixtures captured from the lab.

tests/unit/fixtures holds what the lab's repository host answered after a
series of failover drills (timelines 1 to 9, .partial segments of the
abandoned ends, one full and one incremental backup):
``pgbackrest info --output=json``, ``repo-ls archive/main/15-1 --recurse
--output=json`` and the newest timeline's history file (``repo-get``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from click.testing import CliRunner
from matplotlib.figure import Figure

from faultbook import ansible, cli, ssh
from faultbook import inventory as inv_mod
from faultbook.backup import repository, targets, wal
from faultbook.errors import (
    BackupError,
    InventoryError,
    RestoreTargetError,
    UsageError,
)
from faultbook.report import plots
from faultbook.stack import psql

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE = Path(__file__).parents[1] / "promtool" / "fixtures" / "pgbackrest-info.json"
FULL = "20261127-180535F"
INCR = "20261127-180535F_20261127-185033I"
FULL_STOP = datetime(2026, 11, 27, 18, 5, 38, tzinfo=UTC)
INCR_STOP = datetime(2026, 11, 27, 18, 50, 37, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 19, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def lab_info() -> list[dict[str, Any]]:
    return list(json.loads((FIXTURES / "pgbackrest-info-lab.json").read_text()))


def lab_files() -> list[str]:
    listing = json.loads((FIXTURES / "pgbackrest-repo-ls-archive.json").read_text())
    return sorted(p for p, meta in listing.items() if meta["type"] == "file")


def lab_history() -> list[wal.HistoryEntry]:
    return wal.parse_history((FIXTURES / "00000009.history").read_text())


@pytest.fixture
def df() -> pd.DataFrame:
    return repository.backups(lab_info())


@pytest.fixture
def inv() -> inv_mod.Inventory:
    return inv_mod.load("lab")


# ------------------------------------------------------------------ backups
def test_backups_one_row_per_backup_oldest_first(df: pd.DataFrame) -> None:
    assert list(df.columns) == list(repository.BACKUP_COLUMNS)
    assert list(df["label"]) == [FULL, INCR]
    assert list(df["type"]) == ["full", "incr"]
    assert list(df["prior"]) == [None, FULL]
    assert str(df["stop"].dtype) == "datetime64[ns, UTC]"
    assert df["start"].iloc[1] == pd.Timestamp("2026-11-27T18:50:33Z")
    assert df["stop"].iloc[1] == pd.Timestamp(INCR_STOP)
    assert list(df["duration_s"]) == [3.0, 4.0]
    assert list(df["lsn_start"]) == ["0/6000028", "0/2F000028"]
    assert list(df["lsn_stop"]) == ["0/6000100", "0/2F0006A0"]
    assert list(df["wal_start"]) == ["000000010000000000000006", "00000008000000000000002F"]
    assert list(df["size"]) == [30747670, 32943204]
    assert list(df["delta"]) == [30747670, 5816744]
    assert list(df["repo_size"]) == [3797872, 4195056]
    assert list(df["repo_delta"]) == [3797872, 884432]
    assert not df["error"].any()
    assert set(df["archive_min"]) == {"000000010000000000000001"}
    assert set(df["archive_max"]) == {"000000090000000000000031"}


def test_backups_without_lsns_from_older_pgbackrest() -> None:
    df = repository.backups(json.loads(SAMPLE.read_text()))
    assert list(df["type"]) == ["full", "diff"]
    assert list(df["lsn_stop"]) == [None, None]
    assert df["prior"].iloc[1] == df["label"].iloc[0]


def test_an_empty_stanza_is_an_empty_frame_with_the_columns() -> None:
    info = lab_info()
    info[0]["backup"] = []
    df = repository.backups(info)
    assert df.empty and list(df.columns) == list(repository.BACKUP_COLUMNS)
    assert repository.table(df) == "no backups"


def test_an_unknown_stanza_names_the_stanzas_there_are() -> None:
    with pytest.raises(BackupError, match="no stanza 'other'; stanzas: main"):
        repository.backups(lab_info(), "other")


def test_archive_range_and_id() -> None:
    info = lab_info()
    assert repository.archive_range(info) == (
        "000000010000000000000001",
        "000000090000000000000031",
    )
    assert repository.archive_id(info) == "15-1"
    info[0]["archive"] = []
    assert repository.archive_range(info) == (None, None)


def test_repository_status_ok_and_broken() -> None:
    info = lab_info()
    assert repository.repository_status(info) == (0, "ok")
    repository.check_repository(info)
    assert not repository.backup_running(info)
    info[0]["status"] = {"code": 99, "message": "other", "lock": {"backup": {"held": True}}}
    info[0]["repo"][0]["status"] = {"code": 99, "message": "[CryptoError] unable to flush"}
    assert repository.backup_running(info)
    with pytest.raises(BackupError) as exc:
        repository.check_repository(info)
    assert str(exc.value) == (
        "pgBackRest stanza 'main' is not ok: status 99: other "
        "(repo1: [CryptoError] unable to flush)"
    )


def test_latest_by_type_gives_the_age(df: pd.DataFrame) -> None:
    latest = repository.latest_by_type(df, NOW)
    assert latest["full"]["label"] == FULL
    assert latest["full"]["age"] == NOW - FULL_STOP
    assert latest["incr"]["age"] == timedelta(minutes=9, seconds=23)
    assert latest["diff"] == {"label": None, "stop": None, "age": None}


def test_table_lists_every_backup(df: pd.DataFrame) -> None:
    lines = repository.table(df).splitlines()
    assert lines[0].startswith("LABEL") and len(lines) == 3
    assert lines[2].startswith(INCR) and "incr" in lines[2] and "2026-11-27 18:50:37" in lines[2]
    assert "31.4 MiB" in lines[2] and "00000008000000000000002F" in lines[2]


# ---------------------------------------------------------------- WAL names
def test_segment_names_round_trip() -> None:
    s = wal.WalSegment.parse("0000000A0000001B000000FE")
    assert (s.timeline, s.log, s.seg) == (10, 0x1B, 0xFE)
    assert s.name == "0000000A0000001B000000FE" and str(s) == s.name
    assert s.number() == 0x1B * 0x100 + 0xFE
    assert wal.WalSegment.from_number(10, s.number()) == s


@pytest.mark.parametrize(
    ("name", "after"),
    [
        ("000000010000000000000001", "000000010000000000000002"),
        ("00000001000000000000000F", "000000010000000000000010"),
        # PostgreSQL >= 9.3 uses segment FF, then the log id goes up
        ("0000000100000000000000FE", "0000000100000000000000FF"),
        ("0000000100000000000000FF", "000000010000000100000000"),
        ("00000003000000AB000000FF", "00000003000000AC00000000"),
    ],
)
def test_next_segment_16_mib(name: str, after: str) -> None:
    assert wal.next_segment(name) == after


def test_next_segment_64_mib_wraps_after_3f() -> None:
    size = 64 * 2**20
    assert wal.segments_per_log(size) == 0x40
    assert wal.next_segment("00000001000000000000003F", size) == "000000010000000100000000"
    with pytest.raises(ValueError, match="beyond the last one of a log id"):
        wal.WalSegment.parse("000000010000000000000040", size)


def test_bad_segment_names_and_sizes() -> None:
    with pytest.raises(ValueError, match="beyond the last one of a log id .FF with 16 MiB"):
        wal.WalSegment.parse("000000010000000000000100")
    with pytest.raises(ValueError, match="not a WAL segment name"):
        wal.WalSegment.parse("00000001.history")
    with pytest.raises(ValueError, match="power of two"):
        wal.segments_per_log(3 * 2**20)
    assert wal.segments_per_log() == 0x100


def test_segment_of_lsn() -> None:
    assert wal.segment_of_lsn(psql.parse_lsn("0/2F0006A0"), 8) == "00000008000000000000002F"
    assert wal.segment_of_lsn(psql.parse_lsn("1/FF000000"), 1) == "0000000100000001000000FF"


def test_lsn_round_trip_and_errors() -> None:
    assert psql.parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert psql.format_lsn(psql.parse_lsn("0/2f0006a0")) == "0/2F0006A0"
    for bad in ("", "0x16/1", "16-B374D848", "123456789/0", "g/1"):
        with pytest.raises(ValueError, match="is not an LSN"):
            psql.parse_lsn(bad)


def test_parse_history_of_the_lab() -> None:
    h = lab_history()
    assert [e.parent for e in h] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert h[0].switch_lsn == psql.parse_lsn("0/1001CAD8")
    assert h[-1] == wal.HistoryEntry(
        8, psql.parse_lsn("0/30020EC8"), "no recovery target specified"
    )
    with pytest.raises(ValueError, match="expected 'timeline<TAB>lsn<TAB>reason'"):
        wal.parse_history("1\n")


# ------------------------------------------------------------ WAL continuity
def seg_files(timeline: int, first: int, last: int, suffix: str = "-" + "a" * 40 + ".zst") -> list:
    names = []
    for n in range(first, last + 1):
        s = wal.WalSegment.from_number(timeline, n)
        names.append(f"{s.name[:16]}/{s.name}{suffix}")
    return names


def partial(timeline: int, n: int) -> str:
    s = wal.WalSegment.from_number(timeline, n)
    return f"{s.name[:16]}/{s.name}.partial-{'b' * 40}.zst"


def lsn_in(n: int) -> int:
    return n * wal.WAL_SEGMENT_SIZE + 0x1234


def test_continuous_across_the_ff_boundary() -> None:
    files = seg_files(1, 0xFC, 0x102)
    c = wal.wal_archive_continuity(files)
    assert c.ok and c.segments == 7
    assert (c.first, c.last) == ("0000000100000000000000FC", "000000010000000100000002")
    assert c.summary().endswith(": continuous")


def test_a_missing_ff_segment_is_a_gap() -> None:
    files = [f for f in seg_files(1, 0xFC, 0x102) if "0000000100000000000000FF" not in f]
    c = wal.wal_archive_continuity(files)
    assert not c.ok and c.missing == 1
    assert c.gaps == (wal.WalGap(1, "0000000100000000000000FF", "0000000100000000000000FF", 1),)
    assert "1 missing: 0000000100000000000000FF (1 segment)" in c.summary()


def test_a_run_of_missing_segments_is_one_gap() -> None:
    files = seg_files(1, 1, 3) + seg_files(1, 8, 9)
    c = wal.wal_archive_continuity(files)
    assert c.gaps == (wal.WalGap(1, "000000010000000000000004", "000000010000000000000007", 4),)
    assert str(c.gaps[0]).endswith("..000000010000000000000007 (4 segments)")


def switch_archive() -> list[str]:
    # timeline 1 up to 05 and the switch segment 06 as .partial; timeline 2 from 06
    return [*seg_files(1, 1, 5), partial(1, 6), "00000002.history", *seg_files(2, 6, 8)]


@pytest.mark.parametrize("history", [[wal.HistoryEntry(1, lsn_in(6))], None])
def test_a_timeline_switch_is_continuous(history: list[wal.HistoryEntry] | None) -> None:
    c = wal.wal_archive_continuity(switch_archive(), history)
    assert c.ok, c.summary()
    assert c.timelines == (1, 2)
    assert (c.first, c.last, c.segments) == (
        "000000010000000000000001",
        "000000020000000000000008",
        8,
    )


@pytest.mark.parametrize("history", [[wal.HistoryEntry(1, lsn_in(6))], None])
def test_gaps_on_either_side_of_a_switch(history: list[wal.HistoryEntry] | None) -> None:
    no_child_copy = [f for f in switch_archive() if "000000020000000000000006-" not in f]
    c = wal.wal_archive_continuity(no_child_copy, history)
    assert [g.first for g in c.gaps] == ["000000020000000000000006"]
    no_parent_end = [f for f in switch_archive() if "000000010000000000000005-" not in f]
    c = wal.wal_archive_continuity(no_parent_end, history)
    assert [g.first for g in c.gaps] == ["000000010000000000000005"]


def test_a_switch_across_the_ff_boundary() -> None:
    files = [*seg_files(1, 0xFD, 0xFF), partial(1, 0x100), *seg_files(2, 0x100, 0x101)]
    c = wal.wal_archive_continuity(files, [wal.HistoryEntry(1, lsn_in(0x100))])
    assert c.ok and c.segments == 5 and c.last == "000000020000000100000001"
    first = "0000000100000000000000FD"
    c = wal.wal_archive_continuity(files[1:], [wal.HistoryEntry(1, lsn_in(0x100))], None, first)
    assert c.gaps == (wal.WalGap(1, "0000000100000000000000FD", "0000000100000000000000FD", 1),)


def test_the_history_file_decides_which_branch_counts() -> None:
    # Timeline 2 branched off at 06 and was abandoned; timeline 3 branched off
    # timeline 1 at 08. Timeline 1's 07 is missing: only timeline 2 has a 07,
    # and a restore along 1 -> 3 cannot use it.
    files = [*seg_files(1, 1, 6), *seg_files(2, 6, 9), *seg_files(3, 8, 10)]
    c = wal.wal_archive_continuity(files, [wal.HistoryEntry(1, lsn_in(8))])
    assert c.timelines == (1, 3)
    assert c.gaps == (wal.WalGap(1, "000000010000000000000007", "000000010000000000000007", 1),)
    assert c.history_known
    guessed = wal.wal_archive_continuity(files)  # names alone take 1 -> 2 -> 3
    assert guessed.timelines == (1, 2, 3) and guessed.ok and not guessed.history_known


def test_names_alone_take_the_switch_from_the_parents_partial_segment() -> None:
    # Timeline 1 ends with .partial copies at 06 (timeline 2, abandoned) and 08
    # (timeline 3); timeline 3's own 08 is missing, so its first file is 09.
    files = [
        *seg_files(1, 1, 5),
        partial(1, 6),
        *seg_files(1, 6, 7),
        partial(1, 8),
        *seg_files(3, 9, 10),
    ]
    c = wal.wal_archive_continuity(files)
    assert c.timelines == (1, 3)
    assert c.gaps == (wal.WalGap(3, "000000030000000000000008", "000000030000000000000008", 1),)


def test_a_new_timeline_with_only_its_history_file() -> None:
    files = [*seg_files(1, 1, 5), partial(1, 6), *seg_files(2, 6, 8), partial(2, 9)]
    files.append("00000003.history")
    history = [wal.HistoryEntry(1, lsn_in(6)), wal.HistoryEntry(2, lsn_in(9))]
    c = wal.wal_archive_continuity(files, history)
    assert c.ok and c.timelines == (1, 2, 3) and c.last == "000000020000000000000008"
    assert wal.wal_archive_continuity(files).timelines == (1, 2)
    assert wal.wal_files(files).newest_timeline == 3


def test_required_from_before_the_archive_is_a_gap() -> None:
    c = wal.wal_archive_continuity(seg_files(1, 4, 6), required_from="000000010000000000000002")
    assert c.gaps == (wal.WalGap(1, "000000010000000000000002", "000000010000000000000003", 2),)
    later = wal.wal_archive_continuity(seg_files(1, 1, 6), required_from="000000010000000000000004")
    assert later.ok and later.first == "000000010000000000000004" and later.segments == 3


def test_backup_labels_history_files_and_suffixes_are_understood() -> None:
    files = [
        "0000000100000000/000000010000000000000001",  # compress-type none, no checksum
        "0000000100000000/000000010000000000000002-" + "c" * 40 + ".gz",
        "0000000100000000/000000010000000000000002.00000028.backup",
        "0000000100000000/000000010000000000000003-" + "d" * 40 + ".lz4",
        "00000002.history",
        "archive.info",
    ]
    c = wal.wal_archive_continuity(files)
    assert c.ok and c.segments == 3 and c.timelines == (1,)


def test_an_empty_archive_is_not_ok() -> None:
    c = wal.wal_archive_continuity([])
    assert not c.ok and c.last is None and c.summary() == "no archived WAL segment"


def test_the_lab_archive_is_continuous_along_its_history() -> None:
    files = lab_files()
    c = wal.wal_archive_continuity(files, lab_history(), required_from="000000010000000000000006")
    assert c.ok, c.summary()
    assert c.timelines == tuple(range(1, 10))
    assert (c.first, c.last) == ("000000010000000000000006", "000000090000000000000031")
    # the same verdict from the names alone
    assert wal.wal_archive_continuity(files).ok
    # one segment gone in the middle of timeline 2
    holed = [f for f in files if "/000000020000000000000015-" not in f]
    c = wal.wal_archive_continuity(holed, lab_history())
    assert c.missing == 1 and c.gaps[0].first == "000000020000000000000015"


# ---------------------------------------------------------- restore targets
@pytest.mark.parametrize(
    ("value", "utc"),
    [
        ("2026-11-27T18:30:00Z", datetime(2026, 11, 27, 18, 30, tzinfo=UTC)),
        ("2026-11-27T18:30Z", datetime(2026, 11, 27, 18, 30, tzinfo=UTC)),
        ("2026-11-27 19:30:00+01:00", datetime(2026, 11, 27, 18, 30, tzinfo=UTC)),
        ("2026-11-27 18:30:00.25+00", datetime(2026, 11, 27, 18, 30, 0, 250000, tzinfo=UTC)),
    ],
)
def test_parse_time_targets(value: str, utc: datetime) -> None:
    t = targets.parse_target("time", value)
    assert t.kind == "time" and t.value == value and t.time == utc
    assert str(t) == f"time {value}"


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("time", "yesterday", "restore target time 'yesterday' is not a time: expected ISO 8601"),
        ("time", "2026-11-27T18:30:00", "has no time zone: add Z for UTC"),
        ("time", "", "restore target time '' is not a time"),
        ("lsn", "0/ZZ", "restore target '0/ZZ' is not an LSN (expected hex 'X/Y'"),
        ("lsn", "2F0006A0", "is not an LSN"),
        ("name", "", "restore point name '' is invalid"),
        ("name", "x" * 64, "expected 1 to 63 characters"),
        ("xid", "1234", "unknown restore target kind 'xid'; expected one of time, lsn, name"),
    ],
)
def test_malformed_targets_are_one_line_usage_errors(kind: str, value: str, message: str) -> None:
    with pytest.raises(RestoreTargetError) as exc:
        targets.parse_target(kind, value)
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert isinstance(exc.value, UsageError) and exc.value.exit_code == 2


def test_target_options_for_pgbackrest() -> None:
    assert targets.parse_target("latest").pgbackrest_options() == ["--type=default"]
    assert targets.parse_target("time", "2026-11-27T19:30:00.5+01:00").pgbackrest_options() == [
        "--type=time",
        "--target=2026-11-27 18:30:00.500000+00",
    ]
    assert targets.parse_target("lsn", "0/2f0006a0").pgbackrest_options() == [
        "--type=lsn",
        "--target=0/2F0006A0",
    ]
    assert targets.parse_target("name", "before-migration").pgbackrest_options() == [
        "--type=name",
        "--target=before-migration",
    ]


def test_a_target_before_the_oldest_backup_says_the_earliest_point(df: pd.DataFrame) -> None:
    t = targets.parse_target("time", "2026-01-01T00:00Z")
    with pytest.raises(RestoreTargetError) as exc:
        targets.check_target(t, df, NOW)
    assert str(exc.value) == (
        f"restore target 2026-01-01T00:00Z is before the oldest backup ({FULL}, ended "
        "2026-11-27T18:05:38Z); the earliest point you can restore to is 2026-11-27T18:05:38Z"
    )
    with pytest.raises(RestoreTargetError, match="is before the oldest backup"):
        targets.backup_for_target(df, t)


def test_a_target_in_the_future(df: pd.DataFrame) -> None:
    t = targets.parse_target("time", "2026-11-27T19:00:01Z")
    with pytest.raises(RestoreTargetError) as exc:
        targets.check_target(t, df, NOW)
    assert str(exc.value) == (
        "restore target 2026-11-27T19:00:01Z is in the future (it is now 2026-11-27T19:00:00Z)"
    )
    targets.check_target(targets.parse_target("time", "2026-11-27T19:00:00Z"), df, NOW)


def test_an_unknown_label_lists_the_known_ones(df: pd.DataFrame) -> None:
    t = targets.parse_target("latest")
    with pytest.raises(RestoreTargetError) as exc:
        targets.check_target(t, df, NOW, label="20261127-999999F")
    assert str(exc.value) == (
        f"unknown backup label '20261127-999999F'; known labels: {FULL}, {INCR}"
    )
    targets.check_target(t, df, NOW, label=INCR)


def test_a_target_before_the_chosen_backup(df: pd.DataFrame) -> None:
    t = targets.parse_target("time", "2026-11-27T18:30:00Z")
    targets.check_target(t, df, NOW, label=FULL)
    with pytest.raises(RestoreTargetError, match=f"is before backup {INCR} ended"):
        targets.check_target(t, df, NOW, label=INCR)


def test_lsn_targets_are_checked_against_the_backups(df: pd.DataFrame) -> None:
    early = targets.parse_target("lsn", "0/5FFFFFF")
    with pytest.raises(RestoreTargetError) as exc:
        targets.check_target(early, df, NOW)
    assert str(exc.value) == (
        f"restore target LSN 0/5FFFFFF is before the oldest backup ({FULL}, ended at LSN "
        "0/6000100); the earliest point you can restore to is 0/6000100"
    )
    late = targets.parse_target("lsn", "0/31000000")
    targets.check_target(late, df, NOW, current_lsn="0/31000000")
    with pytest.raises(RestoreTargetError, match="is in the future .the primary is at 0/30FFFFFF"):
        targets.check_target(late, df, NOW, current_lsn="0/30FFFFFF")
    with pytest.raises(RestoreTargetError, match=f"before backup {INCR} ended .LSN 0/2F0006A0"):
        targets.check_target(targets.parse_target("lsn", "0/10000000"), df, NOW, label=INCR)


def test_no_backup_at_all_is_a_backup_error() -> None:
    empty = repository.backups([{**lab_info()[0], "backup": []}])
    with pytest.raises(BackupError, match="holds no backup; take one with `faultbook backup now"):
        targets.check_target(targets.parse_target("latest"), empty, NOW)
    with pytest.raises(BackupError, match="holds no backup"):
        targets.backup_for_target(empty, targets.parse_target("latest"))


def test_now_must_carry_a_time_zone(df: pd.DataFrame) -> None:
    with pytest.raises(RestoreTargetError, match="has no time zone"):
        targets.check_target(targets.parse_target("latest"), df, datetime(2026, 11, 27, 19))


@pytest.mark.parametrize(
    ("kind", "value", "label"),
    [
        ("time", "2026-11-27T18:05:38Z", FULL),  # exactly when the full backup ended
        ("time", "2026-11-27T18:50:36Z", FULL),  # while the incremental one ran
        ("time", "2026-11-27T18:50:37Z", INCR),
        ("time", "2026-11-27T19:00:00Z", INCR),
        ("lsn", "0/6000100", FULL),
        ("lsn", "0/2F00069F", FULL),
        ("lsn", "0/2F0006A0", INCR),
        ("lsn", "1/0", INCR),
        ("latest", "", INCR),
        ("name", "before-migration", INCR),
    ],
)
def test_backup_for_target(df: pd.DataFrame, kind: str, value: str, label: str) -> None:
    assert targets.backup_for_target(df, targets.parse_target(kind, value)) == label


# -------------------------------------------------------------------- hosts
def fake_ssh(
    monkeypatch: pytest.MonkeyPatch, answers: list[ssh.CommandResult]
) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []

    def run(inv: Any, host: Any, command: str, timeout: float = 10.0, **kw: Any) -> Any:
        calls.append((host if isinstance(host, str) else host.name, command))
        return answers.pop(0)

    monkeypatch.setattr(ssh, "run", run)
    return calls


def test_free_space_reads_df_at_the_nearest_existing_parent(
    inv: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_ssh(monkeypatch, [ssh.CommandResult("restore1", 0, "      Avail\n1234567\n", "")])
    assert repository.free_space_bytes(inv, "restore1", "/var/lib/postgresql/15/main") == 1234567
    host, command = calls[0]
    assert host == "restore1"
    assert command.startswith("p=/var/lib/postgresql/15/main; while [ ! -e")
    assert command.endswith('df -B1 --output=avail "$p"')


def test_free_space_failure_is_a_backup_error(
    inv: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_ssh(monkeypatch, [ssh.CommandResult("restore1", 1, "", "df: /x: Permission denied\n")])
    with pytest.raises(BackupError, match="restore1:/x: df: /x: Permission denied"):
        repository.free_space_bytes(inv, "restore1", "/x")


def test_free_space_on_a_host_not_in_the_inventory(inv: inv_mod.Inventory) -> None:
    with pytest.raises(InventoryError, match="unknown host 'restore9'.*restore1"):
        repository.free_space_bytes(inv, "restore9", "/var/lib/postgresql")


def test_check_space() -> None:
    repository.check_space(10 * 2**30, 10 * 2**30)
    with pytest.raises(BackupError) as exc:
        repository.check_space(3 * 2**30, 512 * 2**20, where="restore1:/var/lib/postgresql")
    assert str(exc.value) == (
        "not enough space on restore1:/var/lib/postgresql: the restore needs 3.0 GiB, "
        "512.0 MiB is free (2.5 GiB short)"
    )


def test_info_runs_pgbackrest_as_postgres_on_the_repository_host(
    inv: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (FIXTURES / "pgbackrest-info-lab.json").read_text()
    calls = fake_ssh(monkeypatch, [ssh.CommandResult("backup1", 0, text, "")])
    assert repository.info(inv) == lab_info()
    assert calls == [
        ("backup1", "cd /tmp && sudo -n -u postgres sh -c 'exec pgbackrest info --output=json'"),
    ]


def test_info_falls_back_to_a_pgbackrest_user(
    inv: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_ssh(
        monkeypatch,
        [
            ssh.CommandResult("backup1", 1, "", "sudo: unknown user postgres\n"),
            ssh.CommandResult("backup1", 0, "[]", ""),
        ],
    )
    assert repository.info(inv) == []
    assert "sudo -n -u pgbackrest sh -c 'exec pgbackrest" in calls[1][1]


def test_a_pgbackrest_error_is_one_line(
    inv: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = (
        "WARN: something harmless\n"
        "ERROR: [043]: WAL segment 000000010000000000000002 was not archived before timeout\n"
        "       HINT: check the archive_command\n"
    )
    calls = fake_ssh(monkeypatch, [ssh.CommandResult("backup1", 43, "", err)])
    with pytest.raises(BackupError) as exc:
        repository.info(inv)
    assert str(exc.value) == (
        "pgbackrest info --output=json on backup1 failed: ERROR: [043]: WAL segment "
        "000000010000000000000002 was not archived before timeout"
    )
    assert len(calls) == 1  # postgres exists: no second try as another user


def test_check_archive_follows_the_newest_timeline(
    inv: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    listing = (FIXTURES / "pgbackrest-repo-ls-archive.json").read_text()
    history = (FIXTURES / "00000009.history").read_text()
    calls = fake_ssh(
        monkeypatch,
        [
            ssh.CommandResult("backup1", 0, listing, ""),
            ssh.CommandResult("backup1", 0, history, ""),
        ],
    )
    c = repository.check_archive(inv, lab_info())
    assert c.ok and c.history_known and c.first == "000000010000000000000006"
    assert "repo-ls archive/main/15-1 --recurse --output=json" in calls[0][1]
    assert calls[1][1].endswith("repo-get archive/main/15-1/00000009.history'")


# ---------------------------------------------------------- on-demand backup
@pytest.fixture
def playbook_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake(playbook: str, inventory: Any = None, **kw: Any) -> ansible.PlaybookResult:
        calls.append({"playbook": playbook, **kw})
        return ansible.PlaybookResult(playbook, "successful", 0, {}, 12.0)

    monkeypatch.setattr(ansible, "run_playbook", fake)
    return calls


def test_run_backup_names_the_new_backup(
    inv: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch, playbook_calls: list[dict[str, Any]]
) -> None:
    before = lab_info()
    before[0]["backup"] = before[0]["backup"][:1]
    answers = [before, lab_info()]
    monkeypatch.setattr(repository, "info", lambda inv, timeout=60.0: answers.pop(0))
    run = repository.run_backup(inv, "incr")
    assert (run.label, run.type) == (INCR, "incr")
    assert run.row["lsn_stop"] == "0/2F0006A0"
    assert playbook_calls[0]["playbook"] == "backup_now.yml"
    assert playbook_calls[0]["extravars"] == {
        "backup_type": "incr",
        "pgbackrest_repo_host": "backup1",
    }


def test_run_backup_without_a_new_backup_fails(
    inv: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch, playbook_calls: list[dict[str, Any]]
) -> None:
    monkeypatch.setattr(repository, "info", lambda inv, timeout=60.0: lab_info())
    with pytest.raises(BackupError, match=f"shows no new backup .newest: {INCR}"):
        repository.run_backup(inv, "full")


def test_run_backup_refuses_an_unknown_type(
    inv: inv_mod.Inventory, playbook_calls: list[dict[str, Any]]
) -> None:
    with pytest.raises(UsageError, match="unknown backup type 'weekly'; expected one of full"):
        repository.run_backup(inv, "weekly")
    assert playbook_calls == []


# ---------------------------------------------------------------------- CLI
def invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli.main, list(args))
    return res.exit_code, res.output


def test_cli_backup_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repository, "info", lambda inv, timeout=60.0: lab_info())
    code, out = invoke("backup", "list")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == (
        "stanza main: ok (status 0); archived WAL 000000010000000000000001 .. "
        "000000090000000000000031"
    )
    assert lines[2].startswith(FULL) and lines[3].startswith(INCR)
    code, out = invoke("backup", "list", "--json")
    rows = json.loads(out)
    assert [r["label"] for r in rows] == [FULL, INCR]
    assert rows[1]["stop"].startswith("2026-11-27T18:50:37")


def test_cli_backup_now_prints_the_label(monkeypatch: pytest.MonkeyPatch) -> None:
    got: list[str] = []

    def fake(inv: Any, backup_type: str, event_handler: Any = None) -> repository.BackupRun:
        got.append(backup_type)
        return repository.BackupRun(INCR, "incr", 17.2, {"size": 32943204})

    monkeypatch.setattr(repository, "run_backup", fake)
    code, out = invoke("backup", "now")
    assert code == 0 and got == ["incr"]
    assert out.strip() == f"backup {INCR}: incr, 17s, 31.4 MiB"


def test_cli_backup_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*a: Any, **kw: Any) -> Any:
        raise BackupError("pgbackrest info --output=json on backup1 failed: ERROR: [056]: x")

    monkeypatch.setattr(repository, "info", fail)
    code, out = invoke("backup", "list")
    assert code == 1
    assert (
        out
        == "faultbook: error: pgbackrest info --output=json on backup1 failed: ERROR: [056]: x\n"
    )
    code, out = invoke("backup", "now", "--type", "weekly")
    assert code == 2 and "'weekly' is not one of 'full', 'diff', 'incr'" in out
    code, out = invoke("backup", "list", "-i", "nope")
    assert code == 2 and "inventory 'nope' not found" in out


# -------------------------------------------------------------------- plots
def test_backup_timeline_draws_a_bar_per_backup(df: pd.DataFrame) -> None:
    fig = plots.backup_timeline(df, {"restore target": datetime(2026, 11, 27, 18, 30, tzinfo=UTC)})
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.patches) == 2
    colours = [p.get_facecolor() for p in ax.patches]
    assert colours[0] != colours[1]  # full and incr
    texts = [t.get_text() for t in ax.texts]
    assert any(FULL in t and "(3 s, 29 MiB)" in t for t in texts)
    assert any(INCR in t for t in texts) and "restore target" in texts
    assert [t.get_text() for t in ax.get_yticklabels()] == ["full", "incr"]


def test_backup_timeline_without_backups(df: pd.DataFrame) -> None:
    fig = plots.backup_timeline(df.iloc[0:0])
    assert fig.axes[0].texts[0].get_text() == "no backups"


def prom_archived() -> pd.DataFrame:
    ts = pd.Series(pd.date_range("2026-11-27T18:00Z", periods=5, freq="30s"))
    return pd.concat(
        [
            # db1 archives 2 segments, then restarts (its counter starts at 0 again) and archives 1
            pd.DataFrame({"timestamp": ts, "value": [5.0, 6, 7, 0, 1], "instance": "db1"}),
            pd.DataFrame({"timestamp": ts, "value": [0.0, 0, 0, 2, 4], "instance": "db2"}),
        ],
        ignore_index=True,
    )


def test_archived_total_counts_across_counter_resets() -> None:
    total = plots.archived_total(prom_archived())
    assert list(total) == [0.0, 1.0, 2.0, 4.0, 7.0]
    assert str(total.index.tz) == "UTC"


def test_wal_archived_draws_each_host_and_the_total() -> None:
    fig = plots.wal_archived(prom_archived())
    labels = [ln.get_label() for ln in fig.axes[0].lines]
    assert labels == ["instance=db1", "instance=db2", "all hosts since start"]
    empty = plots.wal_archived(prom_archived().iloc[0:0])
    assert empty.axes[0].texts[0].get_text() == "no samples"


def test_restore_throughput_per_run_with_the_raw_copy() -> None:
    runs = pd.DataFrame(
        {
            "run": ["1 GiB", "2 GiB"],
            "bytes": [2**30, 2**31],
            "seconds": [16.0, 40.0],
            "raw_bytes_per_s": [128 * 2**20, 100 * 2**20],
        }
    )
    fig = plots.restore_throughput(runs)
    ax = fig.axes[0]
    heights = [round(p.get_height(), 1) for p in ax.patches]
    assert heights == [64.0, 51.2, 128.0, 100.0]
    assert [t.get_text() for t in ax.texts] == ["0.50× raw", "0.51× raw"]


def test_restore_throughput_over_time() -> None:
    t0 = pd.Timestamp("2026-11-27T18:00Z")
    samples = pd.DataFrame(
        {
            "timestamp": [t0 + pd.Timedelta(seconds=s) for s in (0, 1, 2, 4)],
            "bytes": [0, 2**20, 3 * 2**20, 7 * 2**20],
        }
    )
    fig = plots.restore_throughput(samples)
    line = fig.axes[0].lines[0]
    assert list(line.get_ydata()) == [0.0, 1.0, 2.0, 2.0]
    assert plots.restore_throughput(samples.iloc[0:0]).axes[0].texts[0].get_text() == "no restores"
