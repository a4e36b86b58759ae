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
- ``close-requested.json`` once the notebook asked to be filed (``close_from_notebook``);
- ``closed.json`` once it is closed: when, how, and its folder in the archive.

Closing files the incident like any run (``archive.store.archive``): the notebook as the
engineer saved it (executed), its HTML, result.json and every other file of the folder
go to ``$FAULTBOOK_HOME/runs/<UTC time>-<runbook>/`` with an audit entry. When the
notebook never wrote result.json, closing writes one (mode incident, a failed step
``notebook`` saying so), so that the archive has a record of every incident opened.
Faults journaled in the folder and not reverted (a drill run by hand) are reverted
first, as ``faultbook run`` does (``drills.rollback``).

An incident is closed by ``faultbook notebook --close`` once its server is stopped, or
from the notebook itself: its last cell calls :func:`close_from_notebook`, which leaves a
close request with a unique marker in the folder and prints the marker; JupyterLab's
post-save hook (:func:`post_save_hook`, set by ``oncall.jupyter``) files the incident when
a save of the notebook holds that output, i.e. when the file on disk is the executed
notebook. Incident servers autosave every few seconds, so nobody has to do anything else.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faultbook import lock
from faultbook.archive import store
from faultbook.errors import FaultbookError, IncidentError
from faultbook.paths import RUNBOOKS_DIR, faultbook_home
from faultbook.results import MODES, Run, iso, redact, utcnow

INCIDENTS = "incidents"
META = "incident.json"
ALERT = "alert.json"
CLOSED = "closed.json"
CLOSE_REQUEST = "close-requested.json"
CLOSE_LOCK = "close.lock"  # the archive leaves *.lock files out
MARKER = "faultbook-close-request"
CHECKPOINTS = ".ipynb_checkpoints"  # JupyterLab's autosave copies: not part of the record


log = logging.getLogger(__name__)


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


@contextlib.contextmanager
def _closing(folder: Path) -> Iterator[None]:
    """One close of FOLDER at a time (``--close`` and a save of the notebook may race):
    ``flock`` on ``close.lock`` in the folder."""
    try:
        f = open(folder / CLOSE_LOCK, "a")  # noqa: SIM115 - held for the whole close
    except OSError as exc:
        raise IncidentError(
            f"incident {folder}: cannot lock it to close it ({exc.strerror})"
        ) from None
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def close(
    inc: Incident,
    *,
    home: Path | None = None,
    revert: Callable[[Path], dict[str, Any] | None] | None = None,
    how: str = "faultbook notebook --close",
) -> Path:
    """File a finished incident into the archive (see the module's docstring); returns the
    archived folder. ``revert`` reverts faults journaled in the folder (default
    ``drills.rollback.rollback``; only called when there is a journal); ``how`` goes into
    closed.json."""
    with _closing(inc.path):
        check_open(inc)
        return _close(inc, home=home, revert=revert, how=how)


def check_open(inc: Incident) -> None:
    """IncidentError (one line) when INC is already closed."""
    if inc.closed is not None:
        raise IncidentError(
            f"incident {inc.path} is already closed ({inc.closed.get('closed_at')}; "
            f"archived as {inc.closed.get('archived', '?')})"
        )


def _close(
    inc: Incident,
    *,
    home: Path | None,
    revert: Callable[[Path], dict[str, Any] | None] | None,
    how: str,
) -> Path:
    from faultbook.drills import rollback
    from faultbook.report import runner

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
    closed = {"closed_at": iso(datetime.now(UTC)), "archived": str(archived), "how": how}
    (inc.path / CLOSED).write_text(json.dumps(closed, indent=2) + "\n")
    return archived


# -- closing from the notebook's last cell ----------------------------------------------


