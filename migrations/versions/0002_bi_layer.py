"""BI layer: name catalog, form_case_actions, the apps' data dictionary, safe casts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = op.get_context().version_table_schema
    op.execute(f"""
    create table "{s}".catalog_tables (
        table_name   text        primary key,
        source_kind  text        not null,
        source_name  text        not null,
        parent_table text,
        label        text,
        first_seen   timestamptz not null default now(),
        unique (source_kind, source_name)
    );
    comment on table "{s}".catalog_tables is 'Every generated table: which case type, form or repeat group it holds.';

    create table "{s}".catalog_columns (
        table_name     text        not null,
        column_name    text        not null,
        source_kind    text        not null,
        source_name    text        not null,
        original_path  text        not null,
        label          text,
        data_type      text,
        unparsed_values bigint,
        first_seen     timestamptz not null default now(),
        primary key (table_name, column_name),
        unique (table_name, original_path)
    );
    comment on table "{s}".catalog_columns is 'Every generated column: the case property or question path it holds, under its original name, with its label.';

    create table "{s}".form_case_actions (
        domain        text        not null,
        form_id       text        not null,
        block         integer     not null,
        action        text        not null,
        case_id       text        not null,
        case_type     text,
        properties    jsonb       not null default '{{}}',
        date_modified timestamptz,
        primary key (domain, form_id, block, action)
    );
    create index form_case_actions_case_idx on "{s}".form_case_actions (domain, case_id);
    comment on table "{s}".form_case_actions is 'One row per case block and action (create, update, close, index) in a form.';

    create table "{s}".apps (
        domain      text        not null,
        app_id      text        not null,
        name        text,
        version     integer,
        is_released boolean,
        built_on    timestamptz,
        synced_at   timestamptz not null default now(),
        primary key (domain, app_id)
    );
    create table "{s}".app_modules (
        domain      text    not null,
        app_id      text    not null,
        module_id   text    not null,
        position    integer not null,
        name        text,
        case_type   text,
        primary key (domain, app_id, module_id)
    );
    create table "{s}".app_case_properties (
        domain    text not null,
        app_id    text not null,
        case_type text not null,
        property  text not null,
        primary key (domain, app_id, case_type, property)
    );
    create table "{s}".app_forms (
        domain    text not null,
        app_id    text not null,
        module_id text not null,
        form_id   text not null,
        xmlns     text,
        name      text,
        primary key (domain, app_id, form_id)
    );
    create index app_forms_xmlns_idx on "{s}".app_forms (domain, xmlns);
    create table "{s}".app_questions (
        domain      text    not null,
        app_id      text    not null,
        xmlns       text    not null,
        path        text    not null,
        position    integer not null,
        label       text,
        type        text,
        repeat      text,
        "group"     text,
        options     jsonb,
        primary key (domain, app_id, xmlns, path)
    );
    comment on table "{s}".apps is 'Applications (Application Structure API).';
    comment on table "{s}".app_questions is 'Every question of every form: path (as in catalog_columns.original_path), label and type.';

    create function "{s}".try_numeric(value text) returns numeric
    language plpgsql immutable as $$
    begin
        return nullif(btrim(value), '')::numeric;
    exception when others then
        return null;
    end $$;
    create function "{s}".try_date(value text) returns date
    language plpgsql stable as $$
    begin
        return nullif(btrim(value), '')::date;
    exception when others then
        return null;
    end $$;
    create function "{s}".try_timestamptz(value text) returns timestamptz
    language plpgsql stable as $$
    begin
        return nullif(btrim(value), '')::timestamptz;
    exception when others then
        return null;
    end $$;
    """)


def downgrade() -> None:
    s = op.get_context().version_table_schema
    op.execute(f"""
    drop function if exists "{s}".try_numeric(text);
    drop function if exists "{s}".try_date(text);
    drop function if exists "{s}".try_timestamptz(text);
    drop table if exists "{s}".app_questions, "{s}".app_forms, "{s}".app_case_properties,
        "{s}".app_modules, "{s}".apps, "{s}".form_case_actions, "{s}".catalog_columns,
        "{s}".catalog_tables;
    """)
