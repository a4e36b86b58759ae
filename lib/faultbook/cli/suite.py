"""``faultbook suite run|list|check``: drill suites (suites/*.yml)."""

from __future__ import annotations

import sys

import click

from faultbook.cli.base import inventory_option, lock_wait_option, main


def _seconds(value: float | None, flag: str) -> float | None:
    import math

    from faultbook.errors import ParameterError

    if value is not None and not (math.isfinite(value) and value > 0):
        raise ParameterError(f"{flag} must be a number of seconds > 0, got {value}")
    return value


@main.group("suite")
def suite_group() -> None:
    """Drill suites: runbooks in turn, each from steady state, under the inventory's lock."""


@suite_group.command("list")
def list_cmd() -> None:
    """The suites shipped in suites/ and their entries."""
    from faultbook.suites import model

    for name in model.available():
        s = model.load(name)
        click.echo(f"{s.name}: {s.description}")
        for e in s.entries:
            roles = ", ".join(f"{t.param}={{role: {t.role}}}" for t in e.targets)
            click.echo(f"  {e.index:>2}. {e.name:<26} {e.runbook:<17} {roles}")


@suite_group.command("check")
@click.argument("suite")
def check_cmd(suite: str) -> None:
    """Validate SUITE (a name under suites/ or a YAML file) without running it."""
    from faultbook.suites import model

    s = model.load(suite)
    click.echo(f"suite {s.name}: {len(s.entries)} entries, valid")


@suite_group.command("run")
@click.argument("suite")
@inventory_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Report directory [default: reports/suite-SUITE-<UTC time>].",
)
@click.option(
    "--junit",
    "junit",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write JUnit XML (one test case per entry) to this file.",
)
@click.option(
    "--entry-timeout",
    "entry_timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="papermill's execution timeout for every entry (it bounds each cell).",
)
@lock_wait_option
def run_cmd(
    suite: str,
    inventory: str,
    out_dir: str | None,
    junit: str | None,
    entry_timeout: float | None,
    lock_wait: float,
) -> None:
    """Run SUITE's entries in turn on the inventory.

    \b
    Each entry starts only from steady state (else it is skipped, with the
    reason), gets its role targets resolved against the inventory, and runs
    with papermill like `faultbook run` (rolled back and archived whatever the
    ending). DIR/<entry>/ holds each run, DIR/suite.json the outcome.
    A run started by a schedule (FAULTBOOK_TRIGGER=schedule:NAME) announces its
    outcome to the inventory's drill_webhook_url (the lab: the decision log).
    Exit status: 0 every entry passed, 1 an entry failed or was skipped,
    2 usage error, 75 the inventory is busy (recorded as skipped).
    """
    from pathlib import Path

    from faultbook import inventory as inventory_mod
    from faultbook import lock
    from faultbook.errors import FaultbookError
    from faultbook.suites import demo, execute, model
    from faultbook.suites import junit as junit_mod

    _seconds(entry_timeout, "--entry-timeout")
    s = model.load(suite)
    if junit:
        junit_mod.check_path(junit)  # a bad --junit costs no run (exit 2)
    trigger = lock.default_trigger()
    res = execute.run_suite(
        s,
        inventory,
        Path(out_dir) if out_dir else None,
        entry_timeout_s=entry_timeout,
        trigger=trigger,
        lock_wait_s=lock_wait,
    )
    for e in res.entries:
        why = f": {e.reason}" if e.reason else ""
        click.echo(f"  {e.entry.index:>2}. {e.entry.name:<26} {e.status.upper():<8}{why}")
    if res.busy:
        click.echo(f"faultbook: suite {s.name} skipped: {res.busy}", err=True)
    if s.report == "demo" and res.entries:
        click.echo(f"report: {demo.report(res, res.out_dir).resolve()}")
    if junit:
        click.echo(f"junit: {junit_mod.write(res.entries, junit, suite=s.name)}")
    if trigger.startswith("schedule:"):
        try:
            where = execute.announce(res, inventory_mod.load(inventory))
            click.echo(f"outcome posted to {where}")
        except FaultbookError as exc:
            click.echo(f"faultbook: the outcome was not posted: {exc}", err=True)
    counts = res.counts()
    click.echo(
        f"suite {s.name}: {res.verdict.upper()} ({counts['pass']} passed, "
        f"{counts['fail']} failed, {counts['skipped']} skipped)"
    )
    sys.exit(res.exit_code)
