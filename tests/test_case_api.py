"""The case APIs side by side: v2's deprecated case types, and a switch of CASE_API that must
not blank what only v0.5 knows."""

from __future__ import annotations

from etl.sync import run_sync
from tests.conftest import make_settings


V05_ONLY = ("user_id", "opened_by", "closed_by", "server_date_opened", "xform_ids")


def test_v2_reads_cases_of_deprecated_case_types_too(sim, schema, pg_url, warehouse, db):
    sim.deprecate_case_type("demo", "household")
    settings = make_settings(sim.base_url, schema, pg_url, case_api="v2")
    run_sync(settings, warehouse, streams=["cases"])
    households = [i for i, c in sim.snapshot("demo", "case").items()
                  if c["properties"]["case_type"] == "household"]
    assert households
    got = db.execute(f'select count(*) from "{schema}".cases where case_id = any(%s)',
                     (households,)).fetchone()[0]
    assert got == len(households)
    assert any("include_deprecated=true" in r.query for r in sim.requests if "/case/v2/" in r.path)


def test_switching_to_v2_keeps_the_columns_only_v05_fills(sim, schema, pg_url, warehouse, db):
    run_sync(make_settings(sim.base_url, schema, pg_url), warehouse)
    columns = ", ".join(V05_ONLY)
    before = {r[0]: r[1:] for r in db.execute(
        f'select case_id, {columns} from "{schema}".cases where user_id is not null')}
    assert before
    ids = sorted(before)[:10]
    sim.update_cases("demo", ids, {"colour": "green"})
    run_sync(make_settings(sim.base_url, schema, pg_url, case_api="v2"), warehouse,
             streams=["cases"])
    after = {r[0]: r[1:] for r in db.execute(
        f'select case_id, {columns} from "{schema}".cases where case_id = any(%s)', (ids,))}
    assert all(None not in after[i][:2] for i in ids)  # user_id, opened_by kept
    assert all(after[i][1] == before[i][1] and after[i][3] == before[i][3] for i in ids)
    colours = db.execute(f"select count(*) from \"{schema}\".cases where case_id = any(%s) "
                         f"and properties->>'colour' = 'green'", (ids,)).fetchone()[0]
    assert colours == len(ids)  # and the update itself landed
    table = db.execute(f"select table_name from \"{schema}\".catalog_tables where "
                       f"source_kind = 'case_type' and source_name = 'patient'").fetchone()[0]
    patients = [i for i in ids if sim.snapshot("demo", "case")[i]["properties"]["case_type"]
                == "patient"]
    kept = db.execute(f'select count(*) from "{schema}"."{table}" where case_id = any(%s) '
                      f'and opened_by is not null', (patients,)).fetchone()[0]
    assert kept == len(patients)
