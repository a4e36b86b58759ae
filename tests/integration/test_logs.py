"""On a provisioned lab: every host's journal reaches both mon hosts (docs/logs.md).

A line written with ``logger -p err`` on a web host, with a unique token, is
found by ``faultbook logs`` within ARRIVAL_BOUND_S; the test prints how long
it took, the bound docs/logs.md states. The line must be on each mon host's
copy. Then one of them (the first) is powered off, and ``faultbook
logs`` still finds it, once, from the other and names the one that did not
answer. The mon host is booted again whatever happens.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from faultbook import logs, ssh
from faultbook.errors import SSHError
from faultbook.lab.lab import Lab
from faultbook.poll import poll

pytestmark = pytest.mark.integration

FAULTBOOK = str(Path(sys.executable).with_name("faultbook"))
ARRIVAL_BOUND_S = 30.0  # the test's limit; the time it measures is printed
BACK_TIMEOUT_S = 180.0  # a booted mon host answering queries of the central logs again


def faultbook_logs(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [FAULTBOOK, "logs", "--json", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def on_receiver(lab: Lab, mon: str, q: logs.Query, token: str) -> bool:
    """Whether one mon host's own copy holds the token (asked directly, not merged)."""
    try:
        res = ssh.run(lab.inv, mon, q.command(), sudo=True, timeout=15)
    except SSHError:
        return False
    return res.ok and any(token in str(e.get("MESSAGE")) for e in logs.parse(res.stdout, mon))


def test_a_logged_error_reaches_both_mon_hosts_and_outlives_one(lab: Lab) -> None:
    inv = lab.inv
    host = inv.group("web")[0].name
    mons = [h.name for h in inv.group("mon")]
    token = f"faultbook-logs-probe-{uuid.uuid4().hex}"
    written = datetime.now(UTC)
    since = (written - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    query = ["--host", host, "--priority", "err", "--since", since]
    ssh.run(inv, host, f"logger -p user.err -t faultbook-test {token}", timeout=15)

    def found(_t: float) -> list[dict[str, object]] | None:
        res = faultbook_logs(*query)
        rows = [json.loads(x) for x in res.stdout.splitlines()] if res.returncode == 0 else []
        hits = [r for r in rows if token in str(r["message"])]
        return hits or None

    t0 = time.monotonic()
    hits = poll(found, ARRIVAL_BOUND_S, what=f"{token} in `faultbook logs`", interval_s=0.5)
    took = time.monotonic() - t0
    print(f"\nlogger -p err on {host} found by `faultbook logs` after {took:.1f}s")
    assert len(hits) == 1, hits  # one row, though each mon host holds a copy
    assert hits[0]["host"] == host and hits[0]["priority_name"] == "err"
    assert hits[0]["identifier"] == "faultbook-test"

    q = logs.query(inv, [host], None, since, None, "err")
    holders = poll(
        lambda _t: [m for m in mons if on_receiver(lab, m, q, token)] == mons or None,
        ARRIVAL_BOUND_S,
        what=f"{token} on each of {', '.join(mons)}",
    )
    assert holders
    first = mons[0]  # each holds it; power off the first
    lab.crash(first)
    try:
        res = faultbook_logs(*query)
        assert res.returncode == 0, res.stderr
        rows = [json.loads(x) for x in res.stdout.splitlines()]
        assert [r["host"] for r in rows if token in str(r["message"])] == [host]
        assert f"{first} did not answer" in res.stderr, res.stderr
    finally:
        lab.boot(first)
        poll(
            lambda _t: first in logs.read(inv, [host], since="-1min").answered_by or None,
            BACK_TIMEOUT_S,
            what=f"{first} answering queries of the central logs again",
            interval_s=2.0,
        )
