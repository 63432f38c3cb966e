"""The stream model: cursor kinds with one interface, checkpoints per (domain, stream,
partition), and apps kept as a run-scoped snapshot."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from etl import sources, state
from etl.extract.cursors import (KINDS, ExportTokenCursor, IndexedOnCursor, KeysetCursor,
                                 RestoreCursor, SnapshotCursor)
from etl.extract.streams import FormStream
from etl.sync import run_sync
from tests.conftest import make_settings

AT = datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)


@pytest.mark.parametrize("cursor", [
    IndexedOnCursor(AT, extra={"server": "https://hq"}),
    IndexedOnCursor(AT, [{"key": "received_on", "from": "2025-03-01T12:00:00.123000+00:00"}]),
    IndexedOnCursor(None, until=AT, extra={"since": None, "open_until": True}),
    KeysetCursor(AT, next="https://hq/a/d/api/case/v2/?cursor=abc"),
    SnapshotCursor(AT, 12, 3),
    ExportTokenCursor("42776b054d8256c86d1f8ca2da557841", extra={"server": "https://hq"}),
    RestoreCursor("83226e1e05ebe146685b93a9a312efa3"),
])
def test_every_cursor_kind_reads_back_what_it_wrote(cursor):
    saved = cursor.to_json()
    again = type(cursor).parse(saved)
    assert again == cursor and again.to_json() == saved
    assert KINDS[cursor.kind] is type(cursor)


def test_keys_a_kind_does_not_know_survive_and_case_api_switches_keep_the_watermark():
    saved = {"indexed_on": "2025-03-01T12:00:00.123000+00:00", "server": "https://hq",
             "something_new": [1]}
    v2 = KeysetCursor.parse(saved)
    assert v2.indexed_on == AT and v2.extra == {"server": "https://hq", "something_new": [1]}
    mid_run = KeysetCursor(AT, next="https://hq/next", extra=v2.extra).to_json()
    assert IndexedOnCursor.parse(mid_run).indexed_on == AT  # back to v0.5: the watermark
    assert IndexedOnCursor.parse({"indexed_on": "x", "tie_offset": 3}).tie == []  # older format


@pytest.fixture
def partitioned_source():
    @sources.register
    class FormsBySlice(sources.Forms):
        """A test-only source read as two independent partitions; 'broken' always fails."""

        name = "forms_by_slice"
        default = False
        isolated = True

        @classmethod
        def partitions(cls, settings):
            return ["first", "broken", "second"]

        @classmethod
        def stream(cls, client, domain, settings, partition=""):
            stream = FormStream(client, domain, 40)
            if partition == "broken":
                stream.path = "v0.5/no-such-resource/"
            return stream

    yield FormsBySlice
    sources.SOURCES.pop("forms_by_slice")


def test_each_partition_has_its_own_checkpoint_and_fails_alone(partitioned_source, sim, schema,
                                                               pg_url, warehouse, db):
    settings = make_settings(sim.base_url, schema, pg_url, streams=["forms_by_slice"],
                             retry_max_seconds=0.2)
    reports = run_sync(settings, warehouse)
    assert [(r.partition, r.status) for r in reports] == [
        ("first", "ok"), ("broken", "failed"), ("second", "ok")]
    assert "forms_by_slice[broken]" in reports[1].summary()
    saved = {(s, p): (c, k) for s, p, c, k in db.execute(
        f'select stream, partition, cursor, kind from "{schema}".sync_checkpoints')}
    assert set(saved) == {("forms_by_slice", "first"), ("forms_by_slice", "second")}
    assert {k for _, k in saved.values()} == {"indexed_on"}
    assert all(c["indexed_on"] for c, _ in saved.values())
    runs = db.execute(f'select partition, status from "{schema}".sync_runs order by id').fetchall()
    assert runs == [("first", "ok"), ("broken", "failed"), ("second", "ok")]
    cursor = state.load_cursor(db, schema, "demo", "forms_by_slice", IndexedOnCursor, "first")
    assert cursor.indexed_on is not None and cursor.extra["server"] == sim.base_url
    # reset forgets every partition of the stream
    assert state.delete_checkpoints(db, schema, "demo", ["forms_by_slice"]) == 2


def test_apps_are_a_snapshot_marked_deleted_when_gone_and_not_rewritten(sim, schema, pg_url,
                                                                        warehouse, db):
    settings = make_settings(sim.base_url, schema, pg_url, streams=["apps"])
    run_sync(settings, warehouse)
    apps = db.execute(f'select app_id, deleted from "{schema}".apps').fetchall()
    assert apps and not any(deleted for _, deleted in apps)
    # An app the warehouse holds but HQ no longer lists (deleted there), with a question.
    db.execute(f"insert into \"{schema}\".apps (domain, app_id, name) values ('demo', 'gone', 'Old')")
    db.execute(f"insert into \"{schema}\".app_questions (domain, app_id, xmlns, path, position) "
               f"values ('demo', 'gone', 'x', '/data/q', 0)")
    before = dict(db.execute(f'select path, xmin::text from "{schema}".app_questions '
                             f"where app_id <> 'gone'").fetchall())
    reports = run_sync(settings, warehouse)
    assert reports[0].status == "ok" and reports[0].marked_deleted == 1
    assert reports[0].inserted == reports[0].updated == 0
    assert db.execute(f'select deleted, deleted_at is not null from "{schema}".apps '
                      f"where app_id = 'gone'").fetchone() == (True, True)
    assert db.execute(f'select count(*) from "{schema}".app_questions '
                      f"where app_id = 'gone'").fetchone()[0] == 1  # kept, never removed
    after = dict(db.execute(f'select path, xmin::text from "{schema}".app_questions '
                            f"where app_id <> 'gone'").fetchall())
    assert after == before  # unchanged rows were not rewritten
    assert state.load_checkpoint(db, schema, "demo", "apps")["marked_deleted"] == 1
