"""Fan-out of received records to the sinks, each record validated once at this edge.

``deliver`` parses every record into the typed view of kube_audit/model/audit.py: an ``AuditEvent``,
or a ``Rejected`` (a record that can never be stored as an audit event: kept raw on stdout, never
stored). Gating sinks (the store, then stdout: see app.serve for why that order) get the parsed items in
arrival order and are awaited in order before the chunk is acked; a failure means no ack, so the
forwarder resends. Observers (audit ConfigMaps, the watch stream) are offered the records of the audit
events after the gating sinks have them; ``offer`` must never block or raise into the ack path: an
observer that is behind keeps its own bounded backlog and counts what it drops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fluent_forward import Record
from kube_audit.model.audit import AuditEvent, Rejected, parse
from kube_audit.runtime.observability import get_logger
from tailer.metrics import TailerMetrics

log = get_logger(component="pipeline")
Item = AuditEvent | Rejected


class Sink(Protocol):
    name: str

    async def write(self, items: Sequence[Item]) -> None: ...


class Observer(Protocol):
    name: str

    def offer(self, records: Sequence[Record]) -> None: ...


class Pipeline:
    def __init__(self, sinks: Sequence[Sink], metrics: TailerMetrics, observers: Sequence[Observer] = ()) -> None:
        self.sinks = list(sinks)
        self.observers = list(observers)
        self.metrics = metrics

    async def deliver(self, records: Sequence[Record]) -> None:
        """Return once every gating sink has the records durably; raise if one failed."""
        items = [parse(r) for r in records]
        for sink in self.sinks:
            try:
                await sink.write(items)
            except Exception:
                self.metrics.sink_errors.labels(sink.name).inc()
                raise
        events = [i.record for i in items if isinstance(i, AuditEvent)]
        for observer in self.observers:
            try:
                observer.offer(events)
            except Exception as exc:  # an observer bug must not stop acks
                self.metrics.sink_errors.labels(observer.name).inc()
                log.error("observer_failed", observer=observer.name, error=repr(exc))
