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
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from functools import partial
from typing import Any, TypeVar

import orjson

from kube_audit.model.source import SourceId
from tailer.store.prunestore import PruneStore, _Fold
from tailer.store.rows import COLUMNS, Codec, EventFilter, InsertResult, Row, clean, origin_where, to_row

TAIL = ("meta", "origin", "event")  # the last fields of a Row, in order: ``_insert`` cuts them by position
if COLUMNS[-3:] != TAIL:
    raise ImportError(f"tailer.store.rows.Row must end with {TAIL}, not {COLUMNS[-3:]}")

T = TypeVar("T")
GROUP_ROWS = 20_000  # most rows one group commit takes
EventRows = list[tuple[int, dict[str, Any]]]
SourcedRows = list[tuple[int, dict[str, Any], SourceId]]  # (seq, event, where it came from)
SourcedJson = list[tuple[int, bytes, SourceId]]  # the same with the event's JSON
E = TypeVar("E")
UNNAMED = SourceId("", "")  # origin 0: events stored before issue 12, and what is inserted with no source
ObjectRows = list[tuple[int, str, dict[str, Any]]]


class StoreError(RuntimeError):
    """The database failed. ``transient`` (it is down, locked, full): the chunk is not acked and will be
    resent. Not transient: what was sent can never be stored (the sink then finds the records and
    rejects them, so that the rest is stored and acked)."""

    def __init__(self, message: str, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class Store(PruneStore):
    """Open with ``Store.open(target)``: a ``postgresql://`` URL or an SQLite file path."""

    kind = "store"
    ph = "?"  # the driver's placeholder
    assigns_seq = False  # inserts set ``seq`` from ``_reserve`` (with ``override``), not the database
    override = ""
    # what a reader may see of ``audit_events``: a prefix of the sequence that no open write transaction
    # can still commit into (one writer: every committed row)
    visible = "TRUE"
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
        self._pending: list[tuple[list[Row], SourceId, asyncio.Future[int], Any]] = []  # rows, from, result, link
        self._origin_ids: dict[SourceId, int] = {}  # writer thread: committed ids of audit_origins
        self._origin_names: dict[int, SourceId] = {0: UNNAMED}  # readers: the same, the other way round
        self._drainer: asyncio.Task[None] | None = None
        self._folds: deque[_Fold] = deque()  # loop thread only
        self._fold_now: _Fold | None = None  # writer thread: the job the running ``_insert`` takes

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

    async def insert(self, records: Sequence[Any], source: SourceId | None = None, link: Any = None) -> InsertResult:
        """Store a chunk from ``source`` durably; repeats of a stored (auditID, stage) are dropped (the
        first copy keeps its source). ``link`` (the chain stage's, tailer/chain) is written with the
        events, in the same transaction."""
        rows = [r for r in map(to_row, records) if r is not None]
        skipped = len(records) - len(rows)
        if not rows and (link is None or self.chain_key is None):  # a chained chunk keeps its place in the chain
            return InsertResult(0, 0, skipped)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((rows, source or UNNAMED, future, link))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name=f"{self.kind}-group-commit")
        inserted = await future
        return InsertResult(inserted, len(rows) - inserted, skipped)

    async def _drain(self) -> None:
        while self._pending or self._folds:
            if not self._pending:  # no chunk to ride with: the job runs alone, in the writer's idle time
                await self._run_alone(self._folds.popleft())
                continue
            group: list[tuple[list[Row], SourceId, asyncio.Future[int], Any]] = []
            size = 0
            while self._pending and (not group or size + len(self._pending[0][0]) <= GROUP_ROWS):
                group.append(self._pending.pop(0))
                size += len(group[-1][0])
            fold = self._folds.popleft() if self._folds else None
            try:
                counts = await self._write(partial(self._insert_folding, fold,
                                                   [(rows, src) for rows, src, _, _ in group],
                                                   [link for _, _, _, link in group]))
            except StoreError as exc:
                if fold is not None:  # not committed: it runs again, with the next group or alone
                    self._folds.appendleft(fold)
                if len(group) == 1:
                    _settle(group[0][2], exc)
                    continue
                for rows, src, future, link in group:  # one by one: only a chunk the database refuses fails
                    try:
                        _settle(future, (await self._write(partial(self._insert, [(rows, src)], [link])))[0])
                    except StoreError as one:
                        _settle(future, one)
            else:
                for (_, _, future, _), count in zip(group, counts, strict=True):
                    _settle(future, count)
                if fold is not None:
                    if fold.ran:
                        _settle(fold.future, fold.outcome)
                    else:  # the transaction ended before it was reached
                        self._folds.appendleft(fold)

    def _insert_folding(self, fold: _Fold | None, chunks: list[tuple[list[Row], SourceId]],
                        links: Sequence[Any]) -> list[int]:
        self._fold_now = fold
        try:
            return self._insert(chunks, links)
        finally:
            self._fold_now = None

    async def _run_alone(self, fold: _Fold) -> None:
        def job() -> Any:
            with self._alone() as conn:
                return fold.fn(conn)

        try:
            _settle(fold.future, await self._write(job))
        except StoreError as exc:
            _settle(fold.future, exc)

    def _insert(self, chunks: list[tuple[list[Row], SourceId]], links: Sequence[Any] = ()) -> list[int]:
        p = self.ph
        groups = [rows for rows, _ in chunks]
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
        n = sum(len(rows) for rows in groups)
        fresh: dict[SourceId, int] = {}
        with self._transaction() as conn:
            first, hw = self._reserve(conn, n, max((r.ts for rows in groups for r in rows), default=0.0))
            seq = first
            counts = []
            lo = first - 1
            for i, (rows, source) in enumerate(chunks):
                origin = self._origin_id(conn, source, fresh)
                start = seq
                counts.append(self._insert_chunk(conn, rows, origin, start, hw) if rows else 0)
                hw = max(hw, max((r.ts for r in rows), default=hw))
                seq += len(rows)
                if self.chain_key is not None:  # the chunk's link, with its events (chainstore.py)
                    link = links[i] if i < len(links) else None
                    if self.assigns_seq:  # its rows are in its own reserved block, whoever else commits
                        placed = range(start, seq) if counts[-1] == len(rows) else None
                        self._chain_link(conn, link, rows, start - 1, placed, seq - 1)
                    else:  # one writer: its rows are the newest, one after another when none was a repeat
                        placed = self._newest(conn, len(rows)) if counts[-1] == len(rows) else None
                        lo = self._chain_link(conn, link, rows, lo, placed)
            added = sum(counts)
            if added == n:
                size = sum(r.bytes for rows in groups for r in rows)
            else:  # some were repeats: the new rows are this transaction's, from ``first`` on
                size = int(conn.execute(f"SELECT COALESCE(SUM(bytes), 0) FROM audit_events WHERE seq >= {p} "
                                        f"AND seq < {p}", (first, first + n)).fetchone()[0])
            self._add_totals(conn, added, size)
            self._fold(conn)  # a retention job waiting for a commit (retention.py): no fsync of its own
        self._origin_ids.update(fresh)  # committed: from now on known without a read
        return counts

    def _add_totals(self, conn: Any, rows: int, size: int) -> None:
        """Count an insert transaction's new rows and bytes in the running totals (``totals``)."""
        conn.execute(f"UPDATE audit_totals SET rows = rows + {self.ph}, bytes = bytes + {self.ph} WHERE id = 1",
                     (rows, size))

    def _origin_id(self, conn: Any, source: SourceId, fresh: dict[SourceId, int]) -> int:
        """The id of ``source`` in ``audit_origins``, added in this transaction when it is new (one read
        per new source per process; the common case is a dictionary lookup)."""
        known = self._origin_ids.get(source, fresh.get(source))
        if known is not None:
            return known
        p, names = self.ph, (clean(source.cluster), clean(source.name))
        pick = f"SELECT id FROM audit_origins WHERE cluster = {p} AND source = {p}"
        row = conn.execute(pick, names).fetchone()
        if row is None:
            new = int(conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM audit_origins").fetchone()[0])
            conn.execute(f"INSERT INTO audit_origins (id, cluster, source) VALUES ({p}, {p}, {p}) "
                         "ON CONFLICT DO NOTHING", (new, *names))
            row = conn.execute(pick, names).fetchone()
            if row is None:  # another replica took that id in the meantime: the chunk is resent
                raise StoreError(f"{self.kind}: could not name source {source}; retrying")
        fresh[source] = int(row[0])
        return fresh[source]

    def _insert_sql(self) -> str:
        """The INSERT of one event (a repeat of a stored one is dropped)."""
        own = ["seq"] if self.assigns_seq else []
        names = [*own, "hw", *COLUMNS]
        return (f"INSERT INTO audit_events ({', '.join(names)}) {self.override if own else ''}"
                f"VALUES ({', '.join([self.ph] * len(names))}) ON CONFLICT (ts, audit_id, stage) DO NOTHING")

    def _reserve(self, conn: Any, n: int, top: float) -> tuple[int, float]:
        """Before the first write of an insert transaction: (the sequence its first row gets, the ``hw``
        below it). Writes are serialised here (one writer): the next number above the last row. A driver
        whose writers run concurrently sets ``assigns_seq`` and hands out the numbers itself."""
        last = conn.execute("SELECT seq, hw FROM audit_events ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(last[0]) + 1, float(last[1])) if last else (1, float("-inf"))

    def _executemany(self, conn: Any, sql: str, params: list[tuple[Any, ...]]) -> int:
        raise NotImplementedError

    def _insert_chunk(self, conn: Any, rows: list[Row], origin: int, first: int, hw: float) -> int:
        """One chunk's rows from ``origin``, compressed, in sequence order from ``first``, each with the
        running maximum of ``ts`` (``hw``: the one below ``first``); how many were new (not repeats)."""
        params = []
        for seq, r, body in zip(range(first, first + len(rows)), rows,
                                self.codec.compress_all([r.event for r in rows]), strict=True):
            hw = max(hw, r.ts)  # the running maximum: non-decreasing in seq
            own = (seq,) if self.assigns_seq else ()
            params.append((*own, hw, *r[:-2], origin, body))  # a Row ends with origin, event (TAIL)
        return self._executemany(conn, self._insert_sql(), params)

    def _newest(self, conn: Any, n: int) -> range:
        """The sequences of the ``n`` rows the last ``_executemany`` inserted, all of them (one writer)."""
        raise NotImplementedError

    def _keep_dict(self, trained: Any) -> None:
        """Store the bodies' zstd dictionary, trained on the first events, then use it (not before it
        is committed: a row must never name a dictionary the store lacks)."""
        with self._transaction() as conn:
            dict_id, stored = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM audit_dicts").fetchone()[0]), 0
            while not stored:  # another replica may store one at the same moment: take the next free id
                dict_id += 1
                data = self.codec.with_id(trained, dict_id)
                stored = self._executemany(conn, f"INSERT INTO audit_dicts (id, data) VALUES ({self.ph}, {self.ph}) "
                                           "ON CONFLICT (id) DO NOTHING", [(dict_id, data)])
        self.codec.use(dict_id, data)
        self._training = None

    def _known_dicts(self, conn: Any) -> None:
        for dict_id, data in conn.execute("SELECT id, data FROM audit_dicts ORDER BY id").fetchall():
            self.codec.use(int(dict_id), bytes(data))

    def _fetch(self, conn: Any) -> Callable[[int], bytes | None]:
        """Reads a zstd dictionary this process has not seen yet (another writer trained it)."""
        def fetch(dict_id: int) -> bytes | None:
            row = conn.execute(f"SELECT data FROM audit_dicts WHERE id = {self.ph}", (dict_id,)).fetchone()
            return bytes(row[0]) if row else None

        return fetch

    def _load_all(self, conn: Any, bodies: list[Any]) -> list[dict[str, Any]]:
        return self.codec.load_all(bodies, self._fetch(conn))

    async def probe(self) -> None:
        """One small real write (a row inserted and deleted again, committed): the store is healthy
        again when it succeeds. The row takes a sequence number that no event will have."""
        p = self.ph
        values = Row("probe", "probe", 0.0, "", "", "", "", "", "", "", "", None, 0, 0, None, 0, b"{}")

        def touch() -> None:
            with self._transaction() as conn:
                seq, hw = self._reserve(conn, 1, 0.0)
                conn.execute(self._insert_sql(), ((seq,) if self.assigns_seq else ()) + (max(hw, 0.0), *values))
                conn.execute(f"DELETE FROM audit_events WHERE audit_id = 'probe' AND stage = 'probe' AND ts = {p}",
                             (0.0,))

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

    # ---- retention (the writes: prunestore.py; tailer/store/retention.py decides) ----

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
        """The highest sequence stored (and ``visible``) or pruned (0 when nothing was ever stored)."""
        def query(conn: Any) -> int:
            stored = conn.execute(f"SELECT COALESCE(MAX(seq), 0) FROM audit_events WHERE {self.visible}").fetchone()[0]
            return max(int(stored), _pruned(conn))

        return await self._read(query)

    async def pruned(self) -> int:
        """The highest sequence retention ever deleted (0 when none): every event above it is kept."""
        return await self._read(_pruned)

    async def count(self) -> int:
        return (await self.totals())[0]

    async def events(self, flt: EventFilter, after: int = 0, limit: int = 500) -> EventRows:
        """Events matching ``flt`` with seq > ``after``, in sequence order (only ``visible`` ones: a follower
        that resumes after the last one it got never misses a row)."""
        return [(seq, event) for seq, event, _ in await self.sourced_events(flt, after, limit)]

    async def sourced_events(self, flt: EventFilter, after: int = 0, limit: int = 500) -> SourcedRows:
        """``events``, each with the (cluster, source) it came from."""
        return await self._sourced(flt, after, limit, self._load_all)

    async def sourced_json(self, flt: EventFilter, after: int = 0, limit: int = 500) -> SourcedJson:
        """``sourced_events`` with each event's JSON bytes, decompressed, not parsed."""
        return await self._sourced(flt, after, limit, lambda conn, bodies: self.codec.raw_all(bodies, self._fetch(conn)))

    async def _sourced(self, flt: EventFilter, after: int, limit: int,
                       bodies_of: Callable[[Any, list[Any]], list[E]]) -> list[tuple[int, E, SourceId]]:
        clauses, args = flt.where(self.ph)
        sql = (f"SELECT seq, origin, event FROM audit_events WHERE "
               f"{' AND '.join([f'seq > {self.ph}', *clauses, self.visible])} ORDER BY seq LIMIT {self.ph}")

        def query(conn: Any) -> list[tuple[int, E, SourceId]]:
            start = after
            if flt.since is not None:  # nothing below the first row whose running maximum reaches ``since``
                start = max(start, self._first_at(conn, flt.since) - 1)
            rows = conn.execute(sql, (start, *args, limit)).fetchall()
            names = self._names(conn, {int(origin) for _, origin, _ in rows})
            events = bodies_of(conn, [body for _, _, body in rows])
            return [(int(seq), event, names[int(origin)]) for (seq, origin, _), event in zip(rows, events, strict=True)]

        return await self._read(query)

    def _names(self, conn: Any, ids: set[int]) -> dict[int, SourceId]:
        """The (cluster, source) of each origin id (read again when one is new to this process)."""
        names = self._origin_names
        if not ids <= names.keys():
            read = conn.execute("SELECT id, cluster, source FROM audit_origins").fetchall()
            names = self._origin_names = {**names, **{int(i): SourceId(str(c), str(s)) for i, c, s in read}}
        return {i: names.get(i, UNNAMED) for i in ids}

    async def rows_after(self, after: int, limit: int, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """Every event with seq > ``after``, in sequence order, as (seq, *``columns``, the event's JSON
        bytes): decompressed, not parsed (what the API's watch ring keeps). An ``origin`` column comes as
        the SourceId it names."""
        sql = (f"SELECT seq, {', '.join(columns)}, event FROM audit_events WHERE seq > {self.ph} AND {self.visible} "
               f"ORDER BY seq LIMIT {self.ph}")

        def query(conn: Any) -> list[tuple[Any, ...]]:
            rows = conn.execute(sql, (after, limit)).fetchall()
            if "origin" in columns:
                at = 1 + list(columns).index("origin")
                names = self._names(conn, {int(r[at]) for r in rows})
                rows = [(*r[:at], names[int(r[at])], *r[at + 1:]) for r in rows]
            bodies = self.codec.raw_all([r[-1] for r in rows], self._fetch(conn))
            return [(*r[:-1], body) for r, body in zip(rows, bodies, strict=True)]

        return await self._read(query)

    async def metas(self, first: int, last: int) -> dict[int, dict[str, Any]]:
        """What came beside the events from ``first`` to ``last`` (sequences, inclusive) on the forward
        protocol, ``{"tag", "metadata"}``, for those that have it (a primary-key range: one cheap read)."""
        sql = (f"SELECT seq, meta FROM audit_events WHERE seq >= {self.ph} AND seq <= {self.ph} "
               "AND meta IS NOT NULL")
        rows = await self._read(lambda c: c.execute(sql, (first, last)).fetchall())
        return {int(seq): _json(bytes(meta)) for seq, meta in rows}

    async def object_events(self, group: str | None, resource: str, namespace: str, name: str,
                            limit: int | None = None, cluster: str | None = None) -> ObjectRows:
        """Successful mutating ResponseComplete events of one object: (seq, api group, event), oldest
        first; with ``limit``, only the newest ``limit`` of them."""
        rows, _ = await self.object_history(group, resource, namespace, name, limit, cluster)
        return rows

    def _object_where(self, group: str | None, resource: str, namespace: str, name: str,
                      cluster: str | None = None, source: str | None = None) -> tuple[str, list[Any]]:
        p = self.ph
        # the events that can make a version (provenance.makes_version also drops dry runs)
        where = (f"resource = {p} AND namespace = {p} AND name = {p} AND stage = 'ResponseComplete' "
                 "AND verb IN ('create', 'update', 'patch', 'delete') AND code >= 200 AND code < 300 "
                 "AND subresource IN ('', 'status', 'scale')")
        args: list[Any] = [resource, namespace, name]
        if group is not None:
            where += f" AND api_group = {p}"
            args.append(group)
        clauses, more = origin_where(p, cluster, source)
        return " AND ".join([where, *clauses]), args + more

    async def object_clusters(self, group: str | None, resource: str, namespace: str, name: str,
                              source: str | None = None) -> list[str]:
        """The clusters that events of one object came from, sorted. A store that knows one cluster only
        (the common case) answers without reading the object's events."""
        where, args = self._object_where(group, resource, namespace, name, None, source)

        def query(conn: Any) -> list[str]:
            known = [str(c) for c, in conn.execute("SELECT DISTINCT cluster FROM audit_origins").fetchall()]
            if len(known) <= 1:
                return known
            sql = f"SELECT DISTINCT cluster FROM audit_origins WHERE id IN (SELECT origin FROM audit_events WHERE {where})"
            return sorted(str(c) for c, in conn.execute(sql, args).fetchall())

        return await self._read(query)

    async def object_history(self, group: str | None, resource: str, namespace: str, name: str,
                             limit: int | None = None, cluster: str | None = None,
                             source: str | None = None) -> tuple[ObjectRows, int]:
        """``object_events`` and how many older versions ``limit`` left out. Only the newest ``limit``
        events are read whole; the older ones are counted (dry runs, which make no version, apart).
        ``cluster``, ``source``: only the events from there (an object history never mixes clusters:
        the API asks ``object_clusters`` first)."""
        p = self.ph
        where, args = self._object_where(group, resource, namespace, name, cluster, source)
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
            rows.reverse()
            events = self._load_all(conn, [body for *_, body in rows])
            return [(int(seq), str(g), event) for (seq, _, g, _), event in zip(rows, events, strict=True)], omitted

        return await self._read(query)


def _settle(future: asyncio.Future[int], outcome: int | BaseException) -> None:
    if future.done():  # the chunk's sender went away; the outcome does not matter to anyone
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # lone surrogates, escaped by the model's dumps fallback
        return json.loads(data)


def _pruned(conn: Any) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(max_seq), 0) FROM audit_pruned").fetchone()[0])
