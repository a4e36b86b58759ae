"""faultbook.ansible against the lab: typed results, failures named, host keys checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from faultbook import ansible
from faultbook.errors import PlaybookFailed, UsageError
from faultbook.lab.lab import Lab
from faultbook.paths import faultbook_home

pytestmark = pytest.mark.integration
HERE = Path(__file__).parent


def test_ping_reaches_every_host_through_sudo(lab: Lab) -> None:
    seen: list[str] = []
    res = ansible.run_playbook("ping.yml", lab.inv, event_handler=lambda e: seen.append(e["event"]))
    assert res.ok and res.rc == 0
    assert set(res.stats) == set(lab.inv.hosts)
    assert all(s.ok == 1 and s.failed == 0 and s.unreachable == 0 for s in res.stats.values())
    assert "playbook_on_task_start" in seen


def test_a_failure_names_host_task_and_message(lab: Lab) -> None:
    with pytest.raises(PlaybookFailed) as exc:
        ansible.run_playbook(str(HERE / "playbooks" / "fail_on_db2.yml"), lab.inv)
    e = exc.value
    assert (e.host, e.task, e.message) == ("db2", "Refuse on db2", "db2 says no")
    assert e.rc != 0


def test_limit_to_an_unknown_host_is_a_usage_error(lab: Lab) -> None:
    with pytest.raises(UsageError, match="unknown host 'db7'"):
        ansible.run_playbook("ping.yml", lab.inv, limit="db7")


def test_unknown_playbook_lists_the_playbooks(lab: Lab) -> None:
    with pytest.raises(UsageError, match="unknown playbook 'nope'; available: .*ping"):
        ansible.run_playbook("nope", lab.inv)


def test_a_changed_host_key_makes_the_host_unreachable(lab: Lab) -> None:
    known = lab.ssh_dir / "known_hosts"
    original = known.read_text()
    lines = original.splitlines()
    key_of_db2 = next(ln for ln in lines if ln.startswith("10.77.0.32,")).split(" ", 1)[1]
    forged = [
        f"10.77.0.33,db3 {key_of_db2}" if ln.startswith("10.77.0.33,") else ln for ln in lines
    ]
    # Persistent SSH masters were authenticated earlier; drop them so the key is checked anew.
    for sock in (faultbook_home() / "cp").glob("*"):
        sock.unlink()
    try:
        known.write_text("\n".join(forged) + "\n")
        res = ansible.run_playbook("ping.yml", lab.inv, limit="db3", raise_on_failure=False)
        assert res.stats["db3"].unreachable == 1
        host, _, msg = ansible.first_failure(res.events)
        assert host == "db3" and msg and "host key" in msg.lower()
    finally:
        known.write_text(original)
