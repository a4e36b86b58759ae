"""Secrets: one ansible-vault file per inventory.

The lab generates random secrets and a vault password file (mode 0600) on
first `lab up`, under ``$FAULTBOOK_HOME/lab/vault/``. A real inventory keeps
its encrypted ``group_vars/all/vault.yml`` next to its hosts.yml and names
its password file with ``FAULTBOOK_VAULT_PASSWORD_FILE``.
"""

from __future__ import annotations

import os
import secrets as _random
from pathlib import Path

import yaml

from faultbook.errors import ConfigError
from faultbook.inventory import Inventory
from faultbook.paths import lab_state_dir

# Every secret the roles use (docs/roles-contract.md), and how long a random one is.
VAULT_VARS: dict[str, int] = {
    "vault_postgres_password": 32,
    "vault_pg_app_password": 32,
    "vault_pg_replication_password": 32,
    "vault_pg_monitor_password": 32,
    "vault_pgbackrest_cipher_pass": 48,
    "vault_haproxy_stats_password": 24,
    "vault_keepalived_auth_pass": 8,
    # Alertmanager sends it as a bearer token; the controller's alert receiver checks it.
    "vault_alert_webhook_token": 40,  # VRRP PASS authentication uses at most 8 characters
    # Bearer tokens of the ledger API's clients (role ledger, ledger_api_tokens): the
    # controller's library, `make bench`'s wrk, the lab's integration tests.
    "vault_ledger_token_faultbook": 40,
    "vault_ledger_token_bench": 40,
    "vault_ledger_token_tests": 40,
    # Basic auth of Prometheus and Alertmanager (role monitoring, web config): the
    # controller's library and alert tools, and the mon hosts' Prometheus.
    "vault_monitoring_faultbook_password": 32,
    "vault_monitoring_prometheus_password": 32,
}


def lab_vault_dir() -> Path:
    return lab_state_dir() / "vault"


def vault_password_file(inv: Inventory) -> Path | None:
    if inv.is_lab:
        return lab_vault_dir() / "vault-password"
    env = os.environ.get("FAULTBOOK_VAULT_PASSWORD_FILE")
    return Path(env) if env else None


def vault_vars_file(inv: Inventory) -> Path | None:
    """An extra-vars file to pass with -e @file (the lab's; real inventories use group_vars)."""
    return lab_vault_dir() / "vault.yml" if inv.is_lab else None


def _vault(password: bytes):  # type: ignore[no-untyped-def]
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    return VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(password))])


def ensure_lab_vault() -> Path:
    """Create the lab's vault and its password file once; add any secret that is missing."""
    d = lab_vault_dir()
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    pwfile = d / "vault-password"
    if not pwfile.exists():
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_random.token_urlsafe(32) + "\n")
    vault = _vault(pwfile.read_text().strip().encode())
    vfile = d / "vault.yml"
    current: dict[str, str] = {}
    if vfile.exists():
        current = yaml.safe_load(vault.decrypt(vfile.read_bytes())) or {}
    missing = {k: n for k, n in VAULT_VARS.items() if k not in current}
    if missing:
        for k, n in missing.items():
            current[k] = _random.token_urlsafe(n)[:n]
        data = vault.encrypt(yaml.safe_dump(current, default_flow_style=False).encode())
        tmp = vfile.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        tmp.rename(vfile)
    return vfile


def read_vault(inv: Inventory) -> dict[str, str]:
    """Decrypt an inventory's vault (for tests and tools that must scan for leaks)."""
    pw = vault_password_file(inv)
    vf = vault_vars_file(inv) or inv.path.parent / "group_vars" / "all" / "vault.yml"
    if pw is None or not vf.exists():
        return {}
    return yaml.safe_load(_vault(pw.read_text().strip().encode()).decrypt(vf.read_bytes())) or {}


def require(inv: Inventory, var: str, purpose: str) -> str:
    """One secret of the inventory's vault, or ConfigError naming it and where it belongs.

    The message never holds a secret's value.
    """
    value = read_vault(inv).get(var)
    if isinstance(value, str) and value.strip():
        return value.strip()
    where = (
        "the lab's vault (`faultbook lab up` or `faultbook provision` adds it)"
        if inv.is_lab
        else f"the vault of inventory {inv.name} (group_vars/all/vault.yml, "
        "FAULTBOOK_VAULT_PASSWORD_FILE)"
    )
    raise ConfigError(f"{var} is missing from {where}; {purpose}")
