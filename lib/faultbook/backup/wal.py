"""WAL segment names, timeline histories and the continuity of a WAL archive.

Names follow PostgreSQL >= 9.3: ``TTTTTTTTLLLLLLLLSSSSSSSS`` (timeline, log
id, segment, hexadecimal). With 16 MiB segments a log id holds segments
00..FF, then the log id goes up: ``000000010000000A000000FF`` is followed by
``000000010000000B00000000`` (before 9.3 segment FF was skipped).

A restore replays every segment from the backup's first one to the target,
along the target timeline's history: for each timeline on the way, the full
segments from where it began up to where its child branched off. The child's
own copy of the switch segment holds the rest (the parent's copy is the
``.partial`` file the promoted standby archived). ``wal_archive_continuity``
checks exactly that from a listing of the archive, with the history file
when there is one and from the names alone otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from faultbook.errors import ParseError
from faultbook.stack.psql import parse_lsn

WAL_SEGMENT_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True, order=True)
class WalSegment:
    """A WAL segment file name: timeline, log id and segment (PostgreSQL >= 9.3 numbering)."""

    timeline: int
    log: int
    seg: int

    @classmethod
    def parse(cls, name: str, segment_size: int = WAL_SEGMENT_SIZE) -> WalSegment:
        if not re.fullmatch(r"[0-9A-Fa-f]{24}", name):
            raise ParseError(f"{name!r} is not a WAL segment name (24 hexadecimal digits)")
        seg = cls(int(name[:8], 16), int(name[8:16], 16), int(name[16:], 16))
        if seg.seg >= segments_per_log(segment_size):
            raise ParseError(
                f"{name!r}: segment {seg.seg:X} is beyond the last one of a log id "
                f"({segments_per_log(segment_size) - 1:X} with {segment_size >> 20} MiB segments)"
            )
        return seg

    @classmethod
    def from_number(
        cls, timeline: int, number: int, segment_size: int = WAL_SEGMENT_SIZE
    ) -> WalSegment:
        log_id, seg = divmod(number, segments_per_log(segment_size))
        return cls(timeline, log_id, seg)

    @property
    def name(self) -> str:
        return f"{self.timeline:08X}{self.log:08X}{self.seg:08X}"

    def number(self, segment_size: int = WAL_SEGMENT_SIZE) -> int:
        """The position of the segment in the WAL stream, the same on every timeline."""
        return self.log * segments_per_log(segment_size) + self.seg

    def __str__(self) -> str:
        return self.name


def segments_per_log(segment_size: int = WAL_SEGMENT_SIZE) -> int:
    """Segments in one log id: 0x100 with 16 MiB segments (00..FF), 0x40 with 64 MiB."""
    if segment_size <= 0 or segment_size & (segment_size - 1) or segment_size > 1 << 30:
        raise ParseError(f"WAL segment size {segment_size} is not a power of two up to 1 GiB")
    return 0x1_0000_0000 // segment_size


def next_segment(name: str, segment_size: int = WAL_SEGMENT_SIZE) -> str:
    """The segment after ``name`` on the same timeline (…000000FF -> next log id, 00)."""
    s = WalSegment.parse(name, segment_size)
    return WalSegment.from_number(s.timeline, s.number(segment_size) + 1, segment_size).name


def segment_of_lsn(lsn: int, timeline: int = 1, segment_size: int = WAL_SEGMENT_SIZE) -> str:
    """The name of the segment that holds ``lsn`` on ``timeline``."""
    return WalSegment.from_number(timeline, lsn // segment_size, segment_size).name


_WAL_FILE = re.compile(
    r"(?P<name>[0-9A-F]{24})(?P<partial>\.partial)?(?:-[0-9a-f]{40})?(?:\.(?:gz|bz2|lz4|zst))?"
)
_HISTORY_FILE = re.compile(r"(?P<tli>[0-9A-F]{8})\.history")


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a timeline history file: ``parent`` ended at ``switch_lsn``."""

    parent: int
    switch_lsn: int
    reason: str = ""


def parse_history(text: str) -> list[HistoryEntry]:
    """A ``NNNNNNNN.history`` file: one line per ancestor timeline, oldest first."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2:
            raise ParseError(f"history line {line!r}: expected 'timeline<TAB>lsn<TAB>reason'")
        entries.append(HistoryEntry(int(parts[0]), parse_lsn(parts[1]), (parts[2:] or [""])[0]))
    return entries


@dataclass(frozen=True)
class WalGap:
    """Missing segments ``first``..``last`` (names) on ``timeline``."""

    timeline: int
    first: str
    last: str
    count: int

    def __str__(self) -> str:
        span = self.first if self.count == 1 else f"{self.first}..{self.last}"
        return f"{span} ({self.count} segment{'s' if self.count != 1 else ''})"


@dataclass(frozen=True)
class WalContinuity:
    """The archive along the newest timeline's history: segments present and gaps."""

    first: str | None
    last: str | None
    timelines: tuple[int, ...]
    segments: int
    gaps: tuple[WalGap, ...] = ()
    history_known: bool = False

    @property
    def ok(self) -> bool:
        return not self.gaps and self.last is not None

    @property
    def missing(self) -> int:
        return sum(g.count for g in self.gaps)

    def summary(self) -> str:
        if self.last is None:
            return "no archived WAL segment"
        tl = " -> ".join(str(t) for t in self.timelines)
        head = f"{self.segments} segments {self.first}..{self.last} on timelines {tl}"
        if self.ok:
            return f"{head}: continuous"
        return f"{head}: {self.missing} missing: " + ", ".join(str(g) for g in self.gaps)


