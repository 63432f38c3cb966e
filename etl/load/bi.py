"""BI tables: one per case type, one per form (xmlns), one per repeat group; real columns.

Runs inside the page's transaction, right after the base upsert, for exactly the records whose
base row was written (`_won_<table>`), so the BI tables never disagree with `cases`/`forms`.
Every generated table and column is recorded in the catalog under its original name; names are
allocated once and never change. New properties and questions add columns as they appear.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

import psycopg
from psycopg import sql

from etl import jsonutil
from etl.transform import Batch
from etl.transform.cases import SPECIAL_PROPERTIES
from etl.transform.flatten import Item, as_text, case_actions, flatten_form
from etl.transform.naming import NameAllocator, identifier, path_identifier_base, readable

log = logging.getLogger(__name__)

# Columns per table are capped below PostgreSQL's 1,600; what does not fit stays in the jsonb.
MAX_COLUMNS = 1500
BASE_TABLES = frozenset({
    "cases", "case_indices", "forms", "sync_checkpoints", "dead_letters", "sync_runs",
    "catalog_tables", "catalog_columns", "form_case_actions", "apps", "app_modules",
    "app_case_properties", "app_forms", "app_questions", "alembic_version",
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
KEYS = {"case_type": ("domain", "case_id"), "form": ("domain", "form_id"),
        "repeat": ("domain", "form_id", "row_key")}
FIXED = {"case_type": CASE_FIXED, "form": FORM_FIXED, "repeat": REPEAT_FIXED}
TYPED_QUESTIONS = {"Int": "try_numeric", "Decimal": "try_numeric", "Double": "try_numeric",
                   "Long": "try_numeric", "Date": "try_date", "DateTime": "try_timestamptz"}


def ddl_lock(conn: psycopg.Connection, schema: str) -> None:
    """Hold, until the transaction ends, the lock every schema change in `schema` takes."""
    conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"commcare-etl:ddl:{schema}",))


@dataclass
class TableInfo:
    name: str
    key: tuple[str, str]  # (source kind, source name)
    columns: NameAllocator  # column -> original path
    column_count: int


@dataclass
class Catalog:
    """The catalog for one connection; reloaded whenever it may be stale."""

    conn: psycopg.Connection
    schema: str
    tables: dict[tuple[str, str], TableInfo] = field(default_factory=dict)
    table_names: NameAllocator | None = None
    labels: dict[tuple[str, str], tuple[str | None, str | None]] = field(default_factory=dict)
    form_names: dict[str, str] = field(default_factory=dict)
    locked: bool = False

    def t(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    def load(self) -> None:
        self.tables.clear()
        owners = {}
        rows = self.conn.execute(sql.SQL(
            "select table_name, source_kind, source_name from {}").format(
            self.t("catalog_tables"))).fetchall()
        columns: dict[str, dict[str, str]] = defaultdict(dict)
        for table, column, path in self.conn.execute(sql.SQL(
                "select table_name, column_name, original_path from {}").format(
                self.t("catalog_columns"))):
            columns[table][column] = path
        for table, kind, source in rows:
            owners[table] = f"{kind}:{source}"
            fixed = {name for name, _ in FIXED[kind]} | {"deleted", "synced_at"}
            self.tables[(kind, source)] = TableInfo(
                table, (kind, source), NameAllocator(columns[table], reserved=fixed),
                len(columns[table]) + len(fixed))
        self.table_names = NameAllocator(owners, reserved=set(BASE_TABLES))
        self.labels = {
            (xmlns, path): (label, qtype) for xmlns, path, label, qtype in self.conn.execute(
                sql.SQL("select distinct on (xmlns, path) xmlns, path, label, type from {} "
                        "order by xmlns, path, app_id").format(self.t("app_questions")))}
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
        if not committed:  # names allocated in a rolled-back transaction do not exist
            self.table_names = None

    def ensure_loaded(self) -> None:
        if self.table_names is None:
            self.load()

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
        name = self.table_names.allocate(f"{kind}:{source}", prefix, readable_as=readable_as)
        fixed = FIXED[kind]
        defs = [sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in fixed]
        defs += [sql.SQL("deleted boolean not null default false"),
                 sql.SQL("synced_at timestamptz not null default now()"),
                 sql.SQL("primary key ({})").format(
                     sql.SQL(", ").join(map(sql.Identifier, KEYS[kind])))]
        self.conn.execute(sql.SQL("create table {} ({})").format(
            self.t(name), sql.SQL(", ").join(defs)))
        self.conn.execute(sql.SQL(
            "insert into {} (table_name, source_kind, source_name, parent_table, label) "
            "values (%s, %s, %s, %s, %s)").format(self.t("catalog_tables")),
            (name, kind, source, parent, label))
        comment = f"{kind.replace('_', ' ')} {source!r}" + (f": {label}" if label else "")
        self.conn.execute(sql.SQL("comment on table {} is {}").format(
            self.t(name), sql.Literal(comment)))
        reserved = {c for c, _ in fixed} | {"deleted", "synced_at"}
        info = TableInfo(name, (kind, source), NameAllocator(reserved=reserved), len(reserved))
        self.tables[(kind, source)] = info
        return info

    def columns(self, info: TableInfo, source_kind: str, source_name: str,
                paths: Iterable[tuple[str, str]], relative_to: str = "") -> dict[str, str | None]:
        """Map each original path to its column, adding the missing columns (None when full)."""
        result: dict[str, str | None] = {}
        missing = []
        for path, shown in paths:
            column = info.columns.by_name.get(path)
            if column is None:
                missing.append((path, shown))
            result[path] = column
        if not missing:
            return result
        self.lock()
        info = self.tables[info.key]  # the reload under the lock made fresh objects
        for path, shown in missing:
            column = info.columns.by_name.get(path)  # another process may have added it
            if column is None:
                if info.column_count >= MAX_COLUMNS:
                    log.warning("table %s has %d columns: %r stays in the jsonb only",
                                info.name, info.column_count, path)
                    result[path] = None
                    continue
                column = info.columns.allocate(path, readable_as=shown)
                label, qtype = self.labels.get((source_name, path), (None, None))
                self.conn.execute(sql.SQL("alter table {} add column {} text").format(
                    self.t(info.name), sql.Identifier(column)))
                self.conn.execute(sql.SQL(
                    "insert into {} (table_name, column_name, source_kind, source_name, "
                    "original_path, label, data_type) values (%s, %s, %s, %s, %s, %s, %s)").format(
                    self.t("catalog_columns")),
                    (info.name, column, source_kind, source_name, path, label, qtype))
                self.conn.execute(sql.SQL("comment on column {}.{} is {}").format(
                    self.t(info.name), sql.Identifier(column),
                    sql.Literal(column_comment(path, label))))
                info.column_count += 1
            result[path] = column
        return result


def _text(value: object) -> str | None:
    return value if type(value) is str else as_text(value)  # the common case, fast


def column_comment(path: str, label: str | None) -> str:
    return f"{label} ({path})" if label else path


def _won_ids(conn: psycopg.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(sql.SQL("select * from {}").format(
        sql.Identifier(f"_won_{table}")))}


@dataclass
class _Write:
    """Rows to put in a table in place of what it holds for `ids`."""

    table: str
    ids: list[str]
    columns: list[str]
    rows: list[tuple]
    id_column: str


def _apply(catalog: Catalog, domain: str, writes: list[_Write]) -> None:
    """Write only once every table and column the page needs exists. A transaction then never
    holds row locks on a BI table while it waits for the DDL lock, and the holder of that lock
    never waits to ALTER a table such a transaction has written: no deadlock between runs."""
    conn = catalog.conn
    for write in writes:
        conn.execute(sql.SQL("delete from {} where domain = %s and {} = any(%s)").format(
            catalog.t(write.table), sql.Identifier(write.id_column)), (domain, write.ids))
        if not write.rows:
            continue
        with conn.cursor().copy(sql.SQL("copy {} ({}) from stdin").format(
                catalog.t(write.table),
                sql.SQL(", ").join(map(sql.Identifier, write.columns)))) as copy:
            for row in write.rows:
                copy.write_row(row)


def _newest(rows: list[tuple], id_index: int, version_index: int) -> dict[str, tuple]:
    """One row per id: the one with the latest version, as the base upsert chose."""
    newest: dict[str, tuple] = {}
    for row in rows:
        current = newest.get(row[id_index])
        if current is None or _version(row[version_index]) >= _version(current[version_index]):
            newest[row[id_index]] = row
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
    new_types = {row[1]: row[2] for row in rows}
    for case_id, old_type in conn.execute(sql.SQL(
            "select case_id, case_type from {}.cases where domain = %s and case_id = any(%s)"
    ).format(sql.Identifier(schema)), (domain, list(new_types))):
        if old_type and old_type != new_types.get(case_id):
            changed[case_id] = old_type
    return changed


def load_case_tables(catalog: Catalog, domain: str, batch: Batch,
                     old_types: dict[str, str]) -> None:
    won = _won_ids(catalog.conn, "cases")
    if not won:
        return
    writes = []
    for case_id, old_type in old_types.items():
        info = catalog.tables.get(("case_type", old_type))
        if case_id in won and info:
            writes.append(_Write(info.name, [case_id], [], [], "case_id"))
    rows = _newest([r for r in batch.rows.get("cases", []) if r[1] in won], 1, 15)
    indices: dict[str, dict[str, str | None]] = defaultdict(dict)
    for row in batch.rows.get("case_indices", []):
        if row[1] in rows:
            indices[row[1]][row[2]] = row[3]
    by_type: dict[str, list[tuple]] = defaultdict(list)
    for row in rows.values():
        if row[2]:
            by_type[row[2]].append(row)
    fixed_columns = [c for c, _ in CASE_FIXED]
    for case_type, type_rows in by_type.items():
        info = catalog.table("case_type", case_type, readable_as=case_type, prefix="case_")
        props: dict[str, None] = {}
        idents: dict[str, None] = {}
        for row in type_rows:
            props.update(dict.fromkeys(k for k in batch.sources[row[1]] if k not in SPECIAL_PROPERTIES))
            idents.update(dict.fromkeys(indices.get(row[1], ())))
        prop_columns = catalog.columns(info, "case_property", case_type,
                                       ((p, p) for p in props))
        index_columns = catalog.columns(info, "case_index", case_type,
                                        ((f"index/{i}", f"index_{i}") for i in idents))
        dynamic = [(p, c) for p, c in prop_columns.items() if c]
        links = [(i, index_columns[f"index/{i}"]) for i in idents if index_columns[f"index/{i}"]]
        columns = fixed_columns + [c for _, c in dynamic] + [c for _, c in links]
        out = []
        for row in type_rows:
            properties = batch.sources[row[1]]
            case_links = indices.get(row[1], {})
            out.append(row[:16] + (row[17],)
                       + tuple(_text(properties.get(p)) for p, _ in dynamic)
                       + tuple(case_links.get(i) for i, _ in links))
        writes.append(_Write(info.name, [r[1] for r in type_rows], columns, out, "case_id"))
    _apply(catalog, domain, writes)


# --- forms ---------------------------------------------------------------------------------

def _repeat_parent(path: str, repeat_paths: Iterable[str]) -> str | None:
    best = None
    for other in repeat_paths:
        if path.startswith(other + "/") and (best is None or len(other) > len(best)):
            best = other
    return best


def load_form_tables(catalog: Catalog, schema: str, domain: str, batch: Batch) -> None:
    won = _won_ids(catalog.conn, "forms")
    if not won:
        return
    catalog.ensure_loaded()
    rows = _newest([r for r in batch.rows.get("forms", []) if r[1] in won], 1, 8)
    won_ids = list(rows)
    catalog.conn.execute(sql.SQL(
        "delete from {}.form_case_actions where domain = %s and form_id = any(%s)").format(
        sql.Identifier(schema)), (domain, won_ids))
    actions = []
    writes: list[_Write] = []
    by_xmlns: dict[str, list[tuple]] = defaultdict(list)
    for form_id, row in rows.items():
        by_xmlns[row[2] or "(no xmlns)"].append(row)
    for xmlns, form_rows in by_xmlns.items():
        catalogued = _catalogued_repeats(catalog, xmlns)
        known_repeats = catalogued | {path for (x, path), (_, qtype) in catalog.labels.items()
                                      if x == xmlns and qtype == "Repeat"}
        flats = {}
        for row in form_rows:
            record = batch.sources[row[1]]
            flat = flatten_form(record.get("form") or {}, known_repeats)
            flats[row[1]] = flat
            for position, action, case_id, case_type, props, modified in case_actions(flat.case_blocks):
                actions.append((domain, row[1], position, action, case_id, case_type,
                                jsonutil.dumps(props), modified or None))
        name = (catalog.form_names.get(xmlns) or form_rows[0][3]
                or xmlns.rstrip("/").rsplit("/", 1)[-1])
        info = catalog.table("form", xmlns, readable_as=name, prefix="form_", label=name)
        form_ids = [row[1] for row in form_rows]
        writes.append(_form_rows(catalog, info, xmlns, form_rows, form_ids, flats))
        writes += _repeat_rows(catalog, info, xmlns, domain, flats, form_ids)
    _apply(catalog, domain, writes)
    if actions:
        with catalog.conn.cursor().copy(sql.SQL(
                "copy {}.form_case_actions (domain, form_id, block, action, case_id, case_type, "
                "properties, date_modified) from stdin").format(sql.Identifier(schema))) as copy:
            for action_row in actions:
                copy.write_row(action_row)


def _catalogued_repeats(catalog: Catalog, xmlns: str) -> set[str]:
    """The repeat paths of this form that already have a table."""
    return {source.split("#", 1)[1] for (kind, source) in catalog.tables
            if kind == "repeat" and source.startswith(xmlns + "#")}


def _form_rows(catalog: Catalog, info: TableInfo, xmlns: str, form_rows: list[tuple],
               form_ids: list[str], flats: dict) -> _Write:
    paths: dict[str, None] = {}
    for flat in flats.values():
        paths.update(dict.fromkeys(flat.root.values))
    colmap = catalog.columns(info, "form_question", xmlns,
                             ((p, path_identifier_base(p.split("/"))) for p in paths))
    dynamic = [(p, c) for p, c in colmap.items() if c]
    columns = [c for c, _ in FORM_FIXED] + [c for _, c in dynamic]
    out = [row[:14] + tuple(flats[row[1]].root.values.get(p) for p, _ in dynamic)
           for row in form_rows]
    return _Write(info.name, form_ids, columns, out, "form_id")


def _repeat_rows(catalog: Catalog, form_info: TableInfo, xmlns: str, domain: str,
                 flats: dict, form_ids: list[str]) -> list[_Write]:
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
        colmap = catalog.columns(info, "form_question", xmlns, (
            (p, path_identifier_base(p[rel:].split("/")) if p.startswith(path + "/")
             else readable(p.rsplit("/", 1)[-1])) for p in paths))
        dynamic = [(p, c) for p, c in colmap.items() if c]
        columns = [c for c, _ in REPEAT_FIXED] + [c for _, c in dynamic]
        out = [(domain, form_id, item.key, item.parent_key, item.position)
               + tuple(item.values.get(p) for p, _ in dynamic) for form_id, item in entries]
        writes.append(_Write(info.name, form_ids, columns, out, "form_id"))
    return writes


# --- typed views and labels -----------------------------------------------------------------

def refresh_typed_views(conn: psycopg.Connection, schema: str) -> dict[str, int]:
    """(Re)create `<table>_typed` for every table with date or number questions; count the
    values that do not parse. Returns {table.column: unparsed count} for columns with any."""
    s = sql.Identifier(schema)
    typed = conn.execute(sql.SQL(
        "select table_name, column_name, data_type from {}.catalog_columns "
        "where data_type = any(%s) order by table_name").format(s),
        (list(TYPED_QUESTIONS),)).fetchall()
    by_table: dict[str, dict[str, str]] = defaultdict(dict)
    for table, column, qtype in typed:
        by_table[table][column] = TYPED_QUESTIONS[qtype]
    problems = {}
    for table, casts in by_table.items():
        columns = [r[0] for r in conn.execute(
            "select column_name from information_schema.columns where table_schema = %s "
            "and table_name = %s order by ordinal_position", (schema, table))]
        if not columns:
            continue
        select = sql.SQL(", ").join(
            sql.SQL("{}.{}({}) as {}").format(s, sql.Identifier(casts[c]), sql.Identifier(c),
                                               sql.Identifier(c)) if c in casts
            else sql.Identifier(c) for c in columns)
        view = identifier(f"{table}_typed")
        with conn.transaction():
            ddl_lock(conn, schema)  # another run may be refreshing the same view
            conn.execute(sql.SQL("drop view if exists {}.{}").format(s, sql.Identifier(view)))
            conn.execute(sql.SQL("create view {}.{} as select {} from {}.{}").format(
                s, sql.Identifier(view), select, s, sql.Identifier(table)))
            conn.execute(sql.SQL("comment on view {}.{} is {}").format(
                s, sql.Identifier(view), sql.Literal(
                    f"{table} with date and number questions typed; values that do not parse "
                    f"are NULL here (counted in catalog_columns.unparsed_values)")))
            for column, func in casts.items():
                if column not in columns:
                    continue
                count = conn.execute(sql.SQL(
                    "select count(*) from {}.{} where nullif(btrim({}), '') is not null "
                    "and {}.{}({}) is null").format(
                    s, sql.Identifier(table), sql.Identifier(column), s, sql.Identifier(func),
                    sql.Identifier(column))).fetchone()[0]
                conn.execute(sql.SQL(
                    "update {}.catalog_columns set unparsed_values = %s "
                    "where table_name = %s and column_name = %s").format(s),
                    (count, table, column))
                if count:
                    problems[f"{table}.{column}"] = count
    return problems


def apply_app_labels(conn: psycopg.Connection, schema: str) -> int:
    """Copy question labels and types from the apps into the catalog and the column comments."""
    s = sql.Identifier(schema)
    changed = conn.execute(sql.SQL("""
        update {s}.catalog_columns c set label = q.label, data_type = q.type
        from (select distinct on (xmlns, path) xmlns, path, label, type from {s}.app_questions
              order by xmlns, path, app_id) q
        where c.source_kind = 'form_question' and c.source_name = q.xmlns
          and c.original_path = q.path
          and (c.label is distinct from q.label or c.data_type is distinct from q.type)
        returning c.table_name, c.column_name, c.original_path, c.label
    """).format(s=s)).fetchall()
    for table, column, path, label in changed:
        conn.execute(sql.SQL("comment on column {}.{}.{} is {}").format(
            s, sql.Identifier(table), sql.Identifier(column),
            sql.Literal(column_comment(path, label))))
    return len(changed)
