"""Turn HQ names (case properties, question paths, case types, form names) into identifiers.

A PostgreSQL identifier is at most 63 bytes and, to be usable by a BI user without quoting,
lower-case ASCII letters, digits and underscores, not starting with a digit and not a reserved
word. HQ names can be anything: spaces, dots, dashes, unicode, SQL keywords, 100+ bytes, and two
names can become the same identifier. `identifier()` is deterministic; `NameAllocator` makes it
unique within a table, adding a short hash of the original name where two names collide or a
name must be shortened. The mapping is recorded in the catalog and never changes afterwards.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_BYTES = 63
HASH_CHARS = 8

# PostgreSQL's reserved key words (and those that cannot be column names), lower-case.
RESERVED = frozenset("""
all analyse analyze and any array as asc asymmetric authorization binary both case cast check
collate collation column concurrently constraint create cross current_catalog current_date
current_role current_schema current_time current_timestamp current_user default deferrable desc
distinct do else end except false fetch for foreign freeze from full grant group having ilike in
initially inner intersect into is isnull join lateral leading left like limit localtime
localtimestamp natural not notnull null offset on only or order outer overlaps placing primary
references returning right select session_user similar some symmetric system_user table tablesample
then to trailing true union unique user using variadic verbose when where window with
""".split())

_NOT_WORD = re.compile(r"[^a-z0-9_]+")


def short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]


def readable(name: str) -> str:
    """Lower-case ASCII words joined by underscores ('Âge du patient' -> 'age_du_patient')."""
    ascii_text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return _NOT_WORD.sub("_", ascii_text.lower()).strip("_")


def _fit(base: str, original: str, force_hash: bool) -> str:
    if not force_hash and len(base) <= MAX_BYTES:
        return base
    suffix = "_" + short_hash(original)
    return base[: MAX_BYTES - len(suffix)].rstrip("_") + suffix


def identifier(name: str, prefix: str = "", *, force_hash: bool = False) -> str:
    """The preferred identifier for `name`: deterministic and always valid, maybe not unique."""
    base = readable(name)
    if not base:  # nothing ASCII survives (e.g. '名字'): the catalog keeps the real name
        base, force_hash = "u", True
    if prefix:
        base = prefix + base
    elif base[0].isdigit():
        base = "_" + base
    elif base in RESERVED:
        base = base + "_"
    return _fit(base, name, force_hash)


class NameAllocator:
    """Unique identifiers within one namespace (a table's columns, or the schema's tables)."""

    def __init__(self, taken: dict[str, str] | None = None, reserved: set[str] | frozenset = frozenset()):
        self.owner: dict[str, str] = dict(taken or {})  # identifier -> the original name
        self.by_name: dict[str, str] = {v: k for k, v in self.owner.items()}
        self.reserved = set(reserved)

    def allocate(self, name: str, prefix: str = "", *, readable_as: str | None = None) -> str:
        """The identifier owned by `name`, allocating one if new.

        `readable_as` overrides how the name reads (e.g. a question path 'grp/q' as 'grp__q');
        uniqueness and the hash still come from `name` itself.
        """
        if name in self.by_name:
            return self.by_name[name]
        shown = readable_as if readable_as is not None else name
        candidate = _with_original(identifier(shown, prefix), shown, name)
        if candidate in self.owner or candidate in self.reserved:
            candidate = _with_original(identifier(shown, prefix, force_hash=True), shown, name)
        counter = 1
        while candidate in self.owner or candidate in self.reserved:  # a hash collision, in theory
            counter += 1
            candidate = identifier(f"{shown}\x00{counter}", prefix, force_hash=True)
        self.owner[candidate] = name
        self.by_name[name] = candidate
        return candidate

    def release(self, identifier_: str) -> None:
        """Forget an allocation that was rolled back."""
        name = self.owner.pop(identifier_, None)
        if name is not None:
            self.by_name.pop(name, None)


def _with_original(candidate: str, shown: str, name: str) -> str:
    # The hash suffix must identify the original name, not just how it reads.
    if shown == name or not candidate.endswith("_" + short_hash(shown)):
        return candidate
    return candidate[: -HASH_CHARS] + short_hash(name)


def path_identifier_base(segments: list[str]) -> str:
    """'group', 'question' -> 'group__question': groups joined by a double underscore. A
    segment with no ASCII at all reads as `u_<hash>`, as a case property of that name does."""
    return "__".join(readable(s) or f"u_{short_hash(s)}" for s in segments)
