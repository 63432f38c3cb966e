"""reconcile: exactly the cases and forms deleted in HQ are marked deleted (base and BI tables),
nothing is removed, and a listing that failed part-way marks nothing."""

from __future__ import annotations

import pytest

from etl.errors import HQError
from etl.reconcile import due, reconcile
from etl.sync import run_sync
from tests.conftest import cli_env, make_settings, run_cli


def _deleted(db, schema: str, table: str, key: str) -> set[str]:
    return {r[0] for r in db.execute(f'select {key} from "{schema}".{table} '
                                     f'where deleted and deleted_at is not null')}


def test_reconcile_marks_exactly_the_deleted_cases_and_forms(sim, settings, warehouse, db, schema):
    run_sync(settings, warehouse)
    case_ids = sorted(sim.snapshot("demo", "case"))[:3]
    form_ids = sorted(sim.snapshot("demo", "form"))[:2]
    sim.delete_cases("demo", case_ids)
    sim.delete_forms("demo", form_ids)
    env = cli_env(sim.base_url, schema, settings.database_url)
    result = run_cli(["reconcile"], env)
    assert result.returncode == 0, result.stderr[-1500:]
    assert "3 gone" in result.stdout and "2 gone" in result.stdout
    assert _deleted(db, schema, "cases", "case_id") == set(case_ids)
    assert _deleted(db, schema, "forms", "form_id") == set(form_ids)
    total = db.execute(f'select count(*) from "{schema}".cases').fetchone()[0]
    assert total == len(sim.snapshot("demo", "case")) + 3  # marked, never removed
    # ... in the BI tables too.
    bi_deleted = set()
    for (table,) in db.execute(f"select table_name from \"{schema}\".catalog_tables "
                               f"where source_kind = 'case_type'").fetchall():
        bi_deleted |= {r[0] for r in db.execute(f'select case_id from "{schema}"."{table}" '
                                                f'where deleted')}
    assert bi_deleted == set(case_ids)
    runs = db.execute(f"select stream, status, trigger from \"{schema}\".sync_runs "
                      f"where command = 'reconcile' order by id").fetchall()
    assert runs == [("cases", "ok", "reconcile"), ("forms", "ok", "reconcile")]


def test_a_reconcile_that_failed_part_way_marks_nothing(sim_factory, schema, pg_url, warehouse, db):
    sim = sim_factory(n_cases=60)
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=20,
                             retry_max_seconds=0.2)
    run_sync(settings, warehouse, streams=["cases"])
    sim.delete_cases("demo", sorted(sim.snapshot("demo", "case"))[:2])
    sim.faults.add("503", count=10_000, resource="case", after=1)
    with pytest.raises(HQError):
        reconcile(settings, warehouse, "demo", "cases")
    assert _deleted(db, schema, "cases", "case_id") == set()
    status = db.execute(f"select status from \"{schema}\".sync_runs where command = 'reconcile'"
                        ).fetchone()[0]
    assert status == "failed"


def test_reconcile_every_makes_it_a_step_of_sync_when_due(sim, schema, pg_url, warehouse, db):
    settings = make_settings(sim.base_url, schema, pg_url, reconcile_every="24h")
    assert due(settings, warehouse) == [("demo", "cases"), ("demo", "forms")]
    env = cli_env(sim.base_url, schema, pg_url, RECONCILE_EVERY="24h")
    assert run_cli(["sync"], env).returncode == 0
    assert due(settings, warehouse) == []  # done, not due again for a day
    assert run_cli(["sync"], env).returncode == 0
    reconciles = db.execute(f"select count(*) from \"{schema}\".sync_runs "
                            f"where command = 'reconcile'").fetchone()[0]
    assert reconciles == 2  # once per resource, not once per sync
