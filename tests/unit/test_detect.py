"""The failover's detection: the SSLRequest probe (against real local sockets), the
loss decision from timed answers, the thresholds' checks, and the watch loop."""

from __future__ import annotations

import math
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from faultbook import ssh
from faultbook.errors import ConditionTimeout, ParameterError
from faultbook.stack import detect


@contextmanager
def server(mode: str, address: str = "127.0.0.1", port: int = 0) -> Iterator[int]:
    """A local TCP server (a free port unless PORT): 'answer' replies 'S' to the
    SSLRequest like the postmaster, 'silent' accepts and never replies (frozen)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((address, port))
    srv.listen(16)
    stop = threading.Event()
    seen: list[bytes] = []

    def loop() -> None:
        srv.settimeout(0.05)
        conns = []
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            conns.append(conn)
            if mode == "answer":
                conn.settimeout(1)
                seen.append(conn.recv(8))
                conn.sendall(b"S")
        for c in conns:
            c.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join(2)
        srv.close()
    if mode == "answer" and seen:
        assert seen[0] == detect.SSL_REQUEST


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_probe_hears_a_server_that_answers() -> None:
    with server("answer") as port:
        assert detect.pg_answers("127.0.0.1", port, timeout=1.0)


def test_probe_counts_a_silent_server_as_a_miss() -> None:
    """A frozen postmaster: the kernel completes the handshake, nothing answers."""
    with server("silent") as port:
        t0 = time.monotonic()
        assert not detect.pg_answers("127.0.0.1", port, timeout=0.2)
        assert time.monotonic() - t0 < 1.0


def test_probe_counts_a_closed_port_as_a_miss() -> None:
    assert not detect.pg_answers("127.0.0.1", free_port(), timeout=0.2)


def test_remote_probe_command_asks_every_address_at_once_with_the_same_bytes() -> None:
    """The shell form run here for real (bash, timeout, head), against a server that
    answers (its assertion checks the printf octal escapes are the SSLRequest), a
    silent one on another loopback address and a closed port on a third."""
    with server("answer") as port, server("silent", "127.0.0.2", port):
        cmd = detect.remote_probe_command(["127.0.0.1", "127.0.0.2", "127.0.0.3"], port, 0.3)
        t0 = time.monotonic()
        out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=5).stdout
        took = time.monotonic() - t0
    assert detect.parse_remote_probe(out) == {
        "127.0.0.1": True,
        "127.0.0.2": False,
        "127.0.0.3": False,
    }
    assert took < 1.0, "the addresses are asked at once, not one after the other"


def test_parse_remote_probe_ignores_noise() -> None:
    assert detect.parse_remote_probe("motd\n10.0.0.1 ok\n10.0.0.2 miss\nbad line x y\n") == {
        "10.0.0.1": True,
        "10.0.0.2": False,
    }


def test_lost_only_when_every_vantage_is_silent_for_the_threshold() -> None:
    d = detect.LossDetector(("controller", "web1"), threshold_s=1.0)
    for i in range(6):  # controller silent from t=0 to t=1.25
        d.observe("controller", i * 0.25, i * 0.25 + 0.25, False)
    assert d.silent_for("controller") == pytest.approx(1.5)
    d.observe("web1", 0.0, 0.25, False)
    d.observe("web1", 0.5, 0.75, False)
    assert not d.lost(), "the web host has been silent for 0.75 s only"
    d.observe("web1", 1.0, 1.25, False)
    assert d.lost()
    assert d.since() == 0.0


def test_one_answer_resets_the_silence() -> None:
    """A blip shorter than the threshold: misses, then one answer, then misses again."""
    d = detect.LossDetector(("controller",), threshold_s=1.0)
    d.observe("controller", 0.0, 0.25, False)
    d.observe("controller", 0.5, 0.75, False)
    d.observe("controller", 0.75, 0.8, True)
    d.observe("controller", 1.0, 1.25, False)
    d.observe("controller", 1.5, 1.75, False)
    assert not d.lost() and d.silent_for("controller") == pytest.approx(0.75)
    d.observe("controller", 2.0, 2.25, False)
    assert d.lost() and d.since() == 1.0


@pytest.mark.parametrize(
    "threshold, interval, match",
    [
        (math.nan, 0.25, "threshold_s"),
        (-1.0, 0.25, "threshold_s"),
        (1.5, 0.0, "interval_s"),
        (1.5, "fast", "interval_s"),
        (0.3, 0.25, "at least two probe intervals"),
    ],
)
def test_bad_thresholds_are_one_line_errors(
    threshold: object, interval: object, match: str
) -> None:
    with pytest.raises(ParameterError, match=match):
        detect.check_thresholds(threshold, interval)  # type: ignore[arg-type]


class LocalInv:
    """db hosts on loopback addresses (db1 127.0.0.1, db2 127.0.0.2), all on PORT, and
    web hosts whose probe is faked."""

    def __init__(self, port: int, web: list[str]) -> None:
        self.vars = {"postgresql_port": port}
        self._web = web

    def member(self, host: str, group: str) -> None:
        assert group == "db"

    def host(self, name: str) -> object:
        return type("H", (), {"address": f"127.0.0.{name[-1]}", "name": name})()

    def group(self, name: str) -> list[object]:
        names = {"web": self._web, "db": ["db1", "db2"]}.get(name, [])
        return [type("H", (), {"name": h})() for h in names]


def fake_web(monkeypatch: pytest.MonkeyPatch, answer: str) -> None:
    """The web host answers ANSWER ('ok' or 'miss') for every address it is asked about."""

    def run(inv: object, host: str, cmd: str, timeout: float = 0, sudo: bool = False):
        addresses = cmd.split(" do ")[0].removeprefix("for a in ").removesuffix(";").split()
        out = "".join(f"{a} {answer}\n" for a in addresses)
        return ssh.CommandResult(host, 0, out, "")

    monkeypatch.setattr(detect.ssh, "run", run)


def test_watch_decides_lost_when_both_vantages_are_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_web(monkeypatch, "miss")
    with server("silent") as port:
        found = detect.watch(
            LocalInv(port, ["web1"]), "db1", threshold_s=0.5, interval_s=0.1, timeout_s=5
        )  # type: ignore[arg-type]
    assert found.lost and found.vantages == ("controller", "web1")
    took = (found.decided_at - found.silent_since).total_seconds()
    assert took >= 0.5
    assert set(found.samples["vantage"]) == {"controller", "web1"}
    assert "db1 lost" in str(found)


def test_watch_does_not_fail_over_while_the_web_host_still_reaches_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The controller's own network trouble is not a lost primary."""
    fake_web(monkeypatch, "ok")
    with server("silent") as port:
        found = detect.watch(
            LocalInv(port, ["web1"]), "db1", threshold_s=0.3, interval_s=0.1, timeout_s=1.0
        )  # type: ignore[arg-type]
    assert not found.lost
    with pytest.raises(ConditionTimeout, match="kept answering"):
        fake_web(monkeypatch, "ok")
        with server("answer") as port:
            w = detect.start(LocalInv(port, ["web1"]), threshold_s=0.3, interval_s=0.1)  # type: ignore[arg-type]
            w.wait_lost_or_raise("db1", timeout_s=0.6)


