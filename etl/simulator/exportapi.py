"""The legacy export API, `GET /a/<domain>/reports/export/` (couchexport's `export_data`,
docs/export_api.rst), and the export list page its "no data" redirect points to.

* Auth: a web login by Digest (realm "DJANGO") or Basic only; an `ApiKey` header, no header or
  a wrong password get 401 with the Digest and Basic challenges. The login must have access to
  the project (else 403, empty).
* `export_tag`: the form xmlns as a JSON string (`"http://openrosa.org/formdesigner/..."`,
  quotes included); anything else is a 400 saying so. `format=json` is served; the other
  documented formats (csv, xlsx, xls, html, raw), and no format at all (HQ's default, xlsx),
  are a 400 "format ... not supported by the simulator". `max_column_size` (default 2000)
  trims headers (exporttables.py); `include_errors` is accepted (the simulator keeps no
  erroneous submissions).
* The forms: the project's forms with that xmlns, not archived, by `received_on`. With
  `previous_export=<token>`, only those saved (submitted, edited, unarchived) after the export
  that issued the token; a token this project never issued for that xmlns means a full export.
* No row to send: 302 to `/a/<domain>/data/excel_export_data/`, no token. Otherwise 200
  `application/json`, `X-CommCareHQ-Export-Token: <32 hex>` (new each time), body
  `{"#": {"headers": [...], "rows": [...]}, "#.form.<repeat>.#": {...}}`.
* A body over the limit (`HQSimulator.set_export_limit`, default 10 MB, the documented cap):
  500 with HQ's HTML error page, and no token.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Mapping

from etl.simulator import appdef, auth, exporttables
from etl.simulator.api import HTML, Request, Response, Route, empty, error_page, unauthorized
from etl.simulator.digest import REALM, NonceBook
from etl.simulator.records import Record
from etl.simulator.store import Domain, Store

DEFAULT_LIMIT = 10_000_000
FORMATS = ("csv", "xlsx", "xls", "html", "json", "raw")
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Checkpoint:
    """What an export token stands for: that xmlns, as of that write sequence."""

    xmlns: str
    seq: int


def list_page_path(domain: str) -> str:
    return f"/a/{domain}/data/excel_export_data/"


def handle(store: Store, users: auth.Users, passwords: Mapping[str, str], nonces: NonceBook,
           request: Request, r: Route, max_bytes: int) -> tuple[Response, str | None]:
    if request.method not in ("GET", "HEAD"):
        return empty(405, Allow="GET"), None
    outcome = auth.check_password(request.authorization or "", request.method, request.uri,
                                  auth.web_password_of(users, passwords), nonces)
    user = outcome.username
    if user is None:
        return unauthorized(nonces, REALM, outcome.stale, basic=True), None
    if not auth.may_access(users, user, r.domain):
        return empty(403), user
    d = store.domains.get(r.domain)
    if d is None:
        return empty(404), user
    params = dict(request.pairs)
    try:
        xmlns, max_columns = _params(params)
    except ValueError as exc:
        return Response(400, f"{exc}\n".encode(), TEXT), user
    except _Crash:
        return error_page(500), user
    with store.lock:
        forms = _forms(d, xmlns, params.get("previous_export") or None)
        seq = store.seq  # every later save gets a higher sequence
    if not forms:
        path = list_page_path(r.domain)
        body = (f'<html><head><title>Redirecting</title></head><body>No new data. See '
                f'<a href="{path}">the exports</a>.</body></html>')
        return Response(302, body.encode(), HTML, [("Location", path)]), user
    tables = exporttables.flatten(forms, exporttables.repeat_paths(xmlns), max_columns)
    body = json.dumps(tables.as_json()).encode("ascii")
    if len(body) > max_bytes:
        return error_page(500), user
    token = uuid.uuid4().hex
    with store.lock:
        d.export_checkpoints[token] = Checkpoint(xmlns, seq)
    return Response(200, body, "application/json", [
        ("X-CommCareHQ-Export-Token", token),
        ("Content-Disposition", f'attachment; filename="{_filename(xmlns)}.json"')]), user


def _params(params: dict[str, str]) -> tuple[str, int]:
    tag = params.get("export_tag")
    if not tag:
        raise ValueError('export_tag is required: the form xmlns as a JSON string, in double '
                         'quotes (export_tag="http://openrosa.org/formdesigner/...")')
    try:
        xmlns = json.loads(tag)
    except ValueError:
        xmlns = None
    if not isinstance(xmlns, str):
        raise ValueError(f"export_tag must be a JSON string: the form xmlns in double quotes "
                         f'(export_tag="{tag.strip(chr(34))}"), not {tag}')
    fmt = params.get("format") or ""
    if fmt != "json":
        if not fmt:
            raise ValueError("format xlsx (HQ's default when no format is given) is not "
                             "supported by the simulator: ask for format=json")
        if fmt not in FORMATS:
            raise ValueError(f"Unsupported export format: {fmt}")
        raise ValueError(f"format {fmt} is not supported by the simulator: ask for format=json")
    size = params.get("max_column_size") or ""
    try:
        max_columns = int(size) if size else exporttables.DEFAULT_MAX_COLUMN_SIZE
    except ValueError:
        raise _Crash(size) from None
    if max_columns < 0:
        raise _Crash(size)
    return xmlns, max_columns or exporttables.DEFAULT_MAX_COLUMN_SIZE


class _Crash(Exception):
    """What HQ does not catch (`int()` of a bad `max_column_size`): a 500."""


def _forms(d: Domain, xmlns: str, token: str | None) -> list[dict]:
    """The forms to export, in order, as JSON."""
    checkpoint = d.export_checkpoints.get(token) if token else None
    if checkpoint is not None and checkpoint.xmlns != xmlns:
        checkpoint = None
    since = -1 if checkpoint is None else checkpoint.seq
    records = [rec for rec in d.forms.ordered
               if type(rec) is Record and rec.terms[0] == xmlns and not rec.archived
               and rec.seq > since]
    docs = [rec.doc(b"") for rec in records]
    order = sorted(range(len(docs)), key=lambda n: (str(docs[n].get("received_on") or ""), n))
    return [docs[n] for n in order]


def _filename(xmlns: str) -> str:
    name = next((f.name for f in appdef.FORMS.values() if f.xmlns == xmlns), "export")
    return "".join(c if c.isalnum() or c in " -_" else "_" for c in name)


def export_view(store: Store, domain: str, xmlns: str) -> dict[str, dict[Any, dict[str, str]]]:
    """What a full export of `xmlns` holds now (`exporttables.Export.view`)."""
    with store.lock:
        forms = _forms(store.domain(domain), xmlns, None)
    return exporttables.flatten(forms, exporttables.repeat_paths(xmlns)).view()


def list_page(store: Store, request: Request, r: Route) -> tuple[Response, str | None]:
    """The project's export list (an HTML page; the simulator serves it to anyone)."""
    if request.method not in ("GET", "HEAD"):
        return empty(405, Allow="GET"), None
    d = store.domains.get(r.domain)
    if d is None:
        return empty(404), None
    with store.lock:
        tags = sorted({rec.terms[0] for rec in d.forms.ordered
                       if type(rec) is Record and rec.terms[0]})
    rows = "".join(f"<li>{_escape(t)}</li>" for t in tags)
    page = (f"<!DOCTYPE html><html><head><title>Export Form Data :: CommCare HQ</title></head>"
            f"<body><h1>Export Form Data</h1><ul>{rows}</ul></body></html>")
    return Response(200, page.encode("utf-8"), HTML), None


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
