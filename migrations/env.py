"""Alembic environment: every table lives in the warehouse schema (WAREHOUSE_SCHEMA)."""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

config = context.config
schema = config.attributes.get("schema") or os.environ.get("WAREHOUSE_SCHEMA", "commcare")


def run(connection: sa.Connection) -> None:
    # Two jobs starting at once must not both create the schema or apply a migration.
    connection.execute(sa.text("select pg_advisory_xact_lock(hashtext(:k))"),
                       {"k": f"commcare-etl:migrate:{schema}"})
    connection.execute(sa.text(f'create schema if not exists "{schema}"'))
    context.configure(connection=connection, version_table_schema=schema,
                      transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:  # the alembic CLI
    from etl.db import sqlalchemy_url

    url = os.environ.get("DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set DATABASE_URL to run alembic by hand")
    engine = sa.create_engine(sqlalchemy_url(url))
    with engine.begin() as conn:
        run(conn)
