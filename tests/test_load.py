"""The loader against a real PostgreSQL: upsert rules, children, dead letters, atomicity."""

from __future__ import annotations

import pytest

from etl import sources, state
from etl.load.postgres import Loader
from etl.transform import transform_page
from etl.transform.cases import transform_case
from etl.transform.forms import transform_form


def case(case_id, indexed_on, **props):
    indices = props.pop("indices", {})
    return {"case_id": case_id, "indexed_on": indexed_on, "closed": False,
            "properties": {"case_type": "patient", "case_name": case_id, **props},
            "indices": indices, "xform_ids": []}


def load(db, schema, records, stream="cases", cursor=None):
    transform = transform_case if stream == "cases" else transform_form
    batch = transform_page(records, "demo", transform, True, "case_id" if stream == "cases" else "id")
    return Loader(db, schema).load_page(stream=stream, target=sources.get(stream).target, domain="demo", batch=batch,
                                        cursor=cursor or {"indexed_on": None}, run_id=None)


def test_an_older_version_never_overwrites_a_newer_one(db, schema):
    load(db, schema, [case("a", "2024-05-02T00:00:00.000000Z", colour="new")])
    result = load(db, schema, [case("a", "2024-05-01T00:00:00.000000Z", colour="old")])
    assert result.skipped_older == 1 and result.updated == 0
    assert db.execute(f"select properties->>'colour' from \"{schema}\".cases").fetchone() == ("new",)
    result = load(db, schema, [case("a", "2024-05-03T00:00:00.000000Z", colour="newer")])
    assert result.updated == 1
    assert db.execute(f"select properties->>'colour' from \"{schema}\".cases").fetchone() == ("newer",)


def test_duplicates_within_a_page_keep_the_newest(db, schema):
    result = load(db, schema, [case("a", "2024-05-01T00:00:00Z", v="1"),
                               case("a", "2024-05-03T00:00:00Z", v="3"),
                               case("a", "2024-05-02T00:00:00Z", v="2")])
    assert result.inserted == 1
    assert db.execute(f"select properties->>'v' from \"{schema}\".cases").fetchall() == [("3",)]


def test_a_cases_indices_are_replaced_by_the_current_set(db, schema):
    parent = {"case_id": "h1", "case_type": "household", "relationship": "child"}
    host = {"case_id": "p9", "case_type": "patient", "relationship": "extension"}
    load(db, schema, [case("c", "2024-05-01T00:00:00Z", indices={"parent": parent, "host": host})])
    load(db, schema, [case("c", "2024-05-02T00:00:00Z", indices={"parent": parent})])
    rows = db.execute(f'select identifier, referenced_id, relationship from "{schema}".case_indices'
                      ).fetchall()
    assert rows == [("parent", "h1", "child")]
    # An older version of the case does not bring its old indices back.
    load(db, schema, [case("c", "2024-04-01T00:00:00Z", indices={"host": host})])
    assert db.execute(f'select count(*) from "{schema}".case_indices').fetchone()[0] == 1


def test_unloadable_records_go_to_dead_letters_with_reason_and_raw_json(db, schema):
    records = [case("ok", "2024-05-01T00:00:00Z"), {"properties": {"x": "\x00"}},
               {"case_id": "bad", "properties": ["not", "an", "object"]}]
    result = load(db, schema, records, cursor={"indexed_on": "2024-05-01T00:00:00+00:00"})
    assert result.inserted == 1 and result.rejected == 2
    rows = db.execute(f'select record_id, reason, raw from "{schema}".dead_letters order by id'
                      ).fetchall()
    assert [r[0] for r in rows] == [None, "bad"]
    assert "no case_id" in rows[0][1] and "\\u0000" in rows[0][2]
    assert "not an object" in rows[1][1] and '"not"' in rows[1][2]
    assert state.load_checkpoint(db, schema, "demo", "cases") == {"indexed_on": "2024-05-01T00:00:00+00:00"}


def test_rows_and_checkpoint_commit_together_or_not_at_all(db, schema):
    load(db, schema, [case("a", "2024-05-01T00:00:00Z")], cursor={"indexed_on": "first"})
    batch = transform_page([case("b", "2024-05-02T00:00:00Z")], "demo", transform_case, False, "case_id")
    batch.rows["cases"][0] = batch.rows["cases"][0][:-2] + ("{not json", [])  # fails inside COPY
    with pytest.raises(Exception):
        Loader(db, schema).load_page(stream="cases", target=sources.get("cases").target, domain="demo", batch=batch,
                                     cursor={"indexed_on": "second"}, run_id=None)
    assert state.load_checkpoint(db, schema, "demo", "cases") == {"indexed_on": "first"}
    assert db.execute(f'select array_agg(case_id) from "{schema}".cases').fetchone()[0] == ["a"]


