"""``faultbook provision``, ``db``, ``web`` and ``lb``: the stack's procedures for shells."""

from __future__ import annotations

import click

from faultbook.cli.base import _Group, inventory_option, load_inventory, main
from faultbook.errors import PromotionRefused


# --------------------------------------------------------------- provision
@main.command("provision")
@click.option(
    "-i",
    "--inventory",
    default="lab",
    show_default=True,
    help="Inventory name under inventories/, a directory, or a hosts.yml path.",
)
@click.option("--check", is_flag=True, help="Dry run: report what would change, change nothing.")
@click.option("--limit", default=None, help="Only these hosts or groups (Ansible pattern).")
@click.option(
    "--playbook", default="site.yml", show_default=True, help="Playbook under playbooks/."
)
def provision_cmd(inventory: str, check: bool, limit: str | None, playbook: str) -> None:
    """Provision the stack: run playbooks/site.yml against an inventory, with live progress."""
    from faultbook import ansible

    res = ansible.run_playbook(
        playbook,
        inventory,
        limit=limit,
        check=check,
        event_handler=ansible.progress_printer(click.echo),
    )
    click.echo(res.recap())
    click.echo(
        f"{res.playbook}: {res.status}, changed={res.changed}, {res.duration_s:.0f}s"
        + (" (check mode)" if check else "")
    )


# --------------------------------------------------------------- database
@main.group(cls=_Group)
def db() -> None:
    """The PostgreSQL cluster: state, fence, promote, rejoin, switchover (db-failover's steps)."""


@db.command("status")
@inventory_option
def db_status(inventory: str) -> None:
    """Each db host: primary or standby, LSNs, upstream; the primary's standbys."""
    from faultbook.stack import failover

    inv = load_inventory(inventory)
    state = failover.cluster_state(inv)
    click.echo(state.to_string(index=False))
    prim = failover.primaries(state)
    if len(prim) == 1:
        click.echo()
        click.echo(failover.replication(inv, prim[0]).to_string(index=False))


@db.command("fence")
@click.argument("host")
@inventory_option
def db_fence(host: str, inventory: str) -> None:
    """Make HOST unable to acknowledge writes (lab: power off; else db_fence_playbook)."""
    from faultbook.stack import failover

    click.echo(failover.fence(load_inventory(inventory), host))


@db.command("promote")
@click.argument("host", required=False)
@click.option("--old", "old", required=True, help="The lost (fenced) primary.")
@click.option(
    "--force", is_flag=True, help="Promote even without proof of every acknowledged commit."
)
@inventory_option
def db_promote(host: str | None, old: str, force: bool, inventory: str) -> None:
    """Promote HOST (default: the standby proven to hold every acknowledged commit)."""
    from faultbook.stack import failover

    inv = load_inventory(inventory)
    cand = failover.choose_for(inv, old, force)
    click.echo(cand.reason)
    target = host or cand.host
    if host and host != cand.host and not force:
        raise PromotionRefused(
            f"{host} is not the most advanced standby ({cand.host} is); pass --force to insist"
        )
    failover.promote(inv, target, exclude=[old])
    click.echo(f"{target} promoted; the other standbys follow it")


@db.command("rejoin")
@click.argument("host")
@click.option("--primary", required=True, help="The current primary to follow.")
@click.option(
    "--method",
    type=click.Choice(["auto", "rewind", "reclone"]),
    default=None,
    help="Default: the inventory's postgresql_rejoin_method (auto: rewind, else re-clone).",
)
@inventory_option
def db_rejoin(host: str, primary: str, method: str | None, inventory: str) -> None:
    """Bring HOST back as a standby of PRIMARY (pg_rewind, or a pgBackRest re-clone)."""
    from faultbook.stack import failover

    failover.rejoin(load_inventory(inventory), host, primary, method)
    click.echo(f"{host} streams from {primary}")


@db.command("switchover")
@click.argument("new", required=False)
@inventory_option
def db_switchover(new: str | None, inventory: str) -> None:
    """Planned: demote the primary cleanly and promote NEW (default: most advanced)."""
    from faultbook.drills import procedure
    from faultbook.stack import failover

    inv = load_inventory(inventory)
    old = procedure.steady_state(inv).primary
    if old is None:
        raise PromotionRefused("no single primary to switch over from")
    target = failover.switchover_candidate(inv, old, new or "")
    failover.switchover(inv, old, target)
    click.echo(f"switched over: {old} -> {target}")


# -------------------------------------------------------------- web and lb
@main.group(cls=_Group)
def web() -> None:
    """Web nodes behind HAProxy: status, drain, recover, enable (web-node-failure's steps)."""


@web.command("status")
@inventory_option
def web_status(inventory: str) -> None:
    """Every backend server as each load balancer's HAProxy reports it."""
    from faultbook.stack import haproxy

    inv = load_inventory(inventory)
    click.echo(haproxy.haproxy_servers(inv).to_string(index=False))
    click.echo(haproxy.failed_backends(inv).summary())


# The web node procedures: (command, haproxy function, what it says when done, help).
WEB_PROCEDURES = (
    (
        "drain",
        "drain",
        "drained",
        "Take HOST out of rotation on every load balancer (both backends).",
    ),
    (
        "recover",
        "recover",
        "answers /readyz",
        "Restart the app on HOST if it is not healthy; wait for /readyz.",
    ),
    (
        "enable",
        "enable",
        "is UP",
        "Put HOST back in rotation and wait until HAProxy reports it UP.",
    ),
)


def _web_procedure(name: str, function: str, done: str, doc: str) -> None:
    @web.command(name, help=doc)
    @click.argument("host")
    @inventory_option
    def command(host: str, inventory: str) -> None:
        from faultbook.stack import haproxy

        getattr(haproxy, function)(load_inventory(inventory), host)
        click.echo(f"{host} {done}")


for _procedure in WEB_PROCEDURES:
    _web_procedure(*_procedure)


@main.group(cls=_Group)
def lb() -> None:
    """Load balancers: who holds the VIP, recover one (lb-failover's steps)."""


@lb.command("status")
@inventory_option
def lb_status(inventory: str) -> None:
    """Each load balancer: reachable, VIP, HAProxy and keepalived state."""
    from faultbook.stack import vip

    inv = load_inventory(inventory)
    click.echo(vip.lb_status(inv).to_string(index=False))
    click.echo(f"VIP held by {vip.vip_holder(inv)}")


@lb.command("recover")
@click.argument("host")
@inventory_option
def lb_recover(host: str, inventory: str) -> None:
    """Start HAProxy and keepalived on HOST; it rejoins as BACKUP."""
    from faultbook.stack import vip

    vip.lb_recover(load_inventory(inventory), host)
    click.echo(f"{host} recovered")
