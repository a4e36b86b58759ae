"""Is the primary lost? A sub-second probe from two vantage points.

The failover's detection no longer waits for the Prometheus alert (scrape,
evaluation and ``for:`` put about 3 s on the clients' outage). Instead the
controller and a web host each ask the primary's PostgreSQL port a question
the postmaster itself answers (an SSLRequest: 8 bytes, one byte back) every
``interval_s``, each answer bounded by ``probe_timeout_s``. The primary is
lost when *both* vantage points have missed it without a single answer for
``threshold_s``: a frozen server (SIGSTOP, a stalled host) misses as surely
as a dead one, because the TCP handshake alone is not an answer. A link blip
or a freeze shorter than the threshold is not a loss.

Two vantage points, because a failover decided from the controller alone
would follow the controller's own network trouble: the web host is the
clients' path to the database. The Prometheus alert ``NoWritablePrimary``
corroborates the decision afterwards (``corroborate``) instead of gating it.
"""

from __future__ import annotations

import logging
import math
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from faultbook import ssh
from faultbook.errors import ConditionTimeout, ParameterError, SSHError
from faultbook.inventory import Inventory

log = logging.getLogger(__name__)

# PostgreSQL's SSLRequest: length 8, code 1234 5679. The postmaster's child
# answers 'S' (TLS on) or 'N' before any authentication.
SSL_REQUEST = struct.pack("!II", 8, 80877103)
CONTROLLER = "controller"

# Safe defaults (docs/runbooks/db-failover.md, "Detection"): 1.5 s without a
# single answer from either vantage point, asked every 0.25 s.
THRESHOLD_S = 1.5
INTERVAL_S = 0.25
PROBE_TIMEOUT_S = 0.25


def check_thresholds(threshold_s: float, interval_s: float) -> None:
    """One-line errors for thresholds a person typed (``nan``, negative, nonsense)."""
    for name, value, low, high in (
        ("threshold_s", threshold_s, 0.2, 60.0),
        ("interval_s", interval_s, 0.05, 5.0),
    ):
        if not isinstance(value, (int, float)) or math.isnan(value) or not low <= value <= high:
            raise ParameterError(
                f"detection {name} must be in [{low:g}, {high:g}] s, got {value!r}"
            )
    if interval_s * 2 > threshold_s:
        raise ParameterError(
            f"detection threshold_s ({threshold_s:g}) must be at least two probe intervals "
            f"({interval_s:g} s each): one missed probe is not a loss"
        )


def pg_answers(address: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Does the PostgreSQL server at ADDRESS:PORT answer an SSLRequest within TIMEOUT?"""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock.sendall(SSL_REQUEST)
            return sock.recv(1) in (b"S", b"N")
    except OSError:
        return False


def remote_probe_command(addresses: list[str], port: int, timeout: float = PROBE_TIMEOUT_S) -> str:
    """The same probe as one shell command for another host (bash, coreutils): every
    address at once, one line ``ADDRESS ok`` or ``ADDRESS miss`` each. The SSLRequest
    is written as octal escapes for printf."""
    one = (
        f'timeout {timeout:g} bash -c "exec 3<>/dev/tcp/$a/{port} && '
        "printf '\\0\\0\\0\\10\\4\\322\\26\\57' >&3 && head -c1 <&3\" 2>/dev/null "
        '| grep -q \'[SN]\' && echo "$a ok" || echo "$a miss"'
    )
    return f"for a in {' '.join(addresses)}; do ( {one} ) & done; wait"


def parse_remote_probe(out: str) -> dict[str, bool]:
    """``remote_probe_command``'s answer: address -> answered."""
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] in ("ok", "miss"):
            found[parts[0]] = parts[1] == "ok"
    return found


@dataclass
class LossDetector:
    """The decision, from timed answers: lost once every vantage point has gone
    THRESHOLD_S without an answer. Pure (the caller supplies the times)."""

    vantages: tuple[str, ...]
    threshold_s: float = THRESHOLD_S
    first_miss: dict[str, float | None] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)

    def observe(self, vantage: str, started: float, ended: float, ok: bool) -> None:
        """One probe by VANTAGE that started at STARTED and ended (answer or timeout) at ENDED."""
        if ok:
            self.first_miss[vantage] = None
        elif self.first_miss.get(vantage) is None:
            self.first_miss[vantage] = started
        self.last_seen[vantage] = ended

    def silent_for(self, vantage: str) -> float:
        start = self.first_miss.get(vantage)
        return 0.0 if start is None else self.last_seen[vantage] - start

    def lost(self) -> bool:
        return all(self.silent_for(v) >= self.threshold_s for v in self.vantages)

    def since(self) -> float | None:
        """When the silence the decision rests on began (the latest vantage's first miss)."""
        starts = [self.first_miss.get(v) for v in self.vantages]
        return None if any(s is None for s in starts) else max(s for s in starts if s is not None)


