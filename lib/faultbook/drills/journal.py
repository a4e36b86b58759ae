"""The fault journal: every fault a drill injects, written down before it is injected.

A drill (``Procedure.inject``/``revert``) records each fault in
``RUN_DIR/faults.jsonl`` — append-only JSON lines, each one fsync'd before the
call returns — so whoever outlives the drill can undo it: ``faultbook run``
afterwards (``report.runner``), or the detached watchdog for lab faults
(``drills.watchdog``). One line per event::

    {"event": "intent",   "id", "kind", "target", "options", "inventory",
                          "max_s", "lab", "owner": {"pid", "start"}, "at", "deadline"}
    {"event": "injected", "id", "at"}
    {"event": "inject-failed", "id", "at", "detail"}
    {"event": "reverted", "id", "at", "by", "outcome", "detail"}
    {"event": "revert-failed", "id", "at", "by", "detail"}

``outcome`` is "reverted" or "already reverted"; ``by`` is "procedure" (the
drill itself), "runner" or "watchdog". A fault is *pending* from its intent
until a "reverted" line: also when its injection failed half-way, since a
rollback probes the lab or the host before acting (``Fault.rollback``).

Writers in several processes append under ``fcntl.flock`` of
``RUN_DIR/faults.lock``; ``Journal.rollback`` holds that lock while it reverts,
so the runner and the watchdog never revert the same fault at once. A torn last
line (a writer killed mid-write) is skipped when reading.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from faultbook.drills.faults import Fault
from faultbook.errors import FaultError
from faultbook.inventory import Inventory
from faultbook.results import iso

log = logging.getLogger(__name__)

JOURNAL_NAME = "faults.jsonl"
LOCK_NAME = "faults.lock"
OUTCOMES = ("reverted", "already reverted", "failed")


def _now() -> datetime:
    return datetime.now(UTC)


def _parse(ts: str | None) -> datetime | None:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None


def process_start(pid: int) -> str | None:
    """The start time of PID in clock ticks since boot (tells a reused pid apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def alive(owner: dict[str, Any] | None) -> bool:
    """Whether the process an intent names (pid and start time) still runs."""
    if not owner or not owner.get("pid"):
        return False
    start = process_start(int(owner["pid"]))
    return start is not None and start == owner.get("start")


@dataclass
class Entry:
    """One journaled fault, folded from its lines."""

    id: str
    kind: str
    target: str
    options: dict[str, Any]
    inventory: str
    max_s: float
    lab: bool
    at: str
    deadline: str
    owner: dict[str, Any] = field(default_factory=dict)
    injected_at: str | None = None
    inject_error: str | None = None
    reverted_at: str | None = None
    reverted_by: str | None = None
    outcome: str | None = None
    detail: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return self.reverted_at is None

    @property
    def due(self) -> bool:
        d = _parse(self.deadline)
        return d is not None and _now() >= d

    def describe(self) -> str:
        return f"{self.kind} on {self.target}"


@dataclass(frozen=True)
class Rollback:
    """What one rollback of a journaled fault did (an item of result.json's ``rollback``)."""

    kind: str
    target: str
    outcome: str  # one of OUTCOMES
    detail: str
    at: str
    by: str = "runner"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "outcome": self.outcome,
            "detail": self.detail,
            "at": self.at,
            "by": self.by,
        }


