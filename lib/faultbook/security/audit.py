"""The security-audit runbook's steps: one call each, findings collected in one place.

    audit = begin(inventory, mode, outside_address, tcp_ports, scan_timeout_s,
                  cert_min_days, drill_host, drill_port, result_dir)
    audit.flow_table()         # the flow table, resolved for this inventory
    audit.exposure()           # nmap from the controller and the outside vantage
    audit.ssh(); audit.tls(); audit.postgres(); audit.hosts(); audit.leaks()
    audit.hardening()          # skipped (info) until security_hardening is true
    audit.drill_open()         # drill: a listener + firewall hole; rescan must name it
    audit.drill_close()        # drill: revert it; rescan must be clean
    audit.table(); audit.finish(); audit.save(result_dir); audit.check()

Incident mode changes nothing anywhere: scans, SSH reads, catalog queries. Drill
mode adds the exposed-listener fault (``drills.listener``), journaled in the run
directory before it is injected, so ``faultbook run`` reverts it whatever
happens to the notebook; the fault also reverts itself on the host after
``DRILL_MAX_S``.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from faultbook import inventory as inventory_mod
from faultbook import secrets
from faultbook.drills import faults
from faultbook.drills.journal import Entry, Journal
from faultbook.errors import FaultbookError, ParameterError, VerdictFailed
from faultbook.inventory import Inventory
from faultbook.lab import vantage as vantage_mod
from faultbook.paths import faultbook_home, state_dir
from faultbook.results import Run
from faultbook.security import exposure, hardening, hosts, leaks, postgres, sshd
from faultbook.security import findings as F
from faultbook.security import flows as flows_mod
from faultbook.security import tls as tls_mod
from faultbook.security.params import check_ports, check_result_dir, number
from faultbook.stack import http, psql, vip

log = logging.getLogger(__name__)

MODES = ("incident", "drill")
RUN_DIR_ENV = "FAULTBOOK_RUN_DIR"
DRILL_MAX_S = 600.0
# testssl.sh -p -S -E took 63 s for the VIP alone and 170-180 s for each of the three
# run together on the lab's loaded 2-core controller (measured): room for that.
TLS_TIMEOUT_S = 600.0


@dataclass
class Audit:
    inv: Inventory
    mode: str
    run: Run
    outside_address: str
    outside_host: str | None
    tcp_ports: str
    scan_timeout_s: float
    cert_min_days: float
    drill_host: str
    drill_port: int
    result_dir: str
    findings: F.Findings = field(default_factory=F.Findings)
    table_: flows_mod.FlowTable | None = None
    timings: dict[str, float] = field(default_factory=dict)
    _tls_results: list[tls_mod.Result] = field(default_factory=list)
    _fault: faults.Fault | None = None
    _entry: Entry | None = None
    _journal: Journal | None = None

    # ------------------------------------------------------------- basics
    @property
    def flows(self) -> flows_mod.FlowTable:
        if self.table_ is None:
            self.table_ = flows_mod.load(self.inv)
        return self.table_

    def describe(self) -> str:
        outside = (
            f"outside vantage {self.outside_address} (a namespace on the lab bridge)"
            if self.inv.is_lab
            else (
                f"outside vantage {self.outside_host} ({self.outside_address}) over SSH"
                if self.outside_host
                else "no outside vantage (set security_outside_vantage)"
            )
        )
        hard = "on" if hardening.enabled(self.inv) else "off (those checks are skipped)"
        return (
            f"inventory {self.inv.path}: {len(self.inv.hosts)} hosts; mode {self.mode}; "
            f"{outside}; hardening checks {hard}"
        )

    def _record(self, check: str, items: list[F.Finding], started: float) -> pd.DataFrame:
        self.findings.extend(items)
        self.timings[check] = round(time.monotonic() - started, 1)
        self.run.metrics[f"{check.replace('-', '_')}_s"] = self.timings[check]
        return F.table(items, include_passes=True)

    def flow_table(self) -> pd.DataFrame:
        """The flow table as nftables enforces it (common_nft_flows + extra flows)."""
        with self.run.step("flow table"):
            return self.flows.table()

    # ------------------------------------------------------------ exposure
    def _targets(self) -> list[flows_mod.Target]:
        try:
            holder = vip.vip_holder(self.inv)
        except FaultbookError:
            holder = None
        return flows_mod.targets(self.inv, holder)

    def _scan(self, targets: list[flows_mod.Target]) -> tuple[list[exposure.Scan], list[F.Finding]]:
        """nmap from every vantage, in parallel; the comparison's findings."""
        udp = set(self.flows.declared_ports("udp")) | set(exposure.EXTRA_UDP)
        argv = exposure.nmap_argv(
            [t.address for t in targets],
            self.tcp_ports,
            udp,
            host_timeout_s=self.scan_timeout_s * 0.8,
            min_rate=int(self.inv.vars.get("security_nmap_min_rate") or 0) or None,
        )
        ctrl = str(self.inv.vars.get("controller_ip", ""))
        vantages = [exposure.Vantage("controller", ctrl, "local")]
        notes: list[F.Finding] = []
        with ExitStack() as stack:
            ns: object | None = None
            if self.inv.is_lab:
                ns = stack.enter_context(
                    vantage_mod.Vantage("outside", self.outside_address, self.inv)
                )
                vantages.append(exposure.Vantage("outside", self.outside_address, "netns:outside"))
            elif self.outside_host:
                vantages.append(
                    exposure.Vantage("outside", self.outside_address, f"ssh:{self.outside_host}")
                )
            else:
                notes.append(
                    F.Finding(
                        "exposure",
                        "-",
                        "medium",
                        "no outside vantage: only the controller's view was scanned",
                        "name a host in security_outside_vantage (nmap installed there)",
                    )
                )
            # One vantage after the other: two sweeps at once on a small controller lose
            # SYN/ACKs (measured; exposure.py). Differences are confirmed while the
            # namespace still exists.
            scans = [
                exposure.run_nmap(v, argv, self.scan_timeout_s, self.inv, ns) for v in vantages
            ]
            found = [
                f
                for s in scans
                for f in exposure.compare(
                    s,
                    self.flows,
                    targets,
                    udp,
                    exposure.confirmer(s.vantage, 120.0, self.inv, ns),
                )
            ]
        return scans, found + notes

    def exposure(self) -> pd.DataFrame:
        """Open ports per target and vantage; findings for every difference from the flows."""
        t0 = time.monotonic()
        with self.run.step("exposure") as st:
            targets = self._targets()
            scans, found = self._scan(targets)
            st.detail = ", ".join(f"{s.vantage.label} {s.elapsed_s:.0f} s" for s in scans)
        self._record("exposure", found, t0)
        for s in scans:
            self.run.metrics[f"nmap_{s.vantage.label}_s"] = round(s.elapsed_s, 1)
        frames = [exposure.frame(s, targets) for s in scans]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    # ------------------------------------------------------------ the rest
    def ssh(self) -> pd.DataFrame:
        """ssh-audit on every host; password and root logins refused."""
        t0 = time.monotonic()
        with self.run.step("ssh"):
            items = sshd.audit(self.inv, list(self.inv.hosts))
        return self._record("ssh", items, t0)

    def tls(self) -> pd.DataFrame:
        """testssl.sh against the VIP, the primary's PostgreSQL and the pgBackRest server."""
        t0 = time.monotonic()
        with self.run.step("tls") as st:
            items, results = self._tls()
            st.detail = ", ".join(f"{r.endpoint.name} {r.elapsed_s:.0f} s" for r in results)
        self._tls_results = results
        return self._record("tls", items, t0)

    def _tls(self) -> tuple[list[F.Finding], list[tls_mod.Result]]:
        ca = http.ca_file(self.inv)
        eps: list[tls_mod.Endpoint] = []
        out: list[F.Finding] = []
        if self.inv.vars.get("vip"):
            eps.append(
                tls_mod.Endpoint(
                    "vip",
                    "VIP",
                    f"https://{self.inv.vars['vip']}/",
                    headers=hardening.enabled(self.inv),
                )
            )
        try:
            primary = psql.primary(self.inv)
            h = self.inv.host(primary)
            eps.append(
                tls_mod.Endpoint("postgres", primary, f"{h.address}:5432", starttls="postgres")
            )
        except FaultbookError as exc:
            out.append(F.Finding("tls-postgres", "-", "high", f"no primary to test: {exc}", ""))
        for b in self.inv.groups.get("backup", ()):
            h = self.inv.host(b)
            if self.inv.is_lab:
                from faultbook.lab import machine
                from faultbook.lab.lab import Lab

                nspawn = Lab(self.inv).pid(b)
                pid = machine.container_init(nspawn) if nspawn is not None else None
                if pid is None:
                    out.append(F.Finding("tls-pgbackrest", b, "high", f"{b} is not running", ""))
                    continue
                eps.append(tls_mod.Endpoint("pgbackrest", b, f"{h.address}:8432", netns_pid=pid))
            else:
                out.append(
                    F.skipped(
                        "tls-pgbackrest",
                        b,
                        "the firewall admits only db and restore hosts to port 8432: not tested "
                        "from the controller",
                        "run testssl.sh --add-ca CA HOST:8432 from a db host",
                    )
                )
        with ThreadPoolExecutor(max_workers=max(1, len(eps))) as pool:
            results = list(
                pool.map(lambda e: tls_mod.run(e, ca if ca.exists() else None, TLS_TIMEOUT_S), eps)
            )
        for r in results:
            out += tls_mod.judge(r, self.cert_min_days)
        return out, results

    def postgres(self) -> pd.DataFrame:
        """pg_hba against the flows, TLS and SCRAM, the app role's privileges."""
        t0 = time.monotonic()
        with self.run.step("postgres"):
            try:
                primary: str | None = psql.primary(self.inv)
            except FaultbookError:
                primary = None
            items = postgres.audit(self.inv, self.flows, primary)
        return self._record("postgres", items, t0)

    def _vault(self) -> dict[str, Any]:
        try:
            return dict(secrets.read_vault(self.inv))
        except Exception as exc:  # noqa: BLE001 - a vault that does not open is a finding
            log.warning("vault not readable: %s", exc)
            return {}

    def hosts(self) -> pd.DataFrame:
        """sudoers, keys, listening sockets, secret files' modes, pending updates."""
        t0 = time.monotonic()
        with self.run.step("hosts"):
            vault = self._vault()
            keys = hosts.expected_keys(self.inv)
            check_updates = bool(self.inv.vars.get("security_check_updates", True))
            names = list(self.inv.hosts)
            with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
                parts = list(
                    pool.map(
                        lambda h: hosts.audit_host(
                            self.inv, h, self.flows, vault, keys, self.inv.is_lab, check_updates
                        ),
                        names,
                    )
                )
        return self._record("hosts", [f for p in parts for f in p], t0)

    def leaks(self) -> pd.DataFrame:
        """Every vault secret, plain and base64, in the archive, notebooks, logs, artifacts."""
        t0 = time.monotonic()
        with self.run.step("secrets") as st:
            vault = self._vault()
            if not vault:
                items = [
                    F.Finding(
                        "secret-leaks",
                        "controller",
                        "high",
                        "the vault could not be read: nothing to look for",
                        "set FAULTBOOK_VAULT_PASSWORD_FILE (real inventories)",
                    )
                ]
            else:
                extra = [Path(self.result_dir)] if self.result_dir else []
                extra.append(state_dir(self.inv) / "runner")
                items, n = leaks.audit(vault, faultbook_home(), extra)
                st.detail = f"{n} files"
        return self._record("secrets", items, t0)

    def hardening(self) -> pd.DataFrame:
        """HSTS, the ledger's token, Prometheus/Alertmanager auth: skipped until hardened."""
        t0 = time.monotonic()
        mons = [h.name for h in self.inv.group("mon")] if "mon" in self.inv.groups else []
        items: list[F.Finding] = []
        with self.run.step("hardening"):
            vip_r = next((r for r in self._tls_results if r.endpoint.name == "vip"), None)
            items += hardening.gate(
                self.inv,
                "hsts",
                ["VIP"],
                lambda: (
                    hardening.hsts("VIP", *tls_mod.hsts(vip_r))
                    if vip_r
                    else [F.Finding("hsts", "VIP", "high", "the TLS check did not run first", "")]
                ),
            )
            items += hardening.gate(
                self.inv, "ledger-auth", ["VIP"], lambda: hardening.ledger_auth(self.inv)
            )
            items += hardening.gate(
                self.inv,
                "prometheus-auth",
                mons,
                lambda: hardening.api_auth(
                    self.inv, "prometheus-auth", 9090, "/api/v1/status/buildinfo"
                ),
            )
            items += hardening.gate(
                self.inv,
                "alertmanager-auth",
                mons,
                lambda: hardening.api_auth(self.inv, "alertmanager-auth", 9093, "/api/v2/status"),
            )
        return self._record("hardening", items, t0)

    # --------------------------------------------------------------- drill
    @property
    def journal(self) -> Journal:
        if self._journal is None:
            where = (
                self.result_dir
                or os.environ.get(RUN_DIR_ENV, "")
                or tempfile.mkdtemp(prefix="faultbook-security-audit-")
            )
            self._journal = Journal(where)
        return self._journal

    def _rescan(self) -> tuple[list[F.Finding], pd.DataFrame]:
        targets = [t for t in flows_mod.targets(self.inv) if t.name == self.drill_host]
        scans, found = self._scan(targets)
        frame = pd.concat([exposure.frame(s, targets) for s in scans], ignore_index=True)
        return found, frame

    def drill_open(self) -> pd.DataFrame:
        """Drill: open a test listener with a firewall hole on drill_host:drill_port, rescan
        that host; the exposure check must name the host and port from every vantage."""
        if self.mode != "drill":
            self.run.skip("drill: open a listener", "incident mode is read-only")
            sys.stdout.write("SKIPPED: incident mode is read-only (no listener opened)\n")
            return pd.DataFrame()
        t0 = time.monotonic()
        with self.run.step("drill: open a listener") as st:
            fault = faults.make(
                "exposed-listener",
                self.inv,
                self.drill_host,
                port=self.drill_port,
                max_s=DRILL_MAX_S,
            )
            fault.prepare()
            entry = self.journal.intent(fault, DRILL_MAX_S)
            self._fault, self._entry = fault, entry
            try:
                fault.inject()
            except BaseException as exc:
                self.journal.inject_failed(entry, f"{type(exc).__name__}: {exc}")
                raise
            self.journal.injected(entry, fault.injected_at)
            self.run.fault = fault.to_dict()
            found, frame = self._rescan()
            named = [
                f
                for f in found
                if f.status == "fail" and f"tcp/{self.drill_port} is open" in f.evidence
            ]
            others = [f for f in found if f.status == "fail" and f not in named]
            vantages = sum(
                1 for v in ("controller", "outside") if any(v in f.evidence for f in named)
            )
            expect = 2 if (self.inv.is_lab or self.outside_host) else 1
            if len(named) >= expect and not others:
                item = F.passed(
                    "drill-detect",
                    self.drill_host,
                    f"the exposure check named {self.drill_host} tcp/{self.drill_port} from "
                    f"{vantages} vantage point(s): " + " | ".join(f.evidence for f in named),
                )
            else:
                item = F.Finding(
                    "drill-detect",
                    self.drill_host,
                    "high",
                    f"with a listener open on {self.drill_host} tcp/{self.drill_port} the exposure "
                    f"check reported: {[f.evidence for f in found if f.status == 'fail']}",
                    "the exposure check is blind to what it must catch: check the nmap options",
                )
            st.detail = item.evidence[:300]
        self._record("drill-detect", [item], t0)
        return frame.assign(findings=" | ".join(f.evidence for f in found if f.status == "fail"))

    def drill_close(self) -> pd.DataFrame:
        """Drill: close the listener (journaled revert), rescan: the host must be clean again."""
        if self.mode != "drill" or self._fault is None or self._entry is None:
            self.run.skip("drill: close the listener", "incident mode is read-only")
            return pd.DataFrame()
        t0 = time.monotonic()
        with self.run.step("drill: close the listener") as st:
            rb = self.journal.rollback(self._entry, "procedure", make=lambda _e: self._fault)  # type: ignore[arg-type,return-value]
            if self.run.fault is not None:
                self.run.fault["reverted_at"] = rb.at
            found, frame = self._rescan()
            bad = [f for f in found if f.status == "fail"]
            if rb.outcome == "failed" or bad:
                item = F.Finding(
                    "drill-close",
                    self.drill_host,
                    "high",
                    f"after closing ({rb.outcome}: {rb.detail}): "
                    + (" | ".join(f.evidence for f in bad) or "revert failed"),
                    f"close it by hand: systemctl stop faultbook-listener-{self.drill_port}; "
                    "delete the nft rule commented faultbook-exposed-listener",
                )
            else:
                item = F.passed(
                    "drill-close",
                    self.drill_host,
                    f"{rb.detail}; rescan: {self.drill_host} as declared again",
                )
            st.detail = item.evidence[:300]
        self._record("drill-close", [item], t0)
        return frame

    # ------------------------------------------------------------- output
    def table(self) -> pd.DataFrame:
        """The findings (and skips), worst first: check, host, severity, evidence, fix."""
        return F.table(self.findings.rows)

    def summary(self) -> pd.DataFrame:
        return F.summary(self.findings.rows)

    def finish(self) -> str:
        counts = self.findings.counts()
        for sev, n in counts.items():
            self.run.metrics[f"findings_{sev}"] = n
        self.run.metrics["checks_passed"] = sum(1 for f in self.findings.rows if f.status == "pass")
        high = self.findings.high()
        if high:
            self.run.fail(
                "verdict",
                f"{len(high)} high finding(s): "
                + "; ".join(f"{f.check} {f.host}: {f.evidence}" for f in high)[:1500],
            )
        self.run.finish()
        return self.verdict()

    def verdict(self) -> str:
        c = self.findings.counts()
        line = ", ".join(f"{n} {s}" for s, n in c.items())
        high = self.findings.high()
        if not high:
            return f"PASS: security-audit ({self.mode}): no high finding ({line})"
        names = "; ".join(f"{f.check} {f.host}: {f.evidence}" for f in high[:10])
        return f"FAIL: {len(high)} high finding(s) ({line}): {names}"

    def save(self, result_dir: str) -> Path | None:
        return self.run.save(result_dir)

    def check(self) -> None:
        if self.findings.high():
            raise VerdictFailed(self.verdict())


