"""Form records (Form API v0.5) -> `forms` rows."""

from __future__ import annotations

from collections import namedtuple

from etl import jsonutil
from etl.dates import parse_hq_datetime as dt
from etl.transform import Batch
from etl.transform.cases import _bool, _object, _required_id, _text

FORM_COLUMNS = (
    "domain", "form_id", "xmlns", "form_name", "app_id", "build_id", "received_on",
    "server_modified_on", "indexed_on", "user_id", "username", "time_start", "time_end",
    "archived", "form", "attachments",
)
FormRow = namedtuple("FormRow", FORM_COLUMNS)


def transform_form(record: dict, domain: str, batch: Batch) -> None:
    form_id = _required_id(record, "id", "form_id")
    form = _object(record, "form")
    meta = form.get("meta")
    if not isinstance(meta, dict):
        meta = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    attachments = record.get("attachments")
    batch.sources[form_id] = record
    batch.add("forms", FormRow(
        domain,
        form_id,
        _text(form.get("@xmlns")),
        _text(form.get("@name")),
        _text(record.get("app_id")),
        _text(record.get("build_id")),
        dt(record.get("received_on")),
        dt(record.get("server_modified_on")),
        dt(record.get("indexed_on")),
        _text(meta.get("userID")),
        _text(meta.get("username")),
        dt(meta.get("timeStart")),
        dt(meta.get("timeEnd")),
        _bool(record.get("archived")),
        jsonutil.dumps(form),
        jsonutil.dumps(attachments if isinstance(attachments, dict) else {}),
    ))
