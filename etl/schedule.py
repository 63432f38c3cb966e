"""`commcare-etl run`: the scheduled job — sync, sleep, sync again, until told to stop.

A turn that fails is logged and tried again sooner (with back-off) instead of ending the
process, so a container keeps running through an HQ outage. A turn never overlaps the next:
they run one after another in this process (and the per-stream advisory locks keep other
processes out). SIGTERM (what `docker stop` sends) lets the pages in flight commit, then the
loop exits 0; during a sleep it exits at once.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from etl import stopping
from etl.errors import ConfigError, EtlError, Interrupted

log = logging.getLogger(__name__)

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, None: 60}
FIRST_RETRY = timedelta(seconds=30)


@dataclass(frozen=True)
class Schedule:
    """Every `interval`, or at the times of a cron expression (UTC)."""

    interval: timedelta | None = None
    cron: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Schedule":
        """`15m`, `1h`, `90s`, `2d` (a bare number is minutes), or a cron expression."""
        match = _INTERVAL.match(text)
        if match:
            seconds = float(match.group(1)) * _UNITS[(match.group(2) or "").lower() or None]
            if seconds <= 0:
                raise ConfigError(f"schedule {text!r}: the interval must be positive")
            return cls(interval=timedelta(seconds=seconds))
        from croniter import croniter

        if croniter.is_valid(text.strip()):
            return cls(cron=text.strip())
        raise ConfigError(f"schedule {text!r} is neither an interval (15m, 1h, 90s) nor a cron "
                          f"expression (*/15 * * * *)")

    def next_after(self, moment: datetime) -> datetime:
        if self.interval is not None:
            return moment + self.interval
        from croniter import croniter

        return croniter(self.cron, moment).get_next(datetime)

    def describe(self) -> str:
        return f"every {self.interval}" if self.interval is not None else f"at cron {self.cron!r}"


def run_forever(turn: Callable[[], bool], schedule: Schedule, *,
                max_turns: int | None = None) -> int:
    """Call `turn` (True: it succeeded) on `schedule` until SIGTERM; returns the exit code.

    After a failed turn the next comes sooner: 30 s, then doubling, never later than the
    schedule would have it.
    """
    failures = 0
    turns = 0
    log.info("scheduled: a sync %s (UTC); SIGTERM stops it", schedule.describe())
    while True:
        started = datetime.now(timezone.utc)
        try:
            ok = turn()
        except Interrupted:
            log.info("stopped by SIGTERM; the pages in flight were committed")
            return 0
        except EtlError as exc:
            log.error("this run failed: %s", exc)
            ok = False
        except Exception:  # noqa: BLE001 - a scheduled job lives through its runs' bugs
            log.exception("this run failed unexpectedly")
            ok = False
        turns += 1
        if max_turns is not None and turns >= max_turns:
            return 0
        failures = 0 if ok else failures + 1
        due = schedule.next_after(started)
        if failures:
            retry = started + min(FIRST_RETRY * 2 ** (failures - 1), due - started)
            due = min(due, retry)
            log.warning("%d run(s) in a row failed: trying again at %s", failures,
                        due.strftime("%Y-%m-%dT%H:%M:%SZ"))
        else:
            log.info("next run at %s", due.strftime("%Y-%m-%dT%H:%M:%SZ"))
        if _sleep_until(due):
            log.info("stopped by SIGTERM while waiting for the next run")
            return 0


def _sleep_until(due: datetime) -> bool:
    """Wait until `due`; True if a stop was requested meanwhile."""
    while not stopping.requested():
        left = (due - datetime.now(timezone.utc)).total_seconds()
        if left <= 0:
            return False
        time.sleep(min(left, 0.2))
    return True
