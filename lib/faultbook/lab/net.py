"""The lab's network: one Linux bridge, one veth per host, link faults.

Each host's veth is named ``vb-<host>`` on the controller side (systemd-nspawn's
naming for --network-bridge). Cutting a link detaches that veth from the
bridge, so the host keeps its carrier and addresses but nothing reaches it;
delay and loss (see faultbook.lab.delay) act on the packets the host sends.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess

from faultbook.errors import LabError


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def veth_name(host: str) -> str:
    name = f"vb-{host}"
    if len(name) > 15:
        raise LabError(f"host name {host!r} is too long for a veth name (max 12 characters)")
    return name


def link_exists(name: str) -> bool:
    return _ip("link", "show", "dev", name, check=False).returncode == 0


def bridge_up(bridge: str, controller_ip: str, subnet: str) -> None:
    prefix = ipaddress.ip_network(subnet).prefixlen
    if not link_exists(bridge):
        _ip("link", "add", bridge, "type", "bridge")
    addrs = _ip("-j", "addr", "show", "dev", bridge).stdout
    have = {a["local"] for i in json.loads(addrs or "[]") for a in i.get("addr_info", [])}
    if controller_ip not in have:
        _ip("addr", "add", f"{controller_ip}/{prefix}", "dev", bridge)
    _ip("link", "set", bridge, "up")


def bridge_down(bridge: str) -> None:
    if link_exists(bridge):
        _ip("link", "del", bridge)


def delete_link(name: str) -> None:
    _ip("link", "del", name, check=False)


def veths() -> list[str]:
    out = _ip("-j", "link", "show").stdout
    return [i["ifname"] for i in json.loads(out or "[]") if i["ifname"].startswith("vb-")]


def link_state(host: str, bridge: str) -> str:
    """'up', 'cut' (detached from the bridge), or 'absent'."""
    name = veth_name(host)
    out = _ip("-j", "link", "show", "dev", name, check=False)
    if out.returncode != 0:
        return "absent"
    info = json.loads(out.stdout)[0]
    return "up" if info.get("master") == bridge else "cut"


def cut(host: str) -> None:
    name = veth_name(host)
    if not link_exists(name):
        raise LabError(f"{host} has no link to cut (is it running?)")
    _ip("link", "set", name, "nomaster")


def heal(host: str, bridge: str) -> None:
    name = veth_name(host)
    if not link_exists(name):
        raise LabError(f"{host} has no link to heal (is it running?)")
    _ip("link", "set", name, "master", bridge)
    _ip("link", "set", name, "up")


QUEUE = 7
_RULE = ["OUTPUT", "!", "-o", "lo", "-j", "NFQUEUE", "--queue-num", str(QUEUE), "--queue-bypass"]


def _iptables(netns_pid: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net=/proc/{netns_pid}/ns/net", "iptables-legacy", "-w", *args],
        capture_output=True,
        text=True,
    )


def queue_rule_add(netns_pid: int) -> None:
    proc = _iptables(netns_pid, "-I", *_RULE[:1], "1", *_RULE[1:])
    if proc.returncode != 0:
        raise LabError(f"cannot add the NFQUEUE rule: {proc.stderr.strip()}")


def queue_rule_del(netns_pid: int) -> None:
    for _ in range(10):
        if _iptables(netns_pid, "-D", *_RULE).returncode != 0:
            return
