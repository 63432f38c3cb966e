"""How the CLI's process manages memory (etl/memory.py)."""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str) -> None:
    """Run `code` in a new interpreter (the collector's settings are per process)."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_cli_freezes_start_up_and_collects_rarely():
    code = (
        "import gc, sys\n"
        "from etl import cli, memory\n"
        "assert gc.get_threshold()[0] < 10_000 and gc.get_freeze_count() == 0\n"
        "try:\n"
        "    cli.main(['--version'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert gc.get_threshold() == memory.THRESHOLDS, gc.get_threshold()\n"
        "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()\n")
    _python(code)


def test_malloc_keeps_few_arenas_where_glibc_is_the_allocator():
    code = (
        "import os, platform, sys\n"
        "os.environ.pop('MALLOC_ARENA_MAX', None)\n"
        "os.environ.pop('GLIBC_TUNABLES', None)\n"
        "from etl import memory\n"
        "done = memory.tune()\n"
        "glibc = sys.platform.startswith('linux') and platform.libc_ver()[0] == 'glibc'\n"
        "assert done.get('malloc_arenas') == (memory.MALLOC_ARENAS if glibc else None), done\n"
        "os.environ['MALLOC_ARENA_MAX'] = '8'\n"
        "assert 'malloc_arenas' not in memory.tune()  # the operator's setting stands\n"
        "del os.environ['MALLOC_ARENA_MAX']\n"
        "os.environ['GLIBC_TUNABLES'] = 'glibc.malloc.arena_max=4'\n"
        "assert 'malloc_arenas' not in memory.tune()\n")
    _python(code)


def test_cycles_are_still_collected():
    code = (
        "import gc, weakref\n"
        "from etl import memory\n"
        "memory.tune()\n"
        "class Node: pass\n"
        "refs = []\n"
        "for _ in range(3 * memory.THRESHOLDS[0]):\n"
        "    a, b = Node(), Node()\n"
        "    a.other, b.other = b, a\n"
        "    refs.append(weakref.ref(a)) if len(refs) < 1000 else None\n"
        "alive = sum(r() is not None for r in refs)\n"
        "assert alive < len(refs), alive\n")
    _python(code)


@dataclass
class _Seen:
    thresholds: tuple
    frozen: int
    exception: BaseException | None = None


def _what_a_worker_has(settings, url, schema, job) -> _Seen:  # run in a PARALLEL_STREAMS worker
    import gc

    return _Seen(gc.get_threshold(), gc.get_freeze_count())


def test_parallel_stream_workers_are_tuned_as_the_cli_is():
    from etl import memory
    from etl.parallel import run_parallel

    settings = SimpleNamespace(log_level="WARNING", log_format="text")
    reports = run_parallel(_what_a_worker_has, settings, "postgresql://unused", "s",
                           [("demo", "cases"), ("demo", "forms")], workers=2,
                           invocation=("id", "manual"), cancelled=lambda job, exc: None)
    assert [r.thresholds for r in reports] == [memory.THRESHOLDS] * 2
    assert all(r.frozen > 0 for r in reports)
