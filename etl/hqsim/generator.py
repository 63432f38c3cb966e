"""A deterministic CommCare project: households, patients and contacts, the forms that made
them, and the app that describes those forms.

Shapes follow HQ's APIs (see shared/commcare-api.md): v0.5 case and form JSON, case blocks
inside forms (also inside repeat groups), repeats that are a list for several items, an object
for one and absent for none, and property names no database would choose.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

UTC = timezone.utc
CASE_XMLNS = "http://commcarehq.org/case/transaction/v2"
XMLNS_HOUSEHOLD = "http://openrosa.org/formdesigner/household-registration"
XMLNS_VISIT = "http://openrosa.org/formdesigner/patient-visit"
XMLNS_CONTACT = "http://openrosa.org/formdesigner/contact-registration"
XMLNS_PATIENT = "http://openrosa.org/formdesigner/patient-registration"
FORM_NAMES = {XMLNS_HOUSEHOLD: "Register Household", XMLNS_VISIT: "Patient Visit",
              XMLNS_CONTACT: "Register Contact", XMLNS_PATIENT: "Register Patient"}
LONG_NAME = "number_of_times_the_community_health_worker_visited_this_patient_during_the_last_quarter"
AWKWARD_PROPERTIES = [
    "first name", "First Name", "first_name", "Age", "age", "visit.count", "risk-level", "âge",
    "名字", "select", "order", "user", "2nd_visit", LONG_NAME, LONG_NAME + "_again",
]


def fmt(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hex_id(rng: random.Random) -> str:
    return uuid.UUID(int=rng.getrandbits(128), version=4).hex


@dataclass
class Dataset:
    """Everything one domain holds: v0.5-shaped case and form records, apps, users."""

    domain: str
    cases: dict[str, dict] = field(default_factory=dict)
    forms: dict[str, dict] = field(default_factory=dict)
    apps: list[dict] = field(default_factory=list)
    users: list[tuple[str, str]] = field(default_factory=list)  # (user_id, username)
    clock: datetime = datetime(2024, 1, 1, tzinfo=UTC)
    seed: int = 0
    awkward: bool = False
    rng: random.Random = field(default_factory=random.Random, repr=False)
    by_type: dict[str, list[str]] = field(default_factory=dict, repr=False)
    touched: list[str] = field(default_factory=list, repr=False)  # cases the last form changed
    awkward_count: int = field(default=0, repr=False)

    @classmethod
    def generate(cls, domain: str = "demo", seed: int = 0, n_cases: int = 300,
                 start: datetime = datetime(2024, 1, 1, tzinfo=UTC),
                 awkward: bool = False) -> "Dataset":
        ds = cls(domain=domain, clock=start, seed=seed, awkward=awkward,
                 rng=random.Random(f"{domain}:{seed}"))
        ds.users = [(hex_id(ds.rng), f"worker{i}@{domain}.commcarehq.org") for i in range(5)]
        ds.apps = [build_app(domain)]
        while len(ds.cases) < n_cases:
            kind = ds.rng.random()
            if kind < 0.35 or not ds._of_type("patient"):
                ds.register_household(max_members=min(4, n_cases - len(ds.cases) - 1))
            elif kind < 0.55:
                ds.register_contact()
            else:
                ds.visit(ds.rng.choice(ds._of_type("patient")))
        for _ in range(n_cases // 3):  # follow-up visits, some closing the case
            ds.visit(ds.rng.choice(ds._of_type("patient")))
        return ds

    # --- time and ids ---------------------------------------------------------------------

    def tick(self) -> datetime:
        # Field work: seconds to tens of minutes apart, with bursts a few ms apart, and now
        # and then two writes in one millisecond (natural ties).
        step = self.rng.choice((0, 1, 7, 45, 2_000, 30_000, 180_000, 1_200_000))
        self.clock += timedelta(milliseconds=step, microseconds=self.rng.randrange(1000))
        return self.clock

    def _of_type(self, case_type: str) -> list[str]:
        return self.by_type.get(case_type, [])

    def _user(self) -> tuple[str, str]:
        return self.rng.choice(self.users)

    # --- forms that make cases --------------------------------------------------------------

    def register_case(self, case_type: str = "patient", indexed_on: datetime | None = None) -> str:
        """One form that creates exactly one case of `case_type` (its last touched case)."""
        if case_type == "contact" and self._of_type("patient"):
            return self.register_contact(indexed_on)
        if case_type == "household":
            return self.register_household(max_members=0, indexed_on=indexed_on)
        user_id, username = self._user()
        case_id = hex_id(self.rng)
        name = self.rng.choice(["Hana", "Ike", "Jomo", "Kofi", "Lulu"])
        index = ({"parent": ("household", self.rng.choice(self._of_type("household")), None)}
                 if self._of_type("household") else None)
        form = {"patient_name": name, "dob": self._date_shape(),
                "case": self._block(case_id, user_id, create={
                    "case_type": case_type, "case_name": name, "owner_id": user_id},
                    update=self._patient_properties(name), index=index)}
        return self._submit(XMLNS_PATIENT, form, user_id, username, indexed_on)

    def register_household(self, max_members: int = 4, indexed_on: datetime | None = None) -> str:
        rng = self.rng
        user_id, username = self._user()
        household_id = hex_id(rng)
        n_members = rng.choice([0, 1, 1, 2, 3, 4])
        n_members = max(0, min(n_members, max_members))
        members, blocks = [], []
        for _ in range(n_members):
            patient_id = hex_id(rng)
            name = rng.choice(["Amina", "Bola", "Chen", "Dawit", "Esi", "Fatima", "Goli"])
            vaccinations = [{"vaccine": rng.choice(["bcg", "opv", "measles"]),
                             "vaccine_date": self._date_shape()} for _ in range(rng.choice([0, 1, 2, 3]))]
            member = {"member_name": name, "member_age": str(rng.randint(0, 90))}
            if vaccinations:
                member["vaccinations"] = vaccinations[0] if len(vaccinations) == 1 else vaccinations
            properties = self._patient_properties(name)
            member["case"] = self._block(patient_id, user_id, create={
                "case_type": "patient", "case_name": name, "owner_id": user_id},
                update=properties, index={"parent": ("household", household_id, None)})
            members.append(member)
        form = {
            "household_name": f"House {rng.randint(1, 9999)}",
            "address": {"village": rng.choice(["Kati", "Lumo", "Oyo"]),
                        "details": {"street name": f"{rng.randint(1, 99)} Main St", "landmark": ""}},
            "household_size": rng.choice([str(rng.randint(1, 12)), str(rng.randint(1, 12)), "many"]),
            "registration_date": self._date_shape(),
            "case": self._block(household_id, user_id, create={
                "case_type": "household", "case_name": f"Household {len(self.cases)}",
                "owner_id": user_id}, update={"village": "Kati", "hh_size": "4"}),
        }
        if members:
            form["members"] = members[0] if len(members) == 1 else members
        return self._submit(XMLNS_HOUSEHOLD, form, user_id, username, indexed_on)

    def register_contact(self, indexed_on: datetime | None = None) -> str:
        rng = self.rng
        user_id, username = self._user()
        patient_id = rng.choice(self._of_type("patient"))
        contact_id = hex_id(rng)
        properties = {"phone": f"+25{rng.randint(10**8, 10**9)}", "relation": "sibling"}
        form = {"contact_name": "Contact", "phone": properties["phone"],
                "case": self._block(contact_id, user_id, create={
                    "case_type": "contact", "case_name": f"Contact {len(self.cases)}",
                    "owner_id": user_id}, update=properties,
                    index={"host": ("patient", patient_id, "extension")})}
        return self._submit(XMLNS_CONTACT, form, user_id, username, indexed_on)

    def visit(self, patient_id: str, properties: dict | None = None, close: bool | None = None,
              indexed_on: datetime | None = None) -> str:
        rng = self.rng
        user_id, username = self._user()
        close = rng.random() < 0.08 if close is None else close
        update = properties if properties is not None else {
            "last_visit": self._date_shape(), "weight": f"{rng.uniform(2, 90):.1f}",
            "Age": str(rng.randint(0, 90)), "visit.count": str(rng.randint(1, 20))}
        form = {"visit_date": rng.choice([self._date_shape(), "not a date"]) if rng.random() < 0.1
                else self._date_shape(),
                "weight": rng.choice([f"{rng.uniform(2, 90):.1f}", f"{rng.uniform(2, 90):.1f}", "heavy"]),
                "symptoms": {"fever": rng.choice(["yes", "no"]), "cough": rng.choice(["yes", "no"])},
                "notes": "x" * 10_240 if rng.random() < 0.02 else "ok",
                "case": self._block(patient_id, user_id, update=update, close=close)}
        return self._submit(XMLNS_VISIT, form, user_id, username, indexed_on)

    def _patient_properties(self, name: str) -> dict:
        rng = self.rng
        props = {"dob": self._date_shape(), "sex": rng.choice(["f", "m"]), "first name": name,
                 "risk-level": rng.choice(["low", "high", ""]), "âge": str(rng.randint(0, 90)),
                 "名字": name, "select": "yes", "order": str(rng.randint(1, 5)),
                 "user": "chw", "2nd_visit": rng.choice(["", "2024-02-01"]),
                 "First Name": name.upper(), "first_name": name.lower(), "Age": "", "age": "3",
                 LONG_NAME: "7", LONG_NAME + "_again": "8"}
        for i in range(rng.randint(5, 15)):
            props[f"prop_{i}"] = rng.choice(["a", "b", "", "2024-05-01", "12.5"])
        if self.awkward:  # every third patient: a NUL, a lone surrogate, or a NUL in a name
            self.awkward_count += 1
            kind = self.awkward_count % 3
            if kind == 0:
                props["note"] = "nul\x00here"
            elif kind == 1:
                props["note"] = "lone \ud800 surrogate"
            else:
                props["bad\x00key"] = "v"
        return props

    def _date_shape(self) -> str:
        moment = self.clock - timedelta(days=self.rng.randint(0, 4000))
        return self.rng.choice([moment.strftime("%Y-%m-%d"), fmt(moment),
                                moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                moment.strftime("%Y-%m-%dT%H:%M:%S")])

    def _block(self, case_id: str, user_id: str, create: dict | None = None,
               update: dict | None = None, index: dict | None = None, close: bool = False) -> dict:
        block = {"@case_id": case_id, "@user_id": user_id, "@xmlns": CASE_XMLNS}
        if create:
            block["create"] = dict(create)
        if update:
            block["update"] = dict(update)
        if index:
            block["index"] = {
                ident: ({"@case_type": ctype, "#text": ref} if rel is None else
                        {"@case_type": ctype, "@relationship": rel, "#text": ref})
                for ident, (ctype, ref, rel) in index.items()}
        if close:
            block["close"] = ""
        return block

    def _submit(self, xmlns: str, form: dict, user_id: str, username: str,
                indexed_on: datetime | None = None) -> str:
        """Receive a form: store it and apply its case blocks, as HQ's form processor does."""
        form_id = hex_id(self.rng)
        received = self.tick()
        stamp = indexed_on or received
        started = received - timedelta(minutes=self.rng.randint(1, 30))
        body = {"#type": "data", "@name": FORM_NAMES[xmlns], "@uiVersion": "1", "@version": "12",
                "@xmlns": xmlns, **form,
                "meta": {"@xmlns": "http://openrosa.org/jr/xforms", "appVersion": "CommCare 2.53",
                         "deviceID": "device-1", "instanceID": form_id, "timeStart": fmt(started),
                         "timeEnd": fmt(received), "userID": user_id, "username": username}}
        blocks = []
        _collect_blocks(body, blocks)
        for block in blocks:
            block["@date_modified"] = fmt(received)
        record = {
            "id": form_id, "domain": self.domain, "form": body, "type": "data", "version": "12",
            "uiversion": "1", "received_on": fmt(received), "server_modified_on": fmt(received),
            "edited_on": None, "indexed_on": fmt(stamp), "app_id": self.apps[0]["id"],
            "build_id": self.apps[0]["id"][::-1], "initial_processing_complete": True,
            "problem": None, "archived": False, "is_phone_submission": True,
            "submit_ip": "10.0.0.1", "resource_uri": f"/a/{self.domain}/api/v0.5/form/{form_id}/",
            "metadata": {**{k: v for k, v in body["meta"].items() if k != "@xmlns"},
                         "timeStart": fmt(started).rstrip("Z"), "timeEnd": fmt(received).rstrip("Z"),
                         "doc_type": "Metadata", "deprecatedID": None},
            "attachments": {"form.xml": {"content_type": "text/xml", "length": 2000,
                                         "url": f"https://sim/a/{self.domain}/api/form/attachment/{form_id}/form.xml"}},
        }
        if self.rng.random() < 0.1:
            record["attachments"]["photo.jpg"] = {"content_type": "image/jpeg", "length": 51234,
                                                  "url": f"https://sim/a/{self.domain}/api/form/attachment/{form_id}/photo.jpg"}
        if self.awkward:
            record["unexpected_field"] = {"nested": [1, 2]}
        self.forms[form_id] = record
        self.touched = []
        for block in blocks:
            self._apply(block, form_id, received, stamp, user_id)
            self.touched.append(block["@case_id"])
        return form_id

    def _apply(self, block: dict, form_id: str, when: datetime, stamp: datetime, user_id: str) -> None:
        case_id = block["@case_id"]
        case = self.cases.get(case_id)
        if case is None:
            create = block.get("create", {})
            case = {
                "case_id": case_id, "id": case_id, "domain": self.domain, "closed": False,
                "closed_by": None, "date_closed": None, "date_modified": fmt(when),
                "indexed_on": fmt(stamp), "indices": {}, "opened_by": user_id,
                "properties": {"case_name": create.get("case_name"),
                               "case_type": create.get("case_type"), "date_opened": fmt(when),
                               "external_id": None, "owner_id": create.get("owner_id") or user_id},
                "resource_uri": f"/a/{self.domain}/api/v0.5/case/{case_id}/",
                "server_date_modified": fmt(when), "server_date_opened": fmt(when),
                "user_id": user_id, "xform_ids": [],
            }
            if self.awkward:
                case["unexpected_field"] = "surprise"
            self.cases[case_id] = case
            self.by_type.setdefault(create.get("case_type"), []).append(case_id)
        props = case["properties"]
        for key, value in (block.get("update") or {}).items():
            props[key] = value
        for ident, ref in (block.get("index") or {}).items():
            case["indices"][ident] = {"case_id": ref["#text"], "case_type": ref["@case_type"],
                                      "relationship": ref.get("@relationship", "child")}
        if "close" in block:
            case.update(closed=True, closed_by=user_id, date_closed=fmt(when))
        # Each write to the search index is stamped when it happens: a document's indexed_on
        # never moves backwards, even when the form that changed it is indexed late.
        previous = datetime.fromisoformat(case["indexed_on"].replace("Z", "+00:00"))
        if stamp <= previous and len(case["xform_ids"]) > 0:
            stamp = previous + timedelta(milliseconds=1)
        case.update(user_id=user_id, date_modified=fmt(when), server_date_modified=fmt(when),
                    indexed_on=fmt(stamp))
        if form_id not in case["xform_ids"]:
            case["xform_ids"].append(form_id)


