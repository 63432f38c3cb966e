"""Sync state in the warehouse: checkpoints, per-stream locks, dead letters, run history.

Functions that change state take the caller's connection, so they join the caller's
transaction: the checkpoint moves only together with the data it describes.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Sequence, TypeVar

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from etl import runinfo
from etl.errors import LockBusyError
from etl.extract.cursors import Cursor

C = TypeVar("C", bound=Cursor)


def _json(cursor: dict | Cursor) -> dict:
    return cursor.to_json() if isinstance(cursor, Cursor) else cursor


def _t(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


# --- checkpoints ---------------------------------------------------------------------------
# One per (domain, stream, partition): a stream read as one uses partition ''.

def load_checkpoint(conn: psycopg.Connection, schema: str, domain: str, stream: str,
                    partition: str = "") -> dict | None:
    row = conn.execute(
        sql.SQL("select cursor from {} where domain = %s and stream = %s and partition = %s")
        .format(_t(schema, "sync_checkpoints")), (domain, stream, partition)).fetchone()
    return row[0] if row else None


def load_cursor(conn: psycopg.Connection, schema: str, domain: str, stream: str,
                kind: type[C], partition: str = "") -> C:
    """The saved cursor, read as `kind` (a fresh one if nothing was saved)."""
    return kind.parse(load_checkpoint(conn, schema, domain, stream, partition))


def save_checkpoint(conn: psycopg.Connection, schema: str, domain: str, stream: str,
                    cursor: dict | Cursor, partition: str = "") -> None:
    kind = cursor.kind if isinstance(cursor, Cursor) else None
    conn.execute(sql.SQL("""
        insert into {} (domain, stream, partition, cursor, kind, updated_at)
        values (%s, %s, %s, %s, %s, now())
        on conflict (domain, stream, partition) do update
        set cursor = excluded.cursor, kind = coalesce(excluded.kind, {}.kind), updated_at = now()
    """).format(_t(schema, "sync_checkpoints"), sql.Identifier("sync_checkpoints")),
        (domain, stream, partition, Jsonb(_json(cursor)), kind))


def delete_checkpoints(conn: psycopg.Connection, schema: str, domain: str,
                       streams: Sequence[str], partition: str | None = None) -> int:
    """Forget the streams' checkpoints: every partition's, or only `partition`'s."""
    cur = conn.execute(sql.SQL(
        "delete from {} where domain = %s and stream = any(%s) and partition = coalesce(%s, partition)"
    ).format(_t(schema, "sync_checkpoints")), (domain, list(streams), partition))
    return cur.rowcount


def delete_partitions(conn: psycopg.Connection, schema: str, domain: str, stream: str,
                      prefix: str) -> int:
    """Forget the stream's checkpoints of every partition whose name starts with `prefix`."""
    cur = conn.execute(sql.SQL(
        "delete from {} where domain = %s and stream = %s and starts_with(partition, %s)"
    ).format(_t(schema, "sync_checkpoints")), (domain, stream, prefix))
    return cur.rowcount


def list_checkpoints(conn: psycopg.Connection, schema: str) -> list[tuple]:
    """(domain, stream, cursor, updated_at, partition), in that order."""
    return conn.execute(sql.SQL(
        "select domain, stream, cursor, updated_at, partition from {} "
        "order by domain, stream, partition").format(_t(schema, "sync_checkpoints"))).fetchall()


def has_tables(conn: psycopg.Connection, schema: str) -> bool:
    """Has `migrate` created the warehouse in `schema`?"""
    return conn.execute("select to_regclass(%s) is not null",
                        (f'"{schema}".sync_checkpoints',)).fetchone()[0]


# --- locks ---------------------------------------------------------------------------------

def _lock_key(schema: str, domain: str, stream: str, purpose: str, partition: str = "") -> str:
    key = f"commcare-etl:{schema}:{domain}:{stream}:{purpose}"
    return f"{key}:{partition}" if partition else key


def lock_is_free(conn: psycopg.Connection, schema: str, domain: str, stream: str,
                 purpose: str = "sync", partition: str = "") -> bool:
    """Whether no run holds the stream's lock right now (a snapshot: it may change at once)."""
    return not conn.execute(
        "select exists (select 1 from pg_locks where locktype = 'advisory' and granted "
        "and objid = (hashtext(%s)::bigint & 4294967295)::oid and objsubid = 1)",
        (_lock_key(schema, domain, stream, purpose, partition),)).fetchone()[0]

