"""``faultbook schedule add|list|remove``: suites on the machine's scheduler (systemd
timers, else Debian's cron)."""

from __future__ import annotations

import click

from faultbook.cli.base import inventory_option, main


@main.group("schedule")
def schedule_group() -> None:
    """Run a suite on a schedule, with the machine's own scheduler."""


@schedule_group.command("add")
@click.argument("suite")
@click.option(
    "--cron",
    "cron",
    required=True,
    metavar="EXPR",
    help='When, as a cron expression: "0 3 * * *", "*/30 8-18 * * mon-fri", @daily.',
)
@inventory_option
@click.option("--name", "name", default=None, help="The schedule's name [default: SUITE].")
def add_cmd(suite: str, cron: str, inventory: str, name: str | None) -> None:
    """Run SUITE on INVENTORY whenever CRON says.

    \b
    A systemd timer where PID 1 is systemd, else /etc/cron.d/faultbook-NAME
    (cron is installed and started when it is not). Each run is
    `faultbook suite run SUITE -i INVENTORY` with FAULTBOOK_TRIGGER=schedule:NAME:
    a busy inventory or a stack out of steady state is recorded as skipped,
    and the outcome goes to the inventory's drill_webhook_url (the lab: the
    decision log).
    """
    from faultbook.cli.base import load_inventory
    from faultbook.suites import model, schedule

    s = model.load(suite)  # a bad suite is refused now, not at 3 a.m.
    load_inventory(inventory)
    schedule.parse_cron(cron)
    sched = schedule.Scheduler()
    done = sched.add(schedule.Schedule(name or s.name, suite, cron, inventory))
    click.echo(
        f"schedule {done.name}: suite {done.suite} on {done.inventory} at {done.cron!r} "
        f"({done.backend}: {', '.join(done.files)})"
    )


@schedule_group.command("list")
def list_cmd() -> None:
    """The schedules faultbook made, on either scheduler."""
    from faultbook.suites import schedule

    found = schedule.Scheduler().schedules()
    if not found:
        click.echo("no schedules")
    for s in found:
        click.echo(f"{s.name:<20} {s.suite:<12} {s.inventory:<10} {s.cron!r:<22} {s.backend}")


@schedule_group.command("remove")
@click.argument("name")
def remove_cmd(name: str) -> None:
    """Remove schedule NAME (its timer or its cron file)."""
    from faultbook.suites import schedule

    done = schedule.Scheduler().remove(name)
    click.echo(f"removed schedule {done.name} ({done.backend}: {', '.join(done.files)})")
