"""Queue for a rewrite the BI rows that a continuation table may be missing.

Before 923865a, the page that opened a continuation table (`<table>__part2`, …) of an existing
case type's, form's or repeat group's table did not write its records' values there: they
stayed in the base tables' jsonb only. Which records those were is not recorded, so every
record of such a table without a row in one of its continuation tables is queued in
bi_pending, and the next sync of its stream rewrites its BI rows from the base tables (a
record with no value there gets no row again; one marked deleted stays marked). A warehouse
without continuation tables queues nothing.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# The kind of table -> (its stream, the key its rows share with its continuation tables).
STREAMS = {"case_type": ("cases", ("domain", "case_id")),
           "form": ("forms", ("domain", "form_id")),
           "repeat": ("forms", ("domain", "form_id", "row_key"))}


def upgrade() -> None:
    s = op.get_context().version_table_schema
    conn = op.get_bind()
    parts = conn.exec_driver_sql(f"""
        select p.table_name, t.table_name, t.source_kind
        from "{s}".catalog_tables p join "{s}".catalog_tables t on t.table_name = p.parent_table
        where p.source_kind = 'part'""").fetchall()
    for part, table, kind in parts:
        if kind not in STREAMS:  # Export API and lookup tables: bi_pending rewrites neither
            continue
        stream, key = STREAMS[kind]
        match = " and ".join(f'p."{c}" = t."{c}"' for c in key)
        id_column = "case_id" if stream == "cases" else "form_id"
        op.execute(f"""
            insert into "{s}".bi_pending (domain, stream, record_id)
            select distinct t.domain, '{stream}', t."{id_column}" from "{s}"."{table}" t
            where not exists (select 1 from "{s}"."{part}" p where {match})
            on conflict do nothing""")


def downgrade() -> None:
    pass  # a queued rewrite is harmless: nothing to undo
