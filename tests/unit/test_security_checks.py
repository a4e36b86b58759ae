"""The audit's parsers and judges, fed with real tool output (tests/unit/fixtures/security)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from faultbook.security import findings as F
from faultbook.security import leaks, tls

FIX = Path(__file__).parent / "fixtures" / "security"


# ---------------------------------------------------------------- findings
def test_counts_and_table_order() -> None:
    rows = F.Findings()
    rows.extend(
        [
            F.passed("ssh-login", "web1", "refused"),
            F.Finding("exposure", "web1", "medium", "declared, not answering"),
            F.skipped("hsts", "VIP", "not deployed"),
            F.Finding("exposure", "db1", "high", "open"),
        ]
    )
    assert rows.counts() == {"high": 1, "medium": 1, "low": 0, "info": 1}
    assert [f.host for f in rows.high()] == ["db1"]
    df = F.table(rows.rows)
    assert list(df["severity"]) == ["high", "medium", "info"]
    assert list(df.columns) == F.COLUMNS
    assert len(F.table(rows.rows, include_passes=True)) == 4
    s = F.summary(rows.rows).set_index("check")
    assert s.loc["exposure", "high"] == 1 and s.loc["ssh-login", "pass"] == 1
    with pytest.raises(ValueError, match="severity"):
        F.Finding("x", "h", "critical", "")


# -------------------------------------------------------------- secret scan
VAULT = {
    "vault_pg_app_password": "Zq3-Wm8kP1xR7tL2vN9yB4cD6fG0hJ5s",
    "vault_haproxy_stats_password": "aB3dE5fG7hJ9kL1mN3pQ5rS7",
    "vault_keepalived_auth_pass": "k3Ep",  # too short to look for
}


def test_leaks_are_found_in_every_form_and_named_not_shown(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run = home / "runs" / "20260101T000000Z-db-failover"
    run.mkdir(parents=True)
    secret = VAULT["vault_pg_app_password"]
    (run / "notebook.ipynb").write_text(json.dumps({"out": f"password={secret}"}))
    auth = base64.b64encode(f"stats:{VAULT['vault_haproxy_stats_password']}".encode()).decode()
    (run / "traffic.log").write_text(f"Authorization: Basic {auth}\n")
    (home / "decisions.jsonl").write_text('{"ok": true}\n')
    runner = home / "lab" / "runner" / "artifacts" / "x"
    runner.mkdir(parents=True)
    (runner / "stdout").write_text(base64.b64encode(b"!" + secret.encode() + b"?").decode())
    (home / "lab" / "hosts" / "db1").mkdir(parents=True)  # the machines: never scanned
    (home / "lab" / "hosts" / "db1" / "pgpass").write_text(secret)
    found, n = leaks.audit(VAULT, home)
    text = " ".join(f.evidence for f in found)
    assert secret not in text and VAULT["vault_haproxy_stats_password"] not in text
    by_file = {f.evidence.split(" holds ")[0]: f for f in found}
    assert set(by_file) == {
        "runs/20260101T000000Z-db-failover/notebook.ipynb",
        "runs/20260101T000000Z-db-failover/traffic.log",
        "lab/runner/artifacts/x/stdout",
    }
    assert (
        "vault_pg_app_password (plain)"
        in by_file["runs/20260101T000000Z-db-failover/notebook.ipynb"].evidence
    )
    assert (
        "vault_haproxy_stats_password (base64)"
        in by_file["runs/20260101T000000Z-db-failover/traffic.log"].evidence
    )
    assert all(f.severity == "high" and f.status == "fail" for f in found)
    assert n == 4  # notebook, traffic.log, stdout, decisions.jsonl


def test_no_leak_passes_and_key_modes_are_checked(tmp_path: Path) -> None:
    home = tmp_path
    (home / "runs").mkdir()
    (home / "runs" / "r.json").write_text("{}")
    found, _ = leaks.audit(VAULT, home)
    assert [f.status for f in found] == ["pass"]
    key = home / "lab" / "ssh" / "id_ed25519"
    key.parent.mkdir(parents=True)
    key.write_text("k")
    key.chmod(0o644)
    (home / "lab" / "ssh" / "id_ed25519.pub").write_text("p")
    found, _ = leaks.audit(VAULT, home)
    assert [(f.check, f.severity) for f in found] == [("secret-files", "high")]
    assert "lab/ssh/id_ed25519 is mode 0644" in found[0].evidence


# ------------------------------------------------------------------- TLS
def test_testssl_against_openssl_s_server_finds_cbc_and_near_expiry() -> None:
    """Real testssl 3.0.8 JSON against `openssl s_server` with a 20-day certificate."""
    entries = tls.parse((FIX / "testssl-s_server-cbc.json").read_text())
    r = tls.Result(tls.Endpoint("vip", "VIP", "https://127.0.0.1:18443"), entries, 25.0)
    now = datetime(2026, 12, 7, 2, 36, tzinfo=UTC)
    out = tls.judge(r, 14.0, now)
    sev = {(f.severity, f.evidence.split(": ", 1)[1].split(":")[0]) for f in out}
    assert ("medium", "CBC ciphers offered") in sev
    assert any(f.severity == "medium" and "expires in 20 days" in f.evidence for f in out)
    assert not [f for f in out if f.severity == "high"]
    # the same certificate a week before expiry is high
    late = tls.judge(r, 14.0, datetime(2026, 12, 20, tzinfo=UTC))
    assert any(f.severity == "high" and "expires in 7 days" in f.evidence for f in late)


def test_cipher_classes() -> None:
    assert tls.classify_cipher("TLS_AES_256_GCM_SHA384") == "ok"
    assert tls.classify_cipher("ECDHE-RSA-AES128-GCM-SHA256") == "ok"
    assert tls.classify_cipher("ECDHE-ECDSA-CHACHA20-POLY1305") == "ok"
    assert tls.classify_cipher("ECDHE-ECDSA-AES256-SHA384") == "cbc"
    assert tls.classify_cipher("AES128-GCM-SHA256") == "weak"  # no forward secrecy
    assert tls.classify_cipher("DES-CBC3-SHA") == "weak"
    assert tls.classify_cipher("ECDHE-RSA-RC4-SHA") == "weak"


def test_a_failed_testssl_run_is_a_high_finding() -> None:
    r = tls.Result(tls.Endpoint("pgbackrest", "backup1", "10.77.0.41:8432"), [], 3.0, "refused")
    (f,) = tls.judge(r)
    assert f.severity == "high" and "not tested: refused" in f.evidence
    with pytest.raises(ValueError, match="flat format"):
        tls.parse('{"scanResult": []}')


def test_hsts_from_testssl_headers_of_the_hardened_vip() -> None:
    """Real testssl -h JSON against the lab's VIP once the hardening change was deployed."""
    entries = tls.parse((FIX / "testssl-vip-headers.json").read_text())
    r = tls.Result(tls.Endpoint("vip", "VIP", "https://10.77.0.10/", headers=True), entries)
    ok, detail = tls.hsts(r)
    assert ok and detail.startswith("365 days")
    without = tls.Result(r.endpoint, [e for e in entries if not e["id"].startswith("HSTS")])
    assert tls.hsts(without)[0] is False
    offered_not = [*without.entries, {"id": "HSTS", "severity": "LOW", "finding": "not offered"}]
    assert tls.hsts(tls.Result(r.endpoint, offered_not)) == (False, "not offered")
