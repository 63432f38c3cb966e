"""Check that the warehouse holds exactly what the simulator serves: no record missing,
none duplicated, none stale."""

from __future__ import annotations

import json
from collections import Counter

import psycopg

from etl.dates import parse_hq_datetime
from etl.transform.clean import Cleaner


def expected_cases(sim, domain: str) -> dict[str, dict]:
    return Cleaner()(sim.snapshot(domain, "case"))


def expected_forms(sim, domain: str) -> dict[str, dict]:
    return Cleaner()(sim.snapshot(domain, "form"))


def follow_up_forms(sim, domain: str = "demo") -> list[str]:
    """Forms that create no case, sorted: archiving one rebuilds its cases, none of which
    vanishes. (Archiving a case's only form deletes the case in HQ; finding deleted records
    is `reconcile`'s job, not sync's.)"""
    return sorted(form_id for form_id, form in sim.snapshot(domain, "form").items()
                  if '"create"' not in json.dumps(form.get("form")))


def _assert_same_ids(got: list[str], expected: dict, what: str) -> None:
    counts = Counter(got)
    duplicated = [i for i, n in counts.items() if n > 1]
    assert not duplicated, f"{len(duplicated)} {what} duplicated, e.g. {duplicated[:3]}"
    missing, extra = set(expected) - set(counts), set(counts) - set(expected)
    assert not missing, f"{len(missing)} {what} missing, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} {what} that HQ does not have, e.g. {sorted(extra)[:3]}"


def assert_cases_match(conn: psycopg.Connection, schema: str, sim, domain: str = "demo") -> int:
    expected = expected_cases(sim, domain)
    rows = conn.execute(
        f'select case_id, closed, properties, indexed_on, xform_ids, case_type, closed_by, '
        f'date_closed from "{schema}".cases where domain = %s and not deleted', (domain,)).fetchall()
    _assert_same_ids([r[0] for r in rows], expected, "cases")
    stale = []
    for case_id, closed, properties, indexed_on, xform_ids, case_type, closed_by, date_closed in rows:
        want = expected[case_id]
        if (closed != want["closed"] or properties != want["properties"]
                or indexed_on != parse_hq_datetime(want["indexed_on"])
                or xform_ids != want.get("xform_ids", [])
                or case_type != want["properties"].get("case_type")
                or closed_by != (want.get("closed_by") or None)
                or date_closed != parse_hq_datetime(want.get("date_closed"))):
            stale.append(case_id)
    assert not stale, f"{len(stale)} cases differ from HQ, e.g. {stale[:3]}"
    want_indices = {
        (cid, ident, idx.get("case_id"), idx.get("case_type"), idx.get("relationship"))
        for cid, case in expected.items() for ident, idx in (case.get("indices") or {}).items()
    }
    got_indices = conn.execute(
        f'select case_id, identifier, referenced_id, referenced_type, relationship '
        f'from "{schema}".case_indices where domain = %s', (domain,)).fetchall()
    assert len(got_indices) == len(set(got_indices))
    assert set(got_indices) == want_indices
    return len(rows)


def assert_forms_match(conn: psycopg.Connection, schema: str, sim, domain: str = "demo") -> int:
    expected = expected_forms(sim, domain)
    rows = conn.execute(
        f'select form_id, archived, form, indexed_on, xmlns from "{schema}".forms '
        f'where domain = %s and not deleted', (domain,)).fetchall()
    _assert_same_ids([r[0] for r in rows], expected, "forms")
    stale = [form_id for form_id, archived, form, indexed_on, xmlns in rows
             if archived != expected[form_id]["archived"] or form != expected[form_id]["form"]
             or indexed_on != parse_hq_datetime(expected[form_id]["indexed_on"])
             or xmlns != expected[form_id]["form"].get("@xmlns")]
    assert not stale, f"{len(stale)} forms differ from HQ, e.g. {stale[:3]}"
    return len(rows)


def assert_warehouse_matches(conn: psycopg.Connection, schema: str, sim,
                             domain: str = "demo") -> tuple[int, int]:
    return (assert_cases_match(conn, schema, sim, domain),
            assert_forms_match(conn, schema, sim, domain))