@contextmanager
def stream_lock(conn: psycopg.Connection, schema: str, domain: str, stream: str,
                wait_seconds: float = 0.0, purpose: str = "sync",
                partition: str = "") -> Iterator[None]:
    """Hold a session advisory lock for (schema, domain, stream, purpose, partition) or raise
    LockBusyError.

    Released when the block ends or, if the process dies, when its connection closes.
    """
    key = _lock_key(schema, domain, stream, purpose, partition)
    label = f"{stream} [{partition}]" if partition else stream
    deadline = time.monotonic() + wait_seconds
    while not conn.execute("select pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]:
        if time.monotonic() >= deadline:
            raise LockBusyError(
                f"another commcare-etl {purpose} of {label} for domain {domain!r} is running "
                f"(advisory lock held); this run did nothing. Wait for it to finish, or set "
                f"LOCK_WAIT_SECONDS to wait for it.")
        time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
    try:
        yield
    finally:
        try:
            if not conn.closed:
                conn.execute("select pg_advisory_unlock(hashtext(%s))", (key,))
        except psycopg.Error:  # a broken connection: closing it releases the lock anyway
            conn.close()


# --- dead letters --------------------------------------------------------------------------

def add_dead_letters(conn: psycopg.Connection, schema: str, domain: str, stream: str,
                     rejects: Sequence, source_url: str = "", partition: str = "") -> None:
    if not rejects:
        return
    with conn.cursor() as cur:
        cur.executemany(sql.SQL(
            "insert into {} (domain, stream, partition, record_id, reason, raw, source_url) "
            "values (%s, %s, %s, %s, %s, %s, %s)").format(_t(schema, "dead_letters")),
            [(domain, stream, partition, r.record_id, r.reason, r.raw, source_url)
             for r in rejects])


# --- run history ---------------------------------------------------------------------------

def start_run(conn: psycopg.Connection, schema: str, command: str, domain: str, stream: str,
              cursor: dict | None, partition: str = "") -> int:
    # We hold the stream's lock, so any run still marked 'running' died without saying so.
    conn.execute(sql.SQL(
        "update {} set status = 'abandoned', finished_at = coalesce(finished_at, now()) "
        "where domain = %s and stream = %s and partition = %s and command = %s "
        "and status = 'running'").format(_t(schema, "sync_runs")),
        (domain, stream, partition, command))
    return conn.execute(sql.SQL(
        "insert into {} (command, domain, stream, partition, cursor_start, invocation, trigger) "
        "values (%s, %s, %s, %s, %s, %s, %s) returning id").format(_t(schema, "sync_runs")),
        (command, domain, stream, partition, Jsonb(cursor) if cursor is not None else None,
         runinfo.invocation(), runinfo.trigger())).fetchone()[0]


def count_page(conn: psycopg.Connection, schema: str, run_id: int, *, records: int,
               cleaned: int, rejected: int, requests: int, cursor: dict | Cursor) -> None:
    conn.execute(sql.SQL("""
        update {} set records = records + %s, pages = pages + 1, requests = %s,
               cleaned_values = cleaned_values + %s, dead_letters = dead_letters + %s,
               cursor_end = %s
        where id = %s""").format(_t(schema, "sync_runs")),
        (records, requests, cleaned, rejected, Jsonb(_json(cursor)), run_id))


def finish_listing(conn: psycopg.Connection, schema: str, run_id: int,
                   cursor: dict | Cursor) -> None:
    conn.execute(sql.SQL("update {} set cursor_end = %s where id = %s").format(
        _t(schema, "sync_runs")), (Jsonb(_json(cursor)), run_id))


def finish_run(conn: psycopg.Connection, schema: str, run_id: int, status: str,
               error: str | None = None, requests: int | None = None) -> None:
    conn.execute(sql.SQL(
        "update {} set status = %s, error = %s, finished_at = now(), "
        "requests = coalesce(%s, requests) where id = %s").format(_t(schema, "sync_runs")),
        (status, error, requests, run_id))
