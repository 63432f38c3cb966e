"""Splitting a long read of `indexed_on` into windows that can be read side by side.

HQ pages a list by `indexed_on_start`, so one read is strictly sequential: the next page's start
is the last page's end. Against real HQ (1–5 s per full page) that leaves the warehouse idle
most of the time. A range that holds many pages is therefore cut into windows of about the same
number of records, `[start, end]` each, inclusive, on whole milliseconds (so no millisecond,
and no tie inside one, is split between two windows), and the windows are read at once, each
with a checkpoint of its own.

The plan costs a few one-record requests: HQ's `total_count` for a range is exact, so ranges
are halved in time, and the halves counted, until each is small enough; then neighbours are
joined into windows. Data that is bunched in time (a bulk import, a re-index) just takes a
few more halvings there.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from etl.dates import ONE_MS, format_iso, parse_hq_datetime, truncate_ms
from etl.extract.streams import IndexedOnStream

ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class Window:
    start: datetime | None  # None: from the beginning
    end: datetime | None  # inclusive; None: on to whatever HQ has when the window is read

    def to_json(self) -> list:
        return [format_iso(self.start) if self.start else None,
                format_iso(self.end) if self.end else None]

    @classmethod
    def parse(cls, saved: list) -> "Window":
        return cls(*(parse_hq_datetime(v) if v else None for v in saved))


@dataclass
class _Range:
    start: datetime  # whole ms
    end: datetime  # exclusive, whole ms
    count: int
    stuck: int = 0  # halvings in a row that split nothing off (one side empty or nearly)


STUCK_SPLITS = 3  # a range is not halved again after this many halvings that split nothing


def plan(stream: IndexedOnStream, start: datetime, total: int, *, parts: int,
         min_records: int, concurrency: int = 1,
         max_probes: int | None = None) -> list[Window]:
    """Windows from `start` on, holding about the same number of records each, the last one
    open-ended; `total` is HQ's count from `start` on. A single window when there are too
    few records for splitting to pay, or they cannot be split."""
    if parts < 2 or total < 2 * min_records:
        return [Window(start, None)]
    _, newest = stream.probe(start, None, newest=True)
    if newest is None or newest <= truncate_ms(start):
        return [Window(start, None)]
    target = max(min_records, math.ceil(total / parts))
    pieces = [_Range(truncate_ms(start), newest + ONE_MS, total)]
    probes, max_probes = 1, 2 * parts if max_probes is None else max_probes
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        while probes < max_probes:
            big = [i for i, p in enumerate(pieces) if p.count > target
                   and p.end - p.start > ONE_MS and p.stuck < STUCK_SPLITS]
            if not big:
                break
            big = big[:max_probes - probes]
            middles = [_middle(pieces[i]) for i in big]
            answers = list(pool.map(lambda a: stream.probe(a[0], a[1] - ONE_US),
                                    [(pieces[i].start, m) for i, m in zip(big, middles)]))
            probes += len(big)
            for i, middle, (left, first) in sorted(zip(big, middles, answers), reverse=True,
                                                   key=lambda x: x[0]):
                pieces[i:i + 1] = _halves(pieces[i], middle, left, first)
    return _join(pieces, start, target)


def _halves(piece: _Range, middle: datetime, left: int, first: datetime | None) -> list[_Range]:
    """The piece split at `middle`, `left` records (the first at `first`) before it. Records
    bunched in time (a bulk import, one busy millisecond) split nothing off a few times in a
    row; then the piece is left whole."""
    left = min(left, piece.count)  # counts taken a moment apart may disagree a little
    right = piece.count - left
    begin = max(piece.start, first) if first is not None else piece.start
    if not left:
        return [_Range(middle, piece.end, right, piece.stuck + 1)]
    if not right:
        return [_Range(begin, middle, left, piece.stuck + 1)]
    stuck = piece.stuck + 1 if min(left, right) < piece.count / 20 else 0
    return [_Range(begin, middle, left, stuck), _Range(middle, piece.end, right, stuck)]


def _middle(piece: _Range) -> datetime:
    half = (piece.end - piece.start) / 2
    return piece.start + max(ONE_MS, half - half % ONE_MS)


def _join(pieces: list[_Range], start: datetime, target: int) -> list[Window]:
    """Neighbouring pieces joined into windows of about `target` records; the first window
    starts at `start`, each ends 1 µs before the next begins, the last is open-ended."""
    cuts: list[datetime] = []
    held = 0
    for piece in pieces:
        if held >= target and piece.count:
            cuts.append(piece.start)
            held = 0
        held += piece.count
    if cuts and held < target / 2:  # a short tail joins the window before it
        cuts.pop()
    return [Window(lo, hi - ONE_US if hi is not None else None)
            for lo, hi in zip([start, *cuts], [*cuts, None])]
