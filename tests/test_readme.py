"""The README's SQL examples run against a warehouse synced from the simulator."""

from __future__ import annotations

import re

from etl import sources
from etl.sync import run_sync
from tests.conftest import ROOT, make_settings


def sql_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, re.S)
    statements = [s.strip() for block in blocks for s in block.split(";")]
    return [s for s in statements if s and not all(line.startswith("--") for line in s.splitlines())]


def test_the_readme_has_examples_for_every_kind_of_table():
    text = " ".join(sql_examples())
    for table in ("cases", "case_indices", "forms", "sync_runs", "case_patient", "catalog_columns",
                  "form_register_household", "_typed", "__members", "__doses", "form_case_actions",
                  "users", "groups", "locations", "location_ancestors", "restore_cases"):
        assert table in text, table


def test_every_readme_query_runs_and_the_bi_ones_return_rows(sim_factory, schema, pg_url, warehouse,
                                                            db, tmp_path):
    sim = sim_factory(n_cases=120)
    sim.add_cases("demo", 3, owner_id=sim.add_mobile_worker("demo", "ana", password="pw"))
    workers = tmp_path / "workers.txt"
    workers.write_text("ana@demo.commcarehq.org:pw\n")
    run_sync(make_settings(sim.base_url, schema, pg_url, streams=sources.names(),
                           restore_users_file=workers), warehouse)
    empty = []
    for statement in sql_examples():
        query = statement.replace("commcare.", f'"{schema}".')
        rows = db.execute(query).fetchall()
        if not rows and "'...'" not in query:
            empty.append(statement.splitlines()[-1])
    assert not empty, f"examples that return nothing on the sample data: {empty}"
