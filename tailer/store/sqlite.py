"""The SQLite store: one file in WAL mode, one writer connection, one connection per reader thread
(WAL readers run concurrently with each other and with the writer), and a checkpointer thread with a
connection of its own. The only importer of sqlite3."""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import accumulate
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

from kube_audit.runtime.observability import get_logger
from tailer.store import schema
from tailer.store.base import Store, StoreError
from tailer.store.rows import COLUMNS, Row

RECLAIM_PAGES = 4096  # pages (16 MiB at 4 KiB) given back to the file system per retention run at most
RECLAIM_STEP = 512  # pages per step
CHECKPOINT_GAP = 0.25  # seconds at least between two checkpoints (each copies what the WAL gained meanwhile)
BACKSTOP_PAGES = 20_000  # WAL pages (80 MiB at 4 KiB) past which a commit checkpoints after all (SQLite's default: 1,000)
_ts = itemgetter(COLUMNS.index("ts"))  # a Row's timestamp
log = get_logger(component="store")


class Checkpointer:
    """Copies the WAL's committed pages into the database file on a thread of its own, so that no commit
    waits for it. SQLite's automatic checkpoint runs inside the commit that takes the WAL past 1,000 pages:
    that chunk's ack waited for the copy and the database file's fsync (at 10M rows a prune's deletes dirty
    index pages all over the file: the longest commit wait during one fell from 248 to 214 ms). A PASSIVE
    checkpoint never blocks the writer or the readers; it copies what no reader still needs, and the writer
    starts the WAL over once all of it was copied. Durability is the commits' (the WAL is synced at each
    one), not this."""

    def __init__(self, connect: Callable[[bool], sqlite3.Connection], gap: float = CHECKPOINT_GAP) -> None:
        self._connect, self.gap = connect, gap
        self._wake, self._stopping = threading.Event(), threading.Event()
        self.done = 0  # checkpoints that ran (tests wait on it)
        self._failed = ""
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """The writer committed: checkpoint soon (at most once per ``gap``)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            self._wake.wait()
            if self._stopping.is_set():
                break
            self._wake.clear()
            try:
                conn = conn or self._connect(False)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.done += 1
                self._failed = ""
            except sqlite3.Error as exc:  # the next commit tries again; said once per kind of failure
                if str(exc) != self._failed:
                    self._failed = str(exc)
                    log.warning("store_checkpoint_failed", error=self._failed)
                if conn is not None:
                    conn.close()
                    conn = None
            self._stopping.wait(self.gap)  # the WAL grows meanwhile: one copy (and fsync) for many commits
        if conn is not None:
            conn.close()


class SqliteStore(Store):
    kind = "sqlite"
    ph = "?"
    errors = (sqlite3.Error,)

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError)  # locked, I/O error, disk full

    def __init__(self, target: str, readers: int = 4, query_timeout: float = 10.0) -> None:
        super().__init__(target, readers, query_timeout)
        self._wconn: sqlite3.Connection | None = None
        self._local = threading.local()
        self._rconns: list[sqlite3.Connection] = []
        self._checkpointer: Checkpointer | None = None
        self._insert_json = {meta: _json_insert(meta) for meta in (False, True)}

    def _connect(self, write: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.target, isolation_level=None, check_same_thread=False, timeout=30,
                               cached_statements=128)
        if write:
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect on a new file, before WAL
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # an ack means the commit is on disk
        if write:
            # the Checkpointer's, off the commit path; the writer checkpoints itself only as a backstop,
            # should the WAL ever reach this many pages (the Checkpointer failing, or starved)
            conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
        else:
            conn.execute("PRAGMA query_only=1")
        return conn

    def _setup(self) -> None:
        Path(self.target).parent.mkdir(parents=True, exist_ok=True)
        self._wconn = self._connect(True)
        with self._transaction() as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            current = 0
            if "schema_version" in tables:
                current = int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])
            elif "audit_events" in tables:
                current = 1  # the layout from before versioning
            if current > schema.VERSION:
                raise StoreError(f"sqlite: {self.target} has schema version {current}, newer than this "
                                 f"tailer's {schema.VERSION}: run a newer tailer")
            for statement in schema.plan(current, schema.SQLITE):
                conn.execute(statement)
            self._known_dicts(conn)
        self._checkpointer = Checkpointer(self._connect)

    def _close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        for conn in [self._wconn, *self._rconns]:
            if conn is not None:
                conn.close()
        self._wconn = None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._wconn
        if conn is None:
            conn = self._wconn = self._connect(True)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
            if self._checkpointer is not None:
                self._checkpointer.kick()
        except BaseException:
            # SQLite rolls back by itself on some errors (a full disk): a second ROLLBACK would fail with
            # "cannot rollback - no transaction is active" and hide the error that matters.
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise

    @contextmanager
    def _alone(self) -> Iterator[sqlite3.Connection]:
        """A retention job alone commits without an fsync of its own (synchronous=NORMAL): the next chunk's
        commit (FULL) syncs the WAL with it, and WAL transactions survive a crash as a prefix, so a crash
        before that loses the job whole (it runs again; totals, pruned mark and anchor go with its rows),
        never a chunk."""
        if self._wconn is None:
            self._wconn = self._connect(True)
        conn = self._wconn
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            with self._transaction() as conn:
                yield conn
        finally:
            conn.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect(False)
            self._rconns.append(conn)
        deadline = time.monotonic() + self.query_timeout
        # every ~10k virtual machine steps (~0.1 ms): abort the statement once past the deadline
        conn.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        try:
            yield conn
        except sqlite3.OperationalError as exc:
            if time.monotonic() > deadline and "interrupt" in str(exc):
                raise sqlite3.OperationalError(
                    f"query stopped after {self.query_timeout:g}s (--store-query-timeout): narrow the filter") from exc
            raise
        finally:
            conn.set_progress_handler(None, 0)

    def _executemany(self, conn: Any, sql: str, params: list[tuple[Any, ...]]) -> int:
        return int(conn.executemany(sql, params).rowcount)

    def _insert_chunk(self, conn: Any, rows: list[Row], origin: int, first: int, hw: float) -> int:
        """A chunk in one INSERT of three values (``_json_insert``): its rows as one JSON array, which SQLite
        takes apart itself (json_each), their compressed bodies end to end in one blob, and their origin. Each
        row carries its ``hw`` (the running maximum of ``ts``, from the ``hw`` below the chunk) and its body's
        place in the blob, summed here: in SQL they were a window, whose sorter cost the writer more than
        the sums cost us. Bound value by value (``Store._insert_chunk``), 1,000 rows were ~17,000 values bound
        and 4 statements stepped, each with the GIL held or taken back from the busy event loop; here the loop
        waits for the writer once."""
        if not math.isfinite(sum(map(_ts, rows))):  # JSON has no inf or nan (never from parse)
            return super()._insert_chunk(conn, rows, origin, first, hw)
        metas = any(r.meta is not None for r in rows)
        blob, lengths = self.codec.compress_joined([r.event for r in rows])
        hws = accumulate(map(_ts, rows), max, initial=hw)
        next(hws)  # (the hw below the chunk)
        starts = accumulate(lengths[:-1], initial=1)  # where each body begins (substr counts from 1)
        try:
            if metas:  # JSON text: orjson made it (UTF-8); the column keeps it as a blob, as bound
                doc = orjson.dumps([(h, *r[:-3], None if r.meta is None else r.meta.decode(), s, n)
                                    for r, h, s, n in zip(rows, hws, starts, lengths, strict=True)])
            else:
                doc = orjson.dumps([(h, *r[:-3], s, n) for r, h, s, n in zip(rows, hws, starts, lengths, strict=True)])
        except (ValueError, TypeError):  # (orjson.JSONEncodeError is a TypeError) bound value by value
            return super()._insert_chunk(conn, rows, origin, first, hw)
        return int(conn.execute(self._insert_json[metas], (doc, blob, origin)).rowcount)

    def _newest(self, conn: Any, n: int) -> range:
        last = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])  # AUTOINCREMENT: one by one
        return range(last - n + 1, last + 1)

    async def reclaim(self) -> None:
        """Up to ``RECLAIM_PAGES`` free pages given back, ``RECLAIM_STEP`` per retention job (each rides
        in a group commit like a delete batch: moving pages is writer time a chunk would wait for)."""
        def step(conn: sqlite3.Connection) -> int:
            conn.execute(f"PRAGMA incremental_vacuum({RECLAIM_STEP})").fetchall()  # one page per row
            return int(conn.execute("PRAGMA freelist_count").fetchone()[0])

        for _ in range(RECLAIM_PAGES // RECLAIM_STEP):
            if await self._prune_write(step) == 0:
                break


def _json_insert(metas: bool) -> str:
    """``_insert_chunk``'s INSERT: ?1 the rows (each its ``hw``, then the Row's fields up to ``bytes``, then
    ``meta`` when ``metas``, then its body's place in ?2 and its length), ?2 the bodies end to end, ?3 the
    origin. Each row's JSON text is taken out of the array once (``r``, materialized: json_each made it
    again for every ``->>``), and rows go in in the array's order, so they take their sequence numbers in
    the chunk's order."""
    data = COLUMNS[:COLUMNS.index("meta")]
    at = 1 + len(data) + metas  # where the body's place is
    names = ["hw", *data, "meta", "origin", "event"]
    values = ["value->>0", *(f"value->>{i + 1}" for i in range(len(data))),
              f"CAST(value->>{len(data) + 1} AS BLOB)" if metas else "NULL", "?3",
              f"substr(?2, value->>{at}, value->>{at + 1})"]
    # (WHERE true: without it SQLite would read ON CONFLICT as the join's ON)
    # (the WITH after INSERT: a statement that begins with INSERT is one whose rowcount sqlite3 counts)
    return (f"INSERT INTO audit_events ({', '.join(names)}) "
            "WITH r(value) AS MATERIALIZED (SELECT value FROM json_each(CAST(?1 AS TEXT))) "
            f"SELECT {', '.join(values)} FROM r WHERE true ON CONFLICT (ts, audit_id, stage) DO NOTHING")
