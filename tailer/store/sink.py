"""The store as a gating sink of the ingest pipeline, and the task that finds a failed store back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from kube_audit.model.audit import AuditEvent, Rejected, reject
from kube_audit.runtime.observability import get_logger
from tailer.metrics import TailerMetrics
from tailer.store.base import StoreError
from tailer.store.retention import retention_loop

__all__ = ["StoreSink", "health_loop", "retention_loop"]
PROBE_EVERY = 1.0  # seconds between test writes while the store refuses writes


class StoreSink:
    """Commits each chunk to the audit store (group commit), then wakes the API's watchers."""

    name = "store"

    def __init__(self, store: Any, metrics: TailerMetrics, on_commit: Any = None) -> None:
        self.store, self.metrics, self.on_commit = store, metrics, on_commit

    async def write(self, records: Sequence[AuditEvent | Rejected], origin: Any = None) -> list[Rejected]:
        """Commit the chunk; a transient StoreError goes up (no ack). When the database refuses the chunk
        for its data, each event is tried alone and those it refuses for good come back rejected. Every
        event keeps the chunk's source and cluster (``origin``, worked out once per chunk), and the chunk's
        chain link is stored with them (tailer/chain)."""
        source = origin.source if origin is not None else None
        link = getattr(origin, "link", None)
        try:
            with self.metrics.store_commit.time():
                self._count(await self.store.insert(records, source, link))
            return []
        except StoreError as exc:
            if exc.transient:
                raise
        refused: list[Rejected] = []
        for item in records:
            if not isinstance(item, AuditEvent):
                continue
            try:
                self._count(await self.store.insert([item], source, link))  # each part sealed under the chunk's link
            except StoreError as exc:
                if exc.transient:
                    raise
                refused.append(reject(item.record, "store_refused", str(exc)[:300]))
        return refused

    def _count(self, result: Any) -> None:
        self.metrics.store_inserted.inc(result.inserted)
        self.metrics.store_duplicates.inc(result.duplicates)
        self.metrics.store_skipped.inc(result.skipped)
        if result.inserted and self.on_commit is not None:
            self.on_commit()


async def health_loop(store: Any, metrics: TailerMetrics, every: float = PROBE_EVERY) -> None:
    """While the store refuses writes the tailer is not ready (/readyz), so no chunk may come to prove
    it is back: try a small write every ``every`` seconds instead."""
    log = get_logger(component="store")
    was = True
    while True:
        metrics.store_healthy.set(1 if store.healthy else 0)
        if store.healthy != was:
            was = store.healthy
            if was:
                log.info("store_writable")
            else:
                log.error("store_refuses_writes", error=store.last_error)
        if not store.healthy:
            try:
                await store.probe()
            except Exception:  # still refused; said once above
                pass
        await asyncio.sleep(every)
