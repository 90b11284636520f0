"""Retention: what to delete and when. The store offers the primitives (store/base.py); this module
decides, in batches sized to take about ``BUDGET`` of the writer's time each, so a chunk committing
meanwhile never waits long behind one (an ack never waits behind a whole prune). On SQLite each batch rides
in the chunks' group commit (no commit, so no fsync, of its own; alone when no chunk is waiting); on
PostgreSQL it runs on a connection of its own, beside the chunks' inserts (store/base.py ``_prune_write``).

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

BATCH = 1_000  # rows per delete batch at most (a larger one stalls longer on a busy machine)
FIRST = 250  # the first batch; the next ones are sized from how long the last one took
SMALLEST = 20
BUDGET = 0.02  # seconds of the writer's time one batch aims at


class _Sizer:
    """Batch sizes that follow the store's speed: the last batch's rows per second times ``BUDGET``."""

    def __init__(self, store: Any, batch: int) -> None:
        self.store, self.most = store, batch
        self.rows = min(FIRST, batch)

    def done(self, n: int) -> None:
        took = getattr(self.store, "last_prune_s", 0.0)
        if n >= self.rows and took > 0:  # a full batch: a fair measure of the rate
            self.rows = max(SMALLEST, min(self.most, int(n * BUDGET / took), self.rows * 2))
        elif took > BUDGET:
            self.rows = max(SMALLEST, self.rows // 2)


async def prune(store: Any, max_age: float | None, max_bytes: int | None, now: float | None = None,
                batch: int = BATCH) -> tuple[int, int]:
    """Apply both limits once: (deleted by age, deleted by size)."""
    by_age = by_size = 0
    size = _Sizer(store, batch)
    if max_age:
        oldest, below = await store.first_at((now or time.time()) - max_age)
        while below > oldest and (n := await store.delete_oldest(below, None, size.rows)) > 0:
            by_age += n
            size.done(n)
    if max_bytes:
        while (excess := (await store.totals())[1] - max_bytes) > 0:
            n = await store.delete_oldest(None, excess, size.rows)
            if n == 0:
                break
            by_size += n
            size.done(n)
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
