"""SSH: ssh-audit's verdict on every host's algorithms, and logins that must be refused.

ssh-audit (Debian's 2.5.0) is run in batch mode without colours. Its JSON
output (``-j``) in that version lists the algorithms but not its verdict on
them, so the text is parsed: each algorithm line ``(kex) NAME -- [fail] why``
and its continuation lines `` `- [warn] why``, the ``(cve)`` lines (CVSSv2 8
or more is a failure, as ssh-audit itself prints it) and the ``(rec)``
recommendations. Any ``[fail]`` is a high finding; ``[warn]`` a low one.

Logins are tried with paramiko, host keys checked against the inventory's
known_hosts (RejectPolicy, as everywhere in faultbook):

- ``password``: the deploy user with a random password. Refused when the server
  does not even offer the method (``BadAuthenticationType``) or rejects it;
- ``root``: root with the deploy user's own key (the key that would work if
  root's authorized_keys held it and PermitRootLogin allowed it).

A login that succeeds is a high finding; so is a server that offers
``password`` or ``keyboard-interactive`` at all.
"""

from __future__ import annotations

import re
import secrets as _random
import shutil
import socket
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import paramiko

from faultbook import ssh
from faultbook.errors import ConfigError
from faultbook.inventory import Inventory
from faultbook.security.findings import Finding, passed

_ALG = re.compile(
    r"^\((kex|key|enc|mac)\) (\S+)(?: \([^)]*\))?(?:\s+-- \[(fail|warn|info)\] ?(.*))?$"
)
_MORE = re.compile(r"^\s+`- \[(fail|warn|info)\] ?(.*)$")
_CVE = re.compile(r"^\(cve\) (\S+) -- \(CVSSv2: ([0-9.]+)\) ?(.*)$")
_REC = re.compile(r"^\(rec\) ([-+!])(\S+?)\s*-- (\w+) algorithm to (\w+)")
_SOFTWARE = re.compile(r"^\(gen\) software: (.*)$")
_ESC = re.compile(r"\x1b\[[0-9;]*m")
CONNECTION_ERROR = 1
# Pseudo-algorithms that announce a protocol extension, not a cipher: OpenSSH 9.2's
# Terrapin countermeasure (strict key exchange) is one ssh-audit 2.5.0 does not know.
PSEUDO = re.compile(r"^(kex-strict-[cs]-v00@openssh\.com|ext-info-[cs])$")


@dataclass
class Report:
    """ssh-audit's text, parsed: every algorithm with its notes per level."""

    software: str = ""
    algorithms: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)
    cves: list[tuple[str, float, str]] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)

    def at(self, level: str) -> list[str]:
        """'type name: note' for every note at ``level``."""
        return [
            f"({kind}) {name}: {note}"
            for (kind, name), notes in self.algorithms.items()
            for lvl, note in notes
            if lvl == level
        ]

    def failing(self) -> list[str]:
        return self.at("fail") + [f"{c} (CVSSv2 {s})" for c, s, _ in self.cves if s >= 8.0]

    def warnings(self) -> list[str]:
        return self.at("warn") + [f"{c} (CVSSv2 {s})" for c, s, _ in self.cves if s < 8.0]


def parse(text: str) -> Report:
    """Parse ``ssh-audit -b -n`` output (2.x text format)."""
    rep = Report()
    current: tuple[str, str] | None = None
    for raw in text.splitlines():
        line = _ESC.sub("", raw).rstrip()
        m = _ALG.match(line)
        if m and PSEUDO.match(m.group(2)):
            current = None
            continue
        if m:
            kind, name, level, note = m.groups()
            current = (kind, name)
            notes = rep.algorithms.setdefault(current, [])
            if level:
                notes.append((level, note or ""))
            continue
        m = _MORE.match(line)
        if m and current is not None:
            rep.algorithms[current].append((m.group(1), m.group(2)))
            continue
        current = None
        if m := _CVE.match(line):
            rep.cves.append((m.group(1), float(m.group(2)), m.group(3)))
        elif m := _REC.match(line):
            rep.recommendations.append(f"{m.group(1)}{m.group(2)} ({m.group(3)} {m.group(4)})")
        elif m := _SOFTWARE.match(line):
            rep.software = m.group(1)
    return rep


def run_ssh_audit(address: str, port: int = 22, timeout_s: float = 10.0) -> tuple[int, str]:
    """``ssh-audit -b -n -t T -p PORT ADDRESS``: (exit code, text)."""
    exe = shutil.which("ssh-audit")
    if exe is None:
        raise ConfigError("ssh-audit is not installed; fix with: apt-get install ssh-audit")
    argv = [exe, "-b", "-n", "-t", str(int(timeout_s)), "-p", str(port), address]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s * 6)
    except subprocess.TimeoutExpired:
        return CONNECTION_ERROR, f"ssh-audit did not finish within {timeout_s * 6:g} s"
    return proc.returncode, proc.stdout + proc.stderr


def judge(host: str, rc: int, text: str) -> list[Finding]:
    """Findings for one host's ssh-audit run."""
    rep = parse(text)
    if not rep.algorithms:
        return [
            Finding(
                "ssh-algorithms",
                host,
                "high",
                f"ssh-audit could not audit it (rc={rc}): {text.strip()[-200:]}",
                "make sshd reachable from the controller, then re-run the audit",
            )
        ]
    out: list[Finding] = []
    failing = rep.failing()
    if failing:
        out.append(
            Finding(
                "ssh-algorithms",
                host,
                "high",
                f"ssh-audit fails {len(failing)}: " + "; ".join(failing)[:600],
                "remove them from common_ssh_kex_algorithms / _ciphers / _macs (or the host "
                "key types) and re-provision",
            )
        )
    warns = rep.warnings()
    if warns:
        out.append(
            Finding(
                "ssh-algorithms",
                host,
                "low",
                f"ssh-audit warns {len(warns)}: " + "; ".join(warns)[:600],
                "consider removing them from the role's algorithm lists",
            )
        )
    if not out:
        n = len(rep.algorithms)
        out.append(
            passed(
                "ssh-algorithms", host, f"{rep.software or 'sshd'}: {n} algorithms, none failing"
            )
        )
    return out


