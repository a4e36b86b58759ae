"""Run commands on inventory hosts over SSH with paramiko, host keys checked.

Host key checking is always on: keys come from the inventory's known_hosts
file (the lab writes its own) and an unknown or changed key is refused.

Each host is reached as Ansible would reach it: ``ansible_port`` (default
22), ``ansible_user`` (else the inventory's user), ``ansible_ssh_private_key_file``
(else the inventory's key), and a jump host given as ``-J`` or ``-o
ProxyJump=`` in ``ansible_ssh_common_args`` / ``ansible_ssh_extra_args``.

Connections are kept and reused within a process (one SSH connection per
host, many commands over it, also from run_many's threads); a connection
found dead is dropped and opened again, and a command that had not yet
reached the host is retried once on the fresh one. ``close_all()`` closes
them (registered with atexit).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import select
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from faultbook.errors import SSHError
from faultbook.inventory import Host, Inventory, connection

log = logging.getLogger(__name__)

KEEPALIVE_S = 5


@dataclass(frozen=True)
class CommandResult:
    host: str
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


@dataclass(frozen=True)
class Target:
    """Where and how to log in to one host; ``jump`` is the host to go through, if any."""

    name: str
    address: str
    port: int
    user: str
    key_file: Path | None
    known_hosts: Path
    jump: Target | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """The connection cache key: same key, same connection."""
        return (
            str(self.known_hosts),
            self.user,
            self.address,
            self.port,
            str(self.key_file) if self.key_file else None,
            self.jump.key if self.jump else None,
        )

    @property
    def where(self) -> str:
        return f"{self.address}:{self.port}"


def target(inv: Inventory, host: str | Host) -> Target:
    """The SSH target for an inventory host, from its effective variables."""
    h = host if isinstance(host, Host) else inv.host(host)
    t = _direct(inv, h)
    jump: Target | None = None
    for spec in _proxy_jumps(h):
        jump = _jump_target(inv, h, spec, jump, t)
    return Target(t.name, t.address, t.port, t.user, t.key_file, t.known_hosts, jump)


def _direct(inv: Inventory, h: Host) -> Target:
    """The host's own address, port, user and key (no jump host)."""
    conn = connection(inv)
    user = str(h.vars.get("ansible_user") or conn.user)
    key = h.vars.get("ansible_ssh_private_key_file")
    key_file = Path(str(key)).expanduser() if key else conn.key_file
    port = _port(h, h.vars.get("ansible_port", h.vars.get("ansible_ssh_port", 22)))
    return Target(h.name, h.address, port, user, key_file, conn.known_hosts)


