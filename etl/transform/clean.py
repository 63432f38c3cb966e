"""Make values storable in PostgreSQL, counting every change.

Postgres text and jsonb cannot hold the NUL character, and UTF-8 cannot encode a lone UTF-16
surrogate (which JSON's \\ud800 escapes can produce). We drop NULs, replace lone surrogates with
U+FFFD, and report how many values changed, so nothing fails and nothing changes silently.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


def clean_text(text: str) -> tuple[str, bool]:
    changed = False
    if "\x00" in text:
        text = text.replace("\x00", "")
        changed = True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # json.loads already joined every valid pair, so any surrogate left is a lone one.
        text = "".join(REPLACEMENT if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
        changed = True
    return text, changed


class Cleaner:
    """Walks parsed JSON and returns a storable copy; `changed` counts altered strings."""

    def __init__(self) -> None:
        self.changed = 0

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            cleaned, changed = clean_text(value)
            self.changed += changed
            return cleaned
        if isinstance(value, dict):
            return {self(k): self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        return value
