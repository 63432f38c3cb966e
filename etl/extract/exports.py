"""The legacy Export API (`/a/<domain>/reports/export/`): replay an export HQ already has, one
form xmlns (`export_tag`) at a time, incrementally by its export token.

Each run sends the saved token as `previous_export`; HQ answers with the forms saved since, in
couchexport's JSON (`{table: {"headers": [...], "rows": [[...]]}}`: the form table `#` and one
per repeat, `#.form.<repeat>.#`), and a new token in `X-CommCareHQ-Export-Token`. A 302 means
nothing new. An unknown or lost token gets a full export, which the upsert absorbs.

Row ids (`id`) are couchexport's numbering within one answer ("3", and "3.1" for the second
item of a repeat of the fourth form): they say which form a child row belongs to, but change
from one answer to the next, so rows are keyed by the form id (`_id`) and the part of the
row id below the form ("1", "1.0").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

from etl.errors import ConfigError, MalformedResponse
from etl.extract.cursors import ExportTokenCursor
from etl.extract.streams import Page, Stream
from etl.transform.naming import readable

FORM_TABLE = "#"
ROW_ID = "id"
FORM_ID_HEADERS = ("_id", "form.meta.instanceID", "form.@id")


@dataclass(frozen=True)
class ExportSpec:
    """One export to replay: the table name it lands in (`export_<name>`) and its xmlns."""

    name: str
    xmlns: str

    @classmethod
    def parse(cls, text: str) -> "ExportSpec":
        """`xmlns` or `name=xmlns` (an xmlns holds no `=` before its scheme's `://`)."""
        text = text.strip()
        name, sep, xmlns = text.partition("=")
        if not sep or "://" in name or "/" in name:
            name, xmlns = "", text
        xmlns = xmlns.strip().strip('"')
        if not xmlns:
            raise ConfigError(f"EXPORTS: {text!r} names no form xmlns; give the xmlns, or "
                              f"name=xmlns")
        name = readable(name.strip() or xmlns.rstrip("/").rsplit("/", 1)[-1]) or "export"
        return cls(name, xmlns)


def parse_exports(items: list[str]) -> list[ExportSpec]:
    specs = [ExportSpec.parse(item) for item in items]
    seen: dict[str, str] = {}
    for spec in specs:
        if seen.get(spec.name, spec.xmlns) != spec.xmlns:
            raise ConfigError(f"EXPORTS: two exports would both land in export_{spec.name}; "
                              f"name them apart with name=xmlns")
        seen[spec.name] = spec.xmlns
    return specs


@dataclass
class ExportStream(Stream):
    name = "exports"
    path = "reports/export/"
    primary_key = "form_id"
    cursor_kind = ExportTokenCursor

    export: ExportSpec | None = None

    def pages(self, cursor: ExportTokenCursor) -> Iterator[Page]:
        assert self.export is not None
        params: dict[str, Any] = {"export_tag": json.dumps(self.export.xmlns), "format": "json"}
        if cursor.token:
            params["previous_export"] = cursor.token
        answer = self.client.get_export(f"/a/{self.domain}/{self.path}", params)
        self._made_request()
        if answer.tables is None:  # 302: nothing new since the token
            yield Page([], ExportTokenCursor(cursor.token), url=answer.url)
            return
        records = export_records(self.export.name, answer.tables, answer.url)
        yield Page(records, ExportTokenCursor(answer.token or cursor.token),
                   answer.needs_cleaning, answer.url, total=len(records))


def export_records(name: str, tables: dict, url: str = "") -> list[dict]:
    """One record per form: {"export", "form_id", "values": {header: value}, "children":
    {table title: [{"row_id", "parent_row_id", "values"}]}}."""
    form = tables.get(FORM_TABLE)
    if form is None and tables:
        form = next(iter(tables.values()))  # a custom title for the form table
    headers, rows = _table(form or {"headers": [], "rows": []}, FORM_TABLE, url)
    if ROW_ID not in headers:
        raise MalformedResponse(f"the export at {url} has no 'id' column in its form table",
                                url=url)
    at_id = headers.index(ROW_ID)
    at_form = next((headers.index(h) for h in FORM_ID_HEADERS if h in headers), None)
    if at_form is None:
        raise MalformedResponse(f"the export at {url} has none of {FORM_ID_HEADERS} in its form "
                                f"table: rows cannot be told apart between runs", url=url)
    by_number: dict[str, dict] = {}
    records = []
    for row in rows:
        values = {h: v for h, v in zip(headers, row) if h != ROW_ID}
        record = {"export": name, "form_id": str(row[at_form]), "values": values,
                  "children": {}}
        by_number[str(row[at_id])] = record
        records.append(record)
    for title, table in tables.items():
        if table is form:
            continue
        headers, rows = _table(table, title, url)
        if ROW_ID not in headers:
            continue
        at_id = headers.index(ROW_ID)
        for row in rows:
            number, _, below = str(row[at_id]).partition(".")
            parent = by_number.get(number)
            if parent is None or not below:
                continue
            parent["children"].setdefault(title, []).append({
                "row_id": below, "parent_row_id": below.rpartition(".")[0] or None,
                "values": {h: v for h, v in zip(headers, row) if h != ROW_ID}})
    return records


def _table(table: Any, title: str, url: str) -> tuple[list[str], list[list]]:
    if not isinstance(table, dict) or not isinstance(table.get("headers"), list) \
            or not isinstance(table.get("rows"), list):
        raise MalformedResponse(f"the export at {url}: table {title!r} lacks headers and rows",
                                url=url)
    return [str(h) for h in table["headers"]], [r for r in table["rows"] if isinstance(r, list)]


def child_path(title: str) -> str:
    """`#.form.members.#` -> `members`; `#.form.a.#.b.#` -> `a__b`."""
    parts = [p for p in title.replace("#", " ").split(".") if p.strip()]
    if parts and parts[0] == "form":
        parts = parts[1:]
    return "__".join(readable(p) for p in parts if readable(p)) or "rows"
