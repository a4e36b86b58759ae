"""On the lab: list the repository's backups, take an incremental one, check the WAL archive.

These tests never boot, stop or reprovision a host: when the repository host
answers they use the lab as it is (another drill may be running on the db
hosts), and only bring the lab up when it does not. One test takes a real
incremental backup through `faultbook backup now`.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from faultbook import cli, inventory, ssh
from faultbook.backup import repository, targets
from faultbook.errors import BackupError, InventoryError, SSHError
from faultbook.inventory import Inventory
from faultbook.stack import psql

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def inv(request: pytest.FixtureRequest) -> Inventory:
    lab_inv = inventory.load("lab")
    try:
        ssh.run(lab_inv, repository.repo_host(lab_inv), "true", timeout=10)
    except SSHError:
        request.getfixturevalue("lab")  # brings the lab up
    return lab_inv


def invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli.main, list(args))
    return res.exit_code, res.output


def test_backup_list_shows_every_backup_of_the_stanza(inv: Inventory) -> None:
    df = repository.backups(repository.info(inv))
    assert len(df) >= 1 and "full" in set(df["type"])
    code, out = invoke("backup", "list")
    assert code == 0, out
    assert out.startswith("stanza main: ok (status 0); archived WAL 0000000")
    for label in df["label"]:
        assert label in out
    code, out = invoke("backup", "list", "--json")
    assert code == 0, out
    rows = json.loads(out)
    assert [r["label"] for r in rows] == list(df["label"])
    assert all(r["lsn_stop"] and r["wal_start"] and r["size"] > 0 for r in rows)


def test_backup_now_adds_an_incremental_backup_on_the_newest(inv: Inventory) -> None:
    before = repository.backups(repository.info(inv))
    started = datetime.now(UTC).replace(microsecond=0)
    t0 = time.monotonic()
    code, out = invoke("backup", "now", "--type", "incr")
    assert code == 0, out
    after = repository.backups(repository.info(inv))
    new = after[~after["label"].isin(before["label"])]
    assert len(new) == 1, f"expected one new backup, got {list(new['label'])}"
    row = new.iloc[0]
    assert row["type"] == "incr"
    assert row["label"].endswith("I") and row["label"].startswith(before["label"].iloc[-1][:16])
    assert row["prior"] == before["label"].iloc[-1]
    assert row["start"] >= started and (row["stop"] - row["start"]).total_seconds() <= (
        time.monotonic() - t0 + 1
    )
    assert psql.parse_lsn(row["lsn_stop"]) > psql.parse_lsn(before["lsn_stop"].iloc[-1])
    assert f"backup {row['label']}: incr" in out
    # The newest backup is the one a restore to "latest" or to now uses.
    assert targets.backup_for_target(after, targets.parse_target("latest")) == row["label"]
    now = targets.parse_target("time", datetime.now(UTC).isoformat())
    assert targets.backup_for_target(after, now) == row["label"]
    code, out = invoke("backup", "list")
    assert code == 0 and row["label"] in out


def test_wal_archive_has_no_gap_since_the_oldest_backup(inv: Inventory) -> None:
    info = repository.info(inv)
    result = repository.check_archive(inv, info)
    first, last = repository.archive_range(info)
    assert result.ok, result.summary()
    assert result.history_known
    assert last is not None and result.last is not None
    assert result.last >= last  # the newest timeline's newest segment (more may have come)
    oldest = repository.backups(info)["wal_start"].iloc[0]
    assert result.first is not None and result.first[8:] == oldest[8:]


def test_free_space_on_the_restore_host_matches_df(inv: Inventory) -> None:
    host = inv.group("restore")[0].name
    free = repository.free_space_bytes(inv, host, "/var/lib/postgresql/15/main")
    statvfs = "import os; s = os.statvfs('/var/lib'); print(s.f_bavail * s.f_frsize)"
    r = ssh.run(inv, host, f'python3 -c "{statvfs}"', timeout=10)
    assert r.ok, r.stderr
    # the same filesystem; the figure moves a little while the host writes
    assert free > 0 and abs(free - int(r.stdout)) < 256 * 2**20
    with pytest.raises(BackupError, match="not enough space on"):
        repository.check_space(free + 1, free, where=f"{host}:/var/lib/postgresql")


def test_a_host_not_in_the_inventory_is_a_usage_error(inv: Inventory) -> None:
    with pytest.raises(InventoryError, match="unknown host 'restore9'"):
        repository.free_space_bytes(inv, "restore9", "/var/lib/postgresql")
