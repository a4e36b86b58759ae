"""The backup-restore runbook on the lab, run by papermill exactly as `faultbook run` runs it.

The drills restore onto the scratch host restore1 under real client load and
prove the result against the client ledger: the PITR drill (to a time; `make
demo` runs one to a named restore point) gets exactly the
writes acknowledged before the target and none sent after it; the
recover-from-bad-change drill gets back every row the bad change deleted,
keeps the writes made after it, and loses no acknowledged write. Every bad
input stops the runbook with exit 1 or 2 and changes nothing: not the
scratch host, not production, not the repository.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faultbook import inventory as inv_mod
from faultbook import ssh
from faultbook.backup import repository, restore
from faultbook.drills import procedure
from faultbook.lab.lab import Lab
from faultbook.report import runner
from faultbook.stack import psql

pytestmark = pytest.mark.integration

SCRATCH = "restore1"


@pytest.fixture(scope="module")
def inv(lab: Lab) -> inv_mod.Inventory:
    return lab.inv


def run_br(out: Path, **params: Any) -> tuple[int, dict[str, Any]]:
    outcome = runner.run("backup-restore", params, out)
    doc = json.loads((out / "result.json").read_text())
    return outcome.exit_code, doc


def passed(code: int, doc: dict[str, Any]) -> None:
    failed = [f"{s['name']}: {s['detail']}" for s in doc["steps"] if s["status"] == "failed"]
    assert code == 0, f"verdict {doc['verdict']}; {failed}"


def step(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found = [s for s in doc["steps"] if s["name"] == name]
    assert found, f"no step {name!r} in {[s['name'] for s in doc['steps']]}"
    return dict(found[-1])


def assert_wiped_and_steady(inv: inv_mod.Inventory) -> None:
    assert restore.data_files(inv, SCRATCH) == 0
    state = procedure.steady_state(inv)
    assert state.ok, str(state)


def test_pitr_drill_to_a_time_restores_exactly_the_acknowledged_writes(
    inv: inv_mod.Inventory, tmp_path: Path
) -> None:
    code, doc = run_br(tmp_path, mode="pitr", drill=True, target_kind="time", duration_s=20.0)
    passed(code, doc)
    proof = step(doc, "prove")
    assert proof["status"] == "ok" and proof["detail"].startswith("EXACT:"), proof["detail"]
    assert doc["metrics"]["lost_writes"] == 0 and doc["metrics"]["acked_writes"] > 0
    assert_wiped_and_steady(inv)


@pytest.mark.extended  # the PITR drill covers restore to a time
def test_recover_from_bad_change_gets_every_deleted_row_back_and_keeps_later_writes(
    inv: inv_mod.Inventory, tmp_path: Path
) -> None:
    code, doc = run_br(tmp_path, mode="recover-from-bad-change", drill=True, duration_s=20.0)
    passed(code, doc)
    assert "(from the WAL: xid" in step(doc, "find T")["detail"]
    prove = step(doc, "prove")["detail"]
    assert "0 of them not recovered, 0 other rows" in prove and "EXACT:" in prove, prove
    assert step(doc, "copy back")["detail"].endswith("0 still absent")
    # Every write the clients saw acknowledged — before, during and after the bad
    # change — is in production afterwards.
    assert doc["metrics"]["lost_writes"] == 0 and doc["metrics"]["lost_writes_checked"] is True
    assert_wiped_and_steady(inv)


# ----------------------------------------------------------------- bad input
@pytest.fixture()
def unchanged(inv: inv_mod.Inventory) -> Iterator[None]:
    """Nothing a refused run could touch has changed afterwards."""
    primary = psql.primary(inv)

    def snapshot() -> tuple[Any, ...]:
        orders = psql.psql(inv, primary, "SELECT count(*), max(id) FROM orders", db="ledger")
        labels = tuple(repository.backups(repository.info(inv))["label"])
        return orders, labels, restore.data_files(inv, SCRATCH)

    before = snapshot()
    yield
    assert snapshot() == before
    assert psql.primary(inv) == primary


@pytest.mark.parametrize(
    ("params", "code", "words"),
    [
        (
            {"target": "2020-01-01T00:00:00Z"},
            2,
            "is before the oldest backup",
        ),
        # each case runs the runbook (~35 s): these two only in make test-full
        pytest.param(
            {"target": "2099-01-01T00:00:00Z"}, 2, "is in the future", marks=pytest.mark.extended
        ),
        pytest.param(
            {"target_kind": "latest", "backup_label": "20200101-000000F"},
            2,
            "unknown backup label '20200101-000000F'",
            marks=pytest.mark.extended,
        ),
        ({"mode": "verify", "restore_host": "restore9"}, 2, "restore9"),
        ({"mode": "verify", "restore_host": "db1"}, 2, "is not a scratch host"),
    ],
    ids=[
        "before-oldest",
        "future",
        "unknown-label",
        "unknown-host",
        "db-host",
    ],
)
def test_bad_restore_input_is_refused_and_changes_nothing(
    inv: inv_mod.Inventory,
    tmp_path: Path,
    unchanged: None,
    params: dict[str, Any],
    code: int,
    words: str,
) -> None:
    got, doc = run_br(tmp_path, **{"mode": "pitr", **params})
    assert got == code
    error = step(doc, "execute")["detail"]
    assert words in error, error
    assert "\n" not in error


def test_wrong_repository_passphrase_is_refused_and_changes_nothing(
    inv: inv_mod.Inventory, tmp_path: Path, unchanged: None
) -> None:
    wrong = tmp_path / "passphrase"
    wrong.write_text("not-the-repository-passphrase\n")
    got, doc = run_br(tmp_path / "out", mode="verify", passphrase_file=str(wrong))
    assert got == 2
    assert "the repository passphrase does not open stanza 'main'" in step(doc, "execute")["detail"]


def test_too_little_space_on_the_scratch_host_is_refused_and_changes_nothing(
    inv: inv_mod.Inventory, tmp_path: Path, unchanged: None
) -> None:
    # A 16 MiB file system over the scratch host's (empty) data directory.
    mount = (
        f"mount -t tmpfs -o size=16m,mode=0700,uid=postgres,gid=postgres tmpfs {restore.PG_DATA}"
    )
    r = ssh.run(inv, SCRATCH, mount, sudo=True, timeout=15)
    assert r.ok, r.stderr
    try:
        got, doc = run_br(tmp_path, mode="verify")
    finally:
        ssh.run(inv, SCRATCH, f"umount {restore.PG_DATA}", sudo=True, timeout=15)
    assert got == 1
    error = step(doc, "execute")["detail"]
    assert f"not enough space on {SCRATCH}:{restore.PG_DATA}" in error, error
