"""Application Structure API records -> the data dictionary tables (apps, modules, forms,
questions, case properties, and which question saves which case property)."""

from __future__ import annotations

from typing import Any, Iterator

from psycopg import sql

from etl import jsonutil
from etl.dates import parse_hq_datetime
from etl.transform import Batch
from etl.transform.cases import _required_id, _text


def display_name(value: object) -> str | None:
    """HQ names are often translations ({"en": "Register", "fr": ...}): prefer English."""
    if isinstance(value, dict):
        return _text(value.get("en") or next((v for v in value.values() if v), None))
    return _text(value)


def question_path(value: object) -> str | None:
    """'/data/group/question' -> 'group/question', the path used in the catalog."""
    if not isinstance(value, str) or not value:
        return None
    parts = [p for p in value.split("/") if p]
    if parts and parts[0] == "data":
        parts = parts[1:]
    return "/".join(parts) or None


USERCASE_TYPE = "commcare-user"  # the case type of HQ's user case (`usercase_update`)
_NOT_IN_A_PATH = frozenset(" \t\r\n()[]'\"=,+*<>|$#:@")


def saved_question_path(value: object) -> str | None:
    """The question a case property is saved from, as in `app_questions.path`.

    HQ stores it as a `ConditionalCaseUpdate` {"question_path": "/data/q", "update_mode": ...}
    or, in older documents, as the path itself. Anything that is not a plain path
    into the form (an expression, a `#case/` reference, nothing) gives None."""
    if isinstance(value, dict):
        value = value.get("question_path")
    if not isinstance(value, str):
        return None
    value = value.strip()
    if value.startswith("#form/"):
        value = "/data/" + value[len("#form/"):]
    if not value or any(c in _NOT_IN_A_PATH for c in value):
        return None
    return question_path(value)


def _property(name: object) -> str | None:
    # A name with a slash ("parent/edd") saves to a related case whose type the app does not say.
    if not isinstance(name, str) or not name.strip() or "/" in name:
        return None
    return name


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _active(action: dict) -> bool:
    """HQ applies a form action only when its condition is `always` or `if`; an action without a
    condition (a trimmed or hand-made document) counts as applied."""
    condition = action.get("condition")
    return not isinstance(condition, dict) or condition.get("type") != "never"


def _name_path(action: dict) -> object:
    """`name_update` (a `ConditionalCaseUpdate`); older documents: `name_path` (open_case,
    advanced open_cases) or `case_name` (subcases), each a path."""
    for key in ("name_update", "name_path", "case_name"):
        if saved_question_path(action.get(key)):
            return action[key]
    return None


def _updates(action: dict, key: str) -> Iterator[tuple[str, object]]:
    for prop, value in _dict(action.get(key)).items():
        yield prop, value


def form_saves(form: dict, module_case_type: str | None) -> Iterator[tuple[Any, Any, Any]]:
    """(case type, property, raw question path) for every case property the form's `actions`
    save, in the stored app document's shapes: a basic module's `FormActions` (`open_case`,
    `update_case`, `usercase_update`, `subcases`) and an advanced module's
    `AdvancedFormActions` (`load_update_cases`, `open_cases`); property values either
    `ConditionalCaseUpdate`s or, in older documents, paths. Unparsable parts are skipped."""
    actions = _dict(form.get("actions"))
    if module_case_type:
        open_case = _dict(actions.get("open_case"))
        if open_case and _active(open_case) and form.get("requires") != "case":
            yield module_case_type, "name", _name_path(open_case)
            yield module_case_type, "external_id", open_case.get("external_id")
        update_case = _dict(actions.get("update_case"))
        if update_case and _active(update_case):
            for prop, value in _updates(update_case, "update"):
                yield module_case_type, prop, value
    usercase = _dict(actions.get("usercase_update"))
    if usercase and _active(usercase):
        for prop, value in _updates(usercase, "update"):
            yield USERCASE_TYPE, prop, value
    for subcase in _list(actions.get("subcases")):
        yield subcase.get("case_type"), "name", _name_path(subcase)
        for prop, value in _updates(subcase, "case_properties"):
            yield subcase.get("case_type"), prop, value
    for key in ("load_update_cases", "open_cases"):
        for action in _list(actions.get(key)):
            if key == "open_cases":
                yield action.get("case_type"), "name", _name_path(action)
            for prop, value in _updates(action, "case_properties"):
                yield action.get("case_type"), prop, value


