"""Ties on unstable order: HQ's search copies order records of one `indexed_on` millisecond
differently on every request, and records leave that millisecond while it is being read. A
sync must still read every record of it, in a bounded number of requests, or fail loudly."""

from __future__ import annotations

import copy
import uuid
from collections import Counter
from datetime import datetime, timezone

import pytest

from etl.errors import HQError
from etl.extract.streams import IndexedOnStream
from etl.sync import make_client, run_sync, sync_stream
from tests.conftest import make_settings
from tests.matching import assert_cases_match, assert_forms_match, assert_warehouse_matches

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def _list_requests(sim, resource: str) -> list[str]:
    return [f"{r.path}?{r.query}" for r in sim.requests if f"/{resource}/" in r.path]


def test_a_big_tie_on_three_search_copies_loses_nothing(sim_factory, schema, pg_url, warehouse, db):
    sim = sim_factory(n_cases=30, replicas=3)
    tied_cases = sim.add_ties("demo", "case", 12_000, indexed_on=T0)
    tied_forms = sim.add_ties("demo", "form", 2_500, indexed_on=T0)
    sim.add_cases("demo", 3)
    sim.clear_requests()
    settings = make_settings(sim.base_url, schema, pg_url)
    reports = run_sync(settings, warehouse, streams=["cases", "forms"])
    assert all(r.status == "ok" for r in reports), [r.error for r in reports]
    assert_warehouse_matches(db, schema, sim)
    assert len({r.replica for r in sim.requests if r.replica is not None}) == 3
    for resource, tied, page in (("case", tied_cases, 5000), ("form", tied_forms, 1000)):
        made = _list_requests(sim, resource)
        assert not [q for q, n in Counter(made).items() if n > 1], "a request was repeated"
        # What the README promises a tie costs: about one request per page of it, plus 2.
        others = len(sim.snapshot("demo", resource)) - len(tied)
        assert len(made) <= (others // page + 2) + (len(tied) // page + 3), len(made)


@pytest.mark.parametrize("resource", ["case", "form"])
def test_records_reindexed_while_their_millisecond_is_read_are_not_lost(
        sim_factory, schema, pg_url, warehouse, db, resource):
    sim = sim_factory(n_cases=20, replicas=3)
    sim.add_ties("demo", resource, 3_000, indexed_on=T0)
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=500,
                             form_page_size=500)
    sim.reindex_during_reads(resource, after_requests=2, count=3, seed=1)
    sim.reindex_during_reads(resource, after_requests=4, count=3, seed=2)
    stream = "cases" if resource == "case" else "forms"
    report = sync_stream(settings, warehouse, make_client(settings), "demo", stream)
    assert report.status == "ok"
    assert len(sim.reindexed_ids) == 6
    (assert_cases_match if resource == "case" else assert_forms_match)(db, schema, sim)


def _same_keys(sim, n: int) -> list[str]:
    """`n` forms alike in every key HQ can sort or filter on: only offsets can page them."""
    template = next(iter(sim.snapshot("demo", "form").values()))
    stamp = T0.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ids = []
    for _ in range(n):
        doc = copy.deepcopy(template)
        doc.pop("resource_uri", None)
        doc["id"] = str(uuid.uuid4())
        doc["indexed_on"] = doc["received_on"] = doc["server_modified_on"] = stamp
        ids.append(sim.add_record("demo", "form", doc))
    return ids


def test_a_tie_no_key_can_split_is_re_read_until_complete(sim_factory, schema, pg_url,
                                                          warehouse, db):
    sim = sim_factory(n_cases=10, replicas=3)
    tied = _same_keys(sim, 250)
    settings = make_settings(sim.base_url, schema, pg_url, form_page_size=100)
    report = sync_stream(settings, warehouse, make_client(settings), "demo", "forms")
    assert report.status == "ok"
    got = {r[0] for r in db.execute(f'select form_id from "{schema}".forms')}
    assert set(tied) <= got
    assert_forms_match(db, schema, sim)


def test_a_tie_that_cannot_be_read_completely_fails_loudly_and_keeps_the_checkpoint(
        sim_factory, schema, pg_url, warehouse, db, monkeypatch):
    sim = sim_factory(n_cases=10, replicas=3)
    _same_keys(sim, 600)
    settings = make_settings(sim.base_url, schema, pg_url, form_page_size=100)
    monkeypatch.setattr(IndexedOnStream, "tie_passes", 1)
    with pytest.raises(HQError, match=r"indexed_on 2025-03-01T12:00:00\.123"):
        sync_stream(settings, warehouse, make_client(settings), "demo", "forms")
    cursor = db.execute(f"select cursor from \"{schema}\".sync_checkpoints "
                        f"where stream = 'forms'").fetchone()
    # Never past the millisecond it could not read whole.
    assert cursor is None or (cursor[0]["indexed_on"].startswith("2025-03-01T12:00:00.123")
                              and "tie" in cursor[0])
    run = db.execute(f'select status, error from "{schema}".sync_runs').fetchone()
    assert run[0] == "failed" and "2025-03-01T12:00:00.123" in run[1]


def test_a_run_stopped_inside_a_tie_resumes_there(sim_factory, schema, pg_url, warehouse, db):
    sim = sim_factory(n_cases=10, replicas=3)
    sim.add_ties("demo", "case", 1_200, indexed_on=T0)
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=100,
                             retry_max_seconds=0.2)
    sim.faults.add("500", count=10_000, resource="case", after=6)
    with pytest.raises(HQError):
        sync_stream(settings, warehouse, make_client(settings), "demo", "cases")
    cursor = db.execute(f"select cursor from \"{schema}\".sync_checkpoints "
                        f"where stream = 'cases'").fetchone()[0]
    assert cursor.get("tie"), cursor  # stopped part-way through the millisecond
    sim.faults.clear()
    sim.clear_requests()
    report = sync_stream(settings, warehouse, make_client(settings), "demo", "cases")
    assert report.status == "ok"
    assert report.records < 1_200  # it went on from where it stopped
    assert_cases_match(db, schema, sim)
