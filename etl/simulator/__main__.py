"""`python -m etl.simulator`: run the HQ simulator in the foreground."""

from __future__ import annotations

import argparse
import logging

from etl.simulator.server import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m etl.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--domain", default="demo")
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--username", default="demo@example.org")
    parser.add_argument("--api-key", default="demo-key")
    parser.add_argument("--awkward", action="store_true",
                        help="also NUL characters, a lone surrogate and stray top-level fields")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    serve(host=args.host, port=args.port, domain=args.domain, n_cases=args.cases,
          seed=args.seed, username=args.username, api_key=args.api_key, awkward=args.awkward)


if __name__ == "__main__":
    main()
