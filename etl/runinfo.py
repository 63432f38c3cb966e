"""What this process is doing, for log lines and the run history: the invocation (one id shared
by every stream of one `commcare-etl` command), what triggered it, and the stream at work.

Process-wide on purpose: a stream's HQ requests run in a helper thread whose log lines must
carry the same fields, and streams run one at a time per process (PARALLEL_STREAMS uses
processes, each told the invocation by its parent).
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Iterator

TRIGGERS = ("manual", "schedule", "backfill", "reconcile")
_state: dict[str, str | None] = {"invocation": None, "trigger": "manual", "domain": None,
                                 "stream": None}


def begin(trigger: str = "manual", invocation: str | None = None) -> str:
    """Start an invocation (or join the parent's, in a worker process); returns its id."""
    _state["invocation"] = invocation or uuid.uuid4().hex[:12]
    _state["trigger"] = trigger
    return _state["invocation"]


def invocation() -> str:
    return _state["invocation"] or begin()


def trigger() -> str:
    return _state["trigger"] or "manual"


@contextmanager
def working_on(domain: str, stream: str) -> Iterator[None]:
    before = _state["domain"], _state["stream"]
    _state["domain"], _state["stream"] = domain, stream
    try:
        yield
    finally:
        _state["domain"], _state["stream"] = before


def fields() -> dict[str, str]:
    """The fields every JSON log line carries (those that are set)."""
    return {k: v for k, v in _state.items() if v is not None}