def begin(
    inventory: str,
    mode: str,
    outside_address: str,
    tcp_ports: str,
    scan_timeout_s: float,
    cert_min_days: float,
    drill_host: str,
    drill_port: int,
    result_dir: str,
) -> Audit:
    """Check the parameters (one-line errors), load the inventory, start the record."""
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    ports = check_ports(tcp_ports)
    timeout = number("scan_timeout_s", scan_timeout_s, 10, 3600)
    min_days = number("cert_min_days", cert_min_days, 0, 365)
    if (
        isinstance(drill_port, bool)
        or not isinstance(drill_port, int)
        or not 1024 < drill_port < 65536
    ):
        raise ParameterError(f"drill_port must be an integer in 1025-65535, got {drill_port!r}")
    out_dir = check_result_dir(result_dir)
    inv = inventory_mod.load(inventory)
    inv.host(drill_host)  # InventoryError naming the known hosts
    outside_host: str | None = None
    if inv.is_lab:
        address = vantage_mod.check_address(outside_address, vantage_mod.lab_addresses(inv))
    else:
        named = inv.vars.get("security_outside_vantage")
        if named:
            outside_host = str(named)
            address = inv.host(outside_host).address
        else:
            address = ""
    audit = Audit(
        inv=inv,
        mode=mode,
        run=Run.start(
            "security-audit",
            mode,
            {
                "inventory": inventory,
                "mode": mode,
                "outside_address": outside_address,
                "tcp_ports": ports,
                "scan_timeout_s": timeout,
                "cert_min_days": min_days,
                "drill_host": drill_host,
                "drill_port": drill_port,
            },
        ),
        outside_address=address,
        outside_host=outside_host,
        tcp_ports=ports,
        scan_timeout_s=timeout,
        cert_min_days=min_days,
        drill_host=drill_host,
        drill_port=drill_port,
        result_dir=out_dir,
    )
    declared = audit.flows.declared_ports("tcp")
    if drill_port in declared:
        raise ParameterError(
            f"drill_port {drill_port} is a port the flow table opens ({sorted(declared)}); "
            "expected an unused port"
        )
    return audit
