"""Passwords: HTTP Basic and Digest for web logins on the data APIs and for mobile workers on the
restore, and the challenges a client gets without them."""

from __future__ import annotations

import base64
import re
from typing import Iterator

import pytest
import requests
from requests.auth import HTTPBasicAuth, HTTPDigestAuth

from etl.simulator import Dataset, HQSimulator
from etl.simulator.digest import expected_response, parse
from tests.simulator.conftest import CASES, CASES_V2, FORMS, KEY, USER

PASSWORD = "sim-password"
OTHER, OTHER_PASSWORD = "other@example.org", "other-password"
RESTORE = "/a/demo/phone/restore/"


@pytest.fixture(scope="module")
def psim() -> Iterator[HQSimulator]:
    """Web logins given as the users mapping's third element."""
    sim = HQSimulator([Dataset.generate(domain="demo", n_cases=20),
                       Dataset.generate(domain="elsewhere", seed=1, n_cases=3)],
                      users={USER: (KEY, None, PASSWORD),
                             OTHER: ("other-key", ["elsewhere"], OTHER_PASSWORD),
                             "keyonly@example.org": ("k", None)}, replicas=1).start()
    yield sim
    sim.stop()


def _worker(sim: HQSimulator, n: int = 0):
    return sorted(sim.store.domains["demo"].directory.workers.values(),
                  key=lambda w: w.username)[n]


def _challenge(response: requests.Response) -> dict[str, str]:
    return parse(response.headers["WWW-Authenticate"]) or {}


def test_the_digest_response_is_rfc_2617s():
    fields = {"username": "Mufasa", "realm": "testrealm@host.com", "uri": "/dir/index.html",
              "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093", "nc": "00000001",
              "cnonce": "0a4f113b", "qop": "auth"}
    assert expected_response(fields, "GET", "Circle Of Life") == \
        "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize("path", [CASES, CASES_V2, FORMS, "/a/demo/api/v0.5/user/",
                                  "/a/demo/api/location/v2/", "/a/demo/api/v0.5/application/"])
def test_digest_and_basic_work_on_the_data_apis(psim, path):
    for auth in (HTTPDigestAuth(USER, PASSWORD), HTTPBasicAuth(USER, PASSWORD)):
        response = requests.get(psim.base_url + path, auth=auth, timeout=10)
        assert response.status_code == 200, (path, response.status_code)


def test_the_default_web_login_has_a_password():
    with HQSimulator([Dataset.generate(n_cases=5)]) as sim:
        url = f"{sim.base_url}/a/demo/api/v0.5/case/"
        assert requests.get(url, auth=HTTPDigestAuth("etl@example.org", "secret-password"),
                            timeout=10).status_code == 200
        assert requests.get(url, headers={"Authorization": "ApiKey etl@example.org:secret-key"},
                            timeout=10).status_code == 200
        assert requests.get(url, auth=HTTPDigestAuth("etl@example.org", "secret-key"),
                            timeout=10).status_code == 401


@pytest.mark.parametrize("auth", [HTTPDigestAuth(USER, "wrong"), HTTPBasicAuth(USER, "wrong"),
                                  HTTPBasicAuth("keyonly@example.org", "k"),
                                  HTTPDigestAuth("nobody@example.org", PASSWORD)])
def test_wrong_passwords_are_401_with_a_fresh_challenge(psim, auth):
    response = requests.get(psim.base_url + CASES, auth=auth, timeout=10)
    assert response.status_code == 401 and response.content == b""
    challenge = _challenge(response)
    assert challenge["qop"] == "auth" and re.fullmatch(r"[0-9a-f]{32}", challenge["nonce"])
    assert challenge["opaque"]


def test_a_digest_session_answers_the_next_request_without_a_new_challenge(psim):
    session = requests.Session()
    session.auth = HTTPDigestAuth(USER, PASSWORD)
    psim.clear_requests()
    for offset in (0, 1, 2):
        assert session.get(psim.base_url + CASES, params={"limit": 1, "offset": offset},
                           timeout=10).status_code == 200
    assert [r.status for r in psim.requests] == [401, 200, 200, 200]
    assert {r.user for r in psim.requests if r.status == 200} == {USER}


def _answer(sim: HQSimulator, uri: str, password: str = PASSWORD, nc: str = "00000001",
            sign_uri: str | None = None, user: str = USER,
            path: str = CASES) -> tuple[str, str]:
    """A hand-made Digest header for a fresh challenge: (header, the URI requested)."""
    challenge = _challenge(requests.get(sim.base_url + path, timeout=10))
    fields = {"username": user, "realm": challenge["realm"], "nonce": challenge["nonce"],
              "uri": sign_uri or uri, "qop": "auth", "nc": nc, "cnonce": "c0ffee"}
    response = expected_response(fields, "GET", password)
    header = ", ".join(f'{k}="{v}"' for k, v in {**fields, "response": response,
                                                 "opaque": challenge["opaque"]}.items())
    return f"Digest {header}", uri


def test_a_replayed_digest_header_is_refused(psim):
    header, uri = _answer(psim, CASES)
    first = requests.get(psim.base_url + uri, headers={"Authorization": header}, timeout=10)
    again = requests.get(psim.base_url + uri, headers={"Authorization": header}, timeout=10)
    assert first.status_code == 200 and again.status_code == 401


