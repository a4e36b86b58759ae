"""The db hosts' restore_command (postgresql role, pg-restore-wal.sh.j2), rendered as
Ansible would for db1 and run with bash: what it answers PostgreSQL while a promotion
holds the archive, and when it asks pgBackRest (a stand-in on PATH records the call)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from role_templates import render

HOLD_S = 30


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """The rendered script, the flag and cache in TMP_PATH, pgbackrest a recorder."""
    script = tmp_path / "restore-wal"
    script.write_text(
        render(
            "postgresql",
            "pg-restore-wal.sh.j2",
            "db1",
            extra={
                "postgresql_promote_flag": str(tmp_path / "flag"),
                "postgresql_history_cache": str(tmp_path / "cache"),
                "postgresql_promote_hold_archive_s": HOLD_S,
            },
        )
    )
    script.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pgbackrest"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/archive-calls\nexit 1\n')
    fake.chmod(0o755)
    (tmp_path / "cache").mkdir()
    return tmp_path


def restore(host: Path, name: str) -> tuple[int, bool]:
    """Run restore_command for NAME; its exit status and whether it asked the archive."""
    calls = host / "archive-calls"
    calls.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{host / 'bin'}:{os.environ['PATH']}"}
    r = subprocess.run([str(host / "restore-wal"), name, str(host / "out")], env=env, check=False)
    return r.returncode, calls.exists()


def until(path: Path, ahead_s: int) -> None:
    path.write_text(f"{int(time.time()) + ahead_s}\n")


WAL = "000000030000000000000007"
HISTORY = "00000004.history"


def test_without_a_hold_everything_comes_from_the_archive(host: Path) -> None:
    assert restore(host, WAL) == (1, True)
    assert restore(host, HISTORY) == (1, True)


def test_a_fresh_hold_answers_wal_not_archived_at_once(host: Path) -> None:
    until(host / "flag", 10)
    assert restore(host, WAL) == (1, False)


@pytest.mark.parametrize("ahead_s", [-1, 0, HOLD_S + 5])
def test_a_stale_or_implausible_deadline_asks_the_archive(host: Path, ahead_s: int) -> None:
    until(host / "flag", ahead_s)
    assert restore(host, WAL) == (1, True)


@pytest.mark.parametrize("text", ["", "soon\n", "1e9\n"])
def test_a_flag_without_a_deadline_asks_the_archive(host: Path, text: str) -> None:
    (host / "flag").write_text(text)
    assert restore(host, WAL) == (1, True)


def test_history_files_come_from_the_holds_cache(host: Path) -> None:
    until(host / "flag", 10)
    until(host / "cache" / ".until", 10)
    (host / "cache" / "00000003.history").write_text("1\t0/3000000\tno recovery target\n")
    assert restore(host, "00000003.history") == (0, False)
    assert (host / "out").read_text() == "1\t0/3000000\tno recovery target\n"
    # not in the cache: the hold asked the archive for it, and it was not archived
    assert restore(host, HISTORY) == (1, False)


def test_history_without_a_fresh_cache_asks_the_archive(host: Path) -> None:
    until(host / "flag", 10)  # a crash promotion: no hold, no cache
    assert restore(host, HISTORY) == (1, True)
    until(host / "cache" / ".until", -5)  # an old hold's cache
    assert restore(host, HISTORY) == (1, True)
