"""A faithful CommCare HQ simulator: the case, form, Case API v2 and Application Structure APIs,
and the reference data (mobile workers, web users, groups, locations v1/v2, location types), the
legacy export API with its tokens (`/a/<d>/reports/export/`, exportapi.py) and the OTA restore
(`/a/<d>/phone/restore/`, restore.py), on a real local HTTP server, over seeded generated data,
with changes and faults on demand.

Logins (auth.py, digest.py): `ApiKey user:key`, and HTTP Basic or Digest (realm "DJANGO" on the
export and the restore) with a password: web logins ("etl@example.org" / "secret-password" by
default, `HQSimulator.add_web_login`) on the APIs and the export, mobile workers
(`name@<domain>.commcarehq.org`, password "123" unless set) on the restore.

    from etl.simulator import HQSimulator, Dataset
    with HQSimulator(datasets=[Dataset.generate(n_cases=300)]) as sim:
        print(sim.base_url)

Module map: server.py (HTTP, `HQSimulator`), api.py (routes, data API envelopes), refapi.py
(reference data), store.py (the index and its changes), exportapi.py + exporttables.py (the
export), restore.py + casexml.py + fixtures.py (the restore), control.py (`/_sim/`).
"""

from etl.simulator.dataset import Dataset
from etl.simulator.server import HQSimulator, RequestLog, serve

__all__ = ["Dataset", "HQSimulator", "RequestLog", "serve"]
