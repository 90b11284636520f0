"""The audit ConfigMaps as a projection of the store: follow it by sequence, with a durable cursor.

The projection reads committed events in sequence order (``store.events(after=cursor)``), hands the
ones that make an entry to the ConfigMapWriter, and saves the cursor once every entry up to it is in
its ConfigMap (or given up for good). A tailer that is killed therefore loses no entry: after the
restart it reads again from the saved cursor, and writers merge entries by auditID, so what was
written twice is still there once. Replicas on one PostgreSQL store each follow every event (merging
makes that safe) and share the cursor row: any replica's saved cursor means every entry below it was
written. Change summaries need the object's state before each event: the first time an object is met
it comes from the store's history of the object, then it is folded forward in sequence order, so every
replica, and a restarted tailer, says the same thing.

Only the events of the cluster this tailer runs in (--cluster) are projected: another cluster's events
are read past (the cursor moves over them), and an object's history comes from its own cluster's events.

It never gates an ack: it runs as its own task, wakes on the store's commits (``notify``) and polls
for other replicas' writes. When the writer's backlog is full it waits; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from typing import Any

from kube_audit.model.audit import ObjectKey, view
from kube_audit.runtime.observability import get_logger
from tailer.configmaps.writer import ConfigMapWriter
from tailer.metrics import TailerMetrics
from tailer.store import EventFilter

log = get_logger(component="configmaps")
CURSOR = "configmaps"
READ_BATCH = 500  # events per store read
SAVE_INTERVAL = 1.0  # seconds between cursor saves while entries are being written
RETRY_MAX_WAIT = 30.0  # seconds, cap of the backoff while the store fails


class Projection:
    """Feeds the writer from the store and keeps the durable cursor."""

    name = "configmaps"

    def __init__(self, store: Any, writer: ConfigMapWriter, poll: float, metrics: TailerMetrics) -> None:
        self.store, self.writer, self.poll, self.metrics = store, writer, max(poll, 0.05), metrics
        writer.on_written = self.written
        self.read = 0  # highest sequence handed to the writer (or skipped)
        self.saved = 0  # the durable cursor
        self._outstanding: list[int] = []  # heap of sequences handed to the writer, not yet written
        self._finished: set[int] = set()
        self._wake = asyncio.Event()
        self._saved_at = 0.0

    def notify(self) -> None:
        """The store committed events (called from the ingest path: no awaits, no raising)."""
        self._wake.set()

    def written(self, seqs: list[int]) -> None:
        self._finished.update(seqs)
        self._wake.set()

    def durable(self) -> int:
        """Every event up to this sequence is in its ConfigMap (or was given up for good)."""
        heap = self._outstanding
        while heap and heap[0] in self._finished:
            self._finished.discard(heapq.heappop(heap))
        return heap[0] - 1 if heap else self.read

    async def start(self) -> None:
        self.read = self.saved = await self.store.load_cursor(CURSOR)
        self.metrics.configmap_cursor.set(self.saved)
        pruned = await self.store.pruned()
        if pruned > self.saved:
            log.warning("configmap_cursor_behind_retention", cursor=self.saved, pruned=pruned,
                        note="events deleted by retention before they were projected get no entry")
        log.info("configmap_projection_started", cursor=self.saved)

    async def run(self) -> None:
        """Read, hand over, save; forever (cancelled at shutdown). A failing store is retried."""
        failures = 0
        while True:
            self._wake.clear()
            try:
                caught_up = await self._pull()
                await self.save()
            except Exception as exc:  # noqa: BLE001 - the store may be back soon (its errors are StoreError)
                failures += 1
                if failures == 1:
                    log.error("configmap_projection_store_failed", error=str(exc))
                await asyncio.sleep(min(RETRY_MAX_WAIT, self.poll * 2 ** min(failures, 10)))
                continue
            if failures:
                log.info("configmap_projection_store_recovered", failures=failures)
                failures = 0
            if caught_up:
                await self._sleep(self.poll)
            else:  # the writer's backlog is full: wait for room
                await self.writer.room.wait()

    async def _pull(self) -> bool:
        """Hand events to the writer until the store has no more (True) or the backlog is full."""
        while True:
            limit = max(1, min(READ_BATCH, self.writer.free))
            rows = await self.store.sourced_events(EventFilter(), after=self.read, limit=limit)
            for seq, event, source in rows:
                if self.writer.full:
                    return False
                if not self.writer.ours(source):  # read past, not filtered in SQL: the cursor moves on
                    self.read = seq
                    continue
                ev = view(event)
                if ev.object is not None and self.writer.wants(ev) and not self.writer.knows(ev.object):
                    await self._seed(ev.object, seq)
                if self.writer.take(event, seq):
                    heapq.heappush(self._outstanding, seq)
                self.read = seq
            if len(rows) < limit:
                return True

    async def _seed(self, key: ObjectKey, seq: int) -> None:
        """The object's state before ``seq`` from its stored history, so that the change summary is
        the same whichever replica writes it and whether or not the tailer restarted in between."""
        rows, _ = await self.store.object_history(key.group, key.resource, key.namespace, key.name,
                                                  cluster=self.writer.settings.cluster)
        self.writer.seed(key, [event for s, _, event in sorted(rows, key=lambda r: r[0]) if s < seq])

    async def _sleep(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives as
        # the wake-up does, and this loop would then never stop
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def save(self, force: bool = False) -> None:
        cursor = self.durable()
        now = time.monotonic()
        if cursor > self.saved and (force or now - self._saved_at >= SAVE_INTERVAL):
            await self.store.save_cursor(CURSOR, cursor)
            self.saved, self._saved_at = cursor, now
            self.metrics.configmap_cursor.set(cursor)