def test_a_digest_answer_for_another_uri_or_an_unknown_nonce_is_refused(psim):
    header, _ = _answer(psim, CASES, sign_uri=FORMS)
    assert requests.get(psim.base_url + CASES, headers={"Authorization": header},
                        timeout=10).status_code == 401
    header, uri = _answer(psim, CASES)
    forged = re.sub(r'nonce="[0-9a-f]+"', f'nonce="{"0" * 32}"', header)
    assert requests.get(psim.base_url + uri, headers={"Authorization": forged},
                        timeout=10).status_code == 401


def test_an_expired_nonce_is_stale_and_requests_recovers(sim):
    sim.add_web_login("late@example.org", "pw")
    session = requests.Session()
    session.auth = HTTPDigestAuth("late@example.org", "pw")
    assert session.get(sim.base_url + CASES, timeout=10).status_code == 200
    sim.set_digest_nonce_lifetime(0)
    header, uri = _answer(sim, CASES, user="late@example.org", password="pw")
    stale = requests.get(sim.base_url + uri, headers={"Authorization": header}, timeout=10)
    assert stale.status_code == 401 and _challenge(stale)["stale"] == "true"
    sim.set_digest_nonce_lifetime(300)
    assert session.get(sim.base_url + CASES, timeout=10).status_code == 200


def test_add_web_login_limits_domains_and_keeps_api_keys_apart(sim):
    sim.add_web_login("field@example.org", "pw", domains=["elsewhere"])
    auth = HTTPBasicAuth("field@example.org", "pw")
    assert requests.get(sim.base_url + "/a/elsewhere/api/v0.5/case/", auth=auth,
                        timeout=10).status_code == 200
    forbidden = requests.get(sim.base_url + CASES, auth=auth, timeout=10)
    assert forbidden.status_code == 403 and forbidden.content == b""
    # no API key was given: the key "" opens nothing
    assert requests.get(sim.base_url + CASES, headers={"Authorization": "ApiKey field@example.org:"},
                        timeout=10).status_code == 401
    sim.add_web_login(USER, "new-password")  # an API user gains a password, keeps its key
    assert requests.get(sim.base_url + CASES, auth=HTTPDigestAuth(USER, "new-password"),
                        timeout=10).status_code == 200
    assert requests.get(sim.base_url + CASES, headers={"Authorization": f"ApiKey {USER}:{KEY}"},
                        timeout=10).status_code == 200


def test_mobile_workers_log_in_to_the_restore_not_to_the_apis(psim):
    w = _worker(psim)
    assert psim.mobile_worker_password("demo", w.username) == "123"
    assert psim.mobile_worker_password("demo", w.username.split("@")[0]) == "123"
    for auth in (HTTPBasicAuth(w.username, "123"), HTTPDigestAuth(w.username, "123")):
        assert requests.get(psim.base_url + RESTORE, auth=auth, timeout=10).status_code == 200
        assert requests.get(psim.base_url + CASES, auth=auth, timeout=10).status_code == 401
    # a web login is not a mobile worker
    assert requests.get(psim.base_url + RESTORE, auth=HTTPBasicAuth(USER, PASSWORD),
                        timeout=10).status_code == 401


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": f"ApiKey {USER}:{KEY}"},
    {"Authorization": "Basic " + base64.b64encode(b"chw1@demo.commcarehq.org:999").decode()},
    {"Authorization": "Basic " + base64.b64encode(b"chw1:123").decode()},  # short name
])
def test_the_restore_challenges_with_digest_and_basic_realm_django(psim, headers):
    response = requests.get(psim.base_url + RESTORE, headers=headers, timeout=10)
    assert response.status_code == 401 and response.content == b""
    header = response.headers["WWW-Authenticate"]
    assert header.startswith('Digest realm="DJANGO", nonce="') and 'qop="auth"' in header
    assert 'opaque="' in header and 'Basic realm="DJANGO"' in header


def test_deactivated_and_retired_workers_cannot_log_in(sim):
    a, b = _worker(sim, 0), _worker(sim, 1)
    url = sim.base_url + RESTORE
    sim.deactivate_mobile_worker("demo", a.id)
    sim.delete_mobile_worker("demo", b.id)
    for w in (a, b):
        assert requests.get(url, auth=HTTPBasicAuth(w.username, "123"),
                            timeout=10).status_code == 401
    sim.activate_mobile_worker("demo", a.id)
    assert requests.get(url, auth=HTTPBasicAuth(a.username, "123"), timeout=10).status_code == 200


def test_worker_passwords_are_set_and_changed_and_never_shown(sim, client):
    user_id = sim.add_mobile_worker("demo", "chw42", password="s3cret!")
    url = sim.base_url + RESTORE
    full = "chw42@demo.commcarehq.org"
    assert requests.get(url, auth=HTTPDigestAuth(full, "s3cret!"), timeout=10).status_code == 200
    assert requests.get(url, auth=HTTPBasicAuth(full, "123"), timeout=10).status_code == 401
    sim.update_mobile_worker("demo", user_id, password="changed")
    assert sim.mobile_worker_password("demo", "chw42") == "changed"
    assert requests.get(url, auth=HTTPBasicAuth(full, "changed"), timeout=10).status_code == 200
    served = client.get(f"/a/demo/api/v0.5/user/{user_id}/").text
    assert "changed" not in served and "password" not in served
