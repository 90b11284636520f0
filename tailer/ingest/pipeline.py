"""Fan-out of received records to the sinks, each record validated once at this edge.

``deliver`` parses every record into the typed view of kube_audit/model/audit.py: an ``AuditEvent``,
or a ``Rejected`` (a record that can never be stored as an audit event). Gating sinks (the store, then
stdout: see app.serve for why that order) get the parsed items in arrival order and are awaited in order
before the chunk is acked.

Failure policy (Vector's end-to-end acknowledgements, Fluent Bit's RETRY vs ERROR): a sink that raises
failed transiently (the database is down) and the chunk is not acked, so the forwarder resends it. A
sink that can take the chunk but not some of its records for good returns those as ``Rejected``
(reason ``store_refused``). Rejected records are still acked: printed on stdout, appended to the
rejected-records file, counted in ``tailer_records_rejected_total{reason}`` and logged once per reason;
one odd record never stalls the stream behind it.

What came beside the records on the wire (the tag, each entry's Fluent Bit/Fluentd metadata map: see
fluent_forward.Records) goes with each AuditEvent as ``meta`` for the store to keep; stdout prints the
audit event alone. ``meta`` stays None when there is no metadata and the tag is the forwarder's default.

Who sent a chunk (issue 12) is worked out here once per chunk: an ``Origin`` with the ``SourceId``
(kube_audit/model/source.py: the forwarder's ``kube_audit`` option, else the PING's hostname, else the
tag) goes to every gating sink beside the items. Records on the forwarders' status tag are not audit
events: they go to the control sink (the sources stage) alone, never to stdout, the store's events, or
observers; without a control sink they are acked and counted as rejected (``status_unhandled``).

Observers (audit ConfigMaps, the watch stream) are offered the records of the audit events after the
gating sinks have them; ``offer`` must never block or raise into the ack path: an observer that is
behind keeps its own bounded backlog and counts what it drops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from fluent_forward import Record
from kube_audit.model.audit import AuditEvent, Rejected, dumps, parse, reject
from kube_audit.model.source import OPTION, STATUS_TAG, SourceId, identity
from kube_audit.runtime.observability import get_logger
from tailer.metrics import TailerMetrics

log = get_logger(component="pipeline")
Item = AuditEvent | Rejected
DEFAULT_TAG = "audit"  # audit-forwarder's --tag default: not worth a row's bytes
PARSE_STEP = 100  # records parsed between two yields to the event loop: a chunk never holds it whole


@dataclass(slots=True)
class Origin:
    """Where a chunk came from, and what the stages before the sinks made of it."""

    source: SourceId
    tag: str | None = None
    link: Any = None  # the chain stage's record of this chunk, for the store to keep with its events


def origin_of(records: Sequence[Record]) -> Origin:
    tag = getattr(records, "tag", None)
    options = getattr(records, "options", None) or {}
    return Origin(identity(options.get(OPTION), getattr(records, "hostname", ""), tag or ""), tag)


class Sink(Protocol):
    name: str

    async def write(self, items: Sequence[Item], origin: Origin | None = None) -> Sequence[Rejected] | None:
        """Take the chunk durably or raise (transient: no ack); return the records refused for good."""


class ControlSink(Protocol):
    name: str

    async def write(self, records: Sequence[Record], origin: Origin) -> None:
        """Take the status records of one chunk durably or raise (transient: no ack)."""


class Observer(Protocol):
    name: str

    def offer(self, records: Sequence[Record], origin: Origin) -> None: ...


class RejectedSink(Protocol):
    async def write(self, items: Sequence[Rejected]) -> None: ...


def meta_of(tag: Any, metadata: Mapping[str, Any] | None) -> bytes | None:
    """The JSON the store keeps beside an event: None for no metadata and the default (or no) tag."""
    if not metadata and (tag is None or tag == DEFAULT_TAG):
        return None
    return dumps({"tag": tag, "metadata": dict(metadata or {})})[0]


def with_meta(items: list[Item], records: Sequence[Record]) -> list[Item]:
    """``items`` with each AuditEvent's ``meta`` from the tag and metadata beside ``records`` (a
    fluent_forward.Records; a plain list has none)."""
    tag = getattr(records, "tag", None)
    metadata: Sequence[Mapping[str, Any]] = getattr(records, "metadata", None) or ()
    if not any(metadata) and (tag is None or tag == DEFAULT_TAG):
        return items  # the common case: nothing to keep, nothing copied
    out: list[Item] = []
    for i, item in enumerate(items):
        meta = meta_of(tag, metadata[i] if i < len(metadata) else None)
        out.append(replace(item, meta=meta) if isinstance(item, AuditEvent) and meta is not None else item)
    return out


async def parse_in_steps(records: Sequence[Record]) -> list[Item]:
    """``parse`` of each record, ``PARSE_STEP`` at a time, yielding to the loop between steps (the API and
    the other connections run meanwhile; order and results are those of one pass)."""
    items: list[Item] = []
    finite = getattr(records, "finite", False)  # (fluent_forward's Records: no NaN or infinity in their bytes)
    exact = getattr(records, "exact", False)  # (and only the exact types a decoder builds)
    for start in range(0, len(records), PARSE_STEP):
        if start:
            await asyncio.sleep(0)
        items.extend(parse(r, finite, exact) for r in records[start:start + PARSE_STEP])
    return items


class Pipeline:
    def __init__(self, sinks: Sequence[Sink], metrics: TailerMetrics, observers: Sequence[Observer] = (),
                 rejected: RejectedSink | None = None, control: ControlSink | None = None,
                 chain: Any = None) -> None:
        self.sinks = list(sinks)
        self.chain = chain  # tailer/chain/stage.py: sets origin.link before the sinks, counts it after
        self.control = control
        self.observers = list(observers)
        self.metrics = metrics
        self.rejected = rejected
        self._reasons_logged: set[str] = set()

    async def prepare(self, records: Sequence[Record]) -> list[Item] | None:
        """The items of a chunk, parsed a step at a time (None for a status chunk: not audit events). A
        connection prepares its chunks in arrival order and then delivers them: two deliveries parsing
        side by side would reach the sinks in the order their parses ended."""
        if getattr(records, "tag", None) == STATUS_TAG:
            return None
        return with_meta(await parse_in_steps(records), records)

    async def deliver(self, records: Sequence[Record], items: list[Item] | None = None) -> None:
        """Return once every gating sink has the records durably; raise if one failed. ``items``: what
        ``prepare`` made of ``records`` (else parsed here)."""
        origin = origin_of(records)
        if origin.tag == STATUS_TAG:
            await self._status(records, origin)
            return
        if items is None:
            items = with_meta(await parse_in_steps(records), records)
        if self.chain is not None:
            self.chain.check(records, origin)
        for sink in self.sinks:
            try:
                refused = await sink.write(items, origin)
            except Exception:
                self.metrics.sink_errors.labels(sink.name).inc()
                raise
            if refused:
                by_record = {id(r.record): r for r in refused}
                items = [by_record.get(id(i.record), i) if isinstance(i, AuditEvent) else i for i in items]
        if self.chain is not None:
            self.chain.settle(origin)
        rejected = [i for i in items if isinstance(i, Rejected)]
        if rejected:
            await self._reject(rejected)
        events = [i.record for i in items if isinstance(i, AuditEvent)]
        for observer in self.observers:
            try:
                observer.offer(events, origin)
            except Exception as exc:  # an observer bug must not stop acks
                self.metrics.sink_errors.labels(observer.name).inc()
                log.error("observer_failed", observer=observer.name, error=repr(exc))

    async def _status(self, records: Sequence[Record], origin: Origin) -> None:
        if self.chain is not None:
            self.chain.check(records, origin)
        if self.control is None:
            await self._reject([reject(r, "status_unhandled", "a forwarder status record; this tailer has no "
                                       "sources stage") for r in records])
        else:
            try:
                await self.control.write(records, origin)
            except Exception:
                self.metrics.sink_errors.labels(self.control.name).inc()
                raise
        if self.chain is not None:
            await self.chain.record(origin)  # a chained status chunk keeps its place in the source's chain

    async def _reject(self, rejected: Sequence[Rejected]) -> None:
        for r in rejected:
            self.metrics.records_rejected.labels(r.reason).inc()
            if r.reason not in self._reasons_logged:
                self._reasons_logged.add(r.reason)
                audit_id = r.record.get("auditID") if isinstance(r.record, dict) else None
                log.warning("record_rejected", reason=r.reason, detail=r.detail, audit_id=str(audit_id)[:80],
                            note="kept raw on stdout and in the rejected-records file; logged once per reason")
        if self.rejected is not None:
            await self.rejected.write(rejected)