@dataclass(frozen=True)
class Detection:
    host: str
    lost: bool
    decided_at: pd.Timestamp | None
    silent_since: pd.Timestamp | None
    vantages: tuple[str, ...]
    threshold_s: float
    samples: pd.DataFrame
    note: str = ""

    def __str__(self) -> str:
        where = " and ".join(self.vantages)
        if not self.lost:
            return f"{self.host} answered {where} within every {self.threshold_s:g} s"
        took = (self.decided_at - self.silent_since).total_seconds()  # type: ignore[operator]
        text = (
            f"{self.host} lost: no answer to {where} for {took:.2f} s "
            f"(threshold {self.threshold_s:g} s)"
        )
        return text + (f"; {self.note}" if self.note else "")


def _web_vantage(inv: Inventory) -> str | None:
    web = inv.group("web")
    return web[0].name if web else None


class Watch:
    """Background probes of several db hosts, each from the controller and a web host,
    until ``wait_lost`` has an answer or LIFETIME_S passes (it stops by itself).

    Started before the pre-flight, so that by the time a run knows which host it
    deals with, the probes of that host have been running: an incident run decides
    from the silence it has itself observed, sooner."""

    def __init__(
        self,
        inv: Inventory,
        hosts: list[str],
        *,
        threshold_s: float = THRESHOLD_S,
        interval_s: float = INTERVAL_S,
        lifetime_s: float = 120.0,
    ) -> None:
        check_thresholds(threshold_s, interval_s)
        for h in hosts:
            inv.member(h, "db")
        self.inv, self.hosts = inv, list(hosts)
        self.threshold_s, self.interval_s = threshold_s, interval_s
        self._port = int(inv.vars.get("postgresql_port", 5432))
        self._probe_timeout = min(PROBE_TIMEOUT_S, interval_s)
        web = _web_vantage(inv)
        self._vantages = (CONTROLLER,) + ((web,) if web else ())
        self._detectors = {h: LossDetector(self._vantages, threshold_s) for h in self.hosts}
        self._samples: dict[str, list[dict[str, object]]] = {h: [] for h in self.hosts}
        self._broken: dict[str, str] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._deadline = time.monotonic() + lifetime_s
        self._threads: list[threading.Thread] = []

    def start(self) -> Watch:
        # The controller asks each host in a thread of its own; a web host asks all of
        # them in one command per cycle (one SSH exec, not one per db host).
        loops: list[tuple[Callable[[str], None], str]] = [
            (self._controller_loop, h) for h in self.hosts
        ]
        loops += [(self._remote_loop, v) for v in self._vantages if v != CONTROLLER]
        for fn, arg in loops:
            t = threading.Thread(target=fn, args=(arg,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._done.set()
        for t in self._threads:
            t.join(timeout=3.0)

    def __enter__(self) -> Watch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _running(self) -> bool:
        return not self._done.is_set() and time.monotonic() < self._deadline

    def _record(
        self, host: str, vantage: str, at: pd.Timestamp, t0: float, t1: float, ok: bool
    ) -> None:
        with self._lock:
            self._detectors[host].observe(vantage, t0, t1, ok)
            self._samples[host].append({"at": at, "vantage": vantage, "ok": ok, "took_s": t1 - t0})

    def _controller_loop(self, host: str) -> None:
        address = self.inv.host(host).address
        while self._running():
            t0, at = time.monotonic(), pd.Timestamp.now(tz="UTC")
            ok = pg_answers(address, self._port, self._probe_timeout)
            t1 = time.monotonic()
            self._record(host, CONTROLLER, at, t0, t1, ok)
            self._done.wait(max(0.0, self.interval_s - (t1 - t0)))

    def _remote_loop(self, vantage: str) -> None:
        addresses = {self.inv.host(h).address: h for h in self.hosts}
        cmd = remote_probe_command(list(addresses), self._port, self._probe_timeout)
        while self._running():
            t0, at = time.monotonic(), pd.Timestamp.now(tz="UTC")
            try:
                res = ssh.run(self.inv, vantage, cmd, timeout=max(2.0, self._probe_timeout + 1.5))
            except SSHError as exc:
                # The vantage point itself is gone: it can neither confirm nor veto.
                with self._lock:
                    self._broken[vantage] = exc.message
                    for d in self._detectors.values():
                        d.vantages = tuple(v for v in d.vantages if v != vantage)
                return
            t1 = time.monotonic()
            answers = parse_remote_probe(res.stdout)
            for address, host in addresses.items():
                self._record(host, vantage, at, t0, t1, answers.get(address, False))
            self._done.wait(max(0.0, self.interval_s - (t1 - t0)))

    def wait_lost(
        self, host: str, timeout_s: float = 60.0, stop: Callable[[], bool] | None = None
    ) -> Detection:
        """Until HOST is lost (both vantage points silent for the threshold) or TIMEOUT_S
        passes (not lost); then the watch ends. STOP ends it early (not lost)."""
        if host not in self._detectors:
            raise ParameterError(f"{host} is not watched (watching {', '.join(self.hosts)})")
        detector = self._detectors[host]
        deadline = time.monotonic() + timeout_s
        lost = False
        try:
            while time.monotonic() < deadline and not (stop and stop()):
                with self._lock:
                    if detector.vantages and detector.lost():
                        lost = True
                        break
                time.sleep(0.02)
        finally:
            self.stop()
        now_mono, now = time.monotonic(), pd.Timestamp.now(tz="UTC")
        since = detector.since() if lost else None
        note = "; ".join(f"vantage {v} dropped: {why}" for v, why in self._broken.items())
        return Detection(
            host=host,
            lost=lost,
            decided_at=now if lost else None,
            silent_since=(now - pd.Timedelta(seconds=now_mono - since))
            if since is not None
            else None,
            vantages=detector.vantages,
            threshold_s=self.threshold_s,
            samples=pd.DataFrame(self._samples[host], columns=["at", "vantage", "ok", "took_s"]),
            note=note,
        )

    def wait_lost_or_raise(self, host: str, timeout_s: float = 60.0) -> Detection:
        """``wait_lost`` that raises ConditionTimeout when HOST kept answering."""
        d = self.wait_lost(host, timeout_s)
        if not d.lost:
            raise ConditionTimeout(
                f"{host} kept answering the probes of {' and '.join(d.vantages)} "
                f"for {timeout_s:g} s: not lost, not failing over"
            )
        return d


def start(
    inv: Inventory,
    *,
    threshold_s: float = THRESHOLD_S,
    interval_s: float = INTERVAL_S,
    lifetime_s: float = 120.0,
) -> Watch:
    """Start watching every db host of INV (see ``Watch``)."""
    hosts = [h.name for h in inv.group("db")]
    return Watch(
        inv, hosts, threshold_s=threshold_s, interval_s=interval_s, lifetime_s=lifetime_s
    ).start()


def watch(
    inv: Inventory,
    host: str,
    *,
    threshold_s: float = THRESHOLD_S,
    interval_s: float = INTERVAL_S,
    timeout_s: float = 60.0,
    stop: Callable[[], bool] | None = None,
) -> Detection:
    """Probe HOST's PostgreSQL port from the controller and from a web host until
    both have heard nothing for THRESHOLD_S (lost) or TIMEOUT_S passes (not lost).
    STOP, when it returns true, ends the watch early (not lost)."""
    w = Watch(inv, [host], threshold_s=threshold_s, interval_s=interval_s, lifetime_s=timeout_s)
    return w.start().wait_lost(host, timeout_s, stop)


def corroborate(
    inv: Inventory, alert: str, since: pd.Timestamp, wait_s: float = 8.0
) -> tuple[bool, str]:
    """Did Prometheus see it too? Waits up to WAIT_S for ALERT to be pending or firing at
    any point since SINCE. Recorded next to the decision; it never gates a failover."""
    from faultbook.errors import FaultbookError
    from faultbook.stack import monitoring

    expr = f'ALERTS{{alertname="{alert}"}}'
    deadline = time.monotonic() + wait_s
    seen, why = pd.DataFrame(), ""
    while True:
        end = pd.Timestamp.now(tz="UTC")
        try:
            seen = monitoring.query_range(inv, expr, since.to_pydatetime(), end.to_pydatetime())
            why = ""
        except FaultbookError as exc:
            why = str(exc)
        if not seen.empty or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if seen.empty:
        return False, f"{alert} was neither pending nor firing since {since:%H:%M:%S}" + (
            f" ({why})" if why else ""
        )
    states = seen.groupby("alertstate")["timestamp"].min().sort_values()
    text = ", ".join(f"{state} from {at:%H:%M:%S}" for state, at in states.items())
    return True, f"{alert} {text}"
