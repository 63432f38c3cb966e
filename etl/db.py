"""The warehouse connection: URL handling, the embedded default, and migrations."""

from __future__ import annotations

import logging
import re
import threading
import time
from contextlib import contextmanager
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterator
from urllib.parse import quote, unquote

import psycopg

from etl.errors import ConfigError, EtlError

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)


def sqlalchemy_url(url: str) -> str:
    """Accept the plain `postgresql://` (and Heroku's `postgres://`) URLs users have."""
    for prefix in ("postgresql+psycopg2://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    if url.startswith("postgresql+psycopg://"):
        return url
    raise ConfigError(
        f"DATABASE_URL must be a PostgreSQL URL like postgresql://user:password@host:5432/db "
        f"(got {url.split('://')[0]}://...)"
    )


def start_embedded(pgdata: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL kept in `pgdata`; return its URL.

    It keeps running after this process exits, so psql and BI tools can connect to it; later
    runs reuse it, and `stop_embedded` stops it. See etl/embedded.py.
    """
    from etl import embedded

    try:
        return embedded.start(pgdata).url
    except embedded.EmbeddedUnavailable as exc:
        raise ConfigError(f"DATABASE_URL is unset and no embedded PostgreSQL can run here: "
                          f"{exc}. Set DATABASE_URL to a PostgreSQL server") from exc
    except (embedded.EmbeddedError, OSError) as exc:
        raise EtlError(f"could not start the embedded PostgreSQL in {pgdata}: {exc}. "
                       f"Set DATABASE_URL to use your own PostgreSQL instead") from exc


def stop_embedded(pgdata: Path) -> bool:
    """Stop the embedded PostgreSQL kept in `pgdata`; False if it was not running."""
    from etl import embedded

    try:
        return embedded.stop(pgdata)
    except (embedded.EmbeddedError, OSError) as exc:
        raise EtlError(f"could not stop the embedded PostgreSQL in {pgdata}: {exc}") from exc


def embedded_url(pgdata: Path) -> str | None:
    """The URL of the embedded PostgreSQL running in `pgdata`, or None if it is not running."""
    from etl import embedded

    try:
        server = embedded.status(pgdata)
    except (embedded.EmbeddedError, OSError) as exc:
        raise EtlError(f"cannot tell whether the embedded PostgreSQL in {pgdata} runs: "
                       f"{exc}") from exc
    return server.url if server else None


def resolve_url(database_url: str | None, embedded_dir: Path) -> str:
    if database_url:
        return sqlalchemy_url(database_url)
    url = start_embedded(embedded_dir)
    log.info("DATABASE_URL is unset: using the embedded PostgreSQL in %s", embedded_dir)
    return sqlalchemy_url(url)


# The credentials of a URL, as SQLAlchemy reads them: a user without ":", "/" or "@", then a
# password up to the first "@" (which may hold a raw "/" or "%", as generated passwords do).
_CREDENTIALS = re.compile(r"^(?P<user>[^:/@]*)(?::(?P<password>[^@]*))?@(?P<rest>.*)$", re.S)


def _credentials(url: str) -> tuple[str | None, str | None, str]:
    """(user, password, what follows them) of one of our URLs, the user and password decoded;
    (None, None, all after "://") where it names none."""
    after = sqlalchemy_url(url).split("://", 1)[1]
    found = _CREDENTIALS.match(after)
    if not found:
        return None, None, after
    password = found["password"]
    return unquote(found["user"]), None if password is None else unquote(password), found["rest"]


def _url(user: str | None, password: str | None, rest: str) -> str:
    """A postgresql:// URL; `password` goes in as given (encoded, or a mask)."""
    if user is None:
        return "postgresql://" + rest
    secret = "" if password is None else ":" + password
    return f"postgresql://{quote(user, safe='')}{secret}@{rest}"


def libpq_url(url: str) -> str:
    """The URL psycopg (libpq) takes for one of ours: the same server, user and password as
    SQLAlchemy (the migrations) reads from it, the credentials encoded as libpq decodes them."""
    user, password, rest = _credentials(url)
    return _url(user, None if password is None else quote(password, safe=""), rest)


def masked_url(url: str) -> str:
    """The URL to show: its password, if it has one, as ***."""
    user, password, rest = _credentials(url)
    return _url(user, "***" if password else password, rest)


def _connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True, application_name="commcare-etl")


def make_engine(url: str) -> "Engine":
    import sqlalchemy as sa

    return sa.create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4)


def check_connection(dsn: str) -> psycopg.Connection:
    """A connection to the warehouse, or a ConfigError that says what to check."""
    conn = None
    try:
        conn = _connect(dsn)
        conn.execute("select 1")
        return conn
    except psycopg.Error as exc:  # a refused connection, or a URL libpq cannot read
        if conn is not None:
            conn.close()
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        password = _credentials(dsn)[1]
        if password:
            reason = reason.replace(password, "***").replace(quote(password, safe=""), "***")
        raise ConfigError(
            f"cannot connect to the warehouse database ({masked_url(dsn)}): "
            f"{reason}. Check DATABASE_URL and that PostgreSQL is running."
        ) from None


def alembic_config(schema: str) -> "Config":
    from alembic.config import Config

    script_location = str(resources.files("etl.migrations"))
    cfg = Config()
    cfg.set_main_option("script_location", script_location)
    cfg.attributes["schema"] = schema
    return cfg


_MIGRATION = re.compile(r"(\d{4})_\w+\.py$")


