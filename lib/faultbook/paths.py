"""Where faultbook keeps its state and finds its own files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from faultbook.errors import ConfigError

DEFAULT_HOME = Path("/var/lib/faultbook")
REPO_ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS_DIR = REPO_ROOT / "runbooks"
PLAYBOOKS_DIR = REPO_ROOT / "playbooks"
INVENTORIES_DIR = REPO_ROOT / "inventories"
LAB_INVENTORY = INVENTORIES_DIR / "lab" / "hosts.yml"


def faultbook_home(create: bool = False) -> Path:
    """Return the state directory: ``$FAULTBOOK_HOME`` or /var/lib/faultbook.

    Raises ConfigError when the value is unusable, naming what was wrong and
    what is expected.
    """
    raw = os.environ.get("FAULTBOOK_HOME")
    if raw is None or raw == "":
        home = DEFAULT_HOME
    else:
        home = Path(raw)
        if not home.is_absolute():
            raise ConfigError(
                f"FAULTBOOK_HOME={raw!r} is a relative path; expected an absolute directory "
                "path such as /var/lib/faultbook"
            )
    if home.exists() and not home.is_dir():
        raise ConfigError(f"FAULTBOOK_HOME={str(home)!r} exists but is not a directory")
    if create:
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"FAULTBOOK_HOME={str(home)!r} cannot be created ({exc.strerror}); "
                "expected a writable directory"
            ) from exc
    if home.exists() and not os.access(home, os.W_OK | os.X_OK):
        raise ConfigError(f"FAULTBOOK_HOME={str(home)!r} is not writable by this user")
    return home


class _Named(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def is_lab(self) -> bool: ...


def state_dir(inv: _Named, create: bool = False) -> Path:
    """The controller's state for one inventory: ``$FAULTBOOK_HOME/lab`` for the lab,
    ``$FAULTBOOK_HOME/inventories/<name>`` for any other (runner dir, PKI, SSH, vault)."""
    return _state_dir("lab" if inv.is_lab else f"inventories/{inv.name}", create)


def lab_state_dir(create: bool = False) -> Path:
    """``state_dir`` of the lab's inventory, for what exists before it is loaded (keys, vault)."""
    return _state_dir("lab", create)


def _state_dir(relative: str, create: bool) -> Path:
    d = faultbook_home(create=create) / relative
    if create:
        d.mkdir(parents=True, exist_ok=True)
    return d
