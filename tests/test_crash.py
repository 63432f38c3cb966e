"""SIGKILL at any moment, run again: nothing lost, nothing duplicated, nothing stale."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import psycopg

from tests.conftest import cli_env, run_cli
from tests.matching import assert_cases_match, assert_warehouse_matches, follow_up_forms


def _start_sync(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "etl", "sync"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _pages_committed(pg_url: str, schema: str) -> int:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        try:
            row = conn.execute(f'select coalesce(sum(pages), 0) from "{schema}".sync_runs').fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0])


def kill_mid_run(env: dict[str, str], pg_url: str, schema: str, *, after_pages: int,
                 extra_delay: float = 0.0, timeout: float = 60) -> bool:
    """Start a sync, SIGKILL it once `after_pages` more pages are committed. True if killed."""
    start = _pages_committed(pg_url, schema)
    proc = _start_sync(env)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if _pages_committed(pg_url, schema) - start >= after_pages:
                time.sleep(extra_delay)
                break
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            return True
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_sigkill_mid_run_then_resume_loses_and_duplicates_nothing(sim_factory, schema, pg_url, db):
    sim = sim_factory(n_cases=400)
    env = cli_env(sim.base_url, schema, pg_url, CASE_PAGE_SIZE="25", FORM_PAGE_SIZE="25")
    assert kill_mid_run(env, pg_url, schema, after_pages=3, extra_delay=0.01)
    committed = _pages_committed(pg_url, schema)
    assert committed >= 3
    # The killed run left a checkpoint; resume finishes the job.
    result = run_cli(["sync"], env)
    assert result.returncode == 0, result.stderr
    assert_warehouse_matches(db, schema, sim)
    runs = dict(db.execute(f'select status, count(*) from "{schema}".sync_runs group by 1').fetchall())
    assert runs.get("abandoned", 0) >= 1 and runs["ok"] >= 3  # apps, cases, forms (+ earlier)


def test_sigkill_while_hq_changes_between_runs(sim_factory, schema, pg_url, db):
    sim = sim_factory(n_cases=300)
    env = cli_env(sim.base_url, schema, pg_url, CASE_PAGE_SIZE="20", FORM_PAGE_SIZE="20")
    rng = random.Random(7)
    for round_ in range(3):
        kill_mid_run(env, pg_url, schema, after_pages=rng.randint(1, 4),
                     extra_delay=rng.random() * 0.05)
        ids = sorted(sim.snapshot("demo", "case"))
        sim.update_cases("demo", rng.sample(ids, 5), {"round": str(round_)})
        sim.add_cases("demo", 3)
    result = run_cli(["sync"], env)
    assert result.returncode == 0, result.stderr
    assert_warehouse_matches(db, schema, sim)


def kill_after(env: dict[str, str], seconds: float) -> bool:
    """Start a sync and SIGKILL it after `seconds` (wherever it is: start-up, migrating,
    fetching, inside a load transaction). True if it was still running."""
    proc = _start_sync(env)
    try:
        proc.wait(seconds)
        return False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        return True


def test_twenty_plus_random_sigkills_then_the_warehouse_equals_hq(sim_factory, schema, pg_url, db):
    sim = sim_factory(n_cases=500)
    sim.add_ties("demo", "case", 150, indexed_on=None)  # a tie run inside the kill window
    env = cli_env(sim.base_url, schema, pg_url, CASE_PAGE_SIZE="40", FORM_PAGE_SIZE="40")
    rng = random.Random(2024)
    kills = 0
    for attempt in range(60):  # until 22 kills; a run with nothing new often ends first
        if kills >= 22:
            break
        if attempt % 2:
            killed = kill_mid_run(env, pg_url, schema, after_pages=rng.randint(0, 3),
                                  extra_delay=rng.random() * 0.03, timeout=30)
        else:
            killed = kill_after(env, rng.uniform(0.3, 2.0))
        kills += killed
        if attempt % 5 == 4:  # HQ changes between some of the runs
            ids = sorted(sim.snapshot("demo", "case"))
            sim.update_cases("demo", rng.sample(ids, 10), {"attempt": str(attempt)})
            sim.close_cases("demo", rng.sample(ids, 2))
            sim.archive_forms("demo", rng.sample(follow_up_forms(sim), 2))
            sim.add_cases("demo", 5)
    assert kills >= 20, f"only {kills} runs were killed mid-run"
    result = run_cli(["sync"], env)
    assert result.returncode == 0, result.stderr
    assert_warehouse_matches(db, schema, sim)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        statuses = dict(conn.execute(
            f'select status, count(*) from "{schema}".sync_runs group by 1').fetchall())
    assert statuses.get("running", 0) == 0  # every killed run was marked abandoned


def test_sigterm_stops_cleanly_exits_130_and_says_so(sim_factory, schema, pg_url, db):
    sim = sim_factory(n_cases=400)
    sim.faults.add("slow", count=1000, resource="case", after=2, delay=0.3)
    env = cli_env(sim.base_url, schema, pg_url, CASE_PAGE_SIZE="20", STREAMS="cases")
    proc = subprocess.Popen([sys.executable, "-m", "etl", "sync"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while _pages_committed(pg_url, schema) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr[-1500:]
    assert "SIGTERM" in stderr and "checkpoint stays" in stderr
    status = db.execute(f'select status from "{schema}".sync_runs').fetchone()[0]
    assert status == "interrupted"
    sim.faults.clear()
    assert run_cli(["sync"], env).returncode == 0
    assert_cases_match(db, schema, sim)  # the next run completes the stream


def test_sigterm_stops_a_parallel_run_as_a_sequential_one(sim_factory, schema, pg_url, db):
    sim = sim_factory(n_cases=400)
    sim.faults.add("slow", count=1000, after=4, delay=0.3)
    env = cli_env(sim.base_url, schema, pg_url, CASE_PAGE_SIZE="20", FORM_PAGE_SIZE="20",
                  STREAMS="cases,forms", PARALLEL_STREAMS="2")
    proc = subprocess.Popen([sys.executable, "-m", "etl", "sync"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while _pages_committed(pg_url, schema) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr[-1500:]
    assert time.monotonic() - signalled < 15
    statuses = sorted(r[0] for r in db.execute(f'select status from "{schema}".sync_runs'))
    assert statuses == ["interrupted", "interrupted"], statuses
    sim.faults.clear()
    assert run_cli(["sync"], env).returncode == 0
    assert_warehouse_matches(db, schema, sim)


def test_sigkill_of_a_parallel_run_leaves_no_worker_behind(sim_factory, schema, pg_url, db):
    sim = sim_factory(n_cases=400)
    env = cli_env(sim.base_url, schema, pg_url, CASE_PAGE_SIZE="10", FORM_PAGE_SIZE="10",
                  PARALLEL_STREAMS="2")
    assert kill_mid_run(env, pg_url, schema, after_pages=4)
    # The workers die with their parent: nothing holds a lock for long.
    result = run_cli(["sync"], {**env, "LOCK_WAIT_SECONDS": "15"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert_warehouse_matches(db, schema, sim)
