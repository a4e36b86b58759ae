"""The `faultbook` command: the same operations the runbooks perform, for shells, CI and cron."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from faultbook.errors import FaultbookError

F = TypeVar("F", bound=Callable[..., Any])


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
      faultbook lab up              boot the lab (11 Debian hosts under systemd-nspawn)
      faultbook run health-check    run a runbook with papermill, write a report
      faultbook lab down            stop the lab and leave nothing behind

    State lives in $FAULTBOOK_HOME (default /var/lib/faultbook).
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose >= 2 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faultbook").setLevel(logging.DEBUG if verbose else logging.INFO)


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
    changes nothing).
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
    """Stop every host; leave no machine, mount, bridge or process behind."""
    _lab().down(keep_disks=keep_disks)
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
    os.execvp(argv[0], argv)


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
    """Add delay and loss on HOST's link (towards the host). `heal` clears it."""
    _lab().netem(host, delay_ms, loss_pct)
    click.echo(f"{host}: delay {delay_ms:g} ms, loss {loss_pct:g} %")


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


# ------------------------------------------------------------------ backup
@main.group(cls=_Group)
def backup() -> None:
    """pgBackRest backups on the repository host: list them, take one now."""


_inventory_option = click.option(
    "-i",
    "--inventory",
    default="lab",
    show_default=True,
    help="Inventory name under inventories/, a directory, or a hosts.yml path.",
)


@backup.command("list")
@_inventory_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backup_list(inventory: str, as_json: bool) -> None:
    """List the backups of the stanza, oldest first, with the archived WAL range."""
    from faultbook import backup as backup_mod
    from faultbook import inventory as inventory_mod

    inv = inventory_mod.load(inventory)
    info = backup_mod.info(inv)
    name = backup_mod.stanza_name(inv)
    df = backup_mod.backups(info, name)
    if as_json:
        click.echo(df.to_json(orient="records", date_format="iso", indent=2))
        return
    code, message = backup_mod.repository_status(info, name)
    first, last = backup_mod.archive_range(info, name)
    click.echo(f"stanza {name}: {message} (status {code}); archived WAL {first} .. {last}")
    click.echo(backup_mod.table(df))


@backup.command("now")
@click.option(
    "--type",
    "backup_type",
    type=click.Choice(["full", "diff", "incr"]),
    default="incr",
    show_default=True,
    help="Backup type (pgBackRest takes a full one when there is none).",
)
@_inventory_option
def backup_now(backup_type: str, inventory: str) -> None:
    """Take a backup now (playbooks/backup_now.yml) and print its label."""
    from faultbook import ansible
    from faultbook import backup as backup_mod
    from faultbook import inventory as inventory_mod

    inv = inventory_mod.load(inventory)
    run = backup_mod.run_backup(inv, backup_type, ansible.progress_printer(click.echo))
    size = run.row.get("size")
    click.echo(
        f"backup {run.label}: {run.type}, {run.duration_s:.0f}s"
        + (f", {backup_mod.human_bytes(float(size))}" if size is not None else "")
    )


# --------------------------------------------------------------------- run
# --------------------------------------------------------------- database
@main.group(cls=_Group)
def db() -> None:
    """The PostgreSQL cluster: state, fence, promote, rejoin, switchover (db-failover's steps)."""


def _inv(inventory: str) -> Any:
    from faultbook import inventory as inv_mod

    return inv_mod.load(inventory)


@db.command("status")
@_inventory_option
def db_status(inventory: str) -> None:
    """Each db host: primary or standby, LSNs, upstream; the primary's standbys."""
    from faultbook import failover

    inv = _inv(inventory)
    state = failover.cluster_state(inv)
    click.echo(state.to_string(index=False))
    prim = failover.primaries(state)
    if len(prim) == 1:
        click.echo()
        click.echo(failover.replication(inv, prim[0]).to_string(index=False))


@db.command("fence")
@click.argument("host")
@_inventory_option
def db_fence(host: str, inventory: str) -> None:
    """Make HOST unable to acknowledge writes (lab: power off; else db_fence_playbook)."""
    from faultbook import failover

    click.echo(failover.fence(_inv(inventory), host))


