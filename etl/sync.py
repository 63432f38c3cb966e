"""The pipeline: extract pages, transform them, load each page with its checkpoint."""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator, TypeVar

import psycopg

from etl import runinfo, sources, state, stopping
from etl.config import Settings
from etl.dates import format_iso, parse_hq_datetime
from etl.db import Warehouse
from etl.errors import (AuthError, ConfigError, EtlError, ExitCode, Interrupted,
                        describe_failure)
from etl.extract.client import HQClient, make_client
from etl.extract.cursors import Cursor, IndexedOnCursor, KeysetCursor, SnapshotCursor
from etl.extract import windows
from etl.extract.streams import Page, Stream
from etl.extract.windows import Window
from etl.load.postgres import Loader
from etl.parallel import run_parallel
from etl.transform import Batch, transform_page

__all__ = ["StreamReport", "describe_failure", "make_client", "run_backfill", "run_sync",
           "reset_streams", "sync_stream"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class StreamReport:
    domain: str
    stream: str
    command: str = "sync"
    partition: str = ""
    status: str = "running"
    records: int = 0
    inserted: int = 0
    updated: int = 0
    skipped_older: int = 0
    rejected: int = 0
    cleaned: int = 0
    marked_deleted: int = 0
    pages: int = 0
    requests: int = 0
    seconds: float = 0.0
    error: str | None = None
    cursor: Cursor | None = None
    exception: BaseException | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.stream}[{self.partition}]" if self.partition else self.stream

    def counts(self) -> dict:
        """The numbers of the summary, for JSON log lines."""
        return {"domain": self.domain, "stream": self.stream, "partition": self.partition,
                "command": self.command,
                "status": self.status, "records": self.records, "inserted": self.inserted,
                "updated": self.updated, "pages": self.pages, "requests": self.requests,
                "dead_letters": self.rejected, "seconds": round(self.seconds, 3)}

    def summary(self) -> str:
        rate = self.records / self.seconds if self.seconds else 0.0
        text = (f"{self.command} {self.label} [{self.domain}]: {self.status}; "
                f"{self.records} records ({self.inserted} new, {self.updated} updated"
                f"{f', {self.skipped_older} older ignored' if self.skipped_older else ''}) "
                f"in {self.pages} pages, {self.requests} requests, {self.seconds:.1f}s "
                f"({rate:,.0f}/s)")
        if self.marked_deleted:
            text += f"; {self.marked_deleted} no longer listed by HQ, marked deleted"
        if self.cleaned:
            text += f"; {self.cleaned} values had characters PostgreSQL cannot store removed"
        if self.rejected:
            text += f"; {self.rejected} records sent to dead_letters"
        position = self.cursor.position() if self.cursor else None
        if position:
            text += f"; checkpoint {position}"
        if self.error:
            text += f"; error: {self.error}"
        return text


def prefetch(items: Iterator[T], depth: int = 1, name: str = "hq-prefetch") -> Iterator[T]:
    """Produce the next item in a thread while the caller works on this one.

    At most `depth` items are made ahead of the one the caller holds: the thread starts on the
    next only once the caller has taken one, so memory stays flat whatever the dataset size.
    """
    slots: queue.Queue = queue.Queue()
    room = threading.Semaphore(depth)
    stop = threading.Event()
    done = object()

    def wait_for_room() -> bool:
        while not stop.is_set():
            if room.acquire(timeout=0.1):
                return True
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            while wait_for_room():
                item = next(iterator, done)
                slots.put((True, item))
                if item is done:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            slots.put((False, exc))
        finally:  # here, in the thread that runs it: a generator it reads from stops too
            _close(iterator)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            try:
                ok, item = slots.get(timeout=0.2)
            except queue.Empty:
                stopping.check()  # waiting for HQ is a safe place to stop
                continue
            if not ok:
                raise item
            if item is done:
                return
            room.release()  # the next is made while the caller works on this one
            yield item
    finally:
        stop.set()


class Progress:
    """A progress bar per stream on a terminal (records, rate, and an ETA where HQ gave a
    count); nothing elsewhere: logs, cron mails and JSON collectors get the plain lines."""

    def __init__(self, label: str, log_format: str):
        self.bar = None
        self._logs = None
        if log_format == "text" and sys.stderr.isatty():
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._logs = logging_redirect_tqdm()  # log lines print above the bar, not through it
            self._logs.__enter__()
            self.bar = tqdm(desc=label, unit=" records", leave=True, dynamic_ncols=True,
                            file=sys.stderr)

    def advance(self, records: int, total: int | None) -> None:
        if self.bar is None:
            return
        if total and not self.bar.total:
            self.bar.total = total
        self.bar.update(records)

    def close(self) -> None:
        if self.bar is not None:
            if self.bar.total and self.bar.n > self.bar.total:  # boundary records re-read
                self.bar.total = self.bar.n
            self.bar.close()
            self.bar = None
            self._logs.__exit__(None, None, None)


