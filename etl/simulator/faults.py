"""Injected misbehaviour: a queue of one-shot faults, or a random failure rate."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

KINDS = ("429", "500", "502", "503", "504", "reset", "truncated", "html", "slow", "401", "403",
         "401-throttled", "202")
# Kinds answered with a canned response instead of the real one (api.fault_response).
CANNED = frozenset({"429", "500", "502", "503", "504", "html", "401", "403", "401-throttled",
                    "202"})
RESOURCES = (None, "case", "form", "case_v2", "application", "user", "web_user", "group",
             "location", "location_v2", "location_type", "export", "export_list", "restore")
# HqBaseResource.dispatch's answer while the API_BLACKLIST toggle is on for the request
# (corehq/apps/api/resources/__init__.py; two spaces between the sentences, as in HQ).
THROTTLED_MESSAGE = ("API access has been temporarily cut off due to too many requests.  "
                     "To re-enable, please contact support.")


@dataclass
class Fault:
    kind: str
    remaining: int
    resource: str | None
    options: dict[str, Any] = field(default_factory=dict)
    skip: int = 0  # matching requests to let through before this fault starts

    @property
    def retry_after(self) -> int | None:
        return self.options.get("retry_after")

    @property
    def delay(self) -> float:
        return float(self.options.get("delay", 1.0))


class FaultQueue:
    """`add` queues faults consumed by the next matching requests, oldest first;
    `set_random` makes every request fail with a probability."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Fault] = []
        self._rate = 0.0
        self._kinds: list[str] = []
        self._rng = random.Random(0)

    def add(self, kind: str, count: int = 1, resource: str | None = None, **options: Any) -> None:
        """Queue `count` faults of `kind` for requests to `resource` (None: any request).

        Kinds: "429" (empty, Retry-After if `retry_after`), "500"/"502"/"503"/"504" (HTML error
        pages), "reset" (part of the body, then a TCP reset), "truncated" (a 200 cut short; a
        streamed restore ends half-way, without its last chunk), "html" (a 200 login page),
        "slow" (answers after `delay`), "401" (empty, with a digest challenge), "403" (empty), "401-throttled" (the API_BLACKLIST toggle's JSON 401, no
        challenge), "202" (empty, Retry-After `retry_after` or 1: "not ready, come back").

        Options: `retry_after` (429/202: seconds for the Retry-After header; for 429 None
        means no header), `delay` (slow: seconds before answering), `after` (let that many
        matching requests through first).
        """
        kind = str(kind)
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(KINDS)}")
        if resource not in RESOURCES:
            raise ValueError(f"unknown resource {resource!r}; expected one of {RESOURCES}")
        if count < 1:
            raise ValueError("count must be at least 1")
        skip = int(options.pop("after", 0) or 0)
        with self._lock:
            self._queue.append(Fault(kind, count, resource, options, skip))

    def set_random(self, rate: float, kinds: list[str], seed: int = 0) -> None:
        """Fail each request with probability `rate`, with a kind drawn from `kinds`."""
        unknown = [k for k in kinds if str(k) not in KINDS]
        if unknown or not 0.0 <= rate <= 1.0 or (rate and not kinds):
            raise ValueError(f"bad random faults: rate={rate}, kinds={kinds}")
        with self._lock:
            self._rate = rate
            self._kinds = [str(k) for k in kinds]
            self._rng = random.Random(seed)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._rate = 0.0
            self._kinds = []

    def pending(self) -> list[Fault]:
        with self._lock:
            return [Fault(f.kind, f.remaining, f.resource, dict(f.options), f.skip)
                    for f in self._queue]

    def take(self, resource: str | None) -> Fault | None:
        """The fault this request suffers, if any (consuming it)."""
        with self._lock:
            for fault in self._queue:
                if fault.resource is not None and fault.resource != resource:
                    continue
                if fault.skip:
                    fault.skip -= 1
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._queue.remove(fault)
                return Fault(fault.kind, 1, fault.resource, dict(fault.options))
            if self._rate and self._rng.random() < self._rate:
                return Fault(self._rng.choice(self._kinds), 1, resource, {})
        return None
