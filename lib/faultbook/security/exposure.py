"""Network exposure: what nmap finds open, against what the flow table admits.

Each vantage point scans every host and the VIP: every TCP port (a SYN scan)
and a short list of UDP ports (the flow table's UDP ports plus the usual
suspects).

The comparison, per (vantage, target, protocol, port):

- open and not admitted by any flow: **high** (an exposure the flow table does
  not know about). TCP: nmap saw a SYN/ACK. UDP: only an actual answer counts
  (``open``): silence (``open|filtered``) is what a dropping firewall gives,
  and the kernel rate-limits the ICMP errors of a rejecting one, so silence
  would make false alarms. A silent UDP listener is caught by the hosts check
  (``ss``) instead;
- admitted, and nothing answers: **medium** (a declared flow whose service is
  down, or a stale flow: an opening waiting for a service). TCP: not ``open``;
  UDP: ``closed`` (an ICMP port unreachable: the datagram got through and
  nothing listens).

Timing. nmap is run with ``-T4 --max-retries 2 --max-rtt-timeout 500ms
--defeat-rst-ratelimit --host-timeout``, and no ``--min-rate`` unless the
inventory sets ``security_nmap_min_rate``. The lab's firewall answers refused
TCP with a reset at once, so a full 65535-port sweep is bounded by how fast
nmap may send; nmap's own congestion control finds that rate. A forced rate
(``--min-rate 5000``) was measured to lose SYN/ACKs on the lab (two vantages
at once on a loaded 2-core controller: 8404 and 9093 missed, every outside
host timed out), so the vantages scan one after the other and nothing forces
the rate. ``--defeat-rst-ratelimit`` stops nmap from slowing down for RST rate
limits (only open ports matter here). Against hosts that *drop*
(``common_nft_refuse_action: drop``) ``--max-rtt-timeout`` caps each probe's
wait and ``--host-timeout`` caps each host; a host that hits it is a finding
(incomplete scan), never a silent pass.

Every difference is confirmed before it is reported: the ports in question are
probed again on that target alone (``confirm_argv``: a connect scan, three
retries), so a SYN/ACK lost on a busy bridge is neither a missing service nor
an exposure.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
from defusedxml import ElementTree as ET

from faultbook import ssh
from faultbook.errors import ConfigError, LabError, ParseError
from faultbook.inventory import Inventory
from faultbook.security.findings import Finding, passed
from faultbook.security.flows import FlowTable, Target

log = logging.getLogger(__name__)

# Besides the flow table's own UDP ports: DNS, DHCP, NTP, SNMP, IKE, syslog, mDNS,
# LLMNR, memcached, the Alertmanager gossip default. Each is a classic leak.
EXTRA_UDP = (53, 67, 68, 123, 161, 500, 514, 5353, 5355, 11211)
TCP_ALL = "1-65535"


@dataclass(frozen=True)
class Vantage:
    """Where a scan runs from: ``label`` for people, ``address`` the source the
    firewall sees, ``runner`` how nmap is started there."""

    label: str
    address: str
    runner: str  # "local", "netns:<name>", "ssh:<host>"


@dataclass(frozen=True)
class PortState:
    address: str
    proto: str
    port: int
    state: str
    reason: str


@dataclass(frozen=True)
class Scan:
    vantage: Vantage
    ports: list[PortState]
    host_timeouts: list[str]  # addresses nmap gave up on
    elapsed_s: float
    argv: list[str]


def nmap_argv(
    addresses: Sequence[str],
    tcp_ports: str = TCP_ALL,
    udp_ports: Iterable[int] = (),
    host_timeout_s: float = 240.0,
    min_rate: int | None = None,
) -> list[str]:
    """The nmap command line (XML on stdout). ``tcp_ports`` is nmap's syntax ("1-65535")."""
    udp = sorted(set(udp_ports))
    spec = f"T:{tcp_ports}" + (f",U:{','.join(map(str, udp))}" if udp else "")
    argv = ["nmap", "-n", "-Pn", "-sS"]
    if udp:
        argv.append("-sU")
    argv += [
        "-p",
        spec,
        "-T4",
        "--max-retries",
        "2",
        *(["--min-rate", str(int(min_rate))] if min_rate else []),
        "--max-rtt-timeout",
        "500ms",
        "--defeat-rst-ratelimit",
        "--host-timeout",
        f"{int(host_timeout_s)}s",
        "-oX",
        "-",
        *addresses,
    ]
    return argv


