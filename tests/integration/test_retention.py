"""Retention while chunks arrive (issue 13): nothing acked is lost, the totals and the chain anchor stay
right, and a prune does not hold the chunks' writer (SQLite: its batches ride in their group commits;
PostgreSQL: its own connection). Against SQLite and a real PostgreSQL (``store_target``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest

from tailer.chain.verify import State, check
from tailer.store import EventFilter, Store, parse_time
from tailer.store.retention import BUDGET, SMALLEST, _Sizer, prune
from tests.integration.test_store import ev

KEY = b"k" * 32
NOW = parse_time("2026-11-20T12:00:00Z")


@pytest.fixture
async def store(store_target: str) -> AsyncIterator[Store]:
    s = await Store.open(store_target)
    yield s
    await s.close()


def old(i: int) -> dict[str, Any]:
    return ev(i, auditID=f"old-{i}", ts=f"2026-11-01T00:{i // 60 % 60:02d}:{i % 60:02d}.000000Z")


def new(i: int) -> dict[str, Any]:
    return ev(i, auditID=f"new-{i}", ts=f"2026-11-20T11:{i // 60 % 60:02d}:{i % 60:02d}.000000Z")


async def actual(store: Store) -> tuple[int, int]:
    def read(conn: Any) -> tuple[int, int]:
        row = conn.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM audit_events").fetchone()
        return int(row[0]), int(row[1])

    return await store._read(read)


async def verify(store: Store) -> State:
    state, after = State(), 0
    while True:
        batch = await store.chain_batch(after, state.prev_hi)
        state = check(KEY, state, batch)
        if not batch["links"]:
            return state
        after = batch["links"][-1].id


async def ingest_until(store: Store, done: Callable[[], bool], acked: list[str], size: int = 20) -> None:
    """Chunks of new events, one after the other, each counted once ``insert`` returned (an ack)."""
    n = 0
    while not done() and n < 20_000:
        chunk = [new(n + i) for i in range(size)]
        await store.insert(chunk)
        acked += [e["auditID"] for e in chunk]
        n += size


async def test_a_prune_while_chunks_arrive_loses_no_acked_event(store: Store) -> None:
    await store.chain_start(KEY)
    for i in range(0, 600, 100):
        await store.insert([old(j) for j in range(i, i + 100)])
    acked: list[str] = []
    pruning = asyncio.ensure_future(prune(store, 7 * 86400.0, None, now=NOW, batch=25))
    await ingest_until(store, pruning.done, acked)
    assert await pruning == (600, 0)
    stored = [e["auditID"] for _, e in await store.events(EventFilter(), 0, 100_000)]
    assert stored == acked, "an acked event is missing, or an old one was kept"
    assert await store.totals() == await actual(store)
    assert await store.pruned() >= 600
    state = await verify(store)
    assert state.problems == [] and state.rows >= len(acked)
    found = await store._read(store._anchor)
    assert found is not None and found[0].pruned_row == await store.pruned()  # sealed with the last batch


async def test_a_prune_by_size_while_chunks_arrive_keeps_the_totals(store: Store) -> None:
    await store.insert([old(j) for j in range(300)])
    limit = (await store.totals())[1] // 3
    acked: list[str] = []
    pruning = asyncio.ensure_future(prune(store, None, limit, batch=10))
    await ingest_until(store, pruning.done, acked, size=5)
    by_age, by_size = await pruning
    assert by_age == 0 and by_size > 0
    assert await store.totals() == await actual(store)
    stored = [e["auditID"] for _, e in await store.events(EventFilter(), 0, 100_000)]
    every = [f"old-{j}" for j in range(300)] + acked
    assert stored == every[len(every) - len(stored):], "not the newest ones, in order: a hole below the head"


@pytest.mark.parametrize("store_target", ["sqlite"], indirect=True)
async def test_sqlite_a_delete_batch_rides_in_the_commit_of_a_waiting_chunk(store: Store) -> None:
    """A delete batch asked for while a chunk waits commits with it: one write transaction, one fsync (the
    old retention gave each batch a transaction and an fsync of its own, which the next chunk waited for)."""
    await store.insert([old(j) for j in range(100)])
    transactions = 0
    begin = store._transaction

    def counted() -> Any:
        nonlocal transactions
        transactions += 1
        return begin()

    store._transaction = counted  # type: ignore[method-assign]
    for n in range(5):
        inserted, deleted = await asyncio.gather(store.insert([new(10 * n + i) for i in range(10)]),
                                                 store.delete_oldest(None, None, 20))
        assert (inserted.inserted, deleted) == (10, 20)
    assert transactions == 5
    assert await store.totals() == await actual(store)
    assert (await actual(store))[0] == 50
    assert await store.pruned() == 100


@pytest.mark.parametrize("store_target", ["sqlite"], indirect=True)
async def test_a_delete_batch_that_fails_does_not_fail_the_chunk_it_rode_with(store: Store) -> None:
    await store.insert([old(j) for j in range(50)])
    await store._write(lambda: store._wconn.execute(  # type: ignore[attr-defined]
        "CREATE TRIGGER no_delete BEFORE DELETE ON audit_events BEGIN SELECT RAISE(ABORT, 'kept'); END"))
    acked: list[str] = []
    pruning = asyncio.ensure_future(prune(store, 7 * 86400.0, None, now=NOW, batch=10))
    await ingest_until(store, pruning.done, acked)
    with pytest.raises(Exception, match="kept"):
        await pruning
    assert acked and {e["auditID"] for _, e in await store.events(EventFilter(), 0, 100_000)} >= set(acked)
    assert await store.totals() == await actual(store)
    assert (await actual(store))[0] == 50 + len(acked)  # nothing deleted, every acked chunk stored


@pytest.mark.parametrize("store_target", ["postgresql"], indirect=True)
async def test_postgresql_chunks_commit_while_a_delete_batch_is_stuck(store: Store, store_target: str) -> None:
    """A delete batch that cannot finish (here: a row it must update is locked by someone else) does not
    hold the chunks: they commit on the writer while it waits on its own connection."""
    await store.insert([old(j) for j in range(50)])
    with psycopg.connect(store_target) as blocker:
        blocker.execute("SELECT * FROM audit_pruned WHERE id = 1 FOR UPDATE")  # held until the with ends
        pruning = asyncio.ensure_future(prune(store, 7 * 86400.0, None, now=NOW, batch=10))
        await asyncio.wait_for(_until_waiting(store_target), 20)
        await asyncio.wait_for(store.insert([new(i) for i in range(30)]), 20)
        assert not pruning.done()
    assert await asyncio.wait_for(pruning, 20) == (50, 0)
    assert await store.totals() == await actual(store)
    assert (await actual(store))[0] == 30


async def _until_waiting(url: str) -> None:
    """Until some backend waits for a lock (the delete batch, behind the blocker's row lock)."""
    with psycopg.connect(url, autocommit=True) as conn:
        while not conn.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                               "AND datname = current_database()").fetchone()[0]:  # type: ignore[index]
            await asyncio.sleep(0.02)  # polling a condition, not synchronisation


