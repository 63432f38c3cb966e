"""Case API v2: envelope, case shape, keyset cursor, filters and its 400s."""

from __future__ import annotations

import base64
from datetime import datetime
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest

from tests.simulator.conftest import CASES_V2, Client

SPECIALS = {"case_name", "case_type", "date_opened", "external_id", "owner_id"}


def _follow(client: Client, params: dict) -> tuple[list[dict], list[dict]]:
    """(all cases, every page body) following `next`."""
    pages, cases = [], []
    doc = client.json(CASES_V2, params)
    while True:
        pages.append(doc)
        cases += doc["cases"]
        if not doc["next"]:
            return cases, pages
        doc = client.json(doc["next"])


def test_envelope_and_case_shape(shared: Client, shared_sim):
    response = shared.get(CASES_V2, {"limit": 3})
    assert response.status_code == 200
    doc = response.json()
    assert list(doc) == ["matching_records", "cases", "next"]
    assert doc["matching_records"] == 150
    case = doc["cases"][0]
    assert list(case) == ["domain", "case_id", "case_type", "case_name", "external_id",
                          "owner_id", "date_opened", "last_modified", "server_last_modified",
                          "indexed_on", "closed", "date_closed", "properties", "indices"]
    v05 = shared_sim.snapshot("demo", "case")[case["case_id"]]
    assert not SPECIALS & set(case["properties"])
    assert case["properties"] == {k: v for k, v in v05["properties"].items() if k not in SPECIALS}
    assert {k: case[k] for k in SPECIALS} == {k: v05["properties"][k] for k in SPECIALS}
    assert case["indices"] == v05["indices"] and case["indexed_on"] == v05["indexed_on"]
    # The next link is absolute and carries only a cursor.
    parts = urlsplit(doc["next"])
    assert parts.scheme == "http" and parts.netloc == urlsplit(shared_sim.base_url).netloc
    assert parts.path == CASES_V2 and list(parse_qs(parts.query)) == ["cursor"]


def test_cursor_is_base64_of_the_params_and_where_the_page_ended(shared: Client):
    doc = shared.json(CASES_V2, {"limit": 4, "case_type": "patient"})
    cursor = parse_qs(urlsplit(doc["next"]).query)["cursor"][0]
    params = dict(parse_qsl(base64.b64decode(cursor).decode()))
    last = doc["cases"][-1]
    assert params == {"limit": "4", "case_type": "patient", "indexed_on.gte": last["indexed_on"],
                      "last_case_id": last["case_id"]}


def test_paging_is_sorted_by_indexed_on_then_case_id_without_loss(shared: Client, shared_sim):
    cases, pages = _follow(shared, {"limit": 7})
    ids = [c["case_id"] for c in cases]
    assert len(ids) == len(set(ids)) == 150 == len(shared_sim.snapshot("demo", "case"))

    def key(c):
        moment = datetime.fromisoformat(c["indexed_on"])
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000), c["case_id"]

    assert [key(c) for c in cases] == sorted(key(c) for c in cases)
    # next iff the page is full: 150 = 21 * 7 + 3, so the last page is short and has no next.
    assert len(pages) == 22 and len(pages[-1]["cases"]) == 3 and pages[-1]["next"] is None


def test_a_full_last_page_still_has_a_next_and_then_an_empty_page(shared: Client):
    cases, pages = _follow(shared, {"limit": 50})
    assert len(cases) == 150
    assert [len(p["cases"]) for p in pages] == [50, 50, 50, 0]
    assert pages[-1]["next"] is None


def test_other_params_are_ignored_when_a_cursor_is_present(shared: Client):
    first = shared.json(CASES_V2, {"limit": 5, "case_type": "household"})
    cursor = parse_qs(urlsplit(first["next"]).query)["cursor"][0]
    plain = shared.json(CASES_V2, {"cursor": cursor})
    noisy = shared.json(CASES_V2, {"cursor": cursor, "case_type": "contact", "limit": 1,
                                   "bogus": "x"})
    assert plain == noisy
    assert {c["case_type"] for c in plain["cases"]} == {"household"}


