"""One stored case or form: its pre-serialized JSON plus the few fields queries need.

The v0.5 JSON is serialized once (tastypie style: sorted keys, UTF-8) with a marker where
`resource_uri` goes, and kept as the bytes before and after it, because the URI echoes the URL
style of each request (`/api/v0.5/case/` or `/api/case/v1/`). A record is never modified in
place: a change builds a new record, so a list being served is never half-updated.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from etl.simulator.hqtime import PLACEHOLDER, parse_ms

MARK = "@@resource_uri@@"
_MARK_BYTES = MARK.encode()
SPECIAL_PROPERTIES = ("case_name", "case_type", "date_opened", "external_id", "owner_id")
CASE_XMLNS = "http://commcarehq.org/case/transaction/v2"


def encode_v05(doc: dict) -> tuple[bytes, bytes]:
    """Serialize like tastypie (sorted keys, non-ASCII kept) and split around `resource_uri`."""
    text = json.dumps(doc, sort_keys=True, ensure_ascii=False)
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only JSON's \ud800 escape can carry it
        raw = json.dumps(doc, sort_keys=True).encode("ascii")
    at = raw.rfind(_MARK_BYTES)
    return raw[:at], raw[at + len(_MARK_BYTES):]


class Record:
    """A case (`kind == "case"`) or a form (`kind == "form"`), as the search index holds it.

    `ix` is `indexed_on` in epoch milliseconds (ES precision); `seq` the insertion sequence
    (a new one per write), the only order among equal sort keys. `keys` are the other dates
    in ms (None when missing): cases (server_date_modified, date_modified, date_opened,
    date_closed), forms (received_on, server_modified_on). `terms` are the filterable scalars:
    cases (type, name, owner_id, user_id, closed, external_id, opened_by, closed_by), forms
    (xmlns, app_id, build_id).
    """

    __slots__ = ("kind", "id", "seq", "ix", "keys", "terms", "archived", "case_ids",
                 "head", "tail", "v2")

    def __init__(self, kind: str, doc: dict, seq: int):
        self.kind = kind
        self.id: str = doc["id"]
        self.seq = seq
        self.ix: int = parse_ms(doc.get("indexed_on")) or 0
        if kind == "case":
            props = doc.get("properties") or {}
            self.keys = (parse_ms(doc.get("server_date_modified")),
                         parse_ms(doc.get("date_modified")), parse_ms(props.get("date_opened")),
                         parse_ms(doc.get("date_closed")))
            self.terms = (props.get("case_type"), props.get("case_name"), props.get("owner_id"),
                          doc.get("user_id"), bool(doc.get("closed")), props.get("external_id"),
                          doc.get("opened_by"), doc.get("closed_by"))
            self.archived = False
            self.case_ids = ()
        else:
            form = doc.get("form") or {}
            self.keys = (parse_ms(doc.get("received_on")), parse_ms(doc.get("server_modified_on")))
            self.terms = (form.get("@xmlns"), doc.get("app_id"), doc.get("build_id"))
            self.archived = bool(doc.get("archived"))
            case_ids = doc.pop("_case_ids", None)
            self.case_ids = tuple(_case_ids(form)) if case_ids is None else tuple(case_ids)
        doc["resource_uri"] = f"{MARK}{self.id}/"
        self.head, self.tail = encode_v05(doc)  # the tail starts with `<id>/"`
        self.v2: bytes | None = None

    def parts(self, uri_prefix: bytes) -> tuple[bytes, bytes, bytes]:
        """The v0.5 JSON as byte pieces, `resource_uri` = `<list uri><id>/`."""
        return self.head, uri_prefix, self.tail

    def body(self, uri_prefix: bytes) -> bytes:
        return b"".join(self.parts(uri_prefix))

    def doc(self, uri_prefix: bytes) -> dict:
        """A fresh, parsed copy of the v0.5 JSON."""
        return json.loads(self.body(uri_prefix))

    def v2_body(self) -> bytes:
        """The Case API v2 JSON (Django `JsonResponse` style: insertion order, ASCII)."""
        if self.v2 is None:
            self.v2 = json.dumps(case_v2(self.doc(b""))).encode("ascii")
        return self.v2


class RawRecord(Record):
    """Any JSON value served verbatim (no `resource_uri` added): a malformed record, to test a
    reader's dead-letter path. Only its id and `indexed_on` take part in queries."""

    def __init__(self, kind: str, doc: Any, record_id: str, seq: int, ix: int):
        self.kind, self.id, self.seq, self.ix = kind, record_id, seq, ix
        self.keys = (None,) * (4 if kind == "case" else 2)
        self.terms = (None,) * (8 if kind == "case" else 3)
        self.archived, self.case_ids = False, ()
        self.head, self.tail = json.dumps(doc, sort_keys=True).encode(), b""
        self.v2 = self.head

    def parts(self, uri_prefix: bytes) -> tuple[bytes, bytes, bytes]:
        return self.head, b"", b""


def _case_ids(node: Any) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _case_ids(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "case" and isinstance(value, (dict, list)):
                for block in value if isinstance(value, list) else [value]:
                    if isinstance(block, dict) and "@case_id" in block:
                        yield block["@case_id"]
            elif isinstance(value, (dict, list)):
                yield from _case_ids(value)


def case_v2(doc: dict) -> dict:
    """v0.5 case JSON -> Case API v2 shape (`serialize_es_case`): specials top level."""
    props = doc.get("properties") or {}

    def date(value: Any) -> Any:
        return None if value == PLACEHOLDER else value

    return {
        "domain": doc.get("domain"),
        "case_id": doc.get("case_id"),
        "case_type": props.get("case_type"),
        "case_name": props.get("case_name"),
        "external_id": props.get("external_id"),
        "owner_id": props.get("owner_id"),
        "date_opened": props.get("date_opened"),
        "last_modified": date(doc.get("date_modified")),
        "server_last_modified": date(doc.get("server_date_modified")),
        "indexed_on": doc.get("indexed_on"),
        "closed": doc.get("closed"),
        "date_closed": doc.get("date_closed"),
        "properties": {k: v for k, v in props.items() if k not in SPECIAL_PROPERTIES},
        "indices": doc.get("indices") or {},
    }
