"""A polite HTTP client for CommCare HQ's APIs.

One job: GET from HQ. It authenticates with an API key, or with a login by HTTP Basic or Digest
(`COMMCARE_AUTH`), retries what can succeed on a second try (429, 5xx, dropped connections,
timeouts, truncated or non-JSON bodies) with back-off that honours `Retry-After`, within a
bounded total time, and fails at once, with a message that says what to fix, on what cannot
(401/403 and other 4xx). `get_json` reads a JSON document, `get_export` an Export API answer
(its token header; a 302 is "nothing new"), `open_restore` an OTA restore, as a stream.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar
from urllib.parse import urljoin

import requests
import requests.auth
import tenacity
from requests.adapters import HTTPAdapter

from etl import __version__, jsonutil
from etl.errors import (AuthError, HQError, HQNotFound, HQRequestRejected, HQUnreachable,
                        MalformedResponse)
from etl.extract.throttle import RequestGate, shared_gate

if TYPE_CHECKING:
    from etl.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Cheap test on the raw body: JSON can only carry NUL or a lone surrogate as a \u escape.
_NEEDS_CLEANING = re.compile(rb"\\u0000|\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class JsonDocument:
    data: Any
    url: str
    needs_cleaning: bool  # the body holds NULs or surrogates Postgres cannot store


class _Retryable(Exception):
    """A failure worth another try; carries the server's Retry-After, if any.

    `unreached` marks a failure to reach HQ at all (refused, DNS, connect time-out): before HQ
    has answered once in this run, those get a short budget, since a wrong COMMCARE_BASE_URL
    or a machine without a route to HQ will not heal in 15 minutes.
    """

    def __init__(self, message: str, retry_after: float | None = None, unreached: bool = False,
                 throttled: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.unreached = unreached
        self.throttled = throttled  # HQ's rate limit: fewer requests in flight from now on


# HQ's API_BLACKLIST answers 401 with this, meaning "too many requests", not bad credentials.
_THROTTLED_401 = re.compile(r"temporarily cut off|too many requests", re.IGNORECASE)


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    if isinstance(body, dict):
        return str(body.get("error") or body.get("error_message") or body)[:300]
    return str(body)[:300]


@dataclass(frozen=True)
class ExportAnswer:
    """The Export API's answer: the tables (None: HQ has nothing new) and the new token."""

    tables: dict | None
    token: str | None
    url: str
    needs_cleaning: bool = False


class RestoreTokenRejected(HQRequestRejected):
    """HTTP 412 to a restore with `since`: the token is unknown, stale or another user's."""


AUTH_MODES = ("apikey", "basic", "digest")


