"""app_case_property_questions: which question saves which case property, from the forms'
case actions in the app (basic and advanced modules, current and older shapes)."""

from __future__ import annotations

import pytest

from etl.simulator import appdef
from etl.sync import run_sync
from etl.transform import Batch
from etl.transform.apps import case_property_questions_query, saved_question_path, transform_app
from tests.conftest import make_settings

TABLE = "app_case_property_questions"


def with_form_actions(app_object: dict, domain: str) -> dict:
    """An app object whose forms carry their stored `actions` and `requires` (the shape of HQ's
    stored app document, e.g. its app source JSON). HQ's `?extras=true` does not carry them:
    see `appdef.with_extras`."""
    doc = appdef.application_document(appdef.APP_BY_ID[app_object["id"]], domain)
    stored = {f["unique_id"]: f for m in doc["modules"] for f in m["forms"]}
    return {**app_object, "modules": [
        {**m, "forms": [{**f, "actions": stored[f["unique_id"]]["actions"],
                         "requires": stored[f["unique_id"]]["requires"]} for f in m["forms"]]}
        for m in app_object["modules"]]}


def rows(batch: Batch) -> set[tuple]:
    return set(batch.rows.get(TABLE, []))


def saves(db, schema: str) -> set[tuple]:
    return set(db.execute(
        f'select case_type, property, xmlns, question_path from "{schema}".{TABLE}'))


# --- end to end -------------------------------------------------------------------------------

@pytest.fixture
def synced_with_actions(sim_factory, schema, pg_url, warehouse, db):
    sim = sim_factory(n_cases=40)
    domain = sim.store.domains["demo"]
    domain.apps = [with_form_actions(a, "demo") for a in domain.apps]
    reports = run_sync(make_settings(sim.base_url, schema, pg_url), warehouse, streams=["apps"])
    assert [r.status for r in reports] == ["ok"], reports
    return sim


def test_an_apps_sync_maps_properties_to_the_questions_that_save_them(synced_with_actions,
                                                                      schema, db):
    got = saves(db, schema)
    pt_reg, hh_reg, pt_visit = appdef.PT_REG.xmlns, appdef.HH_REG.xmlns, appdef.PT_VISIT.xmlns
    assert ("patient", "dob", pt_reg, "dob") in got
    assert ("patient", "age", pt_reg, "âge") in got  # a question need not share the name
    assert ("patient", "lmp", pt_reg, "pregnancy/lmp") in got
    assert ("patient", "weight", pt_visit, "weight") in got  # a follow-up's update_case
    # The household registration's members repeat opens child patient cases (subcases).
    assert ("patient", "dob", hh_reg, "members/member_dob") in got
    assert ("patient", "name", hh_reg, "members/member_name") in got
    assert ("household", "name", hh_reg, "hh_name") in got  # open_case.name_update
    assert ("household", "Phone Number", hh_reg, "contact_info/phone") in got
    assert not any(xmlns == appdef.SURVEY.xmlns for _, _, xmlns, _ in got)  # no case actions
    # Every mapped question is a question of that form in app_questions.
    missing = db.execute(f"""
        select p.xmlns, p.question_path from "{schema}".{TABLE} p
        where not exists (select 1 from "{schema}".app_questions q
                          where q.domain = p.domain and q.app_id = p.app_id
                            and q.xmlns = p.xmlns and q.path = p.question_path)""").fetchall()
    assert not missing and len(got) > 30


def test_the_label_and_type_of_each_case_property(synced_with_actions, schema, db):
    found = {(r[1], r[2]): r for r in db.execute(case_property_questions_query(schema))}
    assert found[("patient", "dob")][3:5] == ("Date of birth", "Date")
    assert found[("patient", "age")][4] == "Int"
    assert found[("household", "water_source")][3:5] == ("Main water source", "Select")
    assert found[("contact", "name")][3:5] == ("Contact name", "Text")
    assert found[("patient", "weight")][3:5] == ("Weight (kg)", "Double")
    assert all(domain == "demo" for domain, *_ in found.values())
    assert len(found) == len({(t, p) for t, p, _, _ in saves(db, schema)})


