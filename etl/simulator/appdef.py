"""The simulated project's applications: form definitions, rendered three ways.

Each form is a tree of questions, groups and repeats. `render` turns it into a submission's
`form` JSON the way HQ converts the XML (groups are objects; a repeat is a list when it has
several items, a single object when it has one, and absent when it has none); `questions`
turns it into the Application Structure API's question dicts (keys as HQ's
`XForm.get_questions(include_groups=True, include_translations=True)` emits them);
`application_document` gives the app as HQ stores it (the Couch `Application` document), with
each form's case `actions` saying which question saves which case property.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from etl.simulator import vocab
from etl.simulator.hqtime import US_PER_DAY, fmt_date, fmt_us
from etl.simulator.vocab import pick, ri

DATA = "/data"


@dataclass
class FormCtx:
    """What a form's answers are drawn from."""

    rng: random.Random
    t: int  # phone time (µs) the form was completed
    case: dict[str, Any] = field(default_factory=dict)  # properties of the case the form is about
    case_block: dict | list | None = None
    members: list["FormCtx"] = field(default_factory=list)  # repeat items that carry case blocks
    awkward: bool = False


Gen = Callable[[FormCtx], Any]


@dataclass(frozen=True)
class Q:
    name: str
    qtype: str  # HQ's vellum type: Text, Int, Double, Date, DateTime, Time, Select, MSelect, ...
    label: str
    options: tuple[tuple[str, str], ...] = ()
    gen: Gen | None = None


@dataclass(frozen=True)
class Hidden:
    name: str
    calculate: str
    gen: Gen


@dataclass(frozen=True)
class Group:
    name: str
    label: str
    children: tuple["Node", ...]
    field_list: bool = False


@dataclass(frozen=True)
class Repeat:
    name: str
    label: str
    children: tuple["Node", ...]
    from_members: bool = False  # items are the ctx's members (each with its own case block)
    subcase_type: str = ""  # with from_members: the case type each item's block creates


@dataclass(frozen=True)
class CaseSlot:
    """Where the case block(s) sit: `case` at the form root or inside a repeat item."""


Node = Union[Q, Hidden, Group, Repeat, CaseSlot]


@dataclass(frozen=True)
class FormDef:
    key: str
    name: str
    xmlns: str
    case_type: str
    children: tuple[Node, ...]
    unique_id: str
    registers: bool = False  # opens its module's case (else, with a case type, it updates one)


@dataclass(frozen=True)
class ModuleDef:
    name: str
    case_type: str
    forms: tuple[FormDef, ...]
    unique_id: str


@dataclass(frozen=True)
class AppDef:
    app_id: str
    name: str
    modules: tuple[ModuleDef, ...]
    builds: tuple[tuple[str, int, bool, str], ...]  # (build id, version, released, comment)
    created_order: int


def _opts(*values: str) -> tuple[tuple[str, str], ...]:
    return tuple((v, v.replace("_", " ").capitalize()) for v in values)


def _case(prop: str, fallback: Gen | None = None) -> Gen:
    """The answer is the case's value of `prop`: the question saves to that property (the
    app's form actions say so, see `form_actions`)."""
    def gen(ctx: FormCtx) -> Any:
        value = ctx.case.get(prop)
        if value is None and fallback is not None:
            return fallback(ctx)
        return "" if value is None else value
    gen.saves = prop  # type: ignore[attr-defined]
    return gen


def _repeat_count(ctx: FormCtx) -> int:
    # Zero, one and several items all occur, so all three JSON shapes do.
    roll = ctx.rng.random()
    return 0 if roll < 0.3 else 1 if roll < 0.6 else 2 if roll < 0.85 else 3


def _xmlns(n: int) -> str:
    return f"http://openrosa.org/formdesigner/5C1A7E2B-0D3F-4B6A-9E1C-{n:012X}"


def _uid(n: int) -> str:
    return f"{0x6f1c2b0e9d8a4c7fb1a2c3d4e5f60000 + n:032x}"


