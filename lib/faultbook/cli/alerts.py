"""``faultbook alerts``: the alert receiver (Alertmanager's webhook → runbooks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from faultbook.cli.base import _Group, inventory_option, load_inventory, main

routes_option = click.option(
    "--routes",
    "routes_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Routing file [default: alert-routes.yml beside the inventory's hosts file].",
)
listen_option = click.option(
    "--listen",
    default=None,
    metavar="HOST:PORT",
    help="Listen here [default: alert_receiver_listen, else controller_ip:9095].",
)


@main.group(cls=_Group)
def alerts() -> None:
    """The alert receiver: Alertmanager's webhook starts runbooks by route (docs/alerts.md)."""


@alerts.command("serve")
@inventory_option
@routes_option
@listen_option
def serve_cmd(inventory: str, routes_file: str | None, listen: str | None) -> None:
    """Run the receiver in the foreground until SIGTERM (what `start` and the unit run).

    The routing file is validated first; any error stops it with one line and exit 2.
    """
    from faultbook.alerts import server

    server.serve(load_inventory(inventory), routes_file, listen)


@alerts.command("start")
@inventory_option
@routes_option
@listen_option
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for it.")
def start_cmd(inventory: str, routes_file: str | None, listen: str | None, timeout: float) -> None:
    """Start the receiver detached (pid file and log under the inventory's state)."""
    from faultbook.alerts import service

    st = service.start(load_inventory(inventory), routes_file, listen, timeout_s=timeout)
    click.echo(f"alert receiver up: pid {st['pid']}, http://{st['listen']}/, log {st['log']}")


@alerts.command("stop")
@inventory_option
def stop_cmd(inventory: str) -> None:
    """Stop the receiver (SIGTERM, then SIGKILL); runs in flight go on."""
    from faultbook.alerts import service

    was = service.stop(load_inventory(inventory))
    click.echo("alert receiver stopped" if was else "alert receiver was not running")


def _decision_line(e: dict[str, Any]) -> str:
    what = e.get("alertname") or "-"
    where = e.get("run_dir") or e.get("incident_dir") or ""
    route = f" route={e['route']}" if e.get("route") else ""
    return (
        f"  {e.get('at', '?')}  {e.get('decision', '?'):<10} {what}{route}  {e.get('reason', '')}"
        + (f"  [{where}]" if where else "")
    )


@alerts.command("status")
@inventory_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--last", default=10, show_default=True, help="How many decisions to show.")
def status_cmd(inventory: str, as_json: bool, last: int) -> None:
    """Up or down, since when, where it listens, and its last decisions."""
    from faultbook.alerts import service

    st = service.status(load_inventory(inventory), last=last)
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    if st["up"]:
        health = "answering" if st["healthy"] else "NOT answering /-/healthy"
        click.echo(
            f"alert receiver up ({health}): pid {st['pid']} since {st['since']}, "
            f"listening on {st['listen']}"
        )
        click.echo(f"routes: {st['routes']}")
    else:
        click.echo(f"alert receiver down (would listen on {st['listen'] or '?'})")
    click.echo(f"log: {st['log']}")
    click.echo(
        f"last decisions ({len(st['decisions'])}):" if st["decisions"] else "no decisions yet"
    )
    for e in st["decisions"]:
        click.echo(_decision_line(e))


@alerts.command("install-unit")
@inventory_option
@routes_option
@listen_option
@click.option(
    "--path",
    "path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write it [default: /etc/systemd/system/faultbook-alerts.service].",
)
def install_unit_cmd(
    inventory: str, routes_file: str | None, listen: str | None, path: str | None
) -> None:
    """Write a systemd unit running the receiver; print the systemctl commands (not run)."""
    from faultbook.alerts import service

    written, commands = service.install_unit(
        load_inventory(inventory), path or service.DEFAULT_UNIT, routes_file, listen
    )
    click.echo(f"wrote {written}; to enable it run:")
    for c in commands:
        click.echo(f"  {c}")


@alerts.command("replay")
@click.argument("payload_file", type=click.Path(dir_okay=False))
@inventory_option
@routes_option
@click.option("--force", is_flag=True, help="Skip dedupe and throttle (never the run lock).")
def replay_cmd(payload_file: str, inventory: str, routes_file: str | None, force: bool) -> None:
    """Run a saved webhook payload through the receiver's decisions, here and now.

    \b
    PAYLOAD_FILE is a body the receiver saved (state_dir/alerts/payloads/) or any
    Alertmanager webhook payload. Runs it starts are waited for. Exit status 0
    when every run it started passed (or none started), 1 otherwise.
    """
    import asyncio
    import sys

    from faultbook import decisions
    from faultbook.alerts import dispatch, payload, routes
    from faultbook.errors import AlertPayloadError

    inv = load_inventory(inventory)
    table = routes.load(inv, routes_file)
    path = Path(payload_file)
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise AlertPayloadError(f"{path}: cannot be read ({exc.strerror})", 400) from None
    try:
        n = payload.parse(body)
    except AlertPayloadError as exc:
        raise AlertPayloadError(f"{path}: {exc}", exc.http_status) from None
    started = decisions.now_iso()

    async def go() -> list[dispatch.Decision]:
        d = dispatch.Dispatcher(inv, table, replay=True)
        found = await d.handle(n, path.resolve(), force=force)
        if d.runs:
            click.echo(f"waiting for {len(d.runs)} run(s) to finish")
        await d.drain()
        return found

    for d in asyncio.run(go()):
        click.echo(_decision_line({"at": "", **d.fields()}).strip())
    finished = [
        e
        for e in decisions.entries(event="run-finished")
        if e.get("replay") and e.get("at", "") >= started
    ]
    for e in finished:
        click.echo(
            f"run-finished: {e['runbook']} exit {e['exit_status']}, verdict "
            f"{e.get('verdict')}, {e['run_dir']}"
        )
    sys.exit(1 if any(e.get("exit_status") != 0 for e in finished) else 0)
