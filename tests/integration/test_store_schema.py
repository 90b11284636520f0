"""The store's schema versions, group commit, failure policy and cursors, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import orjson
import pytest

from kube_audit.model.audit import AuditEvent, parse
from tailer.store import EventFilter, Store, StoreError, parse_time, schema, to_row
from tests.integration.test_store import ev


@contextmanager
def raw(target: str) -> Iterator[Callable[..., Any]]:
    """A plain connection to the store's database, as an operator (or an old tailer) would have."""
    if target.startswith("postgresql"):
        import psycopg

        with psycopg.connect(target, autocommit=True) as pg:
            yield lambda sql, args=(): pg.execute(sql.replace("?", "%s"), args)
    else:
        from pathlib import Path

        Path(target).parent.mkdir(parents=True, exist_ok=True)
        lite = sqlite3.connect(target, isolation_level=None)
        try:
            yield lambda sql, args=(): lite.execute(sql, args)
        finally:
            lite.close()


def old_database(target: str, events: list[dict[str, Any]]) -> None:
    """A database as the tailer wrote it before schema versions: v1 layout, JSON text bodies."""
    types = schema.POSTGRES if target.startswith("postgresql") else schema.SQLITE
    with raw(target) as sql:
        for statement in schema.v1(types):
            sql(statement)
        for e in events:
            r = to_row(e)
            assert r is not None
            values = (*r[:12], r.bytes, r.event.decode())
            sql("INSERT INTO audit_events (audit_id, stage, ts, verb, level, username, api_group, resource, "
                "namespace, name, subresource, code, bytes, event) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values)
        sql("UPDATE audit_pruned SET max_seq = 1 WHERE id = 1")


async def test_an_old_layout_is_migrated_and_keeps_its_events(store_target: str) -> None:
    dry = ev(4, verb="patch", name="x", extra={"requestURI": "/api/v1/namespaces/default/pods/x?dryRun=All"})
    events = [ev(1, verb="create", name="x", ts="2026-11-20T09:00:03Z"), ev(2, verb="patch", name="x"),
              ev(3, verb="patch", name="x"), dry, ev(5, verb="patch", name="x")]
    old_database(store_target, events)
    store = await Store.open(store_target)
    try:
        rows = await store.events(EventFilter(), 0, 100)
        assert [e for _, e in rows] == events
        assert await store.pruned() == 1 and await store.count() == 5
        with raw(store_target) as sql:
            assert [r[0] for r in sql("SELECT version FROM schema_version ORDER BY version").fetchall()] == list(range(1, schema.VERSION + 1))
            # hw: the running maximum of ts (event 1 is the newest by time, so it carries over)
            hws = [r[0] for r in sql("SELECT hw FROM audit_events ORDER BY seq").fetchall()]
            assert hws == [parse_time(f"2026-11-20T09:00:0{s}Z") for s in (3, 3, 3, 4, 5)]
        # the dry run, counted apart when it falls outside the newest ``limit``
        await store.insert([ev(6, verb="patch", name="x")])
        assert await store.head() == 6  # the sequence continues
        _, omitted = await store.object_history("", "pods", "default", "x", limit=2)
        assert omitted == 3  # events 1, 2, 3; the dry run 4 makes no version
        _, late = (await store.events(EventFilter(since=parse_time("2026-11-20T09:00:03Z")), 0, 100))[0]
        assert late["auditID"] == "id-1"
    finally:
        await store.close()
    again = await Store.open(store_target)  # reopening a current database changes nothing
    try:
        assert await again.count() == 6
    finally:
        await again.close()


def versioned_database(target: str, events: list[dict[str, Any]], version: int) -> None:
    """A database as a tailer of schema ``version`` (2 or later) left it, holding ``events``."""
    types = schema.POSTGRES if target.startswith("postgresql") else schema.SQLITE
    with raw(target) as sql:
        for statement in schema.create(types, version):
            sql(statement)
        sql("CREATE TABLE schema_version (version INTEGER PRIMARY KEY)")
        for v in range(1, version + 1):
            sql(f"INSERT INTO schema_version (version) VALUES ({v})")
        columns = [c for c in schema.DATA if c != "bytes"]
        for e in events:
            r = to_row(e)
            assert r is not None
            values = (r.ts, *(getattr(r, c) for c in columns), r.dry, r.bytes, r.event)
            sql(f"INSERT INTO audit_events (hw, {', '.join(columns)}, dry, bytes, event) "
                f"VALUES ({', '.join(['?'] * (len(columns) + 4))})", values)
        sql("UPDATE audit_totals SET rows = ?, bytes = ? WHERE id = 1", (len(events), sum(len(orjson.dumps(e))
                                                                                          for e in events)))


def v2_database(target: str, events: list[dict[str, Any]]) -> None:
    """A database as a version 2 tailer left it: no ``meta`` column, plain JSON bodies."""
    versioned_database(target, events, 2)


async def test_a_version_2_store_gets_the_meta_column_in_place(store_target: str) -> None:
    events = [ev(1), ev(2)]
    v2_database(store_target, events)
    with raw(store_target) as sql:
        assert "meta" not in _columns(sql, store_target)
    store = await Store.open(store_target)
    try:
        with raw(store_target) as sql:
            assert [r[0] for r in sql("SELECT version FROM schema_version ORDER BY version").fetchall()] == list(range(1, schema.VERSION + 1))
            assert "meta" in _columns(sql, store_target)
            assert sql("SELECT COUNT(*) FROM audit_events WHERE meta IS NULL").fetchone()[0] == 2
        assert [e for _, e in await store.events(EventFilter(), 0, 10)] == events  # kept, not rebuilt
        event = parse(ev(3))
        assert isinstance(event, AuditEvent)
        await store.insert([replace(event, meta=b'{"tag":"kube.audit","metadata":{"k8s":{"ns":"prod"}}}'),
                            ev(4)])
        assert await store.head() == 4 and await store.count() == 4
        assert await store.metas(1, 4) == {3: {"tag": "kube.audit", "metadata": {"k8s": {"ns": "prod"}}}}
    finally:
        await store.close()


def _columns(sql: Callable[..., Any], target: str) -> set[str]:
    if target.startswith("postgresql"):
        found = sql("SELECT column_name FROM information_schema.columns WHERE table_name = 'audit_events'")
        return {r[0] for r in found.fetchall()}
    return {r[1] for r in sql("PRAGMA table_info(audit_events)").fetchall()}


async def test_a_migrated_store_whose_events_were_all_pruned_never_reuses_a_sequence(store_target: str) -> None:
    old_database(store_target, [ev(i) for i in range(1, 6)])
    with raw(store_target) as sql:
        sql("DELETE FROM audit_events")
        sql("UPDATE audit_pruned SET max_seq = 5 WHERE id = 1")
    store = await Store.open(store_target)
    try:
        await store.insert([ev(9)])
        (seq, _), = await store.events(EventFilter(), 0, 10)
        assert seq > 5 and await store.pruned() == 5
    finally:
        await store.close()


async def test_a_newer_schema_is_refused(store_target: str) -> None:
    store = await Store.open(store_target)
    await store.close()
    with raw(store_target) as sql:
        sql(f"INSERT INTO schema_version (version) VALUES ({schema.VERSION + 1})")
    with pytest.raises(StoreError, match="newer than this tailer"):
        await Store.open(store_target)


async def test_concurrent_chunks_share_a_commit_and_a_refused_one_fails_alone(store_target: str) -> None:
    store = await Store.open(store_target)
    calls: list[int] = []
    insert = store._insert

    def counting(groups: list[Any], *links: Any) -> list[int]:  # links: the chain's, one per chunk
        calls.append(len(groups))
        return insert(groups, *links)

    store._insert = counting  # type: ignore[method-assign]
    try:
        chunks = [[ev(c * 10 + i) for i in range(10)] for c in range(3)]
        results = await asyncio.gather(*(store.insert(chunk) for chunk in chunks), store.insert(chunks[0]))
        assert calls == [4]  # one transaction for the four chunks
        assert [r.inserted for r in results] == [10, 10, 10, 0] and results[3].duplicates == 10
        with raw(store_target) as sql:  # the database refuses one event
            if store_target.startswith("postgresql"):
                sql("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN IF NEW.audit_id = 'poison' THEN RAISE EXCEPTION 'no poison'; END IF; "
                    "RETURN NEW; END $$")
                sql("CREATE TRIGGER refuse BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse()")
            else:
                sql("CREATE TRIGGER refuse BEFORE INSERT ON audit_events WHEN NEW.audit_id = 'poison' "
                    "BEGIN SELECT RAISE(ABORT, 'no poison'); END")
        calls.clear()
        outcomes = await asyncio.gather(store.insert([ev(100)]), store.insert([ev(101, auditID="poison")]),
                                        store.insert([ev(102)]), return_exceptions=True)
        assert calls == [3, 1, 1, 1]  # the group failed, then each chunk alone
        assert [getattr(o, "inserted", None) for o in outcomes] == [1, None, 1]
        assert isinstance(outcomes[1], StoreError) and "no poison" in str(outcomes[1])
        assert await store.count() == 32 and store.healthy
    finally:
        await store.close()


async def test_cursors_are_durable(store_target: str) -> None:
    store = await Store.open(store_target)
    assert await store.load_cursor("configmaps") == 0
    await store.save_cursor("configmaps", 41)
    await store.save_cursor("configmaps", 42)
    await store.close()
    store = await Store.open(store_target)
    try:
        assert await store.load_cursor("configmaps") == 42
        assert await store.load_cursor("other") == 0
    finally:
        await store.close()


async def test_nul_and_lone_surrogates_never_fail_a_chunk(store_target: str) -> None:
    """A NUL (PostgreSQL refuses it in text) or a lone surrogate in a filtered field once made every
    resend of the chunk fail: the chunk was never acked and nothing after it was delivered. Now the audit
    model rejects such records at the edge (the pipeline acks them and keeps them in the rejected-records
    file), the store skips them without failing the chunk, and a NUL elsewhere in an event is stored."""
    odd = [ev(1, user="a\x00b", name="n\x00"), ev(2, namespace="ns\ud800"), ev(3, extra={"note": "x\x00y"})]
    store = await Store.open(store_target)
    try:
        result = await store.insert(odd)
        assert (result.inserted, result.skipped) == (1, 2)
        assert [e.get("note") for _, e in await store.events(EventFilter(), 0, 10)] == ["x\x00y"]
    finally:
        await store.close()


async def test_time_ranges_find_late_events(store_target: str) -> None:
    """A time bound becomes a sequence bound; an event that arrives late with an older timestamp is
    still found."""
    store = await Store.open(store_target)
    try:
        await store.insert([ev(i, ts=f"2026-11-20T09:00:{i:02d}Z") for i in range(0, 40)])
        await store.insert([ev(99, ts="2026-11-20T09:00:15.5Z")])  # late
        await store.insert([ev(i, ts=f"2026-11-20T09:00:{i:02d}Z") for i in range(40, 50)])
        t = parse_time("2026-11-20T09:00:15Z")
        found = [e["auditID"] for _, e in await store.events(EventFilter(since=t, until=t + 2), 0, 100)]
        assert found == ["id-15", "id-16", "id-99"]
        assert len(await store.events(EventFilter(since=t), 0, 100)) == 36
        assert await store.events(EventFilter(since=t + 3600), 0, 100) == []
        assert len(await store.events(EventFilter(since=0), 0, 100)) == 51
    finally:
        await store.close()


async def test_bodies_are_compressed_with_a_dictionary_trained_on_the_first_events(store_target: str) -> None:
    from tailer.store.rows import Codec

    def big(i: int) -> dict[str, Any]:
        return ev(i, extra={"requestObject": {"kind": "ConfigMap", "data": {"k": f"value {i} " * 40}}})

    store = await Store.open(store_target)
    try:
        first = [big(i) for i in range(Codec.TRAIN_AFTER - 1)]
        await store.insert(first)  # plain JSON: no dictionary yet
        assert store.codec.current is None
        await store.insert([big(i) for i in range(Codec.TRAIN_AFTER - 1, Codec.TRAIN_AFTER + 99)])  # trains
        deadline = time.monotonic() + 30  # training runs beside the writer; the next insert takes it up
        n = Codec.TRAIN_AFTER + 99
        while store.codec.current is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            await store.insert([big(n)])
            n += 1
        assert store.codec.current == 1
        await store.insert([big(n)])
        with raw(store_target) as sql:
            bodies = [bytes(b) for (b,) in sql("SELECT event FROM audit_events ORDER BY seq").fetchall()]
        assert bodies[0][:1] == b"{" and bodies[-1][:1] != b"{"
        assert len(bodies[-1]) * 4 < len(orjson.dumps(first[-1]))
    finally:
        await store.close()
    again = await Store.open(store_target)  # a new process finds the dictionary in the store
    try:
        rows = await again.events(EventFilter(), 0, 10_000)
        assert [e["auditID"] for _, e in rows] == [f"id-{i}" for i in range(n + 1)]
        assert rows[-1][1] == big(n) and again.codec.current == 1
    finally:
        await again.close()


def test_lines_with_non_string_keys_are_still_encoded() -> None:
    from tailer.ingest.stdout import encode_line

    assert encode_line({"a": 1, 2: "b"}) == b'{"a":1,"2":"b"}\n'
    assert encode_line({"a": b"\xff"}) == b'{"a":"/w=="}\n'


async def test_a_full_disk_says_so_and_the_store_is_not_healthy_until_it_writes(tmp_path: Any) -> None:
    """SQLite rolls a transaction back by itself when the disk is full; the error used to be masked
    by our own ROLLBACK ("cannot rollback - no transaction is active")."""
    store = await Store.open(str(tmp_path / "audit.db"))
    try:
        await store.insert([ev(0)])

        def limit(pages: int) -> None:
            with store._transaction() as conn:
                conn.execute(f"PRAGMA max_page_count = {pages}")

        pages = int(await store._write(lambda: store._wconn.execute("PRAGMA page_count").fetchone()[0]))
        await store._write(lambda: limit(pages))
        big = [ev(i, extra={"requestObject": {"blob": f"{i}" * 3000 + "".join(map(chr, range(33, 127))) * i}})
               for i in range(1, 200)]
        with pytest.raises(StoreError) as failed:
            await store.insert(big)
        assert "full" in str(failed.value) and "cannot rollback" not in str(failed.value)
        assert not store.healthy and "full" in store.last_error
        await store._write(lambda: limit(1_000_000))
        await store.probe()
        assert store.healthy
        assert (await store.insert(big)).inserted == len(big)
    finally:
        await store.close()


async def test_a_slow_query_is_stopped_and_cheap_ones_still_answer(tmp_path: Any) -> None:
    store = await Store.open(str(tmp_path / "audit.db"), readers=2, query_timeout=0.0)
    try:
        for c in range(5):
            await store.insert([ev(c * 1000 + i) for i in range(1000)])
        with pytest.raises(StoreError, match="query stopped"):
            await store.events(EventFilter(verb="nothing-has-this-verb"), 0, 10)
        assert await store.head() == 5000
    finally:
        await store.close()


async def test_a_large_prune_lets_chunks_commit_between_its_batches(store_target: str) -> None:
    from tailer.store.retention import prune

    store = await Store.open(store_target)
    try:
        await store.insert([ev(i, ts=f"2026-11-{1 + i // 10:02d}T00:00:00Z") for i in range(60)])
        done: list[str] = []

        async def pruning() -> None:
            await prune(store, 1.0, None, now=parse_time("2026-11-06T00:00:01Z"), batch=2)
            done.append("prune")

        async def chunk() -> None:
            await asyncio.sleep(0)  # after the prune's first batch was queued
            await store.insert([ev(100, ts="2026-11-30T00:00:00Z")])
            done.append("chunk")

        await asyncio.gather(pruning(), chunk())
        assert done == ["chunk", "prune"]  # committed while 25 batches of 2 were still to go
        assert await store.count() == 60 - 50 + 1 and await store.pruned() == 50
    finally:
        await store.close()
