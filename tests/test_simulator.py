"""The HQ simulator speaks HQ's APIs as they are on the wire (shared/commcare-api.md)."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from etl.hqsim import Dataset, HQSimulator
from tests.conftest import KEY, USER

AUTH = {"Authorization": f"ApiKey {USER}:{KEY}"}


def get(sim, path, params=None, headers=AUTH):
    return requests.get(sim.base_url + path, params=params, headers=headers, timeout=10)


def test_v05_envelope_links_and_limit_clamp(sim):
    total = len(sim.snapshot("demo", "case"))
    r = get(sim, "/a/demo/api/v0.5/case/", {"type": "patient", "limit": 3, "offset": 3})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json; charset=utf-8"
    body = r.json()
    assert set(body) == {"meta", "objects"}
    meta = body["meta"]
    assert meta["limit"] == 3 and meta["offset"] == 3 and len(body["objects"]) == 3
    assert meta["next"] == "/a/demo/api/v0.5/case/?type=patient&limit=3&offset=6"
    assert meta["previous"] == "/a/demo/api/v0.5/case/?type=patient&limit=3&offset=0"
    assert all(o["properties"]["case_type"] == "patient" for o in body["objects"])
    # The per-resource URL style echoes itself; 0 and too-large limits clamp to the maximum.
    r = get(sim, "/a/demo/api/case/v1/", {"limit": 0}).json()
    assert r["meta"]["limit"] == 5000 and r["meta"]["total_count"] == total and r["meta"]["next"] is None
    assert get(sim, "/a/demo/api/form/v1/", {"limit": 99999}).json()["meta"]["limit"] == 1000
    assert get(sim, "/a/demo/api/v0.5/case/").json()["meta"]["limit"] == 20
    bad = get(sim, "/a/demo/api/v0.5/case/", {"limit": "-1"})
    assert bad.status_code == 400 and "error" in bad.json()


def test_case_and_form_shapes(sim):
    case = get(sim, "/a/demo/api/v0.5/case/", {"limit": 1}).json()["objects"][0]
    assert {"id", "case_id", "domain", "user_id", "opened_by", "closed_by", "closed", "date_closed",
            "date_modified", "server_date_modified", "server_date_opened", "indexed_on",
            "xform_ids", "properties", "indices", "resource_uri"} <= set(case)
    assert {"case_name", "case_type", "external_id", "owner_id", "date_opened"} <= set(case["properties"])
    assert "case_type" not in case  # only inside properties on v0.5
    assert case["indexed_on"].endswith("Z") and len(case["indexed_on"]) == 27
    form = get(sim, "/a/demo/api/v0.5/form/", {"limit": 1}).json()["objects"][0]
    assert {"id", "form", "received_on", "server_modified_on", "indexed_on", "app_id", "archived",
            "attachments", "metadata"} <= set(form)
    assert form["form"]["@xmlns"] and form["form"]["meta"]["instanceID"] == form["id"]
    detail = get(sim, f"/a/demo/api/v0.5/case/{case['case_id']}/")
    assert detail.json()["case_id"] == case["case_id"]
    missing = get(sim, "/a/demo/api/v0.5/case/nope/")
    assert missing.status_code == 404 and missing.content == b""


def test_default_sorts(sim):
    cases = get(sim, "/a/demo/api/v0.5/case/", {"limit": 5000}).json()["objects"]
    keys = [c["server_date_modified"][:23] for c in cases]  # HQ sorts at millisecond precision
    assert keys == sorted(keys)
    forms = get(sim, "/a/demo/api/v0.5/form/", {"limit": 1000}).json()["objects"]
    received = [f["received_on"][:23] for f in forms]
    assert received == sorted(received, reverse=True)  # forms: newest first by default
    assert get(sim, "/a/demo/api/v0.5/form/", {"order_by": "bogus"}).status_code == 400


@pytest.mark.parametrize("value, ok", [
    ("2024-01-01", True), ("2024-01-01T00:00:00", True), ("2024-01-01T00:00:00.000001", True),
    ("2024-01-01T00:00Z", True), ("2024-01-01T00:00:00Z", False),
    ("2024-01-01T00:00:00+00:00", False), ("yesterday", False)])
def test_strict_v05_dates(sim, value, ok):
    r = get(sim, "/a/demo/api/v0.5/case/", {"indexed_on_start": value})
    if ok:
        assert r.status_code == 200
    else:
        assert r.status_code == 400
        assert r.json() == {"error": f"Bad query parameter: Unknown date format: {value}"}


def test_ranges_are_inclusive_at_millisecond_precision(sim_factory):
    sim = sim_factory(n_cases=10)
    moment = datetime(2030, 1, 1, 0, 0, 0, 123456, tzinfo=timezone.utc)
    ids = sim.add_ties("demo", "case", 3, indexed_on=moment)
    for start, end in [("2030-01-01T00:00:00.123000", "2030-01-01T00:00:00.123000"),
                       ("2030-01-01T00:00:00.123999", "2030-01-01T00:00:00.123001")]:
        got = get(sim, "/a/demo/api/v0.5/case/", {"indexed_on_start": start,
                                                   "indexed_on_end": end, "order_by": "indexed_on"})
        assert sorted(o["case_id"] for o in got.json()["objects"]) == sorted(ids)


def test_ties_keep_a_stable_order_and_have_no_tie_break(sim_factory):
    sim = sim_factory(n_cases=5)
    moment = datetime(2030, 1, 1, tzinfo=timezone.utc)
    sim.add_ties("demo", "case", 30, indexed_on=moment)
    params = {"indexed_on_start": "2030-01-01", "order_by": "indexed_on", "limit": 10}
    first = [o["case_id"] for o in get(sim, "/a/demo/api/v0.5/case/", params).json()["objects"]]
    again = [o["case_id"] for o in get(sim, "/a/demo/api/v0.5/case/", params).json()["objects"]]
    assert first == again  # the same request returns the same page: a naive pager loops
    assert first != sorted(first)  # not ordered by id


def test_include_archived_is_a_presence_check(sim):
    form_id = sorted(sim.snapshot("demo", "form"))[0]
    sim.archive_forms("demo", [form_id])
    ids = lambda params: {o["id"] for o in get(sim, "/a/demo/api/v0.5/form/",
                                               {"limit": 1000, **params}).json()["objects"]}
    assert form_id not in ids({})
    assert form_id in ids({"include_archived": "false"})  # any value includes them
    assert form_id in ids({"include_archived": "true"})


def test_v2_cursor_pages_through_ties_without_loss(sim_factory):
    sim = sim_factory(n_cases=20)
    sim.add_ties("demo", "case", 45, indexed_on=datetime(2030, 1, 1, tzinfo=timezone.utc))
    seen, url, params = [], "/a/demo/api/case/v2/", {"limit": 10}
    while True:
        body = requests.get(url if url.startswith("http") else sim.base_url + url,
                            params=params, headers=AUTH, timeout=10).json()
        seen += [c["case_id"] for c in body["cases"]]
        assert all("case_type" in c and "user_id" not in c for c in body["cases"])  # v2 shape
        if not body["next"]:
            break
        assert body["next"].startswith(sim.base_url)  # absolute
        cursor = parse_qs(urlsplit(body["next"]).query)["cursor"][0]
        assert "last_case_id" in base64.b64decode(cursor).decode()
        url, params = body["next"], None
    assert sorted(seen) == sorted(sim.snapshot("demo", "case")) and len(seen) == len(set(seen))


def test_v2_rejects_what_hq_rejects(sim):
    r = get(sim, "/a/demo/api/case/v2/", {"limit": 5001})
    assert r.status_code == 400 and "5000" in r.json()["error"]
    r = get(sim, "/a/demo/api/case/v2/", {"colour": "red"})
    assert r.status_code == 400 and r.json()["error"] == "'colour' is not a valid parameter."
    assert get(sim, "/a/demo/api/case/v2/", {"username": USER, "api_key": KEY},
               headers={}).status_code == 401  # no credentials in the query on v2


def test_auth(sim_factory):
    sim = sim_factory(domains=("demo", "other"))
    sim.users["limited@example.org"] = ("k2", {"demo"})
    assert get(sim, "/a/demo/api/v0.5/case/", headers={"Authorization": f"apikey {USER}:{KEY}"}).ok
    bad = get(sim, "/a/demo/api/v0.5/case/", headers={"Authorization": f"ApiKey {USER}:nope"})
    assert bad.status_code == 401 and bad.content == b"" and "WWW-Authenticate" in bad.headers
    assert get(sim, "/a/demo/api/v0.5/case/", {"username": USER, "api_key": KEY}, headers={}).ok
    other = get(sim, "/a/other/api/v0.5/case/", headers={"Authorization": "ApiKey limited@example.org:k2"})
    assert other.status_code == 403 and other.content == b""


def test_apps_endpoint_describes_the_generated_forms(sim):
    body = get(sim, "/a/demo/api/v0.5/application/").json()
    assert body["meta"]["next"] is None and body["meta"]["limit"] is None
    xmlns_in_app = {f["xmlns"] for app in body["objects"] for m in app["modules"] for f in m["forms"]}
    xmlns_in_forms = {f["form"]["@xmlns"] for f in sim.snapshot("demo", "form").values()}
    assert xmlns_in_forms <= xmlns_in_app


@pytest.mark.parametrize("kind", ["500", "truncated", "html", "reset", "401", "403"])
def test_faults_hit_the_next_matching_request_once(sim, kind):
    sim.faults.add(kind, resource="case")
    assert get(sim, "/a/demo/api/v0.5/form/").ok  # other resources untouched
    try:
        r = get(sim, "/a/demo/api/v0.5/case/")
        broken = r.status_code != 200 or not r.headers["Content-Type"].startswith("application/json") \
            or _not_json(r.content)
    except requests.RequestException:
        broken = True
    assert broken
    assert get(sim, "/a/demo/api/v0.5/case/").ok
    assert sim.requests[-2].fault == kind


def _not_json(content: bytes) -> bool:
    try:
        json.loads(content)
        return False
    except ValueError:
        return True


def test_generation_is_deterministic_and_covers_the_awkward_shapes():
    a = Dataset.generate(seed=3, n_cases=80, awkward=True)
    b = Dataset.generate(seed=3, n_cases=80, awkward=True)
    assert json.dumps(a.cases, sort_keys=True) == json.dumps(b.cases, sort_keys=True)
    assert json.dumps(a.forms, sort_keys=True) == json.dumps(b.forms, sort_keys=True)
    assert len(a.cases) == 80
    props = {k for c in a.cases.values() for k in c["properties"]}
    assert {"First Name", "first_name", "select", "名字", "visit.count"} <= props
    assert any(len(k.encode()) > 63 for k in props)
    values = [v for c in a.cases.values() for v in c["properties"].values() if isinstance(v, str)]
    assert any("\x00" in v for v in values) and any("\ud800" in v for v in values)
    members = [f["form"].get("members") for f in a.forms.values() if "members" in f["form"]]
    assert any(isinstance(m, dict) for m in members) and any(isinstance(m, list) for m in members)
    assert any(c["closed"] for c in a.cases.values())
    relationships = {i["relationship"] for c in a.cases.values() for i in c["indices"].values()}
    assert relationships == {"child", "extension"}


def test_control_api_for_a_standalone_simulator(sim):
    before = get(sim, "/_sim/stats").json()["demo/case"]
    r = requests.post(sim.base_url + "/_sim/mutate", json={"action": "add_cases", "domain": "demo", "n": 2})
    assert r.ok and len(r.json()["result"]) == 2
    assert get(sim, "/_sim/stats").json()["demo/case"] == before + 2
    requests.post(sim.base_url + "/_sim/faults", json={"kind": "503", "resource": "case"})
    assert get(sim, "/a/demo/api/v0.5/case/").status_code == 503