def test_watch_goes_on_with_the_controller_when_the_web_host_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def run(inv: object, host: str, cmd: str, timeout: float = 0, sudo: bool = False):
        raise ssh.SSHError(host, "no answer on 10.77.0.21:22 within 1.5s")

    monkeypatch.setattr(detect.ssh, "run", run)
    with server("silent") as port:
        found = detect.watch(
            LocalInv(port, ["web1"]), "db1", threshold_s=0.3, interval_s=0.1, timeout_s=3
        )  # type: ignore[arg-type]
    assert found.lost and found.vantages == ("controller",)
    assert "vantage web1 dropped" in str(found)


def test_a_watch_started_early_decides_from_what_it_has_already_heard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Watching every db host before the pre-flight knows which one is lost: by the
    time it asks, the silence of the lost one has been running; the other one, which
    answers, is never lost."""
    fake_web(monkeypatch, "miss")
    with server("silent") as port, server("answer", "127.0.0.2", port):
        w = detect.start(LocalInv(port, ["web1"]), threshold_s=0.4, interval_s=0.1, lifetime_s=10)  # type: ignore[arg-type]
        time.sleep(0.8)  # the "pre-flight"
        t0 = time.monotonic()
        found = w.wait_lost("db1", timeout_s=5)
        waited = time.monotonic() - t0
    assert found.lost and waited < 0.3, f"waited {waited:.2f}s after 0.8s of silence"
    assert not w._threads or all(not t.is_alive() for t in w._threads), "the watch ended"
    fake_web(monkeypatch, "ok")
    with server("silent") as port, server("answer", "127.0.0.2", port):
        w = detect.start(LocalInv(port, ["web1"]), threshold_s=0.3, interval_s=0.1, lifetime_s=5)  # type: ignore[arg-type]
        assert not w.wait_lost("db2", timeout_s=0.8).lost
    with pytest.raises(ParameterError, match="db9 is not watched"):
        detect.start(LocalInv(port, []), lifetime_s=1).wait_lost("db9")  # type: ignore[arg-type]


def test_a_watch_stops_by_itself_after_its_lifetime() -> None:
    with server("answer") as port:
        w = detect.Watch(
            LocalInv(port, []), ["db1"], threshold_s=0.3, interval_s=0.1, lifetime_s=0.5
        )  # type: ignore[arg-type]
        w.start()
        time.sleep(1.2)
        assert all(not t.is_alive() for t in w._threads)
