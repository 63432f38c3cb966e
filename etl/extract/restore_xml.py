"""Read an OTA restore (an OpenRosaResponse) as a stream of its top-level blocks.

A restore can be hundreds of MB: the XML is parsed incrementally and each block is dropped
from the tree once handed on, so memory stays flat whatever the size of the caseload.
"""

from __future__ import annotations

from typing import IO, Any, Iterator
from xml.etree.ElementTree import Element, ParseError, XMLPullParser

__all__ = ["ParseError", "blocks", "element_to_json"]

CASE_NS = "http://commcarehq.org/case/transaction/v2"
_CHUNK = 1 << 16


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(element: Element | None) -> str | None:
    if element is None:
        return None
    return (element.text or "").strip()


def element_to_json(element: Element) -> Any:
    """A fixture item as JSON: attributes as `@name`, children by tag (repeated tags become a
    list), text alone as a string."""
    children = list(element)
    if not children and not element.attrib:
        return (element.text or "").strip()
    value: dict[str, Any] = {f"@{_local(k)}": v for k, v in element.attrib.items()}
    groups: dict[str, list[Any]] = {}
    for child in children:
        groups.setdefault(_local(child.tag), []).append(element_to_json(child))
    for key, items in groups.items():
        value[key] = items[0] if len(items) == 1 else items
    text = (element.text or "").strip()
    if text:
        value["#text"] = text
    return value


def case_block(element: Element) -> dict[str, Any]:
    """A CaseXML v2 block: its attributes and actions, in document order."""
    block: dict[str, Any] = {"kind": "case", "case_id": element.get("case_id"),
                             "user_id": element.get("user_id") or None,
                             "date_modified": element.get("date_modified") or None,
                             "create": None, "update": {}, "index": {}, "close": False}
    for action in element:
        name = _local(action.tag)
        if name == "create":
            block["create"] = {_local(c.tag): _text(c) for c in action}
        elif name == "update":
            block["update"].update({_local(c.tag): _text(c) for c in action})
        elif name == "index":
            for index in action:
                block["index"][_local(index.tag)] = {
                    "case_id": _text(index) or None,  # empty: the index is removed
                    "case_type": index.get("case_type") or None,
                    "relationship": index.get("relationship") or "child"}
        elif name == "close":
            block["close"] = True
    return block


def registration(element: Element) -> dict[str, Any]:
    user: dict[str, Any] = {"kind": "registration", "user_data": {}}
    for child in element:
        name = _local(child.tag)
        if name == "user_data":
            user["user_data"] = {d.get("key"): _text(d) for d in child if d.get("key")}
        elif name != "password":  # a hash, but still nothing a warehouse should keep
            user[name] = _text(child)
    return user


def fixture(element: Element) -> dict[str, Any]:
    """A fixture: its id and its items (the children of its one top element, or the top
    element's children themselves when there are several)."""
    tops = list(element)
    items: list[Any] = []
    container = None
    if len(tops) == 1:
        container = _local(tops[0].tag)
        items = [{"tag": _local(c.tag), "value": element_to_json(c)} for c in tops[0]]
    else:
        items = [{"tag": _local(c.tag), "value": element_to_json(c)} for c in tops]
    return {"kind": "fixture", "id": element.get("id"), "user_id": element.get("user_id"),
            "container": container, "items": items}


def blocks(stream: IO[bytes]) -> Iterator[dict[str, Any]]:
    """Every top-level block of the restore in document order: `sync` (restore_id),
    `registration`, `fixture`, `case`, and `message`."""
    parser = XMLPullParser(events=("start", "end"))
    depth = 0
    root: Element | None = None
    while True:
        chunk = stream.read(_CHUNK)
        if chunk:
            parser.feed(chunk)
        else:
            parser.close()
        for event, element in parser.read_events():
            if event == "start":
                depth += 1
                if depth == 1:
                    root = element
                continue
            depth -= 1
            if depth != 1:
                continue
            name = _local(element.tag)
            if name == "Sync":
                yield {"kind": "sync", "restore_id": _text(element.find(
                    "{http://commcarehq.org/sync}restore_id")) or _text(element.find("restore_id"))}
            elif name == "Registration":
                yield registration(element)
            elif name == "fixture":
                yield fixture(element)
            elif name == "case":
                yield case_block(element)
            elif name == "message":
                yield {"kind": "message", "nature": element.get("nature"),
                       "text": _text(element)}
            if root is not None:
                root.remove(element)  # done with it: memory stays flat
        if not chunk:
            return
