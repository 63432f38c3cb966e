"""How many requests to HQ may be in flight, and how often one may start.

HQ limits API requests per project (about 1/s plus about 0.2/s per active mobile worker, more
in short bursts; see README, "Requests to HQ"). Every reader of one project in this process
shares one `RequestGate`:

- at most `max_in_flight` requests at once (`MAX_CONCURRENT_REQUESTS`), fewer after HQ says
  "too many": the allowance halves on each 429 and grows back by one after as many successes
  as it allows (additive increase, multiplicative decrease, as TCP does);
- a 429's `Retry-After` holds every reader, not just the one that was told;
- never more than `max_per_second` request starts per second (`MAX_REQUESTS_PER_SECOND`; 0
  means no ceiling of our own), spaced evenly, so no burst exceeds it either.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

log = logging.getLogger(__name__)


class RequestGate:
    def __init__(self, max_in_flight: int = 1, max_per_second: float = 0.0, *,
                 clock: Callable[[], float] = time.monotonic):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self.max_in_flight = max_in_flight
        self.max_per_second = max(0.0, float(max_per_second))
        self.allowed = max_in_flight  # the in-flight allowance now (halved by 429s)
        self.in_flight = 0
        self.peak_in_flight = 0
        self.throttled = 0  # 429s seen
        self._successes = 0
        self._next_start = 0.0  # the earliest moment the next request may start
        self._held_until = 0.0  # a Retry-After, for everyone
        self._clock = clock
        self._cond = threading.Condition()

    @contextmanager
    def request(self) -> Iterator["_Outcome"]:
        """Wait for a slot; the caller says through the outcome whether HQ throttled it."""
        self._acquire()
        outcome = _Outcome()
        try:
            yield outcome
        finally:
            self._release(outcome)

    def _acquire(self) -> None:
        with self._cond:
            while True:
                now = self._clock()
                wait = max(self._held_until - now, 0.0)
                if not wait and self.in_flight < self.allowed:
                    wait = max(self._next_start - now, 0.0)
                    if not wait:
                        break
                elif not wait:
                    wait = None  # until a request ends
                self._cond.wait(timeout=wait if wait is None else min(wait, 1.0))
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            if self.max_per_second:
                self._next_start = max(now, self._next_start) + 1.0 / self.max_per_second

    def _release(self, outcome: "_Outcome") -> None:
        with self._cond:
            self.in_flight -= 1
            if outcome.throttled:
                self.throttled += 1
                self._successes = 0
                before, self.allowed = self.allowed, max(1, self.allowed // 2)
                if outcome.retry_after:
                    self._held_until = max(self._held_until,
                                           self._clock() + outcome.retry_after)
                if self.allowed < before:
                    log.info("HQ is rate limiting: at most %d request(s) in flight now",
                             self.allowed)
            elif outcome.answered and self.allowed < self.max_in_flight:
                self._successes += 1
                if self._successes >= self.allowed:
                    self._successes = 0
                    self.allowed += 1
            self._cond.notify_all()


class _Outcome:
    """What became of one request: `answered` (any answer but a throttle), or `throttled`."""

    def __init__(self) -> None:
        self.answered = False
        self.throttled = False
        self.retry_after: float | None = None

    def throttle(self, retry_after: float | None) -> None:
        self.throttled, self.retry_after = True, retry_after


_gates: dict[tuple, RequestGate] = {}
_gates_lock = threading.Lock()


def shared_gate(base_url: str, domain: str, max_in_flight: int,
                max_per_second: float) -> RequestGate:
    """The gate every client of one project (with the same limits) in this process shares."""
    key = (base_url.rstrip("/"), domain, max_in_flight, max_per_second)
    with _gates_lock:
        gate = _gates.get(key)
        if gate is None:
            gate = _gates[key] = RequestGate(max_in_flight, max_per_second)
        return gate
