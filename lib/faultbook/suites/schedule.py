"""Schedules on the machine's own scheduler: systemd timers, else Debian's cron.

``faultbook schedule add SUITE --cron "0 3 * * *"`` writes, where PID 1 is systemd
(``/run/systemd/system`` exists), ``faultbook-schedule-NAME.timer`` and ``.service``
in /etc/systemd/system (the cron expression converted to ``OnCalendar=``, checked
with ``systemd-analyze calendar`` when it is there) and enables the timer;
otherwise ``/etc/cron.d/faultbook-NAME``, after making sure cron is installed
(apt) and running (``ensure_cron``). There is no scheduling loop of faultbook's
own. Each run is::

    cd REPO && FAULTBOOK_HOME=… FAULTBOOK_TRIGGER=schedule:NAME \\
        PYTHON -m faultbook.cli suite run SUITE -i INVENTORY \\
        --out $FAULTBOOK_HOME/schedules/NAME/last

so a run that finds the inventory locked or the stack out of steady state is
recorded as skipped by the suite itself, never queued. A missed run is not
caught up (``Persistent=false``; cron does not either).

Cron expressions: five fields (minute 0-59, hour 0-23, day of month 1-31, month
1-12 or jan-dec, day of week 0-7 or sun-sat, 0 and 7 both Sunday), each ``*``,
``N``, ``A-B``, ``*/S``, ``A-B/S`` or a comma list of those; or one of @hourly,
@daily, @midnight, @weekly, @monthly, @yearly, @annually. As in cron, when both
day fields are restricted a day matching either runs; a timer gets one
``OnCalendar=`` per day field then, since systemd needs both to match.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faultbook.errors import ConfigError, ScheduleError
from faultbook.paths import REPO_ROOT, faultbook_home
from faultbook.results import utcnow

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
MARK = "# faultbook schedule: "
FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
SYSTEMD_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # systemd's order
MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


# ------------------------------------------------------------------ cron
@dataclass(frozen=True)
class Cron:
    expr: str  # as given
    fields: tuple[str, ...]  # the five fields (a macro expanded)
    values: tuple[frozenset[int] | None, ...]  # None: "*" (every value)

    @property
    def line(self) -> str:
        return " ".join(self.fields)


def _number(token: str, field: int) -> int:
    name, lo, hi = FIELDS[field]
    names = MONTHS if field == 3 else DAYS if field == 4 else ()
    t = token.lower()
    if t in names:
        return names.index(t) + (1 if field == 3 else 0)
    if not t.isdigit():
        raise ValueError(f"{name} {token!r} is not a number{' or a name' if names else ''}")
    n = int(t)
    if not lo <= n <= hi:
        raise ValueError(f"{name} {n} is out of range {lo}-{hi}")
    return n


def _field(text: str, field: int) -> frozenset[int] | None:
    name, lo, hi = FIELDS[field]
    if text == "*":
        return None
    out: set[int] = set()
    for part in text.split(","):
        rng, _, step_s = part.partition("/")
        step = 1
        if step_s:
            if not step_s.isdigit() or int(step_s) < 1:
                raise ValueError(f"{name} step {step_s!r} must be a whole number >= 1")
            step = int(step_s)
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            a_s, b_s = rng.split("-", 1)
            a, b = _number(a_s, field), _number(b_s, field)
            if a > b:
                raise ValueError(f"{name} range {rng!r} runs backwards")
        elif rng:
            a = _number(rng, field)
            b = hi if step_s else a
        else:
            raise ValueError(f"{name} has an empty item in {text!r}")
        out.update(range(a, b + 1, step))
    if field == 4 and 7 in out:  # 7 is Sunday too
        out = (out - {7}) | {0}
    return frozenset(out)


def parse_cron(expr: str) -> Cron:
    """Check a cron expression; ScheduleError naming the field and the rule otherwise."""
    text = " ".join(str(expr).split())
    fields = MACROS.get(text.lower(), text).split(" ")
    if len(fields) != 5:
        raise ScheduleError(
            f"--cron {expr!r}: expected 5 fields (minute hour day-of-month month day-of-week) "
            f"or @hourly/@daily/@weekly/@monthly/@yearly, got {len(fields) if text else 0}"
        )
    try:
        values = tuple(_field(f, i) for i, f in enumerate(fields))
    except ValueError as exc:
        raise ScheduleError(f"--cron {expr!r}: {exc}") from None
    return Cron(str(expr), tuple(fields), values)


def _runs(values: Sequence[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in sorted(values):
        if out and v == out[-1][1] + 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


def _calendar_field(values: frozenset[int] | None, width: int = 2) -> str:
    if values is None:
        return "*"
    parts = []
    for a, b in _runs(sorted(values)):
        fa, fb = f"{a:0{width}d}", f"{b:0{width}d}"
        parts.append(fa if a == b else f"{fa}..{fb}")
    return ",".join(parts)


def _calendar_days(values: frozenset[int]) -> str:
    order = sorted((d - 1) % 7 for d in values)  # cron 1=Mon..6=Sat,0=Sun → 0..6 Mon..Sun
    parts = []
    for a, b in _runs(order):
        parts.append(SYSTEMD_DAYS[a] if a == b else f"{SYSTEMD_DAYS[a]}..{SYSTEMD_DAYS[b]}")
    return ",".join(parts)


def on_calendar(cron: Cron) -> list[str]:
    """systemd ``OnCalendar=`` expressions that fire when CRON does (two when both day
    fields are restricted: cron runs on either, systemd needs both)."""
    minute, hour, dom, month, dow = cron.values
    clock = f"{_calendar_field(hour)}:{_calendar_field(minute)}:00"
    date = f"*-{_calendar_field(month)}"

    def one(days: frozenset[int] | None, mday: frozenset[int] | None) -> str:
        prefix = f"{_calendar_days(days)} " if days is not None else ""
        return f"{prefix}{date}-{_calendar_field(mday)} {clock}"

    if dom is not None and dow is not None:
        return [one(None, dom), one(dow, None)]
    return [one(dow, dom)]


def check_calendar(
    exprs: Sequence[str], run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run
) -> None:
    """``systemd-analyze calendar`` accepts each expression (skipped when it is absent)."""
    if shutil.which("systemd-analyze") is None:
        return
    for e in exprs:
        r = run(["systemd-analyze", "calendar", e], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            why = (r.stderr or r.stdout).strip().splitlines()
            raise ScheduleError(f"OnCalendar={e!r}: {why[-1] if why else 'refused'}")


# --------------------------------------------------------------- schedules
@dataclass(frozen=True)
class Schedule:
    name: str
    suite: str
    cron: str
    inventory: str
    backend: str = ""  # "systemd" or "cron"
    files: tuple[str, ...] = ()
    created: str = ""

    def meta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "suite": self.suite,
            "cron": self.cron,
            "inventory": self.inventory,
            "created": self.created,
        }


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise ScheduleError(
            f"schedule name {name!r}: expected lower-case letters, digits, - and _ "
            "(at most 48, starting with a letter or digit)"
        )
    return name


def command(s: Schedule, home: Path, python: str = sys.executable) -> str:
    """The shell command a scheduler runs for S (cd to the repository, the trigger set)."""
    out = home / "schedules" / s.name / "last"
    argv = [python, "-m", "faultbook.cli", "suite", "run", s.suite, "-i", s.inventory]
    argv += ["--out", str(out)]
    env = f"FAULTBOOK_HOME={shlex.quote(str(home))} FAULTBOOK_TRIGGER=schedule:{s.name}"
    return f"cd {shlex.quote(str(REPO_ROOT))} && {env} {' '.join(shlex.quote(a) for a in argv)}"


def cron_file(s: Schedule, home: Path, python: str = sys.executable) -> str:
    """/etc/cron.d/faultbook-NAME for S (cron's % escaped; output to a log per schedule)."""
    cron = parse_cron(s.cron)
    log = shlex.quote(str(home / "schedules" / f"{s.name}.log"))
    cmd = command(s, home, python).replace("%", "\\%")
    return (
        f"{MARK}{json.dumps(s.meta())}\n"
        f"# Written by `faultbook schedule add`; `faultbook schedule remove {s.name}` removes it.\n"
        "SHELL=/bin/sh\n"
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"{cron.line} root {cmd} >> {log} 2>&1\n"
    )


def timer_units(s: Schedule, home: Path, python: str = sys.executable) -> dict[str, str]:
    """{unit file name: text}: the timer and its oneshot service for S."""
    unit = f"faultbook-schedule-{s.name}"
    calendars = on_calendar(parse_cron(s.cron))
    what = f"faultbook schedule {s.name}: suite {s.suite} on inventory {s.inventory}"
    out = home / "schedules" / s.name / "last"
    argv = [python, "-m", "faultbook.cli", "suite", "run", s.suite, "-i", s.inventory]
    argv += ["--out", str(out)]
    service = (
        f"{MARK}{json.dumps(s.meta())}\n"
        f"[Unit]\nDescription={what}\n\n"
        "[Service]\nType=oneshot\n"
        f"WorkingDirectory={REPO_ROOT}\n"
        f'Environment="FAULTBOOK_HOME={home}" "FAULTBOOK_TRIGGER=schedule:{s.name}"\n'
        f"ExecStart={' '.join(shlex.quote(a) for a in argv)}\n"
        "# 75: the inventory was busy; the suite recorded the run as skipped\n"
        "SuccessExitStatus=75\n"
    )
    timer = (
        f"{MARK}{json.dumps(s.meta())}\n"
        f"[Unit]\nDescription={what} (cron {s.cron})\n\n[Timer]\n"
        + "".join(f"OnCalendar={c}\n" for c in calendars)
        + "AccuracySec=1s\n# a missed run is not caught up: runs never pile up\nPersistent=false\n"
        + f"Unit={unit}.service\n\n[Install]\nWantedBy=timers.target\n"
    )
    return {f"{unit}.service": service, f"{unit}.timer": timer}


Runner = Callable[..., subprocess.CompletedProcess[str]]


def _run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kw)


