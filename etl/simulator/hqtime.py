"""Time as HQ writes it and as its APIs parse it.

Internally the simulator keeps instants as integer microseconds since the Unix epoch (UTC): cheap
to generate, compare and format. Elasticsearch compares dates at millisecond precision, so the
query code works on `us // 1000`.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US_PER_MS = 1_000
US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND
PLACEHOLDER = "1900-01-01"  # what HQ's v0.5 resources print for a missing date

# The only shapes v0.5's `validate_date` accepts (corehq/apps/api/es.py).
V05_FORMATS = ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%MZ")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_US_PER_MINUTE = 60 * 1_000_000
_day_cache: dict[int, str] = {}
_minute_cache: dict[int, str] = {}  # epoch minute -> "YYYY-MM-DDTHH:MM:" (formatting is hot)
_minute_ms: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM" -> epoch ms (so is parsing)


def to_us(moment: datetime) -> int:
    """Aware or naive (taken as UTC) datetime -> epoch microseconds."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def _day(us: int) -> tuple[str, int]:
    days, rest = divmod(us, US_PER_DAY)
    text = _day_cache.get(days)
    if text is None:
        text = date.fromordinal(_EPOCH_ORDINAL + days).isoformat()
        _day_cache[days] = text
    return text, rest


def fmt_us(us: int) -> str:
    """`2024-05-01T10:15:33.456789Z`: how HQ writes server-side datetimes."""
    minute, rest = divmod(us, _US_PER_MINUTE)
    prefix = _minute_cache.get(minute)
    if prefix is None:
        day, in_day = _day(minute * _US_PER_MINUTE)
        hours, minutes = divmod(in_day // _US_PER_MINUTE, 60)
        prefix = _minute_cache[minute] = f"{day}T{hours:02d}:{minutes:02d}:"
    seconds, micro = divmod(rest, US_PER_SECOND)
    return f"{prefix}{seconds:02d}.{micro:06d}Z"


def fmt_us_naive(us: int) -> str:
    """`2024-05-01T10:15:33.456789` (form `metadata.timeStart`/`timeEnd`, some properties)."""
    return fmt_us(us)[:-1]


def fmt_seconds_z(us: int) -> str:
    """`2024-05-01T10:15:33Z` (older phone-side values)."""
    return fmt_us(us)[:19] + "Z"


def fmt_date(us: int) -> str:
    return _day(us)[0]


def parse_ms(value: object) -> int | None:
    """An HQ-emitted date string -> epoch milliseconds; None when missing or the placeholder."""
    if not isinstance(value, str) or not value or value.startswith("1900-01-01"):
        return None
    if len(value) == 27 and value[10] == "T" and value[26] == "Z" and value[19] == ".":
        base = _minute_ms.get(value[:16])
        if base is None:
            base = _minute_ms[value[:16]] = to_us(datetime.fromisoformat(value[:16])) // US_PER_MS
        try:
            return base + int(value[17:19]) * 1000 + int(value[20:23])
        except ValueError:
            return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return to_us(moment) // US_PER_MS


def parse_v05_bound(value: str) -> int:
    """A v0.5 `*_start`/`*_end` value -> epoch ms. Raises ValueError like HQ's `validate_date`."""
    for fmt in V05_FORMATS:
        try:
            moment = datetime.strptime(value, fmt)
        except ValueError:
            continue
        return to_us(moment) // US_PER_MS
    raise ValueError(f"Unknown date format: {value}")


def parse_v2_bound(value: str, qualifier: str) -> tuple[str, int]:
    """A Case API v2 `<field>.<qualifier>` value -> (operator, epoch ms).

    A bare date covers the whole day (`lte=2024-05-01` includes all of May 1st), so date-only
    bounds are rewritten onto day boundaries. Anything else may carry `Z` or an offset.
    """
    if _DATE_ONLY.match(value):
        start = to_us(datetime.strptime(value, "%Y-%m-%d")) // US_PER_MS
        next_day = start + 86_400_000
        return {"gte": ("gte", start), "gt": ("gte", next_day),
                "lte": ("lt", next_day), "lt": ("lt", start)}[qualifier]
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"Cannot parse datetime '{value}'") from None
    return qualifier, to_us(moment) // US_PER_MS
