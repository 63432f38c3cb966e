"""HQ's per-project API rate limit (opt-in): token buckets per domain, 429s as HQ sends them."""

from __future__ import annotations

import pytest
import requests

from etl.simulator import Dataset, HQSimulator
from etl.simulator.ratelimit import RateLimiter
from tests.simulator.conftest import CASES, CASES_V2, USERS, Client


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_off_by_default(sim, client: Client):
    assert all(client.get(CASES, {"limit": 1}).status_code == 200 for _ in range(40))


def test_the_allowance_is_hqs_per_project_rate():
    clock = FakeClock()
    limiter = RateLimiter(enabled=True, clock=clock)
    # A burst: about 1 + 0.22 per worker at once (the per-second window), 8 workers -> 2.
    assert [limiter.acquire("demo", 8) is None for _ in range(4)] == [True, True, False, False]
    # Steady reading: the per-minute window (10 + 3.04 per worker) is the one that binds.
    allowed = 0
    for _ in range(240):  # 4 requests a second for a minute
        clock.now += 0.25
        allowed += limiter.acquire("demo", 8) is None
    assert 60 <= allowed <= 72  # ~34 at once, then ~34 more as the minute refills
    # Each project has its own buckets, and more workers mean more room.
    assert limiter.acquire("other", 8) is None
    assert sum(limiter.acquire("big", 100) is None for _ in range(30)) == 22


def test_the_wait_is_until_a_token_is_back():
    clock = FakeClock()
    limiter = RateLimiter(enabled=True, users=0, clock=clock)
    assert limiter.acquire("demo", 8) is None  # users=0 overrides the project's 8: 1/second
    wait = limiter.acquire("demo", 8)
    assert wait == pytest.approx(1.0)
    clock.now += wait
    assert limiter.acquire("demo", 8) is None


def test_429s_as_hq_sends_them(sim, client: Client):
    clock = FakeClock()
    sim.rate_limiter = RateLimiter(enabled=True, users=0, clock=clock)
    assert client.get(CASES).status_code == 200
    v05 = client.get(CASES)
    assert v05.status_code == 429 and v05.content == b"" and "Retry-After" not in v05.headers
    v2 = client.get(CASES_V2)
    assert v2.status_code == 429 and v2.headers["Retry-After"] == "1"
    # Refused and unauthenticated requests, and the control API, use no allowance.
    assert Client(sim, user=None).get(CASES).status_code == 401
    assert requests.get(sim.base_url + "/_sim/stats").status_code == 200
    clock.now += 1.0
    assert client.get(CASES_V2).status_code == 200
    sim.rate_limiter.configure(True, users=0, retry_after_on_v05=True)
    assert client.get(CASES).status_code == 200
    assert client.get(CASES).headers["Retry-After"] == "1"


def test_enabled_from_the_constructor_and_the_control_api():
    sim = HQSimulator([Dataset.generate(n_cases=5)], users=USERS, rate_limit=True).start()
    try:
        client = Client(sim)
        assert [client.get(CASES).status_code for _ in range(4)].count(429) >= 1
        body = {"action": "set_rate_limit", "enabled": False}
        reply = requests.post(sim.base_url + "/_sim/mutate", json=body).json()
        assert reply["result"]["enabled"] is False
        assert all(client.get(CASES).status_code == 200 for _ in range(10))
        body = {"action": "set_rate_limit", "users": 0, "scale": 2.0}
        assert requests.post(sim.base_url + "/_sim/mutate", json=body).status_code == 200
        statuses = [client.get(CASES).status_code for _ in range(5)]
        assert statuses[:2] == [200, 200] and 429 in statuses
        assert requests.get(sim.base_url + "/_sim/stats").json()["rate_limit"] == {
            "enabled": True, "users": 0, "scale": 2.0, "retry_after_on_v05": False}
    finally:
        sim.stop()
