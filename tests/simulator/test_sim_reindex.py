"""Documents re-indexed in the middle of an offset-paged read."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.simulator.conftest import CASES, FORMS, Client, make_sim

LIMIT = 10


def _read(client: Client, path: str, params: dict) -> list[str]:
    """Page by offset, as a naive reader does, until `next` is null."""
    seen, offset = [], 0
    while True:
        page = client.json(path, {**params, "limit": LIMIT, "offset": offset})
        seen += [r["id"] for r in page["objects"]]
        if not page["meta"]["next"]:
            return seen
        offset += LIMIT


def test_a_form_archived_mid_read_shifts_the_pages_after_it(sim, client: Client):
    params = {"order_by": "indexed_on"}
    before = _read(client, FORMS, params)
    sim.reindex_during_reads(resource="form", after_requests=2, count=1, seed=3)
    seen = _read(client, FORMS, params)
    (moved,) = sim.reindexed_ids
    assert moved in before[LIMIT:2 * LIMIT]  # drawn from the second page, which served it
    assert sim.snapshot("demo", "form")[moved]["archived"] is True
    assert seen.count(moved) == 1
    # Everything after the second page moved up one place: the first of page three is lost.
    assert set(before) - set(seen) == {before[2 * LIMIT]}
    assert len(seen) == len(before) - 1 and len(set(seen)) == len(seen)
    # One-shot: reading again moves nothing more.
    assert _read(client, FORMS, params) == [i for i in before if i != moved]
    assert sim.reindexed_ids == [moved]


def test_cases_touched_mid_read_are_served_twice_and_others_never(sim, client: Client):
    params = {"order_by": "indexed_on"}
    before = _read(client, CASES, params)
    old = sim.snapshot("demo", "case")
    sim.reindex_during_reads(resource="case", after_requests=1, count=2, seed=1)
    seen = _read(client, CASES, params)
    moved = sim.reindexed_ids
    assert len(moved) == 2 and set(moved) <= set(before[:LIMIT])
    assert {i for i, n in Counter(seen).items() if n > 1} == set(moved)
    assert set(before) - set(seen) == set(before[LIMIT:LIMIT + 2])
    assert seen[-2:] == [i for i in before if i in moved]  # re-indexed last, in page order
    new = sim.snapshot("demo", "case")
    for case_id in moved:
        assert new[case_id]["indexed_on"] > max(c["indexed_on"] for c in old.values())
        assert new[case_id]["server_date_modified"] > old[case_id]["server_date_modified"]
        assert {k: v for k, v in new[case_id].items()
                if k not in ("indexed_on", "server_date_modified")} == \
            {k: v for k, v in old[case_id].items()
             if k not in ("indexed_on", "server_date_modified")}


def test_the_draw_is_seeded_and_triggers_count_only_their_resource_and_domain():
    def run(seed: int) -> list[str]:
        sim = make_sim()
        try:
            client = Client(sim)
            sim.reindex_during_reads("case", after_requests=2, count=3, domain="elsewhere")
            sim.reindex_during_reads("case", after_requests=2, count=3, seed=seed)
            client.json(FORMS, {"limit": 5})  # other resources do not count
            client.json(CASES, {"limit": 5})
            assert sim.reindexed_ids == []
            client.json(CASES, {"limit": 5, "offset": 5})
            return sim.reindexed_ids
        finally:
            sim.stop()

    first = run(seed=11)
    assert len(first) == 3 and run(seed=11) == first
    assert any(run(seed=s) != first for s in (12, 13, 14))


def test_count_beyond_the_page_moves_the_whole_page_and_archived_forms_are_skipped(sim, client):
    sim.reindex_during_reads("form", count=50)
    page = client.json(FORMS, {"limit": 4, "include_archived": "1", "order_by": "indexed_on"})
    served = [f["id"] for f in page["objects"] if not f["archived"]]
    assert sorted(sim.reindexed_ids) == sorted(served)


def test_bad_arguments_are_refused(sim):
    for kwargs in ({"resource": "cases"}, {"resource": "case", "after_requests": 0},
                   {"resource": "form", "count": 0}):
        with pytest.raises(ValueError):
            sim.reindex_during_reads(**kwargs)
    with pytest.raises(KeyError):
        sim.reindex_during_reads("case", domain="nowhere")