def test_forms_keep_every_field_and_archived_flips_both_ways(db, schema):
    form = {"id": "f1", "indexed_on": "2024-05-01T00:00:00.000001Z", "archived": False,
            "received_on": "2024-05-01T00:00:00Z", "app_id": "app", "build_id": None,
            "form": {"@xmlns": "http://x/y", "@name": "Visit", "q": "1",
                     "meta": {"userID": "u1", "username": "jane", "timeStart": "2024-04-30T10:00:00Z",
                              "timeEnd": "2024-04-30T10:05:00.5Z"}},
            "attachments": {"form.xml": {"content_type": "text/xml", "length": 10}}}
    load(db, schema, [form], stream="forms")
    load(db, schema, [dict(form, archived=True, indexed_on="2024-05-02T00:00:00Z")], stream="forms")
    row = db.execute(f'select xmlns, form_name, user_id, username, archived, form->>\'q\', '
                     f'attachments ? \'form.xml\', extract(epoch from time_end - time_start) '
                     f'from "{schema}".forms').fetchone()
    assert row == ("http://x/y", "Visit", "u1", "jane", True, "1", True, 300.5)
    load(db, schema, [dict(form, archived=False, indexed_on="2024-05-03T00:00:00Z")], stream="forms")
    assert db.execute(f'select archived from "{schema}".forms').fetchone() == (False,)


def test_a_retried_page_recreates_what_its_rolled_back_attempt_created(db, schema, monkeypatch):
    """A deadlock on the first page rolls back the staging tables it created; the retry works."""
    import psycopg

    loader = Loader(db, schema)
    original = loader._upsert_main
    calls = []

    def deadlock_once(spec, rows):
        result = original(spec, rows)  # creates the staging tables inside the transaction
        if not calls:
            calls.append(1)
            raise psycopg.errors.DeadlockDetected("simulated deadlock")
        return result

    monkeypatch.setattr(loader, "_upsert_main", deadlock_once)
    batch = transform_page([case("a", "2024-05-01T00:00:00Z")], "demo", transform_case, False,
                           "case_id")
    result = loader.load_page(stream="cases", target=sources.get("cases").target, domain="demo", batch=batch,
                              cursor={"indexed_on": "x"}, run_id=None)
    assert calls == [1] and result.inserted == 1
    assert state.load_checkpoint(db, schema, "demo", "cases") == {"indexed_on": "x"}


def test_every_column_of_every_base_table_has_a_comment(db, schema):
    from etl.load.bi import BASE_TABLES

    missing = db.execute(
        "select c.table_name || '.' || c.column_name from information_schema.columns c "
        "where c.table_schema = %s and c.table_name = any(%s) and c.table_name <> 'alembic_version' "
        "and col_description(format('%%I.%%I', c.table_schema, c.table_name)::regclass, "
        "c.ordinal_position) is null", (schema, sorted(BASE_TABLES))).fetchall()
    assert not missing, missing


