"""The PostgreSQL store, shared by several tailer replicas. The only importer of psycopg.

One writer connection and a pool of reader connections (psycopg_pool), each reader with a
``statement_timeout``. Replicas insert concurrently: an insert transaction first calls ``audit_reserve``
(schema v4, replicas), which under a lock held for microseconds gives it its transaction id and its block
of sequence numbers, so a transaction with a higher id always has higher numbers. Readers see only rows
whose ``xid`` is below their snapshot's ``xmin`` (``visible``): every transaction older than that has
ended, and every one still open will commit above each row shown. So a reader that has seen ``seq`` N
never later finds a new row below N (watchers and the ConfigMap projection resume by sequence without
gaps), at the price of a row showing only once the write transactions older than its own have ended.
Nothing else makes two replicas wait for each other: a chunk goes in by COPY, and each replica counts its
rows in its own row of ``audit_totals`` (one row for all made each insert wait for the other's commit).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from tailer.store import schema
from tailer.store.base import Store, StoreError, T
from tailer.store.rows import COLUMNS

US = 1e6  # ``audit_events_hw`` counts microseconds
# What an insert writes (``Store._insert_sql``'s columns), typed for binary COPY; the others are text.
INSERTED = ("seq", "hw", *COLUMNS)
_TYPES = {"seq": "int8", "hw": "float8", "ts": "float8", "code": "int8", "dry": "int2", "bytes": "int4",
          "meta": "bytea", "origin": "int4", "event": "bytea"}
COPY_TYPES = [_TYPES.get(c, "text") for c in INSERTED]
# A chunk's events go in by binary COPY (far less CPU on both sides than one INSERT per row: no per-row
# statement, no speculative insertion), straight into audit_events inside a savepoint. COPY has no ON
# CONFLICT: when some are stored already (a resend) the savepoint is rolled back and the chunk goes in
# row by row with ON CONFLICT DO NOTHING, like a small chunk (for which the savepoint's two round trips
# cost more than COPY saves).
COPY_EVENTS = f"COPY audit_events ({', '.join(INSERTED)}) FROM STDIN (FORMAT BINARY)"
COPY_ROWS = 100  # rows a chunk needs to go in by COPY
# A transaction keeps the id of each subtransaction that wrote; past 64, every reader's snapshot overflows
# its cache of them (visibility checks then read pg_subtrans): a group of many chunks COPYs the first ones.
MAX_SAVEPOINTS = 32


class PostgresStore(Store):
    kind = "postgresql"
    ph = "%s"
    assigns_seq = True
    override = "OVERRIDING SYSTEM VALUE "
    visible = "(xid IS NULL OR xid < (SELECT pg_snapshot_xmin(pg_current_snapshot())))"
    errors = (psycopg.Error,)
    folds_prunes = False  # retention deletes on a connection of its own: row locks let chunks commit beside

    def is_transient(self, exc: BaseException) -> bool:
        # SQLSTATE classes caused by the data, not the database's state: 22 data exception (a NUL byte, a
        # number out of range), 23 integrity constraint, 54 program limit (an index row too large)
        if isinstance(exc, psycopg.Error):
            return not (exc.sqlstate or "").startswith(("22", "23", "54"))
        return False

    def __init__(self, target: str, readers: int = 4, query_timeout: float = 10.0) -> None:
        super().__init__(target, readers, query_timeout)
        self._wconn: psycopg.Connection[Any] | None = None
        self._pool: ConnectionPool[Any] | None = None
        # this process's row of audit_totals (row 1 and the rows of others are summed on read): two
        # replicas updating one row would each wait for the other's commit (its row lock)
        self._slot = random.randint(2, 2**31 - 1)
        self._savepoints = 0  # taken by the current write transaction
        self._pruner = ThreadPoolExecutor(1, thread_name_prefix="postgresql-prune")
        self._pconn: psycopg.Connection[Any] | None = None  # the pruner thread's

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.target, autocommit=True, connect_timeout=10)

    def _setup(self) -> None:
        with self._transaction() as conn:
            # replicas starting together: one creates or migrates the schema, the others then find it
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (schema.WRITE_LOCK_KEY,))
            found: Any = conn.execute("SELECT to_regclass('schema_version'), to_regclass('audit_events')").fetchone()
            current = 0
            if found[0] is not None:
                current = int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])  # type: ignore[index]
            elif found[1] is not None:
                current = 1  # the layout from before versioning
            if current > schema.VERSION:
                raise StoreError(f"postgresql: schema version {current} is newer than this tailer's "
                                 f"{schema.VERSION}: run a newer tailer")
            for statement in schema.plan(current, schema.POSTGRES):
                conn.execute(statement)
            # fold every replica's row of the totals into row 1 (no insert runs meanwhile: they take the
            # lock above shared): the rows of replicas gone do not pile up
            conn.execute("WITH gone AS (DELETE FROM audit_totals WHERE id <> 1 RETURNING rows, bytes) "
                         "UPDATE audit_totals SET rows = rows + (SELECT COALESCE(SUM(rows), 0) FROM gone), "
                         "bytes = bytes + (SELECT COALESCE(SUM(bytes), 0) FROM gone) WHERE id = 1")
            self._known_dicts(conn)
        timeout = int(self.query_timeout * 1000)

        def configure(conn: psycopg.Connection[Any]) -> None:
            conn.execute(f"SET statement_timeout = {timeout}")

        self._pool = ConnectionPool(self.target, min_size=1, max_size=self.readers, open=False,
                                    kwargs={"autocommit": True, "connect_timeout": 10}, configure=configure,
                                    name="store-read")
        self._pool.open(wait=True, timeout=10)

    async def close(self) -> None:
        await super().close()
        await asyncio.get_running_loop().run_in_executor(self._pruner, self._close_pruner)
        self._pruner.shutdown()

    def _close_pruner(self) -> None:
        if self._pconn is not None:
            self._pconn.close()
            self._pconn = None

    async def _prune_job(self, fn: Callable[[Any], T]) -> T:
        """Retention's transaction on its own connection and thread, so a chunk never queues behind it on
        the writer: the rows it deletes are not the ones inserts touch, and the one row both update
        (``audit_totals``) it updates last, just before its commit."""
        def job() -> T:
            if self._pconn is None or self._pconn.closed or self._pconn.broken:
                self._pconn = self._connect()
            with self._pconn.transaction():
                return fn(self._pconn)

        return await self._call(self._pruner, job)

    def _delete_upto(self, conn: Any, top: int) -> tuple[int, int]:
        # what this statement deleted: another replica's retention may have taken some of them
        found = conn.execute("WITH gone AS (DELETE FROM audit_events WHERE seq <= %s RETURNING bytes) "
                             "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM gone", (top,)).fetchone()
        return int(found[0]), int(found[1])

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._wconn is not None:
            self._wconn.close()
            self._wconn = None

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        if self._wconn is None:
            self._wconn = self._connect()
        conn = self._wconn
        self._savepoints = 0
        with conn.transaction():
            yield conn

    def _reserve(self, conn: Any, n: int, top: float) -> tuple[int, float]:
        # rounded up, plus one: the next reservation's base is >= every hw of this one
        top_us = max(0, math.ceil(top * US) + 1) if math.isfinite(top) else 0
        first, base_us = conn.execute("SELECT * FROM audit_reserve(%s, %s)", (n, top_us)).fetchone()
        return int(first), int(base_us) / US

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection[Any]]:
        assert self._pool is not None
        with self._pool.connection(timeout=self.query_timeout) as conn:
            yield conn

    def _after_error(self) -> None:
        conn = self._wconn  # a broken connection is reopened on next use
        if conn is not None and (conn.broken or conn.closed):
            self._wconn = None

    def _executemany(self, conn: Any, sql: str, params: list[tuple[Any, ...]]) -> int:
        if (len(params) >= COPY_ROWS and self._savepoints < MAX_SAVEPOINTS and sql == self._insert_sql()
                and self._copy_events(conn, params)):  # a chunk's events, none of them stored already
            return len(params)
        with conn.cursor() as cur:
            cur.executemany(sql, params)
            return int(cur.rowcount)

    def _copy_events(self, conn: Any, params: list[tuple[Any, ...]]) -> bool:
        """COPY one chunk's rows; False (and nothing written) when some of them are stored already."""
        self._savepoints += 1
        try:
            with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_EVENTS) as copy:  # a savepoint
                copy.set_types(COPY_TYPES)
                for row in params:
                    copy.write_row(row)
        except psycopg.errors.UniqueViolation:
            return False  # rolled back to the savepoint
        return True

    def _add_totals(self, conn: Any, rows: int, size: int) -> None:
        conn.execute("INSERT INTO audit_totals (id, rows, bytes) VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE "
                     "SET rows = audit_totals.rows + excluded.rows, bytes = audit_totals.bytes + excluded.bytes",
                     (self._slot, rows, size))

    async def totals(self) -> tuple[int, int]:
        row = await self._read(lambda c: c.execute("SELECT COALESCE(SUM(rows), 0), COALESCE(SUM(bytes), 0) "
                                                   "FROM audit_totals").fetchone())
        return int(row[0]), int(row[1])
