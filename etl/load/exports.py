"""Export API tables: `export_<name>` (one row per form, one column per header of the export)
and `export_<name>__<repeat>` (one row per repeat item, keyed by the form and the item's row
id below it). Named through the BI catalog and its allocator: a header too long, or one
PostgreSQL cannot take as a name, gets a column name that fits, and `catalog_columns` keeps
HQ's header as `original_path`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etl.extract.exports import child_path
from etl.load import bi
from etl.transform import Batch
from etl.transform.naming import path_identifier_base

if TYPE_CHECKING:
    from etl.load.postgres import Loader

HEADER = "export_header"


def _column(header: str) -> str:
    parts = header.split(".")
    if parts[0] == "form" and len(parts) > 1:
        parts = parts[1:]
    return path_identifier_base([p for p in parts if p not in ("#", "")] or [header])


def write_export_tables(loader: "Loader", domain: str, batch: Batch, _: Any) -> None:
    records = batch.rows.get("export_records", [])
    if not records:
        return
    catalog = loader.catalog
    catalog.ensure_loaded()
    writes: list[bi.Write] = []
    by_export: dict[str, dict[str, dict]] = {}
    for (record,) in records:
        by_export.setdefault(record["export"], {})[record["form_id"]] = record  # last one wins
    for name, forms in by_export.items():
        info = catalog.table("export", name, readable_as=f"export_{name}",
                             label=f"Export API: {name}")
        form_ids = list(forms)
        headers: dict[str, None] = {}
        for record in forms.values():
            headers.update(dict.fromkeys(record["values"]))
        placed = catalog.columns(info, HEADER, name, ((h, _column(h)) for h in headers))
        rows = [((domain, form_id), _texts(r["values"])) for form_id, r in forms.items()]
        writes += bi.table_writes(info, form_ids, "form_id", ["domain", "form_id"], rows, placed)
        titles = {t for r in forms.values() for t in r["children"]}
        titles |= {source.split("#", 1)[1] for kind, source in catalog.tables
                   if kind == "export_table" and source.startswith(f"{name}#")}
        for title in sorted(titles):
            child = catalog.table("export_table", f"{name}#{title}",
                                  readable_as=f"{info.name}__{child_path(title)}",
                                  parent=info.name)
            items = [(form_id, item) for form_id, r in forms.items()
                     for item in r["children"].get(title, [])]
            headers = {}
            for _, item in items:
                headers.update(dict.fromkeys(item["values"]))
            placed = catalog.columns(child, HEADER, name, ((h, _column(h)) for h in headers))
            rows = [((domain, form_id, item["row_id"], item["parent_row_id"]),
                     _texts(item["values"])) for form_id, item in items]
            writes += bi.table_writes(child, form_ids, "form_id",
                                       ["domain", "form_id", "row_id", "parent_row_id"], rows,
                                       placed)
    bi.apply_writes(catalog, domain, writes, batch.rejects)


def _texts(values: dict) -> dict[str, str | None]:
    return {h: None if v is None else str(v) for h, v in values.items()}


def transform_export(record: dict, domain: str, batch: Batch) -> None:
    if not record.get("form_id"):
        raise ValueError("export row has no form id")
    batch.add("export_records", (record,))
