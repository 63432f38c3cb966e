"""Archiving or restoring a form rebuilds every case it touched, as HQ does."""

from __future__ import annotations

from etl.simulator import rebuild
from etl.simulator.store import Store
from etl.simulator import Dataset
from tests.simulator.conftest import CASES, CASES_V2, FORMS, Client

FIXED = ("indexed_on", "server_date_modified")


def _case(client: Client, case_id: str) -> dict:
    return client.json(f"{CASES}{case_id}/")


def _without(doc: dict, *keys: str) -> dict:
    return {k: v for k, v in doc.items() if k not in keys}


def test_archiving_an_update_reverts_it_and_restoring_brings_it_back(sim, client: Client):
    (case_id,) = sim.add_cases("demo", 1)
    sim.update_cases("demo", [case_id], {"colour": "blue", "size": "L"})
    before = _case(client, case_id)
    sim.update_cases("demo", [case_id], {"colour": "red"})
    updated = _case(client, case_id)
    follow_up = updated["xform_ids"][-1]
    assert updated["properties"]["colour"] == "red"

    sim.archive_forms("demo", [follow_up])
    archived = _case(client, case_id)
    assert archived["properties"]["colour"] == "blue" and archived["properties"]["size"] == "L"
    assert archived["xform_ids"] == before["xform_ids"]
    assert archived["indexed_on"] > updated["indexed_on"]
    assert archived["server_date_modified"] > updated["server_date_modified"]
    # The case is re-indexed after the form it was rebuilt for.
    assert archived["indexed_on"] > client.json(f"{FORMS}{follow_up}/")["indexed_on"]
    # Otherwise it is the case as it was before the update (HQ's rebuild leaves an open case's
    # closed_by "" rather than null).
    assert archived["closed_by"] == ""
    assert _without(archived, *FIXED, "closed_by") == _without(before, *FIXED, "closed_by")

    sim.unarchive_forms("demo", [follow_up])
    restored = _case(client, case_id)
    assert restored["properties"]["colour"] == "red"
    assert restored["xform_ids"] == updated["xform_ids"]
    assert restored["indexed_on"] > archived["indexed_on"]
    assert _without(restored, *FIXED, "closed_by") == _without(updated, *FIXED, "closed_by")
    # Both API versions serve the rebuilt case.
    assert client.json(f"{CASES_V2}{case_id}")["properties"]["colour"] == "red"


def test_archiving_the_closing_form_reopens_the_case(sim, client: Client):
    (case_id,) = sim.add_cases("demo", 1)
    sim.close_cases("demo", [case_id])
    closed = _case(client, case_id)
    assert closed["closed"] is True
    sim.archive_forms("demo", [closed["xform_ids"][-1]])
    reopened = _case(client, case_id)
    assert (reopened["closed"], reopened["closed_by"], reopened["date_closed"]) == (False, "", None)
    sim.unarchive_forms("demo", [closed["xform_ids"][-1]])
    again = _case(client, case_id)
    assert again["closed"] is True and again["closed_by"] == closed["closed_by"]
    assert again["date_closed"] == closed["date_closed"]


def test_archiving_the_creating_form_leaves_a_case_built_from_its_updates(sim, client: Client):
    (case_id,) = sim.add_cases("demo", 1)  # a patient with a parent index, set at creation
    sim.update_cases("demo", [case_id], {"colour": "green"})
    original = _case(client, case_id)
    registration, follow_up = original["xform_ids"]
    assert original["indices"] and original["properties"]["case_type"] == "patient"
    sim.archive_forms("demo", [registration])
    orphan = _case(client, case_id)
    block = client.json(f"{FORMS}{follow_up}/")["form"]["case"]
    # HQ resets the case and replays what is left: no create block, so no type, name or
    # index; the owner, opener and opening date fall back to the follow-up and its user.
    props = orphan["properties"]
    assert (props["case_type"], props["case_name"], props["external_id"]) == ("", "", None)
    assert props["colour"] == "green" and "dob" not in props
    assert props["owner_id"] == orphan["opened_by"] == orphan["user_id"] == block["@user_id"]
    assert props["date_opened"] == orphan["date_modified"] == block["@date_modified"]
    assert orphan["indices"] == {} and orphan["xform_ids"] == [follow_up]
    assert orphan["server_date_opened"] == client.json(f"{FORMS}{follow_up}/")["received_on"]
    # Type filters no longer find it; it is still listed.
    listed = client.all_v05(CASES, {"limit": 1000, "type": "patient"})
    assert case_id not in {c["id"] for c in listed}
    assert case_id in {c["id"] for c in client.all_v05(CASES, {"limit": 1000})}
    assert client.json(f"{CASES_V2}{case_id}")["case_type"] == ""
    sim.unarchive_forms("demo", [registration])
    assert _without(_case(client, case_id), *FIXED, "closed_by") == \
        _without(original, *FIXED, "closed_by")


