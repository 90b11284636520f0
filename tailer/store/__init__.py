"""The audit store: SQLite (one file, WAL) or PostgreSQL (shared by several tailer replicas).

The only module that talks to a database. Blocking calls run on two single-thread executors, one for
writes and one for reads, each with its own connection, so the event loop never waits on the database
and a slow query never holds up an ack.

One table, ``audit_events``: ``seq`` (the store sequence, also the API's resourceVersion), the columns the
API filters on, and the redacted event as JSON text. Inserts are idempotent on (audit_id, stage).
On PostgreSQL every insert transaction takes a transaction-scoped advisory lock first, so sequence
numbers become visible in commit order across replicas: a reader that has seen ``seq`` N never later
finds a new row below N (watchers resume by sequence without gaps). Retention records the highest
sequence it ever deleted in ``audit_pruned`` (in the same transaction as the delete): a watcher that
resumes from below it may have missed an event and is told so (410 Expired) instead of skipping it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psycopg

from kube_audit.model.audit import AuditEvent, is_dry_run, parse

T = TypeVar("T")
WRITE_LOCK_KEY = 0x6B617564  # pg_advisory_xact_lock key: serialises inserts across replicas

COLUMNS = ("audit_id", "stage", "ts", "verb", "level", "username", "api_group", "resource", "namespace", "name",
           "subresource", "code", "bytes", "event")
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_events (
  seq {seq},
  audit_id TEXT NOT NULL, stage TEXT NOT NULL, ts {real} NOT NULL,
  verb TEXT NOT NULL, level TEXT NOT NULL, username TEXT NOT NULL,
  api_group TEXT NOT NULL, resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
  subresource TEXT NOT NULL, code INTEGER, bytes INTEGER NOT NULL, event TEXT NOT NULL,
  UNIQUE (audit_id, stage));
CREATE INDEX IF NOT EXISTS audit_events_object ON audit_events (resource, namespace, name, seq);
CREATE INDEX IF NOT EXISTS audit_events_namespace ON audit_events (namespace, seq);
CREATE INDEX IF NOT EXISTS audit_events_user ON audit_events (username, seq);
CREATE INDEX IF NOT EXISTS audit_events_ts ON audit_events (ts);
CREATE TABLE IF NOT EXISTS audit_pruned (id INTEGER PRIMARY KEY, max_seq BIGINT NOT NULL);
INSERT INTO audit_pruned (id, max_seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING
"""


class StoreError(RuntimeError):
    """The database failed. ``transient`` (it is down, locked, full): the chunk is not acked and will be
    resent. Not transient: what was sent can never be stored (the sink then finds the records and
    rejects them, so that the rest is stored and acked)."""

    def __init__(self, message: str, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


# SQLSTATE classes of errors caused by the data, not the database's state: 22 data exception (a NUL
# byte, a number out of range), 23 integrity constraint, 54 program limit (an index row too large)
_DETERMINISTIC_SQLSTATE = ("22", "23", "54")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, psycopg.Error):
        return not (exc.sqlstate or "").startswith(_DETERMINISTIC_SQLSTATE)
    if isinstance(exc, sqlite3.Error):
        return isinstance(exc, sqlite3.OperationalError)  # locked, I/O error, disk full
    return False  # OverflowError, UnicodeEncodeError, ...: binding the values failed


