"""PostgreSQL: pg_hba against the flow table, TLS and SCRAM everywhere, least privilege.

Read-only: every answer comes from the catalogs (``pg_hba_file_rules``,
``pg_authid``, ``pg_settings``, the privilege functions), as the postgres
superuser over the local socket (``stack.psql``). Nothing is tried for real:
``has_table_privilege`` and ownership say whether the app role could TRUNCATE or
DROP, without taking a lock on a live table.

- **pg_hba** (every db host): each rule that lets a remote address log in must
  be ``hostssl`` with ``scram-sha-256``, and its address must be one the flow
  table admits to the PostgreSQL port of that host; ``host`` (no TLS) is
  allowed only for loopback or with ``reject``; no ``trust``, ``password``,
  ``md5`` anywhere.
- **TLS and SCRAM**: ``ssl = on``, ``ssl_min_protocol_version`` TLS 1.2 or
  higher, ``password_encryption = scram-sha-256``, every stored password a SCRAM
  verifier, every connected remote client on TLS (``pg_stat_ssl``).
- **Least privilege** (on the primary): the app role is no superuser, cannot
  create roles or databases, bypass RLS or replicate, owns no table (an owner
  may DROP and ALTER), has no TRUNCATE, UPDATE, DELETE, REFERENCES or TRIGGER,
  cannot CREATE in any schema or the database, is a member of no role
  (pg_read_all_data and friends), and may SELECT only the tables it needs
  (``app_tables``). No role but the bootstrap superuser is a superuser.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from faultbook.errors import FaultbookError, SSHError
from faultbook.inventory import Inventory
from faultbook.security.findings import Finding, passed
from faultbook.security.flows import FlowTable
from faultbook.stack import psql

PORT = 5432
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
WEAK_METHODS = ("trust", "password", "md5", "ident")

HBA_SQL = (
    "SELECT coalesce(json_agg(json_build_object('line', line_number, 'type', type, "
    "'database', database, 'user', user_name, 'address', address, 'netmask', netmask, "
    "'method', auth_method, 'error', error) ORDER BY line_number), '[]') "
    "FROM pg_hba_file_rules"
)
SETTINGS_SQL = (
    "SELECT json_build_object("
    "'ssl', current_setting('ssl'), "
    "'ssl_min_protocol_version', current_setting('ssl_min_protocol_version'), "
    "'password_encryption', current_setting('password_encryption'), "
    "'weak_passwords', (SELECT coalesce(json_agg(rolname), '[]') FROM pg_authid "
    "  WHERE rolpassword IS NOT NULL AND rolpassword NOT LIKE 'SCRAM-SHA-256$%'), "
    "'superusers', (SELECT coalesce(json_agg(rolname), '[]') FROM pg_roles "
    "  WHERE rolsuper AND oid <> 10), "
    "'plain_clients', (SELECT coalesce(json_agg(host(a.client_addr)::text || ' ' || "
    "  coalesce(a.usename, '?')), '[]') FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
    "  WHERE a.client_addr IS NOT NULL AND NOT s.ssl "
    "  AND NOT (a.client_addr << '127.0.0.0/8' OR a.client_addr = '::1')))"
)
# The app role's powers, asked of the catalogs in the app database (psql variable :'app').
PRIVS_SQL = """
WITH r AS (SELECT * FROM pg_roles WHERE rolname = :'app'),
tables AS (
  SELECT c.oid, n.nspname || '.' || c.relname AS name, c.relowner
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
)
SELECT json_build_object(
  'exists', (SELECT count(*) FROM r) = 1,
  'attrs', (SELECT json_build_object('super', rolsuper, 'createrole', rolcreaterole,
            'createdb', rolcreatedb, 'bypassrls', rolbypassrls, 'replication', rolreplication)
            FROM r),
  'member_of', (SELECT coalesce(json_agg(g.rolname), '[]') FROM pg_auth_members m
                JOIN pg_roles g ON g.oid = m.roleid JOIN r ON r.oid = m.member),
  'owns', (SELECT coalesce(json_agg(t.name), '[]') FROM tables t, r
           WHERE pg_has_role(r.oid, t.relowner, 'USAGE')),
  'select', (SELECT coalesce(json_agg(t.name), '[]') FROM tables t, r
             WHERE has_table_privilege(r.oid, t.oid, 'SELECT')),
  'write', (SELECT coalesce(json_agg(t.name || ':' || p), '[]') FROM tables t, r,
            unnest(ARRAY['UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p
            WHERE has_table_privilege(r.oid, t.oid, p)),
  'create_schemas', (SELECT coalesce(json_agg(n.nspname), '[]') FROM pg_namespace n, r
                     WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
                       AND has_schema_privilege(r.oid, n.oid, 'CREATE')),
  'create_db', (SELECT has_database_privilege(r.oid, current_database(), 'CREATE') FROM r)
)
"""


Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _within(net: Net, nets: Iterable[Net]) -> bool:
    """Whether ``net`` lies inside one of ``nets`` (of the same IP version)."""
    for other in nets:
        v4 = isinstance(net, ipaddress.IPv4Network) and isinstance(other, ipaddress.IPv4Network)
        v6 = isinstance(net, ipaddress.IPv6Network) and isinstance(other, ipaddress.IPv6Network)
        if (v4 or v6) and net.subnet_of(other):  # type: ignore[arg-type]
            return True
    return False


@dataclass(frozen=True)
class HbaRule:
    line: int
    type: str
    database: list[str]
    user: list[str]
    address: str | None
    netmask: str | None
    method: str
    error: str | None

    @property
    def network(self) -> Net | None:
        if not self.address or self.address in ("all", "samehost", "samenet"):
            return None
        try:
            if self.netmask:  # a prefix length from the mask (IPv6 takes no mask form)
                bits = bin(int(ipaddress.ip_address(self.netmask))).count("1")
                return ipaddress.ip_network(f"{self.address}/{bits}", strict=False)
            return ipaddress.ip_network(self.address, strict=False)
        except ValueError:
            return None

    def describe(self) -> str:
        where = f"{self.address}/{self.netmask}" if self.netmask else (self.address or "")
        return (
            f"line {self.line}: {self.type} {','.join(self.database)} {','.join(self.user)} "
            f"{where} {self.method}".replace("  ", " ")
        )


def parse_hba(text: str) -> list[HbaRule]:
    rows = json.loads(text or "[]")
    return [
        HbaRule(
            int(r["line"]),
            str(r["type"]),
            list(r.get("database") or []),
            list(r.get("user") or []),
            r.get("address"),
            r.get("netmask"),
            str(r.get("method") or ""),
            r.get("error"),
        )
        for r in rows
    ]


def judge_hba(host: str, rules: list[HbaRule], table: FlowTable) -> list[Finding]:
    """pg_hba of one host against the flows that open its PostgreSQL port."""
    flows = table.sources(host, PORT, "tcp")
    admitted = [n for f in flows for n in f.sources]
    out: list[Finding] = []
    for r in rules:
        if r.error:
            out.append(
                Finding(
                    "pg-hba", host, "high", f"{r.describe()}: error {r.error}", "fix pg_hba.conf"
                )
            )
            continue
        if r.method in WEAK_METHODS:
            out.append(
                Finding(
                    "pg-hba",
                    host,
                    "high",
                    f"{r.describe()}: method {r.method}",
                    "use scram-sha-256 (peer for the local postgres user); the postgresql role's "
                    "pg_hba.conf.j2",
                )
            )
            continue
        if r.type == "local" or r.method == "reject":
            continue
        net = r.network
        loop = net is not None and _within(net, LOOPBACK)
        if r.type in ("host", "hostnossl", "hostgssenc", "hostnogssenc") and not loop:
            out.append(
                Finding(
                    "pg-hba",
                    host,
                    "high",
                    f"{r.describe()}: a remote login without TLS",
                    "hostssl for every remote rule",
                )
            )
        if r.method != "scram-sha-256" and not loop:
            out.append(
                Finding(
                    "pg-hba", host, "high", f"{r.describe()}: method {r.method}", "scram-sha-256"
                )
            )
        if loop:
            continue
        if net is None:
            out.append(
                Finding(
                    "pg-hba",
                    host,
                    "high",
                    f"{r.describe()}: admits any address",
                    "name each client's address (the flow table's sources)",
                )
            )
            continue
        if not _within(net, admitted):
            out.append(
                Finding(
                    "pg-hba",
                    host,
                    "high",
                    f"{r.describe()}: {net} is not a source the flow table admits to port {PORT} "
                    f"(flows: {', '.join(f.name for f in flows) or 'none'})",
                    "remove the rule, or declare the flow in common_nft_flows",
                )
            )
    if not out:
        logins = sum(1 for r in rules if r.type.startswith("host") and r.method == "scram-sha-256")
        out.append(
            passed(
                "pg-hba",
                host,
                f"{len(rules)} rules; {logins} remote logins, all hostssl + scram-sha-256 from "
                "flow-table sources; the rest local or reject",
            )
        )
    return out


def judge_settings(host: str, s: Mapping[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    if s.get("ssl") != "on":
        out.append(Finding("pg-tls-scram", host, "high", f"ssl = {s.get('ssl')}", "ssl = on"))
    if str(s.get("ssl_min_protocol_version")) not in ("TLSv1.2", "TLSv1.3"):
        out.append(
            Finding(
                "pg-tls-scram",
                host,
                "high",
                f"ssl_min_protocol_version = {s.get('ssl_min_protocol_version')}",
                "postgresql_ssl_min_protocol_version: TLSv1.3 (or TLSv1.2)",
            )
        )
    if s.get("password_encryption") != "scram-sha-256":
        out.append(
            Finding(
                "pg-tls-scram",
                host,
                "high",
                f"password_encryption = {s.get('password_encryption')}",
                "password_encryption = scram-sha-256, then set each password again",
            )
        )
    if s.get("weak_passwords"):
        out.append(
            Finding(
                "pg-tls-scram",
                host,
                "high",
                "roles with a non-SCRAM password: " + ", ".join(s["weak_passwords"]),
                "ALTER ROLE ... PASSWORD again with password_encryption = scram-sha-256",
            )
        )
    if s.get("superusers"):
        out.append(
            Finding(
                "pg-privileges",
                host,
                "high",
                "superusers besides the bootstrap one: " + ", ".join(s["superusers"]),
                "ALTER ROLE ... NOSUPERUSER",
            )
        )
    if s.get("plain_clients"):
        out.append(
            Finding(
                "pg-tls-scram",
                host,
                "high",
                "remote clients connected without TLS: " + ", ".join(s["plain_clients"]),
                "hostssl only in pg_hba.conf; sslmode=verify-full in clients",
            )
        )
    if not out:
        out.append(
            passed(
                "pg-tls-scram",
                host,
                f"ssl on (min {s.get('ssl_min_protocol_version')}), scram-sha-256, every stored "
                "password SCRAM, every remote client on TLS",
            )
        )
    return out


def judge_privileges(
    host: str, app: str, p: Mapping[str, Any], app_tables: Iterable[str]
) -> list[Finding]:
    check = "pg-app-role"
    if not p.get("exists"):
        return [
            Finding(check, host, "high", f"role {app} not found on {host}", "provision the ledger")
        ]
    need = set(app_tables)
    problems: list[str] = []
    attrs = p.get("attrs") or {}
    for k in ("super", "createrole", "createdb", "bypassrls", "replication"):
        if attrs.get(k):
            problems.append(f"has {k.upper()}")
    if p.get("member_of"):
        problems.append("is a member of " + ", ".join(p["member_of"]))
    if p.get("owns"):
        problems.append("owns (may DROP/ALTER) " + ", ".join(p["owns"]))
    if p.get("write"):
        problems.append("may " + ", ".join(p["write"]))
    extra = sorted(set(p.get("select") or []) - need)
    if extra:
        problems.append(
            "may read " + ", ".join(extra) + " (it needs only " + ", ".join(sorted(need)) + ")"
        )
    if p.get("create_schemas"):
        problems.append("may CREATE in schema " + ", ".join(p["create_schemas"]))
    if p.get("create_db"):
        problems.append("may CREATE schemas in its database")
    if problems:
        return [
            Finding(
                check,
                host,
                "high",
                f"{app}: " + "; ".join(problems),
                "revoke it: the ledger role grants SELECT, INSERT on orders and USAGE on its "
                "sequence only; REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            )
        ]
    reads = ", ".join(sorted(p.get("select") or [])) or "nothing"
    return [
        passed(
            check,
            host,
            f"{app}: no DROP/ALTER (owns nothing), no TRUNCATE/UPDATE/DELETE, cannot create "
            f"roles, databases or objects; reads {reads}",
        )
    ]


def audit(
    inv: Inventory,
    table: FlowTable,
    primary: str | None,
    app: str = "ledger",
    app_db: str = "ledger",
    app_tables: Iterable[str] = ("public.orders",),
) -> list[Finding]:
    """pg_hba and settings on every db host that answers; privileges on the primary."""
    out: list[Finding] = []
    for h in inv.group("db"):
        try:
            rules = parse_hba(psql.psql(inv, h.name, HBA_SQL, timeout=15))
            settings = json.loads(psql.psql(inv, h.name, SETTINGS_SQL, timeout=15))
        except (FaultbookError, SSHError, ValueError) as exc:
            out.append(
                Finding("pg-hba", h.name, "high", f"not audited: {exc}", "make PostgreSQL answer")
            )
            continue
        out += judge_hba(h.name, rules, table)
        out += judge_settings(h.name, settings)
    if primary is None:
        out.append(
            Finding("pg-app-role", "-", "high", "no primary found: privileges not audited", "")
        )
        return out
    try:
        privs = json.loads(psql.psql(inv, primary, PRIVS_SQL, db=app_db, params={"app": app}))
    except (FaultbookError, SSHError, ValueError) as exc:
        out.append(Finding("pg-app-role", primary, "high", f"not audited: {exc}", ""))
        return out
    out += judge_privileges(primary, app, privs, app_tables)
    return out
