"""The warehouse's connections: the start-up check's connection is the run's, a block leaves
nothing behind on a connection kept for the next, and a connection in doubt is closed."""

from __future__ import annotations

import psycopg
import pytest

from etl import state
from etl.db import Warehouse


@pytest.fixture
def opened(pg_url: str, schema: str):
    wh = Warehouse.open(pg_url, None, schema)
    yield wh
    wh.dispose()


def _pid(conn: psycopg.Connection) -> int:
    return conn.info.backend_pid


def test_the_start_up_check_migration_check_and_streams_share_one_connection(opened, schema):
    opened.migrate()  # creates the schema (alembic) the first time: on an engine of its own
    with opened.connect() as conn:
        first = _pid(conn)
    opened.migrate()  # at head: two queries on the kept connection
    with opened.connect() as conn:
        assert _pid(conn) == first
        assert conn.execute("show synchronous_commit").fetchone()[0] == "off"
        assert conn.execute("select count(*) from pg_cursors").fetchone()[0] == 0
    with opened.connect() as a, opened.connect() as b:  # at once: two connections
        assert _pid(a) != _pid(b)
        assert first in (_pid(a), _pid(b))


def test_a_kept_connection_holds_nothing_of_the_block_before(opened, schema):
    opened.migrate()
    with opened.connect() as conn:
        pid = _pid(conn)
        conn.execute("create temp table leftover (x int)")
        conn.execute("set work_mem = '7MB'")
        with state.stream_lock(conn, schema, "demo", "cases"):
            pass
        conn.execute("select pg_advisory_lock(12345)")  # a lock a block forgot to release
        conn.execute("declare leftover_cursor cursor with hold for select 1")
    with opened.connect() as conn:
        assert _pid(conn) == pid
        assert conn.execute("select to_regclass('pg_temp.leftover')").fetchone()[0] is None
        assert conn.execute("show work_mem").fetchone()[0] != "7MB"
        assert conn.execute("show synchronous_commit").fetchone()[0] == "off"
        assert conn.execute("select count(*) from pg_cursors").fetchone()[0] == 0
        with psycopg.connect(opened.dsn, autocommit=True) as other:  # the lock is free
            assert other.execute("select pg_try_advisory_lock(12345)").fetchone()[0]


def test_a_connection_in_doubt_is_closed_not_kept(opened):
    with pytest.raises(RuntimeError):
        with opened.connect() as conn:
            failed = conn
            raise RuntimeError("a block that failed")
    assert failed.closed
    with opened.connect() as conn:  # one left inside a transaction
        left_open = conn
        conn.execute("begin")
    assert left_open.closed
    with opened.connect() as conn:
        assert _pid(conn) not in (None, 0)


def test_an_old_or_broken_kept_connection_is_replaced(opened, monkeypatch):
    with opened.connect() as conn:
        pid = _pid(conn)
    with psycopg.connect(opened.dsn, autocommit=True) as admin:  # the server drops it
        admin.execute("select pg_terminate_backend(%s)", (pid,))
    monkeypatch.setattr(Warehouse, "IDLE_SECONDS", 0.0)  # and it is too old anyway
    with opened.connect() as conn:
        assert _pid(conn) != pid
        assert conn.execute("select 1").fetchone()[0] == 1
    kept = list(opened._idle)
    opened.close_idle()
    assert kept and all(c.closed for _, c in kept) and not opened._idle


def test_a_kept_connection_the_server_closed_since_is_made_anew(opened):
    with opened.connect() as conn:
        pid = _pid(conn)
    with psycopg.connect(opened.dsn, autocommit=True) as admin:  # e.g. a server restart
        admin.execute("select pg_terminate_backend(%s)", (pid,))
    with opened.connect() as conn:
        assert _pid(conn) != pid
        assert conn.execute("show synchronous_commit").fetchone()[0] == "off"
        assert conn.execute("select count(*) from pg_cursors").fetchone()[0] == 0


def test_statements_psycopg_prepared_still_run_on_a_kept_connection(opened):
    query = "select %s::int + 1"
    for _ in range(3):  # each block runs it often enough to be prepared, then gives it back
        with opened.connect() as conn:
            for n in range(8):
                assert conn.execute(query, (n,)).fetchone()[0] == n + 1


def test_a_sync_with_nothing_new_opens_one_database_session(sim, settings, pg_url, schema,
                                                            monkeypatch):
    from etl import db
    from etl.sync import run_sync

    first = Warehouse.open(pg_url, None, schema)
    first.migrate()
    assert all(r.status == "ok" for r in run_sync(settings, first))
    first.dispose()
    opened = []
    real = db._connect
    monkeypatch.setattr(db, "_connect", lambda dsn: opened.append(dsn) or real(dsn))
    again = Warehouse.open(pg_url, None, schema)  # as the CLI does: check, migrate, sync
    again.migrate()
    reports = run_sync(settings, again)
    again.dispose()
    assert len(reports) == 3 and all(r.status == "ok" and r.inserted == 0 for r in reports)
    assert len(opened) == 1, opened


def test_blocks_ending_together_keep_no_more_than_the_limit(opened):
    import threading

    held = threading.Barrier(8)
    conns = []

    def block():
        with opened.connect() as conn:
            conns.append(conn)
            held.wait(timeout=30)  # all eight open at once, then all given back together

    threads = [threading.Thread(target=block) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(opened._idle) <= Warehouse.KEEP
    assert sum(not c.closed for c in conns) == len(opened._idle)


def test_a_connection_given_back_after_dispose_is_closed_not_kept(opened):
    with opened.connect() as conn:  # e.g. a window still loading when the command ends
        opened.dispose()
    assert conn.closed and not opened._idle
