"""The central logs: every host's journal as the receivers hold it, read into pandas.

Role ``journal`` ships every host's journal to every host of the inventory
group ``journal_receiver_group`` (``mon``), each of which stores one journal
directory, ``/var/log/journal/remote`` (docs/logs.md). This module asks each
receiver over SSH, in parallel::

    sudo journalctl --directory=/var/log/journal/remote -o json --all -q
         --since=@<epoch> --until=@<epoch> -n LIMIT --reverse [-p N]
         [_HOSTNAME=h ...] [_SYSTEMD_UNIT=u ...]

and merges the answers:

- every receiver that answers counts; one that does not is listed in
  ``missing`` with the reason, and only when none answers is it an error
  (``LogsError``);
- the same entry arrives from each receiver, and from one receiver twice if
  an upload was resent. journal-remote keeps the sender's boot id and both
  timestamps (only the cursor's sequence numbers differ between copies), so
  an entry is one row per (host, ``_BOOT_ID``, ``__MONOTONIC_TIMESTAMP``,
  ``__REALTIME_TIMESTAMP``, message).

The frame has one row per entry, oldest first: ``time`` (UTC), ``host``
(``_HOSTNAME``), ``unit`` (``_SYSTEMD_UNIT``, else ``_SYSTEMD_USER_UNIT``,
else ``kernel`` for kernel messages, else empty), ``identifier``
(``SYSLOG_IDENTIFIER``), ``priority`` (0-7), ``priority_name``, ``message``
(a byte array that is not UTF-8 is decoded with replacement characters).

Input a person typed is checked before anything runs: an unknown host or
group is the inventory's ``InventoryError`` listing what exists; a time, a
priority or a unit that does not parse is a ``LogQueryError`` naming what was
given and what is expected.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from faultbook import ssh
from faultbook.errors import FaultbookError, LogQueryError, LogsError, SSHError
from faultbook.inventory import Host, Inventory
from faultbook.results import Run, iso

log = logging.getLogger(__name__)

# Role journal's receiving group (defaults/main.yml) and directory (vars/main.yml).
RECEIVER_GROUP_VAR = "journal_receiver_group"
DEFAULT_RECEIVER_GROUP = "mon"
REMOTE_DIR = "/var/log/journal/remote"

PRIORITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
_PRIORITY_ALIASES = {"error": 3, "warn": 4, "panic": 0, "critical": 2}
COLUMNS = ["time", "host", "unit", "identifier", "priority", "priority_name", "message"]
DEFAULT_WINDOW = timedelta(hours=1)
DEFAULT_LIMIT = 10000
_RELATIVE = re.compile(r"^-\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hour|d|day)s?$")
_UNIT_SUFFIXES = (
    ".service", ".socket", ".scope", ".slice", ".timer", ".mount", ".target", ".path", ".swap",
    ".device", ".automount",
)  # fmt: skip
_UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\@-]+$")


# ------------------------------------------------------------------ the query
def parse_time(value: str | datetime | pd.Timestamp, now: datetime | None = None) -> datetime:
    """A window bound: ISO 8601 (UTC unless it has an offset), ``-15min``, ``-2h``, ``now``."""
    now = now or datetime.now(UTC)
    if isinstance(value, datetime):  # pd.Timestamp is one too
        ts = pd.Timestamp(value)
        return (ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)).to_pydatetime()
    text = str(value).strip()
    if text == "now":
        return now
    m = _RELATIVE.match(text)
    if m:
        n, unit = float(m.group(1)), m.group(2)[0]
        return now - timedelta(seconds=n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])
    try:
        parsed = pd.Timestamp(text)
        bad = pd.isna(parsed)
    except ValueError:
        bad = True
    if bad:
        raise LogQueryError(
            f"time {text!r} does not parse; expected ISO 8601 (2026-12-07T08:00:00Z), "
            "a relative time (-15min, -2h, -1d, -30s) or now"
        )
    return parse_time(parsed.to_pydatetime(), now)


def parse_priority(value: str | int | None) -> int | None:
    """``err``, ``3`` or None (every priority) to the journal's number: that one and worse."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if text.isdigit() and int(text) < len(PRIORITIES):
        return int(text)
    if text in PRIORITIES:
        return PRIORITIES.index(text)
    if text in _PRIORITY_ALIASES:
        return _PRIORITY_ALIASES[text]
    raise LogQueryError(
        f"priority {value!r} is not a journal priority; expected one of "
        f"{', '.join(PRIORITIES)} or 0-7"
    )


