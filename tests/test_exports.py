"""The legacy Export API: an export replayed into export_<name> tables, incrementally by its
token, over Digest, against the simulator and real PostgreSQL."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from etl import state
from etl.sync import run_sync
from tests.conftest import USER, cli_env, make_settings, run_cli

XMLNS = "http://example.org/forms/survey"
PASSWORD = "secret-password"


@pytest.fixture
def sim(sim_factory):
    sim = sim_factory()
    sim.add_web_login(USER, PASSWORD)
    return sim


@pytest.fixture
def settings(sim, schema, pg_url):
    sim.add_forms("demo", 6, xmlns=XMLNS)
    return make_settings(sim.base_url, schema, pg_url, streams=["apps"], commcare_auth="digest",
                         commcare_password=PASSWORD, exports=[f"survey={XMLNS}"])


def _columns(db, schema: str, table: str) -> dict[str, str]:
    """HQ header -> column, from the catalog."""
    return dict(db.execute(f'select original_path, column_name from "{schema}".catalog_columns '
                           f'where table_name = %s', (table,)).fetchall())


def _table(db, schema: str, table: str, key: tuple[str, ...]) -> dict:
    columns = _columns(db, schema, table)
    names = list(columns)
    select = ", ".join([*key, *(f'"{columns[h]}"' for h in names)])
    got = {}
    for row in db.execute(f'select {select} from "{schema}"."{table}"'):
        k = row[0] if len(key) == 1 else tuple(row[:len(key)])
        got[k] = {h: v for h, v in zip(names, row[len(key):]) if v is not None}
    return got


def _expected(view: dict) -> dict:
    return {k: {h: v for h, v in values.items() if v not in ("", None) and h != "_id"}
            for k, values in view.items()}


def assert_export_matches(db, schema: str, sim) -> None:
    view = sim.export_view("demo", XMLNS)
    got = _table(db, schema, "export_survey", ("form_id",))
    assert {k: {h: v for h, v in r.items() if h != "_id"} for k, r in got.items()} == \
        _expected(view["#"])
    children = [t for t in view if t != "#"]
    assert children, "the simulator's survey has a repeat group"
    for title in children:
        table = db.execute(f'select table_name from "{schema}".catalog_tables '
                           f"where source_kind = 'export_table' and source_name = %s",
                           (f"survey#{title}",)).fetchone()[0]
        assert table.startswith("export_survey__")
        got = _table(db, schema, table, ("form_id", "row_id"))
        assert got == _expected(view[title])


def test_an_export_lands_whole_then_only_what_is_new(sim, settings, warehouse, db, schema):
    reports = {r.stream: r for r in run_sync(settings, warehouse)}
    first = reports["exports"]
    assert first.status == "ok" and first.partition == "survey" and first.records == 6
    assert_export_matches(db, schema, sim)
    token = state.load_checkpoint(db, schema, "demo", "exports", "survey")["export_token"]
    assert token

    sim.add_forms("demo", 3, xmlns=XMLNS)
    sim.clear_requests()
    second = {r.stream: r for r in run_sync(settings, warehouse)}["exports"]
    asked = [parse_qs(r.query) for r in sim.requests if r.resource == "export"]
    assert asked[0]["previous_export"] == [token] and asked[0]["export_tag"] == [f'"{XMLNS}"']
    assert second.records == 3  # only the new forms came back
    assert_export_matches(db, schema, sim)
    assert state.load_checkpoint(db, schema, "demo", "exports", "survey")["export_token"] != token


def test_no_new_data_is_a_302_that_changes_nothing(sim, settings, warehouse, db, schema):
    run_sync(settings, warehouse)
    saved = state.load_checkpoint(db, schema, "demo", "exports", "survey")
    before = db.execute(f'select count(*) from "{schema}".export_survey').fetchone()[0]
    sim.clear_requests()
    report = {r.stream: r for r in run_sync(settings, warehouse)}["exports"]
    # (a 401 first: the Digest challenge)
    assert [r.status for r in sim.requests if r.resource == "export" and r.status != 401] == [302]
    assert not any("excel_export_data" in r.path for r in sim.requests)  # not followed
    assert report.status == "ok" and report.records == 0
    assert db.execute(f'select count(*) from "{schema}".export_survey').fetchone()[0] == before
    assert state.load_checkpoint(db, schema, "demo", "exports", "survey")["export_token"] == \
        saved["export_token"]


def test_a_lost_token_means_a_full_export_absorbed_by_the_upsert(sim, settings, warehouse, db,
                                                                  schema):
    run_sync(settings, warehouse)
    db.execute(f"update \"{schema}\".sync_checkpoints set cursor = "
               f"jsonb_set(cursor, '{{export_token}}', '\"00000000000000000000000000000000\"') "
               f"where stream = 'exports'")
    report = {r.stream: r for r in run_sync(settings, warehouse)}["exports"]
    assert report.status == "ok" and report.records == 6
    assert_export_matches(db, schema, sim)


def test_the_export_api_with_an_api_key_fails_alone_and_says_what_to_set(sim, schema, pg_url,
                                                                         warehouse, db):
    sim.add_forms("demo", 2, xmlns=XMLNS)
    settings = make_settings(sim.base_url, schema, pg_url, streams=["apps"],
                             exports=[XMLNS])
    reports = run_sync(settings, warehouse)
    assert [(r.stream, r.partition, r.status) for r in reports] == [
        ("apps", "", "ok"), ("exports", "survey", "failed")]
    assert "COMMCARE_AUTH=digest" in reports[1].error
    run = db.execute(f'select status, error from "{schema}".sync_runs '
                     f"where stream = 'exports' and partition = 'survey'").fetchone()
    assert run[0] == "failed" and "COMMCARE_AUTH=digest" in run[1]  # status shows it


def test_wrong_password_is_exit_3_and_the_password_is_never_logged(sim, schema, pg_url):
    sim.add_forms("demo", 2, xmlns=XMLNS)
    env = cli_env(sim.base_url, schema, pg_url, STREAMS="apps", COMMCARE_AUTH="digest",
                  COMMCARE_PASSWORD="not-the-Password-42", EXPORTS=XMLNS)
    done = run_cli(["sync"], env)
    assert done.returncode == 3, done.stderr
    assert "COMMCARE_PASSWORD" in done.stderr
    assert "not-the-Password-42" not in done.stderr + done.stdout
