"""Reference data: mobile workers, web users, groups and their members, locations, location
types and every location's ancestors. Snapshot tables: a row HQ no longer lists is marked
deleted (with deleted_at), never removed; one that comes back is un-deleted.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SNAPSHOT = """
        raw          jsonb       not null,
        deleted      boolean     not null default false,
        deleted_at   timestamptz,
        synced_at    timestamptz not null default now(),"""


def upgrade() -> None:
    s = op.get_context().version_table_schema
    op.execute(f"""
    create table "{s}".users (
        domain text not null, user_id text not null, username text, first_name text,
        last_name text, email text, default_phone_number text, phone_numbers text[],
        group_ids text[], user_data jsonb, primary_location_id text, location_ids text[],
        is_active boolean, last_modified timestamptz,{SNAPSHOT}
        primary key (domain, user_id)
    );
    create table "{s}".web_users (
        domain text not null, user_id text not null, username text, first_name text,
        last_name text, email text, role text, is_admin boolean, permissions jsonb,
        user_data jsonb, primary_location_id text, location_ids text[], is_active boolean,
        last_modified timestamptz,{SNAPSHOT}
        primary key (domain, user_id)
    );
    create table "{s}".groups (
        domain text not null, group_id text not null, name text, case_sharing boolean,
        reporting boolean, metadata jsonb,{SNAPSHOT}
        primary key (domain, group_id)
    );
    create table "{s}".group_members (
        domain text not null, group_id text not null, user_id text not null,
        primary key (domain, group_id, user_id)
    );
    create index group_members_user_idx on "{s}".group_members (domain, user_id);
    create table "{s}".locations (
        domain text not null, location_id text not null, name text, site_code text,
        location_type_code text, location_type_name text, parent_location_id text,
        latitude numeric, longitude numeric, location_data jsonb,
        last_modified timestamptz,{SNAPSHOT}
        primary key (domain, location_id)
    );
    create table "{s}".location_types (
        domain text not null, location_type_id text not null, name text, code text,
        parent_type_id text, administrative boolean, shares_cases boolean,
        view_descendants boolean,{SNAPSHOT}
        primary key (domain, location_type_id)
    );
    create table "{s}".location_ancestors (
        domain text not null, location_id text not null, ancestor_id text not null,
        depth integer not null,
        primary key (domain, location_id, ancestor_id)
    );
    create index location_ancestors_ancestor_idx on "{s}".location_ancestors (domain, ancestor_id);
    comment on table "{s}".users is 'Mobile workers (HQ user API); deactivated ones with is_active false; deleted in HQ: deleted true.';
    comment on table "{s}".web_users is 'Web users of the project (HQ web-user API).';
    comment on table "{s}".groups is 'Groups (HQ group API), with their case-sharing and reporting flags.';
    comment on table "{s}".group_members is 'Which mobile worker is in which group (the current members).';
    comment on table "{s}".locations is 'Locations (HQ location API v2); archived ones vanish from HQ''s list and are marked deleted here.';
    comment on table "{s}".location_types is 'Location types (levels of the hierarchy).';
    comment on table "{s}".location_ancestors is 'Every location with each of its ancestors (depth 1 = parent) and itself (depth 0): roll up to any level with one join.';
    """)
    generic = {
        "domain": "CommCare project space", "username": "the username",
        "first_name": "first name", "last_name": "last name", "email": "email address",
        "default_phone_number": "the default phone number", "phone_numbers": "every phone number",
        "last_modified": "when HQ last changed it (UTC)", "name": "its name",
        "raw": "the record as HQ sent it", "deleted": "no longer listed by HQ",
        "deleted_at": "when it was first found missing",
        "synced_at": "when commcare-etl last wrote this row",
    }
    comments = {
        "users": {"user_id": "HQ's user id", "group_ids": "ids of the groups the worker is in",
                  "user_data": "the worker's custom user data",
                  "primary_location_id": "the worker's primary location",
                  "location_ids": "every location the worker is assigned to",
                  "is_active": "false for a deactivated worker"},
        "web_users": {"user_id": "HQ's user id", "role": "the role in this project",
                      "is_admin": "a project administrator",
                      "permissions": "the role's permissions", "user_data": "custom user data",
                      "primary_location_id": "the primary location",
                      "location_ids": "the assigned locations",
                      "is_active": "active in this project"},
        "groups": {"group_id": "HQ's group id", "case_sharing": "members share cases",
                   "reporting": "used in reports", "metadata": "the group's custom data"},
        "group_members": {"group_id": "the group", "user_id": "a mobile worker in it"},
        "locations": {"location_id": "HQ's location id", "site_code": "the location's site code",
                      "location_type_code": "its type's code",
                      "location_type_name": "its type's name",
                      "parent_location_id": "its parent ('' for a root)",
                      "latitude": "latitude", "longitude": "longitude",
                      "location_data": "the location's custom data"},
        "location_types": {"location_type_id": "HQ's location type id", "code": "its code",
                           "parent_type_id": "the type one level up",
                           "administrative": "an administrative level (not a supply point)",
                           "shares_cases": "locations of this type own cases",
                           "view_descendants": "users here see the locations below"},
        "location_ancestors": {"location_id": "a location",
                               "ancestor_id": "one of its ancestors, or itself",
                               "depth": "0 = the location itself, 1 = its parent, 2 = grandparent"},
    }
    columns = {
        "users": "domain user_id username first_name last_name email default_phone_number "
                 "phone_numbers group_ids user_data primary_location_id location_ids is_active "
                 "last_modified raw deleted deleted_at synced_at",
        "web_users": "domain user_id username first_name last_name email role is_admin "
                     "permissions user_data primary_location_id location_ids is_active "
                     "last_modified raw deleted deleted_at synced_at",
        "groups": "domain group_id name case_sharing reporting metadata raw deleted deleted_at "
                  "synced_at",
        "group_members": "domain group_id user_id",
        "locations": "domain location_id name site_code location_type_code location_type_name "
                     "parent_location_id latitude longitude location_data last_modified raw "
                     "deleted deleted_at synced_at",
        "location_types": "domain location_type_id name code parent_type_id administrative "
                          "shares_cases view_descendants raw deleted deleted_at synced_at",
        "location_ancestors": "domain location_id ancestor_id depth",
    }
    statements = [
        f'comment on column "{s}"."{table}"."{column}" is '
        f"'{(comments[table].get(column) or generic[column]).replace(chr(39), chr(39) * 2)}';"
        for table, names in columns.items() for column in names.split()]
    op.execute("\n".join(statements))



def downgrade() -> None:
    s = op.get_context().version_table_schema
    op.execute(f'drop table if exists "{s}".users, "{s}".web_users, "{s}".groups, '
               f'"{s}".group_members, "{s}".locations, "{s}".location_types, '
               f'"{s}".location_ancestors')
