"""Application Structure API records -> the data dictionary tables (apps, modules, forms,
questions, case properties)."""

from __future__ import annotations

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
