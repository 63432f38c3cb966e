"""Graceful stop: SIGTERM asks the pipeline to stop at the next safe point.

Raising from a signal handler could interrupt a database call halfway, leaving the connection
unusable for the rollback and the run's bookkeeping. So the first SIGTERM only sets a flag; the
pipeline checks it between pages (and while waiting for HQ) and stops there, with the current
page either committed or not begun. A second SIGTERM stops at once.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, TimeoutError as FutureTimeout
from typing import TypeVar

from etl.errors import Interrupted

log = logging.getLogger(__name__)
T = TypeVar("T")
_requested = threading.Event()
MESSAGE = "stopped by SIGTERM; the checkpoint stays at the last loaded page"


def on_sigterm(signum: int, frame: object) -> None:
    if _requested.is_set():
        raise Interrupted(MESSAGE)
    _requested.set()
    log.warning("SIGTERM: stopping after the page being loaded (send it again to stop now)")


def check() -> None:
    """Raise Interrupted if a stop was requested; call only where stopping is safe."""
    if _requested.is_set():
        raise Interrupted(MESSAGE)


def request() -> None:
    """Ask every reader of this process to stop at its next safe point (as SIGTERM does)."""
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


def wait_for(future: "Future[T]") -> T:
    """`future`'s result; a stop asked for meanwhile raises Interrupted at once (the work goes
    on in its thread, whose result is dropped). For waits on HQ outside a page's load."""
    while True:
        check()
        try:
            return future.result(timeout=0.2)
        except FutureTimeout:
            continue
