"""BI tables: every case property and question value is reachable through the catalog."""

from __future__ import annotations

import re
from collections import defaultdict

import psycopg
import pytest

from etl.load.bi import cell
from etl.sync import run_sync
from etl.transform.cases import SPECIAL_PROPERTIES
from etl.transform.flatten import as_text, case_actions, flatten_form
from tests.conftest import make_settings
from tests.matching import expected_cases, expected_forms


def catalog(db: psycopg.Connection, schema: str):
    tables = {(kind, source): name for name, kind, source in db.execute(
        f'select table_name, source_kind, source_name from "{schema}".catalog_tables')}
    columns = {(table, path): column for table, column, path in db.execute(
        f'select table_name, column_name, original_path from "{schema}".catalog_columns')}
    return tables, columns


def repeat_paths(db, schema: str, xmlns: str) -> set[str]:
    known = {s.split("#", 1)[1] for (s,) in db.execute(
        f"select source_name from \"{schema}\".catalog_tables where source_kind = 'repeat' "
        f"and source_name like %s", (xmlns + "#%",))}
    known |= {p for (p,) in db.execute(
        f"select path from \"{schema}\".app_questions where xmlns = %s and type = 'Repeat'", (xmlns,))}
    return known


@pytest.fixture
def synced(sim_factory, schema, pg_url, warehouse, db):
    sim = sim_factory(n_cases=80, awkward=True)
    settings = make_settings(sim.base_url, schema, pg_url)
    reports = run_sync(settings, warehouse)
    assert [r.stream for r in reports] == ["apps", "cases", "forms"]
    assert all(r.status == "ok" for r in reports)
    return sim, settings


def test_every_case_property_is_reachable_through_the_catalog(synced, db, schema):
    sim, _ = synced
    tables, columns = catalog(db, schema)
    checked = 0
    for case_id, case in expected_cases(sim, "demo").items():
        props = case["properties"]
        table = tables[("case_type", props["case_type"])]
        row = db.execute(f'select * from "{schema}"."{table}" where case_id = %s', (case_id,))
        names = [d.name for d in row.description]
        values = dict(zip(names, row.fetchone()))
        assert values["case_name"] == (props.get("case_name") or None)
        for name, value in props.items():
            if name in SPECIAL_PROPERTIES:
                continue
            assert values[columns[(table, name)]] == cell(as_text(value)), (case_id, name)
            checked += 1
        for identifier, index in (case.get("indices") or {}).items():
            assert values[columns[(table, f"index/{identifier}")]] == index["case_id"]
    assert checked > 500


def test_every_question_value_is_reachable_through_the_catalog(synced, db, schema):
    sim, _ = synced
    tables, columns = catalog(db, schema)
    checked = repeat_rows = 0
    for form_id, record in expected_forms(sim, "demo").items():
        xmlns = record["form"]["@xmlns"]
        flat = flatten_form(record["form"], repeat_paths(db, schema, xmlns))
        table = tables[("form", xmlns)]
        cur = db.execute(f'select * from "{schema}"."{table}" where form_id = %s', (form_id,))
        values = dict(zip([d.name for d in cur.description], cur.fetchone()))
        assert values["archived"] == record["archived"]
        for path, value in flat.root.values.items():
            assert values[columns[(table, path)]] == cell(value), (form_id, path)
            checked += 1
        for path, items in flat.repeats.items():
            rtable = tables[("repeat", f"{xmlns}#{path}")]
            cur = db.execute(f'select * from "{schema}"."{rtable}" where form_id = %s '
                             f'order by row_key', (form_id,))
            names = [d.name for d in cur.description]
            got = {r["row_key"]: r for r in (dict(zip(names, row)) for row in cur.fetchall())}
            assert set(got) == {item.key for item in items}
            for item in items:
                assert got[item.key]["parent_key"] == item.parent_key
                for qpath, value in item.values.items():
                    assert got[item.key][columns[(rtable, qpath)]] == cell(value)
                    checked += 1
            repeat_rows += len(items)
    assert checked > 300 and repeat_rows > 20


def test_repeats_with_zero_one_and_many_items_land_the_same_way(synced, db, schema):
    sim, _ = synced
    shapes = defaultdict(set)  # repeat path -> shapes seen
    for record in expected_forms(sim, "demo").values():
        xmlns = record["form"]["@xmlns"]
        for path in repeat_paths(db, schema, xmlns):
            node = record["form"]
            for part in path.split("/"):
                node = node.get(part) if isinstance(node, dict) else None
            shapes[(xmlns, path)].add("many" if isinstance(node, list) and len(node) > 1 else
                                      "one" if isinstance(node, (dict, list)) else "zero")
    assert any(s >= {"zero", "one", "many"} for s in shapes.values()), shapes
    tables, _ = catalog(db, schema)
    for (xmlns, path), seen in shapes.items():
        assert ("repeat", f"{xmlns}#{path}") in tables  # a dict never became a group of columns
    nested = db.execute(f"select count(*) from \"{schema}\".catalog_tables t "
                        f"join \"{schema}\".catalog_tables p on p.table_name = t.parent_table "
                        f"where t.source_kind = 'repeat' and p.source_kind = 'repeat'").fetchone()[0]
    assert nested >= 1, "the generator should produce a repeat inside a repeat"


