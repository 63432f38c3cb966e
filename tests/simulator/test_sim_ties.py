"""12,000 documents sharing one indexed_on: with one index copy (the default) v0.5 offsets are
stable, and v2's cursor loses none (several copies: test_sim_replicas.py)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterator

import pytest

from etl.simulator import HQSimulator
from tests.simulator.conftest import CASES, CASES_V2, FORMS, Client, make_sim

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
N = 12_000


@pytest.fixture(scope="module")
def tied() -> Iterator[tuple[HQSimulator, list[str], list[str]]]:
    sim = make_sim(n_cases=30)
    case_ids = sim.add_ties("demo", "case", N, indexed_on=T0)
    form_ids = sim.add_ties("demo", "form", 1_500, indexed_on=T0)
    sim.add_cases("demo", 3)  # and a few later ones
    yield sim, case_ids, form_ids
    sim.stop()


def test_the_tie_is_one_indexed_on_and_the_clock_moved_past_it(tied):
    sim, case_ids, _ = tied
    snapshot = sim.snapshot("demo", "case")
    assert {snapshot[i]["indexed_on"] for i in case_ids} == {"2025-03-01T12:00:00.123456Z"}
    assert sim.now() > T0
    later = [c for c in snapshot.values() if c["indexed_on"] > "2025-03-01T12:00:00.124"]
    assert len(later) == 3


def test_v05_reads_a_tie_by_offset_in_a_stable_order(tied):
    sim, case_ids, _ = tied
    client = Client(sim)
    bound = T0.replace(tzinfo=None).isoformat(timespec="microseconds")
    params = {"indexed_on_start": bound, "indexed_on_end": bound, "order_by": "indexed_on",
              "limit": 1000}
    seen: list[str] = []
    for offset in range(0, N, 1000):
        page = client.json(CASES, {**params, "offset": offset})
        assert page["meta"]["total_count"] == N
        seen += [c["id"] for c in page["objects"]]
    assert len(seen) == len(set(seen)) == N and set(seen) == set(case_ids)
    # Asking again (any page, any order of requests) gives the same order.
    again = client.json(CASES, {**params, "offset": 5000})["objects"]
    assert [c["id"] for c in again] == seen[5000:6000]
    assert seen == case_ids  # write order
    # Without an end bound the tie comes first, then the later cases.
    start_only = client.json(CASES, {"indexed_on_start": bound, "order_by": "indexed_on",
                                     "limit": 5000, "offset": 10_000})
    assert start_only["meta"]["total_count"] == N + 3
    assert [c["id"] for c in start_only["objects"][:2000]] == seen[10_000:]


def test_v05_a_page_full_of_the_tie_repeats_when_re_requested_by_start(tied):
    """The commcare-export trap: the same indexed_on_start gives the same page back."""
    sim, _, form_ids = tied
    client = Client(sim)
    bound = T0.replace(tzinfo=None).isoformat(timespec="milliseconds")
    params = {"indexed_on_start": bound, "order_by": "indexed_on", "limit": 1000}
    first = client.json(FORMS, params)
    assert client.json(FORMS, params) == first
    assert {f["indexed_on"] for f in first["objects"]} == {"2025-03-01T12:00:00.123456Z"}
    assert {f["id"] for f in first["objects"]} < set(form_ids)


def test_v2_cursor_walks_through_the_tie_without_loss_or_duplicates(tied):
    sim, case_ids, _ = tied
    client = Client(sim)
    doc = client.json(CASES_V2, {"limit": 5000})
    seen, pages = [], 0
    while True:
        pages += 1
        seen += [c["case_id"] for c in doc["cases"]]
        if not doc["next"]:
            break
        doc = client.json(doc["next"])
    total = len(sim.snapshot("demo", "case"))
    assert len(seen) == len(set(seen)) == total
    assert set(case_ids) <= set(seen)
    tied_ids = set(case_ids)
    tie = [i for i in seen if i in tied_ids]
    assert tie == sorted(tie)  # (indexed_on, case_id) order inside the tie
    assert pages == total // 5000 + 1