WATER = Group("water", "Water and sanitation", (
    Q("source", "Select", "Main water source", _opts("piped", "well", "river", "rain"),
      _case("water_source")),
    Q("uses", "MSelect", "What is the water used for?", _opts("drinking", "cooking", "washing")),
    Group("treatment", "Water treatment", (  # a group inside a group
        Q("method", "Select", "How is water treated?", _opts("boil", "chlorine", "filter", "none")),
        Q("notes", "Text", "Treatment notes"),
    )),
))

HH_REG = FormDef("hh_reg", "Register Household", _xmlns(1), "household", (
    Q("intro", "Trigger", "Welcome! Press OK to begin."),
    Q("hh_name", "Text", "Household name", gen=_case("case_name")),
    Q("village", "Select", "Village", _opts(*vocab.VILLAGES), _case("village")),
    Q("household_size", "Int", "How many people live here?", gen=_case("household_size")),
    WATER,
    Q("gps", "Geopoint", "Household location", gen=_case("gps")),
    Group("contact_info", "Contact information", (
        Q("phone", "PhoneNumber", "Phone number", gen=_case("Phone Number")),
        Q("adresse_complète", "Text", "Adresse complète", gen=_case("adresse_complète")),
    ), field_list=True),
    Repeat("members", "Household members", (
        Q("member_name", "Text", "Member name", gen=_case("case_name")),
        Q("member_age", "Int", "Age", gen=_case("age")),
        Q("member_sex", "Select", "Sex", _opts("male", "female"), _case("sex")),
        Q("member_dob", "Date", "Date of birth", gen=_case("dob")),
        CaseSlot(),
    ), from_members=True, subcase_type="patient"),
    Hidden("member_count", "count(/data/members)", lambda ctx: str(len(ctx.members))),
    CaseSlot(),
), _uid(11), registers=True)

HH_VISIT = FormDef("hh_visit", "Household Visit", _xmlns(2), "household", (
    Q("visit_date", "Date", "Visit date", gen=lambda ctx: fmt_date(ctx.t)),
    Q("anyone_sick", "Select", "Is anyone sick?", _opts("yes", "no")),
    WATER,
    Q("visit.count", "Int", "Visit number", gen=_case("visit.count")),
    Repeat("new_births", "New births", (
        Q("baby_name", "Text", "Baby's name"),
        Q("baby_dob", "Date", "Baby's date of birth"),
    )),
    Q("photo", "Image", "Photo of the water point"),
    CaseSlot(),
), _uid(12))

PT_REG = FormDef("pt_reg", "Register Patient", _xmlns(3), "patient", (
    Q("first_name", "Text", "First name", gen=_case("first_name")),
    Q("last_name", "Text", "Last name", gen=_case("last_name")),
    Q("dob", "Date", "Date of birth", gen=_case("dob")),
    Q("âge", "Int", "Âge", gen=_case("age")),
    Q("sex", "Select", "Sex", _opts("male", "female"), _case("sex")),
    Q("phone-number", "PhoneNumber", "Phone number", gen=_case("phone-number")),
    Q("名字", "Text", "名字", gen=_case("名字")),
    Q("risk_level", "Select", "Risk level", _opts("low", "medium", "high"), _case("risk_level")),
    Group("pregnancy", "Pregnancy", (
        Q("lmp", "Date", "Last menstrual period", gen=_case("lmp")),
        Q("edd", "Date", "Expected delivery date", gen=_case("edd")),
    )),
    CaseSlot(),
), _uid(13), registers=True)

PT_VISIT = FormDef("pt_visit", "Patient Visit", _xmlns(4), "patient", (
    Q("visit_time", "DateTime", "Visit time"),
    Q("weight", "Double", "Weight (kg)", gen=_case("weight")),
    Q("height", "Double", "Height (cm)"),
    Q("systolic", "Int", "Systolic blood pressure"),
    Q("outcome", "Select", "Outcome", _opts("continue", "referred", "discharged"),
      _case("outcome")),
    Repeat("medications", "Medications", (
        Q("drug", "Text", "Drug"),
        Q("route", "Select", "Route", _opts("oral", "injection", "topical")),
        Repeat("doses", "Doses", (  # a repeat inside a repeat
            Q("time_taken", "Time", "Time taken"),
            Q("amount", "Double", "Amount (mg)"),
        )),
    )),
    Q(vocab.LONG_QUESTION, "Text", "A question with a very long name"),
    Hidden("bmi", "/data/weight div (/data/height * /data/height)", lambda ctx: ""),
    CaseSlot(),
), _uid(14))

