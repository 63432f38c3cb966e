"""Reference data as HQ serves it: mobile workers, web users, groups, locations (v1 and v2) and
location types; their paging, filters and shapes; changes between syncs; faults and auth."""

from __future__ import annotations

import hashlib
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from etl.simulator import Dataset
from tests.simulator.conftest import OTHER_KEY, OTHER_USER, Client

USERS = "/a/demo/api/v0.5/user/"
WEB_USERS = "/a/demo/api/v0.5/web-user/"
GROUPS = "/a/demo/api/v0.5/group/"
LOCATIONS = "/a/demo/api/v0.5/location/"
LOCATIONS_V2 = "/a/demo/api/v0.6/location/"
TYPES = "/a/demo/api/v0.5/location_type/"

WORKER_FIELDS = {"id", "username", "first_name", "last_name", "default_phone_number", "email",
                 "phone_numbers", "groups", "user_data", "eulas", "primary_location",
                 "locations", "last_modified", "resource_uri"}
WEB_USER_FIELDS = {"id", "username", "first_name", "last_name", "default_phone_number",
                   "email", "phone_numbers", "eulas", "role", "is_admin", "permissions",
                   "primary_location_id", "assigned_location_ids", "profile", "user_data",
                   "tableau_role", "is_active_in_domain", "last_modified", "resource_uri"}
GROUP_FIELDS = {"id", "domain", "name", "users", "case_sharing", "reporting", "metadata",
                "resource_uri"}
LOCATION_FIELDS = {"id", "location_id", "name", "domain", "site_code", "external_id",
                   "created_at", "last_modified", "latitude", "longitude", "location_data",
                   "location_type", "parent", "resource_uri"}
LOCATION_V2_FIELDS = {"domain", "location_id", "name", "site_code", "last_modified",
                      "latitude", "longitude", "location_data", "location_type_code",
                      "location_type_name", "parent_location_id"}
TYPE_FIELDS = {"id", "domain", "name", "code", "parent", "administrative", "shares_cases",
               "view_descendants", "resource_uri"}


def _by_id(objects: list[dict], key: str = "id") -> dict:
    return {o[key]: o for o in objects}


def _error(response: requests.Response) -> object:
    assert response.status_code == 400, (response.status_code, response.text[:300])
    return response.json()["error"]


# --- mobile workers ----------------------------------------------------------------------------

def test_mobile_workers_page_to_the_end_sorted_by_username(shared: Client):
    first = shared.json(USERS, {"limit": 3})
    assert first["meta"] == {"limit": 3, "offset": 0, "total_count": 8, "previous": None,
                             "next": "?limit=3&offset=3"}
    second = shared.json(urljoin(shared.sim.base_url + USERS, first["meta"]["next"]))
    assert second["meta"]["previous"] == "?limit=3&offset=0"
    workers = shared.all_v05(USERS, {"limit": 3})
    assert len(workers) == len(_by_id(workers)) == 8
    assert [w["username"] for w in workers] == sorted(w["username"] for w in workers)
    assert all(set(w) == WORKER_FIELDS for w in workers)
    assert shared.json(USERS, {"limit": 0})["meta"]["limit"] == 1000  # 0 means the maximum
    assert shared.json(USERS, {"limit": 5000})["meta"]["limit"] == 1000
    assert "Invalid limit" in _error(shared.get(USERS, {"limit": "x"}))
    # Other parameters ride along in `next`, and the v1 URL style is echoed in resource_uri.
    doc = shared.json("/a/demo/api/user/v1/", {"format": "json", "limit": 2})
    assert doc["meta"]["next"] == "?format=json&limit=2&offset=2"
    assert doc["objects"][0]["resource_uri"] == f"/a/demo/api/user/v1/{doc['objects'][0]['id']}/"


