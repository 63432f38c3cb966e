"""BI tables: one per case type, one per form (xmlns), one per repeat group; real columns.

Runs inside the page's transaction, right after the base upsert, for exactly the records whose
base row was written (`_won_<table>`), so the BI tables never disagree with `cases`/`forms`.
Every generated table and column is recorded in the catalog under its original name; names are
allocated once and never change. New properties and questions add columns as they appear.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import psycopg
from psycopg import sql
from psycopg.adapt import Dumper
from psycopg.pq import Format

from etl import jsonutil
from etl.dates import parse_hq_datetime
from etl.transform import Batch
from etl.transform.cases import SPECIAL_PROPERTIES
from etl.transform.flatten import FlatForm, Item, as_text, case_actions, flatten_form
from etl.transform.naming import NameAllocator, identifier, path_identifier_base, readable

log = logging.getLogger(__name__)

# PostgreSQL keeps a row within one 8 KB page (8,160 bytes) and moves a value out of the row
# only when it is longer than a TOAST pointer (24 bytes with alignment): a row of N short
# values can take ~24·N bytes that nothing can shrink. 300 such values per physical table stay
# under the limit with room for the key columns; more columns go to continuation tables
# `<table>__part2`, `__part3`, … joined on the same key (and 300 stays far below PostgreSQL's
# 1,600 columns per table).
MAX_PART_COLUMNS = 300
DEFAULT_DDL_LOCK_TIMEOUT = 3.0  # seconds a schema change may wait for a BI user's lock
BASE_TABLES = frozenset({
    "cases", "case_indices", "forms", "sync_checkpoints", "dead_letters", "sync_runs",
    "catalog_tables", "catalog_columns", "form_case_actions", "apps", "app_modules",
    "app_case_properties", "app_forms", "app_questions", "alembic_version", "bi_pending",
    "app_case_property_questions", "users", "web_users", "groups", "group_members", "locations",
    "location_types", "location_ancestors",
})
CASE_FIXED = (
    ("domain", "text not null"), ("case_id", "text not null"), ("case_type", "text"),
    ("case_name", "text"), ("owner_id", "text"), ("external_id", "text"), ("user_id", "text"),
    ("opened_by", "text"), ("closed", "boolean"), ("closed_by", "text"),
    ("date_opened", "timestamptz"), ("date_modified", "timestamptz"),
    ("date_closed", "timestamptz"), ("server_date_modified", "timestamptz"),
    ("server_date_opened", "timestamptz"), ("indexed_on", "timestamptz"), ("xform_ids", "text[]"),
)
FORM_FIXED = (
    ("domain", "text not null"), ("form_id", "text not null"), ("xmlns", "text"),
    ("form_name", "text"), ("app_id", "text"), ("build_id", "text"),
    ("received_on", "timestamptz"), ("server_modified_on", "timestamptz"),
    ("indexed_on", "timestamptz"), ("user_id", "text"), ("username", "text"),
    ("time_start", "timestamptz"), ("time_end", "timestamptz"), ("archived", "boolean"),
)
REPEAT_FIXED = (
    ("domain", "text not null"), ("form_id", "text not null"), ("row_key", "text not null"),
    ("parent_key", "text"), ("position", "integer not null"),
)
EXPORT_FIXED = (("domain", "text not null"), ("form_id", "text not null"))
EXPORT_TABLE_FIXED = (("domain", "text not null"), ("form_id", "text not null"),
                      ("row_id", "text not null"), ("parent_row_id", "text"))
FIXTURE_FIXED = (("domain", "text not null"), ("worker", "text not null"),
                 ("position", "integer not null"))
# The key columns come first in each FIXED tuple: a continuation row is a prefix plus values.
KEYS = {"case_type": ("domain", "case_id"), "form": ("domain", "form_id"),
        "repeat": ("domain", "form_id", "row_key"), "export": ("domain", "form_id"),
        "export_table": ("domain", "form_id", "row_id"),
        "fixture": ("domain", "worker", "position")}
FIXED = {"case_type": CASE_FIXED, "form": FORM_FIXED, "repeat": REPEAT_FIXED,
         "export": EXPORT_FIXED, "export_table": EXPORT_TABLE_FIXED, "fixture": FIXTURE_FIXED}
PART, TYPED_VIEW = "part", "typed_view"  # catalog_tables kinds besides the FIXED ones
TYPED_QUESTIONS = {"Int": "try_numeric", "Decimal": "try_numeric", "Double": "try_numeric",
                   "Long": "try_numeric", "Date": "try_date", "DateTime": "try_timestamptz"}
CAST_TYPES = {"try_numeric": "numeric", "try_date": "date",
              "try_timestamptz": "timestamp with time zone"}


def ddl_lock(conn: psycopg.Connection, schema: str) -> None:
    """Hold, until the transaction ends, the lock every schema change in `schema` takes."""
    conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"commcare-etl:ddl:{schema}",))


def guarded_ddl(conn: psycopg.Connection, statements: list[sql.Composable],
                timeout: float) -> bool:
    """Run schema changes that need a table's exclusive lock, waiting at most `timeout` for it.

    A BI user's open transaction holds a lock on the tables it read; an `ALTER TABLE` waiting
    behind it would also make every later query on that table queue behind the ALTER. So the
    wait is bounded, and on time-out the changes are rolled back (to a savepoint: the page's
    transaction goes on) and False is returned: the caller retries them on a later run.
    """
    conn.execute(sql.SQL("set local lock_timeout = {}").format(
        sql.Literal(f"{max(1, int(timeout * 1000))}ms")))
    try:
        with conn.transaction():
            for statement in statements:
                conn.execute(statement)
        return True
    except psycopg.errors.LockNotAvailable:
        return False
    finally:
        conn.execute("set local lock_timeout to default")


# COPY in binary format for the columns of these types (oids): no text escaping on either side
# and no re-parsing of timestamps; jsonb still goes as its text (version 1 of its format).
_BINARY_TYPES = {"text": 25, "timestamptz": 1184, "boolean": 16, "integer": 23, "text[]": 1009,
                 "jsonb": 3802}
_BINARY_OIDS = frozenset(_BINARY_TYPES.values())

# What the writes of a page recover from, one write at a time, each behind a savepoint: a
# value of an unexpected Python type (binary COPY), a row PostgreSQL refuses (DataError,
# ProgramLimitExceeded), a record new to the base table with BI rows left (UniqueViolation).
# Those savepoints cost two round trips each, some 100 per page of forms; so a page is first
# written without them (`fast`), and should one of these be raised, it is rolled back whole
# and written again with them (Loader.load_page).
FAST_PATH_FAILURES = (TypeError, ValueError, OverflowError, AttributeError,
                      psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded,
                      psycopg.errors.UniqueViolation)


class _JsonTextDumper(Dumper):
    """jsonb in binary COPY: the JSON text the transforms made, behind the format's version."""

    format = Format.BINARY
    oid = _BINARY_TYPES["jsonb"]

    def dump(self, obj: Any) -> bytes:
        if type(obj) is not str:
            raise TypeError(f"jsonb as text expected, got {type(obj).__name__}")
        return b"\x01" + obj.encode()


