"""HQ's API as HTTP: routes, authentication, envelopes and error bodies.

Handlers return a `Response`; `server.py` puts it on the wire (and applies faults).
List bodies are assembled from each record's pre-serialized bytes, never re-encoded.
`route` also recognises the pages answered elsewhere (`PAGES`: the export, exportapi.py; the
restore, restore.py); their paths without the trailing slash get Django's 301 to it. The data
APIs' 401 challenge is `Digest realm="CommCare HQ"` (the pages': realm "DJANGO", plus Basic).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping
from urllib.parse import parse_qsl, urlencode

from etl.simulator import appdef, auth
from etl.simulator.digest import REALM, NonceBook
from etl.simulator.faults import THROTTLED_MESSAGE
from etl.simulator.hqtime import fmt_us
from etl.simulator.query import (
    BadRequest, next_cursor, page_uri, parse_v05, parse_v2, run_v05, run_v2,
)
from etl.simulator.ratelimit import RateLimiter
from etl.simulator.records import Record
from etl.simulator.store import Domain, Store

JSON = "application/json; charset=utf-8"
HTML = "text/html; charset=utf-8"

_API = re.compile(
    r"^/a/(?P<domain>[^/]+)/api/(?:(?P<old>v0\.\d+)/(?P<old_name>[\w-]+)"
    r"|(?P<new_name>[\w-]+)/(?P<new>v\d+))(?:/(?P<rest>.*))?$")
# The non-API pages HQ serves with the same login: the legacy export, the export list it
# redirects to, and the OTA restore. Resource name -> path under /a/<domain>/.
PAGES = {"export": "reports/export/", "export_list": "data/excel_export_data/",
         "restore": "phone/restore/"}
_PAGE = re.compile(r"^/a/(?P<domain>[^/]+)/(?P<page>reports/export|data/excel_export_data"
                   r"|phone/restore)(?P<slash>/?)$")
RESOURCES = {
    ("case", "v0.5"): "case", ("case", "v1"): "case",
    ("form", "v0.5"): "form", ("form", "v1"): "form",
    ("application", "v0.5"): "application", ("application", "v1"): "application",
    ("case", "v0.6"): "case_v2", ("case", "v2"): "case_v2",
    ("user", "v0.5"): "user", ("user", "v1"): "user",
    ("web-user", "v0.5"): "web_user", ("web-user", "v1"): "web_user",
    ("group", "v0.5"): "group", ("group", "v1"): "group",
    ("location", "v0.5"): "location", ("location", "v1"): "location",
    ("location", "v0.6"): "location_v2", ("location", "v2"): "location_v2",
    ("location_type", "v0.5"): "location_type", ("location_type", "v1"): "location_type",
}
# Resources whose tastypie Meta carries HQThrottle (locations' Meta does not: never throttled).
THROTTLED = frozenset({"case", "form", "application", "case_v2", "user", "web_user", "group"})


@dataclass
class Request:
    method: str
    path: str
    query: str
    authorization: str | None
    host: str  # for absolute URLs (Case API v2's `next`)
    body: bytes = b""
    target: str = ""  # the request target exactly as sent (Digest's `uri`); "" = path?query

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query, keep_blank_values=True)

    @property
    def uri(self) -> str:
        return self.target or (f"{self.path}?{self.query}" if self.query else self.path)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)
    replica: int | None = None  # the index copy that answered a v0.5 list (for the request log)
    # A body made as it is sent (chunked transfer encoding) instead of `body`.
    stream: Iterator[bytes] | None = None


@dataclass(frozen=True)
class Route:
    resource: str  # "case", "form", "application", "case_v2", "user", "web_user", "group",
    #                "location", "location_v2" or "location_type"
    domain: str
    list_uri: str  # this URL style's list path, e.g. /a/demo/api/case/v1/
    rest: str  # what follows the list path ("" for the list)
    version: str = "v0.5"  # as written in the URL: v0.5, v0.6, v1, v2
    new_style: bool = False  # /api/<resource>/<version>/ rather than /api/<version>/<resource>/


def route(path: str) -> Route | None:
    match = _API.match(path)
    if not match:
        page = _PAGE.match(path)
        if page is None:
            return None
        # Without its slash the path is Django's APPEND_SLASH redirect (`rest` = "redirect").
        return Route(next(k for k, v in PAGES.items() if v == page["page"] + "/"),
                     page["domain"], f"/a/{page['domain']}/{page['page']}/",
                     "" if page["slash"] else "redirect")
    if match["old"]:
        name, version = match["old_name"], match["old"]
        list_uri = f"/a/{match['domain']}/api/{version}/{name}/"
    else:
        name, version = match["new_name"], match["new"]
        list_uri = f"/a/{match['domain']}/api/{name}/{version}/"
    resource = RESOURCES.get((name, version))
    if resource is None:
        return None
    return Route(resource, match["domain"], list_uri, match["rest"] or "", version,
                 not match["old"])


def error(status: int, message: str) -> Response:
    return Response(status, json.dumps({"error": message}).encode())


def empty(status: int, **headers: str) -> Response:
    """HQ's bare responses (401, 403, 404, 429): no body, Django's default content type."""
    return Response(status, b"", HTML, list(headers.items()))


API_REALM = "CommCare HQ"  # the data APIs' challenge (the pages use digest.REALM, "DJANGO")


def unauthorized(nonces: NonceBook | None = None, realm: str = API_REALM, stale: bool = False,
                 basic: bool = False) -> Response:
    """401, empty, with a Digest challenge (from `nonces`, so a client can answer it; without
    one the nonce is made up) and, with `basic`, a Basic one after it."""
    if nonces is not None:
        challenge = nonces.challenge(realm, stale)
    else:
        challenge = (f'Digest realm="{realm}", nonce="{uuid.uuid4().hex}", qop="auth", '
                     f'opaque="{uuid.uuid4().hex}", algorithm="MD5", stale="false"')
    response = empty(401, **{"WWW-Authenticate": challenge})
    if basic:
        response.headers.append(("WWW-Authenticate", f'Basic realm="{realm}"'))
    return response


def handle(store: Store, users: auth.Users, request: Request, r: Route,
           limiter: RateLimiter | None = None, *, passwords: Mapping[str, str] | None = None,
           nonces: NonceBook | None = None) -> tuple[Response, str | None]:
    """Answer one API request: (response, authenticated username). With `passwords` (web
    logins) and `nonces`, Basic and Digest logins work too."""
    pairs = request.pairs
    outcome = auth.identify(users, request.authorization, pairs,
                            allow_query_credentials=r.resource != "case_v2",
                            passwords=passwords, nonces=nonces, method=request.method,
                            uri=request.uri)
    user = outcome.username
    if user is None:
        return unauthorized(nonces, stale=outcome.stale), None
    if not auth.may_access(users, user, r.domain):
        return empty(403), user
    domain = store.domains.get(r.domain)
    if domain is None:
        return empty(404), user
    if limiter is not None and r.resource in THROTTLED:
        throttled = _throttle(limiter, domain, r)
        if throttled is not None:
            return throttled, user
    handler = _HANDLERS.get(r.resource)
    if handler is None:
        from etl.simulator import refapi  # imports this module: resolved at call time
        handler = refapi.handle
    try:
        return handler(store, domain, request, r, pairs), user
    except BadRequest as exc:
        return error(400, str(exc)), user


def _throttle(limiter: RateLimiter, domain: Domain, r: Route) -> Response | None:
    """HQ checks its per-project rate limit after authentication and permissions: tastypie
    resources answer tastypie's bare 429 (no Retry-After: `HQThrottle.should_be_throttled`
    returns a bool), the Case API v2 views `api_throttle`'s 429 with Retry-After."""
    wait = limiter.acquire(domain.name, domain.directory.active_worker_count())
    if wait is None:
        return None
    seconds = str(max(1, math.ceil(wait)))
    if r.resource == "case_v2" or limiter.retry_after_on_v05:
        return empty(429, **{"Retry-After": seconds})
    return empty(429)


