"""`python -m etl.simulator`: run the HQ simulator in the foreground."""

from __future__ import annotations

import argparse
import logging

from etl.simulator.server import DEFAULT_REPLICAS, serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m etl.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--domain", default="demo")
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--username", default="demo@example.org")
    parser.add_argument("--api-key", default="demo-key")
    parser.add_argument("--password", default=None,
                        help="also a web login (Basic/Digest on the APIs and the export API); "
                             "mobile workers log in to the restore with 123")
    parser.add_argument("--awkward", action="store_true",
                        help="also NUL characters, a lone surrogate and stray top-level fields")
    parser.add_argument("--replicas", type=int, default=DEFAULT_REPLICAS,
                        help="search index copies answering v0.5 lists, each ordering ties "
                             "its own way (default 3)")
    parser.add_argument("--rate-limit", action="store_true",
                        help="HQ's per-project API rate limit (429s)")
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS",
                        help="answer every request (not /_sim/) this many seconds late, like "
                             "a distant HQ (concurrent requests wait in parallel)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    serve(host=args.host, port=args.port, domain=args.domain, n_cases=args.cases,
          seed=args.seed, username=args.username, api_key=args.api_key, awkward=args.awkward,
          replicas=args.replicas, rate_limit=args.rate_limit, password=args.password,
          latency=args.latency)


if __name__ == "__main__":
    main()