CT_REG = FormDef("ct_reg", "Register Contact", _xmlns(5), "contact", (
    Q("contact_name", "Text", "Contact name", gen=_case("case_name")),
    Q("relation", "Select", "Relation", _opts("spouse", "child", "parent", "sibling", "neighbour",
                                               "colleague"), _case("relation")),
    Q("exposure_date", "Date", "Date of exposure", gen=_case("exposure_date")),
    Q("symptoms", "MSelect", "Symptoms", _opts("fever", "cough", "headache", "none"),
      _case("symptoms")),
    CaseSlot(),
), _uid(15), registers=True)

CT_FOLLOWUP = FormDef("ct_followup", "Contact Follow-up", _xmlns(6), "contact", (
    Q("follow_up_date", "Date", "Follow-up date", gen=lambda ctx: fmt_date(ctx.t)),
    Q("follow_up_status", "Select", "Status", _opts("pending", "reached", "unreachable",
                                                   "completed"), _case("follow_up_status")),
    Q("symptoms", "MSelect", "Symptoms", _opts("fever", "cough", "headache", "none"),
      _case("symptoms")),
    CaseSlot(),
), _uid(16))

SURVEY = FormDef("survey", "Community Survey", _xmlns(7), "", (
    Q("respondent", "Text", "Respondent"),
    Q("satisfaction", "Select", "Satisfaction", _opts("low", "medium", "high")),
    Repeat("facilities", "Facilities", (
        Q("facility_name", "Text", "Facility name"),
        Q("facility_type", "Select", "Type", _opts("clinic", "school", "market")),
    )),
    Group("scores", "Scores", (
        Q("q1", "Int", "Score 1"),
        Q("q2", "Int", "Score 2"),
    )),
), _uid(17))

HEALTH_APP = AppDef("a1b2c3d4e5f60718293a4b5c6d7e8f90", "Household Health", (
    ModuleDef("Households", "household", (HH_REG, HH_VISIT), _uid(1)),
    ModuleDef("Patients", "patient", (PT_REG, PT_VISIT), _uid(2)),
    ModuleDef("Contacts", "contact", (CT_REG, CT_FOLLOWUP), _uid(3)),
), (("b10c0000000000000000000000000010", 10, True, "First release"),
    ("b10c0000000000000000000000000011", 11, False, "Fix labels"),
    ("b10c0000000000000000000000000012", 12, True, "Contacts module")), 0)

SURVEY_APP = AppDef("c0ffee00c0ffee00c0ffee00c0ffee00", "Community Survey", (
    ModuleDef("Surveys", "", (SURVEY,), _uid(4)),
), (("b20c0000000000000000000000000003", 3, True, ""),), 1)

APPS = (HEALTH_APP, SURVEY_APP)
FORMS: dict[str, FormDef] = {f.key: f for a in APPS for m in a.modules for f in m.forms}
APP_OF_FORM: dict[str, AppDef] = {f.key: a for a in APPS for m in a.modules for f in m.forms}


# --- rendering a submission --------------------------------------------------------------------

