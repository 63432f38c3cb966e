"""The simulator's search index: per domain, cases and forms kept in index order, a clock, and
the changes field workers (and HQ maintenance) make between syncs.

Every write re-indexes a document: it gets a fresh `indexed_on` from the clock and a fresh
insertion sequence, exactly as HQ's pillows re-send a changed document to Elasticsearch.
"""

from __future__ import annotations

import bisect
import random
import threading
from datetime import datetime, timedelta
from typing import Callable, Iterable

from etl.simulator import directory
from etl.simulator.dataset import Dataset
from etl.simulator.factory import DocFactory, Index
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


def _v2_key(r: Record) -> tuple[int, str]:
    return r.ix, r.id


class Collection:
    """One domain's cases or forms, in index order (indexed_on ms, then write order)."""

    def __init__(self, kind: str, records: Iterable[Record]):
        self.kind = kind
        self.ordered: list[Record] = sorted(records, key=_ix_key)
        self.by_id: dict[str, Record] = {r.id: r for r in self.ordered}
        self._views: dict[object, list[Record]] = {}

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

    def remove(self, record_id: str) -> Record | None:
        record = self._unlink(record_id)
        self._views.clear()
        return record

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
            getters = [(SORT_FIELDS[self.kind][name], desc) for name, desc in sort]

            def key(r: Record) -> tuple:
                values = []
                for get, desc in getters:
                    value = get(r)
                    value = MISSING if value is None else value
                    values.append(-value if desc else value)
                values.append(r.seq)
                return tuple(values)

            cached = self._views[sort] = sorted(self.ordered, key=key)
        return cached

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
        self.users = directory.mobile_workers(dataset.factory)
        self.groups = directory.case_sharing_groups(dataset.factory)

    def collection(self, resource: str) -> Collection:
        if resource == "case":
            return self.cases
        if resource == "form":
            return self.forms
        raise ValueError(f"resource must be 'case' or 'form', not {resource!r}")


class Store:
    """All domains, the clock, and thread-safe changes."""

    def __init__(self, datasets: Iterable[Dataset], seed: int = 0):
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
        self.rng = random.Random(f"clock:{seed}")

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
                  indexed_on_us: Callable[[int], int] | None = None) -> list[str]:
        """New cases, each with the registration form that created it."""
        with self.lock:
            d = self.domain(domain)
            f = d.factory
            hosts = {t: [r.id for r in d.cases.ordered if r.terms[0] == t and not r.terms[4]]
                     for t in ("household", "patient")}
            ids = []
            for i in range(n):
                user = f.field_worker()
                received = self.tick()
                indices: list[Index] = []
                if case_type == "patient" and hosts["household"]:
                    indices = [Index("parent", pick(f.rng, hosts["household"]), "household")]
                elif case_type == "contact" and hosts["patient"]:
                    indices = [Index("host", pick(f.rng, hosts["patient"]), "patient",
                                     "extension")]
                form, docs = f.registration(case_type, user, received - self._lag(f), received,
                                            indices)
                self._save(d.forms, form, self.tick())
                case_ix = indexed_on_us(i) if indexed_on_us else self.tick()
                for doc in docs:
                    self._save(d.cases, doc, case_ix)
                ids.append(docs[0]["case_id"])
            return ids

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

    def add_forms(self, domain: str, n: int) -> list[str]:
        """New submissions: mostly follow-ups of open cases (which re-index them), some surveys."""
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

    def set_archived(self, domain: str, form_ids: Iterable[str], archived: bool) -> None:
        """Archive or restore forms: the form is re-indexed (its cases are left as they are)."""
        with self.lock:
            d = self.domain(domain)
            for record in self._existing(d.forms, form_ids):
                doc = record.doc(b"")
                when = self.tick()
                doc["archived"] = archived
                doc["server_modified_on"] = fmt_us(when)
                self._save(d.forms, doc, self.tick())

    def delete(self, domain: str, resource: str, ids: Iterable[str]) -> None:
        with self.lock:
            coll = self.domain(domain).collection(resource)
            for record in self._existing(coll, list(ids)):
                coll.remove(record.id)

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

    @staticmethod
    def _lag(f: DocFactory) -> int:
        return ri(f.rng, 2 * US_PER_SECOND, 600 * US_PER_SECOND)

    def snapshot(self, domain: str, resource: str) -> dict[str, dict]:
        with self.lock:
            coll = self.domain(domain).collection(resource)
            prefix = f"/a/{domain}/api/v0.5/{resource}/".encode()
            records = list(coll.ordered)
        return {r.id: r.doc(prefix) for r in records}

    def stats(self) -> dict:
        with self.lock:
            return {name: {"cases": len(d.cases), "forms": len(d.forms),
                           "archived_forms": sum(r.archived for r in d.forms.ordered),
                           "closed_cases": sum(r.terms[4] for r in d.cases.ordered),
                           "apps": len(d.apps)}
                    for name, d in self.domains.items()}

