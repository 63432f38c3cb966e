"""Comments on every documented column of the base tables (BI tools show them).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PK = "part of the primary key"
COMMENTS = {
    "cases": {
        "domain": "CommCare project space; " + PK,
        "case_id": "HQ's case id; " + PK,
        "case_type": "case type (special case property)",
        "case_name": "case name (special case property)",
        "owner_id": "id of the user, group or location that owns the case",
        "external_id": "external id (special case property)",
        "user_id": "id of the last user to modify the case (Case API v0.5 only)",
        "opened_by": "id of the user who opened the case (Case API v0.5 only)",
        "closed": "whether the case is closed",
        "closed_by": "id of the user who closed the case (Case API v0.5 only)",
        "date_opened": "when the case was opened, phone time (UTC)",
        "date_modified": "when the case was last modified, phone time (UTC)",
        "date_closed": "when the case was closed (UTC)",
        "server_date_modified": "when HQ received the last change (UTC)",
        "server_date_opened": "when HQ received the opening form (UTC; Case API v0.5 only)",
        "indexed_on": "when HQ last indexed the case: the sync's cursor",
        "properties": "every case property under its original name, the special ones included",
        "xform_ids": "ids of the forms that touched the case (Case API v0.5 only)",
        "deleted": "true once the case is known to be deleted in HQ",
        "synced_at": "when commcare-etl last wrote this row",
    },
    "case_indices": {
        "domain": "CommCare project space; " + PK,
        "case_id": "the case holding the index; " + PK,
        "identifier": "the index name, e.g. parent or host; " + PK,
        "referenced_id": "id of the case it points to",
        "referenced_type": "case type of the case it points to",
        "relationship": "child or extension",
    },
    "forms": {
        "domain": "CommCare project space; " + PK,
        "form_id": "HQ's form (submission) id; " + PK,
        "xmlns": "the form's identity (@xmlns): the same for every submission of that form",
        "form_name": "the form's name (@name)",
        "app_id": "the application the form belongs to",
        "build_id": "the application build the form was submitted from",
        "received_on": "when HQ received the submission (UTC)",
        "server_modified_on": "when HQ last changed the submission (archive, edit; UTC)",
        "indexed_on": "when HQ last indexed the submission: the sync's cursor",
        "user_id": "id of the submitting user (meta/userID)",
        "username": "the submitting user's username (meta/username)",
        "time_start": "when the form was opened on the phone (meta/timeStart, UTC)",
        "time_end": "when the form was completed on the phone (meta/timeEnd, UTC)",
        "archived": "whether the form is archived in HQ (kept current both ways)",
        "form": "the whole submission: questions, groups, repeats, case blocks, meta",
        "attachments": "attachments: {name: {content_type, length, url}}",
        "deleted": "true once the form is known to be deleted in HQ",
        "synced_at": "when commcare-etl last wrote this row",
    },
    "form_case_actions": {
        "domain": "CommCare project space; " + PK,
        "form_id": "the form; " + PK,
        "block": "position of the case block in the form; " + PK,
        "action": "create, update, close or index; " + PK,
        "case_id": "the case the block acts on",
        "case_type": "its case type, when the block says",
        "properties": "the values the block sets",
        "date_modified": "the block's @date_modified",
    },
    "sync_checkpoints": {
        "domain": "CommCare project space; " + PK,
        "stream": "apps, cases, forms, or backfill:<stream>; " + PK,
        "cursor": "where the next run of the stream starts",
        "updated_at": "when the checkpoint last moved",
    },
    "sync_runs": {
        "id": "run id",
        "command": "sync or backfill",
        "domain": "CommCare project space",
        "stream": "the stream the run read",
        "started_at": "when the run started",
        "finished_at": "when the run ended",
        "status": "running, ok, failed, interrupted, or abandoned (killed without a word)",
        "records": "records read",
        "pages": "pages loaded",
        "requests": "requests made to HQ",
        "cleaned_values": "values that had characters PostgreSQL cannot store removed",
        "dead_letters": "records that went to dead_letters",
        "cursor_start": "the checkpoint the run started from",
        "cursor_end": "the checkpoint after its last loaded page",
        "error": "why it failed, for an operator",
    },
    "dead_letters": {
        "id": "id",
        "domain": "CommCare project space",
        "stream": "the stream that read the record",
        "record_id": "the record's id, when it has one",
        "reason": "why it could not be loaded",
        "raw": "the record as HQ sent it (ASCII-escaped JSON)",
        "source_url": "the page it came from",
        "created_at": "when it was set aside",
    },
    "catalog_tables": {
        "table_name": "a generated table or view",
        "source_kind": "case_type, form, repeat, part (continuation table) or typed_view",
        "source_name": "the case type, xmlns, xmlns#repeat/path, <table>#<n>, or the viewed table",
        "parent_table": "the form table of a repeat, the main table of a part, the table of a view",
        "label": "the form's name, where known",
        "first_seen": "when it was created",
    },
    "catalog_columns": {
        "table_name": "the table holding the column",
        "column_name": "the column",
        "source_kind": "case_property, case_index or form_question",
        "source_name": "the case type or the form's xmlns",
        "original_path": "the property name or question path, as in HQ",
        "label": "the question's label in the app",
        "data_type": "the question's type in the app (Date, Int, Decimal, ...)",
        "unparsed_values": "values that do not parse as data_type (NULL in the _typed view)",
        "first_seen": "when the column was added",
    },
    "apps": {
        "domain": "CommCare project space", "app_id": "application id", "name": "its name",
        "version": "its version", "is_released": "whether this build is released",
        "built_on": "when it was built", "synced_at": "when commcare-etl last wrote this row",
    },
    "app_modules": {
        "domain": "CommCare project space", "app_id": "application id",
        "module_id": "module id", "position": "its position in the app", "name": "its name",
        "case_type": "the case type it works on",
    },
    "app_case_properties": {
        "domain": "CommCare project space", "app_id": "application id",
        "case_type": "case type", "property": "a case property the app uses",
    },
    "app_forms": {
        "domain": "CommCare project space", "app_id": "application id",
        "module_id": "its module", "form_id": "form id in the app",
        "xmlns": "the form's identity (as in forms.xmlns)", "name": "its name",
    },
    "app_questions": {
        "domain": "CommCare project space", "app_id": "application id",
        "xmlns": "the form (as in forms.xmlns)",
        "path": "question path, as in catalog_columns.original_path",
        "position": "its position in the form", "label": "its label",
        "type": "its type (Text, Date, Int, Select, Repeat, ...)",
        "repeat": "the repeat group it is in", "group": "the group it is in",
        "options": "the choices of a select question",
    },
    "bi_pending": {
        "domain": "CommCare project space", "stream": "cases or forms",
        "record_id": "the record whose BI rows wait for a column",
        "queued_at": "when it was queued",
    },
}


def upgrade() -> None:
    s = op.get_context().version_table_schema
    statements = []
    for table, columns in COMMENTS.items():
        for column, text in columns.items():
            statements.append(
                f'comment on column "{s}"."{table}"."{column}" is \'{text.replace(chr(39), chr(39) * 2)}\';')
    op.execute("\n".join(statements))


def downgrade() -> None:
    s = op.get_context().version_table_schema
    op.execute("\n".join(f'comment on column "{s}"."{table}"."{column}" is null;'
                         for table, columns in COMMENTS.items() for column in columns))
