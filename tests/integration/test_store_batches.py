"""What lets go of the GIL does so once per chunk or page, not once per row (each release waits up to the
switch interval to take the GIL back from a busy event loop): counted on a real SQLite store."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import zstandard

from bench.events import events
from kube_audit.model.audit import AuditEvent, parse
from tailer.store import EventFilter, Store
from tailer.store.rows import Codec


class Counting:
    """Counts the calls of a zstd (de)compressor's methods, passing them on."""

    def __init__(self, inner: Any, calls: dict[str, int]) -> None:
        self.inner, self.calls = inner, calls

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(*args, **kwargs)

        return counted


async def test_a_chunk_is_one_compression_and_one_statement_and_a_page_one_decompression(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "audit.db"))
    try:
        codec = store.codec
        sample = [orjson.dumps(e) for e in events(1000, seed=1)]
        codec.use(1, Codec.with_id(zstandard.train_dictionary(Codec.DICT_BYTES, sample, level=codec.level), 1))
        calls: dict[str, int] = {}
        codec._compressor = Counting(codec._compressor, calls)  # type: ignore[assignment]
        statements: list[str] = []
        await store._write(lambda: store._wconn.set_trace_callback(statements.append))
        await store.insert(list(events(813, seed=2)))  # what a forwarder's 1 MiB chunk holds
        await store._write(lambda: store._wconn.set_trace_callback(None))
        assert calls == {"multi_compress_to_buffer": 1}
        inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS ")]
        assert len(inserts) == 1

        read: dict[str, int] = {}
        real = codec._decompressor

        def decompressor(dict_id: int, fetch: Any) -> Any:
            return Counting(real(dict_id, fetch), read)

        codec._decompressor = decompressor  # type: ignore[method-assign]
        page = await store.events(EventFilter(), 0, 500)
        assert len(page) == 500 and read == {"multi_decompress_to_buffer": 1}
        assert [e["auditID"] for _, e in page] == [e["auditID"] for e in events(813, seed=2)][:500]
    finally:
        await store.close()


async def test_a_chunk_binds_three_values_whatever_its_size_and_reads_back_the_same(tmp_path: Path) -> None:
    """Each value sqlite3 binds holds the GIL (and each that is not an int, float, str or bytearray goes
    through its adapter lookup): a chunk's rows go in as one JSON text and one blob of bodies, with or
    without a meta, and read back as they were sent."""
    store = await Store.open(str(tmp_path / "audit.db"))
    try:
        codec = store.codec
        sample = [orjson.dumps(e) for e in events(1000, seed=1)]
        codec.use(1, Codec.with_id(zstandard.train_dictionary(Codec.DICT_BYTES, sample, level=codec.level), 1))
        bound: list[int] = []
        real_conn = store._wconn

        class Spy:  # (a sqlite3.Connection's execute cannot be replaced on the object itself)
            def __getattr__(self, name: str) -> Any:
                return getattr(real_conn, name)

            def execute(self, sql: str, params: Any = ()) -> Any:
                if sql.startswith("INSERT INTO audit_events "):
                    bound.append(len(params))
                return real_conn.execute(sql, params)

        store._wconn = Spy()  # type: ignore[assignment]
        plain = list(events(1300, seed=2))
        await store.insert(plain)
        parsed = parse(next(events(1, seed=3)))
        assert isinstance(parsed, AuditEvent)
        await store.insert([replace(parsed, meta='{"tag":"relay.in","metadata":{"é":1}}'.encode()), *events(10, seed=4)])
        assert bound == [3, 3]
        assert await store.metas(1, 1311) == {1301: {"tag": "relay.in", "metadata": {"é": 1}}}
        got = [e for _, e in await store.events(EventFilter(), 0, 2000)]
        assert [e["auditID"] for e in got] == [e["auditID"] for e in plain] + [parsed.record["auditID"]] + \
            [e["auditID"] for e in events(10, seed=4)]
        assert got[:1300] == [orjson.loads(orjson.dumps(e)) for e in plain]
        store._wconn = real_conn
        assert await store.totals() == (1311, sum(len(orjson.dumps(e)) for e in got))
    finally:
        await store.close()


async def test_timestamps_and_running_maximum_read_back_exactly(tmp_path: Path) -> None:
    """SQLite parses the rows' JSON itself: every timestamp reads back as the float it was (the shortest
    text that rounds to it, parsed), and ``hw`` is the running maximum of those, also across chunks."""
    import random
    import sqlite3

    rnd = random.Random(7)
    parsed = [parse(e) for e in events(3000, seed=5)]
    times = [rnd.uniform(1.6e9, 1.9e9) for _ in range(1000)] + [round(rnd.uniform(1.6e9, 1.9e9), 6) for _ in range(1000)]
    times += [rnd.uniform(-1e12, 1e12) * 10 ** rnd.randint(-300, 290) for _ in range(1000)]
    rows = [replace(p, ts=t) for p, t in zip(parsed, times, strict=True) if isinstance(p, AuditEvent)]
    db = tmp_path / "audit.db"
    store = await Store.open(str(db))
    try:
        for i in range(0, len(rows), 700):
            await store.insert(rows[i:i + 700])
    finally:
        await store.close()
    got = sqlite3.connect(db).execute("SELECT ts, hw FROM audit_events ORDER BY seq").fetchall()
    assert [ts for ts, _ in got] == [r.ts for r in rows]
    top, highs = float("-inf"), []
    for r in rows:
        top = max(top, r.ts)
        highs.append(top)
    assert [hw for _, hw in got] == highs


