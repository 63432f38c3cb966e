"""The fixtures an OTA restore carries, after HQ's fixture providers, in HQ's order:

* `user-groups` (corehq/apps/users/fixturegenerators.py), always:
  `<fixture id="user-groups" user_id="U"><groups><group id="G"><name>North team</name>
  <group_data><data key="region">north</data></group_data></group></groups></fixture>` with the
  worker's case-sharing groups (`group_data` only when the group has metadata).
* lookup tables, `item-list:<tag>` (corehq/apps/fixtures/fixturegenerators.py), global tables
  first, then the worker's own, each sorted by tag:
  `<fixture id="item-list:clinics" user_id="U"><clinics_list><clinics><name>A</name>
  <code>1</code></clinics>...</clinics_list></fixture>` (every field of the table, in the
  table's order, empty when an item lacks it).
* the flat `locations` fixture (corehq/apps/locations/fixtures.py), for workers with
  locations: a `<schema id="locations"><indices><index>@country_id</index>...</indices>
  </schema>` element, then `<fixture id="locations" user_id="U" indexed="true"><locations>
  <location type="facility" id="L" country_id=".." region_id=".." district_id=".."
  facility_id="L"><name/><site_code/><external_id/><latitude/><longitude/><location_type/>
  <supply_point_id/><location_data><field>..</field></location_data></location>...
  </locations></fixture>`: the assigned locations, their ancestors and descendants (HQ's
  default expansion), by site code; `location_data` has every field any location of the
  project has (empty when missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from etl.simulator.casexml import clean, data_element, element, is_name, text
from etl.simulator.directory import Directory, Location, MobileWorker


@dataclass(frozen=True)
class LookupTable:
    tag: str
    fields: tuple[str, ...]
    items: tuple[dict[str, str], ...]
    users: frozenset[str] | None  # the mobile workers (ids) it is for; None: everyone


def make_table(d: Directory, tag: str, fields: Iterable[str], items: Iterable[Mapping],
               users: Iterable[str] | None) -> LookupTable:
    """Validated like HQ's lookup table upload: tag and fields must be XML names, items may
    only have the table's fields, users are mobile worker ids or usernames."""
    fields = tuple(fields)
    for name in (tag, *fields):
        if not is_name(name):
            raise ValueError(f"{name!r} is not a valid lookup table tag or field name")
    if len(set(fields)) != len(fields):
        raise ValueError(f"lookup table {tag!r} has a field twice")
    rows = []
    for item in items:
        extra = sorted(set(item) - set(fields))
        if extra:
            raise ValueError(f"lookup table {tag!r} has no field {extra[0]!r}")
        rows.append({k: clean(v) for k, v in item.items()})
    owners = None
    if users is not None:
        owners = set()
        for user in users:
            w = d.workers.get(user) or d.worker_by_username(
                user if "@" in user else f"{user}@{d.domain}.commcarehq.org")
            if w is None:
                raise KeyError(f"no mobile worker {user!r} in the simulator")
            owners.add(w.id)
    return LookupTable(tag, fields, tuple(rows), None if owners is None else frozenset(owners))


def restore_fixtures(d: Directory, tables: Iterable[LookupTable], w: MobileWorker) -> list[str]:
    """The worker's fixture elements (each one counts as an item of the restore)."""
    tables = list(tables)
    out = [groups_fixture(d, w)]
    mine = [t for t in tables if t.users is not None and w.id in t.users]
    for table in sorted((t for t in tables if t.users is None), key=lambda t: t.tag) + sorted(
            mine, key=lambda t: t.tag):
        out.append(item_list_fixture(table, w.id))
    out += locations_fixture(d, w)
    return out


def groups_fixture(d: Directory, w: MobileWorker) -> str:
    groups = sorted((g for g in d.groups.values()
                     if g.case_sharing and not g.deleted and w.id in g.users),
                    key=lambda g: g.name)
    content = "".join(
        element("group", element("name", text(g.name))
                + (data_element("group_data", {k: clean(v) for k, v in g.metadata.items()})
                   if g.metadata else ""), [("id", g.id)])
        for g in groups)
    return element("fixture", f"<groups>{content}</groups>" if content else "<groups/>",
                   [("id", "user-groups"), ("user_id", w.id)])


def item_list_fixture(table: LookupTable, user_id: str) -> str:
    items = "".join(element(table.tag, "".join(element(f, text(item.get(f, "")))
                                               for f in table.fields))
                    for item in table.items)
    return element("fixture", element(f"{table.tag}_list", items),
                   [("id", f"item-list:{table.tag}"), ("user_id", user_id)])


def locations_to_sync(d: Directory, w: MobileWorker) -> list[Location]:
    wanted: dict[str, Location] = {}
    for location_id in w.location_ids:
        loc = d.locations.get(location_id)
        if loc is None or loc.is_archived:
            continue
        for other in [*d.ancestors(location_id), *d.descendants(location_id)]:
            if not other.is_archived:
                wanted[other.location_id] = other
    return sorted(wanted.values(), key=lambda loc: loc.site_code)


def locations_fixture(d: Directory, w: MobileWorker) -> list[str]:
    locations = locations_to_sync(d, w)
    if not locations:
        return []
    types = sorted(d.location_types.values(), key=lambda t: t.id)
    type_attrs = [f"{t.code}_id" for t in types]
    indices = sorted([f"@{a}" for a in type_attrs] + ["@id", "@type", "name"])
    schema = element("schema", element("indices", "".join(element("index", text(i))
                                                          for i in indices)),
                     [("id", "locations")])
    data_fields = sorted({k for loc in d.locations.values() for k in loc.metadata
                          if is_name(k)})
    nodes = []
    for loc in locations:
        t = d.type_of(loc)
        attrs: dict[str, Any] = {"type": t.code, "id": loc.location_id}
        attrs.update({a: "" for a in type_attrs})
        for place in [loc, *d.ancestors(loc.location_id)]:
            attrs[f"{d.type_of(place).code}_id"] = place.location_id
        fields = (element("name", text(loc.name)) + element("site_code", text(loc.site_code))
                  + element("external_id", text(loc.external_id))
                  + element("latitude", text(loc.latitude))
                  + element("longitude", text(loc.longitude))
                  + element("location_type", text(t.name)) + "<supply_point_id/>"
                  + element("location_data", "".join(
                      element(k, text(loc.metadata.get(k, ""))) for k in data_fields)))
        nodes.append(element("location", fields, attrs.items()))
    fixture = element("fixture", element("locations", "".join(nodes)),
                      [("id", "locations"), ("user_id", w.id), ("indexed", "true")])
    return [schema, fixture]
