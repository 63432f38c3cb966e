"""A seeded, deterministic project: households, their members (patients) and contacts, the
forms that registered and followed them up, and the apps those forms belong to.

Generation works cluster by cluster (one household and everyone registered with it), so each
case is finished, serialized and dropped as a dict before the next cluster starts: memory holds
bytes, not trees. Records are then ordered the way the search index would hold them.
"""

from __future__ import annotations

import gc
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from etl.simulator import appdef, directory
from etl.simulator.factory import DocFactory, Index, User
from etl.simulator.hqtime import US_PER_DAY, US_PER_MS, US_PER_SECOND, fmt_us, to_us
from etl.simulator.records import Record
from etl.simulator.vocab import pick, ri

_HOUR = 3600 * US_PER_SECOND
MEAN_FORM_GAP = 40 * US_PER_SECOND  # average time between two submissions in the project


@dataclass
class _Slot:
    role: str  # "household", "member", "patient", "orphan" or "contact"
    follow_ups: int = 0
    host: int = -1  # contacts: position of their patient within the cluster
    doc: dict | None = None


@dataclass
class _Event:
    received: int
    order: int
    kind: str  # "hh_reg", "pt_reg", "ct_reg", "follow_up"
    slot: int = -1
    last: bool = False  # the case's last follow-up (may close it)


@dataclass
class Dataset:
    """Generated records for one domain, ready for `HQSimulator(datasets=[...])`."""

    domain: str
    seed: int
    awkward: bool
    cases: list[Record]  # ordered by (indexed_on ms, seq)
    forms: list[Record]
    apps: list[dict]
    factory: DocFactory = field(repr=False)
    last_indexed_us: int = 0
    # Mobile workers, web users, groups, locations: a stream of its own (directory.py).
    directory: directory.Directory | None = field(default=None, repr=False)

    @classmethod
    def generate(cls, domain: str = "demo", seed: int = 0, n_cases: int = 300,
                 n_forms: int | None = None, start: datetime = datetime(2024, 1, 1),
                 awkward: bool = False) -> "Dataset":
        """Deterministic: the same arguments give byte-identical records."""
        rng = random.Random(f"commcare-sim:{domain}:{seed}")
        factory = DocFactory(domain, rng, awkward)
        gen = _Generator(factory, to_us(start))
        # Millions of short-lived containers and no cycles: the cyclic GC would only rescan the
        # growing set of kept records, over and over (a third of the time at 100k records).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            gen.run(n_cases, n_forms)
        finally:
            if gc_was_enabled:
                gc.enable()
        return cls(domain=domain, seed=seed, awkward=awkward, cases=gen.finish(gen.cases),
                   forms=gen.finish(gen.forms),
                   apps=[appdef.application_json(a) for a in appdef.APPS], factory=factory,
                   last_indexed_us=gen.last_ix,
                   directory=directory.generate(factory, seed, to_us(start)))

    def snapshot(self, resource: str) -> dict[str, dict]:
        """id -> parsed v0.5 JSON (resource_uri in the `/api/v0.5/` style)."""
        records = self.cases if resource == "case" else self.forms
        prefix = f"/a/{self.domain}/api/v0.5/{resource}/".encode()
        return {r.id: r.doc(prefix) for r in records}


