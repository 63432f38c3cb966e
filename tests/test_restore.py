"""The OTA restore: each mobile worker's caseload, by their own login, incrementally by
restore_id, with 412 recovery and a worker with a wrong password failing alone."""

from __future__ import annotations

import io
import logging
import tracemalloc
from urllib.parse import parse_qs

import pytest

from etl import state
from etl.extract import restore_xml
from etl.sync import run_sync
from tests.conftest import make_settings

ANA, BOB = "ana@demo.commcarehq.org", "bob@demo.commcarehq.org"


@pytest.fixture
def workers(sim, tmp_path):
    ana = sim.add_mobile_worker("demo", "ana", password="Ana-pw-1")
    bob = sim.add_mobile_worker("demo", "bob", password="Bob-pw-2")
    sim.add_cases("demo", 6, owner_id=ana)
    sim.add_cases("demo", 2, owner_id=bob)
    sim.add_lookup_table("demo", "clinics", ["name", "code"],
                         [{"name": "North", "code": "N1"}, {"name": "South", "code": "S1"}])
    users = tmp_path / "restore-users.txt"
    users.write_text(f"# workers to restore\n{ANA}:Ana-pw-1\n{BOB}:wrong-Bob-pw\n")
    return {"ana": ana, "bob": bob, "file": users}


@pytest.fixture
def settings(sim, schema, pg_url, workers):
    return make_settings(sim.base_url, schema, pg_url, streams=["apps"],
                         restore_users_file=workers["file"])


def _caseload(db, schema: str, worker: str) -> dict:
    cases = {}
    for case_id, case_type, name, owner, external_id, opened, props in db.execute(
            f'select case_id, case_type, case_name, owner_id, external_id, date_opened, '
            f'properties from "{schema}".restore_cases where worker = %s and not closed',
            (worker,)):
        cases[case_id] = {"case_type": case_type, "name": name, "owner_id": owner,
                          "external_id": external_id, "date_opened": opened,
                          "properties": props, "indices": {}}
    for case_id, identifier, ref, ref_type, rel in db.execute(
            f'select case_id, identifier, referenced_id, referenced_type, relationship '
            f'from "{schema}".restore_case_indices where worker = %s', (worker,)):
        if case_id in cases:
            cases[case_id]["indices"][identifier] = {"case_id": ref, "case_type": ref_type,
                                                     "relationship": rel}
    return cases


def _expected(sim, worker: str) -> dict:
    return {case_id: {**case, "properties": {k: v for k, v in case["properties"].items()}}
            for case_id, case in sim.restore_caseload("demo", worker).items()}


def test_each_workers_caseload_equals_hq_and_a_wrong_password_fails_alone(
        sim, settings, warehouse, db, schema, workers, caplog):
    caplog.set_level(logging.DEBUG)
    reports = run_sync(settings, warehouse)
    got = {(r.stream, r.partition): r for r in reports}
    assert got[("apps", "")].status == "ok"
    assert got[("restore", ANA)].status == "ok"
    bob = got[("restore", BOB)]
    assert bob.status == "failed" and "RESTORE_USERS_FILE" in bob.error and BOB in bob.error
    expected = _expected(sim, ANA)
    assert len(expected) == 6 and _caseload(db, schema, ANA) == expected
    assert not _caseload(db, schema, BOB)
    user = db.execute(f'select user_id, username from "{schema}".restore_users '
                      f'where worker = %s', (ANA,)).fetchone()
    assert user == (workers["ana"], "ana")
    clinics = db.execute(f'select name, code from "{schema}".fixture_clinics '
                         f'where worker = %s order by position', (ANA,)).fetchall()
    assert clinics == [("North", "N1"), ("South", "S1")]
    assert db.execute(f"select count(*) from \"{schema}\".restore_fixtures where worker = %s "
                      f"and fixture_id = 'item-list:clinics'", (ANA,)).fetchone()[0] == 2
    text = caplog.text + "".join(str(r.error) for r in reports)
    assert "Ana-pw-1" not in text and "wrong-Bob-pw" not in text