def test_mobile_worker_fields_agree_with_groups_locations_and_forms(shared: Client, shared_sim):
    workers = shared.all_v05(USERS)
    groups = _by_id(shared.all_v05(GROUPS))
    locations = _by_id(shared.all_v05(LOCATIONS_V2), "location_id")
    for w in workers:
        assert w["username"] == w["username"].lower() and w["username"].endswith(
            "@demo.commcarehq.org")
        assert w["groups"] == sorted(g for g in groups if w["id"] in groups[g]["users"])
        assert w["primary_location"] in w["locations"]
        assert all(locations[i]["location_type_code"] == "facility" for i in w["locations"])
        assert w["default_phone_number"] == (w["phone_numbers"] or [None])[0]
        data = w["user_data"]
        assert data["commcare_project"] == "demo" and data["commcare_profile"] == ""
        assert data["commcare_location_id"] == data["commcare_primary_case_sharing_id"] == \
            w["primary_location"]
        assert data["commcare_location_ids"].split(" ") == w["locations"]
        assert w["eulas"] == "[]" and "T" in w["last_modified"] and "Z" not in w["last_modified"]
    forms = shared_sim.snapshot("demo", "form").values()
    by_username = {w["username"].split("@")[0]: w["id"] for w in workers}
    for form in forms:
        if form["is_phone_submission"]:
            assert by_username[form["metadata"]["username"]] == form["metadata"]["userID"]
    # Cases owned by a location are owned by facilities the workers are assigned to.
    owners = {c["properties"]["owner_id"] for c in shared_sim.snapshot("demo", "case").values()}
    owned_by_locations = owners & set(locations)
    assert owned_by_locations and owned_by_locations <= {i for w in workers
                                                          for i in w["locations"]}
    types = _by_id(shared.all_v05(TYPES), "code")
    assert types["facility"]["shares_cases"] is True


def test_mobile_worker_detail_and_filters(shared: Client, shared_sim):
    workers = shared.all_v05(USERS)
    one = workers[2]
    assert shared.json(f"{USERS}{one['id']}/") == one
    assert shared.json(f"{USERS}{one['id']}") == one
    # A missing worker: obj_get returns None and tastypie fails to dehydrate it (a 400).
    assert "empty attribute 'get_id'" in _error(shared.get(f"{USERS}no-such-user/"))
    inactive = shared.json(USERS, {"archived": "true"})["objects"]
    assert len(inactive) == 1 and inactive[0]["id"] not in _by_id(workers)
    assert shared.json(f"{USERS}{inactive[0]['id']}/") == inactive[0]  # the detail still works
    assert shared.json(USERS, {"archived": "maybe"})["meta"]["total_count"] == 8
    assert shared.json(USERS, {"archived": "false"})["meta"]["total_count"] == 8
    north = next(g for g in shared.all_v05(GROUPS) if g["name"] == "North team")
    members = shared.json(USERS, {"group": north["id"], "archived": "true"})["objects"]
    assert [m["id"] for m in members] == north["users"]  # group order; `archived` ignored
    assert _error(shared.get(USERS, {"group": "nope"})) == "Project demo has no group with id=nope"
    # No modified-since filter: unknown parameters are ignored.
    assert shared.json(USERS, {"last_modified.gte": "2100-01-01"})["meta"]["total_count"] == 8
    extras = shared.json(USERS, {"extras": "true", "limit": 50})["objects"]
    counts = {k for w in extras for k in w["extras"]}
    assert counts == {"submitted_last_30", "completed_last_30", "submitted_last_month",
                      "completed_last_month"}
    assert sum(w["extras"]["submitted_last_30"] for w in extras) > 0


# --- web users ---------------------------------------------------------------------------------

def test_web_users(shared: Client, shared_sim):
    users = shared.all_v05(WEB_USERS, {"limit": 3})
    assert len(users) == 4 and all(set(u) == WEB_USER_FIELDS for u in users)
    assert [u["username"] for u in users] == sorted(u["username"] for u in users)
    assert shared.json(WEB_USERS, {"limit": 1})["meta"]["next"] == "?limit=1&offset=1"
    admin = next(u for u in users if u["is_admin"])
    assert admin["role"] == "Admin" and all(
        v for k, v in admin["permissions"].items() if not k.endswith("_list") and k != "doc_type")
    viewer = next(u for u in users if u["role"] == "Read Only")
    assert viewer["permissions"]["view_reports"] and not viewer["permissions"]["edit_data"]
    assert viewer["is_active_in_domain"] is False  # deactivated in the project, still listed
    assert all(u["eulas"].startswith("[LicenseAgreement(date=datetime.datetime(") for u in users)
    # The supervisor who edits forms (via Web Apps) is a web user with a location.
    editors = {f["edited_by_user_id"] for f in shared_sim.snapshot("demo", "form").values()
               if f["edited_by_user_id"]}
    supervisor = next(u for u in users if u["id"] in editors)
    assert supervisor["primary_location_id"] in supervisor["assigned_location_ids"]
    assert admin["primary_location_id"] == "" and admin["assigned_location_ids"] == []
    detail = shared.json(f"{WEB_USERS}{supervisor['id']}/")
    assert detail == {**supervisor, "tableau_groups": []}  # tableau_groups: detail only
    assert "empty attribute" in _error(shared.get(f"{WEB_USERS}nobody/"))
    found = shared.json(WEB_USERS, {"web_username": supervisor["username"]})["objects"]
    assert [u["id"] for u in found] == [supervisor["id"]]
    assert shared.json(WEB_USERS, {"web_username": "x@y.z"})["objects"] == []
    newest = max(u["last_modified"] for u in users)
    assert [u["last_modified"] for u in shared.json(
        WEB_USERS, {"last_modified.gte": newest})["objects"]] == [newest]
    assert len(shared.json(WEB_USERS, {"last_modified.lt": newest})["objects"]) == 3
    assert shared.json("/a/demo/api/web-user/v1/")["objects"][0]["resource_uri"].startswith(
        "/a/demo/api/web-user/v1/")


