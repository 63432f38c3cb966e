"""Reading an OTA restore the way a phone would, for the simulator's restore tests."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

RESPONSE = "{http://openrosa.org/http/response}"
SYNC = "{http://commcarehq.org/sync}"
REGISTRATION = "{http://openrosa.org/user/registration}"
CASE = "{http://commcarehq.org/case/transaction/v2}"


@dataclass
class Block:
    case_id: str
    user_id: str
    date_modified: str | None
    create: dict[str, str] | None
    update: dict[str, str] | None
    indices: dict[str, dict[str, str]]  # tag -> {case_id, case_type, relationship}
    close: bool


@dataclass
class Restore:
    root: ET.Element
    restore_id: str
    registration: ET.Element
    fixtures: list[ET.Element]
    blocks: list[Block] = field(default_factory=list)

    @property
    def cases(self) -> dict[str, Block]:
        return {b.case_id: b for b in self.blocks}


def _fields(element: ET.Element | None) -> dict[str, str] | None:
    if element is None:
        return None
    return {child.tag.replace(CASE, ""): child.text or "" for child in element}


def parse(body: bytes) -> Restore:
    root = ET.fromstring(body)
    assert root.tag == f"{RESPONSE}OpenRosaResponse"
    restore_id = root.find(f"{SYNC}Sync/{SYNC}restore_id").text
    registration = root.find(f"{REGISTRATION}Registration")
    fixtures = [e for e in root if e.tag in (f"{RESPONSE}fixture", f"{RESPONSE}schema")]
    out = Restore(root, restore_id, registration, fixtures)
    for case in root.findall(f"{CASE}case"):
        index = case.find(f"{CASE}index")
        indices = {}
        for ref in (index if index is not None else []):
            indices[ref.tag.replace(CASE, "")] = {
                "case_id": ref.text or "", "case_type": ref.get("case_type"),
                "relationship": ref.get("relationship") or "child"}
        out.blocks.append(Block(case.get("case_id"), case.get("user_id"),
                                case.get("date_modified"), _fields(case.find(f"{CASE}create")),
                                _fields(case.find(f"{CASE}update")), indices,
                                case.find(f"{CASE}close") is not None))
    return out


def view_of(block: Block) -> dict:
    """A created block as `HQSimulator.restore_caseload` describes the case."""
    assert block.create is not None and block.update is not None
    update = dict(block.update)
    external_id = update.pop("external_id", None)
    date_opened = update.pop("date_opened", None)
    return {"case_type": block.create["case_type"], "name": block.create["case_name"],
            "owner_id": block.create["owner_id"], "external_id": external_id,
            "date_opened": date_opened, "properties": update,
            "indices": {k: v for k, v in block.indices.items() if v["case_id"]}}
