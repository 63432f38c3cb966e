"""What the v0.5 (tastypie + ES) and v2 case list endpoints select, in which order.

Parameter handling mirrors HQ: v0.5 reads the *last* value of each parameter (QueryDict.items),
validates dates strictly, turns unknown parameters into lower-cased term filters, and pages by
offset; v2 rejects unknown parameters and pages by a keyset cursor on (indexed_on, case_id).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode

from etl.simulator import replicas
from etl.simulator.hqtime import parse_v05_bound, parse_v2_bound
from etl.simulator.records import Record
from etl.simulator.store import SORT_FIELDS, Collection, Sort

Pred = Callable[[Record], bool]

MAX_LIMIT = {"case": 5000, "form": 1000}
DEFAULT_LIMIT = 20
DEFAULT_SORT: dict[str, Sort] = {"case": (("server_date_modified", False),),
                                 "form": (("received_on", True),)}
ORDERING = {"case": ("server_date_modified", "date_modified", "indexed_on"),
            "form": ("received_on", "server_modified_on", "indexed_on")}
DECLARED_FIELDS = {
    "case": {"id", "case_id", "domain", "user_id", "opened_by", "closed_by", "closed",
             "date_closed", "date_modified", "server_date_modified", "server_date_opened",
             "indexed_on", "xform_ids", "properties", "indices", "resource_uri"},
    "form": {"id", "domain", "form", "type", "version", "uiversion", "metadata", "received_on",
             "server_modified_on", "edited_on", "edited_by_user_id", "indexed_on", "app_id",
             "build_id", "initial_processing_complete", "problem", "archived", "attachments",
             "is_phone_submission", "submit_ip", "resource_uri"},
}
RESERVED = {"limit", "offset", "order_by", "q", "api_key", "username", "format"}
# `<name>_start` / `<name>_end` -> the sortable date it bounds
RANGE_FIELDS = {
    "case": {"indexed_on": "indexed_on", "server_date_modified": "server_date_modified",
             "server_modified_on": "server_date_modified", "date_modified": "date_modified"},
    "form": {"indexed_on": "indexed_on", "received_on": "received_on",
             "server_modified_on": "server_modified_on",
             "server_date_modified": "server_modified_on"},
}


class BadRequest(Exception):
    """HTTP 400 with `{"error": <message>}`."""


# --- v0.5 -------------------------------------------------------------------------------------

@dataclass
class V05Query:
    resource: str
    sort: Sort
    limit: int
    offset: int
    ix_range: tuple[int, int] | None = None  # inclusive indexed_on bounds (ms), if any
    preds: list[Pred] = field(default_factory=list)


@lru_cache(maxsize=65_536)
def _tokens(text: str) -> frozenset[str]:
    """Roughly ES's standard analyzer: lower-cased word tokens."""
    return frozenset(re.findall(r"\w+", text.lower()))


def _analyzed(index: int, value: str) -> Pred:
    term = value.lower()
    memo: dict[object, bool] = {}  # few distinct values (case types): decide each once

    def pred(r: Record) -> bool:
        text = r.terms[index]
        hit = memo.get(text)
        if hit is None:
            hit = memo[text] = isinstance(text, str) and term in _tokens(text)
        return hit
    return pred


def _exact(index: int, value: str) -> Pred:
    return lambda r: r.terms[index] == value


def _term_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def _top_level(name: str, value: str) -> Pred:
    """Any other parameter: a term filter on the field of that name, value lower-cased.
    (Slow path: it reads the record's JSON; such parameters usually match nothing.)"""
    term = value.lower()

    def pred(r: Record) -> bool:
        found = json.loads(r.body(b"")).get(name)
        values = found if isinstance(found, list) else [found]
        return any(_term_text(v) == term for v in values)
    return pred


def _range(get: Callable[[Record], int | None], low: int | None, high: int | None) -> Pred:
    def pred(r: Record) -> bool:
        value = get(r)
        return value is not None and (low is None or value >= low) and (
            high is None or value <= high)
    return pred


