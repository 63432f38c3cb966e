"""End to end: the real extractors over real HTTP to the simulator, into a real PostgreSQL."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone

import pytest

from etl import state
from etl.dates import parse_hq_datetime, truncate_ms
from etl.sync import run_sync, sync_stream
from tests.conftest import make_settings
from tests.matching import (assert_cases_match, assert_forms_match, assert_warehouse_matches,
                            follow_up_forms)

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def _requests(sim, resource_path: str) -> list[str]:
    return [f"{r.path}?{r.query}" for r in sim.requests if resource_path in r.path]


def test_initial_sync_loads_exactly_what_hq_serves(sim, settings, warehouse, db):
    reports = {r.stream: r for r in run_sync(settings, warehouse)}
    assert [(r.stream, r.status) for r in reports.values()] == [
        ("apps", "ok"), ("cases", "ok"), ("forms", "ok")]
    n_cases, n_forms = assert_warehouse_matches(db, warehouse.schema, sim)
    assert n_cases == len(sim.snapshot("demo", "case")) > 0
    assert reports["cases"].records >= n_cases and reports["forms"].records >= n_forms
    checkpoints = {s: c for _, s, c, _, _ in state.list_checkpoints(db, warehouse.schema)}
    assert set(checkpoints) == {"apps", "cases", "forms"}
    newest = max(parse_hq_datetime(c["indexed_on"]) for c in sim.snapshot("demo", "case").values())
    assert parse_hq_datetime(checkpoints["cases"]["indexed_on"]) == truncate_ms(newest)
    runs = db.execute(f'select stream, status, records from "{warehouse.schema}".sync_runs').fetchall()
    assert sorted(r[:2] for r in runs) == [("apps", "ok"), ("cases", "ok"), ("forms", "ok")]


def test_incremental_sync_picks_up_changes_and_reads_only_new_pages(sim, settings, warehouse, db):
    run_sync(settings, warehouse)
    ids = sorted(sim.snapshot("demo", "case"))
    sim.update_cases("demo", ids[:5], {"colour": "blue"})
    sim.close_cases("demo", ids[5:7])
    new_cases = sim.add_cases("demo", 4)
    form_ids = follow_up_forms(sim)
    sim.archive_forms("demo", form_ids[:2])
    sim.clear_requests()

    reports = {r.stream: r for r in run_sync(settings, warehouse)}
    assert_warehouse_matches(db, warehouse.schema, sim)
    # Only the changed records (plus the boundary millisecond) are read again.
    assert reports["cases"].records < 20
    assert reports["cases"].inserted == 4 and reports["cases"].updated >= 7
    row = db.execute(f'select properties->>\'colour\' from "{warehouse.schema}".cases '
                     f'where case_id = %s', (ids[0],)).fetchone()
    assert row == ("blue",)
    assert db.execute(f'select count(*) from "{warehouse.schema}".cases where case_id = any(%s)',
                      (new_cases,)).fetchone()[0] == 4
    archived = db.execute(f'select archived from "{warehouse.schema}".forms where form_id = any(%s)',
                          (form_ids[:2],)).fetchall()
    assert archived == [(True,), (True,)]


def test_rerun_without_changes_is_idempotent(sim, settings, warehouse, db):
    run_sync(settings, warehouse)
    before = db.execute(f'select count(*), sum(hashtext(properties::text)) '
                        f'from "{warehouse.schema}".cases').fetchone()
    reports = run_sync(settings, warehouse, streams=["cases", "forms"])
    assert all(r.status == "ok" and r.inserted == 0 for r in reports)
    after = db.execute(f'select count(*), sum(hashtext(properties::text)) '
                       f'from "{warehouse.schema}".cases').fetchone()
    assert before == after
    assert_warehouse_matches(db, warehouse.schema, sim)


@pytest.mark.parametrize("resource, stream, page_size", [
    ("case", "cases", 5000), ("case", "cases", 1000), ("form", "forms", 1000)])
def test_twelve_thousand_ties_no_repeated_request_nothing_lost(
        sim_factory, schema, pg_url, warehouse, db, resource, stream, page_size):
    sim = sim_factory(n_cases=30)
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=page_size,
                             form_page_size=min(page_size, 1000))
    tied = sim.add_ties("demo", resource, 12_000, indexed_on=T0)
    sim.add_cases("demo", 3)  # more records after the tie
    sim.clear_requests()
    from etl.sync import make_client

    report = sync_stream(settings, warehouse, make_client(settings), "demo", stream)
    assert report.status == "ok"
    made = _requests(sim, f"/{resource}/")
    repeats = [q for q, n in Counter(made).items() if n > 1]
    assert not repeats, f"repeated requests: {repeats[:2]}"
    assert len(made) <= 12_000 // page_size + 6
    table, key = ("cases", "case_id") if stream == "cases" else ("forms", "form_id")
    got = {r[0] for r in db.execute(f'select {key} from "{schema}".{table}').fetchall()}
    assert set(tied) <= got
    if stream == "cases":
        assert_cases_match(db, schema, sim)
    else:
        assert_forms_match(db, schema, sim)


def test_ties_spanning_a_page_boundary_mixed_with_other_times(sim_factory, schema, pg_url,
                                                               warehouse, db):
    sim = sim_factory(n_cases=10)
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=50)
    sim.add_ties("demo", "case", 120, indexed_on=T0)
    sim.add_cases("demo", 5)
    sim.add_ties("demo", "case", 49, indexed_on=datetime(2030, 1, 1, tzinfo=timezone.utc))
    sim.add_ties("demo", "case", 51, indexed_on=datetime(2030, 1, 2, tzinfo=timezone.utc))
    report = run_sync(settings, warehouse, streams=["cases"])[0]
    assert report.status == "ok"
    assert_cases_match(db, schema, sim)
    made = _requests(sim, "/case/")
    assert len(made) == len(set(made))


def test_case_api_v2_cursor_sync(sim_factory, schema, pg_url, warehouse, db):
    sim = sim_factory(n_cases=40)
    settings = make_settings(sim.base_url, schema, pg_url, case_api="v2", case_page_size=25)
    sim.add_ties("demo", "case", 60, indexed_on=T0)
    sim.add_cases("demo", 2)  # so the watermark is not inside the tie
    report = run_sync(settings, warehouse, streams=["cases"])[0]
    assert report.status == "ok" and report.pages >= 4
    assert all("/case/v2/" in r.path for r in sim.requests if "/case" in r.path)
    rows = dict(db.execute(f'select case_id, properties from "{schema}".cases').fetchall())
    expected = sim.snapshot("demo", "case")
    assert set(rows) == set(expected)
    # v2 puts the special properties top level; the warehouse keeps v0.5's shape.
    some_id = sorted(rows)[0]
    assert rows[some_id]["case_type"] == expected[some_id]["properties"]["case_type"]
    index_count = db.execute(f'select count(*) from "{schema}".case_indices').fetchone()[0]
    assert index_count == sum(len(c.get("indices") or {}) for c in expected.values())
    # A second v2 run starts from the watermark and reads only the boundary.
    sim.update_cases("demo", [some_id], {"colour": "green"})
    again = run_sync(settings, warehouse, streams=["cases"])[0]
    assert again.records < 10
    assert db.execute(f"select properties->>'colour' from \"{schema}\".cases where case_id = %s",
                      (some_id,)).fetchone() == ("green",)


def test_awkward_values_are_loaded_and_counted(sim_factory, schema, pg_url, warehouse, db):
    sim = sim_factory(n_cases=60, awkward=True)
    settings = make_settings(sim.base_url, schema, pg_url)
    reports = run_sync(settings, warehouse)
    assert all(r.status == "ok" for r in reports)
    assert sum(r.cleaned for r in reports) > 0
    assert_warehouse_matches(db, schema, sim)
    cleaned = db.execute(f'select sum(cleaned_values) from "{schema}".sync_runs').fetchone()[0]
    assert cleaned == sum(r.cleaned for r in reports)
    assert db.execute(f'select count(*) from "{schema}".dead_letters').fetchone()[0] == 0


def test_a_record_that_cannot_be_loaded_goes_to_dead_letters_and_the_run_says_so(
        sim, settings, warehouse, db, caplog):
    broken = {"id": None, "properties": "not an object", "indexed_on": "2030-01-01T00:00:00.000000Z"}
    sim.add_raw("demo", "case", broken, "broken-1")
    report = run_sync(settings, warehouse, streams=["cases"])[0]
    assert report.status == "ok" and report.rejected == 1
    assert "dead_letters" in report.summary() and "dead_letters" in caplog.text
    reason, raw, url = db.execute(
        f'select reason, raw, source_url from "{warehouse.schema}".dead_letters').fetchone()
    assert "no case_id" in reason and '"not an object"' in raw and "/api/v0.5/case/" in url
    run = db.execute(f'select dead_letters from "{warehouse.schema}".sync_runs').fetchone()
    assert run == (1,)
    snapshot_ids = set(sim.snapshot("demo", "case")) - {"broken-1"}
    loaded = {r[0] for r in db.execute(f'select case_id from "{warehouse.schema}".cases')}
    assert loaded == snapshot_ids  # every other record of that page still loaded


def test_archiving_a_form_rebuilds_its_cases_and_the_warehouse_follows(sim, settings, warehouse, db):
    case_id = sorted(sim.snapshot("demo", "case"))[0]
    sim.update_cases("demo", [case_id], {"colour": "red"})
    run_sync(settings, warehouse)
    sim.update_cases("demo", [case_id], {"colour": "blue"})
    run_sync(settings, warehouse)
    blue = next(f for f in follow_up_forms(sim)
                if case_id in json.dumps(sim.snapshot("demo", "form")[f]) and "blue" in
                json.dumps(sim.snapshot("demo", "form")[f]))
    sim.archive_forms("demo", [blue])  # HQ rebuilds the case from its other forms
    run_sync(settings, warehouse)
    colour = f'select properties->>\'colour\' from "{warehouse.schema}".cases where case_id = %s'
    assert db.execute(colour, (case_id,)).fetchone() == ("red",)
    assert_warehouse_matches(db, warehouse.schema, sim)
    sim.unarchive_forms("demo", [blue])
    run_sync(settings, warehouse)
    assert db.execute(colour, (case_id,)).fetchone() == ("blue",)
    assert_warehouse_matches(db, warehouse.schema, sim)


def test_the_apps_line_counts_apps_new_and_changed(sim, settings, warehouse):
    first = run_sync(settings, warehouse, streams=["apps"])[0]
    assert first.records >= 1 and first.inserted == first.records and first.updated == 0
    again = run_sync(settings, warehouse, streams=["apps"])[0]
    assert (again.records, again.inserted, again.updated) == (first.records, 0, 0)


def test_a_long_read_into_small_shared_buffers_says_how_to_keep_it_fast(
        sim, schema, pg_url, warehouse, db, monkeypatch, caplog):
    from etl import sync

    buffers = db.execute("select pg_size_bytes(current_setting('shared_buffers'))").fetchone()[0]
    monkeypatch.setattr(sync, "BIG_READ", 10)  # the simulator's few dozen records count as many
    monkeypatch.setattr(sync, "SMALL_CACHE", buffers + 1)
    caplog.set_level("WARNING", logger="etl.sync")
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=10, form_page_size=10)
    reports = run_sync(settings, warehouse)
    assert all(r.status == "ok" for r in reports)
    assert min(r.pages for r in reports if r.stream != "apps") > 2  # said once, not per page
    advice = [r.getMessage() for r in caplog.records if "shared_buffers" in r.getMessage()]
    assert len(advice) == 2, advice  # once for cases, once for forms
    assert advice[0].startswith("sync cases [demo]: HQ has ")
    assert all("a quarter of the database server's memory" in a for a in advice)

    caplog.clear()  # buffers big enough: nothing to say
    monkeypatch.setattr(sync, "SMALL_CACHE", buffers)
    state.delete_checkpoints(db, warehouse.schema, "demo", ["cases", "forms"])
    assert all(r.status == "ok" for r in run_sync(settings, warehouse))
    assert not [r for r in caplog.records if "shared_buffers" in r.getMessage()]
