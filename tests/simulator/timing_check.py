"""Timing check, run by hand (not a test): generation and page latency at 100k records.

    python tests/simulator/timing_check.py [n_cases] [n_forms] [replicas]
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from etl.simulator import Dataset, HQSimulator  # noqa: E402


def timed_get(session: requests.Session, url: str, params: dict) -> tuple[float, int, int]:
    started = time.perf_counter()
    response = session.get(url, params=params)
    body = response.content
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text[:200]
    return elapsed, len(body), len(response.json().get("objects") or response.json().get("cases"))


def main() -> None:
    n_cases = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    n_forms = int(sys.argv[2]) if len(sys.argv) > 2 else n_cases
    n_replicas = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    started = time.perf_counter()
    dataset = Dataset.generate(domain="bench", seed=1, n_cases=n_cases, n_forms=n_forms)
    print(f"generate {n_cases:,} cases + {n_forms:,} forms: {time.perf_counter() - started:.1f}s, "
          f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")
    with HQSimulator([dataset], users={"u": ("k", None)}, replicas=n_replicas) as sim:
        session = requests.Session()
        session.headers["Authorization"] = "ApiKey u:k"
        base = f"{sim.base_url}/a/bench/api"
        cases = sorted(sim.snapshot("bench", "case").values(), key=lambda c: c["indexed_on"])
        start = cases[len(cases) // 2]["indexed_on"][:-1]
        checks = [
            ("v0.5 cases, 5000, indexed_on_start", f"{base}/v0.5/case/",
             {"limit": 5000, "order_by": "indexed_on", "indexed_on_start": start}),
            ("v0.5 cases, 5000, first page", f"{base}/v0.5/case/",
             {"limit": 5000, "order_by": "indexed_on"}),
            ("v0.5 forms, 1000, include_archived", f"{base}/v0.5/form/",
             {"limit": 1000, "order_by": "indexed_on", "include_archived": "true"}),
            ("v0.5 cases, 5000, type=patient filter", f"{base}/v0.5/case/",
             {"limit": 5000, "order_by": "indexed_on", "type": "patient"}),
            ("v2 cases, 5000", f"{base}/case/v2/", {"limit": 5000}),
        ]
        for name, url, params in checks:
            runs = [timed_get(session, url, params) for _ in range(4)]
            first, rest = runs[0], runs[1:]
            print(f"{name}: first {first[0] * 1000:.1f} ms, then "
                  f"{min(r[0] for r in rest) * 1000:.1f}-{max(r[0] for r in rest) * 1000:.1f} ms "
                  f"({first[2]} records, {first[1] / 2**20:.1f} MB)")
        server_side = [r.seconds for r in sim.requests if r.resource == "case"]
        print(f"server-side time per v0.5 case request: min {min(server_side) * 1000:.1f} ms, "
              f"max {max(server_side) * 1000:.1f} ms")
    print(f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")


if __name__ == "__main__":
    main()
