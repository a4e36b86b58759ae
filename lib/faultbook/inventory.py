"""Read an Ansible inventory with Ansible's own reader: hosts, groups, addresses, variables.

faultbook reads inventories through ansible-core's Python API (the same
inventory plugins Ansible uses: YAML, INI, and anything else Ansible
accepts), so the topology has one source of truth and the two cannot
disagree about a host. Host variables are the effective ones, merged as
Ansible merges them: the inventory's group vars by depth, the group_vars/
files beside the inventory, then the host's own vars and host_vars/ files.
Nothing is templated and nothing is decrypted: a vault-encrypted vars file
is left out and an inline ``!vault`` value becomes ``VAULTED``. Errors name
the file and what is wrong with it, in one line.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faultbook.errors import InventoryError
from faultbook.paths import INVENTORIES_DIR, LAB_INVENTORY, lab_state_dir

log = logging.getLogger(__name__)

# resolve_path looks for these in an inventory directory, in this order.
INVENTORY_FILES = ("hosts.yml", "hosts.yaml", "hosts.ini", "hosts")
# Variables Ansible sets on every host itself; not part of the inventory's data.
_MAGIC_HOST_VARS = frozenset({"inventory_file", "inventory_dir"})
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Vaulted:
    """An inline ``!vault`` value: faultbook never decrypts inventory secrets."""

    def __str__(self) -> str:
        return "<vault-encrypted>"


VAULTED = Vaulted()


@dataclass(frozen=True)
class Host:
    """One inventory host with its effective variables."""

    name: str
    address: str
    groups: tuple[str, ...]
    vars: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Inventory:
    """A parsed inventory. ``hosts`` keeps the inventory's order (Ansible's)."""

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

    def member(self, host: str, group: str) -> Host:
        """The host, if it is in the group; else InventoryError naming the group's hosts."""
        h = self.host(host)
        members = [m.name for m in self.group(group)]
        if h.name not in members:
            raise InventoryError(
                f"{h.name} is not in group {group} of {self.path}; "
                f"its hosts: {', '.join(members) or '(none)'}"
            )
        return h

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
    """Accept a file, a directory holding hosts.yml (or hosts.yaml, hosts.ini, hosts),
    or a name under inventories/."""
    if inventory is None or str(inventory) in ("", "lab"):
        return LAB_INVENTORY
    p = Path(inventory)
    if not p.exists() and (INVENTORIES_DIR / str(inventory)).is_dir():
        p = INVENTORIES_DIR / str(inventory)
    if p.is_dir():
        p = next((p / n for n in INVENTORY_FILES if (p / n).is_file()), p / INVENTORY_FILES[0])
    if not p.is_file():
        known = ", ".join(sorted(d.name for d in INVENTORIES_DIR.iterdir() if d.is_dir()))
        raise InventoryError(
            f"inventory {str(inventory)!r} not found; expected an inventory file, a directory "
            f"holding {', '.join(INVENTORY_FILES)}, or one of: {known}"
        )
    return p


def load(inventory: str | os.PathLike[str] | None = None) -> Inventory:
    """Read an inventory with Ansible's reader; raise InventoryError naming the file and fault.

    Ansible is imported here, not at module import: it is heavy and most
    importers of this module only need the types.
    """
    path = resolve_path(inventory)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InventoryError(f"{path}: cannot be read ({exc.strerror})") from None
    with _LOCK, _ansible_warnings() as warnings:
        return _load(path, warnings)


def _import_display() -> None:
    """Import Ansible's Display with the process's own stdout and stderr in place.

    Its singleton is made on import and patches ``sys.stdout``/``sys.stderr`` for
    fork-safety. In a Jupyter kernel those are ipykernel's streams, which it cannot
    patch: it printed two warnings into the first cell that loads an inventory. The
    real streams (``sys.__stdout__``) take the patch instead; the kernel's are untouched.
    """
    if "ansible.utils.display" in sys.modules:
        return
    out, err = sys.stdout, sys.stderr
    try:
        sys.stdout = sys.__stdout__ or out
        sys.stderr = sys.__stderr__ or err
        import ansible.utils.display  # noqa: F401
    finally:
        sys.stdout, sys.stderr = out, err