# --- groups ------------------------------------------------------------------------------------

def test_groups(shared: Client):
    groups = shared.all_v05(GROUPS, {"limit": 1})
    assert [g["name"] for g in groups] == sorted(g["name"] for g in groups)
    assert all(set(g) == GROUP_FIELDS for g in groups) and len(groups) == 3
    active = set(_by_id(shared.all_v05(USERS)))
    assert all(set(g["users"]) <= active for g in groups)  # deactivated members are hidden
    assert {g["case_sharing"] for g in groups} == {True, False}
    assert shared.json(f"{GROUPS}{groups[0]['id']}/") == groups[0]
    missing = shared.get(f"{GROUPS}nope/")
    assert missing.status_code == 404 and missing.content == b""
    assert shared.json(GROUPS, {"limit": 2})["meta"]["next"] == "?limit=2&offset=2"


# --- locations ---------------------------------------------------------------------------------

def test_location_hierarchy_v1(shared: Client):
    locations = shared.all_v05(LOCATIONS, {"limit": 7})
    assert 30 <= len(locations) <= 45 and all(set(loc) == LOCATION_FIELDS for loc in locations)
    assert [loc["id"] for loc in locations] == sorted(loc["id"] for loc in locations)
    by_uri = {loc["resource_uri"]: loc for loc in locations}
    base = shared.sim.base_url
    types = {t["resource_uri"]: t for t in shared.all_v05(TYPES)}
    codes = []
    for loc in locations:
        assert loc["resource_uri"] == f"{base}{LOCATIONS}{loc['location_id']}/"
        assert loc["domain"] == "demo" and "Z" not in loc["last_modified"]
        assert loc["last_modified"] >= loc["created_at"]
        t = types[loc["location_type"]]
        parent = by_uri.get(loc["parent"]) if loc["parent"] else None
        parent_type = types[parent["location_type"]]["resource_uri"] if parent else None
        assert t["parent"] == parent_type  # every location sits under its type's parent type
        codes.append(t["code"])
        if loc["latitude"] is not None:
            assert len(loc["latitude"].split(".")[1]) == 10  # DecimalField(20, 10) as a string
    assert codes.count("country") == 1 and codes.count("region") == 3
    assert codes.count("district") == 7 and codes.count("facility") >= 14
    # URIs are absolute and resolve; the v1 URL style points at location_type/v1.
    one = locations[-1]
    assert shared.json(one["parent"]) == by_uri[one["parent"]]
    assert shared.json(one["location_type"]) == types[one["location_type"]]
    new_style = shared.json("/a/demo/api/location/v1/", {"limit": 1})["objects"][0]
    assert new_style["resource_uri"] == \
        f"{base}/a/demo/api/location/v1/{new_style['location_id']}/"
    assert new_style["location_type"].startswith(f"{base}/a/demo/api/location_type/v1/")
    assert shared.json(one["resource_uri"]) == one
    assert shared.get(f"{LOCATIONS}nowhere/").status_code == 404
    doc = shared.json(LOCATIONS, {"limit": 10})
    assert doc["meta"]["next"] == "?limit=10&offset=10"
    assert doc["meta"]["total_count"] == len(locations)  # no archived location ever appears
    assert shared.json(LOCATIONS, {"limit": 5000})["meta"]["limit"] == 1000


