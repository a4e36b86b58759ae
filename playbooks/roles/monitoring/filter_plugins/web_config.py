"""bcrypt hashes for the web config of Prometheus and Alertmanager (--web.config.file).

``monitoring_bcrypt(password, seed, rounds=10)`` returns a ``$2b$`` hash of
PASSWORD. It runs on the controller, inside Ansible's own Python (the venv),
with the PyPI ``bcrypt`` package that paramiko already brings:

- no new dependency on the controller (Ansible's ``password_hash('bcrypt')``
  needs passlib, which faultbook does not install), and none on the hosts
  (Debian's hosts would need python3-bcrypt or apache2-utils' htpasswd, and
  lab hosts cannot reach a package mirror);
- the password never appears in a process's arguments on a mon host.

The salt is derived from SEED (the host and the user name), not drawn at
random: the same password gives the same line, so a second provisioning run
changes nothing, and the file changes exactly when a password does. A salt
only has to differ between the hashes an attacker could attack together;
host and user make it unique per file line, and the passwords are long random
vault strings, so nobody can try a dictionary against them anyway.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

# bcrypt's own base64 alphabet (not RFC 4648's).
_B64 = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
BCRYPT_MAX_BYTES = 72


class WebConfigError(ValueError):
    """A password or cost the web config cannot use (one line, never the password)."""


def _bcrypt_b64(data: bytes) -> str:
    """16 bytes in bcrypt's base64: 22 characters, the last one canonical (low bits 0)."""
    bits = int.from_bytes(data, "big") << 4  # 128 bits padded to 132 = 22 x 6
    return "".join(_B64[(bits >> (6 * i)) & 63] for i in reversed(range(22)))


def monitoring_salt(seed: str, rounds: int = 10) -> bytes:
    """The bcrypt salt (``$2b$RR$`` + 22 characters) derived from SEED."""
    if not isinstance(rounds, int) or not 4 <= rounds <= 31:
        raise WebConfigError(f"bcrypt cost {rounds!r} is invalid: expected an integer 4-31")
    digest = hashlib.sha256(f"faultbook-web-config/{seed}".encode()).digest()[:16]
    return f"$2b${rounds:02d}${_bcrypt_b64(digest)}".encode()


def monitoring_bcrypt(password: Any, seed: str, rounds: int = 10) -> str:
    """bcrypt hash of PASSWORD with the salt derived from SEED (see the module docstring)."""
    import bcrypt

    if not isinstance(password, str) or not password:
        raise WebConfigError(f"the password for {seed} is empty or not a string")
    raw = password.encode()
    if len(raw) > BCRYPT_MAX_BYTES:
        raise WebConfigError(
            f"the password for {seed} is {len(raw)} bytes; bcrypt uses at most {BCRYPT_MAX_BYTES}"
        )
    return str(bcrypt.hashpw(raw, monitoring_salt(seed, int(rounds))).decode())


class FilterModule:
    """Filters of the faultbook monitoring role."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"monitoring_bcrypt": monitoring_bcrypt}
