"""Checkpoints keyed by (domain, stream, partition) with their cursor kind; a partition on runs
and dead letters; apps kept as a run-scoped snapshot (deleted, deleted_at).

A partition is one of several independent reads of a stream: a mobile worker's restore, one
export. Streams with a single read use '' (every existing row).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PARTITION = ("one of several independent reads of the stream (a mobile worker''s restore, "
             "an export); empty for a stream read as one")


def upgrade() -> None:
    s = op.get_context().version_table_schema
    op.execute(f"""
    alter table "{s}".sync_checkpoints add column partition text not null default '',
        add column kind text;
    alter table "{s}".sync_checkpoints drop constraint sync_checkpoints_pkey,
        add primary key (domain, stream, partition);
    alter table "{s}".sync_runs add column partition text not null default '';
    alter table "{s}".dead_letters add column partition text not null default '';
    comment on column "{s}".sync_checkpoints.partition is '{PARTITION}; part of the primary key';
    comment on column "{s}".sync_checkpoints.kind is 'the cursor kind: indexed_on, keyset, snapshot, export_token or restore_id';
    comment on column "{s}".sync_runs.partition is '{PARTITION}';
    comment on column "{s}".dead_letters.partition is '{PARTITION}';

    alter table "{s}".apps add column deleted boolean not null default false,
        add column deleted_at timestamptz;
    comment on column "{s}".apps.deleted is 'true once a complete listing of HQ no longer held the app (deleted there); it is never removed here';
    comment on column "{s}".apps.deleted_at is 'when a complete listing first missed it';
    """)


def downgrade() -> None:
    s = op.get_context().version_table_schema
    op.execute(f"""
    alter table "{s}".apps drop column deleted, drop column deleted_at;
    alter table "{s}".dead_letters drop column partition;
    alter table "{s}".sync_runs drop column partition;
    delete from "{s}".sync_checkpoints where partition <> '';
    alter table "{s}".sync_checkpoints drop constraint sync_checkpoints_pkey,
        add primary key (domain, stream);
    alter table "{s}".sync_checkpoints drop column partition, drop column kind;
    """)
