"""What a drill did to the clients: RTO, lost writes, failures, latency — from traffic records.

``DrillResult.from_records`` reads the per-request records of
``faultbook.traffic`` (columns ``kind``, ``sent_at``, ``answered_at``,
``latency_ms``, ``status``, ``ok``, ``order_id``) and computes:

RTO (``rto_s``): the longest client-visible write outage, 0.0 when there was none.

1. Acks are the ``answered_at`` times of successful POSTs, sorted. A virtual
   ack is added at the run start (the earliest ``sent_at`` of any request).
2. The intervals considered are those between consecutive acks, plus a final
   interval from the last ack to the run end (the latest ``answered_at`` or
   ``sent_at`` of any request). A POST belongs to the interval its
   ``sent_at`` falls in: ``ack_k <= sent_at < ack_k+1`` (the final interval
   includes the run end).
3. An interval between two acks is an outage when (a) a POST sent in it
   failed (``ok`` False), or (b) it is longer than ``stall_s`` (writes
   stalled even though nothing failed). The final interval is an outage only
   when a POST sent in it failed, or it is longer than ``stall_s`` and POSTs
   sent in it never succeeded; such an outage has ``recovered=False``.
4. ``rto_s`` is the longest outage. Outages are reported separately even when
   adjacent (they share an ack, e.g. a flapping service).

So a clean outage in mid-run lasts from the last ack before it to the first
ack after it; failures up to the end of the run last until the run end and
make ``recovered`` False. ``stall_s`` must exceed the normal spacing of acks
(about ``1 / (rps * post_ratio)``), else ordinary gaps count as stalls; a
warning is logged when the median spacing exceeds it.

Other figures
    time_to_first_write_s  from ``fault_at`` to the earliest answer of a
                           successful POST sent at or after ``fault_at``
                           (None without a fault time or such a POST).
    lost_writes, lost_ids  acknowledged order ids not in ``present_ids`` (the ids
                           on the current primary). With ``present_ids=None`` the
                           check is not made: 0, [] and ``lost_writes_checked``
                           False.
    acked_writes           distinct acknowledged order ids.
    failed_requests        requests with ``ok`` False (saturated ones included);
                           failed_writes / failed_reads split them by POST / GET.
                           GET failures never make a write outage.
    p50_ms, p99_ms         latency percentiles (linear interpolation) over the
                           requests that got an HTTP answer (``status != 0``);
                           None when there is none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from faultbook.errors import ParameterError
from faultbook.results import BASE_METRICS, Run

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("kind", "sent_at", "answered_at", "latency_ms", "status", "ok", "order_id")


@dataclass(frozen=True)
class Outage:
    """One client-visible write outage: from the ack before it to the ack after it
    (or to the run end when writes never came back)."""

    start: datetime
    end: datetime
    duration_s: float
    failed_writes: int
    recovered: bool


@dataclass(frozen=True)
class DrillResult:
    """The client's view of a drill; see the module docstring for the definitions."""

    rto_s: float
    time_to_first_write_s: float | None
    lost_writes: int
    lost_ids: list[int]
    acked_writes: int
    failed_requests: int
    total_requests: int
    failed_writes: int
    failed_reads: int
    p50_ms: float | None
    p99_ms: float | None
    outages: list[Outage]
    recovered: bool
    lost_writes_checked: bool = field(default=True)

    @classmethod
    def from_records(
        cls,
        records: pd.DataFrame,
        *,
        fault_at: datetime | None,
        present_ids: Iterable[int] | None,
        stall_s: float = 1.0,
    ) -> DrillResult:
        if not stall_s > 0:
            raise ParameterError(f"stall_s={stall_s!r} is invalid: expected seconds > 0")
        if fault_at is not None and (fault_at.tzinfo is None or fault_at.utcoffset() is None):
            raise ParameterError(
                f"fault_at={fault_at!r} is naive: expected a timezone-aware (UTC) datetime"
            )
        df = _prepare(records)
        checked = present_ids is not None
        acked = acked_ids(df)
        lost = sorted(acked - {int(i) for i in present_ids}) if present_ids is not None else []

        is_post = df["kind"] == "POST"
        ok = df["ok"]
        answered = df.loc[df["status"] != 0, "latency_ms"].dropna()
        outages = _outages(df, stall_s)
        return cls(
            rto_s=max((o.duration_s for o in outages), default=0.0),
            time_to_first_write_s=_time_to_first_write(df, fault_at),
            lost_writes=len(lost),
            lost_ids=lost,
            acked_writes=len(acked),
            failed_requests=int((~ok).sum()),
            total_requests=len(df),
            failed_writes=int((is_post & ~ok).sum()),
            failed_reads=int((~is_post & ~ok).sum()),
            p50_ms=float(answered.quantile(0.5)) if len(answered) else None,
            p99_ms=float(answered.quantile(0.99)) if len(answered) else None,
            outages=outages,
            recovered=all(o.recovered for o in outages),
            lost_writes_checked=checked,
        )

    def metrics(self) -> dict[str, Any]:
        """Every key of results.BASE_METRICS, plus the drill's own figures."""
        m: dict[str, Any] = {
            "rto_s": self.rto_s,
            "lost_writes": self.lost_writes,
            "acked_writes": self.acked_writes,
            "failed_requests": self.failed_requests,
            "total_requests": self.total_requests,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "time_to_first_write_s": self.time_to_first_write_s,
            "failed_writes": self.failed_writes,
            "failed_reads": self.failed_reads,
            "outages": len(self.outages),
            "recovered": self.recovered,
            "lost_writes_checked": self.lost_writes_checked,
        }
        assert all(k in m for k in BASE_METRICS)
        return m

    def apply(self, run: Run) -> None:
        """Put the metrics into a runbook's result."""
        run.metrics.update(self.metrics())

    def table(self) -> pd.DataFrame:
        """One row per metric (columns ``metric`` and ``value``), for display."""
        m = self.metrics()
        return pd.DataFrame({"metric": list(m), "value": pd.Series(list(m.values()), dtype=object)})


