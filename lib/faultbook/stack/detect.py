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


def remote_probe_command(address: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> str:
    """The same probe as a shell command for another host (bash, coreutils): prints
    ``ok`` or ``miss``. The SSLRequest is written as octal escapes for printf."""
    return (
        f"timeout {timeout:g} bash -c 'exec 3<>/dev/tcp/{address}/{port} && "
        'printf "\\0\\0\\0\\10\\4\\322\\26\\57" >&3 && head -c1 <&3\' 2>/dev/null '
        "| grep -q '[SN]' && echo ok || echo miss"
    )


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
    check_thresholds(threshold_s, interval_s)
    inv.member(host, "db")
    address = inv.host(host).address
    port = int(inv.vars.get("postgresql_port", 5432))
    probe_timeout = min(PROBE_TIMEOUT_S, interval_s)
    web = _web_vantage(inv)
    vantages = (CONTROLLER,) + ((web,) if web else ())
    detector = LossDetector(vantages, threshold_s)
    samples: list[dict[str, object]] = []
    lock = threading.Lock()
    done = threading.Event()
    broken: dict[str, str] = {}

    def ask(vantage: str) -> bool:
        if vantage == CONTROLLER:
            return pg_answers(address, port, probe_timeout)
        cmd = remote_probe_command(address, port, probe_timeout)
        res = ssh.run(inv, vantage, cmd, timeout=max(2.0, probe_timeout + 1.5))
        return res.stdout.strip().endswith("ok")

    def loop(vantage: str) -> None:
        while not done.is_set():
            started = time.monotonic()
            at = pd.Timestamp.now(tz="UTC")
            try:
                ok = ask(vantage)
            except SSHError as exc:
                # The vantage point itself is gone: it can neither confirm nor veto.
                with lock:
                    broken[vantage] = exc.message
                    detector.vantages = tuple(v for v in detector.vantages if v != vantage)
                return
            ended = time.monotonic()
            with lock:
                detector.observe(vantage, started, ended, ok)
                samples.append({"at": at, "vantage": vantage, "ok": ok, "took_s": ended - started})
            done.wait(max(0.0, interval_s - (ended - started)))

    threads = [threading.Thread(target=loop, args=(v,), daemon=True) for v in vantages]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout_s
    lost = False
    try:
        while time.monotonic() < deadline and not (stop and stop()):
            with lock:
                if detector.vantages and detector.lost():
                    lost = True
                    break
            time.sleep(0.02)
    finally:
        done.set()
        for t in threads:
            t.join(timeout=3.0)
    now_mono, now = time.monotonic(), pd.Timestamp.now(tz="UTC")
    since = detector.since() if lost else None
    note = "; ".join(f"vantage {v} dropped: {why}" for v, why in broken.items())
    return Detection(
        host=host,
        lost=lost,
        decided_at=now if lost else None,
        silent_since=(now - pd.Timedelta(seconds=now_mono - since)) if since is not None else None,
        vantages=detector.vantages,
        threshold_s=threshold_s,
        samples=pd.DataFrame(samples, columns=["at", "vantage", "ok", "took_s"]),
        note=note,
    )


def wait_lost(inv: Inventory, host: str, **kwargs: float) -> Detection:
    """``watch`` that raises ConditionTimeout when HOST kept answering."""
    d = watch(inv, host, **kwargs)  # type: ignore[arg-type]
    if not d.lost:
        raise ConditionTimeout(
            f"{host} kept answering the probes of {' and '.join(d.vantages)} "
            f"for {kwargs.get('timeout_s', 60.0):g} s: not lost, not failing over"
        )
    return d


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