def test_a_case_left_without_forms_disappears_until_its_form_is_restored(sim, client: Client):
    (case_id,) = sim.add_cases("demo", 1, case_type="household")
    original = _case(client, case_id)
    (registration,) = original["xform_ids"]
    sim.archive_forms("demo", [registration])
    assert client.get(f"{CASES}{case_id}/").status_code == 404
    assert client.get(f"{CASES_V2}{case_id}").status_code == 404
    assert case_id not in sim.snapshot("demo", "case")
    assert case_id not in {c["id"] for c in client.all_v05(CASES, {"limit": 1000})}
    sim.unarchive_forms("demo", [registration])
    back = _case(client, case_id)
    assert back["indexed_on"] > original["indexed_on"]
    assert _without(back, *FIXED, "closed_by") == _without(original, *FIXED, "closed_by")


def test_every_case_a_form_touched_is_rebuilt(sim, client: Client):
    forms = sim.snapshot("demo", "form")
    cases = sim.snapshot("demo", "case")
    # A household registration that also created member cases (blocks inside a repeat).
    form_id, touched = next(
        (f_id, ids) for f_id, f in forms.items()
        if not f["archived"] and len(ids := [b["@case_id"] for b in rebuild.case_blocks(f["form"])
                                             if "create" in b]) > 2)
    untouched = {i: c["indexed_on"] for i, c in cases.items() if i not in touched}
    sim.archive_forms("demo", [form_id])
    after = sim.snapshot("demo", "case")
    for case_id in touched:
        if case_id in after:  # followed up since: rebuilt from the follow-ups
            assert form_id not in after[case_id]["xform_ids"]
            assert after[case_id]["properties"]["case_type"] == ""
        else:
            assert cases[case_id]["xform_ids"] == [form_id]
    assert {i: after[i]["indexed_on"] for i in untouched} == untouched


def test_archiving_twice_or_a_survey_touches_no_case(sim, client: Client):
    forms = sim.snapshot("demo", "form")
    survey = next(i for i, f in forms.items() if f["form"]["@name"] == "Community Survey"
                  and not f["archived"])
    before = sim.snapshot("demo", "case")
    sim.archive_forms("demo", [survey])
    assert sim.snapshot("demo", "case") == before
    archived = client.json(f"{FORMS}{survey}/")
    sim.archive_forms("demo", [survey])  # already archived: HQ's archive() returns early
    assert client.json(f"{FORMS}{survey}/") == archived
    assert sim.snapshot("demo", "case") == before


def test_replaying_all_of_a_cases_forms_reproduces_the_generated_case():
    """The generated data is consistent with HQ's case processing: a rebuild from every form
    (archived or not) gives back each case, but for HQ's reset of `closed_by` and the
    "1900-01-01" placeholders a rebuild fills in."""
    store = Store([Dataset.generate(domain="demo", seed=5, n_cases=400)])
    d = store.domain("demo")
    for record in d.cases.ordered:
        case = record.doc(b"")
        forms = sorted((d.forms.get(i) for i in d.forms.touching(record.id)),
                       key=lambda f: f.keys[0])
        rebuilt = rebuild.replay(case, [f.doc(b"") for f in forms])
        skip = {"closed_by"} | {k for k in ("date_modified", "server_date_opened")
                                if case[k] == "1900-01-01"}
        assert rebuilt["closed_by"] == (case["closed_by"] or "")
        props = {k: ("" if v is None else v) for k, v in case["properties"].items()}
        props["external_id"] = case["properties"]["external_id"]
        assert rebuilt["properties"] == props
        assert _without(rebuilt, *skip, "properties") == _without(case, *skip, "properties")