def test_location_filters_v1(shared: Client):
    locations = shared.all_v05(LOCATIONS)
    one = locations[5]

    def ids(**params) -> list[str]:
        return [loc["location_id"] for loc in shared.all_v05(LOCATIONS, params)]

    assert ids(site_code=one["site_code"]) == [one["location_id"]]
    newest = max(loc["last_modified"] for loc in locations)
    assert ids(last_modified__gte=newest) == [loc["location_id"] for loc in locations
                                              if loc["last_modified"] == newest]
    assert len(ids(last_modified__lt=newest)) == len(locations) - len(ids(
        last_modified__gte=newest))
    assert len(ids(latitude__isnull="true")) == 4  # the country and the regions
    assert len(ids(created_at__year=one["created_at"][:4])) == len(locations)
    assert ids(site_code=one["site_code"], limit=1, domain="elsewhere") == [one["location_id"]]
    # tastypie's rules: unknown names ignored (so v2's dotted syntax silently does nothing)...
    assert len(ids(**{"last_modified.gte": "2100-01-01", "colour": "red"})) == len(locations)
    # ...known fields without filtering, disallowed lookups and relations are 400s.
    assert _error(shared.get(LOCATIONS, {"name": "Kenya"})) == \
        "The 'name' field does not allow filtering."
    assert _error(shared.get(LOCATIONS, {"site_code__contains": "a"})) == \
        "'contains' is not an allowed filter on the 'site_code' field."
    assert _error(shared.get(LOCATIONS, {"last_modified__foo": "1"})) == \
        "The 'last_modified' field does not support relations."
    assert _error(shared.get(LOCATIONS, {"order_by": "last_modified"})) == \
        "The 'last_modified' field does not allow ordering."
    assert _error(shared.get(LOCATIONS, {"created_at__gte": "soon"})) == [
        "“soon” value has an invalid format. It must be in "
        "YYYY-MM-DD HH:MM[:ss[.uuuuuu]][TZ] format."]
    assert ids(last_modified__gte=newest + "Z") == ids(last_modified__gte=newest)


def test_locations_v2(shared: Client, shared_sim):
    for path in (LOCATIONS_V2, "/a/demo/api/location/v2/"):
        doc = shared.json(path, {"limit": 4})
        assert doc["meta"]["next"] == "?limit=4&offset=4"
        assert all(set(loc) == LOCATION_V2_FIELDS for loc in doc["objects"])
    v2 = shared.all_v05(LOCATIONS_V2, {"limit": 9})
    v1 = _by_id(shared.all_v05(LOCATIONS), "location_id")
    assert [loc["location_id"] for loc in v2] == list(v1)
    roots = [loc for loc in v2 if loc["parent_location_id"] == ""]
    assert [r["location_type_code"] for r in roots] == ["country"]
    for loc in v2:
        old = v1[loc["location_id"]]
        assert (loc["name"], loc["site_code"], loc["last_modified"], loc["latitude"]) == (
            old["name"], old["site_code"], old["last_modified"], old["latitude"])
        if loc["parent_location_id"]:
            assert old["parent"].endswith(f"/{loc['parent_location_id']}/")
    district = next(loc for loc in v2 if loc["location_type_code"] == "district")

    def ids(**params) -> list[str]:
        return [loc["location_id"] for loc in shared.all_v05(LOCATIONS_V2, params)]

    facilities = ids(location_type_code="facility")
    assert facilities and all(v1[i]["location_type"].endswith(
        f"/{_type_id(shared, 'facility')}/") for i in facilities)
    children = ids(parent_location_id=district["location_id"])
    assert children and all(i in facilities for i in children)
    newest = max(loc["last_modified"] for loc in v2)
    assert ids(**{"last_modified.gte": newest}) == ids(last_modified__gte=newest)
    assert len(ids(**{"last_modified.gt": newest})) == 0
    assert ids(name="Kenya") == [roots[0]["location_id"]]
    ordered = shared.all_v05(LOCATIONS_V2, {"order_by": "-last_modified"})
    assert [loc["last_modified"] for loc in ordered] == sorted(
        (loc["last_modified"] for loc in v2), reverse=True)
    assert _error(shared.get(LOCATIONS_V2, {"order_by": "name"})) == \
        "The 'name' field does not allow ordering."
    assert _error(shared.get(LOCATIONS_V2, {"latitude": "1"})) == \
        "The 'latitude' field does not allow filtering."
    assert _error(shared.get(LOCATIONS_V2, {"last_modified": newest})) == \
        "'exact' is not an allowed filter on the 'last_modified' field."
    assert shared.json(LOCATIONS_V2, {"limit": 9000})["meta"]["limit"] == 5000
    assert shared.json(f"{LOCATIONS_V2}{district['location_id']}/") == district
    assert shared_sim.snapshot("demo", "location_v2") == _by_id(v2, "location_id")
    assert shared_sim.snapshot("demo", "location") == v1


def _type_id(shared: Client, code: str) -> int:
    return next(t["id"] for t in shared.all_v05(TYPES) if t["code"] == code)