@contextlib.contextmanager
def _ansible_warnings() -> Iterator[list[str]]:
    """Collect Ansible's warnings instead of printing them; log them at debug level."""
    _import_display()
    from ansible.utils.display import Display

    display = Display()  # a process-wide singleton
    caught: list[str] = []

    def warning(msg: str, formatted: bool = False) -> None:
        caught.append(str(msg))

    display.warning = warning  # an instance attribute shadows the method
    try:
        yield caught
    finally:
        del display.warning
        for w in caught:
            log.debug("ansible: %s", _one_line(w))


def _load(path: Path, warnings: list[str]) -> Inventory:
    import ansible.constants as C
    from ansible.errors import AnsibleError
    from ansible.inventory.helpers import sort_groups
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.utils.vars import combine_vars

    loader = DataLoader()  # no vault secrets: nothing is ever decrypted
    source = os.path.abspath(path)
    try:
        manager = InventoryManager(loader=loader, sources=[source])
    except AnsibleError as exc:
        if any(_FAILED_RE.match(w) for w in warnings):
            raise InventoryError(f"{path}: {_parse_failure(loader, path, warnings)}") from None
        raise InventoryError(f"{path}: {_one_line(_message(exc), source)}") from None
    if not manager._inventory.processed_sources:
        # Ansible only warns ("Unable to parse ... as an inventory source").
        raise InventoryError(f"{path}: {_parse_failure(loader, path, warnings)}")
    for w in warnings:
        m = _UNEXPECTED_KEY_RE.search(w)
        if m:  # Ansible skips the key (and so every host under it) with a warning
            raise InventoryError(
                f"{path}: group {m[2]!r} has unexpected key {m[1]!r}; "
                "expected hosts, vars or children"
            )

    base = os.path.realpath(os.path.dirname(source))
    dir_cache: dict[tuple[str, str], dict[str, Any]] = {}

    def dir_vars(kind: str, name: str) -> dict[str, Any]:
        """Variables from group_vars/<name>* or host_vars/<name>* beside the inventory."""
        key = (kind, name)
        if key not in dir_cache:
            data: dict[str, Any] = {}
            d = os.path.join(base, kind)
            if os.path.isdir(d) and not name.startswith(os.sep):
                for f in loader.find_vars_files(d, name):
                    data = combine_vars(data, _vars_file(loader, str(f)))
            dir_cache[key] = data
        return dir_cache[key]

    all_group = manager.groups["all"]
    groups: dict[str, tuple[str, ...]] = {"all": tuple(manager.hosts)}
    for g in manager.groups.values():
        members = tuple(h.name for h in g.get_hosts())
        if g.name != "all" and (members or g.name != "ungrouped"):
            groups[g.name] = members
    if not manager.hosts:
        raise InventoryError(f"{path}: defines no hosts")

    # Ansible's order of precedence (VariableManager.get_vars; configurable there too),
    # without the playbook-adjacent group_vars: there is no playbook here.
    def merged(host_groups: list[Any], with_groups: bool) -> dict[str, Any]:
        parts: dict[str, Callable[[], list[Mapping[str, Any]]]] = {
            "all_inventory": lambda: [all_group.vars],
            "all_plugins_inventory": lambda: [dir_vars("group_vars", "all")],
        }
        if with_groups:
            parts["groups_inventory"] = lambda: [g.vars for g in host_groups]
            parts["groups_plugins_inventory"] = lambda: [
                dir_vars("group_vars", g.name) for g in host_groups
            ]
        out: dict[str, Any] = {}
        for entry in C.VARIABLE_PRECEDENCE:
            for layer in parts.get(entry, list)():
                out = combine_vars(out, layer)
        return out

    hosts: dict[str, Host] = {}
    seen_addr: dict[str, str] = {}
    for name, h in manager.hosts.items():
        host_groups = sort_groups([g for g in h.get_groups() if g.name != "all"])
        eff = merged(host_groups, with_groups=True)
        own = {k: v for k, v in h.vars.items() if k not in _MAGIC_HOST_VARS}
        eff = _plain(combine_vars(combine_vars(eff, own), dir_vars("host_vars", name)))
        address = str(eff.get("ansible_host", name))
        if address in seen_addr:
            raise InventoryError(
                f"{path}: hosts {seen_addr[address]} and {name} share the address {address}"
            )
        seen_addr[address] = name
        member_of = tuple(g for g, m in groups.items() if g != "all" and name in m)
        hosts[name] = Host(name=name, address=address, groups=member_of, vars=eff)
    return Inventory(path=path, hosts=hosts, groups=groups, vars=_plain(merged([], False)))