@db.command("promote")
@click.argument("host", required=False)
@click.option("--old", "old", required=True, help="The lost (fenced) primary.")
@click.option(
    "--force", is_flag=True, help="Promote even without proof of every acknowledged commit."
)
@_inventory_option
def db_promote(host: str | None, old: str, force: bool, inventory: str) -> None:
    """Promote HOST (default: the standby proven to hold every acknowledged commit)."""
    from faultbook import failover

    inv = _inv(inventory)
    others = [h.name for h in inv.group("db") if h.name != old]
    cand = failover.choose_candidate(
        failover.cluster_state(inv, hosts=others), old, failover.sync_quorum(inv), force
    )
    click.echo(cand.reason)
    target = host or cand.host
    if host and host != cand.host and not force:
        raise failover.PromotionRefused(
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
@_inventory_option
def db_rejoin(host: str, primary: str, method: str | None, inventory: str) -> None:
    """Bring HOST back as a standby of PRIMARY (pg_rewind, or a pgBackRest re-clone)."""
    from faultbook import failover

    failover.rejoin(_inv(inventory), host, primary, method)
    click.echo(f"{host} streams from {primary}")


@db.command("switchover")
@click.argument("new", required=False)
@_inventory_option
def db_switchover(new: str | None, inventory: str) -> None:
    """Planned: demote the primary cleanly and promote NEW (default: most advanced)."""
    from faultbook import failover, procedure

    inv = _inv(inventory)
    old = procedure.steady_state(inv).primary
    if old is None:
        raise failover.PromotionRefused("no single primary to switch over from")
    target = failover.switchover_candidate(inv, old, new or "")
    failover.switchover(inv, old, target)
    click.echo(f"switched over: {old} -> {target}")


# -------------------------------------------------------------- web and lb
@main.group(cls=_Group)
def web() -> None:
    """Web nodes behind HAProxy: status, drain, recover, enable (web-node-failure's steps)."""


@web.command("status")
@_inventory_option
def web_status(inventory: str) -> None:
    """Every backend server as each load balancer's HAProxy reports it."""
    from faultbook import webtier

    inv = _inv(inventory)
    click.echo(webtier.haproxy_servers(inv).to_string(index=False))
    click.echo(webtier.failed_backends(inv).summary())


@web.command("drain")
@click.argument("host")
@_inventory_option
def web_drain(host: str, inventory: str) -> None:
    """Take HOST out of rotation on every load balancer (both backends)."""
    from faultbook import webtier

    webtier.drain(_inv(inventory), host)
    click.echo(f"{host} drained")


@web.command("recover")
@click.argument("host")
@_inventory_option
def web_recover(host: str, inventory: str) -> None:
    """Restart the app on HOST if it is not healthy; wait for /readyz."""
    from faultbook import webtier

    webtier.recover(_inv(inventory), host)
    click.echo(f"{host} answers /readyz")


@web.command("enable")
@click.argument("host")
@_inventory_option
def web_enable(host: str, inventory: str) -> None:
    """Put HOST back in rotation and wait until HAProxy reports it UP."""
    from faultbook import webtier

    webtier.enable(_inv(inventory), host)
    click.echo(f"{host} is UP")


@main.group(cls=_Group)
def lb() -> None:
    """Load balancers: who holds the VIP, recover one (lb-failover's steps)."""


@lb.command("status")
@_inventory_option
def lb_status(inventory: str) -> None:
    """Each load balancer: reachable, VIP, HAProxy and keepalived state."""
    from faultbook import webtier

    inv = _inv(inventory)
    click.echo(webtier.lb_status(inv).to_string(index=False))
    click.echo(f"VIP held by {webtier.vip_holder(inv)}")


@lb.command("recover")
@click.argument("host")
@_inventory_option
def lb_recover(host: str, inventory: str) -> None:
    """Start HAProxy and keepalived on HOST; it rejoins as BACKUP."""
    from faultbook import webtier

    webtier.lb_recover(_inv(inventory), host)
    click.echo(f"{host} recovered")


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
def run_cmd(runbook: str, params: tuple[tuple[str, str], ...], out_dir: str | None) -> None:
    """Execute RUNBOOK with papermill and write a report.

    \b
    Writes DIR/RUNBOOK.ipynb (executed), DIR/RUNBOOK.html and DIR/result.json.
    Exit status: 0 verdict pass, 1 objective missed or step failed, 2 usage error.
    `faultbook runbooks` lists the runbooks and their parameters.
    """
    from datetime import UTC, datetime
    from pathlib import Path

    from faultbook import runner

    path = runner.runbook_path(runbook)
    values = runner.validate(path.stem, dict(params))
    if out_dir is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out_dir = str(Path("reports") / f"{path.stem}-{stamp}")
    click.echo(f"running {path.stem} -> {out_dir}")
    outcome = runner.run(path.stem, values, Path(out_dir))
    s = outcome.summary
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

    from faultbook import report

    index = report.build(Path(out_dir))
    click.echo((Path(out_dir) / "summary.md").read_text())
    click.echo(f"report: {index.resolve()}")
    with open(Path(out_dir) / "summary.csv") as f:
        verdicts = [row["verdict"] for row in csv.DictReader(f)]
    sys.exit(0 if all(v == "pass" for v in verdicts) else 1)


@main.command("runbooks")
def runbooks_cmd() -> None:
    """List the runbooks and their parameters."""
    from faultbook import runner

    for name in runner.runbooks():
        click.echo(name)
        for p in runner.parameters(name).values():
            if p.name in runner.RUNNER_PARAMS:
                continue
            click.echo(f"  {p.name:<14} {p.type:<6} default {p.default:<12} {p.help}")


if __name__ == "__main__":  # pragma: no cover
    main()
