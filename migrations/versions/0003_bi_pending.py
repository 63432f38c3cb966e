"""bi_pending: records whose BI rows wait for a column that could not be added yet.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = op.get_context().version_table_schema
    op.execute(f"""
    create table "{s}".bi_pending (
        domain    text        not null,
        stream    text        not null,
        record_id text        not null,
        queued_at timestamptz not null default now(),
        primary key (domain, stream, record_id)
    );
    comment on table "{s}".bi_pending is 'Records whose BI rows were written without a new column (its table was locked by a BI user); the next run rewrites them from the base tables.';
    """)


def downgrade() -> None:
    s = op.get_context().version_table_schema
    op.execute(f'drop table if exists "{s}".bi_pending')
