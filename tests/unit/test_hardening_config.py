"""The hardening's configuration as the roles render it, without a lab.

- HAProxy: HSTS on HTTPS answers, the redirect on :80, the per-source rate
  limit on both frontends with the controller exempt; ``haproxy -c`` accepts it.
- Prometheus and Alertmanager: the web config (HTTPS, bcrypt hashes that
  match the vault's passwords, made on the controller), Prometheus scraping
  and alerting over HTTPS with a password file; ``promtool check web-config``
  accepts it.
- The ledger's token file: digests only, and the app reads back every client.

haproxy and promtool come from Debian's packages in the lab image: the tests
run them as ``chroot ROOT haproxy`` when FAULTBOOK_PROMTOOL is ``chroot ROOT
promtool`` (as ``make unit`` sets it), else from PATH, else skip (fail when
FAULTBOOK_PROMTOOL_REQUIRED is set).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import bcrypt
import pytest
import yaml
from role_templates import ROLES, render

from faultbook import secrets
from faultbook.stack import http

PASSWORDS = {
    "vault_monitoring_faultbook_password": "faultbook-pw-0123456789abcdefghij",
    "vault_monitoring_prometheus_password": "prometheus-pw-0123456789abcdefghi",
}


def _module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


web_config = _module(ROLES / "monitoring/filter_plugins/web_config.py", "web_config_under_test")
ledger = _module(ROLES / "ledger/files/ledger.py", "ledger_app_for_config_tests")


# ------------------------------------------------------------------ tools
def _root() -> Path | None:
    cmd = shlex.split(os.environ.get("FAULTBOOK_PROMTOOL", ""))
    return Path(cmd[1]) if len(cmd) > 2 and cmd[0] == "chroot" else None


class Tool:
    """Run a Debian tool on files written to a scratch directory it can see."""

    def __init__(self, name: str) -> None:
        self.root = _root()
        if self.root is None and shutil.which(name) is None:
            if os.environ.get("FAULTBOOK_PROMTOOL_REQUIRED"):
                pytest.fail(f"{name} is needed: set FAULTBOOK_PROMTOOL='chroot ROOT promtool'")
            pytest.skip(f"no {name}: set FAULTBOOK_PROMTOOL='chroot ROOT promtool' (make unit)")
        self.name = name
        base = self.root / "tmp" if self.root else None
        self.scratch = Path(tempfile.mkdtemp(prefix="fb-hardening-", dir=base))

    def path(self, name: str) -> Path:
        return self.scratch / name

    def seen(self, p: Path) -> str:
        """P as the tool sees it (inside the chroot)."""
        return "/" + str(p.relative_to(self.root)) if self.root else str(p)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        prefix = ["chroot", str(self.root)] if self.root else []
        return subprocess.run(
            [*prefix, self.name, *args], capture_output=True, text=True, timeout=60, check=False
        )

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def _tool(name: str) -> Iterator[Tool]:
    t = Tool(name)
    yield t
    t.close()


@pytest.fixture
def haproxy_tool() -> Iterator[Tool]:
    yield from _tool("haproxy")


@pytest.fixture
def promtool() -> Iterator[Tool]:
    yield from _tool("promtool")


def _self_signed(tool: Tool) -> tuple[Path, Path]:
    crt, key = tool.path("site.pem"), tool.path("site.pem.key")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=test",
        ],
        capture_output=True,
        check=True,
        timeout=30,
    )  # fmt: skip
    return crt, key


# ------------------------------------------------------------------ HAProxy
def haproxy_cfg(**extra: object) -> str:
    return render(
        "haproxy",
        "haproxy.cfg.j2",
        "lb1",
        extra={"haproxy_stats_hash": {"stdout": "$6$s$h"}, **extra},
    )


def section(cfg: str, header: str) -> list[str]:
    lines = cfg.splitlines()
    start = lines.index(header)
    out = []
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break
        out.append(line.strip())
    return [line for line in out if line and not line.startswith("#")]


def test_hsts_on_https_answers_and_the_redirect_stays() -> None:
    cfg = haproxy_cfg()
    https, plain = section(cfg, "frontend https"), section(cfg, "frontend http")
    assert 'http-after-response set-header Strict-Transport-Security "max-age=31536000"' in https
    assert "http-request redirect scheme https code 301" in plain
    assert not any(
        "Strict-Transport-Security" in line for line in plain
    )  # HTTP: ignored by RFC 6797
    sub = haproxy_cfg(haproxy_hsts_include_subdomains=True, haproxy_hsts_max_age=600)
    assert 'Strict-Transport-Security "max-age=600; includeSubDomains"' in sub


def test_a_rate_limit_per_source_on_both_frontends_with_the_controller_exempt() -> None:
    cfg = haproxy_cfg()
    assert section(cfg, "backend rate_limit_src") == [
        "stick-table type ipv6 size 100k expire 30s store http_req_rate(10s)"
    ]
    for frontend in ("frontend http", "frontend https"):
        rules = section(cfg, frontend)
        track = rules.index("http-request track-sc0 src table rate_limit_src")
        assert "acl rate_limit_exempt src 10.77.0.1" in rules
        deny = next(
            i for i, r in enumerate(rules) if r.startswith("http-request deny deny_status 429")
        )
        assert track < deny  # the request is counted before it is judged
        assert rules[deny].endswith("if { sc_http_req_rate(0) gt 2000 } !rate_limit_exempt")
        assert "hdr Retry-After 10" in rules[deny]
        # the limit comes before anything that picks a server or redirects
        assert deny < min(
            i
            for i, r in enumerate(rules)
            if r.startswith(("default_backend", "http-request redirect"))
        )
    none = haproxy_cfg(haproxy_rate_limit_exempt_sources=[], haproxy_rate_limit_requests=50)
    assert "acl rate_limit_exempt always_false" in section(none, "frontend https")
    assert "gt 50 }" in none


def test_haproxy_accepts_the_rendered_config(haproxy_tool: Tool) -> None:
    crt, _ = _self_signed(haproxy_tool)
    cfg = haproxy_cfg().replace("/etc/haproxy/tls/site.pem", haproxy_tool.seen(crt))
    cfg = cfg.replace("/run/haproxy/admin.sock", haproxy_tool.seen(haproxy_tool.path("admin.sock")))
    path = haproxy_tool.path("haproxy.cfg")
    path.write_text(cfg)
    r = haproxy_tool.run("-c", "-f", haproxy_tool.seen(path))
    assert r.returncode == 0, r.stdout + r.stderr
    broken = cfg.replace("sc_http_req_rate(0) gt", "sc_http_req_rate(0) greater", 1)
    path.write_text(broken)
    assert (
        haproxy_tool.run("-c", "-f", haproxy_tool.seen(path)).returncode != 0
    )  # the check can fail


# ------------------------------------------------------------------ monitoring
def mon(template: str, host: str = "mon1") -> str:
    return render("monitoring", template, host, extra=dict(PASSWORDS))


def test_the_web_config_holds_bcrypt_hashes_of_the_vaults_passwords() -> None:
    doc = yaml.safe_load(mon("web-config.yml.j2"))
    assert doc["tls_server_config"] == {
        "cert_file": "/etc/prometheus/tls/web.crt",
        "key_file": "/etc/prometheus/tls/web.key",
        "min_version": "TLS12",
    }
    users = doc["basic_auth_users"]
    assert set(users) == {"faultbook", "prometheus"}
    for user, var in (
        ("faultbook", "vault_monitoring_faultbook_password"),
        ("prometheus", "vault_monitoring_prometheus_password"),
    ):
        assert users[user].startswith("$2b$10$")
        assert bcrypt.checkpw(PASSWORDS[var].encode(), users[user].encode())
        assert not bcrypt.checkpw(b"wrong", users[user].encode())
    text = mon("web-config.yml.j2")
    assert not any(p in text for p in PASSWORDS.values())
    # Idempotent: the same line on every run; another host gets another salt.
    assert mon("web-config.yml.j2") == text
    other = yaml.safe_load(mon("web-config.yml.j2", "mon2"))["basic_auth_users"]
    assert other["faultbook"] != users["faultbook"]


def test_promtool_accepts_the_web_config(promtool: Tool) -> None:
    crt, key = _self_signed(promtool)
    text = mon("web-config.yml.j2")
    text = text.replace("/etc/prometheus/tls/web.crt", promtool.seen(crt))
    text = text.replace("/etc/prometheus/tls/web.key", promtool.seen(key))
    path = promtool.path("web-config.yml")
    path.write_text(text)
    r = promtool.run("check", "web-config", promtool.seen(path))
    assert r.returncode == 0, r.stdout + r.stderr
    path.write_text(text.replace("basic_auth_users:", "basic_auth_userz:"))
    assert promtool.run("check", "web-config", promtool.seen(path)).returncode != 0


def test_prometheus_scrapes_and_alerts_over_https_with_a_password_file() -> None:
    doc = yaml.safe_load(mon("prometheus.yml.j2"))
    client = {
        "scheme": "https",
        "tls_config": {"ca_file": "/etc/prometheus/faultbook-ca.crt"},
        "basic_auth": {
            "username": "prometheus",
            "password_file": "/etc/prometheus/faultbook-web-password",
        },
    }
    am = doc["alerting"]["alertmanagers"][0]
    assert {k: am[k] for k in client} == client
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    for job in ("prometheus", "alertmanager"):
        assert {k: jobs[job][k] for k in client} == client
    for job in ("node", "haproxy", "ledger", "blackbox"):  # not behind the web config
        assert "basic_auth" not in jobs[job]
    assert not any(p in mon("prometheus.yml.j2") for p in PASSWORDS.values())
    for template, port in (
        ("prometheus.default.j2", 9090),
        ("prometheus-alertmanager.default.j2", 9093),
    ):
        args = mon(template)
        assert "--web.config.file=/etc/prometheus/web-config.yml" in args
        assert f"--web.external-url=https://10.77.0.51:{port}/" in args


def test_the_bcrypt_filter_refuses_what_it_cannot_hash_without_showing_it() -> None:
    with pytest.raises(web_config.WebConfigError, match="bcrypt uses at most 72"):
        web_config.monitoring_bcrypt("x" * 73, "mon1/faultbook")
    with pytest.raises(web_config.WebConfigError, match="empty or not a string"):
        web_config.monitoring_bcrypt("", "mon1/faultbook")
    with pytest.raises(web_config.WebConfigError, match="cost 3 is invalid"):
        web_config.monitoring_bcrypt("pw", "mon1/faultbook", 3)
    salt = web_config.monitoring_salt("mon1/faultbook").decode()
    assert len(salt) == 29 and salt[-1] in web_config._B64[::16]  # canonical: low bits zero


# ------------------------------------------------------------------ ledger tokens
def test_the_token_file_holds_digests_the_app_reads_back() -> None:
    tokens = {"faultbook": "a" * 40, "bench": "b" * 40, "tests": "c" * 40}
    text = render(
        "ledger",
        "api-tokens.j2",
        "web1",
        extra={f"vault_ledger_token_{k}": v for k, v in tokens.items()},
    )
    assert not any(t in text for t in tokens.values())
    parsed = ledger.ClientTokens.parse(text, "api-tokens")
    assert sorted(parsed.clients) == sorted(tokens)
    for client, token in tokens.items():
        assert parsed.client_for(token) == client
    env = render("ledger", "ledger.env.j2", "web1", extra={"vault_pg_app_password": "pw"})
    assert 'LEDGER_TOKENS_FILE="/etc/ledger/api-tokens"' in env.splitlines()


# ------------------------------------------------------------------ the vault
def test_every_secret_the_hardening_uses_is_generated_by_the_lab() -> None:
    for client in http.LEDGER_CLIENTS:
        assert http.ledger_token_var(client) in secrets.VAULT_VARS
    ledger_defaults = (ROLES / "ledger/defaults/main.yml").read_text()
    monitoring_defaults = (ROLES / "monitoring/defaults/main.yml").read_text()
    for var in secrets.VAULT_VARS:
        if var.startswith("vault_ledger_token_"):
            assert var in ledger_defaults
        if var.startswith("vault_monitoring_"):
            assert var in monitoring_defaults
    assert http.MONITORING_PASSWORD_VAR in secrets.VAULT_VARS
    assert all(
        secrets.VAULT_VARS[v] >= 32
        for v in secrets.VAULT_VARS
        if v.startswith(("vault_ledger_token_", "vault_monitoring_"))
    )
