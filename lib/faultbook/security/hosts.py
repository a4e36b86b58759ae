"""Hosts: sudoers, the deploy user's keys, listening sockets, secret files' modes, updates.

One SSH round trip per host (``PROBE``, as root through sudo) prints sections
that the parsers below read; nothing on the host changes. The vault's secrets
are handed to the probe on standard input (base64, never on a command line)
so it can name the files that hold them; only names and modes come back.

- **sudoers**: every rule in /etc/sudoers and /etc/sudoers.d must be one of
  Debian's (``root``, ``%sudo``) or the common role's line for the deploy user;
  group ``sudo`` (and admin, wheel) may hold only the deploy user; each file is
  root-owned and not writable by others.
- **keys**: the deploy user's authorized_keys holds exactly the controller's
  keys (the lab's deploy key; on real hosts ``common_deploy_authorized_keys``
  and the public half of ``ansible_ssh_private_key_file``); root has none.
- **sockets** (``ss -Htlnup``): every listener on a non-loopback address must be
  on a port the flow table opens on that host; loopback listeners are listed
  (info), not findings.
- **secret files**: every file under /etc, /home, /root, /opt, /srv, /usr/local,
  /var/lib, /var/backups, /var/log and the temp directories that holds a vault
  secret or a private key: not readable or writable by others (high), not
  group-writable (medium); a secret in /var/log or a temp directory is high
  whatever its mode.
- **updates**: ``apt-get -s dist-upgrade`` and the security archive's lines,
  where the host can see a mirror; in the lab (no mirror) skipped with a note.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from faultbook import ssh
from faultbook.errors import SSHError
from faultbook.inventory import Inventory
from faultbook.security.findings import Finding, passed, skipped
from faultbook.security.flows import FlowTable

SEARCH_DIRS = "/etc /home /root /opt /srv /usr/local /var/lib /var/backups /var/log /tmp /var/tmp"
# Data stores: big, and a secret there is the store's business (an encrypted repository,
# a TSDB, PostgreSQL's own files), not a config file's mode.
PRUNE = (
    "/var/lib/postgresql/*/main",
    "/var/lib/pgbackrest",
    "/var/lib/prometheus",
    "/var/lib/apt",
    "/var/lib/dpkg",
    "/var/log/journal",
)
LEAKY_DIRS = ("/var/log/", "/tmp/", "/var/tmp/")  # noqa: S108 - paths on the hosts, read only
SUDO_GROUPS = ("sudo", "admin", "wheel")
KEY_TYPES = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-\S+|sk-\S+)$")


def probe_script(check_updates: bool) -> str:
    prune = " -o ".join(f"-path '{p}'" for p in PRUNE)
    updates = (
        'echo "### updates"; apt-get -s -o Debug::NoLocking=1 dist-upgrade 2>&1 | '
        "grep '^Inst ' || true; "
        'echo "lists_age_s=$(( $(date +%s) - '
        '$(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo 0) ))"'
        if check_updates
        else ""
    )
    return rf"""
