"""One run at a time per inventory: the run lock.

``faultbook run``, a drill suite, a scheduled run and a run the alert receiver
starts all take the same lock before they touch an inventory's hosts, so two
procedures never act on one stack at once. The lock is ``fcntl.flock`` on
``state_dir(inv)/run.lock``: the kernel drops it when its holder dies, so a
killed run never leaves it stuck. The file also records who holds it (pid,
what, trigger, since) for ``holder`` and for the refusal message.

A second caller either waits (``wait_s`` > 0, bounded) or is refused at once
with ``InventoryBusy`` (exit status 75), which names the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from faultbook.errors import InventoryBusy, ParameterError
from faultbook.inventory import resolve_path
from faultbook.paths import LAB_INVENTORY, state_dir

POLL_S = 0.2


class _Named(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def is_lab(self) -> bool: ...


@dataclass(frozen=True)
class Key:
    """An inventory's identity for the lock, without parsing it (``key``)."""

    name: str
    is_lab: bool


def key(inventory: str | os.PathLike[str] | None) -> Key:
    """The lock identity of an inventory given as ``faultbook run -p inventory`` takes it
    (``"lab"``, a name under inventories/, a directory or a hosts file): the same
    state directory as the loaded ``Inventory`` has, at the cost of a path lookup."""
    path = resolve_path(inventory)
    return Key(path.parent.name, path.resolve() == LAB_INVENTORY.resolve())


def lock_path(inv: _Named) -> Path:
    return state_dir(inv, create=True) / "run.lock"


def _read(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        doc = json.loads(raw.decode() or "{}")
    except (UnicodeDecodeError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    what = holder.get("what", "a run")
    pid, trigger, since = (holder.get(k, "?") for k in ("pid", "trigger", "since"))
    return f"{what} (pid {pid}, {trigger}, since {since})"


# The locks this process holds, by lock file: a holder may take it again (a suite
# holds it, and each of its runs takes it too), counted, released at the outermost.
@dataclass
class _Held:
    fd: int
    record: dict[str, Any]
    depth: int = 1


_held: dict[str, _Held] = {}
_held_lock = threading.Lock()


def _write(fd: int, record: dict[str, Any] | None) -> None:
    os.ftruncate(fd, 0)
    if record is not None:
        os.pwrite(fd, json.dumps(record).encode(), 0)


@contextlib.contextmanager
def hold(
    inv: _Named,
    what: str,
    *,
    wait_s: float = 0.0,
    trigger: str | None = None,
    drill: bool = False,
) -> Iterator[dict[str, Any]]:
    """Hold the inventory's run lock for the ``with`` block; yield the holder record.

    ``what`` names the run (``"run db-failover"``, ``"suite smoke"``); ``trigger``
    says what started it (default ``$FAULTBOOK_TRIGGER`` or ``user:<login>``);
    ``drill`` says its faults are deliberate (the alert receiver then starts no
    recovery behind it: the drill recovers from its own faults). Waits up to
    ``wait_s`` seconds for another holder to finish, then raises ``InventoryBusy``
    naming that holder. Re-entrant within one process: the outer record stays,
    marked a drill while an inner holder is one (a suite's drill entry).
    """
    if not (wait_s >= 0 and wait_s != float("inf")):
        raise ParameterError(f"lock wait must be a number of seconds >= 0, got {wait_s}")
    path = str(lock_path(inv))
    with _held_lock:
        mine = _held.get(path)
        if mine is not None:
            mine.depth += 1
            was_drill = mine.record["drill"]
            if drill and not was_drill:
                mine.record["drill"] = True
                _write(mine.fd, mine.record)
    if mine is not None:
        try:
            yield mine.record
        finally:
            with _held_lock:
                mine.depth -= 1
                if mine.record["drill"] != was_drill:
                    mine.record["drill"] = was_drill
                    _write(mine.fd, mine.record)
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read(fd)
                    raise InventoryBusy(
                        f"inventory {inv.name!r} is busy: {_describe(holder)} holds its run lock "
                        f"({path}); try again when it has finished",
                        holder,
                    ) from None
                time.sleep(POLL_S)
        record = {
            "pid": os.getpid(),
            "what": what,
            "trigger": trigger or default_trigger(),
            "since": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "drill": drill,
        }
        _write(fd, record)
        with _held_lock:
            _held[path] = _Held(fd, record)
        try:
            yield record
        finally:
            with _held_lock:
                del _held[path]
            _write(fd, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def holder(inv: _Named) -> dict[str, Any] | None:
    """Who holds the inventory's run lock now, or None when nobody does."""
    path = lock_path(inv)
    with _held_lock:
        mine = _held.get(str(path))
        if mine is not None:
            return dict(mine.record)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or {"what": "unknown"}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_file(inv: _Named) -> dict[str, Any]:
    """The holder record as written in the lock file (what other processes read)."""
    fd = os.open(lock_path(inv), os.O_RDONLY)
    try:
        return _read(fd)
    finally:
        os.close(fd)


def default_trigger() -> str:
    """``$FAULTBOOK_TRIGGER`` (``alert:<fingerprint>``, ``schedule:<name>``), else
    ``user:<login>``."""
    env = os.environ.get("FAULTBOOK_TRIGGER", "").strip()
    if env:
        return env
    try:
        login = os.getlogin()
    except OSError:
        import pwd

        login = pwd.getpwuid(os.getuid()).pw_name
    return f"user:{login}"