class _Timed:
    def __init__(self, took: float) -> None:
        self.last_prune_s = took


def test_batches_grow_on_a_fast_store_and_shrink_on_a_slow_one() -> None:
    fast = _Sizer(_Timed(BUDGET / 100), 2000)
    for _ in range(10):
        fast.done(fast.rows)
    assert fast.rows == 2000
    slow = _Sizer(_Timed(BUDGET * 10), 2000)
    first = slow.rows
    slow.done(slow.rows)
    assert slow.rows < first and slow.rows >= SMALLEST


@pytest.mark.parametrize("store_target", ["sqlite"], indirect=True)
async def test_sqlite_a_job_alone_skips_its_fsync_and_chunks_keep_theirs(store: Store) -> None:
    """A retention job with no chunk to ride with commits at synchronous=NORMAL (the next chunk's FULL
    commit syncs it); the writer is back at FULL for every chunk after it, so an ack still means on disk."""
    def level(conn: Any) -> int:
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    await store.insert([old(j) for j in range(30)])
    assert await store._prune_write(level) == 1  # NORMAL, alone
    assert await prune(store, 7 * 86400.0, None, now=NOW, batch=10) == (30, 0)
    assert await store._write(lambda: level(store._wconn)) == 2  # type: ignore[attr-defined]  # FULL
    inserted, during = await asyncio.gather(store.insert([new(1)]), store._prune_write(level))
    assert (inserted.inserted, during) == (1, 2)  # riding with a chunk: its FULL commit
