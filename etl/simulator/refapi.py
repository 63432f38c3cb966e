"""HQ's reference resources on the wire: mobile workers, web users, groups (tastypie `Resource`s
over Elasticsearch and Couch), locations v1 and v2 and location types (tastypie `ModelResource`s
over SQL).

What HQ's code does, and the simulator with it:
* Every list pages with tastypie's `Paginator` (limit/offset, `total_count`), and its `next` /
  `previous` carry **no path**: `?limit=20&offset=20`. tastypie builds them from
  `get_resource_uri()`, whose reverse lacks the domain and falls back to `''` (HQ's own test
  asserts `"?limit=1&offset=1"` for web users). Resolve them against the URL just requested.
* Mobile workers: active ones sorted by `username.exact`; `archived=true` lists only the
  deactivated ones; `group=<id>` lists that group's active workers in the group's order;
  `extras=true` adds recent submission counts. Unknown parameters are ignored. A missing or
  retired worker's detail is a 400 (`obj_get` returns None and dehydration fails).
* Groups: sorted by `name.exact`; `users` holds only active members. Missing detail: 404, empty.
* Web users: the project's members by username, `web_username=` and `last_modified.{gt,gte,lt,
  lte}=` filters; `tableau_groups` on the detail only.
* Locations and location types: archived locations never appear; filters follow tastypie's
  `build_filters` (`__` lookups; v2 also takes `.`), unknown names are ignored and fields
  without filtering are a 400; v2 may `order_by=last_modified`. URIs are absolute. These
  resources have no HQ throttle (their Meta is not `CustomResourceMeta`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from etl.simulator.api import Request, Response, Route, empty
from etl.simulator.directory import (
    Directory, Group, Location, LocationType, MobileWorker, WebUser, eula, naive_iso,
    naive_us6, parse_naive, permissions,
)
from etl.simulator.hqtime import from_us, parse_ms, to_us
from etl.simulator.query import BadRequest, page_uri, paging
from etl.simulator.records import RawRecord

TRUE_STRINGS = ("true", "t", "yes", "y", "1")  # dimagi.utils.parsing.string_to_boolean
NO_USER = ("The object 'None' has an empty attribute 'get_id' and doesn't allow a default or "
           "null value.")
CANNED = "Sorry, this request could not be processed. Please try again later."
MAX_LIMIT = {"user": 1000, "web_user": 1000, "group": 1000, "location": 1000,
             "location_v2": 5000, "location_type": 1000}
# The reference resources HQ throttles (CustomResourceMeta's HQThrottle); locations do not.
THROTTLED = frozenset({"user", "web_user", "group"})


class ValidationFailed(Exception):
    """Django's ValidationError from a filter value: tastypie answers 400 `{"error": [...]}`."""

    def __init__(self, message: str):
        super().__init__(message)
        self.messages = [message]


def _dump(data: Any) -> bytes:
    """tastypie's JSON: sorted keys, non-ASCII kept."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8")


def _true(value: str | None) -> bool:
    """`_safe_bool`: string_to_boolean, False when absent or unparseable."""
    return value is not None and value.strip().lower() in TRUE_STRINGS


def handle(store, domain, request: Request, r: Route, pairs: list[tuple[str, str]]) -> Response:
    action = (re.fullmatch(r"(\w[\w-]*)/(activate|deactivate)/?", r.rest)
              if r.resource in ("user", "web_user") else None)
    if action:  # tastypie's method_check(allowed=['post']) in `_modify_user_status`
        if request.method != "POST":
            return empty(405, Allow="POST")
        return _set_active(store, domain, r, action[1], action[2] == "activate")
    if request.method not in ("GET", "HEAD"):
        return empty(405, Allow="GET")
    fmt = dict(pairs).get("format")
    if fmt not in (None, "", "json"):
        raise BadRequest(f"format={fmt} is not supported by the simulator (only JSON)")
    with store.lock:
        try:
            return _HANDLERS[r.resource](store, domain, request, r, pairs)
        except ValidationFailed as exc:
            return Response(400, _dump({"error": exc.messages}))


def _detail_id(rest: str) -> str | None:
    """`<id>/` (or `<id>`); None for anything with more segments."""
    key = rest[:-1] if rest.endswith("/") else rest
    return key if key and "/" not in key else None


def _list(objects: list[Any], pairs: list[tuple[str, str]], max_limit: int,
          render: Callable[[Any], dict]) -> Response:
    """tastypie's `Paginator.page()` over an already filtered, ordered list."""
    limit, offset = paging(dict(pairs), max_limit)
    total = len(objects)
    meta = {"limit": limit, "offset": offset, "total_count": total,
            "next": None if offset + limit >= total else page_uri("", pairs, limit,
                                                                  offset + limit),
            "previous": None if offset - limit < 0 else page_uri("", pairs, limit,
                                                                 offset - limit)}
    return Response(200, _dump({"meta": meta,
                                "objects": [render(o) for o in objects[offset:offset + limit]]}))


