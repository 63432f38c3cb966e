"""Dates as HQ emits them, and as its v0.5 API accepts them.

HQ emits `2024-05-01T10:15:33.456789Z`, `...:33Z`, `...:33` (no zone), `2024-05-01`, and the
placeholder `1900-01-01` for "missing". Its v0.5 filters reject a trailing `Z` or an offset with
HTTP 400, so we send naive UTC with microseconds.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

UTC = timezone.utc
_PLACEHOLDER_YEAR = 1900
ONE_MS = timedelta(milliseconds=1)


def parse_hq_datetime(value: object) -> datetime | None:
    """Return an aware UTC datetime, or None for empty values, placeholders and garbage."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            try:
                parsed = datetime.strptime(text, "%Y-%m-%dT%H:%MZ")  # HQ's legacy shape
            except ValueError:
                return None
    else:
        return None
    if parsed.year <= _PLACEHOLDER_YEAR:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00-05:00: past the last UTC datetime
        return None


def format_v05(moment: datetime) -> str:
    """Format for a v0.5 `*_start`/`*_end` filter: naive UTC, always with microseconds."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")


def format_iso(moment: datetime) -> str:
    """Format with an explicit UTC offset (for checkpoints, logs and the v2 API)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def truncate_ms(moment: datetime) -> datetime:
    """HQ's search index compares dates at millisecond precision."""
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def parse_user_date(text: str) -> datetime:
    """Parse a date given on the command line (`2024-05-01`, `2024-05-01T10:00`, with or without Z)."""
    parsed = parse_hq_datetime(text)
    if parsed is None:
        raise ValueError(f"not a date: {text!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)")
    return parsed