def open_incident_at(folder: Path) -> Incident | str:
    """The open incident whose folder is FOLDER, or why FOLDER is not one (a sentence)."""
    if store.parse_name(folder.name) is None or not folder.is_dir():
        return f"{folder} is not an incident folder"
    inc = _incident(folder)
    prepared = (folder / META).exists() or (folder / ALERT).exists()
    if not (inc.notebook.is_file() and prepared):
        return f"{folder} is not an incident folder (no {inc.notebook.name} with {META} or {ALERT})"
    if (folder / store.META).exists():
        return f"{folder} is an archived run, not an incident folder"
    if inc.closed is not None:
        return (
            f"incident {inc.name} is already closed (archived as {inc.closed.get('archived', '?')})"
        )
    return inc


def close_from_notebook() -> None:
    """The runbook's last cell: file this incident into the archive at the notebook's next save.

    In a notebook that ``faultbook notebook`` serves (the kernel's ``FAULTBOOK_RUN_DIR`` is
    an open incident folder that JupyterLab serves), this writes ``close-requested.json``
    (when, a unique marker) into the folder and prints one line that holds the marker.
    The server's post-save hook files the incident once a save of the notebook holds
    that line: JupyterLab autosaves within a few seconds, Ctrl-S saves at once.

    Anywhere else (papermill under ``faultbook run``, nbval, a closed incident, a kernel
    no incident server started) it prints in one line why there is nothing to close and
    does nothing. It never raises, so the runbooks stay valid under papermill and nbval.
    """
    # printed, not returned: a stream output is in the notebook whatever the cell does
    # with the value, and the save hook looks for the marker in the outputs
    run_dir = os.environ.get(_run_dir_env())
    line = request_close(run_dir)
    print(line, flush=True)  # noqa: T201
    if run_dir and f"[{MARKER}:" in line:
        wait_filed(Path(run_dir))


FILED_WAIT_S = 20.0  # how long the last cell waits for a save to file the incident


