"""cases.deleted_at and forms.deleted_at: when `reconcile` found them gone from HQ.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = op.get_context().version_table_schema
    op.execute(f"""
    alter table "{s}".cases add column deleted_at timestamptz;
    alter table "{s}".forms add column deleted_at timestamptz;
    comment on column "{s}".cases.deleted is 'true once reconcile found the case gone from HQ (deleted there); it is never removed here';
    comment on column "{s}".forms.deleted is 'true once reconcile found the form gone from HQ (deleted there); it is never removed here';
    comment on column "{s}".cases.deleted_at is 'when reconcile found it gone';
    comment on column "{s}".forms.deleted_at is 'when reconcile found it gone';
    """)


def downgrade() -> None:
    s = op.get_context().version_table_schema
    op.execute(f"""
    alter table "{s}".cases drop column if exists deleted_at;
    alter table "{s}".forms drop column if exists deleted_at;
    """)
