"""Render a role's template as Ansible would, for one host of an inventory, without a run.

Variables, lowest precedence first: the role's defaults, the inventory (group
and host vars, through Ansible's own inventory reader), the role's vars, then
the caller's ``extra``. Filter plugins of the role (``filter_plugins/``) are
loaded the way a play would load them. Used by the unit tests of the haproxy
and monitoring templates; the rendered text is what a host would get.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "playbooks" / "roles"
LAB = REPO / "inventories" / "lab" / "hosts.yml"
_loader_ready = False


def _role_yaml(role: str, kind: str) -> dict[str, Any]:
    path = ROLES / role / kind / "main.yml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def render(
    role: str,
    template: str,
    host: str,
    *,
    inventory: Path = LAB,
    extra: dict[str, Any] | None = None,
) -> str:
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import add_all_plugin_dirs, init_plugin_loader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    global _loader_ready
    if not _loader_ready:
        init_plugin_loader()
        _loader_ready = True
    add_all_plugin_dirs(str(ROLES / role))
    loader = DataLoader()
    inv = InventoryManager(loader=loader, sources=[str(inventory)])
    vm = VariableManager(loader=loader, inventory=inv)
    hostvars_all = {h.name: vm.get_vars(host=h, include_hostvars=False) for h in inv.get_hosts()}
    variables: dict[str, Any] = dict(_role_yaml(role, "defaults"))
    variables.update(hostvars_all[host])
    variables.update(_role_yaml(role, "vars"))
    variables.update(
        {
            "inventory_hostname": host,
            "ansible_managed": "Ansible managed",
            "groups": {g: [h.name for h in grp.get_hosts()] for g, grp in inv.groups.items()},
            "hostvars": hostvars_all,
            "ansible_check_mode": False,
        }
    )
    variables.update(extra or {})
    templar = Templar(loader=loader, variables=variables)
    text = (ROLES / role / "templates" / template).read_text()
    out = templar.do_template(text, preserve_trailing_newlines=True, escape_backslashes=False)
    return str(out)
