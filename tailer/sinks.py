"""Sinks that gate the ack. For now: stdout, one compact JSON line per audit event."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Sequence
from typing import Any

import msgpack
import orjson

from fluent_forward import Record

from .metrics import TailerMetrics

_ORJSON_OPTS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def _fallback(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    if isinstance(value, msgpack.ExtType):
        return {"extType": value.code, "data": base64.b64encode(value.data).decode("ascii")}
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode_line(record: Record, metrics: TailerMetrics | None = None) -> bytes:
    """The record as compact JSON plus newline; never raises for what msgpack can carry."""
    try:
        return orjson.dumps(record, default=_fallback, option=_ORJSON_OPTS)
    except TypeError:  # e.g. lone surrogates from undecodable strings
        if metrics is not None:
            metrics.unencodable.inc()
        return (json.dumps(record, default=_fallback, separators=(",", ":")) + "\n").encode("utf-8")


class StdoutSink:
    """Writes whole chunks to a file descriptor, in arrival order, off the event loop."""

    name = "stdout"

    def __init__(self, metrics: TailerMetrics, fd: int = 1) -> None:
        self.metrics = metrics
        self.fd = fd
        self._lock = asyncio.Lock()

    async def write(self, records: Sequence[Record]) -> None:
        data = b"".join(encode_line(r, self.metrics) for r in records)
        async with self._lock:
            await asyncio.to_thread(self._write_all, data)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]


class StoreSink:
    """Commits each chunk to the audit store in one transaction, then wakes the API's watchers."""

    name = "store"

    def __init__(self, store: Any, metrics: TailerMetrics, on_commit: Any = None) -> None:
        self.store, self.metrics, self.on_commit = store, metrics, on_commit

    async def write(self, records: Sequence[Record]) -> None:
        with self.metrics.store_commit.time():
            result = await self.store.insert(records)
        self.metrics.store_inserted.inc(result.inserted)
        self.metrics.store_duplicates.inc(result.duplicates)
        self.metrics.store_skipped.inc(result.skipped)
        if result.inserted and self.on_commit is not None:
            self.on_commit()


async def retention_loop(store: Any, settings: Any, metrics: TailerMetrics) -> None:
    """Apply --retention-age and --retention-bytes now and every --retention-interval."""
    from daemon.observability import get_logger

    log = get_logger(component="retention")
    while True:
        try:
            by_age, by_size = await store.prune(settings.retention_age or None, settings.retention_bytes or None)
            metrics.store_pruned.labels("age").inc(by_age)
            metrics.store_pruned.labels("size").inc(by_size)
            if by_age or by_size:
                log.info("store_pruned", by_age=by_age, by_size=by_size)
        except Exception as exc:  # the database may be back next time
            log.error("store_prune_failed", error=str(exc))
        await asyncio.sleep(settings.retention_interval)