def _collect_blocks(node: object, out: list[dict]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "case" and isinstance(value, dict) and "@case_id" in value:
                out.append(value)
            else:
                _collect_blocks(value, out)
    elif isinstance(node, list):
        for value in node:
            _collect_blocks(value, out)


def build_app(domain: str) -> dict:
    """The Application Structure API's view of the app that made the generated forms."""
    def q(label, path, qtype, repeat=None, group=None, options=None):
        question = {"label": label, "tag": "input", "value": f"/data/{path}", "type": qtype,
                    "repeat": f"/data/{repeat}" if repeat else None,
                    "group": f"/data/{group}" if group else None, "hashtagValue": f"#form/{path}",
                    "required": False, "relevant": None, "constraint": None, "comment": None,
                    "calculate": None, "setvalue": None, "is_group": qtype in ("Group", "Repeat")}
        if options:
            question["options"] = [{"label": o.title(), "value": o} for o in options]
        return question

    app_id = uuid.UUID(int=random.Random(f"app:{domain}").getrandbits(128), version=4).hex
    return {
        "id": app_id, "name": "CHW App", "version": 12, "is_released": True,
        "built_on": "2024-01-01T00:00:00.000000Z", "build_comment": "", "built_from_app_id": None,
        "resource_uri": f"/a/{domain}/api/v0.5/application/{app_id}/", "versions": [],
        "modules": [
            {"name": {"en": "Households"}, "case_type": "household", "unique_id": "mod-household",
             "case_properties": ["village", "hh_size"],
             "forms": [{"xmlns": XMLNS_HOUSEHOLD, "name": {"en": FORM_NAMES[XMLNS_HOUSEHOLD]},
                        "unique_id": "form-household", "questions": [
                 q("Household name", "household_name", "Text"),
                 q("Address", "address", "Group"),
                 q("Village", "address/village", "Select", group="address",
                   options=["kati", "lumo", "oyo"]),
                 q("Address details", "address/details", "Group", group="address"),
                 q("Street name", "address/details/street name", "Text", group="address/details"),
                 q("Landmark", "address/details/landmark", "Text", group="address/details"),
                 q("How many people live here?", "household_size", "Int"),
                 q("Registration date", "registration_date", "Date"),
                 q("Members", "members", "Repeat"),
                 q("Member name", "members/member_name", "Text", repeat="members"),
                 q("Member age", "members/member_age", "Int", repeat="members"),
                 q("Vaccinations", "members/vaccinations", "Repeat", repeat="members"),
                 q("Vaccine", "members/vaccinations/vaccine", "Select",
                   repeat="members/vaccinations", options=["bcg", "opv", "measles"]),
                 q("Vaccine date", "members/vaccinations/vaccine_date", "Date",
                   repeat="members/vaccinations"),
             ]}]},
            {"name": {"en": "Patients"}, "case_type": "patient", "unique_id": "mod-patient",
             "case_properties": ["dob", "sex", "first name", "last_visit", "weight"],
             "forms": [
                 {"xmlns": XMLNS_VISIT, "name": {"en": FORM_NAMES[XMLNS_VISIT]},
                  "unique_id": "form-visit", "questions": [
                      q("Visit date", "visit_date", "Date"),
                      q("Weight (kg)", "weight", "Decimal"),
                      q("Symptoms", "symptoms", "Group"),
                      q("Fever?", "symptoms/fever", "Select", group="symptoms", options=["yes", "no"]),
                      q("Cough?", "symptoms/cough", "Select", group="symptoms", options=["yes", "no"]),
                      q("Notes", "notes", "Text"),
                  ]},
                 {"xmlns": XMLNS_PATIENT, "name": {"en": FORM_NAMES[XMLNS_PATIENT]},
                  "unique_id": "form-patient", "questions": [
                      q("Patient name", "patient_name", "Text"),
                      q("Date of birth", "dob", "Date"),
                  ]},
                 {"xmlns": XMLNS_CONTACT, "name": {"en": FORM_NAMES[XMLNS_CONTACT]},
                  "unique_id": "form-contact", "questions": [
                      q("Contact name", "contact_name", "Text"),
                      q("Phone", "phone", "Phone"),
                  ]},
             ]},
        ],
    }