def test_location_types(shared: Client):
    types = shared.all_v05(TYPES, {"limit": 1})
    assert [t["code"] for t in types] == ["country", "region", "district", "facility"]
    assert all(set(t) == TYPE_FIELDS and t["administrative"] for t in types)
    assert types[0]["parent"] is None
    assert all(child["parent"] == parent["resource_uri"]
               for parent, child in zip(types, types[1:]))
    assert shared.json(types[2]["resource_uri"]) == types[2]
    assert shared.get(f"{TYPES}999999/").status_code == 404
    assert shared.get(f"{TYPES}abc/").status_code == 404
    assert _error(shared.get(TYPES, {"code": "facility"})) == \
        "The 'code' field does not allow filtering."


# --- changes between syncs ---------------------------------------------------------------------

def test_mobile_worker_changes(sim, client: Client):
    before = _by_id(client.all_v05(USERS))
    facility = next(iter(before.values()))["primary_location"]
    north = next(g for g in client.all_v05(GROUPS) if g["name"] == "North team")
    new_id = sim.add_mobile_worker("demo", "chw10", first_name="Wanjiru", location_ids=[facility],
                                   groups=[north["id"]], user_data={"chw_id": "CHW-010"})
    added = client.json(f"{USERS}{new_id}/")
    assert added["username"] == "chw10@demo.commcarehq.org" and added["groups"] == [north["id"]]
    assert added["last_modified"] > max(w["last_modified"] for w in before.values())
    # username.exact sorts byte-wise: "chw10@" comes before "chw1@" ("0" < "@").
    names = [w["username"] for w in client.all_v05(USERS)]
    assert names[:2] == ["chw10@demo.commcarehq.org", "chw1@demo.commcarehq.org"]
    assert new_id in client.json(f"{GROUPS}{north['id']}/")["users"]
    with pytest.raises(ValueError):
        sim.add_mobile_worker("demo", "chw10")

    sim.update_mobile_worker("demo", new_id, last_name="Kamau", user_data={"cadre": "CHA"},
                             phone_numbers=["+254700000001"])
    changed = client.json(f"{USERS}{new_id}/")
    assert changed["last_name"] == "Kamau" and changed["user_data"]["cadre"] == "CHA"
    assert changed["user_data"]["chw_id"] == "CHW-010"
    assert changed["default_phone_number"] == "+254700000001"
    assert changed["last_modified"] > added["last_modified"]
    with pytest.raises(ValueError):
        sim.update_mobile_worker("demo", new_id, username="other")

    # Membership lives on the group: the worker's last_modified does not move.
    sim.update_mobile_worker("demo", new_id, groups=[])
    assert client.json(f"{USERS}{new_id}/")["groups"] == []
    assert client.json(f"{USERS}{new_id}/")["last_modified"] == changed["last_modified"]

    sim.deactivate_mobile_worker("demo", new_id)
    assert new_id not in _by_id(client.all_v05(USERS))
    assert new_id in _by_id(client.json(USERS, {"archived": "true"})["objects"])
    sim.activate_mobile_worker("demo", new_id)
    assert new_id in _by_id(client.all_v05(USERS))

    sim.delete_mobile_worker("demo", new_id)
    assert new_id not in _by_id(client.all_v05(USERS))
    assert new_id not in _by_id(client.json(USERS, {"archived": "true"})["objects"])
    assert client.get(f"{USERS}{new_id}/").status_code == 400
    with pytest.raises(KeyError):
        sim.update_mobile_worker("demo", new_id, first_name="x")
    sim.restore_mobile_worker("demo", new_id)
    assert client.json(f"{USERS}{new_id}/")["last_name"] == "Kamau"
    assert sim.snapshot("demo", "user")[new_id] == client.json(f"{USERS}{new_id}/")


def test_group_changes(sim, client: Client):
    workers = client.all_v05(USERS)
    a, b = workers[0]["id"], workers[1]["id"]
    group_id = sim.add_group("demo", "Alpha team", [a], case_sharing=True,
                             metadata={"zone": "A"})
    group = client.json(f"{GROUPS}{group_id}/")
    assert group["users"] == [a] and group["case_sharing"] and group["metadata"] == {"zone": "A"}
    assert client.all_v05(GROUPS)[0]["name"] == "Alpha team"  # sorted by name
    assert group_id in client.json(f"{USERS}{a}/")["groups"]
    with pytest.raises(ValueError):
        sim.add_group("demo", "Alpha team")
    sim.add_group_members("demo", group_id, [b])
    assert client.json(f"{GROUPS}{group_id}/")["users"] == [a, b]
    assert [m["id"] for m in client.json(USERS, {"group": group_id})["objects"]] == [a, b]
    sim.remove_group_members("demo", group_id, [a])
    assert client.json(f"{GROUPS}{group_id}/")["users"] == [b]
    sim.update_group("demo", group_id, name="Zulu team", reporting=False)
    renamed = client.json(f"{GROUPS}{group_id}/")
    assert renamed["name"] == "Zulu team" and renamed["reporting"] is False
    sim.deactivate_mobile_worker("demo", b)
    assert client.json(f"{GROUPS}{group_id}/")["users"] == []  # still a member, not active
    sim.activate_mobile_worker("demo", b)

    sim.delete_group("demo", group_id)
    assert group_id not in _by_id(client.all_v05(GROUPS))
    assert client.get(f"{GROUPS}{group_id}/").status_code == 404
    assert group_id not in client.json(f"{USERS}{b}/")["groups"]
    assert client.get(USERS, {"group": group_id}).status_code == 400
    sim.restore_group("demo", group_id)
    assert client.json(f"{GROUPS}{group_id}/")["users"] == [b]


