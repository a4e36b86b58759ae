"""faultbook.ssh against real SSH servers run in-process (paramiko), no lab.

Two servers listen on 127.0.0.1: a target and a jump host that forwards
direct-tcpip channels. Commands run as local shell commands.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from faultbook import inventory, ssh
from faultbook.errors import SSHError

USER = "tester"


def keypair(path: Path) -> paramiko.PKey:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return paramiko.Ed25519Key.from_private_key_file(str(path))


class Server(paramiko.ServerInterface):
    """A tiny SSH server: public-key auth for one key, exec, direct-tcpip (if allowed)."""

    def __init__(
        self, address: str, host_key: paramiko.PKey, client_key: paramiko.PKey, jump: bool
    ) -> None:
        self.address = address
        self.host_key = host_key
        self.client_key = client_key
        self.jump = jump
        self.sock = socket.create_server((address, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.forwards: list[tuple[str, int]] = []
        self.transports: list[paramiko.Transport] = []
        self.sessions: list[paramiko.Channel] = []
        self._tcpip: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    # ---- ServerInterface
    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == USER and key.get_base64() == self.client_key.get_base64()
        return paramiko.common.AUTH_SUCCESSFUL if ok else paramiko.common.AUTH_FAILED

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.common.OPEN_SUCCEEDED
        return paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(
        self, chanid: int, origin: tuple[str, int], destination: tuple[str, int]
    ) -> int:
        if not self.jump:
            return paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        self._tcpip[chanid] = destination
        self.forwards.append(destination)
        return paramiko.common.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        threading.Thread(target=self._exec, args=(channel, command), daemon=True).start()
        return True

    # ---- plumbing
    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            t = paramiko.Transport(conn)
            t.add_server_key(self.host_key)
            self.transports.append(t)
            threading.Thread(target=self._accept, args=(t,), daemon=True).start()

    def _accept(self, t: paramiko.Transport) -> None:
        try:
            t.start_server(server=self)  # blocks until negotiated: not in the accept loop
        except (paramiko.SSHException, EOFError, OSError):
            return
        while t.is_active() and not self._stop.is_set():
            chan = t.accept(0.2)
            if chan is not None and chan.get_id() not in self._tcpip:
                self.sessions.append(chan)  # a dropped reference would close the channel
            elif chan is not None:
                dest = self._tcpip.pop(chan.get_id())
                threading.Thread(target=_bridge, args=(chan, dest), daemon=True).start()

    def _exec(self, channel: paramiko.Channel, command: bytes) -> None:
        # As sshd does: the command starts at once, and reads its stdin as it arrives.
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command.decode()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None
        channel.settimeout(10)
        with contextlib.suppress(Exception):
            while chunk := channel.recv(65536):
                proc.stdin.write(chunk)
                proc.stdin.flush()
        with contextlib.suppress(OSError):
            proc.stdin.close()
        proc.stdin = None  # closed: communicate() only reads
        out, err = proc.communicate()
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            channel.sendall(out)
            channel.sendall_stderr(err)
            channel.send_exit_status(proc.returncode)
        channel.close()

    def drop_all(self) -> None:
        """Close every connection from the server side."""
        for t in self.transports:
            t.close()
        self.transports.clear()

    def close(self) -> None:
        self._stop.set()
        self.drop_all()
        self.sock.close()
        self._thread.join(2)


def _bridge(chan: paramiko.Channel, dest: tuple[str, int]) -> None:
    with contextlib.suppress(OSError), socket.create_connection(dest, timeout=5) as s:
        s.settimeout(None)

        def pump_back() -> None:
            with contextlib.suppress(OSError, EOFError):
                while data := s.recv(65536):
                    chan.sendall(data)
            chan.close()

        threading.Thread(target=pump_back, daemon=True).start()
        with contextlib.suppress(OSError, EOFError):
            while data := chan.recv(65536):
                s.sendall(data)
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_WR)


class Lab:
    def __init__(self, tmp: Path) -> None:
        client_key = keypair(tmp / "id_ed25519")
        self.key_file = tmp / "id_ed25519"
        self.target = Server("127.0.0.1", keypair(tmp / "target_host_key"), client_key, False)
        self.bastion = Server("127.0.0.2", keypair(tmp / "bastion_host_key"), client_key, True)
        self.known_hosts = tmp / "known_hosts"
        self.known_hosts.write_text(
            "".join(
                f"[{s.address}]:{s.port} {s.host_key.get_name()} {s.host_key.get_base64()}\n"
                for s in (self.target, self.bastion)
            )
        )
        self.tmp = tmp

    def inventory(
        self, target_vars: str = "", known_hosts: Path | None = None, bastion: bool = True
    ) -> Path:
        p = self.tmp / "hosts.yml"
        text = f"""
