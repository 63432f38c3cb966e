"""Deprecated case types: Case API v2's `include_deprecated`, exactly as HQ's get_list.py reads
it, and v0.5, which knows nothing of them."""

from __future__ import annotations

import pytest
import requests

from tests.simulator.conftest import CASES, CASES_V2, Client

CASES_V06 = "/a/demo/api/v0.6/case/"


def _all_v2(client: Client, path: str, params) -> tuple[int, list[dict]]:
    """(the first page's matching_records, every case following `next`)."""
    doc = client.json(path, params)
    total, cases = doc["matching_records"], list(doc["cases"])
    while doc["next"]:
        doc = client.json(doc["next"])  # matching_records: what is left after the cursor
        cases += doc["cases"]
    return total, cases


@pytest.fixture
def deprecated(sim) -> tuple[int, int]:
    """(all cases, contacts), with "contact" deprecated."""
    snapshot = sim.snapshot("demo", "case").values()
    contacts = sum(c["properties"]["case_type"] == "contact" for c in snapshot)
    assert 0 < contacts < len(snapshot)
    sim.deprecate_case_type("demo", "contact")
    return len(snapshot), contacts


@pytest.mark.parametrize("path", [CASES_V2, CASES_V06])
def test_false_excludes_deprecated_types_across_pages(client: Client, deprecated, path):
    everything, contacts = deprecated
    total, cases = _all_v2(client, path, {"include_deprecated": "false", "limit": 7})
    assert total == len(cases) == everything - contacts
    assert "contact" not in {c["case_type"] for c in cases}  # the cursor carries the filter


@pytest.mark.parametrize("value, excluded", [
    (None, False),  # no parameter: no filter at all, deprecated types included
    ("true", False), ("True", False), ("1", False), ("yes", False), ("anything", False),
    ("false", True), ("False", True), ("0", True), ("no", True), ("off", True), ("f", True),
    ("", True),  # HQ's _to_boolean: an empty value is false
])
def test_the_value_reads_as_hq_reads_it(client: Client, deprecated, value, excluded):
    everything, contacts = deprecated
    params = {} if value is None else {"include_deprecated": value}
    doc = client.json(CASES_V2, {**params, "limit": 1})
    assert doc["matching_records"] == everything - (contacts if excluded else 0)


def test_repeated_values_are_or_ed(client: Client, deprecated):
    everything, contacts = deprecated
    both = client.json(CASES_V2, [("include_deprecated", "false"), ("include_deprecated", "true")])
    assert both["matching_records"] == everything
    twice = client.json(CASES_V2, [("include_deprecated", "no"), ("include_deprecated", "0")])
    assert twice["matching_records"] == everything - contacts


def test_it_combines_with_other_filters_and_can_be_undone(sim, client: Client, deprecated):
    everything, contacts = deprecated
    doc = client.json(CASES_V2, {"include_deprecated": "false", "case_type": "contact"})
    assert doc["matching_records"] == 0 and doc["cases"] == []
    sim.deprecate_case_type("demo", "contact", deprecated=False)
    doc = client.json(CASES_V2, {"include_deprecated": "false", "limit": 1})
    assert doc["matching_records"] == everything


def test_single_case_and_bulk_fetch_still_serve_deprecated_types(sim, client: Client, deprecated):
    contact = next(i for i, c in sim.snapshot("demo", "case").items()
                   if c["properties"]["case_type"] == "contact")
    assert client.json(f"{CASES_V2}{contact}")["case_id"] == contact
    bulk = client.session.post(sim.base_url + CASES_V2 + "bulk-fetch/",
                               json={"case_ids": [contact]}).json()
    assert bulk["matching_records"] == 1


def test_v05_ignores_deprecation_and_include_deprecated_is_just_an_unknown_term(
        client: Client, deprecated):
    everything, contacts = deprecated
    assert client.json(CASES, {"limit": 1})["meta"]["total_count"] == everything
    assert client.json(CASES, {"type": "contact", "limit": 1})["meta"]["total_count"] == contacts
    # es_query_from_get_params turns any unknown parameter into a term filter on a field of
    # that name: no case has one, so this matches nothing.
    assert client.json(CASES, {"include_deprecated": "true"})["meta"]["total_count"] == 0


def test_control_action(sim, client: Client):
    body = {"action": "deprecate_case_type", "case_type": "household"}
    assert requests.post(sim.base_url + "/_sim/mutate", json=body).status_code == 200
    assert sim.store.stats()["demo"]["deprecated_case_types"] == ["household"]
    doc = client.json(CASES_V2, {"include_deprecated": "false", "limit": 100})
    assert "household" not in {c["case_type"] for c in doc["cases"]}
