"""disk-full and clock-skew (drills.hostfaults): their commands, their bounds and refusals,
and their round trip through the journal and faultbook run's rollback, over a fake SSH."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from faultbook import inventory as inv_mod
from faultbook import ssh
from faultbook.drills import faults, hostfaults, journal, preflight, procedure, rollback
from faultbook.errors import FaultError, ParameterError, UsageError
from faultbook.paths import LAB_INVENTORY
from faultbook.results import Run, validate

REAL = """
all:
  vars: {ansible_user: deploy}
  children:
    db:
      hosts:
        pg1: {ansible_host: 192.0.2.31}
    web:
      hosts:
        app1: {ansible_host: 192.0.2.21}
"""

Answer = str | tuple[int, str, str] | Callable[[str], str]


class FakeSSH:
    """ssh.run for the faults: the first rule whose marker is in the command answers.

    An answer is stdout (rc 0), (rc, stdout, stderr), or a function of the command.
    Every command is recorded as (host, command, sudo).
    """

    def __init__(self, rules: list[tuple[str, Answer]]) -> None:
        self.rules = rules
        self.calls: list[tuple[str, str, bool]] = []

    def __call__(
        self,
        inv: Any,
        host: Any,
        command: str,
        timeout: float = 10.0,
        sudo: bool = False,
        **kw: Any,
    ) -> ssh.CommandResult:
        name = host if isinstance(host, str) else host.name
        self.calls.append((name, command, sudo))
        for marker, answer in self.rules:
            if marker in command:
                if callable(answer):
                    answer = answer(command)
                if isinstance(answer, str):
                    return ssh.CommandResult(name, 0, answer, "")
                rc, out, err = answer
                return ssh.CommandResult(name, rc, out, err)
        raise AssertionError(f"no fake answer for: {command}")

    @property
    def commands(self) -> list[str]:
        return [c for _, c, _ in self.calls]


@pytest.fixture
def lab() -> inv_mod.Inventory:
    return inv_mod.load(LAB_INVENTORY)


@pytest.fixture
def real(tmp_path: Path) -> inv_mod.Inventory:
    p = tmp_path / "hosts.yml"
    p.write_text(REAL)
    return inv_mod.load(p)


def fake(monkeypatch: pytest.MonkeyPatch, rules: list[tuple[str, Answer]]) -> FakeSSH:
    f = FakeSSH(rules)
    monkeypatch.setattr(ssh, "run", f)
    return f


def sh_syntax_ok(script: str) -> None:
    """The host runs every command with ``sudo -n sh -c``: it must be valid POSIX sh."""
    r = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


GIB = 1 << 30
MIB = 1 << 20
# df on a db host's bounded data disk: 8 GiB, 7 GiB free to PostgreSQL.
PROBE_DB = f"ext4 {7 * GIB} {8 * GIB} 0 /var/lib/postgresql"
PROBE_MARK = "df -B1 --output=fstype,avail,size"
FILL_MARK = "fallocate -l"


# ---------------------------------------------------------------- disk-full: options
@pytest.mark.parametrize(
    ("host", "path"),
    [
        ("db1", "/var/lib/postgresql/15/main/pg_wal"),
        ("backup1", "/var/lib/pgbackrest"),
        ("mon1", "/var/lib/prometheus"),
        ("web1", "/tmp"),
    ],
)
def test_disk_full_fills_each_tiers_data_by_default(
    lab: inv_mod.Inventory, host: str, path: str
) -> None:
    f = faults.make("disk-full", lab, host)
    assert f.spec() == {"max_s": 600.0, "path": path, "leave_mib": 16.0, "max_gib": 16.0}
    assert f.describe() == f"disk-full of {path} on {host}"
    assert not f.lab_side and not f.needs_lab  # over SSH, with a timer on the host


def test_disk_full_has_no_default_where_a_tier_keeps_no_data(lab: inv_mod.Inventory) -> None:
    with pytest.raises(ParameterError, match="no default path for lb1.*give path"):
        faults.make("disk-full", lab, "lb1")
    assert faults.make("disk-full", lab, "lb1", path="/var/log").path == "/var/log"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"path": "var/lib"}, "absolute path"),
        ({"path": "/var/lib/x; rm -rf /"}, "absolute path"),
        ({"path": "/var/lib/../../etc"}, "absolute path"),
        ({"leave_mib": -1}, "leave_mib must be in"),
        ({"leave_mib": 20_000}, "leave_mib must be in"),
        ({"max_gib": 0}, "max_gib must be in"),
        ({"max_gib": 4096}, "max_gib must be in"),
        ({"size_mib": 5}, "disk-full"),  # an unknown option
    ],
)
def test_disk_full_bounds(lab: inv_mod.Inventory, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError, match=message) as err:
        faults.make("disk-full", lab, "db1", **options)
    assert "\n" not in str(err.value)


def test_probe_output_is_parsed_and_checked() -> None:
    st = hostfaults.parse_probe(f"ext4  {5 * GIB}  {8 * GIB} {GIB} /srv/data one\n")
    assert st == hostfaults.FsState("ext4", 5 * GIB, 8 * GIB, GIB, "/srv/data one")
    assert st.free == 6 * GIB
    with pytest.raises(FaultError, match="cannot read the filesystem"):
        hostfaults.parse_probe("df: /x: No such file or directory")


# ---------------------------------------------------------------- disk-full: refusals
def _state(
    fstype: str = "ext4", free_gib: float = 7, size_gib: float = 8, mount: str = "/srv"
) -> Any:
    return hostfaults.FsState(fstype, int(free_gib * GIB), int(size_gib * GIB), 0, mount)


def test_refuses_the_lab_overlay_that_is_the_controllers_disk(lab: inv_mod.Inventory) -> None:
    f = faults.make("disk-full", lab, "web1")
    why = f.refusal(_state("overlay", 70, 250, "/"))
    assert why is not None and "/tmp on web1 is on /, a overlay filesystem" in why
    assert "controller's own disk" in why


def test_refuses_what_is_not_a_data_filesystem(real: inv_mod.Inventory) -> None:
    f = faults.make("disk-full", real, "app1")
    why = f.refusal(_state("tmpfs", 1, 2, "/tmp"))
    assert why is not None and "a tmpfs filesystem, not a data filesystem" in why
    assert "controller" not in why  # real hosts: no lab hint


def test_refuses_a_fill_over_the_cap_saying_how_much_it_needs(lab: inv_mod.Inventory) -> None:
    f = faults.make("disk-full", lab, "db1", max_gib=4)
    why = f.refusal(_state(free_gib=7, mount="/var/lib/postgresql"))
    assert why is not None
    assert "would need 6.98 GiB, more than max_gib=4" in why and "8.00 GiB" in why
    assert f.refusal(_state(free_gib=3)) is None


def test_refuses_when_there_is_nothing_to_fill(lab: inv_mod.Inventory) -> None:
    f = faults.make("disk-full", lab, "db1", leave_mib=100)
    why = f.refusal(hostfaults.FsState("ext4", 80 * MIB, 8 * GIB, 0, "/var/lib/postgresql"))
    assert why is not None and "80 MiB free, not more than leave_mib=100" in why
    # A file of an earlier fill counts as free: it is replaced, not added to.
    assert f.refusal(hostfaults.FsState("ext4", 16 * MIB, 8 * GIB, GIB, "/v")) is None


def test_a_refusal_comes_before_the_journal(
    tmp_path: Path, lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh_ = fake(monkeypatch, [(PROBE_MARK, "overlay 75000000000 250000000000 0 /")])
    run = Run.start("web-node-failure", "drill", {"mode": "drill"})
    p = procedure.Procedure("web-node-failure", lab, "drill", run, result_dir=str(tmp_path))
    p.preflight_report = preflight.Report([])
    with pytest.raises(FaultError, match=r"^disk-full refused: /tmp on web1 is on /") as err:
        p.inject(faults.make("disk-full", lab, "web1"))
    assert "\n" not in str(err.value)
    assert not journal.Journal(tmp_path).exists()  # nothing journaled, nothing injected
    assert not any(FILL_MARK in c for c in ssh_.commands)


# ---------------------------------------------------------------- disk-full: commands
def test_inject_arms_the_timer_then_fills_to_the_bound(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh_ = fake(
        monkeypatch, [(PROBE_MARK, PROBE_DB), (FILL_MARK, f"{7 * GIB - 16 * MIB} {16 * MIB}\n")]
    )
    f = faults.make("disk-full", lab, "db2", max_s=300)
    f.inject()
    probe, fill = ssh_.commands
    assert all(host == "db2" and sudo for host, _, sudo in ssh_.calls)
    assert "df --output=target -- /var/lib/postgresql/15/main/pg_wal" in probe
    file = "/var/lib/postgresql/.faultbook-disk-full"
    assert fill.index("systemd-run --quiet --unit=faultbook-revert-diskfull --on-active=300s") < (
        fill.index(FILL_MARK)
    )
    assert f"/bin/sh -c 'rm -f {file}'" in fill
    assert f'fallocate -l "$n" {file}' in fill
    assert f"n=$((a - {16 * MIB}))" in fill and f'"$n" -gt {16 * GIB}' in fill
    assert "/var/lib/postgresql filled with 6.98 GiB, 16 MiB left (ext4)" in f.detail
    assert f.injected_at is not None
    for script in (probe, fill, f.revert_command()):
        sh_syntax_ok(script)


def test_the_fill_refuses_on_the_host_when_space_changed(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    said = "/var/lib/postgresql would need 9000000000 bytes, more than max_gib=8"
    fake(monkeypatch, [(PROBE_MARK, PROBE_DB), (FILL_MARK, (3, "", said + "\n"))])
    f = faults.make("disk-full", lab, "db1", max_gib=8)
    with pytest.raises(FaultError, match=f"^disk-full of .* on db1: {said}$"):
        f.inject()
    assert f.injected_at is None


def test_revert_disarms_the_timer_and_deletes_the_file(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh_ = fake(monkeypatch, [(PROBE_MARK, PROBE_DB), (FILL_MARK, "1 1"), ("rm -f", "")])
    f = faults.make("disk-full", lab, "backup1")
    f.inject()
    f.revert()
    f.revert()  # twice: one revert
    (revert,) = [c for c in ssh_.commands if c.endswith('rm -f "$f"')]
    assert revert.startswith("systemctl stop faultbook-revert-diskfull.timer >/dev/null")
    assert "df --output=target -- /var/lib/pgbackrest" in revert and revert.endswith('rm -f "$f"')
    assert f.reverted_at is not None


# ---------------------------------------------------------------- disk-full: journal
def test_disk_full_round_trip_through_the_journal_and_the_runners_rollback(
    tmp_path: Path, lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injected by a drill whose notebook then died: faultbook run's rollback rebuilds the
    fault from the journal alone, finds the file, deletes it and records it."""
    full = {"on": False}

    def fill(cmd: str) -> str:
        full["on"] = True
        return f"{GIB} {16 * MIB}"

    def delete(cmd: str) -> str:
        full["on"] = False
        return ""

    ssh_ = fake(
        monkeypatch,
        [
            (PROBE_MARK, PROBE_DB),
            (FILL_MARK, fill),
            ('rm -f "$f"', delete),
            ("echo full; fi", lambda c: "full\n" if full["on"] else ""),
            ("faultbook-revert-diskfull.timer >/dev/null 2>&1 || true", ""),  # disarm
        ],
    )
    run = Run.start("web-node-failure", "drill", {"mode": "drill"})
    p = procedure.Procedure("web-node-failure", lab, "drill", run, result_dir=str(tmp_path))
    p.preflight_report = preflight.Report([])
    p.inject(faults.make("disk-full", lab, "db3", leave_mib=32, max_gib=8))
    (rec, _) = [json.loads(x) for x in (tmp_path / "faults.jsonl").read_text().splitlines()]
    assert rec["kind"] == "disk-full" and rec["lab"] is False
    assert rec["options"] == {
        "max_s": 600.0,
        "path": "/var/lib/postgresql/15/main/pg_wal",
        "leave_mib": 32,
        "max_gib": 8,
    }
    rebuilt = journal.rebuild(journal.Journal(tmp_path).entries()[0])
    assert isinstance(rebuilt, hostfaults.DiskFull) and rebuilt.spec() == p.fault.spec()  # type: ignore[union-attr]

    steady = {"ok": True, "detail": "steady state: fake", "problems": [], "primary": "db1"}
    rb = rollback.rollback(tmp_path, ended_badly=True, steady=lambda e: steady, repair=lambda e: [])
    assert rb is not None and not full["on"]
    (item,) = rb["faults"]
    assert (item["kind"], item["target"], item["outcome"], item["by"]) == (
        "disk-full",
        "db3",
        "reverted",
        "runner",
    )
    assert item["detail"].endswith(".faultbook-disk-full deleted")
    r = Run.start("web-node-failure", "drill", {})
    r.finish()
    r.save(tmp_path)
    rollback.record(tmp_path / "result.json", rb)
    assert validate(json.loads((tmp_path / "result.json").read_text())) == []
    # Asked again, the fault is gone: "already reverted", its timer disarmed.
    again = journal.rebuild(journal.Journal(tmp_path).entries()[0])
    n = len(ssh_.calls)
    assert again.rollback()[0] == "already reverted"
    assert "faultbook-revert-diskfull.timer" in ssh_.commands[n + 1]


