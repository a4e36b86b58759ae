"""``faultbook backup``: list the repository's backups, take one now."""

from __future__ import annotations

import click

from faultbook.cli.base import _Group, inventory_option, load_inventory, main


# ------------------------------------------------------------------ backup
@main.group(cls=_Group)
def backup() -> None:
    """pgBackRest backups on the repository host: list them, take one now."""


@backup.command("list")
@inventory_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backup_list(inventory: str, as_json: bool) -> None:
    """List the backups of the stanza, oldest first, with the archived WAL range."""
    from faultbook.backup import repository

    inv = load_inventory(inventory)
    info = repository.info(inv)
    name = repository.stanza_name(inv)
    df = repository.backups(info, name)
    if as_json:
        click.echo(df.to_json(orient="records", date_format="iso", indent=2))
        return
    code, message = repository.repository_status(info, name)
    first, last = repository.archive_range(info, name)
    click.echo(f"stanza {name}: {message} (status {code}); archived WAL {first} .. {last}")
    click.echo(repository.table(df))


@backup.command("now")
@click.option(
    "--type",
    "backup_type",
    type=click.Choice(["full", "diff", "incr"]),
    default="incr",
    show_default=True,
    help="Backup type (pgBackRest takes a full one when there is none).",
)
@inventory_option
def backup_now(backup_type: str, inventory: str) -> None:
    """Take a backup now (playbooks/backup_now.yml) and print its label."""
    from faultbook import ansible
    from faultbook.backup import repository

    inv = load_inventory(inventory)
    run = repository.run_backup(inv, backup_type, ansible.progress_printer(click.echo))
    size = run.row.get("size")
    click.echo(
        f"backup {run.label}: {run.type}, {run.duration_s:.0f}s"
        + (f", {repository.human_bytes(float(size))}" if size is not None else "")
    )