set -u
echo "### sudoers"
for f in /etc/sudoers /etc/sudoers.d/*; do
  [ -f "$f" ] || continue
  echo "FILE $(stat -c '%a %U %G' "$f") $f"
  grep -v -E '^[[:space:]]*(#[^i@]|#$|$)' "$f" | sed 's/^/RULE /'
done
for g in {" ".join(SUDO_GROUPS)}; do echo "GROUP $(getent group "$g" || echo "$g:x::")"; done
echo "### keys"
for u in "$1" root; do
  home=$(getent passwd "$u" | cut -d: -f6)
  f="$home/.ssh/authorized_keys"
  if [ -f "$f" ]; then
    echo "FILE $u $(stat -c '%a %U %G' "$f") $f"
    grep -v -E '^[[:space:]]*(#|$)' "$f" | sed "s/^/KEY $u /"
  else
    echo "NOFILE $u $f"
  fi
done
echo "### sockets"
ss -Htlnup
echo "### secrets"
umask 077
# Working files under /run (a tmpfs outside the searched directories), removed on exit.
work=$(mktemp -d -p /run faultbook-audit.XXXXXX); trap 'rm -rf "$work"' EXIT
list="$work/list"; pat="$work/pattern"
find {SEARCH_DIRS} -xdev \( {prune} \) -prune -o -type f -size -2048k -print0 2>/dev/null > "$list"
while read -r name b64; do
  printf %s "$b64" | base64 -d > "$pat"
  xargs -0 -r grep -lIF -f "$pat" < "$list" 2>/dev/null | while read -r f; do
    echo "SECRET $name $(stat -c '%a %U %G' "$f") $f"
  done
done
xargs -0 -r grep -lI -e '-----BEGIN [A-Z ]*PRIVATE KEY-----' < "$list" 2>/dev/null |
while read -r f; do
  echo "SECRET private-key $(stat -c '%a %U %G' "$f") $f"
done
{updates}
echo "### end"
"""


@dataclass
class Probe:
    """One host's probe output, parsed."""

    sudoers_files: list[tuple[str, str, str, str]] = field(default_factory=list)  # mode, u, g, path
    rules: list[str] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)
    key_files: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)
    keys: dict[str, list[str]] = field(default_factory=dict)  # user -> authorized_keys lines
    sockets: list[str] = field(default_factory=list)
    secrets: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # name,mode,u,g,p
    updates: list[str] | None = None
    complete: bool = False


def parse_probe(text: str) -> Probe:
    p = Probe()
    section = ""
    for line in text.splitlines():
        if line.startswith("### "):
            section = line[4:].strip()
            if section == "updates":
                p.updates = []
            if section == "end":
                p.complete = True
            continue
        if section == "sudoers":
            if line.startswith("FILE "):
                mode, u, g, path = line[5:].split(" ", 3)
                p.sudoers_files.append((mode, u, g, path))
            elif line.startswith("RULE "):
                p.rules.append(line[5:].strip())
            elif line.startswith("GROUP "):
                parts = line[6:].split(":")
                if len(parts) >= 4:
                    p.groups[parts[0]] = [m for m in parts[3].split(",") if m]
        elif section == "keys":
            if line.startswith("FILE "):
                user, mode, u, g, path = line[5:].split(" ", 4)
                p.key_files[user] = (mode, u, g, path)
            elif line.startswith("KEY "):
                user, key = line[4:].split(" ", 1)
                p.keys.setdefault(user, []).append(key)
        elif section == "sockets":
            if line.strip():
                p.sockets.append(line)
        elif section == "secrets":
            if line.startswith("SECRET "):
                name, mode, u, g, path = line[7:].split(" ", 4)
                p.secrets.append((name, mode, u, g, path))
        elif section == "updates" and p.updates is not None and line.startswith("Inst "):
            p.updates.append(line)
    return p


# ------------------------------------------------------------------ sudoers
def judge_sudoers(host: str, p: Probe, deploy: str) -> list[Finding]:
    out: list[Finding] = []
    allowed = {
        re.compile(r"^Defaults\b"),
        re.compile(r"^[@#]include(dir)?\s"),
        re.compile(r"^root\s+ALL\s*=\s*\(ALL(:ALL)?\)\s+ALL$"),
        re.compile(r"^%(sudo|admin)\s+ALL\s*=\s*\(ALL(:ALL)?\)\s+ALL$"),
        re.compile(rf"^{re.escape(deploy)}\s+ALL\s*=\s*\(ALL(:ALL)?\)\s+NOPASSWD:\s*ALL$"),
    }
    odd = [r for r in p.rules if not any(a.match(r) for a in allowed)]
    if odd:
        out.append(
            Finding(
                "sudoers",
                host,
                "high",
                "rules beyond Debian's and the deploy user's: " + " | ".join(odd)[:400],
                "remove them from /etc/sudoers(.d); only the deploy user needs sudo",
            )
        )
    members = sorted({m for g in SUDO_GROUPS for m in p.groups.get(g, []) if m != deploy})
    if members:
        out.append(
            Finding(
                "sudoers",
                host,
                "high",
                "sudo group members besides the deploy user: " + ", ".join(members),
                "gpasswd -d USER sudo",
            )
        )
    for mode, u, _g, path in p.sudoers_files:
        if u != "root" or int(mode, 8) & 0o022:
            out.append(
                Finding(
                    "sudoers",
                    host,
                    "high",
                    f"{path} is {u}-owned, mode {mode}",
                    f"chown root:root {path}; chmod 0440 {path}",
                )
            )
    if not out:
        out.append(
            passed("sudoers", host, f"only root, %sudo (no members but {deploy}) and {deploy}")
        )
    return out


# --------------------------------------------------------------------- keys
def fingerprint(line: str) -> tuple[str, str] | None:
    """(SHA256 fingerprint as ssh-keygen prints it, comment) of an authorized_keys line."""
    parts = line.split()
    for i, tok in enumerate(parts[:-1]):
        if KEY_TYPES.match(tok):
            try:
                blob = base64.b64decode(parts[i + 1], validate=True)
            except ValueError:
                return None
            fp = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
            return f"SHA256:{fp}", " ".join(parts[i + 2 :])
    return None


def expected_keys(inv: Inventory, ssh_dir: Path | None = None) -> set[str]:
    """Fingerprints the deploy user may hold: the controller's key(s) from the inventory."""
    lines: list[str] = []
    conn = ssh.connection(inv)
    if conn.key_file is not None:
        pub = Path(str(conn.key_file) + ".pub")
        if pub.exists():
            lines.append(pub.read_text())
    extra = inv.vars.get("common_deploy_authorized_keys") or []
    lines += [str(k) for k in extra]
    return {fp for ln in lines if (f := fingerprint(ln)) for fp in [f[0]]}


def judge_keys(host: str, p: Probe, deploy: str, allowed: set[str]) -> list[Finding]:
    out: list[Finding] = []
    fps = [f for ln in p.keys.get(deploy, []) if (f := fingerprint(ln))]
    unknown = [f"{fp} {c}".strip() for fp, c in fps if fp not in allowed]
    if unknown:
        out.append(
            Finding(
                "ssh-keys",
                host,
                "high",
                f"{deploy}'s authorized_keys holds keys the inventory does not name: "
                + "; ".join(unknown),
                "remove them, or add them to common_deploy_authorized_keys if they belong",
            )
        )
    if not fps:
        out.append(Finding("ssh-keys", host, "medium", f"{deploy} has no authorized key", ""))
    root = [f for ln in p.keys.get("root", []) if (f := fingerprint(ln))]
    if root:
        out.append(
            Finding(
                "ssh-keys",
                host,
                "medium",
                f"root's authorized_keys holds {len(root)} key(s) ("
                + ", ".join(fp for fp, _ in root)
                + "); PermitRootLogin no is all that stops them",
                "empty /root/.ssh/authorized_keys",
            )
        )
    kf = p.key_files.get(deploy)
    if kf and int(kf[0], 8) & 0o022:
        out.append(
            Finding(
                "ssh-keys",
                host,
                "high",
                f"{kf[3]} mode {kf[0]} (writable by others)",
                f"chmod 0600 {kf[3]}",
            )
        )
    if not out:
        out.append(
            passed(
                "ssh-keys", host, f"{deploy}: {len(fps)} key(s), all the controller's; root: none"
            )
        )
    return out


# ------------------------------------------------------------------ sockets
@dataclass(frozen=True)
class Listener:
    proto: str
    address: str
    port: int
    process: str

    @property
    def loopback(self) -> bool:
        addr = self.address.strip("[]").split("%")[0]
        if addr in ("*", "0.0.0.0", "::"):  # noqa: S104 - what ss prints for a wildcard bind
            return False
        try:
            return ipaddress.ip_address(addr).is_loopback
        except ValueError:
            return False


_PROC = re.compile(r'\(\("([^"]+)"')


def parse_ss(lines: Iterable[str]) -> list[Listener]:
    """``ss -Htlnup`` lines: Netid State Recv-Q Send-Q Local Peer [Process]."""
    out = []
    for line in lines:
        cols = line.split()
        if len(cols) < 5 or cols[0] not in ("tcp", "udp"):
            continue
        local = cols[4]
        addr, _, port = local.rpartition(":")
        if not port.isdigit():
            continue
        m = _PROC.search(line)
        out.append(Listener(cols[0], addr, int(port), m.group(1) if m else "?"))
    return out


def judge_sockets(
    host: str, listeners: Sequence[Listener], table: FlowTable, extra_ok: Iterable[int] = ()
) -> list[Finding]:
    h = table.inv.host(host)
    declared = {
        (proto, port)
        for f in table.flows_for(host)
        if f.lands_on(h.groups)
        for proto in ("tcp", "udp")
        for port in f.ports(proto)
    }
    ok_extra = set(extra_ok)
    out: list[Finding] = []
    wild = [
        ln
        for ln in listeners
        if not ln.loopback and (ln.proto, ln.port) not in declared and ln.port not in ok_extra
    ]
    for ln in sorted(set(wild), key=lambda x: (x.proto, x.port)):
        out.append(
            Finding(
                "sockets",
                host,
                "medium",
                f"{ln.process} listens on {ln.proto} {ln.address}:{ln.port}; no flow opens "
                f"{ln.proto}/{ln.port} on {host}, so only the firewall keeps it in",
                "bind it to 127.0.0.1, stop it, or declare its flow",
            )
        )
    if not out:
        public = sorted({f"{ln.port}/{ln.proto}" for ln in listeners if not ln.loopback})
        local = sorted({f"{ln.port}/{ln.proto}" for ln in listeners if ln.loopback})
        out.append(
            passed(
                "sockets",
                host,
                f"listening: {', '.join(public) or 'nothing'} (all in the flow table); "
                f"loopback only: {', '.join(local) or 'nothing'}",
            )
        )
    return out


# ---------------------------------------------------------------- secrets
def judge_secret_files(host: str, p: Probe) -> list[Finding]:
    out: list[Finding] = []
    for name, mode, u, g, path in p.secrets:
        m = int(mode, 8)
        if path.startswith(LEAKY_DIRS):
            out.append(
                Finding(
                    "secret-files",
                    host,
                    "high",
                    f"{path} ({mode} {u}:{g}) holds {name}",
                    "remove it and rotate the secret; find what wrote it there",
                )
            )
        elif m & 0o007:
            out.append(
                Finding(
                    "secret-files",
                    host,
                    "high",
                    f"{path} holds {name} and is mode {mode} ({u}:{g}): others may read it",
                    f"chmod o-rwx {path} (and fix the task that templates it)",
                )
            )
        elif m & 0o020:
            out.append(
                Finding(
                    "secret-files",
                    host,
                    "medium",
                    f"{path} holds {name} and is group-writable ({mode} {u}:{g})",
                    f"chmod g-w {path}",
                )
            )
    if not out:
        files = sorted({s[4] for s in p.secrets})
        out.append(
            passed(
                "secret-files",
                host,
                f"{len(files)} files hold a secret or a private key, none readable by others",
            )
        )
    return out


def judge_updates(host: str, p: Probe, lab: bool) -> list[Finding]:
    if lab:
        return [
            skipped(
                "updates",
                host,
                "lab hosts see no package mirror: pending security updates not checked",
                "on real hosts the audit lists apt's pending security updates",
            )
        ]
    if p.updates is None:
        return [skipped("updates", host, "not checked (security_check_updates: false)")]
    sec = [u for u in p.updates if "security" in u.lower()]
    if sec:
        names = ", ".join(u.split()[1] for u in sec[:20])
        return [
            Finding(
                "updates",
                host,
                "high",
                f"{len(sec)} pending security updates: {names}",
                "apt-get update && apt-get upgrade (or unattended-upgrades)",
            )
        ]
    return [passed("updates", host, f"no pending security update ({len(p.updates)} other updates)")]


def secrets_stdin(vault: Mapping[str, str]) -> bytes:
    """'name base64(value)' lines for the probe (values never on a command line)."""
    lines = [
        f"{k} {base64.b64encode(str(v).encode()).decode()}"
        for k, v in sorted(vault.items())
        if isinstance(v, str | int) and len(str(v)) >= 6
    ]
    return ("\n".join(lines) + "\n").encode()


def probe(
    inv: Inventory, host: str, vault: Mapping[str, str], check_updates: bool, timeout: float = 90.0
) -> Probe:
    """Run the probe on one host (sudo); SSHError when it cannot be reached."""
    import shlex

    deploy = ssh.target(inv, host).user
    script = probe_script(check_updates)
    cmd = f"sh -c {shlex.quote(script)} probe {shlex.quote(deploy)}"
    r = ssh.run(inv, host, cmd, timeout=timeout, sudo=True, stdin=secrets_stdin(vault))
    p = parse_probe(r.stdout)
    if not p.complete:
        raise SSHError(
            host, f"the hosts probe did not finish (rc={r.rc}): {r.stderr.strip()[-200:]}"
        )
    return p


def audit_host(
    inv: Inventory,
    host: str,
    table: FlowTable,
    vault: Mapping[str, str],
    keys: set[str],
    lab: bool,
    check_updates: bool,
) -> list[Finding]:
    deploy = ssh.target(inv, host).user
    try:
        p = probe(inv, host, vault, check_updates and not lab)
    except SSHError as exc:
        return [Finding("hosts", host, "high", f"not audited: {exc.message}", "make it reachable")]
    return [
        *judge_sudoers(host, p, deploy),
        *judge_keys(host, p, deploy, keys),
        *judge_sockets(host, parse_ss(p.sockets), table),
        *judge_secret_files(host, p),
        *judge_updates(host, p, lab),
    ]
