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
    Exit status: 0 verdict pass, 1 objective missed, step failed, pre-flight
    refused or rollback needed, 2 usage error, 75 inventory busy,
    130/143 interrupted (SIGINT/SIGTERM).
    `faultbook runbooks` lists the runbooks and their parameters.
    """
    import math
    from datetime import UTC, datetime
    from pathlib import Path

    from faultbook.errors import ParameterError
    from faultbook.report import runner

    if cell_timeout is not None and not (math.isfinite(cell_timeout) and cell_timeout > 0):
        raise ParameterError(f"--cell-timeout must be a number of seconds > 0, got {cell_timeout}")
    path = runner.runbook_path(runbook)
    values = runner.validate(path.stem, dict(params))
    if out_dir is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out_dir = str(Path("reports") / f"{path.stem}-{stamp}")
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
    sys.exit(outcome.exit_code)


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
    """Run the health check and the three drills in turn; write one report.

    \b
    DIR/<drill>/ holds each executed notebook, its HTML, result.json and the
    client records; DIR/summary.md (RTO, lost writes, failed requests per
    drill), DIR/timeline.png and DIR/index.html tie them together.
    Exit status 0 when every runbook passed, 1 otherwise.
    """
    import csv
    from pathlib import Path

    from faultbook.report import demo

    index = demo.build(Path(out_dir))
    click.echo((Path(out_dir) / "summary.md").read_text())
    click.echo(f"report: {index.resolve()}")
    with open(Path(out_dir) / "summary.csv") as f:
        verdicts = [row["verdict"] for row in csv.DictReader(f)]
    sys.exit(0 if all(v == "pass" for v in verdicts) else 1)


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