def sync_stream(settings: Settings, warehouse: Warehouse, client: HQClient, domain: str,
                stream_name: str, *, partition: str = "", command: str = "sync",
                start: Cursor | Callable[[Cursor], Cursor] | None = None,
                checkpoint_stream: str | None = None, cursor_extra: dict | None = None,
                forget_checkpoint_when_done: bool = False) -> StreamReport:
    """Run one stream (one partition of it) to the end. Raises on failure after recording it
    in sync_runs.

    `start`: where to read from instead of the saved cursor, or a function choosing it from
    the saved one (a backfill resuming its own window)."""
    report = StreamReport(domain=domain, stream=stream_name, command=command, partition=partition)
    checkpoint_stream = checkpoint_stream or stream_name
    source = sources.get(stream_name)
    started = time.monotonic()
    with runinfo.working_on(domain, report.label), warehouse.connect() as conn, state.stream_lock(
            conn, warehouse.schema, domain, checkpoint_stream, settings.lock_wait_seconds,
            purpose=command, partition=partition):
        raw = state.load_checkpoint(conn, warehouse.schema, domain, checkpoint_stream, partition)
        _check_server(raw, settings.commcare_base_url, domain, stream_name)
        cursor_extra = {**(cursor_extra or {}), "server": settings.commcare_base_url}
        run_id = state.start_run(conn, warehouse.schema, command, domain, checkpoint_stream,
                                 raw, partition)
        stream: Stream | None = None
        progress: Progress | None = None
        window_requests = 0
        try:
            # Inside the run: a source refusing its settings is a failed run, said in sync_runs.
            stream = source.stream(client, domain, settings, partition)
            saved = stream.cursor_kind.parse(raw)
            if callable(start):  # decided from the saved cursor, e.g. a backfill resuming
                cursor = start(saved)
            elif start is not None:
                cursor = start
            elif isinstance(saved, IndexedOnCursor):
                cursor = saved.looked_back(timedelta(seconds=settings.lookback_seconds))
            else:
                cursor = saved
            log.info("%s %s [%s]: starting from %s", command, report.label, domain,
                     cursor.describe())
            loader = Loader(conn, warehouse.schema, bi=settings.bi_tables,
                            ddl_lock_timeout=settings.ddl_lock_timeout,
                            keep=getattr(stream, "unknown_columns", ()))
            place = _Place(stream_name, checkpoint_stream, partition, domain, run_id)
            last_progress = time.monotonic()
            progress = Progress(f"{report.label} [{domain}]", settings.log_format)
            if source.target.listed:
                loader.begin_listing(source.target)
            rebuilt = 0 if is_window(partition) else loader.rebuild_pending(
                source.target, stream_name, domain)
            if rebuilt:
                log.info("%s %s [%s]: rewrote the BI rows of %d record(s) that had waited for "
                         "a new column", command, report.label, domain, rebuilt)
            # Fetching and transforming (pure) run a page ahead, in a thread, while this one
            # loads; loads stay strictly in order, one transaction per page.
            pages = stream.pages(cursor)
            planned: list[Window] = []
            if not partition and command in WINDOWED_COMMANDS and _windowed(stream, cursor):
                planned, pages = _plan_windows(settings, warehouse, loader, source, stream, pages,
                                               cursor, report, place, cursor_extra, progress)
            if planned:
                progress.close()
                window_requests, last = _read_windows(settings, warehouse, place, planned,
                                                      report, stream, cursor_extra)
                report.cursor = _finish_windows(warehouse, conn, place, cursor, last,
                                                cursor_extra)
            # One reader also asks HQ for a page as soon as the last is parsed, in a thread of
            # its own, not once it is transformed too: against a slow HQ a page then costs the
            # longest of HQ's answer, the transform and the load, not the first two added up.
            # (A window does not: windows count the pages they hold ahead, see reads_ahead.)
            fetched = pages if is_window(partition) else prefetch(pages, name="hq-fetch")
            transformed = _transform_each(loader, source, fetched, domain)
            ahead = not is_window(partition) or reads_ahead(settings, stream.page_size)
            for page, batch in (prefetch(transformed) if ahead else transformed):
                page.cursor = page.cursor.with_extra(cursor_extra)
                _load(loader, source, page, batch, report, place, stream.requests_made)
                progress.advance(batch.records, page.total)
                stopping.check()  # between pages: the last one is committed
                if time.monotonic() - last_progress > 30:
                    last_progress = time.monotonic()
                    log.info("%s %s [%s]: %d records so far, at %s", command, report.label,
                             domain, report.records, page.cursor.position() or "the start")
            if source.target.listed:  # read whole: what HQ no longer lists is marked deleted
                done = SnapshotCursor(datetime.now(timezone.utc), report.records,
                                      extra=cursor_extra)
                report.marked_deleted = loader.finish_listing(
                    source.target, checkpoint_stream, domain, done, run_id, partition)
                report.cursor = done
            if settings.bi_tables:
                _refresh_typed_views(loader)
            if forget_checkpoint_when_done:  # and any window of a plan another range left
                state.delete_checkpoints(conn, warehouse.schema, domain, [checkpoint_stream],
                                         partition or None)
            progress.close()
        except BaseException as exc:
            if progress is not None:
                progress.close()
            report.status = "failed"
            report.error = str(exc) or type(exc).__name__
            report.exception = exc
            report.seconds = time.monotonic() - started
            _finish(warehouse, conn, run_id,
                    "interrupted" if isinstance(exc, (KeyboardInterrupt, Interrupted)) else "failed",
                    describe_failure(exc), stream.requests_made if stream else 0)
            raise
        report.status = "ok"
        report.requests = stream.requests_made + window_requests
        report.seconds = time.monotonic() - started
        _finish(warehouse, conn, run_id, "ok", None, report.requests)
    log.info(report.summary(), extra={"counts": report.counts()})
    return report


