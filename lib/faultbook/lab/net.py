"""The lab's network: one Linux bridge, one veth per host, link faults.

Each host's veth is named ``vb-<host>`` on the controller side (systemd-nspawn's
naming for --network-bridge). Cutting a link detaches that veth from the
bridge, so the host keeps its carrier and addresses but nothing reaches it;
netem shapes the controller-side veth, i.e. traffic towards the host.
"""

from __future__ import annotations

import ipaddress
import json
import re
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
    subprocess.run(["tc", "qdisc", "del", "dev", name, "root"], capture_output=True)


def netem(host: str, delay_ms: float, loss_pct: float) -> None:
    name = veth_name(host)
    if not link_exists(name):
        raise LabError(f"{host} has no link to shape (is it running?)")
    cmd = ["tc", "qdisc", "replace", "dev", name, "root", "netem", "limit", "10000"]
    if delay_ms > 0:
        cmd += ["delay", f"{delay_ms}ms"]
    if loss_pct > 0:
        cmd += ["loss", f"{loss_pct}%"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LabError(f"netem on {host} failed: {proc.stderr.strip()}")


def netem_state(host: str) -> str | None:
    proc = subprocess.run(
        ["tc", "qdisc", "show", "dev", veth_name(host), "root"], capture_output=True, text=True
    )
    line = proc.stdout.strip()
    if "netem" not in line:
        return None
    m = re.search(r"limit \d+\s*(.*)$", line)
    return (m.group(1).strip() if m else "") or "netem"
