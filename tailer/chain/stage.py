"""The chain stage of the ingest pipeline (issue 12: tamper evidence).

On receipt, before the gating sinks, ``check`` reads the chunk's chain from the forwarder's ``kube_audit``
option and verifies its MAC over the entries field as sent (kube_audit/model/chain.py); the resulting
link rides on ``Origin.link`` to the store, which writes it with the chunk's events in one transaction
and, there, tells how it relates to the links stored before (link.classify). After the sinks ``settle``
counts the outcome and logs a break. A chunk with a bad MAC is stored all the same (nothing is lost)
and flagged. A link whose predecessor is not stored yet is not a break at once (two connections
around a reconnect deliver out of order): ``gap_loop`` decides, a grace period later, from the stored
links, and a link that arrives after that resolves the break.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fluent_forward import Record
from kube_audit.model.source import OPTION, GapReport, SourceId
from kube_audit.runtime.observability import get_logger
from tailer.chain import link as L
from tailer.metrics import TailerMetrics

log = get_logger(component="chain")
GRACE = 30.0  # seconds a missing link may take to arrive before it is a break
SCAN_EVERY = 5.0


class ChainStage:
    def __init__(self, key: bytes, metrics: TailerMetrics, store: Any, grace: float = GRACE) -> None:
        self.key, self.metrics, self.store, self.grace = key, metrics, store, grace
        # the sources stage's report_gaps (tailer/app.py wires it): each break becomes a gap of its source
        self.on_break: Callable[[SourceId, Sequence[GapReport]], Awaitable[Any]] | None = None
        # ... and its resolve_gaps: a late link that fills a break takes that gap back
        self.on_resolve: Callable[[SourceId, Sequence[str]], Awaitable[Any]] | None = None
        self._to_report: list[tuple[SourceId, GapReport]] = []
        self._to_resolve: list[tuple[SourceId, str]] = []

    def check(self, records: Sequence[Record], origin: Any) -> None:
        options = getattr(records, "options", None) or {}
        origin.link = L.receive(self.key, origin.source, origin.tag or "", options.get(OPTION),
                                getattr(records, "payload", None))

    async def record(self, origin: Any) -> None:
        """A chained chunk that stores no events (status records, on the sources stage's tag) keeps its
        place in the chain: a link without rows, in its own transaction."""
        link: L.Link | None = origin.link
        if link is not None and link.seq:
            await self.store.insert([], origin.source, link=link)
        self.settle(origin)

    def settle(self, origin: Any) -> None:
        link: L.Link | None = origin.link
        if link is None or not link.outcome:
            return  # the store did not take the chunk (no ack): it comes again
        self.metrics.chain_chunks.labels(link.outcome).inc()
        if link.break_kind is not None:
            self._break(str(link.source.name), link.source.cluster, link.epoch, link.seq, link.seq, link.break_kind)
        for first, last, kind in link.resolved:
            log.info("chain_break_resolved", source=link.source.name, cluster=link.source.cluster, epoch=link.epoch,
                     first_seq=first, last_seq=last, kind=kind, by_seq=link.seq)
            self._to_resolve.append((link.source, L.gap_id(link.epoch, first, last, kind)))
        for first, last in link.still_missing:  # what the late link did not fill is a break of its own
            self._break(str(link.source.name), link.source.cluster, link.epoch, first, last, L.MISSING, counted=False)
        link.resolved, link.still_missing = [], []  # a resend stores nothing new: said once

    def _break(self, source: str, cluster: str, epoch: int, first: int, last: int, kind: str,
               counted: bool = True) -> None:
        if counted:  # not the rest of a break counted before
            self.metrics.chain_breaks.labels(kind).inc()
        log.warning("chain_break", source=source, cluster=cluster, epoch=epoch, first_seq=first, last_seq=last,
                    kind=kind, reason=L.REASON)
        gap = GapReport(L.gap_id(epoch, first, last, kind), "", 0, 0, L.REASON, exact=False)
        self._to_report.append((SourceId(cluster, source), gap))

    async def report(self) -> None:
        """Hand the breaks found since the last call to the sources stage (kept there once per id), then
        the ones late links resolved (after: a break found and filled in one period goes and comes back)."""
        if self.on_break is None or not await _hand_on(self._to_report, self.on_break):
            return
        if self.on_resolve is not None:
            await _hand_on(self._to_resolve, self.on_resolve)

    async def scan(self) -> None:
        for b in await self.store.chain_scan(time.time() - self.grace):
            self._break(b["source"], b["cluster"], b["epoch"], b["firstSeq"], b["lastSeq"], b["kind"])

    async def gap_loop(self, every: float = SCAN_EVERY) -> None:
        while True:
            await asyncio.sleep(min(every, max(self.grace, 0.1)))
            try:
                await self.scan()
                await self.report()
            except Exception as exc:  # the store may be back next time
                log.error("chain_scan_failed", error=str(exc))


async def _hand_on(queue: list[tuple[SourceId, Any]], call: Callable[[SourceId, Sequence[Any]], Awaitable[Any]]) -> bool:
    """Call ``call`` for each queued (source, item), oldest first; on a failure what is left stays queued
    (the store may be back next time). Whether all went."""
    pending = list(queue)
    queue.clear()
    for i, (source, item) in enumerate(pending):
        try:
            await call(source, [item])
        except Exception as exc:
            queue[:0] = pending[i:]  # still oldest first
            log.error("chain_break_report_failed", error=str(exc))
            return False
    return True