def test_forms_flattened_a_page_ahead_are_flattened_again_when_a_repeat_became_known(
        db, schema, monkeypatch):
    """The reading thread flattens the next page while this one loads, with the repeat paths
    known then; a repeat first seen as a list on the page loading meanwhile must still take
    the next page's single item (a dict) as a repeat item, not as a group of columns."""
    import etl.load.bi as bi

    xmlns = "http://example.org/ahead"
    target = sources.get("forms").target
    loader = Loader(db, schema)

    def page(form_id, n, members, **more):
        form = {"id": form_id, "indexed_on": f"2024-05-0{n}T00:00:00Z", "archived": False,
                "received_on": f"2024-05-0{n}T00:00:00Z", "app_id": "app",
                "form": {"@xmlns": xmlns, "@name": "Ahead", "q": str(n), "members": members,
                         **more}}
        return transform_page([form], "demo", transform_form, True, "id")

    def load_batch(batch):
        loader.load_page(stream="forms", target=target, domain="demo", batch=batch,
                         cursor={"indexed_on": None}, run_id=None)

    load_batch(page("f0", 1, ""))  # the form is known now, without a repeat
    first, second = page("f1", 2, [{"name": "a"}, {"name": "b"}]), page("f2", 3, {"name": "c"})
    loader.prepare(target, first)
    loader.prepare(target, second)  # ahead of `first`: "members" not yet known as a repeat
    assert set(second.flats) == {"f2"}
    # Flattened, the parsed record goes (a page's memory): flattened again, it is read back
    # from the form's row.
    assert "f2" not in second.sources
    load_batch(first)
    load_batch(second)
    repeat, = db.execute(f"select table_name from \"{schema}\".catalog_tables where "
                         f"source_kind = 'repeat' and source_name = %s", (f"{xmlns}#members",)
                         ).fetchone()
    names = db.execute(f'select form_id, name from "{schema}"."{repeat}" order by 1, 2').fetchall()
    assert names == [("f1", "a"), ("f1", "b"), ("f2", "c")]
    form_table, = db.execute(f"select table_name from \"{schema}\".catalog_tables where "
                             f"source_kind = 'form' and source_name = %s", (xmlns,)).fetchone()
    form_paths = {p for (p,) in db.execute(
        f'select original_path from "{schema}".catalog_columns where table_name = %s',
        (form_table,))}
    assert "q" in form_paths and "members/name" not in form_paths, form_paths

    # Flattened ahead with the paths that still hold: the load does not flatten again, nor
    # make the form's case actions or clean its values again; what it writes is the same.
    block = {"@case_id": "c9", "@date_modified": "2024-05-04T00:00:00Z",
             "update": {"colour": "red"}}
    third = page("f3", 4, {"name": "d", "nick": ""}, case=block, q="1900-01-01")
    loader.prepare(target, third)
    assert set(third.flats) == {"f3"}
    again = []
    monkeypatch.setattr(bi, "flatten_form", lambda *a: again.append(a) or None)
    monkeypatch.setattr(bi, "case_actions", lambda *a: again.append(a) or [])
    monkeypatch.setattr(bi, "clean_values", lambda *a: again.append(a) or {})
    load_batch(third)
    assert again == []
    assert db.execute(f'select name from "{schema}"."{repeat}" where form_id = %s',
                      ("f3",)).fetchall() == [("d",)]
    assert db.execute(f"select case_id, action, properties->>'colour' from "
                      f"\"{schema}\".form_case_actions where form_id = 'f3'").fetchall() == [
        ("c9", "update", "red")]
    q_column, = db.execute(f"select column_name from \"{schema}\".catalog_columns where "
                           f"table_name = %s and original_path = 'q'", (form_table,)).fetchone()
    assert db.execute(f'select "{q_column}" from "{schema}"."{form_table}" where form_id = %s',
                      ("f3",)).fetchone() == (None,)  # HQ's 1900 placeholder, cleaned ahead


def test_case_values_made_a_page_ahead_are_what_the_case_tables_get(db, schema, monkeypatch):
    """The reading thread makes each case's BI values (properties and indices as text,
    cleaned) while the page before loads; the load writes those and makes none again."""
    import etl.load.bi as bi

    target = sources.get("cases").target
    loader = Loader(db, schema)
    parent = {"parent": {"case_type": "household", "case_id": "h1", "relationship": "child"}}
    records = [case("a", "2024-05-01T00:00:00Z", colour="red", blank="", dob="1900-01-01",
                    indices=parent), case("b", "2024-05-01T00:00:01Z", colour="blue")]
    batch = transform_page(records, "demo", transform_case, True, "case_id")
    loader.prepare(target, batch)
    assert set(batch.case_values) == {"a", "b"}
    assert batch.sources == {}  # made ahead, the parsed properties go (a page's memory)
    monkeypatch.setattr(bi, "case_values", lambda *a: pytest.fail("made again at load"))
    monkeypatch.setattr(bi, "clean_values", lambda *a: pytest.fail("cleaned again at load"))
    loader.load_page(stream="cases", target=target, domain="demo", batch=batch,
                     cursor={"indexed_on": None}, run_id=None)
    rows = db.execute(f'select case_id, colour, blank, dob, index_parent from "{schema}".case_patient '
                      f"order by 1").fetchall()
    assert rows == [("a", "red", None, None, "h1"), ("b", "blue", None, None, None)]


def test_a_new_page_copied_straight_in_takes_the_upsert_when_a_record_arrived_meanwhile(
        db, schema, monkeypatch):
    """A page of records new to the table is copied into it without staging; should one of
    them be written meanwhile (another run, between the check and the copy), the copy is
    undone and the page takes the upsert, versions compared as ever."""
    assert load(db, schema, [case("a", "2024-05-01T00:00:00Z", v="1")]).inserted == 1
    monkeypatch.setattr(Loader, "_already_there", lambda *args: set())  # it saw nothing
    result = load(db, schema, [case("a", "2024-05-02T00:00:00Z", v="2"),
                               case("b", "2024-05-02T00:00:00Z", v="2")])
    assert (result.inserted, result.updated) == (1, 1)
    result = load(db, schema, [case("a", "2024-04-01T00:00:00Z", v="old")])
    assert (result.inserted, result.updated, result.skipped_older) == (0, 0, 1)
    assert db.execute(f'select case_id, properties->>\'v\' from "{schema}".cases order by 1'
                      ).fetchall() == [("a", "2"), ("b", "2")]


