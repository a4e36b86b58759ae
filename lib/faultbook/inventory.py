"""Read an Ansible YAML inventory: hosts, groups, addresses and variables.

faultbook reads the same file Ansible does, so the topology has one source
of truth. Only the YAML inventory format is supported; errors name the file
and what is wrong with it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from faultbook.errors import InventoryError
from faultbook.paths import INVENTORIES_DIR, LAB_INVENTORY, faultbook_home


@dataclass(frozen=True)
class Host:
    """One inventory host with its effective variables."""

    name: str
    address: str
    groups: tuple[str, ...]
    vars: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Inventory:
    """A parsed inventory. ``hosts`` keeps the file's order."""

    path: Path
    hosts: Mapping[str, Host]
    groups: Mapping[str, tuple[str, ...]]
    vars: Mapping[str, Any]

    @property
    def is_lab(self) -> bool:
        return self.path.resolve() == LAB_INVENTORY.resolve()

    @property
    def name(self) -> str:
        return self.path.parent.name

    def host(self, name: str) -> Host:
        """Return a host by name, or raise InventoryError listing the known ones."""
        try:
            return self.hosts[name]
        except KeyError:
            known = ", ".join(self.hosts)
            raise InventoryError(
                f"unknown host {name!r} in {self.path}; known hosts: {known}"
            ) from None

    def group(self, name: str) -> list[Host]:
        if name not in self.groups:
            known = ", ".join(sorted(self.groups))
            raise InventoryError(f"unknown group {name!r} in {self.path}; known groups: {known}")
        return [self.hosts[h] for h in self.groups[name]]

    def select(self, names: Iterable[str] | None) -> list[Host]:
        """Hosts or groups by name (None: every host), in inventory order."""
        if names is None:
            return list(self.hosts.values())
        wanted: list[str] = []
        for n in names:
            members = [h.name for h in self.group(n)] if n in self.groups else [self.host(n).name]
            wanted.extend(m for m in members if m not in wanted)
        return [self.hosts[h] for h in self.hosts if h in wanted]


def resolve_path(inventory: str | os.PathLike[str] | None) -> Path:
    """Accept a file, a directory holding hosts.yml, or a name under inventories/."""
    if inventory is None or str(inventory) in ("", "lab"):
        return LAB_INVENTORY
    p = Path(inventory)
    if not p.exists() and (INVENTORIES_DIR / str(inventory)).is_dir():
        p = INVENTORIES_DIR / str(inventory)
    if p.is_dir():
        p = p / "hosts.yml"
    if not p.is_file():
        known = ", ".join(sorted(d.name for d in INVENTORIES_DIR.iterdir() if d.is_dir()))
        raise InventoryError(
            f"inventory {str(inventory)!r} not found; expected a hosts.yml file, a directory "
            f"holding one, or one of: {known}"
        )
    return p


def load(inventory: str | os.PathLike[str] | None = None) -> Inventory:
    """Parse an inventory file; raise InventoryError naming the file and the fault."""
    path = resolve_path(inventory)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InventoryError(f"{path}: not valid YAML{where}: {problem}") from None
    except OSError as exc:
        raise InventoryError(f"{path}: cannot be read ({exc.strerror})") from None
    return parse(data, path)


