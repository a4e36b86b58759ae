"""A real inventory's vault for unit tests: an encrypted group_vars/all/vault.yml."""

from __future__ import annotations

import json

import pytest

from faultbook import secrets
from faultbook.inventory import Inventory


def write_vault(inv: Inventory, monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    """VALUES in group_vars/all/vault.yml next to INV, encrypted as ansible-vault does, and
    FAULTBOOK_VAULT_PASSWORD_FILE pointing at its password file."""
    pw = inv.path.parent / "vault-password"
    pw.parent.mkdir(parents=True, exist_ok=True)
    pw.write_text("vault-pw\n")
    vf = inv.path.parent / "group_vars" / "all" / "vault.yml"
    vf.parent.mkdir(parents=True, exist_ok=True)
    vf.write_bytes(secrets._vault(b"vault-pw").encrypt(json.dumps(values).encode()))
    monkeypatch.setenv("FAULTBOOK_VAULT_PASSWORD_FILE", str(pw))
