"""The audit log: one hash-chained entry per archived run, prune and skipped run.

``$FAULTBOOK_HOME/audit.jsonl`` is append-only, one JSON object per line::

    {"seq": 7, "at": "…Z", "kind": "run", "trigger": "schedule:nightly",
     "runbook": "db-failover", "parameters": {… secrets "***"}, "verdict": "pass",
     "path": "runs/20261127T100000Z-db-failover", "files": {"result.json": "<sha256>", …},
     "prev": "<hash of entry 6>", "hash": "<sha256>"}

``kind`` is ``run`` (an archived run), ``prune`` (retention removed run folders:
``removed`` lists their paths and entries) or ``run-skipped`` (a suite entry or a
scheduled run that did not start: ``reason``). ``path`` is relative to
$FAULTBOOK_HOME. ``hash`` is sha256 over the previous entry's hash (64 zeros for
the first) followed by this entry's canonical JSON without ``hash`` (keys sorted,
no spaces, UTF-8), so editing, removing or reordering any entry breaks the chain
from there on. ``audit.head`` beside the log holds the last entry's seq and hash,
so cutting entries off the end shows too.

Writers in several processes append under ``fcntl.flock`` of the log itself
(``locked``); ``store.archive`` and ``retention.prune`` hold it while they change
the archive, so ``verify`` (which holds it shared) never sees half a change.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faultbook.errors import ArchiveError
from faultbook.paths import faultbook_home
from faultbook.results import utcnow

FILENAME = "audit.jsonl"
HEAD = "audit.head"
GENESIS = "0" * 64
KINDS = ("run", "prune", "run-skipped")


def log_path(home: Path | None = None, create: bool = False) -> Path:
    return (home or faultbook_home(create=create)) / FILENAME


def canonical(entry: Mapping[str, Any]) -> bytes:
    """The entry as hashed: JSON with sorted keys, no spaces, UTF-8, without ``hash``."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


def chain_hash(prev: str, entry: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev.encode() + canonical(entry)).hexdigest()


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not {"seq", "prev", "hash"} <= entry.keys():
        return None
    return entry


def _last_entry(fd: int) -> dict[str, Any] | None:
    """The last complete entry of the log open on FD (read from the end)."""
    size = os.fstat(fd).st_size
    window = 1 << 16
    while True:
        start = max(0, size - window)
        chunk = os.pread(fd, size - start, start)
        lines = chunk.split(b"\n")
        if start > 0:
            lines = lines[1:]  # the first line may be cut by the window
        for line in reversed(lines):
            entry = _parse(line) if line.strip() else None
            if entry is not None:
                return entry
        if start == 0:
            return None
        window *= 4