def binary_types(types: Iterable[str]) -> list[int] | None:
    """The oids to COPY these column types in binary with, or None (text COPY) for a type
    without a binary writer here."""
    oids = [_BINARY_TYPES.get(t) for t in types]
    return None if None in oids else oids


def copy_rows(conn: psycopg.Connection, table: sql.Composable, columns: Iterable[str],
              rows: Iterable[tuple], oids: list[int] | None = None, fast: bool = False) -> None:
    """COPY `rows` into `table`: binary when `oids` gives each column's type, else text.

    A value of another Python type than its column's (which text COPY would have converted)
    fails the binary attempt on this side: it is rolled back to a savepoint and the rows go
    again as text; `fast` (see FAST_PATH_FAILURES) skips the savepoint and raises instead.
    Errors from the server (a value PostgreSQL refuses) are raised as ever."""
    statement = sql.SQL("copy {} ({}) from stdin").format(
        table, sql.SQL(", ").join(map(sql.Identifier, columns)))
    if oids is not None and _BINARY_OIDS.issuperset(oids):
        rows = rows if isinstance(rows, list) else list(rows)
        if fast:
            _copy_binary(conn, statement, oids, rows)
            return
        try:
            with conn.transaction():
                _copy_binary(conn, statement, oids, rows)
            return
        except (TypeError, ValueError, OverflowError, AttributeError):
            pass
    with conn.cursor().copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _copy_binary(conn: psycopg.Connection, statement: sql.Composed, oids: list[int],
                 rows: list[tuple]) -> None:
    cursor = conn.cursor()
    cursor.adapters.register_dumper(None, _JsonTextDumper)  # this cursor only, by oid only
    with cursor.copy(statement + sql.SQL(" (format binary)")) as copy:
        copy.set_types(oids)
        for row in rows:
            copy.write_row(row)


@dataclass
class TableInfo:
    """One generated table as a BI user sees it: the main table and its continuations."""

    name: str
    key: tuple[str, str]  # (source kind, source name)
    columns: NameAllocator  # every dynamic column, in whichever part -> original path
    parts: list[str]  # the main table first, then `<name>__part2`, …
    counts: dict[str, int]  # physical table -> dynamic columns in it
    home: dict[str, str]  # dynamic column -> the physical table holding it

    @property
    def kind(self) -> str:
        return self.key[0]