def confirm_argv(address: str, tcp: Iterable[int], udp: Iterable[int] = ()) -> list[str]:
    """Probe a few ports of one target again, slowly: a TCP connect scan, three retries."""
    t, u = sorted(set(tcp)), sorted(set(udp))
    spec = ",".join([*(f"T:{p}" for p in t), *(f"U:{p}" for p in u)])
    argv = ["nmap", "-n", "-Pn", "-sT"] + (["-sU"] if u else [])
    return [*argv, "-p", spec, "--max-retries", "3", "-oX", "-", address]


def parse_xml(text: str) -> tuple[list[PortState], list[str]]:
    """nmap's XML: every listed port's state, and the hosts that timed out."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:  # nmap's output; defusedxml refuses entity tricks
        raise ParseError(f"nmap output is not XML ({exc}): {text[:200]!r}") from None
    if root.tag != "nmaprun":
        raise ParseError(f"nmap output's root is <{root.tag}>, expected <nmaprun>")
    ports: list[PortState] = []
    timeouts: list[str] = []
    for host in root.iter("host"):
        addr_el = host.find("address[@addrtype='ipv4']")
        if addr_el is None:
            addr_el = host.find("address")
        if addr_el is None:
            continue
        addr = addr_el.get("addr", "")
        if host.get("timedout") == "true":
            timeouts.append(addr)
        for p in host.iter("port"):
            st = p.find("state")
            if st is None:
                continue
            ports.append(
                PortState(
                    addr,
                    p.get("protocol", ""),
                    int(p.get("portid", "0")),
                    st.get("state", ""),
                    st.get("reason", ""),
                )
            )
    return ports, timeouts


def is_open(p: PortState) -> bool:
    """Someone answered on this port."""
    return p.state == "open"


def is_answering(p: PortState) -> bool:
    """Not refused: TCP open; UDP open or silent (``open|filtered``), i.e. not ``closed``."""
    return p.state == "open" or (p.proto == "udp" and p.state == "open|filtered")


def run_nmap(
    vantage: Vantage,
    argv: list[str],
    timeout_s: float,
    inv: Inventory | None = None,
    netns: object | None = None,
) -> Scan:
    """Run nmap at the vantage point; ``netns`` is an open lab.vantage.Vantage."""
    t0 = time.monotonic()
    if vantage.runner == "local":
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        except FileNotFoundError:
            raise ConfigError("nmap is not installed; fix with: apt-get install nmap") from None
        except subprocess.TimeoutExpired:
            raise LabError(f"nmap from {vantage.label} did not finish in {timeout_s:g} s") from None
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    elif vantage.runner.startswith("netns:"):
        run = getattr(netns, "run", None)
        if run is None:
            raise LabError(f"vantage {vantage.label}: its namespace is not open")
        proc = run(argv, timeout=timeout_s)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    elif vantage.runner.startswith("ssh:"):
        if inv is None:
            raise ConfigError("an SSH vantage needs the inventory")
        host = vantage.runner.split(":", 1)[1]
        cmd = " ".join(shlex.quote(a) for a in argv)
        r = ssh.run(inv, host, cmd, timeout=timeout_s, sudo=True)
        if r.rc == 127 or "nmap: not found" in r.stderr or "command not found" in r.stderr:
            raise ConfigError(f"nmap is not installed on {host}; fix with: apt-get install nmap")
        rc, out, err = r.rc, r.stdout, r.stderr
    else:
        raise ConfigError(f"unknown vantage runner {vantage.runner!r}")
    if rc != 0:
        raise LabError(f"nmap from {vantage.label} failed (rc={rc}): {err.strip()[-300:]}")
    ports, timeouts = parse_xml(out)
    return Scan(vantage, ports, timeouts, time.monotonic() - t0, argv)


def compare(
    scan: Scan,
    table: FlowTable,
    targets: Sequence[Target],
    udp_scanned: Iterable[int],
    confirm: Callable[[Target, list[tuple[str, int]]], set[tuple[str, int]]] | None = None,
) -> list[Finding]:
    """Findings for one vantage's scan: every difference named by host, port and vantage.

    ``confirm(target, ports)`` probes those ports again and returns the ones that
    answer (TCP open; UDP open or silent): an extra port must still be open, a
    missing one must still not answer, to be reported."""
    v = scan.vantage
    found: dict[str, set[tuple[str, int]]] = {t.address: set() for t in targets}
    answering: dict[str, set[tuple[str, int]]] = {t.address: set() for t in targets}
    for p in scan.ports:
        if p.address in found and is_open(p):
            found[p.address].add((p.proto, p.port))
        if p.address in found and is_answering(p):
            answering[p.address].add((p.proto, p.port))
    udp = set(udp_scanned)
    out: list[Finding] = []
    for t in targets:
        if t.address in scan.host_timeouts:
            out.append(
                Finding(
                    "exposure",
                    t.name,
                    "high",
                    f"from {v.label} ({v.address}): nmap gave up on {t.address} "
                    "(host timeout): the scan is incomplete",
                    "raise host_timeout_s, or find why the host answers so slowly",
                )
            )
            continue
        expect = {("tcp", p) for p in table.expected(t, v.address, "tcp")}
        expect |= {("udp", p) for p in table.expected(t, v.address, "udp") if p in udp}
        seen = found[t.address]
        extra = sorted(seen - expect)
        missing = sorted(expect - seen - answering[t.address])
        if confirm is not None and (extra or missing):
            again = confirm(t, extra + missing)
            extra = [x for x in extra if x in again]
            missing = [x for x in missing if x not in again]
            seen = (seen - set(extra)) | {x for x in again if x in expect} | set(extra)
        for proto, port in extra:
            out.append(
                Finding(
                    "exposure",
                    t.name,
                    "high",
                    f"from {v.label} ({v.address}): {t.address} {proto}/{port} is open; "
                    "no flow admits it",
                    f"stop what listens on {proto}/{port} or close it in nftables; if the "
                    "flow is wanted, add it to common_nft_flows / common_nft_extra_flows",
                )
            )
        for proto, port in missing:
            out.append(
                Finding(
                    "exposure",
                    t.name,
                    "medium",
                    f"from {v.label} ({v.address}): {t.address} {proto}/{port} is admitted by "
                    "the flow table but does not answer",
                    "start the service behind it, or remove the stale flow",
                )
            )
        if not extra and not missing:
            ports = ", ".join(f"{p}/{n}" for p, n in sorted(seen)) or "nothing"
            out.append(
                passed(
                    "exposure", t.name, f"from {v.label} ({v.address}): {ports} open, as declared"
                )
            )
    return out


def confirmer(
    vantage: Vantage, timeout_s: float, inv: Inventory | None, netns: object | None
) -> Callable[[Target, list[tuple[str, int]]], set[tuple[str, int]]]:
    """``compare``'s ``confirm``: nmap again from the same vantage, on a few ports."""

    def again(t: Target, ports: list[tuple[str, int]]) -> set[tuple[str, int]]:
        tcp = [p for proto, p in ports if proto == "tcp"]
        udp = [p for proto, p in ports if proto == "udp"]
        scan = run_nmap(vantage, confirm_argv(t.address, tcp, udp), timeout_s, inv, netns)
        return {(p.proto, p.port) for p in scan.ports if p.address == t.address and is_answering(p)}

    return again


def frame(scan: Scan, targets: Sequence[Target]) -> pd.DataFrame:
    """The open ports a scan saw, one row per target (for the runbook's table)."""
    names = {t.address: t.name for t in targets}
    rows: dict[str, list[str]] = {t.address: [] for t in targets}
    for p in scan.ports:
        if p.address in rows and is_open(p):
            rows[p.address].append(f"{p.port}/{p.proto}")
    return pd.DataFrame(
        [
            {
                "vantage": scan.vantage.label,
                "from": scan.vantage.address,
                "target": names[a],
                "address": a,
                "open": ", ".join(sorted(v, key=lambda s: (s.split("/")[1], int(s.split("/")[0]))))
                or "-",
            }
            for a, v in rows.items()
        ]
    )
