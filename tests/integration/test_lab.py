"""The lab's promises, checked on real nspawn hosts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faultbook import ssh
from faultbook.errors import SSHError
from faultbook.inventory import Inventory
from faultbook.lab import machine, net
from faultbook.lab.lab import Lab

pytestmark = pytest.mark.integration
FB = [sys.executable, "-m", "faultbook.cli"]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FB, *args], capture_output=True, text=True, timeout=timeout)


def test_every_host_answers_ssh_with_its_pinned_key_and_its_own_name(lab: Lab) -> None:
    results = ssh.run_many(lab.inv, None, "hostname; systemctl is-system-running")
    assert set(results) == set(lab.inv.hosts)
    for host, r in results.items():
        assert not isinstance(r, SSHError), r
        name, state = r.stdout.split()
        assert name == host
        assert state == "running"


def test_a_wrong_host_key_is_refused(lab: Lab, tmp_path: Path) -> None:
    known = (lab.ssh_dir / "known_hosts").read_text().splitlines()
    # Give db1 the host key of db2: the connection must be refused, not trusted.
    db2_key = next(ln for ln in known if ln.startswith("10.77.0.32,")).split(" ", 1)[1]
    forged = [f"10.77.0.31,db1 {db2_key}" if ln.startswith("10.77.0.31,") else ln for ln in known]
    (tmp_path / "known_hosts").write_text("\n".join(forged) + "\n")
    conn = ssh.connection(lab.inv)
    import faultbook.ssh as ssh_mod

    fake = type(conn)(conn.user, conn.key_file, tmp_path / "known_hosts")
    orig = ssh_mod.connection
    ssh_mod.connection = lambda inv: fake  # type: ignore[assignment]
    try:
        with pytest.raises(SSHError, match="host key of .* does not match"):
            ssh.run(lab.inv, "db1", "true")
    finally:
        ssh_mod.connection = orig


def test_password_login_is_not_offered(lab: Lab) -> None:
    proc = subprocess.run(
        [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            f"UserKnownHostsFile={lab.ssh_dir / 'known_hosts'}",
            "-o",
            "ConnectTimeout=5",
            "deploy@10.77.0.21",
            "true",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 255
    assert "Permission denied (publickey)" in proc.stderr


def test_deploy_user_has_sudo(lab: Lab) -> None:
    assert ssh.run(lab.inv, "mon1", "id -u", sudo=True).stdout.strip() == "0"


def test_crash_then_boot_keeps_the_disk(lab: Lab) -> None:
    marker = f"written-before-crash-{time.time_ns()}"
    ssh.run(lab.inv, "db3", f"echo {marker} > /var/tmp/marker && sync", sudo=True)
    r = cli("lab", "crash", "db3")
    assert r.returncode == 0, r.stderr
    assert lab.pid("db3") is None
    with pytest.raises(SSHError):
        ssh.run(lab.inv, "db3", "true", timeout=2)
    r = cli("lab", "boot", "db3")
    assert r.returncode == 0, r.stderr
    assert ssh.run(lab.inv, "db3", "cat /var/tmp/marker").stdout.strip() == marker
    # A new boot, not the old machine.
    assert int(ssh.run(lab.inv, "db3", "ps -o etimes= -p 1").stdout) < 120


def test_partition_makes_a_host_unreachable_and_heal_brings_it_back(lab: Lab) -> None:
    assert cli("lab", "partition", "web2").returncode == 0
    try:
        with pytest.raises(SSHError):
            ssh.run(lab.inv, "web2", "true", timeout=2)
        # Other hosts cannot reach it either.
        r = ssh.run(lab.inv, "web1", "ping -c1 -W1 10.77.0.22 >/dev/null; echo $?")
        assert r.stdout.strip() == "1"
        assert net.link_state("web2", lab.bridge) == "cut"
    finally:
        assert cli("lab", "heal", "web2").returncode == 0
    assert ssh.run(lab.inv, "web2", "hostname").stdout.strip() == "web2"


def _ping_avg_ms(addr: str, count: int = 5) -> float:
    out = subprocess.run(
        ["ping", "-c", str(count), "-i", "0.2", addr], capture_output=True, text=True
    ).stdout
    m = re.search(r"= [\d.]+/([\d.]+)/", out)
    assert m, out
    return float(m.group(1))


def test_netem_adds_latency_a_ping_measures_and_heal_clears_it(lab: Lab) -> None:
    base = _ping_avg_ms("10.77.0.23")
    assert cli("lab", "netem", "web3", "--delay", "80").returncode == 0
    try:
        delayed = _ping_avg_ms("10.77.0.23")
        assert delayed >= base + 70, (base, delayed)
        status = json.loads(cli("lab", "status", "--json").stdout)
        web3 = next(h for h in status["hosts"] if h["name"] == "web3")
        assert web3["netem"] == "delay 80ms loss 0%"
    finally:
        assert cli("lab", "heal", "web3").returncode == 0
    assert _ping_avg_ms("10.77.0.23") < base + 20


def test_netem_loss_drops_packets(lab: Lab) -> None:
    assert cli("lab", "netem", "web1", "--loss", "100").returncode == 0
    try:
        out = subprocess.run(
            ["ping", "-c", "5", "-i", "0.1", "-W", "1", "10.77.0.21"],
            capture_output=True,
            text=True,
        ).stdout
        assert "100% packet loss" in out
    finally:
        cli("lab", "heal", "web1")


def test_up_on_a_running_lab_is_a_no_op(lab: Lab) -> None:
    pids = {h: lab.pid(h) for h in lab.inv.hosts}
    r = cli("lab", "up", "--no-provision")
    assert r.returncode == 0, r.stderr
    assert "lab up" in r.stdout
    assert {h: lab.pid(h) for h in lab.inv.hosts} == pids


def test_a_second_lab_command_is_refused_while_one_holds_the_lock(lab: Lab) -> None:
    with lab.lock():
        r = cli("lab", "up", "--no-provision")
    assert r.returncode == 2
    assert "another faultbook lab command" in r.stderr


def test_health_check_names_a_host_that_is_down(lab: Lab, tmp_path: Path) -> None:
    assert cli("lab", "crash", "backup1").returncode == 0
    try:
        r = cli("run", "health-check", "-p", "timeout_s", "3", "--out", str(tmp_path))
        assert r.returncode == 1, r.stdout + r.stderr
        doc = json.loads((tmp_path / "result.json").read_text())
        assert doc["verdict"] == "fail"
        assert any("backup1 unreachable" in s["detail"] for s in doc["steps"])
        assert (tmp_path / "health-check.html").exists()
        # The verdict names the host; faultbook itself raised nothing (a traceback through
        # our code would name lib/faultbook; Jupyter's own kernel-shutdown noise is not ours).
        assert "faultbook/" not in "".join(
            ln for ln in (r.stdout + r.stderr).splitlines(keepends=True) if "File " in ln
        )
        assert "backup1 unreachable" in r.stdout
    finally:
        assert cli("lab", "boot", "backup1").returncode == 0


def test_health_check_passes_on_a_healthy_lab(lab: Lab, tmp_path: Path) -> None:
    r = cli("run", "health-check", "--out", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["verdict"] == "pass" and doc["metrics"]["hosts_running"] == len(lab.inv.hosts)


def test_up_adopts_hosts_left_running_by_a_dead_controller(lab: Lab) -> None:
    # A controller that died leaves nspawn processes and mounts; a fresh Lab finds them.
    fresh = Lab(Inventory(lab.inv.path, lab.inv.hosts, lab.inv.groups, lab.inv.vars))
    assert all(fresh.pid(h) for h in fresh.inv.hosts)
    fresh.up()


def test_down_leaves_nothing_behind(lab: Lab) -> None:
    r = cli("lab", "down")
    assert r.returncode == 0, r.stderr
    procs = subprocess.run(["pgrep", "-f", "systemd-nspawn"], capture_output=True, text=True)
    # Exited processes the init process has not reaped yet (zombies) hold nothing.
    assert [p for p in procs.stdout.split() if machine._alive(int(p))] == []
    mounts = Path("/proc/mounts").read_text()
    assert str(lab.dir) not in mounts
    assert not net.link_exists(lab.bridge)
    assert net.veths() == []
    assert not any(machine.cgroup_dirs(h)[0].exists() for h in lab.inv.hosts)
    assert subprocess.run(["pgrep", "-f", "faultbook.lab.delay"]).returncode == 1
    assert not any(lab.dirs(h).upper.exists() for h in lab.inv.hosts)  # disks wiped
    # Leave a (fresh) lab up for what runs next (nbval); `make test` takes it down at the end.
    lab.up()
