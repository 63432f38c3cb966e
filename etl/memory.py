"""How this process manages memory, set for a batch job that makes millions of short-lived
objects in a few threads: CPython's cyclic collector, and glibc's malloc arenas.

The collector: a page of 1,000 forms parses into some 300,000 dicts, lists and strings, and
transforming it makes as many again; none of them form reference cycles, so reference counting
frees them all. At Python's default thresholds (a collection every 700 net allocations) the
collector still ran thousands of times per page, and each full collection walked every object
alive: a profile of an initial sync (perf, 20,000 cases + 30,000 forms) put ~20% of the sync
process's CPU in it. The objects made while starting up (modules, classes, settings) live for
the whole run, so they are frozen out of its reach, and it runs far less often; it still runs,
so the rare cycles (an HTTP session, a dropped connection) are still freed.

The arenas: glibc gives each thread that allocates its own arena, up to 8 per core, and keeps
what was freed in each. With windows (several readers, each with a thread that fetches ahead)
that held ~30 MB more at the peak than two arenas do (500 ms per request, 20,000 cases + 30,000
forms: 241-268 MB against 222-230 MB over four runs each). An arena limit the operator set
(MALLOC_ARENA_MAX, or glibc.malloc.arena_max in GLIBC_TUNABLES) is left to glibc.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import sys

# Young objects (gen 0) collected after this many net allocations; the middle and oldest
# generations after this many collections of the one below (the oldest, as ever, only once
# its survivors have grown by a quarter).
THRESHOLDS = (100_000, 50, 100)
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def tune() -> dict[str, object]:
    """For this process (the CLI and its PARALLEL_STREAMS workers call it once, at start,
    before any thread); returns what it set. Start-up's few garbage cycles are frozen too: a
    collection first would cost more (~70 ms, a sixth of a sync with nothing new) than they
    hold."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    done: dict[str, object] = {"gc_thresholds": THRESHOLDS}
    if (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
            and "MALLOC_ARENA_MAX" not in os.environ
            and "arena_max" not in os.environ.get("GLIBC_TUNABLES", "")):
        try:
            if ctypes.CDLL(None).mallopt(_M_ARENA_MAX, MALLOC_ARENAS) == 1:
                done["malloc_arenas"] = MALLOC_ARENAS
        except (OSError, AttributeError):
            pass
    return done
