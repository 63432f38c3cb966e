"""`commcare-etl demo`: the whole pipeline against the built-in HQ simulator, no credentials.

Syncs sample data, makes changes in the simulator the way field workers would, syncs again
incrementally, and prints what landed and how to look at it.
"""

from __future__ import annotations

import json
import logging

from pydantic import SecretStr

from etl import state
from etl import sources
from etl.config import Settings
from etl.db import Warehouse
from etl.errors import ConfigError, ExitCode
from etl.sync import StreamReport, run_sync

log = logging.getLogger(__name__)

DEMO_DOMAIN = "demo"
DEMO_USER = ("demo@example.org", "demo-key")


def run_demo(settings: Settings, n_cases: int = 500, use_database_url: bool = False) -> int:
    from etl.simulator import Dataset, HQSimulator

    if settings.database_url and not use_database_url:
        raise ConfigError(
            "DATABASE_URL is set: the demo would write its sample data (domain 'demo') into "
            "that warehouse. Unset DATABASE_URL to run it in the embedded PostgreSQL, or pass "
            "--use-database-url to write into that database anyway.")
    username, api_key = DEMO_USER
    dataset = Dataset.generate(domain=DEMO_DOMAIN, seed=0, n_cases=n_cases)
    warehouse = Warehouse.open(settings.database_url, settings.embedded_pg_dir,
                               settings.warehouse_schema)
    try:
        warehouse.migrate()
        # Each demo starts a simulator of its own (a new address): it starts over, like a new HQ.
        _forget_checkpoints(warehouse)
        with HQSimulator(datasets=[dataset], users={username: (api_key, None)}) as sim:
            demo_settings = settings.model_copy(update={
                "commcare_base_url": sim.base_url, "commcare_domain": [DEMO_DOMAIN],
                "commcare_username": username, "commcare_api_key": SecretStr(api_key),
                "retry_max_seconds": 30.0,
            })
            print(f"HQ simulator serving {n_cases} sample cases at {sim.base_url}")
            first = run_sync(demo_settings, warehouse)
            _print_reports("first sync", first)

            case_ids = sorted(sim.snapshot(DEMO_DOMAIN, "case"))[:25]
            # Follow-up forms: archiving one rebuilds its cases without it, as HQ does
            # (archiving a registration would leave a case with no type, or delete it).
            forms = sim.snapshot(DEMO_DOMAIN, "form")
            form_ids = sorted(f for f, doc in forms.items()
                              if '"create"' not in json.dumps(doc))[:3]
            sim.update_cases(DEMO_DOMAIN, case_ids[:20], {"demo_visit": "yes"})
            sim.close_cases(DEMO_DOMAIN, case_ids[20:25])
            sim.archive_forms(DEMO_DOMAIN, form_ids)
            sim.add_cases(DEMO_DOMAIN, 10)
            print("\nIn the simulator: 20 cases updated, 5 closed, 3 forms archived, "
                  "10 cases added.")
            second = run_sync(demo_settings, warehouse)
            _print_reports("incremental sync", second)

        # The checkpoints belong to the simulator that just stopped: a later `sync` against
        # another server (`commcare-etl simulate`, or real HQ) starts afresh, not refusing them.
        _forget_checkpoints(warehouse)
        failed = [r for r in first + second if r.status != "ok"]
        _print_warehouse(warehouse, settings.warehouse_schema)
        return ExitCode.FAILURE if failed else ExitCode.OK
    finally:
        warehouse.dispose()  # the connections it kept for reuse


def _forget_checkpoints(warehouse: Warehouse) -> None:
    with warehouse.connect() as conn:
        state.delete_checkpoints(conn, warehouse.schema, DEMO_DOMAIN, sources.names())


def _print_reports(title: str, reports: list[StreamReport]) -> None:
    print(f"\n{title}:")
    for report in reports:
        print(f"  {report.stream:6} {report.status}: {report.records} records read, "
              f"{report.inserted} new, {report.updated} updated, {report.pages} pages, "
              f"{report.seconds:.1f}s"
              + (f", {report.cleaned} values cleaned" if report.cleaned else "")
              + (f", {report.rejected} dead letters" if report.rejected else "")
              + (f" -- {report.error}" if report.error else ""))


def _print_warehouse(warehouse: Warehouse, schema: str) -> None:
    with warehouse.connect() as conn:
        counts = {
            table: conn.execute(f'select count(*) from "{schema}".{table} where domain = %s',
                                (DEMO_DOMAIN,)).fetchone()[0]
            for table in ("cases", "case_indices", "forms")
        }
        by_type = conn.execute(
            f'select case_type, count(*), count(*) filter (where closed) from "{schema}".cases '
            f"where domain = %s group by 1 order by 1", (DEMO_DOMAIN,)).fetchall()
    print(f"\nIn the warehouse (schema {schema}, domain {DEMO_DOMAIN}):")
    for table, count in counts.items():
        print(f"  {schema}.{table:13} {count:6} rows")
    for case_type, count, closed in by_type:
        print(f"    case_type {case_type}: {count} ({closed} closed)")
    url = warehouse.display_url()
    print(f"\nConnect with psql:\n  psql '{url}'\n"
          f"Try:\n  select case_type, properties->>'case_name' from {schema}.cases limit 5;\n"
          f"BI tools (Superset, Metabase, Power BI, Tableau) connect to the same database; for a "
          f"server they can reach over TCP set DATABASE_URL (or use docker-compose.yml).\n"
          f"Point it at real HQ: set COMMCARE_DOMAIN, COMMCARE_USERNAME, COMMCARE_API_KEY and "
          f"run `commcare-etl sync` (see README.md).")
