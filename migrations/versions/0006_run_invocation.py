"""sync_runs: the invocation a run belongs to, and what triggered it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = op.get_context().version_table_schema
    op.execute(f"""
    alter table "{s}".sync_runs add column invocation text, add column trigger text;
    create index sync_runs_stream_idx on "{s}".sync_runs (domain, stream, id desc);
    comment on column "{s}".sync_runs.invocation is 'one id shared by the streams of one commcare-etl command (it is in every JSON log line too)';
    comment on column "{s}".sync_runs.trigger is 'what started it: manual, schedule, backfill or reconcile';
    """)


def downgrade() -> None:
    s = op.get_context().version_table_schema
    op.execute(f"""
    drop index if exists "{s}".sync_runs_stream_idx;
    alter table "{s}".sync_runs drop column if exists invocation, drop column if exists trigger;
    """)
