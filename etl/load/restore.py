"""OTA restore tables: apply a worker's restore blocks, in order, to that worker's caseload.

CaseXML v2: `create` sets type, name and owner; `update` sets properties (and those base
fields when there is no `create`); `index` sets indices, an empty one removes it; `close`
closes. A page's blocks are merged per case in document order, then applied to what the table
holds in one statement per table. A full restore (no token, or after a 412) replaces the
worker's caseload: cases it did not hold are removed from `restore_cases` once it was read to
the end. Fixtures are replaced with each restore; item-list lookup tables also land in one
flat table each (`fixture_<tag>`, a column per field, through the BI catalog).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psycopg import sql
from psycopg.types.json import Jsonb

from etl.dates import parse_hq_datetime
from etl.load import bi
from etl.transform import Batch

if TYPE_CHECKING:
    from etl.load.postgres import Loader

BASE_FIELDS = {"case_type": "case_type", "case_name": "case_name", "owner_id": "owner_id",
               "external_id": "external_id", "date_opened": "date_opened"}
CASE_COLUMNS = ("domain", "worker", "case_id", "case_type", "case_name", "owner_id",
                "external_id", "date_opened", "closed", "user_id", "date_modified", "properties")
SEEN = "_restore_seen"


def transform_restore(record: dict, domain: str, batch: Batch) -> None:
    if record.get("kind") == "case" and not record.get("case_id"):
        raise ValueError("case block without case_id")
    batch.add("restore_blocks", (record,))


def write_restore(loader: "Loader", domain: str, batch: Batch, _: Any) -> None:
    conn, t = loader.conn, loader._table
    cases: dict[str, dict] = {}
    indices: dict[tuple[str, str], dict] = {}
    worker = None
    for (block,) in batch.rows.get("restore_blocks", []):
        kind, worker = block["kind"], block["worker"]
        if kind == "begin":
            conn.execute(sql.SQL("create temp table if not exists {} (case_id text primary key)")
                         .format(sql.Identifier(SEEN)))
            conn.execute(sql.SQL("truncate {}").format(sql.Identifier(SEEN)))
            conn.execute(sql.SQL("delete from {} where domain = %s and worker = %s").format(
                t("restore_fixtures")), (domain, worker))
        elif kind == "registration":
            conn.execute(sql.SQL("""
                insert into {} (domain, worker, user_id, username, date_joined, user_data)
                values (%s, %s, %s, %s, %s, %s)
                on conflict (domain, worker) do update set user_id = excluded.user_id,
                    username = excluded.username, date_joined = excluded.date_joined,
                    user_data = excluded.user_data, synced_at = now()""").format(
                t("restore_users")), (domain, worker, block.get("uuid"), block.get("username"),
                                      block.get("date"), Jsonb(block.get("user_data") or {})))
        elif kind == "fixture":
            _fixture(loader, domain, worker, block, batch)
        elif kind == "case":
            _merge(cases, indices, block)
        elif kind == "end":
            _flush(loader, domain, worker, cases, indices)
            cases, indices = {}, {}
            if block["full"]:
                _replace_caseload(loader, domain, worker)
    if worker is not None:
        _flush(loader, domain, worker, cases, indices)


def _merge(cases: dict, indices: dict, block: dict) -> None:
    case_id = block["case_id"]
    case = cases.setdefault(case_id, {"fields": {}, "properties": {}, "closed": False,
                                      "user_id": None, "date_modified": None})
    for name, value in (block.get("create") or {}).items():
        if name in BASE_FIELDS:
            case["fields"][name] = value
    for name, value in block.get("update", {}).items():
        if name in BASE_FIELDS:
            case["fields"][name] = value
        else:
            case["properties"][name] = value
    case["closed"] = block["close"]  # a block without <close/> is of an open case
    case["user_id"] = block.get("user_id") or case["user_id"]
    case["date_modified"] = block.get("date_modified") or case["date_modified"]
    for identifier, index in block.get("index", {}).items():
        indices[(case_id, identifier)] = index


def _flush(loader: "Loader", domain: str, worker: str, cases: dict, indices: dict) -> None:
    if not cases and not indices:
        return
    conn, t = loader.conn, loader._table
    stage = sql.Identifier("_stage_restore_cases")
    conn.execute(sql.SQL("create temp table if not exists {} (like {} including defaults) "
                         "on commit delete rows")
                 .format(stage, t("restore_cases")))
    with conn.cursor().copy(sql.SQL("copy {} ({}) from stdin").format(
            stage, sql.SQL(", ").join(map(sql.Identifier, CASE_COLUMNS)))) as copy:
        for case_id, case in cases.items():
            f = case["fields"]
            copy.write_row((domain, worker, case_id, f.get("case_type"), f.get("case_name"),
                            f.get("owner_id"), f.get("external_id"), f.get("date_opened"),
                            case["closed"], case["user_id"],
                            parse_hq_datetime(case["date_modified"]),
                            Jsonb(case["properties"])))
    given = [sql.SQL("{0} = coalesce(excluded.{0}, t.{0})").format(sql.Identifier(c))
             for c in ("case_type", "case_name", "owner_id", "external_id", "date_opened",
                       "user_id", "date_modified")]
    conn.execute(sql.SQL("""
        insert into {table} as t ({cols}) select {cols} from {stage}
        on conflict (domain, worker, case_id) do update set {given},
            closed = excluded.closed, properties = t.properties || excluded.properties,
            synced_at = now()""").format(
        table=t("restore_cases"), cols=sql.SQL(", ").join(map(sql.Identifier, CASE_COLUMNS)),
        stage=stage, given=sql.SQL(", ").join(given)))
    conn.execute(sql.SQL("insert into {} select case_id from {} on conflict do nothing").format(
        sql.Identifier(SEEN), stage))
    gone = [(domain, worker, c, i) for (c, i), index in indices.items() if not index["case_id"]]
    kept = [(domain, worker, c, i, index["case_id"], index["case_type"], index["relationship"])
            for (c, i), index in indices.items() if index["case_id"]]
    with conn.cursor() as cur:
        if gone:
            cur.executemany(sql.SQL(
                "delete from {} where domain = %s and worker = %s and case_id = %s "
                "and identifier = %s").format(t("restore_case_indices")), gone)
        if kept:
            cur.executemany(sql.SQL("""
                insert into {} (domain, worker, case_id, identifier, referenced_id,
                                referenced_type, relationship)
                values (%s, %s, %s, %s, %s, %s, %s)
                on conflict (domain, worker, case_id, identifier) do update set
                    referenced_id = excluded.referenced_id,
                    referenced_type = excluded.referenced_type,
                    relationship = excluded.relationship""").format(
                t("restore_case_indices")), kept)


def _replace_caseload(loader: "Loader", domain: str, worker: str) -> None:
    """A full restore was read whole: the worker's phone holds exactly its cases now."""
    conn, t = loader.conn, loader._table
    seen = sql.Identifier(SEEN)
    for table in ("restore_case_indices", "restore_cases"):
        conn.execute(sql.SQL("""
            delete from {} r where r.domain = %s and r.worker = %s
              and not exists (select 1 from {} s where s.case_id = r.case_id)""").format(
            t(table), seen), (domain, worker))