# --- v0.5 cases and forms ---------------------------------------------------------------------

def _v05(store: Store, domain: Domain, request: Request, r: Route,
         pairs: list[tuple[str, str]]) -> Response:
    if request.method not in ("GET", "HEAD"):
        return empty(405, Allow="GET")
    fmt = dict(pairs).get("format")
    if fmt not in (None, "", "json"):
        raise BadRequest(f"format={fmt} is not supported by the simulator (only JSON)")
    prefix = r.list_uri.encode()
    coll = domain.collection(r.resource)
    if r.rest:
        record_id = r.rest[:-1] if r.rest.endswith("/") else r.rest
        with store.lock:
            record = coll.get(record_id) if "/" not in record_id else None
        if record is None:
            return empty(404)
        return Response(200, record.body(prefix))
    query = parse_v05(r.resource, pairs)
    with store.lock:
        replica = store.draw_replica()
        total, page = run_v05(coll, query, store.replica_salt(replica))
        store.after_v05_list(r.domain, r.resource, page)  # may re-index some of `page`
    limit, offset = query.limit, query.offset
    next_uri = (None if offset + limit >= total
                else page_uri(r.list_uri, pairs, limit, offset + limit))
    previous = None if offset - limit < 0 else page_uri(r.list_uri, pairs, limit, offset - limit)
    head = (f'{{"meta": {{"limit": {limit}, "next": {json.dumps(next_uri)}, "offset": {offset}, '
            f'"previous": {json.dumps(previous)}, "total_count": {total}}}, "objects": [')
    return Response(200, _join(head.encode(), page, lambda rec: rec.parts(prefix), b"]}"),
                    replica=replica)


