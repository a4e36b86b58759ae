"""Run a runbook with papermill: validate parameters, execute, render HTML, collect result.json.

papermill injects unknown parameters silently, so faultbook checks every
parameter against the notebook's ``parameters`` cell first: an unknown name
or a value that does not fit the declared type (``nan`` and ``inf`` are not
numbers here) is a usage error (exit 2) and nothing runs; so is a report
directory that cannot be created.

Rollback, whatever the ending. The notebook's ``Procedure`` journals every
fault in the run directory before injecting it (``drills.journal``). When the
notebook ends — normally, with an exception in a cell, a cell timeout
(``execution_timeout_s``), a dead kernel, Ctrl-C or SIGTERM — ``run`` makes
sure the kernel is gone, reverts every journaled fault not recorded as
reverted, waits for steady state (bounded) and writes result.json's
``rollback`` (``drills.rollback``)::

    {"faults": [{kind, target, outcome: reverted|already reverted|failed, detail, at, by}],
     "steady_state": {ok, detail, problems, primary, checked_at}}

A run that needed a rollback has the verdict "fail" and a step "rollback".
Then the run is archived, whatever its verdict: a copy of the run directory in
``$FAULTBOOK_HOME/runs/<UTC time>-<runbook>/`` and an entry in the audit log
(``archive.store``); an archive that cannot be written costs one line on stderr,
never the run, which stays in the run directory.
Progress goes to stderr: papermill's progress bar on a terminal, otherwise a
line per executed code cell.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from faultbook import lock
from faultbook.archive import store
from faultbook.drills import procedure, rollback
from faultbook.drills.journal import Journal, alive
from faultbook.errors import (
    FaultbookError,
    ParameterError,
    PreflightFailed,
    RunbookNotFound,
    UsageError,
)
from faultbook.paths import RUNBOOKS_DIR
from faultbook.results import MODES, Run, Summary

log = logging.getLogger(__name__)

# Parameters the runner itself supplies; runbooks declare them so they are not "unknown".
RUNNER_PARAMS = ("result_dir",)
_BOOL = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: str
    help: str


def runbooks() -> list[str]:
    return sorted(p.stem for p in RUNBOOKS_DIR.glob("*.ipynb"))


def runbook_path(name: str) -> Path:
    stem = Path(name).stem if name.endswith(".ipynb") else name
    path = RUNBOOKS_DIR / f"{stem}.ipynb"
    if not path.is_file():
        raise RunbookNotFound(f"unknown runbook {name!r}; available: {', '.join(runbooks())}")
    return path


def parameters(name: str) -> dict[str, Param]:
    """The declared parameters of a runbook, from its cell tagged ``parameters``."""
    import papermill

    info = papermill.inspect_notebook(str(runbook_path(name)))
    return {
        k: Param(
            k,
            str(v.get("inferred_type_name") or "None"),
            str(v.get("default")),
            str(v.get("help") or ""),
        )
        for k, v in info.items()
    }


def coerce(param: Param, value: Any) -> Any:
    """Convert a CLI string (or a Python value) to the parameter's declared type."""
    t = param.type.replace(" ", "")
    expected = f"parameter {param.name!r} expects {t}"
    if not isinstance(value, str):
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
        }.get(t.split("|")[0], True)
        if not ok:
            raise ParameterError(f"{expected}, got {type(value).__name__} {value!r}")
        _require_finite(param, value)
        return float(value) if t == "float" else value
    try:
        if t == "int":
            return int(value)
        if t == "float":
            out = float(value)
            _require_finite(param, out)
            return out
        if t == "bool":
            return _BOOL[value.strip().lower()]
        if t.startswith(("list", "dict")):
            parsed = yaml.safe_load(value)
            if not isinstance(parsed, list if t.startswith("list") else dict):
                raise ValueError
            _require_finite(param, parsed)
            return parsed
    except (ValueError, KeyError, yaml.YAMLError):
        raise ParameterError(f"{expected}, got {value!r}") from None
    return value


