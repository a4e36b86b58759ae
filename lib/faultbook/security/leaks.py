"""Secrets that leaked into what faultbook writes on the controller.

Every vault secret (``secrets.read_vault``) is looked for in the run archive,
the incident folders (executed notebooks), logs and the decision and audit
logs, Ansible's artifacts (each inventory's ansible-runner directory), and any
extra directory (the current run's output), in these forms:

- plain;
- base64 (standard and URL-safe), at each of the three byte alignments, so a
  secret inside a larger encoded blob is found too (an HTTP basic-auth header
  holds ``base64("user:" + password)``, not ``base64(password)``). For each
  alignment the characters that depend on neighbouring bytes are trimmed.

A finding names the file and the secret's *name*, never its value.

Not scanned, on purpose: the lab's machines (``lab/hosts``: the stack's own
config files hold the secrets by design; the hosts check looks at their modes),
images, the vault itself, the PKI and SSH key directories (secrets by nature;
their modes are checked here instead: no group or other access).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from faultbook.security.findings import Finding, passed

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 64 * 1024 * 1024
MIN_SECRET_LEN = 6
# Under $FAULTBOOK_HOME: what to scan and what never to enter.
SCAN = ("runs", "incidents", "jupyter", "lab/runner", "lab/alerts", "inventories")
SKIP_DIRS = {"hosts", "images", "vault", "pki", "ssh", "node_modules", ".git"}
KEY_DIRS = ("lab/vault", "lab/pki", "lab/ssh")


def forms(secret: str) -> list[tuple[str, bytes]]:
    """(form name, bytes to look for): plain and base64 at every alignment."""
    raw = secret.encode()
    out = [("plain", raw)]
    for k in range(3):
        # Characters that depend only on the secret's bytes: after the ones that hold the
        # k unknown bytes before it, up to the ones that would hold the bytes after it.
        q, r = divmod(k + len(raw), 3)
        start, end = -(-k * 4 // 3), 4 * q + r
        for name, enc in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
            core = enc(b"\0" * k + raw)[start:end]
            if len(core) >= 8:
                out.append((name, core))
    uniq: dict[bytes, str] = {}
    for name, b in out:
        uniq.setdefault(b, name)
    return [(n, b) for b, n in uniq.items()]


@dataclass(frozen=True)
class Leak:
    path: Path
    secret: str  # the vault variable's name
    form: str


class Scanner:
    """One regex over every form of every secret; ``scan(paths)`` yields leaks."""

    def __init__(self, vault: Mapping[str, object]) -> None:
        self.by_pattern: dict[bytes, tuple[str, str]] = {}
        for name, value in sorted(vault.items()):
            if not isinstance(value, str | int) or len(str(value)) < MIN_SECRET_LEN:
                continue
            for form, pat in forms(str(value)):
                self.by_pattern.setdefault(pat, (name, form))
        pats = sorted(self.by_pattern, key=len, reverse=True)
        self.regex = re.compile(b"|".join(re.escape(p) for p in pats)) if pats else None

    def scan_file(self, path: Path) -> list[Leak]:
        if self.regex is None:
            return []
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                return []
            data = path.read_bytes()
        except OSError:
            return []
        seen: dict[str, str] = {}
        for m in self.regex.finditer(data):
            name, form = self.by_pattern[m.group(0)]
            seen.setdefault(name, form)
        return [Leak(path, n, f) for n, f in sorted(seen.items())]

    def candidates(self, roots: list[Path]) -> list[Path]:
        """Files holding any pattern: GNU grep's multi-pattern search (-F -f), far faster
        than a Python regex over every byte; the patterns file is 0600 and removed."""
        if self.regex is None or not roots:
            return []
        with tempfile.TemporaryDirectory(prefix="faultbook-leaks-") as d:
            pats = Path(d) / "patterns"
            fd = os.open(pats, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(b"\n".join(self.by_pattern) + b"\n")
            excludes = [f"--exclude-dir={x}" for x in sorted(SKIP_DIRS)]
            argv = ["grep", "-r", "-l", "-a", "-F", "-f", str(pats), *excludes, "--"]
            proc = subprocess.run(
                [*argv, *map(str, roots)], capture_output=True, timeout=600, check=False
            )
        if proc.returncode not in (0, 1):  # 1: nothing found; 2: an unreadable file (reported)
            log.warning("grep: %s", proc.stderr.decode(errors="replace").strip()[-300:])
        return [Path(os.fsdecode(line)) for line in proc.stdout.splitlines() if line]

    def scan(self, roots: Iterable[Path]) -> tuple[list[Leak], int]:
        """Every leak under the roots (files or directories), and how many files were read."""
        where = list(roots)
        n = sum(1 for _ in _files(where))
        leaks: list[Leak] = []
        for path in self.candidates(where):
            leaks += self.scan_file(path)
        return leaks, n


def _files(roots: Iterable[Path]) -> Iterable[Path]:
    for root in roots:
        if root.is_file():
            yield root
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
            for f in filenames:
                p = Path(dirpath) / f
                if not p.is_symlink():
                    yield p


def roots(home: Path, extra: Iterable[Path] = ()) -> list[Path]:
    """What to scan under FAULTBOOK_HOME: SCAN's directories, top-level logs, extras."""
    out = [home / d for d in SCAN if (home / d).exists()]
    if home.is_dir():
        out += sorted(
            p
            for p in home.iterdir()
            if p.is_file() and p.suffix in (".log", ".jsonl", ".json", ".txt")
        )
    out += [Path(e) for e in extra if str(e) and Path(e).exists()]
    # Each file once: drop a root that is another root or lies inside one.
    resolved = [p.resolve() for p in out]
    keep = []
    for i, p in enumerate(resolved):
        inside = any(
            j != i and (p == q and j < i or p != q and p.is_relative_to(q))
            for j, q in enumerate(resolved)
        )
        if not inside:
            keep.append(out[i])
    return keep


