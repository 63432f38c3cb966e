"""The pieces of an OTA restore as XML text: CaseXML v2 case blocks (casexml's
`V2CaseXMLGenerator` and `get_case_element`), the user's Registration block, and the XML escaping
they share with the fixtures.

What XML cannot carry is left out the same way everywhere (so `case_view`, what tests compare
a parsed restore with, matches the bytes): a case property or index whose name is not an XML
element name (HQ's apps only make valid ones; "Phone Number" or "2nd_visit" would crash or
corrupt HQ's own serializer), and characters XML 1.0 forbids (NUL, other C0 controls, lone
surrogates, U+FFFE/U+FFFF), which are dropped from values.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Iterable, Mapping

from etl.simulator.directory import Directory, MobileWorker
from etl.simulator.hqtime import PLACEHOLDER, fmt_date
from etl.simulator.records import CASE_XMLNS, SPECIAL_PROPERTIES

RESPONSE_XMLNS = "http://openrosa.org/http/response"
SYNC_XMLNS = "http://commcarehq.org/sync"
REGISTRATION_XMLNS = "http://openrosa.org/user/registration"

_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_START = (":A-Z_a-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u02ff\u0370-\u037d\u037f-\u1fff"
          "\u200c-\u200d\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd"
          "\U00010000-\U000effff")
_NAME = re.compile(f"[{_START.replace(':', '')}][{_START.replace(':', '')}\\-.0-9\u00b7"
                   f"\u0300-\u036f\u203f-\u2040]*")


def clean(value: Any) -> str:
    """A value as restore text: `str()` of it ("" for None), without XML-illegal characters."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return _ILLEGAL.sub("", text)


