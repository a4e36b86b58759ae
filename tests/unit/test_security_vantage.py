"""The lab's vantage namespace: address checks, and (as root) a real namespace on a
scratch bridge that is not the lab's, torn down even when the body raises."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from faultbook.errors import LabError, ParameterError
from faultbook.inventory import Host, Inventory
from faultbook.lab import vantage
from faultbook.lab.vantage import Vantage

BRIDGE = "fbtv0"


def _inv(bridge: str = BRIDGE) -> Inventory:
    hosts = {"lb1": Host("lb1", "10.77.0.11", ("lb",))}
    return Inventory(
        Path("/nonexistent/hosts.yml"),
        hosts,
        {"lb": ("lb1",)},
        {"lab_bridge": bridge, "controller_ip": "10.77.0.1", "vip": "10.77.0.10"},
    )


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("10.78.0.250", "outside the lab"),
        ("192.168.1.1", "outside the lab"),
        ("10.77.0.255", "outside the lab"),
        ("10.77.0.0", "outside the lab"),
        ("nope", "not an IP address"),
        ("10.77.0.1", "controller_ip"),
        ("10.77.0.10", "vip"),
        ("10.77.0.11", "lb1"),
    ],
)
def test_bad_addresses_are_refused(address: str, words: str) -> None:
    with pytest.raises(ParameterError, match=words):
        Vantage("outside", address, _inv())


@pytest.mark.parametrize("name", ["", "UPPER", "a" * 13, "a b", "../x"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ParameterError, match="vantage name"):
        Vantage(name, "10.77.0.250", _inv())


def test_the_lab_inventory_addresses_are_taken() -> None:
    taken = vantage.lab_addresses()
    assert taken["10.77.0.1"] == "controller_ip"
    assert taken["10.77.0.10"] == "vip"
    assert "10.77.0.250" not in taken and "lb1" in taken.values()


def test_run_needs_an_open_vantage() -> None:
    with pytest.raises(LabError, match="not open"):
        Vantage("outside", "10.77.0.250", _inv()).run(["true"], timeout=1)


def test_a_missing_bridge_is_named() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with (
        pytest.raises(LabError, match="bridge fbtv9 does not exist"),
        Vantage("t1", "10.77.0.251", _inv("fbtv9")),
    ):
        pass


@pytest.fixture
def scratch_bridge():  # type: ignore[no-untyped-def]
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
    try:
        yield BRIDGE
    finally:
        subprocess.run(["ip", "link", "del", BRIDGE], check=False)


def _netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _link(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


def test_two_vantages_reach_each_other_and_vanish(scratch_bridge: str) -> None:
    with Vantage("ta", "10.77.0.251", _inv()) as a, Vantage("tb", "10.77.0.252", _inv()) as b:
        assert a.address == "10.77.0.251"
        assert "fbv-ta" in _netns() and _link("vv-ta")
        got = a.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"], timeout=5)
        assert "10.77.0.251/24" in got.stdout
        ping = b.run(["ping", "-c", "1", "-W", "2", a.address], timeout=10)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        route = a.run(["ip", "route", "get", "192.0.2.1"], timeout=5)
        assert route.returncode != 0  # no default route: nothing leaves the lab
    assert "fbv-ta" not in _netns() and "fbv-tb" not in _netns()
    assert not _link("vv-ta") and not _link("vv-tb")


def test_torn_down_on_error_and_timeouts_named(scratch_bridge: str) -> None:
    with (
        pytest.raises(LabError, match="did not finish within 0.5 s"),
        Vantage("tc", "10.77.0.253", _inv()) as v,
    ):
        v.run(["sleep", "5"], timeout=0.5)
    assert "fbv-tc" not in _netns() and not _link("vv-tc")


def test_a_stale_namespace_is_replaced(scratch_bridge: str) -> None:
    subprocess.run(["ip", "netns", "add", "fbv-td"], check=True)
    try:
        with Vantage("td", "10.77.0.254", _inv()) as v:
            assert v.run(["true"], timeout=5).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", "fbv-td"], capture_output=True)
    assert "fbv-td" not in _netns()
