"""TLS: testssl.sh against the VIP, PostgreSQL (STARTTLS) and the pgBackRest TLS server.

testssl.sh runs with the inventory's CA added (``--add-ca``) and only the
checks the audit reads (about 25 s against a local ``openssl s_server``, 63 s
against the VIP on the loaded lab; a default run takes several minutes):
``-p`` (protocols, through its own sockets, so SSLv2/SSLv3 are tested even
though the local OpenSSL 3 cannot speak them), ``-S`` (the
certificate: chain of trust, name, expiry, key) and ``-E`` (every cipher per
protocol). ``-h`` (headers) is added for HTTPS when the hardening checks are
on. The three targets run in parallel. Output is testssl's flat JSON
(``--jsonfile``): a list of ``{id, severity, finding}``.

What the audit asks of the result (testssl's own severities are not used as
they are: with a private CA, "no CRL or OCSP" is HIGH to testssl and expected
here):

- protocols: SSLv2, SSLv3, TLS 1.0 and 1.1 not offered; TLS 1.2 or 1.3 offered;
- ciphers: every offered cipher is AEAD with forward secrecy (ECDHE/DHE with
  GCM or ChaCha20-Poly1305, or a TLS 1.3 suite); CBC suites are medium, no
  forward secrecy / NULL / anonymous / EXPORT / RC4 / 3DES are high;
- chain: ``cert_chain_of_trust`` passed (with the CA added); the name matches;
- expiry: days until ``cert_notAfter``: under ``min_days`` (14) high, under 30
  medium.

Where the controller cannot reach a port (the pgBackRest TLS server admits only
db and restore hosts), the lab runs testssl inside that host's own network
namespace (``nsenter``), connecting to the host's address; on real inventories
that target is skipped with a note.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faultbook.errors import ConfigError, ParseError
from faultbook.security.findings import Finding, passed

log = logging.getLogger(__name__)

BAD_PROTOCOLS = ("SSLv2", "SSLv3", "TLS1", "TLS1_1")
GOOD_PROTOCOLS = ("TLS1_2", "TLS1_3")
_CIPHER = re.compile(r"^cipher-(tls1(?:_[0-3])?|ssl[23])_x([0-9a-f]+)$")
_WEAK = re.compile(r"NULL|EXP|RC4|DES|IDEA|RC2|MD5|anon|ADH|AECDH|SEED|CAMELLIA", re.I)


@dataclass(frozen=True)
class Endpoint:
    """One TLS service: what to call it, the URI testssl gets, STARTTLS protocol,
    and the network namespace to run in (a pid's, for the lab; None: the controller)."""

    name: str
    host: str
    uri: str
    starttls: str | None = None
    netns_pid: int | None = None
    headers: bool = False


@dataclass
class Result:
    endpoint: Endpoint
    entries: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    error: str = ""

    def get(self, ident: str) -> dict[str, Any] | None:
        return next((e for e in self.entries if e.get("id") == ident), None)

    def finding(self, ident: str) -> str:
        e = self.get(ident)
        return str(e.get("finding", "")) if e else ""


def argv(ep: Endpoint, ca_file: Path | None, jsonfile: Path) -> list[str]:
    exe = shutil.which("testssl") or shutil.which("testssl.sh")
    if exe is None:
        raise ConfigError("testssl.sh is not installed; fix with: apt-get install testssl.sh")
    cmd = [exe, "--quiet", "--color", "0", "--warnings", "off", "--nodns", "none"]
    cmd += ["--connect-timeout", "5", "--openssl-timeout", "5"]
    if ca_file is not None:
        cmd += ["--add-ca", str(ca_file)]
    if ep.starttls:
        cmd += ["--starttls", ep.starttls]
    cmd += ["-p", "-S", "-E"]
    if ep.headers:
        cmd += ["-h"]
    cmd += ["--jsonfile", str(jsonfile), ep.uri]
    if ep.netns_pid is not None:
        cmd = ["nsenter", f"--net=/proc/{ep.netns_pid}/ns/net", *cmd]
    return cmd


def parse(text: str) -> list[dict[str, Any]]:
    """testssl's flat JSON (a list of objects with id, severity, finding)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ParseError(f"testssl JSON does not parse: {exc}") from None
    if isinstance(doc, dict) and "scanResult" in doc:  # the "pretty" format, if given one
        raise ParseError("testssl JSON: expected the flat format (--jsonfile), got --json-pretty")
    if not isinstance(doc, list):
        raise ParseError("testssl JSON: expected a list of findings")
    return [e for e in doc if isinstance(e, dict) and "id" in e]


def run(ep: Endpoint, ca_file: Path | None, timeout_s: float = 180.0) -> Result:
    """Run testssl for one endpoint; errors become ``Result.error`` (never raised)."""
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="faultbook-testssl-") as d:
        out = Path(d) / "out.json"
        cmd = argv(ep, ca_file, out)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return Result(ep, [], time.monotonic() - t0, f"testssl timed out after {timeout_s:g} s")
        if not out.exists():
            tail = (proc.stdout + proc.stderr).strip()[-300:]
            return Result(
                ep,
                [],
                time.monotonic() - t0,
                f"testssl wrote no JSON (rc={proc.returncode}): {tail}",
            )
        try:
            entries = parse(out.read_text())
        except ParseError as exc:
            return Result(ep, [], time.monotonic() - t0, str(exc))
    return Result(ep, entries, time.monotonic() - t0)


def cipher_name(finding: str) -> str:
    """testssl's cipher line 'TLS 1.2   xc02f   ECDHE-RSA-AES128-GCM-SHA256  ECDH 253 ...'."""
    parts = finding.split()
    # "TLS 1.2 xc02f NAME ..." or "TLSv1.3 x1301 NAME ..." or "SSLv3 x0a NAME ..."
    for i, p in enumerate(parts):
        if re.fullmatch(r"x[0-9a-f]+", p) and i + 1 < len(parts):
            return parts[i + 1]
    return finding.strip()


def classify_cipher(name: str) -> str:
    """'ok', 'cbc' (medium) or 'weak' (high)."""
    if name.startswith("TLS_AES_") or name.startswith("TLS_CHACHA20_"):
        return "ok"
    if _WEAK.search(name):
        return "weak"
    fs = name.startswith(("ECDHE-", "DHE-", "TLS_ECDHE_", "TLS_DHE_"))
    aead = "GCM" in name or "CHACHA20" in name or "POLY1305" in name
    if not fs:
        return "weak"
    return "ok" if aead else "cbc"


def days_left(not_after: str, now: datetime | None = None) -> float | None:
    """Days from now to testssl's ``cert_notAfter`` ('2027-01-02 03:04')."""
    try:
        ts = datetime.strptime(not_after.strip(), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    except ValueError:
        return None
    return (ts - (now or datetime.now(UTC))).total_seconds() / 86400


def judge(r: Result, min_days: float = 14.0, now: datetime | None = None) -> list[Finding]:
    ep = r.endpoint
    check = f"tls-{ep.name}"
    if r.error or not r.entries:
        return [
            Finding(
                check,
                ep.host,
                "high",
                f"{ep.uri}: not tested: {r.error or 'testssl found nothing'}",
                "make the service answer TLS, then re-run the audit",
            )
        ]
    fatal = [e for e in r.entries if e.get("severity") == "FATAL" or e.get("id") == "scanProblem"]
    if fatal:
        why = "; ".join(str(e.get("finding", "")) for e in fatal)[:300]
        return [Finding(check, ep.host, "high", f"{ep.uri}: testssl could not finish: {why}", "")]
    out: list[Finding] = []

    offered_bad = [p for p in BAD_PROTOCOLS if r.finding(p).startswith("offered")]
    offered_good = [p for p in GOOD_PROTOCOLS if r.finding(p).startswith("offered")]
    if offered_bad:
        out.append(
            Finding(
                check,
                ep.host,
                "high",
                f"{ep.uri}: offers {', '.join(offered_bad)}",
                "allow TLS 1.2 and 1.3 only (ssl-min-ver / ssl_min_protocol_version / "
                "tls-cipher-*)",
            )
        )
    if not offered_good:
        out.append(
            Finding(check, ep.host, "high", f"{ep.uri}: neither TLS 1.2 nor 1.3 offered", "")
        )

    ciphers = [
        cipher_name(str(e.get("finding", ""))) for e in r.entries if _CIPHER.match(str(e["id"]))
    ]
    weak = sorted({c for c in ciphers if classify_cipher(c) == "weak"})
    cbc = sorted({c for c in ciphers if classify_cipher(c) == "cbc"})
    if weak:
        out.append(
            Finding(
                check,
                ep.host,
                "high",
                f"{ep.uri}: weak ciphers offered: {', '.join(weak)}",
                "offer only ECDHE with AES-GCM or ChaCha20-Poly1305 (and TLS 1.3 suites)",
            )
        )
    if cbc:
        out.append(
            Finding(
                check,
                ep.host,
                "medium",
                f"{ep.uri}: CBC ciphers offered: {', '.join(cbc)}",
                "drop the CBC suites: offer only AEAD ciphers",
            )
        )

    chain = r.get("cert_chain_of_trust")
    if chain is None or chain.get("severity") not in ("OK", "INFO"):
        why = str(chain.get("finding")) if chain else "not reported"
        out.append(
            Finding(
                check,
                ep.host,
                "high",
                f"{ep.uri}: certificate chain not trusted with the inventory's CA: {why}",
                "serve the certificate the pki role issued, with its chain",
            )
        )
    trust = r.get("cert_trust")
    if trust is not None and trust.get("severity") not in ("OK", "INFO"):
        out.append(
            Finding(
                check,
                ep.host,
                "medium",
                f"{ep.uri}: certificate name does not match: {trust.get('finding')}",
                "issue the certificate with the address clients use in its subjectAltName",
            )
        )
    left = days_left(r.finding("cert_notAfter"), now)
    if left is None:
        out.append(Finding(check, ep.host, "medium", f"{ep.uri}: no certificate expiry seen", ""))
    elif left < min_days:
        out.append(
            Finding(
                check,
                ep.host,
                "high",
                f"{ep.uri}: certificate expires in {left:.0f} days ({r.finding('cert_notAfter')})",
                "renew it (re-run the pki role) and reload the service",
            )
        )
    elif left < 30:
        out.append(
            Finding(
                check,
                ep.host,
                "medium",
                f"{ep.uri}: certificate expires in {left:.0f} days",
                "renew it soon (re-run the pki role)",
            )
        )
    if not out:
        protos = "+".join(p.replace("TLS1_", "1.") for p in offered_good)
        out.append(
            passed(
                check,
                ep.host,
                f"{ep.uri}: TLS {protos} only, {len(ciphers)} AEAD+FS ciphers, chain trusted, "
                f"{left:.0f} days left ({r.elapsed_s:.0f} s)",
            )
        )
    return out


def hsts(r: Result) -> tuple[bool, str]:
    """Whether the response carried Strict-Transport-Security: testssl 3.0 reports
    ``HSTS_time`` when it did, and ``HSTS`` ("not offered") when it did not."""
    e = r.get("HSTS_time")
    if e is not None:
        return e.get("severity") in ("OK", "INFO"), str(e.get("finding", ""))
    e = r.get("HSTS")
    if e is None:
        return False, "testssl did not report HSTS (no -h run, or no HTTP answer)"
    return False, str(e.get("finding", ""))
