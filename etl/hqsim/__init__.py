"""The CommCare HQ simulator: a real HTTP server serving HQ's APIs, with deterministic data."""

from etl.hqsim.generator import Dataset
from etl.hqsim.server import HQSimulator, RequestLog


def serve(host: str = "127.0.0.1", port: int = 8000, domain: str = "demo", n_cases: int = 300,
          seed: int = 0, username: str = "demo@example.org", api_key: str = "demo-key",
          awkward: bool = False) -> None:
    """Run the simulator in the foreground until Ctrl-C."""
    import logging
    import time

    dataset = Dataset.generate(domain=domain, seed=seed, n_cases=n_cases, awkward=awkward)
    sim = HQSimulator(datasets=[dataset], users={username: (api_key, None)}, host=host,
                      port=port).start()
    logging.getLogger(__name__).info(
        "HQ simulator at %s: domain %r, %d cases, %d forms; user %r, API key %r "
        "(Ctrl-C to stop)", sim.base_url, domain, len(dataset.cases), len(dataset.forms),
        username, api_key)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


__all__ = ["Dataset", "HQSimulator", "RequestLog", "serve"]
