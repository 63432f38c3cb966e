"""OTA restore: each mobile worker's caseload as the phone holds it, their registration and
their fixtures.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

WORKER = "the mobile worker whose restore this is (username@domain.commcarehq.org); part of the primary key"
COMMENTS = {
    "restore_cases": {
        "domain": "CommCare project space; part of the primary key",
        "worker": WORKER,
        "case_id": "the case id; part of the primary key",
        "case_type": "case type",
        "case_name": "case name",
        "owner_id": "the user, group or location that owns the case",
        "external_id": "external id, when set",
        "date_opened": "date opened (as the restore says it)",
        "closed": "true once a restore closed it (or took it off the worker's phone)",
        "user_id": "the user who last changed it",
        "date_modified": "when it was last changed",
        "properties": "every other case property (the restore's update block, merged)",
        "synced_at": "when this row last changed here",
    },
    "restore_case_indices": {
        "domain": "CommCare project space; part of the primary key",
        "worker": WORKER,
        "case_id": "the case the index is on; part of the primary key",
        "identifier": "the index name, e.g. parent or host; part of the primary key",
        "referenced_id": "the case it points at",
        "referenced_type": "that case's type",
        "relationship": "child or extension",
    },
    "restore_users": {
        "domain": "CommCare project space; part of the primary key",
        "worker": WORKER,
        "user_id": "the worker's user id (Registration uuid)",
        "username": "the short username",
        "date_joined": "the Registration date",
        "user_data": "custom user data (jsonb)",
        "synced_at": "when this row last changed here",
    },
    "restore_fixtures": {
        "domain": "CommCare project space; part of the primary key",
        "worker": WORKER,
        "fixture_id": "the fixture, e.g. item-list:clinics, user-groups, locations; part of the primary key",
        "position": "the item's position in the fixture; part of the primary key",
        "item_type": "the item's element name",
        "item": "the item (attributes as @name, children by tag) as jsonb",
    },
}


def upgrade() -> None:
    s = op.get_context().version_table_schema
    op.execute(f"""
    create table "{s}".restore_cases (
        domain text not null, worker text not null, case_id text not null, case_type text,
        case_name text, owner_id text, external_id text, date_opened text,
        closed boolean not null default false, user_id text, date_modified timestamptz,
        properties jsonb not null default '{{}}', synced_at timestamptz not null default now(),
        primary key (domain, worker, case_id)
    );
    create index restore_cases_type_idx on "{s}".restore_cases (domain, case_type);
    create table "{s}".restore_case_indices (
        domain text not null, worker text not null, case_id text not null,
        identifier text not null, referenced_id text, referenced_type text, relationship text,
        primary key (domain, worker, case_id, identifier)
    );
    create table "{s}".restore_users (
        domain text not null, worker text not null, user_id text, username text,
        date_joined text, user_data jsonb, synced_at timestamptz not null default now(),
        primary key (domain, worker)
    );
    create table "{s}".restore_fixtures (
        domain text not null, worker text not null, fixture_id text not null,
        position integer not null, item_type text, item jsonb,
        primary key (domain, worker, fixture_id, position)
    );
    comment on table "{s}".restore_cases is 'Each mobile worker''s caseload from the OTA restore, as their phone holds it.';
    comment on table "{s}".restore_case_indices is 'The indices of the cases in restore_cases.';
    comment on table "{s}".restore_users is 'Each restored worker''s Registration block.';
    comment on table "{s}".restore_fixtures is 'Each restored worker''s fixtures (lookup tables, groups, locations), one row per item.';
    """)
    for table, columns in COMMENTS.items():
        for column, text in columns.items():
            quoted = text.replace("'", "''")
            op.execute(f'comment on column "{s}".{table}.{column} is \'{quoted}\'')


def downgrade() -> None:
    s = op.get_context().version_table_schema
    op.execute(f"""
    drop table if exists "{s}".restore_fixtures;
    drop table if exists "{s}".restore_users;
    drop table if exists "{s}".restore_case_indices;
    drop table if exists "{s}".restore_cases;
    """)
