"""Splitting a long read of `indexed_on` into windows that can be read side by side.

HQ pages a list by `indexed_on_start`, so one read is strictly sequential: the next page's start
is the last page's end. Against real HQ (1–5 s per full page) that leaves the warehouse idle
most of the time. A range that holds many pages is therefore cut into windows of about the same
number of records, `[start, end]` each, inclusive, on whole milliseconds (so no millisecond,
and no tie inside one, is split between two windows), and the windows are read at once, each
with a checkpoint of its own.

The plan costs a few one-record requests, in two rounds (HQ's `total_count` for a range is
exact): the newest record, then the count of each of a few equal slices of time, read at once;
the slices' time is then cut into windows of about the same count, one per reader, a cut
inside a slice placed as if its records were spread evenly over it. Data bunched in time (a
bulk import, a re-index) inside one slice leaves the windows around it uneven. Case
API v2 lists oldest first only: its slices reach up to now, and are cut again up to the last
that held records, a round at a time.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, TypeVar

from etl import stopping
from etl.dates import ONE_MS, format_iso, parse_hq_datetime, truncate_ms
from etl.extract.streams import IndexedOnStream

ONE_US = timedelta(microseconds=1)
T = TypeVar("T")


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
    count: int


def plan(stream: IndexedOnStream, start: datetime, total: int, *, parts: int,
         min_records: int, concurrency: int = 1, until: datetime | None = None,
         reach: datetime | None = None,
         newest: Future[tuple[int, datetime | None]] | None = None) -> list[Window]:
    """Windows from `start` on, holding about the same number of records each, the last one
    ending at `until` (a backfill's end), or open-ended; `total` is HQ's count from `start`
    on. A single window when there are too few records for splitting to pay, or they cannot
    be split.

    Two rounds of requests whatever HQ's speed (with `concurrency` >= 2 x `parts`): the
    newest record's `indexed_on`, then the count of each of 2 x `parts` equal slices of time
    up to it, all at once; their time is cut into windows of about `total / parts` records
    (at least `min_records`). A list that cannot be read newest first (Case API v2) is
    sliced up to `reach` (a guess at where its records end) or now instead, and again up to the last slice that held records, until the last slice holds
    some (each round narrows the span 2 x `parts` times; a guess that fell short, with
    records after it, is dropped for now). `newest`: the first round, asked already (the
    newest record of `start`, or of an earlier start, on, to `until`)."""
    if parts < 2 or total < 2 * min_records:
        return [Window(start, until)]
    first = truncate_ms(start)
    if getattr(stream, "newest_first", True):
        _, last = stopping.wait_for(newest or in_background(stream.probe, start, until,
                                                              newest=True))
        if last is None or last <= first:
            return [Window(start, until)]
        end = _plus(last, ONE_MS) if until is None else min(_plus(last, ONE_MS),
                                                             _plus(until, ONE_US))
        pieces = _count(stream, first, end, 2 * parts, concurrency)
    else:
        cap = _plus(until, ONE_US) if until is not None else (
            truncate_ms(datetime.now(timezone.utc)) + ONE_MS)
        guessed = reach is not None and first < reach < cap
        end = min(cap, _plus(truncate_ms(reach), ONE_MS)) if guessed else cap
        for _ in range(MAX_ROUNDS):
            pieces = _count(stream, first, end, 2 * parts, concurrency)
            held = [n for n, piece in enumerate(pieces) if piece.count]
            last_held = not held or held[-1] == len(pieces) - 1
            if guessed and last_held and stopping.wait_for(
                    in_background(stream.probe, end, cap - ONE_US))[0]:
                guessed, end = False, cap  # the guess fell short
                continue
            if last_held:
                break
            guessed = False  # narrowed on counts from here on
            end = pieces[held[-1] + 1].start  # nothing from here on, when counted
        if not any(piece.count for piece in pieces):
            return [Window(start, until)]
    return _join(pieces, start, max(min_records, math.ceil(total / parts)), until, end)


MAX_ROUNDS = 8  # of slicing, for a list that cannot say its newest record


def _plus(moment: datetime, step: timedelta) -> datetime:
    try:
        return moment + step
    except OverflowError:  # the last moment there is (an --until of 9999-12-31)
        return moment


def _count(stream: IndexedOnStream, first: datetime, end: datetime, slices: int,
           concurrency: int) -> list[_Range]:
    """The records in each of `slices` equal slices of [first, end) on whole milliseconds,
    counted at once."""
    step = max(ONE_MS, (end - first) / slices)
    step -= step % ONE_MS
    edges = [first + n * step for n in range(slices) if first + n * step < end] + [end]
    spans = list(zip(edges, edges[1:]))
    at_once = threading.Semaphore(max(1, concurrency))

    def count(lo: datetime, hi: datetime) -> int:
        with at_once:
            return stream.probe(lo, hi - ONE_US)[0]

    asked = [in_background(count, lo, hi) for lo, hi in spans]
    return [_Range(lo, stopping.wait_for(n)) for (lo, _), n in zip(spans, asked)]


def in_background(function: Callable[..., T], *args, **kwargs) -> Future[T]:
    """`function(*args, **kwargs)` on a daemon thread: a run stopped meanwhile neither waits
    for it (stopping.wait_for) nor is held by it at exit (an executor's thread would be)."""
    future: Future[T] = Future()

    def run() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(function(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the result
            future.set_exception(exc)

    threading.Thread(target=run, name="hq-plan", daemon=True).start()
    return future


def _join(pieces: list[_Range], start: datetime, target: int,
          until: datetime | None = None, end: datetime | None = None) -> list[Window]:
    """The pieces' time cut into windows of about `target` records each, about the same number
    in each; the first window starts at `start`, each ends 1 µs before the next begins, the
    last at `until` (None: open-ended). A cut may fall inside a piece, where its records are
    taken as spread evenly over it (a piece ends where the next begins, the last at `end`;
    without `end`, a cut in the last piece falls at its start); cuts are on whole ms."""
    held = sum(piece.count for piece in pieces)
    parts = max(1, round(held / max(1, target)))
    ends = [piece.start for piece in pieces[1:]] + [end]
    cuts: list[datetime] = []
    before = 0  # records in the pieces before this one
    goals = iter(k * held / parts for k in range(1, parts))
    goal = next(goals, None)
    for piece, piece_end in zip(pieces, ends):
        while goal is not None and before + piece.count >= goal and piece.count:
            cut = piece.start
            if piece_end is not None:
                cut += (piece_end - piece.start) * ((goal - before) / piece.count)
            cut = truncate_ms(cut)
            if cut > (cuts[-1] if cuts else start):
                cuts.append(cut)
            goal = next(goals, None)
        before += piece.count
    return [Window(lo, hi - ONE_US if hi is not None else until)
            for lo, hi in zip([start, *cuts], [*cuts, None])]
