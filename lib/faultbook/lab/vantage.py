"""A vantage point on the lab bridge: a network namespace that is neither the
controller nor a lab host.

The security audit scans the hosts from here to see what a stranger on the
hosts' network reaches (the controller is trusted by the firewall; a
namespace at 10.77.0.250 is not). Clients that must come from an address the
stack does not know (a rate-limit test's second client) use it too::

    with Vantage("outside", "10.77.0.250") as v:
        v.run(["nmap", "-sT", "-p", "22", "10.77.0.11"], timeout=60)

On entry it creates the namespace ``fbv-<name>``, a veth pair whose outer end
``vv-<name>`` joins the lab bridge and whose inner end is ``eth0`` with the
address (a /24 on the lab subnet, no default route: nothing leaves the lab),
and loopback. On exit, error or not, it deletes the namespace, which deletes
the veth pair with it. A namespace of the same name left by a killed process
is removed first. Addresses outside 10.77.0.0/24, and the controller's, the
VIP's or a lab host's, are refused.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import subprocess
import time
from collections.abc import Sequence
from types import TracebackType

from faultbook import inventory
from faultbook.errors import LabError, ParameterError
from faultbook.inventory import Inventory
from faultbook.paths import LAB_INVENTORY

log = logging.getLogger(__name__)

LAB_SUBNET = ipaddress.ip_network("10.77.0.0/24")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,11}$")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def lab_addresses(inv: Inventory | None = None) -> dict[str, str]:
    """Address → who holds it in the lab inventory (the controller, the VIP, each host)."""
    inv = inv or inventory.load(LAB_INVENTORY)
    taken = {h.address: h.name for h in inv.hosts.values()}
    for key in ("controller_ip", "vip"):
        if inv.vars.get(key):
            taken[str(inv.vars[key])] = key
    return taken


def check_address(address: str, taken: dict[str, str] | None = None) -> str:
    """The address as a string, or ParameterError naming what was wrong and what is expected."""
    try:
        ip = ipaddress.ip_address(str(address).strip())
    except ValueError:
        raise ParameterError(
            f"vantage address {address!r} is not an IP address; expected one in {LAB_SUBNET}"
        ) from None
    if ip not in LAB_SUBNET or ip in (LAB_SUBNET.network_address, LAB_SUBNET.broadcast_address):
        raise ParameterError(
            f"vantage address {address!r} is outside the lab; expected a host address in "
            f"{LAB_SUBNET} (the audit's outside vantage uses 10.77.0.250)"
        )
    holder = (taken or {}).get(str(ip))
    if holder is not None:
        raise ParameterError(
            f"vantage address {address!r} is {holder}'s; expected a free address in {LAB_SUBNET}"
        )
    return str(ip)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ParameterError(
            f"vantage name {name!r} is not usable; expected 1-12 characters of a-z, 0-9 "
            "and '-' (it names a namespace and a veth)"
        )
    return name


class Vantage:
    """A network namespace on the lab bridge with one address (context manager)."""

    def __init__(self, name: str, address: str, inv: Inventory | None = None) -> None:
        inv = inv or inventory.load(LAB_INVENTORY)
        self.name = check_name(name)
        self.address = check_address(address, lab_addresses(inv))
        self.bridge = str(inv.vars.get("lab_bridge", "fb0"))
        self.netns = f"fbv-{self.name}"
        self.veth = f"vv-{self.name}"
        self._inner = f"vi-{self.name}"
        self._up = False

    # ----------------------------------------------------------------- life
    def __enter__(self) -> Vantage:
        if _ip("link", "show", "dev", self.bridge, check=False).returncode != 0:
            raise LabError(
                f"bridge {self.bridge} does not exist; is the lab up (`faultbook lab up`)?"
            )
        self._remove_stale()
        try:
            _ip("netns", "add", self.netns)
            self._up = True
            _ip("link", "add", self.veth, "type", "veth", "peer", "name", self._inner)
            _ip("link", "set", self._inner, "netns", self.netns)
            _ip("-n", self.netns, "link", "set", self._inner, "name", "eth0")
            _ip(
                "-n",
                self.netns,
                "addr",
                "add",
                f"{self.address}/{LAB_SUBNET.prefixlen}",
                "dev",
                "eth0",
            )
            _ip("-n", self.netns, "link", "set", "lo", "up")
            _ip("-n", self.netns, "link", "set", "eth0", "up")
            _ip("link", "set", self.veth, "master", self.bridge)
            _ip("link", "set", self.veth, "up")
            self._wait_address()
        except BaseException:
            self.close()
            raise
        log.info("vantage %s: %s on %s", self.name, self.address, self.bridge)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Delete the namespace (its veth pair goes with it); safe to call twice."""
        if self._up:
            _ip("netns", "del", self.netns, check=False)
            self._up = False
        # The outer end normally dies with its peer; a half-made pair may be left.
        _ip("link", "del", self.veth, check=False)
        _ip("link", "del", self._inner, check=False)

    def _remove_stale(self) -> None:
        listed = _ip("netns", "list", check=False).stdout.split()
        if self.netns in listed:
            log.warning(
                "vantage %s: removing namespace %s left by an earlier run", self.name, self.netns
            )
            _ip("netns", "del", self.netns, check=False)
        _ip("link", "del", self.veth, check=False)
        _ip("link", "del", self._inner, check=False)

    def _wait_address(self, timeout: float = 5.0) -> None:
        """IPv4 needs no DAD, but wait until the link is up so the first packet is not lost."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            out = _ip("-n", self.netns, "-o", "link", "show", "dev", "eth0", check=False).stdout
            if "LOWER_UP" in out:
                return
            time.sleep(0.05)
        raise LabError(f"vantage {self.name}: eth0 did not come up within {timeout:.0f} s")

    # ----------------------------------------------------------------- use
    def run(
        self, argv: Sequence[str], timeout: float, *, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the namespace; LabError when it outlives timeout (it is killed)."""
        if not self._up:
            raise LabError(f"vantage {self.name} is not open (use it as a context manager)")
        cmd = ["ip", "netns", "exec", self.netns, *argv]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LabError(
                f"vantage {self.name}: {' '.join(argv)[:120]} did not finish within {timeout:g} s"
            ) from None
        except FileNotFoundError as exc:
            raise LabError(f"vantage {self.name}: cannot run {argv[0]!r}: {exc}") from None
        if check and proc.returncode != 0:
            raise LabError(
                f"vantage {self.name}: {' '.join(argv)[:120]} exited {proc.returncode}: "
                f"{proc.stderr.strip()[-300:]}"
            )
        return proc
