"""The ledger proofs: a restored copy against what the load generator's clients were told.

A restore to a target is exact when every write acknowledged before the target is in the
copy and no write sent after it is (``prove_pitr``); a bad-change recovery is exact when the
rows that came back are exactly the ones the change deleted (``prove_recovered``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd


@dataclass(frozen=True)
class PitrProof:
    """A restored copy against the ledger of what clients were told."""

    cut_from: datetime
    cut_to: datetime
    acked_before: int  # writes acknowledged before the target
    sent_after: int  # writes sent after the target
    uncertain: int  # sent before, answered after: either outcome is correct
    missing: tuple[int, ...]  # acknowledged before the target, not in the copy
    unexpected: tuple[str, ...]  # sent after the target, in the copy (idempotency keys)
    rows: int  # ledger rows of this load in the copy

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected and self.acked_before > 0

    def summary(self) -> str:
        verdict = "EXACT" if self.ok else "WRONG"
        return (
            f"{verdict}: {self.acked_before} writes acknowledged before the target, "
            f"{len(self.missing)} of them missing; {self.sent_after} sent after it, "
            f"{len(self.unexpected)} of them present; {self.uncertain} in flight at the target"
        )


def _writes(records: pd.DataFrame) -> pd.DataFrame:
    return records[records["kind"].astype(str).str.upper() == "POST"]


def prove_pitr(
    records: pd.DataFrame,
    restored: pd.DataFrame,
    cut_from: datetime,
    cut_to: datetime | None = None,
) -> PitrProof:
    """Check a restored copy against the load's records for a target between two instants.

    ``cut_from``..``cut_to`` brackets the target as the client saw it (equal
    for a time target; the call that created an LSN or restore point for
    the others). Every write answered OK before ``cut_from`` must be in the
    copy (by id and idempotency key); no write sent after ``cut_to`` may be.
    """
    cut_to = cut_to or cut_from
    w = _writes(records)
    a = pd.Timestamp(cut_from)
    b = pd.Timestamp(cut_to)
    acked = w[w["ok"] & w["order_id"].notna() & (w["answered_at"] < a)]
    after = w[w["sent_at"] > b]
    uncertain = len(w) - len(acked) - len(after) - len(w[~w["ok"] & (w["answered_at"] < a)])
    keys = set(restored["idempotency_key"].astype(str))
    ids = set(int(i) for i in restored["id"])
    missing = tuple(
        sorted(
            int(oid)
            for oid, key in zip(acked["order_id"], acked["idempotency_key"], strict=True)
            if int(oid) not in ids or str(key) not in keys
        )
    )
    unexpected = tuple(sorted(str(k) for k in after["idempotency_key"] if str(k) in keys))
    return PitrProof(
        cut_from=cut_from,
        cut_to=cut_to,
        acked_before=len(acked),
        sent_after=len(after),
        uncertain=max(uncertain, 0),
        missing=missing,
        unexpected=unexpected,
        rows=len(restored),
    )


@dataclass(frozen=True)
class Recovered:
    """Rows in the restored copy that production no longer has."""

    rows: pd.DataFrame = field(repr=False)
    expected: tuple[int, ...]  # what the bad change deleted, when known
    missing: tuple[int, ...]  # deleted, yet not in the copy
    extra: tuple[int, ...]  # in the copy and gone from production, not deleted by the change

    @property
    def ids(self) -> set[int]:
        return set(int(i) for i in self.rows["id"])

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra and len(self.rows) > 0


def prove_recovered(
    restored: pd.DataFrame, production_ids: Iterable[int], deleted: Iterable[int] | None = None
) -> Recovered:
    """The rows that came back: in the copy, not in production; against what was deleted."""
    prod = set(int(i) for i in production_ids)
    back = restored[~restored["id"].astype(int).isin(prod)].reset_index(drop=True)
    got = set(int(i) for i in back["id"])
    exp = set(int(i) for i in deleted) if deleted is not None else got
    return Recovered(
        rows=back,
        expected=tuple(sorted(exp)),
        missing=tuple(sorted(exp - got)),
        extra=tuple(sorted(got - exp)),
    )
