"""JSON in one place: orjson where it can (several times faster), the stdlib where it cannot.

orjson refuses a few things the stdlib accepts (integers beyond 64 bits, NaN in input, lone
surrogates); those fall back to the stdlib, so speed never costs a record.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(value: Any) -> str:
    """Compact JSON text for a jsonb column."""
    try:
        return orjson.dumps(value, default=str).decode()
    except (orjson.JSONEncodeError, TypeError):
        return _encoder.encode(_finite(value))


def _finite(value: Any) -> Any:
    # jsonb has no NaN or Infinity: store them as null rather than fail the page.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def dumps_raw(value: Any) -> str:
    """ASCII-escaped JSON: safe in a text column even when the value holds NUL or surrogates."""
    return json.dumps(value, ensure_ascii=True, default=str)