def _port(h: Host, value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise SSHError(h.name, f"ansible_port {value!r} is not a port number") from None
    if not 0 < port < 65536:
        raise SSHError(h.name, f"ansible_port {port} is not a port number")
    return port


def _proxy_jumps(h: Host) -> list[str]:
    """The ProxyJump hops (first hop first) in ansible_ssh_common_args / _extra_args.

    Only ``-J spec`` and ``-o ProxyJump=spec`` are understood; every other
    option in those arguments is ignored. The last ProxyJump given wins.
    """
    found: str | None = None
    for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        raw = h.vars.get(var)
        if not raw:
            continue
        try:
            args = shlex.split(str(raw))
        except ValueError as exc:
            raise SSHError(h.name, f"{var} cannot be parsed: {exc}") from None
        i = 0
        while i < len(args):
            a = args[i]
            value: str | None = None
            if a in ("-J", "-o") and i + 1 < len(args):
                value, i = args[i + 1], i + 1
                if a == "-o":
                    value = _proxyjump_option(value)
            elif a.startswith("-J"):
                value = a[2:]
            elif a.startswith("-o"):
                value = _proxyjump_option(a[2:])
            if value is not None:
                found = value
            i += 1
    if not found or found.lower() == "none":
        return []
    return [s for s in found.split(",") if s]


def _proxyjump_option(opt: str) -> str | None:
    key, sep, value = opt.partition("=")
    if not sep:
        key, _, value = opt.partition(" ")
    return value.strip() if key.strip().lower() == "proxyjump" else None


def _jump_target(
    inv: Inventory, h: Host, spec: str, via: Target | None, t: Target
) -> Target | None:
    """A ProxyJump hop ``[ssh://][user@]host[:port]``; an inventory host's own settings apply.

    A hop that is an inventory host is reached with its address, port, user
    and key (not its own ProxyJump: as with OpenSSH, that applies to the
    target only); any other hop with the target's user and key.
    """
    s = spec.removeprefix("ssh://")
    juser, at, rest = s.rpartition("@")
    if not at:
        juser, rest = "", s
    if rest.startswith("["):  # [v6addr]:port
        jhost, _, tail = rest[1:].partition("]")
        jport_s = tail.removeprefix(":")
    else:
        jhost, _, jport_s = rest.partition(":")
    if not jhost:
        raise SSHError(h.name, f"ProxyJump {spec!r} names no host")
    known = inv.hosts.get(jhost) or next(
        (o for o in inv.hosts.values() if o.address == jhost), None
    )
    base = _direct(inv, known) if known is not None else None
    if base is None:
        base = Target(jhost, jhost, 22, t.user, t.key_file, t.known_hosts)
    elif base.name == h.name:
        return via  # a host does not jump through itself
    return Target(
        base.name,
        base.address,
        _port(h, jport_s) if jport_s else base.port,
        juser or base.user,
        base.key_file,
        t.known_hosts,
        via,
    )


# --------------------------------------------------------------------------- connection cache


class _Conn:
    """A cached connection; closed once dropped and no command uses it any more."""

    def __init__(self, client: paramiko.SSHClient, via: _Conn | None) -> None:
        self.client = client
        self.via = via  # the jump host's connection this one tunnels through
        self.users = 0
        self.dropped = False

    def active(self) -> bool:
        t = self.client.get_transport()
        return t is not None and t.is_active()


_lock = threading.Lock()  # guards _cache, _key_locks and every _Conn's users/dropped
_cache: dict[tuple[Any, ...], _Conn] = {}
_key_locks: dict[tuple[Any, ...], threading.Lock] = {}


def _acquire(c: _Conn) -> None:
    with _lock:
        c.users += 1


def _release(c: _Conn) -> None:
    with _lock:
        c.users -= 1
        close = c.dropped and c.users <= 0
    if close:
        _close(c)


def _drop(key: tuple[Any, ...], c: _Conn) -> None:
    """Forget a connection; it closes when its last user is done."""
    with _lock:
        if _cache.get(key) is c:
            del _cache[key]
        c.dropped = True
        close = c.users <= 0
    if close:
        _close(c)


def _close(c: _Conn) -> None:
    with contextlib.suppress(Exception):
        c.client.close()
    if c.via is not None:
        _release(c.via)


def close_all() -> None:
    """Close every cached connection (jump hosts last)."""
    with _lock:
        conns = list(_cache.items())
    for key, c in sorted(conns, key=lambda kc: kc[1].via is None):
        _drop(key, c)


atexit.register(close_all)


def forget(address: str) -> None:
    """Drop cached connections to an address (a host that crashed or went down)."""

    def through(key: tuple[Any, ...] | None) -> bool:
        return key is not None and (key[2] == address or through(key[5]))

    with _lock:
        conns = [(k, c) for k, c in _cache.items() if through(k)]
    for key, c in conns:
        _drop(key, c)


@contextlib.contextmanager
def _connection(t: Target, timeout: float) -> Iterator[tuple[_Conn, bool]]:
    """A connected client for the target (cached, or new) and whether it was cached."""
    c, cached = _get(t, timeout)
    try:
        yield c, cached
    finally:
        _release(c)


def _get(t: Target, timeout: float) -> tuple[_Conn, bool]:
    key = t.key
    with _lock:
        klock = _key_locks.setdefault(key, threading.Lock())
    with klock:  # one connection attempt per key at a time; other hosts go on in parallel
        with _lock:
            c = _cache.get(key)
        if c is not None:
            if c.active():
                _acquire(c)
                return c, True
            _drop(key, c)
        c = _connect(t, timeout)
        with _lock:
            _cache[key] = c
            c.users += 1
        return c, False


# The TCP connect alone: a powered-off host never answers (no ARP reply, no reset),
# and every probe of it would otherwise wait out the whole command timeout. A host
# that is up completes the handshake in the kernel, well within this even under load.
CONNECT_TIMEOUT_S = 1.5


def _connect(t: Target, timeout: float) -> _Conn:
    if not t.known_hosts.is_file():
        raise SSHError(t.name, f"known_hosts file {t.known_hosts} does not exist")
    via: _Conn | None = None
    sock: paramiko.Channel | None = None
    if t.jump is not None:
        via, sock = _tunnel(t, timeout)
    client = paramiko.SSHClient()
    client.load_host_keys(str(t.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    through = f" through {t.jump.name} ({t.jump.where})" if t.jump else ""
    tcp_timeout = timeout if sock is not None else min(timeout, CONNECT_TIMEOUT_S)
    try:
        client.connect(
            t.address,
            port=t.port,
            username=t.user,
            key_filename=str(t.key_file) if t.key_file else None,
            look_for_keys=t.key_file is None,
            allow_agent=t.key_file is None,
            timeout=tcp_timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            sock=sock,
        )
    except BaseException as exc:
        client.close()
        if via is not None:
            _release(via)
        if not isinstance(exc, Exception):
            raise
        waited = tcp_timeout if isinstance(exc, TimeoutError) else timeout
        raise _connect_error(t, exc, waited, through) from None
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(KEEPALIVE_S)
    log.debug("ssh: connected to %s (%s as %s)%s", t.name, t.where, t.user, through)
    return _Conn(client, via)


def _connect_error(t: Target, exc: Exception, timeout: float, through: str) -> SSHError:
    if isinstance(exc, paramiko.BadHostKeyException):
        return SSHError(t.name, f"host key of {t.where} does not match {t.known_hosts}")
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        return SSHError(t.name, f"host key of {t.where} is not in {t.known_hosts}; refused")
    if isinstance(exc, paramiko.AuthenticationException):
        return SSHError(t.name, f"{t.where}{through}: authentication as {t.user} failed: {exc}")
    if isinstance(exc, paramiko.SSHException):
        return SSHError(t.name, f"SSH to {t.where}{through} failed: {exc}")
    if isinstance(exc, TimeoutError):
        return SSHError(t.name, f"no answer on {t.where}{through} within {timeout:g}s")
    if isinstance(exc, OSError):
        return SSHError(t.name, f"cannot connect to {t.where}{through}: {exc.strerror or exc}")
    return SSHError(t.name, f"SSH to {t.where}{through} failed: {exc}")


def _tunnel(t: Target, timeout: float) -> tuple[_Conn, paramiko.Channel]:
    """A direct-tcpip channel to the target through its (cached) jump host connection."""
    assert t.jump is not None
    for attempt in (1, 2):
        try:
            via, cached = _get(t.jump, timeout)
        except SSHError as exc:
            raise SSHError(t.name, f"via jump host {exc.host}: {exc.message}") from None
        transport = via.client.get_transport()
        try:
            if transport is None:
                raise paramiko.SSHException("SSH session not active")
            chan = transport.open_channel(
                "direct-tcpip", (t.address, t.port), ("127.0.0.1", 0), timeout=timeout
            )
            return via, chan  # the target's connection keeps the jump connection in use
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if not isinstance(exc, paramiko.ChannelException):  # refused: the jump host is fine
                _drop(t.jump.key, via)
            _release(via)
            if cached and attempt == 1 and not _is_timeout(exc):
                continue
            why = f"jump host {t.jump.name} ({t.jump.where}) cannot reach {t.where}"
            raise SSHError(t.name, f"{why}: {_reason(exc)}") from None
    raise AssertionError("unreachable")


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or "Timeout opening channel" in str(exc)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ChannelException):
        return f"refused ({exc.text or exc.code})"
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------- commands

# What a command reads: bytes, or a callable giving them once the command has started.
Stdin = bytes | Callable[[], bytes] | None


def run(
    inv: Inventory,
    host: str | Host,
    command: str,
    timeout: float = 10.0,
    sudo: bool = False,
    stdin: Stdin = None,
) -> CommandResult:
    """Run one command on one host; raise SSHError when the host cannot be reached.

    ``stdin`` is written to the command's standard input (then closed): the
    way to hand a command a secret without putting it on a command line. A
    callable is called once the command has started, and what it returns is
    written then: the way to start a command that waits for an answer the
    caller does not have yet (the switchover's promote waits for the demote's
    LSN). ``timeout`` bounds connecting, and separately the command's whole
    run (the callable's wait included).
    """
    t = target(inv, host)
    cmd = f"sudo -n sh -c {_quote(command)}" if sudo else command
    for attempt in (1, 2):
        with _connection(t, timeout) as (c, cached):
            try:
                chan = _open_session(c, timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                # The command never reached the host: safe to try once more on a new connection.
                _drop(t.key, c)
                if cached and attempt == 1 and not _is_timeout(exc):
                    log.debug("ssh: %s: cached connection is dead (%s); reconnecting", t.name, exc)
                    continue
                if _is_timeout(exc):
                    raise SSHError(t.name, f"no answer on {t.where} within {timeout:g}s") from None
                raise SSHError(t.name, f"SSH session on {t.where} failed: {_reason(exc)}") from None
            try:
                return _execute(t, c, chan, cmd, stdin, timeout)
            finally:
                chan.close()
    raise AssertionError("unreachable")


def _open_session(c: _Conn, timeout: float) -> paramiko.Channel:
    transport = c.client.get_transport()
    if transport is None or not transport.is_active():
        raise paramiko.SSHException("SSH session not active")
    return transport.open_session(timeout=timeout)


def _execute(
    t: Target, c: _Conn, chan: paramiko.Channel, cmd: str, stdin: Stdin, timeout: float
) -> CommandResult:
    """Run the command on an open session; no retry from here on (it may have started)."""
    deadline = time.monotonic() + timeout

    def timed_out() -> SSHError:
        _drop(t.key, c)  # a dead peer can look alive: the next call reconnects
        return SSHError(t.name, f"command did not finish within {timeout:g}s on {t.where}")

    # exec_command waits for the server's answer without a timeout of its own.
    watchdog = threading.Timer(timeout, chan.close)
    watchdog.daemon = True
    watchdog.start()
    try:
        chan.exec_command(cmd)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        if not watchdog.is_alive():
            raise timed_out() from None
        _drop(t.key, c)
        raise SSHError(t.name, f"command failed to start on {t.where}: {_reason(exc)}") from None
    finally:
        watchdog.cancel()
    try:
        data = stdin() if callable(stdin) else stdin
        if data:
            chan.settimeout(max(0.01, deadline - time.monotonic()))
            chan.sendall(data)
        chan.shutdown_write()
        out, err = bytearray(), bytearray()
        while True:
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            done = chan.exit_status_ready() and (chan.eof_received or chan.closed)
            if done and not (chan.recv_ready() or chan.recv_stderr_ready()):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise timed_out()
            if chan.eof_received:  # stdout is done (its pipe stays readable): wait for the status
                chan.status_event.wait(min(left, 1.0))
            else:
                select.select([chan], [], [], min(left, 1.0))
    except TimeoutError:
        raise timed_out() from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        _drop(t.key, c)
        raise SSHError(t.name, f"connection to {t.where} lost: {_reason(exc)}") from None
    if chan.exit_status == -1 and not c.active():
        _drop(t.key, c)
        raise SSHError(t.name, f"connection to {t.where} lost while the command ran")
    return CommandResult(
        t.name, chan.exit_status, out.decode(errors="replace"), err.decode(errors="replace")
    )


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
    t = target(inv, host)
    argv = [
        "ssh",
        "-o",
        f"UserKnownHostsFile={t.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
    ]
    if t.key_file:
        argv += ["-i", str(t.key_file), "-o", "IdentitiesOnly=yes"]
    if t.port != 22:
        argv += ["-p", str(t.port)]
    hops: list[Target] = []
    j = t.jump
    while j is not None:
        hops.insert(0, j)
        j = j.jump
    if hops:
        argv += ["-J", ",".join(f"{j.user}@{_host_port(j)}" for j in hops)]
    argv.append(f"{t.user}@{t.address}")
    if command:
        argv += ["--", *command]
    return argv


def _host_port(t: Target) -> str:
    addr = f"[{t.address}]" if ":" in t.address else t.address
    return f"{addr}:{t.port}"


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def known_hosts_line(names: list[str], pubkey_file: Path) -> str:
    kind, blob = pubkey_file.read_text().split()[:2]
    return f"{','.join(names)} {kind} {blob}"
