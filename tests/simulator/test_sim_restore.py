"""The OTA restore over HTTP: full and incremental syncs, purges, 412s, fixtures and streaming,
checked the way a phone reads them and against `HQSimulator.restore_caseload`."""

from __future__ import annotations

import base64
import re
import socket

import pytest
import requests
from requests.auth import HTTPBasicAuth, HTTPDigestAuth

from etl.simulator import HQSimulator
from tests.simulator import otaxml
from tests.simulator.conftest import CASES, Client

RESTORE = "/a/demo/phone/restore/"


def _worker(sim: HQSimulator, name: str = "chw1"):
    return sim.store.domains["demo"].directory.worker_by_username(
        f"{name}@demo.commcarehq.org")


def _get(sim: HQSimulator, name: str = "chw1", **params: str) -> requests.Response:
    w = _worker(sim, name)
    return requests.get(sim.base_url + RESTORE, params=params, timeout=30,
                        auth=HTTPBasicAuth(w.username, sim.mobile_worker_password("demo", name)))


def _restore(sim: HQSimulator, name: str = "chw1", **params: str) -> otaxml.Restore:
    response = _get(sim, name, **params)
    assert response.status_code == 200, response.text[:300]
    return otaxml.parse(response.content)


def _group(sim: HQSimulator, name: str) -> str:
    return next(g.id for g in sim.store.domains["demo"].directory.groups.values()
                if g.name == name)


def test_a_full_restore_is_the_open_caseload(sim):
    w = _worker(sim)
    response = _get(sim, items="true")
    assert response.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.headers
    restore = otaxml.parse(response.content)
    root = restore.root
    assert root.get("items") == str(len(root))  # the message, Sync, Registration, ...
    message = root.find(f"{otaxml.RESPONSE}message")
    assert message.get("nature") == "ota_restore_success"
    assert message.text == "Successfully restored account chw1!"
    assert re.fullmatch(r"[0-9a-f]{32}", restore.restore_id)
    reg = {e.tag.replace(otaxml.REGISTRATION, ""): e for e in restore.registration}
    assert reg["username"].text == "chw1" and reg["uuid"].text == w.id
    assert reg["password"].text.startswith("sha1$") and reg["password"].text != "123"
    data = {d.get("key"): d.text for d in reg["user_data"]}
    assert data["commcare_first_name"] == w.first_name and data["chw_id"] == w.custom_data["chw_id"]
    assert all(b.create is not None and not b.close for b in restore.blocks)
    caseload = sim.restore_caseload("demo", "chw1")
    assert {b.case_id: otaxml.view_of(b) for b in restore.blocks} == caseload
    owners = {c["owner_id"] for c in caseload.values()}
    assert w.id in owners and w.primary_location in owners  # its own and its facility's
    closed = [i for i, c in sim.snapshot("demo", "case").items() if c["closed"]]
    assert closed and not set(closed) & set(restore.cases)


def test_case_blocks_follow_casexml_v2(sim):
    restore = _restore(sim)
    raw = _get(sim).text
    block = next(b for b in restore.blocks if b.indices)
    case = sim.snapshot("demo", "case")[block.case_id]
    assert block.user_id == case["user_id"] and block.date_modified == case["date_modified"]
    assert list(block.create) == ["case_type", "case_name", "owner_id"]
    assert block.update["date_opened"] == case["properties"]["date_opened"][:10]
    (identifier, ref), = case["indices"].items()
    assert block.indices[identifier]["case_id"] == ref["case_id"]
    assert 'xmlns="http://commcarehq.org/case/transaction/v2"' in raw
    # not XML names: left out (the case API has them)
    assert any("Phone Number" in sim.snapshot("demo", "case")[i]["properties"]
               for i in restore.cases)
    assert "Phone Number" not in raw and "2nd_visit" not in raw


def test_version_and_other_params(sim):
    assert _get(sim, version="3.0").status_code == 200
    bad = _get(sim, version="1.0")
    assert bad.status_code == 412 and "ota_restore_error" in bad.text
    plain = _restore(sim, device_id="phone-1", app_id="abc", overwrite_cache="true")
    assert plain.root.get("items") is None
    log = sim.store.domains["demo"].sync_logs[plain.restore_id]
    assert (log.device_id, log.app_id) == ("phone-1", "abc")