def test_changes_arrive_by_restore_id_and_a_412_replaces_the_caseload(
        sim, settings, warehouse, db, schema, workers):
    run_sync(settings, warehouse)
    token = state.load_checkpoint(db, schema, "demo", "restore", ANA)["restore_id"]
    ids = sorted(_caseload(db, schema, ANA))
    sim.update_cases("demo", ids[:2], {"weight": "61"})
    sim.close_cases("demo", [ids[2]])
    sim.set_case_index("demo", ids[3], "parent", ids[4])
    sim.set_case_owner("demo", [ids[5]], workers["bob"])  # leaves ana's phone
    extra = sim.add_cases("demo", 1, owner_id=workers["ana"])
    sim.clear_requests()
    reports = {(r.stream, r.partition): r for r in run_sync(settings, warehouse)}
    assert reports[("restore", ANA)].status == "ok"
    asked = [parse_qs(r.query) for r in sim.requests
             if r.resource == "restore" and r.status == 200]
    assert asked and asked[0]["since"] == [token]
    got = _caseload(db, schema, ANA)
    assert got == _expected(sim, ANA)
    assert ids[2] not in got and ids[5] not in got and extra[0] in got
    assert got[ids[0]]["properties"]["weight"] == "61"
    assert got[ids[3]]["indices"]["parent"]["case_id"] == ids[4]
    sim.set_case_index("demo", ids[3], "parent", None)  # an empty index removes it
    run_sync(settings, warehouse)
    assert "parent" not in _caseload(db, schema, ANA)[ids[3]]["indices"]

    # A token HQ no longer knows: 412, then a full restore replaces the caseload.
    db.execute(f"update \"{schema}\".sync_checkpoints set cursor = "
               f"jsonb_set(cursor, '{{restore_id}}', '\"deadbeef\"') where partition = %s", (ANA,))
    db.execute(f"insert into \"{schema}\".restore_cases (domain, worker, case_id) "
               f"values ('demo', %s, 'stale-case')", (ANA,))
    sim.clear_requests()
    report = {(r.stream, r.partition): r for r in run_sync(settings, warehouse)}[("restore", ANA)]
    assert report.status == "ok"
    assert 412 in [r.status for r in sim.requests if r.resource == "restore"]
    assert _caseload(db, schema, ANA) == _expected(sim, ANA)
    assert not db.execute(f"select count(*) from \"{schema}\".restore_cases "
                          f"where case_id = 'stale-case'").fetchone()[0]


class _BigRestore(io.RawIOBase):
    """An OpenRosaResponse of `n` case blocks, made as it is read."""

    def __init__(self, n: int):
        self.parts = self._parts(n)
        self.buffer = b""
        self.size = 0

    @staticmethod
    def _parts(n: int):
        yield (b'<OpenRosaResponse xmlns="http://openrosa.org/http/response"><Sync '
               b'xmlns="http://commcarehq.org/sync"><restore_id>r1</restore_id></Sync>')
        for i in range(n):
            yield (f'<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="c{i}" '
                   f'user_id="u"><create><case_type>p</case_type><case_name>n{i}</case_name>'
                   f'<owner_id>u</owner_id></create><update><note>{"x" * 400}</note></update>'
                   f'</case>').encode()
        yield b"</OpenRosaResponse>"

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while len(self.buffer) < len(b):
            part = next(self.parts, None)
            if part is None:
                break
            self.buffer += part
        n = min(len(b), len(self.buffer))
        b[:n] = self.buffer[:n]
        self.buffer = self.buffer[n:]
        self.size += n
        return n


def test_a_big_restore_is_parsed_in_flat_memory():
    body = _BigRestore(40_000)  # ~25 MB of XML; the benchmark runs 200 MB
    tracemalloc.start()
    cases = sum(1 for block in restore_xml.blocks(io.BufferedReader(body))
                if block["kind"] == "case")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert cases == 40_000 and body.size > 20_000_000
    assert peak < 5_000_000, peak  # a few blocks at a time, not the document
