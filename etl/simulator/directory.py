"""Mobile workers and groups (`/api/v0.5/user/`, `/api/v0.5/group/`), consistent with the
generated data: the workers are the users who submit the forms, and the case-sharing groups
are among the case owners."""

from __future__ import annotations

import hashlib

from etl.simulator.factory import DocFactory

FIRST_NAMES = ("Amina", "John", "Ngozi", "Kwame", "Aïcha", "José", "Priya", "Tendai")
LAST_NAMES = ("Okafor", "Mwangi", "Banda", "Diallo")


def mobile_workers(f: DocFactory) -> list[dict]:
    """`v0_5.CommCareUserResource` objects (no `resource_uri`: added per request)."""
    groups = case_sharing_groups(f)
    workers = []
    for n, user in enumerate(f.users[:-1]):  # the last one is a web user (the supervisor)
        phone = f"+2547{10_000_000 + n * 7_919:08d}"
        location = f.owners[2 + n % 2]
        workers.append({
            "id": user.id,
            "username": f"{user.username}@{f.domain}.commcarehq.org",
            "first_name": FIRST_NAMES[n % len(FIRST_NAMES)],
            "last_name": LAST_NAMES[n % len(LAST_NAMES)],
            "default_phone_number": phone,
            "email": f"{user.username}@example.org",
            "phone_numbers": [phone],
            "groups": [g["id"] for g in groups if user.id in g["users"]],
            "user_data": {"chw_id": f"CHW-{n + 1:03d}", "commcare_project": f.domain},
            "eulas": "[]",
            "primary_location": location,
            "locations": [location],
        })
    return workers


def case_sharing_groups(f: DocFactory) -> list[dict]:
    """`v0_4.GroupResource` objects: two case-sharing groups (case owners) and a reporting
    group."""
    workers = [u.id for u in f.users[:-1]]
    return [
        {"id": f.owners[0], "domain": f.domain, "name": "North team", "users": workers[:4],
         "case_sharing": True, "reporting": True, "metadata": {"region": "north"}},
        {"id": f.owners[1], "domain": f.domain, "name": "South team", "users": workers[4:],
         "case_sharing": True, "reporting": True, "metadata": {"region": "south"}},
        {"id": hashlib.md5(f"{f.domain}:report".encode()).hexdigest(), "domain": f.domain,
         "name": "Supervisors' report",
         "users": workers[::3], "case_sharing": False, "reporting": True, "metadata": {}},
    ]
