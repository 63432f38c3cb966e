"""The benchmark script still runs (its numbers are the README's): a tiny size, no timing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_the_benchmark_runs_and_reports_its_numbers(pg_url):
    import os

    # Compiled by the benchmark as pip would, even where the environment forbids writing
    # bytecode on import: commcare-export's runs do not compile their modules either.
    compiled = ROOT / "etl" / "__pycache__" / f"sync.{sys.implementation.cache_tag}.pyc"
    compiled.unlink(missing_ok=True)
    env = {**os.environ, "DATABASE_URL": pg_url, "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_sync.py"),
                             "--cases", "200"], env=env, capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
    assert compiled.exists()
    (line,) = [json.loads(l) for l in result.stdout.splitlines() if l.startswith("{")]
    assert line["cases"] == 200 and line["records_per_s"] > 0 and line["sync_peak_rss_mb"] > 0
    assert line["streams"]["cases"]["records"] >= 200
    cpu = line["cpu"]  # where the machine's CPU went: the sync's tree, the simulator, the rest
    assert cpu["tool_s"] > 0 and cpu["simulator_s"] >= 0 and cpu["postgres_and_rest_s"] >= 0
    assert 0 < cpu["busy_share"] <= 1.05 and cpu["floor_s"] <= line["wall_s"] * 1.05


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


# --- bench_sync.py --compare and friends (benchmarks/ccx.py) -----------------------------------

def _bench_modules():
    import importlib

    sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module("bench_sync"), importlib.import_module("ccx")


def _log(message: str) -> str:
    return json.dumps({"level": "INFO", "message": message})


def test_the_sync_log_gives_per_stream_totals_and_first_and_last_window_rates():
    bench, _ = _bench_modules()
    lines = [
        (0.5, "not json"),
        (1.0, _log("sync cases [bench]: starting from the start")),
        (31.0, _log("sync cases [bench]: 30000 records so far, at 2024-01-02T00:00:00Z")),
        (61.0, _log("sync cases [bench]: 57000 records so far, at 2024-01-03T00:00:00Z")),
        (91.0, _log("sync cases [bench]: 81000 records so far, at 2024-01-04T00:00:00Z")),
        (95.0, _log("sync cases [bench]: ok; 84000 records (84000 new, 0 updated) in 17 pages, "
                    "18 requests, 94.0s (894/s)")),
        # a partitioned stream: partitions summed, seconds from first start to last summary
        (95.0, _log("sync forms[w1] [bench]: starting from the start")),
        (96.0, _log("sync forms[w2] [bench]: starting from the start")),
        (100.0, _log("sync forms[w1] [bench]: ok; 100 records (100 new, 0 updated, 3 older "
                     "ignored) in 1 pages, 2 requests, 5.0s (20/s)")),
        (105.0, _log("sync forms[w2] [bench]: ok; 50 records (50 new, 0 updated) in 1 pages, "
                     "1 requests, 9.0s (6/s)")),
        # the stream's own line wins over its partitions' when both are there
        (106.0, _log("sync users[a] [bench]: ok; 7 records (7 new, 0 updated) in 1 pages, "
                     "1 requests, 1.0s (7/s)")),
        (107.0, _log("sync users [bench]: ok; 9 records (9 new, 0 updated) in 2 pages, "
                     "2 requests, 2.0s (4/s)")),
        (108.0, _log("sync groups [bench]: failed; 0 records (0 new, 0 updated) in 0 pages, "
                     "1 requests, 0.1s (0/s); error: boom")),
    ]
    streams = bench.parse_etl_log(lines)
    assert set(streams) == {"cases", "forms", "users"}
    cases = streams["cases"]
    assert (cases["records"], cases["pages"], cases["requests"], cases["seconds"]) == (
        84000, 17, 18, 94.0)
    assert cases["first_30s"] == {"records_per_s": 1000, "window_s": 30.0}
    assert cases["last_30s"] == {"records_per_s": 800, "window_s": 30.0}
    assert cases["last_vs_first"] == 0.8
    forms = streams["forms"]
    assert (forms["records"], forms["pages"], forms["requests"], forms["seconds"],
            forms["partitions"]) == (150, 2, 3, 10.0, 2)
    assert "first_30s" not in forms and "partition_rates" not in forms  # under 30 s
    users = streams["users"]
    assert (users["records"], users["requests"], users["seconds"]) == (9, 2, 2.0)


def test_one_progress_line_makes_the_last_window_run_to_the_summary():
    bench, _ = _bench_modules()
    events = [("start", 0.0, 0), ("progress", 30.0, 3000), ("ok", 50.0, 4000)]
    assert bench.rate_windows(events) == {
        "first_30s": {"records_per_s": 100, "window_s": 30.0},
        "last_30s": {"records_per_s": 50, "window_s": 20.0}, "last_vs_first": 0.5}
    short_tail = [("start", 0.0, 0), ("progress", 30.0, 3000), ("ok", 31.0, 3010)]
    assert bench.rate_windows(short_tail) == {
        "first_30s": {"records_per_s": 100, "window_s": 30.0}}
    assert bench.rate_windows([("start", 0.0, 0), ("ok", 10.0, 5)]) == {}


def test_the_commcare_export_query_url_and_check(tmp_path):
    _, ccx = _bench_modules()
    sheets = ccx.query_rows()
    assert list(sheets) == ["cases", "forms"]
    for sheet, source in (("cases", "case"), ("forms", "form")):
        assert sheets[sheet] == [["Data Source", "Field", "Source Field", "Map Via"],
                                 [source, "id", "id", None], [None, "json", "$", "json2str"]]
    assert ccx.output_url("postgresql://postgres@127.0.0.1:5432/postgres", "ccx_1") == (
        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres?options=-csearch_path%3Dccx_1")
    assert ccx.output_url("postgresql+psycopg://u:p@h/db?sslmode=disable", "s") == (
        "postgresql+psycopg2://u:p@h/db?sslmode=disable&options=-csearch_path%3Ds")

    class Rec:
        def __init__(self, i, archived=False):
            self.id, self.archived = i, archived

    recs = [Rec("a"), Rec("b"), Rec("c", archived=True)]
    assert set(ccx.expected(recs, "case")) == {"a", "b", "c"}
    wanted = ccx.expected(recs, "form")
    assert set(wanted) == {"a", "b"}
    doc = lambda r: {"id": r.id}  # noqa: E731
    good = ccx.compare(iter([("a", '{"id": "a"}'), ("b", '{"id": "b"}')]), wanted, doc)
    assert good["ok"] and good["rows"] == good["expected"] == 2
    bad = ccx.compare(iter([("a", '{"id": "x"}'), ("a", "{}"), ("z", "{}")]), wanted, doc)
    assert not bad["ok"]
    assert (bad["missing"], bad["extra"], bad["duplicates"], bad["json_mismatches"]) == (
        1, 1, 1, 1)
    assert ccx.failure(0, "Running export...\nExport finished!\n", "") is None
    assert ccx.failure(0, "", "404 Client Error: Not Found for url: http://x") is not None
    assert ccx.failure(1, "", "") == "exit status 1"


def test_the_commcare_export_query_workbook(tmp_path):
    """Writing it needs openpyxl: here, or in a commcare-export found (never installed)."""
    import importlib.util

    _, ccx = _bench_modules()
    sheets = ccx.query_rows()
    python = None
    if importlib.util.find_spec("openpyxl") is None:
        try:
            python = ccx.interpreter(_find_ccx(ccx))
        except ccx.NotAvailable:
            pytest.skip("no openpyxl here and no commcare-export to write the query with")
    query = ccx.write_query(tmp_path / "q.xlsx", python=python)
    if python is None:
        assert ccx.read_query(query) == sheets
    else:
        out = subprocess.run([python, "-c", "import openpyxl, sys, json; b = openpyxl."
                              "load_workbook(sys.argv[1]); print(json.dumps({ws.title: [list(r) "
                              "for r in ws.iter_rows(values_only=True)] for ws in b.worksheets}))",
                              str(query)], capture_output=True, text=True, check=True)
        assert json.loads(out.stdout) == sheets


def _find_ccx(ccx):
    """A commcare-export already there ($BENCH_CCX_VENV, the PATH, the benchmark's cache):
    the tests never install one."""
    import os

    venv = os.environ.get("BENCH_CCX_VENV")
    return ccx.find(venv if venv else None, install=False)


def test_the_simulator_latency_delays_requests_side_by_side():
    import threading
    import time

    import requests

    from etl.simulator import Dataset, HQSimulator

    with HQSimulator(datasets=[Dataset.generate(domain="bench", n_cases=5)],
                     users={"u@example.org": ("k", None)}, latency=0.4) as sim:
        url = f"{sim.base_url}/a/bench/api/v0.5/case/"
        auth = {"Authorization": "ApiKey u@example.org:k"}
        t0 = time.monotonic()
        requests.get(f"{sim.base_url}/_sim/stats").raise_for_status()  # control: no wait
        assert time.monotonic() - t0 < 0.3
        statuses = []
        threads = [threading.Thread(target=lambda: statuses.append(
            requests.get(url, headers=auth).status_code)) for _ in range(4)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        assert statuses == [200] * 4 and 0.4 <= elapsed < 1.2, elapsed
        assert sim.stats()["latency"] == 0.4
        with pytest.raises(ValueError):
            sim.set_latency(-1)


def test_the_compare_mode_runs_both_tools_on_the_same_data(pg_url):
    import os

    _, ccx = _bench_modules()
    try:
        exe = _find_ccx(ccx)
    except ccx.NotAvailable as exc:
        pytest.skip(f"commcare-export not found (set BENCH_CCX_VENV to a venv with it): {exc}")
    env = {**os.environ, "DATABASE_URL": pg_url}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_sync.py"),
                             "--cases", "200", "--compare", "--runs", "1", "--no-change",
                             "--latency", "0.02", "--ccx-venv", str(exe.parent.parent)],
                            env=env, capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
    etl, other = [json.loads(l) for l in result.stdout.splitlines() if l.startswith("{")]
    assert etl["tool"] == "commcare-etl" and other["tool"] == "commcare-export"
    assert etl["cases"] == other["cases"] == 200 and etl["latency_s"] == 0.02
    assert other["verified"], other["tables"]
    assert other["tables"]["cases"]["rows"] == 200 and other["requests"] > 0
    assert etl["no_change"]["wall_s"] > 0 and other["no_change"]["wall_s"] > 0
    assert "speed ratio" in result.stdout


def test_hq_timing_tells_a_slower_hq_from_a_slower_client():
    """Per resource: HQ's answer time and the gap between requests, over the first and the
    last ten requests, so a run that slows down says on which side."""
    from etl.simulator.server import RequestLog

    bench, _ = _bench_modules()
    log = [RequestLog("GET", "/a/demo/api/v0.5/form/", "", 200, resource="form",
                      seconds=0.01 if n < 15 else 0.05, at=100 + (n if n < 15 else 15 + 3 * (n - 15)))
           for n in range(30)]
    log.append(RequestLog("GET", "/a/demo/api/v0.5/case/", "", 200, resource="case", at=99.0))
    timing = bench.hq_timing(list(reversed(log)))  # in arrival order whatever the log's order
    assert set(timing) == {"form"}  # too few case requests to say anything
    assert timing["form"] == {"answer_ms": {"first": 10.0, "last": 50.0},
                              "gap_s": {"first": 1.0, "last": 3.0, "max": 3.0, "in_pauses": 0}}
    import dataclasses

    paused = [dataclasses.replace(r, at=r.at + 60) if r.resource == "form" and r.at >= 130
              else r for r in log]  # a minute's pause before the 21st form request
    assert bench.hq_timing(paused)["form"]["gap_s"] | {"first": None} == {
        "first": None, "last": 3.0, "max": 63.0, "in_pauses": 63.0}