def test_web_user_changes(sim, client: Client):
    district = next(loc for loc in client.all_v05(LOCATIONS_V2)
                    if loc["location_type_code"] == "district")["location_id"]
    user_id = sim.add_web_user("demo", "New.Analyst@example.org", first_name="Zoë",
                               role="App Editor", location_ids=[district])
    user = client.json(f"{WEB_USERS}{user_id}/")
    assert user["username"] == "new.analyst@example.org" and user["role"] == "App Editor"
    assert user["primary_location_id"] == district and user["assigned_location_ids"] == [district]
    assert user["permissions"]["edit_apps"] is True and user["is_admin"] is False
    sim.update_web_user("demo", user_id, role="Read Only", user_data={"team": "M&E"})
    changed = client.json(f"{WEB_USERS}{user_id}/")
    assert changed["role"] == "Read Only" and changed["permissions"]["edit_apps"] is False
    assert changed["user_data"]["team"] == "M&E" and changed["last_modified"] > user[
        "last_modified"]
    found = client.json(WEB_USERS, {"last_modified.gt": user["last_modified"]})["objects"]
    assert [u["id"] for u in found] == [user_id]
    sim.update_web_user("demo", user_id, is_admin=True)
    assert client.json(f"{WEB_USERS}{user_id}/")["role"] == "Admin"
    sim.deactivate_web_user("demo", user_id)
    assert _by_id(client.all_v05(WEB_USERS))[user_id]["is_active_in_domain"] is False
    sim.activate_web_user("demo", user_id)
    sim.delete_web_user("demo", user_id)
    assert user_id not in _by_id(client.all_v05(WEB_USERS))
    assert client.get(f"{WEB_USERS}{user_id}/").status_code == 400
    sim.restore_web_user("demo", user_id)
    assert _by_id(client.all_v05(WEB_USERS))[user_id]["is_active_in_domain"] is True


