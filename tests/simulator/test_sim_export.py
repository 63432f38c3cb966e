"""The legacy export API: `/a/<domain>/reports/export/` with its token checkpoints, over HTTP with
digest auth, against `HQSimulator.export_view`."""

from __future__ import annotations

import json
import re
from typing import Iterator

import pytest
import requests
from requests.auth import HTTPBasicAuth, HTTPDigestAuth

from etl.simulator import Dataset, HQSimulator, appdef
from etl.simulator.exporttables import _UniqueHeaders
from tests.simulator.conftest import KEY, USER

PASSWORD = "sim-password"
EXPORT = "/a/demo/reports/export/"
SURVEY = appdef.SURVEY.xmlns  # a `facilities` repeat
VISIT = appdef.PT_VISIT.xmlns  # `medications`, with a `doses` repeat inside
NEW = "http://openrosa.org/formdesigner/NOT-IN-ANY-APP"


def _make() -> HQSimulator:
    return HQSimulator([Dataset.generate(domain="demo", seed=3, n_cases=40),
                        Dataset.generate(domain="elsewhere", seed=4, n_cases=3)],
                       users={USER: (KEY, None, PASSWORD),
                              "other@example.org": ("k", ["elsewhere"], "pw")},
                       replicas=1).start()


@pytest.fixture
def esim() -> Iterator[HQSimulator]:
    sim = _make()
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def shared_esim() -> Iterator[HQSimulator]:
    """Read-only."""
    sim = _make()
    sim.add_forms("demo", 12, xmlns=SURVEY)
    sim.add_forms("demo", 12, xmlns=VISIT)
    yield sim
    sim.stop()


def _session() -> requests.Session:
    session = requests.Session()
    session.auth = HTTPDigestAuth(USER, PASSWORD)
    return session


def _get(sim: HQSimulator, xmlns: str | None = SURVEY, session: requests.Session | None = None,
         **params: str) -> requests.Response:
    query = {"export_tag": json.dumps(xmlns), "format": "json", **params}
    if xmlns is None:
        del query["export_tag"]
    return (session or _session()).get(sim.base_url + EXPORT, params=query,
                                       allow_redirects=False, timeout=30)


def _rekey(body: dict) -> dict:
    """The served tables keyed like `export_view`: rows by form id, child rows by
    (form id, row id after the form's row number)."""
    root = body["#"]
    number_to_id = {row[0]: row[-1] for row in root["rows"]}
    out = {}
    for title, table in body.items():
        headers = table["headers"]
        assert headers[0] == "id"
        rows = {}
        for row in table["rows"]:
            if title == "#":
                key = row[-1]
            else:
                number, _, local = row[0].partition(".")
                key = (number_to_id[number], local)
            rows[key] = dict(zip(headers[1:], row[1:]))
        out[title] = rows
    return out


def test_a_full_export_is_couchexports_json_and_matches_export_view(shared_esim):
    response = _get(shared_esim)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-CommCareHQ-Export-Token"])
    body = response.json()
    assert list(body) == ["#", "#.form.facilities.#"]
    root = body["#"]
    assert root["headers"][0] == "id" and root["headers"][-2:] == ["received_on", "_id"]
    for name in ("form.@name", "form.@xmlns", "form.meta.instanceID", "form.meta.timeStart",
                 "form.meta.timeEnd", "form.meta.username", "form.meta.userID",
                 "form.respondent", "form.scores.q1"):
        assert name in root["headers"]
    assert [row[0] for row in root["rows"]] == [str(n) for n in range(len(root["rows"]))]
    forms = shared_esim.snapshot("demo", "form")
    survey_ids = [i for i, f in forms.items() if f["form"]["@xmlns"] == SURVEY
                  and not f["archived"]]
    served_ids = [row[-1] for row in root["rows"]]
    assert sorted(served_ids) == sorted(survey_ids)
    assert served_ids == sorted(served_ids, key=lambda i: forms[i]["received_on"])
    xmlns_at = root["headers"].index("form.@xmlns")
    assert {row[xmlns_at] for row in root["rows"]} == {SURVEY}
    assert all(isinstance(v, str) for t in body.values() for row in t["rows"] for v in row)
    child = body["#.form.facilities.#"]
    assert child["headers"] == ["id", "form.facilities.facility_name",
                                "form.facilities.facility_type"]
    assert all(re.fullmatch(r"\d+\.\d+", row[0]) for row in child["rows"])
    assert _rekey(body) == shared_esim.export_view("demo", SURVEY)