def unit_name(value: str) -> str:
    """A systemd unit as the journal names it (``ledger`` → ``ledger.service``)."""
    text = value.strip()
    if not text or not _UNIT_NAME.match(text):
        raise LogQueryError(
            f"unit {value!r} is not a systemd unit name; expected e.g. ledger.service"
        )
    return text if text.endswith(_UNIT_SUFFIXES) else f"{text}.service"


@dataclass(frozen=True)
class Query:
    """What to read: hosts (inventory names, empty: all), units, a UTC window, a priority."""

    hosts: tuple[str, ...]
    units: tuple[str, ...]
    since: datetime
    until: datetime
    priority: int | None = None
    limit: int = DEFAULT_LIMIT

    def command(self, directory: str = REMOTE_DIR) -> str:
        """The journalctl command a receiver runs (with sudo: the files are journal-remote's)."""
        argv = [
            "journalctl",
            f"--directory={directory}",
            "--output=json",
            "--all",
            "--quiet",
            "--no-pager",
            f"--since=@{self.since.timestamp():.6f}",
            f"--until=@{self.until.timestamp():.6f}",
            f"--lines={self.limit}",
            # newest first: with --since, --lines alone would keep the oldest entries
            "--reverse",
        ]
        if self.priority is not None:
            argv.append(f"--priority={self.priority}")
        argv += [f"_HOSTNAME={h}" for h in self.hosts]
        argv += [f"_SYSTEMD_UNIT={u}" for u in self.units]
        return shlex.join(argv)


def query(
    inv: Inventory,
    hosts: Iterable[str] | str | None = None,
    units: Iterable[str] | str | None = None,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    priority: str | int | None = None,
    limit: int = DEFAULT_LIMIT,
    now: datetime | None = None,
) -> Query:
    """Check a person's input and make the query; hosts and groups by inventory name."""
    now = now or datetime.now(UTC)
    hosts = [hosts] if isinstance(hosts, str) else hosts
    units = [units] if isinstance(units, str) else units
    names = tuple(h.name for h in inv.select(list(hosts))) if hosts else ()
    end = parse_time(until, now) if until not in (None, "") else now
    start = parse_time(since, now) if since not in (None, "") else end - DEFAULT_WINDOW
    if start > end:
        raise LogQueryError(
            f"--since {start:%Y-%m-%dT%H:%M:%SZ} is after --until {end:%Y-%m-%dT%H:%M:%SZ}"
        )
    if limit < 1:
        raise LogQueryError(f"limit must be at least 1, got {limit}")
    return Query(
        hosts=names,
        units=tuple(dict.fromkeys(unit_name(u) for u in units or ())),
        since=start,
        until=end,
        priority=parse_priority(priority),
        limit=limit,
    )


# ------------------------------------------------------------------ the answers
def receivers(inv: Inventory) -> list[Host]:
    """The hosts that hold the central logs (role journal's ``journal_receiver_group``)."""
    group = str(inv.vars.get(RECEIVER_GROUP_VAR, DEFAULT_RECEIVER_GROUP))
    return inv.group(group)


def _text(value: Any) -> str:
    """A journal field from ``-o json``: a string, a byte array, or a list of either."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) for b in value):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, list):  # a field given more than once: its values, one a line
        return "\n".join(_text(v) for v in value)
    return str(value)


def parse(text: str, receiver: str = "?") -> list[dict[str, Any]]:
    """``journalctl -o json`` output (one object a line) into records; a line that is
    not a JSON object raises LogsError naming the receiver and the line."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LogsError(
                f"{receiver}: line {n} of journalctl's answer is not JSON ({exc.msg})"
            ) from None
        if not isinstance(entry, dict):
            raise LogsError(f"{receiver}: line {n} of journalctl's answer is not a JSON object")
        out.append(entry)
    return out


