"""The watch ring (tailer/api/ring.py) over SQLite and PostgreSQL: it selects what the store's filter
selects, watchers share one store read per commit and one encoding per event, a watcher that falls
behind the ring catches up from the store without gaps or repeats (a few at a time), and the cap answers
429."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from typing import Any

import orjson

import tailer.api.ring as ring_module
import tailer.api.watch as watch_module
from tailer.api.ring import Entry, Plan, Ring, RingRow, Segment, matches
from tailer.api.routes import PREFIX
from tailer.store import EventFilter
from tests.helpers.apitest import ADMIN, SCENARIO, Api, GatedResponse, api_fixture, resource_tracker  # noqa: F401 - fixtures


def variety() -> list[dict[str, Any]]:
    """The scenario's events in other namespaces, by other users, verbs, levels, codes and times."""
    out = []
    for i in range(60):
        e = copy.deepcopy(SCENARIO[i % len(SCENARIO)])
        e["auditID"] = f"v-{i}"
        ref = e.setdefault("objectRef", {})
        ref["namespace"] = ("shop", "staging", "ünicode", None)[i % 4]
        if ref["namespace"] is None:
            del ref["namespace"]
        ref["apiGroup"] = ("apps", "", "example.com")[i % 3]
        e["user"] = {"username": ("alice", "bob", "system:node:n1")[i % 3 - 1 if i % 5 else 0]}
        e["verb"] = ("update", "patch", "get", "create")[i % 4 - (i % 7 == 0)]
        e["level"] = ("Metadata", "RequestResponse")[i % 2]
        e["responseStatus"] = {"code": (200, 404, 201)[i % 3]} if i % 11 else {}
        e["stageTimestamp"] = f"2026-11-20T09:{i:02d}:00.000000Z"
        out.append(e)
    return out


HALF = datetime(2026, 11, 20, 9, 30, tzinfo=UTC).timestamp()
FILTERS = [EventFilter(), EventFilter(namespace="shop"), EventFilter(namespace=""), EventFilter(namespace="ünicode"),
           EventFilter(user="bob"), EventFilter(verb="patch"), EventFilter(group=""), EventFilter(group="apps"),
           EventFilter(resource="deployments", group="apps"), EventFilter(name="web"), EventFilter(level="Metadata"),
           EventFilter(code=404), EventFilter(namespace="staging", verb="update", level="RequestResponse"),
           EventFilter(since=HALF), EventFilter(until=HALF, user="alice"), EventFilter(since=HALF, until=HALF + 600),
           EventFilter(namespace="nowhere")]


async def test_the_ring_selects_what_the_store_selects(api: Api) -> None:
    await api.insert(variety())
    read = await api.store.rows_after(0, 10_000, RingRow._fields[:-1])
    segment = Segment(0, read)
    rows = [(e.seq, e) for e in segment.entries]
    assert len(rows) == 60 and all(orjson.loads(row.event)["auditID"].startswith("v-") for _, row in rows)
    for flt in FILTERS:
        want = [s for s, _ in await api.store.events(flt, 0, 10_000)]
        assert [s for s, row in rows if matches(flt, row)] == want, flt
        plan = Plan(flt)
        assert [e.seq for e in segment.matching(plan, 0)] == want, flt  # through the column index
        assert [e.seq for e in segment.matching(plan, want[1] if len(want) > 1 else 0)] == want[2:] or len(want) < 2
    sizes = [sum(1 for _, r in rows if matches(flt, r)) for flt in FILTERS]
    assert sizes.count(0) == 1 and sizes.count(60) == 2  # only "nowhere" is empty; none and name=web are all


class Metrics:
    def __init__(self) -> None:
        from tailer.metrics import TailerMetrics

        m = TailerMetrics()
        self.watch_ring_events, self.watch_ring_bytes = m.watch_ring_events, m.watch_ring_bytes


