"""The on-call path in a real browser: `faultbook notebook`, JupyterLab, Debian's chromium.

Each test starts `faultbook notebook RUNBOOK --port 0` as a person would, opens the
printed URL in headless Chromium (Playwright, ``executable_path``), runs the notebook
cell by cell with Shift+Enter, types a host's name into each confirmation box the
runbook puts up, and checks what the notebook showed and what the archive recorded:
the runbook's last cell files the incident (executed notebook, HTML, result.json with
mode ``incident`` and the confirmations) into ``$FAULTBOOK_HOME/runs`` and the audit
log. Screenshots of every step go to ``reports/test-artifacts/browser/``.

The alert receiver is stopped (make integration): autopilot must not act on the web
nodes this test breaks.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from labdriver import Session, chromium, served

from faultbook import inventory as inv_mod
from faultbook import ssh
from faultbook.archive import audit
from faultbook.drills import procedure
from faultbook.lab.lab import Lab
from faultbook.paths import faultbook_home
from faultbook.stack import haproxy

pytestmark = pytest.mark.integration

ARCHIVE_WAIT_S = 30  # the last cell has seen closed.json: the archive is written


@pytest.fixture(scope="module")
def inv(lab: Lab) -> inv_mod.Inventory:
    return lab.inv


def type_the_host(prompt: str) -> str:
    """What the engineer types: the host the question names ("Type web2 to go ahead")."""
    m = re.search(r"Type (\S+) to go ahead", prompt)
    assert m, f"a confirmation box without a host to type: {prompt!r}"
    return m.group(1)


def archived(folder: Path) -> dict[str, Any]:
    """Wait until the incident is filed; the archived run's result.json."""
    closed = folder / "closed.json"
    deadline = time.monotonic() + ARCHIVE_WAIT_S
    while not closed.exists():
        assert time.monotonic() < deadline, (
            f"{folder} was not filed into the archive within {ARCHIVE_WAIT_S}s"
        )
        time.sleep(1)
    where = Path(json.loads(closed.read_text())["archived"])
    for name in ("result.json", "archive.json"):
        assert (where / name).exists(), f"{where} has no {name}"
    assert list(where.glob("*.ipynb")) and list(where.glob("*.html")), (
        f"{where}: notebook or HTML missing"
    )
    nb = json.loads(next(where.glob("*.ipynb")).read_text())
    executed = [c for c in nb["cells"] if c["cell_type"] == "code" and c.get("execution_count")]
    assert executed, "the archived notebook holds no executed cell"
    assert audit.verify(faultbook_home()).ok
    doc: dict[str, Any] = json.loads((where / "result.json").read_text())
    assert doc["mode"] == "incident"
    return doc


def run_in_browser(
    runbook: str, name: str, params: dict[str, str] | None = None
) -> tuple[Session, str, dict[str, Any]]:
    """The notebook run in JupyterLab; the session, the notebook's text, the archived result."""
    with served(runbook, params) as s, chromium() as page:
        session = Session(page, name)
        session.open(s.url)
        session.run_all(s.folder / f"{runbook}.ipynb", type_the_host)
        session.shot("done")
        text = session.text()
        # the last cell runs until a save has filed the incident (it re-dirties the
        # notebook after each autosave interval), then names the archived folder
        assert "faultbook: incident filed:" in text, text[-2000:]
        doc = archived(s.folder)
        session.shot("filed")
        return session, text, doc


@pytest.mark.extended  # the browser path: web-node-failure covers it
def test_health_check_in_jupyterlab(inv: inv_mod.Inventory) -> None:
    session, text, doc = run_in_browser("health-check", "health-check")
    assert doc["verdict"] == "pass", doc["steps"]
    assert "lb1" in text and "db1" in text
    assert not session.answers  # read-only: nothing to confirm


@pytest.mark.extended  # the browser path: web-node-failure covers it
def test_db_failover_on_a_healthy_stack_does_nothing(inv: inv_mod.Inventory) -> None:
    session, text, doc = run_in_browser("db-failover", "db-failover")
    assert "NOTHING TO DO" in text
    assert doc["verdict"] == "pass" and not doc.get("confirmations")
    assert not session.answers


def test_web_node_failure_one_stopped_service(inv: inv_mod.Inventory) -> None:
    """make test's browser case: one confirmation typed, one node drained, restarted and
    re-enabled (the two-node case below adds a power-on: minutes more)."""
    r = ssh.run(inv, "web3", "systemctl stop ledger.service", sudo=True)
    assert r.ok, r.stderr
    assert haproxy.wait_marked_down(inv, ["web3"], 60) is not None
    session, text, doc = run_in_browser("web-node-failure", "web-node-failure-one")
    assert [type_the_host(q) for q, _ in session.answers] == ["web3"], session.answers
    (confirmed,) = doc["confirmations"]
    assert confirmed["host"] == "web3" and confirmed["granted"]
    assert confirmed["by"] != "parameter confirm=True"
    assert doc["verdict"] == "pass", [s for s in doc["steps"] if s["status"] != "ok"]
    assert "recover web3" in [s["name"] for s in doc["steps"]]
    assert not haproxy.failed_backends(inv).failed
    assert procedure.steady_state(inv).ok


@pytest.mark.extended  # a power-on and a second node: minutes more than the case above
def test_web_node_failure_two_nodes_one_powered_off(lab: Lab, inv: inv_mod.Inventory) -> None:
    lab.crash("web2")
    r = ssh.run(inv, "web3", "systemctl stop ledger.service", sudo=True)
    assert r.ok, r.stderr
    try:
        assert haproxy.wait_marked_down(inv, ["web2", "web3"], 60) is not None
        session, text, doc = run_in_browser("web-node-failure", "web-node-failure")
    finally:
        lab.boot("web2")
    asked = [type_the_host(q) for q, _ in session.answers]
    assert asked == ["web3", "web2"], session.answers  # the node that answers first
    confirmed = {c["host"]: c for c in doc["confirmations"]}
    assert set(confirmed) == {"web2", "web3"}
    assert all(c["granted"] and c["by"] != "parameter confirm=True" for c in confirmed.values())
    assert doc["verdict"] == "pass", [s for s in doc["steps"] if s["status"] != "ok"]
    assert "power on web2" in [s["name"] for s in doc["steps"]]
    assert "web2 booted" in text
    assert not haproxy.failed_backends(inv).failed
    assert procedure.steady_state(inv).ok
