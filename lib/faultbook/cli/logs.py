"""``faultbook logs``: the central logs (every host's journal, as the mon hosts hold it)."""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from typing import Any

import click

from faultbook.cli.base import inventory_option, load_inventory, main


def _line(row: Mapping[Hashable, Any]) -> str:
    """journalctl's short form, in UTC: continuation lines of a message indented under it."""
    time = row["time"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    who = str(row["identifier"] or row["unit"] or "-")
    head = f"{time} {row['host']} {row['unit'] or '-'} {row['priority_name']} {who}: "
    return head + str(row["message"]).replace("\n", "\n" + " " * len(head))


@main.command("logs")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="HOST",
    help="Inventory host or group (repeatable; default: every host).",
)
@click.option(
    "--unit",
    "units",
    multiple=True,
    metavar="UNIT",
    help="systemd unit, e.g. ledger.service (repeatable).",
)
@click.option(
    "--since",
    default=None,
    metavar="TIME",
    help="ISO 8601 (UTC unless offset), -15min, -2h, -1d or now [default: 1 h before --until].",
)
@click.option("--until", default=None, metavar="TIME", help="Same forms as --since [default: now].")
@click.option(
    "--priority",
    default=None,
    metavar="PRIORITY",
    help="This priority and worse: emerg, alert, crit, err, warning, notice, info, debug, or 0-7.",
)
@click.option(
    "--limit",
    default=10000,
    show_default=True,
    type=int,
    help="At most this many entries per receiver (the latest).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@inventory_option
def logs_cmd(
    hosts: tuple[str, ...],
    units: tuple[str, ...],
    since: str | None,
    until: str | None,
    priority: str | None,
    limit: int,
    as_json: bool,
    inventory: str,
) -> None:
    """Print the central logs of hosts and units for a window, oldest first.

    Every mon host holds every host's journal; the answers of all that
    answer are merged and each entry printed once. A mon host that does not
    answer is named on stderr; none answering is an error (exit 1).
    """
    from faultbook import logs

    inv = load_inventory(inventory)
    got = logs.read(inv, hosts or None, units or None, since, until, priority, limit)
    for row in got.frame.to_dict("records"):
        if as_json:
            rec = {**row, "time": row["time"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
            click.echo(json.dumps(rec, ensure_ascii=False))
        else:
            click.echo(_line(row))
    click.echo(f"faultbook: logs: {got.summary()}", err=True)
