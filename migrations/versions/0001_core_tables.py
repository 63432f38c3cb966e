"""Core tables: cases, case_indices, forms, sync_checkpoints, dead_letters, sync_runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = ("sync_runs", "dead_letters", "sync_checkpoints", "forms", "case_indices", "cases")


def upgrade() -> None:
    s = op.get_context().version_table_schema
    op.execute(f"""
    create table "{s}".cases (
        domain               text        not null,
        case_id              text        not null,
        case_type            text,
        case_name            text,
        owner_id             text,
        external_id          text,
        user_id              text,
        opened_by            text,
        closed               boolean     not null default false,
        closed_by            text,
        date_opened          timestamptz,
        date_modified        timestamptz,
        date_closed          timestamptz,
        server_date_modified timestamptz,
        server_date_opened   timestamptz,
        indexed_on           timestamptz,
        properties           jsonb       not null default '{{}}',
        xform_ids            text[]      not null default '{{}}',
        deleted              boolean     not null default false,
        synced_at            timestamptz not null default now(),
        primary key (domain, case_id)
    );
    create index cases_type_idx on "{s}".cases (domain, case_type);
    create index cases_owner_idx on "{s}".cases (domain, owner_id);
    create index cases_indexed_on_idx on "{s}".cases (domain, indexed_on);

    create table "{s}".case_indices (
        domain          text not null,
        case_id         text not null,
        identifier      text not null,
        referenced_id   text,
        referenced_type text,
        relationship    text,
        primary key (domain, case_id, identifier)
    );
    create index case_indices_referenced_idx on "{s}".case_indices (domain, referenced_id);

    create table "{s}".forms (
        domain             text        not null,
        form_id            text        not null,
        xmlns              text,
        form_name          text,
        app_id             text,
        build_id           text,
        received_on        timestamptz,
        server_modified_on timestamptz,
        indexed_on         timestamptz,
        user_id            text,
        username           text,
        time_start         timestamptz,
        time_end           timestamptz,
        archived           boolean     not null default false,
        form               jsonb       not null default '{{}}',
        attachments        jsonb       not null default '{{}}',
        deleted            boolean     not null default false,
        synced_at          timestamptz not null default now(),
        primary key (domain, form_id)
    );
    create index forms_xmlns_idx on "{s}".forms (domain, xmlns);
    create index forms_received_on_idx on "{s}".forms (domain, received_on);
    create index forms_indexed_on_idx on "{s}".forms (domain, indexed_on);

    create table "{s}".sync_checkpoints (
        domain     text        not null,
        stream     text        not null,
        cursor     jsonb       not null,
        updated_at timestamptz not null default now(),
        primary key (domain, stream)
    );

    create table "{s}".dead_letters (
        id          bigserial   primary key,
        domain      text        not null,
        stream      text        not null,
        record_id   text,
        reason      text        not null,
        raw         text        not null,
        source_url  text,
        created_at  timestamptz not null default now()
    );
    create index dead_letters_record_idx on "{s}".dead_letters (domain, stream, record_id);

    create table "{s}".sync_runs (
        id              bigserial   primary key,
        command         text        not null,
        domain          text        not null,
        stream          text        not null,
        started_at      timestamptz not null default now(),
        finished_at     timestamptz,
        status          text        not null default 'running',
        records         bigint      not null default 0,
        pages           integer     not null default 0,
        requests        integer     not null default 0,
        cleaned_values  integer     not null default 0,
        dead_letters    integer     not null default 0,
        cursor_start    jsonb,
        cursor_end      jsonb,
        error           text
    );
    create index sync_runs_started_idx on "{s}".sync_runs (domain, stream, started_at);

    comment on table "{s}".cases is 'One row per CommCare case (Case API); properties holds every case property under its original name.';
    comment on table "{s}".case_indices is 'Links between cases: one row per (case, index identifier), e.g. parent or host.';
    comment on table "{s}".forms is 'One row per form submission (Form API); form holds the whole submission.';
    comment on table "{s}".sync_checkpoints is 'Where each (domain, stream) resumes; moves in the same transaction as the data.';
    comment on table "{s}".dead_letters is 'Records that could not be loaded, with the reason and the raw JSON.';
    comment on table "{s}".sync_runs is 'One row per stream per run: what it did and how it ended.';
    """)


def downgrade() -> None:
    s = op.get_context().version_table_schema
    for table in TABLES:
        op.execute(f'drop table if exists "{s}".{table}')
