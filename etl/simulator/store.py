"""The simulator's search index: per domain, cases and forms kept in index order, a clock, and
the changes field workers (and HQ maintenance) make between syncs.

Every write re-indexes a document: it gets a fresh `indexed_on` from the clock and a fresh
insertion sequence, exactly as HQ's pillows re-send a changed document to Elasticsearch.
The index may have several copies (`replicas`) that order ties differently (see replicas.py).
"""

from __future__ import annotations

import bisect
import gc
import random
import threading
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from etl.simulator import appdef, directory, rebuild, replicas
from etl.simulator.dataset import Dataset
from etl.simulator.factory import DocFactory, Index, User
from etl.simulator.hqtime import US_PER_MS, US_PER_SECOND, fmt_us, from_us, parse_ms, to_us
from etl.simulator.records import RawRecord, Record
from etl.simulator.vocab import pick, ri

MISSING = -(2**62)  # sorts first ascending and last descending, as ES's `missing` defaults do
SORT_FIELDS: dict[str, dict[str, Callable[[Record], int | None]]] = {
    "case": {"indexed_on": lambda r: r.ix, "server_date_modified": lambda r: r.keys[0],
             "date_modified": lambda r: r.keys[1]},
    "form": {"indexed_on": lambda r: r.ix, "received_on": lambda r: r.keys[0],
             "server_modified_on": lambda r: r.keys[1]},
}
Sort = tuple[tuple[str, bool], ...]  # ((field, descending), ...)


def _ix_key(r: Record) -> tuple[int, int]:
    return r.ix, r.seq


def _sort_key(kind: str, sort: Sort) -> Callable[[Record], Any]:
    if sort == (("indexed_on", False),):
        return lambda r: r.ix
    getters = [(SORT_FIELDS[kind][name], desc) for name, desc in sort]

    def value(get: Callable[[Record], int | None], desc: bool, r: Record) -> int:
        v = get(r)
        v = MISSING if v is None else v
        return -v if desc else v

    if len(getters) == 1:
        (get, desc), = getters
        return lambda r: value(get, desc, r)
    return lambda r: tuple(value(get, desc, r) for get, desc in getters)


def _v2_key(r: Record) -> tuple[int, str]:
    return r.ix, r.id


class Collection:
    """One domain's cases or forms, in index order (indexed_on ms, then write order)."""

    def __init__(self, kind: str, records: Iterable[Record]):
        self.kind = kind
        self.ordered: list[Record] = sorted(records, key=_ix_key)
        self.by_id: dict[str, Record] = {r.id: r for r in self.ordered}
        self._views: dict[object, Any] = {}
        self._keys: dict[Sort, Callable[[Record], Any]] = {}
        self._touching: dict[str, list[str]] | None = None  # forms only: case id -> form ids

    def __len__(self) -> int:
        return len(self.ordered)

    def get(self, record_id: str) -> Record | None:
        return self.by_id.get(record_id)

    def put(self, record: Record) -> None:
        """Insert, or replace the record with the same id."""
        self._unlink(record.id)
        bisect.insort(self.ordered, record, key=_ix_key)
        self.by_id[record.id] = record
        self._views.clear()
        if self._touching is not None:
            self._note(record)

    def remove(self, record_id: str) -> Record | None:
        record = self._unlink(record_id)
        self._views.clear()
        if record is not None and self._touching is not None:
            for case_id in record.case_ids:
                forms = self._touching.get(case_id, [])
                if record_id in forms:
                    forms.remove(record_id)
        return record

    def touching(self, case_id: str) -> list[str]:
        """Forms only: the ids of every form (archived or not) with a block for `case_id`, in
        the order the index first saw them (HQ's case transactions, revoked ones included)."""
        if self._touching is None:
            self._touching = {}
            for record in self.ordered:
                self._note(record)
        return list(self._touching.get(case_id, ()))

    def _note(self, record: Record) -> None:
        for case_id in record.case_ids:
            forms = self._touching.setdefault(case_id, [])
            if record.id not in forms:
                forms.append(record.id)

    def _unlink(self, record_id: str) -> Record | None:
        old = self.by_id.pop(record_id, None)
        if old is not None:
            at = bisect.bisect_left(self.ordered, _ix_key(old), key=_ix_key)
            assert self.ordered[at] is old
            del self.ordered[at]
        return old

    def view(self, sort: Sort) -> list[Record]:
        """Records in a v0.5 sort order; equal keys keep write order (ES has no tie-break)."""
        if sort == (("indexed_on", False),):
            return self.ordered
        cached = self._views.get(sort)
        if cached is None:
            key = self.sort_key(sort)
            cached = self._views[sort] = sorted(self.ordered, key=lambda r: (key(r), r.seq))
        return cached

    def sort_key(self, sort: Sort) -> Callable[[Record], Any]:
        """The value `view(sort)` is ordered by (ms precision, missing first ascending), without
        the write-order tie-break: records with equal keys are a tie."""
        key = self._keys.get(sort)
        if key is None:
            key = self._keys[sort] = _sort_key(self.kind, sort)
        return key

    def tie_cache(self, sort: Sort) -> dict:
        """Per-replica orders of big ties in `view(sort)`, dropped with the views on any write."""
        return self._views.setdefault(("ties", sort), {})

    def v2_view(self) -> list[Record]:
        """Case API v2 order: (indexed_on ms, case_id)."""
        cached = self._views.get("v2")
        if cached is None:
            cached = self._views["v2"] = sorted(self.ordered, key=_v2_key)
        return cached

    def newest_ix(self) -> int:
        return self.ordered[-1].ix if self.ordered else MISSING


