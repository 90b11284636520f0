"""The configmaps stage: the writer and, with a store, the projection that feeds it.

Its own tasks (root tasks of the runtime: a crash stops the daemon with a traceback, and the durable
cursor makes the restart lose nothing) and its own failure policy (writes retried with backoff,
refused ones counted and dropped, a failing store read again later). It never gates an ack: without
a store the writer is a pipeline Observer whose ``offer`` only queues (and drops, counted, when the
backlog is full); with a store the pipeline only wakes the projection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kube_audit.runtime.lifecycle import Deadline, Runtime
from kube_audit.runtime.observability import get_logger
from tailer.configmaps.projection import Projection
from tailer.configmaps.writer import ConfigMapWriter, connect_writer
from tailer.metrics import TailerMetrics
from tailer.settings import ConfigMapSettings

log = get_logger(component="configmaps")
CURSOR_SAVE_RESERVE = 0.5  # seconds of the shutdown deadline kept for the last cursor save


class ConfigMapStage:
    def __init__(self, writer: ConfigMapWriter, projection: Projection | None, metrics: TailerMetrics) -> None:
        self.writer, self.projection, self.metrics = writer, projection, metrics
        self._projection_task: asyncio.Task[Any] | None = None

    @classmethod
    async def open(cls, settings: ConfigMapSettings, metrics: TailerMetrics, store: Any) -> ConfigMapStage | None:
        """The stage when there is a cluster to talk to, else None (and one log line saying why)."""
        writer = await connect_writer(settings, metrics)
        if writer is None:
            return None
        projection = Projection(store, writer, settings.flush_interval, metrics) if store is not None else None
        if projection is not None:
            await projection.start()
        else:
            log.info("configmaps_from_memory", note="no store: entries are kept in memory until written; "
                     "a tailer killed before they are written loses them")
        return cls(writer, projection, metrics)

    @property
    def observer(self) -> ConfigMapWriter | None:
        """The pipeline Observer (only without a store)."""
        return self.writer if self.projection is None else None

    def notify(self) -> None:
        if self.projection is not None:
            self.projection.notify()

    def start(self, rt: Runtime) -> None:
        rt.spawn(self.writer.run(), "configmap-writer")
        if self.projection is not None:
            self._projection_task = rt.spawn(self.projection.run(), "configmap-projection")

    async def stop(self, deadline: Deadline) -> None:
        """No more intake; write what is pending until the deadline; save the cursor."""
        if self._projection_task is not None:
            self._projection_task.cancel()
            await asyncio.wait([self._projection_task])
        await self.writer.stop(max(0.0, deadline.left() - CURSOR_SAVE_RESERVE))
        if self.projection is not None:
            await self.projection.save(force=True)
            log.info("configmap_cursor_saved", cursor=self.projection.saved, read=self.projection.read)