class Journal:
    """The journal of one run directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.path = self.dir / JOURNAL_NAME
        self.lock_path = self.dir / LOCK_NAME
        self._held = 0

    def exists(self) -> bool:
        return self.path.exists()

    # ------------------------------------------------------------------ write
    def _append(self, record: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, default=str, sort_keys=True) + "\n").encode()
        with self._flock():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold the journal's lock (re-entrant within this object) around a revert."""
        return self._flock()

    @contextlib.contextmanager
    def _flock(self) -> Iterator[None]:
        # Re-entrant within a process: rollback() holds it while it appends.
        if self._held:
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._held = 1
            try:
                yield
            finally:
                self._held = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def intent(self, fault: Fault, max_s: float | None = None) -> Entry:
        """Record a fault about to be injected (before it is). Returns its entry."""
        n = len(self.entries()) + 1
        limit = float(max_s if max_s is not None else fault.max_s)
        at = _now()
        pid = os.getpid()
        record = {
            "event": "intent",
            "id": f"f{n}",
            "kind": fault.kind,
            "target": fault.target,
            "options": fault.spec(),
            "inventory": str(fault.inv.path.resolve()),
            "max_s": limit,
            "lab": fault.lab_side,
            "owner": {"pid": pid, "start": process_start(pid)},
            "at": iso(at),
            "deadline": iso(at + timedelta(seconds=limit)),
        }
        self._append(record)
        return self._fold([record])[0]

    def injected(self, entry: Entry, at: datetime | None = None) -> None:
        self._append({"event": "injected", "id": entry.id, "at": iso(at or _now())})

    def inject_failed(self, entry: Entry, detail: str) -> None:
        self._append(
            {"event": "inject-failed", "id": entry.id, "at": iso(_now()), "detail": detail}
        )

    def reverted(
        self,
        entry: Entry,
        by: str,
        outcome: str = "reverted",
        detail: str = "",
        at: datetime | None = None,
    ) -> None:
        if outcome not in OUTCOMES[:2]:
            raise FaultError(f"outcome must be one of {OUTCOMES[:2]}, got {outcome!r}")
        self._append(
            {
                "event": "reverted",
                "id": entry.id,
                "at": iso(at or _now()),
                "by": by,
                "outcome": outcome,
                "detail": detail,
            }
        )

    def revert_failed(self, entry: Entry, by: str, detail: str) -> None:
        self._append(
            {
                "event": "revert-failed",
                "id": entry.id,
                "at": iso(_now()),
                "by": by,
                "detail": detail,
            }
        )

    # ------------------------------------------------------------------- read
    def records(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                log.warning("%s:%d: unreadable journal line skipped", self.path, n)
                continue
            if isinstance(rec, dict) and "event" in rec and "id" in rec:
                out.append(rec)
        return out

    @staticmethod
    def _fold(records: list[dict[str, Any]]) -> list[Entry]:
        entries: dict[str, Entry] = {}
        for r in records:
            ev, eid = r["event"], r["id"]
            if ev == "intent":
                entries[eid] = Entry(
                    id=eid,
                    kind=r["kind"],
                    target=r["target"],
                    options=dict(r.get("options") or {}),
                    inventory=r["inventory"],
                    max_s=float(r["max_s"]),
                    lab=bool(r.get("lab")),
                    at=r["at"],
                    deadline=r["deadline"],
                    owner=dict(r.get("owner") or {}),
                )
                continue
            e = entries.get(eid)
            if e is None:
                continue
            if ev == "injected":
                e.injected_at = r["at"]
            elif ev == "inject-failed":
                e.inject_error = r.get("detail", "")
            elif ev == "reverted" and e.reverted_at is None:
                e.reverted_at = r["at"]
                e.reverted_by = r.get("by")
                e.outcome = r.get("outcome", "reverted")
                e.detail = r.get("detail", "")
            elif ev == "revert-failed":
                e.failures.append(f"{r.get('by')}: {r.get('detail', '')}")
        return list(entries.values())

    def entries(self) -> list[Entry]:
        return self._fold(self.records())

    def entry(self, entry_id: str) -> Entry | None:
        return next((e for e in self.entries() if e.id == entry_id), None)

    def pending(self, lab_only: bool = False) -> list[Entry]:
        return [e for e in self.entries() if e.pending and (e.lab or not lab_only)]

    # --------------------------------------------------------------- rollback
    def rollback(
        self,
        entry: Entry,
        by: str,
        make: Callable[[Entry], Fault] | None = None,
    ) -> Rollback:
        """Revert one journaled fault if it is still pending; record what happened.

        Holds the journal's lock throughout, re-reads the entry under it (another
        process may have reverted it meanwhile: then its record is returned) and
        never raises for a failed revert: that is a "failed" outcome.
        """
        with self._flock():
            current = self.entry(entry.id) or entry
            if not current.pending:
                return Rollback(
                    current.kind,
                    current.target,
                    current.outcome or "reverted",
                    current.detail,
                    current.reverted_at or iso(_now()),
                    current.reverted_by or by,
                )
            try:
                fault = (make or rebuild)(current)
                outcome, detail = fault.rollback()
            except Exception as exc:  # noqa: BLE001 - a failed revert is recorded, not raised
                detail = f"{type(exc).__name__}: {exc}"
                log.error("rollback of %s failed: %s", current.describe(), detail)
                self.revert_failed(current, by, detail)
                return Rollback(current.kind, current.target, "failed", detail, iso(_now()), by)
            at = _now()
            self.reverted(current, by, outcome, detail, at)
            return Rollback(current.kind, current.target, outcome, detail, iso(at), by)

    def rollback_pending(
        self,
        by: str,
        lab_only: bool = False,
        make: Callable[[Entry], Fault] | None = None,
    ) -> list[Rollback]:
        """Roll back every pending fault, newest first (the reverse of injection)."""
        return [self.rollback(e, by, make) for e in reversed(self.pending(lab_only))]


_INVENTORIES: dict[str, Inventory] = {}


def rebuild(entry: Entry) -> Fault:
    """The fault an entry describes, on the inventory it names (``faults.make``)."""
    from faultbook import inventory as inventory_mod
    from faultbook.drills import faults

    inv = _INVENTORIES.get(entry.inventory)
    if inv is None:
        inv = _INVENTORIES[entry.inventory] = inventory_mod.load(entry.inventory)
    return faults.make(entry.kind, inv, entry.target, **entry.options)