def test_a_case_types_own_module_wins(synced_with_actions, schema, db):
    found = {(r[1], r[2]): r for r in db.execute(case_property_questions_query(schema))}
    # Register Patient's "Âge" wins over Register Household's members/member_age ("Age").
    assert found[("patient", "age")][3:8] == ("Âge", "Int", appdef.HEALTH_APP.app_id,
                                              appdef.PT_REG.xmlns, "âge")


def test_a_second_sync_replaces_the_mapping(synced_with_actions, schema, pg_url, warehouse, db):
    domain = synced_with_actions.store.domains["demo"]
    domain.apps = [appdef.application_json(a) for a in appdef.APPS]  # actions gone
    run_sync(make_settings(synced_with_actions.base_url, schema, pg_url), warehouse,
             streams=["apps"])
    assert saves(db, schema) == set()


def test_hqs_extras_answer_maps_nothing(sim_factory, schema, pg_url, warehouse, db):
    """HQ lays the API's fields over the stored document, so the forms' actions do not come
    through `?extras=true` (which the stream therefore does not ask for: it would only make the
    answer bigger): an app object shaped like that answer loads as before and maps nothing."""
    sim = sim_factory(n_cases=20)
    domain = sim.store.domains["demo"]
    domain.apps = [appdef.with_extras(a, "demo") for a in domain.apps]
    reports = run_sync(make_settings(sim.base_url, schema, pg_url), warehouse, streams=["apps"])
    assert [r.status for r in reports] == ["ok"]
    assert saves(db, schema) == set()
    assert db.execute(f'select count(*) from "{schema}".app_questions').fetchone()[0] > 50


def test_the_table_and_its_columns_are_commented(warehouse, schema, db):
    comments = dict(db.execute("""
        select coalesce(a.attname, ''), d.description
        from pg_description d
        join pg_class c on c.oid = d.objoid
        join pg_namespace n on n.oid = c.relnamespace
        left join pg_attribute a on a.attrelid = c.oid and a.attnum = d.objsubid and d.objsubid > 0
        where n.nspname = %s and c.relname = %s""", (schema, TABLE)).fetchall())
    assert set(comments) == {"", "domain", "app_id", "case_type", "property", "xmlns",
                             "question_path"}
    assert all(comments.values())
    key = db.execute("""
        select array_agg(a.attname order by k.n) from pg_index i
        cross join unnest(i.indkey) with ordinality k(attnum, n)
        join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
        where i.indrelid = %s::regclass and i.indisprimary""",
        (f'"{schema}".{TABLE}',)).fetchone()[0]
    assert key == ["domain", "app_id", "case_type", "property", "xmlns", "question_path"]


# --- the transform alone ----------------------------------------------------------------------

def _app(*modules: dict) -> dict:
    return {"id": "app1", "name": "App", "version": 3, "modules": list(modules)}


def test_older_documents_save_a_path_per_property():
    """Before `ConditionalCaseUpdate`, update_case.update was {property: "/data/path"},
    open_case had `name_path` and subcases `case_name`, each a path."""
    form = {"xmlns": "http://x/reg", "unique_id": "f1", "requires": "none", "questions": [],
            "actions": {
                "open_case": {"condition": {"type": "always"}, "name_path": "/data/name",
                              "external_id": "/data/ids/national_id"},
                "update_case": {"condition": {"type": "always"},
                                "update": {"dob": "/data/dob", "edd": "/data/preg/edd",
                                           "parent/village": "/data/village",  # another case
                                           "bad": "concat(/data/a, /data/b)", "none": None}},
                "close_case": {"condition": {"type": "never"}},
                "usercase_update": {"condition": {"type": "always"},
                                    "update": {"last_form": "/data/dob"}},
                "subcases": [{"case_type": "child", "case_name": "/data/kids/kid_name",
                              "case_properties": {"sex": "/data/kids/kid_sex"},
                              "repeat_context": "/data/kids"}],
            }}
    batch = Batch()
    transform_app(_app({"unique_id": "m1", "case_type": "mother", "forms": [form]}), "d", batch)
    assert rows(batch) == {
        ("d", "app1", "mother", "name", "http://x/reg", "name"),
        ("d", "app1", "mother", "external_id", "http://x/reg", "ids/national_id"),
        ("d", "app1", "mother", "dob", "http://x/reg", "dob"),
        ("d", "app1", "mother", "edd", "http://x/reg", "preg/edd"),
        ("d", "app1", "commcare-user", "last_form", "http://x/reg", "dob"),
        ("d", "app1", "child", "name", "http://x/reg", "kids/kid_name"),
        ("d", "app1", "child", "sex", "http://x/reg", "kids/kid_sex"),
    }