class HQClient:
    def __init__(
        self,
        base_url: str,
        username: str,
        api_key: str = "",
        *,
        auth: str = "apikey",
        password: str = "",
        login_hint: str = "",
        timeout: float = 120.0,
        retry_max_seconds: float = 900.0,
        retry_initial_wait: float = 2.0,
        retry_max_wait: float = 120.0,
        unreachable_max_seconds: float = 45.0,
        gate: RequestGate | None = None,
    ):
        if auth not in AUTH_MODES:
            raise ValueError(f"unknown auth {auth!r}; choose from {AUTH_MODES}")
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.auth = auth
        # What to check when HQ refuses the login (which settings hold it).
        self.login_hint = login_hint
        self.timeout = timeout
        self.retry_max_seconds = retry_max_seconds
        self.retry_initial_wait = retry_initial_wait
        self.retry_max_wait = retry_max_wait
        self.unreachable_max_seconds = unreachable_max_seconds
        self.connect_timeout = min(timeout, 15.0)
        self.answered = False  # has HQ answered anything (any status) in this run?
        self.requests_made = 0
        self._counting = threading.Lock()  # windows and a plan's probe share a client
        # Shared with the project's other readers: requests in flight and per second.
        self.gate = gate or RequestGate()
        self.session = requests.Session()
        pool = max(4, self.gate.max_in_flight)
        self.session.mount("http://", HTTPAdapter(pool_connections=pool, pool_maxsize=pool))
        self.session.mount("https://", HTTPAdapter(pool_connections=pool, pool_maxsize=pool))
        self.session.headers.update({"Accept": "application/json",
                                     "User-Agent": f"commcare-etl/{__version__}"})
        if auth == "apikey":
            self.session.headers["Authorization"] = f"ApiKey {username}:{api_key}"
        elif auth == "basic":
            self.session.auth = requests.auth.HTTPBasicAuth(username, password)
        else:
            self.session.auth = requests.auth.HTTPDigestAuth(username, password)

    def url(self, path_or_url: str) -> str:
        """HQ's `next` links are relative paths (v0.5) or absolute URLs (v2)."""
        return urljoin(self.base_url + "/", path_or_url)

    def get_json(self, path_or_url: str, params: Mapping[str, Any] | None = None) -> JsonDocument:
        url = self.url(path_or_url)
        return self._with_retries(url, lambda: self._get_once(url, params))

    def get_export(self, path_or_url: str, params: Mapping[str, Any]) -> ExportAnswer:
        """GET an Export API answer. A 302 means no new data: it is not followed (it leads to
        an HTML page), and the answer has no tables."""
        url = self.url(path_or_url)
        return self._with_retries(url, lambda: self._export_once(url, params))

    def open_restore(self, path_or_url: str, params: Mapping[str, Any]) -> requests.Response:
        """GET an OTA restore and return the response with its body unread (a restore can be
        hundreds of MB: read `response.raw` as a stream, then close it). A 412 raises
        RestoreTokenRejected; a 202 (restore still being prepared) waits its Retry-After."""
        url = self.url(path_or_url)
        return self._with_retries(url, lambda: self._restore_once(url, params))

    def _with_retries(self, url: str, once: Callable[[], T]) -> T:
        started = time.monotonic()
        attempts = 0

        def delay(retry_state: tenacity.RetryCallState, jitter: bool = True) -> float:
            exc = retry_state.outcome.exception() if retry_state.outcome else None
            if isinstance(exc, _Retryable) and exc.retry_after is not None:
                return exc.retry_after
            backoff = min(self.retry_max_wait,
                          self.retry_initial_wait * 2 ** (retry_state.attempt_number - 1))
            return backoff * random.uniform(0.5, 1.0) if jitter else backoff

        def budget(retry_state: tenacity.RetryCallState) -> float:
            exc = retry_state.outcome.exception() if retry_state.outcome else None
            if isinstance(exc, _Retryable) and exc.unreached and not self.answered:
                return min(self.retry_max_seconds, self.unreachable_max_seconds)
            return self.retry_max_seconds

        def stop(retry_state: tenacity.RetryCallState) -> bool:
            # Stop when the next wait would carry us past the total budget.
            elapsed = time.monotonic() - started
            return elapsed + delay(retry_state, jitter=False) > budget(retry_state)

        def before_sleep(retry_state: tenacity.RetryCallState) -> None:
            exc = retry_state.outcome.exception() if retry_state.outcome else None
            pause = retry_state.next_action.sleep if retry_state.next_action else 0
            log.warning("HQ request failed (%s); retry %d in %.1fs: %s",
                        exc, retry_state.attempt_number, pause, url)

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            return once()

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            wait=delay,
            stop=stop,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Retryable as exc:
            elapsed = time.monotonic() - started
            if exc.unreached and not self.answered:
                # Later requests of this run need not wait as long again to learn the same.
                self.unreachable_max_seconds = 0.0
                raise HQUnreachable(
                    f"cannot reach CommCare HQ at {self.base_url}: GET {url} failed {attempts} "
                    f"time(s) over {elapsed:.0f}s; last error: {exc}. Check COMMCARE_BASE_URL "
                    f"(e.g. https://www.commcarehq.org or https://india.commcarehq.org), and "
                    f"this machine's network, DNS and proxy settings.", url=url) from None
            raise HQError(
                f"HQ kept failing: GET {url} failed {attempts} time(s) over {elapsed:.0f}s; "
                f"last error: {exc}. The checkpoint stays at the last loaded page; run again "
                f"later (raise RETRY_MAX_SECONDS to wait longer).",
                url=url,
            ) from None

    def _send(self, url: str, params: Mapping[str, Any] | None, *, read_body: bool = True,
              allow_redirects: bool = True, accept: tuple[int, ...] = ()) -> requests.Response:
        """One GET; raises what the status means unless it is 200 or in `accept`."""
        with self.gate.request() as outcome:
            try:
                response = self._send_once(url, params, read_body=read_body,
                                           allow_redirects=allow_redirects)
            except _Retryable as exc:
                if exc.throttled:
                    outcome.throttle(exc.retry_after)
                raise
            outcome.answered = True
        return self._check(response, accept)

    def _send_once(self, url: str, params: Mapping[str, Any] | None, *, read_body: bool,
                   allow_redirects: bool) -> requests.Response:
        with self._counting:
            self.requests_made += 1
        try:
            response = self.session.get(url, params=params, stream=True,
                                        allow_redirects=allow_redirects,
                                        timeout=(self.connect_timeout, self.timeout))
        except requests.ConnectTimeout as exc:
            raise _Retryable(f"no connection within {self.connect_timeout:g}s "
                             f"({type(exc).__name__})", unreached=True) from None
        except requests.Timeout as exc:
            raise _Retryable(f"no answer within {self.timeout:g}s ({type(exc).__name__})") from None
        except requests.ConnectionError as exc:  # refused, unresolvable, reset before answering
            raise _Retryable(f"connection error: {exc}", unreached=True) from None
        except requests.RequestException as exc:
            raise _Retryable(f"connection error: {exc}") from None
        self.answered = True
        status = response.status_code
        if read_body or status != 200:
            try:
                response.content  # reads the whole body: a dropped connection raises here
            except requests.Timeout as exc:
                raise _Retryable(f"no answer within {self.timeout:g}s "
                                 f"({type(exc).__name__})") from None
            except requests.RequestException as exc:
                raise _Retryable(f"connection error: {exc}") from None
        retry_after = _parse_retry_after(response.headers.get("Retry-After"))
        if status == 429:
            raise _Retryable("HTTP 429", retry_after=retry_after, throttled=True)
        if status == 401 and _THROTTLED_401.search(_error_text(response)):
            raise _Retryable(f"HTTP 401, rate limited: {_error_text(response)}",
                             retry_after=retry_after, throttled=True)
        return response

    def _check(self, response: requests.Response, accept: tuple[int, ...]) -> requests.Response:
        status = response.status_code
        if status in accept:
            return response
        full_url = response.url
        retry_after = _parse_retry_after(response.headers.get("Retry-After"))
        if status in (401, 403):
            raise self._auth_error(response, full_url)
        if status in RETRY_STATUSES or status >= 500:
            raise _Retryable(f"HTTP {status}", retry_after=retry_after)
        if status == 404:
            raise HQNotFound(
                f"HQ answered 404 Not Found for {full_url}: check COMMCARE_BASE_URL and "
                f"COMMCARE_DOMAIN (the project space name as in the HQ address bar)",
                url=full_url, status=status,
            )
        if status >= 400:
            raise HQRequestRejected(
                f"HQ rejected the request with HTTP {status}: {_error_text(response)} "
                f"(GET {full_url})",
                url=full_url, status=status,
            )
        if status != 200:  # e.g. 202 "not ready yet, come back after Retry-After"
            raise _Retryable(f"HTTP {status} (not ready)", retry_after=retry_after)
        return response

    def _get_once(self, url: str, params: Mapping[str, Any] | None) -> JsonDocument:
        response = self._send(url, params)
        return self._json(response)

    def _json(self, response: requests.Response) -> JsonDocument:
        raw = response.content
        full_url = response.url
        try:
            data = jsonutil.loads(raw)
        except ValueError as exc:
            kind = response.headers.get("Content-Type", "unknown content type")
            raise _Retryable(f"malformed JSON body ({kind}, {len(raw)} bytes): {exc}") from None
        return JsonDocument(data=data, url=full_url, needs_cleaning=bool(_NEEDS_CLEANING.search(raw)))

    def _export_once(self, url: str, params: Mapping[str, Any]) -> ExportAnswer:
        response = self._send(url, params, allow_redirects=False, accept=(301, 302, 303))
        if response.status_code != 200:
            return ExportAnswer(None, None, response.url)
        doc = self._json(response)
        if not isinstance(doc.data, dict):
            raise MalformedResponse(f"HQ answered the export {doc.url} with JSON that is not an "
                                    f"object of tables", url=doc.url)
        return ExportAnswer(doc.data, response.headers.get("X-CommCareHQ-Export-Token"),
                            doc.url, doc.needs_cleaning)

    def _restore_once(self, url: str, params: Mapping[str, Any]) -> requests.Response:
        response = self._send(url, params, read_body=False, accept=(412,))
        if response.status_code == 412:
            raise RestoreTokenRejected(
                f"HQ refused the restore token (HTTP 412): {_error_text(response)}",
                url=response.url, status=412)
        return response

    def _auth_error(self, response: requests.Response, url: str) -> AuthError:
        detail = _error_text(response)
        detail = f" HQ said: {detail}." if detail else ""
        if response.status_code == 401:
            if self.login_hint:
                check = self.login_hint
            elif self.auth == "apikey":
                check = ("Check COMMCARE_USERNAME (the web user's email) and COMMCARE_API_KEY "
                         "(HQ: My Account > API Keys), and that the key's IP allow-list admits "
                         "this machine.")
            else:
                check = ("Check COMMCARE_USERNAME (the web user's email) and COMMCARE_PASSWORD "
                         f"(COMMCARE_AUTH={self.auth}: the web login's password).")
            return AuthError(
                f"HQ refused the credentials (HTTP 401) for user {self.username!r}.{detail} "
                f"{check}")
        return AuthError(
            f"HQ denied access (HTTP 403) for user {self.username!r} to {url}.{detail} "
            f"The user needs the 'Edit Data' and 'Access APIs' permissions in this project "
            f"space, and the project needs a plan with API access."
        )

    def close(self) -> None:
        self.session.close()


