"""API-key authentication and domain access."""

from __future__ import annotations

import pytest
import requests

from tests.simulator.conftest import (
    CASES, CASES_V2, KEY, OTHER_KEY, OTHER_USER, USER, Client,
)


@pytest.mark.parametrize("scheme", ["ApiKey", "apikey", "APIKEY"])
def test_api_key_header_scheme_is_case_insensitive(shared_sim, scheme):
    response = requests.get(shared_sim.base_url + CASES,
                            headers={"Authorization": f"{scheme} {USER}:{KEY}"})
    assert response.status_code == 200


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": f"ApiKey {USER}:wrong"}, {"Authorization": f"ApiKey nobody:{KEY}"},
    {"Authorization": f"ApiKey {USER}"}, {"Authorization": "Basic c2ltOnNpbQ=="},
])
@pytest.mark.parametrize("path", [CASES, CASES_V2, "/a/demo/api/form/v1/",
                                  "/a/demo/api/v0.5/application/"])
def test_missing_or_bad_credentials_are_401_with_a_challenge_and_no_body(shared_sim, headers,
                                                                         path):
    response = requests.get(shared_sim.base_url + path, headers=headers)
    assert response.status_code == 401
    assert response.content == b""
    assert response.headers["WWW-Authenticate"].startswith('Digest realm="CommCare HQ"')


def test_v05_accepts_credentials_in_the_query_v2_does_not(shared_sim):
    anonymous = Client(shared_sim, user=None)
    creds = {"username": USER, "api_key": KEY, "limit": 1}
    ok = anonymous.get(CASES, creds)
    assert ok.status_code == 200
    # ...and tastypie echoes them into the paging links, as HQ does.
    assert "api_key=" in ok.json()["meta"]["next"]
    assert anonymous.get(CASES, {**creds, "api_key": "wrong"}).status_code == 401
    assert anonymous.get(CASES_V2, creds).status_code == 401


def test_a_user_without_access_to_the_domain_gets_403_with_no_body(shared_sim):
    other = Client(shared_sim, OTHER_USER, OTHER_KEY)
    for path in (CASES, CASES_V2, "/a/demo/api/v0.5/form/", "/a/demo/api/v0.5/application/"):
        response = other.get(path)
        assert response.status_code == 403 and response.content == b""
    assert other.get("/a/elsewhere/api/v0.5/case/").status_code == 200


def test_unknown_domain_is_404(shared: Client):
    response = shared.get("/a/nowhere/api/v0.5/case/")
    assert response.status_code == 404 and response.content == b""


def test_requests_are_logged_with_user_and_status(shared_sim):
    shared_sim.clear_requests()
    Client(shared_sim).get(CASES, {"limit": 1})
    Client(shared_sim, USER, "bad").get(CASES)
    log = shared_sim.requests
    assert [(r.method, r.path, r.status, r.user) for r in log] == [
        ("GET", CASES, 200, USER), ("GET", CASES, 401, None)]
    assert log[0].query == "limit=1" and log[0].resource == "case" and log[0].domain == "demo"
