"""faultbook.webtier on the running lab: HAProxy's view, drain/enable, recovery, the VIP.

These tests need a lab that is already up and provisioned. They do not use
the session fixture ``lab`` (it boots any host that is not running): they
only check that the lb and web hosts answer, and they touch nothing but the
lb and web hosts. Every change is undone in a ``finally``: web3 is enabled
again, and keepalived runs again on the backup lb.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from faultbook import ansible, ssh
from faultbook import inventory as inv_mod
from faultbook.errors import PlaybookFailed
from faultbook.stack import haproxy, http, vip

pytestmark = pytest.mark.integration

WEB = ["web1", "web2", "web3"]
LBS = ["lb1", "lb2"]
TARGET = "web3"
# A database failover makes every /readyz fail for a while (backend web DOWN):
# wait this long for a healthy stack before the tests start.
HEALTHY_WAIT_S = 180


@pytest.fixture(scope="module")
def inv() -> inv_mod.Inventory:
    """The lab's inventory, once the lb and web hosts answer over SSH (no `lab up` here)."""
    inv = inv_mod.load()
    down = {
        h: str(r)
        for h, r in ssh.run_many(inv, LBS + WEB, "true", timeout=10).items()
        if not isinstance(r, ssh.CommandResult)
    }
    if down:
        pytest.fail(f"the lab is not up (start it with `faultbook lab up`): {down}")
    return inv


def web_status(df: pd.DataFrame, lb: str, backend: str, server: str) -> str:
    rows = df[(df.lb == lb) & (df.backend == backend) & (df.server == server)]
    assert len(rows) == 1, f"{lb} has {len(rows)} rows for {backend}/{server}:\n{df}"
    return str(rows.iloc[0].status)


@pytest.fixture(scope="module")
def healthy(inv: inv_mod.Inventory) -> inv_mod.Inventory:
    deadline = time.monotonic() + HEALTHY_WAIT_S
    while True:
        fb = haproxy.failed_backends(inv)
        if not fb.failed and not fb.unreachable_lbs:
            return inv
        if time.monotonic() > deadline:
            pytest.fail(f"the web tier is not healthy after {HEALTHY_WAIT_S} s: {fb.summary()}")
        time.sleep(3)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:g} s")
        time.sleep(0.5)


# ------------------------------------------------------------------------ read
def test_every_web_server_is_up_in_web_on_both_lbs(healthy: inv_mod.Inventory) -> None:
    df = haproxy.haproxy_servers(healthy)
    assert set(df.lb) == set(LBS)
    assert (df.error == "").all(), df[df.error != ""]
    for lb in LBS:
        for backend in ("web", "web_alive"):
            assert sorted(df[(df.lb == lb) & (df.backend == backend)].server) == WEB
        for server in WEB:
            assert web_status(df, lb, "web", server) == "UP"
    assert (df.check_status[df.backend == "web"] == "L7OK").all()
    assert df.total_sessions.notna().all()


def test_prometheus_agrees_that_nothing_failed(healthy: inv_mod.Inventory) -> None:
    fb = haproxy.failed_backends(healthy)
    assert list(fb) == [] and fb.prometheus_error is None and fb.sources_agree, fb.summary()


def test_one_lb_holds_the_vip_and_both_are_healthy(healthy: inv_mod.Inventory) -> None:
    holder = vip.vip_holder(healthy)
    assert holder in LBS
    st = vip.lb_status(healthy).set_index("lb")
    assert st.reachable.all() and st.healthz.all(), st
    assert (st.haproxy == "active").all() and (st.keepalived == "active").all(), st
    assert st.index[st.holds_vip].tolist() == [holder]
    assert st.loc[holder, "vrrp_state"] == "MASTER"
    (other,) = [lb for lb in LBS if lb != holder]
    assert st.loc[other, "vrrp_state"] == "BACKUP"


