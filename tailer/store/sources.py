"""The store's side of the sources stage (issue 12): one record per source and its gaps, in the tables of
schema.py's ``_v4_sources``. Kept apart from base.py (the events' store) on purpose; it runs on the
store's own writer and reader threads (``Store._write`` / ``Store._read``), so a status record is
committed like a chunk of events, before its ack.

Both drivers take the same SQL: ``ON CONFLICT`` upserts, and ``CASE`` instead of SQLite's two-argument
``MAX`` (PostgreSQL's is ``GREATEST``), so that several tailer replicas sharing one PostgreSQL only ever
move ``last_seen`` and ``last_event`` forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kube_audit.model.source import SourceId
from tailer.store.base import Store

_LATER = "CASE WHEN audit_sources.{c} IS NULL OR excluded.{c} > audit_sources.{c} THEN excluded.{c} " \
         "ELSE audit_sources.{c} END"


@dataclass(frozen=True, slots=True)
class GapRow:
    id: str
    reported: float  # when this tailer (or a replica) first had it
    bytes: int
    gap: str  # the gap as the forwarder reported it, JSON


@dataclass(slots=True)
class SourceRow:
    source: SourceId
    last_seen: float
    last_event: float | None = None
    status_time: float | None = None
    status: str | None = None  # the last status record, JSON; None for a peer that sends none
    gaps: list[GapRow] = field(default_factory=list)


def _upsert_seen(store: Store, conn: Any, source: SourceId, seen: float, event: float | None) -> None:
    p = store.ph
    conn.execute(f"INSERT INTO audit_sources (cluster, name, last_seen, last_event) VALUES ({p}, {p}, {p}, {p}) "
                 f"ON CONFLICT (cluster, name) DO UPDATE SET last_seen = {_LATER.format(c='last_seen')}, "
                 f"last_event = {_LATER.format(c='last_event')}", (source.cluster, source.name, seen, event))


def _insert_gaps(store: Store, conn: Any, source: SourceId, gaps: Sequence[GapRow]) -> list[str]:
    p = store.ph
    new = []
    for g in gaps:
        cur = conn.execute(f"INSERT INTO audit_source_gaps (cluster, name, id, reported, bytes, gap) VALUES "
                           f"({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (cluster, name, id) DO NOTHING",
                           (source.cluster, source.name, g.id, g.reported, g.bytes, g.gap))
        if cur.rowcount == 1:
            new.append(g.id)
    return new


async def save_status(store: Store, source: SourceId, seen: float, status_time: float | None, status: str,
                      gaps: Sequence[GapRow]) -> list[str]:
    """Keep a source's latest status record and its gaps, in one transaction; the ids of the gaps the
    store did not have yet (a resent gap is ignored)."""
    p = store.ph

    def write() -> list[str]:
        with store._transaction() as conn:
            _upsert_seen(store, conn, source, seen, None)
            conn.execute(f"UPDATE audit_sources SET status_time = {p}, status = {p} WHERE cluster = {p} AND name = {p}",
                         (status_time, status, source.cluster, source.name))
            return _insert_gaps(store, conn, source, gaps)

    return await store._write(write)


async def add_gaps(store: Store, source: SourceId, seen: float, gaps: Sequence[GapRow]) -> list[str]:
    """Gaps found on the tailer's side (e.g. a chain break): kept like reported ones, once per id."""
    def write() -> list[str]:
        with store._transaction() as conn:
            _upsert_seen(store, conn, source, seen, None)
            return _insert_gaps(store, conn, source, gaps)

    return await store._write(write)


async def remove_gaps(store: Store, source: SourceId, ids: Sequence[str]) -> int:
    """Take back gaps the tailer found itself (a chain break a late chunk filled); how many there were."""
    p = store.ph

    def write() -> int:
        with store._transaction() as conn:
            return sum(conn.execute(f"DELETE FROM audit_source_gaps WHERE cluster = {p} AND name = {p} AND id = {p}",
                                    (source.cluster, source.name, gid)).rowcount for gid in ids)

    return await store._write(write)


async def drop_gaps(store: Store, reported_before: float) -> int:
    """Delete the gaps reported before ``reported_before`` (epoch seconds); how many went."""
    def write() -> int:
        with store._transaction() as conn:
            return int(conn.execute(f"DELETE FROM audit_source_gaps WHERE reported < {store.ph}",
                                    (reported_before,)).rowcount)

    return await store._write(write)


async def save_seen(store: Store, seen: dict[SourceId, tuple[float, float | None]]) -> None:
    """When each source was last heard from and the newest event time it sent (only ever moved forward)."""
    if not seen:
        return

    def write() -> None:
        with store._transaction() as conn:
            for source, (last, event) in sorted(seen.items()):
                _upsert_seen(store, conn, source, last, event)

    await store._write(write)


async def load_sources(store: Store) -> list[SourceRow]:
    """Every source with its gaps (oldest reported first), ordered by cluster and name."""
    def read(conn: Any) -> list[SourceRow]:
        rows = {SourceId(c, n): SourceRow(SourceId(c, n), float(seen), _float(event), _float(st), status)
                for c, n, seen, event, st, status in conn.execute(
                    "SELECT cluster, name, last_seen, last_event, status_time, status FROM audit_sources").fetchall()}
        for c, n, gap_id, reported, size, gap in conn.execute(
                "SELECT cluster, name, id, reported, bytes, gap FROM audit_source_gaps ORDER BY reported, id").fetchall():
            row = rows.get(SourceId(c, n))
            if row is not None:
                row.gaps.append(GapRow(str(gap_id), float(reported), int(size), str(gap)))
        return [rows[k] for k in sorted(rows)]

    return await store._read(read)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
