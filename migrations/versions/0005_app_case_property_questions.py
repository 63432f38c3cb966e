"""app_case_property_questions: which form question saves which case property.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLE = "app_case_property_questions"
TABLE_COMMENT = ("Which form question saves which case property, from the forms' case actions in "
                 "the app (open, update, child cases, user case; basic and advanced modules). "
                 "Join to app_questions on (domain, app_id, xmlns, question_path = path) for the "
                 "question's label and type.")
COLUMN_COMMENTS = {
    "domain": "CommCare project space; part of the primary key",
    "app_id": "application id (as in apps.app_id); part of the primary key",
    "case_type": "the case type the property belongs to (commcare-user for the user case); "
                 "part of the primary key",
    "property": "the case property, as in cases.properties (name is the case name); "
                "part of the primary key",
    "xmlns": "the form that saves it (as in forms.xmlns); part of the primary key",
    "question_path": "the question whose answer is saved, as in app_questions.path; "
                     "part of the primary key",
}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upgrade() -> None:
    s = op.get_context().version_table_schema
    comments = "\n".join(f'comment on column "{s}".{TABLE}.{column} is {_quote(text)};'
                         for column, text in COLUMN_COMMENTS.items())
    op.execute(f"""
    create table "{s}".{TABLE} (
        domain        text not null,
        app_id        text not null,
        case_type     text not null,
        property      text not null,
        xmlns         text not null,
        question_path text not null,
        primary key (domain, app_id, case_type, property, xmlns, question_path)
    );
    create index {TABLE}_property_idx on "{s}".{TABLE} (domain, case_type, property);
    comment on table "{s}".{TABLE} is {_quote(TABLE_COMMENT)};
    {comments}
    """)


def downgrade() -> None:
    s = op.get_context().version_table_schema
    op.execute(f'drop table if exists "{s}".{TABLE}')