def test_an_advanced_module_saves_through_its_load_and_open_actions():
    def cu(path):
        return {"doc_type": "ConditionalCaseUpdate", "question_path": path, "update_mode": "edit"}

    form = {"doc_type": "AdvancedForm", "xmlns": "http://x/adv", "unique_id": "f2",
            "actions": {
                "doc_type": "AdvancedFormActions",
                "load_update_cases": [
                    {"case_type": "patient", "case_tag": "load_patient_0",
                     "case_properties": {"weight": cu("/data/weight"), "height": "/data/height"},
                     "preload": {"/data/old_weight": "weight"}},  # loads, does not save
                    {"case_type": "", "case_properties": {"x": cu("/data/x")}},  # no case type
                ],
                "open_cases": [
                    {"case_type": "visit", "case_tag": "open_visit_0",
                     "name_update": cu("/data/visit_name"),
                     "case_properties": {"visit_date": cu("#form/visit/date")},
                     "case_indices": [{"tag": "load_patient_0", "reference_id": "parent"}]},
                    {"case_type": "referral", "name_path": "/data/ref_name",  # older shape
                     "case_properties": {"reason": "/data/ref_reason"}},
                ],
            }}
    batch = Batch()
    module = {"doc_type": "AdvancedModule", "unique_id": "m2", "case_type": "patient",
              "forms": [form]}
    transform_app(_app(module), "d", batch)
    assert {(t, p, q) for _, _, t, p, _, q in rows(batch)} == {
        ("patient", "weight", "weight"), ("patient", "height", "height"),
        ("visit", "name", "visit_name"), ("visit", "visit_date", "visit/date"),
        ("referral", "name", "ref_name"), ("referral", "reason", "ref_reason"),
    }


def test_inactive_actions_and_unparsable_shapes_save_nothing():
    forms = [
        {"xmlns": "http://x/f1", "actions": {  # conditions `never`: HQ does not apply them
            "open_case": {"condition": {"type": "never"},
                          "name_update": {"question_path": "/data/n"}},
            "update_case": {"condition": {"type": "never"}, "update": {"a": "/data/a"}},
            "usercase_update": {"condition": {"type": "never"}, "update": {"b": "/data/b"}}}},
        {"xmlns": "http://x/f2", "requires": "case", "actions": {  # a follow-up opens nothing
            "open_case": {"condition": {"type": "always"},
                          "name_update": {"question_path": "/data/n"}}}},
        {"xmlns": "http://x/f3", "actions": "not an object"},
        {"xmlns": "http://x/f4", "actions": {"update_case": {"update": ["a", "b"]},
                                             "subcases": "nope", "open_cases": [1, None],
                                             "load_update_cases": [{"case_properties": 7}]}},
        {"xmlns": None, "actions": {"update_case": {"update": {"a": "/data/a"}}}},  # no xmlns
        {"xmlns": "http://x/f5"},  # the Application Structure API's own shape: no actions
    ]
    batch = Batch()
    transform_app(_app({"unique_id": "m", "case_type": "c", "forms": forms}), "d", batch)
    assert rows(batch) == set()
    assert len(batch.rows["app_forms"]) == len(forms)
    # Without a case type, the module's own case actions save nothing either.
    batch = Batch()
    transform_app(_app({"unique_id": "m", "case_type": "", "forms": [
        {"xmlns": "http://x/f6", "actions": {"update_case": {"update": {"a": "/data/a"}}}}]}),
        "d", batch)
    assert rows(batch) == set()


@pytest.mark.parametrize("value, path", [
    ({"question_path": "/data/group/q", "update_mode": "always"}, "group/q"),
    ("/data/q", "q"), ("#form/g/q", "g/q"), ("q", "q"), (" /data/q ", "q"),
    ({"question_path": None}, None), ("", None), (None, None), (5, None),
    ("#case/dob", None), ("concat(/data/a, ' ')", None), ("/data/a = 'x'", None),
    ("instance('casedb')/casedb/case", None),
])
def test_saved_question_path(value, path):
    assert saved_question_path(value) == path
