"""The decision log: every alert notification, every decision taken on it, every
run started or skipped by an automaton, one JSON object per line.

It lives at ``$FAULTBOOK_HOME/decisions.jsonl`` and is append-only: writers in
several processes (the alert receiver, its runs, scheduled suites) append whole
lines under ``fcntl.flock`` and fsync, and nothing rewrites it. Each entry has
``at`` (ISO 8601 UTC), ``event`` and the caller's fields.

Events in use: ``notification`` (a webhook body as received, or why it was
refused), ``decision`` (``decision``: ran, duplicate, throttled, locked,
no route, refused, resolved, prepared, diagnosed; ``reason``), ``run-finished``
(exit status and verdict of a run an automaton started), ``run-skipped``
(a scheduled run that found the inventory busy or the stack out of steady state).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faultbook.errors import ResultError
from faultbook.paths import faultbook_home

FILENAME = "decisions.jsonl"


def log_path(create: bool = False) -> Path:
    return faultbook_home(create=create) / FILENAME


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record(event: str, path: Path | None = None, **fields: Any) -> dict[str, Any]:
    """Append one entry and return it. ``fields`` must be JSON-serialisable."""
    if not event or not isinstance(event, str):
        raise ResultError(f"a decision-log event needs a name, got {event!r}")
    entry = {"at": now_iso(), "event": event, **fields}
    line = (json.dumps(entry, sort_keys=False, default=str) + "\n").encode()
    target = path or log_path(create=True)
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            # A writer killed mid-line leaves no newline: start on a fresh line.
            size = os.fstat(fd).st_size
            if size and _last_byte(target, size) != b"\n":
                line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return entry


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1)


def entries(path: Path | None = None, event: str | None = None) -> Iterator[dict[str, Any]]:
    """The log's entries in order (optionally only one ``event``). A torn last line
    (a writer killed mid-write) is skipped, never fatal."""
    target = path or log_path()
    if not target.exists():
        return
    with open(target, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and (event is None or entry.get("event") == event):
                yield entry
