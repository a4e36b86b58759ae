"""The ``faultbook`` command group, its error handling and the options its commands share."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from faultbook.errors import FaultbookError
from faultbook.inventory import Inventory


def _fail(exc: FaultbookError) -> None:
    click.echo(f"faultbook: error: {exc}", err=True)
    sys.exit(exc.exit_code)


class _Group(click.Group):
    """Turn faultbook errors into one readable line and their exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FaultbookError as exc:
            _fail(exc)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """faultbook: runbooks and drills for a redundant web stack.

    \b
    Typical use:
      faultbook lab up              boot the lab (12 Debian hosts under systemd-nspawn)
      faultbook run health-check    run a runbook with papermill, write a report
      faultbook lab down            stop the lab and leave nothing behind

    State lives in $FAULTBOOK_HOME (default /var/lib/faultbook).
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose >= 2 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faultbook").setLevel(logging.DEBUG if verbose else logging.INFO)


inventory_option = click.option(
    "-i",
    "--inventory",
    default="lab",
    show_default=True,
    help="Inventory name under inventories/, a directory, or a hosts.yml path.",
)


def _lock_wait(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    import math

    from faultbook.errors import ParameterError

    if not (math.isfinite(value) and value >= 0):
        raise ParameterError(f"--lock-wait must be a number of seconds >= 0, got {value}")
    return value


lock_wait_option = click.option(
    "--lock-wait",
    "lock_wait",
    type=float,
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    callback=_lock_wait,
    help="Wait this long for another run on the same inventory to finish (0: refuse at once).",
)


def load_inventory(inventory: str) -> Inventory:
    """The inventory a command was given (one-line InventoryError when it is bad)."""
    from faultbook import inventory as inventory_mod

    return inventory_mod.load(inventory)