def _require_finite(param: Param, value: Any) -> None:
    """nan and inf parse as floats but no runbook means them: a usage error naming PARAM."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ParameterError(
            f"parameter {param.name!r} expects a finite number, got {value!r} "
            "(nan and inf are refused)"
        )
    if isinstance(value, list):
        for v in value:
            _require_finite(param, v)
    elif isinstance(value, dict):
        for v in value.values():
            _require_finite(param, v)


def prepare_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """The report directory, created; a one-line UsageError (exit 2) when it cannot be."""
    given = Path(out_dir)
    try:
        path = given.resolve()
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UsageError(
            f"--out {str(given)!r}: cannot create the report directory there: {why}"
        ) from None
    return path


def validate(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    declared = parameters(name)
    out = {}
    for k, v in given.items():
        if k not in declared or k in RUNNER_PARAMS:
            known = ", ".join(
                f"{p.name} ({p.type})" for p in declared.values() if p.name not in RUNNER_PARAMS
            )
            raise ParameterError(f"unknown parameter {k!r} for {name}; its parameters are: {known}")
        out[k] = coerce(declared[k], v)
    allowed = modes(name)
    if "mode" in out and out["mode"] not in allowed:
        raise ParameterError(
            f"parameter 'mode' expects one of {', '.join(allowed)}, got {out['mode']!r}"
        )
    return out


def modes(name: str) -> tuple[str, ...]:
    """The modes a runbook accepts: notebook metadata faultbook.modes, else incident/drill.

    Planned operations (e.g. db-failover's switchover) are extra modes; result.json
    records them as "drill" (run unattended, measured) with the mode in parameters.
    """
    import nbformat

    nb = nbformat.read(runbook_path(name), as_version=4)
    extra = nb.metadata.get("faultbook", {}).get("modes")
    return tuple(extra) if extra else MODES


@dataclass(frozen=True)
class RunOutcome:
    notebook: Path
    html: Path
    result: Path
    summary: Summary
    usage_error: bool = False  # the notebook stopped on bad input (a UsageError)
    interrupted: int | None = None  # the signal that ended the run (SIGINT, SIGTERM)
    rollback: dict[str, Any] | None = None  # result.json's rollback, when one was needed
    refused: str | None = None  # the pre-flight's reason, when the drill refused to start
    archived: Path | None = None  # the run's folder in the archive (None: not archived)

    @property
    def exit_code(self) -> int:
        if self.interrupted is not None:
            return 128 + self.interrupted
        if self.usage_error:
            return 2
        return 0 if self.summary.verdict == "pass" else 1


def _usage_error_names() -> set[str]:
    from faultbook import errors

    names: set[str] = set()
    todo: list[type] = [errors.UsageError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


class Interrupted(BaseException):
    """SIGTERM (or SIGINT) reached ``faultbook run``: stop the notebook, then roll back."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --------------------------------------------------------------------- progress
_STEP = re.compile(r"""step\(\s*f?(["'])(.+?)\1""")


def cell_label(source: str) -> str:
    """What a code cell does, for a progress line: its first ``run.step`` name, or its
    first line of code."""
    m = _STEP.search(source)
    if m:
        return m.group(2)
    for line in source.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line if len(line) <= 60 else line[:59] + "…"
    return "(empty)"


class _Progress:
    """One line per executed code cell on stderr (papermill's bar covers terminals)."""

    def __init__(self, stem: str, stream: Any = None) -> None:
        self.stem = stem
        self.code: list[int] = []
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()

    def bind(self, cells: list[Any]) -> None:
        """The notebook as executed (papermill has added its injected-parameters cell)."""
        self.code = [i for i, c in enumerate(cells) if c.get("cell_type") == "code"]

    def cell(self, index: int, source: str) -> None:
        if index not in self.code:
            return
        n = self.code.index(index) + 1
        elapsed = time.monotonic() - self.t0
        self.stream.write(
            f"faultbook: {self.stem}: cell {n}/{len(self.code)} [{elapsed:4.0f} s] "
            f"{cell_label(source)}\n"
        )
        self.stream.flush()


# The engine's notebook client of the run in progress: its kernel is killed when the
# run ends abnormally (the notebook must not go on injecting while we roll back).
_CLIENTS: list[Any] = []


def _engine(progress: _Progress | None) -> str:
    """Register (once per call) a papermill engine that keeps its client and reports cells."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.utils import merge_kwargs, remove_args

    class FaultbookEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(
            cls,
            nb_man: Any,
            kernel_name: str,
            log_output: bool = False,
            stdout_file: Any = None,
            stderr_file: Any = None,
            start_timeout: int = 60,
            execution_timeout: int | None = None,
            **kwargs: Any,
        ) -> Any:
            if progress is not None:
                progress.bind(list(nb_man.nb.cells))
            start = nb_man.cell_start

            def cell_start(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
                out = start(cell, cell_index, **kw)
                source = str(cell.get("source", ""))
                if progress is not None and cell_index is not None:
                    progress.cell(cell_index, source)
                elif getattr(nb_man, "pbar", None) and cell.get("cell_type") == "code":
                    nb_man.pbar.set_description(cell_label(source)[:40])  # the terminal's bar
                return out

            nb_man.cell_start = cell_start
            kwargs = remove_args(["input_path"], **kwargs)
            safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
            final_kwargs = merge_kwargs(
                safe_kwargs,
                timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
                startup_timeout=start_timeout,
                kernel_name=kernel_name,
                log=logging.getLogger("papermill"),
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
            )
            client = PapermillNotebookClient(nb_man, **final_kwargs)
            _CLIENTS.append(client)
            return client.execute()

    papermill_engines.register("faultbook", FaultbookEngine)
    return "faultbook"


def _kill_kernels() -> None:
    """SIGKILL the kernel of the run (its own process group) if it still runs."""
    while _CLIENTS:
        client = _CLIENTS.pop()
        prov = getattr(getattr(client, "km", None), "provisioner", None)
        pgid = getattr(prov, "pgid", None) or getattr(prov, "pid", None)
        if pgid:
            with contextlib.suppress(OSError):
                os.killpg(int(pgid), signal.SIGKILL)


def _kill_owners(journal: Journal) -> None:
    """The process that journaled a fault (the kernel) must not outlive the run."""
    for e in journal.entries():
        if alive(e.owner) and int(e.owner["pid"]) != os.getpid():
            with contextlib.suppress(OSError):
                os.kill(int(e.owner["pid"]), signal.SIGKILL)


@contextlib.contextmanager
def _signals(handler: Callable[[int, Any], None] | None) -> Iterator[None]:
    """Install HANDLER for SIGINT and SIGTERM (main thread only); restore afterwards."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


def _shield(signum: int, _frame: Any) -> None:
    sys.stderr.write(
        f"faultbook: {signal.Signals(signum).name} ignored: reverting the drill's faults first "
        "(bounded; the watchdog covers lab faults if this process is killed)\n"
    )
    sys.stderr.flush()


# ------------------------------------------------------------------------- run
def deliberate(values: Mapping[str, Any]) -> bool:
    """A run whose faults are deliberate: a drill, or a planned switchover."""
    return values.get("mode") in ("drill", "switchover") or values.get("drill") is True


def run(
    name: str,
    params: Mapping[str, Any],
    out_dir: Path,
    *,
    execution_timeout_s: float | None = None,
    progress: bool | None = None,
    lock_wait_s: float = 0.0,
) -> RunOutcome:
    """Execute a runbook; write DIR/NAME.ipynb, DIR/NAME.html and DIR/result.json.

    The run holds the inventory's run lock (``faultbook.lock``; waits up to
    ``lock_wait_s``, else ``InventoryBusy``, exit 75), marked as a drill when its
    faults are deliberate (``deliberate``), so that the alert receiver starts no
    recovery behind it. Whatever the ending, the faults the notebook journaled
    and did not revert are reverted afterwards (see the module's docstring), then
    the run is archived. ``execution_timeout_s`` bounds each cell (papermill's
    execution_timeout). ``progress``: None shows papermill's bar on a terminal and
    a line per cell otherwise, False shows nothing.
    """
    stem = runbook_path(name).stem
    values = validate(stem, params)
    key = lock.key(values.get("inventory", "lab"))
    with lock.hold(key, f"run {stem}", wait_s=lock_wait_s, drill=deliberate(values)):
        return _run(name, values, out_dir, execution_timeout_s, progress)


def _run(
    name: str,
    params: Mapping[str, Any],
    out_dir: Path,
    execution_timeout_s: float | None,
    progress: bool | None,
) -> RunOutcome:
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    src = runbook_path(name)
    stem = src.stem
    values = validate(stem, params)
    out_dir = prepare_out_dir(out_dir)
    started = time.time()
    nb_out = out_dir / f"{stem}.ipynb"
    result = out_dir / "result.json"
    result.unlink(missing_ok=True)
    rollback.retire_journal(out_dir)
    error: str | None = None
    usage = False
    refused: str | None = None
    interrupted: int | None = None
    tty = progress is None and sys.stderr.isatty()
    lines = None
    if progress is not False and not tty:
        lines = _Progress(stem)
    old_env = os.environ.get(procedure.RUN_DIR_ENV)
    os.environ[procedure.RUN_DIR_ENV] = str(out_dir)
    try:
        with _signals(_raise_interrupted):
            papermill.execute_notebook(
                str(src),
                str(nb_out),
                parameters={**values, "result_dir": str(out_dir)},
                kernel_name="python3",
                engine_name=_engine(lines),
                cwd=str(src.parent),
                progress_bar=tty,
                log_output=False,
                execution_timeout=int(math.ceil(execution_timeout_s))
                if execution_timeout_s
                else None,
            )
    except PapermillExecutionError as exc:
        error = f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
        usage = exc.ename in _usage_error_names()
        if exc.ename == PreflightFailed.__name__:
            refused = str(exc.evalue).removeprefix("pre-flight: ")
        log.error("runbook %s failed at %s", stem, error)
    except CellTimeoutError as exc:
        error = f"a cell ran longer than {execution_timeout_s:g} s (execution timeout): {exc}"
        log.error("runbook %s: %s", stem, error)
    except DeadKernelError as exc:
        error = f"the notebook's kernel died: {exc}"
        log.error("runbook %s: %s", stem, error)
    except (KeyboardInterrupt, Interrupted) as exc:
        interrupted = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        error = f"interrupted by {signal.Signals(interrupted).name}"
        log.error("runbook %s %s", stem, error)
    except Exception as exc:  # noqa: BLE001 - whatever papermill raised: still roll back
        error = f"{type(exc).__name__}: {exc}"
        log.error("runbook %s: %s", stem, error)
    finally:
        if old_env is None:
            os.environ.pop(procedure.RUN_DIR_ENV, None)
        else:
            os.environ[procedure.RUN_DIR_ENV] = old_env
    with _signals(_shield):
        if error is not None:
            _kill_kernels()
            _kill_owners(Journal(out_dir))
        _CLIENTS.clear()
        rb = rollback.rollback(out_dir, ended_badly=error is not None)
        if rb is not None:
            sys.stderr.write(f"faultbook: rollback: {rollback.summary(rb)}\n")
            sys.stderr.flush()
        html = _render_or_none(nb_out)
        if not result.exists():
            # The notebook stopped before it could record its own result.
            mode = str(values.get("mode", "incident"))
            r = Run.start(stem, mode if mode in MODES else "drill", values)
            r.fault = rollback.journaled_fault(out_dir)
            if refused:
                r.fail("pre-flight", refused)
            else:
                r.fail("execute", error or "the runbook finished without writing result.json")
            r.finish()
            r.save(out_dir)
        elif error:
            doc = json.loads(result.read_text())
            doc["verdict"] = "fail"
            result.write_text(json.dumps(doc, indent=2) + "\n")
        if rb is not None:
            rollback.record(result, rb)
        archived = archive(out_dir, stem, values, since=started)
    return RunOutcome(
        nb_out, html, result, Summary.from_file(result), usage, interrupted, rb, refused, archived
    )


def archive(
    out_dir: Path, runbook: str, values: Mapping[str, Any], since: float | None = None
) -> Path | None:
    """Copy a finished run into the archive; on failure one line on stderr and None (the
    run stays in OUT_DIR)."""
    try:
        return store.archive(out_dir, runbook, params=values, since=since)
    except FaultbookError as exc:
        sys.stderr.write(f"faultbook: the run is not archived: {exc}; it stays in {out_dir}\n")
        sys.stderr.flush()
        return None


def _render_or_none(notebook: Path) -> Path:
    """The HTML report; when papermill never wrote the notebook, a note instead."""
    if notebook.exists():
        try:
            return render_html(notebook)
        except Exception as exc:  # noqa: BLE001 - the HTML is a convenience; result.json counts
            log.error("cannot render %s: %s", notebook, exc)
    html = notebook.with_suffix(".html")
    html.write_text("<p>the notebook was not executed; see result.json</p>\n")
    return html


def render_html(notebook: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    html = notebook.with_suffix(".html")
    html.write_text(body)
    return html
