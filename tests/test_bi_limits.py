"""BI tables at PostgreSQL's limits, and next to BI users: wide forms and case types (8 KB rows,
1,600 columns), schema changes behind a dashboard's open transaction, analysts' own views, and
names that collide with the typed views."""

from __future__ import annotations

import copy
import logging
import threading
import uuid

import psycopg

from etl.load import bi
from etl.sync import run_sync
from tests.conftest import make_settings
from tests.matching import assert_forms_match, follow_up_forms

WIDE = 2000


def _now(sim) -> str:
    return sim.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _wide_form(sim, n: int, xmlns: str = "http://example.org/wide") -> tuple[str, dict]:
    template = next(iter(sim.snapshot("demo", "form").values()))
    doc = copy.deepcopy(template)
    doc.pop("resource_uri", None)
    doc["indexed_on"] = _now(sim)
    doc["id"] = str(uuid.uuid4())
    doc["form"] = {"@xmlns": xmlns, "@name": "Very wide survey", "meta": template["form"]["meta"],
                   **{f"d{i:04d}": "2024-05-01" for i in range(n)}}
    return sim.add_record("demo", "form", doc), doc


def _wide_case(sim, n: int) -> tuple[str, dict]:
    template = next(iter(sim.snapshot("demo", "case").values()))
    doc = copy.deepcopy(template)
    doc.pop("resource_uri", None)
    doc["indexed_on"] = _now(sim)
    doc["id"] = doc["case_id"] = str(uuid.uuid4())
    doc["indices"] = {}
    doc["properties"] = {"case_type": "survey_wide", "case_name": "wide one",
                         **{f"p{i:04d}": f"v{i}" for i in range(n)}}
    return sim.add_record("demo", "case", doc), doc


def _value(db, schema: str, table: str, column: str, key: str, id_: str):
    row = db.execute(f'select "{column}" from "{schema}"."{table}" where {key} = %s',
                     (id_,)).fetchone()
    return row[0] if row else None