def _join(head: bytes, records: list[Record], parts: Callable[[Record], tuple[bytes, ...]],
          tail: bytes) -> bytes:
    chunks = [head]
    for n, record in enumerate(records):
        if n:
            chunks.append(b", ")
        chunks.extend(parts(record))
    chunks.append(tail)
    return b"".join(chunks)


# --- applications -----------------------------------------------------------------------------

def _applications(store: Store, domain: Domain, request: Request, r: Route,
                  pairs: list[tuple[str, str]]) -> Response:
    if request.method not in ("GET", "HEAD"):
        return empty(405, Allow="GET")
    apps = domain.apps
    extras = [v for k, v in pairs if k == "extras"][-1:]  # HQ: request.GET.get (the last),
    if extras and extras[0].lower() in ("true", "yes", "1"):  # then string_to_boolean
        apps = [appdef.with_extras(a, domain.name) for a in apps]
    if r.rest:
        app_id = r.rest.rstrip("/")
        app = next((a for a in apps if a["id"] == app_id), None)
        if app is None:
            return empty(404)
        return Response(200, json.dumps(app, sort_keys=True, ensure_ascii=False).encode())
    # DoesNothingPaginator: every app at once, limit/offset ignored.
    body = {"meta": {"limit": None, "next": None, "offset": 0, "previous": None,
                     "total_count": len(apps)}, "objects": apps}
    return Response(200, json.dumps(body, sort_keys=True, ensure_ascii=False).encode())


# --- Case API v2 ------------------------------------------------------------------------------

def _case_v2(store: Store, domain: Domain, request: Request, r: Route,
             pairs: list[tuple[str, str]]) -> Response:
    coll = domain.cases
    rest = r.rest.rstrip("/")
    if rest == "bulk-fetch":
        if request.method != "POST":
            return error(405, "Request method not allowed")
        return _bulk_fetch(store, domain, request)
    if request.method not in ("GET", "HEAD"):
        return error(405, "Request method not allowed")
    if rest.startswith("ext/"):
        external_id = rest[4:]
        with store.lock:
            found = [rec for rec in coll.ordered if rec.terms[5] == external_id]
        if not found:
            return error(404, f"Case '{external_id}' not found")
        if len(found) > 1:
            return error(400, f"There are multiple cases with external_id '{external_id}'")
        return Response(200, found[0].v2_body())
    if rest:
        ids = rest.split(",")
        with store.lock:
            records = [coll.get(i) for i in ids]
        if len(ids) == 1:
            if records[0] is None:
                return error(404, f"Case '{ids[0]}' not found")
            return Response(200, records[0].v2_body())
        return _bulk_body([(i, rec) for i, rec in zip(ids, records)], [])
    query = parse_v2(pairs)
    with store.lock:
        total, page = run_v2(coll, query, domain.deprecated_types)
        bodies = [rec.v2_body() for rec in page]
    next_url = None
    if page and len(page) == query.limit:
        last = json.loads(bodies[-1])
        stamp = last.get("indexed_on") if isinstance(last, dict) else None
        cursor = next_cursor(query, stamp or fmt_us(page[-1].ix * 1000), page[-1].id)
        query = urlencode({"cursor": cursor})
        next_url = f"http://{request.host}/a/{r.domain}/api/case/v2/?{query}"
    head = f'{{"matching_records": {total}, "cases": ['.encode()
    tail = f'], "next": {json.dumps(next_url)}}}'.encode()
    return Response(200, _join(head, page, lambda rec: (rec.v2_body(),), tail))


