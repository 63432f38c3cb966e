"""Case records (Case API v0.5 or v2) -> `cases` and `case_indices` rows."""

from __future__ import annotations

from collections import namedtuple

from etl import jsonutil
from etl.dates import parse_hq_datetime as dt
from etl.transform import Batch

CASE_COLUMNS = (
    "domain", "case_id", "case_type", "case_name", "owner_id", "external_id", "user_id",
    "opened_by", "closed", "closed_by", "date_opened", "date_modified", "date_closed",
    "server_date_modified", "server_date_opened", "indexed_on", "properties", "xform_ids",
)
CASE_INDEX_COLUMNS = (
    "domain", "case_id", "identifier", "referenced_id", "referenced_type", "relationship",
)
# Rows travel with their column names: COPY takes them as tuples, the BI step reads by name.
CaseRow = namedtuple("CaseRow", CASE_COLUMNS)
CaseIndexRow = namedtuple("CaseIndexRow", CASE_INDEX_COLUMNS)
SPECIAL_PROPERTIES = ("case_name", "case_type", "external_id", "owner_id", "date_opened")


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _required_id(record: dict, *keys: str) -> str:
    for key in keys:
        value = record.get(key)
        if value:
            return str(value)
    raise ValueError(f"record has no {' or '.join(keys)}")


def _object(record: dict, key: str) -> dict:
    """An optional JSON object field: {} when missing or null, an error when something else."""
    value = record.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{key!r} is a {type(value).__name__}, not an object")
    return value


def transform_case(record: dict, domain: str, batch: Batch) -> None:
    case_id = _required_id(record, "case_id", "id")
    properties = _object(record, "properties")
    if "case_type" in record and "case_type" not in properties:
        # Case API v2: the special properties are top-level; keep `properties` as v0.5 has it.
        properties = dict(properties)
        for key in SPECIAL_PROPERTIES:
            properties[key] = record.get(key)
        date_modified = record.get("last_modified")
        server_date_modified = record.get("server_last_modified")
    else:
        date_modified = record.get("date_modified")
        server_date_modified = record.get("server_date_modified")
    xform_ids = record.get("xform_ids") or []
    if not isinstance(xform_ids, list):
        xform_ids = [xform_ids]
    case_row = CaseRow(
        domain,
        case_id,
        _text(properties.get("case_type")),
        _text(properties.get("case_name")),
        _text(properties.get("owner_id")),
        _text(properties.get("external_id")),
        _text(record.get("user_id")),
        _text(record.get("opened_by")),
        _bool(record.get("closed")),
        _text(record.get("closed_by")),
        dt(properties.get("date_opened")),
        dt(date_modified),
        dt(record.get("date_closed")),
        dt(server_date_modified),
        dt(record.get("server_date_opened")),
        dt(record.get("indexed_on")),
        jsonutil.dumps(properties),
        [str(x) for x in xform_ids if x is not None],
    )
    indices = _object(record, "indices")
    index_rows = []
    for identifier, index in indices.items():
        if not isinstance(index, dict):
            raise ValueError(f"index {identifier!r} is not an object")
        index_rows.append(CaseIndexRow(
            domain,
            case_id,
            identifier,
            _text(index.get("case_id")),
            _text(index.get("case_type")),
            _text(index.get("relationship")) or "child",
        ))
    # Add only once the whole record transformed: a rejected record leaves no partial rows.
    batch.add("cases", case_row)
    batch.sources[case_id] = properties
    for row in index_rows:
        batch.add("case_indices", row)
