"""Memory and speed of a big OTA restore: the simulator (streaming the restore) in this
process, `commcare-etl sync --stream restore` in a child, its peak RSS measured.

    python benchmarks/bench_restore.py                 # ~200 MB of restore XML
    python benchmarks/bench_restore.py --cases 20000   # smaller
    DATABASE_URL=postgresql://... python benchmarks/bench_restore.py

The target lives here, not in the tests: the sync's memory stays flat (under
TARGET_PEAK_RSS_MB) whatever the size of the restore.
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

from benchmarks.bench_sync import _watch_rss, database_url  # noqa: E402
from etl.simulator import Dataset, HQSimulator  # noqa: E402

USER, KEY = "bench@example.org", "bench-key"
TARGET_PEAK_RSS_MB = 250
PROPERTIES = {f"p{i:02d}": "x" * 90 for i in range(20)}  # ~2 KB of XML per case


def run_once(n_cases: int, db_url: str, workdir: Path) -> dict:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    dataset = Dataset.generate(domain="bench", seed=1, n_cases=10)
    with HQSimulator(datasets=[dataset], users={USER: (KEY, None)}) as sim:
        worker = sim.add_mobile_worker("bench", "bigload", password="bench-pw")
        t0 = time.monotonic()
        sim.add_cases("bench", n_cases, owner_id=worker, properties=PROPERTIES)
        generated = time.monotonic() - t0
        users = workdir / "restore-users.txt"
        users.write_text("bigload@bench.commcarehq.org:bench-pw\n")
        env = {**os.environ, "COMMCARE_BASE_URL": sim.base_url, "COMMCARE_DOMAIN": "bench",
               "COMMCARE_USERNAME": USER, "COMMCARE_API_KEY": KEY, "DATABASE_URL": db_url,
               "WAREHOUSE_SCHEMA": schema, "RESTORE_USERS_FILE": str(users),
               "LOG_FORMAT": "json", "HTTP_TIMEOUT": "600"}
        env.pop("COMMCARE_ETL_CONFIG", None)
        sim.clear_requests()
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "etl", "sync", "--stream", "restore"],
                                env=env, cwd=tempfile.gettempdir(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        peak = [0]
        threading.Thread(target=_watch_rss, args=(proc.pid, peak), daemon=True).start()
        _, stderr = proc.communicate()
        wall = time.monotonic() - t0
        body = sum(r.bytes for r in sim.requests if r.resource == "restore")
    if proc.returncode != 0:
        raise SystemExit(f"sync failed:\n{stderr[-3000:]}")
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        loaded = conn.execute(f'select count(*) from "{schema}".restore_cases').fetchone()[0]
        conn.execute(f'drop schema "{schema}" cascade')
    return {"cases": n_cases, "restore_mb": round(body / 2**20), "loaded": loaded,
            "generate_s": round(generated, 1), "wall_s": round(wall, 1),
            "cases_per_s": round(loaded / wall), "sync_peak_rss_mb": round(peak[0] / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, action="append",
                        help="caseload size(s) (repeatable; default 10000 and 100000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db_url = database_url(Path(tmp))
        try:
            for n in sorted(args.cases or [10_000, 100_000]):
                result = run_once(n, db_url, Path(tmp))
                verdict = "meets" if result["sync_peak_rss_mb"] <= TARGET_PEAK_RSS_MB else "over"
                print(json.dumps({**result, "target_peak_rss_mb": TARGET_PEAK_RSS_MB,
                                  "verdict": verdict}), flush=True)
        finally:
            from etl.db import stop_embedded

            stop_embedded(Path(tmp) / "pg")


if __name__ == "__main__":
    main()
