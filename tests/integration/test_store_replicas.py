"""Two tailer replicas on one real PostgreSQL: they insert concurrently, and a follower reading by
sequence (a watch, the ConfigMap projection) still sees every row exactly once, in order."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from tailer.store import EventFilter, Store, postgres
from tailer.store.retention import prune
from tests.integration.test_store import ev


@pytest.fixture
async def replicas(postgres: Any) -> AsyncIterator[tuple[Store, Store, Store, str]]:
    """Two writers and a follower, each its own Store (own connections) on one fresh database."""
    url = postgres.new_database()
    stores = [await Store.open(url) for _ in range(3)]
    try:
        yield stores[0], stores[1], stores[2], url
    finally:
        for s in stores:
            await s.close()


def hold_open(store: Store) -> tuple[threading.Event, threading.Event]:
    """Make ``store``'s next insert transaction stop after its rows are written, before it commits,
    until ``release`` is set; ``inside`` is set once it is there."""
    inside, release = threading.Event(), threading.Event()
    original = store._executemany

    def paused(conn: Any, sql: str, params: list[tuple[Any, ...]]) -> int:
        count = original(conn, sql, params)
        if sql.startswith("INSERT INTO audit_events") and not release.is_set():
            inside.set()
            assert release.wait(30), "the test never released the open transaction"
        return count

    store._executemany = paused  # type: ignore[method-assign]
    return inside, release


async def follow(store: Store, after: int, limit: int = 1000) -> tuple[list[tuple[int, str]], int]:
    rows = await store.events(EventFilter(), after, limit)
    got = [(seq, e["auditID"]) for seq, e in rows]
    return got, (got[-1][0] if got else after)


async def test_a_reader_never_passes_a_row_an_open_transaction_will_commit_below(
        replicas: tuple[Store, Store, Store, str]) -> None:
    a, b, reader, url = replicas
    await a.insert([ev(0, auditID="before")])
    seen, cursor = await follow(reader, 0)
    assert [i for _, i in seen] == ["before"]
    inside, release = hold_open(a)
    try:
        slow = asyncio.create_task(a.insert([ev(i, auditID=f"a{i}") for i in range(5)]))
        assert await asyncio.to_thread(inside.wait, 20), "replica a never got to its insert"
        # replica b commits while a's transaction is open (the old global lock made b wait here)
        assert (await asyncio.wait_for(b.insert([ev(i, auditID=f"b{i}") for i in range(5)]), 10)).inserted == 5
        with psycopg.connect(url) as raw:  # b's rows are committed, above a's still open sequence numbers
            committed = raw.execute("SELECT audit_id, seq FROM audit_events WHERE audit_id LIKE 'b_' "
                                    "ORDER BY seq").fetchall()
        assert len(committed) == 5
        more, cursor = await follow(reader, cursor)
        assert more == [], "the reader went past sequence numbers replica a has not committed yet"
        assert await reader.head() == seen[-1][0]  # a watch started now resumes below a's rows
    finally:
        release.set()  # also when an assertion failed: the paused writer thread must end
    assert (await slow).inserted == 5
    more, cursor = await follow(reader, cursor)
    assert [i for _, i in more] == [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)]
    assert [s for s, _ in more] == sorted(s for s, _ in more)
    assert more[-1][0] == committed[-1][1] and await reader.head() == cursor


async def test_a_follower_sees_every_row_of_two_busy_writers_once_in_order(
        replicas: tuple[Store, Store, Store, str]) -> None:
    a, b, reader, url = replicas
    rng = random.Random(13)
    chunks = 30

    async def write(store: Store, name: str) -> None:
        for c in range(chunks):
            size = rng.randint(1, 40)
            await store.insert([ev(i, auditID=f"{name}-{c}-{i}", ts=f"2026-11-20T09:{c:02d}:{rng.randint(0, 59):02d}Z")
                                for i in range(size)])
            await asyncio.sleep(rng.random() * 0.01)  # vary the interleaving, not synchronisation

    writers = asyncio.gather(write(a, "a"), write(b, "b"))
    got: list[tuple[int, str]] = []
    cursor = 0
    while not writers.done():
        more, cursor = await follow(reader, cursor, rng.randint(1, 50))
        got += more
        await asyncio.sleep(0)
    await writers
    while more := (await follow(reader, cursor))[0]:
        got += more
        cursor = more[-1][0]
    final, _ = await follow(reader, 0, 100_000)
    assert got == final, "the follower missed or repeated rows that a full read has"
    assert len({i for _, i in got}) == len(got)
    with psycopg.connect(url) as raw:
        hws = [float(h) for h, in raw.execute("SELECT hw FROM audit_events ORDER BY seq").fetchall()]
        ts_hw = raw.execute("SELECT COUNT(*) FROM audit_events WHERE hw < ts").fetchone()
    assert hws == sorted(hws) and ts_hw == (0,)  # hw stays a non-decreasing bound across replicas
    assert await reader.count() == len(got)


async def test_two_replicas_pruning_at_once_keep_the_totals_true(replicas: tuple[Store, Store, Store, str]) -> None:
    a, b, reader, url = replicas
    await a.insert([ev(i, auditID=f"x{i}", ts=f"2026-11-{1 + i % 20:02d}T00:00:00Z") for i in range(400)])
    await asyncio.gather(prune(a, None, 1000, batch=7), prune(b, None, 1000, batch=5))
    with psycopg.connect(url) as raw:
        actual = raw.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM audit_events").fetchone()
    assert actual is not None and await reader.totals() == (int(actual[0]), int(actual[1]))


async def test_replicas_starting_together_on_an_empty_database(postgres: Any) -> None:
    url = postgres.new_database()
    stores = await asyncio.gather(*(Store.open(url) for _ in range(3)))  # one creates the schema
    try:
        await asyncio.gather(*(s.insert([ev(i, auditID=f"s{n}-{i}") for i in range(3)]) for n, s in enumerate(stores)))
        assert await stores[0].count() == 9
    finally:
        for s in stores:
            await s.close()


async def test_the_health_probe_takes_its_sequence_number_like_an_insert(
        replicas: tuple[Store, Store, Store, str]) -> None:
    a, b, reader, _ = replicas
    await a.insert([ev(1, auditID="one")])
    await b.probe()  # a row inserted and deleted again in one transaction, with its own reserved number
    await a.probe()
    await b.insert([ev(2, auditID="two")])
    rows, _ = await follow(reader, 0)
    assert [i for _, i in rows] == ["one", "two"] and rows[1][0] > rows[0][0] + 2
    assert await reader.count() == 2


async def test_a_chained_chunk_covers_its_own_rows_only_when_another_replica_commits_above_it(
        replicas: tuple[Store, Store, Store, str]) -> None:
    """Replica b reserves and commits a block above a's while a's transaction is open: a's link must name
    a's rows and end at a's block, not take in b's (committed, so visible to a's later statements)."""
    from tailer.chain.link import unpack_rows

    a, b, _, url = replicas
    for s in (a, b):
        await s.chain_start(b"k")
        await s.insert([ev(20, auditID=f"warm-{id(s)}")])  # each knows its origin (else b waits on a's new one)
    inside, release = hold_open(a)
    first = asyncio.create_task(a.insert([ev(i, auditID=f"a{i}") for i in range(3)]))
    assert await asyncio.to_thread(inside.wait, 30)
    await b.insert([ev(10 + i, auditID=f"b{i}") for i in range(3)])
    release.set()
    await first
    with psycopg.connect(url) as conn:
        seqs = {str(i): int(s) for s, i in conn.execute("SELECT seq, audit_id FROM audit_events")}
        links = [(int(lo), int(hi), unpack_rows(bytes(r))) for lo, hi, r in
                 conn.execute("SELECT lo, hi, rows FROM audit_chain ORDER BY id")]
    mine = {tuple(sorted(refs)): (lo, hi) for lo, hi, refs in links}
    a_rows, b_rows = sorted(seqs[f"a{i}"] for i in range(3)), sorted(seqs[f"b{i}"] for i in range(3))
    assert min(b_rows) > max(a_rows)  # b's block is above a's
    lo, hi = mine[tuple(a_rows)]
    assert lo < min(a_rows) and hi == max(a_rows)  # a's link ends at its own rows
    assert not any(lo < s <= hi for s in b_rows)


def actual_totals(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as raw:
        row = raw.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM audit_events").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def test_a_replica_does_not_wait_for_another_ones_counted_but_uncommitted_rows(
        replicas: tuple[Store, Store, Store, str]) -> None:
    a, b, reader, url = replicas
    await a.insert([ev(0, auditID="first")])  # the source's name is committed (a new one's row would lock)
    inside, release = threading.Event(), threading.Event()
    original = a._add_totals

    def paused(conn: Any, rows: int, size: int) -> None:  # a's totals are updated, its commit not yet sent
        original(conn, rows, size)
        inside.set()
        assert release.wait(30), "the test never released the open transaction"

    a._add_totals = paused  # type: ignore[method-assign]
    try:
        slow = asyncio.create_task(a.insert([ev(i, auditID=f"a{i}") for i in range(5)]))
        assert await asyncio.to_thread(inside.wait, 20), "replica a never counted its rows"
        # one totals row for all replicas made b wait here for a's row lock, until a committed
        assert (await asyncio.wait_for(b.insert([ev(i, auditID=f"b{i}") for i in range(3)]), 10)).inserted == 3
    finally:
        release.set()
    assert (await slow).inserted == 5
    assert await reader.totals() == actual_totals(url) and actual_totals(url)[0] == 9


async def test_totals_stay_true_across_replicas_restarts_repeats_and_prunes(
        replicas: tuple[Store, Store, Store, str]) -> None:
    a, b, reader, url = replicas
    await a.insert([ev(i, auditID=f"a{i}", ts=f"2026-11-{1 + i % 20:02d}T00:00:00Z") for i in range(50)])
    await b.insert([ev(i, auditID=f"b{i}", ts=f"2026-11-{1 + i % 20:02d}T00:00:00Z") for i in range(30)])
    # repeats of stored events (a resend) and a new one twice in one chunk: only the new ones count, once
    assert (await b.insert([ev(i, auditID=f"a{i}", ts=f"2026-11-{1 + i % 20:02d}T00:00:00Z") for i in range(10)]
                           + [ev(0, auditID="new"), ev(0, auditID="new")])).inserted == 1
    assert (await b.insert([ev(0, auditID="alone"), ev(0, auditID="alone")])).inserted == 1
    assert await reader.totals() == actual_totals(url) == (82, actual_totals(url)[1])
    with psycopg.connect(url) as raw:  # one row per replica that inserted, besides row 1
        assert raw.execute("SELECT COUNT(*) FROM audit_totals").fetchone() == (3,)
    late = await Store.open(url)  # a replica starting folds the others' rows into row 1
    try:
        with psycopg.connect(url) as raw:
            assert raw.execute("SELECT id FROM audit_totals").fetchall() == [(1,)]
        assert await late.totals() == actual_totals(url)
        await prune(late, None, actual_totals(url)[1] // 2, batch=9)
        await a.insert([ev(i, auditID=f"c{i}") for i in range(4)])  # its row is made again
        assert (await reader.totals(), await a.totals()) == (actual_totals(url), actual_totals(url))
        assert actual_totals(url)[0] < 86
    finally:
        await late.close()


async def test_chunks_copied_in_are_stored_once_resent_or_repeating_inside(
        replicas: tuple[Store, Store, Store, str]) -> None:
    a, b, reader, url = replicas
    big = [ev(i % 60, auditID=f"big{i}") for i in range(150)]  # COPY_ROWS or more: by COPY
    assert (await a.insert(big)).inserted == 150
    # a resend of part of it with new events (COPY refuses it: row by row), on the other replica
    assert (await b.insert(big[100:] + [ev(i % 60, auditID=f"more{i}") for i in range(120)])).inserted == 120
    assert (await a.insert([ev(0, auditID="twice")] * 2 + [ev(i, auditID=f"c{i}") for i in range(110)])
            ).inserted == 111
    assert await reader.totals() == actual_totals(url) and actual_totals(url)[0] == 381
    copies = 0
    original = a._copy_events

    def counted(conn: Any, params: list[tuple[Any, ...]]) -> bool:
        nonlocal copies
        copies += 1
        assert a._savepoints <= postgres.MAX_SAVEPOINTS
        return original(conn, params)

    a._copy_events = counted  # type: ignore[method-assign]
    # many big chunks at once: one group commit (or a few); the first ones of each go in by COPY
    chunks = [[ev(i % 60, auditID=f"g{c}-{i}") for i in range(postgres.COPY_ROWS)] for c in range(40)]
    results = await asyncio.gather(*(a.insert(chunk) for chunk in chunks))
    assert [r.inserted for r in results] == [postgres.COPY_ROWS] * 40 and 0 < copies < 40
    rows, _ = await follow(reader, 0, 100_000)
    assert len(rows) == 381 + 40 * postgres.COPY_ROWS == len({i for _, i in rows}) == actual_totals(url)[0]
    assert await reader.totals() == actual_totals(url)