def _mapping(value: Any, path: Path, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InventoryError(f"{path}: '{where}' must be a mapping, got {type(value).__name__}")
    return value


def parse(data: Any, path: Path) -> Inventory:
    """Build an Inventory from already-loaded YAML data."""
    if not isinstance(data, dict) or "all" not in data:
        raise InventoryError(f"{path}: expected a mapping with a top-level 'all' group")
    host_vars: dict[str, dict[str, Any]] = {}
    host_groups: dict[str, list[str]] = {}
    groups: dict[str, list[str]] = {}
    # group name -> (parents chain vars), applied in depth order
    group_vars: dict[str, dict[str, Any]] = {}
    group_depth: dict[str, int] = {}

    def walk(name: str, node: Any, where: str, depth: int, ancestors: tuple[str, ...]) -> None:
        node = _mapping(node, path, where)
        unknown = set(node) - {"hosts", "vars", "children"}
        if unknown:
            raise InventoryError(
                f"{path}: '{where}' has unexpected key(s) {', '.join(sorted(unknown))}; "
                "expected hosts, vars or children"
            )
        group_vars[name] = _mapping(node.get("vars"), path, f"{where}.vars")
        group_depth[name] = max(group_depth.get(name, 0), depth)
        groups.setdefault(name, [])
        for hname, hv in _mapping(node.get("hosts"), path, f"{where}.hosts").items():
            if not isinstance(hname, str) or not hname:
                raise InventoryError(f"{path}: '{where}.hosts' has an invalid host name {hname!r}")
            hv = _mapping(hv, path, f"{where}.hosts.{hname}")
            host_vars.setdefault(hname, {}).update(hv)
            for g in (*ancestors, name):
                if hname not in groups.setdefault(g, []):
                    groups[g].append(hname)
                if g not in host_groups.setdefault(hname, []):
                    host_groups[hname].append(g)
        for cname, child in _mapping(node.get("children"), path, f"{where}.children").items():
            walk(str(cname), child, f"{where}.children.{cname}", depth + 1, (*ancestors, name))

    walk("all", data["all"], "all", 0, ())
    if not host_vars:
        raise InventoryError(f"{path}: defines no hosts")
    all_vars = group_vars.get("all", {})
    hosts: dict[str, Host] = {}
    seen_addr: dict[str, str] = {}
    for hname, hv in host_vars.items():
        eff: dict[str, Any] = {}
        for g in sorted(host_groups[hname], key=lambda g: group_depth[g]):
            eff.update(group_vars.get(g, {}))
        eff.update(hv)
        address = str(eff.get("ansible_host", hname))
        if address in seen_addr:
            raise InventoryError(
                f"{path}: hosts {seen_addr[address]} and {hname} share the address {address}"
            )
        seen_addr[address] = hname
        member_of = tuple(g for g in host_groups[hname] if g != "all")
        hosts[hname] = Host(name=hname, address=address, groups=member_of, vars=eff)
    return Inventory(
        path=path,
        hosts=hosts,
        groups={g: tuple(m) for g, m in groups.items()},
        vars=all_vars,
    )


def require_ipv4_in(inv: Inventory, subnet: str) -> None:
    """Check every host address is an IPv4 address inside ``subnet`` (the lab's rule)."""
    net = ipaddress.ip_network(subnet)
    for h in inv.hosts.values():
        try:
            addr = ipaddress.ip_address(h.address)
        except ValueError:
            raise InventoryError(
                f"{inv.path}: host {h.name} has ansible_host {h.address!r}; "
                f"expected an IPv4 address in {subnet}"
            ) from None
        if addr not in net:
            raise InventoryError(
                f"{inv.path}: host {h.name} address {addr} is outside the lab subnet {subnet}"
            )


@dataclass(frozen=True)
class Connection:
    """How to reach an inventory's hosts over SSH, host keys checked."""

    user: str
    key_file: Path | None
    known_hosts: Path


def connection(inv: Inventory) -> Connection:
    """SSH settings for an inventory; the lab's key and known_hosts live in FAULTBOOK_HOME."""
    user = str(inv.vars.get("ansible_user", "deploy"))
    if inv.is_lab:
        ssh_dir = faultbook_home() / "lab" / "ssh"
        return Connection(user, ssh_dir / "id_ed25519", ssh_dir / "known_hosts")
    key = inv.vars.get("ansible_ssh_private_key_file")
    known = inv.vars.get("faultbook_known_hosts", "~/.ssh/known_hosts")
    return Connection(
        user,
        Path(str(key)).expanduser() if key else None,
        Path(str(known)).expanduser(),
    )
