"""HQ misbehaving: every fault is retried within a bounded time, or fails loudly and safely."""

from __future__ import annotations

import time

import pytest

from etl import state
from etl.errors import AuthError, ExitCode, HQError, HQUnreachable
from etl.extract.client import HQClient
from etl.sync import make_client, run_sync, sync_stream
from tests.conftest import KEY, USER, cli_env, make_settings, run_cli
from tests.matching import assert_cases_match, assert_warehouse_matches


def _client(sim, **kw) -> HQClient:
    options = dict(timeout=2.0, retry_max_seconds=5.0, retry_initial_wait=0.01, retry_max_wait=0.05)
    options.update(kw)
    return HQClient(sim.base_url, USER, KEY, **options)


CASE_LIST = "/a/demo/api/v0.5/case/"


@pytest.mark.parametrize("kind", ["500", "502", "503", "504", "reset", "truncated", "html"])
def test_each_transient_fault_is_retried_and_the_sync_completes(sim, settings, warehouse, db, kind):
    sim.faults.add(kind, count=2, resource="case")
    sim.faults.add(kind, count=1, resource="form")
    reports = run_sync(settings, warehouse)
    assert all(r.status == "ok" for r in reports)
    assert_warehouse_matches(db, warehouse.schema, sim)
    failed = [r for r in sim.requests if r.status != 200 or getattr(r, "fault", None)]
    assert len(failed) >= 3


def test_429_honours_retry_after(sim):
    sim.faults.add("429", count=1, resource="case", retry_after=1)
    client = _client(sim)
    started = time.monotonic()
    doc = client.get_json(CASE_LIST, {"limit": 5})
    assert time.monotonic() - started >= 0.95
    assert len(doc.data["objects"]) == 5
    assert client.requests_made == 2


def test_429_without_retry_after_backs_off_exponentially(sim):
    sim.faults.add("429", count=3, resource="case", retry_after=None)
    client = _client(sim, retry_initial_wait=0.1, retry_max_wait=1.0)
    started = time.monotonic()
    client.get_json(CASE_LIST, {"limit": 1})
    # waits of ~0.1, 0.2, 0.4 (each jittered down to no less than half)
    assert time.monotonic() - started >= 0.35
    assert client.requests_made == 4


def test_a_retry_after_beyond_the_budget_gives_up_at_once(sim):
    sim.faults.add("429", count=1, resource="case", retry_after=3600)
    client = _client(sim, retry_max_seconds=5)
    started = time.monotonic()
    with pytest.raises(HQError, match="HTTP 429"):
        client.get_json(CASE_LIST)
    assert time.monotonic() - started < 2


def test_slow_server_hits_the_timeout_and_is_retried(sim):
    sim.faults.add("slow", count=1, resource="case", delay=1.5)
    client = _client(sim, timeout=0.5)
    doc = client.get_json(CASE_LIST, {"limit": 2})
    assert len(doc.data["objects"]) == 2 and client.requests_made == 2


def test_exhausted_retries_name_the_url_and_the_last_error(sim):
    sim.faults.add("503", count=10_000, resource="case")
    client = _client(sim, retry_max_seconds=0.3)
    with pytest.raises(HQError) as caught:
        client.get_json(CASE_LIST, {"limit": 3})
    message = str(caught.value)
    assert "/a/demo/api/v0.5/case/" in message and "HTTP 503" in message
    assert "checkpoint" in message


def test_401_and_403_fail_at_once(sim):
    sim.faults.add("403", count=1, resource="case")
    with pytest.raises(AuthError, match="403"):
        _client(sim).get_json(CASE_LIST)
    bad = HQClient(sim.base_url, USER, "wrong", retry_initial_wait=0.01)
    with pytest.raises(AuthError, match="COMMCARE_API_KEY"):
        bad.get_json(CASE_LIST)
    assert bad.requests_made == 1


