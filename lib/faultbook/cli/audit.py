"""``faultbook audit verify`` and ``faultbook archive prune``: the run archive's audit trail
and retention."""

from __future__ import annotations

import sys

import click

from faultbook.cli.base import main


@main.group("audit")
def audit_group() -> None:
    """The audit log of every archived run ($FAULTBOOK_HOME/audit.jsonl)."""


@audit_group.command("verify")
@click.option("--all", "show_all", is_flag=True, help="List every problem, not only the first.")
def verify_cmd(show_all: bool) -> None:
    """Check the hash chain and every archived file against its entry.

    \b
    Finds an edited, removed or reordered entry, entries cut off the end, and
    an archived file that changed, went missing or was added; names the first.
    Exit status 0 when all is intact, 1 otherwise.
    """
    from faultbook.archive import audit

    rep = audit.verify()
    if show_all:
        for p in sorted(rep.problems, key=lambda p: p.line):
            click.echo(f"  {p.text}", err=True)
    click.echo(rep.summary())
    sys.exit(0 if rep.ok else 1)


@main.group("archive")
def archive_group() -> None:
    """The run archive ($FAULTBOOK_HOME/runs/)."""


@archive_group.command("prune")
@click.option("--keep", default=None, metavar="N", help="Keep the newest N runs per runbook.")
@click.option("--days", default=None, metavar="D", help="And every run younger than D days.")
@click.option(
    "-i",
    "--inventory",
    default=None,
    help="Read archive_keep_runs / archive_keep_days from this inventory.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
def prune_cmd(keep: str | None, days: str | None, inventory: str | None, dry_run: bool) -> None:
    """Remove the runs the retention policy does not keep; record it in the audit log.

    \b
    A run is kept while it is one of its runbook's N newest or younger than D
    days. Defaults: $FAULTBOOK_HOME/archive.yml (keep_runs, keep_days), then the
    inventory's archive_keep_runs / archive_keep_days, then 50 runs or 90 days.
    """
    from faultbook.archive import retention

    inv_vars = None
    if inventory is not None:
        from faultbook.cli.base import load_inventory

        inv_vars = load_inventory(inventory).vars
    policy = retention.policy(keep, days, inventory_vars=inv_vars)
    done = retention.prune(policy, dry_run=dry_run)
    for path in done.removed:
        click.echo(f"  {path}")
    for why in done.failed:
        click.echo(f"faultbook: cannot remove {why}", err=True)
    verb = "would remove" if dry_run else "removed"
    seq = f" (audit entry {done.entry['seq']})" if done.entry else ""
    click.echo(f"{verb} {len(done.removed)} runs{seq}; policy: {policy}")
    sys.exit(1 if done.failed else 0)
