"""Incident folders: ``$FAULTBOOK_HOME/incidents/<UTC YYYYmmddTHHMMSSZ>-<runbook>[-N]/``.

The folder the alert receiver prepares notebooks in (``alerts.dispatch.prepare_notebook``)
is the one ``faultbook notebook`` prepares them in too, so both kinds open, list and
close the same way. An incident folder holds:

- ``<runbook>.ipynb``: a copy of the runbook with its parameters filled in (papermill's
  ``prepare_only``: an injected-parameters cell, nothing executed) and ``result_dir`` set
  to the folder, so the runbook's last cell writes ``result.json`` there. The checkout's
  notebooks are never written;
- ``incident.json`` (``faultbook notebook``) or ``alert.json`` (the receiver): what
  prepared it, when, with which parameters (secrets redacted);
- ``result.json`` once the runbook's last cell has run;
- ``closed.json`` once it is closed: when, and its folder in the archive.

Closing files the incident like any run (``archive.store.archive``): the notebook as the
engineer saved it (executed), its HTML, result.json and every other file of the folder
go to ``$FAULTBOOK_HOME/runs/<UTC time>-<runbook>/`` with an audit entry. When the
notebook never wrote result.json, closing writes one (mode incident, a failed step
``notebook`` saying so), so that the archive has a record of every incident opened.
Faults journaled in the folder and not reverted (a drill run by hand) are reverted
first, as ``faultbook run`` does (``drills.rollback``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faultbook import lock
from faultbook.archive import store
from faultbook.errors import IncidentError
from faultbook.paths import RUNBOOKS_DIR, faultbook_home
from faultbook.results import MODES, Run, iso, redact, utcnow

INCIDENTS = "incidents"
META = "incident.json"
ALERT = "alert.json"
CLOSED = "closed.json"
CHECKPOINTS = ".ipynb_checkpoints"  # JupyterLab's autosave copies: not part of the record


def incidents_root(home: Path | None = None, create: bool = False) -> Path:
    root = (home or faultbook_home(create=create)) / INCIDENTS
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return root


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


@dataclass(frozen=True)
class Incident:
    """One incident folder."""

    path: Path
    runbook: str
    created: datetime

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def notebook(self) -> Path:
        return self.path / f"{self.runbook}.ipynb"

    @property
    def meta(self) -> dict[str, Any]:
        return _read(self.path / META) or _read(self.path / ALERT)

    @property
    def closed(self) -> dict[str, Any] | None:
        p = self.path / CLOSED
        return (_read(p) or {"closed_at": "?"}) if p.exists() else None

    @property
    def source(self) -> str:
        """Who prepared it: ``alert <name>`` (the receiver) or the trigger of
        ``faultbook notebook`` (``user:<login>``)."""
        alert = _read(self.path / ALERT)
        if alert:
            return f"alert {alert.get('alertname') or alert.get('fingerprint') or '?'}"
        return str(self.meta.get("trigger") or "?")

    @property
    def trigger(self) -> str:
        """The archive's trigger: ``alert:<fingerprint>`` for a prepared notebook, else the
        one recorded when it was prepared, else this process's."""
        alert = _read(self.path / ALERT)
        if alert.get("fingerprint"):
            return f"alert:{alert['fingerprint']}"
        return str(self.meta.get("trigger") or lock.default_trigger())

    @property
    def verdict(self) -> str | None:
        return _read(self.path / "result.json").get("verdict")

    def parameters(self) -> dict[str, Any]:
        """The parameters the notebook was prepared with (papermill's metadata), less
        ``result_dir``."""
        nb = _read(self.notebook)
        params = (nb.get("metadata") or {}).get("papermill", {}).get("parameters") or {}
        if not params:
            params = self.meta.get("parameters") or {}
        return {k: v for k, v in dict(params).items() if k != "result_dir"}