def audit(
    vault: Mapping[str, object], home: Path, extra: Iterable[Path] = ()
) -> tuple[list[Finding], int]:
    """Findings for leaked secrets (high), and key files with group/other access (high)."""
    scanner = Scanner(vault)
    where = roots(home, extra)
    leaks, n = scanner.scan(where)
    out: list[Finding] = []
    by_file: dict[Path, list[Leak]] = {}
    for lk in leaks:
        by_file.setdefault(lk.path, []).append(lk)
    for path, items in sorted(by_file.items()):
        rel = path.relative_to(home) if path.is_relative_to(home) else path
        names = ", ".join(f"{lk.secret} ({lk.form})" for lk in items)
        out.append(
            Finding(
                "secret-leaks",
                "controller",
                "high",
                f"{rel} holds {names}",
                "delete or redact the file (the archive's audit log records the change), rotate "
                "the secret, and find the task or cell that printed it (no_log, redaction)",
            )
        )
    for d in KEY_DIRS:
        base = home / d
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*")):
            if p.is_file() and not p.is_symlink():
                mode = stat.S_IMODE(p.stat().st_mode)
                if mode & 0o077 and not p.name.endswith((".pub", ".crt", "known_hosts")):
                    out.append(
                        Finding(
                            "secret-files",
                            "controller",
                            "high",
                            f"{p.relative_to(home)} is mode {mode:04o}: group or others may "
                            "read it",
                            f"chmod 0600 {p}",
                        )
                    )
    if not out:
        secret_names = {v[0] for v in scanner.by_pattern.values()}
        out.append(
            passed(
                "secret-leaks",
                "controller",
                f"{len(scanner.by_pattern)} forms of {len(secret_names)} secrets looked for in {n} "
                "files: none found; key files 0600",
            )
        )
    return out, n