def head_revision() -> str:
    """The newest migration's revision: migrations are named NNNN_<what>.py, with revision
    "NNNN" (tests/test_db_migrations.py holds them to it)."""
    versions = resources.files("etl.migrations") / "versions"
    return max(m.group(1) for p in versions.iterdir() if (m := _MIGRATION.match(p.name)))


def _at_head(conn: psycopg.Connection, schema: str) -> bool:
    table = conn.execute("select to_regclass(%s)",
                         (f'"{schema}".alembic_version',)).fetchone()[0]
    if table is None:  # no schema or version table yet
        return False
    current = [row[0] for row in conn.execute(
        f'select version_num from "{schema}".alembic_version')]
    return current == [head_revision()]


def migrate(engine: "Engine", schema: str) -> None:
    """Bring the warehouse schema up to date with alembic (idempotent, safe to run
    concurrently)."""
    from alembic import command

    cfg = alembic_config(schema)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Warehouse:
    """The warehouse database: psycopg connections (loads, checks), and a SQLAlchemy engine
    for alembic, made only when there is a migration to run (importing SQLAlchemy is about a
    quarter of a scheduled run's start-up).

    A connection given back in a clean state is kept for the next `connect()` for a short
    while: against a warehouse on another host each new connection costs a TLS handshake and
    an authentication (tens of ms, more over a long link), and a run opens one to check the
    database, one for the schema version and one per stream."""

    IDLE_SECONDS = 30.0  # a kept connection older than this is closed, not used
    KEEP = 2  # connections kept at most

    def __init__(self, url: str, schema: str):
        self.url = sqlalchemy_url(url)
        self.schema = schema
        self.dsn = libpq_url(url)
        self._idle: list[tuple[float, psycopg.Connection]] = []
        self._idle_lock = threading.Lock()
        self._resetting = 0  # connections being reset to be kept
        self._disposed = False  # from then on, a connection given back is closed

    @cached_property
    def engine(self) -> "Engine":
        return make_engine(self.url)

    @classmethod
    def open(cls, database_url: str | None, embedded_dir: Path, schema: str) -> "Warehouse":
        warehouse = cls(resolve_url(database_url, embedded_dir), schema)
        warehouse._give_back(check_connection(warehouse.dsn))
        return warehouse

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        """A connection for a block (`with warehouse.connect() as conn:`), autocommit. At the
        block's end it is closed, or, when nothing of the block is left on it, kept."""
        conn, kept = self._checkout()
        try:
            try:
                # Safe here, and saves a disk flush per page: each page commits with its
                # checkpoint, so a database crash can only lose the newest pages *and* their
                # checkpoint, together; the next run reads them again.
                conn.execute("set synchronous_commit = off")
            except psycopg.OperationalError:
                if not kept:
                    raise
                conn.close()  # a kept one the server has closed since (a restart): anew
                conn = _connect(self.dsn)
                conn.execute("set synchronous_commit = off")
            yield conn
        except BaseException:
            conn.close()
            raise
        self._give_back(conn)

    def _checkout(self) -> tuple[psycopg.Connection, bool]:
        """A kept connection (and True), or a new one (and False)."""
        with self._idle_lock:
            stale = self._drop_stale()
            _, conn = self._idle.pop() if self._idle else (0.0, None)  # the newest
        for old in stale:
            old.close()
        return (conn, True) if conn is not None else (_connect(self.dsn), False)

    def _drop_stale(self) -> list[psycopg.Connection]:
        """(Under the lock.) Take out the kept connections too old or closed; returns them."""
        now = time.monotonic()
        stale = [c for since, c in self._idle if now - since >= self.IDLE_SECONDS or c.closed]
        self._idle = [(since, c) for since, c in self._idle if c not in stale]
        return stale

    def _give_back(self, conn: psycopg.Connection) -> None:
        """Keep `conn` for a later block when it is open, outside any transaction, and there
        is room; else close it. The reset leaves nothing of the last block on it: its cursors,
        role, settings, temp tables, advisory locks. (Not DISCARD ALL: it deallocates the prepared
        statements psycopg keeps track of, and psycopg 3 notices only the first time.)"""
        with self._idle_lock:
            stale = self._drop_stale()
            room = not self._disposed and len(self._idle) + self._resetting < self.KEEP
            if room:
                self._resetting += 1  # the slot is this one's while it is reset
        for old in stale:
            old.close()
        kept = False
        try:
            if room and not conn.closed and (
                    conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE):
                conn.execute("close all; set session authorization default; reset all; "
                             "discard temp; select pg_advisory_unlock_all(); unlisten *")
                kept = True
        except psycopg.Error:
            pass
        finally:
            with self._idle_lock:
                if room:
                    self._resetting -= 1
                if kept:
                    self._idle.append((time.monotonic(), conn))
            if not kept:
                conn.close()

    def close_idle(self) -> None:
        """Close the connections kept for later (e.g. between a schedule's runs)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for _, conn in idle:
            conn.close()

    def migrate(self) -> None:
        """Bring the schema up to date. An up-to-date schema costs two queries on a connection
        kept from the check: SQLAlchemy and alembic are loaded only when there is work."""
        with self.connect() as conn:
            current = _at_head(conn, self.schema)
        if not current:
            migrate(self.engine, self.schema)

    def display_url(self) -> str:
        """A URL to show (and paste into psql): the password, if there is one, masked."""
        return masked_url(self.dsn)

    def dispose(self) -> None:
        """Close every connection: the kept ones now, those still in use when given back."""
        with self._idle_lock:
            self._disposed = True
        self.close_idle()
        if "engine" in self.__dict__:
            self.engine.dispose()
