"""Load a page into PostgreSQL: COPY into staging, one upsert per table, one transaction.

The page's rows, its dead letters, the run's counters and the stream's checkpoint commit
together, so a crash at any moment leaves either the whole page loaded with its cursor saved,
or nothing of it: the next run resumes from the last saved cursor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from typing import Any, Callable

import psycopg
from psycopg import sql

from etl import state
from etl.load import bi
from etl.transform import Batch
from etl.transform.cases import CASE_COLUMNS, CASE_INDEX_COLUMNS
from etl.transform.forms import FORM_COLUMNS


_TRANSIENT_TRIES = 3


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    version: str | None = None  # the newer value wins; an older record never overwrites


Hook = Callable[["Loader", str, Batch, Any], Any]


@dataclass(frozen=True)
class Target:
    """Where a stream lands.

    Either a `main` table upserted by version, with `children` replaced for every parent that
    was written; or `snapshot` tables whose rows for the domain are replaced wholesale. `before`
    runs ahead of the writes and `after` (the BI tables) behind them, in the same transaction.
    """

    main: TableSpec | None = None
    children: tuple[TableSpec, ...] = ()
    snapshot: tuple[TableSpec, ...] = ()
    before: Hook | None = None
    after: Hook | None = None


CASES = TableSpec("cases", CASE_COLUMNS, ("domain", "case_id"), "indexed_on")
CASE_INDICES = TableSpec("case_indices", CASE_INDEX_COLUMNS, ("domain", "case_id", "identifier"))
FORMS = TableSpec("forms", FORM_COLUMNS, ("domain", "form_id"), "indexed_on")
APP_TABLES = (
    TableSpec("apps", ("domain", "app_id", "name", "version", "is_released", "built_on"),
              ("domain", "app_id")),
    TableSpec("app_modules", ("domain", "app_id", "module_id", "position", "name", "case_type"),
              ("domain", "app_id", "module_id")),
    TableSpec("app_case_properties", ("domain", "app_id", "case_type", "property"),
              ("domain", "app_id", "case_type", "property")),
    TableSpec("app_forms", ("domain", "app_id", "module_id", "form_id", "xmlns", "name"),
              ("domain", "app_id", "form_id")),
    TableSpec("app_questions", ("domain", "app_id", "xmlns", "path", "position", "label", "type",
                                "repeat", "group", "options"), ("domain", "app_id", "xmlns", "path")),
)


def _case_types_before(loader: "Loader", domain: str, batch: Batch, _: Any) -> Any:
    return bi.previous_case_types(loader.conn, loader.schema, domain, batch) if loader.bi else None


def _case_tables(loader: "Loader", domain: str, batch: Batch, old_types: Any) -> None:
    if loader.bi:
        bi.load_case_tables(loader.catalog, domain, batch, old_types or {})


def _form_tables(loader: "Loader", domain: str, batch: Batch, _: Any) -> None:
    if loader.bi:
        bi.load_form_tables(loader.catalog, loader.schema, domain, batch)


def _app_labels(loader: "Loader", domain: str, batch: Batch, _: Any) -> None:
    bi.apply_app_labels(loader.conn, loader.schema)
    loader.catalog.table_names = None  # labels and form names changed: reload when next needed


TARGETS = {
    "apps": Target(snapshot=APP_TABLES, after=_app_labels),
    "cases": Target(CASES, (CASE_INDICES,), before=_case_types_before, after=_case_tables),
    "forms": Target(FORMS, after=_form_tables),
}


@dataclass
class LoadResult:
    inserted: int = 0
    updated: int = 0
    skipped_older: int = 0
    rejected: int = 0


@dataclass
class Loader:
    conn: psycopg.Connection
    schema: str
    bi: bool = True  # also write the per-case-type / per-form BI tables
    _staged: set[str] = field(default_factory=set)
    _catalog: bi.Catalog | None = None

    @property
    def catalog(self) -> bi.Catalog:
        if self._catalog is None:
            self._catalog = bi.Catalog(self.conn, self.schema)
        return self._catalog

    def _table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    def _stage(self, spec: TableSpec) -> sql.Identifier:
        stage = sql.Identifier(f"_stage_{spec.name}")
        if spec.name not in self._staged:
            self.conn.execute(sql.SQL(
                "create temp table if not exists {} (like {} including defaults) "
                "on commit delete rows").format(stage, self._table(spec.name)))
            if spec.version:
                self.conn.execute(sql.SQL(
                    "create temp table if not exists {} on commit delete rows as "
                    "select {}, true as inserted from {} where false").format(
                    sql.Identifier(f"_won_{spec.name}"),
                    sql.SQL(", ").join(map(sql.Identifier, spec.key)), self._table(spec.name)))
            self._staged.add(spec.name)
        return stage

    def _copy(self, stage: sql.Composable, spec: TableSpec, rows: list[tuple]) -> None:
        columns = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
        with self.conn.cursor().copy(
                sql.SQL("copy {} ({}) from stdin").format(stage, columns)) as copy:
            for row in rows:
                copy.write_row(row)

    def load_page(self, *, stream: str, domain: str, batch: Batch, cursor: dict,
                  run_id: int | None, source_url: str = "", checkpoint_stream: str | None = None,
                  requests: int = 0) -> LoadResult:
        for attempt in range(1, _TRANSIENT_TRIES + 1):
            committed = False
            try:
                result = self._load_page_once(stream=stream, domain=domain, batch=batch,
                                              cursor=cursor, run_id=run_id, source_url=source_url,
                                              checkpoint_stream=checkpoint_stream,
                                              requests=requests)
                committed = True
                return result
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                # A backfill and a sync upserting the same records at once: try again.
                if attempt == _TRANSIENT_TRIES:
                    raise
                time.sleep(0.05 * attempt)
            finally:
                if not committed:
                    # A staging table first created in the rolled-back transaction is gone.
                    self._staged.clear()
                if self._catalog is not None:
                    self._catalog.end_transaction(committed)
        raise AssertionError("unreachable")

    def _load_page_once(self, *, stream: str, domain: str, batch: Batch, cursor: dict,
                        run_id: int | None, source_url: str, checkpoint_stream: str | None,
                        requests: int) -> LoadResult:
        target = TARGETS[stream]
        result = LoadResult(rejected=len(batch.rejects))
        with self.conn.transaction():
            context = target.before(self, domain, batch, None) if target.before else None
            main_rows = batch.rows.get(target.main.name, []) if target.main else []
            if main_rows:
                result.inserted, result.updated = self._upsert_main(target.main, main_rows)
                result.skipped_older = len({r[:len(target.main.key)] for r in main_rows}) - (
                    result.inserted + result.updated)
                for child in target.children:
                    self._replace_children(target.main, child, batch.rows.get(child.name, []))
                if target.after:
                    target.after(self, domain, batch, context)
            if target.snapshot:
                result.inserted = self._replace_snapshot(target.snapshot, domain, batch)
                if target.after:
                    target.after(self, domain, batch, context)
            state.add_dead_letters(self.conn, self.schema, domain, stream, batch.rejects,
                                   source_url)
            state.save_checkpoint(self.conn, self.schema, domain, checkpoint_stream or stream,
                                  cursor)
            if run_id is not None:
                state.count_page(self.conn, self.schema, run_id, records=batch.records,
                                 cleaned=batch.cleaned_values, rejected=len(batch.rejects),
                                 requests=requests, cursor=cursor)
        return result

    def _replace_snapshot(self, specs: tuple[TableSpec, ...], domain: str, batch: Batch) -> int:
        written = 0
        for spec in specs:
            self.conn.execute(sql.SQL("delete from {} where domain = %s").format(
                self._table(spec.name)), (domain,))
            rows = list({row[:len(spec.key)]: row for row in batch.rows.get(spec.name, [])}.values())
            if rows:
                self._copy(self._table(spec.name), spec, rows)
                written += len(rows)
        return written

    def _upsert_main(self, spec: TableSpec, rows: list[tuple]) -> tuple[int, int]:
        stage = self._stage(spec)
        self._copy(stage, spec, rows)
        cols = [sql.Identifier(c) for c in spec.columns]
        key = [sql.Identifier(c) for c in spec.key]
        updates = [sql.SQL("{0} = excluded.{0}").format(c) for c in cols if c not in key]
        updates += [sql.SQL("synced_at = now()"), sql.SQL("deleted = false")]
        version = sql.Identifier(spec.version)
        query = sql.SQL("""
            with up as (
                insert into {table} as t ({cols})
                select distinct on ({key}) {cols} from {stage}
                order by {key}, {version} desc nulls last
                on conflict ({key}) do update set {updates}
                where coalesce(excluded.{version}, '-infinity') >= coalesce(t.{version}, '-infinity')
                returning {tkey}, (xmax = 0) as inserted
            )
            insert into {won} select * from up
        """).format(
            table=self._table(spec.name), cols=sql.SQL(", ").join(cols),
            key=sql.SQL(", ").join(key), stage=stage, version=version,
            updates=sql.SQL(", ").join(updates),
            tkey=sql.SQL(", ").join(sql.SQL("t.{}").format(k) for k in key),
            won=sql.Identifier(f"_won_{spec.name}"),
        )
        self.conn.execute(query)
        inserted, updated = self.conn.execute(sql.SQL(
            "select count(*) filter (where inserted), count(*) filter (where not inserted) "
            "from {}").format(sql.Identifier(f"_won_{spec.name}"))).fetchone()
        return inserted, updated

    def _replace_children(self, parent: TableSpec, spec: TableSpec, rows: list[tuple]) -> None:
        won = sql.Identifier(f"_won_{parent.name}")
        match = sql.SQL(" and ").join(
            sql.SQL("c.{0} = w.{0}").format(sql.Identifier(k)) for k in parent.key)
        self.conn.execute(sql.SQL("delete from {} c using {} w where {}").format(
            self._table(spec.name), won, match))
        if not rows:
            return
        stage = self._stage(spec)
        self._copy(stage, spec, rows)
        cols = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
        key = sql.SQL(", ").join(map(sql.Identifier, spec.key))
        self.conn.execute(sql.SQL("""
            insert into {table} ({cols})
            select distinct on ({key}) {cols} from {stage} c
            where exists (select 1 from {won} w where {match})
            order by {key}
        """).format(table=self._table(spec.name), cols=cols, key=key, stage=stage, won=won,
                    match=match))