def test_location_changes(sim, client: Client):
    v2 = _by_id(client.all_v05(LOCATIONS_V2), "location_id")
    v1 = client.all_v05(LOCATIONS)
    workers = client.all_v05(USERS)
    home = workers[0]["primary_location"]
    district = v2[home]["parent_location_id"]
    region = v2[district]["parent_location_id"]
    newest = max(loc["last_modified"] for loc in v2.values())

    new_id = sim.add_location("demo", "Nyamasaria Dispensary", "facility", district,
                              latitude=-0.1, longitude=34.8, location_data={"keph_level": "2"})
    added = client.json(f"{LOCATIONS}{new_id}/")
    assert added["id"] > max(loc["id"] for loc in v1)  # the SQL sequence moves on
    assert client.all_v05(LOCATIONS)[-1] == added  # primary key order: last
    assert added["site_code"] == "nyamasaria_dispensary"
    assert added["latitude"] == "-0.1000000000" and added["parent"].endswith(f"/{district}/")
    assert [loc["location_id"] for loc in client.all_v05(
        LOCATIONS_V2, {"last_modified.gt": newest})] == [new_id]
    with pytest.raises(ValueError):  # a facility cannot sit under a region
        sim.add_location("demo", "Misplaced", "facility", region)
    with pytest.raises(ValueError):
        sim.add_location("demo", "Other", "facility", district, site_code=added["site_code"])

    sim.update_location("demo", new_id, name="Nyamasaria Health Centre",
                        location_data={"keph_level": "3"})
    changed = client.json(f"{LOCATIONS_V2}{new_id}/")
    assert changed["name"] == "Nyamasaria Health Centre"
    assert changed["site_code"] == "nyamasaria_dispensary"  # the site code stays
    assert changed["location_data"] == {"keph_level": "3"}
    assert changed["last_modified"] > added["last_modified"]

    other = next(i for i, loc in v2.items()
                 if loc["location_type_code"] == "district" and i != district)
    sim.move_location("demo", new_id, other)
    moved = client.json(f"{LOCATIONS_V2}{new_id}/")
    assert moved["parent_location_id"] == other and moved["last_modified"] > changed[
        "last_modified"]
    with pytest.raises(ValueError):
        sim.move_location("demo", district, district)

    # Archiving a district archives its facilities and unassigns their users.
    archived = sim.archive_location("demo", district)
    assert district in archived and home in archived
    live = _by_id(client.all_v05(LOCATIONS_V2), "location_id")
    assert not set(archived) & set(live)
    assert client.get(f"{LOCATIONS}{district}/").status_code == 404
    assert client.json(LOCATIONS, {"limit": 1})["meta"]["total_count"] == len(live)
    worker = client.json(f"{USERS}{workers[0]['id']}/")
    assert home not in worker["locations"]
    assert worker["primary_location"] == (worker["locations"] or [None])[0]
    assert worker["last_modified"] > workers[0]["last_modified"]
    region_before = client.json(f"{LOCATIONS_V2}{region}/")["last_modified"]

    saved = sim.unarchive_location("demo", district)
    assert set(archived) | {region} <= set(saved)  # descendants and ancestors, all saved
    back = _by_id(client.all_v05(LOCATIONS_V2), "location_id")
    assert set(archived) <= set(back) and back[region]["last_modified"] > region_before
    assert home not in client.json(f"{USERS}{workers[0]['id']}/")["locations"]  # not re-assigned

    gone = sim.delete_location("demo", other)
    assert new_id in gone and other in gone
    assert client.get(f"{LOCATIONS_V2}{new_id}/").status_code == 404
    with pytest.raises(KeyError):
        sim.unarchive_location("demo", other)
    assert sim.stats()["domains"]["demo"]["locations"] == len(client.all_v05(LOCATIONS))


def test_changes_over_the_control_api(sim, client: Client):
    def mutate(**body) -> requests.Response:
        return requests.post(sim.base_url + "/_sim/mutate", json=body)

    district = next(loc for loc in client.all_v05(LOCATIONS_V2)
                    if loc["location_type_code"] == "district")["location_id"]
    worker = mutate(action="add_mobile_worker", username="chw42", first_name="Ana").json()
    worker_id = worker["result"]
    assert client.json(f"{USERS}{worker_id}/")["first_name"] == "Ana"
    assert mutate(action="update_mobile_worker", user_id=worker_id,
                  user_data={"x": "1"}).status_code == 200
    assert mutate(action="deactivate_mobile_worker", user_id=worker_id).status_code == 200
    assert mutate(action="activate_mobile_worker", domain="demo",
                  user_id=worker_id).status_code == 200
    group_id = mutate(action="add_group", name="Ops", users=[worker_id]).json()["result"]
    assert mutate(action="remove_group_members", group_id=group_id,
                  user_ids=[worker_id]).status_code == 200
    assert mutate(action="add_group_members", group_id=group_id,
                  user_ids=[worker_id]).status_code == 200
    assert client.json(f"{GROUPS}{group_id}/")["users"] == [worker_id]
    web_id = mutate(action="add_web_user", username="ops@example.org").json()["result"]
    assert mutate(action="delete_web_user", user_id=web_id).status_code == 200
    loc_id = mutate(action="add_location", name="Pop-up Clinic", location_type="facility",
                    parent_id=district).json()["result"]
    assert mutate(action="archive_location", location_id=loc_id).json()["result"] == [loc_id]
    assert mutate(action="unarchive_location", location_id=loc_id).status_code == 200
    assert mutate(action="delete_location", location_id=loc_id).json()["result"] == [loc_id]
    assert mutate(action="delete_group", group_id=group_id).status_code == 200
    assert mutate(action="delete_mobile_worker", user_id=worker_id).status_code == 200
    assert mutate(action="restore_mobile_worker", user_id=worker_id).status_code == 200
    # Bad arguments and unknown ids are 400s.
    assert mutate(action="delete_group", group_id="nope").status_code == 400
    assert mutate(action="add_location", name="X", location_type="planet").status_code == 400
    assert mutate(action="add_mobile_worker", username="y", colour="red").status_code == 400
    stats = requests.get(sim.base_url + "/_sim/stats").json()["domains"]["demo"]
    assert stats["mobile_workers"] == 9 and stats["inactive_mobile_workers"] == 1
    assert stats["web_users"] == 4 and stats["groups"] == 3