class Domain:
    def __init__(self, dataset: Dataset):
        self.name = dataset.domain
        self.cases = Collection("case", dataset.cases)
        self.forms = Collection("form", dataset.forms)
        self.apps = dataset.apps
        self.factory = dataset.factory.fork(f"mutations:{dataset.domain}:{dataset.seed}")
        # Mobile workers, web users, groups and locations: this simulator's own copy.
        if dataset.directory is not None:
            self.directory = dataset.directory.copy()
        else:
            self.directory = directory.generate(dataset.factory, dataset.seed,
                                                dataset.last_indexed_us)
        self.deprecated_types: set[str] = set()  # the data dictionary's deprecated case types
        self.rebuilt_away: dict[str, dict] = {}  # cases a rebuild deleted (no forms left)
        # Indices a case lost (case id -> identifier -> (case_type, relationship)): restores
        # send them as empty elements so a phone drops them too.
        self.removed_indices: dict[str, dict[str, tuple[str, str]]] = {}
        self.lookup_tables: list[Any] = []  # fixtures.LookupTable, in the order added
        self.sync_logs: dict[str, Any] = {}  # restore_id -> restore.SyncLog
        self.export_checkpoints: dict[str, Any] = {}  # export token -> exportapi.Checkpoint

    def collection(self, resource: str) -> Collection:
        if resource == "case":
            return self.cases
        if resource == "form":
            return self.forms
        raise ValueError(f"resource must be 'case' or 'form', not {resource!r}")


@dataclass
class ReindexTrigger:
    """`reindex_during_reads`: after `remaining` more v0.5 list requests for `resource` (in
    `domain`, or any), re-index `count` of the records the last of them served."""

    resource: str
    domain: str | None
    remaining: int
    count: int
    rng: random.Random


