"""`commcare-etl run`: the scheduled job keeps syncing, lives through failed runs, and stops
cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from etl.errors import ConfigError, HQError
from etl.schedule import Schedule, run_forever
from tests.conftest import cli_env, run_cli_patched
from tests.matching import assert_warehouse_matches


def test_schedules_are_intervals_or_cron_expressions():
    assert Schedule.parse("15m").interval == timedelta(minutes=15)
    assert Schedule.parse("90s").interval == timedelta(seconds=90)
    assert Schedule.parse("2h").interval == timedelta(hours=2)
    assert Schedule.parse("30").interval == timedelta(minutes=30)
    cron = Schedule.parse("*/15 * * * *")
    assert cron.next_after(datetime(2026, 1, 1, 0, 7, tzinfo=timezone.utc)) == datetime(
        2026, 1, 1, 0, 15, tzinfo=timezone.utc)
    for bad in ("soon", "0m", "* * *"):
        with pytest.raises(ConfigError):
            Schedule.parse(bad)


def test_a_failed_run_does_not_end_the_loop():
    calls = []

    def turn() -> bool:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise HQError("HQ is down")
        if len(calls) == 2:
            raise RuntimeError("a bug")
        return True

    assert run_forever(turn, Schedule.parse("1s"), max_turns=3) == 0
    assert len(calls) == 3
    assert all(b - a >= 0.9 for a, b in zip(calls, calls[1:]))  # never sooner than scheduled


def _runs(pg_url: str, schema: str) -> int:
    try:
        with psycopg.connect(pg_url) as conn:
            return conn.execute(f"select count(*) from \"{schema}\".sync_runs "
                                f"where status = 'ok' and stream = 'cases'").fetchone()[0]
    except psycopg.Error:
        return 0


def test_run_syncs_on_its_schedule_and_stops_on_sigterm(sim_factory, schema, pg_url, db):
    sim = sim_factory(n_cases=30)
    env = cli_env(sim.base_url, schema, pg_url)
    proc = subprocess.Popen([sys.executable, "-m", "etl", "run", "--every", "1s"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while _runs(pg_url, schema) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        sim.add_cases("demo", 3)  # picked up by a later turn, without restarting anything
        while _runs(pg_url, schema) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _runs(pg_url, schema) >= 3
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    assert time.monotonic() - signalled < 15
    assert "next run at" in stderr and "SIGTERM" in stderr
    assert_warehouse_matches(db, schema, sim)


def test_run_lives_through_an_hq_outage(sim_factory, schema, pg_url):
    sim = sim_factory(n_cases=10)
    sim.faults.add("503", count=10_000)
    env = cli_env(sim.base_url, schema, pg_url, RETRY_MAX_SECONDS="0.2")
    proc = subprocess.Popen([sys.executable, "-m", "etl", "run", "--every", "1s"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
        assert proc.poll() is None  # still running, not killed by the failed runs
        sim.faults.clear()
        deadline = time.monotonic() + 60
        while _runs(pg_url, schema) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _runs(pg_url, schema) >= 1  # recovered by itself
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "failed" in stderr and "trying again at" in stderr


def test_the_scheduled_job_holds_no_database_connection_between_runs(sim, schema, pg_url):
    code = (
        "import sys\n"
        "import etl.db, etl.schedule\n"
        "opened = []\n"
        "real_open = etl.db.Warehouse.open.__func__\n"
        "etl.db.Warehouse.open = classmethod(\n"
        "    lambda cls, *a, **k: opened.append(real_open(cls, *a, **k)) or opened[-1])\n"
        "def one_turn(turn, schedule):\n"
        "    assert turn()\n"
        "    assert len(opened) == 1 and opened[0]._idle == [], opened[0]._idle\n"
        "    return 0\n"
        "etl.schedule.run_forever = one_turn\n"
        "from etl import cli\n"
        "sys.exit(cli.main(['run', '--every', '1h']))\n")
    result = run_cli_patched(code, cli_env(sim.base_url, schema, pg_url))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sync finished" in result.stderr