def test_a_form_and_a_case_type_of_any_width_load_with_every_value_reachable(
        sim_factory, schema, pg_url, warehouse, db):
    sim = sim_factory(n_cases=20)
    form_id, _ = _wide_form(sim, WIDE)
    case_id, case = _wide_case(sim, WIDE)
    sim.add_forms("demo", 27)  # the rest of the page must load too
    settings = make_settings(sim.base_url, schema, pg_url)
    reports = run_sync(settings, warehouse)
    assert all(r.status == "ok" for r in reports), [r.error for r in reports]
    assert db.execute(f'select count(*) from "{schema}".dead_letters').fetchone()[0] == 0
    assert_forms_match(db, schema, sim)
    placed = {(kind, path): (table, column) for kind, table, column, path in db.execute(
        f'select source_kind, table_name, column_name, original_path from "{schema}".catalog_columns '
        f"where source_name in ('http://example.org/wide', 'survey_wide')")}
    assert len(placed) >= 2 * WIDE
    parts = db.execute(f"select table_name, parent_table from \"{schema}\".catalog_tables "
                       f"where source_kind = 'part'").fetchall()
    assert len(parts) >= 2 * (WIDE // bi.MAX_PART_COLUMNS - 1)
    assert all(t.startswith(p + "__part") for t, p in parts)
    for i in range(0, WIDE, 97):
        table, column = placed[("form_question", f"d{i:04d}")]
        assert _value(db, schema, table, column, "form_id", form_id) == "2024-05-01"
        table, column = placed[("case_property", f"p{i:04d}")]
        assert _value(db, schema, table, column, "case_id", case_id) == f"v{i}"
    widths = db.execute("select table_name, count(*) from information_schema.columns "
                        "where table_schema = %s group by 1", (schema,)).fetchall()
    assert max(n for _, n in widths) <= bi.MAX_PART_COLUMNS + len(bi.CASE_FIXED) + 2


def test_a_row_postgres_still_refuses_goes_to_dead_letters_and_the_page_loads(
        sim_factory, schema, pg_url, warehouse, db, monkeypatch):
    # Without continuation tables an 800-date form is 9 KB: PostgreSQL refuses the row.
    monkeypatch.setattr(bi, "MAX_PART_COLUMNS", 1500)
    sim = sim_factory(n_cases=20)
    form_id, _ = _wide_form(sim, 800)
    settings = make_settings(sim.base_url, schema, pg_url)
    for _ in range(2):  # and the next run does not stall on it either
        reports = run_sync(settings, warehouse, streams=["apps", "forms"])
        assert all(r.status == "ok" for r in reports), [r.error for r in reports]
    letters = db.execute(f'select record_id, reason from "{schema}".dead_letters').fetchall()
    assert {r for r, _ in letters} == {form_id}
    assert "row is too big" in letters[0][1]
    assert_forms_match(db, schema, sim)  # the base table has it, and every other form


class _IdleDashboard:
    """A BI user's open transaction that has read a table and sits idle (holding its lock)."""

    def __init__(self, pg_url: str, schema: str, table: str):
        self.conn = psycopg.connect(pg_url)
        self.conn.execute(f'select * from "{schema}"."{table}" limit 1')

    def close(self) -> None:
        self.conn.rollback()
        self.conn.close()


def test_a_new_column_behind_an_idle_dashboard_waits_for_the_next_run(
        sim_factory, schema, pg_url, warehouse, db, caplog):
    sim = sim_factory(n_cases=30)
    settings = make_settings(sim.base_url, schema, pg_url, ddl_lock_timeout=0.3)
    run_sync(settings, warehouse)
    case_id = next(i for i, c in sim.snapshot("demo", "case").items()
                   if c["properties"]["case_type"] == "patient")
    sim.update_cases("demo", [case_id], {"brand_new": "42", "dob": "2001-02-03"})
    dashboard = _IdleDashboard(pg_url, schema, "case_patient")
    try:
        # While the ALTER waits, a new dashboard query on the table must not queue for long.
        blocked = threading.Event()

        def query() -> None:
            with psycopg.connect(pg_url) as other:
                other.execute(f'select count(*) from "{schema}".case_patient')
            blocked.set()

        with caplog.at_level(logging.WARNING):
            reports = run_sync(settings, warehouse, streams=["cases"])
            thread = threading.Thread(target=query)
            thread.start()
            thread.join(5)
        assert blocked.is_set()
        assert reports[0].status == "ok"
        assert "in use" in caplog.text
        assert db.execute(f"select count(*) from \"{schema}\".catalog_columns "
                          f"where original_path = 'brand_new'").fetchone()[0] == 0
        # Nothing is lost meanwhile: the value is in the base table, the rest of the row current.
        assert db.execute(f"select properties->>'brand_new' from \"{schema}\".cases "
                          f"where case_id = %s", (case_id,)).fetchone() == ("42",)
        assert _value(db, schema, "case_patient", "dob", "case_id", case_id) == "2001-02-03"
        pending = {r[0] for r in db.execute(f'select record_id from "{schema}".bi_pending')}
        assert case_id in pending
    finally:
        dashboard.close()
    reports = run_sync(settings, warehouse, streams=["cases"])
    assert reports[0].status == "ok"
    column = db.execute(f"select column_name from \"{schema}\".catalog_columns "
                        f"where original_path = 'brand_new'").fetchone()[0]
    assert _value(db, schema, "case_patient", column, "case_id", case_id) == "42"
    assert db.execute(f'select count(*) from "{schema}".bi_pending').fetchone()[0] == 0


def _typed_table(db, schema: str, xmlns: str, name: str) -> tuple[bi.Catalog, bi.TableInfo]:
    catalog = bi.Catalog(db, schema)
    with db.transaction():
        info = catalog.table("form", xmlns, readable_as=name, prefix="form_")
        catalog.columns(info, "form_question", xmlns, [("visit_date", "visit_date"), ("note", "note")])
        db.execute(f"update \"{schema}\".catalog_columns set data_type = 'Date' "
                   f"where table_name = %s and column_name = 'visit_date'", (info.name,))
    catalog.end_transaction(True)
    return catalog, info


def test_typed_views_and_tables_share_one_allocator(db, schema, warehouse):
    catalog, first = _typed_table(db, schema, "x:a", "Community survey")
    assert bi.refresh_typed_views(catalog, [first.name]) == []
    assert catalog.views[first.name] == "form_community_survey_typed"
    # A form whose name reads like that view gets a table of its own, not a DuplicateTable.
    _, second = _typed_table(db, schema, "x:b", "Community survey typed")
    assert second.name != "form_community_survey_typed"
    # And the other way round: a view never takes a table's name.
    catalog, third = _typed_table(db, schema, "x:c", "Household visit typed")
    catalog, fourth = _typed_table(db, schema, "x:d", "Household visit")
    bi.refresh_typed_views(catalog, [fourth.name])
    assert catalog.views[fourth.name] != third.name
    kinds = dict(db.execute("select c.relname, c.relkind::text from pg_class c join pg_namespace n "
                            "on n.oid = c.relnamespace where n.nspname = %s", (schema,)).fetchall())
    assert kinds[third.name] == "r" and kinds[catalog.views[fourth.name]] == "v"


def test_an_analysts_view_on_a_typed_view_never_stops_the_sync(db, schema, warehouse):
    catalog, info = _typed_table(db, schema, "x:a", "Visit")
    bi.refresh_typed_views(catalog, [info.name])
    view = catalog.views[info.name]
    db.execute(f'create view "{schema}".my_report as select * from "{schema}"."{view}"')
    oid = db.execute("select %s::regclass::oid", (f'"{schema}"."{view}"',)).fetchone()[0]
    # New columns: the view is replaced in place, the analyst's view keeps working.
    with db.transaction():
        catalog.columns(catalog.tables[("form", "x:a")], "form_question", "x:a",
                        [("extra", "extra")])
    catalog.end_transaction(True)
    assert bi.refresh_typed_views(catalog, [info.name]) == []
    assert "extra" in [c for c, _ in bi._columns_of(db, schema, view)]
    assert db.execute("select %s::regclass::oid", (f'"{schema}"."{view}"',)).fetchone()[0] == oid
    # A column that changes type cannot be replaced in place: left as it is, with a warning.
    db.execute(f"update \"{schema}\".catalog_columns set data_type = 'Int' "
               f"where table_name = %s and column_name = 'note'", (info.name,))
    warnings = bi.refresh_typed_views(catalog, [info.name], [(info.name, "note")])
    assert len(warnings) == 1 and "my_report" not in warnings[0] and "left as it was" in warnings[0]
    db.execute(f'select * from "{schema}".my_report')
    # Unchanged columns: nothing is recreated at all.
    assert bi.refresh_typed_views(catalog, [info.name]) == warnings


def test_typed_views_are_left_alone_and_counts_stay_exact_on_incremental_runs(
        sim_factory, schema, pg_url, warehouse, db):
    sim = sim_factory(n_cases=80, awkward=True)
    settings = make_settings(sim.base_url, schema, pg_url)
    run_sync(settings, warehouse)
    views = dict(db.execute("select c.relname, c.oid from pg_class c join pg_namespace n on "
                            "n.oid = c.relnamespace where n.nspname = %s and c.relkind = 'v'",
                            (schema,)).fetchall())
    assert views
    forms = follow_up_forms(sim)
    sim.archive_forms("demo", forms[:10])  # re-delivered: their rows are replaced
    sim.add_forms("demo", 20)
    run_sync(settings, warehouse)
    after = dict(db.execute("select c.relname, c.oid from pg_class c join pg_namespace n on "
                            "n.oid = c.relnamespace where n.nspname = %s and c.relkind = 'v'",
                            (schema,)).fetchall())
    assert {k: v for k, v in after.items() if k in views} == views
    for table, column, qtype, counted in db.execute(
            f"select table_name, column_name, data_type, coalesce(unparsed_values, 0) "
            f"from \"{schema}\".catalog_columns where data_type in ('Int', 'Decimal', 'Date', "
            f"'DateTime')").fetchall():
        func = bi.TYPED_QUESTIONS[qtype]
        actual = db.execute(f'select count(*) from "{schema}"."{table}" where nullif(btrim("{column}"), '
                            f"'') is not null and \"{schema}\".{func}(\"{column}\") is null").fetchone()[0]
        assert counted == actual, (table, column)
