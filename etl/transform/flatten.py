"""Flatten a form submission into relational pieces: question values, repeat items, case blocks.

HQ renders a form's XML as JSON: attributes as `@name`, element text with attributes as `#text`,
groups as nested objects, and a repeat group as a *list* when it has several items but as a
single *object* when it has one. A path known to be a repeat (from the app's questions, or once
seen as a list) is therefore always read as a repeat, so both shapes land the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from etl import jsonutil

CASE_ACTIONS = ("create", "update", "close", "index")


@dataclass
class Item:
    """One row: the form itself (key '') or one repeat item (key '0', '0.2' for nested)."""

    key: str
    parent_key: str | None
    position: int
    values: dict[str, str | None] = field(default_factory=dict)  # absolute question path -> text
    cleaned: dict[str, str] | None = None  # `values` as the BI columns hold them, if made ahead


@dataclass
class FlatForm:
    root: Item
    repeats: dict[str, list[Item]] = field(default_factory=dict)  # absolute repeat path -> items
    case_blocks: list[dict] = field(default_factory=list)


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return jsonutil.dumps(value)


def _is_case_block(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, dict) and "@case_id" in v for v in value)
    return isinstance(value, dict) and "@case_id" in value


def flatten_form(form: dict, repeat_paths: set[str] | frozenset[str] = frozenset()) -> FlatForm:
    flat = FlatForm(root=Item("", None, 0))
    _walk(form, "", flat.root, flat, repeat_paths, top=True)
    return flat


def _walk(node: dict, prefix: str, item: Item, flat: FlatForm,
          repeat_paths: set[str] | frozenset[str], top: bool = False) -> None:
    """`prefix`: the path of `node` followed by "/" ("" at the top)."""
    values = item.values
    for key, value in node.items():
        if key[:1] in ("@", "#") or (top and key == "meta"):
            continue
        if key == "case" and _is_case_block(value):
            flat.case_blocks.extend(value if isinstance(value, list) else [value])
            continue
        joined = prefix + key
        repeat = joined in repeat_paths
        if type(value) is str and not repeat:  # most questions
            values[joined] = value
            continue
        is_list = isinstance(value, list)
        is_dict = not is_list and isinstance(value, dict)
        if repeat and not (is_dict or is_list):
            continue  # a repeat with no items
        if is_list or (repeat and is_dict):
            items = flat.repeats.setdefault(joined, [])
            for position, entry in enumerate(value if is_list else [value]):
                row = Item(f"{item.key}.{position}" if item.key else str(position),
                           item.key, position)
                items.append(row)
                if isinstance(entry, dict):
                    _walk(entry, joined + "/", row, flat, repeat_paths)
                else:
                    row.values[joined] = as_text(entry)
            continue
        if is_dict:
            if "#text" in value:
                values[joined] = as_text(value["#text"])
            elif value:
                _walk(value, joined + "/", item, flat, repeat_paths)
            else:
                values[joined] = None  # an empty element: a question left blank
            continue
        values[joined] = as_text(value)


def case_actions(blocks: list[dict]) -> list[tuple[int, str, str, str | None, dict, Any]]:
    """(position, action, case_id, case_type, properties, date_modified) per block and action."""
    rows = []
    for position, block in enumerate(blocks):
        case_id = str(block.get("@case_id") or "")
        create = block.get("create") if isinstance(block.get("create"), dict) else {}
        case_type = create.get("case_type")
        if isinstance(case_type, dict):  # an element with attributes: its text
            case_type = case_type.get("#text")
        case_type = as_text(case_type)
        for action in CASE_ACTIONS:
            if action not in block:
                continue
            body = block[action]
            if action == "index" and isinstance(body, dict):
                properties = {
                    ident: ({"case_id": ref.get("#text"), "case_type": ref.get("@case_type"),
                             "relationship": ref.get("@relationship", "child")}
                            if isinstance(ref, dict) else {"case_id": ref})
                    for ident, ref in body.items()
                }
            else:
                properties = body if isinstance(body, dict) else {}
            rows.append((position, action, case_id, case_type, properties,
                         block.get("@date_modified")))
    return rows