def wait_filed(
    folder: Path,
    timeout_s: float | None = None,
    *,
    say: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Keep the last cell running until a save has filed the incident in FOLDER (its
    closed.json exists), for at most TIMEOUT_S (``FILED_WAIT_S``); True once filed.

    JupyterLab can autosave the notebook while this cell runs, before the marker's output
    reaches the model, and then count the model as saved: the output that follows is
    never saved and the incident never filed. So while it waits, the cell adds a line of
    output after each autosave interval, and each line makes the notebook dirty again, so
    the next autosave holds the marker. It ends with what happened: where the incident
    was filed, or that Ctrl-S (or ``faultbook notebook --close``) files it."""
    from faultbook.oncall import jupyter

    tell = say or (lambda text: print(text, flush=True))  # noqa: T201
    limit = FILED_WAIT_S if timeout_s is None else timeout_s
    start = clock()
    nudge = start + jupyter.AUTOSAVE_S + 1
    while not (folder / CLOSED).exists():
        now = clock()
        if now - start >= limit:
            tell(
                f"faultbook: no save has filed the incident in {limit:g} s: press Ctrl-S, "
                f"or run: faultbook notebook --close {folder}"
            )
            return False
        if now >= nudge:
            tell(f"faultbook: waiting for a save of this notebook ({now - start:.0f} s)")
            nudge = now + jupyter.AUTOSAVE_S + 1
        sleep(0.5)
    where = _read(folder / CLOSED).get("archived", "the archive")
    tell(f"faultbook: incident filed: {where}")
    return True


def _run_dir_env() -> str:
    from faultbook.drills.procedure import RUN_DIR_ENV

    return RUN_DIR_ENV


def request_close(run_dir: str | None) -> str:
    """What :func:`close_from_notebook` does for the run directory RUN_DIR; returns the
    line it prints."""
    from faultbook.oncall import jupyter

    if not run_dir:
        return (
            f"faultbook: no incident to close here ({_run_dir_env()} is unset: this kernel "
            "was not started by `faultbook notebook`)"
        )
    found = open_incident_at(Path(run_dir))
    if isinstance(found, str):
        return f"faultbook: nothing to close: {found}"
    inc = found
    try:
        served = jupyter.serving(inc.path)
    except (OSError, FaultbookError):  # FAULTBOOK_HOME unusable: no server of ours found
        served = None
    if served is None:
        return (
            f"faultbook: incident {inc.name} is not served by `faultbook notebook`, so no save "
            f"will file it; close it with: faultbook notebook --close {inc.path}"
        )
    marker = f"{MARKER}:{secrets.token_hex(12)}"
    doc = {"requested_at": utcnow(), "marker": marker, "notebook": inc.notebook.name}
    tmp = inc.path / f".{CLOSE_REQUEST}.tmp"
    try:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(inc.path / CLOSE_REQUEST)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        return (
            f"faultbook: cannot ask for incident {inc.name} to be filed ({exc.strerror}); "
            f"close it with: faultbook notebook --close {inc.path}"
        )
    return (
        f"Incident {inc.name} is filed into the archive at the next save of this notebook "
        f"(autosave within {jupyter.AUTOSAVE_S} s, or Ctrl-S now). [{marker}]"
    )


def _outputs_text(notebook: Path) -> str:
    """The text of every output of NOTEBOOK's code cells (streams, results, displays)."""
    try:
        nb = json.loads(notebook.read_text())
    except (OSError, ValueError):
        return ""
    cells = nb.get("cells") if isinstance(nb, dict) else None
    parts: list[str] = []
    for cell in cells if isinstance(cells, list) else []:
        outputs = cell.get("outputs") if isinstance(cell, dict) else None
        for out in outputs if isinstance(outputs, list) else []:
            if not isinstance(out, dict):
                continue
            data = out.get("data")
            values = [out.get("text"), *(data.values() if isinstance(data, dict) else ())]
            for v in values:
                if isinstance(v, str):
                    parts.append(v)
                elif isinstance(v, list):
                    parts.extend(x for x in v if isinstance(x, str))
    return "\n".join(parts)


def close_on_save(
    saved: Path,
    *,
    home: Path | None = None,
    revert: Callable[[Path], dict[str, Any] | None] | None = None,
) -> tuple[Path | None, str]:
    """A notebook was just saved as SAVED: close its incident when that was asked for.

    Files the incident (``close``) when SAVED is an open incident's notebook, the folder
    has a close request, and an output in the saved file holds the request's marker (the
    executed last cell is on disk). Returns the archived folder and what happened, or
    None and why nothing was done."""
    found = open_incident_at(saved.parent)
    if isinstance(found, str):
        return None, found
    inc = found
    if saved.name != inc.notebook.name:
        return None, f"{saved.name} is not the notebook of incident {inc.name}"
    request = _read(inc.path / CLOSE_REQUEST)
    marker = request.get("marker")
    if not isinstance(marker, str) or not marker.startswith(MARKER):
        return None, f"incident {inc.name}: no close request"
    if marker not in _outputs_text(saved):
        return None, (
            f"incident {inc.name}: the saved notebook does not hold the close request's output yet"
        )
    archived = close(inc, home=home, revert=revert, how=f"notebook saved with {marker}")
    return archived, f"closed incident {inc.name} from its notebook: archived as {archived}"


def post_save_hook(
    model: Mapping[str, Any] | None = None,
    os_path: str = "",
    contents_manager: Any = None,
    **_: Any,
) -> None:
    """jupyter_server's ``FileContentsManager.post_save_hook`` of the incident servers:
    :func:`close_on_save` for every notebook saved. Logs to the server's log and never
    raises (an exception would turn the save into an error in JupyterLab)."""
    logger = getattr(contents_manager, "log", None) or log
    try:
        if (model or {}).get("type") != "notebook" or not os_path:
            return
        archived, what = close_on_save(Path(os_path))
    except FaultbookError as exc:
        logger.warning("faultbook: %s", exc)
        return
    except Exception:  # the server must go on saving; the log says why
        logger.exception(
            "faultbook: closing the incident of %s failed; close it with "
            "faultbook notebook --close once the server is stopped",
            os_path,
        )
        return
    if archived is not None:
        logger.info("faultbook: %s", what)
    else:
        logger.debug("faultbook: %s", what)
