"""The collector settings of the CLI's process (etl/gc_policy.py)."""

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
        "from etl import cli, gc_policy\n"
        "assert gc.get_threshold()[0] < 10_000 and gc.get_freeze_count() == 0\n"
        "try:\n"
        "    cli.main(['--version'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert gc.get_threshold() == gc_policy.THRESHOLDS, gc.get_threshold()\n"
        "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()\n")
    _python(code)


def test_cycles_are_still_collected():
    code = (
        "import gc, weakref\n"
        "from etl import gc_policy\n"
        "gc_policy.tune()\n"
        "class Node: pass\n"
        "refs = []\n"
        "for _ in range(3 * gc_policy.THRESHOLDS[0]):\n"
        "    a, b = Node(), Node()\n"
        "    a.other, b.other = b, a\n"
        "    refs.append(weakref.ref(a)) if len(refs) < 1000 else None\n"
        "alive = sum(r() is not None for r in refs)\n"
        "assert alive < len(refs), alive\n")
    _python(code)
