"""How the CLI's process manages memory (etl/memory.py)."""

import subprocess
import sys
from pathlib import Path

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
