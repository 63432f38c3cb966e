"""The `/_sim/` control API and the standalone entry point."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import requests

from tests.simulator.conftest import CASES, Client

ROOT = Path(__file__).resolve().parents[2]


def test_stats(sim):
    stats = requests.get(sim.base_url + "/_sim/stats").json()
    assert stats["domains"]["demo"]["cases"] == 60
    assert stats["domains"]["demo"]["forms"] == len(sim.snapshot("demo", "form"))
    assert stats["clock"] == sim.now().isoformat()


def test_faults_over_http(sim, client: Client):
    queued = requests.post(sim.base_url + "/_sim/faults",
                           json={"kind": "429", "count": 2, "resource": "case", "retry_after": 3})
    assert queued.status_code == 200 and queued.json() == {"queued": 1}
    first = client.get(CASES)
    assert first.status_code == 429 and first.headers["Retry-After"] == "3"
    assert requests.post(sim.base_url + "/_sim/faults", json={"clear": True}).status_code == 200
    assert client.get(CASES).status_code == 200
    bad = requests.post(sim.base_url + "/_sim/faults", json={"kind": "teapot"})
    assert bad.status_code == 400 and "teapot" in bad.json()["error"]
    random_on = requests.post(sim.base_url + "/_sim/faults",
                              json={"random": {"rate": 1.0, "kinds": ["502"]}})
    assert random_on.status_code == 200 and client.get(CASES).status_code == 502
    assert requests.delete(sim.base_url + "/_sim/faults").status_code == 200
    assert client.get(CASES).status_code == 200


def test_mutations_over_http(sim, client: Client):
    def mutate(**body) -> requests.Response:
        return requests.post(sim.base_url + "/_sim/mutate", json=body)

    added = mutate(action="add_cases", n=2, case_type="household").json()["result"]
    assert len(added) == 2 and all(client.get(f"{CASES}{i}/").status_code == 200 for i in added)
    assert mutate(action="update_cases", case_ids=added, properties={"c": "1"}).status_code == 200
    assert client.json(f"{CASES}{added[0]}/")["properties"]["c"] == "1"
    assert mutate(action="close_cases", domain="demo", case_ids=added[1:]).status_code == 200
    assert client.json(f"{CASES}{added[1]}/")["closed"] is True
    forms = mutate(action="add_forms", n=2).json()["result"]
    assert mutate(action="archive_forms", form_ids=forms).status_code == 200
    assert mutate(action="delete_cases", ids=added[:1]).status_code == 200
    tie = mutate(action="add_ties", resource="form", n=3,
                 indexed_on="2031-01-01T00:00:00+00:00").json()["result"]
    assert len(tie) == 3
    late = mutate(action="add_late", resource="case", n=2, lag_seconds=30).json()["result"]
    assert len(late) == 2
    assert mutate(action="set_clock", clock="2032-01-01T00:00:00+00:00").json()["result"] \
        .startswith("2032-01-01")
    assert mutate(action="nope").status_code == 400
    assert mutate(action="update_cases", case_ids=["missing"]).status_code == 400
    # Control calls are not HQ requests: they are not in the request log.
    assert not [r for r in sim.requests if r.path.startswith("/_sim/")]


def test_python_dash_m_serves_until_interrupted():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl.simulator", "--port", "0", "--cases", "20",
         "--username", "u@example.org", "--api-key", "k"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        for _ in range(50):  # skip any warnings printed before the log line
            line = proc.stderr.readline()
            if "http://" in line or not line:
                break
        url = re.search(r"(http://127\.0\.0\.1:\d+)", line).group(1)
        assert "ApiKey u@example.org:k" in line
        response = requests.get(f"{url}/a/demo/api/v0.5/case/",
                                headers={"Authorization": "ApiKey u@example.org:k"}, timeout=10)
        assert response.json()["meta"]["total_count"] == 20
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_worst_case_actions_over_http(sim, client: Client):
    def mutate(**body) -> requests.Response:
        return requests.post(sim.base_url + "/_sim/mutate", json=body)

    assert mutate(action="set_replicas", n=3, seed=1).json() == {"result": 3}
    assert sim.replicas == 3
    client.json(CASES, {"limit": 5})
    assert sim.requests[-1].replica in (0, 1, 2)
    assert mutate(action="set_replicas", n=0).status_code == 400
    assert mutate(action="set_replicas", n=1).json()["result"] == 1

    assert mutate(action="reindex_during_reads", resource="case", after_requests=1, count=2,
                  seed=4).status_code == 200
    page = client.json(CASES, {"limit": 5})
    moved = mutate(action="reindexed_ids").json()["result"]
    assert len(moved) == 2 and set(moved) <= {c["id"] for c in page["objects"]}
    assert requests.get(sim.base_url + "/_sim/stats").json()["reindexed_ids"] == moved
    assert mutate(action="reindex_during_reads", resource="nope").status_code == 400

    case_id = page["objects"][0]["id"]
    before = client.json(f"{CASES}{case_id}/")["indexed_on"]
    assert mutate(action="touch_cases", case_ids=[case_id]).status_code == 200
    assert client.json(f"{CASES}{case_id}/")["indexed_on"] > before

    stats = requests.get(sim.base_url + "/_sim/stats").json()
    assert stats["replicas"] == 1 and stats["rate_limit"]["enabled"] is False


def test_python_dash_m_takes_replicas_and_rate_limit():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl.simulator", "--port", "0", "--cases", "5", "--replicas", "3",
         "--rate-limit"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        for _ in range(50):
            line = proc.stderr.readline()
            if "http://" in line or not line:
                break
        assert "3 index copies, rate-limited" in line
        url = re.search(r"(http://127\.0\.0\.1:\d+)", line).group(1)
        stats = requests.get(f"{url}/_sim/stats", timeout=10).json()
        assert stats["replicas"] == 3 and stats["rate_limit"]["enabled"] is True
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