def _term_pred(resource: str, key: str, value: str) -> Pred:
    if resource == "case":
        if key in ("type", "case_type"):
            return _analyzed(0, value)
        if key in ("name", "case_name"):
            return _analyzed(1, value)
        if key == "external_id":
            return _analyzed(5, value)
        if key in ("type.exact", "name.exact", "external_id.exact"):
            return _exact({"type.exact": 0, "name.exact": 1, "external_id.exact": 5}[key], value)
        keyword = {"owner_id": 2, "user_id": 3, "opened_by": 6, "closed_by": 7}
        if key in keyword:
            return _exact(keyword[key], value.lower())
        if key == "closed":
            term = value.lower()
            return lambda r: ("true" if r.terms[4] else "false") == term
    else:
        if key in ("xmlns", "xmlns.exact"):
            return _exact(0, value)
        if key in ("app_id", "build_id"):
            return _exact(1 if key == "app_id" else 2, value.lower())
        if key == "case_id":
            return lambda r: value in r.case_ids
    return _top_level(key, value)


def parse_v05(resource: str, pairs: list[tuple[str, str]]) -> V05Query:
    """Validate and compile v0.5 list parameters (errors in HQ's order: filters, sort, paging)."""
    last = dict(pairs)  # QueryDict.items(): the last value of each key
    ranges: dict[str, list[int | None]] = {}
    preds: list[Pred] = []
    include_archived = False
    for key, value in last.items():
        if key in RESERVED or key.endswith("__full"):
            continue
        if key == "_search":
            raise BadRequest("_search is not supported by the simulator")
        base, _, edge = key.rpartition("_")
        if edge in ("start", "end") and base in RANGE_FIELDS[resource]:
            try:
                bound = parse_v05_bound(value)
            except ValueError as exc:
                raise BadRequest(f"Bad query parameter: {exc}") from None
            field_name = RANGE_FIELDS[resource][base]
            low_high = ranges.setdefault(field_name, [None, None])
            low_high[0 if edge == "start" else 1] = bound
            continue
        if resource == "form" and key == "include_archived":
            include_archived = True  # presence, whatever the value
            continue
        preds.append(_term_pred(resource, key, value))
    if resource == "form" and not include_archived:
        preds.append(lambda r: not r.archived)

    order_by = [v for k, v in pairs if k == "order_by"]
    sort = []
    for value in order_by:
        desc = value.startswith("-")
        name = value[1:] if desc else value
        if name not in DECLARED_FIELDS[resource]:
            raise BadRequest(f"No matching '{name}' field for ordering on.")
        if name not in ORDERING[resource]:
            raise BadRequest(f"The '{name}' field does not allow ordering.")
        sort.append((name, desc))
    sort_spec: Sort = tuple(sort) or DEFAULT_SORT[resource]

    limit, offset = paging(last, MAX_LIMIT[resource])
    query = V05Query(resource, sort_spec, limit, offset)
    for name, (low, high) in ranges.items():
        if name == "indexed_on" and sort_spec[0][0] == "indexed_on":
            query.ix_range = (-(2**62) if low is None else low, 2**62 if high is None else high)
        else:
            query.preds.append(_range(SORT_FIELDS[resource][name], low, high))
    query.preds.extend(preds)
    return query


