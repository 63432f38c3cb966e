"""The HTTP side: a threaded HTTP/1.1 keep-alive server, fault application, the request log,
and `HQSimulator`, the object tests and the CLI drive."""

from __future__ import annotations

import logging
import socket
import struct
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

from etl.simulator import api, control, exportapi, fixtures, refapi, restore
from etl.simulator.digest import NonceBook
from etl.simulator.directory import Directory
from etl.simulator.dataset import Dataset
from etl.simulator.faults import CANNED, FaultQueue
from etl.simulator.ratelimit import RateLimiter
from etl.simulator.store import Store

log = logging.getLogger(__name__)

DEFAULT_USERS = {"etl@example.org": ("secret-key", None)}
# Web logins' passwords (Basic and Digest on the data APIs and the export), by API user.
DEFAULT_PASSWORDS = {"etl@example.org": "secret-password"}
# HQ's Elasticsearch keeps a primary and replicas of each shard and answers from any of them:
# three copies that order ties differently is HQ at its worst plausible, so that is the default.
DEFAULT_REPLICAS = 3
_REASONS = {200: "OK", 202: "Accepted", 301: "Moved Permanently", 302: "Found",
            400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 412: "Precondition Failed", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}
_CUT = 64 * 1024  # a cut-short stream ("truncated", "reset") sends half of up to twice this