def test_names_postgres_cannot_take_get_unique_stable_identifiers(synced, db, schema):
    rows = db.execute(f'select table_name, column_name, original_path from "{schema}".catalog_columns'
                      ).fetchall()
    assert all(len(col.encode()) <= 63 and col == col.lower() for _, col, _ in rows)
    per_table = defaultdict(list)
    for table, column, path in rows:
        per_table[table].append((column, path))
    for table, pairs in per_table.items():
        assert len({c for c, _ in pairs}) == len(pairs)
    originals = {path for _, _, path in rows}
    awkward = [p for p in originals if len(p.encode()) > 63 or " " in p or "." in p
               or not p.isascii() or p.lower() in ("select", "order", "user")]
    assert len(awkward) >= 4, originals
    # Identifiers are real: every catalogued column exists in its table.
    existing = set(db.execute("select table_name, column_name from information_schema.columns "
                              "where table_schema = %s", (schema,)).fetchall())
    assert {(t, c) for t, c, _ in rows} <= existing


def test_mapping_never_changes_and_new_properties_add_columns(synced, db, schema, warehouse):
    sim, settings = synced
    before = set(db.execute(f'select table_name, column_name, original_path '
                            f'from "{schema}".catalog_columns').fetchall())
    case_id, case = next((i, c) for i, c in sim.snapshot("demo", "case").items()
                         if c["properties"]["case_type"] == "patient")
    sim.update_cases("demo", [case_id], {"Brand New Property": "42", "brand_new_property": "43"})
    run_sync(settings, warehouse)
    after = set(db.execute(f'select table_name, column_name, original_path '
                           f'from "{schema}".catalog_columns').fetchall())
    assert before <= after
    new = {(c, p) for t, c, p in after - before}
    assert {p for _, p in new} == {"Brand New Property", "brand_new_property"}
    tables, columns = catalog(db, schema)
    table = tables[("case_type", "patient")]
    got = db.execute(f'select "{columns[(table, "Brand New Property")]}", '
                     f'"{columns[(table, "brand_new_property")]}" from "{schema}"."{table}" '
                     f'where case_id = %s', (case_id,)).fetchone()
    assert got == ("42", "43")


def test_form_case_actions_hold_one_row_per_block_and_action(synced, db, schema):
    sim, _ = synced
    expected = set()
    for form_id, record in expected_forms(sim, "demo").items():
        flat = flatten_form(record["form"], repeat_paths(db, schema, record["form"]["@xmlns"]))
        for block, action, case_id, _, props, _ in case_actions(flat.case_blocks):
            expected.add((form_id, block, action, case_id))
    got = set(db.execute(f'select form_id, block, action, case_id from "{schema}".form_case_actions'
                         ).fetchall())
    assert got == expected
    assert {a for _, _, a, _ in got} >= {"create", "update", "close", "index"}