# --- a long read split into windows read side by side ------------------------------------

WINDOW = "window:"  # the partition prefix of a window's checkpoint
WINDOW_PAGES = 2  # a window holds at least this many full pages
# Windows read at once hold a page each (two, reading ahead, where they fit): at most this
# many records in memory, whatever MAX_CONCURRENT_REQUESTS says (2 windows of 5,000 cases, 4
# of 1,000 forms reading a page ahead, at the defaults).
WINDOW_RECORDS_AT_ONCE = 10_000
# Windows hide HQ's time to answer. When HQ answers a page faster than this, or faster than
# the page takes to load, one reader (the next page fetched while this one loads) keeps the
# loader busy, and windows would only add requests: the loads, not HQ, take the time.
WINDOW_LATENCY = 0.25


WINDOWED_COMMANDS = ("sync", "backfill")  # reads that are split into windows when long


def is_window(partition: str) -> bool:
    return partition.startswith(WINDOW)


def windows_at_once(settings: Settings, page_size: int) -> int:
    return max(1, min(settings.max_concurrent_requests, WINDOW_RECORDS_AT_ONCE // page_size))


def reads_ahead(settings: Settings, page_size: int) -> bool:
    """Whether each window fetches its next page while it loads one: when twice the windows'
    pages still fit in WINDOW_RECORDS_AT_ONCE (4 windows of 1,000 forms do, 2 of 5,000 cases
    do not). Then HQ's time to answer hides behind the loads, not only behind each other's."""
    return 2 * windows_at_once(settings, page_size) * page_size <= WINDOW_RECORDS_AT_ONCE


WINDOWS_PAY = 0.75  # windows must save a quarter of the time: a plan costs requests and rounds
# Pages read in turn, at most, to judge whether windows pay. The first pages of a read often
# load slower (their BI tables and columns are made then): judged on two, a read of forms at
# 0.5 s a page was now and then read in turn, taking twice as long.
JUDGED_PAGES = 4


def windows_pay(answer: float, load: float, at_once: int, ahead: bool) -> bool:
    """Whether `at_once` windows would read a page in at most WINDOWS_PAY of the time one
    reader does, HQ taking `answer` seconds per page and a load `load`. One reader fetches the
    next page while one loads: a page per max(answer, load). Windows share one loader's worth
    of Python and PostgreSQL, so never beat `load`; those that read ahead wait `answer` for
    `at_once` pages, the others `answer` and `load` in turn (e.g. 2 windows of 5,000 cases,
    HQ 0.5 s, loads 0.35 s: 0.425 s against 0.5 s, not worth it)."""
    in_turn = max(answer, load)
    windowed = max(answer / at_once if ahead else (answer + load) / at_once, load)
    return windowed <= WINDOWS_PAY * in_turn


def _windowed(stream: Stream, cursor: Cursor) -> bool:
    return getattr(stream, "windowed", False) and isinstance(cursor, IndexedOnCursor)


def _next_page(pages: Iterator[Page]) -> tuple[Page | None, float]:
    """The next page (None at the end) and the seconds it took to come."""
    asked = time.monotonic()
    page = next(pages, None)
    return page, time.monotonic() - asked


def _then(pending: "Future[tuple[Page | None, float]] | None",
          pages: Iterator[Page]) -> Iterator[Page]:
    """The page asked for in the background (if any), then the rest of `pages`."""
    try:
        if pending is not None:
            page, _ = stopping.wait_for(pending)
            if page is None:
                return
            yield page
        yield from pages
    finally:
        _close(pages)


def _plan_windows(settings: Settings, warehouse: Warehouse, loader: Loader,
                  source: type[sources.Source], stream: Stream, pages: Iterator[Page],
                  cursor: IndexedOnCursor, report: StreamReport, place: _Place,
                  cursor_extra: dict, progress: Progress) -> tuple[list[Window], Iterator[Page]]:
    """The windows to read side by side, and the pages still to read one by one (none when
    there are windows). A plan saved by a run that did not finish (in the cursor the run
    starts from) is resumed. Otherwise the first pages are read in turn, the next asked for
    while one loads: HQ's count on the first says whether the rest is long enough to split,
    so a short read (a scheduled run) makes no request it would not make anyway, and HQ's
    answer time whether HQ is slow enough for windows to pay: slower than WINDOW_LATENCY and
    than loading a page. The first pages often load slower than the rest (the BI tables and
    columns their records need are made then), so up to JUDGED_PAGES pages are judged, by the
    fastest load among them, before the rest is read in turn. Once windows pay, the page
    asked for meanwhile is loaded too, and the windows begin after it."""
    if cursor.extra.get("windows"):
        planned = [Window.parse(w) for w in cursor.extra["windows"]]
        log.info("%s %s [%s]: resuming the %d windows of indexed_on an unfinished run began",
                 report.command, stream.name, place.domain, len(planned))
        return planned, iter(())
    at_once = windows_at_once(settings, stream.page_size)
    if at_once < 2:
        return [], pages
    # Of the pages loaded here: HQ's count, the distinct records read (a page re-reads the
    # last millisecond of the one before), the oldest record; the newest record, asked.
    total, read, refused, oldest, newest = None, set(), set(), None, None
    ahead = reads_ahead(settings, stream.page_size)
    fastest = float("inf")  # the fastest load among the pages judged
    # The next page is asked for while this one loads, as one reader does: reading on in turn
    # needs it, and windows, once they pay, begin after it (no page is asked for twice).
    pending: Future[tuple[Page | None, float]] | None = None
    loaded, judged, decided = 0, 0, False
    while True:
        if pending is None:
            page, waited = _next_page(pages)
        else:
            page, waited = stopping.wait_for(pending)
            pending = None
        if page is None:
            return [], pages
        if not decided:
            pending = windows.in_background(_next_page, pages)
        page.cursor = page.cursor.with_extra(cursor_extra)
        if (not decided and newest is None and waited >= WINDOW_LATENCY
                and getattr(stream, "newest_first", True)
                and ahead and isinstance(page.cursor, IndexedOnCursor) and page.cursor.indexed_on
                and (page.total or 0) - len(page.records) >= 2 * WINDOW_PAGES * stream.page_size):
            # HQ is slow: the plan's first request (the newest record) goes now, while this
            # page loads, rather than after; wasted (one small request) if the plan is not made.
            # Not for windows that cannot read ahead: they rarely pay (see windows_pay).
            newest = windows.in_background(stream.probe, page.cursor.indexed_on,
                                           page.cursor.until, newest=True)
        began = time.monotonic()
        # Read off the page before it is transformed (which lets its records go).
        if oldest is None and page.records:
            oldest = page.records[0]
        total = page.total if total is None else total  # said on a read's first page
        batch = _transformed(loader, source, page, place.domain)
        main = source.target.main
        read.update(getattr(row, main.key[1]) for row in batch.rows.get(main.name, ()))
        # A record refused in the millisecond read again is refused twice: count it once.
        refused.update(r.record_id or f"#{loaded}-{i}" for i, r in enumerate(batch.rejects))
        _load(loader, source, page, batch, report, place, stream.requests_made)
        loaded += 1
        if not decided:
            judged += 1
            fastest = min(fastest, time.monotonic() - began)
        progress.advance(batch.records, page.total)
        stopping.check()
        after = page.cursor
        # Where the windows begin: the cursor's indexed_on, or (HQ's v2 `next` holding the
        # place) the newest the page held; that millisecond is read again, and upserted the same.
        begin = page.high_water if isinstance(after, KeysetCursor) and after.next else (
            getattr(after, "indexed_on", None))
        seen = len(read | refused)
        rest = (total or 0) - seen
        if (not isinstance(after, IndexedOnCursor) or begin is None
                or rest < 2 * WINDOW_PAGES * stream.page_size
                or (not decided and waited < WINDOW_LATENCY)):
            return [], _then(pending, pages)
        if after.tie is not None:  # a page ending inside a millisecond: windows cannot begin there
            if decided or judged < JUDGED_PAGES:
                continue
            return [], _then(pending, pages)
        if decided:
            break
        if windows_pay(waited, fastest, at_once, ahead):
            decided = True  # the page asked for meanwhile is loaded first
            continue
        if judged >= JUDGED_PAGES:
            log.info("%s %s [%s]: HQ answered in %.2fs and the fastest of %d pages loaded in "
                     "%.2fs: reading the rest one page at a time, the next fetched while one "
                     "loads (windows pay only when HQ, not the loads, takes the time)",
                     report.command, stream.name, place.domain, waited, JUDGED_PAGES, fastest)
            return [], _then(pending, pages)
    pages.close()  # its next request would read what the windows read
    planned = windows.plan(stream, begin, rest, parts=at_once,
                           min_records=WINDOW_PAGES * stream.page_size,
                           concurrency=settings.max_concurrent_requests, until=after.until,
                           reach=_reach(oldest, seen, page.high_water, begin, rest),
                           newest=newest)
    if len(planned) < 2:  # nothing to split (e.g. one busy millisecond): read on in turn
        return [], stream.pages(after)
    # Saved before any window starts: a crash from here on resumes these same windows. The
    # windows of an earlier plan (a backfill of another range that did not finish) go.
    with loader.conn.transaction():
        state.delete_partitions(loader.conn, warehouse.schema, place.domain,
                                place.checkpoint_stream, WINDOW)
        state.save_checkpoint(loader.conn, warehouse.schema, place.domain,
                              place.checkpoint_stream,
                              after.with_extra({"windows": [w.to_json() for w in planned]}))
    log.info("%s %s [%s]: about %d more records from indexed_on %s on: reading them in %d "
             "windows, up to %d at once", report.command, stream.name, place.domain, rest,
             begin.isoformat(), len(planned), at_once)
    return planned, iter(())


def _reach(oldest: object, read: int, high_water: datetime | None, begin: datetime,
           rest: int) -> datetime | None:
    """Where the rest of a read may end, if it goes on as its first page did (`read` records
    from `oldest` to `high_water`), with room to spare: a first guess for a list that cannot
    say its newest record (Case API v2, whose pages go oldest first and carry the newest they
    read as `high_water`)."""
    stamp = oldest.get("indexed_on") if isinstance(oldest, dict) else None
    stamp = parse_hq_datetime(stamp) if stamp and high_water is not None else None
    if stamp is None or high_water <= stamp:
        return None
    try:
        return begin + (high_water - stamp) * (4 * rest / read)
    except OverflowError:
        return None


def _read_windows(settings: Settings, warehouse: Warehouse, place: _Place,
                  planned: list[Window], report: StreamReport, stream: Stream,
                  cursor_extra: dict) -> tuple[int, Cursor | None]:
    """Read every window, each a run of its own (of the same command, under the same
    checkpoint key) with its own checkpoint, some at once; add their counts to `report`.
    Raises the first failure once every window has stopped."""
    domain, stream_name = place.domain, place.stream

    def read(number: int, window: Window) -> StreamReport:
        def resume(progress: Cursor) -> Cursor:  # a window's own checkpoint, else its start
            if progress.extra.get("window") == number:
                return progress
            return stream.cursor_kind(window.start, None, window.end)

        client = make_client(settings)
        try:
            return sync_stream(settings, warehouse, client, domain, stream_name,
                               partition=f"{WINDOW}{number}", command=report.command,
                               start=resume, checkpoint_stream=place.checkpoint_stream,
                               cursor_extra={**cursor_extra, "window": number})
        finally:
            client.close()

    at_once = max(1, min(windows_at_once(settings, stream.page_size), len(planned)))
    with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="window") as pool:
        futures = [pool.submit(read, n, w) for n, w in enumerate(planned, 1)]
        try:
            wait(futures)
        except BaseException:  # Ctrl-C: the windows stop after their page being loaded
            stopping.request()
            wait(futures)
            raise
    failures = [f.exception() for f in futures if f.exception() is not None]
    requests = 0
    for future in futures:
        if future.exception() is None:
            done = future.result()
            for name in ("records", "inserted", "updated", "skipped_older", "rejected",
                         "cleaned", "pages"):
                setattr(report, name, getattr(report, name) + getattr(done, name))
            requests += done.requests
    if failures:
        interrupted = [f for f in failures if isinstance(f, (Interrupted, KeyboardInterrupt))]
        raised = (interrupted or failures)[0]
        for n, future in enumerate(futures, 1):  # the one raised is reported by the caller
            if future.exception() not in (None, raised):
                log.error("%s %s[%s%d] [%s] failed: %s", report.command, stream_name, WINDOW,
                          n, domain, describe_failure(future.exception()))
        raise raised
    return requests, futures[-1].result().cursor


def _finish_windows(warehouse: Warehouse, conn: psycopg.Connection, place: _Place,
                    cursor: IndexedOnCursor, last: Cursor | None, cursor_extra: dict) -> Cursor:
    """Every window read: the stream's checkpoint moves to where the last one ended (the end
    of the read, for a backfill) and the windows' checkpoints go, in one transaction."""
    extra = {k: v for k, v in cursor.extra.items() if k not in ("windows", "window")}
    position = last.indexed_on if isinstance(last, IndexedOnCursor) else None
    done = type(cursor)(position, None, cursor.until, extra={**extra, **cursor_extra})
    with conn.transaction():
        state.save_checkpoint(conn, warehouse.schema, place.domain, place.checkpoint_stream, done)
        state.delete_partitions(conn, warehouse.schema, place.domain, place.checkpoint_stream,
                                WINDOW)
    return done


@dataclass(frozen=True)
class _Place:
    """Where a run's pages go: the stream, its checkpoint's key, and the run's id."""

    stream: str
    checkpoint_stream: str
    partition: str
    domain: str
    run_id: int


def _check_server(cursor: dict | None, server: str, domain: str, stream_name: str) -> None:
    """A checkpoint says how far one HQ server was read: against another it means nothing."""
    saved = (cursor or {}).get("server")
    if saved and saved.rstrip("/") != server.rstrip("/"):
        raise ConfigError(
            f"the {stream_name} checkpoint of domain {domain!r} was made against {saved}, but "
            f"COMMCARE_BASE_URL is {server}: syncing on from it would load only part of that "
            f"server's data. To read everything from {server} (warehouse rows are kept and "
            f"updated), run `commcare-etl reset --resource all --domain {domain}`; or set "
            f"COMMCARE_BASE_URL back to {saved}.")


def _transform_each(loader: Loader, source: type[sources.Source], pages: Iterator[Page],
                    domain: str) -> Iterator[tuple[Page, Batch]]:
    """Each page with its batch. Closed early (a load failed, the run stopped), it closes
    `pages`: a prefetching reader's thread stops then, not when the collector finds it."""
    try:
        for page in pages:
            yield page, _transformed(loader, source, page, domain)
    finally:
        _close(pages)


def _close(items: Iterator) -> None:
    """Close `items` if it is a generator (which runs its `finally`); its caller has its
    outcome already, so a failure to close is only logged."""
    close = getattr(items, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # noqa: BLE001 - see above
            log.debug("closing an iterator failed", exc_info=True)


def _transformed(loader: Loader, source: type[sources.Source], page: Page, domain: str) -> Batch:
    """The page's rows, and what its load needs made ahead; the page's parsed records (most of
    its memory; the v0.5 and v2 streams keep no other reference to them) are let go."""
    batch = transform_page(page.records, domain, source.transform, page.needs_cleaning,
                           source.id_key)
    page.records = []
    loader.prepare(source.target, batch)
    return batch


def _load(loader: Loader, source: type[sources.Source], page: Page, batch: Batch,
          report: StreamReport, place: _Place, requests: int) -> None:
    if report.pages == 0 and not is_window(place.partition):
        advice = cache_advice(loader.conn, page.total)
        if advice:
            log.warning("%s %s [%s]: %s", report.command, report.label, place.domain, advice)
    result = loader.load_page(stream=place.stream, target=source.target,
                              domain=place.domain, batch=batch, cursor=page.cursor,
                              run_id=place.run_id, source_url=page.url,
                              checkpoint_stream=place.checkpoint_stream, requests=requests,
                              partition=place.partition)
    report.pages += 1
    report.records += batch.records
    report.inserted += result.inserted
    report.updated += result.updated
    report.skipped_older += result.skipped_older
    report.rejected += result.rejected
    report.cleaned += batch.cleaned_values
    report.cursor = page.cursor
    if batch.rejects:
        log.warning("%s [%s]: %d record(s) could not be loaded and went to dead_letters "
                    "(first: %s)", report.label, place.domain, len(batch.rejects),
                    batch.rejects[0].reason)
    log.debug("%s [%s]: loaded page of %d (%s)", report.label, place.domain, batch.records,
              page.url)


# A read this long makes the random-key indexes (HQ's ids) outgrow a small PostgreSQL cache.
BIG_READ = 500_000
SMALL_CACHE = 1 << 30  # bytes of shared_buffers


def cache_advice(conn: psycopg.Connection, total: int | None) -> str | None:
    """What to say when HQ has many records to read and PostgreSQL's shared buffers are small:
    every record inserts into indexes on HQ's random ids, and once those outgrow the buffers
    each page costs more than the last (a fifth to a quarter slower by the end of a 1M cases +
    1.5M forms sync at the default 128 MB, measured in the benchmark)."""
    if not total or total < BIG_READ:
        return None
    shown, size = conn.execute("select current_setting('shared_buffers'), "
                               "pg_size_bytes(current_setting('shared_buffers'))").fetchone()
    if size >= SMALL_CACHE:
        return None
    return (f"HQ has {total:,} records to read and PostgreSQL's shared_buffers is {shown}: the "
            f"loads slow down as this stream's indexes outgrow it. For a first sync of this "
            f"size, set shared_buffers to about a quarter of the database server's memory and "
            f"restart it (README: Performance).")


def _refresh_typed_views(loader: Loader) -> None:
    """Typed views follow the tables whose columns this run added or retyped, and only those."""
    from etl.load.bi import refresh_typed_views

    catalog = loader.catalog
    if catalog.changed or catalog.retyped:
        for warning in refresh_typed_views(catalog, catalog.changed, catalog.retyped):
            log.warning(warning)
    for (table, column), count in sorted(catalog.unparsed_run.items()):
        if count > 0:
            log.warning("%d value(s) in %s.%s do not parse as the app's date/number type: NULL "
                        "in the _typed view, kept as text in the table", count, table, column)


def _finish(warehouse: Warehouse, conn: psycopg.Connection, run_id: int, status: str,
            error: str | None, requests: int) -> None:
    """Record how the run ended; on a fresh connection if the failure broke this one."""
    try:
        state.finish_run(conn, warehouse.schema, run_id, status, error, requests)
        return
    except psycopg.Error:
        log.debug("could not record the end of run %s on its connection", run_id, exc_info=True)
    try:
        with warehouse.connect() as fresh:
            state.finish_run(fresh, warehouse.schema, run_id, status, error, requests)
    except psycopg.Error:  # the database itself is gone: the next run marks it abandoned
        log.debug("could not record the end of run %s", run_id, exc_info=True)


Job = tuple[str, str, str]  # (domain, stream, partition)


def jobs_for(settings: Settings, streams: list[str] | None = None,
             domains: list[str] | None = None) -> list[Job]:
    """Every (domain, stream, partition) to sync: a stream with several independent reads
    (one per export, one per mobile worker) has a partition each."""
    jobs = []
    for domain in domains or settings.domains():
        project = settings.for_domain(domain)
        names = streams or project.streams + [
            n for n in sources.names() if sources.get(n).when_configured and n not in project.streams]
        for stream in names:
            jobs += [(domain, stream, p) for p in sources.get(stream).partitions(project)]
    return jobs


def run_sync(settings: Settings, warehouse: Warehouse, *, streams: list[str] | None = None,
             domains: list[str] | None = None) -> list[StreamReport]:
    """Sync every configured (domain, stream, partition), each project with its own
    credentials. A failure is reported and the others still run; a project whose credentials
    or settings are wrong fails once and its other streams are skipped.

    `apps` goes first (the form tables take names, labels and repeats from it); the other
    streams run PARALLEL_STREAMS at a time, each in its own process when more than one.
    """
    jobs = jobs_for(settings, streams, domains)
    first = [job for job in jobs if job[1] == "apps"]
    reports = _run_in_turn(settings, warehouse, first)
    given_up = {r.domain for r in reports if _gives_up_domain(r.exception)}
    rest = [job for job in jobs if job[1] != "apps" and job[0] not in given_up]
    if settings.parallel_streams > 1 and len(rest) > 1:
        parallel = run_parallel(run_job, settings, warehouse.url, warehouse.schema, rest,
                                settings.parallel_streams,
                                (runinfo.invocation(), runinfo.trigger()), _cancelled)
        for report in parallel:
            if isinstance(report.exception, Interrupted):
                raise report.exception
        reports += parallel
    else:
        reports += _run_in_turn(settings, warehouse, rest)
    return reports


def run_job(settings: Settings, url: str, schema: str, job: Job) -> StreamReport:
    """One job in a worker process of `run_parallel`: its own connections, lock and client."""
    domain, stream, partition = job
    warehouse = Warehouse(url, schema)
    client = None
    try:
        project = settings.for_domain(domain)
        client = make_client(project)
        return sync_stream(project, warehouse, client, domain, stream, partition=partition)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        return failed_report(domain, stream, exc, partition)
    finally:
        if client is not None:
            client.close()
        warehouse.dispose()


def _cancelled(job: Job, exc: BaseException) -> StreamReport:
    return StreamReport(job[0], job[1], partition=job[2], status="failed", error=str(exc),
                        exception=exc)


def _run_in_turn(settings: Settings, warehouse: Warehouse, jobs: list[Job]) -> list[StreamReport]:
    reports: list[StreamReport] = []
    clients: dict[str, HQClient] = {}
    given_up: set[str] = set()
    try:
        for domain, stream_name, partition in jobs:
            stopping.check()
            if domain in given_up:
                continue
            try:
                project = settings.for_domain(domain)
                if domain not in clients:
                    clients[domain] = make_client(project)
                reports.append(sync_stream(project, warehouse, clients[domain], domain,
                                           stream_name, partition=partition))
            except Interrupted:
                raise
            except Exception as exc:  # noqa: BLE001 - one stream's failure does not stop the rest
                reports.append(failed_report(domain, stream_name, exc, partition))
                if _gives_up_domain(exc) and not sources.get(stream_name).isolated:
                    given_up.add(domain)
    finally:
        for client in clients.values():
            client.close()
    return reports


def _gives_up_domain(exc: BaseException | None) -> bool:
    """Wrong credentials or settings fail every stream of the project alike: say it once."""
    return isinstance(exc, AuthError) or _is_config_error(exc)


def _is_config_error(exc: BaseException | None) -> bool:
    return getattr(exc, "exit_code", None) == ExitCode.CONFIG


def failed_report(domain: str, stream_name: str, exc: BaseException,
                  partition: str = "") -> StreamReport:
    message = describe_failure(exc)
    report = StreamReport(domain, stream_name, partition=partition, status="failed",
                          error=message, exception=exc)
    if isinstance(exc, (EtlError, psycopg.Error)):
        log.error("sync %s [%s] failed: %s", report.label, domain, message)
    else:
        log.exception("sync %s [%s] failed: %s", report.label, domain, message)
    return report


def backfill_key(stream_name: str) -> str:
    return f"backfill:{stream_name}"


def run_backfill(settings: Settings, warehouse: Warehouse, stream_name: str, domain: str,
                 since: datetime | None, until: datetime | None) -> StreamReport:
    """Re-read [since, until] of `indexed_on` and upsert it, without touching the sync checkpoint.

    Its own progress is saved under `backfill:<stream>`: run the same command again after a
    crash and it resumes; a different window starts afresh. It holds its own lock, so it can
    run while a scheduled sync runs (the upsert keeps whichever version is newer).
    """
    # Without --until the window ends when the backfill first starts; resuming keeps that end.
    end = until or datetime.now(timezone.utc)
    wanted = {"since": format_iso(since) if since else None, "open_until": until is None}

    def start(progress: Cursor) -> Cursor:
        same_window = progress.extra.get("since") == wanted["since"] and (
            (progress.until is not None and progress.until == end)
            or (wanted["open_until"] and progress.extra.get("open_until")))
        if progress.until is not None and same_window:
            log.info("backfill %s [%s]: resuming the unfinished backfill of this window",
                     stream_name, domain)
            return progress
        extra = {k: v for k, v in progress.extra.items() if k != "windows"}  # another range's
        return type(progress)(indexed_on=since, until=end, extra=extra)

    client = make_client(settings)
    try:
        return sync_stream(settings, warehouse, client, domain, stream_name, command="backfill",
                           start=start, checkpoint_stream=backfill_key(stream_name),
                           cursor_extra=wanted, forget_checkpoint_when_done=True)
    finally:
        client.close()


def reset_streams(settings: Settings, warehouse: Warehouse, domain: str,
                  streams: list[str], wait_seconds: float | None = None) -> int:
    """Forget the checkpoints, so the next sync re-reads everything; warehouse rows stay.

    A running sync of the stream finishes first (its last page would otherwise move the
    checkpoint again): this waits for it, up to `wait_seconds`."""
    wait = settings.lock_wait_seconds if wait_seconds is None else wait_seconds
    deleted = 0
    with warehouse.connect() as conn:
        for stream_name in streams:
            if not state.lock_is_free(conn, warehouse.schema, domain, stream_name, "sync"):
                log.info("reset %s [%s]: waiting (up to %.0fs) for the running sync of %s to "
                         "finish", stream_name, domain, wait, stream_name)
            with state.stream_lock(conn, warehouse.schema, domain, stream_name, wait,
                                   purpose="sync"):
                deleted += state.delete_checkpoints(conn, warehouse.schema, domain, [stream_name])
    return deleted