# ---------------------------------------------------------------- clock-skew: options
@pytest.mark.parametrize("offset", [0, 301, -301, 1.5, True, "60"])
def test_clock_skew_offset_is_bounded(real: inv_mod.Inventory, offset: Any) -> None:
    with pytest.raises(ParameterError, match=r"1 <= \|offset_s\| <= 300"):
        faults.make("clock-skew", real, "pg1", offset_s=offset)


def test_clock_skew_accepts_either_direction_up_to_the_cap(real: inv_mod.Inventory) -> None:
    assert faults.make("clock-skew", real, "pg1", offset_s=-300).describe() == (
        "clock-skew -300 s of pg1"
    )
    f = faults.make("clock-skew", real, "pg1", offset_s=120.0)  # a whole float is fine
    assert f.spec() == {"max_s": 600.0, "offset_s": 120, "unit": ""}


def test_a_whole_host_clock_skew_is_refused_in_the_lab(lab: inv_mod.Inventory) -> None:
    with pytest.raises(UsageError, match="cannot be real in the lab") as err:
        faults.make("clock-skew", lab, "db1")
    assert "CAP_SYS_TIME" in str(err.value) and "\n" not in str(err.value)
    f = faults.make("clock-skew", lab, "web1", unit="ledger.service", offset_s=-90)
    assert f.describe() == "clock-skew -90 s of ledger.service on web1" and not f.lab_side


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        ("ledger", "systemd unit name"),
        ("ledger.service; reboot", "systemd unit name"),
        ("prometheus.service", "Go program"),
        ("prometheus-node-exporter.service", "Go program"),
    ],
)
def test_clock_skew_unit_is_checked(real: inv_mod.Inventory, unit: str, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        faults.make("clock-skew", real, "pg1", unit=unit)


# ---------------------------------------------------------------- clock-skew: commands
def test_host_clock_skew_stops_time_sync_steps_the_clock_and_arms_the_undo(
    real: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh_ = fake(monkeypatch, [("date -s", "1796600000.000000000\n")])
    f = faults.make("clock-skew", real, "pg1", offset_s=-120, max_s=900)
    f.inject()
    ((host, cmd, sudo),) = ssh_.calls
    assert host == "pg1" and sudo
    state = hostfaults.CLOCK_STATE
    assert cmd.index('echo "-120$u" > "$s"') < cmd.index("systemd-run")
    assert cmd.index("systemd-run --quiet --unit=faultbook-revert-clock --on-active=900s") < (
        cmd.index("systemctl stop $u")
    )
    assert "systemd-timesyncd.service chrony.service" in cmd and f"s={state}" in cmd
    assert "ns=$((ns + $o * 1000000000))" in cmd and "o=-120" in cmd
    assert "from the controller's clock" in f.detail
    sh_syntax_ok(cmd)
    sh_syntax_ok(hostfaults.CLOCK_UNDO)


def test_host_clock_skew_refuses_a_second_skew(
    real: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake(
        monkeypatch,
        [("date -s", (3, "", "a clock skew is already in effect (60 chrony.service)\n"))],
    )
    with pytest.raises(FaultError, match=r"clock-skew \+30 s of pg1: a clock skew is already"):
        faults.make("clock-skew", real, "pg1", offset_s=30).inject()


def test_host_clock_skew_revert_and_rollback(
    real: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    skewed = {"on": True}

    def undo(cmd: str) -> str:
        skewed["on"] = False
        return ""

    ssh_ = fake(
        monkeypatch,
        [
            ('mv "$s" "$s.undo"', undo),
            ("echo skewed", lambda c: "skewed\n" if skewed["on"] else ""),
            ("faultbook-revert-clock.timer", ""),
        ],
    )
    f = faults.make("clock-skew", real, "pg1", offset_s=45)
    assert f.rollback() == (
        "reverted",
        "clock-skew +45 s of pg1: clock stepped back, time synchronisation started again",
    )
    revert = ssh_.commands[1]
    assert revert.startswith("systemctl stop faultbook-revert-clock.timer")
    assert revert.endswith(hostfaults.CLOCK_UNDO)
    assert f"[ -e {hostfaults.CLOCK_STATE} ]" in ssh_.commands[0]
    assert f.rollback()[0] == "already reverted"


def test_unit_clock_skew_uses_libfaketime_through_a_runtime_dropin(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh_ = fake(monkeypatch, [("libfaketime", ""), ("systemctl restart ledger.service", "")])
    f = faults.make("clock-skew", lab, "web2", unit="ledger.service", offset_s=-90)
    f.inject()
    f.revert()
    inject, revert = ssh_.commands
    dropin = "/run/systemd/system/ledger.service.d/faultbook-clock-skew.conf"
    assert f.dropin == dropin
    assert '\\"FAKETIME=-90\\"' in inject and '\\"DONT_FAKE_MONOTONIC=1\\"' in inject
    assert "LD_PRELOAD=$lib" in inject and f"> {dropin}" in inject
    assert inject.index("systemd-run") < inject.index("systemctl restart ledger.service")
    # a unit that dies under libfaketime is reverted and the fault refused
    settle = inject[inject.index("sleep 3; if ! systemctl is-active -q ledger.service") :]
    assert f"rm -f {dropin}" in settle and "exit 3" in settle
    assert revert.startswith("systemctl stop faultbook-revert-clock.timer")
    assert (
        f"rm -f {dropin}; systemctl daemon-reload; systemctl reset-failed ledger.service "
        "2>/dev/null; systemctl restart ledger.service" in revert
    )
    assert f.detail == "clock-skew -90 s of ledger.service on web2: restarted with FAKETIME=-90"
    sh_syntax_ok(inject)
    sh_syntax_ok(revert)


def test_unit_clock_skew_says_when_libfaketime_is_missing(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    said = "libfaketime is not installed on this host (Debian package faketime)"
    fake(monkeypatch, [("libfaketime", (3, "", said + "\n"))])
    f = faults.make("clock-skew", lab, "db2", unit="postgresql@15-main.service")
    with pytest.raises(FaultError) as err:
        f.inject()
    assert str(err.value) == f"clock-skew +120 s of postgresql@15-main.service on db2: {said}"


def test_clock_skew_round_trip_through_the_journal(tmp_path: Path, real: inv_mod.Inventory) -> None:
    j = journal.Journal(tmp_path)
    f = faults.make("clock-skew", real, "pg1", offset_s=-30, max_s=120)
    e = j.intent(f)
    g = journal.rebuild(j.entries()[0])
    assert isinstance(g, hostfaults.ClockSkew) and g.spec() == f.spec() and g.offset_s == -30
    assert e.lab is False and e.max_s == 120