# --- mobile workers ----------------------------------------------------------------------------

def worker_json(d: Directory, w: MobileWorker, list_uri: str) -> dict:
    """`v0_5.CommCareUserResource` (newest: with `last_modified`)."""
    user_data = {"commcare_project": d.domain, "commcare_profile": "", **w.custom_data}
    if w.location_ids:
        user_data.update({"commcare_location_id": w.primary_location,
                          "commcare_primary_case_sharing_id": w.primary_location,
                          "commcare_location_ids": " ".join(w.location_ids)})
    return {
        "id": w.id, "username": w.username, "first_name": w.first_name,
        "last_name": w.last_name, "email": w.email,
        "default_phone_number": w.phone_numbers[0] if w.phone_numbers else None,
        "phone_numbers": list(w.phone_numbers), "groups": d.group_ids_of(w.id),
        "user_data": user_data, "eulas": "[]", "primary_location": w.primary_location,
        "locations": list(w.location_ids), "last_modified": naive_us6(w.last_modified_us),
        "resource_uri": f"{list_uri}{w.id}/",
    }


def _users(store, domain, request: Request, r: Route, pairs) -> Response:
    d: Directory = domain.directory
    last = dict(pairs)
    extras = _extras(store, domain) if _true(last.get("extras")) else None

    def render(w: MobileWorker) -> dict:
        obj = worker_json(d, w, r.list_uri)
        if extras is not None:
            obj["extras"] = extras(w.id)
        return obj

    if r.rest:
        user_id = _detail_id(r.rest)
        w = d.workers.get(user_id) if user_id else None
        if user_id is None:
            return empty(404)
        if w is None or w.deleted:
            return Response(400, _dump({"error": NO_USER}))
        return Response(200, _dump(render(w)))
    group_id = last.get("group")
    if group_id:
        g = d.groups.get(group_id)
        if g is None or g.deleted:
            raise BadRequest(f"Project {d.domain} has no group with id={group_id}")
        workers = [d.workers[u] for u in g.users
                   if u in d.workers and d.worker_visible(u)]
    else:
        inactive = _true(last.get("archived"))
        workers = sorted((w for w in d.workers.values()
                          if not w.deleted and w.is_active != inactive),
                         key=lambda w: w.username)
    return _list(workers, pairs, MAX_LIMIT["user"], render)