def _answer(q: Q, ctx: FormCtx) -> Any:
    rng = ctx.rng
    if q.gen is not None:
        return q.gen(ctx)
    if q.qtype == "Trigger":
        return "OK"
    if rng.random() < 0.06:
        return ""  # skipped question
    kind = q.qtype
    if kind == "Select":
        return pick(rng, q.options)[0]
    if kind == "MSelect":
        return " ".join(v for v, _ in q.options if rng.random() < 0.4)
    if kind == "Int":
        return str(ri(rng, 0, 200))
    if kind == "Double":
        return f"{rng.uniform(0, 200):.2f}"
    if kind == "Date":
        return fmt_date(ctx.t - ri(rng, 0, 400) * US_PER_DAY)
    if kind == "DateTime":  # phone answers carry the device's offset
        return fmt_us(ctx.t)[:23] + "+03:00"
    if kind == "Time":
        return f"{ri(rng, 6, 20):02d}:{ri(rng, 0, 59):02d}:00.000+03:00"
    if kind == "Image":
        return "" if rng.random() < 0.5 else f"{ctx.t // 1000}.jpg"
    if kind == "Geopoint":
        return vocab.gps(rng, ctx.t)
    if kind == "PhoneNumber":
        return vocab.phone(rng, ctx.t)
    text = " ".join(pick(rng, vocab.WORDS) for _ in range(ri(rng, 1, 3)))
    if ctx.awkward and rng.random() < 0.05:
        text += vocab.NUL_VALUE
    return text


def _render_nodes(nodes: tuple[Node, ...], ctx: FormCtx, out: dict) -> None:
    for node in nodes:
        if isinstance(node, Q):
            out[node.name] = _answer(node, ctx)
        elif isinstance(node, Hidden):
            out[node.name] = node.gen(ctx)
        elif isinstance(node, Group):
            child: dict = {}
            _render_nodes(node.children, ctx, child)
            out[node.name] = child
        elif isinstance(node, Repeat):
            items = ctx.members if node.from_members else [
                FormCtx(ctx.rng, ctx.t, ctx.case, awkward=ctx.awkward)
                for _ in range(_repeat_count(ctx))]
            rendered = []
            for item in items:
                entry: dict = {}
                _render_nodes(node.children, item, entry)
                rendered.append(entry)
            if len(rendered) == 1:
                out[node.name] = rendered[0]
            elif rendered:
                out[node.name] = rendered
        elif isinstance(node, CaseSlot) and ctx.case_block:
            out["case"] = ctx.case_block


def render(form: FormDef, ctx: FormCtx) -> dict:
    """The question part of a submission's `form` JSON (no `@` attributes, no `meta`)."""
    out: dict = {}
    _render_nodes(form.children, ctx, out)
    return out


def form_images(form: FormDef, data: dict) -> list[str]:
    """File names answered to Image questions at the form root (they become attachments)."""
    return [data[n.name] for n in form.children
            if isinstance(n, Q) and n.qtype == "Image" and data.get(n.name)]


# --- the Application Structure API -------------------------------------------------------------

_TAGS = {"Text": "input", "Int": "input", "Double": "input", "Date": "input", "DateTime": "input",
         "Time": "input", "Geopoint": "input", "PhoneNumber": "input", "Select": "select1",
         "MSelect": "select", "Image": "upload", "Trigger": "trigger"}


def _hashtag(path: str) -> str:
    return "#form/" + path[len(DATA) + 1:]


def _question(node: Q | Group | Repeat, path: str, repeat: str | None,
              group: str | None) -> dict:
    if isinstance(node, Q):
        tag, qtype = _TAGS[node.qtype], node.qtype
    elif isinstance(node, Repeat):
        tag, qtype = "repeat", "Repeat"
    else:
        tag, qtype = "group", "FieldList" if node.field_list else "Group"
    question = {
        "label": node.label, "label_ref": f"{path[len(DATA) + 1:]}-label", "tag": tag,
        "value": path, "repeat": repeat, "group": group, "type": qtype, "relevant": None,
        "required": False, "constraint": None, "comment": None, "hashtagValue": _hashtag(path),
        "setvalue": None, "is_group": not isinstance(node, Q), "translations": {"en": node.label},
    }
    if isinstance(node, Q) and node.options:
        question["options"] = [
            {"label": label, "label_ref": f"{path[len(DATA) + 1:]}-{value}-label", "value": value,
             "translations": {"en": label}} for value, label in node.options]
    return question


