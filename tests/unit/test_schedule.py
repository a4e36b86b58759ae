"""Schedules: cron expressions checked, converted to OnCalendar=, timer units and cron lines
written, cron installed and started with the commands injected."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from faultbook.cli import main
from faultbook.errors import ConfigError, ScheduleError
from faultbook.suites import schedule
from faultbook.suites.schedule import Schedule, Scheduler


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("FAULTBOOK_HOME", str(h))
    return h


@pytest.mark.parametrize(
    ("expr", "calendars"),
    [
        ("0 3 * * *", ["*-*-* 03:00:00"]),
        ("*/15 * * * *", ["*-*-* *:00,15,30,45:00"]),
        ("30 8-18/2 * * mon-fri", ["Mon..Fri *-*-* 08,10,12,14,16,18:30:00"]),
        ("5 4 1 jan,jul *", ["*-01,07-01 04:05:00"]),
        ("0 0 * * 0", ["Sun *-*-* 00:00:00"]),
        ("0 0 * * 7", ["Sun *-*-* 00:00:00"]),
        ("0 0 * * 5-7", ["Fri..Sun *-*-* 00:00:00"]),
        ("0 12 1-7 * 1", ["*-*-01..07 12:00:00", "Mon *-*-* 12:00:00"]),
        ("@daily", ["*-*-* 00:00:00"]),
        ("@hourly", ["*-*-* *:00:00"]),
        ("0-5,30 1,2,3 * * *", ["*-*-* 01..03:00..05,30:00"]),
    ],
)
def test_cron_to_on_calendar(expr: str, calendars: list[str]) -> None:
    assert schedule.on_calendar(schedule.parse_cron(expr)) == calendars


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_accepts_the_conversions() -> None:
    for expr in ("0 3 * * *", "*/15 * * * *", "30 8-18/2 * * mon-fri", "0 12 1-7 * 1"):
        schedule.check_calendar(schedule.on_calendar(schedule.parse_cron(expr)))


def test_the_conversion_fires_when_cron_would() -> None:
    """Every minute of a week: the OnCalendar fields (as parsed back) match cron's."""
    from datetime import UTC, datetime, timedelta

    def cal_match(cal: str, t: datetime) -> bool:
        parts = cal.split(" ")
        days = parts[0] if len(parts) == 3 else "*"
        date, clock = parts[-2], parts[-1]
        _, month, mday = date.split("-")
        hour, minute, _ = clock.split(":")

        def ok(spec: str, v: int, names: tuple[str, ...] = ()) -> bool:
            if spec == "*":
                return True
            for item in spec.split(","):
                a, _, b = item.partition("..")
                lo = names.index(a) if names else int(a)
                hi = (names.index(b) if names else int(b)) if b else lo
                if lo <= v <= hi:
                    return True
            return False

        return (
            ok(days, t.weekday(), schedule.SYSTEMD_DAYS)
            and ok(month, t.month)
            and ok(mday, t.day)
            and ok(hour, t.hour)
            and ok(minute, t.minute)
        )

    def cron_match(c: schedule.Cron, t: datetime) -> bool:
        m, h, dom, mon, dow = c.values
        day_ok = (dom is None or t.day in dom) or (dow is not None and (t.weekday() + 1) % 7 in dow)
        if dom is None or dow is None:
            day_ok = (dom is None or t.day in dom) and (dow is None or (t.weekday() + 1) % 7 in dow)
        return (
            (m is None or t.minute in m)
            and (h is None or t.hour in h)
            and (mon is None or t.month in mon)
            and day_ok
        )

    for expr in ("*/20 */7 * * *", "0 12 1-7 * 1", "15 3 * * sat,sun", "0 0 31 * *"):
        c = schedule.parse_cron(expr)
        cals = schedule.on_calendar(c)
        t = datetime(2026, 3, 1, tzinfo=UTC)
        for _ in range(60 * 24 * 9):
            assert cron_match(c, t) == any(cal_match(x, t) for x in cals), (expr, t)
            t += timedelta(minutes=1)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("0 3 * *", "expected 5 fields (minute hour day-of-month month day-of-week)"),
        ("61 * * * *", "minute 61 is out of range 0-59"),
        ("0 24 * * *", "hour 24 is out of range 0-23"),
        ("0 0 0 * *", "day of month 0 is out of range 1-31"),
        ("0 0 * 13 *", "month 13 is out of range 1-12"),
        ("0 0 * * 8", "day of week 8 is out of range 0-7"),
        ("*/0 * * * *", "minute step '0' must be a whole number >= 1"),
        ("5-1 * * * *", "minute range '5-1' runs backwards"),
        ("0 0 * * funday", "day of week 'funday' is not a number or a name"),
        ("x * * * *", "minute 'x' is not a number"),
        ("1,,2 * * * *", "minute has an empty item"),
        ("@sometimes", "expected 5 fields"),
    ],
)
def test_bad_cron_expressions_are_one_line(expr: str, message: str) -> None:
    with pytest.raises(ScheduleError) as err:
        schedule.parse_cron(expr)
    assert message in str(err.value) and str(err.value).startswith(f"--cron {expr!r}: ")


