"""A faithful CommCare HQ simulator: the case, form, Case API v2 and Application Structure APIs,
and the reference data (mobile workers, web users, groups, locations v1/v2, location types), on a
real local HTTP server, over seeded generated data, with changes and faults on demand.

    from etl.simulator import HQSimulator, Dataset
    with HQSimulator(datasets=[Dataset.generate(n_cases=300)]) as sim:
        print(sim.base_url)
"""

from etl.simulator.dataset import Dataset
from etl.simulator.server import HQSimulator, RequestLog, serve

__all__ = ["Dataset", "HQSimulator", "RequestLog", "serve"]
