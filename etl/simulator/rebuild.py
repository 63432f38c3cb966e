"""Rebuilding a case from its forms, as HQ does when a form that touched it is archived or
restored.

HQ connects `rebuild_form_cases` to the `xform_archived` and `xform_unarchived` signals
(casexml/apps/case/signals.py): every case the form touched is rebuilt by
`FormProcessorSQL.hard_rebuild_case`. Archiving revokes the form's case transactions; the
rebuild (`SqlCaseUpdateStrategy.rebuild_from_transactions`) resets the case (dynamic properties
emptied, name/type/owner/external id blank, open, no closer) and replays the case blocks of the
remaining non-revoked forms in order: create and update set properties, index adds or removes
indices (any index no block re-creates is dropped), close closes. `modified_on` is the newest
block date, `opened_on`/`opened_by`/`owner_id` fall back to the first block and its user when
no create set them ("edge case if form updates case before it's been created (or creation form
archived)"), and `server_modified_on` is the time of the rebuild. With no relevant forms left
the case is marked deleted, and the case pillow drops deleted cases from Elasticsearch, so the
case disappears from the APIs until a restore brings a form back.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

# Case blocks' known properties (casexml's KNOWN_PROPERTIES), under their v0.5 JSON names.
KNOWN = ("case_name", "case_type", "owner_id", "external_id", "date_opened")
# Update keys HQ never stores as dynamic properties (casexml const.RESTRICTED_PROPERTIES).
RESTRICTED = {"type", "closed", "date-opened", "doc_type", "_id", "_rev", "domain", "case_id",
              "user_id", "actions", "xform_ids", "indices"}


def case_blocks(node: Any) -> Iterator[dict]:
    """Every case block in a form's JSON, in document order (at the root or in repeats)."""
    if isinstance(node, list):
        for item in node:
            yield from case_blocks(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "case" and isinstance(value, (dict, list)):
                for block in value if isinstance(value, list) else [value]:
                    if isinstance(block, dict) and "@case_id" in block:
                        yield block
            elif isinstance(value, (dict, list)):
                yield from case_blocks(value)


def replay(case: dict, forms: Iterable[dict]) -> dict | None:
    """`case` (its v0.5 JSON) rebuilt from `forms` (v0.5 form JSON, non-archived, in order):
    the new JSON with `server_date_modified` and `indexed_on` left to the caller, or None when
    no form has a block for it (HQ marks it deleted)."""
    case_id = case["case_id"]
    state = _State()
    xform_ids: list[str] = []
    server_opened = None
    for form in forms:
        blocks = [b for b in case_blocks(form.get("form")) if b.get("@case_id") == case_id]
        if not blocks:
            continue
        xform_ids.append(form["id"])
        server_opened = server_opened or form.get("received_on")
        for block in blocks:
            state.apply(block)
    if not xform_ids:
        return None
    doc = dict(case)
    doc.update({
        "closed": state.closed, "closed_by": state.closed_by, "date_closed": state.closed_on,
        "date_modified": state.modified_on, "user_id": state.user_id,
        "opened_by": state.opened_by, "server_date_opened": server_opened,
        "indices": state.indices, "xform_ids": xform_ids,
        "properties": {**state.props, **state.known},
    })
    return doc


class _State:
    """What `rebuild_from_transactions` accumulates, starting from `_reset_case_state`."""

    def __init__(self) -> None:
        self.props: dict[str, Any] = {}
        self.known: dict[str, Any] = {"case_name": "", "case_type": "", "owner_id": "",
                                      "external_id": None, "date_opened": None}
        self.indices: dict[str, dict] = {}
        self.closed, self.closed_by, self.closed_on = False, "", None
        self.modified_on: str | None = None
        self.user_id: str | None = None
        self.opened_by: str | None = None

    def apply(self, block: dict) -> None:
        user, when = block.get("@user_id") or None, block.get("@date_modified")
        create, update = block.get("create"), block.get("update")
        if isinstance(create, dict):
            self._known(create)
        if isinstance(update, dict):
            self._known(update)
            for key, value in update.items():
                if key == "name":
                    self.known["case_name"] = value  # legacy: `name` in an update renames
                elif key not in KNOWN and key not in RESTRICTED:
                    self.props[key] = value
        if isinstance(block.get("index"), dict):
            self._index(block["index"])
        if "close" in block:
            self.closed, self.closed_by, self.closed_on = True, user or "", when
        if user:
            self.user_id = user
        if when and (self.modified_on is None or when > self.modified_on):
            self.modified_on = when
        if not self.known["date_opened"]:
            self.known["date_opened"] = when
        if not self.opened_by:
            self.opened_by = user
        if not self.known["owner_id"]:
            self.known["owner_id"] = user

    def _known(self, action: dict) -> None:
        for name in KNOWN:
            if action.get(name) is not None:
                self.known[name] = action[name]

    def _index(self, index: dict) -> None:
        for identifier, ref in index.items():
            if isinstance(ref, dict):
                target = ref.get("#text") or ""
                case_type = ref.get("@case_type") or ""
                relationship = ref.get("@relationship") or "child"
            else:
                target, case_type, relationship = str(ref or ""), "", "child"
            if not target:
                self.indices.pop(identifier, None)  # an empty id deletes the index
            else:
                self.indices[identifier] = {"case_id": target, "case_type": case_type,
                                            "relationship": relationship}
