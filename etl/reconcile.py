"""`commcare-etl reconcile`: find the cases and forms deleted in HQ.

Deleted documents simply vanish from HQ's lists, so no incremental read can see them go. A
reconcile lists every id HQ still has (the cheapest way the API allows: the same paged read as
an initial sync, keeping only the ids), then marks warehouse rows that are gone
`deleted = true` with `deleted_at`, in the BI tables too. Nothing is removed, and nothing is
marked unless the whole listing was read: a reconcile that fails part-way changes nothing. Rows
written after the listing began are never marked (a sync may run meanwhile).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from psycopg import sql

from etl import runinfo, sources, state, stopping
from etl.config import Settings
from etl.db import Warehouse
from etl.errors import describe_failure
from etl.extract.client import make_client

log = logging.getLogger(__name__)

BASE = {"cases": ("cases", "case_id", ("case_type",)),
        "forms": ("forms", "form_id", ("form", "repeat"))}


@dataclass
class ReconcileReport:
    domain: str
    resource: str
    listed: int = 0
    marked: int = 0
    requests: int = 0
    seconds: float = 0.0


def reconcile(settings: Settings, warehouse: Warehouse, domain: str,
              resource: str) -> ReconcileReport:
    table, key, bi_kinds = BASE[resource]
    source = sources.get(resource)
    report = ReconcileReport(domain, resource)
    started = time.monotonic()
    client = make_client(settings)
    schema = warehouse.schema
    with runinfo.working_on(domain, f"reconcile:{resource}"), warehouse.connect() as conn, \
            state.stream_lock(conn, schema, domain, resource, settings.lock_wait_seconds,
                              purpose="reconcile"):
        run_id = state.start_run(conn, schema, "reconcile", domain, resource, None)
        try:
            listing_began = conn.execute("select now()").fetchone()[0]
            conn.execute("drop table if exists _present")
            conn.execute("create temp table _present (id text)")  # boundary pages repeat ids
            stream = source.stream(client, domain, settings)
            for page in stream.pages(stream.cursor_kind()):
                ids = {str(r.get(source.id_key) or r.get("id")) for r in page.records
                       if isinstance(r, dict) and (r.get(source.id_key) or r.get("id"))}
                with conn.cursor().copy("copy _present (id) from stdin") as copy:
                    for record_id in ids:
                        copy.write_row((record_id,))
                report.listed += len(page.records)
                stopping.check()
            report.requests = stream.requests_made
            conn.execute("create index on _present (id)")
            conn.execute("analyze _present")
            with conn.transaction():
                gone = [r[0] for r in conn.execute(sql.SQL("""
                    update {table} w set deleted = true, deleted_at = now()
                    where w.domain = %s and not w.deleted and w.synced_at < %s
                      and not exists (select 1 from _present p where p.id = w.{key})
                    returning w.{key}""").format(table=sql.Identifier(schema, table),
                                                  key=sql.Identifier(key)),
                    (domain, listing_began))]
                for (bi_table, id_column) in conn.execute(sql.SQL(
                        "select table_name, case when source_kind = 'case_type' then 'case_id' "
                        "else 'form_id' end from {}.catalog_tables "
                        "where source_kind = any(%s)").format(sql.Identifier(schema)),
                        (list(bi_kinds),)).fetchall() if gone else []:
                    conn.execute(sql.SQL("update {} set deleted = true where domain = %s "
                                         "and {} = any(%s)").format(
                        sql.Identifier(schema, bi_table), sql.Identifier(id_column)),
                        (domain, gone))
                report.marked = len(gone)
                state.count_page(conn, schema, run_id, records=report.listed, cleaned=0,
                                 rejected=0, requests=report.requests,
                                 cursor={"marked_deleted": report.marked})
        except BaseException as exc:
            state.finish_run(conn, schema, run_id, "failed", str(exc) or type(exc).__name__)
            raise
        finally:
            client.close()
        state.finish_run(conn, schema, run_id, "ok", None, report.requests)
    report.seconds = time.monotonic() - started
    log.info("reconcile %s [%s]: ok; %d listed in HQ, %d no longer there and marked deleted, "
             "%d requests, %.1fs", resource, domain, report.listed, report.marked,
             report.requests, report.seconds)
    return report


def due(settings: Settings, warehouse: Warehouse) -> list[tuple[str, str]]:
    """The (domain, resource) whose last complete reconcile is older than RECONCILE_EVERY."""
    if not settings.reconcile_every:
        return []
    from etl.schedule import Schedule

    every = Schedule.parse(settings.reconcile_every)
    now = time.time()
    with warehouse.connect() as conn:
        last = {(d, s): f.timestamp() for d, s, f in conn.execute(sql.SQL(
            "select domain, stream, max(finished_at) from {}.sync_runs where command = "
            "'reconcile' and status = 'ok' group by 1, 2").format(sql.Identifier(warehouse.schema)))}
    jobs = []
    for domain in settings.domains():
        for resource in ("cases", "forms"):
            if resource not in settings.for_domain(domain).streams:
                continue
            done = last.get((domain, resource))
            if done is None or every.interval is None or now - done >= every.interval.total_seconds():
                jobs.append((domain, resource))
    return jobs


def run_due(settings: Settings, warehouse: Warehouse) -> bool:
    """Reconcile what is due (an opt-in step of sync); False if one failed (logged)."""
    ok = True
    for domain, resource in due(settings, warehouse):
        try:
            reconcile(settings.for_domain(domain), warehouse, domain, resource)
        except Exception as exc:  # noqa: BLE001 - the sync's own result stands; say it
            log.error("reconcile %s [%s] failed: %s", resource, domain, describe_failure(exc))
            ok = False
    return ok