@dataclass(frozen=True)
class LoginAttempt:
    host: str
    what: str  # "password" | "root"
    refused: bool
    detail: str
    offered: tuple[str, ...] = ()


def _transport(t: ssh.Target, timeout: float) -> paramiko.Transport:
    sock = socket.create_connection((t.address, t.port), timeout=timeout)
    tr = paramiko.Transport(sock)
    tr.banner_timeout = timeout
    tr.auth_timeout = timeout
    tr.start_client(timeout=timeout)
    keys = paramiko.HostKeys(str(t.known_hosts))
    server_key = tr.get_remote_server_key()
    name = t.address if t.port == 22 else f"[{t.address}]:{t.port}"
    known = keys.lookup(name) or keys.lookup(t.name)
    if known is None or known.get(server_key.get_name()) != server_key:
        tr.close()
        raise paramiko.SSHException(f"host key of {t.address} does not match {t.known_hosts}")
    return tr


def _offered(tr: paramiko.Transport, user: str) -> tuple[str, ...]:
    try:
        tr.auth_none(user)
    except paramiko.BadAuthenticationType as exc:
        return tuple(exc.allowed_types)
    except paramiko.SSHException:
        return ()
    return ("none",)  # auth "none" succeeded: no authentication at all


def try_password(inv: Inventory, host: str, timeout: float = 5.0) -> LoginAttempt:
    """Log in as the deploy user with a random password; refused is the right answer."""
    t = ssh.target(inv, host)
    tr = _transport(t, timeout)
    try:
        offered = _offered(tr, t.user)
        if "none" in offered:
            return LoginAttempt(host, "password", False, f"{t.user}: no authentication needed")
        try:
            tr.auth_password(t.user, _random.token_urlsafe(18))
        except paramiko.BadAuthenticationType as exc:
            return LoginAttempt(
                host, "password", True, f"{t.user}: password not offered", tuple(exc.allowed_types)
            )
        except paramiko.AuthenticationException:
            return LoginAttempt(
                host, "password", True, f"{t.user}: wrong password refused", offered
            )
        return LoginAttempt(
            host, "password", False, f"{t.user}: a random password was accepted", offered
        )
    finally:
        tr.close()


def try_root(inv: Inventory, host: str, timeout: float = 5.0) -> LoginAttempt:
    """Log in as root with the deploy user's key (and see what root is offered)."""
    t = ssh.target(inv, host)
    if t.key_file is None:
        return LoginAttempt(host, "root", True, "no deploy key file to try (agent keys only)")
    key = paramiko.PKey.from_path(t.key_file)
    tr = _transport(t, timeout)
    try:
        offered = _offered(tr, "root")
        if "none" in offered:
            return LoginAttempt(host, "root", False, "root: no authentication needed", offered)
        try:
            tr.auth_publickey("root", key)
        except paramiko.BadAuthenticationType as exc:
            return LoginAttempt(
                host, "root", True, "root: publickey not offered", tuple(exc.allowed_types)
            )
        except paramiko.AuthenticationException:
            return LoginAttempt(host, "root", True, "root with the deploy key refused", offered)
        return LoginAttempt(host, "root", False, "root logged in with the deploy key", offered)
    finally:
        tr.close()


def attempt(inv: Inventory, host: str, what: str, timeout: float = 5.0) -> LoginAttempt:
    try:
        return (try_password if what == "password" else try_root)(inv, host, timeout)
    except (OSError, paramiko.SSHException, EOFError) as exc:
        return LoginAttempt(host, what, False, f"could not try: {type(exc).__name__}: {exc}")


def login_findings(a: LoginAttempt) -> Finding:
    weak = sorted({"password", "keyboard-interactive"} & set(a.offered))
    if a.detail.startswith("could not try"):
        return Finding(
            "ssh-login",
            a.host,
            "high",
            f"{a.what} login: {a.detail}",
            "make sshd reachable from the controller with its pinned host key, then re-run",
        )
    if not a.refused:
        return Finding(
            "ssh-login",
            a.host,
            "high",
            f"{a.what} login accepted: {a.detail}",
            "PasswordAuthentication no, PermitRootLogin no, AllowUsers (the common role's sshd "
            "drop-in); re-provision",
        )
    if weak:
        return Finding(
            "ssh-login",
            a.host,
            "high",
            f"{a.what} login refused, but sshd offers {', '.join(weak)}",
            "KbdInteractiveAuthentication no and PasswordAuthentication no; re-provision",
        )
    offered = ", ".join(a.offered) or "-"
    return passed("ssh-login", a.host, f"{a.what} login refused ({a.detail}; offered: {offered})")


def audit(inv: Inventory, hosts: Iterable[str], timeout_s: float = 10.0) -> list[Finding]:
    """ssh-audit and the two login attempts on every host, in parallel."""
    names = list(hosts)

    def one(host: str) -> list[Finding]:
        t = ssh.target(inv, host)
        rc, text = run_ssh_audit(t.address, t.port, timeout_s)
        out = judge(host, rc, text)
        for what in ("password", "root"):
            out.append(login_findings(attempt(inv, host, what, min(timeout_s, 10.0))))
        return out

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(names)))) as pool:
        results = list(pool.map(one, names))
    return [f for r in results for f in r]
