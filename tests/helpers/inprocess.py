"""A tailer's ForwardServer in this process, taking connections over in-memory streams (mockstream)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import fluent_forward as ff
from forwarder.transport import Route
from tailer.ingest.listener import ForwardServer
from tailer.ingest.pipeline import Pipeline
from tailer.metrics import TailerMetrics
from tailer.settings import ForwardSettings
from tests.helpers.mockstream import MockReader, MockWriter, pipe


class RecordingSink:
    name = "stdout"

    def __init__(self, fail: bool = False) -> None:
        self.records: list[dict[str, Any]] = []
        self.fail = fail

    async def write(self, records: Sequence[Any], origin: Any = None) -> None:
        """Records as received: the pipeline hands sinks parsed records (AuditEvent or Rejected)."""
        if self.fail:
            raise OSError("disk full")
        self.records.extend(r.record for r in records)


def value(metrics: Any, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels or None) or 0.0


class Tailer:
    """A ForwardServer with a recording sink, taking connections over mock pipes."""

    def __init__(self, sink: RecordingSink | None = None, **settings: Any) -> None:
        self.metrics = TailerMetrics()
        self.sink = sink or RecordingSink()
        self.server = ForwardServer(ForwardSettings(hostname="tailer-0", **settings), Pipeline([self.sink], self.metrics),
                                    self.metrics)
        self.tasks: list[asyncio.Task[None]] = []
        self.client_ends: list[tuple[MockReader, MockWriter]] = []  # what ForwardClients connected with

    def connect(self, max_read: int = 1) -> tuple[MockReader, MockWriter]:
        client, server = pipe(max_read)
        self.tasks.append(asyncio.create_task(self.server._on_connection(*server)))  # type: ignore[arg-type]
        return client

    async def open_route(self, route: Route, *_: Any) -> tuple[MockReader, MockWriter]:
        self.client_ends.append(self.connect())
        return self.client_ends[-1]

    def metric(self, name: str, **labels: str) -> float:
        return value(self.metrics, name, **labels)


async def receive(reader: MockReader, decoder: ff.Decoder, count: int = 1) -> list[ff.Message]:
    out: list[ff.Message] = []
    async with asyncio.timeout(10):
        while len(out) < count:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("closed")
            out.extend(decoder.feed(data))
    return out


async def closed(reader: MockReader) -> bool:
    async with asyncio.timeout(10):
        while await reader.read(65536):
            pass
    return True


