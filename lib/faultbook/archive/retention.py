"""Retention: keep N runs or D days per runbook; pruning is an audit entry.

A run is kept while it is one of its runbook's ``keep_runs`` newest or younger
than ``keep_days`` days; ``prune`` removes the folders of the others and appends
a ``prune`` entry naming each removed folder and the entry that archived it, so
``audit verify`` still passes afterwards (it does not look for a pruned run's
files).

Defaults, the first that sets a value winning: the command line
(``faultbook archive prune --keep N --days D``), ``$FAULTBOOK_HOME/archive.yml``
(``keep_runs: N``, ``keep_days: D``), the inventory's ``archive_keep_runs`` /
``archive_keep_days``, then :data:`DEFAULT`.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from faultbook.archive import audit, store
from faultbook.errors import ConfigError, ParameterError
from faultbook.paths import faultbook_home

log = logging.getLogger(__name__)

CONFIG = "archive.yml"
INVENTORY_VARS = {"keep_runs": "archive_keep_runs", "keep_days": "archive_keep_days"}


@dataclass(frozen=True)
class Policy:
    keep_runs: int  # the newest runs of each runbook always kept
    keep_days: float  # and every run younger than this

    def __str__(self) -> str:
        return f"keep the newest {self.keep_runs} runs or {self.keep_days:g} days per runbook"


DEFAULT = Policy(keep_runs=50, keep_days=90.0)


def parse_runs(value: Any, where: str) -> int:
    """A run count >= 0 (one-line ParameterError naming WHERE otherwise)."""
    try:
        if isinstance(value, bool):
            raise ValueError
        n = float(value)
        if not math.isfinite(n) or n != int(n) or n < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise ParameterError(
            f"{where} must be a whole number of runs >= 0, got {value!r}"
        ) from None
    return int(n)


def parse_days(value: Any, where: str) -> float:
    """A number of days >= 0, finite (one-line ParameterError naming WHERE otherwise)."""
    try:
        if isinstance(value, bool):
            raise ValueError
        d = float(value)
        if not math.isfinite(d) or d < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise ParameterError(f"{where} must be a number of days >= 0, got {value!r}") from None
    return d


def config_file(home: Path | None = None) -> Path:
    return (home or faultbook_home()) / CONFIG


def _config(home: Path | None) -> dict[str, Any]:
    path = config_file(home)
    if not path.exists():
        return {}
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read as YAML ({exc})".replace("\n", " ")) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping with keep_runs and keep_days")
    unknown = sorted(set(doc) - set(INVENTORY_VARS))
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; expected keep_runs, keep_days")
    return doc


def policy(
    keep: Any = None,
    days: Any = None,
    inventory_vars: Mapping[str, Any] | None = None,
    home: Path | None = None,
) -> Policy:
    """The retention policy from the command line, the config file, the inventory, the
    defaults (in that order)."""
    cfg = _config(home)
    inv = inventory_vars or {}
    path = config_file(home)

    def pick(key: str, given: Any, flag: str) -> tuple[Any, str]:
        if given is not None:
            return given, flag
        if key in cfg:
            return cfg[key], f"{path}: {key}"
        if INVENTORY_VARS[key] in inv:
            return inv[INVENTORY_VARS[key]], f"inventory var {INVENTORY_VARS[key]}"
        return getattr(DEFAULT, key), key

    runs, runs_where = pick("keep_runs", keep, "--keep")
    age, age_where = pick("keep_days", days, "--days")
    p = Policy(parse_runs(runs, runs_where), parse_days(age, age_where))
    if p.keep_runs == 0 and p.keep_days == 0:
        raise ParameterError(
            "--keep 0 with --days 0 would remove every run; keep at least one run or some days"
        )
    return p


def select(
    runs: Sequence[store.ArchivedRun], p: Policy, now: datetime | None = None
) -> list[store.ArchivedRun]:
    """The runs P does not keep, oldest first."""
    now = now or datetime.now(UTC)
    horizon = now - timedelta(days=p.keep_days)
    by_book: dict[str, list[store.ArchivedRun]] = {}
    for r in runs:
        by_book.setdefault(r.runbook, []).append(r)
    out = []
    for book_runs in by_book.values():
        newest_first = sorted(book_runs, key=lambda r: (r.started, r.name), reverse=True)
        out += [r for r in newest_first[p.keep_runs :] if r.started < horizon]
    return sorted(out, key=lambda r: (r.started, r.name))


@dataclass(frozen=True)
class Pruned:
    removed: list[str]  # paths relative to FAULTBOOK_HOME
    failed: list[str]  # "path: why" for folders that could not be removed
    entry: dict[str, Any] | None  # the audit entry (None: nothing removed, or a dry run)


def prune(
    p: Policy, home: Path | None = None, now: datetime | None = None, dry_run: bool = False
) -> Pruned:
    """Remove the runs P does not keep and record it in the audit log (under its lock)."""
    home = home or faultbook_home()
    if dry_run:
        victims = select(store.runs(home), p, now)
        return Pruned([str(r.path.relative_to(home)) for r in victims], [], None)
    with audit.locked(home) as w:
        archived = {str(e.get("path")): e.get("seq") for e in audit.entries(home)}
        removed: list[dict[str, Any]] = []
        failed: list[str] = []
        for r in select(store.runs(home), p, now):
            rel = str(r.path.relative_to(home))
            try:
                shutil.rmtree(r.path)
            except OSError as exc:
                failed.append(f"{rel}: {exc.strerror or exc}")
                log.warning("cannot prune %s: %s", rel, exc)
                continue
            removed.append({"path": rel, "runbook": r.runbook, "entry": archived.get(rel)})
        entry = None
        if removed:
            entry = w.append({"kind": "prune", "policy": asdict(p), "removed": removed})
    return Pruned([r["path"] for r in removed], failed, entry)
