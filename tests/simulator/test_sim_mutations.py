"""Changes between syncs: every write is re-indexed with a newer indexed_on, and the API,
the snapshot and the data stay consistent."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.simulator.conftest import CASES, CASES_V2, FORMS, Client


def _stamp(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _newest(sim, resource: str) -> datetime:
    return max(_stamp(r["indexed_on"]) for r in sim.snapshot("demo", resource).values())


def _served(client: Client, path: str, record_id: str) -> dict:
    return client.json(f"{path}{record_id}/")


def test_snapshot_is_exactly_what_the_api_serves(sim, client: Client):
    cases = client.all_v05(CASES, {"limit": 25})
    assert {c["id"]: c for c in cases} == sim.snapshot("demo", "case")
    forms = client.all_v05(FORMS, {"limit": 25, "include_archived": "true"})
    assert {f["id"]: f for f in forms} == sim.snapshot("demo", "form")


def test_add_cases_creates_cases_and_their_registration_forms(sim, client: Client):
    before_case, before_form = _newest(sim, "case"), _newest(sim, "form")
    ids = sim.add_cases("demo", 3)
    ids += sim.add_cases("demo", 1, case_type="household") + sim.add_cases("demo", 1, "contact")
    forms = sim.snapshot("demo", "form")
    for case_id in ids:
        case = _served(client, CASES, case_id)
        assert _stamp(case["indexed_on"]) > max(before_case, before_form)
        (form_id,) = case["xform_ids"]
        block = forms[form_id]["form"]["case"]
        assert block["@case_id"] == case_id and "create" in block
    types = [_served(client, CASES, i)["properties"]["case_type"] for i in ids]
    assert types == ["patient"] * 3 + ["household", "contact"]
    patient, contact = _served(client, CASES, ids[0]), _served(client, CASES, ids[-1])
    assert patient["indices"]["parent"]["relationship"] == "child"
    assert contact["indices"]["host"]["relationship"] == "extension"


def test_update_cases_changes_properties_and_adds_a_follow_up(sim, client: Client):
    case_id = sorted(sim.snapshot("demo", "case"))[0]
    before = _served(client, CASES, case_id)
    newest = _newest(sim, "case")
    sim.update_cases("demo", [case_id], {"colour": "blue", "Brand New": "1"})
    after = _served(client, CASES, case_id)
    assert after["properties"]["colour"] == "blue" and after["properties"]["Brand New"] == "1"
    assert _stamp(after["indexed_on"]) > newest
    assert after["xform_ids"][:-1] == before["xform_ids"]
    form = _served(client, FORMS, after["xform_ids"][-1])
    assert form["form"]["case"]["update"] == {"colour": "blue", "Brand New": "1"}
    assert after["server_date_modified"] == form["received_on"]
    assert after["user_id"] == form["metadata"]["userID"]
    sim.update_cases("demo", [case_id])  # a routine visit
    assert _served(client, CASES, case_id)["properties"]["visit.count"] != \
        after["properties"]["visit.count"]


def test_close_cases(sim, client: Client):
    case_id = next(i for i, c in sim.snapshot("demo", "case").items() if not c["closed"])
    sim.close_cases("demo", [case_id])
    case = _served(client, CASES, case_id)
    assert case["closed"] is True and case["closed_by"] == case["user_id"]
    assert case["date_closed"]
    form = _served(client, FORMS, case["xform_ids"][-1])
    assert form["form"]["case"]["close"] == ""
    assert client.json(CASES_V2 + case_id)["closed"] is True


def test_archive_and_unarchive_reindex_the_form(sim, client: Client):
    form_id = next(i for i, f in sim.snapshot("demo", "form").items() if not f["archived"])
    newest = _newest(sim, "form")
    sim.archive_forms("demo", [form_id])
    archived = _served(client, FORMS, form_id)
    assert archived["archived"] is True and _stamp(archived["indexed_on"]) > newest
    visible = {f["id"] for f in client.all_v05(FORMS, {"limit": 1000})}
    assert form_id not in visible
    assert form_id in {f["id"] for f in client.all_v05(FORMS, {"limit": 1000,
                                                               "include_archived": "x"})}
    sim.unarchive_forms("demo", [form_id])
    restored = _served(client, FORMS, form_id)
    assert restored["archived"] is False and restored["indexed_on"] > archived["indexed_on"]


def test_add_forms(sim, client: Client):
    total = client.json(FORMS, {"limit": 1, "include_archived": "1"})["meta"]["total_count"]
    newest = _newest(sim, "form")
    ids = sim.add_forms("demo", 6)
    assert client.json(FORMS, {"limit": 1, "include_archived": "1"})["meta"]["total_count"] == \
        total + 6
    assert all(_stamp(_served(client, FORMS, i)["indexed_on"]) > newest for i in ids)


def test_deleted_docs_disappear(sim, client: Client):
    case_id = sorted(sim.snapshot("demo", "case"))[3]
    form_id = sorted(sim.snapshot("demo", "form"))[3]
    sim.delete_cases("demo", [case_id])
    sim.delete_forms("demo", [form_id])
    assert client.get(f"{CASES}{case_id}/").status_code == 404
    assert client.get(f"{FORMS}{form_id}/").status_code == 404
    assert client.get(f"{CASES_V2}{case_id}").status_code == 404
    assert case_id not in {c["id"] for c in client.all_v05(CASES, {"limit": 1000})}
    assert case_id not in sim.snapshot("demo", "case")
    with pytest.raises(KeyError):
        sim.update_cases("demo", [case_id], {"x": "1"})


def test_add_late_is_indexed_behind_the_newest(sim, client: Client):
    newest = _newest(sim, "case")
    ids = sim.add_late("demo", "case", 4, lag=timedelta(minutes=5))
    stamps = [_stamp(_served(client, CASES, i)["indexed_on"]) for i in ids]
    assert all(newest - timedelta(minutes=5, milliseconds=1) <= s < newest for s in stamps)
    form_ids = sim.add_late("demo", "form", 2, lag=timedelta(seconds=30))
    assert all(_stamp(_served(client, FORMS, i)["indexed_on"]) < _newest(sim, "form")
               for i in form_ids)


def test_clock(sim, client: Client):
    moment = datetime(2030, 6, 1, tzinfo=timezone.utc)
    sim.set_clock(moment)
    assert sim.now() == moment
    (case_id,) = sim.add_cases("demo", 1)
    stamp = _stamp(_served(client, CASES, case_id)["indexed_on"])
    assert moment < stamp < moment + timedelta(seconds=1)
    assert sim.now() >= stamp
    # Ties default to "now" and leave the clock at or after them.
    tie = sim.add_ties("demo", "form", 3)
    assert len({_served(client, FORMS, i)["indexed_on"] for i in tie}) == 1


def test_ties_in_the_past_do_not_move_the_clock_back(sim):
    now = sim.now()
    sim.add_ties("demo", "case", 2, indexed_on=datetime(2020, 1, 1, tzinfo=timezone.utc))
    assert sim.now() >= now


def test_add_raw_serves_a_malformed_record_verbatim(sim, client: Client):
    broken = {"id": None, "properties": "not an object", "indexed_on": "2030-01-01T00:00:00.000000Z"}
    sim.add_raw("demo", "case", broken, "broken-1")
    newest = client.json(CASES, {"order_by": "-indexed_on", "limit": 1})["objects"][0]
    assert newest == broken
    assert client.json(f"{CASES}broken-1/") == broken
    assert sim.snapshot("demo", "case")["broken-1"] == broken
    assert client.json(CASES_V2 + "broken-1") == broken
    everything, doc = [], client.json(CASES_V2, {"limit": 7})
    while True:
        everything += doc["cases"]
        if not doc["next"]:
            break
        doc = client.json(doc["next"])
    assert broken in everything