def _unit(e: Mapping[str, Any]) -> str:
    unit = _text(e.get("_SYSTEMD_UNIT")) or _text(e.get("_SYSTEMD_USER_UNIT"))
    if not unit and _text(e.get("_TRANSPORT")) == "kernel":
        return "kernel"
    return unit


def _priority(e: Mapping[str, Any]) -> int:
    try:
        p = int(_text(e.get("PRIORITY")))
    except ValueError:
        return 6  # journald's default for an entry without one (info)
    return p if 0 <= p < len(PRIORITIES) else 6


def frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Journal records (from any number of receivers) into one de-duplicated frame."""
    rows = []
    seen: set[tuple[str, ...]] = set()
    for e in records:
        host = _text(e.get("_HOSTNAME"))
        message = _text(e.get("MESSAGE"))
        realtime = _text(e.get("__REALTIME_TIMESTAMP"))
        key = (
            host,
            _text(e.get("_BOOT_ID")),
            _text(e.get("__MONOTONIC_TIMESTAMP")),
            realtime,
            message,
        )
        if key in seen:
            continue
        seen.add(key)
        p = _priority(e)
        rows.append(
            {
                "time": pd.Timestamp(int(realtime or 0), unit="us", tz="UTC"),
                "host": host,
                "unit": _unit(e),
                "identifier": _text(e.get("SYSLOG_IDENTIFIER")),
                "priority": p,
                "priority_name": PRIORITIES[p],
                "message": message,
            }
        )
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["time"] = pd.to_datetime(df["time"], utc=True)
    df["priority"] = df["priority"].astype("int64")
    return df.sort_values(["time", "host"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Logs:
    """What the receivers hold for a query, merged; who answered and who did not."""

    query: Query
    frame: pd.DataFrame
    answered_by: tuple[str, ...]
    missing: Mapping[str, str] = field(default_factory=dict)
    truncated: bool = False  # a receiver returned ``limit`` entries: older ones were left out

    def summary(self) -> str:
        """One line: how many lines, from which receivers, which did not answer."""
        parts = [f"{len(self.frame)} line(s) from {', '.join(self.answered_by)}"]
        parts += [f"{name} did not answer ({why})" for name, why in self.missing.items()]
        if self.truncated:
            parts.append(f"only the latest {self.query.limit} per receiver")
        return "; ".join(parts)


def fetch(inv: Inventory, q: Query, timeout: float = 30.0) -> Logs:
    """Ask every receiver; merge what answers; LogsError only when none does."""
    hosts = receivers(inv)
    answers = ssh.run_many(inv, hosts, q.command(), timeout=timeout, sudo=True)
    records: list[dict[str, Any]] = []
    answered: list[str] = []
    missing: dict[str, str] = {}
    truncated = False
    for name, res in answers.items():
        if isinstance(res, SSHError):
            missing[name] = res.message
            continue
        if not res.ok:
            why = (res.stderr.strip() or res.stdout.strip() or f"rc={res.rc}").splitlines()[-1]
            missing[name] = f"journalctl failed: {why}"
            continue
        try:
            got = parse(res.stdout, name)
        except LogsError as exc:
            missing[name] = str(exc)
            continue
        answered.append(name)
        truncated = truncated or len(got) >= q.limit
        records += got
    if not answered:
        detail = "; ".join(f"{n}: {why}" for n, why in missing.items()) or "no receivers"
        raise LogsError(f"no receiver of the central logs answered ({detail})")
    for name, why in missing.items():
        log.info("logs: %s did not answer: %s", name, why)
    return Logs(q, frame(records), tuple(answered), missing, truncated)


def read(
    inv: Inventory,
    hosts: Iterable[str] | str | None = None,
    units: Iterable[str] | str | None = None,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    priority: str | int | None = None,
    limit: int = DEFAULT_LIMIT,
    timeout: float = 30.0,
) -> Logs:
    """The central logs for hosts (or groups), units and a window (default: the last hour)."""
    q = query(inv, hosts, units, since, until, priority, limit)
    return fetch(inv, q, timeout=timeout)


# ------------------------------------------------------------------ a run's errors
@dataclass(frozen=True)
class RunErrors:
    """The error lines (priority err or worse) of a run's hosts in its window, and counts.

    ``note`` is set, and the frames are empty, when the logs could not be read:
    a runbook says so in one line and goes on.
    """

    hosts: tuple[str, ...]
    since: datetime
    until: datetime
    lines: pd.DataFrame
    answered_by: tuple[str, ...] = ()
    missing: Mapping[str, str] = field(default_factory=dict)
    note: str | None = None

    @property
    def counts(self) -> pd.DataFrame:
        """Error lines per host and unit, most first."""
        if self.lines.empty:
            return pd.DataFrame(columns=["host", "unit", "lines"])
        df = self.lines.groupby(["host", "unit"]).size().reset_index(name="lines")
        df = df.sort_values(["lines", "host", "unit"], ascending=[False, True, True])
        return df.reset_index(drop=True)

    def table(self, max_rows: int = 100) -> pd.DataFrame:
        """The latest error lines as a runbook shows them: time, host, unit, priority, message."""
        cols = ["time", "host", "unit", "priority_name", "message"]
        return self.lines[cols].tail(max_rows).reset_index(drop=True)

    def record(self) -> dict[str, Any]:
        """What result.json keeps (its ``logs`` key): the window, who answered, counts."""
        per_host: dict[str, dict[str, int]] = {}
        for rec in self.counts.to_dict("records"):
            per_host.setdefault(str(rec["host"]), {})[str(rec["unit"]) or "-"] = int(rec["lines"])
        return {
            "hosts": list(self.hosts),
            "since": iso(self.since),
            "until": iso(self.until),
            "priority": "err",
            "answered_by": list(self.answered_by),
            "missing": dict(self.missing),
            "errors": per_host,
            "note": self.note,
        }

    def keep(self, run: Run) -> RunErrors:
        """Put the counts into the run's result.json (``logs``)."""
        run.logs = self.record()
        return self

    def summary(self) -> str:
        if self.note:
            return self.note
        hosts = ", ".join(self.hosts) or "every host"
        line = f"{len(self.lines)} error line(s) on {hosts} (from {', '.join(self.answered_by)})"
        return line + "".join(f"; {n} did not answer ({w})" for n, w in self.missing.items())