class Writer:
    """Appends entries to the log; only inside ``locked``."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path
        last = _last_entry(fd)
        self.seq = int(last["seq"]) if last else 0
        self.prev = str(last["hash"]) if last else GENESIS

    def append(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        kind = fields.get("kind")
        if kind not in KINDS:
            raise ArchiveError(f"an audit entry's kind must be one of {', '.join(KINDS)}: {kind!r}")
        entry: dict[str, Any] = {"seq": self.seq + 1, "at": utcnow(), **fields, "prev": self.prev}
        entry.pop("hash", None)
        entry["hash"] = chain_hash(self.prev, entry)
        line = json.dumps(entry, sort_keys=True, ensure_ascii=False, default=str).encode() + b"\n"
        size = os.fstat(self.fd).st_size
        if size and os.pread(self.fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a writer killed mid-line: start a fresh one (verify flags it)
        try:
            os.write(self.fd, line)
            os.fsync(self.fd)
            head = self.path.with_name(HEAD)
            tmp = head.with_suffix(".tmp")
            tmp.write_text(json.dumps({"seq": entry["seq"], "hash": entry["hash"]}) + "\n")
            os.replace(tmp, head)
        except OSError as exc:
            raise ArchiveError(f"cannot append to {self.path}: {exc.strerror or exc}") from None
        self.seq, self.prev = entry["seq"], entry["hash"]
        return entry


@contextlib.contextmanager
def locked(home: Path | None = None) -> Iterator[Writer]:
    """Hold the audit log's lock (exclusive) for the block; yield its writer."""
    try:
        path = log_path(home, create=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ArchiveError(f"cannot open the audit log: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield Writer(fd, path)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def append(fields: Mapping[str, Any], home: Path | None = None) -> dict[str, Any]:
    """Append one entry (``kind`` and its fields); returns it with seq, at, prev, hash."""
    with locked(home) as w:
        return w.append(fields)


def entries(home: Path | None = None) -> list[dict[str, Any]]:
    """The log's complete entries in file order (torn or foreign lines left out)."""
    path = log_path(home)
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        entry = _parse(line) if line.strip() else None
        if entry is not None:
            out.append(entry)
    return out


# ------------------------------------------------------------------- verify
@dataclass(frozen=True)
class Problem:
    line: int  # where in the log (one past the last line: the archive's own folders)
    text: str


@dataclass
class Report:
    entries: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    files: int = 0
    head: str = GENESIS
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: what was checked, or the first bad entry and how many problems."""
        if self.ok:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.kinds.items())) or "none"
            return (
                f"audit OK: {self.entries} entries ({kinds}), {self.files} archived files "
                f"match their digests, chain head {self.head[:12]}"
            )
        first = min(self.problems, key=lambda p: p.line)
        more = len(self.problems) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        return f"audit FAILED: {first.text}{tail}"


def _label(e: Mapping[str, Any]) -> str:
    what = e.get("kind", "?")
    if e.get("runbook"):
        what += f" {e['runbook']}"
    return f"entry {e.get('seq')} ({what}, {e.get('at', '?')})"


def verify(home: Path | None = None) -> Report:
    """Check the chain, the head and every archived file against its entry."""
    from faultbook.archive import store

    home = home or faultbook_home()
    path = log_path(home)
    rep = Report()
    if not path.exists():
        if runs := store.runs(home):
            rep.problems.append(Problem(1, f"{len(runs)} archived runs but no audit log at {path}"))
        return rep
    with open(path, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        lines = f.read().splitlines()
        good = _chain(lines, rep)
        _head(home, good, len(lines), rep)
        _files(home, good, len(lines), rep)
    return rep


def _chain(lines: list[bytes], rep: Report) -> list[tuple[int, dict[str, Any]]]:
    good: list[tuple[int, dict[str, Any]]] = []
    prev, seq = GENESIS, 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        e = _parse(line)
        if e is None:
            rep.problems.append(
                Problem(n, f"line {n} is not a complete audit entry (torn or edited)")
            )
            continue
        rep.entries += 1
        rep.kinds[str(e.get("kind"))] = rep.kinds.get(str(e.get("kind")), 0) + 1
        if e["seq"] != seq + 1:
            rep.problems.append(
                Problem(
                    n,
                    f"{_label(e)} at line {n} comes where entry {seq + 1} should: "
                    "an entry was removed or the log reordered",
                )
            )
        elif e["prev"] != prev:
            rep.problems.append(
                Problem(n, f"{_label(e)} does not follow entry {seq} (its prev hash differs)")
            )
        if chain_hash(str(e["prev"]), e) != e["hash"]:
            rep.problems.append(Problem(n, f"{_label(e)} was edited: its hash does not match"))
        prev, seq = str(e["hash"]), int(e["seq"]) if isinstance(e["seq"], int) else seq + 1
        good.append((n, e))
    rep.head = prev
    return good


def _head(home: Path, good: list[tuple[int, dict[str, Any]]], nlines: int, rep: Report) -> None:
    head_path = home / HEAD
    last = good[-1][1] if good else None
    try:
        head = json.loads(head_path.read_text()) if head_path.exists() else None
    except ValueError:
        head = {}
    if last is None:
        return
    if not isinstance(head, dict):
        rep.problems.append(
            Problem(nlines + 1, f"{head_path} is missing: the log's end is unproven")
        )
    elif head.get("seq") != last["seq"] or head.get("hash") != last["hash"]:
        rep.problems.append(
            Problem(
                nlines + 1,
                f"the log ends at {_label(last)} but {HEAD} records entry {head.get('seq')}: "
                "entries were cut off the end (or the head was edited)",
            )
        )


def _files(home: Path, good: list[tuple[int, dict[str, Any]]], nlines: int, rep: Report) -> None:
    from faultbook.archive import store

    removed: dict[str, int] = {}
    for _n, e in good:
        if e.get("kind") == "prune":
            for r in e.get("removed", []):
                removed[str(r.get("path"))] = int(e["seq"])
    recorded: set[str] = set()
    for n, e in good:
        if e.get("kind") == "prune":
            for r in e.get("removed", []):
                if (home / str(r.get("path"))).exists():
                    rep.problems.append(
                        Problem(n, f"{_label(e)} records {r.get('path')} removed, but it is there")
                    )
        if e.get("kind") != "run":
            continue
        rel = str(e.get("path"))
        recorded.add(rel)
        if rel in removed:
            continue
        folder = home / rel
        if not folder.is_dir():
            rep.problems.append(
                Problem(n, f"{_label(e)}: its folder {rel} is missing and no prune removed it")
            )
            continue
        want: dict[str, str] = dict(e.get("files") or {})
        have = store.digests(folder)
        for name, digest in want.items():
            if name not in have:
                rep.problems.append(Problem(n, f"{_label(e)}: {rel}/{name} is missing"))
            elif have[name] != digest:
                rep.problems.append(
                    Problem(
                        n,
                        f"{_label(e)}: {rel}/{name} changed (sha256 {have[name][:12]}, "
                        f"recorded {digest[:12]})",
                    )
                )
            else:
                rep.files += 1
        for name in sorted(set(have) - set(want)):
            rep.problems.append(
                Problem(n, f"{_label(e)}: {rel}/{name} was added after the run was archived")
            )
    for r in store.runs(home):
        rel = str(r.path.relative_to(home))
        if rel not in recorded:
            rep.problems.append(
                Problem(nlines + 1, f"{rel} is in the archive but no audit entry records it")
            )
