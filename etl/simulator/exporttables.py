"""Forms as couchexport's tables (couchexport/export.py and writers.py, the legacy export).

Each form is one row of table `#`: `id` (its row number in this export, "0", "1", ...), one
column per question path under the form's `form` data (`form.<group>.<question>`, groups
flattened with dots, `form.@name`, `form.meta.instanceID`, `form.case.@case_id`, ...), then
`received_on` and `_id` (the form id). Each repeat group is a child table, titled
`#.form.<repeat>.#` (a repeat inside it: `#.form.<repeat>.#.<inner>.#`), whose rows are the
repeat's items: `id` "<parent row id>.<item index>" ("3.0", "3.1", nested "3.1.0"), then the
items' question paths (`form.<repeat>.<question>`). A node is a repeat where it is a list in any
of the forms exported, or where the app defines a repeat (so a repeat answered once, which the
form JSON holds as an object, is still a table). Columns are the union over the forms exported,
sorted by path; every value is a string ("" when a form lacks the question). Headers go through
couchexport's `UniqueHeaderGenerator` (longer than `max_column_size`: cut from the start; a
repeat, compared case-insensitively, gets 1, 2, ... appended); titles are cleaned like
`ExportWriter.add_table` does. Tables without rows are left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from etl.simulator import appdef

ROOT = "#"
DEFAULT_MAX_COLUMN_SIZE = 2000
MAX_TABLE_NAME_SIZE = 500  # ExportWriter.max_table_name_size
Path = tuple[str, ...]


@dataclass
class _Table:
    title: str
    rows: list[tuple[str, str, dict[Path, str]]] = field(default_factory=list)
    # (form id, row id within the form: "" for the form itself, "0", "1.0", ...; cells)
    columns: dict[Path, None] = field(default_factory=dict)
    order: Path = ()  # the repeat's path, for sorting tables


@dataclass(frozen=True)
class Export:
    """The flattened forms: tables in output order, each with its unique headers."""

    tables: list[tuple[str, list[str], list[tuple[str, str, list[str]]]]]
    # (title, headers, [(form id, row id within the form, values after the id column)])

    def as_json(self) -> dict[str, dict[str, list]]:
        """`JsonExportWriter`'s object: {title: {"headers": [...], "rows": [[...], ...]}}, row
        ids numbered within this export."""
        numbers: dict[str, int] = {}
        out = {}
        for title, headers, rows in self.tables:
            body = []
            for form_id, local, values in rows:
                number = numbers.setdefault(form_id, len(numbers))
                body.append([f"{number}.{local}" if local else str(number), *values])
            out[title] = {"headers": headers, "rows": body}
        return out

    def view(self) -> dict[str, dict[Any, dict[str, str]]]:
        """{title: {key: {header: value}}} without the `id` column: table `#` keyed by form id,
        child tables by (form id, row id within the form), e.g. (id, "0"), (id, "1.0")."""
        out: dict[str, dict[Any, dict[str, str]]] = {}
        for title, headers, rows in self.tables:
            table = out[title] = {}
            for form_id, local, values in rows:
                table[form_id if not local else (form_id, local)] = dict(zip(headers[1:],
                                                                             values))
        return out


def repeat_paths(xmlns: str) -> set[Path]:
    """Where the app that defines `xmlns` has repeats, as paths under the form JSON."""
    out: set[Path] = set()

    def walk(nodes: Iterable[appdef.Node], prefix: Path) -> None:
        for node in nodes:
            if isinstance(node, appdef.Repeat):
                out.add(prefix + (node.name,))
                walk(node.children, prefix + (node.name,))
            elif isinstance(node, appdef.Group):
                walk(node.children, prefix + (node.name,))

    for fdef in appdef.FORMS.values():
        if fdef.xmlns == xmlns:
            walk(fdef.children, ("form",))
    return out


def _text(value: Any) -> str:
    # couchexport's fit_to_schema: a falsy scalar is "", anything else its str().
    if not value:
        return ""
    return value if isinstance(value, str) else str(value)


def _lists(node: Any, path: Path, out: set[Path]) -> None:
    if isinstance(node, list):
        out.add(path)
        for item in node:
            _lists(item, path, out)
    elif isinstance(node, dict):
        for key, value in node.items():
            _lists(value, path + (str(key),), out)


def flatten(forms: Iterable[dict], repeats: Iterable[Path] = (),
            max_column_size: int = DEFAULT_MAX_COLUMN_SIZE) -> Export:
    """`forms` (v0.5 form JSON, in export order) as couchexport tables."""
    forms = list(forms)
    repeats = set(repeats)
    for doc in forms:
        _lists({"form": doc.get("form")}, (), repeats)
    tables: dict[str, _Table] = {ROOT: _Table(ROOT)}

    def emit(node: Any, path: Path, base: Path, table: _Table, form_id: str, local: str,
             cells: dict[Path, str]) -> None:
        if path in repeats and path != base:
            title = f"{table.title}.{'.'.join(path[len(base):])}.#"
            child = tables.setdefault(title, _Table(title, order=path))
            items = node if isinstance(node, list) else [node]
            for n, item in enumerate(i for i in items if i is not None):
                row_id = f"{local}.{n}" if local else str(n)
                row: dict[Path, str] = {}
                child.rows.append((form_id, row_id, row))
                emit(item, path, path, child, form_id, row_id, row)
                child.columns.update(dict.fromkeys(row))
            return
        if isinstance(node, dict):
            for key, value in node.items():
                emit(value, path + (str(key),), base, table, form_id, local, cells)
        else:
            cells[path] = _text(node)

    root = tables[ROOT]
    for doc in forms:
        form_id = str(doc.get("id") or "")
        cells: dict[Path, str] = {}
        emit(doc.get("form") or {}, ("form",), (), root, form_id, "", cells)
        root.columns.update(dict.fromkeys(cells))
        cells[("received_on",)] = _text(doc.get("received_on"))
        cells[("_id",)] = form_id
        root.rows.append((form_id, "", cells))
    out = []
    names = _UniqueHeaders(MAX_TABLE_NAME_SIZE)
    ordered = [root] + sorted((t for t in tables.values() if t is not root and t.rows),
                              key=lambda t: t.order)
    for table in ordered:
        columns = sorted(table.columns)
        if table is root:
            columns += [("received_on",), ("_id",)]
        unique = _UniqueHeaders(max_column_size)
        headers = [unique.next("id")] + [unique.next(".".join(c)) for c in columns]
        rows = [(form_id, local, [cells.get(c, "") for c in columns])
                for form_id, local, cells in table.rows]
        out.append((names.next(_clean_title(table.title)), headers, rows))
    return Export(out)


def _clean_title(name: str) -> str:
    return re.sub(r"[\n]", "", re.sub(r"[\[\\?*/:\]]", "-", name))


class _UniqueHeaders:
    """couchexport's `UniqueHeaderGenerator`."""

    def __init__(self, max_size: int | None):
        self.used: set[str] = set()
        self.max_size = max_size or DEFAULT_MAX_COLUMN_SIZE

    def next(self, header: str) -> str:
        if len(header) > self.max_size:
            header = header[-self.max_size:]  # the end says more than the start
        candidate, counter = header, 1
        while candidate.lower() in self.used:
            suffix = str(counter)
            candidate = f"{header}{suffix}"
            if len(candidate) > self.max_size:
                candidate = f"{header[-(self.max_size - len(suffix)):]}{suffix}"
            counter += 1
        self.used.add(candidate.lower())
        return candidate