def test_digest_works_for_the_restore(sim):
    w = _worker(sim)
    response = requests.get(sim.base_url + RESTORE, auth=HTTPDigestAuth(w.username, "123"),
                            timeout=30)
    assert response.status_code == 200 and otaxml.parse(response.content).blocks


def test_an_incremental_sync_sends_changes_creates_closes_and_purges(sim):
    w = _worker(sim)
    full = _restore(sim)
    held = [b.case_id for b in full.blocks]
    with_index = next(b.case_id for b in full.blocks if b.indices)
    plain = [i for i in held if i != with_index]
    updated, closed, moved, deleted, untouched = plain[:5]
    sim.update_cases("demo", [updated], {"weight": "71.5"})
    sim.close_cases("demo", [closed])
    sim.set_case_owner("demo", [moved], _worker(sim, "chw5").id)
    sim.delete_cases("demo", [deleted])
    (identifier,) = full.cases[with_index].indices
    sim.set_case_index("demo", with_index, identifier, None)
    new = sim.add_cases("demo", 2, "household", owner_id=w.id)
    shared = sim.add_cases("demo", 1, "household", owner_id=_group(sim, "North team"))
    elsewhere = sim.add_cases("demo", 1, "household", owner_id=_worker(sim, "chw5").id)

    second = _restore(sim, since=full.restore_id)
    blocks = second.cases
    assert second.restore_id != full.restore_id
    assert set(blocks) == {updated, closed, moved, deleted, with_index, *new, *shared}
    assert untouched not in blocks and elsewhere[0] not in blocks
    assert blocks[updated].create is None and blocks[updated].update["weight"] == "71.5"
    assert {"case_type", "case_name", "owner_id"} <= set(blocks[updated].update)
    assert blocks[closed].close and blocks[closed].update is not None
    for purged in (moved, deleted):
        b = blocks[purged]
        assert b.close and b.create is None and b.update is None and not b.indices
    assert blocks[with_index].indices[identifier]["case_id"] == ""  # removed: sent empty
    assert all(blocks[i].create is not None for i in (*new, *shared))
    caseload = sim.restore_caseload("demo", "chw1")
    assert identifier not in caseload[with_index]["indices"]
    assert set(caseload) == (set(held) - {closed, moved, deleted}) | set(new) | set(shared)

    third = _restore(sim, since=second.restore_id)
    assert third.blocks == []
    again = _restore(sim, since=full.restore_id)  # an older token still works
    assert set(again.cases) == set(blocks)


def test_leaving_a_group_purges_its_cases(sim):
    w = _worker(sim)
    group = _group(sim, "North team")
    shared = sim.add_cases("demo", 3, "household", owner_id=group)
    first = _restore(sim)
    assert set(shared) <= set(first.cases)
    sim.remove_group_members("demo", group, [w.id])
    second = _restore(sim, since=first.restore_id)
    assert set(second.cases) == set(shared) and all(b.close for b in second.blocks)
    assert not set(shared) & set(sim.restore_caseload("demo", "chw1"))


def test_an_unknown_or_foreign_since_is_412(sim):
    other = _restore(sim, "chw2")
    for since in ("0" * 32, other.restore_id):
        response = _get(sim, since=since)
        assert response.status_code == 412
        assert response.headers["Content-Type"].startswith("text/xml")
        root = otaxml.ET.fromstring(response.content)
        (message,) = root
        assert root.tag == f"{otaxml.RESPONSE}OpenRosaResponse"
        assert message.get("nature") == "ota_restore_error" and since in message.text
    # another project's token is unknown here
    elsewhere = sim.store.domains["elsewhere"].directory
    worker = next(iter(elsewhere.workers.values()))
    theirs = requests.get(f"{sim.base_url}/a/elsewhere/phone/restore/", timeout=30,
                          auth=HTTPBasicAuth(worker.username, "123"))
    since = otaxml.parse(theirs.content).restore_id
    assert _get(sim, since=since).status_code == 412


