"""The store as a gating sink of the ingest pipeline, and the retention loop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from kube_audit.model.audit import AuditEvent, Rejected, reject
from kube_audit.runtime.observability import get_logger
from tailer.metrics import TailerMetrics
from tailer.store import StoreError


class StoreSink:
    """Commits each chunk to the audit store in one transaction, then wakes the API's watchers."""

    name = "store"

    def __init__(self, store: Any, metrics: TailerMetrics, on_commit: Any = None) -> None:
        self.store, self.metrics, self.on_commit = store, metrics, on_commit

    async def write(self, records: Sequence[AuditEvent | Rejected]) -> list[Rejected]:
        """Commit the chunk; a transient StoreError goes up (no ack). When the database refuses the chunk
        for its data, each event is tried alone and those it refuses for good come back rejected."""
        try:
            with self.metrics.store_commit.time():
                self._count(await self.store.insert(records))
            return []
        except StoreError as exc:
            if exc.transient:
                raise
        refused: list[Rejected] = []
        for item in records:
            if not isinstance(item, AuditEvent):
                continue
            try:
                self._count(await self.store.insert([item]))
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


async def retention_loop(store: Any, settings: Any, metrics: TailerMetrics) -> None:
    """Apply --retention-age and --retention-bytes now and every --retention-interval."""
    log = get_logger(component="retention")
    while True:
        try:
            by_age, by_size = await store.prune(settings.retention_age or None, settings.retention_bytes or None)
            metrics.store_pruned.labels("age").inc(by_age)
            metrics.store_pruned.labels("size").inc(by_size)
            if by_age or by_size:
                log.info("store_pruned", by_age=by_age, by_size=by_size)
        except Exception as exc:  # the database may be back next time
            log.error("store_prune_failed", error=str(exc))
        await asyncio.sleep(settings.retention_interval)