def questions(form: FormDef) -> list[dict]:
    """HQ's question dicts: body controls in order (groups before their children), then hidden
    values (`DataBindOnly`) with the innermost enclosing repeat/group."""
    controls: list[dict] = []
    hidden: list[dict] = []

    def walk(nodes: tuple[Node, ...], prefix: str, repeat: str | None, group: str | None) -> None:
        for node in nodes:
            if isinstance(node, CaseSlot):
                continue
            path = f"{prefix}/{node.name}"
            if isinstance(node, Hidden):
                tag = _hashtag(path)
                hidden.append({"tag": "hidden", "value": path, "repeat": repeat, "group": group,
                               "type": "DataBindOnly", "calculate": node.calculate,
                               "relevant": None, "constraint": None, "comment": None,
                               "setvalue": None, "label": tag, "hashtagValue": tag,
                               "translations": {}})
                continue
            controls.append(_question(node, path, repeat, group))
            if isinstance(node, Repeat):
                walk(node.children, path, path, path)
            elif isinstance(node, Group):
                walk(node.children, path, repeat, path)

    walk(form.children, DATA, None, None)
    return controls + hidden


def application_json(app: AppDef) -> dict:
    """One object of `/api/v0.5/application/` (the current app, not a build)."""
    builds = [{"id": build_id, "built_on": f"2023-{6 + i:02d}-0{1 + i}T09:30:00.{i:06d}Z",
               "build_comment": comment or None, "is_released": released, "version": version}
              for i, (build_id, version, released, comment) in enumerate(app.builds)]
    return {
        "id": app.app_id,
        "name": app.name,
        "version": app.builds[-1][1] + 1,
        "is_released": False,
        "built_on": None,
        "build_comment": None,
        "built_from_app_id": None,
        "resource_uri": "",
        "modules": [{
            "name": {"en": module.name},
            "case_type": module.case_type,
            "case_properties": vocab.property_names(module.case_type) if module.case_type else [],
            "unique_id": module.unique_id,
            "forms": [{"xmlns": f.xmlns, "name": {"en": f.name}, "questions": questions(f),
                       "unique_id": f.unique_id} for f in module.forms],
        } for module in app.modules],
        "versions": builds,
    }


# --- the app as HQ stores it (`?extras=true`) --------------------------------------------------
# HQ's Couch `Application` document, basic modules only: `modules[].forms[].actions` is a
# `FormActions` (`corehq/apps/app_manager/models.py`) in the current shape, where every saved
# property is a `ConditionalCaseUpdate` {question_path, update_mode}. A question whose answer is
# the case's value of a property (`_case(prop)`) saves to it: `case_name` through the open
# action's `name_update`, the others through `update_case.update`; in a repeat whose items
# carry their own case blocks (`from_members`), through that repeat's `subcases` entry.

APP_BY_ID: dict[str, AppDef] = {a.app_id: a for a in APPS}


def _condition(kind: str = "never") -> dict:
    return {"doc_type": "FormActionCondition", "type": kind, "question": None, "answer": None,
            "operator": "="}


def _case_update(path: str | None) -> dict:
    return {"doc_type": "ConditionalCaseUpdate", "question_path": path, "update_mode": "always"}


def _saves(nodes: tuple[Node, ...], prefix: str, out: list[tuple[str, str]],
           subcases: list[tuple[Repeat, str, list[tuple[str, str]]]]) -> None:
    """(question path, case property) of the questions that save to the case at this level;
    repeats with their own case blocks go to `subcases`. Questions in other repeats save to
    no case (a basic module cannot save a repeat's answer to the form's case)."""
    for node in nodes:
        if isinstance(node, CaseSlot):
            continue
        path = f"{prefix}/{node.name}"
        if isinstance(node, Q):
            prop = getattr(node.gen, "saves", None)
            if prop is not None:
                out.append((path, prop))
        elif isinstance(node, Group):
            _saves(node.children, path, out, subcases)
        elif isinstance(node, Repeat) and node.from_members:
            inner: list[tuple[str, str]] = []
            _saves(node.children, path, inner, subcases)
            subcases.append((node, path, inner))