@dataclass(frozen=True)
class RequestLog:
    """One request the simulator answered (control-API calls are not logged)."""

    method: str
    path: str
    query: str
    status: int
    fault: str | None = None  # the injected fault, if any
    resource: str | None = None  # "case", "form", "case_v2", "application", "user",
    #   "web_user", "group", "location", "location_v2", "location_type", "export",
    #   "export_list", "restore", or None
    domain: str | None = None
    user: str | None = None
    bytes: int = 0  # body bytes sent
    seconds: float = 0.0
    at: float = 0.0  # time.time() when it arrived
    replica: int | None = None  # v0.5 lists with replicas > 1: the index copy that answered


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sim: "HQSimulator"):
        self.sim = sim
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that goes away mid-request (killed, timed out) is routine, not an error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a Content-Length, or chunks (the restore)
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in one write, but keep Nagle from ever holding a reply.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.sim._connections.add(self.connection)

    def finish(self) -> None:
        self.server.sim._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        sim = self.server.sim
        arrived, started = time.time(), time.perf_counter()
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if split.path.startswith("/_sim/"):
            self._send(control.handle(sim, method, split.path, body, self.client_address[0]),
                       method)
            return
        if sim.latency > 0:  # a far-away HQ: each request waits in its own thread
            time.sleep(sim.latency)
        r = api.route(split.path)
        fault = sim.faults.take(r.resource if r else None)
        kind = fault.kind if fault else None
        user = None
        if kind == "slow":
            time.sleep(fault.delay)
        if kind in CANNED:
            response = api.fault_response(kind, fault.retry_after, sim.nonces,
                                          page=r is not None and r.resource in api.PAGES)
        elif r is None:
            response = api.empty(404)
        else:
            request = api.Request(method, split.path, split.query,
                                  self.headers.get("Authorization"),
                                  self.headers.get("Host") or sim.netloc, body, self.path)
            try:
                response, user = _dispatch(sim, request, r)
            except Exception:  # a simulator bug: answer like HQ would, and say why in the log
                log.error("simulator error on %s %s\n%s", method, self.path, traceback.format_exc())
                response = api.Response(500, b'{"error": "simulator error"}')

        def entry(sent: int) -> RequestLog:
            return RequestLog(method, split.path, split.query, response.status, kind,
                              r.resource if r else None, r.domain if r else None, user, sent,
                              time.perf_counter() - started, arrived, response.replica)

        if response.stream is not None:
            self._stream(response, method, kind, lambda sent: sim._log(entry(sent)))
            return
        payload = self._payload(response, method, kind)
        # Logged before the reply leaves, so a client that has its answer also sees the entry.
        sim._log(entry(len(payload)))
        self._send(response, method, kind, payload)

    @staticmethod
    def _payload(response: api.Response, method: str, fault: str | None) -> bytes:
        """The body bytes that will actually be sent."""
        if method == "HEAD":
            return b""
        body = response.body
        if fault == "truncated":  # a 200 whose JSON stops halfway, honestly labelled
            return body[:max(1, len(body) // 2)]
        if fault == "reset":  # headers promise the whole body; a third arrives, then a reset
            return body[:max(1, len(body) // 3)]
        return body

    def _stream(self, response: api.Response, method: str, fault: str | None,
                log_entry: Callable[[int], None]) -> None:
        """Send a streamed body in chunks (chunked transfer encoding), logging the request
        before the last chunk leaves. "truncated" and "reset" end it half-way: the connection
        closes (or resets) with no last chunk."""
        lines = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
                 "Server: nginx", f"Date: {self.date_time_string()}",
                 f"Content-Type: {response.content_type}", "Transfer-Encoding: chunked",
                 "Vary: Accept, Cookie"]
        lines += [f"{k}: {v}" for k, v in response.headers]
        cut = fault in ("truncated", "reset")
        if self.close_connection or cut:
            lines.append("Connection: close")
        sent, logged = 0, False
        try:
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            if method == "HEAD":
                return
            if cut:
                data = b""
                for piece in response.stream or ():
                    data += piece
                    if len(data) >= 2 * _CUT:
                        break
                part = data[:max(1, len(data) // 2)]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                sent = len(part)
                log_entry(sent)
                logged = True
                self.close_connection = True
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                self.connection.close()
                return
            for piece in response.stream or ():
                if piece:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    sent += len(piece)
            log_entry(sent)
            logged = True
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client gave up or went away mid-stream
            self.close_connection = True
        except Exception:  # a simulator bug mid-stream: the body just stops
            log.error("simulator error while streaming %s\n%s", self.path,
                      traceback.format_exc())
            self.close_connection = True
        finally:
            if not logged:
                log_entry(sent)

    def _send(self, response: api.Response, method: str, fault: str | None = None,
              payload: bytes | None = None) -> None:
        if payload is None:
            payload = self._payload(response, method, fault)
        length = len(payload) if fault == "truncated" else len(response.body)
        lines = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
                 "Server: nginx", f"Date: {self.date_time_string()}",
                 f"Content-Type: {response.content_type}", f"Content-Length: {length}",
                 "Vary: Accept, Cookie"]
        lines += [f"{k}: {v}" for k, v in response.headers]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + payload)
            if fault == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
        except OSError:  # the client gave up (timeout) or went away
            self.close_connection = True


def _dispatch(sim: "HQSimulator", request: api.Request,
              r: api.Route) -> tuple[api.Response, str | None]:
    """The data APIs (api.py), or one of the pages: the export, its list, the restore."""
    if r.resource in api.PAGES and r.rest == "redirect":  # Django's APPEND_SLASH
        target = r.list_uri + (f"?{request.query}" if request.query else "")
        return api.Response(301, b"", api.HTML, [("Location", target)]), None
    if r.resource == "export":
        return exportapi.handle(sim.store, sim.users, sim.web_passwords, sim.nonces, request, r,
                                sim.export_limit)
    if r.resource == "export_list":
        return exportapi.list_page(sim.store, request, r)
    if r.resource == "restore":
        return restore.handle(sim.store, sim.nonces, request, r)
    return api.handle(sim.store, sim.users, request, r, sim.rate_limiter,
                      passwords=sim.web_passwords, nonces=sim.nonces)


class HQSimulator:
    """A CommCare HQ look-alike on a real socket.

        ds = Dataset.generate(domain="demo", seed=0, n_cases=300)
        with HQSimulator(datasets=[ds], users={"me@example.org": ("key", None)}) as sim:
            requests.get(f"{sim.base_url}/a/demo/api/v0.5/case/",
                         headers={"Authorization": "ApiKey me@example.org:key"})

    `users`: username -> (api key, domains or None for all), optionally a third element, the
    web login's password (Basic and Digest on the data APIs and the export API). By default
    "etl@example.org" has api key "secret-key" and password "secret-password". Mobile workers
    log in to the OTA restore as `name@<domain>.commcarehq.org` with their password
    (generated ones: "123", see `mobile_worker_password`).
    """

    def __init__(self, datasets: Iterable[Dataset] = (),
                 users: Mapping[str, tuple[str, Iterable[str] | None]] | None = None,
                 host: str = "127.0.0.1", port: int = 0, seed: int = 0, replicas: int = DEFAULT_REPLICAS,
                 rate_limit: bool = False, latency: float = 0.0):
        """`replicas`: copies of the search index answering v0.5 lists (ties ordered
        differently on each; 1 keeps write order; default 3). `rate_limit`: HQ's per-project API rate
        limit (see `set_rate_limit`). `latency`: seconds every request (not the `/_sim/` control
        API) waits before it is answered, like a distant HQ (see `set_latency`)."""
        self.store = Store(datasets, seed=seed, replicas=replicas)
        self.users: dict[str, tuple[str, Iterable[str] | None]] = {}
        self.web_passwords: dict[str, str] = dict(DEFAULT_PASSWORDS if users is None else {})
        for name, (key, domains, *password) in (DEFAULT_USERS if users is None
                                                 else users).items():
            self.users[name] = (key, domains)
            if password and password[0] is not None:
                self.web_passwords[name] = password[0]
        self.nonces = NonceBook()  # Digest nonces issued by 401 challenges
        self.export_limit = exportapi.DEFAULT_LIMIT
        self.faults = FaultQueue()
        self.rate_limiter = RateLimiter(enabled=rate_limit)
        self.latency = 0.0
        self.set_latency(latency)
        self.host, self.port = host, port
        self._requests: list[RequestLog] = []
        self._requests_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> "HQSimulator":
        """Bind and serve in a daemon thread."""
        if self._server is None:
            self._server = _Server((self.host, self.port), self)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.05},
                                            name=f"hq-simulator:{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for conn in list(self._connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "HQSimulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def netloc(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.netloc}"

    @property
    def default_domain(self) -> str:
        return next(iter(self.store.domains))

    # --- request log ---------------------------------------------------------------------------

    def _log(self, entry: RequestLog) -> None:
        with self._requests_lock:
            self._requests.append(entry)

    @property
    def requests(self) -> list[RequestLog]:
        """Every API request answered, oldest first (a copy)."""
        with self._requests_lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()

    # --- changes between syncs -----------------------------------------------------------------

    def now(self) -> datetime:
        """The simulator's clock (aware UTC): the next write is indexed a few ms after it."""
        return self.store.now()

    def set_clock(self, moment: datetime) -> None:
        self.store.set_clock(moment)

    def add_cases(self, domain: str, n: int, case_type: str = "patient",
                  owner_id: str | None = None,
                  properties: dict[str, Any] | None = None) -> list[str]:
        """`n` new cases of `case_type`, each with its registration form. `owner_id`: a mobile
        worker (who then registers them), a case-sharing group or a location (default: the
        registering field worker). `properties`: exactly these dynamic properties (e.g. 20
        values of 100 characters for a big restore) instead of generated ones. About 0.1 ms a
        case: 100k cases take some ten seconds."""
        return self.store.add_cases(domain, n, case_type, owner_id=owner_id,
                                    properties=properties)

    def update_cases(self, domain: str, case_ids: Iterable[str],
                     properties: dict | None = None) -> None:
        """A follow-up form per case setting `properties` (default: a routine visit's)."""
        self.store.update_cases(domain, list(case_ids), properties)

    def close_cases(self, domain: str, case_ids: Iterable[str]) -> None:
        self.store.update_cases(domain, list(case_ids), None, close=True)

    def add_forms(self, domain: str, n: int, xmlns: str | None = None) -> list[str]:
        """`n` new submissions (follow-ups and surveys). With `xmlns`, all of that form: a
        registration (with its new case), a follow-up of an open case of its type, or a survey
        (repeat group `facilities`) carrying that xmlns when no app defines it. Returns the
        form ids."""
        return self.store.add_forms(domain, n, xmlns)

    def archive_forms(self, domain: str, form_ids: Iterable[str]) -> None:
        self.store.set_archived(domain, list(form_ids), True)

    def unarchive_forms(self, domain: str, form_ids: Iterable[str]) -> None:
        self.store.set_archived(domain, list(form_ids), False)

    def delete_cases(self, domain: str, case_ids: Iterable[str]) -> None:
        self.store.delete(domain, "case", case_ids)

    def delete_forms(self, domain: str, form_ids: Iterable[str]) -> None:
        self.store.delete(domain, "form", form_ids)

    def add_ties(self, domain: str, resource: str, n: int,
                 indexed_on: datetime | None = None) -> list[str]:
        """`n` new docs ("case" or "form") sharing one `indexed_on` (default: now)."""
        return self.store.add_ties(domain, resource, n, indexed_on)

    def add_late(self, domain: str, resource: str, n: int, lag: timedelta) -> list[str]:
        """`n` new docs indexed `lag` before the newest existing one."""
        return self.store.add_late(domain, resource, n, lag)

    def add_record(self, domain: str, resource: str, doc: dict) -> str:
        """Serve a hand-made case or form like a generated one (filters and sorts apply)."""
        return self.store.add_record(domain, resource, doc)

    def add_raw(self, domain: str, resource: str, doc: object, record_id: str) -> str:
        """Serve `doc` exactly as given (a malformed record, say) in the list and detail of
        `resource`, placed by its `indexed_on` (or now)."""
        return self.store.add_raw(domain, resource, doc, record_id)

    def snapshot(self, domain: str, resource: str) -> dict:
        """id -> the record as `/api/v0.5/<resource>/` serves it now: "case", "form" (archived
        forms included), or reference data: "user" (deactivated workers included), "web_user",
        "group", "location", "location_v2" (`/api/v0.6/`), "location_type" (keyed by its int
        id). Absolute URIs use this simulator's address (or 127.0.0.1 when not started)."""
        if resource in refapi.RESOURCES:
            host = self.netloc if self._server is not None else "127.0.0.1"
            return refapi.snapshot(self.store, domain, resource, host)
        return self.store.snapshot(domain, resource)

    def touch_cases(self, domain: str, case_ids: Iterable[str]) -> None:
        """Re-save cases without a form: fresh server_date_modified and indexed_on."""
        self.store.touch_cases(domain, list(case_ids))

    def set_case_owner(self, domain: str, case_ids: Iterable[str], owner_id: str) -> None:
        """Reassign cases to `owner_id` (a worker, a group, a location): one form per case."""
        self.store.set_case_owner(domain, list(case_ids), owner_id)

    def set_case_index(self, domain: str, case_id: str, identifier: str,
                       referenced_id: str | None, case_type: str = "",
                       relationship: str = "child") -> None:
        """A form setting the case's index `identifier` to `referenced_id` (`case_type`
        defaults to the referenced case's; relationship "child" or "extension"), or removing
        it (None). A removed index goes to phones as an empty element."""
        self.store.set_case_index(domain, case_id, identifier, referenced_id, case_type,
                                  relationship)

    def deprecate_case_type(self, domain: str, case_type: str, deprecated: bool = True) -> None:
        """Mark `case_type` deprecated in the data dictionary: Case API v2 lists leave its
        cases out when asked with `include_deprecated=false` (v0.5 ignores it, as HQ does)."""
        self.store.deprecate_case_type(domain, case_type, deprecated)

    # --- reference data: mobile workers, web users, groups, locations --------------------------
    # Every change is saved at the simulator's clock (a fresh `last_modified`). Unknown ids raise
    # KeyError, invalid changes ValueError.

    def add_mobile_worker(self, domain: str, username: str, **fields: Any) -> str:
        """A new active mobile worker (`username` without `@` gets `@<domain>.commcarehq.org`).
        Fields: first_name, last_name, email, phone_numbers, user_data, location_ids,
        primary_location, groups (ids), is_active, password (default "123"; no API shows
        it). Returns its id."""
        return self.store.change_directory(domain, Directory.add_mobile_worker, username,
                                           **fields)

    def update_mobile_worker(self, domain: str, user_id: str, **changes: Any) -> None:
        """What the user API's PUT may change: first_name, last_name, email, phone_numbers,
        user_data (merged; None removes a key), locations, primary_location, password, and
        groups (the worker's groups, exactly; membership is on the groups, so `last_modified`
        stays)."""
        self.store.change_directory(domain, Directory.update_mobile_worker, user_id, **changes)

    def deactivate_mobile_worker(self, domain: str, user_id: str) -> None:
        """Gone from the list and from groups' `users`; listed by `archived=true`; its detail
        still answers."""
        self.store.change_directory(domain, Directory.set_mobile_worker_active, user_id, False)

    def activate_mobile_worker(self, domain: str, user_id: str) -> None:
        self.store.change_directory(domain, Directory.set_mobile_worker_active, user_id, True)

    def delete_mobile_worker(self, domain: str, user_id: str) -> None:
        """Retire: gone from every list (its cases and forms are left alone here; HQ's retire
        also deletes them)."""
        self.store.change_directory(domain, Directory.delete_mobile_worker, user_id)

    def restore_mobile_worker(self, domain: str, user_id: str) -> None:
        self.store.change_directory(domain, Directory.restore_mobile_worker, user_id)

    def add_web_user(self, domain: str, username: str, **fields: Any) -> str:
        """A new member of the project. Fields: first_name, last_name, role ("Admin", "App
        Editor", "Field Implementer", "Read Only" or any name), is_admin, phone_numbers,
        user_data, location_ids, primary_location, profile, tableau_role. Returns its id."""
        return self.store.change_directory(domain, Directory.add_web_user, username, **fields)

    def update_web_user(self, domain: str, user_id: str, **changes: Any) -> None:
        """What the web user API's PATCH may change: role, is_admin, profile, user_data,
        primary_location_id, assigned_location_ids, tableau_role (and names, phone numbers)."""
        self.store.change_directory(domain, Directory.update_web_user, user_id, **changes)

    def deactivate_web_user(self, domain: str, user_id: str) -> None:
        """Deactivated in this project: still listed, with `is_active_in_domain: false`."""
        self.store.change_directory(domain, Directory.set_web_user_active, user_id, False)

    def activate_web_user(self, domain: str, user_id: str) -> None:
        self.store.change_directory(domain, Directory.set_web_user_active, user_id, True)

    def delete_web_user(self, domain: str, user_id: str) -> None:
        """Remove from the project: gone from the list, its detail a 400."""
        self.store.change_directory(domain, Directory.remove_web_user, user_id)

    def restore_web_user(self, domain: str, user_id: str) -> None:
        self.store.change_directory(domain, Directory.restore_web_user, user_id)

    def add_group(self, domain: str, name: str, users: Iterable[str] = (),
                  **fields: Any) -> str:
        """A new group (fields: case_sharing, reporting, metadata). Returns its id."""
        return self.store.change_directory(domain, Directory.add_group, name, list(users),
                                           **fields)

    def update_group(self, domain: str, group_id: str, **changes: Any) -> None:
        """name, case_sharing, reporting, metadata, users (the members, exactly)."""
        self.store.change_directory(domain, Directory.update_group, group_id, **changes)

    def add_group_members(self, domain: str, group_id: str, user_ids: Iterable[str]) -> None:
        self.store.change_directory(domain, Directory.change_group_members, group_id,
                                    add=list(user_ids))

    def remove_group_members(self, domain: str, group_id: str, user_ids: Iterable[str]) -> None:
        self.store.change_directory(domain, Directory.change_group_members, group_id,
                                    remove=list(user_ids))

    def delete_group(self, domain: str, group_id: str) -> None:
        """Soft delete: gone from the list and from members' `groups`; its detail a 404."""
        self.store.change_directory(domain, Directory.delete_group, group_id)

    def restore_group(self, domain: str, group_id: str) -> None:
        self.store.change_directory(domain, Directory.restore_group, group_id)

    def add_location(self, domain: str, name: str, location_type: str,
                     parent_id: str | None = None, **fields: Any) -> str:
        """A new location of type `location_type` (a code: country, region, district,
        facility) under `parent_id` (a location of the parent type). Fields: site_code
        (default: a slug of the name), latitude, longitude, location_data, external_id.
        Returns its location_id."""
        pk = self.store.next_location_pk()
        return self.store.change_directory(domain, Directory.add_location, pk, name,
                                           location_type, parent_id, **fields)

    def update_location(self, domain: str, location_id: str, **changes: Any) -> None:
        """name, site_code, latitude, longitude, location_data (replaced), external_id."""
        self.store.change_directory(domain, Directory.update_location, location_id, **changes)

    def move_location(self, domain: str, location_id: str, parent_id: str | None) -> None:
        """A new parent (of the parent type): only the moved location is saved."""
        self.store.change_directory(domain, Directory.move_location, location_id, parent_id)

    def archive_location(self, domain: str, location_id: str) -> list[str]:
        """Archive the location and its descendants (each saved; their users unassigned): gone
        from both location APIs. Returns the ids archived."""
        return self.store.change_directory(domain, Directory.archive_location, location_id)

    def unarchive_location(self, domain: str, location_id: str) -> list[str]:
        """Unarchive it, its descendants and its ancestors (all saved again). Returns the ids
        saved."""
        return self.store.change_directory(domain, Directory.unarchive_location, location_id)

    def delete_location(self, domain: str, location_id: str) -> list[str]:
        """Delete the location and its descendants for good (users unassigned). Returns the
        ids deleted."""
        return self.store.change_directory(domain, Directory.delete_location, location_id)

    # --- logins, the export API, the OTA restore -----------------------------------------------

    def add_web_login(self, username: str, password: str, api_key: str | None = None,
                      domains: Iterable[str] | None = None) -> None:
        """A web login (Basic and Digest on the data APIs and the export API), or a password
        for an existing API user. `api_key` (default: keep the user's, or none) also allows
        `ApiKey`; `domains` (default: keep, or every domain) limits what it may read."""
        key, current = self.users.get(username, ("", None))
        self.users[username] = (key if api_key is None else api_key,
                                current if domains is None else list(domains))
        self.web_passwords[username] = password

    def mobile_worker_password(self, domain: str, username: str) -> str:
        """The password a mobile worker logs in to the restore with (`username` with or
        without `@<domain>.commcarehq.org`); generated workers have "123"."""
        full = username if "@" in username else f"{username}@{domain}.commcarehq.org"
        with self.store.lock:
            w = self.store.domain(domain).directory.worker_by_username(full)
            if w is None or w.deleted:
                raise KeyError(f"no mobile worker {username!r} in {domain!r}")
            return w.password

    def set_digest_nonce_lifetime(self, seconds: float) -> None:
        """How long a Digest nonce stays good (default 300 s); after that the right answer to
        it gets a new 401 challenge with `stale="true"`."""
        self.nonces.lifetime = float(seconds)

    def set_export_limit(self, max_bytes: int) -> None:
        """The biggest export body served (default 10 MB); a bigger one is a 500 error page."""
        if int(max_bytes) < 1:
            raise ValueError("the export limit must be at least 1 byte")
        self.export_limit = int(max_bytes)

    def export_view(self, domain: str, xmlns: str) -> dict[str, dict[Any, dict[str, str]]]:
        """What a full `/reports/export/?export_tag="<xmlns>"&format=json` holds now, keyed
        independently of row numbers: {"#": {form_id: {header: value}}, "#.form.<repeat>.#":
        {(form_id, "0"): {header: value}, (form_id, "1.0"): ...}} (row id within the form as
        the served id after the form's row number; headers as served with the default
        max_column_size, without "id")."""
        return exportapi.export_view(self.store, domain, xmlns)

    def add_lookup_table(self, domain: str, tag: str, fields: Iterable[str],
                         items: Iterable[Mapping[str, Any]],
                         users: Iterable[str] | None = None) -> None:
        """A lookup table (replacing one with the same tag): `items` are {field: value}
        dicts; `users` (worker ids or usernames) limits it to those workers' restores, None
        sends it to everyone. Restores carry it as `item-list:<tag>`."""
        with self.store.lock:
            d = self.store.domain(domain)
            table = fixtures.make_table(d.directory, tag, fields, items,
                                        None if users is None else list(users))
            d.lookup_tables[:] = [t for t in d.lookup_tables if t.tag != tag] + [table]

    def restore_caseload(self, domain: str, username: str) -> dict[str, dict[str, Any]]:
        """The open cases a full restore sends the worker now: case id -> {case_type, name,
        owner_id, external_id, date_opened, properties, indices {identifier: {case_id,
        case_type, relationship}}}, values as the restore's XML carries them (properties whose
        names are not XML names, and XML-illegal characters, left out)."""
        return restore.caseload(self.store, domain, username)

    # --- HQ at its worst -----------------------------------------------------------------------

    @property
    def replicas(self) -> int:
        return self.store.replicas

    def set_replicas(self, n: int, seed: int = 0) -> None:
        """Answer each v0.5 list from one of `n` index copies, drawn with a seeded rng."""
        self.store.set_replicas(n, seed)

    def reindex_during_reads(self, resource: str, after_requests: int = 1, count: int = 1,
                             domain: str | None = None, seed: int = 0) -> None:
        """After `after_requests` more v0.5 `resource` lists, re-index `count` records of the
        last page (forms archived, cases touched); their ids go to `reindexed_ids`."""
        self.store.reindex_during_reads(resource, after_requests, count, domain, seed)

    @property
    def reindexed_ids(self) -> list[str]:
        with self.store.lock:
            return list(self.store.reindexed_ids)

    def set_rate_limit(self, enabled: bool = True, users: int | None = None, scale: float = 1.0,
                       retry_after_on_v05: bool = False) -> None:
        """HQ's per-project API rate limit (off by default): about 1/s + 0.22/s and
        10/min + 3.04/min per active mobile worker; v0.5 answers 429 without Retry-After,
        Case API v2 with it. Re-configuring refills the buckets."""
        self.rate_limiter.configure(enabled, users, scale, retry_after_on_v05)

    def set_latency(self, seconds: float) -> None:
        """Answer every request (not the `/_sim/` control API) `seconds` late. The server is
        threaded, so concurrent requests wait side by side, not one after another."""
        seconds = float(seconds)
        if not seconds >= 0:
            raise ValueError("latency must be zero or more seconds")
        self.latency = seconds

    def stats(self) -> dict:
        return {"domains": self.store.stats(), "clock": self.now().isoformat(),
                "requests": len(self._requests), "faults_pending": len(self.faults.pending()),
                "replicas": self.replicas, "reindexed_ids": self.reindexed_ids,
                "rate_limit": self.rate_limiter.settings(), "latency": self.latency}


def serve(host: str = "127.0.0.1", port: int = 8000, domain: str = "demo", n_cases: int = 300,
          seed: int = 0, username: str = "demo@example.org", api_key: str = "demo-key",
          awkward: bool = False, replicas: int = DEFAULT_REPLICAS, rate_limit: bool = False,
          password: str | None = None, latency: float = 0.0) -> None:
    """Run a simulator in the foreground until Ctrl-C (`password`: also a web login;
    `latency`: seconds each request waits before its answer)."""
    dataset = Dataset.generate(domain=domain, seed=seed, n_cases=n_cases, awkward=awkward)
    sim = HQSimulator([dataset], users={username: (api_key, None, password)}, host=host,
                      port=port, replicas=replicas, rate_limit=rate_limit, latency=latency)
    sim.start()
    try:  # Ctrl-C may come as soon as the line is out (while logging still returns)
        log.info("HQ simulator: %s/a/%s/api/v0.5/case/ (%d cases, %d forms, %d index cop%s%s); "
                 "Authorization: ApiKey %s:%s%s; restore at /a/%s/phone/restore/ (mobile "
                 "workers chw1@%s.commcarehq.org... password 123); control API at %s/_sim/stats",
                 sim.base_url, domain, len(dataset.cases), len(dataset.forms), replicas,
                 "y" if replicas == 1 else "ies", (", rate-limited" if rate_limit else "")
                 + (f", {latency:g}s latency" if latency else ""),
                 username, api_key, "" if password is None else " (or Basic/Digest with its "
                 "password, also on /reports/export/)", domain, domain, sim.base_url)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
