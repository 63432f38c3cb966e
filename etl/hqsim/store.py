"""The simulator's search index: documents kept sorted by `indexed_on` at millisecond precision.

Like HQ's Elasticsearch, a write re-indexes the whole document with a new `indexed_on`, and
documents with equal sort keys come back in a stable but otherwise arbitrary (insertion) order:
there is no tie-break on the id.
"""

from __future__ import annotations

import bisect
import itertools
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

UTC = timezone.utc


def parse(value: str | None) -> datetime | None:
    if not value or value.startswith("1900-01-01"):
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


def to_ms(moment: datetime | None) -> int:
    """Milliseconds since the epoch, truncated: ES keeps dates at millisecond precision."""
    if moment is None:
        return -1  # missing sorts first, as ES does for ascending sorts
    return (moment - EPOCH) // ONE_MS


@dataclass
class Doc:
    id: str
    record: dict
    seq: int
    stamp_ms: int
    body: bytes = b""

    def refresh(self) -> None:
        self.stamp_ms = to_ms(parse(self.record.get("indexed_on")))
        self.body = json.dumps(self.record, separators=(",", ":")).encode()


@dataclass
class Index:
    """One resource (cases or forms) of one domain."""

    docs: dict[str, Doc] = field(default_factory=dict)
    order: list[tuple[int, int, str]] = field(default_factory=list)  # (stamp_ms, seq, id)
    counter: itertools.count = field(default_factory=itertools.count)

    def put(self, record: dict, doc_id: str) -> None:
        old = self.docs.get(doc_id)
        if old is not None:
            position = bisect.bisect_left(self.order, (old.stamp_ms, old.seq, doc_id))
            del self.order[position]
        doc = Doc(doc_id, record, next(self.counter), 0)
        doc.refresh()
        self.docs[doc_id] = doc
        bisect.insort(self.order, (doc.stamp_ms, doc.seq, doc_id))

    def delete(self, doc_id: str) -> None:
        doc = self.docs.pop(doc_id, None)
        if doc is not None:
            del self.order[bisect.bisect_left(self.order, (doc.stamp_ms, doc.seq, doc_id))]

    def bulk_load(self, records: dict[str, dict]) -> None:
        for doc_id, record in records.items():
            doc = Doc(doc_id, record, next(self.counter), 0)
            doc.refresh()
            self.docs[doc_id] = doc
        self.order = sorted((d.stamp_ms, d.seq, d.id) for d in self.docs.values())

    def range_entries(self, start_ms: int | None, end_ms: int | None) -> list[str] | range:
        lo = 0 if start_ms is None else bisect.bisect_left(self.order, (start_ms, -1, ""))
        hi = len(self.order) if end_ms is None else bisect.bisect_left(self.order, (end_ms + 1, -1, ""))
        return self.order[lo:hi] if lo < hi else []

    def newest_ms(self) -> int:
        return self.order[-1][0] if self.order else -1