def test_the_new_records_of_a_page_are_copied_straight_in_and_the_known_ones_upserted(
        db, schema, monkeypatch):
    """A page's first record is often the last of the page before (the next page starts at
    its indexed_on): the page's new records still skip the staging table, and only the known
    one is upserted, versions compared as ever; its children and BI rows are replaced."""
    load(db, schema, [case("a", "2024-05-01T00:00:00Z", v="1", indices={
        "parent": {"case_type": "household", "case_id": "h1", "relationship": "child"}})])
    copies = []
    real_copy = Loader._copy
    monkeypatch.setattr(Loader, "_copy", lambda self, into, spec, rows: copies.append(
        (into.as_string(db), spec.name, sorted(getattr(r, "case_id", "") for r in rows)))
        or real_copy(self, into, spec, rows))
    result = load(db, schema, [case("c", "2024-05-02T00:00:00Z", v="2"),
                               case("a", "2024-05-02T00:00:00Z", v="2"),
                               case("b", "2024-05-02T00:00:00Z", v="2"),
                               case("z", "2024-04-01T00:00:00Z", v="2")])
    assert (result.inserted, result.updated, result.skipped_older) == (3, 1, 0)
    cases = [(into, ids) for into, name, ids in copies if name == "cases"]
    assert cases == [(f'"{schema}"."cases"', ["b", "c", "z"]), ('"_stage_cases"', ["a"])]
    assert db.execute(f'select case_id, properties->>\'v\' from "{schema}".cases order by 1'
                      ).fetchall() == [("a", "2"), ("b", "2"), ("c", "2"), ("z", "2")]
    assert db.execute(f'select count(*) from "{schema}".case_indices').fetchone() == (0,)
    assert db.execute(f'select case_id, v from "{schema}".case_patient order by 1').fetchall() == [
        ("a", "2"), ("b", "2"), ("c", "2"), ("z", "2")]
    # An older version of a known record in a page of new ones: skipped, the new ones copied.
    result = load(db, schema, [case("a", "2024-04-01T00:00:00Z", v="old"),
                               case("d", "2024-05-03T00:00:00Z", v="3")])
    assert (result.inserted, result.updated, result.skipped_older) == (1, 0, 1)
    assert db.execute(f'select properties->>\'v\' from "{schema}".cases where case_id = \'a\''
                      ).fetchone() == ("2",)


def test_case_block_dates_that_do_not_parse_are_null_in_form_case_actions(db, schema):
    """form_case_actions.date_modified is HQ's @date_modified as a timestamp; a value that is
    no date (or HQ's 1900 placeholder, or past the last UTC date) is NULL there and never
    stops the page (the form keeps it in its jsonb)."""
    from datetime import datetime, timezone

    def block(case_id, modified):
        return {"@case_id": case_id, "@date_modified": modified,
                "@xmlns": "http://commcarehq.org/case/transaction/v2",
                "update": {"colour": "red"}}

    first = block("c1", "2024-04-30T10:05:00.123456Z")
    # A case type given as an element with an attribute: its text.
    first["create"] = {"case_type": {"#text": "patient", "@src": "x"}, "case_name": "n"}
    form = {"id": "f1", "indexed_on": "2024-05-01T00:00:00Z", "archived": False,
            "received_on": "2024-05-01T00:00:00Z", "app_id": "app",
            "form": {"@xmlns": "http://x/blocks", "@name": "Blocks", "q": "1", "case": first,
                     "more": [{"case": block("c2", "not a date")},
                              {"case": block("c3", "1900-01-01T00:00:00Z")},
                              {"case": block("c4", "9999-12-31T23:00:00-05:00")}]}}
    load(db, schema, [form], stream="forms")
    rows = db.execute(f"select case_id, date_modified, properties->>'colour' from "
                      f"\"{schema}\".form_case_actions where action = 'update' order by case_id"
                      ).fetchall()
    assert [(c, p) for c, _, p in rows] == [("c1", "red"), ("c2", "red"), ("c3", "red"),
                                            ("c4", "red")]
    assert rows[0][1] == datetime(2024, 4, 30, 10, 5, 0, 123456, tzinfo=timezone.utc)
    assert [r[1] for r in rows[1:]] == [None, None, None]
    assert db.execute(f"select distinct case_type from \"{schema}\".form_case_actions "
                      f"where case_id = 'c1'").fetchall() == [("patient",)]
    assert db.execute(f"select form->'more'->0->'case'->>'@date_modified' from \"{schema}\".forms"
                      ).fetchone() == ("not a date",)


