"""Retention: what to delete and when. The store offers the primitives (store/base.py); this module
decides, in batches, each its own short transaction on the writer, so chunks waiting to commit get the
writer between two batches (an ack never waits behind a whole prune). A batch is sized by time, not rows:
the first takes ``BATCH`` rows, each next one as many as the last one's pace says fit in
``BATCH_SECONDS`` (a delete costs more on a large or busy database), so a chunk that arrives during a
prune waits for at most about that long before its own commit.

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

BATCH = 250  # rows of the first delete transaction
BATCH_SECONDS = 0.04  # what one delete transaction should take
MIN_BATCH, MAX_BATCH = 20, 10_000


class Pace:
    """Rows per delete transaction: ``fixed``, or adjusted after each full batch to take ~BATCH_SECONDS
    (at most doubling, so one fast batch on a cold cache does not make the next one huge)."""

    def __init__(self, fixed: int | None = None) -> None:
        self.rows, self.fixed = fixed or BATCH, fixed is not None

    async def delete(self, store: Any, below: int | None, excess: int | None) -> int:
        start = time.perf_counter()
        n = await store.delete_oldest(below, excess, self.rows)
        took = time.perf_counter() - start
        if not self.fixed and n >= self.rows:
            fit = int(self.rows * BATCH_SECONDS / max(took, 1e-4))
            self.rows = max(MIN_BATCH, min(MAX_BATCH, fit, self.rows * 2))
        return int(n)


async def prune(store: Any, max_age: float | None, max_bytes: int | None, now: float | None = None,
                batch: int | None = None) -> tuple[int, int]:
    """Apply both limits once: (deleted by age, deleted by size). ``batch``: a fixed number of rows per
    delete transaction instead of the paced one (tests)."""
    by_age = by_size = 0
    pace = Pace(batch)
    if max_age:
        oldest, below = await store.first_at((now or time.time()) - max_age)
        while below > oldest and (n := await pace.delete(store, below, None)) > 0:
            by_age += n
    if max_bytes:
        while (excess := (await store.totals())[1] - max_bytes) > 0:
            n = await pace.delete(store, None, excess)
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
