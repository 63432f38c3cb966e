"""Replicas: v0.5 lists answered by one of several index copies, each ordering ties its own way."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import pytest

from etl.simulator import replicas
from etl.simulator.query import parse_v05, run_v05
from etl.simulator.records import Record
from etl.simulator.store import Collection
from tests.simulator.conftest import CASES, CASES_V2, FORMS, Client, make_sim

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
BOUND = T0.replace(tzinfo=None).isoformat(timespec="microseconds")
TIE = {"indexed_on_start": BOUND, "indexed_on_end": BOUND, "order_by": "indexed_on"}
N = 3000


@pytest.fixture(scope="module")
def tied():
    sim = make_sim(n_cases=30)
    ids = sim.add_ties("demo", "case", N, indexed_on=T0)
    sim.add_cases("demo", 5)  # and some after it
    yield sim, ids
    sim.stop()


def _page_through(client: Client, params: dict, limit: int, total: int) -> list[str]:
    seen: list[str] = []
    for offset in range(0, total, limit):
        page = client.json(CASES, {**params, "limit": limit, "offset": offset})
        assert page["meta"]["total_count"] == total  # the same count on every copy
        seen += [c["id"] for c in page["objects"]]
    return seen


def test_offset_paging_through_a_tie_misses_and_repeats_with_replicas(tied):
    sim, ids = tied
    client = Client(sim)
    sim.set_replicas(1)
    single = _page_through(client, TIE, 500, N)
    assert single == ids  # one copy: write order, nothing lost
    sim.set_replicas(3, seed=1)
    sim.clear_requests()
    seen = _page_through(client, TIE, 500, N)
    assert len(seen) == N
    missed, repeated = set(ids) - set(seen), [i for i, n in Counter(seen).items() if n > 1]
    assert missed and repeated and len(missed) == sum(n - 1 for n in Counter(seen).values())
    assert len({r.replica for r in sim.requests}) > 1  # the log says which copy answered
    sim.set_replicas(1)


def test_each_copy_has_its_own_stable_order_and_the_draw_is_reproducible(tied):
    sim, ids = tied
    client = Client(sim)
    sim.set_replicas(3, seed=7)
    sim.clear_requests()
    pages = [tuple(c["id"] for c in client.json(CASES, {**TIE, "limit": 50, "offset": 1000})
                   ["objects"]) for _ in range(12)]
    by_copy: dict[int, set[tuple]] = {}
    for entry, page in zip(sim.requests, pages):
        by_copy.setdefault(entry.replica, set()).add(page)
    assert len(by_copy) == 3 and all(len(p) == 1 for p in by_copy.values())
    assert len(set(pages)) == 3  # three copies, three orders
    draws = [r.replica for r in sim.requests]
    sim.set_replicas(3, seed=7)  # same seed: same copies in the same order, same pages
    sim.clear_requests()
    again = [tuple(c["id"] for c in client.json(CASES, {**TIE, "limit": 50, "offset": 1000})
                   ["objects"]) for _ in range(12)]
    assert again == pages and [r.replica for r in sim.requests] == draws
    sim.set_replicas(1)


def test_records_outside_ties_are_served_alike_by_every_copy(tied):
    sim, ids = tied
    client = Client(sim)
    params = {"order_by": "indexed_on", "limit": 40}
    sim.set_replicas(1)
    wider = client.json(CASES, {**params, "limit": 80})["objects"]  # to see ties past the page
    keys = Counter(c["indexed_on"][:23] for c in wider)  # ms precision
    expected = wider[:40]
    untied = [(n, c["id"]) for n, c in enumerate(expected) if keys[c["indexed_on"][:23]] == 1]
    assert len(untied) > 20
    sim.set_replicas(3, seed=2)
    for _ in range(6):
        page = client.json(CASES, params)["objects"]
        assert [c["indexed_on"][:23] for c in page] == [c["indexed_on"][:23] for c in expected]
        assert [(n, page[n]["id"]) for n, _ in untied] == untied
    # Case API v2 is keyset-paged on (indexed_on, case_id): no copy changes it.
    v2 = [c["case_id"] for c in client.json(CASES_V2, {"limit": 200})["cases"]]
    assert all([c["case_id"] for c in client.json(CASES_V2, {"limit": 200})["cases"]] == v2
               for _ in range(4))
    sim.set_replicas(1)


def test_a_filtered_list_reorders_ties_too_and_forms_follow_the_same_rules(tied):
    sim, ids = tied
    client = Client(sim)
    sim.set_replicas(3, seed=4)
    patients = client.json(CASES, {**TIE, "type": "patient", "limit": 1})["meta"]["total_count"]
    seen = []
    for offset in range(0, patients, 200):
        seen += [c["id"] for c in client.json(
            CASES, {**TIE, "type": "patient", "limit": 200, "offset": offset})["objects"]]
    assert len(seen) == patients and len(set(seen)) < patients
    form_ids = set(sim.add_ties("demo", "form", 400, indexed_on=T0))
    got = []
    for offset in range(0, 400, 100):
        got += [f["id"] for f in client.json(FORMS, {**TIE, "limit": 100, "offset": offset})
                ["objects"]]
    assert set(got) < form_ids and len(got) == 400
    sim.set_replicas(1)


def test_only_the_ties_a_page_touches_are_reordered(tied, monkeypatch):
    sim, ids = tied
    client = Client(sim)
    ranked: list[int] = []
    original = replicas._rank

    def counting(salt):
        rank = original(salt)

        def count(r):
            ranked.append(1)
            return rank(r)
        return count

    monkeypatch.setattr(replicas, "_rank", counting)
    sim.set_replicas(3, seed=9)
    client.json(CASES, {"order_by": "indexed_on", "limit": 20})  # the oldest cases: no big tie
    assert len(ranked) < 20
    for _ in range(9):  # a small page inside the tie ranks the whole tie once per copy
        client.json(CASES, {**TIE, "limit": 10, "offset": 1500})
    assert N <= len(ranked) <= 3 * N + 20
    sim.set_replicas(1)


# --- the ordering rules, on hand-made records -------------------------------------------------

def _form(n: int, received: str, modified: str) -> Record:
    return Record("form", {"id": f"f{n:04d}", "form": {"@xmlns": "x"}, "received_on": received,
                           "server_modified_on": modified,
                           "indexed_on": f"2025-01-01T00:00:{n % 60:02d}.000000Z"}, n)


def test_ties_are_equal_keys_at_millisecond_precision_for_any_sort():
    # 60 forms received within one millisecond (µs apart), 20 a millisecond later, 20 alone.
    records = [_form(n, f"2025-02-01T10:00:00.123{n:03d}Z", "2025-02-02T00:00:00.000000Z")
               for n in range(60)]
    records += [_form(60 + n, f"2025-02-01T10:00:00.124{n:03d}Z", "2025-02-02T00:00:00.000000Z")
                for n in range(20)]
    records += [_form(80 + n, f"2025-02-01T10:00:{10 + n:02d}.000000Z",
                      f"2025-02-02T00:00:{n:02d}.000000Z") for n in range(20)]
    coll = Collection("form", records)
    salt_a, salt_b = replicas.salts(2, seed=0)
    for order_by in (["received_on"], ["-received_on"], ["received_on", "-server_modified_on"]):
        query = parse_v05("form", [("order_by", o) for o in order_by] +
                          [("include_archived", "1"), ("limit", "100")])
        _, one = run_v05(coll, query)
        _, a = run_v05(coll, query, salt_a)
        _, b = run_v05(coll, query, salt_b)
        assert sorted(r.id for r in a) == sorted(r.id for r in one) and a != b
        key = coll.sort_key(query.sort)
        assert [key(r) for r in a] == [key(r) for r in one]  # only order within ties changes
        sizes = Counter(key(r) for r in one)
        assert sorted(n for n in sizes.values() if n > 1) == [20, 60]  # µs apart, same ms
        alone = [i for i, r in enumerate(one) if sizes[key(r)] == 1]
        assert len(alone) == 20 and [a[i].id for i in alone] == [one[i].id for i in alone]
        # Page by page, each page from either copy: the same keys, other members.
        query.limit = 7
        for offset in range(0, 100, 7):
            query.offset = offset
            _, pa = run_v05(coll, query, salt_a)
            _, p1 = run_v05(coll, query)
            assert [key(r) for r in pa] == [key(r) for r in p1]


def test_replicas_must_be_positive(tied):
    sim, _ = tied
    with pytest.raises(ValueError):
        sim.set_replicas(0)
    assert sim.replicas == 1