def test_set_case_index_shows_in_the_case_api_and_the_restore(sim):
    client = Client(sim)
    household = sim.add_cases("demo", 1, "household", owner_id=_worker(sim).id)[0]
    (case_id,) = sim.add_cases("demo", 1, "contact", owner_id=_worker(sim).id)
    sim.set_case_index("demo", case_id, "host", household, relationship="extension")
    served = client.json(f"{CASES}{case_id}/")["indices"]
    assert served["host"] == {"case_id": household, "case_type": "household",
                              "relationship": "extension"}
    raw = _get(sim).text
    assert re.search(f'<host case_type="household" relationship="extension">{household}</host>',
                     raw)
    sim.set_case_index("demo", case_id, "host", None)
    assert "host" not in client.json(f"{CASES}{case_id}/")["indices"]
    assert re.search(r'<host case_type="household" relationship="extension"/>', _get(sim).text)


def test_fixtures_lookup_tables_groups_and_locations(sim):
    w, other = _worker(sim), _worker(sim, "chw2")
    sim.add_lookup_table("demo", "clinics", ["name", "code"],
                         [{"name": "Ahero & Co", "code": "1"}, {"name": "Sega"}])
    sim.add_lookup_table("demo", "targets", ["month", "visits"],
                         [{"month": "2024-05", "visits": "40"}], users=["chw1"])
    restore = _restore(sim)
    by_id = {f.get("id"): f for f in restore.fixtures if f.tag.endswith("fixture")}
    assert list(by_id) == ["user-groups", "item-list:clinics", "item-list:targets", "locations"]
    clinics = by_id["item-list:clinics"]
    assert clinics.get("user_id") == w.id
    rows = [[(c.tag.replace(otaxml.RESPONSE, ""), c.text) for c in item]
            for item in clinics.find(f"{otaxml.RESPONSE}clinics_list")]
    assert rows == [[("name", "Ahero & Co"), ("code", "1")], [("name", "Sega"), ("code", None)]]
    groups = by_id["user-groups"].findall(f"{otaxml.RESPONSE}groups/{otaxml.RESPONSE}group")
    expected = {g.id: g.name for g in sim.store.domains["demo"].directory.groups.values()
                if g.case_sharing and w.id in g.users}
    assert {g.get("id"): g.find(f"{otaxml.RESPONSE}name").text for g in groups} == expected
    schema = next(f for f in restore.fixtures if f.tag.endswith("schema"))
    assert schema.get("id") == "locations"
    locations = by_id["locations"].findall(f"{otaxml.RESPONSE}locations/{otaxml.RESPONSE}location")
    mine = next(loc for loc in locations if loc.get("id") == w.primary_location)
    assert mine.get("type") == "facility" and mine.get("facility_id") == w.primary_location
    assert mine.get("country_id") and mine.find(f"{otaxml.RESPONSE}location_data") is not None
    assert by_id["locations"].get("indexed") == "true"
    # chw2 gets the global table only; skip_fixtures leaves them all out
    theirs = _restore(sim, "chw2")
    ids = {f.get("id") for f in theirs.fixtures}
    assert "item-list:clinics" in ids and "item-list:targets" not in ids
    assert other.id in {f.get("user_id") for f in theirs.fixtures}
    bare = _restore(sim, skip_fixtures="true", items="true")
    assert bare.fixtures == [] and bare.root.get("items") == str(len(bare.root))


def test_lookup_tables_are_validated(sim):
    with pytest.raises(ValueError):
        sim.add_lookup_table("demo", "2 bad", ["name"], [])
    with pytest.raises(ValueError):
        sim.add_lookup_table("demo", "ok", ["name"], [{"name": "a", "other": "b"}])
    with pytest.raises(KeyError):
        sim.add_lookup_table("demo", "ok", ["name"], [], users=["nobody"])


