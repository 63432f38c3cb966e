"""Elasticsearch replicas: the same documents, a different order among equal sort keys.

HQ serves the v0.5 case and form lists from Elasticsearch, which keeps several copies of each
shard (a primary and its replicas) and answers each search from any one of them. A sort with
equal values falls back to Lucene's internal document order, and that order is a property of
each copy's segments (how and when it merged them), so two copies list a tie differently. HQ
adds no tie-breaker to v0.5 sorts (`ElasticAPIQuerySet.order_by` sorts on the requested fields
only), so a reader paging a tie by `offset` can get a page from one copy and the next page from
another: some tied documents are served twice, others never.

A replica here is a salt. With one copy, ties keep write order (what the simulator always did);
with several, each copy orders every run of equal keys by a hash of (its salt, record id).
Only the runs that overlap the served window are reordered (extended to the whole run at both
ends), so a page costs its own size plus the size of the ties it touches, never a re-sort of
the collection.
"""

from __future__ import annotations

import bisect
import hashlib
from typing import Any, Callable, Sequence

from etl.simulator.records import Record

Key = Callable[[Record], Any]
RunCache = dict  # (salt, first, end) -> the run in this replica's order

MIN_CACHED_RUN = 32  # shorter runs are cheaper to reorder than to look up


def salts(n: int, seed: int = 0) -> list[bytes]:
    """One salt per copy of the index (a blake2b key: 16 bytes)."""
    return [hashlib.blake2b(f"replica:{seed}:{i}".encode(), digest_size=16).digest()
            for i in range(n)]


def _rank(salt: bytes) -> Callable[[Record], bytes]:
    """A copy's internal order: deterministic, and unrelated between copies."""
    def rank(r: Record) -> bytes:
        return hashlib.blake2b(r.id.encode("utf-8", "surrogatepass"), digest_size=8,
                               key=salt).digest()
    return rank


def window(records: Sequence[Record], lo: int, hi: int, offset: int, limit: int, key: Key,
           salt: bytes, cache: RunCache | None = None) -> list[Record]:
    """`records[lo:hi]` (sorted by `key`, ties in write order) as this copy serves
    `[offset:offset + limit]` of it."""
    a, b = lo + offset, min(hi, lo + offset + limit)
    if a >= b:
        return []
    first = bisect.bisect_left(records, key(records[a]), lo, a, key=key)
    end = bisect.bisect_right(records, key(records[b - 1]), b, hi, key=key)
    segment = records[first:end]
    keys = list(map(key, segment))
    tied = [i for i, (x, y) in enumerate(zip(keys, keys[1:]), 1) if x == y]
    if not tied:
        return list(segment[a - first:b - first])
    out: list[Record] = []
    done = n = 0
    while n < len(tied):  # consecutive positions in `tied` make one run of equal keys
        m = n
        while m + 1 < len(tied) and tied[m + 1] == tied[m] + 1:
            m += 1
        run_start, run_stop = tied[n] - 1, tied[m] + 1
        out.extend(segment[done:run_start])
        out.extend(_run(records, first + run_start, first + run_stop, salt, cache))
        done, n = run_stop, m + 1
    out.extend(segment[done:])
    return out[a - first:b - first]


def _run(records: Sequence[Record], i: int, j: int, salt: bytes,
         cache: RunCache | None) -> list[Record]:
    if cache is None or j - i < MIN_CACHED_RUN:
        return sorted(records[i:j], key=_rank(salt))
    ordered = cache.get((salt, i, j))
    if ordered is None:
        ordered = cache[(salt, i, j)] = sorted(records[i:j], key=_rank(salt))
    return ordered