def test_a_failed_run_leaves_the_checkpoint_at_the_last_loaded_page(sim_factory, schema, pg_url,
                                                                    warehouse, db):
    sim = sim_factory(n_cases=120)
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=20,
                             retry_max_seconds=0.3)
    client = make_client(settings)
    # Let two pages through, then HQ goes down for good.
    sim.faults.add("500", count=10_000, resource="case", after=2)
    with pytest.raises(HQError):
        sync_stream(settings, warehouse, client, "demo", "cases")
    cursor = state.load_checkpoint(db, schema, "demo", "cases")
    loaded = db.execute(f'select count(*), max(indexed_on) from "{schema}".cases').fetchone()
    assert 20 < loaded[0] <= 40  # two pages of 20, overlapping on the boundary millisecond
    assert cursor["indexed_on"] is not None
    run = db.execute(f'select status, error from "{schema}".sync_runs').fetchone()
    assert run[0] == "failed" and "HTTP 500" in run[1]
    sim.faults.clear()
    report = sync_stream(settings, warehouse, client, "demo", "cases")
    assert report.status == "ok" and report.records < 120
    assert_cases_match(db, schema, sim)


def test_cli_exits_non_zero_with_one_line_when_hq_stays_down(sim, schema, pg_url):
    sim.faults.add("502", count=10_000)
    env = cli_env(sim.base_url, schema, pg_url, RETRY_MAX_SECONDS="0.3")
    result = run_cli(["sync"], env)
    assert result.returncode == ExitCode.FAILURE
    last = result.stderr.strip().splitlines()[-1]
    assert "stream(s) failed" in last and "HTTP 502" in last and "/api/v0.5/" in last


def test_random_faults_under_load_still_converge(sim_factory, schema, pg_url, warehouse, db):
    sim = sim_factory(n_cases=200)
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=15, form_page_size=15)
    sim.faults.set_random(0.25, ["500", "503", "reset", "truncated", "429"], seed=3)
    reports = run_sync(settings, warehouse)
    sim.faults.clear()
    assert all(r.status == "ok" for r in reports), [r.error for r in reports]
    assert_warehouse_matches(db, schema, sim)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_hq_that_cannot_be_reached_at_all_fails_soon_naming_the_url():
    url = f"http://127.0.0.1:{_closed_port()}"
    client = HQClient(url, USER, KEY, retry_max_seconds=900, retry_initial_wait=0.01,
                      retry_max_wait=0.05, unreachable_max_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(HQUnreachable) as caught:
        client.get_json(CASE_LIST)
    assert time.monotonic() - started < 3
    assert url in str(caught.value) and "COMMCARE_BASE_URL" in str(caught.value)
    # The rest of the run learns it at once instead of waiting again.
    started = time.monotonic()
    with pytest.raises(HQUnreachable):
        client.get_json(CASE_LIST)
    assert time.monotonic() - started < 0.5


def test_an_hq_that_answered_before_gets_the_whole_retry_budget(sim):
    client = _client(sim, retry_max_seconds=2.0, unreachable_max_seconds=0.2)
    client.get_json(CASE_LIST, {"limit": 1})
    sim.faults.add("503", count=10_000, resource="case")
    started = time.monotonic()
    with pytest.raises(HQError, match="HQ kept failing"):
        client.get_json(CASE_LIST, {"limit": 1})
    assert time.monotonic() - started > 1.0


def test_cli_with_a_wrong_base_url_fails_within_the_unreachable_budget(schema, pg_url):
    env = cli_env(f"http://127.0.0.1:{_closed_port()}", schema, pg_url, RETRY_MAX_SECONDS="900",
                  UNREACHABLE_RETRY_SECONDS="1")
    started = time.monotonic()
    result = run_cli(["sync"], env)
    assert time.monotonic() - started < 30
    assert result.returncode == ExitCode.FAILURE
    last = result.stderr.strip().splitlines()[-1]
    assert "cannot reach CommCare HQ" in last and "COMMCARE_BASE_URL" in last


def test_hqs_401_api_access_cut_off_is_rate_limiting_and_is_retried(sim):
    sim.faults.add("401-throttled", count=2, resource="case")
    client = _client(sim)
    doc = client.get_json(CASE_LIST, {"limit": 2})
    assert len(doc.data["objects"]) == 2 and client.requests_made == 3


def test_202_is_retried_after_its_retry_after(sim):
    sim.faults.add("202", count=1, resource="case", retry_after=1)
    client = _client(sim)
    started = time.monotonic()
    doc = client.get_json(CASE_LIST, {"limit": 2})
    assert time.monotonic() - started >= 0.95
    assert len(doc.data["objects"]) == 2 and client.requests_made == 2
