"""The stored app document (`appdef.application_document`): its forms' case actions agree with
what the generated forms submit, and `?extras=true` merges it the way HQ does."""

from __future__ import annotations

import pytest

from etl.simulator import Dataset, appdef, factory


def _doc_forms():
    for app in appdef.APPS:
        doc = appdef.application_document(app, "demo")
        for module in doc["modules"]:
            for form in module["forms"]:
                yield app, module, form


def _at(data: dict, path: str):
    """The answer at '/data/a/b' in a submission's `form` (None when absent)."""
    node = data
    for part in path.split("/")[2:]:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _items(value) -> list[dict]:
    return value if isinstance(value, list) else [value] if isinstance(value, dict) else []


def test_registration_and_follow_up_forms_are_the_factorys():
    opening = {f["xmlns"] for _, _, f in _doc_forms()
               if f["actions"]["open_case"]["condition"]["type"] == "always"}
    updating = {f["xmlns"] for _, _, f in _doc_forms()
                if f["requires"] == "case" and f["actions"]["update_case"]["update"]}
    assert opening == {appdef.FORMS[k].xmlns for k in factory.REGISTRATION.values()}
    assert updating == {appdef.FORMS[k].xmlns for k in factory.FOLLOW_UP.values()}
    survey = next(f for _, _, f in _doc_forms() if f["xmlns"] == appdef.SURVEY.xmlns)
    assert survey["requires"] == "none" and not survey["actions"]["subcases"]
    assert all(survey["actions"][a]["condition"]["type"] == "never"
               for a in ("open_case", "update_case", "close_case", "usercase_update"))


def test_every_saved_question_is_a_question_of_its_form():
    seen = 0
    for _, module, form in _doc_forms():
        fdef = next(f for f in appdef.FORMS.values() if f.xmlns == form["xmlns"])
        paths = {q["value"] for q in appdef.questions(fdef)}
        actions = form["actions"]
        saved = [u["question_path"] for u in actions["update_case"]["update"].values()]
        saved += [actions["open_case"]["name_update"]["question_path"]]
        for sub in actions["subcases"]:
            assert sub["case_type"] == "patient" and sub["repeat_context"] in paths
            saved += [sub["name_update"]["question_path"]]
            saved += [u["question_path"] for u in sub["case_properties"].values()]
            assert all(p.startswith(sub["repeat_context"] + "/")
                       for p in [u["question_path"] for u in sub["case_properties"].values()])
        for path in saved:
            if path is not None:
                assert path in paths, (form["xmlns"], path)
                seen += 1
    assert seen > 30
    pt_reg = next(f for _, _, f in _doc_forms() if f["xmlns"] == appdef.PT_REG.xmlns)
    assert pt_reg["actions"]["update_case"]["update"]["dob"]["question_path"] == "/data/dob"
    assert pt_reg["actions"]["update_case"]["update"]["age"]["question_path"] == "/data/âge"


def test_the_saved_answers_are_the_case_blocks_values():
    """In every generated submission, a question the actions map to a property holds the value
    the form's case block writes to that property (when the block writes it)."""
    actions = {f["xmlns"]: f["actions"] for _, _, f in _doc_forms()}
    dataset = Dataset.generate(domain="demo", seed=3, n_cases=120)
    checked = 0
    for form in dataset.snapshot("form").values():
        data = form["form"]
        acts = actions[data["@xmlns"]]
        blocks = _items(data.get("case"))
        if blocks:
            block = blocks[0]  # the questions answer for the form's first case
            for prop, update in acts["update_case"]["update"].items():
                if prop in block.get("update", {}):
                    assert _at(data, update["question_path"]) == block["update"][prop], prop
                    checked += 1
            name_path = acts["open_case"]["name_update"]["question_path"]
            if "create" in block and name_path:
                assert _at(data, name_path) == block["create"]["case_name"]
                checked += 1
        for sub in acts["subcases"]:
            for item in _items(_at(data, sub["repeat_context"])):
                block = item["case"]
                assert block["create"]["case_type"] == sub["case_type"]
                assert item[sub["name_update"]["question_path"].rsplit("/", 1)[1]] == \
                    block["create"]["case_name"]
                for prop, update in sub["case_properties"].items():
                    if prop in block.get("update", {}):
                        leaf = update["question_path"].rsplit("/", 1)[1]
                        assert item[leaf] == block["update"][prop], prop
                        checked += 1
    assert checked > 500


def test_extras_adds_the_documents_fields_but_keeps_the_apis_modules():
    """HQ's ApplicationResource.dehydrate: the stored document first, the API's fields over it."""
    for app in appdef.APPS:
        plain = appdef.application_json(app)
        merged = appdef.with_extras(plain, "demo")
        assert merged["doc_type"] == "Application" and merged["domain"] == "demo"
        assert merged["_id"] == plain["id"] and "langs" in merged
        for key, value in plain.items():
            assert merged[key] == value, key
        assert "actions" not in str(plain) and "actions" not in str(merged["modules"])
    unknown = {"id": "not-an-app", "modules": []}
    assert appdef.with_extras(unknown, "demo") == unknown


@pytest.mark.parametrize("app", appdef.APPS, ids=lambda a: a.name)
def test_the_document_and_the_api_describe_the_same_modules_and_forms(app):
    doc, api = appdef.application_document(app, "demo"), appdef.application_json(app)
    assert doc["_id"] == api["id"] and doc["version"] == api["version"]
    assert [(m["unique_id"], m["case_type"], [(f["unique_id"], f["xmlns"]) for f in m["forms"]])
            for m in doc["modules"]] == \
        [(m["unique_id"], m["case_type"], [(f["unique_id"], f["xmlns"]) for f in m["forms"]])
         for m in api["modules"]]


def test_the_endpoint_merges_the_document_only_with_extras(shared):
    plain = shared.json("/a/demo/api/v0.5/application/")["objects"]
    for flag in ("true", "True", "yes", "1"):
        merged = shared.json("/a/demo/api/v0.5/application/", {"extras": flag})["objects"]
        assert [m["doc_type"] for m in merged] == ["Application"] * 2
        assert [{k: m[k] for k in p} for m, p in zip(merged, plain)] == plain
    assert shared.json("/a/demo/api/v0.5/application/", {"extras": "false"})["objects"] == plain
    one = shared.json(f"/a/demo/api/v0.5/application/{plain[0]['id']}/", {"extras": "true"})
    assert one["doc_type"] == "Application"