def test_the_ring_is_bounded_and_knows_what_it_cannot_answer() -> None:
    from tailer.store.rows import to_row

    ring = Ring(None, lambda: None, asyncio.Event(), lambda: 1, Metrics(), max_events=4, max_bytes=10**9)  # type: ignore[arg-type]
    ring.running, ring.floor, ring.last = True, 10, 10
    rows = [(10 + i, *(getattr(to_row(e), f) for f in RingRow._fields)) for i, e in enumerate(variety()[:6], 1)]
    ring.append(rows[:3], 0)
    assert (ring.floor, ring.last, ring.events) == (10, 13, 3)
    assert [[e.seq for e in s.entries] for s in ring.after(10) or []] == [[11, 12, 13]]
    assert ring.after(13) == [] and ring.after(9) is None
    ring.append(rows[3:], 0)
    assert (ring.floor, ring.last, ring.events) == (13, 16, 3)  # the oldest segment left first
    assert ring.after(12) is None and [e.seq for s in ring.after(13) or [] for e in s.entries] == [14, 15, 16]
    made = []

    def make(seq: int, event: bytes, source: Any) -> bytes:  # (the ring hands over the stored JSON)
        made.append(seq)
        return orjson.dumps({"seq": seq, "id": orjson.loads(event)["auditID"]}) + b"\n"

    segment = ring.segments[-1]
    entry = segment.entries[0]
    before = ring.bytes
    assert ring.line(segment, entry, "k", make) is ring.line(segment, entry, "k", make) and made == [14]  # once per encoding
    assert ring.bytes == before + len(ring.line(segment, entry, "k", make))
    ring.line(segment, entry, "other", make)
    assert made == [14, 14]
    ring.max_bytes = 0
    ring.append([], 0)  # over the byte bound: everything leaves, the ring still answers from ``last`` on
    assert (ring.events, ring.floor, ring.bytes) == (0, 16, 0) and ring.after(16) == []
    ring.line(segment, segment.entries[1], "k", make)  # a watcher still writing a segment that left
    assert made == [14, 14, 15] and ring.bytes == 0  # its lines are not counted in the ring's bytes


async def read_lines(resp: Any, n: int) -> list[dict[str, Any]]:
    out = []
    while len(out) < n:
        line = await resp.content.readline()
        assert line, f"stream ended after {len(out)} lines"
        out.append(orjson.loads(line))
    return out


async def test_watchers_share_one_store_read_per_commit_and_one_encoding_per_event(api: Api, monkeypatch: Any) -> None:
    calls = {"sourced_events": 0, "rows_after": 0, "encoded": 0}
    for name in ("sourced_events", "rows_after"):
        original = getattr(api.store, name)

        def counted(*args: Any, _original: Any = original, _name: str = name) -> Any:
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(api.store, name, counted)
    real_line = watch_module.watch_line

    def line(kind: str, obj: Any) -> bytes:
        calls["encoded"] += 1
        return real_line(kind, obj)

    monkeypatch.setattr(watch_module, "watch_line", line)
    url = PREFIX + "/auditevents"
    streams = [await api.client.get(url, headers=ADMIN, params={"watch": "true", **({"verb": "update"} if i % 2 else {})})
               for i in range(20)]
    assert all(r.status == 200 for r in streams)
    async with asyncio.timeout(10):
        while not api.api.watches.ring.running:
            await asyncio.sleep(0.01)  # polling the ring's state, not synchronisation
    commits = [SCENARIO[i:i + 2] for i in range(0, len(SCENARIO), 2)]
    for chunk in commits:
        await api.insert(chunk)
    updates = sum(1 for e in SCENARIO if e["verb"] == "update")
    for i, resp in enumerate(streams):
        got = await read_lines(resp, updates if i % 2 else len(SCENARIO))
        assert [e["object"]["auditID"] for e in got] == [e["auditID"] for e in SCENARIO if i % 2 == 0 or e["verb"] == "update"]
        assert len({e["object"]["metadata"]["resourceVersion"] for e in got}) == len(got)
        resp.close()
    # each watcher read the store at most while it joined the ring; the ring read it once per commit (or fewer)
    assert calls["sourced_events"] <= 2 * len(streams) < len(streams) * len(commits), calls
    assert calls["rows_after"] >= 1
    assert calls["encoded"] == len(SCENARIO), calls  # once per event, not once per watcher


def event(n: int) -> dict[str, Any]:
    return {**SCENARIO[0], "auditID": f"behind-{n}"}


