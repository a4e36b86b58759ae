"""``faultbook notebook`` and ``faultbook postmortem``: the on-call path (docs/oncall.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from faultbook.cli.base import main


def _looks_like_path(arg: str) -> bool:
    return "/" in arg or Path(arg).is_dir() or (arg.endswith(".ipynb") and Path(arg).is_file())


@main.command("notebook")
@click.argument("runbook", required=False)
@click.option(
    "-p",
    "--param",
    "params",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="Set a runbook parameter (checked against its parameters cell, as `faultbook run`).",
)
@click.option(
    "--port",
    type=int,
    default=8888,
    show_default=True,
    help="Serve on 127.0.0.1:PORT (0: any free port).",
)
@click.option("--no-serve", is_flag=True, help="Only prepare the incident folder.")
@click.option("--list", "list_", is_flag=True, help="List the open incidents.")
@click.option("--open", "open_", metavar="DIR", help="Serve an incident prepared earlier.")
@click.option("--close", metavar="DIR", help="File a finished incident into the archive.")
@click.option(
    "--ready-timeout",
    type=float,
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for JupyterLab to answer.",
)
def notebook_cmd(
    runbook: str | None,
    params: tuple[tuple[str, str], ...],
    port: int,
    no_serve: bool,
    list_: bool,
    open_: str | None,
    close: str | None,
    ready_timeout: float,
) -> None:
    """Open RUNBOOK for an incident in JupyterLab, on a copy.

    \b
    faultbook notebook RUNBOOK [-p NAME VALUE]…  check the parameters as `faultbook run`
        does, copy the runbook with them filled in into a new incident folder
        ($FAULTBOOK_HOME/incidents/<UTC time>-RUNBOOK/), serve JupyterLab on it
    faultbook notebook --open DIR (or DIR, or DIR/RUNBOOK.ipynb)  serve an incident
        prepared earlier (by --no-serve or by the alert receiver)
    faultbook notebook --list                    the open incidents
    faultbook notebook --close DIR               file it: notebook, HTML, result.json
        (mode incident) into the archive and the audit log; the runbook's last cell
        (incident.close_from_notebook()) files it too, at the notebook's next save
    JupyterLab listens on 127.0.0.1 only, with a token, runs as root, opens no browser
    and uses the project's kernel; the URL and an SSH-tunnel command are printed.
    Ctrl-C stops it (the incident stays open until it is closed).
    """
    from faultbook.errors import UsageError
    from faultbook.oncall import incident, jupyter

    chosen = [n for n, v in (("--list", list_), ("--open", open_), ("--close", close)) if v]
    if runbook:
        chosen.append("RUNBOOK")
    if len(chosen) != 1:
        raise UsageError(
            "faultbook notebook: give one of RUNBOOK, --open DIR, --close DIR or --list"
            + (f" (got {', '.join(chosen)})" if chosen else "")
        )
    if params and (list_ or close):
        raise UsageError("-p sets a parameter of a runbook being prepared; give RUNBOOK too")
    if list_:
        _list(incident.open_incidents())
        return
    if close:
        _close(incident.resolve(close))
        return
    if runbook and _looks_like_path(runbook) and not _is_checkout_runbook(runbook):
        open_ = runbook
    if open_:
        if params:
            raise UsageError(
                f"{open_}: a prepared notebook has its parameters already; -p is for RUNBOOK"
            )
        inc = incident.resolve(open_)
        if inc.closed is not None:
            raise UsageError(
                f"incident {inc.path} is closed (archived as {inc.closed.get('archived')})"
            )
        incident.set_kernel(inc.notebook, jupyter.KERNEL)
    else:
        assert runbook is not None
        port = jupyter.check_port(port) if not no_serve else port  # before anything is made
        inc = incident.prepare(runbook, dict(params), kernel=jupyter.KERNEL)
        click.echo(f"incident folder: {inc.path}")
        click.echo(f"notebook: {inc.notebook}")
    if no_serve:
        click.echo(f"open it with: faultbook notebook --open {inc.path}")
        click.echo(f"close it with: faultbook notebook --close {inc.path}")
        return
    _serve(inc, jupyter.check_port(port), ready_timeout)


def _is_checkout_runbook(arg: str) -> bool:
    from faultbook.paths import RUNBOOKS_DIR

    try:
        Path(arg).resolve().relative_to(RUNBOOKS_DIR.resolve())
    except ValueError:
        return False
    return True


def _list(found: list[Any]) -> None:
    from faultbook.oncall import incident

    if not found:
        click.echo(f"no open incidents in {incident.incidents_root()}")
        return
    click.echo(f"{'incident':<40} {'runbook':<18} {'prepared by':<28} result")
    for i in found:
        click.echo(f"{i.name:<40} {i.runbook:<18} {i.source:<28} {i.verdict or 'none yet'}")
    click.echo(f"(in {incident.incidents_root()}; close one with: faultbook notebook --close DIR)")


def _close(inc: object) -> None:
    from faultbook.errors import IncidentError
    from faultbook.oncall import incident, jupyter

    assert isinstance(inc, incident.Incident)
    incident.check_open(inc)  # closed from its notebook: "already closed", served or not
    live = jupyter.serving(inc.path)
    if live:
        raise IncidentError(
            f"incident {inc.path} is still served by JupyterLab (pid {live.get('pid')}, port "
            f"{live.get('port')}): save the notebook, stop the server (Ctrl-C), then close"
        )
    archived = incident.close(inc)
    click.echo(f"closed {inc.name}: verdict {inc.verdict or '?'}")
    click.echo(f"archived: {archived}")


def _serve(inc: object, port: int, ready_timeout: float) -> None:
    import signal

    from faultbook.oncall import incident, jupyter

    assert isinstance(inc, incident.Incident)
    server = jupyter.start(inc.path, inc.notebook.name, port)

    def _term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _term)
    try:
        server.wait_ready(ready_timeout)
        click.echo(f"JupyterLab: {server.url}")
        click.echo(f"from another machine: {jupyter.tunnel(port)}")
        click.echo(f"  then open the URL above in a browser there; log: {server.log}")
        click.echo(
            "when done: run the runbook's last cell (it files the incident at the next save), "
            f"or Ctrl-C here, then faultbook notebook --close {inc.path}"
        )
        _wait(server, inc)
        click.echo(
            f"faultbook: JupyterLab exited ({server.process.returncode}); log: {server.log}",
            err=True,
        )
        sys.exit(1)
    except KeyboardInterrupt:
        state = "is closed" if inc.closed is not None else "stays open"
        click.echo(f"stopping JupyterLab (the incident {state})")
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, old)


def _wait(server: object, inc: object) -> None:
    """Until JupyterLab exits; says so once when the notebook filed the incident."""
    import subprocess

    from faultbook.oncall import incident, jupyter

    assert isinstance(server, jupyter.Server) and isinstance(inc, incident.Incident)
    announced = inc.closed is not None
    while True:
        try:
            server.process.wait(timeout=1.0)
            return
        except subprocess.TimeoutExpired:
            pass
        closed = inc.closed
        if closed is not None and not announced:
            announced = True
            click.echo(f"closed from the notebook: archived as {closed.get('archived', '?')}")
            click.echo("JupyterLab goes on serving the folder until Ctrl-C")


@main.command("postmortem")
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the draft goes [default: reports/postmortem-<UTC time>].",
)
@click.option(
    "--before",
    "before_s",
    type=float,
    default=600.0,
    show_default=True,
    metavar="SECONDS",
    help="Read the decision log from this long before the first run started.",
)
def postmortem_cmd(run_dirs: tuple[str, ...], out_dir: str | None, before_s: float) -> None:
    """Draft a postmortem (Markdown and HTML) from archived runs' records.

    \b
    RUN_DIR: an archived run ($FAULTBOOK_HOME/runs/…), a closed incident's folder or a
    run's --out directory; several for an incident, the alert's run, drills around it.
    Writes DIR/postmortem.md, DIR/postmortem.html and DIR/timeline-N.png: summary,
    impact as clients saw it, a UTC timeline (decision log, steps, confirmations,
    recovery), objectives missed, steps failed or retried, and TODO placeholders for
    what only a person knows (cause, lessons, actions).
    """
    import math
    from datetime import UTC, datetime

    from faultbook.errors import ParameterError
    from faultbook.oncall import postmortem
    from faultbook.report import runner

    if not (math.isfinite(before_s) and before_s >= 0):
        raise ParameterError(f"--before must be a number of seconds >= 0, got {before_s}")
    for d in run_dirs:
        postmortem.load(d)  # every RUN_DIR checked before --out is made
    if out_dir is None:
        out_dir = f"reports/postmortem-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    out = runner.prepare_out_dir(out_dir)
    md, page = postmortem.write(run_dirs, out, before_s=before_s)
    click.echo(f"draft: {md}")
    click.echo(f"html: {page}")
