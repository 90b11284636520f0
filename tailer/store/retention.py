"""Retention: what to delete and when. The store offers the primitives (store/base.py); this module
decides, in batches of at most ``BATCH`` rows, each its own short transaction on the writer, so chunks
waiting to commit get the writer between two batches (an ack never waits behind a whole prune).

Retention deletes a prefix of the sequence: by age, every event below the first one whose running
maximum of ``stageTimestamp`` (``hw``) reaches the cutoff (an event that arrived late with an old
timestamp stays until the events around it go); by size, the oldest events until the event JSON
stored fits ``--retention-bytes``. So "everything above the pruned mark is kept" holds exactly.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kube_audit.runtime.observability import get_logger
from tailer.metrics import TailerMetrics

BATCH = 1_000  # rows per delete transaction


async def prune(store: Any, max_age: float | None, max_bytes: int | None, now: float | None = None,
                batch: int = BATCH) -> tuple[int, int]:
    """Apply both limits once: (deleted by age, deleted by size)."""
    by_age = by_size = 0
    if max_age:
        oldest, below = await store.first_at((now or time.time()) - max_age)
        while below > oldest and (n := await store.delete_oldest(below, None, batch)) > 0:
            by_age += n
    if max_bytes:
        while (excess := (await store.totals())[1] - max_bytes) > 0:
            n = await store.delete_oldest(None, excess, batch)
            if n == 0:
                break
            by_size += n
    if by_age or by_size:
        await store.reclaim()  # bounded: the rest of the free pages are reused by new rows or freed next time
    return by_age, by_size


async def retention_loop(store: Any, settings: Any, metrics: TailerMetrics) -> None:
    """Apply --retention-age and --retention-bytes now and every --retention-interval."""
    log = get_logger(component="retention")
    while True:
        try:
            by_age, by_size = await prune(store, settings.retention_age or None, settings.retention_bytes or None)
            metrics.store_pruned.labels("age").inc(by_age)
            metrics.store_pruned.labels("size").inc(by_size)
            if by_age or by_size:
                log.info("store_pruned", by_age=by_age, by_size=by_size)
        except Exception as exc:  # the database may be back next time
            log.error("store_prune_failed", error=str(exc))
        await asyncio.sleep(settings.retention_interval)