@dataclass
class Catalog:
    """The catalog for one connection; reloaded whenever it may be stale."""

    conn: psycopg.Connection
    schema: str
    lock_timeout: float = DEFAULT_DDL_LOCK_TIMEOUT
    tables: dict[tuple[str, str], TableInfo] = field(default_factory=dict)
    table_names: NameAllocator | None = None
    views: dict[str, str] = field(default_factory=dict)  # table -> its typed view
    typed: dict[str, dict[str, str]] = field(default_factory=dict)  # table -> column -> cast
    labels: dict[tuple[str, str], tuple[str | None, str | None]] = field(default_factory=dict)
    form_names: dict[str, str] = field(default_factory=dict)
    locked: bool = False
    # This transaction: physical tables whose DDL timed out (retried next run) and the tables
    # that gained columns; committed, the latter move to `changed` (their typed views follow).
    busy: set[str] = field(default_factory=set)
    adding: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    retyping: set[tuple[str, str]] = field(default_factory=set)  # (table, column): type changed
    retyped: set[tuple[str, str]] = field(default_factory=set)
    relations: dict[str, str] = field(default_factory=dict)  # what the schema holds: name -> kind
    unparsed: dict[tuple[str, str], int] = field(default_factory=dict)  # this transaction
    unparsed_run: dict[tuple[str, str], int] = field(default_factory=dict)  # committed
    # Tables written (-> the column their rows are looked up by): this transaction, committed.
    written: dict[str, str] = field(default_factory=dict)
    wrote: dict[str, str] = field(default_factory=dict)
    repeat_hints: dict[str, frozenset[str]] = field(default_factory=dict)  # see Loader
    fast: bool = False  # writes without savepoints (see FAST_PATH_FAILURES)
    # Moves on whenever a table, column or label may have changed: writes made from a
    # snapshot of another generation are made again (see CatalogView).
    generation: int = 0

    def t(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    @property
    def deferred(self) -> bool:
        return bool(self.busy)

    def load(self) -> None:
        """Read the catalog again. A table's TableInfo is refreshed in place: whoever holds it
        (a page's writes being made, across adding columns under the lock) sees the table as
        it is now, a continuation table added meanwhile included."""
        self.generation += 1
        before = dict(self.tables)
        self.tables.clear()
        self.views.clear()
        owners: dict[str, str] = {}
        rows = self.conn.execute(sql.SQL(
            "select table_name, source_kind, source_name, parent_table from {}").format(
            self.t("catalog_tables"))).fetchall()
        columns: dict[str, dict[str, str]] = defaultdict(dict)
        self.typed = defaultdict(dict)
        for table, column, path, qtype in self.conn.execute(sql.SQL(
                "select table_name, column_name, original_path, data_type from {}").format(
                self.t("catalog_columns"))):
            columns[table][column] = path
            if qtype in TYPED_QUESTIONS:
                self.typed[table][column] = TYPED_QUESTIONS[qtype]
        parts: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for table, kind, source, parent in rows:
            owners[table] = f"{kind}:{source}"
            if kind == PART:
                parts[parent].append((int(source.rsplit("#", 1)[1]), table))
            elif kind == TYPED_VIEW:
                self.views[source] = table
        for table, kind, source, _ in rows:
            if kind not in FIXED:
                continue
            physical = [table] + [name for _, name in sorted(parts[table])]
            taken = {c: path for name in physical for c, path in columns[name].items()}
            fixed = {name for name, _ in FIXED[kind]} | {"deleted", "synced_at"}
            info = TableInfo(
                table, (kind, source), NameAllocator(taken, reserved=fixed), physical,
                {name: len(columns[name]) for name in physical},
                {c: name for name in physical for c in columns[name]})
            held = before.get((kind, source))
            if held is not None:
                held.__dict__.update(info.__dict__)
                info = held
            self.tables[(kind, source)] = info
        # Names taken by anything else in the schema (an analyst's own table or view, a view
        # of an older version) are never allocated: CREATE would fail on every run.
        self.relations = dict(self.conn.execute(
            "select c.relname, c.relkind::text from pg_class c join pg_namespace n "
            "on n.oid = c.relnamespace where n.nspname = %s and c.relkind in "
            "('r', 'v', 'm', 'p', 'f')", (self.schema,)).fetchall())
        self.table_names = NameAllocator(
            owners, reserved=set(BASE_TABLES) | (set(self.relations) - set(owners)))
        self.labels = {(source, path): (label, qtype) for _, source, path, label, qtype
                       in self.conn.execute(dictionary_sql(self.schema))}
        self.form_names = dict(self.conn.execute(sql.SQL(
            "select distinct on (xmlns) xmlns, name from {} where name is not null "
            "order by xmlns, app_id").format(self.t("app_forms"))).fetchall())

    def lock(self) -> None:
        """Serialise schema changes across processes, then re-read what others added."""
        if not self.locked:
            ddl_lock(self.conn, self.schema)
            self.locked = True
            self.load()

    def end_transaction(self, committed: bool) -> None:
        self.locked = False
        if committed:
            self.changed |= self.adding
            self.retyped |= self.retyping
            for key, count in self.unparsed.items():
                self.unparsed_run[key] = self.unparsed_run.get(key, 0) + count
            self.wrote.update(self.written)
        else:  # names allocated in a rolled-back transaction do not exist
            self.table_names = None
        self.adding = set()
        self.retyping = set()
        self.busy = set()
        self.unparsed = {}
        self.written = {}

    def ensure_loaded(self) -> None:
        if self.table_names is None:
            self.load()

    def snapshot(self) -> "CatalogView | None":
        """What the page ahead's BI writes are made from, in the reading thread: a copy of the
        tables and columns there are now (None while the catalog is to be read again)."""
        if self.table_names is None:
            return None
        return CatalogView(self.generation, {
            key: TableInfo(info.name, info.key, NameAllocator(info.columns.owner), list(info.parts),
                           dict(info.counts), dict(info.home))
            for key, info in self.tables.items()}, dict(self.labels), dict(self.form_names))

    def _create(self, name: str, kind: str, source: str, columns: list[tuple[str, str]],
                key: tuple[str, ...], *, parent: str | None, label: str | None,
                comment: str, extra: tuple[str, ...] = ()) -> None:
        """A new table: nobody can hold a lock on it, so this never waits on a BI user."""
        defs = [sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in columns]
        defs += [sql.SQL(e) for e in extra]
        defs.append(sql.SQL("primary key ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, key))))
        self.conn.execute(sql.SQL("create table {} ({})").format(
            self.t(name), sql.SQL(", ").join(defs)))
        self.conn.execute(sql.SQL(
            "insert into {} (table_name, source_kind, source_name, parent_table, label) "
            "values (%s, %s, %s, %s, %s)").format(self.t("catalog_tables")),
            (name, kind, source, parent, label))
        self.conn.execute(sql.SQL("comment on table {} is {}").format(
            self.t(name), sql.Literal(comment)))

    def table(self, kind: str, source: str, readable_as: str, prefix: str = "",
              parent: str | None = None, label: str | None = None) -> TableInfo:
        self.ensure_loaded()
        info = self.tables.get((kind, source))
        if info:
            return info
        self.lock()
        info = self.tables.get((kind, source))
        if info:
            return info
        self.generation += 1
        name = self.table_names.allocate(f"{kind}:{source}", prefix, readable_as=readable_as)
        self._create(name, kind, source, list(FIXED[kind]), KEYS[kind], parent=parent,
                     label=label,
                     comment=f"{kind.replace('_', ' ')} {source!r}" + (f": {label}" if label else ""),
                     extra=("deleted boolean not null default false",
                            "synced_at timestamptz not null default now()"))
        reserved = {c for c, _ in FIXED[kind]} | {"deleted", "synced_at"}
        info = TableInfo(name, (kind, source), NameAllocator(reserved=reserved), [name],
                         {name: 0}, {})
        self.tables[(kind, source)] = info
        return info

    def _part_with_room(self, info: TableInfo) -> str:
        last = info.parts[-1]
        if info.counts.get(last, 0) < MAX_PART_COLUMNS:
            return last
        n = len(info.parts) + 1
        name = self.table_names.allocate(f"{PART}:{info.name}#{n}",
                                         readable_as=f"{info.name}__part{n}")
        key = KEYS[info.kind]
        types = dict(FIXED[info.kind])
        joined = ", ".join(key)
        self._create(name, PART, f"{info.name}#{n}", [(c, types[c]) for c in key], key,
                     parent=info.name, label=None,
                     comment=f"more columns of {info.name} (it has more than "
                             f"{MAX_PART_COLUMNS} per table): join on ({joined}); "
                             f"catalog_columns says which table holds each column")
        info.parts.append(name)
        info.counts[name] = 0
        log.info("%s has %d columns of questions or properties: further ones go to %s "
                 "(join on %s)", info.name, sum(info.counts.values()), name, joined)
        return name

    def columns(self, info: TableInfo, source_kind: str, source_name: str,
                paths: Iterable[tuple[str, str]]) -> dict[str, tuple[str, str] | None]:
        """Map each original path to (table, column), adding the missing columns. None: the
        column could not be added now (a BI user's lock); its values stay in the base jsonb."""
        result: dict[str, tuple[str, str] | None] = {}
        missing = []
        for path, shown in paths:
            column = info.columns.by_name.get(path)
            if column is None:
                missing.append((path, shown))
            else:
                result[path] = (info.home[column], column)
        if not missing:
            return result
        self.generation += 1
        self.lock()
        info = self.tables[info.key]  # after a rollback, the reload may have dropped it
        for path, shown in missing:
            column = info.columns.by_name.get(path)  # another process may have added it
            if column is not None:
                result[path] = (info.home[column], column)
                continue
            table = self._part_with_room(info)
            if table in self.busy:
                result[path] = None
                continue
            column = info.columns.allocate(path, readable_as=shown)
            label, qtype = self.labels.get((source_name, path), (None, None))
            added = guarded_ddl(self.conn, [
                sql.SQL("alter table {} add column {} text").format(
                    self.t(table), sql.Identifier(column)),
                sql.SQL("comment on column {}.{} is {}").format(
                    self.t(table), sql.Identifier(column),
                    sql.Literal(column_comment(path, label)))], self.lock_timeout)
            if not added:
                info.columns.release(column)
                self.busy.add(table)
                log.warning("table %s is in use (a BI user's open transaction holds a lock on "
                            "it): new column(s) wait for the next run; their values are in the "
                            "base tables' jsonb meanwhile", table)
                result[path] = None
                continue
            self.conn.execute(sql.SQL(
                "insert into {} (table_name, column_name, source_kind, source_name, "
                "original_path, label, data_type) values (%s, %s, %s, %s, %s, %s, %s)").format(
                self.t("catalog_columns")),
                (table, column, source_kind, source_name, path, label, qtype))
            if qtype in TYPED_QUESTIONS:
                self.typed.setdefault(table, {})[column] = TYPED_QUESTIONS[qtype]
            info.home[column] = table
            info.counts[table] = info.counts.get(table, 0) + 1
            self.adding.add(table)
            result[path] = (table, column)
        return result


class NotReady(Exception):
    """A page needs a table or column the snapshot does not have: its writes wait for the load."""


@dataclass
class CatalogView:
    """A catalog as it was between two pages, read-only, for the thread that prepares the page
    ahead: it answers `table` and `columns` as the Catalog does when nothing is to be added,
    and raises NotReady where the Catalog would add a table or column. Writes made from it are
    used only if the catalog is still of the same `generation` when the page loads."""

    generation: int
    tables: dict[tuple[str, str], TableInfo]
    labels: dict[tuple[str, str], tuple[str | None, str | None]]
    form_names: dict[str, str]
    repeat_hints: dict[str, frozenset[str]] = field(default_factory=dict)

    def ensure_loaded(self) -> None:
        pass

    def table(self, kind: str, source: str, readable_as: str, prefix: str = "",
              parent: str | None = None, label: str | None = None) -> TableInfo:
        info = self.tables.get((kind, source))
        if info is None:
            raise NotReady(f"no table for {kind} {source!r} yet")
        return info

    def columns(self, info: TableInfo, source_kind: str, source_name: str,
                paths: Iterable[tuple[str, str]]) -> dict[str, tuple[str, str] | None]:
        result: dict[str, tuple[str, str] | None] = {}
        for path, _ in paths:
            column = info.columns.by_name.get(path)
            if column is None:
                raise NotReady(f"no column for {path!r} in {info.name} yet")
            result[path] = (info.home[column], column)
        return result


@dataclass
class Prepared:
    """A page's BI writes, made ahead from a CatalogView, for every record of the page."""

    generation: int
    ids: frozenset[str]
    writes: list["Write"]
    repeat_hints: dict[str, frozenset[str]]

    def fits(self, catalog: Catalog, won: dict[str, bool]) -> bool:
        """Whether these are the writes the load would make now: the catalog unchanged since
        the snapshot, and the page's upsert written every record (none was older)."""
        return (catalog.table_names is not None and catalog.generation == self.generation
                and len(won) == len(self.ids) and self.ids.issuperset(won))


def _text(value: object) -> str | None:
    return value if type(value) is str else as_text(value)  # the common case, fast


def cell(value: str | None) -> str | None:
    """What a BI column holds for a value: one rule for every case, form and repeat table.
    Missing is NULL, whether HQ sent nothing, an empty string, or its `1900-01-01` date
    placeholder (the base tables' jsonb keeps exactly what HQ sent)."""
    if not value or value.startswith("1900-01-01") and _PLACEHOLDER.fullmatch(value):
        return None
    return value


_PLACEHOLDER = re.compile(r"1900-01-01(T00:00(:00(\.0+)?)?Z?)?")


def column_comment(path: str, label: str | None) -> str:
    return f"{label} ({path})" if label else path


@dataclass
class Write:
    """Rows to put in a table in place of what it holds for `ids`."""

    table: str
    ids: list[str]
    columns: list[str]
    rows: list[tuple]
    id_column: str
    oids: list[int] | None = None  # each column's type, for a binary COPY (None: text)


def clean_values(values: dict[str, str | None]) -> dict[str, str]:
    """{path: text} as the BI columns hold it: each value through `cell`, the missing left out
    (a path not there reads as None, which is what cell(None) gives)."""
    return {p: cell(v) for p, v in values.items() if v}


def table_writes(info: TableInfo, ids: list[str], id_column: str, fixed_columns: list[str],
                  records: list[tuple[tuple, dict]],
                  placed: dict[str, tuple[str, str] | None], clean: bool = True) -> list[Write]:
    """One write per physical table of `info`. `records`: (fixed values, {path: text}) each,
    as `clean_values` makes them unless `clean`; a continuation table gets a row only where
    the record has a value in it."""
    by_table: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for path, where in placed.items():
        if where:
            by_table[where[0]].append((path, where[1]))
    n_key = len(KEYS[info.kind])
    types = {c: t.split()[0] for c, t in FIXED[info.kind]}
    cleaned = [(fixed, clean_values(values)) for fixed, values in records] if clean else records
    writes = []
    for table in info.parts:
        dynamic = by_table.get(table, [])
        paths = [p for p, _ in dynamic]
        if table == info.name:
            columns = fixed_columns + [c for _, c in dynamic]
            rows = [fixed + tuple(map(values.get, paths)) for fixed, values in cleaned]
        else:
            columns = list(KEYS[info.kind]) + [c for _, c in dynamic]
            rows = []
            for fixed, values in cleaned:
                part = tuple(map(values.get, paths))
                if any(part):  # cleaned values are None or non-empty text
                    rows.append(fixed[:n_key] + part)
        writes.append(Write(table, ids, columns, rows, id_column,
                            binary_types(types.get(c, "text") for c in columns)))
    return writes


def _unparsed_sql(catalog: Catalog, column: tuple[str, str], value: sql.Composable
                  ) -> sql.Composed:
    """Whether `value` (of `column`, a (table, column)) does not parse as its question's type."""
    func = catalog.typed[column[0]][column[1]]
    return sql.SQL("nullif(btrim({0}), '') is not null and {1}.{2}({0}) is null").format(
        value, sql.Identifier(catalog.schema), sql.Identifier(func))


def _delete(catalog: Catalog, write: Write, domain: str, ids: list[str]) -> dict[str, int]:
    """Remove what the table holds for `ids`; returns, per typed column, how many of the
    removed values did not parse (counted in the same statement)."""
    conn = catalog.conn
    casts = catalog.typed.get(write.table)
    delete = sql.SQL("delete from {} where domain = %s and {} = any(%b)").format(
        catalog.t(write.table), sql.Identifier(write.id_column))
    if not casts:
        conn.execute(delete, (domain, ids))
        return {}
    names = sorted(casts)
    counts = conn.execute(sql.SQL("with gone as ({} returning {}) select {} from gone").format(
        delete, sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(sql.SQL("count(*) filter (where {})").format(
            _unparsed_sql(catalog, (write.table, c), sql.Identifier(c))) for c in names)),
        (domain, ids)).fetchone()
    return dict(zip(names, counts))


def _unparsed_written(catalog: Catalog, written: list[tuple[Write, list[tuple]]]
                      ) -> dict[tuple[str, str], int]:
    """Per (table, typed column) written, how many of the values in the rows written do not
    parse: the same test as the typed views', on the same values, without reading them back;
    one query for the page's writes."""
    values: dict[tuple[str, str], list[str]] = {}
    for write, rows in written:
        casts = catalog.typed.get(write.table)
        if not casts or not rows:
            continue
        for n, column in enumerate(write.columns):
            if column in casts:
                column_values = [row[n] for row in rows if row[n] is not None]
                if column_values:
                    values.setdefault((write.table, column), []).extend(column_values)
    if not values:
        return {}
    keys = sorted(values)
    counts = catalog.conn.execute(sql.SQL("select {}").format(sql.SQL(", ").join(
        sql.SQL("(select count(*) from unnest(%b::text[]) v where {})").format(
            _unparsed_sql(catalog, key, sql.Identifier("v"))) for key in keys)),
        [values[key] for key in keys]).fetchone()
    return dict(zip(keys, counts))


def apply_writes(catalog: Catalog, domain: str, writes: list[Write], rejects: list,
                 fresh: Iterable[str] = ()) -> None:
    """Write only once every table and column the page needs exists. A transaction then never
    holds row locks on a BI table while it waits for the DDL lock, and the holder of that lock
    never waits to ALTER a table such a transaction has written: no deadlock between runs.

    A row PostgreSQL refuses (too big, say) goes to dead_letters alone: its record stays in the
    base table and the rest of the page loads. Values that do not parse as their question's
    type are counted, in one query for the page's writes, against what the replaced rows held.

    `fresh`: records whose base row this page inserted (see `replacing`)."""
    unparsed, refused = replacing(catalog.conn, fresh,
                                  lambda new: write_tables(catalog, domain, writes, new),
                                  catalog.fast)
    merge_unparsed(catalog, unparsed)
    rejects.extend(refused)


def replacing(conn: psycopg.Connection, fresh: Iterable[str], write: Callable[[set[str]], Any],
              fast: bool = False) -> Any:
    """`write(fresh)`, skipping the removal of old rows for the `fresh` records: those the
    page's base upsert inserted, which have no BI rows (the base row and the BI rows are
    written in one transaction, and a base row is never removed by the sync).

    Should a fresh record still have rows (someone removed its base row by hand, leaving its
    BI rows), its main table's primary key says so: the attempt is rolled back to a savepoint
    and `write(set())` replaces every record's rows as before."""
    fresh = set(fresh)
    if not fresh or fast:  # fast: a UniqueViolation rolls the page back (FAST_PATH_FAILURES)
        return write(fresh)
    try:
        with conn.transaction():
            return write(fresh)
    except psycopg.errors.UniqueViolation:
        log.info("records new to the base table had rows in the BI tables already: replacing "
                 "them")
        return write(set())


def write_tables(catalog: Catalog, domain: str, writes: list[Write], fresh: set[str]
                 ) -> tuple[dict[tuple[str, str], int], list]:
    """Do the writes; returns the unparsed-value deltas and the refused rows (Rejects).
    With `catalog.fast`, no write has a savepoint of its own (see FAST_PATH_FAILURES)."""
    conn = catalog.conn
    unparsed: dict[tuple[str, str], int] = {}
    refused: list = []
    written: list[tuple[Write, list[tuple]]] = []
    for write in writes:
        catalog.written[write.table] = write.id_column
        stale = [i for i in write.ids if i not in fresh] if fresh else write.ids
        for column, count in (_delete(catalog, write, domain, stale) if stale else {}).items():
            if count:
                unparsed[(write.table, column)] = unparsed.get((write.table, column), 0) - count
        rows = write.rows
        if rows and catalog.fast:
            _copy(catalog, write, rows, fast=True)
        elif rows:
            try:
                with conn.transaction():
                    _copy(catalog, write, rows)
            except (psycopg.errors.ProgramLimitExceeded, psycopg.errors.DataError):
                rows = _copy_one_by_one(catalog, write, refused)
        written.append((write, rows))
    for key, count in _unparsed_written(catalog, written).items():
        unparsed[key] = unparsed.get(key, 0) + count
    return {key: delta for key, delta in unparsed.items() if delta}, refused


def merge_unparsed(catalog: Catalog, unparsed: dict[tuple[str, str], int]) -> None:
    for key, delta in unparsed.items():
        catalog.unparsed[key] = catalog.unparsed.get(key, 0) + delta


def _copy(catalog: Catalog, write: Write, rows: list[tuple], binary: bool = True,
          fast: bool = False) -> None:
    copy_rows(catalog.conn, catalog.t(write.table), write.columns, rows,
              write.oids if binary else None, fast=fast)


def _copy_one_by_one(catalog: Catalog, write: Write, rejects: list) -> list[tuple]:
    """Each row alone; the refused ones go to `rejects`. Returns the rows written."""
    from etl.transform import Reject

    id_at = write.columns.index(write.id_column)
    written = []
    for row in write.rows:
        try:
            with catalog.conn.transaction():
                _copy(catalog, write, [row], binary=False)
            written.append(row)
        except (psycopg.errors.ProgramLimitExceeded, psycopg.errors.DataError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            rejects.append(Reject(
                str(row[id_at]), f"BI table {write.table} refused the row ({reason}); the record "
                f"is complete in the base table, not in {write.table}",
                jsonutil.dumps_raw(dict(zip(write.columns, row)))))
    return written


STATISTICS_TARGET = 10  # 3,000 rows sampled per table, against 30,000 at PostgreSQL's default


def keep_statistics(conn: psycopg.Connection, schema: str, tables: dict[str, str]) -> list[str]:
    """ANALYZE (the domain and lookup column of) those of `tables` (name -> lookup column) that
    were never analyzed or have doubled in size since. Returns the tables analyzed.

    Each page looks its records up with `domain = %s and <id> = any(%s)` (BI deletes, unparsed
    counts, form_case_actions, previous case types). With no statistics the planner takes
    `domain = %s` to match a small share of a table where it matches all of it, and reads
    every row of the domain instead of the page's ids: a page then costs as much as the table
    is big, and a first sync grows quadratic. Autovacuum may be off, or not reach a new table
    for a while. Runs after the page's commit, skipping a table another session has locked
    (tried again after the next page); a column list keeps it cheap."""
    if not tables:
        return []
    grown = [r[0] for r in conn.execute(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = %s and c.relname = any(%s) and c.relkind = 'r' and (c.reltuples < 0 "
        "or pg_relation_size(c.oid) > 2 * greatest(c.relpages, 1) * "
        "current_setting('block_size')::bigint) order by c.relname", (schema, list(tables)))]
    if grown:
        with conn.transaction():
            # A small sample: the lookups need the row count and that ids are distinct, not
            # fine histograms (autovacuum's ANALYZE brings those, at the server's target).
            conn.execute("set local default_statistics_target = %d" % STATISTICS_TARGET)
            conn.execute(sql.SQL("analyze (skip_locked) {}").format(sql.SQL(", ").join(
                sql.SQL("{}.{} (domain, {})").format(sql.Identifier(schema), sql.Identifier(t),
                                                     sql.Identifier(tables[t])) for t in grown)))
    return grown


def flush_unparsed(catalog: Catalog) -> None:
    """Add this page's unparsed-value counts to the catalog (in a fixed order: no deadlock)."""
    for (table, column), delta in sorted(catalog.unparsed.items()):
        catalog.conn.execute(sql.SQL(
            "update {} set unparsed_values = greatest(0, coalesce(unparsed_values, 0) + %s) "
            "where table_name = %s and column_name = %s").format(catalog.t("catalog_columns")),
            (delta, table, column))


def _newest(rows: list, id_key: str) -> dict[str, Any]:
    """One row per id: the one with the latest `indexed_on`, as the base upsert chose."""
    newest: dict[str, Any] = {}
    for row in rows:
        record_id = getattr(row, id_key)
        current = newest.get(record_id)
        if current is None or _version(row.indexed_on) >= _version(current.indexed_on):
            newest[record_id] = row
    return newest


def _version(value) -> float:
    return value.timestamp() if value is not None else float("-inf")


# --- cases ---------------------------------------------------------------------------------

def previous_case_types(conn: psycopg.Connection, schema: str, domain: str,
                        batch: Batch) -> dict[str, str]:
    """Before the upsert: cases whose type is changing, with their old type."""
    changed = {}
    rows = batch.rows.get("cases", [])
    if not rows:
        return changed
    new_types = {row.case_id: row.case_type for row in rows}
    for case_id, old_type in conn.execute(sql.SQL(
            "select case_id, case_type from {}.cases where domain = %s and case_id = any(%b)"
    ).format(sql.Identifier(schema)), (domain, list(new_types))):
        if old_type and old_type != new_types.get(case_id):
            changed[case_id] = old_type
    return changed


def case_values(batch: Batch) -> dict[str, tuple[dict[str, str], tuple[str, ...]]]:
    """By case id, what its case type's table holds: its properties and `index/<name>` as
    `clean_values` makes them, and, when some have no value (they get columns too), all its
    paths in order. Pure: made a page ahead (Loader.prepare)."""
    indices: dict[str, dict[str, str | None]] = defaultdict(dict)
    for index in batch.rows.get("case_indices", []):
        indices[index.case_id][index.identifier] = index.referenced_id
    made = {}
    for row in batch.rows.get("cases", []):
        values = {p: _text(v) for p, v in batch.sources[row.case_id].items()
                  if p not in SPECIAL_PROPERTIES}
        for name, referenced in indices.get(row.case_id, {}).items():
            values[f"index/{name}"] = referenced
        cleaned = clean_values(values)
        made[row.case_id] = (cleaned, tuple(values) if len(cleaned) < len(values) else ())
    return made


def load_case_tables(catalog: Catalog, domain: str, batch: Batch,
                     old_types: dict[str, str], won: dict[str, bool]) -> None:
    """The case-type tables' rows of the page's cases in `won` (the ids whose version the base
    upsert kept -> whether the base row was inserted rather than updated)."""
    if not won:
        return
    # Read before the old types' tables are looked up: on a run's first page nothing has read
    # the catalog yet, and after a rolled-back attempt it may name tables that are gone.
    catalog.ensure_loaded()
    writes = []
    for case_id, old_type in old_types.items():
        info = catalog.tables.get(("case_type", old_type))
        if case_id in won and info:
            writes += [Write(table, [case_id], [], [], "case_id") for table in info.parts]
    prepared = batch.bi_writes
    if isinstance(prepared, Prepared) and prepared.fits(catalog, won):
        writes += prepared.writes
    else:
        writes += _case_writes(catalog, batch, won)
    apply_writes(catalog, domain, writes, batch.rejects,
                 fresh=[case_id for case_id, inserted in won.items() if inserted])


def prepare_case_writes(view: CatalogView, batch: Batch) -> Prepared | None:
    """The page's case-type table writes, made ahead (in the reading thread) from `view`, as
    if every case of the page is written; None when the page needs a new table or column."""
    ids = frozenset(row.case_id for row in batch.rows.get("cases", []))
    writes = _ahead(_case_writes, view, batch, dict.fromkeys(ids, True))
    return None if writes is None else Prepared(view.generation, ids, writes, {})


def _ahead(make: Callable[..., list[Write]], view: CatalogView, *args) -> list[Write] | None:
    """`make(view, *args)`, or None: the load makes the writes, and reports what fails."""
    try:
        return make(view, *args)
    except NotReady:
        return None
    except Exception:  # noqa: BLE001 - made again at load, where a failure is the page's
        log.debug("BI writes could not be made ahead; the load makes them", exc_info=True)
        return None


def _case_writes(catalog: Catalog | CatalogView, batch: Batch,
                 won: dict[str, bool]) -> list[Write]:
    writes: list[Write] = []
    rows = _newest([r for r in batch.rows.get("cases", []) if r.case_id in won], "case_id")
    prepared = batch.case_values or case_values(batch)  # made a page ahead, as a rule
    by_type: dict[str, list] = defaultdict(list)
    for row in rows.values():
        if row.case_type:
            by_type[row.case_type].append(row)
    fixed_columns = [c for c, _ in CASE_FIXED]
    for case_type, type_rows in by_type.items():
        info = catalog.table("case_type", case_type, readable_as=case_type, prefix="case_")
        records = []
        paths: dict[str, None] = {}
        for row in type_rows:
            cleaned, every = prepared[row.case_id]
            paths.update(dict.fromkeys(every or cleaned))
            records.append((tuple(getattr(row, c) for c in fixed_columns), cleaned))
        placed = catalog.columns(info, "case_property", case_type,
                                 ((p, p) for p in paths if not p.startswith("index/")))
        placed.update(catalog.columns(info, "case_index", case_type, (
            (p, f"index_{p[6:]}") for p in paths if p.startswith("index/"))))
        writes += table_writes(info, [r.case_id for r in type_rows], "case_id", fixed_columns,
                               records, placed, clean=False)
    return writes


# --- forms ---------------------------------------------------------------------------------

def _repeat_parent(path: str, repeat_paths: Iterable[str]) -> str | None:
    best = None
    for other in repeat_paths:
        if path.startswith(other + "/") and (best is None or len(other) > len(best)):
            best = other
    return best


def load_form_tables(catalog: Catalog, schema: str, domain: str, batch: Batch,
                     won: dict[str, bool]) -> None:
    """The form tables' rows of the page's forms in `won` (as load_case_tables)."""
    if not won:
        return
    catalog.ensure_loaded()
    prepared = batch.bi_writes
    if isinstance(prepared, Prepared) and prepared.fits(catalog, won):
        catalog.repeat_hints.update(prepared.repeat_hints)
        writes = prepared.writes
    else:
        writes = _form_writes(catalog, domain, batch, won)
    apply_writes(catalog, domain, writes, batch.rejects,
                 fresh=[i for i, inserted in won.items() if inserted])


def prepare_form_writes(view: CatalogView, batch: Batch) -> Prepared | None:
    """The page's form, repeat and form_case_actions writes, made ahead from `view` (as
    prepare_case_writes)."""
    rows = batch.rows.get("forms", [])
    if not rows:
        return None
    ids = frozenset(row.form_id for row in rows)
    writes = _ahead(_form_writes, view, rows[0].domain, batch, dict.fromkeys(ids, True))
    return None if writes is None else Prepared(view.generation, ids, writes, view.repeat_hints)


def _form_writes(catalog: Catalog | CatalogView, domain: str, batch: Batch,
                 won: dict[str, bool]) -> list[Write]:
    """Every write of the page's forms in `won`, form_case_actions last; each xmlns's repeat
    paths go to `catalog.repeat_hints` as they are found."""
    rows = _newest([r for r in batch.rows.get("forms", []) if r.form_id in won], "form_id")
    won_ids = list(rows)
    actions = []
    writes: list[Write] = []
    by_xmlns: dict[str, list] = defaultdict(list)
    for form_id, row in rows.items():
        by_xmlns[row.xmlns or "(no xmlns)"].append(row)
    for xmlns, form_rows in by_xmlns.items():
        catalogued = _catalogued_repeats(catalog, xmlns)
        known_repeats = frozenset(catalogued | {
            path for (x, path), (_, qtype) in catalog.labels.items()
            if x == xmlns and qtype == "Repeat"})
        flats = {}
        for row in form_rows:
            ahead = batch.flats.get(row.form_id)
            if ahead is not None and ahead[0] == known_repeats:
                flat, form_actions = ahead[1], ahead[2]
            else:
                flat = flatten_form(_form_of(batch, row), known_repeats)
                form_actions = _action_rows(flat, domain, row.form_id)
            flats[row.form_id] = flat
            actions += form_actions
        # For the page read ahead: the paths this page makes repeats of (each gets its table
        # below), so that its forms are flattened as they will be loaded.
        catalog.repeat_hints[xmlns] = known_repeats.union(
            *(flat.repeats for flat in flats.values()))
        name = (catalog.form_names.get(xmlns) or form_rows[0].form_name
                or xmlns.rstrip("/").rsplit("/", 1)[-1])
        info = catalog.table("form", xmlns, readable_as=name, prefix="form_", label=name)
        form_ids = [row.form_id for row in form_rows]
        writes += _form_rows(catalog, info, xmlns, form_rows, form_ids, flats)
        writes += _repeat_rows(catalog, info, xmlns, domain, flats, form_ids)
    # Last, as a write like the others: deleted for the updated forms, refused rows alone.
    writes.append(Write("form_case_actions", won_ids, list(_ACTION_COLUMNS), actions, "form_id",
                        _ACTION_OIDS))
    return writes


_ACTION_COLUMNS = ("domain", "form_id", "block", "action", "case_id", "case_type", "properties",
                   "date_modified")
# Binary COPY, date_modified parsed here: a date HQ sent that does not parse (or its 1900
# placeholder) is NULL, as in every BI table, instead of a COPY error that would stop the page.
_ACTION_OIDS = [_BINARY_TYPES[t] for t in ("text", "text", "integer", "text", "text", "text",
                                           "jsonb", "timestamptz")]


def _form_of(batch: Batch, row: Any) -> dict:
    """The form's data: from its record, or from its row's JSON once the record is gone."""
    record = batch.sources.get(row.form_id)
    if record is not None:
        return record.get("form") or {}
    form = jsonutil.loads(row.form) if isinstance(row.form, str) else row.form
    return form if isinstance(form, dict) else {}


def _action_rows(flat: FlatForm, domain: str, form_id: str) -> list[tuple]:
    """The form's form_case_actions rows."""
    return [(domain, form_id, position, action, case_id, case_type, jsonutil.dumps(props),
             parse_hq_datetime(modified))
            for position, action, case_id, case_type, props, modified
            in case_actions(flat.case_blocks)]


def preflatten(hints: dict[str, frozenset[str]], batch: Batch) -> None:
    """Flatten the page's forms ahead (Loader.prepare), each with the repeat paths its form
    was last loaded with, and make their form_case_actions rows; a form not loaded yet is
    left to load_form_tables."""
    for row in batch.rows.get("forms", []):
        known = hints.get(row.xmlns or "(no xmlns)")
        record = batch.sources.get(row.form_id)
        if known is not None and record is not None:
            flat = flatten_form(record.get("form") or {}, known)
            for item in (flat.root, *(i for items in flat.repeats.values() for i in items)):
                item.cleaned = clean_values(item.values)
            batch.flats[row.form_id] = (known, flat, _action_rows(flat, row.domain, row.form_id))


def _catalogued_repeats(catalog: Catalog, xmlns: str) -> set[str]:
    """The repeat paths of this form that already have a table."""
    return {source.split("#", 1)[1] for (kind, source) in catalog.tables
            if kind == "repeat" and source.startswith(xmlns + "#")}


def _form_rows(catalog: Catalog, info: TableInfo, xmlns: str, form_rows: list,
               form_ids: list[str], flats: dict) -> list[Write]:
    paths: dict[str, None] = {}
    for flat in flats.values():
        paths.update(dict.fromkeys(flat.root.values))
    placed = catalog.columns(info, "form_question", xmlns,
                             ((p, path_identifier_base(p.split("/"))) for p in paths))
    fixed = [c for c, _ in FORM_FIXED]
    records = [(tuple(getattr(row, c) for c in fixed), _cleaned(flats[row.form_id].root))
               for row in form_rows]
    return table_writes(info, form_ids, "form_id", fixed, records, placed, clean=False)


def _cleaned(item: Item) -> dict[str, str]:
    return item.cleaned if item.cleaned is not None else clean_values(item.values)


def _repeat_rows(catalog: Catalog, form_info: TableInfo, xmlns: str, domain: str,
                 flats: dict, form_ids: list[str]) -> list[Write]:
    writes = []
    items_by_path: dict[str, list[tuple[str, Item]]] = defaultdict(list)
    for form_id, flat in flats.items():
        for path, items in flat.repeats.items():
            items_by_path[path].extend((form_id, item) for item in items)
    # Every repeat table of the form, seen on this page or not (a form that now has no items
    # must lose its old rows there too). Read afresh: adding columns may have reloaded the catalog.
    all_paths = set(items_by_path) | _catalogued_repeats(catalog, xmlns)
    for path in sorted(all_paths, key=len):  # parents before children
        parent_path = _repeat_parent(path, all_paths)
        parent = (catalog.tables[("repeat", f"{xmlns}#{parent_path}")].name if parent_path
                  else form_info.name)
        last = readable(path.rsplit("/", 1)[-1]) or "repeat"
        info = catalog.table("repeat", f"{xmlns}#{path}", readable_as=f"{parent}__{last}",
                             parent=parent)
        entries = items_by_path.get(path, [])
        rel = len(path) + 1
        paths: dict[str, None] = {}
        for _, item in entries:
            paths.update(dict.fromkeys(item.values))
        placed = catalog.columns(info, "form_question", xmlns, (
            (p, path_identifier_base(p[rel:].split("/")) if p.startswith(path + "/")
             else readable(p.rsplit("/", 1)[-1])) for p in paths))
        records = [((domain, form_id, item.key, item.parent_key, item.position), _cleaned(item))
                   for form_id, item in entries]
        writes += table_writes(info, form_ids, "form_id", [c for c, _ in REPEAT_FIXED],
                               records, placed, clean=False)
    return writes


# --- typed views and labels -----------------------------------------------------------------

def refresh_typed_views(catalog: Catalog, tables: Iterable[str] | None = None,
                        recount: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Bring `<table>_typed` up to date for `tables` (None: every table with typed columns):
    the table's columns, date and number questions cast. A view is replaced only when its
    columns differ (views only gain columns, so `create or replace` keeps views of the
    analysts' own built on it); `recount` columns, whose type changed, are counted afresh.
    Returns warnings for the operator (views left as they were)."""
    warnings: list[str] = []
    try:
        _refresh(catalog, tables, recount, warnings)
    except BaseException:
        catalog.table_names = None  # names allocated in the rolled-back transaction
        raise
    return warnings


def _refresh(catalog: Catalog, tables: Iterable[str] | None, recount: Iterable[tuple[str, str]],
             warnings: list[str]) -> None:
    conn, schema = catalog.conn, catalog.schema
    with conn.transaction():
        ddl_lock(conn, schema)  # another run may be refreshing the same view
        catalog.load()
        wanted = set(catalog.typed) if tables is None else set(tables) | {t for t, _ in recount}
        for table in sorted(wanted):
            casts = catalog.typed.get(table)
            columns = _columns_of(conn, schema, table)
            if not casts or not columns:
                continue
            view = catalog.views.get(table) or _allocate_view(catalog, table)
            want = [(c, CAST_TYPES[casts[c]] if c in casts else t) for c, t in columns]
            if _columns_of(conn, schema, view) == want:
                continue
            problem = _replace_view(catalog, table, view, [c for c, _ in columns], casts)
            if problem:
                warnings.append(problem)
        for table, column in sorted(set(recount)):
            func = catalog.typed.get(table, {}).get(column)
            if func is None:
                continue
            count = conn.execute(sql.SQL(
                "select count(*) from {} where nullif(btrim({}), '') is not null "
                "and {}.{}({}) is null").format(
                catalog.t(table), sql.Identifier(column), sql.Identifier(schema),
                sql.Identifier(func), sql.Identifier(column))).fetchone()[0]
            conn.execute(sql.SQL("update {} set unparsed_values = %s where table_name = %s "
                                 "and column_name = %s").format(catalog.t("catalog_columns")),
                         (count, table, column))
            if count:
                catalog.unparsed_run[(table, column)] = count


def _columns_of(conn: psycopg.Connection, schema: str, relation: str) -> list[tuple[str, str]]:
    return [tuple(r) for r in conn.execute(
        "select column_name, data_type from information_schema.columns where table_schema = %s "
        "and table_name = %s order by ordinal_position", (schema, relation))]


def _allocate_view(catalog: Catalog, table: str) -> str:
    """The view's name comes from the same allocator as the tables': it never takes a name a
    table has (a form named '… typed'), nor the reverse."""
    preferred = identifier(f"{table}_typed")
    if catalog.relations.get(preferred) == "v" and preferred not in catalog.table_names.owner:
        view = preferred  # made by a version that did not catalogue its views: adopt it
        catalog.table_names.reserved.discard(view)
        catalog.table_names.owner[view] = f"{TYPED_VIEW}:{table}"
        catalog.table_names.by_name[f"{TYPED_VIEW}:{table}"] = view
    else:
        view = catalog.table_names.allocate(f"{TYPED_VIEW}:{table}",
                                            readable_as=f"{table}_typed")
    catalog.conn.execute(sql.SQL(
        "insert into {} (table_name, source_kind, source_name, parent_table, label) "
        "values (%s, %s, %s, %s, %s)").format(catalog.t("catalog_tables")),
        (view, TYPED_VIEW, table, table, None))
    catalog.views[table] = view
    return view


def _replace_view(catalog: Catalog, table: str, view: str, columns: list[str],
                  casts: dict[str, str]) -> str | None:
    conn, schema = catalog.conn, catalog.schema
    s = sql.Identifier(schema)
    select = sql.SQL(", ").join(
        sql.SQL("{}.{}({}) as {}").format(s, sql.Identifier(casts[c]), sql.Identifier(c),
                                           sql.Identifier(c)) if c in casts
        else sql.Identifier(c) for c in columns)
    create = sql.SQL("create or replace view {} as select {} from {}").format(
        catalog.t(view), select, catalog.t(table))
    comments = [sql.SQL("comment on view {} is {}").format(catalog.t(view), sql.Literal(
        f"{table} with date and number questions typed; values that do not parse are NULL "
        f"here (counted in catalog_columns.unparsed_values)"))]
    comments += [sql.SQL("comment on column {}.{} is {}").format(
        catalog.t(view), sql.Identifier(column), sql.Literal(comment))
        for column, comment in conn.execute(
            "select a.attname, col_description(a.attrelid, a.attnum) from pg_attribute a "
            "where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped "
            "and col_description(a.attrelid, a.attnum) is not null",
            (f'"{schema}"."{table}"',))]
    try:
        if guarded_ddl(conn, [create, *comments], catalog.lock_timeout):
            return None
        return (f"view {view} is in use (a BI user's open transaction): it is brought up to "
                f"date on a later run")
    except psycopg.errors.InvalidTableDefinition:
        pass  # a column changed type (a question became a date): only drop + create can do it
    dependents = conn.execute(
        "select count(*) from pg_depend d join pg_rewrite r on r.oid = d.objid "
        "where d.refobjid = %s::regclass and r.ev_class <> d.refobjid",
        (f'"{schema}"."{view}"',)).fetchone()[0]
    if dependents:
        return (f"view {view} is left as it was: {dependents} view(s) of your own are built on "
                f"it and a column of it changed type; drop them (or cast in them) and the next "
                f"run rebuilds {view}")
    drop = sql.SQL("drop view if exists {}").format(catalog.t(view))
    if guarded_ddl(conn, [drop, create, *comments], catalog.lock_timeout):
        return None
    return f"view {view} is in use (a BI user's open transaction): it is rebuilt on a later run"


def dictionary_sql(schema: str) -> sql.Composed:
    """The apps' data dictionary, one row per (source_kind, source_name, path): the label and
    type of each form question, and of each case property — from the question that saves to
    it where the app document says (app_case_property_questions), otherwise from a question of
    the same name in a form of a module of that case type (HQ's API does not say which
    question saves which property; CommCare's form builder names them alike by default)."""
    return sql.SQL("""
        select 'form_question', xmlns, path, label, type from (
            select distinct on (xmlns, path) xmlns, path, label, type from {s}.app_questions
            order by xmlns, path, app_id) q
        union all
        select 'case_property', case_type, property, label, type from (
            select distinct on (case_type, property) case_type, property, label, type from (
                select p.case_type, p.property, q.label, q.type, 0 as rank, a.version,
                       p.app_id, q.position
                from {s}.app_case_property_questions p
                join {s}.app_questions q on q.domain = p.domain and q.app_id = p.app_id
                 and q.xmlns = p.xmlns and q.path = p.question_path
                join {s}.apps a on a.domain = p.domain and a.app_id = p.app_id
                union all
                select m.case_type, regexp_replace(q.path, '^.*/', ''), q.label, q.type, 1,
                       a.version, q.app_id, q.position
                from {s}.app_questions q
                join {s}.app_forms f on f.domain = q.domain and f.app_id = q.app_id
                 and f.xmlns = q.xmlns
                join {s}.app_modules m on m.domain = f.domain and m.app_id = f.app_id
                 and m.module_id = f.module_id
                join {s}.apps a on a.domain = q.domain and a.app_id = q.app_id
                where m.case_type is not null and m.case_type <> ''
                  and coalesce(q.type, '') not in ('Group', 'Repeat', 'FieldList', 'Trigger')
            ) candidates
            order by case_type, property, rank, version desc nulls last, app_id, position) c
    """).format(s=sql.Identifier(schema))


def apply_app_labels(conn: psycopg.Connection, schema: str) -> list[tuple[str, str]]:
    """Copy labels and types from the apps' data dictionary into the catalog and the column
    comments, for form questions and case properties alike. Returns the (table, column) whose
    type changed: their typed views and counts follow."""
    s = sql.Identifier(schema)
    changed = conn.execute(sql.SQL("""
        update {s}.catalog_columns c set label = q.label, data_type = q.type
        from ({dictionary}) q (source_kind, source_name, path, label, type),
             {s}.catalog_columns old
        where c.source_kind = q.source_kind and c.source_name = q.source_name
          and c.original_path = q.path
          and old.table_name = c.table_name and old.column_name = c.column_name
          and (c.label is distinct from q.label or c.data_type is distinct from q.type)
        returning c.table_name, c.column_name, c.original_path, c.label,
                  old.data_type is distinct from q.type
    """).format(s=s, dictionary=dictionary_sql(schema))).fetchall()
    for table, column, path, label, _ in changed:
        conn.execute(sql.SQL("comment on column {}.{}.{} is {}").format(
            s, sql.Identifier(table), sql.Identifier(column),
            sql.Literal(column_comment(path, label))))
    return [(table, column) for table, column, _, _, retyped in changed if retyped]