def acked_ids(records: pd.DataFrame) -> set[int]:
    """Order ids of the POSTs that succeeded."""
    if len(records) == 0:
        return set()
    rows = records[(records["kind"] == "POST") & records["ok"].astype(bool)]
    return {int(i) for i in rows["order_id"].dropna()}


def _prepare(records: pd.DataFrame) -> pd.DataFrame:
    if len(records) == 0:
        return pd.DataFrame(
            {
                "kind": pd.Series([], dtype=str),
                "sent_at": pd.Series([], dtype="datetime64[ns, UTC]"),
                "answered_at": pd.Series([], dtype="datetime64[ns, UTC]"),
                "latency_ms": pd.Series([], dtype="float64"),
                "status": pd.Series([], dtype="int64"),
                "ok": pd.Series([], dtype=bool),
                "order_id": pd.Series([], dtype="Int64"),
            }
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in records.columns]
    if missing:
        raise ParameterError(f"traffic records lack column(s) {', '.join(missing)}")
    df = records.loc[:, list(REQUIRED_COLUMNS)].reset_index(drop=True).copy()
    for col in ("sent_at", "answered_at"):
        df[col] = pd.to_datetime(df[col], utc=True).astype("datetime64[ns, UTC]")
    if df["sent_at"].isna().any():
        raise ParameterError("traffic records have rows without sent_at")
    df["ok"] = df["ok"].fillna(False).astype(bool)
    df["status"] = pd.to_numeric(df["status"]).fillna(0).astype("int64")
    df["latency_ms"] = pd.to_numeric(df["latency_ms"]).astype("float64")
    df["kind"] = df["kind"].astype(str)
    return df


def _ns(s: pd.Series) -> np.ndarray:
    return s.to_numpy(dtype="datetime64[ns]").astype("int64")


def _ts(ns: int) -> datetime:
    return pd.Timestamp(int(ns), tz="UTC").floor("us").to_pydatetime()


def _outages(df: pd.DataFrame, stall_s: float) -> list[Outage]:
    if df.empty:
        return []
    posts = df[df["kind"] == "POST"]
    acks = np.sort(_ns(posts.loc[posts["ok"], "answered_at"].dropna()))
    run_start = int(_ns(df["sent_at"]).min())
    ends = np.concatenate([_ns(df["sent_at"]), _ns(df["answered_at"].dropna())])
    run_end = int(ends.max())
    bounds = np.concatenate([[run_start], acks]).astype("int64")
    stops = np.concatenate([bounds[1:], [max(run_end, int(bounds[-1]))]])
    n = len(bounds)

    if len(acks) >= 3:
        median_gap = float(np.median(np.diff(acks))) / 1e9
        if median_gap > stall_s:
            log.warning(
                "acks are %.2f s apart (median), more than stall_s=%g s: every gap counts as a "
                "stall; raise stall_s or the POST rate",
                median_gap,
                stall_s,
            )

    sent = _ns(posts["sent_at"])
    where = np.searchsorted(bounds, sent, side="right") - 1
    failed = np.bincount(where[~posts["ok"].to_numpy()], minlength=n)

    out = []
    for k in range(n):
        final = k == n - 1
        duration = (int(stops[k]) - int(bounds[k])) / 1e9
        if final:
            # POSTs sent after the last ack never succeeded, so (b) adds nothing
            # beyond (a); both are kept to mirror the definition.
            never_succeeded = int(failed[k])
            is_outage = failed[k] > 0 or (duration > stall_s and never_succeeded > 0)
        else:
            is_outage = failed[k] > 0 or duration > stall_s
        if is_outage:
            out.append(
                Outage(
                    start=_ts(int(bounds[k])),
                    end=_ts(int(stops[k])),
                    duration_s=duration,
                    failed_writes=int(failed[k]),
                    recovered=not final,
                )
            )
    return out


def _time_to_first_write(df: pd.DataFrame, fault_at: datetime | None) -> float | None:
    if fault_at is None or df.empty:
        return None
    t = pd.Timestamp(fault_at).tz_convert("UTC")
    writes = df[(df["kind"] == "POST") & df["ok"] & (df["sent_at"] >= t)]
    first = writes["answered_at"].dropna().min()
    if pd.isna(first):
        return None
    return float((first - t).total_seconds())
