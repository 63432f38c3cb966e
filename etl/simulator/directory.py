"""HQ's reference data for one project: mobile workers, web users, groups, location types and
locations, and the changes an administrator makes to them between syncs.

Generated from its own seeded stream (`commcare-sim:directory:<domain>:<seed>`), after the cases
and forms, so it never changes a generated case or form. It is consistent with them: the mobile
workers are the users who submit the forms, the supervisor who edits forms is a web user, the two
case-sharing groups and two facilities are the ids that own the cases not owned by a user.

Everything here is plain in-memory state; `refapi.py` turns it into HQ's JSON. Timestamps are
epoch microseconds, handed in by the store's clock.
"""

from __future__ import annotations

import copy
import hashlib
import random
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

from etl.simulator.factory import DocFactory
from etl.simulator.hqtime import US_PER_DAY, US_PER_SECOND, from_us, to_us
from etl.simulator.vocab import ri

# What generated workers (and workers added without one) log in with.
DEFAULT_WORKER_PASSWORD = "123"
FIRST_NAMES = ("Amina", "John", "Ngozi", "Kwame", "Aïcha", "José", "Priya", "Tendai")
LAST_NAMES = ("Okafor", "Mwangi", "Banda", "Diallo")

# `HqPermissions.to_json()` keys (docs/api/webuser.rst's sample), booleans then lists.
PERMISSION_FLAGS = (
    "access_all_locations", "access_api", "access_default_login_as_user",
    "access_mobile_endpoints", "access_release_management", "access_web_apps",
    "commcare_analytics_roles", "download_reports", "edit_apps", "edit_billing",
    "edit_commcare_analytics", "edit_commcare_users", "edit_data", "edit_data_dict",
    "edit_file_dropzone", "edit_groups", "edit_linked_configurations", "edit_locations",
    "edit_messaging", "edit_motech", "edit_reports", "edit_shared_exports", "edit_ucrs",
    "edit_user_profile", "edit_user_tableau_config", "edit_users_in_groups",
    "edit_users_in_locations", "edit_web_users", "limited_login_as", "login_as_all_users",
    "manage_attendance_tracking", "manage_data_registry", "manage_domain_alerts",
    "report_an_issue", "view_apps", "view_commcare_analytics", "view_commcare_users",
    "view_data_dict", "view_data_registry_contents", "view_file_dropzone", "view_groups",
    "view_locations", "view_reports", "view_roles", "view_tableau", "view_user_tableau_config",
    "view_web_users",
)
PERMISSION_LISTS = ("commcare_analytics_roles_list", "edit_user_profile_list",
                    "manage_data_registry_list", "view_data_registry_contents_list",
                    "view_report_list", "view_tableau_list", "web_apps_list")
_BASIC = {"access_all_locations", "report_an_issue", "edit_user_profile", "view_file_dropzone",
          "view_user_tableau_config", "access_web_apps"}
ROLE_GRANTS = {
    "Admin": set(PERMISSION_FLAGS),
    "App Editor": _BASIC | {"edit_apps", "view_apps", "view_reports", "download_reports",
                            "view_web_users", "access_api"},
    "Field Implementer": _BASIC | {"edit_commcare_users", "view_commcare_users", "edit_groups",
                                   "view_groups", "edit_users_in_groups", "edit_locations",
                                   "view_locations", "edit_users_in_locations", "edit_data",
                                   "view_reports", "download_reports", "edit_shared_exports"},
    "Read Only": _BASIC | {"view_reports", "download_reports", "view_groups", "view_locations"},
}


def permissions(role: str) -> dict:
    """A role's `permissions` as the web user resource prints them (`role.permissions.to_json()`);
    a role the simulator does not know grants the basics only."""
    grants = ROLE_GRANTS.get(role, _BASIC)
    perms: dict = {"doc_type": "HqPermissions"}
    perms.update({name: name in grants for name in PERMISSION_FLAGS})
    perms.update({name: [] for name in PERMISSION_LISTS})
    return perms


def eula(signed_us: int) -> str:
    """`str()` of the user's `eulas` list, as tastypie's CharField prints it."""
    signed = repr(from_us(signed_us).replace(tzinfo=None))
    return (f"[LicenseAgreement(date={signed}, doc_type='LicenseAgreement', signed=True, "
            f"type='End User License Agreement', user_id=None, user_ip=None, version='3.0')]")


