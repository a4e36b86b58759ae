"""``faultbook lab``: the embedded lab of systemd-nspawn hosts."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from faultbook.cli.base import _Group, main


# --------------------------------------------------------------------- lab
@main.group(cls=_Group)
def lab() -> None:
    """The embedded lab: real Debian hosts booted with systemd-nspawn (needs root)."""


def _lab() -> Any:
    from faultbook.lab.lab import Lab

    return Lab()


def _print_status(summary: dict[str, Any]) -> None:
    click.echo(f"lab {summary['state']}  bridge={summary['bridge'] or '-'}  home={summary['home']}")
    click.echo(f"{'HOST':<10} {'ADDRESS':<13} {'GROUPS':<8} {'STATE':<8} {'LINK':<6} NETEM")
    for h in summary["hosts"]:
        click.echo(
            f"{h['name']:<10} {h['address']:<13} {','.join(h['groups']):<8} "
            f"{h['state']:<8} {h['link']:<6} {h['netem'] or '-'}"
        )


@lab.command("up")
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait for hosts.")
@click.option(
    "--provision/--no-provision",
    default=True,
    show_default=True,
    help="Provision the stack (playbooks/site.yml) once the hosts are up.",
)
def lab_up(timeout: float, provision: bool) -> None:
    """Build the image if needed, create the bridge, boot every host, provision the stack.

    Returns when every host accepts SSH and its systemd reports running, or
    names the host and unit that is not. On a lab that is already up it only
    reports the status (and re-runs the idempotent provisioning, which then
    changes nothing). After provisioning it starts the alert receiver
    (`faultbook alerts start`); with --no-provision it does not (no stack, no
    Alertmanager to send to it).
    """
    lab_ = _lab()
    lab_.up(timeout=timeout)
    _print_status(lab_.summary())
    if provision:
        from faultbook import ansible

        click.echo("provisioning the stack (playbooks/site.yml)")
        res = ansible.run_playbook(
            "site.yml", lab_.inv, event_handler=ansible.progress_printer(click.echo)
        )
        click.echo(f"site.yml: {res.status}, changed={res.changed}, {res.duration_s:.0f}s")
        from faultbook.alerts import service

        st = service.start(lab_.inv)
        click.echo(f"alert receiver up: pid {st['pid']}, http://{st['listen']}/, log {st['log']}")
    else:
        click.echo(
            "alert receiver not started (--no-provision); `faultbook alerts start` starts it"
        )


@lab.command("image")
@click.option("--force", is_flag=True, help="Rebuild even when the cached image is current.")
def lab_image(force: bool) -> None:
    """Build the lab image (debootstrap + every package the stack needs) if it is not cached."""
    from faultbook.lab import image
    from faultbook.lab.lab import preflight
    from faultbook.paths import faultbook_home

    preflight()
    root = image.build(faultbook_home(create=True), force=force)
    click.echo(f"image: {root}")


@lab.command("down")
@click.option("--keep-disks", is_flag=True, help="Keep each host's disk for the next `lab up`.")
def lab_down(keep_disks: bool) -> None:
    """Stop the alert receiver, then every host; leave no machine, mount, bridge or process
    behind."""
    from faultbook.alerts import service

    lab_ = _lab()
    if service.stop(lab_.inv):  # not running is no error
        click.echo("alert receiver stopped")
    lab_.down(keep_disks=keep_disks)
    click.echo("lab down")


@lab.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def lab_status(as_json: bool) -> None:
    """Report the state of the lab and its hosts."""
    summary = _lab().summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _print_status(summary)


@lab.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def lab_ssh(host: str, command: tuple[str, ...]) -> None:
    """Open a shell on HOST, or run COMMAND there (host key checked)."""
    from faultbook import ssh

    lab_ = _lab()
    argv = ssh.ssh_argv(lab_.inv, host, list(command) or None)
    os.execvp(argv[0], argv)  # noqa: S606 - replaces this process with ssh, on purpose


@lab.command("crash")
@click.argument("host")
def lab_crash(host: str) -> None:
    """Power loss: SIGKILL the whole machine (its disk stays)."""
    _lab().crash(host)
    click.echo(f"{host} crashed")


@lab.command("boot")
@click.argument("host")
@click.option("--timeout", default=120.0, show_default=True)
def lab_boot(host: str, timeout: float) -> None:
    """Start HOST again with its disk intact; wait until it is ready."""
    _lab().boot(host, timeout=timeout)
    click.echo(f"{host} is up")


@lab.command("partition")
@click.argument("host")
def lab_partition(host: str) -> None:
    """Cut HOST's link to the lab network (`heal` restores it)."""
    _lab().partition(host)
    click.echo(f"{host} partitioned")


@lab.command("heal")
@click.argument("host")
def lab_heal(host: str) -> None:
    """Restore HOST's link and clear any netem delay or loss."""
    _lab().heal(host)
    click.echo(f"{host} healed")


@lab.command("netem")
@click.argument("host")
@click.option("--delay", "delay_ms", type=float, default=0.0, help="Added delay in ms.")
@click.option("--loss", "loss_pct", type=float, default=0.0, help="Packet loss in percent.")
def lab_netem(host: str, delay_ms: float, loss_pct: float) -> None:
    """Delay and drop the packets HOST sends (every packet leaving it). `heal` clears it."""
    _lab().netem(host, delay_ms, loss_pct)
    click.echo(f"{host}: delay {delay_ms:g} ms, loss {loss_pct:g} %")
