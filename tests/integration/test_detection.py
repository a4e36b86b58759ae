"""The failover's detection on the lab, with the lab's real primitives and the
threshold taken from the db-failover runbook's parameters cell:

- a link blip and a freeze of the primary shorter than the threshold are no loss;
- a longer freeze is exactly one loss, and once the failover has happened the old
  primary, resumed, cannot acknowledge a write: no standby streams from it any more,
  so its commits wait for a synchronous standby that never answers;
- the rejoin gets past the postmaster.pid a crash leaves, even when its PID is
  alive again as another process of user postgres.

No wall-clock limits are asserted; the durations are fractions and multiples of
the configured threshold.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import papermill
import pytest

from faultbook import inventory as inv_mod
from faultbook import ssh
from faultbook.drills import procedure
from faultbook.errors import SSHError
from faultbook.lab.lab import Lab
from faultbook.paths import RUNBOOKS_DIR
from faultbook.stack import detect, failover, psql

pytestmark = pytest.mark.integration

UNIT = "postgresql@15-main.service"
INSERT_SQL = (
    "SET statement_timeout = 0; INSERT INTO orders (idempotency_key, customer, amount_cents) "
    "VALUES (:'key', 'resumed-old-primary', 1)"
)
COUNT_SQL = "SELECT count(*) FROM orders WHERE idempotency_key = :'key'"
SENDERS_SQL = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"


def runbook_thresholds() -> tuple[float, float]:
    declared = papermill.inspect_notebook(str(RUNBOOKS_DIR / "db-failover.ipynb"))
    return (
        float(declared["detect_threshold_s"]["default"]),
        float(declared["probe_interval_s"]["default"]),
    )


@pytest.fixture(scope="module")
def inv(lab: Lab) -> inv_mod.Inventory:
    return lab.inv


@pytest.fixture
def steady(inv: inv_mod.Inventory) -> Iterator[str]:
    """A steady stack to start from; its primary. Afterwards: steady again."""
    state = procedure.wait_steady_state(inv, timeout_s=180)
    assert state.ok and state.primary, str(state)
    yield state.primary
    assert procedure.wait_steady_state(inv, timeout_s=180).ok


def watch_while(inv: inv_mod.Inventory, host: str, fault: threading.Thread, span_s: float):
    """Run ``detect.watch`` on HOST for SPAN_S while FAULT runs in the background."""
    threshold, interval = runbook_thresholds()
    fault.start()
    found = detect.watch(inv, host, threshold_s=threshold, interval_s=interval, timeout_s=span_s)
    fault.join(timeout=60)
    return found


def freeze_cmd(seconds: float) -> str:
    # One command, so the freeze ends on the host itself even if this session dies.
    return (
        f"systemctl kill --signal=SIGSTOP {UNIT}; sleep {seconds:.2f}; "
        f"systemctl kill --signal=SIGCONT {UNIT}"
    )


def test_a_link_blip_shorter_than_the_threshold_is_no_loss(
    lab: Lab, inv: inv_mod.Inventory, steady: str
) -> None:
    threshold, _ = runbook_thresholds()

    def blip() -> None:
        time.sleep(0.5)
        lab.partition(steady)
        time.sleep(threshold / 3)
        lab.heal(steady)

    found = watch_while(inv, steady, threading.Thread(target=blip), span_s=threshold * 4 + 1)
    assert not found.lost, str(found)
    assert (~found.samples["ok"]).any(), "the blip was not even seen: the test proves nothing"
    assert psql.primary(inv) == steady


def test_a_freeze_shorter_than_the_threshold_is_no_loss(
    inv: inv_mod.Inventory, steady: str
) -> None:
    threshold, _ = runbook_thresholds()

    def freeze() -> None:
        time.sleep(0.5)
        ssh.run(inv, steady, freeze_cmd(threshold / 3), sudo=True, timeout=threshold + 10)

    found = watch_while(inv, steady, threading.Thread(target=freeze), span_s=threshold * 4 + 1)
    assert not found.lost, str(found)
    assert (~found.samples["ok"]).any(), "the freeze was not even seen: the test proves nothing"
    assert psql.primary(inv) == steady


def test_a_longer_freeze_is_one_loss_and_the_resumed_old_primary_cannot_acknowledge(
    lab: Lab, inv: inv_mod.Inventory, steady: str
) -> None:
    threshold, interval = runbook_thresholds()
    old = steady
    ssh.run(inv, old, f"systemctl kill --signal=SIGSTOP {UNIT}", sudo=True)
    try:
        found = detect.watch(
            inv, old, threshold_s=threshold, interval_s=interval, timeout_s=threshold * 6
        )
        assert found.lost, str(found)
        # Not fenced, on purpose: this shows the second line of defence. The
        # candidate is chosen and promoted as the runbook does it.
        cand = failover.choose_for(inv, old)
        done = failover.fast_promote(inv, cand, old)
        assert done.result == "promoted", str(done)
        # One loss, one failover: the watch of the new primary hears it.
        again = detect.watch(
            inv, cand.host, threshold_s=threshold, interval_s=interval, timeout_s=threshold * 2
        )
        assert not again.lost
    finally:
        ssh.run(inv, old, f"systemctl kill --signal=SIGCONT {UNIT}", sudo=True)
    try:
        key = f"resumed-old-primary-{time.time_ns()}"
        # A write on the resumed old primary itself, as a client still connected to it
        # would send it. It must not be acknowledged: COMMIT waits for a sync standby.
        with pytest.raises(SSHError, match="did not finish"):
            psql.psql(inv, old, INSERT_SQL, db="ledger", timeout=5, params={"key": key})
        streaming = psql.psql(inv, old, SENDERS_SQL)
        assert streaming == "0", "a standby still streams from the old primary"
        assert psql.psql(inv, cand.host, COUNT_SQL, db="ledger", params={"key": key}) == "0"
    finally:
        # Fence it now and bring it back as a standby of the new primary.
        failover.fence(inv, old)
        failover.reconcile(inv, cand.host, old)
        failover.rejoin(inv, old, cand.host)
        failover.wait_quorum(inv)


# A power loss leaves postmaster.pid behind, naming the dead postmaster's PID. The
# new boot may give that PID to a process of user postgres (on the lab: a task of the
# rejoin's own Ansible run); PostgreSQL then takes it for a live postmaster. Planted
# here on a standby: every server process SIGKILLed (no shutdown), and the pid file
# rewritten to name a live `sleep` of user postgres.
PLANT_STALE_PID = f"""set -e
systemctl kill --signal=SIGKILL {UNIT}; sleep 1; systemctl stop {UNIT}
runuser -u postgres -- sleep 600 </dev/null >/dev/null 2>&1 &
sleep 0.5; pid=$(pgrep -n -u postgres -x sleep)
f=/var/lib/postgresql/15/main/postmaster.pid
printf '%s\\n%s\\n0\\n5432\\n/var/run/postgresql\\n*\\n 0 0\\nready\\n' $pid "${{f%/*}}" > $f
chown postgres: $f; chmod 600 $f
[ "$(stat -c %U /proc/$(head -n 1 $f))" = postgres ]
"""


def test_a_rejoin_gets_past_the_lock_file_a_crash_left(inv: inv_mod.Inventory, steady: str) -> None:
    """The rejoin (pg_rewind's crash recovery, then the pgBackRest re-clone it falls back
    to) refused on such a file; it now removes it and the standby streams again."""
    standby = next(h.name for h in inv.group("db") if h.name != steady)
    planted = ssh.run(inv, standby, PLANT_STALE_PID, sudo=True, timeout=60)
    assert planted.rc == 0, planted.stderr
    try:
        failover.rejoin(inv, standby, steady)
        assert failover.wait_quorum(inv) == steady
    finally:
        ssh.run(inv, standby, "pkill -u postgres -x sleep || true", sudo=True)
