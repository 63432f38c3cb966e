"""Reference records (mobile workers, web users, groups, locations, location types) -> rows.

Each row ends with the record's raw JSON; the loader adds `deleted`/`deleted_at`/`synced_at`.
"""

from __future__ import annotations

import re

from etl import jsonutil
from etl.dates import parse_hq_datetime as dt
from etl.extract.streams import ACTIVE_FLAG
from etl.transform import Batch
from etl.transform.cases import _bool, _required_id, _text


USER_COLUMNS = ("domain", "user_id", "username", "first_name", "last_name", "email",
                "default_phone_number", "phone_numbers", "group_ids", "user_data",
                "primary_location_id", "location_ids", "is_active", "last_modified", "raw")
WEB_USER_COLUMNS = ("domain", "user_id", "username", "first_name", "last_name", "email", "role",
                    "is_admin", "permissions", "user_data", "primary_location_id",
                    "location_ids", "is_active", "last_modified", "raw")
GROUP_COLUMNS = ("domain", "group_id", "name", "case_sharing", "reporting", "metadata", "raw")
GROUP_MEMBER_COLUMNS = ("domain", "group_id", "user_id")
LOCATION_COLUMNS = ("domain", "location_id", "name", "site_code", "location_type_code",
                    "location_type_name", "parent_location_id", "latitude", "longitude",
                    "location_data", "last_modified", "raw")
LOCATION_TYPE_COLUMNS = ("domain", "location_type_id", "name", "code", "parent_type_id",
                         "administrative", "shares_cases", "view_descendants", "raw")


def _texts(value: object) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [str(v) for v in value if v not in (None, "")]
    return []


def _object(value: object) -> str:
    return jsonutil.dumps(value if isinstance(value, dict) else {})


def _number(value: object) -> str | None:
    text = _text(value)
    try:
        return str(float(text)) if text is not None else None
    except ValueError:
        return None


def _raw(record: dict) -> str:
    return jsonutil.dumps({k: v for k, v in record.items() if k != ACTIVE_FLAG})


def transform_user(record: dict, domain: str, batch: Batch) -> None:
    user_id = _required_id(record, "id", "user_id")
    batch.add("users", (
        domain, user_id, _text(record.get("username")), _text(record.get("first_name")),
        _text(record.get("last_name")), _text(record.get("email")),
        _text(record.get("default_phone_number")), _texts(record.get("phone_numbers")),
        _texts(record.get("groups")), _object(record.get("user_data")),
        _text(record.get("primary_location")), _texts(record.get("locations")),
        bool(record.get(ACTIVE_FLAG, True)), dt(record.get("last_modified")), _raw(record)))


def transform_web_user(record: dict, domain: str, batch: Batch) -> None:
    user_id = _required_id(record, "id", "user_id")
    batch.add("web_users", (
        domain, user_id, _text(record.get("username")), _text(record.get("first_name")),
        _text(record.get("last_name")), _text(record.get("email")), _text(record.get("role")),
        _bool(record.get("is_admin")), _object(record.get("permissions")),
        _object(record.get("user_data")), _text(record.get("primary_location_id")),
        _texts(record.get("assigned_location_ids")),
        _bool(record.get("is_active_in_domain", True)), dt(record.get("last_modified")),
        _raw(record)))


def transform_group(record: dict, domain: str, batch: Batch) -> None:
    group_id = _required_id(record, "id", "group_id")
    members = _texts(record.get("users"))
    batch.add("groups", (domain, group_id, _text(record.get("name")),
                         _bool(record.get("case_sharing")), _bool(record.get("reporting")),
                         _object(record.get("metadata")), _raw(record)))
    for user_id in dict.fromkeys(members):
        batch.add("group_members", (domain, group_id, user_id))


def transform_location(record: dict, domain: str, batch: Batch) -> None:
    location_id = _required_id(record, "location_id", "id")
    batch.add("locations", (
        domain, location_id, _text(record.get("name")), _text(record.get("site_code")),
        _text(record.get("location_type_code")), _text(record.get("location_type_name")),
        _text(record.get("parent_location_id")), _number(record.get("latitude")),
        _number(record.get("longitude")), _object(record.get("location_data")),
        dt(record.get("last_modified")), _raw(record)))


_LAST_ID = re.compile(r"/([^/]+)/?$")


def _uri_id(value: object) -> str | None:
    """A tastypie resource URI's id ('http://…/location_type/349/' -> '349')."""
    match = _LAST_ID.search(value) if isinstance(value, str) else None
    return match.group(1) if match else None


def transform_location_type(record: dict, domain: str, batch: Batch) -> None:
    type_id = _required_id(record, "id")
    batch.add("location_types", (
        domain, type_id, _text(record.get("name")), _text(record.get("code")),
        _uri_id(record.get("parent")), _bool(record.get("administrative")),
        _bool(record.get("shares_cases")), _bool(record.get("view_descendants")), _raw(record)))