@dataclass(frozen=True)
class ArchiveListing:
    """Segment numbers of an archive listing, per timeline."""

    full: Mapping[int, frozenset[int]]
    partial: Mapping[int, frozenset[int]]
    histories: frozenset[int]

    def first(self, timeline: int) -> int:
        """The first segment number (full or .partial) archived on ``timeline``."""
        return min(self.full.get(timeline, frozenset()) | self.partial.get(timeline, frozenset()))

    @property
    def timelines(self) -> list[int]:
        """Timelines with at least one segment (full or .partial), ascending."""
        return sorted(set(self.full) | set(self.partial))

    @property
    def newest_timeline(self) -> int:
        """The highest timeline with a segment or a history file (0: none)."""
        return max([*self.timelines, *self.histories], default=0)


def wal_files(files: Iterable[str], segment_size: int = WAL_SEGMENT_SIZE) -> ArchiveListing:
    """Sort archive paths into full and .partial segments and history files."""
    full: dict[int, set[int]] = {}
    partial: dict[int, set[int]] = {}
    histories: set[int] = set()
    for path in files:
        base = path.rsplit("/", 1)[-1]
        h = _HISTORY_FILE.fullmatch(base)
        if h:
            histories.add(int(h["tli"], 16))
            continue
        m = _WAL_FILE.fullmatch(base)
        if not m:
            continue  # .backup labels and anything else
        seg = WalSegment.parse(m["name"], segment_size)
        kind = partial if m["partial"] else full
        kind.setdefault(seg.timeline, set()).add(seg.number(segment_size))
    return ArchiveListing(
        {t: frozenset(v) for t, v in full.items()},
        {t: frozenset(v) for t, v in partial.items()},
        frozenset(histories),
    )


def _inferred_chain(listing: ArchiveListing, newest: int) -> list[tuple[int, int | None]]:
    """Guess the newest timeline's ancestry from file names alone: (timeline, begin) pairs.

    A timeline's parent is the highest lower timeline that began at or
    before it. The switch segment is the parent's last .partial segment at
    or before the child's first segment (the promoted standby archives the
    parent's copy as .partial), else the child's first segment.
    """
    chain: list[tuple[int, int | None]] = []
    child = newest
    begin = listing.first(newest)
    while True:
        parents = [t for t in listing.timelines if t < child and listing.first(t) <= begin]
        if not parents:
            break
        parent = parents[-1]
        ends = [n for n in listing.partial.get(parent, ()) if n <= begin]
        begin = max(ends, default=begin)
        chain.insert(0, (child, begin))
        child, begin = parent, listing.first(parent)
    return [(child, None), *chain]


def wal_archive_continuity(
    files: Iterable[str],
    history: Sequence[HistoryEntry] | None = None,
    timeline: int | None = None,
    required_from: str | None = None,
    segment_size: int = WAL_SEGMENT_SIZE,
) -> WalContinuity:
    """Check the archive holds every segment a restore to the newest timeline replays.

    ``files``: archive paths as ``repo-ls --recurse`` lists them (names with
    pgBackRest's checksum and compression suffixes; ``.partial``, ``.backup``
    and ``.history`` files are recognised). ``history``: the entries of the
    followed timeline's history file (``parse_history``); without it the
    timelines' parents and switch segments are inferred from the names.
    ``timeline``: the timeline to follow (default: the newest one found).
    ``required_from``: the first segment needed (the oldest backup's
    ``wal_start``): the check starts there, and segments missing between it
    and the archive's oldest one are a gap. Without it the check starts at
    the oldest segment on the followed path.
    """
    listing = wal_files(files, segment_size)
    full = listing.full
    if history is not None:
        newest = timeline or listing.newest_timeline
    else:  # a timeline with a history file and no segment yet adds nothing to follow
        newest = timeline or max(listing.timelines, default=0)
    if not newest or (history is None and newest not in listing.timelines):
        return WalContinuity(None, None, (newest,) if newest else (), 0)
    # The path to the newest timeline: (timeline, first segment number on it).
    chain: list[tuple[int, int | None]]
    if history is not None:
        begins = [None, *(e.switch_lsn // segment_size for e in history)]
        chain = list(zip([e.parent for e in history] + [newest], begins, strict=True))
    else:
        chain = _inferred_chain(listing, newest)
    timelines = tuple(t for t, _ in chain)
    present = [n for t, _ in chain for n in full.get(t, ())]
    if required_from is not None:
        start = WalSegment.parse(required_from, segment_size).number(segment_size)
    elif present:
        start = min(present)
    else:
        return WalContinuity(None, None, timelines, 0, (), history is not None)
    gaps: list[WalGap] = []
    held: list[WalSegment] = []
    # A parent is needed up to its child's switch segment (the child's copy holds that
    # one); the followed timeline up to its last archived segment.
    ends: list[int | None] = [(begin or 0) - 1 for _, begin in chain[1:]] + [None]
    for (tli, begin), end in zip(chain, ends, strict=True):
        have = full.get(tli, frozenset())
        lo = start if begin is None else max(begin, start)
        hi = end if end is not None else (max(have) if have else lo - 1)
        missing = [n for n in range(lo, hi + 1) if n not in have]
        for run in _runs(missing):
            gaps.append(
                WalGap(
                    tli,
                    WalSegment.from_number(tli, run[0], segment_size).name,
                    WalSegment.from_number(tli, run[-1], segment_size).name,
                    len(run),
                )
            )
        held += [
            WalSegment.from_number(tli, n, segment_size) for n in sorted(have) if lo <= n <= hi
        ]
    return WalContinuity(
        held[0].name if held else None,
        held[-1].name if held else None,
        timelines,
        len(held),
        tuple(gaps),
        history is not None,
    )


def _runs(numbers: Sequence[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for n in numbers:
        if runs and runs[-1][-1] == n - 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return runs
