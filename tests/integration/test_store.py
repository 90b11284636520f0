"""The same store suite against SQLite and a real PostgreSQL server (``store_target`` is parametrised)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tailer.ingest.stdout import encode_line
from tailer.store import EventFilter, Store, parse_time
from tests.conftest import sample_events


def ev(n: int, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": kw.get("level", "Metadata"),
        "auditID": kw.get("auditID", f"id-{n}"), "stage": kw.get("stage", "ResponseComplete"),
        "verb": kw.get("verb", "get"), "user": {"username": kw.get("user", "alice")},
        "objectRef": {"resource": kw.get("resource", "pods"), "namespace": kw.get("namespace", "default"),
                      "name": kw.get("name", f"p{n}"), "apiGroup": kw.get("group", "")},
        "responseStatus": {"code": kw.get("code", 200)},
        "stageTimestamp": kw.get("ts", f"2026-11-20T09:00:{n % 60:02d}.000000Z"),
    }
    out.update(kw.get("extra", {}))
    return out


@pytest.fixture
async def store(store_target: str) -> AsyncIterator[Store]:
    s = await Store.open(store_target)
    yield s
    await s.close()


async def test_the_same_chunk_twice_gives_one_row(store: Store) -> None:
    chunk = [ev(1), ev(2), ev(1, stage="RequestReceived")]
    first = await store.insert(chunk)
    again = await store.insert(chunk)  # a forward-protocol resend
    assert (first.inserted, first.duplicates) == (3, 0)
    assert (again.inserted, again.duplicates) == (0, 3)
    assert await store.count() == 3
    assert (await store.insert([{"ok": 1}, ev(3), ev(3)])).__dict__ == {"inserted": 1, "duplicates": 1, "skipped": 1}


async def test_events_come_back_unchanged_in_sequence_order(store: Store) -> None:
    events = sample_events()
    await store.insert(events[:100])
    await store.insert(events[100:])
    rows = await store.events(EventFilter(), 0, 10_000)
    keys = {(e.get("auditID"), e.get("stage")) for e in events}
    assert len(rows) == len(keys)
    assert [s for s, _ in rows] == sorted(s for s, _ in rows)
    by_key = {(e["auditID"], e["stage"]): e for _, e in rows}
    plain = [e for e in events if (e.get("objectRef") or {}).get("resource") != "secrets"]
    assert all(by_key[(e["auditID"], e["stage"])] == e for e in plain)
    assert await store.head() == rows[-1][0]


async def test_filters_and_paging(store: Store) -> None:
    await store.insert([ev(i, namespace=f"ns{i % 3}", user=f"u{i % 2}", verb="patch" if i % 4 == 0 else "get",
                           code=404 if i == 7 else 200, level="Request" if i == 5 else "Metadata",
                           resource="databases" if i == 9 else "pods", group="example.com" if i == 9 else "")
                        for i in range(1, 31)])

    async def ids(flt: EventFilter, after: int = 0, limit: int = 100) -> list[str]:
        return [e["auditID"] for _, e in await store.events(flt, after, limit)]

    assert await ids(EventFilter(namespace="ns1")) == [f"id-{i}" for i in range(1, 31) if i % 3 == 1]
    assert await ids(EventFilter(user="u0", verb="patch")) == [f"id-{i}" for i in range(4, 31, 4)]
    assert await ids(EventFilter(code=404)) == ["id-7"]
    assert await ids(EventFilter(level="Request")) == ["id-5"]
    assert await ids(EventFilter(resource="databases", group="example.com")) == ["id-9"]
    assert await ids(EventFilter(resource="pods", name="p10")) == ["id-10"]
    t = parse_time("2026-11-20T09:00:10.000000Z")
    assert await ids(EventFilter(since=t, until=t + 3)) == ["id-10", "id-11", "id-12"]
    page = await store.events(EventFilter(), 0, 7)
    rest = await store.events(EventFilter(), page[-1][0], 100)
    assert [e["auditID"] for _, e in page + rest] == [f"id-{i}" for i in range(1, 31)]


async def test_secret_values_never_reach_the_store(store: Store) -> None:
    secret = ev(1, resource="secrets", verb="create", level="Request",
                extra={"requestObject": {"kind": "Secret", "data": {"password": "c2VjcmV0"}}})
    await store.insert([secret])
    (_, stored), = await store.events(EventFilter(), 0, 10)
    assert stored["requestObject"]["data"] == {"password": "<redacted>"}


async def test_object_history_only_mutations_in_time_order(store: Store) -> None:
    await store.insert([ev(3, verb="patch", name="x"), ev(1, verb="create", name="x"), ev(2, verb="get", name="x"),
                        ev(4, verb="update", name="y"), ev(5, verb="delete", name="x", group="other.io")])
    rows = await store.object_events("", "pods", "default", "x")
    assert [(e["auditID"], g) for _, g, e in rows] == [("id-1", ""), ("id-3", "")]
    rows = await store.object_events(None, "pods", "default", "x")
    assert [(e["auditID"], g) for _, g, e in rows] == [("id-1", ""), ("id-3", ""), ("id-5", "other.io")]


async def test_retention_by_age_and_by_size(store: Store) -> None:
    events = [ev(i, ts=f"2026-11-{10 + i:02d}T00:00:00Z") for i in range(10)]
    await store.insert(events)
    assert await store.prune(3.5 * 86400, None, now=parse_time("2026-11-20T00:00:00Z")) == (7, 0)
    assert [e["auditID"] for _, e in await store.events(EventFilter(), 0, 100)] == ["id-7", "id-8", "id-9"]
    two = sum(len(encode_line(e)) - 1 for e in events[8:])  # the JSON of the two newest
    assert await store.prune(None, two) == (0, 1)
    assert [e["auditID"] for _, e in await store.events(EventFilter(), 0, 100)] == ["id-8", "id-9"]
    assert await store.prune(None, two - 1) == (0, 1)
    assert await store.prune(None, two) == (0, 0)


async def test_concurrent_writers_keep_sequence_visible_in_order(store_target: str) -> None:
    """Two store handles (two tailer replicas on PostgreSQL; two connections on one SQLite file)."""
    a, b = await Store.open(store_target), await Store.open(store_target)
    try:
        await asyncio.gather(*(s.insert([ev(i * 10 + j, auditID=f"{s is a}-{i}-{j}") for j in range(10)])
                               for i in range(10) for s in (a, b)))
        rows = await a.events(EventFilter(), 0, 1000)
        assert len(rows) == 200 and len({e["auditID"] for _, e in rows}) == 200
    finally:
        await a.close()
        await b.close()


async def test_each_chained_chunk_names_its_own_rows_after_a_probe_and_with_repeats(store: Store,
                                                                                   store_target: str) -> None:
    """A link's rows are the sequences of its chunk's events, in chunk order: found without a read when no
    event was a repeat (after a probe took a sequence number), read back when one was."""
    from tailer.chain.link import unpack_rows

    await store.chain_start(b"k")
    await store.insert([ev(0)])
    await store.probe()  # inserts and deletes a row: the next sequence skips one
    await store.insert([ev(1), ev(2), ev(3)])
    await store.insert([ev(4), ev(2), ev(5)])  # ev(2) repeats: the row the earlier chunk stored
    seqs = {e["auditID"]: s for s, e in await store.events(EventFilter(), 0, 100)}
    rows = await store._read(lambda c: c.execute("SELECT lo, hi, rows FROM audit_chain ORDER BY id").fetchall())
    links = [(int(lo), int(hi), unpack_rows(bytes(r))) for lo, hi, r in rows]
    assert [refs for _, _, refs in links[-2:]] == [[seqs["id-1"], seqs["id-2"], seqs["id-3"]],
                                                   [seqs["id-4"], seqs["id-2"], seqs["id-5"]]]
    assert links[-2][1] == seqs["id-3"] and links[-1][1] == seqs["id-5"]
    assert seqs["id-1"] > seqs["id-0"] + 1  # the probe's number was skipped


async def test_a_big_chunk_with_repeats_inside_and_of_stored_events_keeps_each_event_once(store: Store) -> None:
    """Rows go in many at a time (one statement per batch on SQLite): repeats inside one batch, across
    batches and of rows already stored are each dropped, and the counts say so."""
    await store.insert([ev(i) for i in range(0, 200, 7)])  # 29 stored before
    chunk = [ev(i) for i in range(130)] + [ev(i) for i in range(0, 130, 3)]  # 44 repeats within the chunk
    result = await store.insert(chunk)
    stored_before = len(range(0, 200, 7))
    already = len([i for i in range(0, 200, 7) if i < 130])
    assert (result.inserted, result.duplicates) == (130 - already, len(chunk) - (130 - already))
    rows = await store.events(EventFilter(), 0, 1000)
    assert len(rows) == stored_before + 130 - already == await store.count()
    assert len({e["auditID"] for _, e in rows}) == len(rows)
    assert [s for s, _ in rows] == sorted(s for s, _ in rows)
