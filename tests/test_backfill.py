"""Backfill, reset, concurrent runs and the look-back window."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from etl import state
from etl.dates import parse_hq_datetime
from etl.errors import ExitCode, LockBusyError
from etl.sync import backfill_key, make_client, reset_streams, run_backfill, run_sync, sync_stream
from tests.conftest import cli_env, make_settings, run_cli
from tests.matching import assert_cases_match, assert_warehouse_matches


def _stamps(sim, resource="case"):
    return sorted(parse_hq_datetime(r["indexed_on"]) for r in sim.snapshot("demo", resource).values())


def test_backfill_rereads_a_window_without_moving_the_sync_checkpoint(sim, settings, warehouse, db):
    run_sync(settings, warehouse)
    before = state.load_checkpoint(db, warehouse.schema, "demo", "cases")
    # Someone damages the warehouse rows of one window.
    stamps = _stamps(sim)
    since, until = stamps[10], stamps[30]
    db.execute(f'delete from "{warehouse.schema}".cases where indexed_on between %s and %s',
               (since, until))
    report = run_backfill(settings, warehouse, "cases", "demo", since, until)
    assert report.status == "ok" and report.command == "backfill"
    assert 21 <= report.records <= 40
    assert_cases_match(db, warehouse.schema, sim)
    assert state.load_checkpoint(db, warehouse.schema, "demo", "cases") == before
    assert state.load_checkpoint(db, warehouse.schema, "demo", backfill_key("cases")) is None


def test_backfill_resumes_its_own_progress_after_a_crash(sim_factory, schema, pg_url, warehouse, db):
    sim = sim_factory(n_cases=100)
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=10, retry_max_seconds=0.2)
    sim.faults.add("500", count=10_000, resource="case", after=3)
    with pytest.raises(Exception):
        run_backfill(settings, warehouse, "cases", "demo", None, None)
    progress = state.load_checkpoint(db, schema, "demo", backfill_key("cases"))
    assert progress and progress["open_until"] and progress["indexed_on"]
    assert state.load_checkpoint(db, schema, "demo", "cases") is None  # sync checkpoint untouched
    sim.faults.clear()
    sim.clear_requests()
    report = run_backfill(settings, warehouse, "cases", "demo", None, None)
    assert report.status == "ok" and report.records < 100  # it did not start over
    assert_cases_match(db, schema, sim)


def test_backfill_runs_while_a_sync_holds_its_lock(sim, settings, warehouse, db):
    with warehouse.connect() as other, state.stream_lock(other, warehouse.schema, "demo", "cases"):
        report = run_backfill(settings, warehouse, "forms", "demo", None, None)
        report2 = run_backfill(settings, warehouse, "cases", "demo", None, None)
    assert report.status == report2.status == "ok"
    assert_warehouse_matches(db, warehouse.schema, sim)


def test_backfill_cli_validates_dates(sim, schema, pg_url):
    env = cli_env(sim.base_url, schema, pg_url)
    bad = run_cli(["backfill", "--resource", "cases", "--since", "last tuesday"], env)
    assert bad.returncode == ExitCode.CONFIG and "--since" in bad.stderr
    ok = run_cli(["backfill", "--resource", "forms", "--since", "2000-01-01"], env)
    assert ok.returncode == 0, ok.stderr
    assert "backfill forms [demo]: ok" in ok.stdout


def test_reset_forgets_the_checkpoint_but_keeps_the_data(sim, settings, warehouse, db):
    run_sync(settings, warehouse)
    count = db.execute(f'select count(*) from "{warehouse.schema}".cases').fetchone()[0]
    assert reset_streams(settings, warehouse, "demo", ["cases"]) == 1
    assert state.load_checkpoint(db, warehouse.schema, "demo", "cases") is None
    assert state.load_checkpoint(db, warehouse.schema, "demo", "forms") is not None
    assert db.execute(f'select count(*) from "{warehouse.schema}".cases').fetchone()[0] == count
    report = run_sync(settings, warehouse, streams=["cases"])[0]
    assert report.records >= count  # re-read from the beginning
    assert_cases_match(db, warehouse.schema, sim)


def test_reset_needs_a_domain_when_several_are_configured(sim, schema, pg_url):
    env = cli_env(sim.base_url, schema, pg_url, COMMCARE_DOMAIN="demo,other")
    result = run_cli(["reset", "--resource", "cases"], env)
    assert result.returncode == ExitCode.CONFIG and "--domain" in result.stderr
    result = run_cli(["reset", "--resource", "all", "--domain", "demo"], env)
    assert result.returncode == 0, result.stderr


def test_a_second_sync_of_the_same_stream_exits_with_code_4(sim, schema, pg_url, warehouse):
    env = cli_env(sim.base_url, schema, pg_url, STREAMS="cases")
    with warehouse.connect() as conn, state.stream_lock(conn, schema, "demo", "cases"):
        result = run_cli(["sync"], env)
    assert result.returncode == ExitCode.LOCKED
    assert "another commcare-etl sync of cases" in result.stderr
    with warehouse.connect() as conn:
        runs = conn.execute(f'select count(*) from "{schema}".sync_runs').fetchone()[0]
    assert runs == 0  # the locked-out run did nothing


def test_a_waiting_sync_proceeds_when_the_lock_is_released(sim, settings, warehouse):
    settings = settings.model_copy(update={"lock_wait_seconds": 10.0})
    with warehouse.connect() as conn:
        with state.stream_lock(conn, warehouse.schema, "demo", "cases"):
            done: list = []
            worker = threading.Thread(target=lambda: done.append(
                sync_stream(settings, warehouse, make_client(settings), "demo", "cases")))
            worker.start()
            worker.join(0.5)
            assert worker.is_alive()  # waiting for the lock
        worker.join(20)
    assert done and done[0].status == "ok"


def test_lock_busy_is_raised_after_the_wait(warehouse):
    with warehouse.connect() as a, warehouse.connect() as b:
        with state.stream_lock(a, warehouse.schema, "demo", "forms"):
            with pytest.raises(LockBusyError, match="LOCK_WAIT_SECONDS"):
                with state.stream_lock(b, warehouse.schema, "demo", "forms", wait_seconds=0.2):
                    pass
        with state.stream_lock(b, warehouse.schema, "demo", "forms"):  # free again
            pass


def test_different_streams_and_domains_sync_in_parallel(sim_factory, schema, pg_url, warehouse, db):
    sim = sim_factory(n_cases=80, domains=("demo", "other"))
    settings = make_settings(sim.base_url, schema, pg_url, commcare_domain=["demo", "other"],
                             case_page_size=10, form_page_size=10)
    results: list = []
    threads = [threading.Thread(target=lambda d=d, s=s: results.append(
        sync_stream(settings, warehouse, make_client(settings), d, s)))
        for d in ("demo", "other") for s in ("cases", "forms")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r.status for r in results) == ["ok"] * 4
    assert_warehouse_matches(db, schema, sim, "demo")
    assert_warehouse_matches(db, schema, sim, "other")


def test_lookback_catches_late_indexed_documents(sim, schema, pg_url, warehouse, db):
    settings = make_settings(sim.base_url, schema, pg_url, lookback_seconds=600)
    run_sync(settings, warehouse)
    late_cases = sim.add_late("demo", "case", 3, lag=timedelta(minutes=5))
    late_forms = sim.add_late("demo", "form", 2, lag=timedelta(minutes=5))
    run_sync(settings, warehouse)
    assert_warehouse_matches(db, schema, sim)
    got = db.execute(f'select count(*) from "{schema}".cases where case_id = any(%s)',
                     (late_cases,)).fetchone()[0]
    assert got == 3
    assert db.execute(f'select count(*) from "{schema}".forms where form_id = any(%s)',
                      (late_forms,)).fetchone()[0] == 2
    # Without the look-back, a late document would be missed: the proof that it matters.
    no_lookback = make_settings(sim.base_url, schema, pg_url, lookback_seconds=0)
    missed = sim.add_late("demo", "case", 1, lag=timedelta(minutes=5))
    run_sync(no_lookback, warehouse, streams=["cases"])
    assert db.execute(f'select count(*) from "{schema}".cases where case_id = any(%s)',
                      (missed,)).fetchone()[0] == 0


def test_archive_and_unarchive_keep_forms_archived_current(sim, settings, warehouse, db):
    run_sync(settings, warehouse)
    form_ids = sorted(sim.snapshot("demo", "form"))[:3]
    sim.archive_forms("demo", form_ids)
    run_sync(settings, warehouse, streams=["forms"])
    q = f'select bool_and(archived) from "{warehouse.schema}".forms where form_id = any(%s)'
    assert db.execute(q, (form_ids,)).fetchone()[0] is True
    sim.unarchive_forms("demo", form_ids[:2])
    run_sync(settings, warehouse, streams=["forms"])
    rows = dict(db.execute(f'select form_id, archived from "{warehouse.schema}".forms '
                           f'where form_id = any(%s)', (form_ids,)).fetchall())
    assert rows == {form_ids[0]: False, form_ids[1]: False, form_ids[2]: True}
    assert any("include_archived" in r.query for r in sim.requests if "/form/" in r.path)


def test_closing_cases_keeps_closed_fields_current(sim, settings, warehouse, db):
    run_sync(settings, warehouse)
    open_ids = [cid for cid, c in sim.snapshot("demo", "case").items() if not c["closed"]][:4]
    sim.close_cases("demo", open_ids)
    run_sync(settings, warehouse, streams=["cases"])
    rows = db.execute(f'select closed, closed_by, date_closed from "{warehouse.schema}".cases '
                      f'where case_id = any(%s)', (open_ids,)).fetchall()
    assert len(rows) == 4 and all(closed and by and when for closed, by, when in rows)
    assert_cases_match(db, warehouse.schema, sim)


def test_parallel_streams_sync_everything_in_worker_processes(sim_factory, schema, pg_url,
                                                              warehouse, db):
    sim = sim_factory(n_cases=90, domains=("demo", "other"))
    settings = make_settings(sim.base_url, schema, pg_url, commcare_domain=["demo", "other"],
                             parallel_streams=3, case_page_size=20, form_page_size=20)
    reports = run_sync(settings, warehouse)
    assert [(r.domain, r.stream, r.status) for r in reports] == [
        ("demo", "apps", "ok"), ("other", "apps", "ok"), ("demo", "cases", "ok"),
        ("demo", "forms", "ok"), ("other", "cases", "ok"), ("other", "forms", "ok")]
    assert all(r.records > 0 for r in reports)
    assert_warehouse_matches(db, schema, sim, "demo")
    assert_warehouse_matches(db, schema, sim, "other")


def test_parallel_failures_come_back_with_their_exit_codes(sim, schema, pg_url, warehouse):
    sim.faults.add("503", count=10_000, resource="form")
    env = cli_env(sim.base_url, schema, pg_url, PARALLEL_STREAMS="2", RETRY_MAX_SECONDS="0.3")
    result = run_cli(["sync"], env)
    assert result.returncode == ExitCode.FAILURE
    assert "forms [demo]" in result.stderr.strip().splitlines()[-1]
    with warehouse.connect() as conn:
        statuses = dict(conn.execute(f'select stream, status from "{schema}".sync_runs').fetchall())
    assert statuses == {"apps": "ok", "cases": "ok", "forms": "failed"}