def _visit_form(form_id, indexed_on, colour, children):
    return {"id": form_id, "indexed_on": indexed_on, "archived": False,
            "received_on": indexed_on, "app_id": "app",
            "form": {"@xmlns": "http://x/visit", "@name": "Visit", "q": colour,
                     "child": [{"name": name} for name in children],
                     "case": {"@case_id": f"c-{form_id}", "@date_modified": indexed_on,
                              "@xmlns": "http://commcarehq.org/case/transaction/v2",
                              "update": {"colour": colour}}}}


def _form_tables(db, schema):
    return {table: db.execute(f'select * from "{schema}"."{table}" order by 1, 2, 3').fetchall()
            for table in ("form_visit", "form_visit__child", "form_case_actions")}


def _savepoints(monkeypatch):
    """Count the transactions and savepoints opened on any connection."""
    import psycopg

    opened = []
    real = psycopg.Connection.transaction
    monkeypatch.setattr(psycopg.Connection, "transaction",
                        lambda self, *a, **k: opened.append(1) or real(self, *a, **k))
    return opened


def test_a_page_is_written_without_a_savepoint_per_table(db, schema, monkeypatch):
    """A page's base, child and BI writes take no savepoint each (two round trips apiece,
    some 100 for a page of forms): the page's transaction is the only one opened."""
    load(db, schema, [_visit_form("f1", "2024-05-01T00:00:00Z", "red", ["ann"])], stream="forms")
    opened = _savepoints(monkeypatch)
    load(db, schema, [_visit_form("f1", "2024-05-02T00:00:00Z", "blue", ["bo", "cy"]),
                      _visit_form("f2", "2024-05-02T00:00:00Z", "green", [])], stream="forms")
    assert len(opened) == 1
    tables = _form_tables(db, schema)
    assert [r[-1] for r in tables["form_visit__child"]] == ["bo", "cy"]
    assert sorted(r[1] for r in tables["form_case_actions"] if r[3] == "update") == ["f1", "f2"]


def test_a_page_the_fast_way_cannot_write_is_written_again_with_savepoints(
        db, schema, monkeypatch):
    """Should a write fail where a savepoint would have recovered (here every binary COPY
    refuses its values, so each table goes again as text), the page is rolled back whole and
    written again with the savepoints: the same rows land, once, and nothing is lost."""
    from etl.load import bi

    forms = [_visit_form("f1", "2024-05-01T00:00:00Z", "red", ["ann", "bo"]),
             _visit_form("f2", "2024-05-01T00:00:00Z", "green", [])]
    load(db, schema, forms, stream="forms")
    expected = _form_tables(db, schema)
    db.execute(f'truncate "{schema}".forms, "{schema}".form_visit, "{schema}".form_visit__child, '
               f'"{schema}".form_case_actions')

    def refuse(*args):
        raise TypeError("a value binary COPY cannot take")

    monkeypatch.setattr(bi, "_copy_binary", refuse)
    opened = _savepoints(monkeypatch)
    result = load(db, schema, forms, stream="forms")
    assert result.inserted == 2 and result.rejected == 0
    assert len(opened) > 2  # the page twice, the second time with savepoints
    strip = lambda rows: [tuple(v for v in r if not hasattr(v, "tzinfo")) for r in rows]  # synced_at
    assert {t: strip(r) for t, r in _form_tables(db, schema).items()} == {
        t: strip(r) for t, r in expected.items()}
    assert db.execute(f'select count(*) from "{schema}".forms').fetchone() == (2,)
    assert db.execute(f'select count(*) from "{schema}".dead_letters').fetchone() == (0,)


def test_a_case_that_changes_type_leaves_its_old_types_table_even_on_a_runs_first_page(
        db, schema):
    """A case whose type changes moves from one case type's table to the other's, also when
    the change comes on the first page of a run (a new loader, whose catalog is not read yet):
    a scheduled run is often a single page."""
    load(db, schema, [case("a", "2024-05-01T00:00:00Z", colour="red"),
                      case("b", "2024-05-01T00:00:00Z", colour="blue")])
    moved = case("a", "2024-05-02T00:00:00Z", colour="green")
    moved["properties"]["case_type"] = "contact"
    load(db, schema, [moved])  # load() makes a new Loader: a run's first page
    assert db.execute(f'select case_id from "{schema}".case_patient order by 1').fetchall() == [
        ("b",)]
    assert db.execute(f'select case_id, colour from "{schema}".case_contact').fetchall() == [
        ("a", "green")]