def prepare(
    runbook: str,
    params: Mapping[str, Any],
    *,
    kernel: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Incident:
    """Validate PARAMS as ``faultbook run`` does, then copy RUNBOOK with them filled in
    into a new incident folder. Nothing is created when a parameter is bad."""
    import papermill

    from faultbook.alerts.dispatch import new_dir
    from faultbook.report import runner

    src = runner.runbook_path(runbook)  # RunbookNotFound: exit 2
    stem = src.stem
    values = runner.validate(stem, params)  # ParameterError: exit 2, nothing created
    root = incidents_root(home or faultbook_home(create=True), create=True)
    folder = new_dir(root, stem)
    try:
        papermill.execute_notebook(
            str(src),
            str(folder / f"{stem}.ipynb"),
            parameters={**values, "result_dir": str(folder)},
            prepare_only=True,
            kernel_name=(kernel or {}).get("name", "python3"),
            progress_bar=False,
            log_output=False,
        )
        if kernel:
            set_kernel(folder / f"{stem}.ipynb", kernel)
        meta = {
            "runbook": stem,
            "parameters": redact(values),
            "created_at": utcnow(),
            "trigger": lock.default_trigger(),
            "from": str(src),
        }
        (folder / META).write_text(json.dumps(meta, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return _incident(folder)


def set_kernel(notebook: Path, kernel: Mapping[str, str]) -> None:
    """Point NOTEBOOK's kernelspec at KERNEL (name, display_name, language)."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    spec = {"name": kernel["name"], "display_name": kernel.get("display_name", kernel["name"])}
    spec["language"] = kernel.get("language", "python")
    if nb.metadata.get("kernelspec") != spec:
        nb.metadata["kernelspec"] = spec
        nbformat.write(nb, str(notebook))


def _incident(folder: Path) -> Incident:
    parsed = store.parse_name(folder.name)
    if parsed is None:
        raise IncidentError(
            f"{folder}: not an incident folder (expected a name <UTC time>-<runbook>, "
            "such as 20261127T030002Z-db-failover)"
        )
    created, runbook = parsed
    return Incident(folder, runbook, created)


def incidents(home: Path | None = None) -> list[Incident]:
    """Every incident folder, oldest first."""
    root = incidents_root(home)
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        if folder.is_dir() and store.parse_name(folder.name) is not None:
            inc = _incident(folder)
            if inc.notebook.exists():
                found.append(inc)
    return sorted(found, key=lambda i: (i.created, i.name))


def open_incidents(home: Path | None = None) -> list[Incident]:
    return [i for i in incidents(home) if i.closed is None]


def resolve(arg: str | Path, home: Path | None = None) -> Incident:
    """An incident from what a person typed: its folder, its notebook, or its name under
    ``$FAULTBOOK_HOME/incidents``. One-line IncidentError otherwise."""
    given = Path(arg)
    root = incidents_root(home)
    path = given if given.exists() or given.is_absolute() else root / given
    if not path.exists():
        raise IncidentError(
            f"incident {str(arg)!r}: no such folder or notebook; expected an incident folder "
            f"under {root} (faultbook notebook --list shows the open ones)"
        )
    path = path.resolve()
    with contextlib.suppress(ValueError):
        path.relative_to(RUNBOOKS_DIR.resolve())
        raise IncidentError(
            f"{arg}: that is the checkout's runbook, which is never edited; "
            "`faultbook notebook RUNBOOK` works on a copy"
        )
    folder = path.parent if path.is_file() else path
    if path.is_file() and path.suffix != ".ipynb":
        raise IncidentError(f"{arg}: not a notebook; expected an incident folder or its .ipynb")
    inc = _incident(folder)
    if not inc.notebook.is_file():
        raise IncidentError(
            f"incident {folder}: no {inc.notebook.name}; expected the runbook's copy"
        )
    if path.is_file() and path != inc.notebook:
        raise IncidentError(f"{arg}: the incident's notebook is {inc.notebook.name}")
    return inc


def close(
    inc: Incident,
    *,
    home: Path | None = None,
    revert: Callable[[Path], dict[str, Any] | None] | None = None,
) -> Path:
    """File a finished incident into the archive (see the module's docstring); returns the
    archived folder. ``revert`` reverts faults journaled in the folder (default
    ``drills.rollback.rollback``; only called when there is a journal)."""
    from faultbook.drills import rollback
    from faultbook.report import runner

    if inc.closed is not None:
        raise IncidentError(
            f"incident {inc.path} is already closed ({inc.closed.get('closed_at')}; "
            f"archived as {inc.closed.get('archived', '?')})"
        )
    home = home or faultbook_home(create=True)
    shutil.rmtree(inc.path / CHECKPOINTS, ignore_errors=True)
    params = inc.parameters()
    result = inc.path / "result.json"
    rb = None
    if (inc.path / "faults.jsonl").exists():
        rb = (revert or (lambda d: rollback.rollback(d, ended_badly=False)))(inc.path)
    if not result.exists():
        mode = str(params.get("mode", "incident"))
        r = Run.start(inc.runbook, mode if mode in MODES else "incident", params)
        r.started_at = str(inc.meta.get("created_at") or iso(inc.created))
        r.fault = rollback.journaled_fault(inc.path)
        r.fail(
            "notebook",
            "the incident was closed before the runbook wrote result.json (its last cell "
            "did not run)",
        )
        r.finish()
        r.save(inc.path)
    if rb is not None:
        rollback.record(result, rb)
    try:
        runner.render_html(inc.notebook)
    except Exception as exc:  # noqa: BLE001 - the HTML is a convenience; say why it is missing
        (inc.path / f"{inc.runbook}.html").write_text(
            f"<p>the notebook could not be rendered: {type(exc).__name__}</p>\n"
        )
    archived = store.archive(inc.path, inc.runbook, params=params, trigger=inc.trigger, home=home)
    closed = {"closed_at": iso(datetime.now(UTC)), "archived": str(archived)}
    (inc.path / CLOSED).write_text(json.dumps(closed, indent=2) + "\n")
    return archived
