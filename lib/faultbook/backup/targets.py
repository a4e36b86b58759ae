"""Restore targets: ``parse_target`` reads what a person typed ("time", "lsn", "name",
"latest"); ``check_target`` refuses a target no backup can reach, with one line that says
what the earliest possible point is; ``backup_for_target`` names the backup pgBackRest
should restore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from faultbook.errors import BackupError, RestoreTargetError
from faultbook.stack.psql import format_lsn, parse_lsn

TARGET_KINDS = ("time", "lsn", "name", "latest")


# ---------------------------------------------------------- restore targets
def _aware(ts: datetime, what: str) -> datetime:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise RestoreTargetError(f"{what}={ts!r} has no time zone: expected a UTC datetime")
    return ts.astimezone(UTC)


def _iso(ts: Any) -> str:
    t = pd.Timestamp(ts).tz_convert("UTC")
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text + "Z"


def require_backups(backups_df: pd.DataFrame) -> None:
    """BackupError when the repository holds no backup at all."""
    if backups_df.empty:
        raise BackupError(
            "the repository holds no backup; take one with `faultbook backup now --type full`"
        )


@dataclass(frozen=True)
class RestoreTarget:
    """Where a point-in-time restore stops. ``value`` is what the person typed."""

    kind: str
    value: str
    time: datetime | None = field(default=None, compare=False)
    lsn: int | None = field(default=None, compare=False)

    def __str__(self) -> str:
        if self.kind in ("latest", "immediate"):
            return self.kind
        return f"{self.kind} {self.value}"

    def pgbackrest_options(self) -> list[str]:
        """``pgbackrest restore`` options for this target (type and target)."""
        if self.kind == "latest":
            return ["--type=default"]
        if self.kind == "immediate":
            return ["--type=immediate"]
        if self.kind == "time":
            assert self.time is not None
            t = self.time.astimezone(UTC)
            return ["--type=time", f"--target={t.strftime('%Y-%m-%d %H:%M:%S.%f')}+00"]
        if self.kind == "lsn":
            assert self.lsn is not None
            return ["--type=lsn", f"--target={format_lsn(self.lsn)}"]
        return ["--type=name", f"--target={self.value}"]


def parse_target(kind: str, value: str = "") -> RestoreTarget:
    """Read a restore target; RestoreTargetError (exit 2) when it is malformed.

    time:   ISO 8601 with a time zone ("2026-11-27T14:05:00Z",
            "2026-11-27 15:05:00+01:00"); a time without a zone is refused.
    lsn:    "X/Y" in hexadecimal ("0/3000060").
    name:   a restore point created with pg_create_restore_point (< 64 chars).
    latest: the end of the archived WAL (``value`` is ignored).
    """
    kind = kind.strip().lower()
    value = (value or "").strip()
    if kind not in TARGET_KINDS:
        raise RestoreTargetError(
            f"unknown restore target kind {kind!r}; expected one of {', '.join(TARGET_KINDS)}"
        )
    if kind == "latest":
        return RestoreTarget("latest", "latest")
    if kind == "time":
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            raise RestoreTargetError(
                f"restore target time {value!r} is not a time: expected ISO 8601 with a time "
                "zone, e.g. 2026-11-27T14:05:00Z"
            ) from None
        if t.tzinfo is None or t.utcoffset() is None:
            raise RestoreTargetError(
                f"restore target time {value!r} has no time zone: add Z for UTC or an offset "
                "such as +01:00"
            )
        return RestoreTarget("time", value, time=t.astimezone(UTC))
    if kind == "lsn":
        try:
            return RestoreTarget("lsn", value.upper(), lsn=parse_lsn(value))
        except ValueError as exc:
            raise RestoreTargetError(f"restore target {exc}") from None
    if not value or len(value) >= 64 or any(c in value for c in "\n\r\0'"):
        raise RestoreTargetError(
            f"restore point name {value!r} is invalid: expected 1 to 63 characters, "
            "no quote or line break"
        )
    return RestoreTarget("name", value)


def check_label(backups_df: pd.DataFrame, label: str) -> None:
    """RestoreTargetError listing the known labels when ``label`` is not a backup."""
    if label not in set(backups_df["label"]):
        known = ", ".join(backups_df["label"]) or "none"
        raise RestoreTargetError(f"unknown backup label {label!r}; known labels: {known}")


def _row(backups_df: pd.DataFrame, label: str) -> pd.Series:
    return backups_df[backups_df["label"] == label].iloc[0]


def check_target(
    target: RestoreTarget,
    backups_df: pd.DataFrame,
    now: datetime,
    label: str | None = None,
    current_lsn: str | None = None,
) -> None:
    """Refuse a target no backup in ``backups_df`` can reach, in one line.

    A time target must lie between the oldest backup's end and ``now``; an
    LSN target at or after the oldest backup's stop LSN (and not beyond
    ``current_lsn`` when given). With ``label`` the target must lie after
    that backup's end. Named restore points cannot be checked before
    recovery reaches them; only the label is checked for them.
    """
    require_backups(backups_df)
    now = _aware(now, "now")
    if label is not None:
        check_label(backups_df, label)
    oldest = backups_df.iloc[0]
    if target.kind == "time":
        assert target.time is not None
        t = pd.Timestamp(target.time)
        if t > pd.Timestamp(now):
            raise RestoreTargetError(
                f"restore target {target.value} is in the future (it is now {_iso(now)})"
            )
        if t < oldest["stop"]:
            raise RestoreTargetError(
                f"restore target {target.value} is before the oldest backup ({oldest['label']}, "
                f"ended {_iso(oldest['stop'])}); the earliest point you can restore to is "
                f"{_iso(oldest['stop'])}"
            )
        if label is not None and t < _row(backups_df, label)["stop"]:
            b = _row(backups_df, label)
            raise RestoreTargetError(
                f"restore target {target.value} is before backup {label} ended "
                f"({_iso(b['stop'])}); choose a later target or an older backup"
            )
    elif target.kind == "lsn":
        assert target.lsn is not None
        stops = backups_df["lsn_stop"].dropna()
        if stops.empty:
            raise BackupError("pgbackrest info reports no backup LSNs (pgBackRest < 2.36?)")
        first = backups_df.loc[stops.index[0]]
        if target.lsn < parse_lsn(str(first["lsn_stop"])):
            raise RestoreTargetError(
                f"restore target LSN {target.value} is before the oldest backup "
                f"({first['label']}, ended at LSN {first['lsn_stop']}); the earliest point you "
                f"can restore to is {first['lsn_stop']}"
            )
        if current_lsn is not None and target.lsn > parse_lsn(current_lsn):
            raise RestoreTargetError(
                f"restore target LSN {target.value} is in the future (the primary is at "
                f"{current_lsn})"
            )
        if label is not None:
            b = _row(backups_df, label)
            if b["lsn_stop"] is not None and target.lsn < parse_lsn(str(b["lsn_stop"])):
                raise RestoreTargetError(
                    f"restore target LSN {target.value} is before backup {label} ended "
                    f"(LSN {b['lsn_stop']}); choose a later target or an older backup"
                )


def backup_for_target(backups_df: pd.DataFrame, target: RestoreTarget) -> str:
    """The label of the newest backup that ended at or before ``target``.

    "latest" and named restore points: the newest backup (a restore point
    older than that needs an explicit, older label). Raises like
    ``check_target`` when no backup ended before the target.
    """
    require_backups(backups_df)
    if target.kind in ("latest", "name", "immediate"):
        return str(backups_df.iloc[-1]["label"])
    if target.kind == "time":
        assert target.time is not None
        ok = backups_df[backups_df["stop"] <= pd.Timestamp(target.time)]
    else:
        assert target.lsn is not None
        lsn = target.lsn
        stops = backups_df["lsn_stop"].map(lambda v: parse_lsn(v) if v else None)
        ok = backups_df[stops.map(lambda v: v is not None and v <= lsn).astype(bool)]
    if ok.empty:
        check_target(target, backups_df, datetime.now(UTC))
        raise RestoreTargetError(f"no backup ended before restore target {target}")
    return str(ok.sort_values("stop", kind="stable").iloc[-1]["label"])


IMMEDIATE = RestoreTarget("immediate", "immediate")


def as_target_time(when: datetime) -> RestoreTarget:
    """A time target for ``when``, in UTC."""
    return parse_target("time", when.astimezone(UTC).isoformat())


def lsn_after(a: str, b: str) -> bool:
    """Whether LSN ``a`` is later than LSN ``b``."""
    return parse_lsn(a) > parse_lsn(b)