# --- BI writes made a page ahead, from a snapshot of the catalog ------------------------------

def _writes(writes):
    return [(w.table, list(w.ids), list(w.columns), list(w.rows), w.id_column) for w in writes]


def _loaded_ahead(db, schema, stream, first, ahead):
    """A loader that loaded `first`, and `ahead` (records) prepared as the reading thread
    would while the next page loads."""
    target = sources.get(stream).target
    loader = Loader(db, schema)
    transform, id_key = (transform_case, "case_id") if stream == "cases" else (transform_form, "id")
    loader.load_page(stream=stream, target=target, domain="demo",
                     batch=transform_page(first, "demo", transform, True, id_key),
                     cursor={"indexed_on": None}, run_id=None)
    batch = transform_page(ahead, "demo", transform, True, id_key)
    loader.prepare(target, batch)
    return loader, target, batch


def _load_batch(loader, target, stream, batch):
    return loader.load_page(stream=stream, target=target, domain="demo", batch=batch,
                            cursor={"indexed_on": None}, run_id=None)


@pytest.mark.parametrize("stream", ["cases", "forms"])
def test_bi_writes_made_a_page_ahead_are_the_ones_the_load_would_make(db, schema, monkeypatch,
                                                                      stream):
    """While a page loads, the reading thread makes the next page's BI writes from a copy of
    the catalog; they are the writes the load would make, and the load makes none again."""
    from etl.load import bi

    if stream == "cases":
        parent = {"parent": {"case_type": "household", "case_id": "h1", "relationship": "child"}}
        first = [case("a", "2024-05-01T00:00:00Z", colour="red", size="", indices=parent)]
        ahead = [case("b", "2024-05-02T00:00:00Z", colour="blue", size="3", indices=parent),
                 case("c", "2024-05-02T00:00:00Z", colour="", size="1900-01-01")]
        make = lambda catalog, batch, won: bi._case_writes(catalog, batch, won)
        name = "_case_writes"
    else:
        first = [_visit_form("f1", "2024-05-01T00:00:00Z", "red", ["ann"])]
        ahead = [_visit_form("f2", "2024-05-02T00:00:00Z", "blue", ["bo", "cy"]),
                 _visit_form("f3", "2024-05-02T00:00:00Z", "", [])]
        make = lambda catalog, batch, won: bi._form_writes(catalog, "demo", batch, won)
        name = "_form_writes"
    loader, target, batch = _loaded_ahead(db, schema, stream, first, ahead)
    prepared = batch.bi_writes
    assert isinstance(prepared, bi.Prepared) and prepared.writes
    loader.catalog.ensure_loaded()
    ids = {"cases": ["b", "c"], "forms": ["f2", "f3"]}[stream]
    assert _writes(prepared.writes) == _writes(make(loader.catalog, batch, dict.fromkeys(ids, True)))
    monkeypatch.setattr(bi, name, lambda *a: pytest.fail("BI writes made again at load"))
    result = _load_batch(loader, target, stream, batch)
    assert result.inserted == 2
    if stream == "cases":
        assert db.execute(f'select case_id, colour, size, index_parent from "{schema}".case_patient '
                          f"order by 1").fetchall() == [("a", "red", None, "h1"),
                                                        ("b", "blue", "3", "h1"),
                                                        ("c", None, None, None)]
    else:
        tables = _form_tables(db, schema)
        assert [(r[1], r[-1]) for r in tables["form_visit__child"]] == [
            ("f1", "ann"), ("f2", "bo"), ("f2", "cy")]
        assert sorted(r[1] for r in tables["form_case_actions"]) == ["f1", "f2", "f3"]