def _sched(tmp_path: Path, systemd: bool, calls: list[list[str]] | None = None) -> Scheduler:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    if systemd:
        (root / "run/systemd/system").mkdir(parents=True)
    log = calls if calls is not None else []

    def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        log.append(argv)
        if argv[0] == "/usr/sbin/cron":  # the daemon starts: a process appears in /proc
            (root / "proc/4242").mkdir()
            (root / "proc/4242/comm").write_text("cron\n")
        return subprocess.CompletedProcess(argv, 0, "", "")

    return Scheduler(root=root, run=run, which=lambda n: f"/usr/sbin/{n}", python="/venv/python")


def test_a_timer_where_systemd_runs(tmp_path: Path, home: Path) -> None:
    calls: list[list[str]] = []
    s = _sched(tmp_path, systemd=True, calls=calls)
    done = s.add(Schedule("nightly", "nightly", "0 12 1-7 * 1", "lab"))
    assert done.backend == "systemd"
    unit = s.unit_dir / "faultbook-schedule-nightly.timer"
    text = unit.read_text()
    assert "OnCalendar=*-*-01..07 12:00:00\nOnCalendar=Mon *-*-* 12:00:00\n" in text
    assert "Persistent=false" in text and "WantedBy=timers.target" in text
    service = (s.unit_dir / "faultbook-schedule-nightly.service").read_text()
    assert "Type=oneshot" in service
    assert f'Environment="FAULTBOOK_HOME={home}" "FAULTBOOK_TRIGGER=schedule:nightly"' in service
    assert "ExecStart=/venv/python -m faultbook.cli suite run nightly -i lab --out " in service
    assert "SuccessExitStatus=75" in service
    assert ["systemctl", "enable", "--now", "faultbook-schedule-nightly.timer"] in calls
    assert not any("apt-get" in c[0] for c in calls)
    (listed,) = s.schedules()
    assert (listed.name, listed.suite, listed.cron, listed.backend) == (
        "nightly",
        "nightly",
        "0 12 1-7 * 1",
        "systemd",
    )
    s.remove("nightly")
    assert not unit.exists() and s.schedules() == []
    assert ["systemctl", "disable", "--now", "faultbook-schedule-nightly.timer"] in calls