def _extras(store, domain) -> Callable[[str], dict]:
    """`extras=true`: each worker's submissions (received_on) and completions (form
    `meta.timeEnd`) over the last 30 days and last calendar month, non-archived forms only.
    HQ counts back from the wall clock; the simulator from its own clock."""
    now = from_us(store.clock_us).replace(tzinfo=None)
    this_month = datetime(now.year, now.month, 1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    windows = {"last_30": (now - timedelta(days=30), now), "last_month": (last_month, this_month)}
    bounds = {k: (to_us(a) // 1000, to_us(b) // 1000) for k, (a, b) in windows.items()}
    counts: dict[str, dict[str, int]] = {}
    for rec in domain.forms.ordered:
        if isinstance(rec, RawRecord) or rec.archived:
            continue
        doc = rec.doc(b"")
        meta = doc.get("metadata") or {}
        user_id = meta.get("userID")
        received, completed = rec.keys[0], parse_ms(meta.get("timeEnd"))
        mine = counts.setdefault(user_id, {})
        for name, (low, high) in bounds.items():
            if received is not None and low <= received <= high:
                mine[f"submitted_{name}"] = mine.get(f"submitted_{name}", 0) + 1
            if completed is not None and low <= completed <= high:
                mine[f"completed_{name}"] = mine.get(f"completed_{name}", 0) + 1

    def of(user_id: str) -> dict:
        mine = counts.get(user_id, {})
        return {k: mine.get(k, 0) for k in ("submitted_last_30", "completed_last_30",
                                            "submitted_last_month", "completed_last_month")}
    return of


def _set_active(store, domain, r: Route, user_id: str, active: bool) -> Response:
    """POST `<id>/activate/` or `<id>/deactivate/`: 202 `{}` (`_modify_user_status`)."""
    with store.lock:
        d: Directory = domain.directory
        try:
            if r.resource == "user":
                d.set_mobile_worker_active(store.tick(), user_id, active)
            else:
                d.set_web_user_active(store.tick(), user_id, active)
        except KeyError:
            return Response(404, _dump({"error_message": CANNED}))
    return Response(202, b"{}")


# --- web users ---------------------------------------------------------------------------------

def web_user_json(d: Directory, u: WebUser, list_uri: str, detail: bool = False) -> dict:
    """`v0_5.WebUserResource` (newest fields; `tableau_groups` is `use_in='detail'`)."""
    obj = {
        "id": u.id, "username": u.username, "first_name": u.first_name,
        "last_name": u.last_name, "email": u.email,
        "default_phone_number": u.phone_numbers[0] if u.phone_numbers else None,
        "phone_numbers": list(u.phone_numbers), "eulas": _eula(u), "role": u.role,
        "is_admin": u.is_admin, "permissions": permissions(u.role),
        "primary_location_id": u.primary_location or "",
        "assigned_location_ids": list(u.location_ids), "profile": u.profile,
        "user_data": {"commcare_profile": "", **u.custom_data},
        "tableau_role": u.tableau_role, "is_active_in_domain": u.is_active_in_domain,
        "last_modified": naive_us6(u.last_modified_us), "resource_uri": f"{list_uri}{u.id}/",
    }
    if detail:
        obj["tableau_groups"] = []
    return obj


def _eula(u: WebUser) -> str:
    return eula(u.created_us)


WEB_USER_DATES = {"gt": lambda v, b: v > b, "gte": lambda v, b: v >= b,
                  "lt": lambda v, b: v < b, "lte": lambda v, b: v <= b}


def _web_users(store, domain, request: Request, r: Route, pairs) -> Response:
    d: Directory = domain.directory
    if r.rest:
        user_id = _detail_id(r.rest)
        if user_id is None:
            return empty(404)
        u = d.web_users.get(user_id)
        if u is None or u.removed:
            return Response(400, _dump({"error": NO_USER}))
        return Response(200, _dump(web_user_json(d, u, r.list_uri, detail=True)))
    last = dict(pairs)
    members = sorted((u for u in d.web_users.values() if not u.removed),
                     key=lambda u: u.username)
    name = last.get("web_username")
    if name:
        members = [u for u in members if u.username == name.lower()]
    for key, value in last.items():
        field_name, _, op = key.partition(".")
        if field_name != "last_modified" or op not in WEB_USER_DATES:
            continue
        try:
            bound = parse_naive(value)
        except ValueError:
            raise BadRequest(f"Invalid date for '{key}': {value}") from None
        test = WEB_USER_DATES[op]
        members = [u for u in members if test(u.last_modified_us, bound)]
    return _list(members, pairs, MAX_LIMIT["web_user"],
                 lambda u: web_user_json(d, u, r.list_uri))


# --- groups ------------------------------------------------------------------------------------

def group_json(d: Directory, g: Group, list_uri: str) -> dict:
    """`v0_4.GroupResource` over `WrappedGroup`: `users` are the active members only."""
    return {"id": g.id, "domain": d.domain, "name": g.name,
            "users": [u for u in g.users if d.worker_visible(u)],
            "case_sharing": g.case_sharing, "reporting": g.reporting,
            "metadata": dict(g.metadata), "resource_uri": f"{list_uri}{g.id}/"}


def _groups(store, domain, request: Request, r: Route, pairs) -> Response:
    d: Directory = domain.directory
    if r.rest:
        group_id = _detail_id(r.rest)
        g = d.groups.get(group_id) if group_id else None
        if g is None or g.deleted:
            return empty(404)
        return Response(200, _dump(group_json(d, g, r.list_uri)))
    groups = sorted((g for g in d.groups.values() if not g.deleted), key=lambda g: g.name)
    return _list(groups, pairs, MAX_LIMIT["group"], lambda g: group_json(d, g, r.list_uri))


# --- locations: tastypie's ModelResource filtering ---------------------------------------------

ALL = "ALL"
QUERY_TERMS = frozenset({
    "exact", "iexact", "contains", "icontains", "gt", "gte", "lt", "lte", "in", "startswith",
    "istartswith", "endswith", "iendswith", "range", "year", "month", "day", "week_day",
    "hour", "minute", "second", "isnull", "search", "regex", "iregex"})


@dataclass(frozen=True)
class Field:
    kind: str  # "int", "str", "datetime", "decimal", "dict", "fk"
    get: Callable[[Any], Any]


def _convert(value: Any, kind: str) -> Any:
    """A filter value as the ORM would take it for a field of `kind`."""
    if value is None or isinstance(value, bool):
        return value
    if kind == "datetime":
        try:
            return parse_naive(value)
        except ValueError:
            raise ValidationFailed(
                f"“{value}” value has an invalid format. It must be in "
                f"YYYY-MM-DD HH:MM[:ss[.uuuuuu]][TZ] format.") from None
    if kind == "decimal":
        try:
            return Decimal(value)
        except InvalidOperation:
            raise ValidationFailed(f"“{value}” value must be a decimal number.") from None
    if kind == "int":
        try:
            return int(value)
        except ValueError:
            raise BadRequest("Invalid resource lookup data provided (mismatched type).") from None
    return value


def _stored(value: Any, kind: str) -> Any:
    if value is None:
        return None
    return Decimal(value) if kind == "decimal" else value


def _predicate(field: Field, lookup: str, value: Any) -> Callable[[Any], bool]:
    kind, get = field.kind, field.get
    if lookup == "isnull" or (lookup == "exact" and value is None):
        wanted = True if value is None else bool(value)
        return lambda o: (get(o) is None) == wanted
    if lookup in ("in", "range"):
        values = [_convert(v, kind) for v in value]
        if lookup == "in":
            return lambda o: _stored(get(o), kind) in values
        if len(values) != 2:
            raise BadRequest("Invalid resource lookup data provided (mismatched type).")
        low, high = values
        return lambda o: (v := _stored(get(o), kind)) is not None and low <= v <= high
    if lookup in ("year", "month", "day"):
        if kind != "datetime":
            raise BadRequest(f"'{lookup}' lookups are not supported by the simulator here")
        number = _convert(value, "int")
        return lambda o: get(o) is not None and getattr(from_us(get(o)), lookup) == number
    if kind in ("str", "int", "datetime", "decimal"):
        target = _convert(value, kind)
        ops = {"exact": lambda v: v == target, "gt": lambda v: v > target,
               "gte": lambda v: v >= target, "lt": lambda v: v < target,
               "lte": lambda v: v <= target}
        if kind == "str":
            text = str(target)
            ops.update({
                "iexact": lambda v: v.lower() == text.lower(),
                "contains": lambda v: text in v, "icontains": lambda v: text.lower() in v.lower(),
                "startswith": lambda v: v.startswith(text),
                "istartswith": lambda v: v.lower().startswith(text.lower()),
                "endswith": lambda v: v.endswith(text),
                "iendswith": lambda v: v.lower().endswith(text.lower()),
                "regex": lambda v: re.search(text, v) is not None,
                "iregex": lambda v: re.search(text, v, re.I) is not None})
        op = ops.get(lookup)
        if op is None:
            raise BadRequest(f"'{lookup}' lookups are not supported by the simulator here")
        return lambda o: (v := _stored(get(o), kind)) is not None and op(v)
    raise BadRequest(f"filtering on a {kind} field is not supported by the simulator")


def _filters(items: list[tuple[str, Any]], fields: dict[str, Field],
             filtering: dict[str, Any], listed: Callable[[str], list[str]] | None
             ) -> Callable[[], list[Callable[[Any], bool]]]:
    """`ModelResource.build_filters`: structural errors now (in parameter order), values later
    (a lazy queryset only meets them when it runs). `listed(key)`: every value of a repeated
    key (QueryDict.getlist), for `in` and `range`; None: split the one value."""
    parsed = []
    for expr, value in items:
        if expr == "domain":  # the URL's domain overrides any domain parameter
            continue
        bits = expr.split("__")
        name = bits.pop(0)
        if name not in fields:
            continue  # "It's not a field we know about. Move along citizen."
        lookup = bits.pop() if bits and bits[-1] in QUERY_TERMS else "exact"
        if name not in filtering:
            raise BadRequest(f"The '{name}' field does not allow filtering.")
        allowed = filtering[name]
        if allowed != ALL and lookup not in allowed:
            raise BadRequest(f"'{lookup}' is not an allowed filter on the '{name}' field.")
        if bits:
            raise BadRequest(f"The '{name}' field does not support relations.")
        if value in ("true", "True"):
            value = True
        elif value in ("false", "False"):
            value = False
        elif value in ("nil", "none", "None"):
            value = None
        if lookup in ("in", "range") and isinstance(value, str) and value:
            parts = listed(expr) if listed is not None else [value]
            value = [piece for part in parts for piece in part.split(",")]
        parsed.append((fields[name], lookup, value))
    return lambda: [_predicate(f, lookup, value) for f, lookup, value in parsed]


def _order(objects: list[Any], pairs: list[tuple[str, str]], fields: dict[str, Field],
           ordering: tuple[str, ...]) -> list[Any]:
    """`ModelResource.apply_sorting` (objects arrive in primary key order)."""
    keys = [v for k, v in pairs if k == "order_by"]
    plan = []
    for order_by in keys:
        name = order_by.split("__")[0]
        descending = name.startswith("-")
        name = name[1:] if descending else name
        if name not in fields:
            raise BadRequest(f"No matching '{name}' field for ordering on.")
        if name not in ordering:
            raise BadRequest(f"The '{name}' field does not allow ordering.")
        plan.append((fields[name].get, descending))
    for get, descending in reversed(plan):
        objects = sorted(objects, key=lambda o: (get(o) is None, get(o) or 0),
                         reverse=descending)
    return objects


def _location_fields(d: Directory) -> dict[str, Field]:
    return {
        "id": Field("int", lambda loc: loc.pk),
        "name": Field("str", lambda loc: loc.name),
        "domain": Field("str", lambda loc: d.domain),
        "location_id": Field("str", lambda loc: loc.location_id),
        "site_code": Field("str", lambda loc: loc.site_code),
        "external_id": Field("str", lambda loc: loc.external_id),
        "created_at": Field("datetime", lambda loc: loc.created_us),
        "last_modified": Field("datetime", lambda loc: loc.last_modified_us),
        "latitude": Field("decimal", lambda loc: loc.latitude),
        "longitude": Field("decimal", lambda loc: loc.longitude),
        "location_data": Field("dict", lambda loc: loc.metadata),
        "location_type": Field("fk", lambda loc: loc.type_id),
        "parent": Field("fk", lambda loc: loc.parent_id),
        "resource_uri": Field("str", lambda loc: None),
    }


V1_FILTERING = {"domain": ("exact",), "site_code": ("exact",), "external_id": ("exact",),
                "created_at": ALL, "last_modified": ALL, "latitude": ALL, "longitude": ALL}
V2_FIELDS = ("domain", "location_id", "name", "site_code", "last_modified", "latitude",
             "longitude", "location_data")
V2_FILTERING = {"domain": ("exact",), "name": ("exact",), "site_code": ("exact",),
                "last_modified": ("gt", "gte", "lt", "lte")}


def _uri(r: Route, name: str) -> str:
    """The list path of resource `name` in the request's URL style and version."""
    if r.new_style:
        return f"/a/{r.domain}/api/{name}/{r.version}/"
    return f"/a/{r.domain}/api/{r.version}/{name}/"


def location_v1_json(d: Directory, loc: Location, base: str, r: Route) -> dict:
    """`locations/resources/v0_5.LocationResource`: absolute URIs, naive ISO times."""
    parent = d.locations.get(loc.parent_id) if loc.parent_id else None
    own = f"{base}{_uri(r, 'location')}"
    return {
        "id": loc.pk, "location_id": loc.location_id, "name": loc.name, "domain": d.domain,
        "site_code": loc.site_code, "external_id": loc.external_id,
        "created_at": naive_iso(loc.created_us), "last_modified": naive_iso(loc.last_modified_us),
        "latitude": loc.latitude, "longitude": loc.longitude, "location_data": dict(loc.metadata),
        "location_type": f"{base}{_uri(r, 'location_type')}{loc.type_id}/",
        "parent": f"{own}{parent.location_id}/" if parent is not None else None,
        "resource_uri": f"{own}{loc.location_id}/",
    }


def location_v2_json(d: Directory, loc: Location) -> dict:
    """`locations/resources/v0_6.LocationResource`: no ids or URIs, the type by code and name,
    the parent by location_id (`""` for a root)."""
    t = d.type_of(loc)
    return {
        "domain": d.domain, "location_id": loc.location_id, "name": loc.name,
        "site_code": loc.site_code, "last_modified": naive_iso(loc.last_modified_us),
        "latitude": loc.latitude, "longitude": loc.longitude, "location_data": dict(loc.metadata),
        "location_type_code": t.code, "location_type_name": t.name,
        "parent_location_id": loc.parent_id or "",
    }


def location_type_json(d: Directory, t: LocationType, base: str, r: Route) -> dict:
    own = f"{base}{_uri(r, 'location_type')}"
    return {"id": t.id, "domain": d.domain, "name": t.name, "code": t.code,
            "parent": f"{own}{t.parent_id}/" if t.parent_id is not None else None,
            "administrative": t.administrative, "shares_cases": t.shares_cases,
            "view_descendants": t.view_descendants, "resource_uri": f"{own}{t.id}/"}


def _base(request: Request) -> str:
    return f"http://{request.host}"  # HQ: settings.BASE_ADDRESS (absolute_reverse)


def _locations(store, domain, request: Request, r: Route, pairs) -> Response:
    d: Directory = domain.directory
    v2 = r.resource == "location_v2"
    base = _base(request)

    def render(loc: Location) -> dict:
        return location_v2_json(d, loc) if v2 else location_v1_json(d, loc, base, r)

    if r.rest:
        location_id = _detail_id(r.rest)
        loc = d.locations.get(location_id) if location_id else None
        if loc is None or loc.is_archived:
            return empty(404)
        return Response(200, _dump(render(loc)))
    fields = _location_fields(d)
    last = dict(pairs)
    live = sorted((loc for loc in d.locations.values() if not loc.is_archived),
                  key=lambda loc: loc.pk)
    if v2:
        fields = {k: fields[k] for k in V2_FIELDS}
        items = {"__".join(k.split(".")): v for k, v in last.items()}
        code = items.pop("location_type_code", None)
        parent = items.pop("parent_location_id", None)
        if code:
            live = [loc for loc in live if d.type_of(loc).code == code]
        if parent:
            live = [loc for loc in live if loc.parent_id == parent]
        compile_values = _filters(list(items.items()), fields, V2_FILTERING, None)
        live = _order(live, pairs, fields, ("last_modified",))
    else:
        def listed(key: str) -> list[str]:
            return [v for k, v in pairs if k == key]
        compile_values = _filters(list(last.items()), fields, V1_FILTERING, listed)
        live = _order(live, pairs, fields, ())
    paging(last, MAX_LIMIT[r.resource])  # limit and offset are read before the query runs
    preds = compile_values()
    return _list([loc for loc in live if all(p(loc) for p in preds)], pairs,
                 MAX_LIMIT[r.resource], render)


def _location_types(store, domain, request: Request, r: Route, pairs) -> Response:
    d: Directory = domain.directory
    base = _base(request)
    if r.rest:
        key = _detail_id(r.rest)
        t = d.location_types.get(int(key)) if key and key.isdigit() else None
        if t is None:
            return empty(404)
        return Response(200, _dump(location_type_json(d, t, base, r)))
    fields = {name: Field(kind, lambda t, n=name: getattr(t, n, None))
              for name, kind in (("id", "int"), ("domain", "str"), ("name", "str"),
                                 ("code", "str"), ("parent", "fk"), ("administrative", "bool"),
                                 ("shares_cases", "bool"), ("view_descendants", "bool"),
                                 ("resource_uri", "str"))}
    compile_values = _filters(list(dict(pairs).items()), fields, {"domain": ("exact",)}, None)
    types = _order(sorted(d.location_types.values(), key=lambda t: t.id), pairs, fields, ())
    paging(dict(pairs), MAX_LIMIT["location_type"])
    compile_values()
    return _list(types, pairs, MAX_LIMIT["location_type"],
                 lambda t: location_type_json(d, t, base, r))


_HANDLERS = {"user": _users, "web_user": _web_users, "group": _groups, "location": _locations,
             "location_v2": _locations, "location_type": _location_types}
RESOURCES = frozenset(_HANDLERS)


def snapshot(store, domain_name: str, resource: str, host: str) -> dict:
    """id -> the object as the `/api/v0.5/` (v2: `/api/v0.6/`) list serves it now; mobile
    workers include the deactivated ones (`archived=true`), never the retired."""
    from etl.simulator.api import route
    with store.lock:
        domain = store.domain(domain_name)
        d: Directory = domain.directory
        name = {"user": "user", "web_user": "web-user", "group": "group",
                "location": "location", "location_v2": "location",
                "location_type": "location_type"}[resource]
        version = "v0.6" if resource == "location_v2" else "v0.5"
        r = route(f"/a/{domain_name}/api/{version}/{name}/")
        base = f"http://{host}"
        if resource == "user":
            return {w.id: worker_json(d, w, r.list_uri)
                    for w in d.workers.values() if not w.deleted}
        if resource == "web_user":
            return {u.id: web_user_json(d, u, r.list_uri)
                    for u in d.web_users.values() if not u.removed}
        if resource == "group":
            return {g.id: group_json(d, g, r.list_uri) for g in d.groups.values() if not g.deleted}
        if resource == "location_type":
            return {t.id: location_type_json(d, t, base, r) for t in d.location_types.values()}
        live = [loc for loc in d.locations.values() if not loc.is_archived]
        if resource == "location":
            return {loc.location_id: location_v1_json(d, loc, base, r) for loc in live}
        return {loc.location_id: location_v2_json(d, loc) for loc in live}