def test_bi_writes_made_ahead_are_made_again_when_the_page_before_changed_the_tables(
        db, schema, monkeypatch):
    """The page before may add a table or column the writes made ahead do not know: here a
    continuation table (`__part2`) that an updated form has a value in. Made from the old
    catalog, its writes would leave that value behind; the load makes them again."""
    from etl.load import bi

    monkeypatch.setattr(bi, "MAX_PART_COLUMNS", 2)

    def form(form_id, indexed_on, **questions):
        return {"id": form_id, "indexed_on": indexed_on, "archived": False,
                "received_on": indexed_on, "app_id": "app",
                "form": {"@xmlns": "http://x/wide", "@name": "Wide", **questions}}

    loader, target, ahead = _loaded_ahead(
        db, schema, "forms", [form("f1", "2024-05-01T00:00:00Z", q1="a", q2="b")],
        [form("f2", "2024-05-03T00:00:00Z", q1="later")])
    assert isinstance(ahead.bi_writes, bi.Prepared)  # made before f2's q3 had a column
    meanwhile = transform_page([form("f2", "2024-05-02T00:00:00Z", q1="x", q2="y", q3="z")],
                               "demo", transform_form, True, "id")
    _load_batch(loader, target, "forms", meanwhile)
    part2, = db.execute(f"select table_name from \"{schema}\".catalog_tables where "
                        f"source_kind = 'part'").fetchone()
    assert db.execute(f'select q3 from "{schema}"."{part2}"').fetchall() == [("z",)]
    _load_batch(loader, target, "forms", ahead)
    assert db.execute(f'select count(*) from "{schema}"."{part2}"').fetchone() == (0,)
    assert db.execute(f'select form_id, q1, q2 from "{schema}".form_wide order by 1').fetchall() == [
        ("f1", "a", "b"), ("f2", "later", None)]


def test_bi_writes_made_ahead_are_not_used_for_a_page_with_an_older_record(db, schema):
    """Writes made ahead assume every record of the page is written; a record older than the
    warehouse's (skipped by the upsert) must keep its BI row as it is."""
    from etl.load import bi

    loader, target, batch = _loaded_ahead(
        db, schema, "cases", [case("a", "2024-05-02T00:00:00Z", colour="new")],
        [case("a", "2024-05-01T00:00:00Z", colour="old"), case("b", "2024-05-01T00:00:00Z",
                                                                colour="blue")])
    assert isinstance(batch.bi_writes, bi.Prepared)
    result = _load_batch(loader, target, "cases", batch)
    assert result.skipped_older == 1 and result.inserted == 1
    assert db.execute(f'select case_id, colour from "{schema}".case_patient order by 1'
                      ).fetchall() == [("a", "new"), ("b", "blue")]


def test_no_bi_writes_are_made_ahead_where_the_load_changes_the_rows_they_copy(db, schema):
    """Case API v2 lacks base columns the load keeps from the table (`keep`), and the BI rows
    copy them: their writes wait for the load. Nor are any made before the catalog is read."""
    target = sources.get("cases").target
    fresh = Loader(db, schema)
    batch = transform_page([case("a", "2024-05-01T00:00:00Z")], "demo", transform_case, True,
                           "case_id")
    fresh.prepare(target, batch)
    assert batch.bi_writes is None
    keeping = Loader(db, schema, keep=("date_opened",))
    _load_batch(keeping, target, "cases", batch)
    assert keeping.writes_ahead_from() is None
    assert Loader(db, schema).writes_ahead_from() is None
    # Nor is the catalog copied for targets that make none (the Export API's, the restore's).
    loader = Loader(db, schema)
    loader.catalog.ensure_loaded()
    loader._take_snapshot(sources.get("exports").target)
    assert loader.writes_ahead_from() is None
    loader._take_snapshot(target)
    assert loader.writes_ahead_from() is not None


@pytest.mark.parametrize("stream", ["cases", "forms"])
def test_the_page_that_opens_a_continuation_table_writes_its_values_there(db, schema,
                                                                         monkeypatch, stream):
    """A table that is full (MAX_PART_COLUMNS) gets its next columns in `__part2`. When a later
    run's page opens it, adding the columns reads the catalog again; the page's values must
    still go to the new table (they once stayed only in the base table's jsonb)."""
    from etl.load import bi

    monkeypatch.setattr(bi, "MAX_PART_COLUMNS", 2)
    if stream == "cases":
        first = [case("a", "2024-05-01T00:00:00Z", q1="a", q2="b")]
        second = [case("b", "2024-05-02T00:00:00Z", q1="x", q2="y", q3="z")]
        table, key = "case_patient", "case_id"
    else:
        first = [{"id": "f1", "indexed_on": "2024-05-01T00:00:00Z", "archived": False,
                  "form": {"@xmlns": "http://x/wide", "@name": "Wide", "q1": "a", "q2": "b"}}]
        second = [{"id": "f2", "indexed_on": "2024-05-02T00:00:00Z", "archived": False,
                   "form": {"@xmlns": "http://x/wide", "@name": "Wide", "q1": "x", "q2": "y",
                            "q3": "z"}}]
        table, key = "form_wide", "form_id"
    load(db, schema, first, stream=stream)
    load(db, schema, second, stream=stream)  # a new loader: a later run
    part2, = db.execute(f"select table_name from \"{schema}\".catalog_tables where "
                        f"source_kind = 'part'").fetchone()
    assert part2 == f"{table}__part2"
    assert db.execute(f'select {key}, q3 from "{schema}"."{part2}"').fetchall() == [
        (second[0].get("case_id") or second[0]["id"], "z")]


