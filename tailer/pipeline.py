"""Fan-out of received records to the sinks; the sinks that gate the ack are awaited in order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fluent_forward import Record

from .metrics import TailerMetrics


class Sink(Protocol):
    name: str

    async def write(self, records: Sequence[Record]) -> None: ...


class Pipeline:
    def __init__(self, sinks: Sequence[Sink], metrics: TailerMetrics) -> None:
        self.sinks = list(sinks)
        self.metrics = metrics

    async def deliver(self, records: Sequence[Record]) -> None:
        """Return once every gating sink has the records durably; raise if one failed."""
        for sink in self.sinks:
            try:
                await sink.write(records)
            except Exception:
                self.metrics.sink_errors.labels(sink.name).inc()
                raise