all:
  vars:
    ansible_user: nobody-by-default
    faultbook_known_hosts: {known_hosts or self.known_hosts}
    ansible_ssh_private_key_file: {self.key_file}
  hosts:
    target:
      ansible_host: 127.0.0.1
      ansible_port: {self.target.port}
      ansible_user: {USER}
      {target_vars}
    bastion:
      ansible_host: 127.0.0.2
      ansible_port: {self.bastion.port}
      ansible_user: {USER}
"""
        p.write_text(text if bastion else text.split("    bastion:")[0])
        return p

    def close(self) -> None:
        self.target.close()
        self.bastion.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab_ = Lab(tmp_path_factory.mktemp("ssh"))
    yield lab_
    ssh.close_all()
    lab_.close()


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    ssh.close_all()
    yield
    ssh.close_all()


def counts(lab: Lab) -> tuple[int, int]:
    return lab.target.connections, lab.bastion.connections


def test_command_stdout_stderr_rc_and_stdin(lab: Lab) -> None:
    inv = inventory.load(lab.inventory())
    r = ssh.run(inv, "target", "echo out; echo err >&2; exit 3", timeout=5)
    assert (r.host, r.rc, r.stdout, r.stderr) == ("target", 3, "out\n", "err\n")
    r = ssh.run(inv, "target", "cat", timeout=5, stdin=b"secret\n")
    assert r.ok and r.stdout == "secret\n"


def test_stdin_from_a_callable_is_written_after_the_command_started(lab: Lab) -> None:
    """The command runs before the caller has its input: it writes a file at once,
    and the callable sees that file before it returns what the command reads."""
    inv = inventory.load(lab.inventory())
    mark = lab.tmp / "started"
    seen: list[bool] = []

    def later() -> bytes:
        deadline = time.monotonic() + 5
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(mark.exists())
        return b"0/6000028\n"

    r = ssh.run(inv, "target", f"touch {mark}; read -r lsn; echo got=$lsn", timeout=10, stdin=later)
    assert seen == [True]
    assert r.ok and r.stdout == "got=0/6000028\n"


def test_second_run_reuses_the_connection(lab: Lab) -> None:
    inv = inventory.load(lab.inventory())
    before = lab.target.connections
    for _ in range(3):
        assert ssh.run(inv, "target", "true", timeout=5).ok
    results = ssh.run_many(inv, ["target"] * 1, "echo hi", timeout=5)
    assert results["target"].stdout == "hi\n"  # type: ignore[union-attr]
    assert lab.target.connections - before == 1


def test_parallel_commands_share_one_connection(lab: Lab) -> None:
    inv = inventory.load(lab.inventory())
    before = lab.target.connections
    out: list[str] = []

    def one(i: int) -> None:
        out.append(ssh.run(inv, "target", f"echo {i}", timeout=5).stdout.strip())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(out, key=int) == [str(i) for i in range(8)]
    assert lab.target.connections - before == 1


def test_unknown_host_key_is_refused(lab: Lab) -> None:
    other = lab.tmp / "other_known_hosts"
    other.write_text(
        f"[127.0.0.2]:{lab.bastion.port} "
        f"{lab.bastion.host_key.get_name()} {lab.bastion.host_key.get_base64()}\n"
    )
    inv = inventory.load(lab.inventory(known_hosts=other))
    with pytest.raises(SSHError, match=rf"target: host key of 127.0.0.1:{lab.target.port} is not"):
        ssh.run(inv, "target", "true", timeout=5)


def test_wrong_port_names_host_and_address(lab: Lab, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    p = lab.inventory()
    p.write_text(p.read_text().replace(f"ansible_port: {lab.target.port}", f"ansible_port: {port}"))
    with pytest.raises(SSHError, match=rf"target: cannot connect to 127.0.0.1:{port}"):
        ssh.run(inventory.load(p), "target", "true", timeout=2)


def test_jump_host_from_the_inventory(lab: Lab) -> None:
    # 127.0.0.2 is bastion's inventory address: it is reached with its own port and user.
    inv = inventory.load(lab.inventory("ansible_ssh_common_args: '-o ProxyJump=bastion'"))
    before = counts(lab)
    forwards = len(lab.bastion.forwards)
    r = ssh.run(inv, "target", "echo via", timeout=5)
    assert r.stdout == "via\n"
    assert ssh.run(inv, "target", "true", timeout=5).ok
    assert counts(lab) == (before[0] + 1, before[1] + 1)
    assert lab.bastion.forwards[forwards:] == [("127.0.0.1", lab.target.port)]


def test_jump_host_given_as_user_host_port(lab: Lab) -> None:
    # The jump host is not in the inventory: the target's key and known_hosts serve.
    extra = f"ansible_ssh_extra_args: '-C -J {USER}@127.0.0.2:{lab.bastion.port}'"
    inv = inventory.load(lab.inventory(extra, bastion=False))
    t = ssh.target(inv, "target")
    assert t.jump is not None
    assert (t.jump.name, t.jump.address, t.jump.port) == (
        "127.0.0.2",
        "127.0.0.2",
        lab.bastion.port,
    )
    assert ssh.run(inv, "target", "echo ok", timeout=5).stdout == "ok\n"


def test_jump_host_that_refuses_forwarding(lab: Lab) -> None:
    # target's server does not forward: jumping through it to bastion fails, naming both.
    p = lab.inventory()
    p.write_text(
        p.read_text().replace(
            f"ansible_port: {lab.bastion.port}\n",
            f"ansible_port: {lab.bastion.port}\n      ansible_ssh_common_args: -J target\n",
        )
    )
    with pytest.raises(SSHError, match=r"bastion: jump host target \(127.0.0.1:\d+\) cannot reach"):
        ssh.run(inventory.load(p), "bastion", "true", timeout=5)


def test_reconnects_after_the_server_drops_the_connection(lab: Lab) -> None:
    inv = inventory.load(lab.inventory())
    before = lab.target.connections
    assert ssh.run(inv, "target", "true", timeout=5).ok
    lab.target.drop_all()
    assert ssh.run(inv, "target", "echo again", timeout=5).stdout == "again\n"
    assert lab.target.connections - before == 2


def test_stale_cached_connection_that_looks_active_is_retried_once(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = inventory.load(lab.inventory())
    before = lab.target.connections
    assert ssh.run(inv, "target", "true", timeout=5).ok
    # The transport still says it is active, but opening a session fails (EOF).
    real = paramiko.Transport.open_session
    calls = {"n": 0}

    def flaky(self: paramiko.Transport, *a: object, **kw: object) -> paramiko.Channel:
        calls["n"] += 1
        if calls["n"] == 1:
            raise EOFError()
        return real(self, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(paramiko.Transport, "open_session", flaky)
    assert ssh.run(inv, "target", "echo fresh", timeout=5).stdout == "fresh\n"
    assert lab.target.connections - before == 2


def test_forget_drops_the_cached_connection(lab: Lab) -> None:
    inv = inventory.load(lab.inventory())
    before = lab.target.connections
    assert ssh.run(inv, "target", "true", timeout=5).ok
    ssh.forget("127.0.0.1")
    assert ssh.run(inv, "target", "true", timeout=5).ok
    assert lab.target.connections - before == 2


def test_timeout_drops_the_cached_connection(lab: Lab) -> None:
    inv = inventory.load(lab.inventory())
    before = lab.target.connections
    started = time.monotonic()
    with pytest.raises(SSHError, match="did not finish within 0.5s"):
        ssh.run(inv, "target", "sleep 3", timeout=0.5)
    assert time.monotonic() - started < 2
    assert ssh.run(inv, "target", "true", timeout=5).ok
    assert lab.target.connections - before == 2


def test_ssh_argv_has_port_and_jump(lab: Lab) -> None:
    inv = inventory.load(lab.inventory("ansible_ssh_common_args: '-o ProxyJump=bastion'"))
    argv = ssh.ssh_argv(inv, "target", ["uptime"])
    assert ["-p", str(lab.target.port)] == argv[argv.index("-p") : argv.index("-p") + 2]
    assert argv[argv.index("-J") + 1] == f"{USER}@127.0.0.2:{lab.bastion.port}"
    assert argv[-3:] == [f"{USER}@127.0.0.1", "--", "uptime"]
    assert ["-i", str(lab.key_file)] == argv[argv.index("-i") : argv.index("-i") + 2]


def test_lab_targets_use_port_22_and_no_jump() -> None:
    inv = inventory.load("lab")
    t = ssh.target(inv, "db1")
    assert (t.address, t.port, t.user, t.jump) == ("10.77.0.31", 22, "deploy", None)
    argv = ssh.ssh_argv(inv, "db1")
    assert "-p" not in argv and "-J" not in argv and argv[-1] == "deploy@10.77.0.31"