def require_json_object(doc: JsonDocument, *keys: str) -> dict:
    """The envelope must be an object with these keys; anything else is a malformed page."""
    if not isinstance(doc.data, dict) or any(k not in doc.data for k in keys):
        got = sorted(doc.data)[:10] if isinstance(doc.data, dict) else type(doc.data).__name__
        raise MalformedResponse(
            f"HQ answered {doc.url} with a document that lacks {list(keys)} (got {got}); "
            f"is COMMCARE_BASE_URL pointing at CommCare HQ?",
            url=doc.url,
        )
    return doc.data


def make_client(settings: "Settings", *, username: str | None = None, auth: str | None = None,
                password: str | None = None, login_hint: str = "") -> HQClient:
    """The client a project's settings describe (its server, credentials, time limits); or,
    with `username` and the rest, the same server and limits with another login."""
    return HQClient(
        settings.commcare_base_url, username or settings.commcare_username or "",
        settings.api_key if username is None else "", auth=auth or settings.commcare_auth,
        password=settings.password if password is None else password,
        login_hint=login_hint, timeout=settings.http_timeout,
        retry_max_seconds=settings.retry_max_seconds, retry_initial_wait=settings.retry_initial_wait, retry_max_wait=settings.retry_max_wait,
        unreachable_max_seconds=settings.unreachable_retry_seconds,
        gate=project_gate(settings),
    )


def project_gate(settings: "Settings") -> RequestGate:
    """The gate of the project these settings name, shared in this process. Streams synced
    side by side in processes (PARALLEL_STREAMS) split the ceiling between them."""
    share = max(1, settings.parallel_streams)
    domain = settings.commcare_domain[0] if settings.commcare_domain else ""
    return shared_gate(settings.commcare_base_url, domain,
                       max(1, settings.max_concurrent_requests // share) if share > 1
                       else settings.max_concurrent_requests,
                       settings.max_requests_per_second / share)
