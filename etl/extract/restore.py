"""The OTA restore (`/a/<domain>/phone/restore/`): a mobile worker's caseload, as their phone
gets it, with nothing but that worker's login.

One stream per worker (a partition each), cursor: the restore's `restore_id`, sent as `since`
next time, when HQ answers with what changed since. HTTP 412 means the token is stale or not
this worker's: the token is dropped and a full restore replaces the worker's caseload.

The response is parsed as a stream (`restore_xml`) and loaded a page of blocks at a time; the
new `restore_id` is saved only with the last page, so a run that breaks off re-reads the
restore from the old token (applying its blocks again changes nothing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from etl.errors import ConfigError, HQError, MalformedResponse
from etl.extract import restore_xml
from etl.extract.client import HQClient, RestoreTokenRejected, make_client
from etl.extract.cursors import RestoreCursor
from etl.extract.streams import Page, Stream

log = logging.getLogger(__name__)

BLOCKS_PER_PAGE = 2000


@dataclass(frozen=True)
class Worker:
    username: str  # name@domain.commcarehq.org
    password: str

    @property
    def domain(self) -> str:
        host = self.username.partition("@")[2]
        return host.split(".", 1)[0] if host.endswith(".commcarehq.org") else ""

    def __repr__(self) -> str:  # never the password, not even in a traceback
        return f"Worker({self.username!r})"


def read_workers(path: Path) -> list[Worker]:
    """RESTORE_USERS_FILE: `username@domain.commcarehq.org:password` per line; blank lines and
    `#` comments are skipped. A password may hold colons; a username cannot."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"RESTORE_USERS_FILE: cannot read {path}: {exc.strerror}") from None
    workers = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        username, sep, password = line.partition(":")
        if not sep or "@" not in username or not password:
            raise ConfigError(
                f"RESTORE_USERS_FILE {path}, line {number}: expected "
                f"username@domain.commcarehq.org:password (the line is not shown: it may "
                f"hold a password)")
        workers.append(Worker(username.strip(), password))
    return workers


@dataclass
class RestoreStream(Stream):
    """A worker's restore; the records are the restore's blocks in document order, between a
    `begin` record (is this a full restore?) and an `end` record."""

    name = "restore"
    path = "phone/restore/"
    primary_key = "case_id"
    cursor_kind = RestoreCursor

    worker: Worker | None = None

    def pages(self, cursor: RestoreCursor) -> Iterator[Page]:
        try:
            yield from self._restore(cursor.restore_id)
        except RestoreTokenRejected as exc:
            if not cursor.restore_id:
                raise
            log.warning("restore [%s]: HQ refused the saved restore token (%s): doing a full "
                        "restore, which replaces this worker's caseload", self.worker.username,
                        exc)
            yield from self._restore(None)
        finally:
            self.client.close()

    def _restore(self, since: str | None) -> Iterator[Page]:
        params = {"version": "2.0"}
        if since:
            params["since"] = since
        response = self.client.open_restore(f"/a/{self.domain}/{self.path}", params)
        self._made_request()
        url = response.url
        worker = self.worker.username
        old = RestoreCursor(since)
        page: list[dict] = [{"kind": "begin", "worker": worker, "full": not since}]
        restore_id = None
        try:
            response.raw.decode_content = True
            for block in restore_xml.blocks(response.raw):
                if block["kind"] == "sync":
                    restore_id = block["restore_id"]
                    continue
                if block["kind"] == "message":
                    continue
                block["worker"] = worker
                page.append(block)
                if len(page) >= BLOCKS_PER_PAGE:
                    yield Page(page, old, url=url)
                    page = []
        except restore_xml.ParseError as exc:
            raise MalformedResponse(f"the restore of {worker} at {url} is not well-formed XML "
                                    f"({exc}); the restore token did not move", url=url) from None
        except OSError as exc:  # the connection dropped mid-body
            raise HQError(f"the restore of {worker} broke off ({exc}); the restore token did "
                          f"not move: run again", url=url) from None
        finally:
            response.close()
        if not restore_id:
            raise MalformedResponse(f"the restore of {worker} at {url} has no restore_id; the "
                                    f"restore token did not move", url=url)
        page.append({"kind": "end", "worker": worker, "full": not since})
        yield Page(page, RestoreCursor(restore_id), url=url)


def worker_client(settings, worker: Worker) -> HQClient:
    """A client logged in as the worker (HTTP Basic, or Digest with COMMCARE_AUTH=digest)."""
    return make_client(
        settings, username=worker.username, password=worker.password,
        auth="digest" if settings.commcare_auth == "digest" else "basic",
        login_hint=(f"Check the password of {worker.username} in RESTORE_USERS_FILE, and "
                    f"that the mobile worker is active; the other workers still sync."))