def _bulk_fetch(store: Store, domain: Domain, request: Request) -> Response:
    try:
        body = json.loads(request.body or b"{}")
        case_ids = list(body.get("case_ids") or [])
        external_ids = list(body.get("external_ids") or [])
    except (ValueError, AttributeError, TypeError):
        raise BadRequest("Request body must be a JSON object with case_ids and/or external_ids")
    with store.lock:
        by_case_id = [(i, domain.cases.get(i)) for i in case_ids]
        by_external = {}
        if external_ids:
            wanted = set(external_ids)
            for rec in domain.cases.ordered:
                if rec.terms[5] in wanted:
                    by_external.setdefault(rec.terms[5], rec)
    return _bulk_body(by_case_id, [(e, by_external.get(e)) for e in external_ids])


def _bulk_body(by_case_id: list[tuple[str, Record | None]],
               by_external: list[tuple[str, Record | None]]) -> Response:
    chunks, found, missing = [], 0, 0
    for key, items in (("case_id", by_case_id), ("external_id", by_external)):
        for wanted, rec in items:
            if rec is None:
                missing += 1
                chunks.append(json.dumps({key: wanted, "error": "not found"}).encode())
            else:
                found += 1
                chunks.append(rec.v2_body())
    head = f'{{"matching_records": {found}, "missing_records": {missing}, "cases": ['.encode()
    return Response(200, head + b", ".join(chunks) + b"]}")


_HANDLERS = {"case": _v05, "form": _v05, "application": _applications, "case_v2": _case_v2}
# The reference resources (user, web_user, group, location, location_v2, location_type) are
# answered by refapi.handle.


# --- faults -----------------------------------------------------------------------------------

_ERROR_PAGES = {
    500: "<h1>Server Error (500)</h1><p>Sorry, something went wrong. CommCare HQ has been "
         "notified.</p>",
    502: "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
         "</h1></center><hr><center>nginx</center></body></html>",
    503: "<!DOCTYPE html><html><head><title>CommCare HQ is down for maintenance</title></head>"
         "<body><h1>We'll be back shortly</h1></body></html>",
    504: "<html><head><title>504 Gateway Time-out</title></head><body><center><h1>504 Gateway "
         "Time-out</h1></center><hr><center>nginx</center></body></html>",
}
LOGIN_PAGE = ("<!DOCTYPE html><html lang=\"en\"><head><title>Log In :: CommCare HQ</title></head>"
              "<body><form method=\"post\" action=\"/accounts/login/\"><input name=\"username\">"
              "<input type=\"password\" name=\"password\"><button>Sign In</button></form>"
              "</body></html>")


def fault_response(kind: str, retry_after: int | None, nonces: NonceBook | None = None,
                   page: bool = False) -> Response:
    """The canned response of a status-type fault (`page`: for the export or restore, whose
    401 challenges are realm "DJANGO", Digest and Basic)."""
    if kind == "429":
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        return empty(429, **headers)
    if kind == "401":
        return unauthorized(nonces, REALM, basic=True) if page else unauthorized(nonces)
    if kind == "401-throttled":
        # HqBaseResource.dispatch under the API_BLACKLIST toggle: a rate limit served as a 401,
        # JSON (Django's HttpResponse with content_type="application/json", no charset) and no
        # challenge, so a client that retries 401s with fresh credentials learns nothing.
        return Response(401, json.dumps({"error": THROTTLED_MESSAGE}).encode(),
                        "application/json")
    if kind == "202":
        # "Accepted, not ready yet": what HQ's asynchronous answers look like (async restore,
        # export and bulk jobs), served here to any request. No data, come back later.
        return empty(202, **{"Retry-After": str(1 if retry_after is None else retry_after)})
    if kind == "403":
        return empty(403)
    if kind == "html":
        return Response(200, LOGIN_PAGE.encode(), HTML)
    return error_page(int(kind))


def error_page(status: int) -> Response:
    """HQ's (or nginx's) HTML page for a 500, 502, 503 or 504."""
    return Response(status, _ERROR_PAGES[status].encode(), HTML)
