"""Injected faults: each kind on the wire, resource matching, counts, `after`, random mode."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest
import requests

from tests.simulator.conftest import CASES, CASES_V2, FORMS, KEY, USER, Client


def _raw_get(sim, path: str) -> tuple[bytes, bytes]:
    """(headers, whatever body arrived) read straight off a socket."""
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: ApiKey {USER}:{KEY}\r\n"
                     f"\r\n".encode())
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("kind", ["500", "502", "503", "504"])
def test_server_errors_are_html_pages(sim, client: Client, kind):
    sim.faults.add(kind, resource="case")
    response = client.get(CASES)
    assert response.status_code == int(kind)
    assert response.headers["Content-Type"].startswith("text/html")
    assert client.get(CASES).status_code == 200  # one-shot


@pytest.mark.parametrize("retry_after, header", [(7, "7"), (None, None)])
def test_429_with_and_without_retry_after(sim, client: Client, retry_after, header):
    sim.faults.add("429", resource="case", retry_after=retry_after)
    response = client.get(CASES)
    assert response.status_code == 429 and response.content == b""
    assert response.headers.get("Retry-After") == header


def test_401_and_403_faults_ignore_good_credentials(sim, client: Client):
    sim.faults.add("401")
    sim.faults.add("403")
    first, second = client.get(CASES), client.get(CASES)
    assert first.status_code == 401 and "WWW-Authenticate" in first.headers
    assert second.status_code == 403 and second.content == b""


def test_html_is_a_200_that_is_not_json(sim, client: Client):
    sim.faults.add("html", resource="form")
    response = client.get(FORMS)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        response.json()


def test_truncated_is_a_200_with_a_cut_body_and_an_honest_length(sim, client: Client):
    whole = client.get(CASES, {"limit": 50}).content
    sim.faults.add("truncated", resource="case")
    response = client.get(CASES, {"limit": 50})
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content) < len(whole)
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_reset_sends_headers_and_part_of_the_body_then_drops_the_connection(sim, client: Client):
    sim.faults.add("reset", resource="case")
    head, body = _raw_get(sim, CASES + "?limit=50")
    assert head.startswith(b"HTTP/1.1 200")
    promised = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")))
    assert 0 < len(body) < promised
    sim.faults.add("reset", resource="case")
    with pytest.raises(requests.exceptions.RequestException):
        client.get(CASES, {"limit": 50})
    assert client.get(CASES).status_code == 200  # the client reconnects
    assert [r.fault for r in sim.requests] == ["reset", "reset", None]


def test_slow_answers_after_the_delay(sim, client: Client):
    sim.faults.add("slow", resource="case", delay=0.4)
    started = time.monotonic()
    assert client.get(CASES).status_code == 200
    assert time.monotonic() - started >= 0.4
    sim.faults.add("slow", resource="case", delay=1.0)
    with pytest.raises(requests.exceptions.Timeout):
        client.session.get(sim.base_url + CASES, timeout=0.2)


def test_resource_matching_count_and_after(sim, client: Client):
    sim.faults.add("503", count=2, resource="form")
    sim.faults.add("500", count=1, resource="case_v2", after=1)
    assert client.get(CASES).status_code == 200
    assert client.get(CASES_V2).status_code == 200  # let through by `after`
    assert client.get(CASES_V2).status_code == 500
    assert [client.get(FORMS).status_code for _ in range(3)] == [503, 503, 200]
    assert sim.faults.pending() == []
    faulted = [(r.resource, r.fault) for r in sim.requests if r.fault]
    assert faulted == [("case_v2", "500"), ("form", "503"), ("form", "503")]


def test_unknown_fault_kind_is_refused(sim):
    with pytest.raises(ValueError):
        sim.faults.add("418")
    with pytest.raises(ValueError):
        sim.faults.add("500", resource="cases")


def test_random_faults_hit_about_the_rate_and_are_reproducible(sim, client: Client):
    def run() -> list[int]:
        sim.faults.set_random(0.3, ["500", "503", "429"], seed=5)
        return [client.get(CASES, {"limit": 1}).status_code for _ in range(60)]

    first = run()
    assert run() == first
    failures = sum(s != 200 for s in first)
    assert 8 <= failures <= 30 and {s for s in first if s != 200} <= {500, 503, 429}
    sim.faults.clear()
    assert all(client.get(CASES).status_code == 200 for _ in range(10))


def test_keep_alive_connection_survives_error_responses(sim):
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    headers = {"Authorization": f"ApiKey {USER}:{KEY}"}
    sim.faults.add("503")
    statuses = []
    for _ in range(3):
        conn.request("GET", CASES, headers=headers)
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
    conn.close()
    assert statuses == [503, 200, 200]


def test_401_throttled_is_hqs_api_blacklist_answer(sim, client: Client):
    sim.faults.add("401-throttled", resource="case_v2")
    response = client.get(CASES_V2)
    assert response.status_code == 401 and "WWW-Authenticate" not in response.headers
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"error": "API access has been temporarily cut off due to too many "
                                        "requests.  To re-enable, please contact support."}
    assert client.get(CASES_V2).status_code == 200


@pytest.mark.parametrize("options, header", [({}, "1"), ({"retry_after": 9}, "9")])
def test_202_says_come_back_later(sim, client: Client, options, header):
    sim.faults.add("202", resource="form", **options)
    response = client.get(FORMS)
    assert response.status_code == 202 and response.reason == "Accepted"
    assert response.headers["Retry-After"] == header and len(response.content) < 100
    assert client.get(FORMS).status_code == 200
    assert [r.fault for r in sim.requests] == ["202", None]


def test_new_kinds_take_part_in_random_mode(sim, client: Client):
    sim.faults.set_random(1.0, ["401-throttled", "202"], seed=2)
    assert {client.get(CASES).status_code for _ in range(12)} == {401, 202}