def paging(last: dict[str, str], max_limit: int) -> tuple[int, int]:
    """tastypie's Paginator: (limit, offset); 0 or too big a limit means the maximum."""
    raw_limit = last.get("limit", str(DEFAULT_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        raise BadRequest(f"Invalid limit '{raw_limit}' provided. "
                         f"Please provide a positive integer.") from None
    if limit < 0:
        raise BadRequest(f"Invalid limit '{raw_limit}' provided. "
                         f"Please provide a positive integer >= 0.")
    if limit == 0 or limit > max_limit:
        limit = max_limit
    raw_offset = last.get("offset", "0")
    try:
        offset = int(raw_offset)
    except ValueError:
        raise BadRequest(f"Invalid offset '{raw_offset}' provided. "
                         f"Please provide an integer.") from None
    if offset < 0:
        raise BadRequest(f"Invalid offset '{raw_offset}' provided. "
                         f"Please provide a positive integer >= 0.")
    return limit, offset


def run_v05(coll: Collection, query: V05Query,
            replica: bytes | None = None) -> tuple[int, list[Record]]:
    """(total_count, the page) as the index copy `replica` (a salt; None: the only copy)
    serves it: the same documents and count on every copy, ties in its own order."""
    view = coll.view(query.sort)
    lo, hi = 0, len(view)
    if query.ix_range is not None:
        low, high = query.ix_range
        if query.sort[0][1]:  # newest first: the view is ordered by -ix
            lo = bisect.bisect_left(view, -high, key=lambda r: -r.ix)
            hi = bisect.bisect_right(view, -low, key=lambda r: -r.ix)
        else:
            lo = bisect.bisect_left(view, low, key=lambda r: r.ix)
            hi = bisect.bisect_right(view, high, key=lambda r: r.ix)
    start = lo + query.offset
    if not query.preds:
        if replica is not None:
            return max(0, hi - lo), replicas.window(
                view, lo, hi, query.offset, query.limit, coll.sort_key(query.sort), replica,
                coll.tie_cache(query.sort))
        return max(0, hi - lo), view[start:min(hi, start + query.limit)]
    preds = query.preds
    if len(preds) == 1:
        pred = preds[0]
        matched = [r for r in view[lo:hi] if pred(r)]
    else:
        matched = [r for r in view[lo:hi] if all(p(r) for p in preds)]
    if replica is not None:
        return len(matched), replicas.window(matched, 0, len(matched), query.offset,
                                             query.limit, coll.sort_key(query.sort), replica)
    return len(matched), matched[query.offset:query.offset + query.limit]


def page_uri(list_uri: str, pairs: list[tuple[str, str]], limit: int, offset: int) -> str:
    """tastypie's `_generate_uri`: the request's parameters (grouped by key, in first-seen
    order, as QueryDict.urlencode does) minus limit/offset, then `limit` and `offset`."""
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        if key not in ("limit", "offset"):
            grouped.setdefault(key, []).append(value)
    items = [(k, v) for k, values in grouped.items() for v in values]
    items += [("limit", str(limit)), ("offset", str(offset))]
    return f"{list_uri}?{urlencode(items)}"


# --- v2 ---------------------------------------------------------------------------------------

V2_MAX_LIMIT = 5000
V2_SIMPLE = {"external_id": 5, "case_type": 0, "owner_id": 2, "case_name": 1}
V2_DATES = {"last_modified": lambda r: r.keys[1], "server_last_modified": lambda r: r.keys[0],
            "date_opened": lambda r: r.keys[2], "date_closed": lambda r: r.keys[3],
            "indexed_on": lambda r: r.ix}
FALSE_STRINGS = ("false", "f", "no", "n", "off", "0")
INDEXED_AFTER = "indexed_on.gte"
LAST_CASE_ID = "last_case_id"
INCLUDE_DEPRECATED = "include_deprecated"


@dataclass
class V2Query:
    limit: int
    preds: list[Pred]
    ix_low: int | None  # from indexed_on.gte/gt: where in the (ix, id) order to start looking
    ix_high: int | None
    after: tuple[int, str] | None  # keyset position (indexed_on ms, case_id) from a cursor
    carry: list[tuple[str, str]]  # parameters the next cursor repeats
    exclude_deprecated: bool = False  # include_deprecated given, and only with false values


def _v2_props(r: Record) -> dict:
    return json.loads(r.body(b"")).get("properties") or {}


def _v2_filter(key: str, value: str) -> tuple[Pred, tuple[str, int] | None]:
    """(predicate, (op, ms) when it bounds indexed_on)."""
    if key in V2_SIMPLE:
        index = V2_SIMPLE[key]
        return (lambda r: r.terms[index] == value), None
    if key == "closed":
        wanted = not (value == "" or value.lower() in FALSE_STRINGS)
        return (lambda r: r.terms[4] == wanted), None
    if key == "query":
        raise BadRequest("Bad query: case search expressions are not supported by the simulator")
    prefix, _, qualifier = key.partition(".")
    if qualifier and prefix == "properties":
        if value == "":
            return (lambda r: _v2_props(r).get(qualifier) in (None, "")), None
        return (lambda r: _v2_props(r).get(qualifier) == value), None
    if qualifier and prefix == "indices":
        def has_index(r: Record) -> bool:
            index = (json.loads(r.body(b"")).get("indices") or {}).get(qualifier) or {}
            return index.get("case_id") == value
        return has_index, None
    if qualifier and prefix in V2_DATES:
        if qualifier not in ("gt", "gte", "lt", "lte"):
            raise BadRequest(f"'{qualifier}' is not a valid type of date range.")
        try:
            op, ms = parse_v2_bound(value, qualifier)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        get = V2_DATES[prefix]
        test = {"gt": lambda v: v > ms, "gte": lambda v: v >= ms,
                "lt": lambda v: v < ms, "lte": lambda v: v <= ms}[op]

        def in_range(r: Record) -> bool:
            v = get(r)
            return v is not None and test(v)
        return in_range, ((op, ms) if prefix == "indexed_on" else None)
    raise BadRequest(f"'{key}' is not a valid parameter.")


def parse_v2(pairs: list[tuple[str, str]]) -> V2Query:
    after = None
    cursor = [v for k, v in pairs if k == "cursor"]
    if cursor:  # everything else comes from the cursor
        try:
            decoded = base64.b64decode(cursor[-1], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest("Invalid cursor") from None
        pairs = parse_qsl(decoded, keep_blank_values=True)
        last_date = next((v for k, v in pairs if k == INDEXED_AFTER), None)
        last_id = next((v for k, v in pairs if k == LAST_CASE_ID), None)
        pairs = [(k, v) for k, v in pairs if k != LAST_CASE_ID]
        if last_date is not None and last_id is not None:
            try:
                after = (parse_v2_bound(last_date, "gte")[1], last_id)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    raw_limit = grouped.get("limit", [str(DEFAULT_LIMIT)])[-1]
    try:
        limit = int(raw_limit)
    except ValueError:
        raise BadRequest(f"'{raw_limit}' is not a valid value for 'limit'") from None
    if limit > V2_MAX_LIMIT:
        raise BadRequest(f"You cannot request more than {V2_MAX_LIMIT} cases per request.")
    if limit < 0:
        raise BadRequest(f"'{raw_limit}' is not a valid value for 'limit'")
    preds: list[Pred] = []
    ix_low = ix_high = None
    exclude_deprecated = False
    for key, values in grouped.items():
        if key == "limit":
            continue
        if key == INCLUDE_DEPRECATED:
            # HQ's `_include_deprecated_filter`, OR-ed over repeated values: a true value
            # matches all, a false one (or "") excludes the deprecated types. No parameter at
            # all: no filter, deprecated types included.
            exclude_deprecated = not any(_to_boolean(v) for v in values)
            continue
        compiled = [_v2_filter(key, v) for v in values]
        if len(compiled) == 1:
            pred, bound = compiled[0]
            if bound is None:
                preds.append(pred)
                continue
            # An indexed_on bound becomes a slice of the (indexed_on, case_id) order instead.
            op, ms = bound
            if op in ("gte", "gt"):
                ms = ms if op == "gte" else ms + 1
                ix_low = ms if ix_low is None else max(ix_low, ms)
            else:
                ms = ms if op == "lte" else ms - 1
                ix_high = ms if ix_high is None else min(ix_high, ms)
        else:  # repeated keys are OR-ed
            alternatives = [p for p, _ in compiled]
            preds.append(lambda r, alts=alternatives: any(p(r) for p in alts))
    carry = [(k, v) for k, v in pairs if k != INDEXED_AFTER]
    return V2Query(limit, preds, ix_low, ix_high, after, carry, exclude_deprecated)


def _to_boolean(value: str) -> bool:
    """HQ's `_to_boolean` (hqcase/api/get_list.py)."""
    return not (value == "" or value.lower() in FALSE_STRINGS)


def run_v2(coll: Collection, query: V2Query,
           deprecated: frozenset[str] | set[str] = frozenset()) -> tuple[int, list[Record]]:
    """(matching_records, the page) in (indexed_on, case_id) order. `deprecated`: the
    project's deprecated case types (an exact match on the type, as HQ's `type.exact`)."""
    view = coll.v2_view()
    lo = 0 if query.ix_low is None else bisect.bisect_left(view, query.ix_low, key=lambda r: r.ix)
    hi = len(view) if query.ix_high is None else bisect.bisect_right(
        view, query.ix_high, key=lambda r: r.ix)
    start = lo
    if query.after is not None:
        start = max(lo, bisect.bisect_right(view, query.after, key=lambda r: (r.ix, r.id)))
    preds = query.preds
    if query.exclude_deprecated and deprecated:
        hidden = frozenset(deprecated)
        preds = preds + [lambda r: r.terms[0] not in hidden]
    if not preds:
        total = max(0, hi - lo)
        page = view[start:min(hi, start + query.limit)] if query.limit else []
        return total, page
    total = 0
    page: list[Record] = []
    for i in range(lo, hi):
        r = view[i]
        if all(p(r) for p in preds):
            total += 1
            if i >= start and len(page) < query.limit:
                page.append(r)
    return total, page


def next_cursor(query: V2Query, last_indexed_on: str, last_id: str) -> str:
    """HQ's cursor: base64 of the urlencoded parameters plus where this page ended."""
    params = query.carry + [(INDEXED_AFTER, last_indexed_on), (LAST_CASE_ID, last_id)]
    return base64.b64encode(urlencode(params).encode("utf-8")).decode("ascii")
