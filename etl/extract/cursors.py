"""Cursor kinds: where a stream's next read starts, one type per kind of progress HQ has.

A cursor is saved in `sync_checkpoints` (as JSON, its kind beside it) in the same transaction as
the page it follows, and read back at the start of the next run. Every kind has the same
interface: `parse(saved)` reads a checkpoint (None: nothing read yet), `to_json()` writes
one, `describe()` says where a run starts, `position()` what a summary line shows.

Keys a kind does not know (the HQ server, a backfill's window) are kept in `extra` and written
back unchanged, so a checkpoint never loses what another part of the pipeline put there.

Kinds (JSON keys in brackets):
  IndexedOnCursor  v0.5 case/form lists: a watermark on `indexed_on`, and inside a millisecond
                   holding more than a page, the position by its secondary keys [indexed_on,
                   tie; a backfill adds until]
  KeysetCursor     Case API v2: HQ's own `next` URL mid-run, the watermark between runs
                   [indexed_on, next]
  SnapshotCursor   lists HQ gives only in full: when the last complete listing ended
                   [synced_at, records, marked_deleted]
  ExportTokenCursor  the legacy Export API's `X-CommCareHQ-Export-Token` [export_token]
  RestoreCursor    a mobile worker's OTA restore `restore_id` [restore_id]
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar

from etl.dates import format_iso, parse_hq_datetime

C = TypeVar("C", bound="Cursor")


@dataclass
class Cursor:
    kind: ClassVar[str]
    keys: ClassVar[tuple[str, ...]] = ()  # the JSON keys this kind owns
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)

    @classmethod
    def parse(cls: type[C], saved: dict | None) -> C:
        saved = dict(saved or {})
        saved.pop("kind", None)
        own = {k: saved.pop(k) for k in cls.keys if k in saved}
        return cls._from(own, saved)

    @classmethod
    def _from(cls: type[C], own: dict, extra: dict) -> C:
        raise NotImplementedError

    def _own(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        own = {k: v for k, v in self._own().items() if v is not None}
        return {**self.extra, **own}

    def with_extra(self: C, extra: dict[str, Any]) -> C:
        return replace(self, extra={**self.extra, **extra})

    def describe(self) -> str:
        return "the beginning"

    def position(self) -> str | None:
        return None


def _moment(value: Any) -> datetime | None:
    return parse_hq_datetime(value) if value else None


def _iso(value: datetime | None) -> str | None:
    return format_iso(value) if value is not None else None


@dataclass
class IndexedOnCursor(Cursor):
    """`indexed_on` (inclusive) to start from; `tie`: inside that millisecond, one position per
    secondary key (an empty list re-reads the whole millisecond); `until`: a backfill's end."""

    kind = "indexed_on"
    keys = ("indexed_on", "tie", "tie_offset", "until")
    indexed_on: datetime | None = None
    tie: list[dict] | None = None
    until: datetime | None = None

    @classmethod
    def _from(cls, own: dict, extra: dict) -> "IndexedOnCursor":
        tie = own.get("tie")
        if tie is None and "tie_offset" in own:
            tie = []  # an offset saved by an older version: read that millisecond again whole
        return cls(_moment(own.get("indexed_on")), list(tie) if tie is not None else None,
                   _moment(own.get("until")), extra=extra)

    def _own(self) -> dict[str, Any]:
        return {"indexed_on": _iso(self.indexed_on), "tie": self.tie, "until": _iso(self.until)}

    def to_json(self) -> dict[str, Any]:
        # A watermark is always written, null included: "read from the beginning" is a state.
        return {**super().to_json(), "indexed_on": _iso(self.indexed_on)}

    def looked_back(self, lookback: timedelta) -> "IndexedOnCursor":
        """Start `lookback` earlier (not inside a tie: that position is exact)."""
        if self.indexed_on is None or not lookback or self.tie is not None:
            return self
        return replace(self, indexed_on=self.indexed_on - lookback)

    def describe(self) -> str:
        parts = [f"indexed_on {self.indexed_on.isoformat()}" if self.indexed_on
                 else "the beginning"]
        if self.tie is not None:
            parts.append("(inside that millisecond)")
        if self.until:
            parts.append(f"to {self.until.isoformat()}")
        return " ".join(parts)

    def position(self) -> str | None:
        return f"indexed_on={_iso(self.indexed_on)}" if self.indexed_on else None


