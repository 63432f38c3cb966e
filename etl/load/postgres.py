"""Load a page into PostgreSQL: COPY into staging and one upsert per table (a page of records
all new to the table: COPY straight into it), one transaction.

The page's rows, its dead letters, the run's counters and the stream's checkpoint commit
together, so a crash at any moment leaves either the whole page loaded with its cursor saved,
or nothing of it: the next run resumes from the last saved cursor.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

from typing import Any, Callable, Sequence

import psycopg
from psycopg import sql

from etl import state
from etl.extract.cursors import Cursor
from etl.load import bi
from etl.load.bi import DEFAULT_DDL_LOCK_TIMEOUT
from etl.load.exports import write_export_tables
from etl.load.restore import write_restore
from etl.transform import Batch
from etl.transform.cases import CASE_COLUMNS, CASE_INDEX_COLUMNS, CaseIndexRow, CaseRow
from etl.transform.forms import FORM_COLUMNS, FormRow
from etl.transform.reference import (GROUP_COLUMNS, GROUP_MEMBER_COLUMNS, LOCATION_COLUMNS,
                                     LOCATION_TYPE_COLUMNS, USER_COLUMNS, WEB_USER_COLUMNS)


log = logging.getLogger(__name__)
_TRANSIENT_TRIES = 3
_ROW_TYPES = {"cases": CaseRow, "case_indices": CaseIndexRow, "forms": FormRow}


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    version: str | None = None  # the newer value wins; an older record never overwrites

    def row(self, values: Sequence[Any]) -> tuple:
        """A row of this table, as the transforms make them (a named tuple where they do)."""
        return _ROW_TYPES[self.name](*values) if self.name in _ROW_TYPES else tuple(values)


Hook = Callable[["Loader", str, Batch, Any], Any]


@dataclass(frozen=True)
class Target:
    """Where a stream lands.

    Either a `main` table upserted by version, with `children` replaced for every parent that
    was written; or a `listed` table, kept by a run-scoped snapshot: each page upserts what
    changed (and its `children`, row by row), and once the whole listing was read,
    `finish_listing` marks the rows it did not hold deleted. `before`
    runs ahead of the writes and `after` (the BI tables) behind them, in the same transaction;
    `finished` after a complete listing, in its transaction.
    """

    main: TableSpec | None = None
    children: tuple[TableSpec, ...] = ()
    listed: TableSpec | None = None
    write: Hook | None = None  # a target that writes its rows itself (tables named by the data)
    before: Hook | None = None
    after: Hook | None = None
    finished: Callable[["Loader", str], None] | None = None
    # A page ahead, in the reading thread: pure work for `after` (see Loader.prepare).
    prepare: Callable[["Loader", Batch], None] | None = None


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
    TableSpec("app_case_property_questions",
              ("domain", "app_id", "case_type", "property", "xmlns", "question_path"),
              ("domain", "app_id", "case_type", "property", "xmlns", "question_path")),
)


def _case_types_before(loader: "Loader", domain: str, batch: Batch, _: Any) -> Any:
    return bi.previous_case_types(loader.conn, loader.schema, domain, batch) if loader.bi else None


def _case_tables(loader: "Loader", domain: str, batch: Batch, old_types: Any) -> None:
    if loader.bi:
        bi.load_case_tables(loader.catalog, domain, batch, old_types or {}, loader._won)
        loader.after_bi(CASES, "cases", domain)


def _form_tables(loader: "Loader", domain: str, batch: Batch, _: Any) -> None:
    if loader.bi:
        bi.load_form_tables(loader.catalog, loader.schema, domain, batch, loader._won)
        loader.after_bi(FORMS, "forms", domain)


def _prepare_case_tables(loader: "Loader", batch: Batch) -> None:
    if loader.bi:
        batch.case_values = bi.case_values(batch)
        view = loader.writes_ahead_from()
        if view is not None:
            batch.bi_writes = bi.prepare_case_writes(view, batch)
    batch.sources.clear()  # what they were made from: a page's parsed JSON is most of its memory


def _prepare_form_tables(loader: "Loader", batch: Batch) -> None:
    if not loader.bi:
        batch.sources.clear()  # nothing is flattened: a page's parsed JSON is most of its memory
        return
    bi.preflatten(loader.repeat_hints, batch)
    for form_id in batch.flats:
        # Flattened: the parsed record goes. Should the load flatten it again after all, it
        # reads the form back from its row's JSON (bi.load_form_tables).
        batch.sources.pop(form_id, None)
    view = loader.writes_ahead_from()
    if view is not None:
        batch.bi_writes = bi.prepare_form_writes(view, batch)


def _app_labels(loader: "Loader", domain: str, batch: Batch, _: Any) -> None:
    loader.catalog.retyping |= set(bi.apply_app_labels(loader.conn, loader.schema))
    loader.catalog.table_names = None  # labels and form names changed: reload when next needed


APPS_TARGET = Target(listed=APP_TABLES[0], children=APP_TABLES[1:], after=_app_labels)


def _location_ancestors(loader: "Loader", domain: str) -> None:
    """Every location with itself (depth 0) and each ancestor, from the current hierarchy."""
    t = loader._table
    loader.conn.execute(sql.SQL("delete from {} where domain = %s").format(
        t("location_ancestors")), (domain,))
    loader.conn.execute(sql.SQL("""
        insert into {ancestors} (domain, location_id, ancestor_id, depth)
        with recursive up (location_id, ancestor_id, depth, path) as (
            select location_id, location_id, 0, array[location_id]
            from {locations} where domain = %(d)s and not deleted
            union all
            select up.location_id, l.parent_location_id, up.depth + 1,
                   up.path || l.parent_location_id
            from up join {locations} l on l.domain = %(d)s and l.location_id = up.ancestor_id
            where coalesce(l.parent_location_id, '') <> ''
              and not l.parent_location_id = any(up.path)   -- a cycle in HQ's data ends here
        )
        select %(d)s, location_id, ancestor_id, min(depth) from up group by 2, 3
    """).format(ancestors=t("location_ancestors"), locations=t("locations")), {"d": domain})


USERS_TARGET = Target(listed=TableSpec("users", USER_COLUMNS, ("domain", "user_id")))
WEB_USERS_TARGET = Target(listed=TableSpec("web_users", WEB_USER_COLUMNS, ("domain", "user_id")))
GROUPS_TARGET = Target(listed=TableSpec("groups", GROUP_COLUMNS, ("domain", "group_id")),
                       children=(TableSpec("group_members", GROUP_MEMBER_COLUMNS,
                                           ("domain", "group_id", "user_id")),))
LOCATIONS_TARGET = Target(listed=TableSpec("locations", LOCATION_COLUMNS,
                                           ("domain", "location_id")),
                          finished=_location_ancestors)
LOCATION_TYPES_TARGET = Target(listed=TableSpec("location_types", LOCATION_TYPE_COLUMNS,
                                                ("domain", "location_type_id")))
CASES_TARGET = Target(CASES, (CASE_INDICES,), before=_case_types_before, after=_case_tables,
                      prepare=_prepare_case_tables)
EXPORTS_TARGET = Target(write=write_export_tables)
RESTORE_TARGET = Target(write=write_restore)
FORMS_TARGET = Target(FORMS, after=_form_tables, prepare=_prepare_form_tables)


class _StillBusy(Exception):
    """A BI table is still locked by a BI user: leave its pending records for the next run."""


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
    # The records this page wrote (its upsert kept their version): id -> inserted, as in the
    # _won_<table> temp table that the SQL steps read.
    _won: dict[str, bool] = field(default_factory=dict)
    _types: dict[str, list[int | None]] = field(default_factory=dict)  # table -> column oids
    _fast: bool = False  # this attempt at a page writes without savepoints (bi.FAST_PATH_FAILURES)
    # The catalog as the last committed page left it, for the reading thread (writes_ahead_from).
    _snapshot: bi.CatalogView | None = None

    ddl_lock_timeout: float = DEFAULT_DDL_LOCK_TIMEOUT
    # Base columns this source does not know (Case API v2 lacks five of v0.5's): an update
    # keeps what the table has instead of writing NULL over it.
    keep: tuple[str, ...] = ()
    # xmlns -> the repeat paths the last page of that form was flattened with; handed to the
    # reading thread (read there with .get only), which flattens the next page ahead.
    repeat_hints: dict[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # New jsonb values (a form is KBs) compressed with lz4 rather than pglz: several times
        # cheaper to write, as cheap to read, and read back the same by every client. Where the
        # server was built without lz4, values stay pglz.
        if self.conn.execute("select 'lz4' = any(enumvals) from pg_settings "
                             "where name = 'default_toast_compression'").fetchone() == (True,):
            self.conn.execute("select set_config('default_toast_compression', 'lz4', false)")

    @property
    def catalog(self) -> bi.Catalog:
        if self._catalog is None:
            self._catalog = bi.Catalog(self.conn, self.schema, lock_timeout=self.ddl_lock_timeout,
                                       repeat_hints=self.repeat_hints, fast=self._fast)
        return self._catalog

    def _set_fast(self, fast: bool) -> None:
        self._fast = fast
        if self._catalog is not None:
            self._catalog.fast = fast

    def prepare(self, target: Target, batch: Batch) -> None:
        """Work for a page that needs neither the connection nor the catalog, done in the
        reading thread while this one loads the page before: whatever it computes is checked
        against the catalog when the page loads, and redone there if it no longer holds."""
        if target.prepare:
            target.prepare(self, batch)

    def writes_ahead_from(self) -> bi.CatalogView | None:
        """In the reading thread: the catalog to make the next page's BI writes from (a copy,
        as the last committed page left it), or None: not yet read, or the base rows' columns
        that the BI tables copy may still change in the load (`keep`)."""
        view = self._snapshot
        if view is None or self.keep:
            return None
        return dataclasses.replace(view, repeat_hints={})

    def _take_snapshot(self, target: Target) -> None:
        """After a commit: a fresh copy of the catalog for writes_ahead_from when it changed,
        for a target that makes writes ahead (not the Export API's or the restore's tables)."""
        catalog = self._catalog
        if self.bi and target.prepare is not None and catalog is not None and (
                self._snapshot is None or self._snapshot.generation != catalog.generation):
            self._snapshot = catalog.snapshot()

    def after_bi(self, main: TableSpec, stream: str, domain: str) -> None:
        """In the page's transaction, behind its BI writes: count what did not parse, and
        note the records written without a column that could not be added yet."""
        catalog = self.catalog
        bi.flush_unparsed(catalog)
        if catalog.deferred:
            self.conn.execute(sql.SQL("""
                insert into {pending} (domain, stream, record_id)
                select %s, %s, w.{key} from {won} w on conflict do nothing""").format(
                pending=self._table("bi_pending"), key=sql.Identifier(main.key[1]),
                won=sql.Identifier(f"_won_{main.name}")), (domain, stream))

    def rebuild_pending(self, target: Target, stream: str, domain: str, chunk: int = 1000) -> int:
        """Rewrite the BI rows of records queued in bi_pending, from the base tables, now
        that their columns may be added. Returns how many were rewritten."""
        if not self.bi or target.main is None:
            return 0
        done = 0
        while True:
            ids = [r[0] for r in self.conn.execute(sql.SQL(
                "select record_id from {} where domain = %s and stream = %s order by record_id "
                "limit %s").format(self._table("bi_pending")), (domain, stream, chunk))]
            if not ids:
                return done
            committed = False
            try:
                with self.conn.transaction():
                    batch = self._batch_from_base(target, domain, ids)
                    self._stage(target.main)
                    self._mark_won(target.main, domain, ids, inserted=False)
                    self._won = dict.fromkeys(ids, False)
                    if target.after:
                        target.after(self, domain, batch, {})
                    self._keep_deleted(target.main, domain, ids)
                    if self.catalog.deferred:  # still locked: try again next run
                        raise _StillBusy
                    self.conn.execute(sql.SQL(
                        "delete from {} where domain = %s and stream = %s and record_id = any(%b)"
                    ).format(self._table("bi_pending")), (domain, stream, ids))
                    state.add_dead_letters(self.conn, self.schema, domain, stream, batch.rejects)
                committed = True
            except _StillBusy:
                return done
            finally:
                if not committed:
                    self._staged.clear()
                self.catalog.end_transaction(committed)
            done += len(ids)

    def _keep_deleted(self, main: TableSpec, domain: str, ids: list[str]) -> None:
        """Rewritten BI rows of records marked deleted (reconcile) stay marked so."""
        key = sql.Identifier(main.key[1])
        gone = [r[0] for r in self.conn.execute(sql.SQL(
            "select {} from {} where domain = %s and {} = any(%b) and deleted").format(
            key, self._table(main.name), key), (domain, ids))]
        if not gone:
            return
        # The catalog's tables have a `deleted` column; their continuation tables and
        # form_case_actions do not.
        marked = {info.name for info in self.catalog.tables.values()}
        for table, id_column in self.catalog.written.items():
            if table in marked:
                self.conn.execute(sql.SQL(
                    "update {} set deleted = true where domain = %s and {} = any(%b)").format(
                    self._table(table), sql.Identifier(id_column)), (domain, gone))

    def _batch_from_base(self, target: "Target", domain: str, ids: list[str]) -> Batch:
        """The page a transform would have made of these records, read back from the base."""
        main = target.main
        batch = Batch()
        rows = self.conn.execute(sql.SQL("select {} from {} where domain = %s and {} = any(%b)")
                                 .format(sql.SQL(", ").join(map(sql.Identifier, main.columns)),
                                         self._table(main.name), sql.Identifier(main.key[1])),
                                 (domain, ids)).fetchall()
        for row in map(main.row, rows):
            batch.add(main.name, row)
            if main.name == "cases":
                batch.sources[row.case_id] = row.properties or {}
            else:
                batch.sources[row.form_id] = {"form": row.form or {}}
        for child in target.children:
            for row in self.conn.execute(sql.SQL(
                    "select {} from {} where domain = %s and {} = any(%b)").format(
                    sql.SQL(", ").join(map(sql.Identifier, child.columns)),
                    self._table(child.name), sql.Identifier(main.key[1])), (domain, ids)):
                batch.add(child.name, child.row(row))
        batch.records = len(rows)
        return batch

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
        bi.copy_rows(self.conn, stage, spec.columns, rows, self._oids(spec), fast=self._fast)

    def _oids(self, spec: TableSpec) -> list[int] | None:
        """The column types of a table whose rows the transforms make with Python values of
        those types (cases, case_indices, forms): its COPY can be binary."""
        if spec.name not in _ROW_TYPES:
            return None
        if spec.name not in self._types:
            types = dict(self.conn.execute(
                "select a.attname, a.atttypid::int from pg_attribute a where a.attrelid = "
                "%s::regclass and a.attnum > 0 and not a.attisdropped",
                (f'"{self.schema}"."{spec.name}"',)).fetchall())
            self._types[spec.name] = [types.get(c) for c in spec.columns]
        return self._types[spec.name]

    def load_page(self, *, stream: str, target: Target, domain: str, batch: Batch,
                  cursor: Cursor | dict, run_id: int | None, source_url: str = "",
                  checkpoint_stream: str | None = None, requests: int = 0,
                  partition: str = "") -> LoadResult:
        rejects = len(batch.rejects)
        fast = True  # first without savepoints; again with them, should the page need one
        transient = 0
        while True:
            committed = False
            del batch.rejects[rejects:]  # those a rolled-back attempt added
            self._set_fast(fast)
            try:
                result = self._load_page_once(stream=stream, target=target, domain=domain,
                                              batch=batch,
                                              cursor=cursor, run_id=run_id, source_url=source_url,
                                              checkpoint_stream=checkpoint_stream,
                                              requests=requests, partition=partition)
                committed = True
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                # A backfill and a sync upserting the same records at once: try again.
                transient += 1
                if transient == _TRANSIENT_TRIES:
                    raise
                time.sleep(0.05 * transient)
            except bi.FAST_PATH_FAILURES as exc:
                if not fast:
                    raise
                fast = False
                log.debug("a page of %s needed the savepoints (%s: %s): written again with "
                          "them", stream, type(exc).__name__, str(exc).strip()[:200])
            finally:
                self._set_fast(False)
                if not committed:
                    # A staging table first created in the rolled-back transaction is gone.
                    self._staged.clear()
                if self._catalog is not None:
                    self._catalog.end_transaction(committed)
            if committed:
                self.keep_statistics(target)
                self._take_snapshot(target)
                return result

    def keep_statistics(self, target: Target) -> None:
        """After a commit: statistics for the tables written that have none or have doubled
        (see bi.keep_statistics), so that each page's lookups stay index lookups."""
        main = target.main or target.listed
        tables = {spec.name: main.key[1] for spec in (main, *target.children)} if main else {}
        if self._catalog is not None:
            tables.update(self._catalog.wrote)
            self._catalog.wrote = {}
        try:
            bi.keep_statistics(self.conn, self.schema, tables)
        except (psycopg.errors.QueryCanceled, psycopg.errors.InsufficientPrivilege) as exc:
            # The page is committed; statistics are an optimisation: say so and go on.
            log.warning("could not ANALYZE the tables just written (%s); later pages may be "
                        "slower until autovacuum does", str(exc).strip().splitlines()[0])

    def _load_page_once(self, *, stream: str, target: Target, domain: str, batch: Batch,
                        cursor: Cursor | dict, run_id: int | None, source_url: str,
                        checkpoint_stream: str | None, requests: int,
                        partition: str) -> LoadResult:
        result = LoadResult(rejected=len(batch.rejects))
        with self.conn.transaction():
            context = target.before(self, domain, batch, None) if target.before else None
            main_rows = batch.rows.get(target.main.name, []) if target.main else []
            if main_rows:
                result.inserted, result.updated = self._upsert_main(target.main, main_rows)
                if self.keep and self.bi:
                    self._fill_kept(target.main, batch)
                result.skipped_older = len({r[:len(target.main.key)] for r in main_rows}) - (
                    result.inserted + result.updated)
                for child in target.children:
                    self._replace_children(target.main, child, batch.rows.get(child.name, []),
                                           domain)
                if target.after:
                    target.after(self, domain, batch, context)
            if target.listed:
                result.inserted, result.updated = self._upsert_listed(target, batch)
                if target.after:
                    target.after(self, domain, batch, context)
            if target.write:
                target.write(self, domain, batch, context)
            result.rejected = len(batch.rejects)  # the BI step may have added some
            state.add_dead_letters(self.conn, self.schema, domain, stream, batch.rejects,
                                   source_url, partition)
            state.save_checkpoint(self.conn, self.schema, domain, checkpoint_stream or stream,
                                  cursor, partition)
            if run_id is not None:
                state.count_page(self.conn, self.schema, run_id, records=batch.records,
                                 cleaned=batch.cleaned_values, rejected=len(batch.rejects),
                                 requests=requests, cursor=cursor)
        return result

    # --- run-scoped snapshots -------------------------------------------------------------

    def begin_listing(self, target: Target) -> None:
        """Start remembering the keys this run's listing holds (in a table of this session: a
        crash forgets them, and then nothing is marked deleted)."""
        spec = target.listed
        seen = sql.Identifier(f"_seen_{spec.name}")
        self.conn.execute(sql.SQL("drop table if exists {}").format(seen))
        self.conn.execute(sql.SQL("create temp table {} as select {} from {} where false").format(
            seen, sql.SQL(", ").join(map(sql.Identifier, spec.key)), self._table(spec.name)))

    def _upsert_listed(self, target: Target, batch: Batch) -> tuple[int, int]:
        spec = target.listed
        rows = batch.rows.get(spec.name, [])
        if not rows:
            return 0, 0
        stage = self._stage(spec)
        self._copy(stage, spec, rows)
        cols = [sql.Identifier(c) for c in spec.columns]
        key = sql.SQL(", ").join(map(sql.Identifier, spec.key))
        data = [sql.Identifier(c) for c in spec.columns if c not in spec.key]
        counts = self.conn.execute(sql.SQL("""
            with up as (
                insert into {table} as t ({cols})
                select distinct on ({key}) {cols} from {stage} order by {key}
                on conflict ({key}) do update set {updates}, deleted = false, deleted_at = null,
                    synced_at = now()
                where ({old}) is distinct from ({new}) or t.deleted
                returning (xmax = 0) as inserted
            )
            select count(*) filter (where inserted), count(*) filter (where not inserted) from up
        """).format(
            table=self._table(spec.name), cols=sql.SQL(", ").join(cols), key=key, stage=stage,
            updates=sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(c) for c in data),
            old=sql.SQL(", ").join(sql.SQL("t.{}").format(c) for c in data),
            new=sql.SQL(", ").join(sql.SQL("excluded.{}").format(c) for c in data))).fetchone()
        self.conn.execute(sql.SQL("insert into {} select distinct {} from {}").format(
            sql.Identifier(f"_seen_{spec.name}"), key, stage))
        for child in target.children:  # e.g. a group's members: its current set
            self._sync_children(spec, stage, child, batch.rows.get(child.name, []))
        return counts[0], counts[1]

    def _sync_children(self, parent: TableSpec, parent_stage: sql.Identifier, spec: TableSpec,
                       rows: list[tuple]) -> None:
        """Make the child rows of the listed parents what the page says, writing only rows
        that are new or changed and removing only those that are gone."""
        stage = self._stage(spec)
        if rows:
            self._copy(stage, spec, rows)
        cols = [sql.Identifier(c) for c in spec.columns]
        key = sql.SQL(", ").join(map(sql.Identifier, spec.key))
        of_parent = sql.SQL(" and ").join(
            sql.SQL("c.{0} = p.{0}").format(sql.Identifier(k)) for k in parent.key)
        same_key = sql.SQL(" and ").join(
            sql.SQL("n.{0} = c.{0}").format(sql.Identifier(k)) for k in spec.key)
        self.conn.execute(sql.SQL("""
            delete from {table} c using {parents} p
            where {of_parent} and not exists (select 1 from {stage} n where {same_key})
        """).format(table=self._table(spec.name), parents=parent_stage, of_parent=of_parent,
                    stage=stage, same_key=same_key))
        data = [sql.Identifier(c) for c in spec.columns if c not in spec.key]
        on_conflict = sql.SQL("do nothing") if not data else sql.SQL(
            "do update set {} where ({}) is distinct from ({})").format(
            sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(c) for c in data),
            sql.SQL(", ").join(sql.SQL("t.{}").format(c) for c in data),
            sql.SQL(", ").join(sql.SQL("excluded.{}").format(c) for c in data))
        self.conn.execute(sql.SQL("""
            insert into {table} as t ({cols})
            select distinct on ({key}) {cols} from {stage} order by {key}
            on conflict ({key}) {on_conflict}
        """).format(table=self._table(spec.name), cols=sql.SQL(", ").join(cols), key=key,
                    stage=stage, on_conflict=on_conflict))

    def finish_listing(self, target: Target, stream: str, domain: str, cursor: Cursor,
                       run_id: int | None, partition: str = "") -> int:
        """The listing was read whole: mark what it did not hold deleted (never removed), in
        one transaction with the checkpoint. Returns how many were marked."""
        spec = target.listed
        seen = sql.Identifier(f"_seen_{spec.name}")
        match = sql.SQL(" and ").join(
            sql.SQL("s.{0} = t.{0}").format(sql.Identifier(k)) for k in spec.key)
        with self.conn.transaction():
            marked = self.conn.execute(sql.SQL("""
                update {} t set deleted = true, deleted_at = now(), synced_at = now()
                where t.domain = %s and not t.deleted
                  and not exists (select 1 from {} s where {})""").format(
                self._table(spec.name), seen, match), (domain,)).rowcount
            if target.finished:
                target.finished(self, domain)
            cursor.marked_deleted = marked
            state.save_checkpoint(self.conn, self.schema, domain, stream, cursor, partition)
            if run_id is not None:
                state.finish_listing(self.conn, self.schema, run_id, cursor)
        self.conn.execute(sql.SQL("drop table if exists {}").format(seen))
        return marked

    def _upsert_main(self, spec: TableSpec, rows: list[tuple]) -> tuple[int, int]:
        stage = self._stage(spec)
        rows, self._won = self._insert_new(spec, rows)
        if not rows:
            return len(self._won), 0
        self._copy(stage, spec, rows)
        cols = [sql.Identifier(c) for c in spec.columns]
        key = [sql.Identifier(c) for c in spec.key]
        updates = [sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c))
                   for c in spec.columns if c not in spec.key and c not in self.keep]
        updates += [sql.SQL("synced_at = now()"), sql.SQL("deleted = false"),
                    sql.SQL("deleted_at = null")]
        version = sql.Identifier(spec.version)
        query = sql.SQL("""
            with up as (
                insert into {table} as t ({cols})
                select distinct on ({key}) {cols} from {stage}
                order by {key}, {version} desc nulls last
                on conflict ({key}) do update set {updates}
                where coalesce(excluded.{version}, '-infinity') >= coalesce(t.{version}, '-infinity')
                returning {tkey}, (xmax = 0) as inserted
            ), won as (
                insert into {won} select * from up
            )
            select {id}, inserted from up
        """).format(
            table=self._table(spec.name), cols=sql.SQL(", ").join(cols),
            key=sql.SQL(", ").join(key), stage=stage, version=version,
            updates=sql.SQL(", ").join(updates),
            tkey=sql.SQL(", ").join(sql.SQL("t.{}").format(k) for k in key),
            won=sql.Identifier(f"_won_{spec.name}"), id=key[-1],
        )
        # The records written (-> whether new): all of one domain, the loader's.
        self._won.update(self.conn.execute(query).fetchall())
        inserted = sum(self._won.values())
        return inserted, len(self._won) - inserted

    def _insert_new(self, spec: TableSpec,
                    rows: list[tuple]) -> tuple[list[tuple], dict[str, bool]]:
        """The records of the page new to the table (all of them in an initial sync, but for
        the one or two at the page's start that end the page before) are copied straight into
        it: their upsert would insert them, at the price of a second copy through the staging
        table and a sort. Returns the rows left for the upsert, and the ids copied. Nothing is
        copied when the page holds an id twice; should a new record be inserted meanwhile by
        another run, the whole page takes the upsert (at once with savepoints; written the
        fast way, the page is rolled back and written again with them)."""
        domain_column, id_column = spec.key
        ids = [getattr(row, id_column) for row in rows]
        domains = {getattr(row, domain_column) for row in rows}
        if len(domains) != 1 or len(set(ids)) != len(ids):
            return rows, {}
        domain = domains.pop()
        there = self._already_there(spec, domain, ids)
        # In id order, as the upsert inserts: two runs copying the same new records (two
        # windows, a backfill beside a sync) take their key locks in one order, not deadlock.
        new = sorted((row for row in rows if getattr(row, id_column) not in there),
                     key=lambda row: getattr(row, id_column))
        if not new:
            return rows, {}
        if self._fast:  # a UniqueViolation rolls the page back (bi.FAST_PATH_FAILURES)
            self._copy(self._table(spec.name), spec, new)
        else:
            try:
                with self.conn.transaction():
                    self._copy(self._table(spec.name), spec, new)
            except psycopg.errors.UniqueViolation:
                return rows, {}
        copied = [getattr(row, id_column) for row in new]
        self._mark_won(spec, domain, copied, inserted=True)
        left = [row for row in rows if getattr(row, id_column) in there]
        return left, dict.fromkeys(copied, True)

    def _mark_won(self, spec: TableSpec, domain: str, ids: list[str], inserted: bool) -> None:
        """Note `ids` in _won_<table> (the records this page wrote), as the upsert does."""
        self.conn.execute(sql.SQL("insert into {} select %s, x, %s from unnest(%b::text[]) x")
                          .format(sql.Identifier(f"_won_{spec.name}")), (domain, inserted, ids))

    def _already_there(self, spec: TableSpec, domain: str, ids: list[str]) -> set[str]:
        id_column = sql.Identifier(spec.key[1])
        return {r[0] for r in self.conn.execute(
            sql.SQL("select {} from {} where {} = %s and {} = any(%b)").format(
                id_column, self._table(spec.name), sql.Identifier(spec.key[0]), id_column),
            (domain, ids))}

    def _fill_kept(self, spec: TableSpec, batch: Batch) -> None:
        """The BI tables copy the base row: give them the kept values, not the source's NULLs."""
        kept = {row[0]: row[1:] for row in self.conn.execute(sql.SQL(
            "select t.{}, {} from {} t join {} w using ({})").format(
            sql.Identifier(spec.key[1]),
            sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in self.keep),
            self._table(spec.name), sql.Identifier(f"_won_{spec.name}"),
            sql.SQL(", ").join(map(sql.Identifier, spec.key))))}
        rows = batch.rows.get(spec.name, [])
        for n, row in enumerate(rows):
            values = kept.get(getattr(row, spec.key[1]))
            if values is not None:
                rows[n] = row._replace(**dict(zip(self.keep, values)))

    def _replace_children(self, parent: TableSpec, spec: TableSpec, rows: list[tuple],
                          domain: str) -> None:
        """The children of every parent written become the page's: the old ones of updated
        parents are removed (by index, `= any`); a parent the upsert inserted has none, unless
        its base row was removed by hand, which the primary key reveals (see bi.replacing)."""
        won = sql.Identifier(f"_won_{parent.name}")
        match = sql.SQL(" and ").join(
            sql.SQL("c.{0} = w.{0}").format(sql.Identifier(k)) for k in parent.key)
        stage = self._stage(spec) if rows else None
        if rows:
            self._copy(stage, spec, rows)
        cols = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
        key = sql.SQL(", ").join(map(sql.Identifier, spec.key))
        delete = sql.SQL("delete from {} where domain = %s and {} = any(%b)").format(
            self._table(spec.name), sql.Identifier(parent.key[1]))

        def write(fresh: set[str]) -> None:
            stale = [i for i in self._won if i not in fresh] if fresh else list(self._won)
            if stale:
                self.conn.execute(delete, (domain, stale))
            if rows:
                self.conn.execute(sql.SQL("""
                    insert into {table} ({cols})
                    select distinct on ({key}) {cols} from {stage} c
                    where exists (select 1 from {won} w where {match})
                    order by {key}
                """).format(table=self._table(spec.name), cols=cols, key=key, stage=stage,
                            won=won, match=match))

        bi.replacing(self.conn, [i for i, inserted in self._won.items() if inserted], write,
                     self._fast)
