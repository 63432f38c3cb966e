"""Fixtures for the HQ simulator's own tests: real HTTP against a local simulator."""

from __future__ import annotations

from typing import Any, Iterator
from urllib.parse import urljoin

import pytest
import requests

from etl.simulator import Dataset, HQSimulator

USER, KEY = "sim@example.org", "sim-key"
OTHER_USER, OTHER_KEY = "other@example.org", "other-key"  # may only read domain "elsewhere"
USERS = {USER: (KEY, None), OTHER_USER: (OTHER_KEY, {"elsewhere"})}
CASES = "/a/demo/api/v0.5/case/"
FORMS = "/a/demo/api/v0.5/form/"
CASES_V2 = "/a/demo/api/case/v2/"


class Client:
    """A keep-alive session that speaks to one simulator."""

    def __init__(self, sim: HQSimulator, user: str | None = USER, key: str | None = KEY):
        self.sim = sim
        self.session = requests.Session()
        if user is not None:
            self.session.headers["Authorization"] = f"ApiKey {user}:{key}"

    def get(self, path: str, params: Any = None, **kw: Any) -> requests.Response:
        url = path if path.startswith("http") else self.sim.base_url + path
        return self.session.get(url, params=params, timeout=30, **kw)

    def json(self, path: str, params: Any = None) -> dict:
        response = self.get(path, params)
        assert response.status_code == 200, (response.status_code, response.text[:300])
        return response.json()

    def all_v05(self, path: str, params: dict | None = None) -> list[dict]:
        """Follow `meta.next` to the end, resolved against the page just read (the reference
        resources' `next` is only a query string: `?limit=20&offset=20`)."""
        response = self.get(path, params)
        out = []
        while True:
            assert response.status_code == 200, (response.status_code, response.text[:300])
            doc = response.json()
            out += doc["objects"]
            if not doc["meta"]["next"]:
                return out
            response = self.get(urljoin(response.url, doc["meta"]["next"]))


def make_sim(n_cases: int = 60, seed: int = 0, replicas: int = 1, **kw: Any) -> HQSimulator:
    """One index copy unless asked: most simulator tests pin down the order within ties."""
    datasets = [Dataset.generate(domain="demo", seed=seed, n_cases=n_cases, **kw),
                Dataset.generate(domain="elsewhere", seed=seed + 1, n_cases=5)]
    return HQSimulator(datasets=datasets, users=USERS, replicas=replicas).start()


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[HQSimulator]:
    """Read-only: tests using it must not change its data."""
    sim = make_sim(n_cases=150, seed=7)
    yield sim
    sim.stop()


@pytest.fixture
def sim() -> Iterator[HQSimulator]:
    """A fresh simulator a test may change."""
    sim = make_sim()
    yield sim
    sim.stop()


@pytest.fixture
def client(sim: HQSimulator) -> Client:
    return Client(sim)


@pytest.fixture(scope="module")
def shared(shared_sim: HQSimulator) -> Client:
    return Client(shared_sim)