def text(value: Any) -> str:
    """Escaped element text. A carriage return is written as `&#13;`, which parsers keep (a
    raw one they would turn into a newline)."""
    return (clean(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", "&#13;"))


def attr(value: Any) -> str:
    """Escaped attribute value (for double quotes), whitespace kept as character references."""
    return (clean(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("\t", "&#9;").replace("\n", "&#10;")
            .replace("\r", "&#13;"))


def is_name(name: str) -> bool:
    """An XML element name (no namespace colon), and not one of the reserved `xml...`."""
    return bool(_NAME.fullmatch(name)) and not name.lower().startswith("xml")


def element(tag: str, content: str = "", attrs: Iterable[tuple[str, Any]] = ()) -> str:
    """`<tag a="v">content</tag>`, or `<tag a="v"/>` when empty; `content` is markup."""
    attributes = "".join(f' {k}="{attr(v)}"' for k, v in attrs)
    return f"<{tag}{attributes}>{content}</{tag}>" if content else f"<{tag}{attributes}/>"


# --- cases -------------------------------------------------------------------------------------

def _date_modified(doc: Mapping[str, Any]) -> str | None:
    value = doc.get("date_modified")
    if not isinstance(value, str) or not value or value.startswith(PLACEHOLDER):
        return None
    return value


def _date_opened(props: Mapping[str, Any]) -> str | None:
    value = props.get("date_opened")
    if not isinstance(value, str) or not value or value.startswith(PLACEHOLDER):
        return None
    return value[:10]


def owner_of(doc: Mapping[str, Any]) -> str:
    """`get_owner_id`: the case's owner, or its last user when it has none."""
    props = doc.get("properties") or {}
    return clean(props.get("owner_id") or doc.get("user_id") or "")


def case_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A case as its restore block conveys it (see the module docstring for what is left out):
    case_type, name, owner_id, external_id (None when unset), date_opened (`YYYY-MM-DD` or
    None), closed, properties {name: text}, indices {identifier: {case_id, case_type,
    relationship}}."""
    props = doc.get("properties") or {}
    indices = {}
    for identifier, ref in (doc.get("indices") or {}).items():
        if is_name(identifier) and isinstance(ref, dict) and ref.get("case_id"):
            indices[identifier] = {"case_id": clean(ref.get("case_id")),
                                   "case_type": clean(ref.get("case_type")),
                                   "relationship": clean(ref.get("relationship") or "child")}
    return {
        "case_type": clean(props.get("case_type")),
        "name": clean(props.get("case_name")),
        "owner_id": owner_of(doc),
        "external_id": clean(props["external_id"]) if props.get("external_id") else None,
        "date_opened": _date_opened(props),
        "closed": bool(doc.get("closed")),
        "properties": {k: clean(v) for k, v in props.items()
                       if k not in SPECIAL_PROPERTIES and is_name(k)},
        "indices": indices,
    }


def _root(case_id: str, user_id: str, date_modified: str | None, content: str) -> str:
    attrs = [("xmlns", CASE_XMLNS), ("case_id", case_id), ("user_id", user_id)]
    if date_modified:
        attrs.append(("date_modified", date_modified))
    return element("case", content, attrs)


def case_block(doc: Mapping[str, Any], create: bool,
               removed: Mapping[str, tuple[str, str]] | None = None) -> str:
    """The CaseXML v2 block of a case (its v0.5 JSON): `<create>` when the phone does not hold
    it yet (else its base properties open the `<update>`), the update, the indices (`removed`:
    identifier -> (case_type, relationship) of indices it lost, sent empty), `<close/>` if
    closed."""
    view = case_view(doc)
    base = (element("case_type", text(view["case_type"]))
            + element("case_name", text(view["name"]))
            + element("owner_id", text(view["owner_id"])))
    parts = [element("create", base)] if create else []
    update = "" if create else base
    if view["external_id"]:
        update += element("external_id", text(view["external_id"]))
    if view["date_opened"]:
        update += element("date_opened", text(view["date_opened"]))
    update += "".join(element(k, text(v)) for k, v in view["properties"].items())
    if update:
        parts.append(element("update", update))
    refs = {identifier: (ref["case_id"], ref["case_type"], ref["relationship"])
            for identifier, ref in view["indices"].items()}
    for identifier, (case_type, relationship) in (removed or {}).items():
        if identifier not in refs and is_name(identifier):
            refs[identifier] = ("", case_type, relationship)
    if refs:
        parts.append(element("index", "".join(
            element(tag, text(case_id), [("case_type", case_type)]
                    + ([("relationship", "extension")] if relationship == "extension" else []))
            for tag, (case_id, case_type, relationship) in sorted(refs.items()))))
    if view["closed"]:
        parts.append("<close/>")
    return _root(clean(doc.get("case_id") or doc.get("id")), clean(doc.get("user_id")),
                 _date_modified(doc), "".join(parts))


def purge_block(case_id: str, doc: Mapping[str, Any] | None) -> str:
    """`<close/>` only: take a case off the phone (`doc`: its last JSON, if still known)."""
    doc = doc or {}
    return _root(clean(case_id), clean(doc.get("user_id")), _date_modified(doc), "<close/>")


# --- the response around them ------------------------------------------------------------------

def response_head(username: str, items: int | None) -> str:
    count = "" if items is None else f' items="{items}"'
    return (f'<OpenRosaResponse xmlns="{RESPONSE_XMLNS}"{count}><message '
            f'nature="ota_restore_success">Successfully restored account {text(username)}!'
            f"</message>")


RESPONSE_TAIL = "</OpenRosaResponse>"


def error_response(message: str) -> str:
    return (f'<OpenRosaResponse xmlns="{RESPONSE_XMLNS}"><message nature="ota_restore_error">'
            f"{text(message)}</message></OpenRosaResponse>")


def sync_element(restore_id: str) -> str:
    return element("Sync", element("restore_id", text(restore_id)), [("xmlns", SYNC_XMLNS)])


def password_hash(worker: MobileWorker) -> str:
    """What the Registration block carries instead of the password: a salted hash in the old
    Django `sha1$salt$hash` format (as in HQ's documentation)."""
    salt = hashlib.md5(worker.id.encode()).hexdigest()[:5]
    return f"sha1${salt}${hashlib.sha1((salt + worker.password).encode()).hexdigest()}"


def user_data(d: Directory, w: MobileWorker) -> dict[str, str]:
    """The worker's custom data plus what HQ adds to it for the phone."""
    data = {"commcare_project": d.domain, "commcare_profile": "", **w.custom_data,
            "commcare_first_name": w.first_name, "commcare_last_name": w.last_name,
            "commcare_phone_number": w.phone_numbers[0] if w.phone_numbers else "",
            "commcare_user_type": "commcare"}
    if w.location_ids:
        data.update({"commcare_location_id": w.primary_location or "",
                     "commcare_primary_case_sharing_id": w.primary_location or "",
                     "commcare_location_ids": " ".join(w.location_ids)})
    return {k: clean(v) for k, v in sorted(data.items())}


def data_element(tag: str, data: Mapping[str, Any]) -> str:
    """`<tag><data key="k">v</data>...</tag>` (`get_data_element`)."""
    return element(tag, "".join(element("data", text(v), [("key", k)])
                                for k, v in data.items())) if data else f"<{tag}/>"


def registration(d: Directory, w: MobileWorker) -> str:
    content = (element("username", text(w.username.split("@")[0]))
               + element("password", text(password_hash(w)))
               + element("uuid", text(w.id)) + element("date", text(fmt_date(w.created_us)))
               + data_element("user_data", user_data(d, w)))
    return element("Registration", content, [("xmlns", REGISTRATION_XMLNS)])