# ------------------------------------------------------------- drain / enable
def test_a_drained_server_gets_no_new_request_from_either_backend(
    healthy: inv_mod.Inventory,
) -> None:
    inv = healthy
    t0 = time.monotonic()
    try:
        res = haproxy.drain(inv, TARGET)
        drain_s = time.monotonic() - t0
        assert res.ok and set(res.stats) == set(LBS)
        assert all(s.changed >= 1 and s.failed == 0 for s in res.stats.values()), res.recap()

        before = haproxy.haproxy_servers(inv)
        for lb in LBS:
            for backend in ("web", "web_alive"):
                assert web_status(before, lb, backend, TARGET) in ("DRAIN", "MAINT")
            for server in set(WEB) - {TARGET}:
                assert web_status(before, lb, "web", server) == "UP"

        # Requests through the VIP reach the others, never the drained server.
        with http.session(inv) as s:
            codes = [
                s.get(http.vip_url(inv, "/healthz"), timeout=10).status_code for _ in range(40)
            ]
        assert codes == [200] * 40
        after = haproxy.haproxy_servers(inv)
        key = ["lb", "backend", "server"]
        delta = after.set_index(key).total_sessions - before.set_index(key).total_sessions
        assert (delta.xs(TARGET, level="server") == 0).all(), delta
        assert delta.sum() >= 40, delta

        # Both sources see it out of rotation; a second drain changes nothing.
        # Wait for what is asserted below: every lb's series, not only the first one scraped.
        drained = dict.fromkeys(LBS, "DRAIN")
        wait_for(
            lambda: haproxy.failed_backends(inv).prometheus.get(TARGET) == drained,
            30,
            f"Prometheus did not report {TARGET} drained on every lb",
        )
        fb = haproxy.failed_backends(inv)
        assert list(fb) == [TARGET]
        assert fb.stats[TARGET] == {"lb1": "DRAIN", "lb2": "DRAIN"}
        assert fb.prometheus[TARGET] == {"lb1": "DRAIN", "lb2": "DRAIN"}
        assert haproxy.drain(inv, TARGET).changed == 0
        print(f"web_drain.yml took {drain_s:.1f} s")
    finally:
        t1 = time.monotonic()
        res = haproxy.enable(inv, TARGET)
        print(f"web_enable.yml took {time.monotonic() - t1:.1f} s")
    assert res.ok and res.changed >= 1
    df = haproxy.haproxy_servers(inv)
    for lb in LBS:
        assert web_status(df, lb, "web", TARGET) == "UP"
        assert haproxy.is_up(web_status(df, lb, "web_alive", TARGET))
    assert haproxy.enable(inv, TARGET).changed == 0


def test_maint_stops_the_checks_and_enable_brings_it_back(healthy: inv_mod.Inventory) -> None:
    inv = healthy
    try:
        haproxy.drain(inv, TARGET, state="maint")
        df = haproxy.haproxy_servers(inv)
        for lb in LBS:
            for backend in ("web", "web_alive"):
                assert web_status(df, lb, backend, TARGET) == "MAINT"
    finally:
        haproxy.enable(inv, TARGET)
    df = haproxy.haproxy_servers(inv)
    assert all(web_status(df, lb, "web", TARGET) == "UP" for lb in LBS)


def test_the_drain_playbook_refuses_a_host_outside_group_web(healthy: inv_mod.Inventory) -> None:
    # The playbook itself, without the library's check in front of it.
    with pytest.raises(PlaybookFailed) as exc:
        ansible.run_playbook("web_drain.yml", healthy, extravars={"web_host": "db1"})
    assert exc.value.host in LBS
    assert "Cannot drain 'db1'" in exc.value.message
    assert "web1, web2, web3" in exc.value.message


# ------------------------------------------------------------------- recovery
def test_recover_leaves_a_healthy_app_alone(healthy: inv_mod.Inventory) -> None:
    res = haproxy.recover(healthy, TARGET)
    assert res.ok and set(res.stats) == {TARGET} and res.changed == 0, res.recap()


def test_a_forced_recover_restarts_the_app_and_waits_until_ready(
    healthy: inv_mod.Inventory,
) -> None:
    inv = healthy

    def main_pid() -> str:
        r = ssh.run(inv, TARGET, "systemctl show -p MainPID --value ledger.service")
        return r.stdout.strip()

    pid = main_pid()
    try:
        haproxy.drain(inv, TARGET, state="maint")  # no request fails, no alert
        res = haproxy.recover(inv, TARGET, force_restart=True)
        assert res.ok and res.changed >= 1
        assert main_pid() not in (pid, "0")
        probe = (
            "python3 -c 'import urllib.request as u; "
            'print(u.urlopen("http://127.0.0.1:8000/readyz", timeout=3).status)\''
        )
        assert ssh.run(inv, TARGET, probe).stdout.strip() == "200"
    finally:
        haproxy.enable(inv, TARGET)


