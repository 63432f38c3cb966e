"""JSON encoding for jsonb columns, in one place so a faster codec can slot in."""

from __future__ import annotations

import json
from typing import Any

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def dumps(value: Any) -> str:
    return _encoder.encode(value)


def dumps_raw(value: Any) -> str:
    """ASCII-escaped JSON: safe in a text column even when the value holds NUL or surrogates."""
    return json.dumps(value, ensure_ascii=True, default=str)
