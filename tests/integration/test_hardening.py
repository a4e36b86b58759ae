"""On a provisioned lab: the hardening of docs/security-hardening.md holds.

- The ledger refuses /orders without a client's token (401) or with a wrong
  one (403), and nothing reaches the database; the tests client's token works.
- HSTS on HTTPS answers through the VIP; :80 still redirects.
- Prometheus and Alertmanager answer 401 without credentials or with wrong
  ones, 200 with the vault's; Prometheus itself scrapes both mon hosts and
  reaches both Alertmanagers with its own password.
- A source that bursts past the rate limit gets 429s while another source at
  a drill's rate gets none. Both are network namespaces on the lab bridge
  (lab.vantage) in 10.77.0.240/29, which the lab inventory admits to the VIP.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_stack import count_orders  # the stack tests' count of a key's orders

from faultbook.lab.lab import Lab
from faultbook.lab.vantage import Vantage
from faultbook.stack import http, monitoring

pytestmark = pytest.mark.integration

# The client namespaces (inside 10.77.0.240/29, the lab's common_lb_client_sources).
BURST_ADDRESS = "10.77.0.241"
STEADY_ADDRESS = "10.77.0.242"
RATE_LIMIT = 2000  # haproxy_rate_limit_requests per 10 s (the role's default)


@pytest.fixture(scope="module")
def stacked(lab: Lab) -> Lab:
    """The lab, provisioned (this module only reads, except one order it writes)."""
    r = http.session(lab.inv).get(http.vip_url(lab.inv, "/readyz"), timeout=10)
    assert r.status_code == 200, f"the stack is not ready through the VIP: HTTP {r.status_code}"
    return lab


# ------------------------------------------------------------------ ledger tokens
def test_a_post_without_a_token_or_with_a_wrong_one_is_refused_and_writes_nothing(
    stacked: Lab,
) -> None:
    inv = stacked.inv
    url = http.vip_url(inv, "/orders")
    key = f"hardening-{uuid.uuid4()}"
    order = {"customer": "no-token", "amount_cents": 1}
    headers = {"Idempotency-Key": key}
    with http.session(inv) as s:
        none = s.post(url, json=order, headers=headers, timeout=20)
        wrong = s.post(
            url, json=order, headers={**headers, "Authorization": "Bearer wrong-token"}, timeout=20
        )
        read = s.get(http.vip_url(inv, "/orders/1"), timeout=20)
    assert (none.status_code, none.json()["error"]) == (401, "missing_token")
    assert none.headers["WWW-Authenticate"].startswith("Bearer")
    assert (wrong.status_code, wrong.json()["error"]) == (403, "invalid_token")
    assert read.status_code == 401  # reads need a token too
    assert count_orders(stacked, key) == 0
    # The same request with the tests client's token is written: the refusal was the token's.
    with http.ledger_session(inv, "tests") as s:
        ok = s.post(url, json=order, headers=headers, timeout=20)
        assert ok.status_code == 201, ok.text
        assert s.get(http.vip_url(inv, f"/orders/{ok.json()['id']}"), timeout=20).status_code == 200
    assert count_orders(stacked, key) == 1


# ------------------------------------------------------------------ HSTS
def test_hsts_on_https_and_the_redirect_from_http_stays(stacked: Lab) -> None:
    inv = stacked.inv
    with http.session(inv) as s:
        plain = s.get(f"http://{inv.vars['vip']}/healthz", allow_redirects=False, timeout=10)
        assert plain.status_code == 301
        assert plain.headers["Location"] == f"https://{inv.vars['vip']}/healthz"
        assert "Strict-Transport-Security" not in plain.headers
        followed = s.get(f"http://{inv.vars['vip']}/healthz", timeout=10)
    assert followed.status_code == 200 and followed.url.startswith("https://")
    assert followed.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert [r.status_code for r in followed.history] == [301]


# ------------------------------------------------------------------ Prometheus, Alertmanager
@pytest.mark.parametrize(("port", "what"), [(9090, "Prometheus"), (9093, "Alertmanager")])
def test_prometheus_and_alertmanager_need_credentials(stacked: Lab, port: int, what: str) -> None:
    inv = stacked.inv
    for h in inv.group("mon"):
        url = f"https://{h.address}:{port}/-/ready"
        with http.session(inv) as s:
            anonymous = s.get(url, timeout=10)
            wrong = s.get(url, auth=(http.MONITORING_USER, "not-the-password"), timeout=10)
            plain = s.get(f"http://{h.address}:{port}/-/ready", timeout=10)  # TLS only
        assert plain.status_code == 400 and "HTTPS" in plain.text, f"{what} on {h.name}: {plain}"
        assert anonymous.status_code == 401, f"{what} on {h.name}: {anonymous.status_code}"
        assert wrong.status_code == 401, f"{what} on {h.name}: {wrong.status_code}"
        with http.monitoring_session(inv) as s:
            assert s.get(url, timeout=10).status_code == 200, f"{what} on {h.name}"


def test_prometheus_scrapes_and_alerts_both_mon_hosts_with_its_own_password(
    stacked: Lab,
) -> None:
    inv = stacked.inv
    up = monitoring.query(inv, 'up{job=~"prometheus|alertmanager"}')
    assert len(up) == 2 * len(inv.group("mon")), up
    assert (up["value"] == 1).all(), up
    for h in inv.group("mon"):
        data = monitoring.api(inv, "/api/v1/alertmanagers", host=h.name)
        urls = sorted(a["url"] for a in data["activeAlertmanagers"])
        expected = sorted(f"https://{m.address}:9093/api/v2/alerts" for m in inv.group("mon"))
        assert urls == expected, (h.name, data)


# ------------------------------------------------------------------ rate limit
BURST_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("status %d %d\\n", k, v)) end
end
"""