@dataclass
class KeysetCursor(IndexedOnCursor):
    """Case API v2: mid-run, HQ's `next` URL (its keyset on indexed_on and case_id); between
    runs, the `indexed_on` watermark. Reads a v0.5 checkpoint as its watermark, and the other
    way round, so a switch of CASE_API goes on where the other left off."""

    kind = "keyset"
    keys = ("indexed_on", "next", "until", "tie", "tie_offset")
    next: str | None = None

    @classmethod
    def _from(cls, own: dict, extra: dict) -> "KeysetCursor":
        return cls(_moment(own.get("indexed_on")), None, _moment(own.get("until")),
                   own.get("next"), extra=extra)

    def _own(self) -> dict[str, Any]:
        return {"indexed_on": _iso(self.indexed_on), "next": self.next, "until": _iso(self.until)}

    def looked_back(self, lookback: timedelta) -> "KeysetCursor":
        return self if self.next else super().looked_back(lookback)

    def describe(self) -> str:
        return "the saved HQ cursor" if self.next else super().describe()


@dataclass
class SnapshotCursor(Cursor):
    """A full listing: `reading` mid-run (a crash forgets the partial read), else when the last
    complete one ended and what it held."""

    kind = "snapshot"
    keys = ("synced_at", "records", "marked_deleted", "snapshot", "apps")
    synced_at: datetime | None = None
    records: int | None = None
    marked_deleted: int | None = None
    reading: bool = False

    @classmethod
    def _from(cls, own: dict, extra: dict) -> "SnapshotCursor":
        return cls(_moment(own.get("synced_at")), own.get("records", own.get("apps")),
                   own.get("marked_deleted"), own.get("snapshot") == "reading", extra=extra)

    def _own(self) -> dict[str, Any]:
        return {"synced_at": _iso(self.synced_at), "records": self.records,
                "marked_deleted": self.marked_deleted,
                "snapshot": "reading" if self.reading else None}

    def describe(self) -> str:
        return "a full listing"

    def position(self) -> str | None:
        return f"listed at {_iso(self.synced_at)}" if self.synced_at else None


@dataclass
class ExportTokenCursor(Cursor):
    """The Export API's token: sent back as `previous_export`, HQ answers with what is newer."""

    kind = "export_token"
    keys = ("export_token",)
    token: str | None = None

    @classmethod
    def _from(cls, own: dict, extra: dict) -> "ExportTokenCursor":
        return cls(own.get("export_token"), extra=extra)

    def _own(self) -> dict[str, Any]:
        return {"export_token": self.token}

    def describe(self) -> str:
        return "the saved export token" if self.token else "a full export"

    def position(self) -> str | None:
        return f"export token {self.token}" if self.token else None


@dataclass
class RestoreCursor(Cursor):
    """A mobile worker's sync token: sent as `since`, HQ answers with what changed since."""

    kind = "restore_id"
    keys = ("restore_id",)
    restore_id: str | None = None

    @classmethod
    def _from(cls, own: dict, extra: dict) -> "RestoreCursor":
        return cls(own.get("restore_id"), extra=extra)

    def _own(self) -> dict[str, Any]:
        return {"restore_id": self.restore_id}

    def describe(self) -> str:
        return "the saved restore_id" if self.restore_id else "a full restore"

    def position(self) -> str | None:
        return f"restore_id {self.restore_id}" if self.restore_id else None


KINDS: dict[str, type[Cursor]] = {k.kind: k for k in (
    IndexedOnCursor, KeysetCursor, SnapshotCursor, ExportTokenCursor, RestoreCursor)}