def test_repeats_are_child_tables_with_parent_row_ids(shared_esim):
    body = _get(shared_esim, VISIT).json()
    assert {"#.form.medications.#", "#.form.medications.#.doses.#"} <= set(body)
    doses = body["#.form.medications.#.doses.#"]
    assert doses["rows"] and all(re.fullmatch(r"\d+\.\d+\.\d+", r[0]) for r in doses["rows"])
    assert "form.medications.doses.amount" in doses["headers"]
    medications = {r[0] for r in body["#.form.medications.#"]["rows"]}
    assert {r[0].rsplit(".", 1)[0] for r in doses["rows"]} <= medications
    # a repeat answered once is an object in the form JSON, and a table here all the same
    forms = shared_esim.snapshot("demo", "form")
    by_id = {r[-1]: r[0] for r in body["#"]["rows"]}
    single = [i for i, f in forms.items() if f["form"]["@xmlns"] == VISIT
              and isinstance(f["form"].get("medications"), dict)]
    assert single
    assert f"{by_id[single[0]]}.0" in medications
    assert "form.medications.drug" not in body["#"]["headers"]
    assert _rekey(body) == shared_esim.export_view("demo", VISIT)


@pytest.mark.parametrize("tag, message", [
    (SURVEY, "export_tag must be a JSON string"), ("", "export_tag is required"),
    ("[1, 2]", "export_tag must be a JSON string")])
def test_export_tag_must_be_quoted(shared_esim, tag, message):
    response = _session().get(shared_esim.base_url + EXPORT,
                              params={"export_tag": tag, "format": "json"}, timeout=10)
    assert response.status_code == 400 and message in response.text


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "xls", "html", "raw", None])
def test_only_json_is_served(shared_esim, fmt):
    params = {"export_tag": json.dumps(SURVEY)}
    if fmt:
        params["format"] = fmt
    response = _session().get(shared_esim.base_url + EXPORT, params=params, timeout=10)
    assert response.status_code == 400
    assert f"format {fmt or 'xlsx'}" in response.text and "not supported" in response.text


def test_the_export_takes_web_logins_by_digest_or_basic_only(shared_esim):
    url = shared_esim.base_url + EXPORT
    params = {"export_tag": json.dumps(SURVEY), "format": "json"}
    for headers in ({}, {"Authorization": f"ApiKey {USER}:{KEY}"}):
        response = requests.get(url, params=params, headers=headers, timeout=10)
        assert response.status_code == 401 and response.content == b""
        assert response.headers["WWW-Authenticate"].startswith('Digest realm="DJANGO"')
    assert requests.get(url, params=params, auth=HTTPBasicAuth(USER, PASSWORD),
                        timeout=10).status_code == 200
    assert requests.get(url, params=params, auth=HTTPDigestAuth(USER, "wrong"),
                        timeout=10).status_code == 401
    other = requests.get(url, params=params, auth=HTTPDigestAuth("other@example.org", "pw"),
                         timeout=10)
    assert other.status_code == 403


def test_tokens_give_only_what_was_saved_since(esim):
    session = _session()
    first = _get(esim, session=session)
    token = first.headers["X-CommCareHQ-Export-Token"]
    rows = first.json()["#"]["rows"]
    archived_id = rows[0][-1]
    esim.archive_forms("demo", [archived_id])
    nothing = _get(esim, session=session, previous_export=token)
    assert nothing.status_code == 302  # archiving takes a form out, it adds nothing
    new_ids = esim.add_forms("demo", 3, xmlns=SURVEY)
    second = _get(esim, session=session, previous_export=token)
    assert second.status_code == 200
    body = second.json()
    assert [r[-1] for r in body["#"]["rows"]] == new_ids
    assert [r[0] for r in body["#"]["rows"]] == ["0", "1", "2"]  # numbered anew
    token2 = second.headers["X-CommCareHQ-Export-Token"]
    assert token2 != token
    esim.unarchive_forms("demo", [archived_id])
    third = _get(esim, session=session, previous_export=token2)
    assert [r[-1] for r in third.json()["#"]["rows"]] == [archived_id]
    # the first token still means "since the first export"
    again = _get(esim, session=session, previous_export=token)
    assert {r[-1] for r in again.json()["#"]["rows"]} == set(new_ids) | {archived_id}


