"""``faultbook run``, ``demo`` and ``runbooks``: runbooks executed with papermill."""

from __future__ import annotations

import sys

import click

from faultbook.cli.base import lock_wait_option, main


@main.command("run")
@click.argument("runbook")
@click.option(
    "-p",
    "--param",
    "params",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="Set a runbook parameter (checked against its parameters cell).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Report directory [default: reports/RUNBOOK-<UTC time>].",
)
@click.option(
    "--junit",
    "junit",
    type=click.Path(),  # checked by junit.check_path: one line, before the run
    default=None,
    metavar="FILE",
    help="Also write JUnit XML (one test case: the run) to this file.",
)
@click.option(
    "--cell-timeout",
    "cell_timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Stop the runbook when one cell runs longer (then roll back) [default: no limit].",
)
@lock_wait_option
def run_cmd(
    runbook: str,
    params: tuple[tuple[str, str], ...],
    out_dir: str | None,
    junit: str | None,
    cell_timeout: float | None,
    lock_wait: float,
) -> None:
    """Execute RUNBOOK with papermill and write a report.

    \b
    Writes DIR/RUNBOOK.ipynb (executed), DIR/RUNBOOK.html and DIR/result.json.
    Whatever the ending (a failed cell, Ctrl-C, SIGTERM, a dead kernel), every
    fault the drill journaled (DIR/faults.jsonl) and did not revert is reverted
    afterwards, and result.json records the rollback.
    One run at a time per inventory: the run holds the inventory's run lock
    (shared with suites, schedules and the alert receiver); another holder
    makes it wait up to --lock-wait seconds, then refuse naming the holder.
    --junit FILE writes the run as one JUnit test case (its metrics as
    properties, a failure listing the failed steps and missed objectives when
    the verdict is not pass); FILE is checked before the runbook starts.
    Exit status: 0 verdict pass, 1 objective missed, step failed, pre-flight
    refused or rollback needed, 2 usage error, 75 inventory busy,
    130/143 interrupted (SIGINT/SIGTERM).
    `faultbook runbooks` lists the runbooks and their parameters.
    """
    import math
    from datetime import UTC, datetime
    from pathlib import Path

    from faultbook.errors import FaultbookError, ParameterError
    from faultbook.report import runner
    from faultbook.suites import junit as junit_mod

    if cell_timeout is not None and not (math.isfinite(cell_timeout) and cell_timeout > 0):
        raise ParameterError(f"--cell-timeout must be a number of seconds > 0, got {cell_timeout}")
    path = runner.runbook_path(runbook)
    values = runner.validate(path.stem, dict(params))
    if out_dir is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out_dir = str(Path("reports") / f"{path.stem}-{stamp}")
    junit_path = junit_mod.check_path(junit) if junit else None  # one line, before the run
    out = runner.prepare_out_dir(out_dir)  # a one-line usage error when it cannot be made
    click.echo(f"running {path.stem} -> {out_dir}")
    # runner.run holds the inventory's run lock (InventoryBusy: exit 75).
    outcome = runner.run(
        path.stem, values, out, execution_timeout_s=cell_timeout, lock_wait_s=lock_wait
    )
    s = outcome.summary
    if outcome.refused:
        click.echo(f"faultbook: drill refused: {outcome.refused}", err=True)
    click.echo(f"verdict: {s.verdict.upper()}")
    for line in s.failed_steps + s.missed_objectives:
        click.echo(f"  - {line}")
    click.echo(f"report: {outcome.html}")
    click.echo(f"result: {outcome.result}")
    code = outcome.exit_code
    if junit_path is not None:
        try:
            written = junit_mod.write([junit_mod.run_case(outcome)], junit_path, suite=path.stem)
            click.echo(f"junit: {written}")
        except FaultbookError as exc:  # the run is done and archived: say so, fail the command
            click.echo(f"faultbook: the JUnit XML is not written: {exc}", err=True)
            code = code or 1
    sys.exit(code)


@main.command("demo")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="reports/demo",
    show_default=True,
    help="Report directory.",
)
def demo_cmd(out_dir: str) -> None:
    """Run the demo suite on the lab: the health check, a drill per tier and a PITR drill.

    \b
    Runs suites/demo.yml as `faultbook suite run demo --out DIR` does (each
    drill from steady state, else skipped with the reason; its target resolved
    from a role; every run archived), with the lab's run lock held as a drill
    from the first entry to the last (waiting up to 5 minutes for a run in
    progress). DIR/<entry>/ holds each executed notebook, its HTML, result.json
    and the client records; DIR/summary.md and summary.csv (RTO, lost writes,
    failed requests per drill), DIR/summary.png, DIR/timeline.png and
    DIR/index.html tie them together; DIR/suite.json has each entry's status.
    Exit status: 0 every runbook passed, 1 one failed or was skipped,
    2 usage error, 75 the lab is busy (recorded as skipped), 130/143 interrupted.
    """
    from pathlib import Path

    from faultbook.suites import demo

    done = demo.build(Path(out_dir))
    res = done.suite
    if res.busy:
        click.echo(f"faultbook: demo skipped: {res.busy}", err=True)
    if done.index is not None:
        click.echo((done.index.parent / "summary.md").read_text())
        click.echo(f"report: {done.index.resolve()}")
    counts = res.counts()
    click.echo(
        f"demo: {res.verdict.upper()} ({counts['pass']} passed, "
        f"{counts['fail']} failed, {counts['skipped']} skipped)"
    )
    sys.exit(done.exit_code)


@main.command("runbooks")
def runbooks_cmd() -> None:
    """List the runbooks and their parameters."""
    from faultbook.report import runner

    for name in runner.runbooks():
        click.echo(name)
        for p in runner.parameters(name).values():
            if p.name in runner.RUNNER_PARAMS:
                continue
            click.echo(f"  {p.name:<14} {p.type:<6} default {p.default:<12} {p.help}")
