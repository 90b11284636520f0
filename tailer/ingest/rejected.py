"""The rejected-records file: records that can never be stored as audit events, kept raw as JSON lines.

One line per record: ``{"time": <when received, RFC 3339>, "reason": ..., "detail": ..., "record": <the
record as JSON>}`` (Secret values and credentials redacted where its shape allowed). Appended before the
chunk is acked, on a thread of its own. The file stops growing at ``max_bytes`` (records that do not fit
are left out, stdout still has them; rotate or delete the file to make room). A failed or left-out write
never stalls the stream: it is counted (``tailer_rejected_file_errors_total{reason}``: write_failed, full)
and logged once until a write succeeds.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import orjson

from kube_audit.model.audit import Rejected
from kube_audit.runtime.observability import get_logger
from tailer.metrics import TailerMetrics

log = get_logger(component="rejected")


def encode(item: Rejected, now: datetime) -> bytes:
    head = orjson.dumps({"time": now.isoformat().replace("+00:00", "Z"), "reason": item.reason,
                         "detail": item.detail})
    return head[:-1] + b',"record":' + item.json + b"}\n"


class RejectedFile:
    def __init__(self, path: str, metrics: TailerMetrics, max_bytes: int = 256 * 1024**2) -> None:
        self.path, self.metrics, self.max_bytes = path, metrics, max_bytes
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="rejected-file")
        self._failing = False

    async def write(self, items: Sequence[Rejected]) -> None:
        if not items:
            return
        now = datetime.now(UTC)
        data = b"".join(encode(i, now) for i in items)
        try:
            written = await asyncio.get_running_loop().run_in_executor(self._thread, self._append, data)
        except OSError as exc:
            self._failed("write_failed", len(items), error=str(exc))
            return
        if not written:
            self._failed("full", len(items), max_bytes=self.max_bytes)
            return
        if self._failing:
            self._failing = False
            log.info("rejected_file_writable", file=self.path)

    def _failed(self, reason: str, records: int, **fields: object) -> None:
        self.metrics.rejected_file_errors.labels(reason).inc(records)
        if not self._failing:
            self._failing = True
            log.error("rejected_file_write_failed", file=self.path, reason=reason, records=records, **fields)

    def _append(self, data: bytes) -> bool:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size + len(data) > self.max_bytes:
                return False
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            return True
        finally:
            os.close(fd)