class Store:
    """All domains, the clock, the index's copies, and thread-safe changes."""

    def __init__(self, datasets: Iterable[Dataset], seed: int = 0, replicas: int = 1):
        self.lock = threading.RLock()
        self.domains: dict[str, Domain] = {}
        newest = 0
        seq = 0
        for dataset in datasets:
            if dataset.domain in self.domains:
                raise ValueError(f"two datasets for domain {dataset.domain!r}")
            self.domains[dataset.domain] = Domain(dataset)
            newest = max(newest, dataset.last_indexed_us)
            seq = max([seq] + [r.seq for r in dataset.cases[-1:] + dataset.forms[-1:]])
        self.seq = seq + 1
        self.clock_us = newest + US_PER_MS
        # SQLLocation's primary keys: one sequence across every project.
        self.location_pk = max([0] + [loc.pk for d in self.domains.values()
                                      for loc in d.directory.locations.values()])
        self.rng = random.Random(f"clock:{seed}")
        self.triggers: list[ReindexTrigger] = []
        self.reindexed_ids: list[str] = []  # what `reindex_during_reads` moved, in order
        self.set_replicas(replicas, seed)

    # --- the index's copies ----------------------------------------------------------------------

    def set_replicas(self, n: int, seed: int = 0) -> None:
        """Serve v0.5 lists from `n` copies of the index, each request from one drawn at random
        (seeded: the same requests in the same order meet the same copies)."""
        n = int(n)
        if n < 1:
            raise ValueError(f"replicas must be at least 1, not {n}")
        with self.lock:
            self.replicas = n
            self._salts = replicas.salts(n, seed) if n > 1 else []
            self._replica_rng = random.Random(f"replicas:{seed}")

    def draw_replica(self) -> int | None:
        """The copy that answers this search (None: there is only one)."""
        with self.lock:
            return self._replica_rng.randrange(self.replicas) if self.replicas > 1 else None

    def replica_salt(self, replica: int | None) -> bytes | None:
        return None if replica is None else self._salts[replica]

    # --- clock ---------------------------------------------------------------------------------

    def now(self) -> datetime:
        return from_us(self.clock_us)

    def set_clock(self, moment: datetime) -> None:
        with self.lock:
            self.clock_us = to_us(moment)

    def tick(self) -> int:
        """The clock moves a few milliseconds per write."""
        self.clock_us += ri(self.rng, 1_000, 4_999)
        return self.clock_us

    def domain(self, name: str) -> Domain:
        try:
            return self.domains[name]
        except KeyError:
            raise KeyError(f"the simulator has no domain {name!r}") from None

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _save(self, coll: Collection, doc: dict, ix_us: int) -> Record:
        doc["indexed_on"] = fmt_us(ix_us)
        record = Record(coll.kind, doc, self._next_seq())
        coll.put(record)
        return record

    def _existing(self, coll: Collection, ids: Iterable[str]) -> list[Record]:
        records = []
        for record_id in ids:
            record = coll.get(record_id)
            if record is None:
                raise KeyError(f"no {coll.kind} {record_id!r} in the simulator")
            records.append(record)
        return records

    # --- changes -------------------------------------------------------------------------------

    def add_cases(self, domain: str, n: int, case_type: str = "patient",
                  indexed_on_us: Callable[[int], int] | None = None,
                  owner_id: str | None = None,
                  properties: dict[str, Any] | None = None) -> list[str]:
        """New cases, each with the registration form that created it. `owner_id`: who owns
        them (a mobile worker registers its own; a group or location's are registered by a
        field worker); default: the registering field worker. `properties`: exactly these
        dynamic properties instead of generated ones."""
        with self.lock:
            d = self.domain(domain)
            hosts = self._hosts(d)
            ids = []
            # As in Dataset.generate: many short-lived containers and no cycles, so the cyclic
            # GC would only rescan the growing store (a benchmark adds 100k cases at once).
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                for i in range(n):
                    form, docs = self._registration(d, case_type, hosts, owner_id, properties)
                    self._save(d.forms, form, self.tick())
                    case_ix = indexed_on_us(i) if indexed_on_us else self.tick()
                    for doc in docs:
                        self._save(d.cases, doc, case_ix)
                    ids.append(docs[0]["case_id"])
            finally:
                if gc_was_enabled:
                    gc.enable()
            return ids

    @staticmethod
    def _hosts(d: Domain) -> dict[str, list[str]]:
        """Open cases new ones may index: households (for patients), patients (contacts)."""
        return {t: [r.id for r in d.cases.ordered if r.terms[0] == t and not r.terms[4]]
                for t in ("household", "patient")}

    def _registration(self, d: Domain, case_type: str, hosts: dict[str, list[str]],
                      owner_id: str | None = None,
                      properties: dict[str, Any] | None = None) -> tuple[dict, list[dict]]:
        f = d.factory
        user = self._user_owning(d, owner_id) or f.field_worker()
        received = self.tick()
        indices: list[Index] = []
        if case_type == "patient" and hosts["household"]:
            indices = [Index("parent", pick(f.rng, hosts["household"]), "household")]
        elif case_type == "contact" and hosts["patient"]:
            indices = [Index("host", pick(f.rng, hosts["patient"]), "patient", "extension")]
        return f.registration(case_type, user, received - self._lag(f), received, indices,
                              owner_id or "",
                              props=None if properties is None else dict(properties))

    @staticmethod
    def _user_owning(d: Domain, owner_id: str | None) -> User | None:
        """The mobile worker `owner_id` names, as the factory's submitting user."""
        w = d.directory.workers.get(owner_id or "")
        if w is None or w.deleted:
            return None
        known = next((u for u in d.factory.users if u.id == w.id), None)
        short = w.username.split("@")[0]
        return known or User(w.id, short, f"35{zlib.crc32(w.id.encode()):013d}")

    def update_cases(self, domain: str, case_ids: Iterable[str],
                     properties: dict | None = None, close: bool = False) -> None:
        """One follow-up form per case: given properties (or a routine visit's), maybe closing."""
        with self.lock:
            d = self.domain(domain)
            f = d.factory
            for record in self._existing(d.cases, case_ids):
                doc = record.doc(b"")
                user = f.field_worker()
                received = self.tick()
                phone = received - self._lag(f)
                if properties is not None:
                    update = dict(properties)
                elif close:
                    update = {}
                else:
                    update = f.visit_properties(doc, phone)
                form = f.follow_up([doc], user, phone, received, [update], [close])
                self._save(d.forms, form, self.tick())
                self._save(d.cases, doc, self.tick())

    def add_forms(self, domain: str, n: int, xmlns: str | None = None) -> list[str]:
        """New submissions: mostly follow-ups of open cases (which re-index them), some surveys.
        With `xmlns`, `n` forms of that form: a registration (with its new case), a follow-up
        of a random open case of its type, or (the survey's, or an xmlns no app has) a survey
        (with its `facilities` repeat) carrying that xmlns."""
        if xmlns is not None:
            return self._add_forms_of(domain, n, xmlns)
        with self.lock:
            d = self.domain(domain)
            f = d.factory
            open_cases = [r.id for r in d.cases.ordered if not r.terms[4]]
            ids = []
            for _ in range(n):
                user = f.field_worker()
                received = self.tick()
                phone = received - self._lag(f)
                if open_cases and f.rng.random() < 0.7:
                    doc = d.cases.get(pick(f.rng, open_cases)).doc(b"")
                    form = f.follow_up([doc], user, phone, received,
                                       [f.visit_properties(doc, phone)])
                    self._save(d.forms, form, self.tick())
                    self._save(d.cases, doc, self.tick())
                else:
                    form = f.survey(user, phone, received)
                    self._save(d.forms, form, self.tick())
                ids.append(form["id"])
            return ids

    def _add_forms_of(self, domain: str, n: int, xmlns: str) -> list[str]:
        fdef = next((f for f in appdef.FORMS.values() if f.xmlns == xmlns), None)
        with self.lock:
            d = self.domain(domain)
            f = d.factory
            ids = []
            if fdef is not None and fdef.case_type and fdef.registers:
                hosts = self._hosts(d)
                for _ in range(n):
                    form, docs = self._registration(d, fdef.case_type, hosts)
                    self._save(d.forms, form, self.tick())
                    case_ix = self.tick()
                    for doc in docs:
                        self._save(d.cases, doc, case_ix)
                    ids.append(form["id"])
                return ids
            if fdef is not None and fdef.case_type:
                open_cases = [r.id for r in d.cases.ordered
                              if type(r) is Record and not r.terms[4]
                              and r.terms[0] == fdef.case_type]
                if not open_cases:
                    raise ValueError(f"no open {fdef.case_type} case to follow up with {xmlns}")
                for _ in range(n):
                    doc = d.cases.get(pick(f.rng, open_cases)).doc(b"")
                    form = self._follow_up(d, doc, None)
                    ids.append(form["id"])
                return ids
            for _ in range(n):
                user = f.field_worker()
                received = self.tick()
                form = f.survey(user, received - self._lag(f), received)
                form["form"]["@xmlns"] = xmlns
                self._save(d.forms, form, self.tick())
                ids.append(form["id"])
            return ids

    def _follow_up(self, d: Domain, doc: dict, update: dict | None,
                   indices: Iterable[Index] = (), user: User | None = None) -> dict:
        """One follow-up form for the case `doc` (changed in place and re-saved): `update`, or
        a routine visit's properties. Returns the form."""
        f = d.factory
        user = user or f.field_worker()
        received = self.tick()
        phone = received - self._lag(f)
        if update is None:
            update = f.visit_properties(doc, phone)
        form = f.follow_up([doc], user, phone, received, [update], None, [list(indices)])
        self._save(d.forms, form, self.tick())
        self._save(d.cases, doc, self.tick())
        return form

    def set_case_owner(self, domain: str, case_ids: Iterable[str], owner_id: str) -> None:
        """Reassign cases: one form per case (by the supervisor) updating `owner_id`."""
        with self.lock:
            d = self.domain(domain)
            for record in self._existing(d.cases, list(case_ids)):
                if isinstance(record, RawRecord):
                    raise ValueError(f"case {record.id!r} is a raw record")
                self._follow_up(d, record.doc(b""), {"owner_id": owner_id},
                                user=d.factory.users[-1])

    def set_case_index(self, domain: str, case_id: str, identifier: str,
                       referenced_id: str | None, case_type: str = "",
                       relationship: str = "child") -> None:
        """A form setting the case's index `identifier` to `referenced_id` (its `case_type`
        defaults to the referenced case's), or removing it (None)."""
        if relationship not in ("child", "extension"):
            raise ValueError(f"relationship must be 'child' or 'extension', not {relationship!r}")
        with self.lock:
            d = self.domain(domain)
            (record,) = self._existing(d.cases, [case_id])
            if isinstance(record, RawRecord):
                raise ValueError(f"case {case_id!r} is a raw record")
            doc = record.doc(b"")
            old = (doc.get("indices") or {}).get(identifier) or {}
            if referenced_id is None:
                case_type = case_type or old.get("case_type") or ""
                relationship = old.get("relationship") or relationship
                index = Index(identifier, "", case_type, relationship)
            else:
                target = d.cases.get(referenced_id)
                if not case_type and target is not None and target.terms[0]:
                    case_type = target.terms[0]
                index = Index(identifier, referenced_id, case_type, relationship)
            self._follow_up(d, doc, {}, [index])
            self._note_indices(d, case_id, {identifier: old} if old else {}, doc["indices"])

    @staticmethod
    def _note_indices(d: Domain, case_id: str, before: dict, after: dict) -> None:
        """Remember the indices a save dropped, forget the ones it (re)set."""
        removed = d.removed_indices.setdefault(case_id, {})
        for identifier, ref in before.items():
            if identifier not in after and isinstance(ref, dict):
                removed[identifier] = (str(ref.get("case_type") or ""),
                                       str(ref.get("relationship") or "child"))
        for identifier in after:
            removed.pop(identifier, None)
        if not removed:
            del d.removed_indices[case_id]

    def set_archived(self, domain: str, form_ids: Iterable[str], archived: bool) -> None:
        """Archive or restore forms, as HQ does: the form is re-indexed, then every case it
        touched is rebuilt from its remaining non-archived forms and re-indexed too (see
        rebuild.py; a case left without forms disappears, and comes back on restore). A form
        already in that state is left alone (`archive()` returns early when it is archived)."""
        with self.lock:
            d = self.domain(domain)
            for record in self._existing(d.forms, form_ids):
                if record.archived == archived or isinstance(record, RawRecord):
                    continue
                doc = record.doc(b"")
                when = self.tick()
                doc["archived"] = archived
                doc["server_modified_on"] = fmt_us(when)
                self._save(d.forms, doc, self.tick())
                for case_id in record.case_ids:
                    self._rebuild_case(d, case_id)

    def _rebuild_case(self, d: Domain, case_id: str) -> None:
        """`hard_rebuild_case`: replay the case's non-archived forms (by received_on, then the
        order they were indexed); a fresh server_date_modified, and a re-index."""
        current = d.cases.get(case_id)
        if isinstance(current, RawRecord):
            return
        base = current.doc(b"") if current is not None else d.rebuilt_away.get(case_id)
        if base is None:  # deleted outright (or never indexed): nothing to rebuild
            return
        touching = d.forms.touching(case_id)
        position = {form_id: n for n, form_id in enumerate(touching)}
        live = [f for f in (d.forms.get(i) for i in touching)
                if f is not None and not f.archived and not isinstance(f, RawRecord)]
        live.sort(key=lambda f: (MISSING if f.keys[0] is None else f.keys[0], position[f.id]))
        doc = rebuild.replay(base, [f.doc(b"") for f in live])
        if doc is None:  # no forms left: HQ marks it deleted, and the case pillow unindexes it
            d.rebuilt_away[case_id] = base
            d.cases.remove(case_id)
            return
        d.rebuilt_away.pop(case_id, None)
        self._note_indices(d, case_id, base.get("indices") or {}, doc.get("indices") or {})
        doc["server_date_modified"] = fmt_us(self.tick())
        if doc["date_modified"] is None:
            doc["date_modified"] = doc["server_date_modified"]
        self._save(d.cases, doc, self.tick())

    def touch_cases(self, domain: str, case_ids: Iterable[str]) -> None:
        """Re-save cases without a form (a rebuild, a data-cleaning job): the same content with
        a fresh server_date_modified, re-indexed with a fresh indexed_on."""
        with self.lock:
            d = self.domain(domain)
            for record in self._existing(d.cases, list(case_ids)):
                if isinstance(record, RawRecord):
                    continue
                doc = record.doc(b"")
                doc["server_date_modified"] = fmt_us(self.tick())
                self._save(d.cases, doc, self.tick())

    def deprecate_case_type(self, domain: str, case_type: str, deprecated: bool = True) -> None:
        """Mark a case type deprecated (or not) in the project's data dictionary."""
        with self.lock:
            types = self.domain(domain).deprecated_types
            if deprecated:
                types.add(case_type)
            else:
                types.discard(case_type)

    # --- re-indexing while a read is under way ---------------------------------------------------

    def reindex_during_reads(self, resource: str, after_requests: int = 1, count: int = 1,
                             domain: str | None = None, seed: int = 0) -> None:
        """Once `after_requests` more v0.5 list requests for `resource` ("case" or "form") have
        been answered, re-index `count` of the records the last one served (drawn with a seeded
        rng): forms are archived (which re-indexes them and rebuilds their cases), cases are
        touched. They leave the millisecond they were in, so a reader paging by offset finds
        the rest of the list shifted under it. The ids moved accumulate in `reindexed_ids`."""
        if resource not in ("case", "form"):
            raise ValueError(f"resource must be 'case' or 'form', not {resource!r}")
        if int(after_requests) < 1 or int(count) < 1:
            raise ValueError("after_requests and count must be at least 1")
        with self.lock:
            if domain is not None:
                self.domain(domain)  # validates the name
            self.triggers.append(ReindexTrigger(resource, domain, int(after_requests), int(count),
                                                random.Random(f"reindex:{seed}")))

    def after_v05_list(self, domain: str, resource: str, page: list[Record]) -> None:
        """Called (under the lock) once a v0.5 list page has been chosen: fire due triggers."""
        with self.lock:
            due = []
            for trigger in list(self.triggers):
                if trigger.resource != resource or trigger.domain not in (None, domain):
                    continue
                trigger.remaining -= 1
                if trigger.remaining <= 0:
                    self.triggers.remove(trigger)
                    due.append(trigger)
            for trigger in due:
                self._reindex_some(domain, trigger, page)

    def _reindex_some(self, domain: str, trigger: ReindexTrigger, page: list[Record]) -> None:
        coll = self.domain(domain).collection(trigger.resource)
        candidates = [r for r in page if type(r) is Record and coll.get(r.id) is r
                      and not (trigger.resource == "form" and r.archived)]
        picked = [r.id for r in trigger.rng.sample(candidates,
                                                   min(trigger.count, len(candidates)))]
        if trigger.resource == "form":
            self.set_archived(domain, picked, True)
        else:
            self.touch_cases(domain, picked)
        self.reindexed_ids.extend(picked)

    def delete(self, domain: str, resource: str, ids: Iterable[str]) -> None:
        with self.lock:
            d = self.domain(domain)
            coll = d.collection(resource)
            for record in self._existing(coll, list(ids)):
                coll.remove(record.id)
                d.rebuilt_away.pop(record.id, None)

    def add_ties(self, domain: str, resource: str, n: int,
                 indexed_on: datetime | None = None) -> list[str]:
        """`n` new documents sharing one `indexed_on` (a bulk re-index, say)."""
        with self.lock:
            moment = to_us(indexed_on) if indexed_on is not None else self.tick()
            ids = self._add_at(domain, resource, n, lambda i: moment)
            self.clock_us = max(self.clock_us, moment)
            return ids

    def add_late(self, domain: str, resource: str, n: int, lag: timedelta) -> list[str]:
        """`n` new documents whose `indexed_on` is `lag` older than the newest one: the index
        made them visible late, behind documents a reader may already have paged past."""
        with self.lock:
            coll = self.domain(domain).collection(resource)
            newest = coll.newest_ix() * US_PER_MS if len(coll) else self.clock_us
            base = newest - lag // timedelta(microseconds=1)
            return self._add_at(domain, resource, n, lambda i: base - i)

    def _add_at(self, domain: str, resource: str, n: int,
                ix_of: Callable[[int], int]) -> list[str]:
        if resource == "case":
            return self.add_cases(domain, n, indexed_on_us=ix_of)
        d = self.domain(domain)
        f = d.factory
        d.collection(resource)  # validates the name
        ids = []
        for i in range(n):
            received = self.tick()
            form = f.survey(f.field_worker(), received - self._lag(f), received)
            self._save(d.forms, form, ix_of(i))
            ids.append(form["id"])
        return ids

    def add_raw(self, domain: str, resource: str, doc: object, record_id: str) -> str:
        """Serve `doc` verbatim under `record_id`, indexed at its `indexed_on` (or now)."""
        with self.lock:
            coll = self.domain(domain).collection(resource)
            stamp = doc.get("indexed_on") if isinstance(doc, dict) else None
            ms = parse_ms(stamp)
            if ms is None:
                ms = self.tick() // US_PER_MS
            coll.put(RawRecord(resource, doc, record_id, self._next_seq(), ms))
            return record_id

    def add_record(self, domain: str, resource: str, doc: dict) -> str:
        """Index a well-formed case or form document (its own `indexed_on`, or now): unlike
        `add_raw`, it takes part in every filter and sort, like a generated one."""
        with self.lock:
            coll = self.domain(domain).collection(resource)
            doc = dict(doc)
            doc.pop("resource_uri", None)
            if parse_ms(doc.get("indexed_on")) is None:
                doc["indexed_on"] = fmt_us(self.tick())
            coll.put(Record(resource, doc, self._next_seq()))
            return doc["id"]

    @staticmethod
    def _lag(f: DocFactory) -> int:
        return ri(f.rng, 2 * US_PER_SECOND, 600 * US_PER_SECOND)

    def snapshot(self, domain: str, resource: str) -> dict[str, dict]:
        with self.lock:
            coll = self.domain(domain).collection(resource)
            prefix = f"/a/{domain}/api/v0.5/{resource}/".encode()
            records = list(coll.ordered)
        return {r.id: r.doc(prefix) for r in records}

    # --- reference data (directory.py) -------------------------------------------------------

    def change_directory(self, domain: str, change: Callable[..., Any], *args: Any,
                         **kwargs: Any) -> Any:
        """Run `change(directory, now, *args, **kwargs)` under the lock, `now` a fresh tick of
        the clock (HQ stamps `last_modified` as it saves)."""
        with self.lock:
            return change(self.domain(domain).directory, self.tick(), *args, **kwargs)

    def next_location_pk(self) -> int:
        with self.lock:
            self.location_pk += 1
            return self.location_pk

    def stats(self) -> dict:
        with self.lock:
            return {name: {"cases": len(d.cases), "forms": len(d.forms),
                           "archived_forms": sum(r.archived for r in d.forms.ordered),
                           "closed_cases": sum(r.terms[4] for r in d.cases.ordered),
                           "apps": len(d.apps),
                           "deprecated_case_types": sorted(d.deprecated_types),
                           **_directory_stats(d.directory)}
                    for name, d in self.domains.items()}


def _directory_stats(d: "directory.Directory") -> dict:
    workers = [w for w in d.workers.values() if not w.deleted]
    return {"mobile_workers": sum(w.is_active for w in workers),
            "inactive_mobile_workers": sum(not w.is_active for w in workers),
            "web_users": sum(not u.removed for u in d.web_users.values()),
            "groups": sum(not g.deleted for g in d.groups.values()),
            "locations": sum(not loc.is_archived for loc in d.locations.values()),
            "archived_locations": sum(loc.is_archived for loc in d.locations.values()),
            "location_types": len(d.location_types)}