async def test_a_watcher_behind_the_ring_catches_up_from_the_store_without_gaps_or_repeats(api: Api) -> None:
    watches = api.api.watches
    watches.ring.max_events = 3
    gated = GatedResponse()
    watcher = asyncio.create_task(watches.stream(gated, EventFilter(), 0, api.hub.register()))  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        while not watches.ring.running:
            await asyncio.sleep(0.01)  # polling the ring's state, not synchronisation
        await api.insert([event(0), event(1)])
        await gated.writing.wait()  # it took events 0 and 1 from the ring and is stuck writing them
    taken = await api.store.head()
    for n in range(2, 30, 2):  # meanwhile the ring moves on and drops what the watcher has not read
        await api.insert([event(n), event(n + 1)])
    async with asyncio.timeout(10):
        while watches.ring.last < (await api.store.head()) or watches.ring.floor <= taken:
            await asyncio.sleep(0.01)
    gated.gate.set()
    async with asyncio.timeout(10):
        while len(gated.lines) < 30:
            await asyncio.sleep(0.01)
    await api.insert([event(30)])  # back in the ring: live events still come
    async with asyncio.timeout(10):
        while len(gated.lines) < 31:
            await asyncio.sleep(0.01)
    api.hub.close()
    async with asyncio.timeout(10):
        await watcher
    assert [e["object"]["auditID"] for e in gated.lines] == [f"behind-{n}" for n in range(31)]
    assert api.api.metrics.watchers_behind._value.get() == 1


async def test_at_most_catch_up_watchers_read_the_store_at_once_and_the_rest_wait_their_turn(api: Api, monkeypatch: Any) -> None:
    watches = api.api.watches
    watches.catch_up = asyncio.Semaphore(2)
    await api.insert([event(n) for n in range(30)])  # before the ring: every watcher from 0 reads the store
    reads = []
    original = api.store.sourced_json

    def counted(*args: Any) -> Any:
        reads.append(args[1])  # (the position it reads after)
        return original(*args)

    monkeypatch.setattr(api.store, "sourced_json", counted)
    gated = [GatedResponse() for _ in range(6)]
    tasks = [asyncio.create_task(watches.stream(g, EventFilter(), 0, api.hub.register())) for g in gated]  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        while sum(g.writing.is_set() for g in gated) < 2 or len(watches.catch_up._waiters or ()) < 4:
            await asyncio.sleep(0.01)  # polling the watchers' state, not synchronisation
    assert reads == [0, 0]  # two read a batch and hold it while they write; four wait, holding nothing
    for g in gated:
        g.gate.set()
    async with asyncio.timeout(10):
        while any(len(g.lines) < 30 for g in gated):
            await asyncio.sleep(0.01)
    api.hub.close()
    async with asyncio.timeout(10):
        await asyncio.gather(*tasks)
    assert all([e["object"]["auditID"] for e in g.lines] == [f"behind-{n}" for n in range(30)] for g in gated)


async def test_a_client_that_does_not_read_gives_its_turn_back_and_waiters_end_with_the_tailer(api: Api, monkeypatch: Any) -> None:
    watches = api.api.watches
    watches.catch_up = asyncio.Semaphore(1)
    monkeypatch.setattr(watch_module, "TURN_HOLD", 0.05)
    await api.insert([event(n) for n in range(30)])
    stuck = [GatedResponse() for _ in range(3)]  # clients that never read
    tasks = [asyncio.create_task(watches.stream(g, EventFilter(), 0, api.hub.register())) for g in stuck]  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        while not all(g.writing.is_set() for g in stuck):  # one turn, three batches: each passed it on
            await asyncio.sleep(0.01)  # polling the watchers' state, not synchronisation
    monkeypatch.setattr(watch_module, "TURN_HOLD", 60.0)
    holder, waiter = GatedResponse(), GatedResponse()
    behind = [asyncio.create_task(watches.stream(g, EventFilter(), 0, api.hub.register())) for g in (holder, waiter)]  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        while not holder.writing.is_set() or not watches.catch_up._waiters:
            await asyncio.sleep(0.01)
    assert watches.metrics.watchers_waiting._value.get() == 1  # (tailer_api_watchers_waiting)
    api.hub.close()  # the one waiting its turn ends within a poll, though the holder keeps it
    async with asyncio.timeout(5):
        await behind[1]
    assert not behind[0].done() and not waiter.writing.is_set() and watches.metrics.watchers_waiting._value.get() == 0
    for g in (*stuck, holder):
        g.gate.set()
    async with asyncio.timeout(10):
        await asyncio.gather(*tasks, behind[0])
    assert all(len(g.lines) == 30 for g in (*stuck, holder))


