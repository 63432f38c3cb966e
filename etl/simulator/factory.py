"""Builds consistent case and form documents, in HQ's v0.5 JSON shapes.

A form's case blocks and the cases it touches are built together: a registration form creates
cases, a follow-up updates (sometimes closes or re-indexes) one, and the case's `xform_ids`,
`user_id`, dates and properties follow from the form. Timestamps are µs integers; the caller
decides `indexed_on` (the search index's clock, not the form's).
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Any

from etl.simulator import appdef, vocab
from etl.simulator.appdef import FormCtx, FormDef
from etl.simulator.hqtime import US_PER_SECOND, fmt_us
from etl.simulator.records import CASE_XMLNS
from etl.simulator.vocab import pick, ri

JR_XMLNS = "http://openrosa.org/jr/xforms"
REGISTRATION = {"household": "hh_reg", "patient": "pt_reg", "contact": "ct_reg"}
FOLLOW_UP = {"household": "hh_visit", "patient": "pt_visit", "contact": "ct_followup"}
COMMCARE_VERSION = "2.53.1"


@dataclass(frozen=True)
class User:
    id: str
    username: str
    device: str


@dataclass(frozen=True)
class Index:
    identifier: str
    case_id: str
    case_type: str
    relationship: str = "child"  # or "extension"


class DocFactory:
    """Deterministic for a given domain and rng state."""

    def __init__(self, domain: str, rng: random.Random, awkward: bool = False):
        self.domain = domain
        self.rng = rng
        self.awkward = awkward
        self.users = [User(self.hex_id(), f"chw{i + 1}", f"35{ri(rng, 10**12, 10**13 - 1)}")
                      for i in range(8)]
        self.users.append(User(self.hex_id(), "supervisor", "WebAppsLogin"))
        # Case-sharing groups / locations that own some cases instead of a user.
        self.owners = [self.hex_id() for _ in range(4)]
        self.counters = {"household": 0, "patient": 0, "contact": 0}
        self.surrogate_done = self.big_done = False

    def fork(self, seed_text: str) -> "DocFactory":
        """Same users and counters, its own random stream (for the simulator's later changes,
        so they never disturb the dataset's own determinism)."""
        other = copy.copy(self)
        other.rng = random.Random(seed_text)
        other.counters = dict(self.counters)
        return other

    # --- ids ---------------------------------------------------------------------------------

    def hex_id(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def uuid(self) -> str:
        n = self.rng.getrandbits(128)
        n = (n & ~(0xF << 76) & ~(0x3 << 62)) | (4 << 76) | (0x2 << 62)  # version 4, RFC variant
        h = f"{n:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def field_worker(self) -> User:
        return pick(self.rng, self.users[:-1])

    # --- cases -------------------------------------------------------------------------------

    def new_properties(self, case_type: str, t: int) -> dict[str, Any]:
        rng = self.rng
        props: dict[str, Any] = {}
        for name, (p, value) in vocab.CASE_PROPS.get(case_type, vocab.PATIENT_PROPS).items():
            if p >= 1.0 or rng.random() < p:
                props[name] = value(rng, t)
        if case_type == "patient" and not self.big_done:
            props["notes"] = vocab.BIG_VALUE  # every dataset has a 10 KB value
            self.big_done = True
        if self.awkward and case_type == "patient":
            if not self.surrogate_done or rng.random() < 0.02:
                props["nickname"] = vocab.LONE_SURROGATE_VALUE
                self.surrogate_done = True
            if rng.random() < 0.15:
                props[vocab.NUL_PROPERTY_NAME] = "x"
            if rng.random() < 0.15:
                props["notes"] = vocab.NUL_VALUE
        return props

    def case_name(self, case_type: str, props: dict[str, Any]) -> str:
        if case_type == "household":
            return f"{vocab.surname(self.rng, 0)} household"
        if case_type == "contact":
            return vocab.full_name(self.rng, 0)
        return f"{props.get('first_name') or vocab.given(self.rng, 0)} " \
               f"{props.get('last_name') or vocab.surname(self.rng, 0)}"

    def external_id(self, case_type: str) -> str | None:
        self.counters[case_type] = self.counters.get(case_type, 0) + 1
        prefix = {"household": "HH", "patient": "P", "contact": "C"}.get(case_type, "X")
        if case_type == "contact" and self.rng.random() < 0.6:
            return None
        return f"{prefix}-{self.counters[case_type]:06d}"

    def new_case(self, case_type: str, user: User, t_phone: int, t_server: int, form_id: str,
                 indices: list[Index] = (), owner_id: str = "",
                 props: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """(case doc, its `create` case block). An empty `owner_id` falls back to the user."""
        props = self.new_properties(case_type, t_phone) if props is None else props
        name = self.case_name(case_type, props)
        external_id = self.external_id(case_type)
        phone_time, server_time = fmt_us(t_phone), fmt_us(t_server)
        doc = {
            "case_id": None, "id": None, "domain": self.domain,
            "closed": False, "closed_by": None, "date_closed": None,
            "date_modified": phone_time, "server_date_modified": server_time,
            "server_date_opened": server_time, "indexed_on": None,
            "indices": {i.identifier: {"case_id": i.case_id, "case_type": i.case_type,
                                       "relationship": i.relationship} for i in indices},
            "opened_by": user.id, "user_id": user.id,
            "properties": {**props, "case_name": name, "case_type": case_type,
                           "date_opened": phone_time, "external_id": external_id,
                           "owner_id": owner_id or user.id},
            "xform_ids": [form_id],
        }
        case_id = self.uuid()
        doc["case_id"] = doc["id"] = case_id
        rng = self.rng
        if rng.random() < 0.01:
            doc["date_modified"] = "1900-01-01"  # no phone date: HQ's placeholder
        if rng.random() < 0.01:
            doc["server_date_opened"] = "1900-01-01"
        if self.awkward and rng.random() < 0.1:
            doc["extra_top_level_field"] = {"surprise": True}
        update = dict(props)
        if external_id:
            update["external_id"] = external_id
        block = self.block(case_id, t_phone, user,
                           create={"case_type": case_type, "case_name": name, "owner_id": owner_id},
                           update=update, indices=indices)
        return doc, block

    def block(self, case_id: str, t_phone: int, user: User, *, create: dict | None = None,
              update: dict | None = None, indices: list[Index] = (), close: bool = False) -> dict:
        block: dict[str, Any] = {"@case_id": case_id, "@date_modified": fmt_us(t_phone),
                                 "@user_id": user.id, "@xmlns": CASE_XMLNS}
        if create is not None:
            block["create"] = create
        if update:
            # XML has no null: an unset value is an empty element.
            block["update"] = {k: "" if v is None else v for k, v in update.items()}
        if indices:
            index = {}
            for i in indices:
                ref = {"@case_type": i.case_type, "#text": i.case_id}
                if i.relationship == "extension":
                    ref["@relationship"] = "extension"
                index[i.identifier] = ref
            block["index"] = index
        if close:
            block["close"] = ""
        return block

    def visit_properties(self, doc: dict, t: int) -> dict[str, Any]:
        """What a routine follow-up changes: a few visit properties and the visit counter."""
        rng = self.rng
        case_type = doc["properties"].get("case_type")
        options = vocab.VISIT_PROPS.get(case_type, vocab.VISIT_PROPS["patient"])
        names = [name for name in options if rng.random() < 0.5] or [next(iter(options))]
        update = {name: options[name](rng, t) for name in names}
        try:
            count = int(doc["properties"].get("visit.count") or 0) + 1
        except ValueError:
            count = 1
        update["visit.count"] = str(count)
        if count == 2:
            update["2nd_visit"] = fmt_us(t)[:10]
        return update

    def apply(self, doc: dict, form_id: str, user: User, t_phone: int, t_server: int,
              update: dict[str, Any], close: bool = False, indices: list[Index] = ()) -> None:
        """What HQ's case processing does to the case when the form's block is applied."""
        doc["properties"].update(update)
        phone_time = fmt_us(t_phone)
        # `modified_on` only moves forward (a phone whose clock lags does not set it back).
        if doc["date_modified"] == "1900-01-01" or phone_time > doc["date_modified"]:
            doc["date_modified"] = phone_time
        doc["server_date_modified"] = fmt_us(t_server)
        doc["user_id"] = user.id
        doc["xform_ids"].append(form_id)
        for i in indices:
            if not i.case_id:  # an empty referenced id removes the index
                doc["indices"].pop(i.identifier, None)
                continue
            doc["indices"][i.identifier] = {"case_id": i.case_id, "case_type": i.case_type,
                                            "relationship": i.relationship}
        if close:
            doc["closed"] = True
            doc["closed_by"] = user.id
            doc["date_closed"] = fmt_us(t_phone)

    # --- forms -------------------------------------------------------------------------------

    def form(self, key: str, form_id: str, user: User, t_phone: int, t_received: int,
             ctx: FormCtx, case_ids: tuple[str, ...] = ()) -> dict:
        """A form doc (v0.5 shape, `indexed_on` left to the caller)."""
        rng = self.rng
        fdef: FormDef = appdef.FORMS[key]
        app = appdef.APP_OF_FORM[key]
        build_id, version, _, _ = app.builds[-1] if rng.random() < 0.7 else pick(rng, app.builds)
        data = appdef.render(fdef, ctx)
        if self.awkward and rng.random() < 0.05:
            data["bad\u0000question"] = "x"
        t_start = t_phone - ri(rng, 30, 1_800) * US_PER_SECOND
        app_version = (f'CommCare Android, version "{COMMCARE_VERSION}"(464694). App v{version}. '
                       f"CommCare Version {COMMCARE_VERSION}. Build 464694, built on: 2023-05-01")
        location = vocab.gps(rng, t_phone) if rng.random() < 0.3 else None
        time_end, time_start = fmt_us(t_phone), fmt_us(t_start)
        meta: dict[str, Any] = {
            "@xmlns": JR_XMLNS, "appVersion": app_version, "app_build_version": version,
            "commcare_version": COMMCARE_VERSION, "deviceID": user.device, "geo_point": None,
            "instanceID": form_id, "timeEnd": time_end, "timeStart": time_start,
            "userID": user.id, "username": user.username,
        }
        if location:
            meta["location"] = {"#text": location, "@xmlns": "http://commcarehq.org/xforms"}
        form = {"#type": "data", "@name": fdef.name, "@uiVersion": "1", "@version": str(version),
                "@xmlns": fdef.xmlns, **data, "meta": meta}
        attachments = {"form.xml": self._attachment(form_id, "form.xml", "text/xml",
                                                    ri(rng, 1_500, 9_000))}
        for image in appdef.form_images(fdef, data):
            attachments[image] = self._attachment(form_id, image, "image/jpeg",
                                                  ri(rng, 20_000, 900_000))
        received = fmt_us(t_received)
        doc = {
            "id": form_id, "domain": self.domain, "form": form, "type": "data",
            "version": str(version), "uiversion": "1",
            "metadata": {
                "appVersion": app_version, "app_build_version": version,
                "commcare_version": COMMCARE_VERSION, "deprecatedID": None,
                "deviceID": user.device, "doc_type": "Metadata", "geo_point": None,
                "instanceID": form_id, "location": location, "timeEnd": time_end[:-1],
                "timeStart": time_start[:-1], "userID": user.id, "username": user.username,
            },
            "received_on": received, "server_modified_on": received, "edited_on": None,
            "edited_by_user_id": None, "indexed_on": None, "app_id": app.app_id,
            "build_id": build_id, "initial_processing_complete": True, "problem": None,
            "archived": False, "attachments": attachments,
            "is_phone_submission": user.device != "WebAppsLogin",
            "submit_ip": f"10.{ri(rng, 0, 255)}.{ri(rng, 0, 255)}.{ri(rng, 1, 254)}",
        }
        if self.awkward and rng.random() < 0.1:
            doc["extra_form_field"] = "surprise"
        doc["_case_ids"] = case_ids  # taken by `Record` (saves walking the form for them)
        return doc

    def _attachment(self, form_id: str, name: str, content_type: str, length: int) -> dict:
        # Relative, as in HQ's stored example; resolves against whatever base URL is in use.
        return {"content_type": content_type, "length": length,
                "url": f"/a/{self.domain}/api/form/attachment/{form_id}/{name}"}

    def registration(self, case_type: str, user: User, t_phone: int, t_received: int,
                     indices: list[Index] = (), owner_id: str = "",
                     members: list[tuple[list[Index], dict | None]] = (),
                     props: dict[str, Any] | None = None) -> tuple[dict, list[dict]]:
        """A registration form and the case(s) it creates: the main case (with `props`, or
        generated properties), plus one case per household member, created by case blocks
        inside the `members` repeat."""
        form_id = self.uuid()
        main, main_block = self.new_case(case_type, user, t_phone, t_received, form_id,
                                         indices, owner_id, props)
        cases = [main]
        member_ctxs = []
        for member_indices, member_props in members:
            member_indices = [Index(i.identifier, main["case_id"], case_type, i.relationship)
                              if i.case_id == "" else i for i in member_indices]
            doc, block = self.new_case("patient", user, t_phone, t_received, form_id,
                                       member_indices, owner_id, member_props)
            cases.append(doc)
            member_ctxs.append(FormCtx(self.rng, t_phone, doc["properties"], block,
                                       awkward=self.awkward))
        key = REGISTRATION.get(case_type, "pt_reg")
        ctx = FormCtx(self.rng, t_phone, main["properties"], main_block, member_ctxs, self.awkward)
        form = self.form(key, form_id, user, t_phone, t_received, ctx,
                         tuple(c["case_id"] for c in cases))
        return form, cases

    def follow_up(self, docs: list[dict], user: User, t_phone: int, t_received: int,
                  updates: list[dict[str, Any]], close: list[bool] | None = None,
                  indices: list[list[Index]] | None = None) -> dict:
        """One follow-up form touching `docs` (one case block each; `case` is a list when
        several), applying each block to its case doc."""
        form_id = self.uuid()
        close = close or [False] * len(docs)
        indices = indices or [[] for _ in docs]
        blocks = []
        for doc, update, closing, index in zip(docs, updates, close, indices):
            blocks.append(self.block(doc["case_id"], t_phone, user, update=update,
                                     indices=index, close=closing))
            self.apply(doc, form_id, user, t_phone, t_received, update, closing, index)
        case_type = docs[0]["properties"].get("case_type")
        ctx = FormCtx(self.rng, t_phone, docs[0]["properties"],
                      blocks[0] if len(blocks) == 1 else blocks, awkward=self.awkward)
        return self.form(FOLLOW_UP.get(case_type, "pt_visit"), form_id, user, t_phone,
                         t_received, ctx, tuple(d["case_id"] for d in docs))

    def survey(self, user: User, t_phone: int, t_received: int) -> dict:
        """A form that touches no case."""
        ctx = FormCtx(self.rng, t_phone, awkward=self.awkward)
        return self.form("survey", self.uuid(), user, t_phone, t_received, ctx)