def _name_and_update(saves: list[tuple[str, str]]) -> tuple[str | None, dict]:
    name = next((path for path, prop in saves if prop == "case_name"), None)
    return name, {prop: _case_update(path) for path, prop in saves if prop != "case_name"}


def form_actions(form: FormDef) -> dict:
    """The form's `FormActions`: registration forms open the module's case (and update it),
    follow-ups update it, a repeat of members opens one child case per item; a form without a
    case type does nothing (every action's condition `never`)."""
    saves: list[tuple[str, str]] = []
    subcases: list[tuple[Repeat, str, list[tuple[str, str]]]] = []
    if form.case_type:
        _saves(form.children, DATA, saves, subcases)
    name, update = _name_and_update(saves)
    opens = bool(form.case_type) and form.registers
    return {
        "doc_type": "FormActions",
        # A registration form without a name question (Register Patient computes the name)
        # keeps HQ's empty `name_update`.
        "open_case": {"doc_type": "OpenCaseAction", "condition": _condition(
            "always" if opens else "never"), "name_update": _case_update(name if opens else None),
            "external_id": None},
        "update_case": {"doc_type": "UpdateCaseAction",
                        "condition": _condition("always" if update else "never"),
                        "update": update},
        "close_case": {"doc_type": "FormAction", "condition": _condition()},
        "case_preload": {"doc_type": "PreloadAction", "condition": _condition(), "preload": {}},
        "load_from_form": {"doc_type": "PreloadAction", "condition": _condition(), "preload": {}},
        "usercase_update": {"doc_type": "UpdateCaseAction", "condition": _condition(),
                            "update": {}},
        "usercase_preload": {"doc_type": "PreloadAction", "condition": _condition(),
                             "preload": {}},
        "subcases": [{
            "doc_type": "OpenSubCaseAction", "case_type": repeat.subcase_type,
            "name_update": _case_update(_name_and_update(inner)[0]),
            "case_properties": _name_and_update(inner)[1], "reference_id": "parent",
            "repeat_context": path, "relationship": "child", "condition": _condition("always"),
            "close_condition": _condition(),
        } for repeat, path, inner in subcases],
    }


def application_document(app: AppDef, domain: str) -> dict:
    """The current app as HQ stores it (a Couch `Application`, the fields that matter here)."""
    version = app.builds[-1][1] + 1
    return {
        "_id": app.app_id, "doc_type": "Application", "domain": domain, "name": app.name,
        "version": version, "copy_of": None, "is_released": False, "built_on": None,
        "build_comment": None, "langs": ["en"], "application_version": "2.0",
        "date_created": f"2023-0{5 + app.created_order}-01T08:00:00.000000Z",
        "build_spec": {"doc_type": "BuildSpec", "version": "2.53.1", "build_number": None,
                       "latest": None},
        "modules": [{
            "doc_type": "Module", "module_type": "basic", "name": {"en": module.name},
            "case_type": module.case_type, "unique_id": module.unique_id,
            "forms": [{
                "doc_type": "Form", "form_type": "module_form", "unique_id": f.unique_id,
                "xmlns": f.xmlns, "name": {"en": f.name}, "version": None,
                "requires": "case" if f.case_type and not f.registers else "none",
                "actions": form_actions(f),
            } for f in module.forms],
        } for module in app.modules],
    }


def with_extras(app_object: dict, domain: str) -> dict:
    """One app object of `/api/v0.5/application/?extras=true`: HQ's
    `ApplicationResource.dehydrate` (`corehq/apps/api/resources/v0_4.py`) starts from the stored
    document and lays the API's own fields over it (`app_data.update(bundle.obj._doc)`, then
    `app_data.update(bundle.data)`). So `id`, `name`, `version`, `modules`, `versions`, ... stay
    as without extras, and the stored forms' `actions` do not come through: only the
    document's other top-level fields (`doc_type`, `langs`, `date_created`, ...) are added."""
    app = APP_BY_ID.get(app_object.get("id"))  # type: ignore[arg-type]
    if app is None:
        return dict(app_object)
    return {**application_document(app, domain), **app_object}