@dataclass(frozen=True)
class EventFilter:
    namespace: str | None = None
    user: str | None = None
    verb: str | None = None
    resource: str | None = None
    group: str | None = None  # None = any group
    name: str | None = None
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, exclusive
    level: str | None = None
    code: int | None = None

    def where(self) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("namespace", self.namespace), ("username", self.user), ("verb", self.verb),
                              ("resource", self.resource), ("api_group", self.group), ("name", self.name),
                              ("level", self.level), ("code", self.code)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if self.since is not None:
            clauses.append("ts >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append("ts < ?")
            args.append(self.until)
        return clauses, args


@dataclass(frozen=True)
class InsertResult:
    inserted: int
    duplicates: int
    skipped: int  # records that are not audit events (no auditID or stage)


def parse_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


def to_row(record: Any, now: float) -> tuple[Any, ...] | None:
    """The row of an audit event (parsed once by the pipeline: kube_audit/model/audit.py), None for a
    record that is not one."""
    ev = record if isinstance(record, AuditEvent) else parse(record)
    if not isinstance(ev, AuditEvent):
        return None
    v = ev.view
    body = ev.json.decode("utf-8", "replace")
    return (v.audit_id, v.stage, ev.ts or now, v.verb, v.level, v.user, v.group, v.resource, v.namespace,
            v.name, v.subresource, v.code, len(body), body)


class Store:
    """Open with ``Store.open(target)``: a ``postgresql://`` URL or an SQLite file path."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.postgres = target.startswith(("postgresql://", "postgres://"))
        self.kind = "postgresql" if self.postgres else "sqlite"
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="store-read")
        self._wconn: Any = None
        self._rconn: Any = None

    @classmethod
    async def open(cls, target: str) -> Store:
        store = cls(target)
        await store._run(store._writer, store._setup)
        return store

    async def close(self) -> None:
        def close(conn: Any) -> None:
            if conn is not None:
                conn.close()

        await self._run(self._writer, lambda: close(self._wconn))
        await self._run(self._reader, lambda: close(self._rconn))
        self._writer.shutdown()
        self._reader.shutdown()

    # ---- plumbing ----

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn)
        except (sqlite3.Error, psycopg.Error, OverflowError, UnicodeError) as exc:
            for name in ("_wconn", "_rconn"):  # a broken PostgreSQL connection is reopened on next use
                conn = getattr(self, name)
                if self.postgres and conn is not None and (conn.broken or conn.closed):
                    setattr(self, name, None)
            raise StoreError(f"{self.kind}: {exc}", is_transient(exc)) from exc

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.postgres else text

    def _connect(self, write: bool) -> Any:
        if self.postgres:
            return psycopg.connect(self.target, autocommit=True, connect_timeout=10)
        conn = sqlite3.connect(self.target, isolation_level=None, check_same_thread=False, timeout=30)
        if write:
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect on a new file, before WAL
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # an ack means the commit is on disk
        return conn

    def _write_conn(self) -> Any:
        if self._wconn is None:
            self._wconn = self._connect(True)
        return self._wconn

    def _read_conn(self) -> Any:
        if self._rconn is None:
            self._rconn = self._connect(False)
        return self._rconn

    def _setup(self) -> None:
        if self.postgres:
            ddl = SCHEMA.format(seq="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", real="DOUBLE PRECISION")
            conn = self._write_conn()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
                for stmt in ddl.split(";"):
                    conn.execute(stmt)
        else:
            Path(self.target).parent.mkdir(parents=True, exist_ok=True)
            self._write_conn().executescript(SCHEMA.format(seq="INTEGER PRIMARY KEY AUTOINCREMENT", real="REAL"))

    # ---- writes ----

    async def insert(self, records: Sequence[Any]) -> InsertResult:
        """Store a chunk in one transaction; repeats of a stored (auditID, stage) are dropped."""
        now = time.time()
        rows = [r for r in (to_row(rec, now) for rec in records) if r is not None]
        skipped = len(records) - len(rows)
        if not rows:
            return InsertResult(0, 0, skipped)
        inserted = await self._run(self._writer, lambda: self._insert(rows))
        return InsertResult(inserted, len(rows) - inserted, skipped)

    def _insert(self, rows: list[tuple[Any, ...]]) -> int:
        sql = self._sql(f"INSERT INTO audit_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
                        "ON CONFLICT (audit_id, stage) DO NOTHING")
        conn = self._write_conn()
        if self.postgres:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
                with conn.cursor() as cur:
                    cur.executemany(sql, rows)
                    return int(cur.rowcount)
        before = conn.total_changes
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(conn.total_changes - before)

    async def prune(self, max_age: float | None, max_bytes: int | None, now: float | None = None) -> tuple[int, int]:
        """Delete events older than ``max_age`` seconds, then the oldest until the stored JSON fits in
        ``max_bytes``. Returns (deleted by age, deleted by size)."""
        cutoff = (now or time.time()) - max_age if max_age else None
        return await self._run(self._writer, lambda: self._prune(cutoff, max_bytes))

    def _prune(self, cutoff: float | None, max_bytes: int | None) -> tuple[int, int]:
        conn = self._write_conn()
        by_age = by_size = 0
        if cutoff is not None:
            by_age = self._delete(conn, "ts < ?", cutoff)
        if max_bytes:
            row = conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM audit_events").fetchone()
            if int(row[0]) > max_bytes:
                # the newest rows whose running total fits stay; everything older goes
                last = conn.execute(self._sql(
                    "SELECT MAX(seq) FROM (SELECT seq, SUM(bytes) OVER (ORDER BY seq DESC) AS total "
                    "FROM audit_events) AS t WHERE total > ?"), (max_bytes,)).fetchone()[0]
                if last is not None:
                    by_size = self._delete(conn, "seq <= ?", last)
        if (by_age or by_size) and not self.postgres:
            conn.execute("PRAGMA incremental_vacuum")
        return by_age, by_size

    def _delete(self, conn: Any, where: str, arg: Any) -> int:
        """Delete and raise the pruned mark to the highest sequence deleted, in one transaction."""
        top_sql = self._sql(f"SELECT MAX(seq) FROM audit_events WHERE {where}")
        sql = self._sql(f"DELETE FROM audit_events WHERE {where}")
        mark = self._sql("UPDATE audit_pruned SET max_seq = ? WHERE id = 1 AND max_seq < ?")

        def delete() -> int:
            top = conn.execute(top_sql, (arg,)).fetchone()[0]
            if top is None:
                return 0
            deleted = int(conn.execute(sql, (arg,)).rowcount)
            conn.execute(mark, (top, top))
            return deleted

        if self.postgres:
            with conn.transaction():
                return delete()
        conn.execute("BEGIN IMMEDIATE")
        try:
            deleted = delete()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return deleted

    # ---- reads ----

    async def head(self) -> int:
        """The highest sequence stored or pruned (0 when nothing was ever stored)."""
        def query() -> int:
            conn = self._read_conn()
            stored = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit_events").fetchone()[0]
            return max(int(stored), self._pruned(conn))

        return await self._run(self._reader, query)

    async def pruned(self) -> int:
        """The highest sequence retention ever deleted (0 when none): events above it are all kept."""
        return await self._run(self._reader, lambda: self._pruned(self._read_conn()))

    @staticmethod
    def _pruned(conn: Any) -> int:
        return int(conn.execute("SELECT COALESCE(MAX(max_seq), 0) FROM audit_pruned").fetchone()[0])

    async def events(self, flt: EventFilter, after: int = 0, limit: int = 500) -> list[tuple[int, dict[str, Any]]]:
        """Events matching ``flt`` with seq > ``after``, in sequence order."""
        clauses, args = flt.where()
        sql = self._sql("SELECT seq, event FROM audit_events WHERE " + " AND ".join(["seq > ?", *clauses])
                        + " ORDER BY seq LIMIT ?")

        def query() -> list[tuple[int, dict[str, Any]]]:
            rows = self._read_conn().execute(sql, (after, *args, limit)).fetchall()
            return [(int(seq), orjson.loads(body)) for seq, body in rows]

        return await self._run(self._reader, query)

    def _object_query(self, group: str | None, resource: str, namespace: str,
                      name: str) -> tuple[str, list[Any]]:
        # the events that can make a version (provenance.makes_version also drops dry runs)
        where = ("resource = ? AND namespace = ? AND name = ? AND stage = 'ResponseComplete' "
                 "AND verb IN ('create', 'update', 'patch', 'delete') AND code >= 200 AND code < 300 "
                 "AND subresource IN ('', 'status', 'scale')")
        args: list[Any] = [resource, namespace, name]
        if group is not None:
            where += " AND api_group = ?"
            args.append(group)
        return where, args

    async def object_events(self, group: str | None, resource: str, namespace: str, name: str,
                            limit: int | None = None) -> list[tuple[int, str, dict[str, Any]]]:
        """Successful mutating ResponseComplete events of one object: (seq, api group, event), oldest
        first; with ``limit``, only the newest ``limit`` of them."""
        rows, _ = await self.object_history(group, resource, namespace, name, limit)
        return rows

    async def object_history(self, group: str | None, resource: str, namespace: str, name: str,
                             limit: int | None = None) -> tuple[list[tuple[int, str, dict[str, Any]]], int]:
        """``object_events`` and how many older versions ``limit`` left out. Only the newest ``limit``
        events are read whole; the older ones are counted (dry runs, which make no version, apart)."""
        where, args = self._object_query(group, resource, namespace, name)
        sql = f"SELECT seq, ts, api_group, event FROM audit_events WHERE {where} ORDER BY ts DESC, seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
        older = f"{where} AND (ts < ? OR (ts = ? AND seq < ?))"
        count_sql = self._sql(f"SELECT COUNT(*) FROM audit_events WHERE {older}")
        dry_sql = self._sql(f"SELECT event FROM audit_events WHERE {older} AND event LIKE ?")

        def query() -> tuple[list[tuple[int, str, dict[str, Any]]], int]:
            conn = self._read_conn()
            rows = conn.execute(self._sql(sql), [*args, limit] if limit is not None else args).fetchall()
            omitted = 0
            if limit is not None and len(rows) == limit:
                seq, ts = rows[-1][0], rows[-1][1]
                omitted = int(conn.execute(count_sql, (*args, ts, ts, seq)).fetchone()[0])
                for (body,) in conn.execute(dry_sql, (*args, ts, ts, seq, "%dryRun=%")).fetchall():
                    omitted -= is_dry_run(orjson.loads(body))
            return [(int(seq), str(g), orjson.loads(body)) for seq, _, g, body in reversed(rows)], omitted

        return await self._run(self._reader, query)

    async def count(self) -> int:
        return await self._run(self._reader, lambda: int(
            self._read_conn().execute("SELECT COUNT(*) FROM audit_events").fetchone()[0]))