STEADY_PY = """
import json, sys, time, requests
url, ca, n, rps = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = requests.Session()
s.trust_env = False
s.verify = ca
codes = {}
t0 = time.monotonic()
for i in range(n):
    delay = t0 + i / rps - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    try:
        code = str(s.get(url, timeout=10).status_code)
    except requests.RequestException as exc:
        code = type(exc).__name__
    codes[code] = codes.get(code, 0) + 1
print(json.dumps(codes))
"""


def test_a_burst_gets_429s_while_another_source_at_a_drills_rate_gets_none(
    stacked: Lab, tmp_path: Path
) -> None:
    inv = stacked.inv
    url = http.vip_url(inv, "/healthz")
    lua = tmp_path / "status-counts.lua"
    lua.write_text(BURST_LUA)
    steady_out: dict[str, Any] = {}
    with (
        Vantage("hburst", BURST_ADDRESS, inv) as burst,
        Vantage("hsteady", STEADY_ADDRESS, inv) as steady,
    ):
        # 20 requests/s for 10 s, the rate of the database and alert drills.
        argv = [sys.executable, "-c", STEADY_PY, url, str(http.ca_file(inv)), "200", "20"]

        def run_steady() -> None:
            steady_out["proc"] = steady.run(argv, timeout=60)

        t = threading.Thread(target=run_steady, daemon=True)
        t.start()
        time.sleep(1.0)
        b = burst.run(["wrk", "-t2", "-c8", "-d7s", "-s", str(lua), url], timeout=60)
        t.join(70)
    assert b.returncode == 0, b.stderr[-500:]
    counts = {int(m[0]): int(m[1]) for m in re.findall(r"^status (\d+) (\d+)$", b.stdout, re.M)}
    sent = sum(counts.values())
    assert sent > RATE_LIMIT + 100, f"the burst sent only {sent} requests: {counts}"
    assert counts.get(429, 0) > 0, f"no 429 for a burst of {sent}: {counts}"
    assert set(counts) <= {200, 429}, counts
    # About the limit got through in the burst's 10 s window, the rest was refused
    # (HAProxy's rate is a sliding estimate over two periods: allow a little more).
    assert counts.get(200, 0) <= RATE_LIMIT * 1.1, counts
    proc = steady_out["proc"]
    assert proc.returncode == 0, proc.stderr[-500:]
    assert json.loads(proc.stdout) == {"200": 200}, proc.stdout
