"""The cyclic garbage collector, set for a batch job that makes millions of short-lived objects.

A page of 1,000 forms parses into some 300,000 dicts, lists and strings, and transforming it
makes as many again; none of them form reference cycles, so reference counting frees them all.
At Python's default thresholds (a collection every 700 net allocations) the collector still
ran thousands of times per page, and each full collection walked every object alive: a
profile of an initial sync (perf, 20,000 cases + 30,000 forms) put ~20% of the sync process's
CPU in the collector. The objects made while starting up (modules, classes, settings) live for
the whole run, so they are frozen out of its reach, and it runs far less often; it still runs,
so the rare cycles (an exception's traceback, a dropped connection) are still freed.
"""

from __future__ import annotations

import gc

# Young objects (gen 0) collected after this many net allocations; the middle and oldest
# generations after this many collections of the one below (the oldest, as ever, only once
# its survivors have grown by a quarter).
THRESHOLDS = (100_000, 50, 100)


def tune() -> None:
    """For this process (the CLI and its PARALLEL_STREAMS workers call it once, at start).
    Start-up's few garbage cycles are frozen too: a collection first would cost more (~70 ms,
    a sixth of a sync with nothing new) than they hold."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
