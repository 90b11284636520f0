"""What both stores share: executors, group commit, the failure policy and every query that reads
the same on both. The drivers (sqlite.py, postgres.py) own connections, transactions and errors.

Executors: one writer thread (its own connection: inserts, retention, cursors, migrations) and a pool of
reader threads (the API's queries, each with a timeout), never the loop's default executor.

Group commit: chunks that arrive while a commit runs wait for the next one, which takes them all in one
transaction (each chunk keeps its own result). When such a group fails, its chunks are retried one by
one, so one chunk the database refuses fails only itself.

Failure policy: a database error is a ``StoreError``: the chunk is not acked and the forwarder resends it.
The store is ``healthy`` again after the next write that succeeds (``probe`` tries one).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from functools import partial
from typing import Any, TypeVar

import orjson

from tailer.store.chainstore import ChainStore
from tailer.store.rows import COLUMNS, Codec, EventFilter, InsertResult, Row, to_row

T = TypeVar("T")
GROUP_ROWS = 20_000  # most rows one group commit takes
EventRows = list[tuple[int, dict[str, Any]]]
ObjectRows = list[tuple[int, str, dict[str, Any]]]


class StoreError(RuntimeError):
    """The database failed. ``transient`` (it is down, locked, full): the chunk is not acked and will be
    resent. Not transient: what was sent can never be stored (the sink then finds the records and
    rejects them, so that the rest is stored and acked)."""

    def __init__(self, message: str, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class Store(ChainStore):
    """Open with ``Store.open(target)``: a ``postgresql://`` URL or an SQLite file path."""

    kind = "store"
    ph = "?"  # the driver's placeholder
    errors: tuple[type[BaseException], ...] = ()  # the driver's exception classes

    def __init__(self, target: str, readers: int = 4, query_timeout: float = 10.0) -> None:
        self.target = target
        self.query_timeout = query_timeout  # seconds one API query may run
        self.readers = max(readers, 1)  # reader threads (and PostgreSQL reader connections)
        self.healthy = True  # False from a failed write until a write succeeds
        self.last_error = ""
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"{self.kind}-write")
        self._readers = ThreadPoolExecutor(self.readers, thread_name_prefix=f"{self.kind}-read")
        self.codec = Codec()
        self._trainer = ThreadPoolExecutor(1, thread_name_prefix=f"{self.kind}-train")
        self._training: Future[Any] | None = None
        self._pending: list[tuple[list[Row], asyncio.Future[int], Any]] = []  # rows, result, chain link
        self._drainer: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, target: str, readers: int = 4, query_timeout: float = 10.0) -> Store:
        impl: type[Store] = cls
        if cls is Store:
            if target.startswith(("postgresql://", "postgres://")):
                from tailer.store.postgres import PostgresStore as impl
            else:
                from tailer.store.sqlite import SqliteStore as impl
        store = impl(target, readers, query_timeout)
        try:
            await store._write(store._setup)
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        if self._drainer is not None:
            await asyncio.gather(self._drainer, return_exceptions=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._close)
        self._writer.shutdown()
        self._readers.shutdown()
        self._trainer.shutdown(wait=False, cancel_futures=True)  # a training still running is dropped

    # ---- driver hooks ----

    def _setup(self) -> None:
        """Connect the writer and bring the schema to the current version."""
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[Any]:
        """The writer's connection inside one write transaction (commit on exit, rollback on error)."""
        raise NotImplementedError

    def _reading(self) -> AbstractContextManager[Any]:
        """A reader connection for one query, with the query timeout armed."""
        raise NotImplementedError

    def _after_error(self) -> None:
        """Drop a connection the error broke; the next call reconnects."""

    # ---- plumbing ----

    async def _write(self, fn: Callable[[], T]) -> T:
        try:
            result = await self._call(self._writer, fn)
        except StoreError as exc:
            if exc.transient:  # the database's state; a record it refuses for good says nothing about it
                self.healthy, self.last_error = False, str(exc)
            raise
        self.healthy = True
        return result

    async def _read(self, fn: Callable[[Any], T]) -> T:
        def job() -> T:
            with self._reading() as conn:
                return fn(conn)

        return await self._call(self._readers, job)

    async def _call(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn)
        except self.errors + (OverflowError, UnicodeError) as exc:
            self._after_error()
            raise StoreError(f"{self.kind}: {self._describe(exc)}", self.is_transient(exc)) from exc

    def _describe(self, exc: BaseException) -> str:
        return str(exc).strip() or type(exc).__name__

    def is_transient(self, exc: BaseException) -> bool:
        """The database's state (down, locked, full: resend later), not the data (never storable)."""
        return False  # binding the values failed (OverflowError, UnicodeEncodeError, ...)

    # ---- writes ----

    async def insert(self, records: Sequence[Any], link: Any = None) -> InsertResult:
        """Store a chunk durably; repeats of a stored (auditID, stage) are dropped. ``link`` (the chain
        stage's, tailer/chain) is written with the events, in the same transaction."""
        rows = [r for r in map(to_row, records) if r is not None]
        skipped = len(records) - len(rows)
        if not rows and (link is None or self.chain_key is None):  # a chained chunk keeps its place in the chain
            return InsertResult(0, 0, skipped)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((rows, future, link))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name=f"{self.kind}-group-commit")
        inserted = await future
        return InsertResult(inserted, len(rows) - inserted, skipped)

    async def _drain(self) -> None:
        while self._pending:
            group: list[tuple[list[Row], asyncio.Future[int], Any]] = []
            size = 0
            while self._pending and (not group or size + len(self._pending[0][0]) <= GROUP_ROWS):
                group.append(self._pending.pop(0))
                size += len(group[-1][0])
            try:
                counts = await self._write(partial(self._insert, [rows for rows, _, _ in group],
                                                   [link for _, _, link in group]))
            except StoreError as exc:
                if len(group) == 1:
                    _settle(group[0][1], exc)
                    continue
                for rows, future, link in group:  # one by one: only a chunk the database refuses fails
                    try:
                        _settle(future, (await self._write(partial(self._insert, [rows], [link])))[0])
                    except StoreError as one:
                        _settle(future, one)
            else:
                for (_, future, _), count in zip(group, counts, strict=True):
                    _settle(future, count)

    def _insert(self, groups: list[list[Row]], links: Sequence[Any] = ()) -> list[int]:
        p = self.ph
        if self.codec.current is None and self._training is None and \
                self.codec.wants_training([r.event for rows in groups for r in rows]):
            self._training = self._trainer.submit(self.codec.train)  # ~1 s of CPU, not on the writer
        elif self._training is not None and self._training.done():
            try:
                trained = self._training.result()
            except Exception:  # zstd could not train on these samples: frames without a dictionary
                self._training = None
                self.codec.give_up()
            else:
                self._keep_dict(trained)
        sql = (f"INSERT INTO audit_events (hw, {', '.join(COLUMNS)}) VALUES ({', '.join([p] * (len(COLUMNS) + 1))}) "
               "ON CONFLICT (ts, audit_id, stage) DO NOTHING")
        with self._transaction() as conn:
            last = conn.execute("SELECT seq, hw FROM audit_events ORDER BY seq DESC LIMIT 1").fetchone()
            top, hw = (int(last[0]), float(last[1])) if last else (0, float("-inf"))
            counts = []
            lo = top
            for i, rows in enumerate(groups):
                params = []
                for r in rows:
                    hw = max(hw, r.ts)  # the running maximum: non-decreasing in seq
                    params.append((hw, *r[:-1], self.codec.compress(r.event)))
                counts.append(self._executemany(conn, sql, params) if params else 0)
                if self.chain_key is not None:  # the chunk's link, with its events (chainstore.py)
                    lo = self._chain_link(conn, links[i] if i < len(links) else None, rows, lo)
            added = sum(counts)
            if added == sum(len(rows) for rows in groups):
                size = sum(r.bytes for rows in groups for r in rows)
            else:  # some were repeats: the new rows are the ones above the old top (writes are serialised)
                size = int(conn.execute(f"SELECT COALESCE(SUM(bytes), 0) FROM audit_events WHERE seq > {p}",
                                        (top,)).fetchone()[0])
            conn.execute(f"UPDATE audit_totals SET rows = rows + {p}, bytes = bytes + {p} WHERE id = 1", (added, size))
        return counts

    def _executemany(self, conn: Any, sql: str, params: list[tuple[Any, ...]]) -> int:
        raise NotImplementedError

    def _keep_dict(self, trained: Any) -> None:
        """Store the bodies' zstd dictionary, trained on the first events, then use it (not before it
        is committed: a row must never name a dictionary the store lacks)."""
        with self._transaction() as conn:
            dict_id = int(conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM audit_dicts").fetchone()[0])
            data = self.codec.with_id(trained, dict_id)
            conn.execute(f"INSERT INTO audit_dicts (id, data) VALUES ({self.ph}, {self.ph})", (dict_id, data))
        self.codec.use(dict_id, data)
        self._training = None

    def _known_dicts(self, conn: Any) -> None:
        for dict_id, data in conn.execute("SELECT id, data FROM audit_dicts ORDER BY id").fetchall():
            self.codec.use(int(dict_id), bytes(data))

    def _load(self, conn: Any, body: Any) -> dict[str, Any]:
        def fetch(dict_id: int) -> bytes | None:
            row = conn.execute(f"SELECT data FROM audit_dicts WHERE id = {self.ph}", (dict_id,)).fetchone()
            return bytes(row[0]) if row else None

        return self.codec.load(body, fetch)

    async def probe(self) -> None:
        """One small real write (a row inserted and deleted again, committed): the store is healthy
        again when it succeeds. The row takes a sequence number that no event will have."""
        p = self.ph
        values = ("probe", "probe", 0.0, "", "", "", "", "", "", "", "", None, 0, 0, None, b"{}")

        def touch() -> None:
            with self._transaction() as conn:
                last = conn.execute("SELECT hw FROM audit_events ORDER BY seq DESC LIMIT 1").fetchone()
                conn.execute(f"INSERT INTO audit_events (hw, {', '.join(COLUMNS)}) VALUES "
                             f"({', '.join([p] * (len(COLUMNS) + 1))})", (last[0] if last else 0.0, *values))
                conn.execute("DELETE FROM audit_events WHERE audit_id = 'probe' AND stage = 'probe'")

        await self._write(touch)

    async def save_cursor(self, name: str, seq: int) -> None:
        """Durably remember how far the follower ``name`` got (e.g. the ConfigMap projection)."""
        p = self.ph

        def save() -> None:
            with self._transaction() as conn:
                conn.execute(f"INSERT INTO audit_cursors (name, seq) VALUES ({p}, {p}) "
                             "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq", (name, seq))

        await self._write(save)

    async def load_cursor(self, name: str) -> int:
        """The sequence saved for ``name``; 0 when none was."""
        row = await self._read(lambda c: c.execute(f"SELECT seq FROM audit_cursors WHERE name = {self.ph}",
                                                   (name,)).fetchone())
        return int(row[0]) if row else 0

    # ---- retention primitives (tailer/store/retention.py decides) ----

    async def prune(self, max_age: float | None, max_bytes: int | None, now: float | None = None) -> tuple[int, int]:
        """Retention once: (deleted by age, deleted by size). See retention.prune."""
        from tailer.store.retention import prune

        return await prune(self, max_age, max_bytes, now)

    async def first_at(self, t: float) -> tuple[int, int]:
        """(the oldest sequence stored, the first whose ``hw`` is >= t, head + 1 when none): every row
        below the second is older than t."""
        def find(conn: Any) -> tuple[int, int]:
            oldest = conn.execute("SELECT COALESCE(MIN(seq), 0) FROM audit_events").fetchone()[0]
            return int(oldest), self._first_at(conn, t)

        return await self._read(find)

    async def totals(self) -> tuple[int, int]:
        """(rows, bytes of event JSON) stored, kept as running totals."""
        row = await self._read(lambda c: c.execute("SELECT rows, bytes FROM audit_totals WHERE id = 1").fetchone())
        return int(row[0]), int(row[1])

    async def delete_oldest(self, below: int | None, excess: int | None, max_rows: int) -> int:
        """Delete at most ``max_rows`` of the oldest rows, in one transaction: those with a sequence below
        ``below``, or as many as free ``excess`` bytes. Raises the pruned mark to the highest deleted."""
        p = self.ph

        def delete() -> int:
            with self._transaction() as conn:
                where, args = (f"WHERE seq < {p}", [below]) if below is not None else ("", [])
                oldest = conn.execute(f"SELECT seq, bytes FROM audit_events {where} ORDER BY seq LIMIT {p}",
                                      (*args, max_rows)).fetchall()
                if excess is not None:
                    oldest = list(_covering(oldest, excess))
                if not oldest:
                    return 0
                top, size = int(oldest[-1][0]), sum(int(b) for _, b in oldest)
                conn.execute(f"DELETE FROM audit_events WHERE seq <= {p}", (top,))
                conn.execute(f"UPDATE audit_pruned SET max_seq = {p} WHERE id = 1 AND max_seq < {p}", (top, top))
                self._chain_pruned(conn, top)  # recorded, sealed: verify does not take it for tampering
                conn.execute(f"UPDATE audit_totals SET rows = rows - {p}, bytes = bytes - {p} WHERE id = 1",
                             (len(oldest), size))
                return len(oldest)

        return await self._write(delete)

    async def reclaim(self) -> None:
        """Give freed space back to the file system where the driver can (bounded work)."""

    # ---- reads ----

    def _first_at(self, conn: Any, t: float) -> int:
        """Bisection over ``seq`` (``hw`` is non-decreasing in it): ~log2(rows) primary-key lookups, no index."""
        # two subqueries: SQLite reads MIN or MAX from the primary key only when a query has just one
        lo, hi = conn.execute("SELECT COALESCE((SELECT MIN(seq) FROM audit_events), 1), "
                              "COALESCE((SELECT MAX(seq) FROM audit_events), 0) + 1").fetchone()
        lo, hi = int(lo), int(hi)
        step = f"SELECT hw FROM audit_events WHERE seq >= {self.ph} ORDER BY seq LIMIT 1"
        while lo < hi:
            mid = (lo + hi) // 2
            if float(conn.execute(step, (mid,)).fetchone()[0]) >= t:
                hi = mid
            else:
                lo = mid + 1
        return lo

    async def head(self) -> int:
        """The highest sequence stored or pruned (0 when nothing was ever stored)."""
        def query(conn: Any) -> int:
            stored = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit_events").fetchone()[0]
            return max(int(stored), _pruned(conn))

        return await self._read(query)

    async def pruned(self) -> int:
        """The highest sequence retention ever deleted (0 when none): every event above it is kept."""
        return await self._read(_pruned)

    async def count(self) -> int:
        return (await self.totals())[0]

    async def events(self, flt: EventFilter, after: int = 0, limit: int = 500) -> EventRows:
        """Events matching ``flt`` with seq > ``after``, in sequence order."""
        clauses, args = flt.where(self.ph)
        sql = (f"SELECT seq, event FROM audit_events WHERE {' AND '.join([f'seq > {self.ph}', *clauses])} "
               f"ORDER BY seq LIMIT {self.ph}")

        def query(conn: Any) -> EventRows:
            start = after
            if flt.since is not None:  # nothing below the first row whose running maximum reaches ``since``
                start = max(start, self._first_at(conn, flt.since) - 1)
            rows = conn.execute(sql, (start, *args, limit)).fetchall()
            return [(int(seq), self._load(conn, body)) for seq, body in rows]

        return await self._read(query)

    async def metas(self, first: int, last: int) -> dict[int, dict[str, Any]]:
        """What came beside the events from ``first`` to ``last`` (sequences, inclusive) on the forward
        protocol, ``{"tag", "metadata"}``, for those that have it (a primary-key range: one cheap read)."""
        sql = (f"SELECT seq, meta FROM audit_events WHERE seq >= {self.ph} AND seq <= {self.ph} "
               "AND meta IS NOT NULL")
        rows = await self._read(lambda c: c.execute(sql, (first, last)).fetchall())
        return {int(seq): _json(bytes(meta)) for seq, meta in rows}

    async def object_events(self, group: str | None, resource: str, namespace: str, name: str,
                            limit: int | None = None) -> ObjectRows:
        """Successful mutating ResponseComplete events of one object: (seq, api group, event), oldest
        first; with ``limit``, only the newest ``limit`` of them."""
        rows, _ = await self.object_history(group, resource, namespace, name, limit)
        return rows

    async def object_history(self, group: str | None, resource: str, namespace: str, name: str,
                             limit: int | None = None) -> tuple[ObjectRows, int]:
        """``object_events`` and how many older versions ``limit`` left out. Only the newest ``limit``
        events are read whole; the older ones are counted (dry runs, which make no version, apart)."""
        p = self.ph
        # the events that can make a version (provenance.makes_version also drops dry runs)
        where = (f"resource = {p} AND namespace = {p} AND name = {p} AND stage = 'ResponseComplete' "
                 "AND verb IN ('create', 'update', 'patch', 'delete') AND code >= 200 AND code < 300 "
                 "AND subresource IN ('', 'status', 'scale')")
        args: list[Any] = [resource, namespace, name]
        if group is not None:
            where += f" AND api_group = {p}"
            args.append(group)
        sql = f"SELECT seq, ts, api_group, event FROM audit_events WHERE {where} ORDER BY ts DESC, seq DESC"
        if limit is not None:
            sql += f" LIMIT {p}"
        older = f"{where} AND (ts < {p} OR (ts = {p} AND seq < {p}))"

        def query(conn: Any) -> tuple[ObjectRows, int]:
            rows = conn.execute(sql, [*args, limit] if limit is not None else args).fetchall()
            omitted = 0
            if limit is not None and len(rows) == limit:  # dry runs make no version: not counted
                seq, ts = rows[-1][0], rows[-1][1]
                omitted = int(conn.execute(f"SELECT COUNT(*) FROM audit_events WHERE {older} AND dry = 0",
                                           (*args, ts, ts, seq)).fetchone()[0])
            return [(int(seq), str(g), self._load(conn, body)) for seq, _, g, body in reversed(rows)], omitted

        return await self._read(query)


def _settle(future: asyncio.Future[int], outcome: int | BaseException) -> None:
    if future.done():  # the chunk's sender went away; the outcome does not matter to anyone
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _covering(oldest: list[Any], excess: int) -> Iterator[Any]:
    """The oldest rows whose bytes add up to at least ``excess``."""
    freed = 0
    for row in oldest:
        if freed >= excess:
            return
        freed += int(row[1])
        yield row


def _json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # lone surrogates, escaped by the model's dumps fallback
        return json.loads(data)


def _pruned(conn: Any) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(max_seq), 0) FROM audit_pruned").fetchone()[0])
