"""Streams: one small class per HQ endpoint; paging and resumable cursors live in the bases.

A stream yields `Page`s. Each page carries the cursor to save once its records are loaded: the
loader commits records and cursor together, so resuming from the saved cursor never skips a
record (it may re-read a few, which the upsert absorbs).

Cursor shapes (stored as JSON in `sync_checkpoints.cursor`):
  v0.5  {"indexed_on": ISO}                       next request: indexed_on_start=<that>
        {"indexed_on": ISO, "tie_offset": N}       inside a run of records sharing one indexed_on
  v2    {"indexed_on": ISO, "next": URL}           mid-run: follow HQ's keyset cursor
        {"indexed_on": ISO}                        between runs: start at that watermark
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Iterator

from etl.dates import ONE_MS, format_iso, format_v05, parse_hq_datetime, truncate_ms
from etl.errors import HQError
from etl.extract.client import HQClient, require_json_object

log = logging.getLogger(__name__)

_REST_OF_MS = timedelta(microseconds=999)


@dataclass
class Page:
    records: list[dict]
    cursor: dict[str, Any]
    needs_cleaning: bool = False
    url: str = ""


@dataclass
class Window:
    """Where a read starts and ends (both inclusive, None = open)."""

    start: datetime | None = None
    end: datetime | None = None
    tie_offset: int = 0
    next_url: str | None = None

    @classmethod
    def from_cursor(cls, cursor: dict | None, *, end: datetime | None = None,
                    lookback: timedelta = timedelta(0)) -> "Window":
        cursor = cursor or {}
        start = parse_hq_datetime(cursor.get("indexed_on"))
        tie_offset = int(cursor.get("tie_offset") or 0)
        next_url = cursor.get("next")
        if start is not None and lookback and not tie_offset and not next_url:
            start -= lookback
        return cls(start=start, end=end, tie_offset=tie_offset, next_url=next_url)


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
    extra_params: ClassVar[dict[str, str]] = {}

    requests_made: int = field(default=0, init=False)

    @property
    def list_path(self) -> str:
        return f"/a/{self.domain}/api/{self.path}"

    def pages(self, window: Window) -> Iterator[Page]:
        raise NotImplementedError


def _stamp(record: dict) -> datetime | None:
    moment = parse_hq_datetime(record.get("indexed_on"))
    return truncate_ms(moment) if moment else None


class IndexedOnStream(Stream):
    """Tastypie v0.5 resources paged by `indexed_on_start` (inclusive), sorted by indexed_on.

    HQ has no tie-break on equal `indexed_on`, so a page full of one value would come back
    again and again. When a whole page shares one millisecond we read that millisecond on its
    own, by offset, then step past it; resuming inside it uses the saved offset. No request is
    ever repeated and no record in the tie is skipped.
    """

    def _params(self, start: datetime | None, end: datetime | None, offset: int = 0) -> dict:
        params: dict[str, Any] = {"order_by": "indexed_on", "limit": self.page_size}
        params.update(self.extra_params)
        if start is not None:
            params["indexed_on_start"] = format_v05(start)
        if end is not None:
            params["indexed_on_end"] = format_v05(end)
        if offset:
            params["offset"] = offset
        return params

    def _fetch(self, params: dict) -> tuple[list[dict], dict, Any]:
        doc = self.client.get_json(self.list_path, params)
        self.requests_made += 1
        body = require_json_object(doc, "objects", "meta")
        objects = body["objects"]
        if not isinstance(objects, list):
            raise HQError(f"HQ answered {doc.url} with 'objects' that is not a list", url=doc.url)
        return objects, body.get("meta") or {}, doc

    def pages(self, window: Window) -> Iterator[Page]:
        start, end = window.start, window.end
        if window.tie_offset and start is not None:
            yield from self._tie_pages(truncate_ms(start), window.tie_offset, end)
            start = truncate_ms(start) + ONE_MS
        high_water = start
        while True:
            objects, meta, doc = self._fetch(self._params(start, end))
            stamps = [s for s in map(_stamp, objects) if s is not None]
            if stamps:
                high_water = max(high_water or stamps[-1], max(stamps))
            more = bool(objects) and meta.get("next") is not None
            if not more:
                yield Page(objects, self._cursor(high_water), doc.needs_cleaning, doc.url)
                return
            first, last = stamps[0] if stamps else None, stamps[-1] if stamps else None
            if first is not None and first == last:
                # A whole page in one millisecond: read that millisecond by itself.
                yield Page(objects, self._cursor(first, tie_offset=0), doc.needs_cleaning, doc.url)
                yield from self._tie_pages(first, 0, end)
                start = first + ONE_MS
            else:
                if last is None or (start is not None and last <= truncate_ms(start)):
                    raise HQError(
                        f"HQ's {self.path} list is not sorted by indexed_on ({doc.url}); "
                        f"cannot page through it safely", url=doc.url)
                yield Page(objects, self._cursor(last), doc.needs_cleaning, doc.url)
                start = last

    def _tie_pages(self, moment: datetime, offset: int, end: datetime | None) -> Iterator[Page]:
        # The bounds cover the whole millisecond, whether HQ compares at ms or µs precision.
        upper = moment + _REST_OF_MS
        if end is not None and end < upper:
            upper = end
        log.info("%s: a full page of records shares indexed_on %s; reading that millisecond "
                 "by offset", self.name, format_iso(moment))
        while True:
            objects, meta, doc = self._fetch(self._params(moment, upper, offset))
            offset += len(objects)
            total = meta.get("total_count")
            done = not objects or meta.get("next") is None or (
                isinstance(total, int) and offset >= total)
            cursor = self._cursor(moment + ONE_MS) if done else self._cursor(moment, offset)
            yield Page(objects, cursor, doc.needs_cleaning, doc.url)
            if done:
                return

    @staticmethod
    def _cursor(moment: datetime | None, tie_offset: int | None = None) -> dict[str, Any]:
        cursor: dict[str, Any] = {"indexed_on": format_iso(moment) if moment else None}
        if tie_offset is not None:
            cursor["tie_offset"] = tie_offset
        return cursor


class CaseStream(IndexedOnStream):
    """Case API v0.5: the full case, incl. user_id, opened_by, closed_by and xform_ids."""

    name = "cases"
    path = "v0.5/case/"
    primary_key = "case_id"


class FormStream(IndexedOnStream):
    """Form API v0.5, archived forms included (HQ reads the parameter's mere presence)."""

    name = "forms"
    path = "v0.5/form/"
    extra_params = {"include_archived": "true"}


class CaseStreamV2(Stream):
    """Case API v2: HQ's own keyset cursor on (indexed_on, case_id)."""

    name = "cases"
    path = "case/v2/"
    primary_key = "case_id"

    def pages(self, window: Window) -> Iterator[Page]:
        start = window.start
        high_water = start
        if window.next_url:
            url, params = window.next_url, None
        else:
            url = self.list_path
            params: dict[str, Any] | None = {"limit": self.page_size}
            if start is not None:
                params["indexed_on.gte"] = format_iso(start)
            if window.end is not None:
                params["indexed_on.lte"] = format_iso(window.end)
        while True:
            doc = self.client.get_json(url, params)
            self.requests_made += 1
            body = require_json_object(doc, "cases")
            cases = body["cases"]
            stamps = [s for s in map(_stamp, cases) if s is not None]
            if stamps:
                high_water = max(high_water or stamps[0], max(stamps))
            next_url = body.get("next")
            if cases and next_url:
                cursor = {"indexed_on": format_iso(start) if start else None, "next": next_url}
                yield Page(cases, cursor, doc.needs_cleaning, doc.url)
                url, params = next_url, None
            else:
                yield Page(cases, {"indexed_on": format_iso(high_water) if high_water else None},
                           doc.needs_cleaning, doc.url)
                return


class AppStream(Stream):
    """Application Structure API: every app at once (HQ does not page it); a full snapshot."""

    name = "apps"
    path = "v0.5/application/"

    def pages(self, window: Window) -> Iterator[Page]:
        apps: list[dict] = []
        needs_cleaning, url, params = False, self.list_path, {"limit": 100}
        while True:
            doc = self.client.get_json(url, params)
            self.requests_made += 1
            body = require_json_object(doc, "objects")
            apps.extend(body["objects"])
            needs_cleaning |= doc.needs_cleaning
            next_url = (body.get("meta") or {}).get("next")
            if not next_url or not body["objects"]:
                break
            url, params = next_url, None
        yield Page(apps, {"synced_at": format_iso(datetime.now(timezone.utc)), "apps": len(apps)},
                   needs_cleaning, doc.url)


def make_stream(name: str, client: HQClient, domain: str, *, case_api: str = "v0.5",
                case_page_size: int = 5000, form_page_size: int = 1000) -> Stream:
    if name == "cases":
        cls = CaseStreamV2 if case_api == "v2" else CaseStream
        return cls(client, domain, case_page_size)
    if name == "forms":
        return FormStream(client, domain, form_page_size)
    if name == "apps":
        return AppStream(client, domain, 100)
    raise ValueError(f"unknown stream {name!r}")