async def test_a_watcher_writes_at_most_write_bytes_of_ring_lines_at_once_and_misses_none(api: Api, monkeypatch: Any) -> None:
    watches = api.api.watches
    writes: list[bytes] = []

    class Recording:
        async def write(self, data: bytes) -> None:
            writes.append(data)

        async def write_eof(self) -> None:
            pass

    watcher = asyncio.create_task(watches.stream(Recording(), EventFilter(), await api.store.head(), api.hub.register()))  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        while not watches.ring.running:
            await asyncio.sleep(0.01)  # polling the ring's state, not synchronisation
    monkeypatch.setattr(watch_module, "WRITE_BYTES", 2 * len(watch_module.with_rv(1, orjson.dumps(event(0)))))
    await api.insert([event(n) for n in range(9)])  # one commit: one segment, written two lines at a time
    async with asyncio.timeout(10):
        while sum(data.count(b"\n") for data in writes) < 9:
            await asyncio.sleep(0.01)
    api.hub.close()
    async with asyncio.timeout(10):
        await watcher
    assert [data.count(b"\n") for data in writes] == [2, 2, 2, 2, 1]
    lines = [orjson.loads(line) for data in writes for line in data.splitlines()]
    assert [e["object"]["auditID"] for e in lines] == [f"behind-{n}" for n in range(9)]


async def test_watchers_beyond_the_cap_get_429_with_retry_after(api: Api) -> None:
    api.api.watches.max_watchers = 2
    url = PREFIX + "/auditevents"
    open_ = [await api.client.get(url, headers=ADMIN, params={"watch": "true"}) for _ in range(2)]
    assert [r.status for r in open_] == [200, 200]
    refused = await api.client.get(url, headers=ADMIN, params={"watch": "true"})
    body = await refused.json()
    assert refused.status == 429 and refused.headers["Retry-After"] == "5"
    assert (body["kind"], body["code"], body["reason"]) == ("Status", 429, "TooManyRequests")
    assert body["details"] == {"retryAfterSeconds": 5} and "--watch-max" in body["message"]
    assert api.api.metrics.watchers_refused._value.get() == 1
    assert (await api.client.get(url, headers=ADMIN)).status == 200  # lists are not capped
    open_[0].close()
    async with asyncio.timeout(10):
        while len(api.hub) > 1:
            await asyncio.sleep(0.01)  # the server notices the client left at its next poll
    again = await api.client.get(url, headers=ADMIN, params={"watch": "true"})
    assert again.status == 200
    again.close()
    open_[1].close()


