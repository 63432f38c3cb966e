"""Streams: one small class per HQ endpoint; paging and resumable cursors live in the bases.

A stream yields `Page`s. Each page carries the cursor to save once its records are loaded: the
loader commits records and cursor together, so resuming from the saved cursor never skips a
record (it may re-read a few, which the upsert absorbs).

Each stream names its cursor kind (`etl.extract.cursors`): `pages(cursor)` starts where that
cursor says and each page carries the cursor that follows it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, ClassVar, Iterator
from urllib.parse import urljoin

from etl.dates import ONE_MS, format_iso, format_v05, parse_hq_datetime, truncate_ms
from etl.errors import HQError
from etl.extract.client import HQClient, require_json_object
from etl.extract.cursors import Cursor, IndexedOnCursor, KeysetCursor, SnapshotCursor

log = logging.getLogger(__name__)

_REST_OF_MS = timedelta(microseconds=999)


@dataclass
class Page:
    records: list[dict]
    cursor: Cursor
    needs_cleaning: bool = False
    url: str = ""
    total: int | None = None  # on a read's first page: HQ's count of what the read will cover
    # The newest indexed_on read so far, where the cursor does not say it (HQ's v2 `next`).
    high_water: datetime | None = None


@dataclass
class Stream:
    """Base: names the HQ resource; subclasses implement `pages`."""

    client: HQClient
    domain: str
    page_size: int

    name: ClassVar[str]
    path: ClassVar[str]  # below /a/<domain>/api/
    primary_key: ClassVar[str] = "id"
    replication_key: ClassVar[str] = "indexed_on"
    cursor_kind: ClassVar[type[Cursor]] = IndexedOnCursor
    extra_params: ClassVar[dict[str, str]] = {}

    requests_made: int = field(default=0, init=False)
    _counting: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False,
                                      compare=False)

    def _made_request(self) -> None:
        with self._counting:  # a window's plan may probe from another thread
            self.requests_made += 1

    @property
    def list_path(self) -> str:
        return f"/a/{self.domain}/api/{self.path}"

    def pages(self, cursor: Cursor) -> Iterator[Page]:
        raise NotImplementedError


def _stamp(record: dict, key: str = "indexed_on") -> datetime | None:
    moment = parse_hq_datetime(record.get(key)) if isinstance(record, dict) else None
    return truncate_ms(moment) if moment else None


class IndexedOnStream(Stream):
    """Tastypie v0.5 resources paged by `indexed_on_start` (inclusive), sorted by indexed_on.

    HQ has no tie-break on equal `indexed_on`, and its search index keeps several copies of each
    shard that order equal values differently, so offset paging inside one millisecond can see
    a different order on every request. A millisecond that fills a page is therefore read by a
    second key HQ can filter and sort on (`tie_keys`, e.g. the server's modification time),
    keyset-style: sort by it, then ask again from the last value seen. Where a whole page shares
    that value too, the next key splits it, and so on; only a slice that no key splits is read
    by offset, and then re-read until the distinct ids reach HQ's count. A tie counts as read
    once the distinct ids read in it reach HQ's count for that millisecond; the checkpoint never
    moves past one that was not, and the run fails naming it.
    """

    tie_keys: ClassVar[tuple[str, ...]] = ()
    tie_passes: ClassVar[int] = 4  # offset re-reads of a slice no key can split, at the most
    windowed: ClassVar[bool] = True  # ranges of indexed_on can be read side by side

    def _params(self, start: datetime | None, end: datetime | None, *, order_by: str = "indexed_on",
                bounds: dict[str, tuple[datetime, datetime]] | None = None, offset: int = 0,
                limit: int | None = None) -> dict:
        params: dict[str, Any] = {"order_by": order_by, "limit": limit or self.page_size}
        params.update(self.extra_params)
        if start is not None:
            params["indexed_on_start"] = format_v05(start)
        if end is not None:
            params["indexed_on_end"] = format_v05(end)
        for key, (low, high) in (bounds or {}).items():
            if low is not None:
                params[f"{key}_start"] = format_v05(low)
            if high is not None:
                params[f"{key}_end"] = format_v05(high)
        if offset:
            params["offset"] = offset
        return params

    def _fetch(self, params: dict) -> tuple[list[dict], dict, Any]:
        doc = self.client.get_json(self.list_path, params)
        self._made_request()
        body = require_json_object(doc, "objects", "meta")
        objects = body["objects"]
        if not isinstance(objects, list):
            raise HQError(f"HQ answered {doc.url} with 'objects' that is not a list", url=doc.url)
        return objects, body.get("meta") or {}, doc

    def probe(self, start: datetime | None, end: datetime | None, *,
              newest: bool = False) -> tuple[int, datetime | None]:
        """One small request: HQ's count of records in [start, end], and the indexed_on of
        the first of them (of the last, with `newest`); None when there are none."""
        order_by = "-indexed_on" if newest else "indexed_on"
        objects, meta, _ = self._fetch(self._params(start, end, order_by=order_by, limit=1))
        total = meta.get("total_count")
        stamp = _stamp(objects[0]) if objects else None
        return (total if isinstance(total, int) else len(objects)), stamp

    def pages(self, cursor: IndexedOnCursor) -> Iterator[Page]:
        start, end = cursor.indexed_on, cursor.until
        self._until = end
        if cursor.tie is not None and start is not None:
            yield from self._tie_pages(truncate_ms(start), end, cursor.tie)
            start = truncate_ms(start) + ONE_MS
        high_water = start
        total = None
        while True:
            objects, meta, doc = self._fetch(self._params(start, end))
            if total is None:  # the first answer counts everything from the start on
                total = meta.get("total_count") if isinstance(meta.get("total_count"), int) else 0
            stamps = [s for s in map(_stamp, objects) if s is not None]
            if stamps:
                high_water = max(high_water or stamps[-1], max(stamps))
            more = bool(objects) and meta.get("next") is not None
            if not more:
                page = Page(objects, self._cursor(high_water), doc.needs_cleaning, doc.url,
                            total=total or None)
                objects = stamps = doc = None  # the page holds them alone (sync._transformed)
                yield page
                return
            first, last = stamps[0] if stamps else None, stamps[-1] if stamps else None
            if first is not None and first == last:
                # A whole page in one millisecond: read that millisecond by itself. This page's
                # records are part of it, so it is not loaded on its own.
                yield from self._tie_pages(first, end, [])
                start = first + ONE_MS
            else:
                if last is None or (start is not None and last <= truncate_ms(start)):
                    raise HQError(
                        f"HQ's {self.path} list is not sorted by indexed_on ({doc.url}); "
                        f"cannot page through it safely", url=doc.url)
                page = Page(objects, self._cursor(last), doc.needs_cleaning, doc.url,
                            total=total or None)
                objects = stamps = doc = None  # the page holds them alone (sync._transformed)
                yield page
                total = 0  # said once
                start = last

    # --- one millisecond holding more than a page ---------------------------------------------

    def _tie_pages(self, moment: datetime, end: datetime | None,
                   resume: list[dict]) -> Iterator[Page]:
        # The bounds cover the whole millisecond, whether HQ compares at ms or µs precision.
        upper = moment + _REST_OF_MS
        if end is not None and end < upper:
            upper = end
        # Resumed part-way, the ids read before are unknown: the count cannot be checked.
        tie = _Tie(moment, upper, self.primary_key, verify=not resume)
        log.info("%s: more than a page of records shares indexed_on %s; reading that "
                 "millisecond by %s", self.name, format_iso(moment),
                 ", then ".join(self.tie_keys) or "offset")
        after = self._cursor(moment + ONE_MS)
        # Until the count is checked, a crash re-reads the whole millisecond.
        unchecked = self._tie_cursor(tie, [])
        yield from self._slice(tie, {}, 0, [], resume,
                               lambda: after if tie.complete() else unchecked)
        if not tie.complete():
            yield from self._verify_tie(tie, after)

    def _slice(self, tie: "_Tie", bounds: dict, level: int, path: list[dict],
               resume: list[dict], done: Callable[[], Cursor]) -> Iterator[Page]:
        """Every record of the tie within `bounds` (equality slices of the earlier keys).
        `done()` is the cursor to save once the slice is read: where its parent goes on."""
        if level == len(self.tie_keys):
            yield from self._offset_slice(tie, bounds, path, done)
            return
        key = self.tie_keys[level]
        start = parse_hq_datetime(resume[0].get("from")) if resume else None
        if start is not None and len(resume) > 1:  # we stopped inside the slice key == start
            yield from self._split(tie, bounds, level, path, key, start, resume[1:])
            start += ONE_MS
        while True:
            objects, meta, doc = self._fetch(self._params(
                tie.moment, tie.upper, order_by=key, bounds={**bounds, key: (start, None)}))
            tie.see(objects, meta)
            if not objects or meta.get("next") is None:
                yield Page(objects, done(), doc.needs_cleaning, doc.url)
                return
            values = [_stamp(o, key) for o in objects]
            if None in values:  # cannot page by a key some records lack
                yield Page(objects, self._tie_cursor(tie, path), doc.needs_cleaning, doc.url)
                yield from self._offset_slice(tie, bounds, path, done)
                return
            first, last = values[0], values[-1]
            if first == last:
                # A whole page shares this key's millisecond too: split it by the next key.
                yield Page(objects, self._tie_cursor(tie, path + [_position(key, first)]),
                           doc.needs_cleaning, doc.url)
                yield from self._split(tie, bounds, level, path, key, first, [])
                start = first + ONE_MS
            else:
                if start is not None and last < start:
                    raise HQError(f"HQ's {self.path} list is not sorted by {key} ({doc.url}); "
                                  f"cannot page through it safely", url=doc.url)
                yield Page(objects, self._tie_cursor(tie, path + [_position(key, last)]),
                           doc.needs_cleaning, doc.url)
                start = last

    def _split(self, tie: "_Tie", bounds: dict, level: int, path: list[dict], key: str,
               value: datetime, resume: list[dict]) -> Iterator[Page]:
        """The records whose `key` falls in `value`'s millisecond, by the next key."""
        then = self._tie_cursor(tie, path + [_position(key, value + ONE_MS)])
        yield from self._slice(tie, {**bounds, key: (value, value + _REST_OF_MS)}, level + 1,
                               path + [_position(key, value)], resume, lambda: then)

    def _offset_slice(self, tie: "_Tie", bounds: dict, path: list[dict],
                      done: Callable[[], Cursor]) -> Iterator[Page]:
        """A slice no key splits: read it by offset, then again in other orders, until the
        distinct ids read reach HQ's count of the slice (its copies may order it differently)."""
        orders = ["indexed_on", "-indexed_on", *(f"-{k}" for k in self.tie_keys), *self.tie_keys]
        ids: set[str] = set()
        total = None
        for order_by in orders[:self.tie_passes]:
            offset = 0
            while True:
                objects, meta, doc = self._fetch(self._params(
                    tie.moment, tie.upper, order_by=order_by, bounds=bounds, offset=offset))
                tie.see(objects, meta)
                ids.update(_ids(objects, self.primary_key))
                if isinstance(meta.get("total_count"), int):
                    total = meta["total_count"]
                offset += len(objects)
                finished = not objects or meta.get("next") is None
                complete = total is not None and len(ids) >= total
                yield Page(objects, done() if finished and complete else self._tie_cursor(tie, path),
                           doc.needs_cleaning, doc.url)
                if finished:
                    break
            if total is not None and len(ids) >= total:
                return
        raise self._incomplete(tie, len(ids), total)

    def _verify_tie(self, tie: "_Tie", after: Cursor) -> Iterator[Page]:
        """Fewer distinct ids than HQ counted at the start: some may have left the millisecond
        since (re-indexed later, so read later in this run); others may be missing. Ask again."""
        _, meta, doc = self._fetch(self._params(tie.moment, tie.upper, limit=1))
        now = meta.get("total_count")
        if isinstance(now, int) and len(tie.seen) >= now:
            yield Page([], after, False, doc.url)
            return
        log.warning("%s: read %d distinct records at indexed_on %s, HQ counts %s; re-reading "
                    "that millisecond by offset", self.name, len(tie.seen), format_iso(tie.moment),
                    now)
        yield from self._offset_slice(tie, {}, [], lambda: after)

    def _incomplete(self, tie: "_Tie", read: int, total: int | None) -> HQError:
        return HQError(
            f"could not read every {self.name} record at indexed_on {format_iso(tie.moment)}: "
            f"HQ counts {total}, {read} distinct ones came back over {self.tie_passes} passes "
            f"(its search copies disagree on their order). The checkpoint stays before that "
            f"millisecond; run again, and report it to Dimagi if it persists.")

    _until: datetime | None = None  # the end of the read, carried by every cursor it makes

    def _tie_cursor(self, tie: "_Tie", path: list[dict]) -> IndexedOnCursor:
        return IndexedOnCursor(tie.moment, path, self._until)

    def _cursor(self, moment: datetime | None) -> IndexedOnCursor:
        return IndexedOnCursor(moment, None, self._until)


@dataclass
class _Tie:
    """One millisecond of `indexed_on` being read, and the distinct ids read in it so far."""

    moment: datetime
    upper: datetime
    primary_key: str
    verify: bool
    expected: int | None = None  # HQ's count of the whole millisecond, from its first request
    seen: set[str] = field(default_factory=set)
    asked: bool = False

    def see(self, objects: list, meta: dict) -> None:
        if not self.asked:
            self.asked = True
            total = meta.get("total_count")
            self.expected = total if isinstance(total, int) else None
        if self.verify:
            self.seen.update(_ids(objects, self.primary_key))

    def complete(self) -> bool:
        return not self.verify or self.expected is None or len(self.seen) >= self.expected


def _ids(objects: list, primary_key: str) -> Iterator[str]:
    for o in objects:
        if isinstance(o, dict):
            value = o.get(primary_key) or o.get("id")
            if value is not None:
                yield str(value)


def _position(key: str, value: datetime) -> dict[str, str]:
    return {"key": key, "from": format_iso(value)}


class CaseStream(IndexedOnStream):
    """Case API v0.5: the full case, incl. user_id, opened_by, closed_by and xform_ids."""

    name = "cases"
    path = "v0.5/case/"
    primary_key = "case_id"
    tie_keys = ("server_date_modified", "date_modified")


class FormStream(IndexedOnStream):
    """Form API v0.5, archived forms included (HQ reads the parameter's mere presence)."""

    name = "forms"
    path = "v0.5/form/"
    extra_params = {"include_archived": "true"}
    tie_keys = ("received_on", "server_modified_on")


class CaseStreamV2(Stream):
    """Case API v2: HQ's own keyset cursor on (indexed_on, case_id)."""

    name = "cases"
    path = "case/v2/"
    primary_key = "case_id"
    cursor_kind = KeysetCursor
    # `cases` columns only v0.5 fills: after a switch from v0.5 they keep their values.
    unknown_columns = ("user_id", "opened_by", "closed_by", "server_date_opened", "xform_ids")
    windowed: ClassVar[bool] = True  # ranges of indexed_on (`indexed_on.gte/lte`) side by side
    newest_first: ClassVar[bool] = False  # v2 lists oldest first only

    def _params(self, start: datetime | None, end: datetime | None, limit: int) -> dict:
        # Cases of case types deprecated in the data dictionary are still data: HQ leaves
        # them out of v2 lists unless asked.
        params: dict[str, Any] = {"limit": limit, "include_deprecated": "true"}
        if start is not None:
            params["indexed_on.gte"] = format_iso(start)
        if end is not None:
            params["indexed_on.lte"] = format_iso(end)
        return params

    def probe(self, start: datetime | None, end: datetime | None) -> tuple[int, datetime | None]:
        """One small request: HQ's count of cases in [start, end] and the indexed_on of the
        first (v2 lists oldest first only)."""
        doc = self.client.get_json(self.list_path, self._params(start, end, 1))
        self._made_request()
        body = require_json_object(doc, "cases")
        cases, total = body["cases"], body.get("matching_records")
        return (total if isinstance(total, int) else len(cases)), (
            _stamp(cases[0]) if cases else None)

    def pages(self, cursor: KeysetCursor) -> Iterator[Page]:
        start = cursor.indexed_on
        high_water = start
        if cursor.next:
            url, params = cursor.next, None
        else:
            url, params = self.list_path, self._params(start, cursor.until, self.page_size)
        total = None
        while True:
            doc = self.client.get_json(url, params)
            self._made_request()
            body = require_json_object(doc, "cases")
            cases = body["cases"]
            if total is None:  # the first answer counts the whole read
                total = body.get("matching_records") if isinstance(
                    body.get("matching_records"), int) else 0
            stamps = [s for s in map(_stamp, cases) if s is not None]
            if stamps:
                high_water = max(high_water or stamps[0], max(stamps))
            next_url = body.get("next")
            more = bool(cases and next_url)
            page = Page(cases, KeysetCursor(start, None, cursor.until, next_url) if more
                        else KeysetCursor(high_water, None, cursor.until),
                        doc.needs_cleaning, doc.url, total or None, high_water)
            cases = body = stamps = doc = None  # the page holds them alone (sync._transformed)
            yield page
            if not more:
                return
            url, params, total = next_url, None, 0  # the count is said once


class ListStream(Stream):
    """A tastypie list HQ can only give in full (users, groups, locations): every page of it,
    following `meta.next` (a bare `?limit=…&offset=…`, resolved against the page it came on).
    A snapshot: the loader marks what the complete listing no longer holds as deleted."""

    cursor_kind = SnapshotCursor
    params: ClassVar[dict[str, str]] = {}
    listings: ClassVar[tuple[dict[str, Any], ...]] = ({},)  # several lists make one snapshot
    mark: ClassVar[str | None] = None  # the key that tells one listing's records apart

    def pages(self, cursor: SnapshotCursor) -> Iterator[Page]:
        for n, extra in enumerate(self.listings):
            url, params = self.list_path, {"limit": self.page_size, **self.params, **extra}
            while True:
                doc = self.client.get_json(url, params)
                self._made_request()
                body = require_json_object(doc, "objects")
                objects = body["objects"]
                if not isinstance(objects, list):
                    raise HQError(f"HQ answered {doc.url} with 'objects' that is not a list",
                                  url=doc.url)
                if self.mark:
                    for record in objects:
                        if isinstance(record, dict):
                            record[self.mark] = n == 0
                yield Page(objects, SnapshotCursor(reading=True), doc.needs_cleaning, doc.url)
                next_url = (body.get("meta") or {}).get("next")
                if not next_url or not objects:
                    break
                url, params = urljoin(doc.url, next_url), None


# Set on each mobile worker record: whether it came from HQ's list of active workers.
ACTIVE_FLAG = "_commcare_etl_is_active"


class MobileWorkerStream(ListStream):
    """Active workers, then the deactivated ones (HQ lists them apart, with `archived=true`)."""

    name = "users"
    path = "v0.5/user/"
    listings = ({}, {"archived": "true"})
    mark = ACTIVE_FLAG


class AppStream(ListStream):
    """Application Structure API: the apps with their modules, forms and questions."""

    name = "apps"
    path = "v0.5/application/"


class WebUserStream(ListStream):
    name = "web_users"
    path = "v0.5/web-user/"


class GroupStream(ListStream):
    name = "groups"
    path = "v0.5/group/"


class LocationStream(ListStream):
    """Location API v2: flat fields, the parent by id."""

    name = "locations"
    path = "location/v2/"


class LocationTypeStream(ListStream):
    name = "location_types"
    path = "v0.5/location_type/"