def _raw_chunks(sim: HQSimulator, path: str, authorization: str) -> tuple[bytes, list[int]]:
    """(response head, the size of every chunk) read off the socket."""
    with socket.create_connection(("127.0.0.1", sim.port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\n"
                     f"Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    sizes = []
    while True:
        line, _, body = body.partition(b"\r\n")
        size = int(line, 16)
        sizes.append(size)
        if size == 0:
            return head, sizes
        body = body[size + 2:]


def test_a_big_restore_is_streamed_in_chunks(sim):
    w = _worker(sim)
    sim.add_cases("demo", 400, owner_id=w.id,
                  properties={f"p{n}": "x" * 200 for n in range(10)})
    basic = "Basic " + base64.b64encode(f"{w.username}:123".encode()).decode()
    sim.clear_requests()
    head, sizes = _raw_chunks(sim, RESTORE, basic)
    assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
    assert len(sizes) > 5 and sizes[-1] == 0 and sum(sizes) > 800_000
    (entry,) = sim.requests
    assert (entry.resource, entry.status, entry.bytes) == ("restore", 200, sum(sizes))
    assert len(sim.restore_caseload("demo", "chw1")) >= 400


def test_a_truncated_restore_breaks_off_mid_stream(sim):
    sim.add_cases("demo", 200, owner_id=_worker(sim).id,
                  properties={f"p{n}": "y" * 200 for n in range(10)})
    sim.faults.add("truncated", resource="restore")
    with pytest.raises((requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ConnectionError)):
        _get(sim)
    assert _get(sim).status_code == 200


def test_awkward_data_still_makes_well_formed_restores():
    from etl.simulator import Dataset
    with HQSimulator([Dataset.generate(n_cases=150, awkward=True)]) as sim:
        for n in (1, 5):
            restore = _restore(sim, f"chw{n}")
            views = {b.case_id: otaxml.view_of(b) for b in restore.blocks}
            assert views == sim.restore_caseload("demo", f"chw{n}")


def test_the_path_without_its_slash_redirects_and_faults_apply(sim):
    response = requests.get(sim.base_url + RESTORE.rstrip("/") + "?version=2.0",
                            allow_redirects=False, timeout=10)
    assert response.status_code == 301
    assert response.headers["Location"] == RESTORE + "?version=2.0"
    sim.faults.add("401", resource="restore")
    challenged = _get(sim)
    assert challenged.status_code == 401
    assert challenged.headers["WWW-Authenticate"].startswith('Digest realm="DJANGO"')
    sim.faults.add("503", resource="restore")
    assert _get(sim).status_code == 503


def test_the_control_api_drives_owners_indices_tables_and_logins(sim):
    def mutate(**payload):
        response = requests.post(sim.base_url + "/_sim/mutate", json=payload, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["result"]

    w = _worker(sim)
    (case_id,) = mutate(action="add_cases", n=1, case_type="household", owner_id=w.id,
                        properties={"size": "big"})
    assert sim.restore_caseload("demo", "chw1")[case_id]["properties"] == {"size": "big"}
    mutate(action="set_case_owner", case_ids=[case_id], owner_id=_worker(sim, "chw5").id)
    assert case_id in sim.restore_caseload("demo", "chw5")
    mutate(action="add_lookup_table", tag="clinics", fields=["name"], items=[{"name": "A"}])
    assert "item-list:clinics" in {f.get("id") for f in _restore(sim).fixtures}
    mutate(action="add_web_login", username="ops@example.org", password="pw")
    assert requests.get(sim.base_url + CASES, auth=HTTPBasicAuth("ops@example.org", "pw"),
                        timeout=10).status_code == 200
    ids = mutate(action="add_forms", n=2, xmlns="http://openrosa.org/formdesigner/X")
    assert sim.export_view("demo", "http://openrosa.org/formdesigner/X")["#"].keys() == set(ids)


def test_an_unknown_project_is_404(sim):
    w = _worker(sim)
    response = requests.get(sim.base_url + "/a/nowhere/phone/restore/", timeout=10,
                            auth=HTTPBasicAuth(w.username, "123"))
    assert response.status_code == 404 and response.content == b""