def test_an_edited_form_comes_again_with_its_new_answers(esim):
    session = _session()
    token = _get(esim, session=session).headers["X-CommCareHQ-Export-Token"]
    form_id = next(i for i, f in esim.snapshot("demo", "form").items()
                   if f["form"]["@xmlns"] == SURVEY)
    doc = esim.snapshot("demo", "form")[form_id]
    doc["form"]["respondent"] = "edited answer"
    doc["indexed_on"] = None
    esim.add_record("demo", "form", doc)
    body = _get(esim, session=session, previous_export=token).json()
    (row,) = body["#"]["rows"]
    assert row[-1] == form_id
    assert row[body["#"]["headers"].index("form.respondent")] == "edited answer"


def test_no_data_is_a_302_to_the_export_list_which_is_html(esim):
    session = _session()
    empty = _get(esim, "http://openrosa.org/formdesigner/NOBODY", session=session)
    assert empty.status_code == 302 and "X-CommCareHQ-Export-Token" not in empty.headers
    assert empty.headers["Location"] == "/a/demo/data/excel_export_data/"
    assert empty.headers["Content-Type"].startswith("text/html")
    followed = session.get(esim.base_url + EXPORT, timeout=10, params={
        "export_tag": json.dumps("http://openrosa.org/formdesigner/NOBODY"), "format": "json"})
    assert followed.status_code == 200 and followed.history[0].status_code == 302
    assert followed.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        followed.json()


@pytest.mark.parametrize("token", ["0" * 32, "not-a-token"])
def test_an_unknown_token_means_a_full_export(shared_esim, token):
    full = _get(shared_esim).json()
    assert _get(shared_esim, previous_export=token).json() == full


def test_a_token_for_another_xmlns_means_a_full_export(shared_esim):
    token = _get(shared_esim, VISIT).headers["X-CommCareHQ-Export-Token"]
    assert _get(shared_esim, previous_export=token).json() == _get(shared_esim).json()


def test_forms_of_an_xmlns_no_app_has(esim):
    ids = esim.add_forms("demo", 4, xmlns=NEW)
    body = _get(esim, NEW).json()
    assert [r[-1] for r in body["#"]["rows"]] == ids


def test_an_export_over_the_limit_is_a_500_page(esim):
    size = len(_get(esim).content)
    esim.set_export_limit(size - 1)
    response = _get(esim)
    assert response.status_code == 500
    assert response.headers["Content-Type"].startswith("text/html")
    assert "X-CommCareHQ-Export-Token" not in response.headers
    esim.set_export_limit(size)
    assert _get(esim).status_code == 200


def test_max_column_size_trims_headers_from_the_start(shared_esim):
    full = _get(shared_esim).json()["#"]["headers"]
    trimmed = _get(shared_esim, max_column_size="12").json()["#"]["headers"]
    assert len(trimmed) == len(full) and all(len(h) <= 12 for h in trimmed)
    assert "form.meta.timeEnd"[-12:] in trimmed
    assert len({h.lower() for h in trimmed}) == len(trimmed)
    # form.@xmlns and form.meta.@xmlns both end in "@xmlns": the second gets a number
    six = _get(shared_esim, max_column_size="6").json()["#"]["headers"]
    assert six[:6] == ["id", ".#type", ".@name", "ersion", "rsion1", "@xmlns"]
    assert "xmlns1" in six
    assert _get(shared_esim, max_column_size="lots").status_code == 500


def test_unique_headers_are_couchexports():
    g = _UniqueHeaders(4)
    assert [g.next(h) for h in ("id", "abcdef", "xxcdef", "ABCDEF", "Id")] == [
        "id", "cdef", "def1", "DEF2", "Id1"]


def test_every_forms_export_matches_export_view_even_with_awkward_data():
    sim = HQSimulator([Dataset.generate(n_cases=120, awkward=True)],
                      users={USER: (KEY, None, PASSWORD)}).start()
    try:
        for fdef in appdef.FORMS.values():
            response = _get(sim, fdef.xmlns)
            assert response.status_code == 200, fdef.key
            assert _rekey(response.json()) == sim.export_view("demo", fdef.xmlns), fdef.key
    finally:
        sim.stop()