async def test_each_watcher_gets_exactly_its_events_in_order_whether_its_filter_is_shared_or_not(api: Api) -> None:
    """Watchers with the same filter, another filter, none, and one that resumes from a resourceVersion, over
    many commits: each gets every event its filter selects once, in sequence order, and nothing else (the
    lines are shared across watchers and the filters matched through an index: neither may leak one
    watcher's events into another's stream, drop one or repeat one)."""
    url = PREFIX + "/auditevents"
    shop = PREFIX + "/namespaces/shop/auditevents"
    specs: list[tuple[str, dict[str, str], EventFilter]] = [
        (shop, {}, EventFilter(namespace="shop")), (shop, {}, EventFilter(namespace="shop")),
        (shop, {"verb": "update"}, EventFilter(namespace="shop", verb="update")),
        (url, {"user": "bob"}, EventFilter(user="bob")), (url, {}, EventFilter())]
    streams = [await api.client.get(u, headers=ADMIN, params={"watch": "true", **p}) for u, p, _ in specs]
    assert all(r.status == 200 for r in streams)
    async with asyncio.timeout(10):
        while not api.api.watches.ring.running:
            await asyncio.sleep(0.01)  # polling the ring's state, not synchronisation
    start = await api.store.head()
    events = variety()
    for i in range(0, 21, 7):
        await api.insert(events[i:i + 7])
    resume = await api.store.head()  # a watcher that resumes from here, while the others already stream
    streams.append(await api.client.get(shop, headers=ADMIN, params={"watch": "true", "resourceVersion": str(resume)}))
    specs.append((shop, {}, EventFilter(namespace="shop")))
    for i in range(21, len(events), 7):
        await api.insert(events[i:i + 7])
    # the last event every filter selects: after its own events, each stream must show it next
    await api.insert([{**SCENARIO[0], "auditID": "last", "verb": "update", "user": {"username": "bob"},
                       "objectRef": {**SCENARIO[0].get("objectRef", {}), "namespace": "shop"}}])
    for n, (resp, (_, _, flt)) in enumerate(zip(streams, specs, strict=True)):
        want = await api.store.events(flt, resume if n == len(streams) - 1 else start, 10_000)
        assert len(want) > 1 and want[-1][1]["auditID"] == "last"
        got = await read_lines(resp, len(want))
        assert [(int(g["object"]["metadata"]["resourceVersion"]), g["object"]["auditID"]) for g in got] == \
            [(seq, e["auditID"]) for seq, e in want], (n, flt)
        assert {g["type"] for g in got} == {"ADDED"}
        resp.close()
    assert len({len(await api.store.events(flt, start, 10_000)) for _, _, flt in specs}) == 4  # 4 different selections


async def test_the_gap_between_wakes_ends_once_the_store_holds_most_of_the_rings_room(api: Api, monkeypatch: Any) -> None:
    watches = api.api.watches
    watches.ring.max_events = 10
    monkeypatch.setattr(ring_module, "WAKE_GAP", 60.0)  # a gap that would outlast the test
    gated = GatedResponse()
    gated.gate.set()
    watcher = asyncio.create_task(watches.stream(gated, EventFilter(), await api.store.head(), api.hub.register()))  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        while not watches.ring.running:
            await asyncio.sleep(0.01)  # polling the ring's state, not synchronisation
        await api.insert([event(0)])
        while len(gated.lines) < 1:  # read, woken, and now in its gap
            await asyncio.sleep(0.01)
        await api.insert([event(n) for n in range(1, 9)])  # 8 of 10, past GAP_SHARE: the gap ends, the ring reads
        while len(gated.lines) < 9:
            await asyncio.sleep(0.01)
        assert watches.ring.floor < await api.store.head() - 8  # none of them left the ring unread
    api.hub.close()
    async with asyncio.timeout(10):
        await watcher
    assert [e["object"]["auditID"] for e in gated.lines] == [f"behind-{n}" for n in range(9)]


def test_the_rings_room_is_its_events_or_fewer_where_its_bytes_bind_first() -> None:
    ring = Ring(None, lambda: None, asyncio.Event(), lambda: 1, Metrics(), max_events=10_000, max_bytes=4_000_000)  # type: ignore[arg-type]
    assert ring.room() == 10_000  # empty: nothing to say bytes bind
    ring.events, ring.bytes = 100, 100_000  # 1,000 bytes per event: 4,000 fit in the bytes
    assert ring.room() == 4_000
    ring.bytes = 10_000  # 100 bytes per event: the events bind
    assert ring.room() == 10_000


def test_watchers_of_equal_filters_share_one_plan_while_they_hold_it() -> None:
    import gc

    ring = Ring(None, lambda: None, asyncio.Event(), lambda: 0, Metrics())  # type: ignore[arg-type]
    first = ring.plan(EventFilter(namespace="shop", verb="patch"))
    assert ring.plan(EventFilter(namespace="shop", verb="patch")) is first
    assert ring.plan(EventFilter(namespace="shop")) is not first
    assert (first.columns, first.want, first.check) == (("namespace", "verb"), ("shop", "patch"), False)
    assert (first.namespace, first.other_want, first.other(Entry(*range(12)))) == ("shop", "patch", 6)  # type: ignore[arg-type]
    assert ring.plan(EventFilter(since=1.0)).check and ring.plan(EventFilter(cluster="eu")).check
    del first
    gc.collect()
    assert len(ring._plans) == 0  # a plan no watcher holds is gone: the map does not grow with past filters
