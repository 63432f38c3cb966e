"""The generated data: deterministic, internally consistent, and as awkward as real projects."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from typing import Any, Iterator

import pytest

from etl.simulator import Dataset

HQ_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return Dataset.generate(domain="demo", seed=11, n_cases=300)


@pytest.fixture(scope="module")
def cases(ds: Dataset) -> dict[str, dict]:
    return ds.snapshot("case")


@pytest.fixture(scope="module")
def forms(ds: Dataset) -> dict[str, dict]:
    return ds.snapshot("form")


def _bytes(ds: Dataset) -> list[bytes]:
    return [r.head + r.tail for r in ds.cases + ds.forms]


def _blocks(node: Any) -> Iterator[tuple[str, dict]]:
    """(path, case block) for every case block anywhere in a form."""
    def walk(value: Any, path: str) -> Iterator[tuple[str, dict]]:
        if isinstance(value, list):
            for item in value:
                yield from walk(item, path)
        elif isinstance(value, dict):
            for key, child in value.items():
                if key == "case" and isinstance(child, (dict, list)):
                    for block in child if isinstance(child, list) else [child]:
                        yield f"{path}case", block
                elif isinstance(child, (dict, list)):
                    yield from walk(child, f"{path}{key}/")
    return walk(node, "")


def test_same_seed_same_bytes_other_seed_other_bytes():
    a = Dataset.generate(domain="demo", seed=3, n_cases=80)
    b = Dataset.generate(domain="demo", seed=3, n_cases=80)
    assert _bytes(a) == _bytes(b) and a.apps == b.apps
    assert _bytes(Dataset.generate(domain="demo", seed=4, n_cases=80)) != _bytes(a)
    awkward = [Dataset.generate(seed=3, n_cases=40, awkward=True) for _ in range(2)]
    assert _bytes(awkward[0]) == _bytes(awkward[1])


def test_sizes(ds: Dataset, cases, forms):
    assert len(cases) == 300 and len(ds.cases) == 300
    assert 300 < len(forms) < 600
    exact = Dataset.generate(seed=1, n_cases=100, n_forms=250)
    assert (len(exact.cases), len(exact.forms)) == (100, 250)
    with pytest.raises(ValueError):
        Dataset.generate(seed=1, n_cases=100, n_forms=10)


def test_case_shape_and_hq_dates(cases):
    for case in cases.values():
        assert case["id"] == case["case_id"] and case["domain"] == "demo"
        assert HQ_TIME.match(case["indexed_on"]) and HQ_TIME.match(case["server_date_modified"])
        assert case["resource_uri"] == f"/a/demo/api/v0.5/case/{case['id']}/"
        props = case["properties"]
        assert props["owner_id"]  # falls back to the user
        assert isinstance(case["indices"], dict)
    placeholders = Counter(k for c in cases.values()
                           for k in ("date_modified", "server_date_opened")
                           if c[k] == "1900-01-01")
    assert placeholders  # HQ's default for a missing date


def test_case_types_indices_and_closing(cases):
    by_type = Counter(c["properties"]["case_type"] for c in cases.values())
    assert set(by_type) == {"household", "patient", "contact"}
    relationships = Counter(i["relationship"] for c in cases.values()
                            for i in c["indices"].values())
    assert set(relationships) == {"child", "extension"}
    for case in cases.values():
        for ident, index in case["indices"].items():
            target = cases[index["case_id"]]
            assert target["properties"]["case_type"] == index["case_type"]
        if case["properties"]["case_type"] == "contact":
            assert case["indices"]["host"]["relationship"] == "extension"
    counts = Counter(len(c["indices"]) for c in cases.values())
    assert counts[0] and counts[1] and counts[2]
    closed = [c for c in cases.values() if c["closed"]]
    assert closed and all(c["closed_by"] and c["date_closed"] for c in closed)
    assert all(c["closed_by"] is None and c["date_closed"] is None
               for c in cases.values() if not c["closed"])
    owners = Counter(c["properties"]["owner_id"] == c["opened_by"] for c in cases.values())
    assert owners[True] and owners[False]  # user-owned (fallback) and group/location-owned


def test_cases_and_forms_agree(cases, forms):
    for case in cases.values():
        assert case["xform_ids"] and all(f in forms for f in case["xform_ids"])
        blocks = [b for f in case["xform_ids"] for _, b in _blocks(forms[f]["form"])
                  if b["@case_id"] == case["id"]]
        assert "create" in blocks[0]
        assert blocks[0]["create"]["case_type"] == case["properties"]["case_type"]
        assert case["closed"] == any("close" in b for b in blocks)
        last = forms[case["xform_ids"][-1]]
        assert case["server_date_modified"] == last["received_on"]
    touched = {b["@case_id"] for f in forms.values() for _, b in _blocks(f["form"])}
    assert touched == set(cases)


def test_form_shape(forms):
    form = next(iter(forms.values()))
    assert {"id", "domain", "form", "type", "version", "uiversion", "metadata", "received_on",
            "server_modified_on", "edited_on", "edited_by_user_id", "indexed_on", "app_id",
            "build_id", "initial_processing_complete", "problem", "archived", "attachments",
            "is_phone_submission", "submit_ip", "resource_uri"} == set(form)
    for form in forms.values():
        body = form["form"]
        assert {"#type", "@name", "@uiVersion", "@version", "@xmlns", "meta"} <= set(body)
        assert body["meta"]["instanceID"] == form["id"] and HQ_TIME.match(form["received_on"])
        assert form["metadata"]["doc_type"] == "Metadata"
        assert not form["metadata"]["timeEnd"].endswith("Z")
        assert "form.xml" in form["attachments"]
        assert form["version"] == body["@version"] and form["type"] == body["#type"] == "data"
    assert any(len(f["attachments"]) > 1 for f in forms.values())  # images
    assert any(f["archived"] for f in forms.values())
    assert any(f["edited_on"] for f in forms.values())
    assert any(isinstance(f["form"].get("case"), list) for f in forms.values())


REPEATS = {"Register Household": ("members",), "Patient Visit": ("medications",),
           "Household Visit": ("new_births",), "Community Survey": ("facilities",)}


def test_repeats_come_as_list_dict_or_nothing_and_nest(forms):
    shapes: dict[str, set[str]] = {}
    nested = set()
    for form in forms.values():
        body = form["form"]
        for name in REPEATS.get(body["@name"], ()):
            value = body.get(name)
            shape = ("many" if isinstance(value, list) else "one" if isinstance(value, dict)
                     else "zero" if value is None else "other")
            shapes.setdefault(f"{body['@name']}:{name}", set()).add(shape)
        for item in _items(body.get("medications")):
            doses = item.get("doses")
            nested.add("many" if isinstance(doses, list) else "one" if doses else "zero")
    assert shapes["Patient Visit:medications"] == {"zero", "one", "many"}
    assert shapes["Register Household:members"] == {"zero", "one", "many"}
    assert nested == {"zero", "one", "many"}  # a repeat inside a repeat, in all three shapes
    in_repeat = Counter(path for f in forms.values() for path, _ in _blocks(f["form"]))
    assert in_repeat["members/case"] and in_repeat["case"]


def _items(value: Any) -> list[dict]:
    return value if isinstance(value, list) else [value] if isinstance(value, dict) else []


def test_awkward_property_names_and_values_are_always_there(cases):
    names = {n for c in cases.values() for n in c["properties"]}
    assert {"first name", "First Name", "first_name", "Age", "age", "âge", "名字", "select",
            "order", "user", "2nd_visit", "visit.count", "phone-number"} <= names
    assert [n for n in names if len(n.encode()) > 63]
    values = [v for c in cases.values() for v in c["properties"].values()]
    assert "" in values and None in values and "1900-01-01" in values
    assert any(isinstance(v, str) and len(v) >= 10_240 for v in values)
    shapes = {re.sub(r"\d", "9", v) for v in values if isinstance(v, str) and v[:2] in ("20", "19")}
    assert {"9999-99-99", "9999-99-99T99:99:99.999999Z", "9999-99-99T99:99:99Z",
            "9999-99-99T99:99:99.999999"} <= shapes
    assert not any("\x00" in n for n in names)


def test_awkward_mode_adds_what_a_loader_must_clean():
    ds = Dataset.generate(seed=2, n_cases=60, awkward=True)
    raw = b"".join(r.head + r.tail for r in ds.cases)
    assert b"\\ud800" in raw  # a lone surrogate, only expressible as a JSON escape
    cases = ds.snapshot("case").values()
    assert any("\x00" in name for c in cases for name in c["properties"])
    assert any(isinstance(v, str) and "\x00" in v for c in cases for v in c["properties"].values())
    assert any("extra_top_level_field" in c for c in cases)
    forms = ds.snapshot("form").values()
    assert any("extra_form_field" in f for f in forms)
    plain = Dataset.generate(seed=2, n_cases=60)
    assert b"\\u0000" not in b"".join(r.head + r.tail for r in plain.cases + plain.forms)


def test_small_natural_ties(ds: Dataset):
    per_ms = Counter(r.ix for r in ds.cases)
    assert any(n > 1 for n in per_ms.values())
    forms_ms = Counter(r.ix for r in ds.forms)
    assert any(n > 1 for n in forms_ms.values())


def test_apps_describe_the_generated_forms(ds: Dataset, forms):
    app_forms = {f["xmlns"]: (m, f) for a in ds.apps for m in a["modules"] for f in m["forms"]}
    assert {f["form"]["@xmlns"] for f in forms.values()} == set(app_forms)
    for form in forms.values():
        module, app_form = app_forms[form["form"]["@xmlns"]]
        assert app_form["name"]["en"] == form["form"]["@name"]
        questions = {q["value"]: q for q in app_form["questions"]}
        for path, value in _answers(form["form"]):
            assert f"/data/{path}" in questions, (form["form"]["@name"], path)
    one = app_forms[next(iter(app_forms))][1]["questions"][1]
    assert {"label", "label_ref", "tag", "value", "repeat", "group", "type", "relevant",
            "required", "constraint", "comment", "hashtagValue", "setvalue", "is_group",
            "translations"} <= set(one)
    types = {q["type"] for _, f in app_forms.values() for q in f["questions"]}
    assert {"Text", "Int", "Double", "Date", "DateTime", "Time", "Select", "MSelect", "Group",
            "FieldList", "Repeat", "DataBindOnly", "Trigger", "Image", "Geopoint"} <= types
    doses = next(q for _, f in app_forms.values() for q in f["questions"]
                 if q["value"] == "/data/medications/doses")
    assert doses["type"] == "Repeat" and doses["repeat"] == doses["group"] == "/data/medications"
    amount = next(q for _, f in app_forms.values() for q in f["questions"]
                  if q["value"] == "/data/medications/doses/amount")
    assert amount["repeat"] == "/data/medications/doses"
    select = next(q for _, f in app_forms.values() for q in f["questions"] if q["type"] == "Select")
    assert {"label", "value"} <= set(select["options"][0])
    modules = {m["case_type"]: m for a in ds.apps for m in a["modules"]}
    assert {"first name", "visit.count"} <= set(modules["patient"]["case_properties"])


def _answers(node: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in node.items():
        if key.startswith(("@", "#")) or key in ("case", "meta"):
            continue
        path = f"{prefix}{key}"
        items = value if isinstance(value, list) else [value]
        if any(isinstance(i, dict) for i in items):
            yield path, value
            for item in items:
                yield from _answers(item, path + "/")
        else:
            yield path, value


def test_generation_is_roughly_ordered_in_time(ds: Dataset):
    assert [(r.ix, r.seq) for r in ds.cases] == sorted((r.ix, r.seq) for r in ds.cases)
    first = datetime.fromisoformat(ds.snapshot("case")[ds.cases[0].id]["indexed_on"])
    assert first.year == 2024
