"""The benchmark script still runs (its numbers are the README's): a tiny size, no timing."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_the_benchmark_runs_and_reports_its_numbers(pg_url):
    import os

    env = {**os.environ, "DATABASE_URL": pg_url}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_sync.py"),
                             "--cases", "200"], env=env, capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
    (line,) = [json.loads(l) for l in result.stdout.splitlines() if l.startswith("{")]
    assert line["cases"] == 200 and line["records_per_s"] > 0 and line["sync_peak_rss_mb"] > 0
    assert line["streams"]["cases"]["records"] >= 200


def test_the_restore_benchmark_runs_and_reports_its_numbers(pg_url):
    import os

    env = {**os.environ, "DATABASE_URL": pg_url}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_restore.py"),
                             "--cases", "300"], env=env, capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
    (line,) = [json.loads(l) for l in result.stdout.splitlines() if l.startswith("{")]
    assert line["cases"] == line["loaded"] == 300 and line["sync_peak_rss_mb"] > 0
    assert line["restore_mb"] >= 0 and line["verdict"] in ("meets", "over")
