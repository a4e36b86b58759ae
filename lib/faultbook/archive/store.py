"""One archive for every run: ``$FAULTBOOK_HOME/runs/<UTC YYYYmmddTHHMMSSZ>-<runbook>/``.

``report.runner.run`` calls :func:`archive` at the end of every run (after the
rollback, whatever the verdict): ``faultbook run``, the demo, suites, scheduled
runs and the runs the alert receiver starts. The run's own directory (``--out``)
stays where it is; the archive gets a copy of what the run wrote there:

- ``<runbook>.ipynb`` (executed) and ``<runbook>.html``;
- ``result.json``;
- ``traffic.csv`` (the client records), ``faults.jsonl`` (the fault journal), the
  watchdogs' logs and whatever else the run wrote;
- ``archive.json``: what started the run (``trigger``), where its ``--out`` was, when
  it was archived.

"What the run wrote" is every regular file in the run directory modified since the
run started (a reused ``--out`` keeps an earlier run's files out of this one), less
lock files. The folder's time is result.json's ``started_at``; a second run of the
same runbook in the same second gets ``-2``, ``-3``, … Each archived run gets an
audit entry (``archive.audit``) with the sha256 of every file in its folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faultbook import lock
from faultbook.errors import ArchiveError
from faultbook.paths import faultbook_home
from faultbook.results import redact, utcnow

log = logging.getLogger(__name__)

RUNS = "runs"
META = "archive.json"
STAMP = "%Y%m%dT%H%M%SZ"
_NAME = re.compile(r"^(\d{8}T\d{6}Z)-(.+?)(?:-(\d+))?$")
_SKIP_SUFFIXES = (".lock",)


def runs_root(home: Path | None = None, create: bool = False) -> Path:
    root = (home or faultbook_home(create=create)) / RUNS
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files(folder: Path) -> list[Path]:
    """The regular files under FOLDER, as paths relative to it, sorted."""
    return sorted(
        p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
    )


def digests(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file in an archived run's folder."""
    return {str(rel): sha256_file(folder / rel) for rel in files(folder)}


def _stamp(doc: Mapping[str, Any] | None) -> str:
    started = (doc or {}).get("started_at")
    if isinstance(started, str):
        try:
            return datetime.fromisoformat(started.replace("Z", "+00:00")).strftime(STAMP)
        except ValueError:
            pass
    return datetime.now(UTC).strftime(STAMP)


def _claim(root: Path, base: str) -> Path:
    """A new folder named BASE (or BASE-2, BASE-3, …): mkdir is the atomic claim, so two
    processes archiving in the same second never share a folder."""
    n = 1
    while True:
        folder = root / (base if n == 1 else f"{base}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            n += 1


def written_since(src: Path, since: float | None) -> list[Path]:
    """The files a run wrote in SRC: modified at or after SINCE (epoch seconds), lock
    files left out; every file when SINCE is None."""
    out = []
    for rel in files(src):
        if rel.name.endswith(_SKIP_SUFFIXES):
            continue
        if since is not None and (src / rel).stat().st_mtime < since - 1.0:
            continue
        out.append(rel)
    return out


def archive(
    src: Path,
    runbook: str,
    *,
    params: Mapping[str, Any],
    since: float | None = None,
    trigger: str | None = None,
    home: Path | None = None,
) -> Path:
    """Copy the run in SRC into a new archive folder and append its audit entry.

    Returns the folder. Raises ArchiveError (one line) when the archive cannot be
    written; the run in SRC is untouched either way.
    """
    from faultbook.archive import audit

    src = Path(src)
    result = src / "result.json"
    doc = read_json(result) if result.exists() else None
    trigger = trigger or lock.default_trigger()
    home = home or faultbook_home(create=True)
    with audit.locked(home) as log_writer:
        folder: Path | None = None
        try:
            root = runs_root(home, create=True)
            folder = _claim(root, f"{_stamp(doc)}-{runbook}")
            for rel in written_since(src, since):
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / rel, folder / rel)
            meta = {
                "runbook": runbook,
                "trigger": trigger,
                "out_dir": str(src.resolve()),
                "archived_at": utcnow(),
            }
            (folder / META).write_text(json.dumps(meta, indent=2) + "\n")
            log_writer.append(
                {
                    "kind": "run",
                    "trigger": trigger,
                    "runbook": runbook,
                    "parameters": redact(dict(params)),
                    "verdict": (doc or {}).get("verdict"),
                    "path": str(folder.relative_to(home)),
                    "files": digests(folder),
                }
            )
        except (OSError, ArchiveError) as exc:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)  # no folder without its entry
            why = exc.strerror or exc if isinstance(exc, OSError) else exc
            raise ArchiveError(f"cannot archive the run into {home / RUNS}: {why}") from None
    return folder


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


@dataclass(frozen=True)
class ArchivedRun:
    """One folder of the archive, with its result.json (None when it has none)."""

    path: Path
    runbook: str
    started: datetime
    doc: dict[str, Any] | None = field(repr=False, default=None)
    meta: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def trigger(self) -> str:
        return str(self.meta.get("trigger", ""))

    @property
    def verdict(self) -> str | None:
        return (self.doc or {}).get("verdict")


def parse_name(name: str) -> tuple[datetime, str] | None:
    """(time, runbook) of an archive folder's name, or None when it is not one."""
    m = _NAME.match(name)
    if not m:
        return None
    when = datetime.strptime(m.group(1), STAMP).replace(tzinfo=UTC)
    return when, m.group(2)


def runs(home: Path | None = None) -> list[ArchivedRun]:
    """Every archived run, oldest first."""
    return sorted(_scan(home), key=lambda r: (r.started, r.name))


def _scan(home: Path | None) -> Iterator[ArchivedRun]:
    root = runs_root(home)
    if not root.is_dir():
        return
    for folder in root.iterdir():
        parsed = parse_name(folder.name) if folder.is_dir() else None
        if parsed is None:
            continue
        when, runbook = parsed
        doc = read_json(folder / "result.json")
        meta = read_json(folder / META) or {}
        runbook = str((doc or {}).get("runbook") or meta.get("runbook") or runbook)
        started = when
        if doc and isinstance(doc.get("started_at"), str):
            with contextlib.suppress(ValueError):
                started = datetime.fromisoformat(doc["started_at"].replace("Z", "+00:00"))
        yield ArchivedRun(folder, runbook, started, doc, meta)


def notebook_html(run: ArchivedRun) -> Path | None:
    """The executed notebook's HTML in an archived run, when there is one."""
    html = run.path / f"{run.runbook}.html"
    if html.exists():
        return html
    found = sorted(run.path.glob("*.html"))
    return found[0] if found else None
