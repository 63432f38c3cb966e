"""Reference data: mobile workers, web users, groups and members, locations, location types and
ancestors, as run-scoped snapshots: a row HQ stops listing is marked deleted (never removed), comes
back when HQ lists it again, and a listing that failed part-way marks nothing."""

from __future__ import annotations

import pytest

from etl import sources
from etl.errors import HQError
from etl.sync import make_client, run_sync, sync_stream
from tests.conftest import make_settings

REFERENCE = ["users", "web_users", "groups", "location_types", "locations"]


@pytest.fixture
def settings(sim, schema, pg_url):
    return make_settings(sim.base_url, schema, pg_url, streams=REFERENCE)


def _live(db, schema: str, table: str, key: str) -> set[str]:
    return {r[0] for r in db.execute(f'select {key} from "{schema}".{table} where not deleted')}


def test_reference_streams_are_in_the_default_sync():
    assert set(REFERENCE) <= set(sources.names(default_only=True))


def test_every_table_equals_what_hq_lists(sim, settings, warehouse, db, schema):
    reports = run_sync(settings, warehouse)
    assert [(r.stream, r.status) for r in reports] == [(s, "ok") for s in REFERENCE]
    users = sim.snapshot("demo", "user")
    got = {r[0]: r[1:] for r in db.execute(
        f'select user_id, username, is_active, group_ids, primary_location_id, user_data '
        f'from "{schema}".users')}
    assert set(got) == set(users)
    for user_id, user in users.items():
        username, active, groups, location, user_data = got[user_id]
        assert username == user["username"] and groups == user["groups"]
        assert location == user["primary_location"] and user_data == user["user_data"]
    assert sum(not r[1] for r in got.values()) >= 1  # the deactivated worker, is_active false
    assert _live(db, schema, "web_users", "user_id") == set(sim.snapshot("demo", "web_user"))
    groups = sim.snapshot("demo", "group")
    assert _live(db, schema, "groups", "group_id") == set(groups)
    members = set(db.execute(f'select group_id, user_id from "{schema}".group_members').fetchall())
    assert members == {(g, u) for g, group in groups.items() for u in group["users"]}
    locations = sim.snapshot("demo", "location_v2")
    assert _live(db, schema, "locations", "location_id") == set(locations)
    assert _live(db, schema, "location_types", "location_type_id") == {
        str(i) for i in sim.snapshot("demo", "location_type")}
    # location_ancestors: every location, each ancestor up to the root, and itself.
    def chain(location_id):
        depth, out = 0, []
        while location_id:
            out.append((location_id, depth))
            location_id, depth = locations[location_id]["parent_location_id"], depth + 1
        return out
    expected = {(lid, anc, d) for lid in locations for anc, d in chain(lid)}
    got_anc = set(db.execute(f'select location_id, ancestor_id, depth '
                             f'from "{schema}".location_ancestors').fetchall())
    assert got_anc == expected


def test_gone_is_marked_deleted_and_back_is_undeleted(sim, settings, warehouse, db, schema):
    run_sync(settings, warehouse)
    user_id = sorted(u for u, d in sim.snapshot("demo", "user").items())[0]
    group_id = sorted(sim.snapshot("demo", "group"))[0]
    facility = next(lid for lid, loc in sim.snapshot("demo", "location_v2").items()
                    if loc["location_type_code"] == "facility")
    sim.delete_mobile_worker("demo", user_id)
    sim.delete_group("demo", group_id)
    archived = sim.archive_location("demo", facility)
    reports = {r.stream: r for r in run_sync(settings, warehouse)}
    assert reports["users"].marked_deleted == 1 and reports["locations"].marked_deleted == len(archived)
    assert db.execute(f'select deleted, deleted_at is not null from "{schema}".users '
                      f'where user_id = %s', (user_id,)).fetchone() == (True, True)
    assert db.execute(f'select deleted from "{schema}".groups where group_id = %s',
                      (group_id,)).fetchone() == (True,)
    assert not db.execute(f'select count(*) from "{schema}".location_ancestors '
                          f'where location_id = %s', (facility,)).fetchone()[0]
    sim.restore_mobile_worker("demo", user_id)
    sim.restore_group("demo", group_id)
    sim.unarchive_location("demo", facility)
    run_sync(settings, warehouse)
    assert db.execute(f'select deleted, deleted_at from "{schema}".users where user_id = %s',
                      (user_id,)).fetchone() == (False, None)
    assert facility in _live(db, schema, "locations", "location_id")


def test_a_listing_that_failed_part_way_marks_nothing(sim, schema, pg_url, warehouse, db,
                                                      monkeypatch):
    settings = make_settings(sim.base_url, schema, pg_url, streams=["locations"],
                             retry_max_seconds=0.2)
    run_sync(settings, warehouse)
    before = _live(db, schema, "locations", "location_id")
    gone = set(sim.delete_location("demo", sorted(before)[-1]))  # and what is below it
    sim.faults.add("503", count=10_000, resource="location_v2", after=1)

    monkeypatch.setattr(sources.Locations, "page_size", 5)  # several pages: it breaks off
    with pytest.raises(HQError):
        sync_stream(settings, warehouse, make_client(settings), "demo", "locations")
    assert _live(db, schema, "locations", "location_id") == before  # nothing marked
    sim.faults.clear()
    run_sync(settings, warehouse)
    assert gone and _live(db, schema, "locations", "location_id") == before - gone


def test_unchanged_rows_are_not_rewritten(sim, settings, warehouse, db, schema):
    run_sync(settings, warehouse)
    stamps = dict(db.execute(f'select user_id, synced_at from "{schema}".users').fetchall())
    user_id = sorted(stamps)[0]
    sim.update_mobile_worker("demo", user_id, first_name="Renamed")
    reports = {r.stream: r for r in run_sync(settings, warehouse)}
    assert reports["users"].updated == 1 and reports["users"].inserted == 0
    after = dict(db.execute(f'select user_id, synced_at from "{schema}".users').fetchall())
    assert [u for u in stamps if after[u] != stamps[u]] == [user_id]
