"""Faults the simulator can inject: one-shot rules consumed by matching requests, or random."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

KINDS = ("429", "500", "502", "503", "504", "reset", "truncated", "html", "slow", "401", "403")


@dataclass
class Fault:
    kind: str
    count: int = 1
    resource: str | None = None  # None: any; else "case", "form", "case_v2", "application"
    after: int = 0  # let this many matching requests through first
    options: dict = field(default_factory=dict)


class Faults:
    def __init__(self) -> None:
        self._rules: list[Fault] = []
        self._random: tuple[float, list[str], random.Random] | None = None
        self._lock = threading.Lock()

    def add(self, kind: str, count: int = 1, resource: str | None = None, after: int = 0,
            **options) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}; choose from {KINDS}")
        with self._lock:
            self._rules.append(Fault(kind, count, resource, after, options))

    def set_random(self, rate: float, kinds: list[str], seed: int = 0) -> None:
        with self._lock:
            self._random = (rate, list(kinds), random.Random(seed))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._random = None

    def take(self, resource: str) -> Fault | None:
        """The fault to apply to this request, if any (consumes it)."""
        with self._lock:
            for rule in self._rules:
                if rule.resource not in (None, resource):
                    continue
                if rule.after > 0:
                    rule.after -= 1
                    return None
                rule.count -= 1
                if rule.count <= 0:
                    self._rules.remove(rule)
                return rule
            if self._random:
                rate, kinds, rng = self._random
                if rng.random() < rate:
                    return Fault(rng.choice(kinds), options={"retry_after": rng.choice([None, 0])})
        return None
