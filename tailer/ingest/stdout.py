"""The stdout sink: one compact JSON line per record, gating the ack.

By default a line is the event with Secret values and credentials redacted (the same JSON the store
keeps); ``--stdout-redact=false`` prints every record as received.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from kube_audit.model.audit import AuditEvent, Rejected, dumps
from tailer.metrics import TailerMetrics


def encode_line(record: Any, metrics: TailerMetrics | None = None) -> bytes:
    """The record as compact JSON plus newline; never raises."""
    data, slow = dumps(record)
    if slow and metrics is not None:
        metrics.unencodable.inc()
    return data + b"\n"


def _body(item: AuditEvent | Rejected, metrics: TailerMetrics, redact: bool) -> bytes:
    """What stdout prints for one parsed record, without the newline (a chunk's lines are joined once
    rather than each copied to add one)."""
    if not redact and item.redacted:
        return encode_line(item.record, metrics)[:-1]
    if item.unencodable:
        metrics.unencodable.inc()
    return item.json


class StdoutSink:
    """Writes whole chunks to a file descriptor, in arrival order, off the event loop on a thread of its
    own (never queued behind other work of the default executor)."""

    name = "stdout"

    def __init__(self, metrics: TailerMetrics, fd: int = 1, executor: Executor | None = None,
                 redact: bool = True) -> None:
        self.metrics = metrics
        self.fd = fd
        self.redact = redact
        # the stage's own thread (the runtime's "stdout" executor); never the loop's default executor
        self.executor = executor or ThreadPoolExecutor(1, thread_name_prefix="stdout")
        self._lock = asyncio.Lock()

    async def write(self, items: Sequence[AuditEvent | Rejected], origin: object = None) -> None:
        data = b"\n".join([_body(i, self.metrics, self.redact) for i in items]) + b"\n" if items else b""
        async with self._lock:
            await asyncio.get_running_loop().run_in_executor(self.executor, self._write_all, data)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
