"""Concurrent indexed_on windows and the request gate: a long read split into windows read side
by side against a slow HQ, each window with its own checkpoint; requests in flight and per
second kept within MAX_CONCURRENT_REQUESTS and MAX_REQUESTS_PER_SECOND; 429s answered with
fewer requests in flight."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

import pytest

from etl import sync
from etl.dates import parse_hq_datetime
from etl.errors import HQError
from etl.extract.throttle import RequestGate
from etl.extract.windows import Window, _join, _Range, in_background
from etl.sync import backfill_key, make_client, run_backfill, run_sync, sync_stream
from tests.conftest import make_settings
from tests.matching import assert_cases_match, assert_forms_match


SLOW = sync.WINDOW_LATENCY + 0.35  # seconds per request


def _list_requests(sim, resource: str) -> list:
    return [r for r in sim.requests if r.resource == resource]


def _most_at_once(requests) -> int:
    """The most requests the simulator was answering at one moment."""
    events = sorted([(r.at, 1) for r in requests] + [(r.at + r.seconds, -1) for r in requests],
                    key=lambda e: (e[0], e[1]))
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def _checkpoints(db, schema: str) -> dict[tuple[str, str], dict]:
    rows = db.execute(f'select stream, partition, cursor from "{schema}".sync_checkpoints')
    return {(stream, partition): cursor for stream, partition, cursor in rows.fetchall()}


@pytest.fixture
def slow_sim(sim_factory):
    # Slow enough for windows to pay (HQ slower than WINDOW_LATENCY and than loading a page of
    # 100), quick enough for a test.
    return sim_factory(n_cases=1500, latency=SLOW)


def test_a_long_read_of_a_slow_hq_goes_in_windows_side_by_side(slow_sim, schema, pg_url,
                                                               warehouse, db):
    sim = slow_sim
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=100,
                             form_page_size=100, max_concurrent_requests=3,
                             streams=["cases", "forms"])
    sim.clear_requests()
    reports = run_sync(settings, warehouse)
    assert [r.status for r in reports] == ["ok", "ok"], [r.error for r in reports]
    assert_cases_match(db, schema, sim)
    assert_forms_match(db, schema, sim)
    for resource in ("case", "form"):
        made = _list_requests(sim, resource)
        repeats = [q for q, n in Counter(r.query for r in made).items() if n > 1]
        assert not repeats, f"repeated requests: {repeats[:2]}"
        assert 1 < _most_at_once(made) <= 3  # side by side, never more than allowed
    runs = db.execute(f'select stream, partition, status from "{schema}".sync_runs').fetchall()
    windows = [r for r in runs if r[1].startswith("window:")]
    assert len({r[1] for r in windows if r[0] == "cases"}) >= 2
    assert all(r[2] == "ok" for r in runs)
    # Done: one checkpoint per stream, at the end, without the plan; the windows' are gone.
    saved = _checkpoints(db, schema)
    assert set(saved) == {("cases", ""), ("forms", "")}
    assert all("windows" not in c and c["indexed_on"] for c in saved.values())
    newest = max(r["indexed_on"] for r in sim.snapshot("demo", "case").values())
    assert saved[("cases", "")]["indexed_on"][:23] == newest[:23]
    # The stream's own summary counts every window's records.
    assert reports[0].records >= 1500


def test_a_window_that_fails_is_resumed_from_its_own_checkpoint(slow_sim, schema, pg_url,
                                                                warehouse, db, caplog):
    sim = slow_sim
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=100,
                             max_concurrent_requests=3, retry_max_seconds=0.3)
    sim.faults.add("500", count=10_000, resource="case", after=18)
    with pytest.raises(HQError):
        sync_stream(settings, warehouse, make_client(settings), "demo", "cases")
    probes = [r for r in sim.requests if "limit=1&" in r.query + "&"]
    assert len(probes) < 18 - 4  # the plan was made, and windows began loading
    # Every window failed (HQ kept answering 500): one is raised, the others are said.
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len([m for m in logged if "cases[window:" in m and "failed" in m]) >= 1
    saved = _checkpoints(db, schema)
    plan = saved[("cases", "")]["windows"]  # the plan outlives the failed run
    assert len(plan) >= 2
    assert any(p.startswith("window:") for _, p in saved)
    sim.faults.clear()
    sim.clear_requests()
    report = sync_stream(settings, warehouse, make_client(settings), "demo", "cases")
    assert report.status == "ok"
    assert_cases_match(db, schema, sim)
    # Resumed, not begun again: the windows read on from their checkpoints.
    assert len(_list_requests(sim, "case")) < 1500 // 100
    assert set(_checkpoints(db, schema)) == {("cases", "")}


def test_a_fast_hq_or_one_request_at_a_time_reads_in_turn(sim_factory, schema, pg_url,
                                                          warehouse, db):
    sim = sim_factory(n_cases=1500)  # answers in milliseconds: the loads take the time
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=100)
    sim.clear_requests()
    assert sync_stream(settings, warehouse, make_client(settings), "demo", "cases").status == "ok"
    assert _most_at_once(_list_requests(sim, "case")) == 1
    assert not [r for r in db.execute(f'select partition from "{schema}".sync_runs').fetchall()
                if r[0]]

    db.execute(f'delete from "{schema}".sync_checkpoints')  # another server, read afresh
    slow = sim_factory(n_cases=600, latency=SLOW)
    one = make_settings(slow.base_url, schema, pg_url, case_page_size=100,
                        max_concurrent_requests=1)
    slow.clear_requests()
    assert sync_stream(one, warehouse, make_client(one), "demo", "cases").status == "ok"
    assert _most_at_once(_list_requests(slow, "case")) == 1


def _slow_loads(monkeypatch, seconds: float, pages: int) -> list:
    """The first `pages` page loads each take `seconds` longer (as making the BI tables a
    first page needs does); returns the list of loads seen (their partitions, and in `.ids`
    their case ids)."""
    from etl.load.postgres import Loader

    class Seen(list):
        ids: list[set[str]]  # the case ids each load held

    real, seen = Loader.load_page, Seen()
    seen.ids = []

    def load_page(self, **kwargs):
        seen.append(kwargs["partition"])
        seen.ids.append({row.case_id for row in kwargs["batch"].rows.get("cases", [])})
        if len(seen) <= pages:
            time.sleep(seconds)
        return real(self, **kwargs)

    monkeypatch.setattr(Loader, "load_page", load_page)
    return seen


def test_a_first_page_slow_to_load_does_not_keep_windows_from_a_slow_hq(
        slow_sim, schema, pg_url, warehouse, db, monkeypatch, caplog):
    sim = slow_sim
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=100,
                             max_concurrent_requests=3)
    loads = _slow_loads(monkeypatch, SLOW + 0.4, pages=1)
    sim.clear_requests()
    caplog.set_level("INFO", logger="etl.sync")
    assert sync_stream(settings, warehouse, make_client(settings), "demo", "cases").status == "ok"
    assert_cases_match(db, schema, sim)
    # Judged on the second page; the third, asked for while the second loaded, is loaded in
    # turn too; then the windows side by side.
    assert loads[:3] == ["", "", ""] and all(p.startswith("window:") for p in loads[3:])
    assert len(loads) > 4
    assert 1 < _most_at_once(_list_requests(sim, "case")) <= 3
    # The plan's first request (the newest case) and the second page went while the first
    # page loaded, before the third page was asked for; the newest case was asked once only.
    requests = sorted(_list_requests(sim, "case"), key=lambda r: r.at)
    newest = [n for n, r in enumerate(requests)
              if parse_qs(r.query).get("order_by") == ["-indexed_on"]]
    assert newest in ([1], [2]), [(r.query, r.at) for r in requests[:4]]
    planned = [r.getMessage() for r in caplog.records if "reading them in" in r.getMessage()]
    assert len(planned) == 1
    # What is left to read: HQ's count less the distinct cases of the three pages read (each
    # re-read the last millisecond of the one before).
    total = db.execute(f'select count(*) from "{schema}".cases').fetchone()[0]
    read = loads.ids[0] | loads.ids[1] | loads.ids[2]
    assert len(read) < len(loads.ids[0]) + len(loads.ids[1]) + len(loads.ids[2])
    assert f"about {total - len(read)} more records" in planned[0], planned


def test_loads_slower_than_a_slow_hq_read_in_turn_and_say_why(sim_factory, schema, pg_url,
                                                              warehouse, db, monkeypatch,
                                                              caplog):
    sim = sim_factory(n_cases=900, latency=SLOW)
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=100,
                             max_concurrent_requests=3)
    # Every page judged loads about as slowly as HQ answers (the later ones, judged by nobody,
    # at their own speed).
    loads = _slow_loads(monkeypatch, SLOW, pages=sync.JUDGED_PAGES)
    caplog.set_level("INFO", logger="etl.sync")
    sim.clear_requests()
    assert sync_stream(settings, warehouse, make_client(settings), "demo", "cases").status == "ok"
    assert_cases_match(db, schema, sim)
    assert set(loads) == {""}  # no window
    # At most the next page and the plan's first request (the newest case, sent early)
    # while the first page loads; one request at a time after that.
    requests = sorted(_list_requests(sim, "case"), key=lambda r: r.at)
    assert _most_at_once(requests) <= 2 and _most_at_once(requests[3:]) == 1
    said = [r.getMessage() for r in caplog.records if "one page at a time" in r.getMessage()]
    assert len(said) == 1 and "HQ answered in" in said[0], said
    assert f"the fastest of {sync.JUDGED_PAGES} pages" in said[0], said


def test_the_pages_judged_are_fetched_while_the_one_before_loads(sim_factory, schema, pg_url,
                                                                 warehouse, db, monkeypatch):
    # Judging the first pages costs no more than reading them in turn: page k+1 is asked for
    # while page k loads (here every judged page loads as slowly as HQ answers: no windows).
    from etl.load.postgres import Loader

    sim = sim_factory(n_cases=900, latency=SLOW)
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=100,
                             max_concurrent_requests=3)
    real, loads = Loader.load_page, []

    def load_page(self, **kwargs):
        began = time.time()
        if len(loads) < sync.JUDGED_PAGES:
            time.sleep(SLOW)
        try:
            return real(self, **kwargs)
        finally:
            loads.append((began, time.time()))

    monkeypatch.setattr(Loader, "load_page", load_page)
    sim.clear_requests()
    assert sync_stream(settings, warehouse, make_client(settings), "demo", "cases").status == "ok"
    assert_cases_match(db, schema, sim)
    asked = sorted(r.at for r in _list_requests(sim, "case")
                   if parse_qs(r.query).get("order_by") == ["indexed_on"])
    assert len(asked) == len(loads) > sync.JUDGED_PAGES  # no page asked for twice
    # Page k+1 was asked for as soon as page k came (before its transform), not after its load.
    early = [k for k in range(sync.JUDGED_PAGES) if asked[k] < asked[k + 1] < loads[k][1]]
    assert early == list(range(sync.JUDGED_PAGES)), (asked, loads)


def test_the_first_pages_slow_to_load_are_judged_by_the_fastest(slow_sim, schema, pg_url,
                                                                warehouse, db, monkeypatch):
    # The first two pages load slower than HQ answers (their tables are made), the third
    # does not: the fourth (asked for while the third loaded) is loaded in turn too, windows
    # from the fifth on, and no page asked for twice.
    sim = slow_sim
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=100,
                             max_concurrent_requests=3)
    loads = _slow_loads(monkeypatch, SLOW + 0.4, pages=2)
    sim.clear_requests()
    assert sync_stream(settings, warehouse, make_client(settings), "demo", "cases").status == "ok"
    assert_cases_match(db, schema, sim)
    assert loads[:4] == [""] * 4 and all(p.startswith("window:") for p in loads[4:])
    assert len(loads) > 5
    pages = Counter(r.query for r in _list_requests(sim, "case")
                    if parse_qs(r.query).get("limit") != ["1"])
    assert pages and max(pages.values()) == 1, pages.most_common(3)


@pytest.mark.parametrize("answer, load, at_once, ahead, pays", [
    (0.5, 0.14, 4, True, True),    # 4 windows of 1,000 forms, reading ahead: 0.14 s vs 0.5 s
    (0.5, 0.35, 2, False, False),  # 2 windows of 5,000 cases: 0.425 s vs 0.5 s
    (2.0, 0.35, 2, False, True),   # the same at 2 s a page: 1.18 s vs 2 s
    (0.5, 0.45, 4, True, False),   # loads nearly as slow as HQ: the loads take the time
    (0.3, 0.6, 4, True, False),    # loads slower than HQ
])
def test_windows_are_planned_only_where_they_save_a_quarter(answer, load, at_once, ahead, pays):
    assert sync.windows_pay(answer, load, at_once, ahead) is pays


def test_windows_that_cannot_read_ahead_must_beat_one_reader(sim_factory, schema, pg_url,
                                                             warehouse, db, monkeypatch, caplog):
    # 2 windows of 100 cases without reading ahead (as 2 of 5,000 cases are), loads nearly as
    # slow as HQ: one reader, fetching while it loads, is as fast, without the plan's requests.
    monkeypatch.setattr(sync, "WINDOW_RECORDS_AT_ONCE", 300)
    sim = sim_factory(n_cases=900, latency=SLOW)
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=100,
                             max_concurrent_requests=2)
    loads = _slow_loads(monkeypatch, SLOW - 0.15, pages=sync.JUDGED_PAGES)
    caplog.set_level("INFO", logger="etl.sync")
    sim.clear_requests()
    assert sync_stream(settings, warehouse, make_client(settings), "demo", "cases").status == "ok"
    assert_cases_match(db, schema, sim)
    assert set(loads) == {""}  # no window, and no request beyond the pages: the plan's first
    assert len(_list_requests(sim, "case")) == len(loads)  # is not sent early for such windows
    said = [r.getMessage() for r in caplog.records if "one page at a time" in r.getMessage()]
    assert len(said) == 1, said


def test_windows_hold_about_the_same_number_of_records_where_the_slices_do_not():
    """Records ever denser in time: 8 equal slices of it hold 1 to 15 shares each. Cuts inside
    the slices (not only between them) still give windows of about the same size."""
    from etl.extract import windows

    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    stamps = sorted(t0 + timedelta(seconds=10_000 * (n / 4000) ** 0.5) for n in range(4000))

    class NewestFirst:
        def probe(self, start, end, newest=False):
            inside = [s for s in stamps if s >= start and (end is None or s <= end)]
            return len(inside), (inside[-1] if newest else inside[0]) if inside else None

    planned = windows.plan(NewestFirst(), stamps[0], len(stamps), parts=4, min_records=200)
    counts = [len([s for s in stamps if s >= w.start and (w.end is None or s <= w.end)])
              for w in planned]
    assert len(planned) == 4 and sum(counts) == len(stamps), counts
    assert max(counts) < 1.1 * min(counts), counts  # whole slices joined: 812 to 1,250


def test_windows_cut_on_whole_milliseconds_and_the_last_is_open():
    t = datetime(2024, 1, 1, tzinfo=timezone.utc)
    ms = timedelta(milliseconds=1)
    pieces = [_Range(t + i * 10 * ms, n)
              for i, n in enumerate([50, 0, 50, 50, 10, 50, 5])]
    windows = _join(pieces, t, target=100)
    assert windows[0].start == t and windows[-1].end is None
    for before, after in zip(windows, windows[1:]):
        assert after.start.microsecond % 1000 == 0  # a whole millisecond
        assert (after.start - before.end).microseconds == 1  # nothing between, no overlap
    assert [Window.parse(w.to_json()) for w in windows] == windows


# --- the gate ---------------------------------------------------------------------------


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_gate_halves_on_429_and_grows_back_one_at_a_time():
    gate = RequestGate(8)
    with gate.request() as outcome:
        outcome.throttle(None)
    assert gate.allowed == 4 and gate.throttled == 1
    with gate.request() as outcome:
        outcome.throttle(None)
    assert gate.allowed == 2
    for _ in range(2):
        with gate.request() as outcome:
            outcome.answered = True
    assert gate.allowed == 3  # after as many successes as it allowed
    for _ in range(30):
        with gate.request() as outcome:
            outcome.answered = True
    assert gate.allowed == 8  # never above the setting


def _enters(gate: RequestGate, clock: _Clock, move_to: float) -> tuple[bool, bool]:
    """Whether a request enters the gate before, and after, the clock moves to `move_to`."""
    entered = threading.Event()

    def one():
        with gate.request() as outcome:
            entered.set()
            outcome.answered = True

    thread = threading.Thread(target=one, daemon=True)
    thread.start()
    before = entered.wait(0.3)
    clock.now = move_to
    after = entered.wait(3.0)
    thread.join(3.0)
    return before, after


def test_the_gate_spaces_starts_and_holds_everyone_for_retry_after():
    clock = _Clock()
    gate = RequestGate(4, max_per_second=2.0, clock=clock)
    with gate.request() as outcome:
        outcome.answered = True
    assert _enters(gate, clock, 0.5) == (False, True)  # 2 a second: one every half second
    clock.now = 5.0
    with gate.request() as outcome:
        outcome.throttle(10.0)  # HQ: 429, Retry-After: 10
    assert _enters(gate, clock, 15.0) == (False, True)  # nobody starts before then


def test_the_gate_never_lets_more_in_flight_than_allowed():
    gate = RequestGate(3)
    inside, most, lock = [0], [0], threading.Lock()
    release = threading.Event()

    def one():
        with gate.request() as outcome:
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            release.wait(0.2)
            with lock:
                inside[0] -= 1
            outcome.answered = True

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 3 and gate.peak_in_flight == 3


def test_a_rate_ceiling_is_never_exceeded_and_429s_are_survived(sim_factory, schema, pg_url,
                                                                warehouse, db):
    sim = sim_factory(n_cases=1500, latency=SLOW)
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=100,
                             max_concurrent_requests=4, max_requests_per_second=8.0)
    sim.faults.add("429", count=3, resource="case", after=3, retry_after=1)
    sim.clear_requests()
    client = make_client(settings)
    assert sync_stream(settings, warehouse, client, "demo", "cases").status == "ok"
    assert_cases_match(db, schema, sim)
    starts = sorted(r.at for r in _list_requests(sim, "case"))
    # In any one second, at most the ceiling (and the one that opens the next second).
    assert max(sum(1 for s in starts if a <= s < a + 1.0) for a in starts) <= 9
    assert client.gate.throttled == 3


def _backfilled(sim, db, schema: str, until: datetime) -> tuple[set, set]:
    """The ids HQ holds up to `until`, and the ids the warehouse holds."""
    wanted = {cid for cid, c in sim.snapshot("demo", "case").items()
              if parse_hq_datetime(c["indexed_on"]) <= until}
    held = {r[0] for r in db.execute(f'select case_id from "{schema}".cases').fetchall()}
    return wanted, held


def _case_stamps(sim) -> list[datetime]:
    return sorted(parse_hq_datetime(c["indexed_on"]) for c in sim.snapshot("demo", "case").values())


def test_a_long_backfill_of_a_slow_hq_goes_in_windows_and_stops_at_its_end(
        slow_sim, schema, pg_url, warehouse, db):
    sim = slow_sim
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=100,
                             max_concurrent_requests=3)
    until = _case_stamps(sim)[1100]
    sim.clear_requests()
    report = run_backfill(settings, warehouse, "cases", "demo", None, until)
    assert report.status == "ok" and report.command == "backfill"
    wanted, held = _backfilled(sim, db, schema, until)
    assert held == wanted and report.records >= len(wanted)
    made = _list_requests(sim, "case")
    assert 1 < _most_at_once(made) <= 3
    assert not [q for q, n in Counter(r.query for r in made).items() if n > 1]
    ends = [parse_qs(r.query).get("indexed_on_end", [None])[0] for r in made]
    assert None not in ends and max(map(parse_hq_datetime, ends)) <= until  # never past its end
    runs = db.execute(f'select stream, partition, status from "{schema}".sync_runs').fetchall()
    assert len({p for s, p, _ in runs if s == backfill_key("cases") and p.startswith("window:")}) >= 2
    assert {status for *_, status in runs} == {"ok"}
    assert _checkpoints(db, schema) == {}  # the sync checkpoint untouched, the backfill's gone


def test_a_failed_backfill_resumes_its_windows_and_another_range_plans_afresh(
        slow_sim, schema, pg_url, warehouse, db):
    sim = slow_sim
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=100,
                             max_concurrent_requests=3, retry_max_seconds=0.3)
    stamps = _case_stamps(sim)
    first, later = stamps[900], stamps[1400]
    sim.faults.add("500", count=10_000, resource="case", after=12)
    with pytest.raises(HQError):
        run_backfill(settings, warehouse, "cases", "demo", None, first)
    saved = _checkpoints(db, schema)
    assert len(saved[(backfill_key("cases"), "")]["windows"]) >= 2
    assert any(p.startswith("window:") for _, p in saved)
    sim.faults.clear()

    sim.clear_requests()  # the same backfill again: its windows go on where they stopped
    assert run_backfill(settings, warehouse, "cases", "demo", None, first).status == "ok"
    wanted, held = _backfilled(sim, db, schema, first)
    assert held == wanted
    assert len(_list_requests(sim, "case")) < 900 // 100
    assert _checkpoints(db, schema) == {}

    db.execute(f'delete from "{schema}".cases')
    sim.faults.add("500", count=10_000, resource="case", after=12)
    with pytest.raises(HQError):
        run_backfill(settings, warehouse, "cases", "demo", None, first)
    sim.faults.clear()
    # Another range: the unfinished plan of the first (its last window ends at `first`) and
    # its windows' checkpoints are not used for it.
    assert run_backfill(settings, warehouse, "cases", "demo", None, later).status == "ok"
    wanted, held = _backfilled(sim, db, schema, later)
    assert held == wanted
    assert _checkpoints(db, schema) == {}


def test_a_long_case_api_v2_read_goes_in_windows_too(slow_sim, schema, pg_url, warehouse, db):
    """Case API v2 pages with HQ's own cursor; a long read from a slow HQ is cut into
    `indexed_on.gte/lte` windows, each followed by its own cursor, and the checkpoint ends as
    the watermark of a v2 read."""
    sim = slow_sim
    settings = make_settings(sim.base_url, schema, pg_url, case_api="v2", case_page_size=100,
                             max_concurrent_requests=3)
    sim.clear_requests()
    report = sync_stream(settings, warehouse, make_client(settings), "demo", "cases")
    assert report.status == "ok" and report.records >= 1500
    held = dict(db.execute(f'select case_id, indexed_on from "{schema}".cases').fetchall())
    expected = sim.snapshot("demo", "case")  # v2 lacks some v0.5 fields: compare what it has
    assert set(held) == set(expected)
    assert all(held[i] == parse_hq_datetime(c["indexed_on"]) for i, c in expected.items())
    made = [r for r in sim.requests if "/case/v2/" in r.path]
    assert len(made) == len(sim.requests) and 1 < _most_at_once(made) <= 3
    assert not [q for q, n in Counter(r.query for r in made).items() if n > 1]
    windows = db.execute(f'select partition, status from "{schema}".sync_runs where partition '
                         f"like 'window:%%'").fetchall()
    assert len(windows) >= 2 and {s for _, s in windows} == {"ok"}
    saved = _checkpoints(db, schema)
    assert set(saved) == {("cases", "")}
    cursor = saved[("cases", "")]
    assert cursor["indexed_on"] and not cursor.get("next") and "windows" not in cursor
    kind = db.execute(f'select kind from "{schema}".sync_checkpoints').fetchone()
    assert kind == ("keyset",)
    newest = max(parse_hq_datetime(c["indexed_on"]) for c in sim.snapshot("demo", "case").values())
    assert parse_hq_datetime(cursor["indexed_on"]) == newest.replace(
        microsecond=newest.microsecond // 1000 * 1000)


def test_a_list_read_oldest_first_only_is_sliced_in_rounds_up_to_its_newest_record():
    """Case API v2 cannot say its newest record: the plan slices up to now, then again up to
    the last slice that held records, until the last slice holds some; the windows still
    hold about the same number of records each, and cover everything from the start on."""
    from etl.extract import windows

    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    stamps = sorted(t0 + timedelta(seconds=37 * n + (n % 7) * 0.013) for n in range(3000))

    class OldestFirst:
        newest_first = False
        probes = 0

        def probe(self, start, end):
            self.probes += 1
            inside = [s for s in stamps if (start is None or s >= start) and (end is None or s <= end)]
            return len(inside), inside[0] if inside else None

    def check(planned):
        assert len(planned) == 3 and planned[0].start == stamps[0] and planned[-1].end is None
        counts = [len([s for s in stamps if s >= w.start and (w.end is None or s <= w.end)])
                  for w in planned]
        assert sum(counts) == len(stamps) and min(counts) > len(stamps) / 3 / 2, counts
        assert all(w.start.microsecond % 1000 == 0 for w in planned[1:])  # cut on whole ms

    unguided = OldestFirst()
    check(windows.plan(unguided, stamps[0], len(stamps), parts=3, min_records=200))
    assert 6 * 2 <= unguided.probes <= windows.MAX_ROUNDS * 6  # rounds of 2 x parts counts
    guided = OldestFirst()  # a guess past the newest record: fewer rounds
    check(windows.plan(guided, stamps[0], len(stamps), parts=3, min_records=200,
                       reach=stamps[0] + (stamps[-1] - stamps[0]) * 2))
    assert guided.probes < unguided.probes
    short = OldestFirst()  # a guess that falls short is dropped
    check(windows.plan(short, stamps[0], len(stamps), parts=3, min_records=200,
                       reach=stamps[0] + (stamps[-1] - stamps[0]) / 3))

    # A backfill's windows end at its --until, even the last moment there is.
    until = stamps[1999]
    bounded = windows.plan(OldestFirst(), stamps[0], 2000, parts=2, min_records=200, until=until)
    assert len(bounded) == 2 and bounded[-1].end == until
    assert sum(len([s for s in stamps if w.start <= s <= w.end]) for w in bounded) == 2000
    last = datetime.max.replace(tzinfo=timezone.utc)
    assert windows.plan(OldestFirst(), stamps[0], 3000, parts=3, min_records=200,
                        until=last)[-1].end == last


def test_windows_read_a_page_ahead_only_where_twice_their_pages_fit():
    """Each window fetches its next page while it loads one, where twice the windows' pages
    stay within WINDOW_RECORDS_AT_ONCE: memory stays bounded whatever the settings say."""
    settings = make_settings("http://127.0.0.1:1", "s", "postgresql://x", max_concurrent_requests=4)
    assert sync.windows_at_once(settings, 1000) == 4 and sync.reads_ahead(settings, 1000)
    assert sync.windows_at_once(settings, 5000) == 2 and not sync.reads_ahead(settings, 5000)
    many = make_settings("http://127.0.0.1:1", "s", "postgresql://x", max_concurrent_requests=8)
    assert sync.windows_at_once(many, 1000) == 8 and not sync.reads_ahead(many, 1000)
    assert 2 * sync.windows_at_once(many, 1000) * 1000 > sync.WINDOW_RECORDS_AT_ONCE


def test_prefetch_makes_one_item_ahead_of_the_one_the_caller_holds_and_hands_on_errors():
    """A reader holds the page it loads and at most one more (made while it loads): what
    WINDOW_RECORDS_AT_ONCE counts. Items come in order; an error reaches the caller."""
    import time

    made = []

    def items():
        for n in range(5):
            made.append(n)
            yield n
        raise ValueError("HQ broke")

    reader = sync.prefetch(items())
    assert next(reader) == 0
    time.sleep(0.3)  # the thread has had time to run ahead as far as it may
    assert made == [0, 1]
    assert next(reader) == 1
    time.sleep(0.3)
    assert made == [0, 1, 2]
    assert list(reader_until_error(reader)) == [2, 3, 4, "ValueError: HQ broke"]


def reader_until_error(reader):
    try:
        yield from reader
    except ValueError as exc:
        yield f"ValueError: {exc}"


def test_the_plans_early_request_never_holds_the_process_at_exit():
    gate = threading.Event()
    future = in_background(lambda: gate.wait(30) and "answered")
    plan_threads = [t for t in threading.enumerate() if t.name == "hq-plan"]
    assert plan_threads and all(t.daemon for t in plan_threads)
    gate.set()
    assert future.result(timeout=10) == "answered"
    failing = in_background(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=10)



def test_one_reader_asks_for_the_next_page_while_it_transforms_the_last(
        sim_factory, schema, pg_url, warehouse, db, monkeypatch):
    # HQ 0.3 s a page, each transform 0.6 s: the next request must not wait for the transform.
    sim = sim_factory(n_cases=500, latency=0.3)
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=100,
                             max_concurrent_requests=1)
    real, transforms = sync._transformed, []

    def slow_transform(loader, source, page, domain):
        began = time.time()
        time.sleep(0.6)
        batch = real(loader, source, page, domain)
        transforms.append((began, time.time()))
        return batch

    monkeypatch.setattr(sync, "_transformed", slow_transform)
    sim.clear_requests()
    assert sync_stream(settings, warehouse, make_client(settings), "demo", "cases").status == "ok"
    assert_cases_match(db, schema, sim)
    asked = sorted(r.at for r in _list_requests(sim, "case"))
    assert len(asked) == len(transforms) >= 5
    # Page k+1 was asked for while page k was being transformed.
    overlapped = [k for k in range(len(transforms) - 1)
                  if transforms[k][0] <= asked[k + 1] < transforms[k][1]]
    assert len(overlapped) == len(transforms) - 1, (asked, transforms)


def test_a_failed_load_stops_the_reading_threads_at_once(sim_factory, schema, pg_url,
                                                         warehouse, db, monkeypatch):
    from etl.load.postgres import Loader

    sim = sim_factory(n_cases=600)
    settings = make_settings(sim.base_url, schema, pg_url, case_page_size=100)
    real, loads = Loader.load_page, []

    def failing_load(self, **kwargs):
        loads.append(1)
        if len(loads) == 3:
            raise RuntimeError("disk full")
        return real(self, **kwargs)

    monkeypatch.setattr(Loader, "load_page", failing_load)
    with pytest.raises(RuntimeError) as failed:  # the exception (and its frames) kept
        sync_stream(settings, warehouse, make_client(settings), "demo", "cases")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _reading_threads():
        time.sleep(0.05)
    assert not _reading_threads() and failed.value is not None
    assert len(_list_requests(sim, "case")) <= 5  # two pages loaded, at most two more read


def _reading_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in ("hq-fetch", "hq-prefetch")]


def test_a_stop_asked_for_while_the_plan_counts_is_not_held_up_by_hq():
    """The plan's probes (a slow or failing HQ retries each for minutes) run on daemon
    threads; a SIGTERM during the plan stops the run at once, as one between pages does."""
    from etl import stopping
    from etl.errors import Interrupted
    from etl.extract import windows

    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    answer = threading.Event()

    class Stuck:  # HQ answers the newest record, then holds every count
        def probe(self, start, end, newest=False):
            if newest:
                return 1000, t0 + timedelta(days=10)
            answer.wait(30)
            return 100, start

    threading.Timer(0.3, stopping.request).start()
    began = time.monotonic()
    try:
        with pytest.raises(Interrupted):
            windows.plan(Stuck(), t0, 1000, parts=4, min_records=10, concurrency=4)
        assert time.monotonic() - began < 5
    finally:
        stopping._requested.clear()  # this process goes on with other tests
        answer.set()
