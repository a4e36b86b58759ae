"""The backup-restore pre-flight: the repository's status, the age of the newest full and
differential backups, the WAL archive's continuity, the scratch host's free space, and that
the repository passphrase in hand opens the repository.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from faultbook.backup import repository, targets
from faultbook.backup.restore import PG_DATA, scratch_host
from faultbook.errors import BackupError, PassphraseError
from faultbook.inventory import Inventory

# Free space a restore needs beyond the backup's size: WAL replayed into
# pg_wal and the server's own files.
SPACE_MARGIN = 1.10


SPACE_EXTRA_BYTES = 256 * 1024 * 1024


# --------------------------------------------------------------- passphrase
def check_passphrase(inv: Inventory, passphrase: str) -> None:
    """BackupError (exit 2) unless ``passphrase`` opens the repository.

    The passphrase reaches pgBackRest on the repository host through its
    standard input and an environment variable, never a command line.
    """
    host = repository.repo_host(inv)
    name = repository.stanza_name(inv)
    script = (
        "IFS= read -r PGBACKREST_REPO1_CIPHER_PASS; export PGBACKREST_REPO1_CIPHER_PASS; "
        f"exec pgbackrest --stanza={shlex.quote(name)} --output=json info"
    )
    r = repository.as_owner(inv, script, timeout=60, stdin=(passphrase + "\n").encode())

    problem = ""
    if not r.ok:
        problem = repository._error_line(r.stderr or r.stdout)
    else:
        try:
            code, message = repository.repository_status(json.loads(r.stdout, strict=False), name)
        except (ValueError, BackupError) as exc:
            code, message = 99, str(exc)
        if code not in (0, 2):
            problem = message
    if problem:
        problem = "".join(c if c.isprintable() else " " for c in problem)
        problem = " ".join(problem.split())[:200]
        raise PassphraseError(
            f"the repository passphrase does not open stanza {name!r} on {host} "
            f"(pgBackRest: {problem}); expected the passphrase the repository was created with"
        )


# ---------------------------------------------------------------- pre-flight
@dataclass(frozen=True)
class Preflight:
    """What every backup-restore mode checks before it touches anything."""

    status: str
    backups: pd.DataFrame = field(repr=False)
    ages: dict[str, Any]
    archive: Any  # faultbook.backup.wal.WalContinuity
    free_bytes: int
    needed_bytes: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> pd.DataFrame:
        def age(kind: str) -> str:
            a = self.ages.get(kind, {}).get("age")
            return "none" if a is None else f"{a.total_seconds() / 3600:.1f} h"

        rows = [
            ("repository", self.status),
            ("newest full backup", f"{self.ages.get('full', {}).get('label')} ({age('full')} old)"),
            ("newest diff backup", f"{self.ages.get('diff', {}).get('label')} ({age('diff')} old)"),
            ("WAL archive", self.archive.summary() if self.archive is not None else "unknown"),
            (
                "restore host space",
                f"{repository.human_bytes(self.free_bytes)} free, "
                f"{repository.human_bytes(self.needed_bytes)} needed",
            ),
        ]
        return pd.DataFrame(rows, columns=["check", "result"])


def needed_bytes(backups_df: pd.DataFrame) -> int:
    """Space a restore of the newest backup needs on the scratch host."""
    if backups_df.empty:
        return 0
    size = backups_df["size"].dropna()
    biggest = int(size.max()) if len(size) else 0
    return int(biggest * SPACE_MARGIN) + SPACE_EXTRA_BYTES


def preflight(
    inv: Inventory,
    host: str,
    now: datetime | None = None,
    max_full_age_h: float = 8 * 24,
    max_diff_age_h: float = 2 * 24,
    passphrase: str | None = None,
) -> Preflight:
    """Check the repository, backup ages, WAL continuity and the scratch host's space.

    Raises on what makes any restore impossible (unknown host: exit 2; no
    backup, unreadable repository, too little space, wrong passphrase);
    stale backups and archive gaps are ``problems`` the runbook reports and
    stops on.
    """
    host = scratch_host(inv, host)
    now = now or datetime.now(UTC)
    if passphrase is not None:
        check_passphrase(inv, passphrase)
    info_json = repository.info(inv)
    name = repository.stanza_name(inv)
    code, message = repository.repository_status(info_json, name)
    df = repository.backups(info_json, name)
    problems: list[str] = []
    if code != 0:
        problems.append(f"stanza {name} status {code}: {message}")
    targets.require_backups(df)
    ages = repository.latest_by_type(df, now)
    for kind, limit in (("full", max_full_age_h), ("diff", max_diff_age_h)):
        age = ages[kind]["age"]
        newer_full = kind == "diff" and ages["full"]["age"] is not None
        if age is None and not newer_full:
            problems.append(f"no {kind} backup")
        elif age is not None and age.total_seconds() > limit * 3600:
            if kind == "diff" and ages["full"]["age"].total_seconds() <= limit * 3600:
                continue  # a full backup newer than the limit covers it
            problems.append(f"newest {kind} backup is {age.total_seconds() / 3600:.1f} h old")
    archive = repository.check_archive(inv, info_json)
    if not archive.ok:
        problems.append(f"WAL archive: {archive.summary()}")
    free = repository.free_space_bytes(inv, host, PG_DATA)
    need = needed_bytes(df)
    repository.check_space(need, free, f"{host}:{PG_DATA}")
    return Preflight(
        status=f"{code} {message}",
        backups=df,
        ages=ages,
        archive=archive,
        free_bytes=free,
        needed_bytes=need,
        problems=tuple(problems),
    )