def test_activate_and_deactivate_over_hqs_own_api(sim, client: Client):
    worker = client.all_v05(USERS)[0]["id"]
    response = client.session.post(f"{sim.base_url}{USERS}{worker}/deactivate/", json={})
    assert response.status_code == 202 and response.json() == {}
    assert worker in _by_id(client.json(USERS, {"archived": "true"})["objects"])
    assert client.session.post(f"{sim.base_url}/a/demo/api/user/v1/{worker}/activate/",
                               json={}).status_code == 202
    assert worker in _by_id(client.all_v05(USERS))
    web = client.all_v05(WEB_USERS)[0]["id"]
    assert client.session.post(f"{sim.base_url}{WEB_USERS}{web}/deactivate/").status_code == 202
    assert client.json(f"{WEB_USERS}{web}/")["is_active_in_domain"] is False
    assert client.session.post(f"{sim.base_url}{USERS}nope/activate/").status_code == 404
    assert client.get(f"{USERS}{worker}/activate/").status_code == 405
    assert client.session.put(f"{sim.base_url}{GROUPS}", json={}).status_code == 405


# --- faults, auth, rate limit, determinism -----------------------------------------------------

PATHS = {"user": USERS, "web_user": WEB_USERS, "group": GROUPS, "location": LOCATIONS,
         "location_v2": LOCATIONS_V2, "location_type": TYPES}


@pytest.mark.parametrize("resource", sorted(PATHS))
def test_faults_auth_and_the_request_log(sim, client: Client, resource):
    path = PATHS[resource]
    sim.faults.add("503", resource=resource)
    assert client.get(CASES_PATH).status_code == 200  # another resource: untouched
    assert client.get(path).status_code == 503
    assert client.get(path).status_code == 200
    assert [r.resource for r in sim.requests[-2:]] == [resource, resource]
    anonymous = Client(sim, user=None).get(path)
    assert anonymous.status_code == 401 and "WWW-Authenticate" in anonymous.headers
    assert Client(sim, user=None).get(path, params={"username": "sim@example.org",
                                                   "api_key": "sim-key"}).status_code == 200
    assert Client(sim, OTHER_USER, OTHER_KEY).get(path).status_code == 403


CASES_PATH = "/a/demo/api/v0.5/case/"


def test_rate_limit_spares_locations(sim, client: Client):
    sim.set_rate_limit(True, users=0, scale=0.01)  # one request a minute for the project
    assert client.get(USERS).status_code == 200
    assert client.get(GROUPS).status_code == 429
    # Locations' tastypie Meta has no HQThrottle: never throttled, and they use no allowance.
    assert all(client.get(p).status_code == 200 for p in (LOCATIONS, LOCATIONS_V2, TYPES) * 3)
    assert client.get(WEB_USERS).status_code == 429


def test_reference_data_is_deterministic_and_seeded_apart():
    a, b = Dataset.generate(seed=5, n_cases=40), Dataset.generate(seed=5, n_cases=40)
    assert a.directory == b.directory
    other = Dataset.generate(seed=6, n_cases=40)
    assert {loc.location_id for loc in other.directory.locations.values()} != {
        loc.location_id for loc in a.directory.locations.values()}
    # The two case-owning facilities and groups are the dataset's own owners.
    f = a.factory
    assert set(f.owners[2:4]) <= set(a.directory.locations)
    assert set(f.owners[:2]) <= set(a.directory.groups)


def test_cases_and_forms_are_untouched_by_the_reference_data():
    """The reference data has a stream of its own: generated cases and forms are byte for
    byte what they were before it existed (this digest predates it)."""
    h = hashlib.sha256()
    for seed, n, awkward in ((0, 300, False), (7, 150, False), (3, 80, True), (1, 5, False)):
        ds = Dataset.generate(domain="demo", seed=seed, n_cases=n, awkward=awkward)
        for r in ds.cases + ds.forms:
            h.update(r.head + r.tail)
        h.update(repr(ds.apps).encode())
    assert h.hexdigest() == "0f7e97f9ed47378484b338a2b31915b08f844c5f306e9897f000bc408208ec74"


def test_next_is_a_query_string_to_resolve_against_the_page(shared: Client):
    """`base_url + next` is wrong; `urljoin(page_url, next)` is right."""
    page = shared.get(LOCATIONS, {"limit": 10})
    nxt = page.json()["meta"]["next"]
    assert urlsplit(nxt).path == "" and shared.get(shared.sim.base_url + nxt).status_code == 404
    assert shared.get(urljoin(page.url, nxt)).json()["meta"]["offset"] == 10
