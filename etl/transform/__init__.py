"""Transformers: HQ JSON records -> rows for the warehouse tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from etl.transform.clean import Cleaner
from etl import jsonutil


@dataclass
class Reject:
    record_id: str | None
    reason: str
    raw: str  # the record as ASCII-escaped JSON


@dataclass
class Batch:
    """A page's rows per table, the records that could not be used, and what was cleaned."""

    rows: dict[str, list[tuple]] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)
    cleaned_values: int = 0
    records: int = 0
    # By id, what the BI tables are flattened from: a case's properties, a form's record.
    sources: dict[str, dict] = field(default_factory=dict)
    # By form id, flattened a page ahead: (the repeat paths used, the flattened form, its
    # form_case_actions rows).
    flats: dict[str, tuple[frozenset[str], Any, list]] = field(default_factory=dict)
    # By case id, made a page ahead: its BI values, cleaned, and all its paths when some are
    # blank (bi.case_values).
    case_values: dict[str, tuple[dict, tuple]] = field(default_factory=dict)
    # The page's BI writes, made ahead from a snapshot of the catalog (bi.Prepared), if any.
    bi_writes: Any = None

    def add(self, table: str, row: tuple) -> None:
        self.rows.setdefault(table, []).append(row)


RecordTransform = Callable[[dict, str, Batch], None]


def transform_page(records: list[Any], domain: str, transform: RecordTransform,
                   needs_cleaning: bool, id_key: str) -> Batch:
    """Apply `transform` to each record; a record that fails is rejected, never dropped."""
    batch = Batch(records=len(records))
    cleaner = Cleaner() if needs_cleaning else None
    for record in records:
        if not isinstance(record, dict):
            batch.rejects.append(Reject(None, f"record is a {type(record).__name__}, not an object",
                                        jsonutil.dumps_raw(record)))
            continue
        clean = cleaner(record) if cleaner else record
        try:
            transform(clean, domain, batch)
        except Exception as exc:  # noqa: BLE001 - any bad record goes to the dead letters
            record_id = record.get(id_key) or record.get("id")
            batch.rejects.append(Reject(str(record_id) if record_id else None,
                                        f"{type(exc).__name__}: {exc}", jsonutil.dumps_raw(record)))
    if cleaner:
        batch.cleaned_values = cleaner.changed
    return batch