def test_an_export_table_opened_by_a_later_page_gets_its_values_too(db, schema, monkeypatch):
    """The Export API's tables take their columns through the same catalog (as the OTA
    restore's lookup tables do): the same continuation table, opened by a later page."""
    from etl.load import bi
    from etl.load.exports import write_export_tables
    from etl.transform import Batch

    monkeypatch.setattr(bi, "MAX_PART_COLUMNS", 2)

    def page(form_id, values):
        batch = Batch()
        batch.add("export_records", ({"export": "visits", "form_id": form_id, "values": values,
                                      "children": {}},))
        loader = Loader(db, schema)  # a new loader each time: a later run
        with db.transaction():
            write_export_tables(loader, "demo", batch, None)
        loader.catalog.end_transaction(True)

    page("f1", {"form.a": "1", "form.b": "2"})
    page("f2", {"form.a": "3", "form.b": "4", "form.c": "5"})
    part2, = db.execute(f"select table_name from \"{schema}\".catalog_tables where "
                        f"source_kind = 'part'").fetchone()
    assert db.execute(f'select form_id, c from "{schema}"."{part2}"').fetchall() == [("f2", "5")]


def test_an_upgrade_queues_the_rows_a_continuation_table_may_miss_and_a_sync_writes_them(
        db, schema, warehouse, monkeypatch):
    """Warehouses loaded before the fix may miss such values: migration 0011 queues every
    record of a table with a continuation table that has no row there, and the next run's
    rewrite of queued records puts the values back (a record marked deleted stays so)."""
    from alembic import command

    from etl.db import alembic_config
    from etl.load import bi

    monkeypatch.setattr(bi, "MAX_PART_COLUMNS", 2)

    def form(form_id, **questions):
        return {"id": form_id, "indexed_on": "2024-05-01T00:00:00Z", "archived": False,
                "form": {"@xmlns": "http://x/wide", "@name": "Wide", **questions}}

    load(db, schema, [form("f1", q1="a", q2="b")], stream="forms")
    load(db, schema, [form("f2", q1="x", q2="y", q3="z"), form("gone", q1="c", q2="d", q3="e")],
         stream="forms")
    db.execute(f'delete from "{schema}".form_wide__part2')  # as the bug left it
    for table in ("forms", "form_wide"):
        db.execute(f"update \"{schema}\".{table} set deleted = true where form_id = 'gone'")

    cfg = alembic_config(schema)
    with warehouse.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0010")
        command.upgrade(cfg, "head")
    assert db.execute(f'select domain, stream, record_id from "{schema}".bi_pending order by 3'
                      ).fetchall() == [("demo", "forms", "f1"), ("demo", "forms", "f2"),
                                       ("demo", "forms", "gone")]

    loader = Loader(db, schema)
    assert loader.rebuild_pending(sources.get("forms").target, "forms", "demo") == 3
    assert db.execute(f'select form_id, q3 from "{schema}".form_wide__part2 order by 1'
                      ).fetchall() == [("f2", "z"), ("gone", "e")]
    assert db.execute(f'select form_id, deleted from "{schema}".form_wide order by 1').fetchall(
    ) == [("f1", False), ("f2", False), ("gone", True)]
    assert db.execute(f'select count(*) from "{schema}".bi_pending').fetchone() == (0,)


def test_a_queued_record_marked_deleted_keeps_its_bi_rows_marked_when_rewritten(db, schema):
    """bi_pending's rewrite makes a record's BI rows again from its base row; a record that
    reconcile marked deleted meanwhile keeps `deleted = true` there too."""
    load(db, schema, [case("a", "2024-05-01T00:00:00Z", colour="red"),
                      case("b", "2024-05-01T00:00:00Z", colour="blue")])
    db.execute(f"update \"{schema}\".cases set deleted = true where case_id = 'a'")
    db.execute(f"update \"{schema}\".case_patient set deleted = true where case_id = 'a'")
    db.execute(f"insert into \"{schema}\".bi_pending (domain, stream, record_id) values "
               f"('demo', 'cases', 'a'), ('demo', 'cases', 'b')")
    assert Loader(db, schema).rebuild_pending(sources.get("cases").target, "cases", "demo") == 2
    assert db.execute(f'select case_id, colour, deleted from "{schema}".case_patient order by 1'
                      ).fetchall() == [("a", "red", True), ("b", "blue", False)]