def transform_app(record: dict, domain: str, batch: Batch) -> None:
    app_id = _required_id(record, "id", "app_id")
    rows: list[tuple[str, tuple]] = [("apps", (
        domain, app_id, display_name(record.get("name")),
        record.get("version") if isinstance(record.get("version"), int) else None,
        bool(record.get("is_released")), parse_hq_datetime(record.get("built_on")),
    ))]
    for m_pos, module in enumerate(record.get("modules") or []):
        module_id = _text(module.get("unique_id")) or f"{app_id}:{m_pos}"
        case_type = _text(module.get("case_type"))
        rows.append(("app_modules", (domain, app_id, module_id, m_pos,
                                     display_name(module.get("name")), case_type)))
        for prop in module.get("case_properties") or []:
            if case_type and prop:
                rows.append(("app_case_properties", (domain, app_id, case_type, str(prop))))
        for f_pos, form in enumerate(module.get("forms") or []):
            xmlns = _text(form.get("xmlns"))
            form_id = _text(form.get("unique_id")) or f"{module_id}:{f_pos}"
            rows.append(("app_forms", (domain, app_id, module_id, form_id, xmlns,
                                       display_name(form.get("name")))))
            if xmlns and isinstance(form.get("actions"), dict):
                saved = set()
                for saved_type, prop, path in form_saves(form, case_type):
                    saved_type, prop = _text(saved_type), _property(prop)
                    path = saved_question_path(path)
                    if saved_type and prop and path and (saved_type, prop, path) not in saved:
                        saved.add((saved_type, prop, path))
                        rows.append(("app_case_property_questions",
                                     (domain, app_id, saved_type, prop, xmlns, path)))
            for q_pos, question in enumerate(form.get("questions") or []):
                path = question_path(question.get("value"))
                if not xmlns or not path:
                    continue
                options = question.get("options")
                rows.append(("app_questions", (
                    domain, app_id, xmlns, path, q_pos, display_name(question.get("label")),
                    _text(question.get("type")), question_path(question.get("repeat")),
                    question_path(question.get("group")),
                    jsonutil.dumps(options) if options else None,
                )))
    for table, row in rows:
        batch.add(table, row)


def case_property_questions_query(schema: str) -> sql.Composed:
    """Per (domain, case type, property): the label and type of one question that saves to it,
    from the newest app version, a form of the case type's own module first (a child case's
    properties are also saved by its parent's registration form); then by app, xmlns and
    question position, so the choice is stable. Columns: domain, case_type, property, label,
    type, app_id, xmlns, question_path."""
    return sql.SQL("""
        select distinct on (p.domain, p.case_type, p.property)
               p.domain, p.case_type, p.property, q.label, q.type,
               p.app_id, p.xmlns, p.question_path
        from {s}.app_case_property_questions p
        join {s}.app_questions q
          on q.domain = p.domain and q.app_id = p.app_id and q.xmlns = p.xmlns
         and q.path = p.question_path
        join {s}.apps a on a.domain = p.domain and a.app_id = p.app_id
        left join {s}.app_forms f
          on f.domain = p.domain and f.app_id = p.app_id and f.xmlns = p.xmlns
        left join {s}.app_modules m
          on m.domain = f.domain and m.app_id = f.app_id and m.module_id = f.module_id
        order by p.domain, p.case_type, p.property, a.version desc nulls last,
                 (m.case_type = p.case_type) desc nulls last, p.app_id, p.xmlns, q.position
    """).format(s=sql.Identifier(schema))