def test_data_dictionary_labels_comments_and_typed_views(synced, db, schema):
    sim, _ = synced
    apps = db.execute(f'select count(*) from "{schema}".apps').fetchone()[0]
    assert apps >= 1
    labelled = db.execute(
        f"select c.table_name, c.column_name, c.label, col_description("
        f"format('%I.%I', '{schema}', c.table_name)::regclass, a.attnum) "
        f'from "{schema}".catalog_columns c join pg_attribute a on '
        f"a.attrelid = format('%I.%I', '{schema}', c.table_name)::regclass "
        f"and a.attname = c.column_name where c.label is not null").fetchall()
    assert len(labelled) >= 5
    assert all(comment and comment.startswith(label) for _, _, label, comment in labelled)
    typed = db.execute(f"select distinct table_name from \"{schema}\".catalog_columns "
                       f"where data_type in ('Int', 'Decimal', 'Date', 'DateTime')").fetchall()
    assert typed
    for (table,) in typed:
        # The typed view carries its table's column comments (BI tools show them).
        commented = db.execute(
            "select count(*) filter (where col_description(format('%%I.%%I', %s::text, %s::text)::regclass, "
            "ordinal_position) is not null) from information_schema.columns "
            "where table_schema = %s and table_name = %s", (schema, f"{table}_typed", schema,
                                                           f"{table}_typed")).fetchone()[0]
        labelled_here = db.execute(f'select count(*) from "{schema}".catalog_columns '
                                   f'where table_name = %s', (table,)).fetchone()[0]
        assert commented >= labelled_here > 0, table
        view_types = dict(db.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = %s and table_name = %s", (schema, f"{table}_typed")).fetchall())
        assert set(view_types.values()) & {"numeric", "date", "timestamp with time zone"}
    unparsed = db.execute(f'select coalesce(sum(unparsed_values), 0) from "{schema}".catalog_columns'
                          ).fetchone()[0]
    # What does not parse is counted, and the text table keeps it.
    bad = 0
    for table, column, qtype in db.execute(
            f"select table_name, column_name, data_type from \"{schema}\".catalog_columns "
            f"where data_type in ('Int', 'Decimal', 'Date', 'DateTime')").fetchall():
        func = {"Int": "try_numeric", "Decimal": "try_numeric", "Date": "try_date"}.get(
            qtype, "try_timestamptz")
        bad += db.execute(f'select count(*) from "{schema}"."{table}" where nullif(btrim("{column}"), \'\') '
                          f'is not null and "{schema}".{func}("{column}") is null').fetchone()[0]
    assert unparsed == bad


def test_bi_tables_can_be_turned_off(sim, schema, pg_url, warehouse, db):
    settings = make_settings(sim.base_url, schema, pg_url, bi_tables=False)
    run_sync(settings, warehouse)
    assert db.execute(f'select count(*) from "{schema}".catalog_tables').fetchone()[0] == 0
    assert db.execute(f'select count(*) from "{schema}".cases').fetchone()[0] > 0


def test_one_rule_for_missing_values_and_one_naming_rule_everywhere(synced, db, schema, warehouse):
    sim, settings = synced
    patient = next(i for i, c in sim.snapshot("demo", "case").items()
                   if c["properties"]["case_type"] == "patient")
    sim.update_cases("demo", [patient], {"dob": "1900-01-01", "notes": ""})
    run_sync(settings, warehouse)
    # HQ's placeholder and empty strings are NULL in every BI column; the base jsonb keeps them.
    kept = db.execute(f"select properties->>'dob', properties->>'notes' from \"{schema}\".cases "
                      f"where case_id = %s", (patient,)).fetchone()
    assert kept == ("1900-01-01", "")
    assert db.execute(f'select dob, notes from "{schema}".case_patient where case_id = %s',
                      (patient,)).fetchone() == (None, None)
    tables = [t for (t,) in db.execute(f"select table_name from \"{schema}\".catalog_tables "
                                       f"where source_kind <> 'typed_view'")]
    for table in tables:
        columns = [c for (c,) in db.execute(
            f"select column_name from \"{schema}\".catalog_columns where table_name = %s", (table,))]
        for column in columns:
            bad = db.execute(f'select count(*) from "{schema}"."{table}" where "{column}" = \'\' '
                             f'or "{column}" like \'1900-01-01%%\'').fetchone()[0]
            assert bad == 0, (table, column)
    # A name with no ASCII is u_<hash> in case tables and form tables alike.
    names = db.execute(f"select source_kind, column_name from \"{schema}\".catalog_columns "
                       f"where original_path !~ '[A-Za-z0-9]'").fetchall()
    assert {kind for kind, _ in names} >= {"case_property", "form_question"}, names
    assert all(re.fullmatch(r"u_[0-9a-f]{8}", column) for _, column in names), names


def test_case_properties_are_labelled_and_typed_from_the_app(synced, db, schema):
    table = db.execute(f"select table_name from \"{schema}\".catalog_tables "
                       f"where source_kind = 'case_type' and source_name = 'patient'").fetchone()[0]
    dob = db.execute(f"select column_name, label, data_type from \"{schema}\".catalog_columns "
                     f"where table_name = %s and original_path = 'dob'", (table,)).fetchone()
    assert dob[1] and dob[2] == "Date", dob  # from the form question that saves it
    comment = db.execute("select col_description(%s::regclass, a.attnum) from pg_attribute a "
                         "where a.attrelid = %s::regclass and a.attname = %s",
                         (f'"{schema}"."{table}"', f'"{schema}"."{table}"', dob[0])).fetchone()[0]
    assert comment.startswith(dob[1])
    view_types = dict(db.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = %s and table_name = %s", (schema, f"{table}_typed")).fetchall())
    assert view_types[dob[0]] == "date"  # case tables get typed views like the forms


def test_the_tables_a_sync_writes_get_planner_statistics(synced, db, schema):
    """Without statistics a page's `domain = ... and id = any(...)` lookups read the whole
    domain, and the cost of a page grows with the table: keep_statistics analyzes the tables
    written that have none (or have doubled) as the sync goes."""
    never = db.execute(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = %s and c.relkind = 'r' and c.reltuples < 0 and c.relname in "
        "(select table_name from \"" + schema + "\".catalog_tables union all "
        "select unnest(array['cases', 'case_indices', 'forms', 'form_case_actions']))",
        (schema,)).fetchall()
    assert not never, never
