from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faultbook.errors import LabError
from faultbook.lab import machine


def test_hosts_file_keeps_peer_lines_and_sets_own_name(tmp_path: Path) -> None:
    p = tmp_path / "hosts"
    p.write_text("127.0.0.1 localhost\n127.0.1.1 oldname\n10.77.0.41 backup1\n")
    text = machine.hosts_file(p, "db3")
    assert "127.0.1.1 db3" in text and "oldname" not in text
    assert "10.77.0.41 backup1" in text
    assert machine.hosts_file(tmp_path / "missing", "db3").startswith("127.0.0.1 localhost\n")


# ------------------------------------------------------------------ waiting for a host to be gone


def _stubborn_child() -> subprocess.Popen[bytes]:
    """A process that ignores SIGTERM (like a machine that will not power off)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def _alive_set(pid: int) -> set[int]:
    return {pid} if machine._alive(pid) else set()


def test_wait_returns_at_once_when_nothing_is_left() -> None:
    started = time.monotonic()
    assert machine.wait_processes_gone(lambda: {"db1": set(), "db2": set()}, 5) == {}
    assert time.monotonic() - started < 0.5


def test_wait_returns_as_soon_as_the_processes_exit() -> None:
    proc = subprocess.Popen(["sleep", "0.3"])
    try:
        started = time.monotonic()
        assert machine.wait_processes_gone(lambda: {"db1": _alive_set(proc.pid)}, 5) == {}
        assert 0.2 < time.monotonic() - started < 2
    finally:
        proc.kill()
        proc.wait(5)


def test_a_process_that_ignores_sigterm_is_killed_after_the_wait() -> None:
    proc = _stubborn_child()
    try:
        os.kill(proc.pid, signal.SIGTERM)  # ignored
        started = time.monotonic()
        left = machine.wait_processes_gone(
            lambda: {"db1": _alive_set(proc.pid)}, timeout=0.3, kill_timeout=3
        )
        assert left == {}
        assert 0.3 <= time.monotonic() - started < 3
        assert proc.wait(5) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait(5)


def test_what_survives_sigkill_is_returned_by_host() -> None:
    ghost = 2**22 + 12345  # beyond pid_max: a process that never goes away (for the test)
    started = time.monotonic()
    left = machine.wait_processes_gone(
        lambda: {"db1": set(), "web2": {ghost}}, timeout=0.2, kill_timeout=0.3
    )
    assert left == {"web2": {ghost}}
    assert time.monotonic() - started < 2


def test_processes_finds_a_hosts_nspawn_by_its_command_line(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = subprocess.Popen(
        ["systemd-nspawn", "-c", "sleep 30; :", "--machine=h1", f"--directory={root}"],
        executable="/bin/sh",
    )
    try:
        deadline = time.monotonic() + 5
        while machine._cmdline(proc.pid)[:1] != ["systemd-nspawn"] and time.monotonic() < deadline:
            time.sleep(0.01)
        found = machine.processes({"h1": (root, None), "h2": (tmp_path / "other", None)})
        assert proc.pid in found["h1"] and found["h2"] == set()
    finally:
        proc.kill()
        proc.wait(5)
    assert proc.pid not in machine.processes({"h1": (root, None)})["h1"]


def test_down_names_the_hosts_whose_processes_remain(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from faultbook.lab import lab as lab_mod

    monkeypatch.setenv("FAULTBOOK_HOME", str(tmp_path))
    lab = lab_mod.Lab()
    for h in lab.inv.hosts:
        lab.dirs(h).upper.mkdir(parents=True)
    calls: list[str] = []
    monkeypatch.setattr(lab_mod, "preflight", lambda: None)
    monkeypatch.setattr(machine, "find_nspawn", lambda name, root: None)
    monkeypatch.setattr(machine, "unmount", lambda d: calls.append(f"unmount {d.base.name}"))
    monkeypatch.setattr(machine, "remove_cgroups", lambda name: None)
    monkeypatch.setattr(lab_mod.net, "veths", lambda: [])
    monkeypatch.setattr(lab_mod.net, "bridge_down", lambda bridge: calls.append("bridge_down"))
    ghost = 2**22 + 54321
    monkeypatch.setattr(
        machine, "processes", lambda hosts: {h: {ghost} if h == "db2" else set() for h in hosts}
    )
    real_wait = machine.wait_processes_gone
    monkeypatch.setattr(
        machine,
        "wait_processes_gone",
        lambda find, timeout: real_wait(find, timeout, kill_timeout=0.2),
    )
    with pytest.raises(LabError, match=rf"still run after SIGKILL: db2 \(pids {ghost}\)$"):
        lab.down(exit_timeout=0.2)
    assert lab.dirs("db2").upper.exists() and not lab.dirs("db1").base.exists()
    assert "unmount db2" not in calls and "unmount db1" in calls
    assert "bridge_down" not in calls