@dataclass
class Scheduler:
    """The machine's scheduler, with everything it touches injectable for tests."""

    root: Path = Path("/")
    run: Runner = _run
    which: Callable[[str], str | None] = shutil.which
    python: str = sys.executable

    @property
    def systemd(self) -> bool:
        return (self.root / "run/systemd/system").is_dir()

    @property
    def cron_dir(self) -> Path:
        return self.root / "etc/cron.d"

    @property
    def unit_dir(self) -> Path:
        return self.root / "etc/systemd/system"

    def _must(self, argv: list[str]) -> None:
        r = self.run(argv)
        if r.returncode != 0:
            why = (r.stderr or r.stdout or "").strip().splitlines()
            raise ConfigError(
                f"{' '.join(argv)} failed (rc={r.returncode}): {why[-1] if why else ''}"
            )

    def schedules(self) -> list[Schedule]:
        found: dict[str, Schedule] = {}
        for backend, pattern, d in (
            ("cron", "faultbook-*", self.cron_dir),
            ("systemd", "faultbook-schedule-*.timer", self.unit_dir),
        ):
            for f in sorted(d.glob(pattern)) if d.is_dir() else []:
                meta = _meta(f)
                if meta is None or meta.get("name") in found:
                    continue
                files = [str(f)]
                if backend == "systemd":
                    files.append(str(f.with_suffix(".service")))
                found[meta["name"]] = Schedule(
                    str(meta["name"]),
                    str(meta.get("suite")),
                    str(meta.get("cron")),
                    str(meta.get("inventory")),
                    backend,
                    tuple(files),
                    str(meta.get("created", "")),
                )
        return sorted(found.values(), key=lambda s: s.name)

    def add(self, s: Schedule, home: Path | None = None) -> Schedule:
        check_name(s.name)
        if any(x.name == s.name for x in self.schedules()):
            raise ScheduleError(
                f"schedule {s.name!r} exists; `faultbook schedule remove {s.name}` first"
            )
        home = home or faultbook_home(create=True)
        (home / "schedules").mkdir(parents=True, exist_ok=True)
        s = dataclasses.replace(s, cron=parse_cron(s.cron).expr, created=utcnow())
        if self.systemd:
            units = timer_units(s, home, self.python)
            check_calendar(on_calendar(parse_cron(s.cron)), self.run)
            self.unit_dir.mkdir(parents=True, exist_ok=True)
            for name, text in units.items():
                _write(self.unit_dir / name, text)
            self._must(["systemctl", "daemon-reload"])
            self._must(["systemctl", "enable", "--now", f"faultbook-schedule-{s.name}.timer"])
            files = tuple(str(self.unit_dir / n) for n in units)
            return dataclasses.replace(s, backend="systemd", files=files)
        text = cron_file(s, home, self.python)
        self.ensure_cron()
        self.cron_dir.mkdir(parents=True, exist_ok=True)
        path = self.cron_dir / f"faultbook-{s.name}"
        _write(path, text)
        return dataclasses.replace(s, backend="cron", files=(str(path),))

    def remove(self, name: str) -> Schedule:
        check_name(name)
        found = next((s for s in self.schedules() if s.name == name), None)
        if found is None:
            known = ", ".join(s.name for s in self.schedules()) or "none"
            raise ScheduleError(f"no schedule {name!r}; schedules: {known}")
        if found.backend == "systemd":
            self._must(["systemctl", "disable", "--now", f"faultbook-schedule-{name}.timer"])
        for f in found.files:
            Path(f).unlink(missing_ok=True)
        if found.backend == "systemd":
            self._must(["systemctl", "daemon-reload"])
        return found

    # ---------------------------------------------------------------- cron
    def cron_pids(self) -> list[int]:
        """The pids of running cron daemons (from /proc)."""
        pids = []
        for comm in (self.root / "proc").glob("[0-9]*/comm"):
            try:
                if comm.read_text().strip() != "cron":
                    continue
                stat = comm.with_name("stat")
                if stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] in "ZX":
                    continue  # a zombie (or dead) cron is not a running one
                pids.append(int(comm.parent.name))
            except (OSError, IndexError):
                continue
        return sorted(pids)

    def ensure_cron(self, wait_s: float = 5.0) -> str:
        """cron installed (apt-get) and running (started when no cron process runs, its
        pid file written); returns what was done, in one line."""
        done = []
        if self.which("cron") is None:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "cron"]
            if self.run(install, env=env).returncode != 0:
                self._must(["apt-get", "update", "-q"])
                r = self.run(install, env=env)
                if r.returncode != 0:
                    why = (r.stderr or r.stdout or "").strip().splitlines()
                    raise ConfigError(
                        f"cron is not installed and apt-get cannot install it: "
                        f"{why[-1] if why else r.returncode}"
                    )
            done.append("installed cron")
        pids = self.cron_pids()
        if not pids:
            self._must([self.which("cron") or "cron"])
            deadline = time.monotonic() + wait_s
            while not (pids := self.cron_pids()) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not pids:
                raise ConfigError("cron was started but no cron process runs")
            done.append(f"started cron (pid {pids[0]})")
        pidfile = self.root / "run/crond.pid"
        try:
            current = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            current = None
        if current not in pids:
            pidfile.parent.mkdir(parents=True, exist_ok=True)
            pidfile.write_text(f"{pids[0]}\n")
            done.append(f"wrote {pidfile}")
        return "; ".join(done) or f"cron runs (pid {pids[0]})"


def _meta(path: Path) -> dict[str, Any] | None:
    try:
        first = path.read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    if not first.startswith(MARK):
        return None
    try:
        meta = json.loads(first[len(MARK) :])
    except ValueError:
        return None
    return meta if isinstance(meta, dict) and "name" in meta else None


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")  # cron ignores names with dots
    tmp.write_text(text)
    tmp.chmod(0o644)
    os.replace(tmp, path)