def run_errors(
    inv: Inventory,
    hosts: Sequence[str] | str | None,
    since: str | datetime,
    until: str | datetime | None = None,
    limit: int = 1000,
) -> RunErrors:
    """The error lines of hosts (or groups; None: every host) for a window; never raises.

    Whatever keeps the logs from being read (no receiver answered, no
    receiving group, a host or group this inventory lacks) becomes ``note``,
    with empty frames: a runbook shows the note and goes on.
    """
    now = datetime.now(UTC)
    start = parse_time(since, now) if isinstance(since, datetime) else None
    try:
        q = query(inv, hosts, None, since, until, "err", limit, now)
    except FaultbookError as exc:
        names = (hosts,) if isinstance(hosts, str) else tuple(hosts or ())
        return RunErrors(names, start or now, now, frame([]), note=f"central logs not read: {exc}")
    try:
        got = fetch(inv, q)
    except FaultbookError as exc:
        return RunErrors(q.hosts, q.since, q.until, frame([]), note=f"central logs not read: {exc}")
    return RunErrors(q.hosts, q.since, q.until, got.frame, got.answered_by, got.missing)


def errors_of_run(run: Run, inv: Inventory, hosts: Sequence[str] | str | None) -> RunErrors:
    """A runbook's step: the error lines of the hosts it acted on since it started, kept in
    its result.json. Groups the inventory lacks are left out; nothing here fails a run."""
    wanted = [hosts] if isinstance(hosts, str) else list(hosts or ())
    known = [n for n in wanted if n in inv.groups or n in inv.hosts]
    started = datetime.fromisoformat(run.started_at.replace("Z", "+00:00"))
    return run_errors(inv, (known or wanted) if hosts else None, started).keep(run)
