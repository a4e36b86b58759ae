"""Data volume for restore drills and benchmarks: a pgbench seed database, its digest, a cold
page cache, and the raw dd copy a restore's throughput is compared with.
"""

from __future__ import annotations

from faultbook import ssh
from faultbook.backup.restore import PG_BIN
from faultbook.errors import BackupError, FaultbookError, UsageError
from faultbook.inventory import Inventory
from faultbook.stack import psql

# ------------------------------------------------------------- data volume
SEED_DB = "faultbook_seed"


# pgbench -i: one scale unit is 100,000 accounts, about 15 MiB with its indexes.
SEED_MIB_PER_SCALE = 15.0


def seed_volume(inv: Inventory, primary: str, mib: float, db: str = SEED_DB) -> int:
    """At least ``mib`` MiB of pgbench tables in database ``db`` on the primary; its size in bytes.

    ``pgbench -i`` (server-side generation) when the database holds less;
    nothing when it already holds enough. Replicates and archives like any
    other write, so a full backup afterwards holds it.
    """
    if mib <= 0:
        return 0
    if not 1 <= mib <= 1024 * 1024:
        raise UsageError(f"seed size must be between 1 MiB and 1 TiB, got {mib!r} MiB")
    scale = max(1, int(-(-mib // SEED_MIB_PER_SCALE)))
    name = {"db": db}
    exists = psql.psql(inv, primary, "SELECT 1 FROM pg_database WHERE datname = :'db'", params=name)
    if not exists:
        psql.psql(inv, primary, 'CREATE DATABASE :"db"', params=name)
    size = int(psql.psql(inv, primary, "SELECT pg_database_size(:'db')", params=name))
    if size >= mib * 1024 * 1024:
        return size
    cmd = f"cd /tmp && sudo -n -u postgres {PG_BIN}/pgbench -i -q -I dtGvp -s {scale} {db}"
    r = ssh.run(inv, primary, cmd, timeout=3600)
    if not r.ok:
        raise FaultbookError(f"pgbench -i on {primary} failed: {r.stderr.strip()[-300:]}")
    return int(psql.psql(inv, primary, "SELECT pg_database_size(:'db')", params=name))


def drop_caches(inv: Inventory, host: str) -> None:
    """Empty the page cache that ``host``'s files are in, so a timing starts cold.

    On a real host: its kernel's cache. In the lab every host shares the
    controller's kernel (a container cannot write /proc/sys), so the
    controller drops it.
    """
    r = ssh.run(inv, host, "sync && echo 3 > /proc/sys/vm/drop_caches", sudo=True, timeout=120)
    if r.ok:
        return
    if not inv.is_lab:
        raise BackupError(f"cannot drop the page cache on {host}: {r.stderr.strip()}")
    import subprocess
    from pathlib import Path

    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


RAW_PATH = "/var/lib/postgresql/faultbook-rawcopy"


def raw_copy_s(inv: Inventory, host: str, nbytes: int) -> float:
    """Seconds to copy ``nbytes`` with dd (4 MiB blocks, fsync) on ``host``'s disk, cache cold.

    The machine's physical limit for a restore of that size: the same bytes
    read and written on the same file system, nothing else.
    """
    src, dst = f"{RAW_PATH}.src", f"{RAW_PATH}.dst"
    r = ssh.run(
        inv, host, f"head -c {int(nbytes)} /dev/urandom > {src} && sync", sudo=True, timeout=900
    )
    if not r.ok:
        raise BackupError(f"cannot write {host}:{src}: {r.stderr.strip()}")
    drop_caches(inv, host)
    copy = (
        f"t0=$(date +%s.%N); dd if={src} of={dst} bs=4M conv=fsync status=none; rc=$?; "
        f"t1=$(date +%s.%N); rm -f {src} {dst}; echo $t0 $t1; exit $rc"
    )
    r = ssh.run(inv, host, copy, sudo=True, timeout=900)
    if not r.ok:
        raise BackupError(f"raw copy on {host} failed: {r.stderr.strip()}")
    t0, t1 = (float(x) for x in r.stdout.split()[-2:])
    return t1 - t0


def seed_digest(inv: Inventory, host: str, db: str = SEED_DB) -> str:
    """Row count and an order-independent hash of every row of pgbench_accounts."""
    return psql.psql(
        inv,
        host,
        "SELECT count(*), sum(hashtextextended(t::text, 0)) FROM pgbench_accounts t",
        db=db,
        timeout=600,
    )