@pytest.mark.extended  # recover on a healthy app covers the no-op
def test_lb_recover_on_a_healthy_lb_changes_nothing(healthy: inv_mod.Inventory) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    for lb in LBS:
        res = vip.lb_recover(healthy, lb)
        assert res.ok and set(res.stats) == {lb} and res.changed == 0, res.recap()
    assert [t for lb in LBS for t in vip.vrrp_transitions(healthy, lb, since)] == []


def test_the_backup_lb_rejoins_without_moving_the_vip(healthy: inv_mod.Inventory) -> None:
    inv = healthy
    holder = vip.vip_holder(inv)
    (backup,) = [lb for lb in LBS if lb != holder]
    since = datetime.now(UTC)
    r = ssh.run(inv, backup, "systemctl stop keepalived.service", sudo=True)
    assert r.ok, r.stderr
    try:
        st = vip.lb_status(inv).set_index("lb")
        assert st.loc[backup, "keepalived"] == "inactive"
        assert st.loc[backup, "vrrp_state"] == "stopped"
    finally:
        res = vip.lb_recover(inv, backup)
    assert res.ok and res.changed >= 1
    wait_for(
        lambda: [t.state for t in vip.vrrp_transitions(inv, backup, since)] == ["BACKUP"],
        10,
        f"{backup} did not rejoin as BACKUP",
    )
    assert vip.vip_holder(inv) == holder
    assert vip.vrrp_transitions(inv, holder, since) == []
    st = vip.lb_status(inv).set_index("lb")
    assert st.loc[backup, "keepalived"] == "active" and st.loc[backup, "vrrp_state"] == "BACKUP"


# ------------------------------------------------- a VIP holder that comes back
# VRRP resolves two masters by priority: nothing keeps the lb that took over. So a VIP
# holder that was cut off or frozen must stop claiming the VIP before it comes back, or
# it takes the VIP back and clients are interrupted a second time.
def test_a_cut_off_vip_holder_gives_up_the_vip_and_comes_back_as_backup(
    healthy: inv_mod.Inventory,
) -> None:
    from faultbook.lab.lab import Lab

    inv = healthy
    holder = vip.vip_holder(inv)
    (other,) = [lb for lb in LBS if lb != holder]
    lab = Lab(inv)
    lab.partition(str(holder))
    try:
        wait_for(lambda: vip.claims_vip(inv, other) is True, 10, f"{other} took the VIP")
        # keepalived's isolation check: neither the other lb nor a web node answers.
        wait_for(
            lambda: vip.claims_vip(inv, str(holder)) is False,
            15,
            f"{holder}, cut off, gave up the VIP",
        )
    finally:
        since = datetime.now(UTC)
        lab.heal(str(holder))
    wait_for(
        lambda: [t.state for t in vip.vrrp_transitions(inv, str(holder), since)] == ["BACKUP"],
        20,
        f"{holder} came back as BACKUP",
    )
    vip.require_no_flap(inv, other, str(holder), since)


def test_a_frozen_vip_holder_is_fenced_and_comes_back_as_backup(
    healthy: inv_mod.Inventory,
) -> None:
    inv = healthy
    holder = str(vip.vip_holder(inv))
    (other,) = [lb for lb in LBS if lb != holder]
    r = ssh.run(inv, holder, "systemctl kill --signal=SIGSTOP keepalived.service", sudo=True)
    assert r.ok, r.stderr
    try:
        wait_for(lambda: vip.claims_vip(inv, other) is True, 10, f"{other} took the VIP")
        said = vip.stand_down(inv, holder, timeout_s=2)  # frozen: it cannot give it up
        assert "killed (SIGKILL: no advert)" in said, said
        assert vip.claims_vip(inv, holder) is False
    finally:
        since = datetime.now(UTC)
        ssh.run(inv, holder, "systemctl kill --signal=SIGCONT keepalived.service", sudo=True)
    res = vip.lb_recover(inv, holder)
    assert res.ok
    wait_for(
        lambda: "BACKUP" in [t.state for t in vip.vrrp_transitions(inv, holder, since)],
        20,
        f"{holder} came back as BACKUP",
    )
    vip.require_no_flap(inv, other, holder, since)
