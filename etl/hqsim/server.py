"""The HQ simulator: a real HTTP server on 127.0.0.1 speaking HQ's case, form and app APIs.

v0.5 (tastypie): `{"meta": {...}, "objects": [...]}`, relative `next` links, limits clamped to
the resource's maximum, strict date filters (a trailing `Z` is a 400), inclusive ranges compared
at millisecond precision, no tie-break on equal sort keys. v2: keyset cursor on
(indexed_on, case_id), absolute `next`, 400 for unknown parameters. Auth: `ApiKey user:key`.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit
import re

from etl.hqsim.faults import Faults
from etl.hqsim.generator import Dataset, fmt
from etl.hqsim.store import Index, parse, to_ms

log = logging.getLogger(__name__)
UTC = timezone.utc
V05 = re.compile(r"^/a/(?P<domain>[^/]+)/api/(?:v0\.5/(?P<a>case|form|application)|"
                 r"(?P<b>case|form|application)/v1)/?(?:(?P<id>[^/]+)/?)?$")
V2 = re.compile(r"^/a/(?P<domain>[^/]+)/api/(?:v0\.6/case|case/v2)/?(?:(?P<id>[^/]+)/?)?$")
MAX_LIMIT = {"case": 5000, "form": 1000}
ORDERING = {"case": ("server_date_modified", "date_modified", "indexed_on"),
            "form": ("received_on", "server_modified_on", "indexed_on")}
SORT_FIELD = {"server_date_modified": "server_date_modified", "date_modified": "date_modified",
              "indexed_on": "indexed_on", "received_on": "received_on",
              "server_modified_on": "server_modified_on"}
RANGES = {
    "case": {"indexed_on": "indexed_on", "server_date_modified": "server_date_modified",
             "server_modified_on": "server_date_modified", "date_modified": "date_modified"},
    "form": {"indexed_on": "indexed_on", "received_on": "received_on",
             "server_modified_on": "server_modified_on",
             "server_date_modified": "server_modified_on"},
}
RESERVED = {"limit", "offset", "order_by", "q", "api_key", "username", "format"}
V05_FORMATS = ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%MZ")
V2_PARAMS = {"case_type", "owner_id", "case_name", "external_id", "closed", "limit", "cursor",
             "include_deprecated", "indexed_on.gte", "indexed_on.gt", "indexed_on.lte",
             "indexed_on.lt", "last_case_id"}


class BadRequest(Exception):
    pass


@dataclass
class RequestLog:
    method: str
    path: str
    query: str
    status: int
    fault: str | None = None


def strict_v05_date(value: str) -> datetime:
    for pattern in V05_FORMATS:
        try:
            return datetime.strptime(value, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise BadRequest(f"Bad query parameter: Unknown date format: {value}")


def loose_date(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Cannot parse date: {value}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def v2_case(record: dict) -> dict:
    props = record["properties"]
    return {
        "domain": record["domain"], "case_id": record["case_id"],
        "case_type": props.get("case_type"), "case_name": props.get("case_name"),
        "external_id": props.get("external_id"), "owner_id": props.get("owner_id"),
        "date_opened": props.get("date_opened"), "last_modified": record.get("date_modified"),
        "server_last_modified": record.get("server_date_modified"),
        "indexed_on": record.get("indexed_on"), "closed": record.get("closed"),
        "date_closed": record.get("date_closed"),
        "properties": {k: v for k, v in props.items()
                       if k not in ("case_name", "case_type", "external_id", "owner_id", "date_opened")},
        "indices": record.get("indices") or {},
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up mid-request (a killed sync, a timeout) is normal here.
        log.debug("request from %s ended with an error", client_address, exc_info=True)


class HQSimulator:
    def __init__(self, datasets: Iterable[Dataset], users: dict[str, tuple[str, set | None]],
                 host: str = "127.0.0.1", port: int = 0):
        self.datasets = {ds.domain: ds for ds in datasets}
        self.users = users
        self.host, self.port = host, port
        self.faults = Faults()
        self.requests: list[RequestLog] = []
        self.lock = threading.RLock()
        self.indexes: dict[tuple[str, str], Index] = {}
        for domain, ds in self.datasets.items():
            for resource, records in (("case", ds.cases), ("form", ds.forms)):
                index = Index()
                index.bulk_load(records)
                self.indexes[(domain, resource)] = index
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> "HQSimulator":
        handler = type("Handler", (_Handler,), {"sim": self})
        self._server = _Server((self.host, self.port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="hq-simulator",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "HQSimulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def clear_requests(self) -> None:
        with self.lock:
            self.requests.clear()

    # --- changes between runs ---------------------------------------------------------------

    def _reindex(self, ds: Dataset, case_ids: Iterable[str] = (), form_ids: Iterable[str] = ()) -> None:
        for case_id in set(case_ids):
            self.indexes[(ds.domain, "case")].put(ds.cases[case_id], case_id)
        for form_id in set(form_ids):
            self.indexes[(ds.domain, "form")].put(ds.forms[form_id], form_id)

    def _submit(self, domain: str, make, indexed_on: datetime | None = None) -> tuple[str, list[str]]:
        """Run a dataset write; re-index the form and every case it touched."""
        ds = self.datasets[domain]
        form_id = make(ds, indexed_on)
        self._reindex(ds, ds.touched, [form_id])
        return form_id, list(ds.touched)

    def add_cases(self, domain: str, n: int, case_type: str = "patient",
                  indexed_on: datetime | None = None) -> list[str]:
        created = []
        with self.lock:
            for _ in range(n):
                _, touched = self._submit(
                    domain, lambda d, s: d.register_case(case_type, indexed_on=s), indexed_on)
                created.append(touched[-1])
        return created

    def update_cases(self, domain: str, case_ids: Iterable[str], properties: dict | None = None) -> None:
        with self.lock:
            for case_id in case_ids:
                self._submit(domain, lambda d, s: d.visit(case_id, properties=properties or
                                                          {"updated": fmt(d.clock)}, close=False))

    def close_cases(self, domain: str, case_ids: Iterable[str]) -> None:
        with self.lock:
            for case_id in case_ids:
                self._submit(domain, lambda d, s: d.visit(case_id, properties={}, close=True))

    def add_forms(self, domain: str, n: int) -> list[str]:
        with self.lock:
            ds = self.datasets[domain]
            return [self._submit(domain, lambda d, s: d.visit(d.rng.choice(d.by_type["patient"])))[0]
                    for _ in range(n)]

    def _set_archived(self, domain: str, form_ids: Iterable[str], archived: bool) -> None:
        with self.lock:
            ds = self.datasets[domain]
            for form_id in form_ids:
                record = ds.forms[form_id]
                record["archived"] = archived
                record["indexed_on"] = fmt(ds.tick())
                self._reindex(ds, form_ids=[form_id])

    def archive_forms(self, domain: str, form_ids: Iterable[str]) -> None:
        self._set_archived(domain, form_ids, True)

    def unarchive_forms(self, domain: str, form_ids: Iterable[str]) -> None:
        self._set_archived(domain, form_ids, False)

    def delete_cases(self, domain: str, ids: Iterable[str]) -> None:
        with self.lock:
            for doc_id in ids:
                self.datasets[domain].cases.pop(doc_id, None)
                self.indexes[(domain, "case")].delete(doc_id)

    def delete_forms(self, domain: str, ids: Iterable[str]) -> None:
        with self.lock:
            for doc_id in ids:
                self.datasets[domain].forms.pop(doc_id, None)
                self.indexes[(domain, "form")].delete(doc_id)

    def add_ties(self, domain: str, resource: str, n: int,
                 indexed_on: datetime | None = None) -> list[str]:
        """n new documents sharing one indexed_on (ids of the `resource` documents)."""
        with self.lock:
            ds = self.datasets[domain]
            stamp = indexed_on or ds.tick()
            ds.clock = max(ds.clock, stamp)
            if resource == "case":
                return self.add_cases(domain, n, indexed_on=stamp)
            return [self._submit(domain, lambda d, s: d.visit(d.rng.choice(d.by_type["patient"]),
                                                              indexed_on=s), stamp)[0]
                    for _ in range(n)]

    def add_late(self, domain: str, resource: str, n: int, lag: timedelta) -> list[str]:
        """n new documents whose indexed_on is `lag` older than the newest one (late indexing)."""
        with self.lock:
            ds = self.datasets[domain]
            newest = max(parse(r["indexed_on"]) for r in
                         (ds.cases if resource == "case" else ds.forms).values())
            clock = ds.clock
            stamp = newest - lag
            if resource == "case":
                ids = self.add_cases(domain, n, indexed_on=stamp)
            else:
                ids = [self._submit(domain, lambda d, s: d.visit(
                    d.rng.choice(d.by_type["patient"]), indexed_on=s), stamp)[0] for _ in range(n)]
            ds.clock = max(clock, ds.clock)
            return ids

    def set_clock(self, moment: datetime) -> None:
        with self.lock:
            for ds in self.datasets.values():
                ds.clock = moment

    def now(self) -> datetime:
        return max(ds.clock for ds in self.datasets.values())

    def snapshot(self, domain: str, resource: str) -> dict[str, dict]:
        """Every document as the v0.5 API serves it now (archived forms included)."""
        with self.lock:
            return {doc_id: json.loads(doc.body)
                    for doc_id, doc in self.indexes[(domain, resource)].docs.items()}

    # --- serving ------------------------------------------------------------------------------

    def authenticate(self, header: str | None, query: dict[str, str], allow_query: bool,
                     domain: str) -> int | None:
        username = key = None
        if header and " " in header:
            scheme, _, creds = header.partition(" ")
            if scheme.lower() == "apikey" and ":" in creds:
                username, _, key = creds.partition(":")
        elif allow_query and "username" in query and "api_key" in query:
            username, key = query["username"], query["api_key"]
        user = self.users.get(username or "")
        if not user or user[0] != key:
            return 401
        domains = user[1]
        if domain not in self.datasets or (domains is not None and domain not in domains):
            return 403
        return None

    def v05_list(self, domain: str, resource: str, path: str, pairs: list[tuple[str, str]]) -> bytes:
        params = dict(pairs)
        try:
            limit = int(params.get("limit", 20))
            offset = int(params.get("offset", 0))
        except ValueError:
            raise BadRequest("Invalid limit or offset provided. Please supply a positive integer.")
        if limit < 0 or offset < 0:
            raise BadRequest("Invalid limit or offset provided. Please supply a positive integer.")
        if limit == 0 or limit > MAX_LIMIT[resource]:
            limit = MAX_LIMIT[resource]
        orders = [v for k, v in pairs if k == "order_by"]
        for order in orders:
            if order.lstrip("-") not in ORDERING[resource]:
                raise BadRequest(f"No matching '{order}' field for ordering on.")
        ranges: dict[str, list] = {}
        filters: list[tuple[str, str]] = []
        include_archived = "include_archived" in params
        for key, value in pairs:
            if key in RESERVED or key.endswith("__full") or key == "include_archived":
                continue
            base, _, bound = key.rpartition("_")
            if bound in ("start", "end") and base in RANGES[resource]:
                moment = to_ms(strict_v05_date(value))
                ranges.setdefault(RANGES[resource][base], [None, None])[bound == "end"] = moment
            else:
                filters.append((key, value))
        index = self.indexes[(domain, resource)]
        with self.lock:
            fast = orders == ["indexed_on"] and set(ranges) <= {"indexed_on"} and not filters \
                and (resource == "case" or include_archived)
            if fast:
                lo, hi = ranges.get("indexed_on", [None, None])
                entries = index.range_entries(lo, hi)
                total = len(entries)
                bodies = [index.docs[e[2]].body for e in entries[offset:offset + limit]]
            else:
                docs = self._matching(index, resource, ranges, filters, include_archived)
                for order in reversed(orders or (["server_date_modified"] if resource == "case"
                                                 else ["-received_on"])):
                    field = SORT_FIELD[order.lstrip("-")]
                    desc = order.startswith("-")
                    docs.sort(key=lambda d, f=field: (to_ms(parse(d.record.get(f))) if f != "indexed_on"
                                                      else d.stamp_ms), reverse=desc)
                total = len(docs)
                bodies = [d.body for d in docs[offset:offset + limit]]
        kept = [(k, v) for k, v in pairs if k not in ("limit", "offset")]
        def link(new_offset: int) -> str:
            return f"{path}?{urlencode(kept + [('limit', limit), ('offset', new_offset)])}"
        meta = {"limit": limit, "next": link(offset + limit) if offset + limit < total else None,
                "offset": offset, "previous": link(offset - limit) if offset - limit >= 0 else None,
                "total_count": total}
        return b'{"meta":' + json.dumps(meta).encode() + b',"objects":[' + b",".join(bodies) + b"]}"

    def _matching(self, index: Index, resource: str, ranges: dict, filters: list,
                  include_archived: bool) -> list:
        docs = [index.docs[e[2]] for e in index.order]  # insertion-stable within equal keys
        for field, (lo, hi) in ranges.items():
            docs = [d for d in docs if _in_range(d, field, lo, hi)]
        if resource == "form" and not include_archived:
            docs = [d for d in docs if not d.record.get("archived")]
        for key, value in filters:
            docs = [d for d in docs if _matches(d.record, resource, key, value)]
        return docs

    def v2_list(self, domain: str, pairs: list[tuple[str, str]]) -> bytes:
        params = dict(pairs)
        if "cursor" in params:
            try:
                pairs = parse_qsl(base64.b64decode(params["cursor"]).decode(), keep_blank_values=True)
            except Exception:
                raise BadRequest("Invalid cursor")
            params = dict(pairs)
        for key in params:
            if key not in V2_PARAMS and not key.startswith(("properties.", "indices.")):
                raise BadRequest(f"'{key}' is not a valid parameter.")
        try:
            limit = int(params.get("limit", 20))
        except ValueError:
            raise BadRequest("limit must be an integer")
        if limit > 5000:
            raise BadRequest("You cannot request more than 5000 cases per request.")
        index = self.indexes[(domain, "case")]
        with self.lock:
            docs = sorted(index.docs.values(), key=lambda d: (d.stamp_ms, d.id))
            for key, value in pairs:
                if key.startswith("indexed_on."):
                    op, bound = key.split(".", 1)[1], to_ms(loose_date(value))
                    if key == "indexed_on.gte" and "last_case_id" in params and value == params[key]:
                        continue  # the cursor's position is applied as a keyset below
                    docs = [d for d in docs if {"gte": d.stamp_ms >= bound, "gt": d.stamp_ms > bound,
                                                "lte": d.stamp_ms <= bound, "lt": d.stamp_ms < bound}[op]]
                elif key in ("case_type", "owner_id", "case_name", "external_id"):
                    docs = [d for d in docs if d.record["properties"].get(key) == value]
                elif key == "closed":
                    docs = [d for d in docs if bool(d.record["closed"]) == (value == "true")]
            matching = len(docs)
            if "last_case_id" in params:
                last = (to_ms(loose_date(params["indexed_on.gte"])), params["last_case_id"])
                docs = [d for d in docs if (d.stamp_ms, d.id) > last]
            page = docs[:limit]
            cases = [json.dumps(v2_case(d.record), separators=(",", ":")).encode() for d in page]
        next_url = None
        if page and len(page) == limit:
            cursor_params = [(k, v) for k, v in pairs if k not in ("indexed_on.gte", "last_case_id")
                             or (k == "indexed_on.gte" and "last_case_id" not in params)]
            cursor_params = [(k, v) for k, v in cursor_params if k != "indexed_on.gte"] + [
                ("indexed_on.gte", page[-1].record["indexed_on"]), ("last_case_id", page[-1].id)]
            cursor = base64.b64encode(urlencode(cursor_params).encode()).decode()
            next_url = f"{self.base_url}/a/{domain}/api/case/v2/?{urlencode({'cursor': cursor})}"
        return (b'{"matching_records":' + str(matching).encode() + b',"cases":['
                + b",".join(cases) + b'],"next":' + json.dumps(next_url).encode() + b"}")

    def apps_list(self, domain: str) -> bytes:
        apps = self.datasets[domain].apps
        meta = {"offset": 0, "limit": None, "total_count": len(apps), "previous": None, "next": None}
        return json.dumps({"meta": meta, "objects": apps}).encode()


def _in_range(doc, field: str, lo: int | None, hi: int | None) -> bool:
    value = doc.stamp_ms if field == "indexed_on" else to_ms(parse(doc.record.get(field)))
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def _matches(record: dict, resource: str, key: str, value: str) -> bool:
    if resource == "case" and key in ("type", "case_type"):
        return (record["properties"].get("case_type") or "").lower() == value.lower()
    if resource == "case" and key in ("owner_id", "case_name", "external_id"):
        return (record["properties"].get(key if key != "case_name" else "case_name") or "").lower() == value.lower()
    if key == "closed":
        return str(record.get("closed")).lower() == value.lower()
    if key in ("xmlns", "xmlns.exact"):
        return record.get("form", {}).get("@xmlns") == value
    return str(record.get(key, "")).lower() == value.lower()


class _Handler(BaseHTTPRequestHandler):
    sim: HQSimulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet by default
        log.debug("%s - %s", self.address_string(), format % args)

    def do_POST(self) -> None:  # noqa: N802
        self._log = None
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        payload = json.loads(self.rfile.read(length) or b"{}")
        if split.path == "/_sim/faults":
            options = {k: v for k, v in payload.items() if k not in ("kind", "count", "resource", "after")}
            self.sim.faults.add(payload["kind"], payload.get("count", 1), payload.get("resource"),
                                payload.get("after", 0), **options)
            return self._send(200, b'{"ok": true}')
        if split.path == "/_sim/mutate":
            action = payload.pop("action")
            result = getattr(self.sim, action)(**payload)
            return self._send(200, json.dumps({"result": result}, default=str).encode())
        self._send(405, b'{"error": "Request method not allowed"}')

    def do_GET(self) -> None:  # noqa: N802
        split = urlsplit(self.path)
        pairs = parse_qsl(split.query, keep_blank_values=True)
        self._log = RequestLog("GET", split.path, split.query, 0)
        with self.sim.lock:
            self.sim.requests.append(self._log)
        try:
            if split.path == "/_sim/stats":
                stats = {f"{d}/{r}": len(i.docs) for (d, r), i in self.sim.indexes.items()}
                return self._send(200, json.dumps(stats).encode())
            match_v05, match_v2 = V05.match(split.path), V2.match(split.path)
            match = match_v05 or match_v2
            if not match:
                return self._send(404, b"")
            domain = match["domain"]
            resource = "case_v2" if match_v2 else (match["a"] or match["b"])
            denied = self.sim.authenticate(self.headers.get("Authorization"), dict(pairs),
                                           allow_query=not match_v2, domain=domain)
            if denied:
                headers = {"WWW-Authenticate": 'Digest realm="CommCare HQ"'} if denied == 401 else {}
                return self._send(denied, b"", headers=headers)
            fault = self.sim.faults.take(resource)
            if fault:
                self._log.fault = fault.kind
                if self._fault(fault) is not None:
                    return
            if match_v2:
                if match["id"]:
                    doc = self.sim.indexes[(domain, "case")].docs.get(match["id"])
                    if doc is None:
                        return self._send(404, json.dumps({"error": f"Case '{match['id']}' not found"}).encode())
                    return self._send(200, json.dumps(v2_case(doc.record)).encode())
                return self._send(200, self.sim.v2_list(domain, pairs))
            if resource == "application":
                return self._send(200, self.sim.apps_list(domain))
            if match["id"]:
                doc = self.sim.indexes[(domain, resource)].docs.get(match["id"])
                if doc is None:
                    return self._send(404, b"")
                return self._send(200, doc.body)
            return self._send(200, self.sim.v05_list(domain, resource, split.path, pairs))
        except BadRequest as exc:
            self._send(400, json.dumps({"error": str(exc)}).encode())

    def _fault(self, fault) -> int | None:
        """Apply a fault; return the status sent, or None to go on serving normally."""
        kind = fault.kind
        if kind == "slow":
            time.sleep(float(fault.options.get("delay", 2.0)))
            return None
        if kind == "429":
            retry_after = fault.options.get("retry_after")
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            self._send(429, b"", headers=headers)
            return 429
        if kind in ("500", "502", "503", "504", "401", "403"):
            self._send(int(kind), b"" if kind in ("401", "403") else
                       b"<html><body>Server Error</body></html>", content_type="text/html")
            return int(kind)
        if kind == "html":
            self._send(200, b"<html><body>Maintenance</body></html>", content_type="text/html")
            return 200
        if kind == "truncated":
            self._send(200, b'{"meta": {"limit": 20, "next": null}, "objects": [{"id": "x", "form')
            return 200
        if kind == "reset":
            body = b'{"meta": {"limit": 20}, "objects": [' + b"{}," * 2000
            self._log.status = 200
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body) * 4))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            # An abortive close: the client sees a reset mid-body.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return 200
        return None

    def _send(self, status: int, body: bytes, headers: dict | None = None,
              content_type: str = "application/json; charset=utf-8") -> None:
        if getattr(self, "_log", None) is not None:
            self._log.status = status
        self.send_response(status)
        if body or status == 200:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