def test_filters(shared: Client, shared_sim):
    cases = list(shared_sim.snapshot("demo", "case").values())
    contacts = [c for c in cases if c["properties"]["case_type"] == "contact"]
    got, _ = _follow(shared, {"case_type": "contact", "limit": 100})
    assert {c["case_id"] for c in got} == {c["id"] for c in contacts}
    closed, _ = _follow(shared, {"closed": "true", "limit": 100})
    assert {c["case_id"] for c in closed} == {c["id"] for c in cases if c["closed"]}
    either, _ = _follow(shared, [("case_type", "contact"), ("case_type", "household")])
    assert len(either) == sum(c["properties"]["case_type"] in ("contact", "household")
                              for c in cases)
    host = next(c for c in contacts if "host" in c["indices"])["indices"]["host"]["case_id"]
    extensions, _ = _follow(shared, {"indices.host": host})
    assert extensions and all(c["indices"]["host"]["case_id"] == host for c in extensions)
    sex, _ = _follow(shared, {"properties.sex": "female", "limit": 500})
    assert len(sex) == sum(c["properties"].get("sex") == "female" for c in cases)


def test_indexed_on_bounds_accept_z_offsets_and_whole_days(shared: Client, shared_sim):
    cases = sorted(shared_sim.snapshot("demo", "case").values(), key=lambda c: c["indexed_on"])
    pivot = cases[75]["indexed_on"]
    moment = datetime.fromisoformat(pivot)
    ms = moment.replace(microsecond=moment.microsecond // 1000 * 1000)

    def at_ms(c):
        m = datetime.fromisoformat(c["indexed_on"])
        return m.replace(microsecond=m.microsecond // 1000 * 1000)

    for value in (pivot, moment.isoformat(), moment.isoformat().replace("+00:00", "Z")):
        got = shared.json(CASES_V2, {"indexed_on.gte": value, "limit": 5000})
        assert got["matching_records"] == sum(at_ms(c) >= ms for c in cases)
        got = shared.json(CASES_V2, {"indexed_on.lt": value, "limit": 5000})
        assert got["matching_records"] == sum(at_ms(c) < ms for c in cases)
    day = pivot[:10]
    got = shared.json(CASES_V2, {"indexed_on.lte": day, "limit": 5000})
    assert got["matching_records"] == sum(c["indexed_on"][:10] <= day for c in cases)


@pytest.mark.parametrize("params, message", [
    ({"limit": 5001}, "You cannot request more than 5000 cases per request."),
    ({"limit": "many"}, "'many' is not a valid value for 'limit'"),
    ({"type": "patient"}, "'type' is not a valid parameter."),
    ({"offset": "10"}, "'offset' is not a valid parameter."),
    ({"indexed_on_start": "2024-01-01"}, "'indexed_on_start' is not a valid parameter."),
    ({"indexed_on.after": "2024-01-01"}, "'after' is not a valid type of date range."),
])
def test_v2_400s(shared: Client, params, message):
    response = shared.get(CASES_V2, params)
    assert response.status_code == 400
    assert response.json() == {"error": message}


def test_single_case_and_bulk_by_ids(shared: Client, shared_sim):
    some = sorted(shared_sim.snapshot("demo", "case"))[:2]
    for path in (f"{CASES_V2}{some[0]}", f"{CASES_V2}{some[0]}/",
                 f"/a/demo/api/v0.6/case/{some[0]}"):
        assert shared.json(path)["case_id"] == some[0]
    missing = shared.get(f"{CASES_V2}nope")
    assert missing.status_code == 404 and missing.json() == {"error": "Case 'nope' not found"}
    bulk = shared.json(f"{CASES_V2}{some[0]},nope,{some[1]}")
    assert bulk["matching_records"] == 2 and bulk["missing_records"] == 1
    assert [c.get("case_id") for c in bulk["cases"]] == [some[0], "nope", some[1]]
    assert bulk["cases"][1] == {"case_id": "nope", "error": "not found"}


def test_old_url_alias(shared: Client):
    assert shared.json("/a/demo/api/v0.6/case/", {"limit": 2})["matching_records"] == 150
