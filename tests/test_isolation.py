"""One failure must not stop the rest: a database error in one (domain, stream) is recorded,
logged with what to do, and every other stream and domain still syncs."""

from __future__ import annotations

import pytest

from etl.errors import ExitCode
from etl.sync import run_sync
from tests.conftest import cli_env, make_settings, run_cli
from tests.matching import assert_cases_match, assert_warehouse_matches


def _break_forms_of(db, schema: str, domain: str) -> None:
    """A trigger that fails every write of `domain`'s forms, as a full disk or a broken
    permission would: an error PostgreSQL raises, not one of ours."""
    db.execute(f'''
        create function "{schema}".refuse() returns trigger language plpgsql as $$
        begin
            if new.domain = '{domain}' then raise exception 'could not extend file: No space left on device'; end if;
            return new;
        end $$;
        create trigger refuse before insert or update on "{schema}".forms
            for each row execute function "{schema}".refuse();''')


@pytest.mark.parametrize("parallel", ["1", "2"])
def test_a_database_error_in_one_stream_is_recorded_and_the_others_still_run(
        sim_factory, schema, pg_url, warehouse, db, parallel):
    sim = sim_factory(n_cases=40, domains=("demo", "other"))
    _break_forms_of(db, schema, "demo")
    env = cli_env(sim.base_url, schema, pg_url, COMMCARE_DOMAIN="demo,other",
                  PARALLEL_STREAMS=parallel)
    result = run_cli(["sync"], env)
    assert result.returncode == ExitCode.FAILURE, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "forms [demo]" in last and "No space left on device" in last
    runs = {(d, s): (status, error) for d, s, status, error in db.execute(
        f'select domain, stream, status, error from "{schema}".sync_runs').fetchall()}
    assert runs[("demo", "forms")][0] == "failed"
    assert "database error" in runs[("demo", "forms")][1]
    assert {k: v[0] for k, v in runs.items() if k != ("demo", "forms")} == {
        ("demo", "apps"): "ok", ("demo", "cases"): "ok", ("other", "apps"): "ok",
        ("other", "cases"): "ok", ("other", "forms"): "ok"}
    assert "running" not in {status for status, _ in runs.values()}
    assert_cases_match(db, schema, sim, "demo")
    assert_warehouse_matches(db, schema, sim, "other")


def test_a_null_entry_in_a_page_goes_to_dead_letters_and_the_run_goes_on(
        sim_factory, schema, pg_url, warehouse, db):
    sim = sim_factory(n_cases=20)
    sim.add_raw("demo", "case", None, "null-entry")
    sim.add_raw("demo", "case", ["not", "an", "object"], "list-entry")
    sim.add_cases("demo", 2)
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=7)
    for _ in range(2):  # and again: a stored bad record must not fail every later run
        report = run_sync(settings, warehouse, streams=["cases"])[0]
        assert report.status == "ok", report.error
    reasons = [r[0] for r in db.execute(
        f'select reason from "{schema}".dead_letters where stream = %s', ("cases",))]
    assert any("NoneType" in r for r in reasons) and any("list" in r for r in reasons)
    assert db.execute(f'select count(*) from "{schema}".cases').fetchone()[0] == len(
        [d for d in sim.snapshot("demo", "case").values() if isinstance(d, dict)])
