"""Run commands on inventory hosts over SSH with paramiko, host keys checked.

Host key checking is always on: keys come from the inventory's known_hosts
file (the lab writes its own) and an unknown or changed key is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import paramiko

from faultbook.errors import SSHError
from faultbook.inventory import Connection, Host, Inventory, connection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandResult:
    host: str
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


def _client(host: Host, conn: Connection, timeout: float) -> paramiko.SSHClient:
    if not conn.known_hosts.is_file():
        raise SSHError(host.name, f"known_hosts file {conn.known_hosts} does not exist")
    client = paramiko.SSHClient()
    client.load_host_keys(str(conn.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            host.address,
            username=conn.user,
            key_filename=str(conn.key_file) if conn.key_file else None,
            look_for_keys=conn.key_file is None,
            allow_agent=conn.key_file is None,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except paramiko.BadHostKeyException:
        client.close()
        raise SSHError(host.name, f"host key does not match {conn.known_hosts}") from None
    except paramiko.SSHException as exc:
        client.close()
        raise SSHError(host.name, f"SSH failed: {exc}") from None
    except TimeoutError:
        client.close()
        raise SSHError(host.name, f"no answer on {host.address}:22 within {timeout:g}s") from None
    except OSError as exc:
        client.close()
        raise SSHError(
            host.name, f"cannot connect to {host.address}:22: {exc.strerror or exc}"
        ) from None
    return client


def run(
    inv: Inventory,
    host: str | Host,
    command: str,
    timeout: float = 10.0,
    sudo: bool = False,
    stdin: bytes | None = None,
) -> CommandResult:
    """Run one command on one host; raise SSHError when the host cannot be reached.

    ``stdin`` is written to the command's standard input (then closed): the
    way to hand a command a secret without putting it on a command line.
    """
    h = host if isinstance(host, Host) else inv.host(host)
    conn = connection(inv)
    client = _client(h, conn, timeout)
    try:
        cmd = f"sudo -n sh -c {_quote(command)}" if sudo else command
        inp, out, err = client.exec_command(cmd, timeout=timeout)
        if stdin is not None:
            inp.write(stdin)
            inp.flush()
        inp.channel.shutdown_write()
        try:
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
            rc = out.channel.recv_exit_status()
        except TimeoutError:
            raise SSHError(h.name, f"command did not finish within {timeout:g}s") from None
        return CommandResult(h.name, rc, stdout, stderr)
    finally:
        client.close()


def run_many(
    inv: Inventory,
    hosts: Iterable[str | Host] | None,
    command: str,
    timeout: float = 10.0,
    sudo: bool = False,
) -> dict[str, CommandResult | SSHError]:
    """Run a command on many hosts in parallel; failures come back as SSHError values."""
    targets = [h if isinstance(h, Host) else inv.host(h) for h in (hosts or inv.hosts.values())]

    def one(h: Host) -> CommandResult | SSHError:
        try:
            return run(inv, h, command, timeout=timeout, sudo=sudo)
        except SSHError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(targets)))) as pool:
        results = list(pool.map(one, targets))
    return {h.name: r for h, r in zip(targets, results, strict=True)}


def ssh_argv(inv: Inventory, host: str, command: list[str] | None = None) -> list[str]:
    """An OpenSSH command line equivalent to what paramiko does, for interactive use."""
    h = inv.host(host)
    conn = connection(inv)
    argv = [
        "ssh",
        "-o",
        f"UserKnownHostsFile={conn.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
    ]
    if conn.key_file:
        argv += ["-i", str(conn.key_file), "-o", "IdentitiesOnly=yes"]
    argv.append(f"{conn.user}@{h.address}")
    if command:
        argv += ["--", *command]
    return argv


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def known_hosts_line(names: list[str], pubkey_file: Path) -> str:
    kind, blob = pubkey_file.read_text().split()[:2]
    return f"{','.join(names)} {kind} {blob}"