def _fixture(loader: "Loader", domain: str, worker: str, block: dict, batch: Batch) -> None:
    conn, t = loader.conn, loader._table
    fixture_id = block.get("id") or ""
    items = block.get("items") or []
    with conn.cursor() as cur:
        cur.executemany(sql.SQL(
            "insert into {} (domain, worker, fixture_id, position, item_type, item) "
            "values (%s, %s, %s, %s, %s, %s) on conflict do nothing").format(
            t("restore_fixtures")),
            [(domain, worker, fixture_id, n, item["tag"], Jsonb(item["value"]))
             for n, item in enumerate(items)])
    if not fixture_id.startswith("item-list:"):
        return
    tag = fixture_id.split(":", 1)[1]
    catalog = loader.catalog
    catalog.ensure_loaded()
    info = catalog.table("fixture", tag, readable_as=f"fixture_{tag}",
                         label=f"lookup table {tag} (OTA restore)")
    fields: dict[str, None] = {}
    values = []
    for item in items:
        value = item["value"] if isinstance(item["value"], dict) else {"value": item["value"]}
        flat = {k: v if isinstance(v, str) else None for k, v in value.items()}
        fields.update(dict.fromkeys(flat))
        values.append(flat)
    placed = catalog.columns(info, "fixture_field", tag, ((f, f.lstrip("@")) for f in fields))
    rows = [((domain, worker, n), v) for n, v in enumerate(values)]
    bi.apply_writes(catalog, domain, bi.table_writes(
        info, [worker], "worker", ["domain", "worker", "position"], rows, placed), batch.rejects)
