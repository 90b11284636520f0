"""The sources stage (issue 12): one record per forwarder, kept in the store, served by /sources.

Two ways in:
- ``Sources.write`` is the pipeline's control sink: the status records of one chunk (on
  ``STATUS_TAG``), each parsed with kube_audit/model/source.py's ``parse_status`` and committed (the
  source's record, its new gaps) before the chunk is acked. A record that is not a status record is
  acked anyway: counted in ``tailer_records_rejected_total{reason="bad_status"}``, logged once per
  reason, never a crash. A gap the store already has (a resend) is ignored.
- ``Sources.seen`` is a gating sink of the events: per ``Origin.source`` it notes in memory when the
  source was last heard from and the newest ``stageTimestamp`` it sent, so a stock Fluent Bit peer
  that sends no status still appears; a loop saves that every ``--source-check-interval``.

That loop also reads every record back (other replicas of a shared PostgreSQL write there too), logs
``source_silent`` when a source turns silent (and ``source_resumed`` when it is back) and refreshes the
gauges. Gaps found on the tailer's side (a chain break) come in through ``report_gaps``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from fluent_forward import Record
from kube_audit.model.audit import AuditEvent
from kube_audit.model.source import GAP_REASONS, BadStatus, GapReport, SourceId, Status, parse_status
from kube_audit.runtime.observability import get_logger
from tailer.ingest.pipeline import Item, Origin
from tailer.metrics import TailerMetrics
from tailer.sources.state import Rules, rfc3339, state, status_of
from tailer.store.base import Store, StoreError
from tailer.store.rows import parse_time
from tailer.store.sources import (
    GapRow,
    SourceRow,
    add_gaps,
    drop_gaps,
    load_sources,
    remove_gaps,
    save_seen,
    save_status,
)

log = get_logger(component="sources")
Seen = dict[SourceId, tuple[float, float | None]]
DEFAULT_RULES = Rules()


def _later(a: float | None, b: float | None) -> float | None:
    return b if a is None or (b is not None and b > a) else a


class SeenSink:
    """The gating sink that notes who sent events and their newest time; memory only, never raises."""

    name = "sources-seen"

    def __init__(self, stage: Sources) -> None:
        self.stage = stage

    async def write(self, items: Sequence[Item], origin: Origin | None = None) -> None:
        if origin is not None:
            newest = max((i.ts for i in items if isinstance(i, AuditEvent) and i.ts is not None), default=None)
            if self.stage.note(origin.source, newest):
                # a source this process had not heard from: saved before the ack, so that every reader
                # of the store (the API's process, other replicas) lists it from then on
                await self.stage.save()


class Sources:
    name = "sources"

    def __init__(self, store: Store, metrics: TailerMetrics, rules: Rules = DEFAULT_RULES, interval: float = 5.0,
                 clock: Callable[[], float] = time.time, keep_gaps: float = 0.0) -> None:
        self.store, self.metrics, self.rules, self.interval, self.clock = store, metrics, rules, interval, clock
        self.keep_gaps = keep_gaps  # seconds a gap stays listed after it was reported (0: for good)
        self._gaps_dropped_at = 0.0
        self.seen = SeenSink(self)
        self._unsaved: Seen = {}  # noted since the last save
        self._memory: Seen = {}  # everything noted since start, merged into what the store has on reads
        self._bad_lines: dict[tuple[SourceId, str], int] = {}  # the last counts each source sent
        self._silent: set[SourceId] = set()
        self._reasons: set[str] = set()
        self._known: set[SourceId] = set()  # sources whose counters exist (from 0: increase() sees the first gap)
        self.cached: list[SourceRow] = []  # as of the last loop: for the gap warnings of lists

    async def start(self) -> None:
        """Read the records kept so far: counters go on from the counts they hold, not from zero."""
        await self.refresh(log_changes=False)
        for row in self.cached:
            bad = status_of(row).get("badLines") or {}
            self._bad_lines.update({(row.source, k): v for k, v in bad.items() if isinstance(v, int)})

    # ---- ingest ----

    def _touch(self, source: SourceId) -> None:
        if source not in self._known:
            self._known.add(source)
            self.metrics.source_gap_bytes.labels(str(source))
            for reason in GAP_REASONS:
                self.metrics.source_gaps.labels(str(source), reason)

    def note(self, source: SourceId, newest: float | None) -> bool:
        """Whether ``source`` is new to this process."""
        self._touch(source)
        now, new = self.clock(), source not in self._memory
        for seen in (self._unsaved, self._memory):
            last, event = seen.get(source, (now, None))
            seen[source] = (max(last, now), _later(event, newest))
        self.metrics.source_last_seen.labels(str(source)).set(now)
        return new

    async def write(self, records: Sequence[Record], origin: Origin) -> None:
        """The control sink: keep each status record durably (raise on a transient store error: no ack)."""
        for record in records:
            try:
                status = parse_status(record)
            except BadStatus as exc:
                self._refuse("bad_status", str(exc), origin)
                continue
            now = self.clock()
            body = {k: v for k, v in status.to_record().items() if k != "gaps"}
            gaps = [GapRow(g.id, now, g.bytes, json.dumps(g.to_record())) for g in status.gaps]
            try:
                new = await save_status(self.store, status.source, now, parse_time(status.time), json.dumps(body),
                                        gaps)
            except StoreError as exc:
                if exc.transient:
                    raise
                self._refuse("store_refused", str(exc)[:300], origin)
                continue
            self.note(status.source, None)
            self._counted(status)
            self._gaps(status.source, [g for g in status.gaps if g.id in new])

    async def report_gaps(self, source: SourceId, gaps: Sequence[GapReport]) -> list[str]:
        """Gaps the tailer found itself (the chain stage's breaks, reason ``chain_break``): kept and shown
        like reported ones, once per id (make the id stable, e.g. from the sequence numbers)."""
        now = self.clock()
        new = await add_gaps(self.store, source, now,
                             [GapRow(g.id, now, g.bytes, json.dumps(g.to_record())) for g in gaps])
        self._gaps(source, [g for g in gaps if g.id in new])
        return new

    async def resolve_gaps(self, source: SourceId, ids: Sequence[str]) -> int:
        """Gaps the tailer found itself and then saw filled (a late chunk of a chain): no longer gaps."""
        return await remove_gaps(self.store, source, ids)

    def _refuse(self, reason: str, detail: str, origin: Origin) -> None:
        self.metrics.records_rejected.labels(reason).inc()
        key = f"{reason}:{detail.partition(':')[0]}"
        if key not in self._reasons:
            self._reasons.add(key)
            log.warning("status_rejected", reason=reason, detail=detail, source=str(origin.source),
                        note="acked and dropped; logged once per reason")

    def _counted(self, status: Status) -> None:
        name = str(status.source)
        self.metrics.source_lag.labels(name).set(status.lag_bytes)
        for kind, count in status.bad_lines.items():
            before = self._bad_lines.get((status.source, kind), 0)
            self.metrics.source_bad_lines.labels(name, kind).inc(count - before if count >= before else count)
            self._bad_lines[(status.source, kind)] = count

    def _gaps(self, source: SourceId, gaps: Sequence[GapReport]) -> None:
        self._touch(source)
        for g in gaps:
            self.metrics.source_gap_bytes.labels(str(source)).inc(g.bytes)
            self.metrics.source_gaps.labels(str(source), g.reason).inc()
            log.warning("source_gap", source=source.name, cluster=source.cluster, id=g.id, file=g.file,
                        inode=g.inode, bytes=g.bytes, exact=g.exact, start=g.start, end=g.end, reason=g.reason)

    # ---- reads and the loop ----

    async def rows(self) -> list[SourceRow]:
        """Every source as the store has it, with what this replica noted and has not saved yet."""
        rows = await load_sources(self.store)
        by_id = {r.source: r for r in rows}
        for source, (last, event) in list(self._memory.items()):
            row = by_id.get(source)
            if row is None:
                rows.append(SourceRow(source, last, event))
            else:
                row.last_seen, row.last_event = max(row.last_seen, last), _later(row.last_event, event)
        return sorted(rows, key=lambda r: r.source)

    async def save(self) -> None:
        unsaved, self._unsaved = self._unsaved, {}
        try:
            await save_seen(self.store, unsaved)
        except BaseException:
            for source, (last, event) in unsaved.items():  # kept for the next try
                before = self._unsaved.get(source, (last, event))
                self._unsaved[source] = (max(before[0], last), _later(before[1], event))
            raise

    async def refresh(self, log_changes: bool = True) -> None:
        self.cached = rows = await self.rows()
        now = self.clock()
        for row in rows:
            name = str(row.source)
            self._touch(row.source)
            self.metrics.source_last_seen.labels(name).set(row.last_seen)
            lag = status_of(row).get("lagBytes")
            if isinstance(lag, int):
                self.metrics.source_lag.labels(name).set(lag)
            silent = state(row, now, self.rules) == "silent"
            if silent and row.source not in self._silent:
                self._silent.add(row.source)
                if log_changes:
                    log.warning("source_silent", source=row.source.name, cluster=row.source.cluster,
                                last_seen=rfc3339(row.last_seen), silent_after=self.rules.silent_after)
            elif not silent and row.source in self._silent:
                self._silent.discard(row.source)
                log.info("source_resumed", source=row.source.name, cluster=row.source.cluster)

    async def run(self, view_only: bool = False) -> None:
        """Every ``interval``: save what was noted, drop expired gaps, read the sources again. ``view_only``
        (the API's own process, tailer/app.py): read them only; the tailer saves and logs the changes."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                if not view_only:
                    await self.save()
                    await self.drop_old_gaps()
                await self.refresh(log_changes=not view_only)
            except StoreError as exc:  # the store says so itself (store_refuses_writes); try again next time
                log.debug("sources_refresh_failed", error=str(exc))
            except Exception as exc:  # a bug here must not stop the tailer: said, tried again next time
                log.error("sources_refresh_failed", error=repr(exc))

    async def drop_old_gaps(self, every: float = 300.0) -> int:
        """Gaps reported longer ago than events are kept (retention's age) concern events gone too: they
        leave the sources view (at most every ``every`` seconds; one small delete)."""
        now = self.clock()
        if not self.keep_gaps or now - self._gaps_dropped_at < every:
            return 0
        self._gaps_dropped_at = now
        dropped = await drop_gaps(self.store, now - self.keep_gaps)
        if dropped:
            log.info("source_gaps_expired", gaps=dropped, older_than_s=self.keep_gaps)
        return dropped

    async def stop(self, _: Any = None) -> None:
        try:
            await self.save()
        except StoreError as exc:
            log.warning("sources_not_saved", error=str(exc), note="last-seen times since the last save are lost")
