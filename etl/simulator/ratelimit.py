"""HQ's per-project API rate limit, as token buckets (opt-in: off unless enabled).

HQ throttles API requests per project (`api_rate_limiter` in corehq/apps/api/resources/meta.py,
feature key "api"): a constant allowance of 1/second, 10/minute, 30/hour and 50/day, plus per
active mobile worker `get_standard_ratio_rate_definition(events_per_day=1000)`, which is
1000/23 times (0.005/s, 0.07/min, 3/h, 23/day): about 0.22/s, 3.04/min, 130/h and 1000/day.
A request is allowed while every window has room; only allowed requests count
(`HQThrottle.accessed` runs after the check). Here each window is a bucket holding that
window's allowance, refilled continuously: the per-minute bucket is the one a steady reader
meets (10 + 3.04 per worker a minute: 34 for the simulated project's 8 workers), the
per-second one limits bursts.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

# (window seconds, constant allowance, allowance per active mobile worker)
WINDOWS: tuple[tuple[int, float, float], ...] = (
    (1, 1.0, 1000 * 0.005 / 23),
    (60, 10.0, 1000 * 0.07 / 23),
    (3600, 30.0, 1000 * 3 / 23),
    (86_400, 50.0, 1000.0),
)


class RateLimiter:
    """Token buckets per project. `acquire` returns None (allowed, counted) or the seconds
    until the request would be allowed."""

    def __init__(self, enabled: bool = False, users: int | None = None, scale: float = 1.0,
                 retry_after_on_v05: bool = False, clock: Callable[[], float] = time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self.configure(enabled, users, scale, retry_after_on_v05)

    def configure(self, enabled: bool = True, users: int | None = None, scale: float = 1.0,
                  retry_after_on_v05: bool = False) -> None:
        """`users`: active mobile workers to assume (None: the project's own); `scale`
        multiplies every allowance (below 1: a stricter HQ); `retry_after_on_v05`: tastypie
        resources send Retry-After on their 429s too (HQ's do not, as far as its code shows)."""
        if scale <= 0:
            raise ValueError(f"scale must be positive, not {scale}")
        with self._lock:
            self.enabled = bool(enabled)
            self.users = None if users is None else int(users)
            self.scale = float(scale)
            self.retry_after_on_v05 = bool(retry_after_on_v05)
            self._buckets: dict[str, tuple[float, list[float]]] = {}  # domain -> (when, tokens)

    def settings(self) -> dict:
        return {"enabled": self.enabled, "users": self.users, "scale": self.scale,
                "retry_after_on_v05": self.retry_after_on_v05}

    def _capacities(self, users: int) -> list[tuple[float, float]]:
        """(capacity, refill per second) of each window."""
        out = []
        for seconds, constant, per_user in WINDOWS:
            capacity = max(1.0, self.scale * (constant + per_user * users))
            out.append((capacity, capacity / seconds))
        return out

    def acquire(self, domain: str, active_users: int) -> float | None:
        if not self.enabled:
            return None
        users = active_users if self.users is None else self.users
        limits = self._capacities(users)
        with self._lock:
            now = self._clock()
            then, tokens = self._buckets.get(domain, (now, [c for c, _ in limits]))
            elapsed = max(0.0, now - then)
            tokens = [min(c, t + r * elapsed) for t, (c, r) in zip(tokens, limits)]
            if all(t >= 1.0 for t in tokens):
                self._buckets[domain] = (now, [t - 1.0 for t in tokens])
                return None
            self._buckets[domain] = (now, tokens)
            return max((1.0 - t) / r for t, (_, r) in zip(tokens, limits) if t < 1.0)