async def test_a_row_json_cannot_carry_is_bound_value_by_value(tmp_path: Path) -> None:
    """A timestamp JSON has no text for (inf; parse never makes one) goes in by the value-by-value INSERT,
    with the rest of its chunk: nothing is lost."""
    import sqlite3

    parsed = [p for p in map(parse, events(20, seed=6)) if isinstance(p, AuditEvent)]
    odd = [replace(parsed[0], ts=float("inf")), *parsed[1:]]
    db = tmp_path / "audit.db"
    store = await Store.open(str(db))
    try:
        result = await store.insert(odd)
        assert (result.inserted, await store.count()) == (len(odd), len(odd))
    finally:
        await store.close()
    assert sqlite3.connect(db).execute("SELECT ts FROM audit_events ORDER BY seq LIMIT 1").fetchone() == (float("inf"),)


async def wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_commits_leave_the_checkpoint_to_the_checkpointer_thread(tmp_path: Path) -> None:
    """A commit never copies the WAL into the database file (SQLite's automatic checkpoint did, in the
    commit that crossed 1,000 pages, and that chunk's ack waited); the checkpointer thread does, soon after."""
    from tailer.store.sqlite import Checkpointer

    db = tmp_path / "audit.db"
    store = await Store.open(str(db))
    try:
        store._checkpointer.stop()  # type: ignore[attr-defined]
        size = db.stat().st_size
        for i in range(8):  # ~2,000 WAL pages: past the automatic checkpoint's 1,000 twice over
            await store.insert(list(events(1000, seed=10 + i)))
        assert db.stat().st_size == size  # nothing was copied by the commits (below the writer's backstop)
        assert (tmp_path / "audit.db-wal").stat().st_size > 1000 * 4096
        store._checkpointer = Checkpointer(store._connect)  # type: ignore[attr-defined]
        await store.insert(list(events(10, seed=99)))
        await wait_until(lambda: db.stat().st_size > size + 1000 * 4096)
        assert await store.count() == 8010
    finally:
        await store.close()


async def test_a_failing_checkpoint_is_said_once_and_tried_again(tmp_path: Path, capsys: Any) -> None:
    import sqlite3

    from tailer.store.sqlite import Checkpointer

    db = tmp_path / "audit.db"
    store = await Store.open(str(db))
    fails = [3]

    def connect(write: bool) -> Any:
        if fails[0]:
            fails[0] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return store._connect(write)  # type: ignore[attr-defined]

    try:
        store._checkpointer.stop()  # type: ignore[attr-defined]
        checkpointer = store._checkpointer = Checkpointer(connect, gap=0.01)  # type: ignore[attr-defined]
        deadline, seed = time.monotonic() + 10, 0
        while not checkpointer.done:  # each commit wakes it; its first three tries fail
            assert time.monotonic() < deadline, "never checkpointed"
            seed += 1
            await store.insert(list(events(10, seed=seed)))
            await asyncio.sleep(0.02)
        assert fails == [0]
    finally:
        await store.close()
    said = [line for line in capsys.readouterr().out.splitlines() if "store_checkpoint_failed" in line]
    assert len(said) == 1 and "disk I/O error" in said[0]


async def test_without_the_checkpointer_a_commit_still_checkpoints_past_the_backstop(tmp_path: Path) -> None:
    """Should the checkpointer fail for good, the WAL does not grow without bound: the writer checkpoints
    itself past ``BACKSTOP_PAGES`` (lowered here to keep the test small)."""
    import tailer.store.sqlite as driver

    db = tmp_path / "audit.db"
    low = driver.BACKSTOP_PAGES
    driver.BACKSTOP_PAGES = 500
    try:
        store = await Store.open(str(db))
    finally:
        driver.BACKSTOP_PAGES = low
    try:
        store._checkpointer.stop()  # type: ignore[attr-defined]
        store._checkpointer = None  # type: ignore[attr-defined]
        size = db.stat().st_size
        for i in range(8):  # ~2,000 WAL pages
            await store.insert(list(events(1000, seed=10 + i)))
        assert db.stat().st_size > size + 1000 * 4096
    finally:
        await store.close()


async def test_chunks_of_many_sizes_keep_few_statements_prepared(tmp_path: Path) -> None:
    """Forwarders' chunks vary in size; the INSERT does not (a statement per row count held 43 MB of
    prepared statements for 150 sizes). SQLite's own count of the memory it holds stays bounded."""
    import ctypes

    lib = ctypes.CDLL("libsqlite3.so.0")  # the library sqlite3 is linked with (checked below: it counts)
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    store = await Store.open(str(tmp_path / "audit.db"))
    try:
        pool = list(events(250 * 100, seed=9))
        await store.insert(pool[:1000])
        base = lib.sqlite3_memory_used()
        at = 1000
        for size in range(150, 250):  # 100 sizes: ~33 MB prepared if each size were a statement
            await store.insert(pool[at:at + size])
            at += size
        grown = (lib.sqlite3_memory_used() - base) / 2**20
        assert await store.count() == at
        assert base > 2**20 and grown < 20, (base, grown)  # (a library that did not count would show 0)
    finally:
        await store.close()