def slug(name: str) -> str:
    """HQ's site codes and location type codes: a lower-case slug of the name."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "location"


@dataclass
class MobileWorker:
    id: str
    username: str  # with the domain: chw1@demo.commcarehq.org
    first_name: str
    last_name: str
    email: str
    phone_numbers: list[str]
    custom_data: dict[str, str]
    location_ids: list[str]
    primary_location: str | None
    created_us: int
    last_modified_us: int
    is_active: bool = True
    deleted: bool = False  # retired: gone from every list, its detail a 400
    password: str = DEFAULT_WORKER_PASSWORD  # never shown by any API; logs in to the restore


@dataclass
class WebUser:
    id: str
    username: str  # an e-mail address
    first_name: str
    last_name: str
    email: str
    phone_numbers: list[str]
    role: str
    is_admin: bool
    custom_data: dict[str, str]
    location_ids: list[str]
    primary_location: str | None
    created_us: int
    last_modified_us: int
    profile: str = ""
    tableau_role: str | None = None
    is_active_in_domain: bool = True
    removed: bool = False  # removed from the project


@dataclass
class Group:
    id: str
    name: str
    users: list[str]  # the group document's members (inactive and retired ones included)
    case_sharing: bool
    reporting: bool
    metadata: dict
    last_modified_us: int
    deleted: bool = False  # soft-deleted


@dataclass
class LocationType:
    id: int
    name: str
    code: str
    parent_id: int | None
    shares_cases: bool
    view_descendants: bool
    administrative: bool = True  # LocationType.save(): always True without CommTrack


@dataclass
class Location:
    pk: int  # SQLLocation.id: one sequence for every project
    location_id: str
    name: str
    site_code: str
    type_id: int
    parent_id: str | None  # the parent's location_id
    latitude: str | None  # DecimalField(20, 10), as tastypie prints it
    longitude: str | None
    metadata: dict
    created_us: int
    last_modified_us: int
    external_id: str | None = None
    is_archived: bool = False
    archived_on_us: int | None = None


@dataclass
class Directory:
    domain: str
    workers: dict[str, MobileWorker] = field(default_factory=dict)
    web_users: dict[str, WebUser] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    location_types: dict[int, LocationType] = field(default_factory=dict)
    locations: dict[str, Location] = field(default_factory=dict)  # by location_id
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def copy(self) -> "Directory":
        return copy.deepcopy(self)

    # --- reads ---------------------------------------------------------------------------------

    def active_worker_count(self) -> int:
        return sum(w.is_active and not w.deleted for w in self.workers.values())

    def worker_visible(self, user_id: str) -> bool:
        """What a group's `users` keeps: active members that are not retired (web users count
        as active unless removed from the project)."""
        w = self.workers.get(user_id)
        if w is not None:
            return w.is_active and not w.deleted
        u = self.web_users.get(user_id)
        return u is not None and not u.removed

    def group_ids_of(self, user_id: str) -> list[str]:
        return sorted(g.id for g in self.groups.values() if not g.deleted and user_id in g.users)

    def type_of(self, loc: Location) -> LocationType:
        return self.location_types[loc.type_id]

    def live_location(self, location_id: str) -> Location:
        loc = self.locations.get(location_id)
        if loc is None or loc.is_archived:
            raise KeyError(f"no location {location_id!r} in the simulator (or it is archived)")
        return loc

    def descendants(self, location_id: str) -> list[Location]:
        """The location and everything below it, parents first."""
        out = [self.locations[location_id]]
        for loc in out:
            out.extend(c for c in self.locations.values() if c.parent_id == loc.location_id)
        return out

    def ancestors(self, location_id: str) -> list[Location]:
        out, loc = [], self.locations[location_id]
        while loc.parent_id is not None:
            loc = self.locations[loc.parent_id]
            out.append(loc)
        return out

    def _new_id(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def worker_by_username(self, username: str) -> MobileWorker | None:
        """A mobile worker (retired ones included) by full username, case-insensitively."""
        lowered = username.lower()
        return next((w for w in self.workers.values() if w.username.lower() == lowered), None)

    def owner_ids(self, user_id: str) -> set[str]:
        """The owner ids whose cases a mobile worker's phone syncs (`get_owner_ids`): the
        worker, its case-sharing groups, and its live locations whose type shares cases
        (with their case-sharing descendants when the type views descendants)."""
        ids = {user_id}
        ids.update(g.id for g in self.groups.values()
                   if g.case_sharing and not g.deleted and user_id in g.users)
        w = self.workers.get(user_id)
        for location_id in (w.location_ids if w is not None else ()):
            loc = self.locations.get(location_id)
            if loc is None or loc.is_archived:
                continue
            t = self.type_of(loc)
            below = self.descendants(location_id) if t.view_descendants else [loc]
            ids.update(x.location_id for x in below
                       if not x.is_archived and self.type_of(x).shares_cases)
        return ids

    def _worker(self, user_id: str) -> MobileWorker:
        w = self.workers.get(user_id)
        if w is None or w.deleted:
            raise KeyError(f"no mobile worker {user_id!r} in the simulator")
        return w

    def _web_user(self, user_id: str) -> WebUser:
        u = self.web_users.get(user_id)
        if u is None or u.removed:
            raise KeyError(f"no web user {user_id!r} in the simulator")
        return u

    def _group(self, group_id: str) -> Group:
        g = self.groups.get(group_id)
        if g is None or g.deleted:
            raise KeyError(f"no group {group_id!r} in the simulator")
        return g

    def _taken(self, username: str) -> bool:
        names = [w.username for w in self.workers.values()] + [
            u.username for u in self.web_users.values()]
        return username.lower() in {n.lower() for n in names}

    def _assignment(self, location_ids: Iterable[str], primary: str | None,
                    current: str | None = None) -> tuple[list[str], str | None]:
        """(assigned ids, primary): the primary must be assigned; without one, the current
        primary if still assigned, else the first."""
        ids = list(dict.fromkeys(location_ids or ()))
        for location_id in ids:
            self.live_location(location_id)
        if primary is not None and primary not in ids:
            if ids:
                raise ValueError(f"primary location {primary!r} is not among the assigned ones")
            self.live_location(primary)
            ids = [primary]
        if primary is None:
            primary = current if current in ids else (ids[0] if ids else None)
        return ids, primary

    # --- mobile workers ------------------------------------------------------------------------

    def add_mobile_worker(self, now: int, username: str, first_name: str = "",
                          last_name: str = "", email: str = "",
                          phone_numbers: Iterable[str] = (), user_data: dict | None = None,
                          location_ids: Iterable[str] = (), primary_location: str | None = None,
                          groups: Iterable[str] = (), is_active: bool = True,
                          password: str = DEFAULT_WORKER_PASSWORD) -> str:
        if "@" not in username:
            username = f"{username}@{self.domain}.commcarehq.org"
        if self._taken(username):  # retired users keep their name reserved
            raise ValueError(f"Username '{username}' is already taken or reserved.")
        groups = [self._group(g) for g in groups]
        ids, primary = self._assignment(location_ids, primary_location)
        worker = MobileWorker(self._new_id(), username, first_name, last_name, email.lower(),
                              list(phone_numbers), dict(user_data or {}), ids, primary, now, now,
                              is_active, password=str(password))
        self.workers[worker.id] = worker
        for g in groups:
            g.users.append(worker.id)
        return worker.id

    def update_mobile_worker(self, now: int, user_id: str, **changes: object) -> None:
        """The fields the user API's PUT can change; `groups` sets the worker's groups exactly
        (which does not touch the user's `last_modified`: membership lives on the groups)."""
        w = self._worker(user_id)
        editable = {"first_name", "last_name", "email", "phone_numbers", "user_data",
                    "locations", "primary_location", "groups", "password"}
        unknown = sorted(set(changes) - editable)
        if unknown:
            raise ValueError(f"Attempted to update unknown or non-editable field '{unknown[0]}'")
        if "groups" in changes:
            wanted = {self._group(g).id for g in changes.pop("groups") or ()}
            for g in self.groups.values():
                if g.deleted:
                    continue
                if g.id in wanted and user_id not in g.users:
                    g.users.append(user_id)
                elif g.id not in wanted and user_id in g.users:
                    g.users.remove(user_id)
        if not changes:
            return
        if "locations" in changes or "primary_location" in changes:
            w.location_ids, w.primary_location = self._assignment(
                changes.pop("locations", w.location_ids),
                changes.pop("primary_location", None), w.primary_location)
        if "user_data" in changes:
            _merge(w.custom_data, changes.pop("user_data"))
        if "phone_numbers" in changes:
            w.phone_numbers = list(changes.pop("phone_numbers") or ())
        if "password" in changes:
            w.password = str(changes.pop("password"))
        for key, value in changes.items():
            setattr(w, key, value if key != "email" else str(value).lower())
        w.last_modified_us = now

    def set_mobile_worker_active(self, now: int, user_id: str, active: bool) -> None:
        w = self._worker(user_id)
        if w.is_active != active:
            w.is_active = active
            w.last_modified_us = now

    def delete_mobile_worker(self, now: int, user_id: str) -> None:
        w = self._worker(user_id)
        w.deleted = True
        w.last_modified_us = now

    def restore_mobile_worker(self, now: int, user_id: str) -> None:
        w = self.workers.get(user_id)
        if w is None or not w.deleted:
            raise KeyError(f"no deleted mobile worker {user_id!r} in the simulator")
        w.deleted = False
        w.last_modified_us = now

    # --- web users -----------------------------------------------------------------------------

    def add_web_user(self, now: int, username: str, first_name: str = "", last_name: str = "",
                     role: str = "Read Only", is_admin: bool = False,
                     phone_numbers: Iterable[str] = (), user_data: dict | None = None,
                     location_ids: Iterable[str] = (), primary_location: str | None = None,
                     profile: str = "", tableau_role: str | None = None) -> str:
        username = username.lower()
        if self._taken(username):
            raise ValueError(f"Username '{username}' is already taken or reserved.")
        ids, primary = self._assignment(location_ids, primary_location)
        user = WebUser(self._new_id(), username, first_name, last_name, username,
                       list(phone_numbers), "Admin" if is_admin else role, bool(is_admin),
                       dict(user_data or {}), ids, primary, now, now, profile, tableau_role)
        self.web_users[user.id] = user
        return user.id

    def update_web_user(self, now: int, user_id: str, **changes: object) -> None:
        """What the web user API's PATCH can change, plus names and phone numbers."""
        u = self._web_user(user_id)
        editable = {"role", "is_admin", "profile", "user_data", "primary_location_id",
                    "assigned_location_ids", "tableau_role", "first_name", "last_name",
                    "phone_numbers"}
        unknown = sorted(set(changes) - editable)
        if unknown:
            raise ValueError(f"Attempted to update unknown or non-editable field '{unknown[0]}'")
        if "assigned_location_ids" in changes or "primary_location_id" in changes:
            u.location_ids, u.primary_location = self._assignment(
                changes.pop("assigned_location_ids", u.location_ids),
                changes.pop("primary_location_id", None) or None, u.primary_location)
        if "user_data" in changes:
            _merge(u.custom_data, changes.pop("user_data"))
        if "phone_numbers" in changes:
            u.phone_numbers = list(changes.pop("phone_numbers") or ())
        if changes.get("is_admin"):
            changes["role"] = "Admin"
        for key, value in changes.items():
            setattr(u, key, value)
        u.last_modified_us = now

    def set_web_user_active(self, now: int, user_id: str, active: bool) -> None:
        u = self._web_user(user_id)
        if u.is_active_in_domain != active:
            u.is_active_in_domain = active
            u.last_modified_us = now

    def remove_web_user(self, now: int, user_id: str) -> None:
        u = self._web_user(user_id)
        u.removed = True
        u.last_modified_us = now

    def restore_web_user(self, now: int, user_id: str) -> None:
        u = self.web_users.get(user_id)
        if u is None or not u.removed:
            raise KeyError(f"no removed web user {user_id!r} in the simulator")
        u.removed = False
        u.last_modified_us = now

    # --- groups --------------------------------------------------------------------------------

    def add_group(self, now: int, name: str, users: Iterable[str] = (),
                  case_sharing: bool = False, reporting: bool = True,
                  metadata: dict | None = None) -> str:
        if any(g.name == name for g in self.groups.values() if not g.deleted):
            raise ValueError(f"A group with name {name} already exists")
        members = list(dict.fromkeys(users))
        for user_id in members:
            if user_id not in self.workers and user_id not in self.web_users:
                raise KeyError(f"no user {user_id!r} in the simulator")
        group = Group(self._new_id(), name, members, bool(case_sharing), bool(reporting),
                      dict(metadata or {}), now)
        self.groups[group.id] = group
        return group.id

    def update_group(self, now: int, group_id: str, **changes: object) -> None:
        g = self._group(group_id)
        unknown = sorted(set(changes) - {"name", "users", "case_sharing", "reporting", "metadata"})
        if unknown:
            raise ValueError(f"a group has no field {unknown[0]!r}")
        name = changes.get("name")
        if name is not None and name != g.name and any(
                o.name == name for o in self.groups.values() if not o.deleted):
            raise ValueError("A group with this name already exists")
        if "users" in changes:
            changes["users"] = list(dict.fromkeys(changes["users"] or ()))
        if "metadata" in changes:
            changes["metadata"] = dict(changes["metadata"] or {})
        for key, value in changes.items():
            setattr(g, key, value)
        g.last_modified_us = now

    def change_group_members(self, now: int, group_id: str, add: Iterable[str] = (),
                             remove: Iterable[str] = ()) -> None:
        g = self._group(group_id)
        for user_id in add:
            if user_id not in self.workers and user_id not in self.web_users:
                raise KeyError(f"no user {user_id!r} in the simulator")
            if user_id not in g.users:
                g.users.append(user_id)
        gone = set(remove)
        g.users = [u for u in g.users if u not in gone]
        g.last_modified_us = now

    def delete_group(self, now: int, group_id: str) -> None:
        g = self._group(group_id)
        g.deleted = True
        g.last_modified_us = now

    def restore_group(self, now: int, group_id: str) -> None:
        g = self.groups.get(group_id)
        if g is None or not g.deleted:
            raise KeyError(f"no deleted group {group_id!r} in the simulator")
        if any(o.name == g.name for o in self.groups.values() if not o.deleted):
            raise ValueError(f"A group with name {g.name} already exists")
        g.deleted = False
        g.last_modified_us = now

    # --- locations -----------------------------------------------------------------------------

    def _type_by_code(self, code: str) -> LocationType:
        for t in self.location_types.values():
            if t.code == code:
                return t
        raise KeyError(f"no location type {code!r} in the simulator")

    def _check_parent(self, t: LocationType, parent: Location | None) -> None:
        parent_type = None if parent is None else parent.type_id
        if parent_type != t.parent_id:
            raise ValueError("Parent cannot have children of this location's type.")

    def _site_code(self, wanted: str | None, name: str, exclude: str | None = None) -> str:
        taken = {loc.site_code.lower() for loc in self.locations.values()
                 if loc.location_id != exclude}
        if wanted is not None:
            if wanted.lower() in taken:
                raise ValueError(f"Location with site code '{wanted}' already exists")
            return wanted
        base = code = slug(name)
        n = 0
        while code in taken:
            n += 1
            code = f"{base}{n}"
        return code

    def add_location(self, now: int, pk: int, name: str, location_type: str,
                     parent_id: str | None = None, site_code: str | None = None,
                     latitude: float | str | None = None, longitude: float | str | None = None,
                     location_data: dict | None = None, external_id: str | None = None) -> str:
        t = self._type_by_code(location_type)
        parent = None if parent_id is None else self.live_location(parent_id)
        self._check_parent(t, parent)
        siblings = [c for c in self.locations.values()
                    if c.parent_id == parent_id and not c.is_archived]
        if any(c.name == name for c in siblings):
            raise ValueError("Location with same name and parent already exists.")
        loc = Location(pk, self._new_id(), name, self._site_code(site_code, name), t.id,
                       parent_id, decimal(latitude), decimal(longitude),
                       dict(location_data or {}), now, now, external_id)
        self.locations[loc.location_id] = loc
        return loc.location_id

    def update_location(self, now: int, location_id: str, **changes: object) -> None:
        loc = self.live_location(location_id)
        editable = {"name", "site_code", "latitude", "longitude", "location_data",
                    "external_id"}
        unknown = sorted(set(changes) - editable)
        if unknown:
            raise ValueError(f"Invalid fields were included in request: {unknown}.")
        if "site_code" in changes:
            loc.site_code = self._site_code(str(changes.pop("site_code")), loc.name, location_id)
        for key in ("latitude", "longitude"):
            if key in changes:
                setattr(loc, key, decimal(changes.pop(key)))
        if "location_data" in changes:
            loc.metadata = dict(changes.pop("location_data") or {})
        for key, value in changes.items():
            setattr(loc, key, value)
        loc.last_modified_us = now

    def move_location(self, now: int, location_id: str, parent_id: str | None) -> None:
        loc = self.live_location(location_id)
        parent = None if parent_id is None else self.live_location(parent_id)
        if parent is not None and parent.location_id in {
                d.location_id for d in self.descendants(location_id)}:
            raise ValueError("a location cannot move under itself")
        self._check_parent(self.type_of(loc), parent)
        loc.parent_id = parent_id
        loc.last_modified_us = now

    def archive_location(self, now: int, location_id: str) -> list[str]:
        """`SQLLocation.archive()`: the location and its descendants, each saved (a fresh
        `last_modified`); their users are unassigned. The ids archived."""
        self.live_location(location_id)
        gone = [loc for loc in self.descendants(location_id) if not loc.is_archived]
        for loc in gone:
            loc.is_archived, loc.archived_on_us, loc.last_modified_us = True, now, now
        ids = [loc.location_id for loc in gone]
        self._unassign(now, set(ids))
        return ids

    def unarchive_location(self, now: int, location_id: str) -> list[str]:
        """`SQLLocation.unarchive()`: descendants and ancestors are all saved again, archived
        or not. Users are not re-assigned. The ids saved."""
        if location_id not in self.locations:
            raise KeyError(f"no location {location_id!r} in the simulator")
        touched = self.descendants(location_id) + self.ancestors(location_id)
        for loc in touched:
            loc.is_archived, loc.archived_on_us, loc.last_modified_us = False, None, now
        return [loc.location_id for loc in touched]

    def delete_location(self, now: int, location_id: str) -> list[str]:
        """`SQLLocation.delete()`: the location and its descendants, for good; their users are
        unassigned. The ids deleted."""
        if location_id not in self.locations:
            raise KeyError(f"no location {location_id!r} in the simulator")
        ids = [loc.location_id for loc in self.descendants(location_id)]
        for i in ids:
            del self.locations[i]
        self._unassign(now, set(ids))
        return ids

    def _unassign(self, now: int, gone: set[str]) -> None:
        """`update_users_at_locations`: drop the locations from every user that had them; the
        primary falls back to the next assigned location."""
        for user in list(self.workers.values()) + list(self.web_users.values()):
            if not gone.intersection(user.location_ids):
                continue
            user.location_ids = [i for i in user.location_ids if i not in gone]
            if user.primary_location in gone:
                user.primary_location = user.location_ids[0] if user.location_ids else None
            user.last_modified_us = now


def _merge(data: dict, update: object) -> None:
    for key, value in dict(update or {}).items():  # type: ignore[call-overload]
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value


def decimal(value: float | str | None) -> str | None:
    """A coordinate as tastypie prints a DecimalField(max_digits=20, decimal_places=10)."""
    if value is None or value == "":
        return None
    return f"{float(value):.10f}"


# --- generation -------------------------------------------------------------------------------

HIERARCHY = (  # region -> districts
    ("Nyanza", ("Kisumu", "Siaya", "Homa Bay")),
    ("Nairobi", ("Kibra", "Mathare")),
    ("Western", ("Kakamega", "Busia")),
)
PLACES = ("Nyalenda", "Manyatta", "Kondele", "Ahero", "Usenge", "Sega", "Rangala", "Mbita",
          "Kendu Bay", "Oyugis", "Laini Saba", "Makina", "Huruma", "Kariobangi", "Lurambi",
          "Shinyalu", "Malava", "Funyula", "Nambale", "Port Victoria", "Bondo", "Ugunja", "Yala",
          "Rarieda", "Kibera", "Mathare North", "Kisumu Ndogo", "Siaya Township")
FACILITY_KINDS = (("Health Centre", "Level 3"), ("Dispensary", "Level 2"),
                  ("Sub-County Hospital", "Level 4"), ("Community Unit", "Level 1"))
WEB_USERS = (  # username, first, last, role, is_admin, active in the project
    ("admin@example.org", "Joseph", "Kamau", "Admin", True, True),
    ("data.manager@example.org", "Mercy", "Otieno", "App Editor", False, True),
    ("viewer@example.org", "Samuel", "Banda", "Read Only", False, False),
)


def generate(f: DocFactory, seed: int, start_us: int) -> Directory:
    """The project's reference data as it stands when field work starts (`start_us`)."""
    rng = random.Random(f"commcare-sim:directory:{f.domain}:{seed}")
    d = Directory(f.domain, rng=rng)
    clock = [start_us - 45 * US_PER_DAY + ri(rng, 0, 3600) * US_PER_SECOND]

    def later(low: int = 1, high: int = 900) -> int:
        clock[0] += ri(rng, low, high) * US_PER_SECOND + ri(rng, 0, 999_999)
        return clock[0]

    _generate_locations(d, f, rng, later)
    _generate_users(d, f, rng, later, start_us)
    d.rng = random.Random(f"commcare-sim:directory-changes:{f.domain}:{seed}")
    return d


def _generate_locations(d: Directory, f: DocFactory, rng: random.Random, later) -> None:
    type_pk = ri(rng, 100, 900)
    specs = (("Country", None, False, True), ("Region", "country", False, True),
             ("District", "region", False, True), ("Facility", "district", True, False))
    by_code: dict[str, LocationType] = {}
    for n, (name, parent, shares, descendants) in enumerate(specs):
        t = LocationType(type_pk + n, name, slug(name),
                         by_code[parent].id if parent else None, shares, descendants)
        d.location_types[t.id] = t
        by_code[t.code] = t
    pk = [ri(rng, 1_000, 60_000)]
    places = list(PLACES)
    rng.shuffle(places)
    owned = iter(f.owners[2:4])  # the two facilities that own cases

    def add(name: str, code: str, parent: Location | None, location_id: str | None = None,
            coords: tuple[float, float] | None = None, metadata: dict | None = None,
            external_id: str | None = None) -> Location:
        pk[0] += 1 + (ri(rng, 1, 3) if rng.random() < 0.1 else 0)  # gaps: deleted long ago
        created = later()
        modified = created
        if rng.random() < 0.3:  # edited once after it was set up
            modified += ri(rng, 60, 3 * 86_400) * US_PER_SECOND + ri(rng, 0, 999_999)
        loc = Location(pk[0], location_id or d._new_id(), name, d._site_code(None, name),
                       by_code[code].id, parent.location_id if parent else None,
                       decimal(coords[0]) if coords else None,
                       decimal(coords[1]) if coords else None,
                       metadata or {}, created, modified, external_id)
        d.locations[loc.location_id] = loc
        return loc

    country = add("Kenya", "country", None)
    for region_name, districts in HIERARCHY:
        region = add(region_name, "region", country)
        for n, district_name in enumerate(districts):
            lat, lon = rng.uniform(-1.4, 0.6), rng.uniform(34.0, 37.0)
            district = add(district_name, "district", region, coords=(lat, lon),
                           metadata={"district_code": f"KE-{ri(rng, 1, 47):03d}"})
            for k in range(ri(rng, 2, 4)):
                kind, level = FACILITY_KINDS[0 if k == 0 else ri(rng, 0, 3)]
                location_id = next(owned, None) if n == 0 and k == 0 else None
                add(f"{places.pop()} {kind}", "facility", district, location_id,
                    (lat + rng.uniform(-0.15, 0.15), lon + rng.uniform(-0.15, 0.15)),
                    {"facility_type": kind, "keph_level": level,
                     "catchment_population": str(ri(rng, 2_000, 40_000))},
                    f"MFL-{ri(rng, 10_000, 29_999)}" if rng.random() < 0.8 else None)
    # A facility closed before field work: archived, so no API ever shows it.
    busia = next(loc for loc in d.locations.values() if loc.name == "Busia")
    closed = add(f"{places.pop()} Dispensary", "facility", busia,
                 metadata={"facility_type": "Dispensary", "keph_level": "Level 2"})
    closed.is_archived, closed.archived_on_us = True, later()
    closed.last_modified_us = closed.archived_on_us


def _facilities_of(d: Directory, location_id: str) -> list[str]:
    """The other live facilities in the same district."""
    parent = d.locations[location_id].parent_id
    return [loc.location_id for loc in d.locations.values()
            if loc.parent_id == parent and loc.location_id != location_id
            and not loc.is_archived]


def _generate_users(d: Directory, f: DocFactory, rng: random.Random, later,
                    start_us: int) -> None:
    workers = f.users[:-1]  # the last one is the supervisor, a web user
    for n, user in enumerate(workers):
        phones = [f"+2547{10_000_000 + n * 7_919:08d}"]
        if n % 4 == 3:
            phones.append(f"+2547{20_000_000 + n * 104_729:08d}")
        primary = f.owners[2 + n % 2]
        assigned = [primary] + (_facilities_of(d, primary)[:1] if n % 3 == 1 else [])
        created = later(60, 7_200)
        w = MobileWorker(
            user.id, f"{user.username}@{f.domain}.commcarehq.org",
            FIRST_NAMES[n % len(FIRST_NAMES)], LAST_NAMES[n % len(LAST_NAMES)],
            "" if n % 3 == 2 else f"{user.username}@example.org", phones,
            {"chw_id": f"CHW-{n + 1:03d}", "cadre": "CHV" if n % 2 else "CHA"},
            assigned, primary, created, created)
        d.workers[w.id] = w
    # A worker who left before field work: deactivated, so only `archived=true` lists them.
    gone = MobileWorker(d._new_id(), f"chw{len(workers) + 1}@{f.domain}.commcarehq.org",
                        "Otieno", "Achieng", "", [], {"chw_id": f"CHW-{len(workers) + 1:03d}"},
                        [f.owners[2]], f.owners[2], later(60, 7_200), 0, is_active=False)
    gone.last_modified_us = later()
    d.workers[gone.id] = gone
    ids = [u.id for u in workers]
    for g in (
        Group(f.owners[0], "North team", ids[:4] + [gone.id], True, True, {"region": "north"}, 0),
        Group(f.owners[1], "South team", ids[4:], True, True, {"region": "south"}, 0),
        Group(hashlib.md5(f"{f.domain}:report".encode()).hexdigest(), "Supervisors' report",
              ids[::3], False, True, {}, 0),
    ):
        g.last_modified_us = later()
        d.groups[g.id] = g
    region = next(loc.location_id for loc in d.locations.values() if loc.name == "Nyanza")
    supervisor = f.users[-1]
    people = [(supervisor.id, "supervisor@example.org", "Grace", "Achieng",
               "Field Implementer", False, True)]
    people += [(d._new_id(), *spec) for spec in WEB_USERS]
    for user_id, username, first, last, role, admin, active in people:
        created = later(60, 7_200)
        located = role == "Field Implementer"
        u = WebUser(user_id, username, first, last, username, [], role, admin,
                    {"staff_id": f"S-{ri(rng, 100, 999)}"} if located else {},
                    [region] if located else [], region if located else None, created,
                    later(1, 600), is_active_in_domain=active)
        d.web_users[u.id] = u
    # Everything generated predates field work (the store's clock starts after the data).
    latest = start_us - US_PER_SECOND
    for item in (*d.workers.values(), *d.web_users.values(), *d.groups.values(),
                 *d.locations.values()):
        item.last_modified_us = min(item.last_modified_us, latest)


def naive_iso(us: int) -> str:
    """`datetime.isoformat()` of a naive UTC datetime (tastypie's DateTimeField): no `Z`, and
    no fraction when the microseconds are zero."""
    return from_us(us).replace(tzinfo=None).isoformat()


def naive_us6(us: int) -> str:
    """`strftime('%Y-%m-%dT%H:%M:%S.%f')`: how the user resources print `last_modified`."""
    return from_us(us).replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")


def parse_naive(value: str) -> int:
    """A filter value as Django's DateTimeField reads it: a date (midnight) or a datetime, naive
    taken as UTC (HQ runs in UTC), aware converted. Raises ValueError."""
    return to_us(datetime.fromisoformat(value.strip()))
