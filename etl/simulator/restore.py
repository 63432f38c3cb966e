"""The OTA restore, `GET /a/<domain>/phone/restore/` (corehq/apps/ota/views.py, casexml's
`RestoreConfig`): what a mobile worker's phone downloads to rebuild its case list.

* Auth: the worker's login, `name@<domain>.commcarehq.org` and its password, by HTTP Basic or
  Digest (realm "DJANGO"). Anything else, a wrong password, a deactivated or retired worker:
  401, empty, with a Digest and a Basic challenge. An unknown project: 404, empty.
* Params: `version` ("2.0" default; "3.0" is served the same CaseXML v2; others 412), `since`
  (the `restore_id` of an earlier restore of this worker), `items=true` (the root's `items`
  count), `device_id`, `app_id` (kept on the sync log), `overwrite_cache` (accepted; nothing is
  cached), `skip_fixtures=true`.
* 200 `text/xml; charset=utf-8`, streamed in chunks (chunked transfer encoding) as it is made:
  `<OpenRosaResponse xmlns="http://openrosa.org/http/response" [items="N"]>`, the success
  `<message>`, `<Sync><restore_id>` (a new sync log, uuid1 hex), `<Registration>`, the
  fixtures (fixtures.py), then the case blocks (casexml.py), in index order, then purges.
* The caseload: cases owned by the worker, its case-sharing groups and its case-sharing
  locations (`Directory.owner_ids`). A full restore sends its open cases, each with
  `<create>`. With `since`: only caseload cases saved since that sync log (`<create>` for
  those the phone did not hold, `<close/>` for those closed), cases that joined the caseload,
  and a `<close/>`-only block for each held case that left it (owner changed, deleted).
* 412 `text/xml` `<OpenRosaResponse><message nature="ota_restore_error">...` for an unknown
  `since`, one of another worker (or domain), or an unsupported version.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Iterator

from etl.simulator import auth, casexml, fixtures
from etl.simulator.api import Request, Response, Route, empty, unauthorized
from etl.simulator.digest import REALM, NonceBook
from etl.simulator.directory import MobileWorker
from etl.simulator.records import RawRecord, Record
from etl.simulator.store import Domain, Store

XML = "text/xml; charset=utf-8"
VERSIONS = ("2.0", "3.0")
CHUNK = 64 * 1024
TRUE = ("true", "1", "yes")


@dataclass(frozen=True)
class SyncLog:
    """One restore: whose, when (the store's write sequence and clock), and what the phone
    holds after it."""

    id: str
    user_id: str
    seq: int  # case saves with a higher `Record.seq` happened after this restore
    at_us: int
    held: frozenset[str]  # ids of the open cases the phone holds
    previous_id: str | None = None
    device_id: str | None = None
    app_id: str | None = None


@dataclass
class _Plan:
    """What one restore sends, decided under the store's lock, rendered after it."""

    head: list[str]  # Sync, Registration, fixtures
    cases: list[tuple[Record, bool]]  # (record, phone lacks it -> <create>)
    purges: list[tuple[str, dict | None]]  # (case id, its last JSON if still known)
    removed: dict[str, dict[str, tuple[str, str]]]  # removed indices of the cases sent


class _Refused(Exception):
    def __init__(self, message: str):
        super().__init__(message)


def worker_password_of(store: Store, d: Domain) -> auth.PasswordOf:
    """Active, not retired mobile workers of this project, by full username."""
    def lookup(name: str) -> tuple[str, str] | None:
        with store.lock:
            w = d.directory.worker_by_username(name)
            if w is None or w.deleted or not w.is_active:
                return None
            return w.username, w.password
    return lookup


def handle(store: Store, nonces: NonceBook, request: Request,
           r: Route) -> tuple[Response, str | None]:
    if request.method not in ("GET", "HEAD"):
        return empty(405, Allow="GET"), None
    d = store.domains.get(r.domain)
    if d is None:
        return empty(404), None
    outcome = auth.check_password(request.authorization or "", request.method, request.uri,
                                  worker_password_of(store, d), nonces)
    if outcome.username is None:
        return unauthorized(nonces, REALM, outcome.stale, basic=True), None
    params = dict(request.pairs)
    version = params.get("version") or "2.0"
    try:
        if version not in VERSIONS:
            raise _Refused(f"Invalid version: {version}")
        with store.lock:
            w = d.directory.worker_by_username(outcome.username)
            assert w is not None
            plan, restore_id = _plan(store, d, w, params)
    except _Refused as exc:
        return Response(412, casexml.error_response(str(exc)).encode(), XML,
                        [("X-OpenRosa-Version", "3.0")]), outcome.username
    items = None
    if (params.get("items") or "").lower() in TRUE:
        items = 1 + len(plan.head) + len(plan.cases) + len(plan.purges)  # +1: the message
    username = w.username.split("@")[0]
    return Response(200, b"", XML, [("X-OpenRosa-Version", "3.0")],
                    stream=_render(plan, username, items)), outcome.username


def _plan(store: Store, d: Domain, w: MobileWorker, params: dict[str, str]
          ) -> tuple[_Plan, str]:
    since = params.get("since") or None
    last = None
    if since is not None:
        last = d.sync_logs.get(since)
        if last is None:
            raise _Refused(f"No sync log with ID {since} found")
        if last.user_id != w.id:
            raise _Refused(f"Sync log {since} does not match user id {w.id} "
                           f"(was {last.user_id})")
    owners = d.directory.owner_ids(w.id)
    cases: list[tuple[Record, bool]] = []
    in_caseload: set[str] = set()
    held: set[str] = set()
    for rec in d.cases.ordered:
        if type(rec) is not Record or (rec.terms[2] or rec.terms[3]) not in owners:
            continue
        in_caseload.add(rec.id)
        closed = rec.terms[4]
        had = last is not None and rec.id in last.held
        if had:
            if rec.seq > last.seq:
                cases.append((rec, False))
        elif not closed:
            cases.append((rec, True))
        if not closed:
            held.add(rec.id)
    purges = []
    if last is not None:
        for case_id in sorted(last.held - in_caseload):
            gone = d.cases.get(case_id)
            doc = gone.doc(b"") if gone is not None and not isinstance(gone, RawRecord) else \
                d.rebuilt_away.get(case_id)
            purges.append((case_id, doc))
    restore_id = uuid.uuid1().hex
    head = [casexml.sync_element(restore_id), casexml.registration(d.directory, w)]
    if (params.get("skip_fixtures") or "").lower() not in TRUE:
        head += fixtures.restore_fixtures(d.directory, d.lookup_tables, w)
    removed = {rec.id: dict(d.removed_indices[rec.id]) for rec, _ in cases
               if rec.id in d.removed_indices}
    d.sync_logs[restore_id] = SyncLog(restore_id, w.id, store.seq, store.clock_us,
                                      frozenset(held), since, params.get("device_id"),
                                      params.get("app_id"))
    return _Plan(head, cases, purges, removed), restore_id


def _render(plan: _Plan, username: str, items: int | None) -> Iterator[bytes]:
    """The restore's bytes, about `CHUNK` at a time; case JSON is parsed only as it goes out
    (records never change in place, so no lock is needed)."""
    buffer = [casexml.response_head(username, items), *plan.head]
    size = sum(len(part) for part in buffer)
    for rec, create in plan.cases:
        block = casexml.case_block(rec.doc(b""), create, plan.removed.get(rec.id))
        buffer.append(block)
        size += len(block)
        if size >= CHUNK:
            yield "".join(buffer).encode("utf-8")
            buffer, size = [], 0
    buffer += [casexml.purge_block(case_id, doc) for case_id, doc in plan.purges]
    buffer.append(casexml.RESPONSE_TAIL)
    yield "".join(buffer).encode("utf-8")


def caseload(store: Store, domain: str, username: str) -> dict[str, dict[str, Any]]:
    """case id -> `casexml.case_view` of each open case a full restore would send the worker
    (`username` with or without `@<domain>.commcarehq.org`)."""
    with store.lock:
        d = store.domain(domain)
        full = username if "@" in username else f"{username}@{domain}.commcarehq.org"
        w = d.directory.worker_by_username(full)
        if w is None or w.deleted:
            raise KeyError(f"no mobile worker {username!r} in {domain!r}")
        owners = d.directory.owner_ids(w.id)
        records = [rec for rec in d.cases.ordered if type(rec) is Record and not rec.terms[4]
                   and (rec.terms[2] or rec.terms[3]) in owners]
    out = {}
    for rec in records:
        view = casexml.case_view(rec.doc(b""))
        del view["closed"]
        out[rec.id] = view
    return out