def test_a_cron_file_otherwise_and_cron_is_installed_and_started(
    tmp_path: Path, home: Path
) -> None:
    calls: list[list[str]] = []
    s = _sched(tmp_path, systemd=False, calls=calls)
    s.which = lambda n: (
        None if n == "cron" and not any("install" in c for c in calls) else "/usr/sbin/cron"
    )
    done = s.add(Schedule("smoke-lab", "smoke", "*/30 8-18 * * mon-fri", "lab"))
    assert done.backend == "cron"
    path = s.cron_dir / "faultbook-smoke-lab"
    lines = path.read_text().splitlines()
    assert lines[0].startswith('# faultbook schedule: {"name": "smoke-lab"')
    assert "SHELL=/bin/sh" in lines
    job = lines[-1]
    assert job.startswith("*/30 8-18 * * mon-fri root cd ")
    assert "FAULTBOOK_TRIGGER=schedule:smoke-lab /venv/python -m faultbook.cli suite run" in job
    assert (
        f" -i lab --out {home}/schedules/smoke-lab/last >> {home}/schedules/smoke-lab.log 2>&1"
        in job
    )
    assert path.stat().st_mode & 0o777 == 0o644
    assert calls[0][:3] == ["apt-get", "install", "-y"] and ["/usr/sbin/cron"] in calls
    assert (s.root / "run/crond.pid").read_text() == "4242\n"
    assert [x.name for x in s.schedules()] == ["smoke-lab"]
    with pytest.raises(ScheduleError, match="schedule 'smoke-lab' exists"):
        s.add(Schedule("smoke-lab", "smoke", "0 1 * * *", "lab"))
    s.remove("smoke-lab")
    assert not path.exists()


def test_cron_already_running_is_left_alone(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    s = _sched(tmp_path, systemd=False, calls=calls)
    (s.root / "proc/77").mkdir()
    (s.root / "proc/77/comm").write_text("cron\n")
    (s.root / "run").mkdir()
    (s.root / "run/crond.pid").write_text("77\n")
    assert s.ensure_cron() == "cron runs (pid 77)"
    assert calls == []


def test_a_zombie_cron_is_not_a_running_one(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    s = _sched(tmp_path, systemd=False, calls=calls)
    (s.root / "proc/55").mkdir()
    (s.root / "proc/55/comm").write_text("cron\n")
    (s.root / "proc/55/stat").write_text("55 (cron) Z 1 55 55 0 -1\n")
    assert s.cron_pids() == []
    assert s.ensure_cron().startswith("started cron (pid 4242)") and ["/usr/sbin/cron"] in calls


def test_apt_failing_is_one_line(tmp_path: Path) -> None:
    s = _sched(tmp_path, systemd=False)

    def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        rc = 0 if argv[:2] == ["apt-get", "update"] else 100
        return subprocess.CompletedProcess(argv, rc, "", "E: Unable to locate package cron\n")

    s.run = run
    s.which = lambda n: None
    with pytest.raises(ConfigError, match="cron is not installed and apt-get cannot install it: E"):
        s.ensure_cron()


def test_percent_signs_are_escaped_for_cron(tmp_path: Path) -> None:
    text = schedule.cron_file(Schedule("n", "smoke", "@daily", "inv%1"), tmp_path)
    assert "inv\\%1" in text.splitlines()[-1] and "0 0 * * * root" in text


@pytest.mark.parametrize("name", ["Nightly", "a.b", "", "-x", "x" * 49])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ScheduleError, match="expected lower-case letters"):
        schedule.check_name(name)


def test_remove_of_an_unknown_schedule_names_the_known(tmp_path: Path, home: Path) -> None:
    s = _sched(tmp_path, systemd=False)
    s.add(Schedule("a", "smoke", "@daily", "lab"))
    with pytest.raises(ScheduleError, match="no schedule 'b'; schedules: a"):
        s.remove("b")


def test_cli_refuses_a_bad_cron_or_suite_before_touching_the_machine(home: Path) -> None:
    cli = CliRunner()
    r = cli.invoke(main, ["schedule", "add", "smoke", "--cron", "61 * * * *"])
    assert r.exit_code == 2
    assert r.output == "faultbook: error: --cron '61 * * * *': minute 61 is out of range 0-59\n"
    r = cli.invoke(main, ["schedule", "add", "smok", "--cron", "@daily"])
    assert r.exit_code == 2 and "unknown suite 'smok'" in r.output
