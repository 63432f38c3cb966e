"""Case and form API v0.5: envelopes, paging, sorting, filters and date validation."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.simulator.conftest import CASES, FORMS, Client

UTC = timezone.utc


def _ms(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_envelope_meta_and_headers(shared: Client, shared_sim):
    response = shared.get(CASES, {"limit": 5})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert int(response.headers["Content-Length"]) == len(response.content)
    doc = response.json()
    assert list(doc) == ["meta", "objects"]
    assert list(doc["meta"]) == ["limit", "next", "offset", "previous", "total_count"]
    assert doc["meta"]["limit"] == 5 and doc["meta"]["offset"] == 0
    assert doc["meta"]["previous"] is None
    assert doc["meta"]["total_count"] == len(shared_sim.snapshot("demo", "case")) == 150
    case = doc["objects"][0]
    assert set(case) == {"case_id", "closed", "closed_by", "date_closed", "date_modified", "domain",
                         "id", "indexed_on", "indices", "opened_by", "properties", "resource_uri",
                         "server_date_modified", "server_date_opened", "user_id", "xform_ids"}
    specials = {"case_name", "case_type", "date_opened", "external_id", "owner_id"}
    assert specials <= set(case["properties"])
    assert case["resource_uri"] == f"{CASES}{case['id']}/"


def test_default_limit_and_paging_links_are_relative_and_keep_params(shared: Client):
    doc = shared.json(CASES, [("type", "patient"), ("order_by", "indexed_on"), ("limit", "7"),
                              ("format", "json"), ("order_by", "-server_date_modified")])
    nxt = doc["meta"]["next"]
    assert nxt.startswith(CASES + "?")
    # QueryDict order: keys in first-seen order (repeated values together), then limit, offset.
    assert parse_qsl(urlsplit(nxt).query) == [
        ("type", "patient"), ("order_by", "indexed_on"), ("order_by", "-server_date_modified"),
        ("format", "json"), ("limit", "7"), ("offset", "7")]
    assert shared.json(CASES)["meta"]["limit"] == 20
    second = shared.json(nxt)
    assert second["meta"]["previous"].endswith("limit=7&offset=0")


def test_following_next_reads_everything_once(shared: Client, shared_sim):
    ids = [c["id"] for c in shared.all_v05(CASES, {"limit": 13, "order_by": "indexed_on"})]
    assert len(ids) == len(set(ids)) == 150
    assert set(ids) == set(shared_sim.snapshot("demo", "case"))
    last = shared.json(CASES, {"limit": 13, "offset": 143, "order_by": "indexed_on"})
    assert last["meta"]["next"] is None and len(last["objects"]) == 7


@pytest.mark.parametrize("path, max_limit", [(CASES, 5000), (FORMS, 1000)])
@pytest.mark.parametrize("asked", ["0", "100000"])
def test_limit_zero_or_too_big_is_clamped_to_the_maximum(shared: Client, path, max_limit, asked):
    meta = shared.json(path, {"limit": asked})["meta"]
    assert meta["limit"] == max_limit


@pytest.mark.parametrize("params, message", [
    ({"limit": "ten"}, "Invalid limit 'ten' provided. Please provide a positive integer."),
    ({"limit": "-1"}, "Invalid limit '-1' provided. Please provide a positive integer >= 0."),
    ({"offset": "x"}, "Invalid offset 'x' provided. Please provide an integer."),
    ({"offset": "-5"}, "Invalid offset '-5' provided. Please provide a positive integer >= 0."),
    ({"order_by": "case_id"}, "The 'case_id' field does not allow ordering."),
    ({"order_by": "-nonsense"}, "No matching 'nonsense' field for ordering on."),
])
def test_bad_paging_and_sorting_params_are_400_with_an_error(shared: Client, params, message):
    response = shared.get(CASES, params)
    assert response.status_code == 400
    assert response.json() == {"error": message}


def test_default_sorts_cases_oldest_modified_first_forms_newest_received_first(shared: Client):
    cases = shared.json(CASES, {"limit": 200})["objects"]
    keys = [c["server_date_modified"] for c in cases]
    assert [_ms(k) for k in keys] == sorted(_ms(k) for k in keys)
    forms = shared.json(FORMS, {"limit": 1000})["objects"]
    received = [_ms(f["received_on"]) for f in forms]
    assert received == sorted(received, reverse=True)


def test_order_by_descending_and_several_keys(shared: Client):
    cases = shared.json(CASES, {"limit": 200, "order_by": "-indexed_on"})["objects"]
    stamps = [_ms(c["indexed_on"]) for c in cases]
    assert stamps == sorted(stamps, reverse=True)
    both = shared.json(CASES, [("limit", "200"), ("order_by", "date_modified"),
                               ("order_by", "-indexed_on")])["objects"]
    # Missing dates ("1900-01-01" placeholders) sort first ascending, as ES's missing: _first.
    keys = [(0, 0.0) if c["date_modified"] == "1900-01-01"
            else (1, _ms(c["date_modified"]).timestamp()) for c in both]
    assert keys == sorted(keys)
    for a, b in zip(both, both[1:]):
        if a["date_modified"] == b["date_modified"]:
            assert _ms(a["indexed_on"]) >= _ms(b["indexed_on"])


@pytest.mark.parametrize("value", ["2024-01-05", "2024-01-05T06:07:08", "2024-01-05T06:07:08.5",
                                   "2024-01-05T06:07:08.123456", "2024-01-05T06:07Z"])
def test_the_four_accepted_date_formats(shared: Client, value):
    assert shared.get(CASES, {"indexed_on_start": value}).status_code == 200
    assert shared.get(FORMS, {"received_on_end": value}).status_code == 200


@pytest.mark.parametrize("value", ["2024-01-05T06:07:08Z", "2024-01-05T06:07:08.123Z",
                                   "2024-01-05T06:07:08+00:00", "2024-01-05 06:07:08",
                                   "05/01/2024", "", "2024-01-05T06:07"])
@pytest.mark.parametrize("param", ["indexed_on_start", "indexed_on_end",
                                   "server_date_modified_start", "date_modified_end"])
def test_other_date_formats_are_rejected_like_hq(shared: Client, value, param):
    response = shared.get(CASES, {param: value})
    assert response.status_code == 400
    assert response.json() == {"error": f"Bad query parameter: Unknown date format: {value}"}


def test_date_ranges_are_inclusive_at_millisecond_precision(shared: Client, shared_sim):
    cases = sorted(shared_sim.snapshot("demo", "case").values(), key=lambda c: c["indexed_on"])
    target = cases[40]
    stamp = _ms(target["indexed_on"])
    naive = stamp.replace(tzinfo=None)
    same_ms = [c["id"] for c in cases if _ms(c["indexed_on"]) == stamp]
    # The bound carries other microseconds of the same millisecond: still equal to ES.
    for bound in (naive + timedelta(microseconds=999), naive):
        text = bound.strftime("%Y-%m-%dT%H:%M:%S.%f")
        got = shared.json(CASES, {"indexed_on_start": text, "indexed_on_end": text,
                                  "order_by": "indexed_on"})["objects"]
        assert sorted(c["id"] for c in got) == sorted(same_ms)
    after = (naive + timedelta(milliseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%f")
    got = shared.json(CASES, {"indexed_on_start": after, "limit": 0})["objects"]
    assert target["id"] not in {c["id"] for c in got}
    assert len(got) == sum(_ms(c["indexed_on"]) > stamp for c in cases)


def test_indexed_on_start_with_order_by_indexed_on_is_the_incremental_pattern(shared: Client,
                                                                              shared_sim):
    cases = sorted(shared_sim.snapshot("demo", "case").values(), key=lambda c: c["indexed_on"])
    start = _ms(cases[100]["indexed_on"]).replace(tzinfo=None).isoformat(timespec="microseconds")
    doc = shared.json(CASES, {"indexed_on_start": start, "order_by": "indexed_on", "limit": 1000})
    expected = [c for c in cases if _ms(c["indexed_on"]) >= _ms(cases[100]["indexed_on"])]
    assert doc["meta"]["total_count"] == len(expected)
    assert [_ms(c["indexed_on"]) for c in doc["objects"]] == \
        [_ms(c["indexed_on"]) for c in expected]


def test_server_date_modified_and_received_on_ranges(shared: Client, shared_sim):
    forms = list(shared_sim.snapshot("demo", "form").values())
    middle = sorted(_ms(f["received_on"]) for f in forms)[len(forms) // 2]
    bound = middle.replace(tzinfo=None).isoformat(timespec="microseconds")
    got = shared.all_v05(FORMS, {"received_on_start": bound, "include_archived": "1",
                                 "limit": 1000})
    assert len(got) == sum(_ms(f["received_on"]) >= middle for f in forms)
    cases = list(shared_sim.snapshot("demo", "case").values())
    got = shared.json(CASES, {"server_date_modified_end": bound, "limit": 0})["objects"]
    assert len(got) == sum(_ms(c["server_date_modified"]) <= middle for c in cases)


def test_case_filters_are_lower_cased_term_matches(shared: Client, shared_sim):
    cases = shared_sim.snapshot("demo", "case").values()
    patients = [c for c in cases if c["properties"]["case_type"] == "patient"]
    for key in ("type", "case_type"):
        for value in ("patient", "PATIENT"):
            meta = shared.json(CASES, {key: value, "limit": 0})["meta"]
            assert meta["total_count"] == len(patients)
    owner = patients[0]["properties"]["owner_id"]
    owned = [c for c in cases if c["properties"]["owner_id"] == owner]
    assert shared.json(CASES, {"owner_id": owner, "limit": 0})["meta"]["total_count"] == len(owned)
    closed = [c for c in cases if c["closed"]]
    assert 0 < len(closed) < len(cases)
    assert shared.json(CASES, {"closed": "true", "limit": 0})["meta"]["total_count"] == len(closed)
    assert shared.json(CASES, {"closed": "False", "limit": 0})["meta"]["total_count"] == \
        len(cases) - len(closed)
    # Unknown parameters are term filters too: they just match nothing.
    assert shared.json(CASES, {"colour": "blue"})["meta"]["total_count"] == 0
    assert shared.json(CASES, {"include_archived": "true"})["meta"]["total_count"] == 0
    # ...unless a top-level field of that name matches the lower-cased value.
    some = patients[0]
    got = shared.json(CASES, {"case_id": some["case_id"]})["objects"]
    assert [c["id"] for c in got] == [some["id"]]


def test_forms_include_archived_is_a_presence_check(shared: Client, shared_sim):
    forms = shared_sim.snapshot("demo", "form").values()
    archived = [f for f in forms if f["archived"]]
    assert archived, "the generated data should have archived forms"
    default = shared.json(FORMS, {"limit": 0})["meta"]["total_count"]
    assert default == len(forms) - len(archived)
    for value in ("true", "false", "", "0"):
        assert shared.json(FORMS, {"limit": 0, "include_archived": value})["meta"]["total_count"] \
            == len(forms)


def test_forms_xmlns_and_case_id_filters(shared: Client, shared_sim):
    forms = [f for f in shared_sim.snapshot("demo", "form").values() if not f["archived"]]
    xmlns = forms[0]["form"]["@xmlns"]
    got = shared.all_v05(FORMS, {"xmlns": xmlns, "limit": 1000})
    assert {f["id"] for f in got} == {f["id"] for f in forms if f["form"]["@xmlns"] == xmlns}
    case = next(iter(shared_sim.snapshot("demo", "case").values()))
    got = shared.all_v05(FORMS, {"case_id": case["id"], "include_archived": "y"})
    assert {f["id"] for f in got} == set(case["xform_ids"])


@pytest.mark.parametrize("style", ["/a/demo/api/v0.5/{r}/", "/a/demo/api/{r}/v1/"])
@pytest.mark.parametrize("resource", ["case", "form"])
def test_both_url_styles_with_and_without_slash_echo_their_style(shared: Client, style, resource):
    list_uri = style.format(r=resource)
    for path in (list_uri, list_uri.rstrip("/")):
        doc = shared.json(path, {"limit": 2})
        assert doc["meta"]["next"].startswith(list_uri + "?")
        one = doc["objects"][0]
        assert one["resource_uri"] == f"{list_uri}{one['id']}/"
        for detail in (one["resource_uri"], one["resource_uri"].rstrip("/")):
            assert shared.json(detail) == one


def test_detail_miss_is_404_with_an_empty_body(shared: Client):
    response = shared.get(CASES + "no-such-case/")
    assert response.status_code == 404 and response.content == b""
    assert shared.get("/a/demo/api/v0.5/nothing/").status_code == 404


def test_applications_list_every_app_at_once(shared: Client, shared_sim):
    for path in ("/a/demo/api/v0.5/application/", "/a/demo/api/application/v1/"):
        doc = shared.json(path, {"limit": 1, "offset": 5})
        assert doc["meta"] == {"limit": None, "next": None, "offset": 0, "previous": None,
                               "total_count": 2}
        assert len(doc["objects"]) == 2
    app = doc["objects"][0]
    assert set(app) == {"id", "name", "version", "is_released", "built_on", "build_comment",
                        "built_from_app_id", "resource_uri", "modules", "versions"}
    assert shared.json(f"/a/demo/api/v0.5/application/{app['id']}/") == app


def test_mobile_workers_and_groups_match_the_data(shared: Client, shared_sim):
    for path in ("/a/demo/api/v0.5/user/", "/a/demo/api/user/v1/"):
        doc = shared.json(path, {"limit": 3})
        # tastypie's `next` for these resources has no path (HQ's own tests assert as much).
        assert doc["meta"]["total_count"] == 8 and doc["meta"]["next"] == "?limit=3&offset=3"
        assert doc["objects"][0]["resource_uri"] == f"{path}{doc['objects'][0]['id']}/"
    workers = shared.all_v05("/a/demo/api/v0.5/user/", {"limit": 5})
    assert {"id", "username", "first_name", "last_name", "default_phone_number", "email",
            "phone_numbers", "groups", "user_data", "eulas", "primary_location", "locations",
            "last_modified", "resource_uri"} == set(workers[0])
    submitters = {f["metadata"]["userID"] for f in shared_sim.snapshot("demo", "form").values()
                  if f["is_phone_submission"]}
    assert submitters <= {w["id"] for w in workers}
    groups = shared.json("/a/demo/api/v0.5/group/")["objects"]
    owners = {c["properties"]["owner_id"] for c in shared_sim.snapshot("demo", "case").values()}
    assert {g["id"] for g in groups if g["case_sharing"]} & owners
    team = groups[0]
    members = shared.json("/a/demo/api/v0.5/user/", {"group": team["id"]})["objects"]
    assert sorted(m["id"] for m in members) == sorted(team["users"])
    gone = shared.json("/a/demo/api/v0.5/user/", {"archived": "true"})["objects"]
    assert len(gone) == 1 and gone[0]["id"] not in submitters  # left before field work
    assert shared.json(f"/a/demo/api/v0.5/group/{team['id']}/")["name"] == team["name"]