_FAILED_RE = re.compile(r"\s*\* Failed to parse (.*?) with (\S+) plugin: (.*)", re.S)
_UNEXPECTED_KEY_RE = re.compile(r"Skipping unexpected key \((.*?)\) in group \((.*?)\)")


def _vars_file(loader: Any, f: str) -> dict[str, Any]:
    """One group_vars/host_vars file; a vault-encrypted one is left out (never decrypted)."""
    from ansible.errors import AnsibleError, AnsibleParserError
    from ansible.parsing.vault import is_encrypted_file

    with open(f, "rb") as fh:
        if is_encrypted_file(fh):
            log.debug("inventory: %s is vault-encrypted; its variables are left out", f)
            return {}
    try:
        data = loader.load_from_file(f, cache="none")
    except AnsibleParserError as exc:
        raise InventoryError(f"{f}: {_parse_message(exc, f)}") from None
    except AnsibleError as exc:
        raise InventoryError(f"{f}: {_one_line(_message(exc), f)}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InventoryError(f"{f}: expected a mapping of variables, got {type(data).__name__}")
    return dict(data)


def _message(exc: Exception) -> str:
    return str(getattr(exc, "message", None) or exc)


def _parse_message(exc: Exception, path: str) -> str:
    """An AnsibleParserError in one line; a YAML syntax error says where, as PyYAML does."""
    import yaml

    orig = getattr(exc, "orig_exc", None)
    if isinstance(orig, yaml.YAMLError):
        mark = getattr(orig, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(orig, "problem", None) or str(orig).splitlines()[0]
        return f"not valid YAML{where}: {problem}"
    return _one_line(_message(exc), path)


def _parse_failure(loader: Any, path: Path, warnings: list[str]) -> str:
    """Why no inventory plugin could read the file: the reason of the plugin meant for it."""
    from ansible.errors import AnsibleError, AnsibleParserError

    failures: dict[str, str] = {}
    for w in warnings:
        m = _FAILED_RE.match(w)
        if m:
            failures.setdefault(m[2].removeprefix("ansible.builtin."), m[3])
    source = os.path.abspath(path)
    ext = path.suffix.lower()
    if ext in (".yml", ".yaml", ".json"):
        try:
            loader.load_from_file(source, cache="none")
        except AnsibleParserError as exc:
            return _parse_message(exc, source)
        except AnsibleError:
            pass
        preferred: tuple[str, ...] = ("yaml", "auto")
    elif ext == ".toml":
        preferred = ("toml",)
    else:
        preferred = ("ini", "script")
    for plugin in (*preferred, *failures):
        if plugin in failures:
            why = _one_line(failures[plugin], source)
            return f"not a valid inventory ({plugin} plugin: {why})"
    return "not a valid inventory: no Ansible inventory plugin accepts it"


def _one_line(msg: str, path: str | None = None) -> str:
    """Ansible's multi-line, prefixed messages reduced to one line."""
    msg = msg.split("\n\nThe error appears to be", 1)[0]
    if path:
        msg = re.sub(re.escape(path) + r":(\d+):", r"line \1:", msg)
    msg = " ".join(msg.split())
    return msg if len(msg) <= 300 else msg[:297] + "..."


def _plain(value: Any) -> Any:
    """Ansible's YAML objects as plain Python values; inline vault values as VAULTED."""
    from ansible.parsing.yaml.objects import AnsibleVaultEncryptedUnicode

    def conv(v: Any) -> Any:
        if isinstance(v, AnsibleVaultEncryptedUnicode):
            return VAULTED
        if isinstance(v, Mapping):
            return {conv(k): conv(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        if isinstance(v, str):
            return str.__str__(v)
        if isinstance(v, bytes):
            return bytes(v)
        return v

    return conv(value)


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
        ssh_dir = lab_state_dir() / "ssh"
        return Connection(user, ssh_dir / "id_ed25519", ssh_dir / "known_hosts")
    key = inv.vars.get("ansible_ssh_private_key_file")
    known = inv.vars.get("faultbook_known_hosts", "~/.ssh/known_hosts")
    return Connection(
        user,
        Path(str(key)).expanduser() if key else None,
        Path(str(known)).expanduser(),
    )
