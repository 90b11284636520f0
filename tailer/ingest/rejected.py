"""The rejected-records file: records that can never be stored as audit events, kept raw as JSON lines.

One line per record: ``{"time": <when received, RFC 3339>, "reason": ..., "detail": ..., "record": <the
record as JSON>}`` (Secret values and credentials redacted where its shape allowed). Appended before the
chunk is acked, on a thread of its own. A failed write (disk full, no permission) never stalls the
stream: it is counted (``tailer_rejected_file_errors_total``) and logged once until a write succeeds.
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
    def __init__(self, path: str, metrics: TailerMetrics) -> None:
        self.path, self.metrics = path, metrics
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="rejected-file")
        self._failing = False

    async def write(self, items: Sequence[Rejected]) -> None:
        if not items:
            return
        now = datetime.now(UTC)
        data = b"".join(encode(i, now) for i in items)
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._append, data)
        except OSError as exc:
            self.metrics.rejected_file_errors.inc()
            if not self._failing:
                self._failing = True
                log.error("rejected_file_write_failed", file=self.path, error=str(exc), records=len(items))
            return
        if self._failing:
            self._failing = False
            log.info("rejected_file_writable", file=self.path)

    def _append(self, data: bytes) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
