"""The db hosts' restore_command (postgresql role, pg-restore-wal.sh.j2), rendered as
Ansible would for db1 and run with bash: what it answers PostgreSQL while a promotion
holds the archive, when the repository cannot be reached (a real TCP connect to a
port on loopback: listening, closed, or with a full accept queue), and when it asks
pgBackRest (a stand-in on PATH records the call)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from role_templates import render

HOLD_S = 30
DOWN_S = 10
PROBE_S = 1


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
                "postgresql_repo_down_flag": str(tmp_path / "repo-down"),
                "postgresql_pgbackrest_config": str(tmp_path / "pgbackrest.conf"),
                "postgresql_repo_probe_timeout_s": PROBE_S,
                "postgresql_repo_down_hold_s": DOWN_S,
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


# --------------------------------------------------------- an unreachable repository
@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A repository's TLS port that accepts connections (nothing is ever answered)."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as srv:
        yield srv


def repo_at(host: Path, port: int) -> None:
    """pgBackRest's configuration on a db host: the repository's host and TLS port."""
    (host / "pgbackrest.conf").write_text(
        "[global]\nrepo1-host=127.0.0.1\nrepo1-path=/var/lib/pgbackrest\n"
        f"repo1-host-type=tls\nrepo1-host-port={port}\n"
    )


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        return int(srv.getsockname()[1])


def test_a_repository_that_accepts_the_connection_is_asked(
    host: Path, listening: socket.socket
) -> None:
    repo_at(host, listening.getsockname()[1])
    assert restore(host, WAL) == (1, True)
    assert restore(host, HISTORY) == (1, True)
    assert not (host / "repo-down").exists()


def test_a_refused_connection_is_not_archived_at_once_and_marks_the_repository_down(
    host: Path,
) -> None:
    repo_at(host, closed_port())
    before = int(time.time())
    assert restore(host, HISTORY) == (1, False)
    deadline = int((host / "repo-down").read_text())
    assert before + DOWN_S <= deadline <= int(time.time()) + DOWN_S


def test_a_connect_nobody_answers_is_bounded_by_the_probe(host: Path) -> None:
    # A full accept queue: the kernel drops further SYNs, as for a host that is gone.
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        # the queue holds backlog + 1 = 1 connection: this one fills it
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            repo_at(host, port)
            t0 = time.monotonic()
            assert restore(host, WAL) == (1, False)
            assert time.monotonic() - t0 < PROBE_S + 1
    assert (host / "repo-down").exists()


def test_while_the_mark_is_fresh_nothing_is_probed_or_asked(
    host: Path, listening: socket.socket
) -> None:
    repo_at(host, listening.getsockname()[1])  # back up, but the mark is fresh
    until(host / "repo-down", 5)
    assert restore(host, HISTORY) == (1, False)
    assert restore(host, WAL) == (1, False)


@pytest.mark.parametrize("ahead_s", [-1, 0, DOWN_S + 5])
def test_a_stale_or_implausible_mark_probes_again(
    host: Path, listening: socket.socket, ahead_s: int
) -> None:
    repo_at(host, listening.getsockname()[1])
    until(host / "repo-down", ahead_s)
    assert restore(host, HISTORY) == (1, True)


def test_a_holds_cache_answers_even_with_the_repository_down(host: Path) -> None:
    repo_at(host, closed_port())
    until(host / "flag", 10)
    until(host / "cache" / ".until", 10)
    (host / "cache" / "00000003.history").write_text("1\t0/3000000\tno recovery target\n")
    assert restore(host, "00000003.history") == (0, False)
    assert not (host / "repo-down").exists()