class _Generator:
    def __init__(self, factory: DocFactory, start_us: int):
        self.f = factory
        self.rng = factory.rng
        self.start = start_us
        self.cases: list[tuple[int, int, Record]] = []  # (indexed_on µs, order, record)
        self.forms: list[tuple[int, int, Record]] = []
        self.order = 0
        self.last_ix = start_us
        self.archived_forms = self.edited_forms = 0

    # --- plan ----------------------------------------------------------------------------------

    def _plan(self, n_cases: int) -> list[list[_Slot]]:
        rng = self.rng
        clusters: list[list[_Slot]] = []
        left = n_cases
        while left > 0:
            if rng.random() < 0.08:  # a patient registered on their own: no indices at all
                clusters.append([_Slot("orphan")])
                left -= 1
                continue
            cluster = [_Slot("household")]
            left -= 1
            roll = rng.random()
            members = min(left, 0 if roll < 0.2 else 1 if roll < 0.5 else 2 if roll < 0.75
                          else 3 if roll < 0.9 else 4)
            cluster += [_Slot("member") for _ in range(members)]
            left -= members
            if left > 0 and rng.random() < 0.4:
                cluster.append(_Slot("patient"))
                left -= 1
            for host in range(1, len(cluster)):
                if left > 0 and rng.random() < 0.35:
                    cluster.append(_Slot("contact", host=host))
                    left -= 1
            clusters.append(cluster)
        return clusters

    def run(self, n_cases: int, n_forms: int | None) -> None:
        rng = self.rng
        clusters = self._plan(n_cases)
        registrations = sum(1 + sum(s.role in ("patient", "contact") for s in c[1:])
                            for c in clusters)
        if n_forms is None:
            surveys = max(1, n_cases // 40)
            follow_ups = round(0.7 * n_cases)
        else:
            spare = n_forms - registrations
            if spare < 0:
                raise ValueError(f"n_forms={n_forms} is fewer than the {registrations} "
                                 f"registration forms that {n_cases} cases need")
            surveys = spare // 20
            follow_ups = spare - surveys
        slots = [s for c in clusters for s in c]
        for _ in range(follow_ups):
            slots[rng.randrange(len(slots))].follow_ups += 1
        total_forms = registrations + follow_ups + surveys
        mean_gap = MEAN_FORM_GAP * total_forms / max(1, len(clusters))
        first = t = self.start + 3 * _HOUR  # phones lag up to 2.5h: nothing before `start`
        for cluster in clusters:
            t += int(rng.expovariate(1.0) * mean_gap) + US_PER_SECOND
            self._cluster(cluster, t)
        end = max(t, self.last_ix)
        for _ in range(surveys):
            received = ri(rng, first, end)
            user = pick(rng, self.f.users)
            self._add_form(self.f.survey(user, received - self._lag(), received), received,
                           archivable=True)

    # --- one cluster -------------------------------------------------------------------------

    def _lag(self) -> int:
        """Phone time before the server received the form (sync delay)."""
        if self.rng.random() < 0.02:
            return -ri(self.rng, 1, 5) * _HOUR  # a phone clock running ahead
        return ri(self.rng, 2 * US_PER_SECOND, 2 * _HOUR)

    def _cluster(self, cluster: list[_Slot], t: int) -> None:
        rng, f = self.rng, self.f
        events: list[_Event] = [_Event(t, 0, "hh_reg" if cluster[0].role == "household"
                                       else "pt_reg", 0)]
        for pos, slot in enumerate(cluster):
            if slot.role == "patient":  # registered on the same phone sync as the household
                events.append(_Event(t + pos * 150, pos, "pt_reg", pos))
            elif slot.role == "contact":
                events.append(_Event(t + ri(rng, 1, 72) * _HOUR + pos, pos, "ct_reg", pos))
        registered = {e.slot: e.received for e in events}
        for pos, slot in enumerate(cluster):
            born = registered.get(pos, t)
            offsets = sorted(ri(rng, _HOUR, 45 * US_PER_DAY) for _ in range(slot.follow_ups))
            for n, offset in enumerate(offsets):
                events.append(_Event(born + offset, 1000 + pos, "follow_up", pos,
                                     last=n == len(offsets) - 1))
        events.sort(key=lambda e: (e.received, e.order))
        worker = f.field_worker()
        owner = pick(rng, f.owners) if rng.random() < 0.3 else ""
        batch_ix = None
        for event in events:
            user = worker if rng.random() < 0.85 else pick(rng, f.users)
            received = event.received
            phone = received - self._lag()
            if event.kind == "hh_reg" and cluster[0].role == "household":
                members = [([Index("parent", "", "household")], None)
                           for s in cluster if s.role == "member"]
                form, docs = f.registration("household", user, phone, received, owner_id=owner,
                                            members=members)
                for slot, doc in zip([s for s in cluster if s.role in ("household", "member")],
                                     docs):
                    slot.doc = doc
                batch_ix = self._add_form(form, received)
                self._touch(docs, batch_ix)
            elif event.kind == "pt_reg":
                slot = cluster[event.slot]
                indices = [] if slot.role == "orphan" else [
                    Index("parent", cluster[0].doc["case_id"], "household")]
                form, docs = f.registration("patient", user, phone, received, indices, owner)
                slot.doc = docs[0]
                # The same sync as the household: indexed in the same batch (same millisecond).
                ix = self._add_form(form, received, batch_ix + event.slot if batch_ix else None)
                self._touch(docs, ix)
            elif event.kind == "ct_reg":
                slot = cluster[event.slot]
                host = cluster[slot.host].doc
                indices = [Index("host", host["case_id"], "patient", "extension")]
                if rng.random() < 0.4:  # two indices: the host patient and the household
                    indices.append(Index("household", cluster[0].doc["case_id"], "household"))
                form, docs = f.registration("contact", user, phone, received, indices)
                slot.doc = docs[0]
                self._touch(docs, self._add_form(form, received))
            else:
                self._follow_up(cluster, event, user, phone, received)
        for slot in cluster:
            self._add_case(slot.doc)
            slot.doc = None  # serialized: let the dict go

    def _follow_up(self, cluster: list[_Slot], event: _Event, user: User, phone: int,
                   received: int) -> None:
        rng, f = self.rng, self.f
        slot = cluster[event.slot]
        doc = slot.doc
        case_type = doc["properties"]["case_type"]
        update = f.visit_properties(doc, phone)
        closing = (event.last and not doc["closed"]
                   and rng.random() < (0.03 if case_type == "household" else 0.2))
        if closing and case_type == "patient":
            update["outcome"] = "discharged"
        elif closing and case_type == "contact":
            update["follow_up_status"] = "completed"
        index: list[Index] = []
        if case_type == "contact" and "household" not in doc["indices"] and \
                cluster[0].role == "household" and rng.random() < 0.2:
            index = [Index("household", cluster[0].doc["case_id"], "household")]
        elif case_type == "patient" and "parent" in doc["indices"] and rng.random() < 0.1:
            parent = doc["indices"]["parent"]
            index = [Index("parent", parent["case_id"], parent["case_type"])]  # re-asserted
        docs, updates, closes, indices = [doc], [update], [closing], [index]
        if case_type == "patient" and slot.role != "orphan" and rng.random() < 0.25:
            # The visit also updates the household: `case` becomes a list of two blocks.
            docs.append(cluster[0].doc)
            updates.append({"last_member_visit": fmt_us(phone)[:10]})
            closes.append(False)
            indices.append([])
        form = f.follow_up(docs, user, phone, received, updates, closes, indices)
        self._touch(docs, self._add_form(form, received, archivable=True))

    def _touch(self, docs: list[dict], form_ix: int) -> None:
        """The cases a form changed are (re)indexed together, shortly after the form."""
        case_ix = form_ix + ri(self.rng, 20, 1_500) * US_PER_MS
        for n, doc in enumerate(docs):
            doc["_ix"] = case_ix + n

    def _add_case(self, doc: dict) -> None:
        ix = doc.pop("_ix")
        doc["indexed_on"] = fmt_us(ix)
        self.order += 1
        self.cases.append((ix, self.order, Record("case", doc, 0)))
        self.last_ix = max(self.last_ix, ix)

    def _add_form(self, doc: dict, received: int, ix: int | None = None,
                  archivable: bool = False) -> int:
        rng = self.rng
        if ix is None:
            ix = received + ri(rng, 30, 900) * US_PER_MS
        roll = rng.random()
        if archivable and self.archived_forms == 0:
            roll = 0.0  # every dataset has an archived form...
        elif archivable and self.edited_forms == 0:
            roll = 0.025  # ...and an edited one
        if archivable and roll < 0.02:
            self.archived_forms += 1
            # Archived some time later: re-indexed then, and hidden unless include_archived.
            ix += ri(rng, 1, 240) * _HOUR
            doc["archived"] = True
            doc["server_modified_on"] = fmt_us(ix - 50 * US_PER_MS)
        elif archivable and roll < 0.03:
            self.edited_forms += 1
            edited = received + ri(rng, 1, 48) * _HOUR
            ix = edited + ri(rng, 30, 900) * US_PER_MS
            doc["edited_on"] = doc["server_modified_on"] = fmt_us(edited)
            doc["edited_by_user_id"] = self.f.users[-1].id
            doc["metadata"]["deprecatedID"] = self.f.uuid()
        doc["indexed_on"] = fmt_us(ix)
        self.order += 1
        self.forms.append((ix, self.order, Record("form", doc, 0)))
        self.last_ix = max(self.last_ix, ix)
        return ix

    @staticmethod
    def finish(entries: list[tuple[int, int, Any]]) -> list[Record]:
        """Order as the index would (indexed_on, then write order) and number them."""
        entries.sort(key=lambda e: (e[0], e[1]))
        records = []
        for seq, (_, _, record) in enumerate(entries):
            record.seq = seq
            records.append(record)
        return records
